//! What the program knows about its figures: the Go original's figure and the target of
//! issue 5 for each full-size variant, which way is better, and how a figure is shown.
//!
//! The stderr table and the `chart` subcommand both read [`REFERENCES`]; the numbers live
//! here only.

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Better {
    /// More is better: ops/s, items/s, coverage.
    Higher,
    /// Less is better: seconds, bytes per item, resurrected items.
    Lower,
}

/// The Go original's figure for one variant, in that variant's unit, and the target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reference {
    pub(crate) scenario: &'static str,
    pub(crate) variant: &'static str,
    /// The unit the program reports the variant in (and that `go` and `target` are in).
    pub(crate) unit: &'static str,
    /// The Go original's figure (`../shared/BENCHMARKS.md`), in `unit`.
    pub(crate) go: f64,
    /// How `go` was read off BENCHMARKS.md when it is not quoted there as is; empty if it is.
    pub(crate) go_note: &'static str,
    /// The target of issue 5, met when the median reaches it in the `better` direction.
    pub(crate) target: Option<f64>,
    pub(crate) better: Better,
}

const fn reference(
    scenario: &'static str,
    variant: &'static str,
    unit: &'static str,
    go: f64,
    target: Option<f64>,
    better: Better,
) -> Reference {
    Reference { scenario, variant, unit, go, go_note: "", target, better }
}

use Better::{Higher, Lower};

/// The Go original's figure and the target of issue 5, for the full-size variants, in the
/// order the scenarios run.
///
/// S7: the Go original syncs 200 items in the first second, then none (both workers stuck);
/// over the 5 s window that is 40 items/s, and a coverage of 200 / (999 × 5) = 0.04.
pub(crate) const REFERENCES: &[Reference] = &[
    reference("s1", "get_hit", "ops/s", 2.66e6, Some(12e6), Higher),
    reference("s2", "n=1M,single,sweep", "s", 8.24, Some(0.8), Lower),
    reference("s2", "n=1M,single,rate", "items/s", 115e3, None, Higher),
    reference("s2", "n=1M,batch100,sweep", "s", 0.83, Some(0.15), Lower),
    reference("s2", "n=1M,batch100,rate", "items/s", 730e3, Some(1e6), Higher),
    reference("s3", "n=100k,single,default_limiter,items", "items", 884e3, None, Higher),
    reference("s4", "p=10,n=10k,rate", "items/s", 959.0, Some(995.0), Higher),
    reference("s4", "p=1000,n=100k,rate", "items/s", 90e3, Some(98e3), Higher),
    reference("s5", "n=1M,after_sweep", "B/item", 566.0, Some(160.0), Lower),
    reference("s6", "sync_calls", "calls", 10.0, None, Higher),
    reference("s6", "refresh_goes_on", "bool", 0.0, Some(1.0), Higher),
    Reference {
        go_note: "200/s for 1 s, then 0",
        ..reference("s7", "timeout_layer=on,rate", "items/s", 40.0, None, Higher)
    },
    Reference {
        go_note: "~0: 200 items, then stuck",
        ..reference("s7", "timeout_layer=on,coverage", "fraction", 0.04, Some(0.99), Higher)
    },
    reference("s8", "delete_delayed,idle,time_to_notfound", "ms", 91.0, Some(100.0), Lower),
    reference("s8", "delete_delayed,in_flight,resurrected", "items", 500.0, Some(0.0), Lower),
    reference("s9", "get_under_refresh", "ops/s", 1.49e6, None, Higher),
    reference("s9", "ratio", "ratio", 0.59, Some(0.95), Higher),
    reference("s10", "n=10M,batch1000,insert", "s", 14.2, None, Lower),
    reference("s10", "n=10M,batch1000,sweep", "s", 21.0, Some(3.0), Lower),
    reference("s10", "n=10M,batch1000,after_sweep", "B/item", 399.0, Some(160.0), Lower),
];

/// The reference for a figure, if the Go original has a counterpart.
pub(crate) fn find(scenario: &str, variant: &str) -> Option<&'static Reference> {
    REFERENCES.iter().find(|r| r.scenario == scenario && r.variant == variant)
}

impl Reference {
    /// The Go figure as the table shows it.
    pub(crate) fn go_text(&self) -> String {
        if self.go_note.is_empty() {
            human(self.go)
        } else {
            format!("{} ({})", human(self.go), self.go_note)
        }
    }

