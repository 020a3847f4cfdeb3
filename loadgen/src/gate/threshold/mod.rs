//! Gate thresholds in the style of k6: `accept_latency.p99 < "5ms"`, `throughput >= 5000`,
//! `lost == 0`, `verdict == "pass"`, `accepted_share >= 99.5%`, and ratios against a reference run
//! measured in the same gate: `throughput >= 0.75x postfix` (at least 0.75 times the same metric of
//! the run named `postfix`), `accept_latency.p99 <= 2x previous`.
//!
//! A pure library: [`Threshold::parse`] reads one threshold ([`parse`]), [`Threshold::evaluate`]
//! judges it over the report.json of a run (and of its reference, [`evaluate`]), returning an
//! [`Evaluation`] that says the measured value, the bound and by how much it missed.
//!
//! Metrics are named by the aliases in [`METRICS`] or by a dotted path into report.json
//! (`latency_ms.accept.p99`); a path starting with `rehearse.` reads the run's rehearse.json
//! (`rehearse.drain.handed_after_s`). The unit of a path follows its names: `…_ms` milliseconds,
//! `…_s` seconds, `…_per_s` a rate, otherwise a plain number. A time bound (`"5ms"`, `2s`, `250us`)
//! is converted to the metric's unit; `%` is a share (99.5% = 0.995) for share metrics.

pub mod evaluate;
pub mod metric;
pub mod parse;

pub use evaluate::Evaluation;
pub use metric::RunDocs;
pub use parse::Threshold;

#[cfg(test)]
mod tests {
    use super::evaluate::*;
    use super::metric::*;
    use super::parse::*;
    use serde_json::Value;
    use serde_json::json;

    fn run(report: Value) -> RunDocs {
        RunDocs {
            report,
            rehearse: None,
        }
    }

    fn sample() -> RunDocs {
        RunDocs {
            report: json!({
                "verdict": "pass",
                "checks": {"loss": {"ok": true, "lost": 0, "gaps": 0},
                           "fifo": {"ok": true, "violations": 0},
                           "acks": {"ok": null, "missing": 0, "extra": 0}},
                "counts": {"sent": 1000, "accepted": 990, "refused": 10, "indeterminate": 0},
                "latency_ms": {"accept": {"p50": 1.5, "p99": 7.2, "max": 20.0}},
                "throughput": {"accepted_per_s": 4500.0},
            }),
            rehearse: Some(json!({"drain": {"handed_after_s": 1.25, "acked_after_s": null}})),
        }
    }

    fn eval(text: &str) -> Evaluation {
        Threshold::parse(text).unwrap().evaluate(&sample(), None)
    }

