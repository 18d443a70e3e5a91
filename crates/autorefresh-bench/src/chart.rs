//! The `chart` subcommand: reads the JSON lines of an earlier run and draws, as an SVG, how
//! many times better than the Go original each figure with a Go counterpart is.
//!
//! One horizontal bar per figure on a log scale, starting at the 1× line: to the right (green)
//! when autorefresh is better, to the left (red) when it is worse, whichever way the figure
//! improves ([`Better`](crate::figures::Better)). Beside each bar: the figure's name, the
//! ratio, both values with their unit; a whisker for the min–max over the runs and a tick at
//! the target of issue 5. Only plotters' SVG backend is used: the text is SVG `<text>`, so no
//! font is needed to draw it.

use std::io::Read;
use std::process::ExitCode;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::figures::{self, human, Reference, REFERENCES};

/// One line of a run's stdout: a figure's median over the runs, with min and max.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Figure {
    pub(crate) scenario: String,
    pub(crate) variant: String,
    /// `None` for a figure that could not be measured (`null`).
    pub(crate) value: Option<f64>,
    pub(crate) unit: String,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// A measured figure beside the Go original's.
#[derive(Clone, Debug)]
pub(crate) struct Comparison {
    pub(crate) reference: &'static Reference,
    pub(crate) ours: f64,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

impl Comparison {
    /// How many times better than the Go original: above 1 is better.
    pub(crate) fn ratio(&self) -> f64 {
        self.reference.ratio(self.ours)
    }

    fn name(&self) -> String {
        format!("{} {}", self.reference.scenario, self.reference.variant)
    }

    /// The ratios of the min and max over the runs, lowest first.
    fn ratio_range(&self) -> Option<(f64, f64)> {
        let (a, b) = (self.reference.ratio(self.min?), self.reference.ratio(self.max?));
        Some((a.min(b), a.max(b)))
    }

    fn target_ratio(&self) -> Option<f64> {
        self.reference.target.map(|t| self.reference.ratio(t))
    }

    /// Both values with their unit, e.g. `0.18 s vs Go 0.83 s`.
    fn values_text(&self) -> String {
        let r = self.reference;
        let go = with_unit(r.go, r.unit);
        if r.go_note.is_empty() {
            format!("{} vs Go {go}", with_unit(self.ours, r.unit))
        } else {
            format!("{} vs Go {go} ({})", with_unit(self.ours, r.unit), r.go_note)
        }
    }
}

/// The figures of a run that have a Go counterpart, in the order of [`REFERENCES`], and
/// what was left out.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    pub(crate) comparisons: Vec<Comparison>,
    /// One line per figure with a Go counterpart that is not charted, and why.
    pub(crate) skipped: Vec<String>,
}

/// Pairs each reference with the run's figure of the same scenario and variant. A figure
/// whose value is `null`, or whose unit is not the reference's, is skipped; when a figure
/// appears twice the later line wins (a re-run appended to the same file).
pub(crate) fn select(figures: &[Figure]) -> Selection {
    let mut selection = Selection::default();
    for reference in REFERENCES {
        let name = format!("{} {}", reference.scenario, reference.variant);
        let Some(figure) = figures
            .iter()
            .rev()
            .find(|f| f.scenario == reference.scenario && f.variant == reference.variant)
        else {
            continue;
        };
        match figure.value {
            None => selection.skipped.push(format!("{name}: null (not measured)")),
            Some(_) if figure.unit != reference.unit => selection.skipped.push(format!(
                "{name}: unit `{}`, the Go figure is in `{}`",
                figure.unit, reference.unit
            )),
            Some(ours) if reference.ratio(ours).is_nan() => {
                selection.skipped.push(format!("{name}: {ours} cannot be compared"));
            }
            Some(ours) => selection.comparisons.push(Comparison {
                reference,
                ours,
                min: figure.min,
                max: figure.max,
            }),
        }
    }
    selection
}