    /// The target as the table shows it, e.g. `>= 12.00 M`; empty without one.
    pub(crate) fn target_text(&self) -> String {
        let sign = match self.better {
            Higher => ">=",
            Lower => "<=",
        };
        self.target.map_or(String::new(), |t| format!("{sign} {}", human(t)))
    }

    /// How many times better than the Go original `ours` is (see [`better_ratio`]).
    pub(crate) fn ratio(&self, ours: f64) -> f64 {
        better_ratio(ours, self.go, self.better)
    }
}

/// How many times better `ours` is than `go`, whichever way the figure improves: above 1
/// is better, below 1 worse. `ours / go` when higher is better, `go / ours` when lower is.
///
/// Infinite when the figure being divided by is 0 and the other is not (the Go original never
/// recovers, or ours resurrects nothing); 1 when both are 0; NaN for a negative or non-finite
/// input.
pub(crate) fn better_ratio(ours: f64, go: f64, better: Better) -> f64 {
    if !(ours.is_finite() && go.is_finite()) || ours < 0.0 || go < 0.0 {
        return f64::NAN;
    }
    let (num, den) = match better {
        Higher => (ours, go),
        Lower => (go, ours),
    };
    match (num == 0.0, den == 0.0) {
        (true, true) => 1.0,
        (false, true) => f64::INFINITY,
        _ => num / den,
    }
}

/// A short human form of a figure: 2660000 -> "2.66 M".
pub(crate) fn human(v: f64) -> String {
    let a = v.abs();
    if v.fract() == 0.0 && a < 1e4 {
        format!("{v:.0}")
    } else if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_ratio_points_the_same_way_for_both_directions() {
        // Twice the Go original's ops/s, and half its seconds: both 2x better.
        assert_eq!(better_ratio(5.32e6, 2.66e6, Higher), 2.0);
        assert_eq!(better_ratio(4.12, 8.24, Lower), 2.0);
        // Worse: half the ops/s, twice the seconds.
        assert_eq!(better_ratio(1.33e6, 2.66e6, Higher), 0.5);
        assert_eq!(better_ratio(16.48, 8.24, Lower), 0.5);
        assert_eq!(better_ratio(7.0, 7.0, Lower), 1.0);
    }

    #[test]
    fn better_ratio_at_zero() {
        // The Go original never goes on (0), ours does (1): infinitely better.
        assert_eq!(better_ratio(1.0, 0.0, Higher), f64::INFINITY);
        // Go resurrects 500 items, ours none: infinitely better.
        assert_eq!(better_ratio(0.0, 500.0, Lower), f64::INFINITY);
        // And the other way round: infinitely worse.
        assert_eq!(better_ratio(0.0, 2.66e6, Higher), 0.0);
        assert_eq!(better_ratio(500.0, 0.0, Lower), 0.0);
        assert_eq!(better_ratio(0.0, 0.0, Lower), 1.0);
        assert!(better_ratio(f64::NAN, 1.0, Higher).is_nan());
        assert!(better_ratio(-1.0, 1.0, Higher).is_nan());
    }

    #[test]
    fn references_are_unique_and_consistent() {
        for (i, r) in REFERENCES.iter().enumerate() {
            assert!(
                REFERENCES[..i].iter().all(|o| (o.scenario, o.variant) != (r.scenario, r.variant)),
                "{} {} listed twice",
                r.scenario,
                r.variant
            );
            assert!(r.go.is_finite() && r.go >= 0.0);
            // A target is a figure of the same kind (s8's one period, 100 ms, is looser than
            // the Go original's 91 ms: the target there is the bound, not a speed-up).
            assert!(r.target.is_none_or(|t| t.is_finite() && t >= 0.0));
        }
        assert_eq!(find("s2", "n=1M,batch100,sweep").map(|r| r.go), Some(0.83));
        assert!(find("s2", "n=100k,batch100,sweep").is_none());
    }

    #[test]
    fn table_texts() {
        let s1 = find("s1", "get_hit").unwrap();
        assert_eq!(s1.go_text(), "2.66 M");
        assert_eq!(s1.target_text(), ">= 12.00 M");
        let s10 = find("s10", "n=10M,batch1000,sweep").unwrap();
        assert_eq!(s10.target_text(), "<= 3");
        assert_eq!(find("s3", "n=100k,single,default_limiter,items").unwrap().target_text(), "");
        assert_eq!(
            find("s7", "timeout_layer=on,rate").unwrap().go_text(),
            "40 (200/s for 1 s, then 0)"
        );
    }
}
