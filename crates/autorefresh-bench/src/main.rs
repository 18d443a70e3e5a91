//! The autorefresh benchmark program: the workloads S1–S10 of BENCHMARKS.md, and S11
//! (adaptive refresh), R1 and R2 (S1 and S2 with three replicas through Redis), run only
//! when named.
//!
//! ```text
//! cargo run --release -p autorefresh-bench -- all            # every scenario, full size
//! cargo run --release -p autorefresh-bench -- s2 s9 --quick  # some, ~10x smaller and shorter
//! cargo run --release -p autorefresh-bench -- r1 r2          # three replicas through Redis
//! cargo run --release -p autorefresh-bench -- chart results.jsonl perf.svg  # the chart
//! ```
//!
//! Each scenario runs `--runs` times (default 3), each run in a fresh process (so memory
//! figures start clean and nothing a run leaves behind slows the next); the median, min and
//! max of each figure are printed as one JSON object per line on stdout, and as a table on
//! stderr. `AUTOREFRESH_BENCH_QUICK=1` is the same as `--quick`.

// This program measures wall-clock time and paces itself with real sleeps. The workspace's
// clippy.toml forbids `std::time::Instant::now` and `std::thread::sleep` so that engine code
// and tests go through tokio's pausable clock; here the real clock is the point.
#![allow(clippy::disallowed_methods)]

/// With the `mimalloc` feature, the program (not the library) allocates with mimalloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod chart;
mod common;
mod figures;
mod replicas;
mod scenarios;

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use tokio::runtime::Runtime;

use crate::common::{Report, Sample, Scale};
use crate::figures::{human, Reference};

type Scenario = fn(&Runtime, Scale, &mut Report);

/// Every scenario: its id on the command line, its name, and one run of it.
const SCENARIOS: [(&str, &str, Scenario); 13] = [
    ("s1", "get_hit", scenarios::s1),
    ("s2", "refresh_sweep", scenarios::s2),
    ("s3", "default_limiter", scenarios::s3),
    ("s4", "io_bound", scenarios::s4),
    ("s5", "memory", scenarios::s5),
    ("s6", "panic_survival", scenarios::s6),
    ("s7", "stuck_sync", scenarios::s7),
    ("s8", "delete_delayed", scenarios::s8),
    ("s9", "get_under_refresh", scenarios::s9),
    ("s10", "scale", scenarios::s10),
    ("s11", "adaptive", scenarios::s11),
    ("r1", "get_hit_replicas", replicas::r1),
    ("r2", "refresh_sweep_replicas", replicas::r2),
];

/// How many of [`SCENARIOS`] `all` runs: S1–S10; S11 (12 s a run), R1 and R2 (a Redis server
/// and three replicas; R2 takes minutes a run) only when named.
const ALL: usize = 10;

const USAGE: &str = "\
usage: autorefresh-bench [all | s1 .. s11 | r1 | r2]... [--quick] [--runs N]
       autorefresh-bench chart RESULTS.jsonl OUT.svg

  all       every scenario (the default)
  s1..s10   the scenarios of BENCHMARKS.md, in the order given
  s11       adaptive refresh: sync calls saved and staleness added (not part of `all`)
  r1, r2    S1 and S2 with three replicas sharing items and the refresh through a
            redis-server the run starts itself (skipped, saying so, when none can be);
            not part of `all`. r2 runs N = 100k; AUTOREFRESH_BENCH_R2_N=100000,1000000
            runs the sizes given
  --quick   sizes and durations ~10x smaller: a smoke run (also AUTOREFRESH_BENCH_QUICK=1)
  --runs N  runs per scenario (default 3); the median, min and max are reported

stdout: one JSON object per figure; stderr: progress and a table.

  chart     reads the JSON lines of an earlier run (RESULTS.jsonl, or - for stdin) and
            writes OUT.svg: how many times better than the Go original each figure with a
            Go counterpart is, on a log scale";

struct Args {
    scenarios: Vec<usize>,
    scale: Scale,
    runs: usize,
    child: bool,
}