/// Parses a run's stdout: one JSON object per line (blank lines are skipped).
pub(crate) fn parse_results(text: &str) -> Result<Vec<Figure>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_figure(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn parse_figure(line: &str) -> Result<Figure, String> {
    let fields = Json::new(line).document()?;
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let string = |key: &str| match get(key) {
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` is not a string")),
        None => Err(format!("no `{key}`")),
    };
    let number = |key: &str, required: bool| match get(key) {
        Some(Value::Num(n)) => Ok(Some(*n)),
        Some(Value::Null) => Ok(None),
        None if !required => Ok(None),
        Some(_) => Err(format!("`{key}` is not a number or null")),
        None => Err(format!("no `{key}`")),
    };
    Ok(Figure {
        scenario: string("scenario")?,
        variant: string("variant")?,
        value: number("value", true)?,
        unit: string("unit")?,
        min: number("min", false)?,
        max: number("max", false)?,
    })
}

/// A JSON value of a flat object: what the program writes.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A parser for one flat JSON object (no nested arrays or objects): enough for the lines the
/// program writes, without a JSON dependency.
struct Json<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Json<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(format!("expected `{c}` at column {}", self.pos + 1))
        }
    }

    /// `{"key": value, ...}` and nothing after it.
    fn document(&mut self) -> Result<Vec<(String, Value)>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let key = self.string()?;
                self.expect(':')?;
                let value = self.value()?;
                fields.push((key, value));
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some('}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(format!("expected `,` or `}}` at column {}", self.pos + 1)),
                }
            }
        }
        self.skip_ws();
        if self.pos < self.text.len() {
            return Err(format!("trailing text at column {}", self.pos + 1));
        }
        Ok(fields)
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let rest = self.rest();
        for (word, value) in
            [("null", Value::Null), ("true", Value::Bool(true)), ("false", Value::Bool(false))]
        {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        match self.peek() {
            Some('"') => self.string().map(Value::Str),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                    .unwrap_or(rest.len());
                let n: f64 = rest[..len].parse().map_err(|_| {
                    format!("bad number `{}` at column {}", &rest[..len], self.pos + 1)
                })?;
                self.pos += len;
                Ok(Value::Num(n))
            }
            _ => Err(format!("expected a value at column {}", self.pos + 1)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let escaped = match chars.next().map(|(_, e)| e) {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        _ => return Err(format!("bad escape at column {}", self.pos + i + 1)),
                    };
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
        Err("unterminated string".to_owned())
    }
}

/// A value with its unit as a reader wants it: `12.30 M ops/s`, `0.95`, `yes`.
fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "bool" => (if v >= 0.5 { "yes" } else { "no" }).to_owned(),
        "ratio" | "fraction" => human(v),
        unit => format!("{} {unit}", human(v)),
    }
}

/// A ratio as the chart shows it: `4.62×`, `0.59×`, `∞×`.
fn ratio_text(r: f64) -> String {
    if r.is_infinite() {
        "∞×".to_owned()
    } else if r == 0.0 {
        "0×".to_owned()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else if r >= 0.01 {
        format!("{r:.2}×")
    } else {
        format!("{r:.0e}×")
    }
}

/// An axis tick: `0.1×`, `1×`, `20×`.
fn tick_text(x: f64) -> String {
    let s = format!("{x:.3}");
    format!("{}×", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The x range of the chart and where the bars of infinite and zero ratios end.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    /// Where an infinitely better bar ends: past every finite one.
    infinite_at: f64,
    /// Where an infinitely worse (zero) bar ends: short of every finite one.
    zero_at: f64,
}

impl Axis {
    /// Powers of 10 around every finite ratio, 1×, and the targets, with room for the labels
    /// at the bars' ends; at least 0.1× to 10×.
    fn fit(comparisons: &[Comparison]) -> Self {
        let ratios: Vec<f64> = comparisons
            .iter()
            .flat_map(|c| {
                let range = c.ratio_range().map(|(a, b)| [a, b]).unwrap_or([1.0; 2]);
                [c.ratio(), c.target_ratio().unwrap_or(1.0), range[0], range[1]]
            })
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        let max = ratios.iter().copied().fold(1.0, f64::max);
        let min = ratios.iter().copied().fold(1.0, f64::min);
        let infinite_at = max * 10.0;
        let zero_at = min / 10.0;
        let any = |f: fn(f64) -> bool| comparisons.iter().any(|c| f(c.ratio()));
        let right = if any(f64::is_infinite) { infinite_at } else { max };
        let left = if any(|r| r == 0.0) { zero_at } else { min };
        // Room for the ratio text past the longest bar (~a factor of 3 on a few decades).
        let hi = 10f64.powf((right * 3.0).log10().ceil()).max(10.0);
        let lo = 10f64.powf((left / 3.0).log10().floor()).min(0.1);
        // A little past the powers of 10, so that both ends get their tick label.
        let (lo, hi) = (lo * 0.8, hi * 1.25);
        Self { lo, hi, infinite_at, zero_at }
    }

    /// Where a ratio's bar ends on this axis.
    fn place(&self, r: f64) -> f64 {
        if r.is_infinite() {
            self.infinite_at
        } else if r <= 0.0 {
            self.zero_at
        } else {
            r.clamp(self.lo, self.hi)
        }
    }
}

const WIDTH: u32 = 1400;
const ROW: u32 = 28;
const TOP: u32 = 78;
const BOTTOM: u32 = 92;
const LEFT: u32 = 310;
const RIGHT: u32 = 420;
const FONT: &str = "sans-serif";

const BETTER: RGBColor = RGBColor(46, 160, 67);
const WORSE: RGBColor = RGBColor(207, 34, 46);
const TARGET: RGBColor = RGBColor(31, 95, 200);
const STRIPE: RGBColor = RGBColor(244, 245, 247);
const GREY: RGBColor = RGBColor(90, 90, 90);

/// Draws the comparisons as an SVG document.
pub(crate) fn render_svg(comparisons: &[Comparison]) -> Result<String, String> {
    if comparisons.is_empty() {
        return Err("no figure with a Go counterpart to chart".to_owned());
    }
    let mut svg = String::new();
    draw(comparisons, &mut svg).map_err(|e| format!("drawing the chart: {e}"))?;
    Ok(svg)
}

/// plotters' font sizes are 1.24 times the SVG `font-size` they write.
fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, px * 1.24).into_font())
}

fn draw(comparisons: &[Comparison], svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let n = comparisons.len();
    let height = TOP + ROW * n as u32 + BOTTOM;
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;

    let left = Pos::new(HPos::Left, VPos::Center);
    let right = Pos::new(HPos::Right, VPos::Center);
    root.draw(&Text::new(
        "autorefresh vs the Go original (flytestdlib cache.AutoRefresh): times better",
        (20, 24),
        font(20.0).pos(left),
    ))?;
    root.draw(&Text::new(
        "Log scale. Right of the 1× line is better whichever way the figure improves: \
         more ops/s or items/s, fewer seconds, bytes or resurrected items. Medians over the runs.",
        (20, 50),
        font(13.0).color(&GREY).pos(left),
    ))?;

    let axis = Axis::fit(comparisons);
    let rows = n as f64;
    let mut chart = ChartBuilder::on(&root)
        .margin_top(TOP)
        .margin_left(LEFT)
        .margin_right(RIGHT)
        .margin_bottom(BOTTOM - 40)
        .x_label_area_size(40)
        .build_cartesian_2d((axis.lo..axis.hi).log_scale(), 0.0..rows)?;

    // Light stripes on every other row, under the grid.
    chart.draw_series(comparisons.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(
        |(i, _)| {
            let y = rows - i as f64;
            Rectangle::new([(axis.lo, y), (axis.hi, y - 1.0)], STRIPE.filled())
        },
    ))?;
    let tick = |x: &f64| tick_text(*x);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(12)
        .x_label_formatter(&tick)
        .x_label_style(font(12.0))
        .x_desc("times better than the Go original (log scale)")
        .axis_desc_style(font(13.0))
        .light_line_style(RGBColor(242, 242, 242))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    // Bars from 1× to the ratio.
    chart.draw_series(comparisons.iter().enumerate().map(|(i, c)| {
        let y = rows - i as f64 - 0.5;
        let r = c.ratio();
        let color = if r >= 1.0 { BETTER } else { WORSE };
        Rectangle::new([(1.0, y - 0.3), (axis.place(r), y + 0.3)], color.filled())
    }))?;
    // Whiskers: the ratio over the runs' min and max.
    chart.draw_series(comparisons.iter().enumerate().filter_map(|(i, c)| {
        let y = rows - i as f64 - 0.5;
        let (a, b) = c.ratio_range().filter(|(a, b)| a.is_finite() && b.is_finite())?;
        (a != b).then(|| {
            PathElement::new(
                vec![
                    (axis.place(a), y - 0.12),
                    (axis.place(a), y + 0.12),
                    (axis.place(a), y),
                    (axis.place(b), y),
                    (axis.place(b), y - 0.12),
                    (axis.place(b), y + 0.12),
                ],
                BLACK.stroke_width(1),
            )
        })
    }))?;
    // Targets of issue 5.
    chart.draw_series(comparisons.iter().enumerate().filter_map(|(i, c)| {
        let y = rows - i as f64 - 0.5;
        let t = axis.place(c.target_ratio()?);
        Some(PathElement::new(vec![(t, y - 0.45), (t, y + 0.45)], TARGET.stroke_width(3)))
    }))?;
    // The 1× line.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, rows)],
        BLACK.stroke_width(2),
    )))?;

    // Texts, placed in pixels: names on the left, ratios at the bars' ends, values on the right.
    for (i, c) in comparisons.iter().enumerate() {
        let y = rows - i as f64 - 0.5;
        let (plot_left, py) = chart.backend_coord(&(axis.lo, y));
        let (plot_right, _) = chart.backend_coord(&(axis.hi, y));
        let r = c.ratio();
        root.draw(&Text::new(c.name(), (plot_left - 10, py), font(13.0).pos(right)))?;
        // The ratio goes past whatever is drawn at the bar's end: whisker, or a target close by.
        let px = |v: f64| chart.backend_coord(&(axis.place(v), y)).0;
        let (lo, hi) =
            c.ratio_range().filter(|(a, b)| a.is_finite() && b.is_finite()).unwrap_or((r, r));
        let target = c.target_ratio().map(px);
        let (x, pos) = if r >= 1.0 {
            let end = px(r).max(px(hi));
            let end = target.filter(|t| (end - 3..end + 50).contains(t)).map_or(end, |t| t + 1);
            (end + 6, left)
        } else {
            let end = px(r).min(px(lo));
            let end = target.filter(|t| (end - 50..end + 3).contains(t)).map_or(end, |t| t - 1);
            (end - 6, right)
        };
        let ratio_style = font(13.0).color(if r >= 1.0 { &BETTER } else { &WORSE }).pos(pos);
        root.draw(&Text::new(ratio_text(r), (x, py), ratio_style))?;
        root.draw(&Text::new(c.values_text(), (plot_right + 12, py), font(12.0).pos(left)))?;
    }

    // Legend.
    let y = height as i32 - 24;
    let mut x = LEFT as i32;
    for (label, color, bar) in [
        ("autorefresh better", BETTER, true),
        ("autorefresh worse", WORSE, true),
        ("target of issue 5", TARGET, false),
        ("min–max over the runs", BLACK, false),
    ] {
        if bar {
            root.draw(&Rectangle::new([(x, y - 7), (x + 18, y + 7)], color.filled()))?;
        } else if color == TARGET {
            root.draw(&PathElement::new(
                vec![(x + 9, y - 9), (x + 9, y + 9)],
                color.stroke_width(3),
            ))?;
        } else {
            let whisker =
                vec![(x, y - 4), (x, y + 4), (x, y), (x + 18, y), (x + 18, y - 4), (x + 18, y + 4)];
            root.draw(&PathElement::new(whisker, color.stroke_width(1)))?;
        }
        root.draw(&Text::new(label, (x + 26, y), font(13.0).pos(left)))?;
        x += 26 + 8 * label.chars().count() as i32 + 30;
    }
    root.present()?;
    Ok(())
}

/// `chart RESULTS.jsonl OUT.svg`.
pub(crate) fn main(args: Vec<String>, usage: &str) -> ExitCode {
    let [input, output] = &args[..] else {
        eprintln!("error: chart takes RESULTS.jsonl (or -) and OUT.svg\n\n{usage}");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &str, output: &str) -> Result<(), String> {
    let text = if input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?
    };
    let figures = parse_results(&text).map_err(|e| format!("{input}: {e}"))?;
    let selection = select(&figures);
    let svg = render_svg(&selection.comparisons)?;
    std::fs::write(output, svg).map_err(|e| format!("{output}: {e}"))?;
    for c in &selection.comparisons {
        eprintln!("{:<44} {:>8}  {}", c.name(), ratio_text(c.ratio()), c.values_text());
    }
    for s in &selection.skipped {
        eprintln!("skipped {s}");
    }
    let better = selection.comparisons.iter().filter(|c| c.ratio() >= 1.0).count();
    let uncharted = figures.iter().filter(|f| figures::find(&f.scenario, &f.variant).is_none());
    eprintln!(
        "{output}: {} figures against the Go original, {better} at least as good; {} skipped; \
         {} without a Go counterpart",
        selection.comparisons.len(),
        selection.skipped.len(),
        uncharted.count()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../fixtures/sample-results.jsonl");

    #[test]
    fn parses_the_lines_a_run_writes() {
        let text = "{\"scenario\":\"s2\",\"variant\":\"n=1M,batch100,sweep\",\"value\":0.31,\
                    \"unit\":\"s\",\"min\":0.29,\"max\":3.5e-1}\n\n\
                    { \"scenario\" : \"s2\", \"variant\": \"n=1M,single,sweep\", \"value\": null, \
                    \"unit\": \"s\", \"min\": null, \"max\": null }\n\
                    {\"scenario\":\"s9\",\"variant\":\"a\\\"b\\\\c\\u00e9\",\"value\":-2,\"unit\":\"ops/s\"}\n";
        let figures = parse_results(text).unwrap();
        assert_eq!(figures.len(), 3);
        assert_eq!(
            figures[0],
            Figure {
                scenario: "s2".into(),
                variant: "n=1M,batch100,sweep".into(),
                value: Some(0.31),
                unit: "s".into(),
                min: Some(0.29),
                max: Some(0.35),
            }
        );
        assert_eq!(figures[1].value, None);
        assert_eq!(figures[1].min, None);
        assert_eq!(figures[2].variant, "a\"b\\cé");
        assert_eq!(figures[2].value, Some(-2.0));
        assert_eq!(figures[2].max, None);
    }

    #[test]
    fn rejects_what_is_not_a_result_line() {
        for (line, why) in [
            ("s1 get_hit 12 M", "expected `{`"),
            ("{\"scenario\":\"s1\",\"variant\":\"get_hit\",\"unit\":\"ops/s\"}", "no `value`"),
            (
                "{\"scenario\":\"s1\",\"variant\":\"x\",\"value\":\"12\",\"unit\":\"u\"}",
                "not a number",
            ),
            ("{\"scenario\":\"s1\",\"variant\":\"x\",\"value\":1,\"unit\":\"u\"} x", "trailing"),
            ("{\"scenario\":\"s1", "unterminated"),
        ] {
            let err = parse_results(&format!("\n{line}\n")).unwrap_err();
            assert!(err.starts_with("line 2: "), "{err}");
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    fn figure(scenario: &str, variant: &str, value: Option<f64>, unit: &str) -> Figure {
        Figure {
            scenario: scenario.into(),
            variant: variant.into(),
            value,
            unit: unit.into(),
            min: value,
            max: value,
        }
    }

    #[test]
    fn selects_figures_with_a_go_counterpart() {
        let figures = [
            figure("s2", "n=1M,batch100,sweep", Some(0.2), "s"),
            figure("s1", "get_hit", Some(5.32e6), "ops/s"),
            figure("s2", "n=1M,single,sweep", None, "s"),
            figure("s2", "n=1M,single,cpu", Some(1.0), "cpu-s/M syncs"),
            figure("s5", "n=1M,after_sweep", Some(100.0), "KiB/item"),
            figure("s8", "delete_delayed,in_flight,resurrected", Some(0.0), "items"),
            figure("s2", "n=1M,batch100,sweep", Some(0.166), "s"),
        ];
        let selection = select(&figures);
        let got: Vec<(String, f64)> =
            selection.comparisons.iter().map(|c| (c.name(), c.ratio())).collect();
        // In the order of the references; the later s2 batch100 line wins.
        assert_eq!(
            got,
            [
                ("s1 get_hit".to_owned(), 2.0),
                ("s2 n=1M,batch100,sweep".to_owned(), 0.83 / 0.166),
                ("s8 delete_delayed,in_flight,resurrected".to_owned(), f64::INFINITY),
            ]
        );
        assert_eq!(selection.skipped.len(), 2, "{:?}", selection.skipped);
        assert!(selection.skipped[0].contains("n=1M,single,sweep: null"));
        assert!(selection.skipped[1].contains("unit `KiB/item`"));
    }

    #[test]
    fn texts() {
        assert_eq!(ratio_text(4.6154), "4.62×");
        assert_eq!(ratio_text(25.3), "25.3×");
        assert_eq!(ratio_text(0.59), "0.59×");
        assert_eq!(ratio_text(f64::INFINITY), "∞×");
        assert_eq!(tick_text(0.1), "0.1×");
        assert_eq!(tick_text(1000.0), "1000×");
        let s1 = Comparison {
            reference: figures::find("s1", "get_hit").unwrap(),
            ours: 12.3e6,
            min: None,
            max: None,
        };
        assert_eq!(s1.values_text(), "12.30 M ops/s vs Go 2.66 M ops/s");
        let s6 = Comparison {
            reference: figures::find("s6", "refresh_goes_on").unwrap(),
            ours: 1.0,
            min: None,
            max: None,
        };
        assert_eq!(s6.values_text(), "yes vs Go no");
    }

    #[test]
    fn axis_fits_every_bar() {
        let selection = select(&parse_results(SAMPLE).unwrap());
        let axis = Axis::fit(&selection.comparisons);
        assert!(axis.lo < 0.1 && axis.hi > 10.0);
        for c in &selection.comparisons {
            let end = axis.place(c.ratio());
            assert!(axis.lo < end && end < axis.hi, "{}: {end} outside {axis:?}", c.name());
        }
        let finite_max =
            selection.comparisons.iter().map(Comparison::ratio).filter(|r| r.is_finite());
        assert!(finite_max.fold(0.0, f64::max) < axis.infinite_at);
    }

    #[test]
    fn renders_the_sample_as_svg() {
        let selection = select(&parse_results(SAMPLE).unwrap());
        // Every reference has a line in the sample; one of them is null.
        assert_eq!(selection.comparisons.len(), REFERENCES.len() - 1);
        assert_eq!(selection.skipped.len(), 1);
        assert!(selection.comparisons.iter().any(|c| c.ratio() < 1.0));
        assert!(selection.comparisons.iter().any(|c| c.ratio().is_infinite()));

        let svg = render_svg(&selection.comparisons).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("s1 get_hit"));
        assert!(svg.contains("vs Go 2.66 M ops/s"));
        assert!(svg.contains("∞×"));

        // And through the subcommand, to a file.
        let dir =
            std::env::temp_dir().join(format!("autorefresh-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("results.jsonl");
        let output = dir.join("chart.svg");
        std::fs::write(&input, SAMPLE).unwrap();
        run(input.to_str().unwrap(), output.to_str().unwrap()).unwrap();
        let written = std::fs::read_to_string(&output).unwrap();
        assert!(written.contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_to_chart_is_an_error() {
        let quick_run = "{\"scenario\":\"s2\",\"variant\":\"n=100k,single,sweep\",\"value\":0.1,\"unit\":\"s\",\"min\":0.1,\"max\":0.1}";
        let selection = select(&parse_results(quick_run).unwrap());
        assert!(render_svg(&selection.comparisons).is_err());
    }
}