    #[test]
    fn parses_the_k6_forms() {
        let t = Threshold::parse(r#"accept_latency.p99 < "5ms""#).unwrap();
        assert_eq!(t.metric.path, "latency_ms.accept.p99");
        assert_eq!(t.op, Op::Lt);
        assert_eq!(t.bound, Bound::Absolute(5.0));
        let t = Threshold::parse("throughput >= 5000").unwrap();
        assert_eq!(t.metric.path, "throughput.accepted_per_s");
        assert_eq!(t.bound, Bound::Absolute(5000.0));
        let t = Threshold::parse("lost==0").unwrap();
        assert_eq!((t.op, t.bound), (Op::Eq, Bound::Absolute(0.0)));
        let t = Threshold::parse("verdict == 'pass'").unwrap();
        assert_eq!(t.bound, Bound::Text("pass".into()));
        let t = Threshold::parse("latency_ms.accept.p99 <= 1s").unwrap();
        assert_eq!(
            (t.metric.unit, t.bound),
            (Unit::Millis, Bound::Absolute(1000.0))
        );
    }

    #[test]
    fn units_convert_to_the_metric() {
        assert_eq!(parse_quantity("5ms", Unit::Millis), Ok(5.0));
        assert_eq!(parse_quantity("2s", Unit::Millis), Ok(2000.0));
        assert_eq!(parse_quantity("250us", Unit::Millis), Ok(0.25));
        assert_eq!(parse_quantity("1500ms", Unit::Seconds), Ok(1.5));
        assert_eq!(parse_quantity("99.5%", Unit::Share), Ok(0.995));
        assert_eq!(parse_quantity("1.2k", Unit::Rate), Ok(1200.0));
        assert_eq!(parse_quantity("10_000", Unit::Count), Ok(10000.0));
        assert!(
            parse_quantity("5ms", Unit::Rate).is_err(),
            "a duration is not a rate"
        );
        assert!(parse_quantity("50%", Unit::Millis).is_err());
        assert!(parse_quantity("5 parsecs", Unit::Millis).is_err());
        assert!(parse_quantity("fast", Unit::Rate).is_err());
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for bad in [
            "throughput 5000",
            "throughput >=",
            "speed >= 5",
            "accept_latency < 5ms",
            "accept_latency.p42 < 5ms",
            "verdict < pass",
            "throughput >= 5ms",
            "throughput >= -1x postfix",
            "lost == 0 and more",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn passing_thresholds_pass() {
        for ok in [
            "verdict == pass",
            "lost == 0",
            "accept_latency.p99 < 10ms",
            "accept_latency.p50 <= 0.0015s",
            "throughput >= 4000",
            "accepted_share >= 99%",
            "drain_time < 2s",
            "rehearse.drain.handed_after_s < 1500ms",
        ] {
            let o = eval(ok);
            assert!(o.passed, "{ok}: {o:?}");
            assert!(o.miss.is_empty());
        }
    }

    #[test]
    fn a_failing_threshold_fails_and_says_by_how_much() {
        let o = eval(r#"accept_latency.p99 < "5ms""#);
        assert!(!o.passed);
        assert_eq!(o.measured, "7.2 ms");
        assert_eq!(o.needed, "< 5 ms");
        assert_eq!(o.miss, "over by 2.2 ms (+44%)");

        let o = eval("throughput >= 5000");
        assert!(!o.passed);
        assert_eq!(o.miss, "under by 500/s (-10%)");

        let o = eval("accepted_share >= 99.5%");
        assert!(!o.passed, "990/1000 is 99%");
        assert_eq!(o.measured, "99%");

        let o = eval("verdict != pass");
        assert!(!o.passed);

        let failed = RunDocs {
            report: json!({"verdict": "fail", "checks": {"loss": {"lost": 3}}}),
            rehearse: None,
        };
        let o = Threshold::parse("lost == 0")
            .unwrap()
            .evaluate(&failed, None);
        assert!(!o.passed);
        assert_eq!((o.measured.as_str(), o.miss.as_str()), ("3", "off by 3"));
        let o = Threshold::parse("verdict == pass")
            .unwrap()
            .evaluate(&failed, None);
        assert!(!o.passed);
        // What could not be checked is not a pass either.
        let incomplete = run(json!({"verdict": "incomplete"}));
        let o = Threshold::parse("verdict == pass")
            .unwrap()
            .evaluate(&incomplete, None);
        assert!(!o.passed, "{o:?}");
        assert_eq!(o.measured, "incomplete");
    }

    #[test]
    fn a_missing_metric_fails_rather_than_passes() {
        let o = eval("ack_time < 10s");
        assert!(!o.passed, "acked_after_s is null: {o:?}");
        let o = eval("checks.acks.ok == 1");
        assert!(!o.passed);
        let o = Threshold::parse("lost == 0")
            .unwrap()
            .evaluate(&run(json!({})), None);
        assert!(!o.passed);
        assert!(o.miss.contains("checks.loss.lost"), "{o:?}");
    }

    #[test]
    fn ratios_compare_with_the_reference_run() {
        let reference = run(json!({
            "throughput": {"accepted_per_s": 400.0},
            "latency_ms": {"accept": {"p99": 3.6}}
        }));
        let t = Threshold::parse("throughput >= 10x postfix").unwrap();
        assert_eq!(t.reference(), Some("postfix"));
        let o = t.evaluate(&sample(), Some(&reference));
        assert!(o.passed, "4500/400 = 11.25: {o:?}");
        assert_eq!(o.value, Some(11.25));
        assert_eq!(o.measured, "11.25x postfix (4500/s vs 400/s)");

        let o = Threshold::parse("throughput >= 12x postfix")
            .unwrap()
            .evaluate(&sample(), Some(&reference));
        assert!(!o.passed);
        assert_eq!(o.miss, "under by 0.75x (-6%)");

        let o = Threshold::parse("accept_latency.p99 <= 150% of postfix")
            .unwrap()
            .evaluate(&sample(), Some(&reference));
        assert!(!o.passed, "7.2 / 3.6 = 2: {o:?}");
        assert_eq!(o.needed, "<= 1.5x postfix");

        let o = Threshold::parse("throughput >= 0.5x gone")
            .unwrap()
            .evaluate(&sample(), None);
        assert!(!o.passed, "a missing reference fails");
        assert!(o.miss.contains("no reference run `gone`"));

        let zero = run(json!({"throughput": {"accepted_per_s": 0.0}}));
        let o = Threshold::parse("throughput >= 0.5x zero")
            .unwrap()
            .evaluate(&sample(), Some(&zero));
        assert!(!o.passed, "a reference of 0 gives no ratio");
    }
}