fn parse_args() -> Result<Args, String> {
    let quick_env =
        std::env::var("AUTOREFRESH_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut args =
        Args { scenarios: Vec::new(), scale: Scale { quick: quick_env }, runs: 3, child: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.scale.quick = true,
            "--runs" => {
                args.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--runs needs a number above 0")?;
            }
            "--child" => args.child = true,
            "-h" | "--help" => return Err(String::new()),
            "all" => args.scenarios.extend(0..ALL),
            name => {
                let i = SCENARIOS
                    .iter()
                    .position(|(id, long, _)| name.eq_ignore_ascii_case(id) || name == *long)
                    .ok_or_else(|| format!("unknown scenario `{name}`"))?;
                args.scenarios.push(i);
            }
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios.extend(0..ALL);
    }
    Ok(args)
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("chart") {
        return chart::main(std::env::args().skip(2).collect(), USAGE);
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.child {
        run_child(&args)
    } else {
        run_parent(&args)
    }
}

/// One run of one scenario, in this process: prints `SAMPLE\tvariant\tvalue\tunit` lines.
fn run_child(args: &Args) -> ExitCode {
    let [scenario] = args.scenarios[..] else {
        eprintln!("error: --child takes exactly one scenario");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = Report::default();
    (SCENARIOS[scenario].2)(&rt, args.scale, &mut report);
    let mut out = std::io::stdout().lock();
    for s in &report.samples {
        writeln!(out, "SAMPLE\t{}\t{}\t{}", s.variant, s.value, s.unit).expect("stdout");
    }
    out.flush().expect("stdout");
    // Skip tearing down millions of items: the process ends here.
    std::process::exit(0)
}

/// A figure over the runs: median, min and max of its finite values.
struct Row {
    scenario: &'static str,
    variant: String,
    unit: String,
    values: Vec<f64>,
}

impl Row {
    fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
        Some((median, v[0], v[v.len() - 1]))
    }
}

fn run_once(scenario: &str, args: &Args) -> Result<Vec<Sample>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", scenario]).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if args.scale.quick {
        cmd.arg("--quick");
    }
    let output = cmd.output().map_err(|e| format!("spawn: {e}"))?;
    if !output.status.success() {
        return Err(format!("run failed: {}", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.strip_prefix("SAMPLE\t")?.split('\t');
            let variant = fields.next()?.to_owned();
            let value = fields.next()?.parse().ok()?;
            let unit = fields.next()?.to_owned();
            Some(Sample { variant, value, unit })
        })
        .collect())
}

fn run_parent(args: &Args) -> ExitCode {
    let mut failed = false;
    let mut rows: Vec<Row> = Vec::new();
    let mode = if args.scale.quick { "quick" } else { "full" };
    for &i in &args.scenarios {
        let (id, name, _) = SCENARIOS[i];
        let first_row = rows.len();
        for run in 1..=args.runs {
            eprintln!("{id} {name}: run {run}/{} ({mode})", args.runs);
            match run_once(id, args) {
                Ok(samples) => {
                    for s in samples {
                        match rows[first_row..].iter_mut().find(|r| r.variant == s.variant) {
                            Some(row) => row.values.push(s.value),
                            None => rows.push(Row {
                                scenario: id,
                                variant: s.variant,
                                unit: s.unit,
                                values: vec![s.value],
                            }),
                        }
                    }
                }
                Err(e) => {
                    eprintln!("  {id}: {e}");
                    failed = true;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        for row in &rows[first_row..] {
            writeln!(out, "{}", json_line(row)).expect("stdout");
        }
        out.flush().expect("stdout");
    }
    eprintln!();
    eprintln!("{}", table(&rows, args));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number with 6 significant digits, or `null` for a figure that was not measured.
fn json_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let rounded: f64 = format!("{v:.5e}").parse().unwrap_or(v);
            format!("{rounded}")
        }
        _ => "null".to_owned(),
    }
}

fn json_line(row: &Row) -> String {
    let stats = row.stats();
    format!(
        "{{\"scenario\":{},\"variant\":{},\"value\":{},\"unit\":{},\"min\":{},\"max\":{}}}",
        json_string(row.scenario),
        json_string(&row.variant),
        json_number(stats.map(|s| s.0)),
        json_string(&row.unit),
        json_number(stats.map(|s| s.1)),
        json_number(stats.map(|s| s.2)),
    )
}

fn table(rows: &[Row], args: &Args) -> String {
    let mut lines = vec![[
        "scenario".to_owned(),
        "variant".to_owned(),
        "median".to_owned(),
        "min".to_owned(),
        "max".to_owned(),
        "unit".to_owned(),
        "Go".to_owned(),
        "target".to_owned(),
    ]];
    for row in rows {
        let (median, min, max) = match row.stats() {
            Some((median, min, max)) => (human(median), human(min), human(max)),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        let reference = figures::find(row.scenario, &row.variant);
        lines.push([
            row.scenario.to_owned(),
            row.variant.clone(),
            median,
            min,
            max,
            row.unit.clone(),
            reference.map_or(String::new(), Reference::go_text),
            reference.map_or(String::new(), Reference::target_text),
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> =
            line.iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    if (2..5).contains(&i) {
                        format!("{cell:>w$}")
                    } else {
                        format!("{cell:<w$}")
                    }
                })
                .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if args.scale.quick {
        out.push_str(
            "(--quick: sizes and durations ~10x smaller; the Go figures and targets apply to full-size runs)\n",
        );
    }
    out.push_str(&format!("median of {} run(s), each in a fresh process\n", args.runs));
    out
}
