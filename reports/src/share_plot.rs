//! The outcome-shares plot of report.html: one horizontal bar per client group and per request
//! kind, split into accepted, refused, no reply and failed, each as a share of its requests. A
//! group served worse than the others, or a kind that is mostly refused, shows at a glance.

use plotters::prelude::*;

use crate::model::{Outcomes, Report};
use crate::plots::{Chart, GREEN_ACCEPTED, GREY_MAX, ORANGE_UNKNOWN, RED_REFUSED, WIDTH};

/// The bars: (label, outcomes), groups first, then kinds.
fn bars(r: &Report) -> Vec<(String, &Outcomes)> {
    let groups = r
        .fairness
        .groups
        .iter()
        .map(|(g, s)| (format!("group {g}"), &s.outcomes));
    let kinds = r.by_kind.kind.iter().map(|(k, o)| (format!("kind {k}"), o));
    groups
        .chain(kinds)
        .filter(|(_, o)| o.requests > 0)
        .collect()
}

/// The parts of a bar, left to right.
const PARTS: [(&str, RGBColor); 4] = [
    ("accepted", GREEN_ACCEPTED),
    ("refused", RED_REFUSED),
    ("no reply", ORANGE_UNKNOWN),
    ("failed (not sent)", GREY_MAX),
];

/// Bar `i` (from the top) centred on `n − i`, its parts stacked left to right, one legend entry
/// per part.
fn draw_bars(c: &mut Chart<'_, '_>, bars: &[(String, &Outcomes)]) -> anyhow::Result<()> {
    let n = bars.len() as f64;
    for (p, &(name, color)) in PARTS.iter().enumerate() {
        let rects: Vec<Rectangle<(f64, f64)>> = bars
            .iter()
            .enumerate()
            .map(|(i, (_, o))| {
                let counts = [o.accepted, o.refused, o.indeterminate, o.failed];
                let share = |k: usize| counts[k] as f64 * 100.0 / o.requests as f64;
                let from: f64 = (0..p).map(share).sum();
                let y = n - i as f64;
                Rectangle::new(
                    [(from, y - 0.3), (from + share(p), y + 0.3)],
                    color.filled(),
                )
            })
            .collect();
        c.draw_series(rects)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    Ok(())
}

pub fn outcome_shares(r: &Report) -> anyhow::Result<Option<String>> {
    let bars = bars(r);
    if bars.is_empty() {
        return Ok(None);
    }
    let height = 70 + 28 * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = bars.len() as f64;
        let mut c = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(190)
            // Bars centred on whole numbers (ticks land there); room right of 100% for the legend.
            .build_cartesian_2d(0.0..128.0, 0.4..n + 0.6)?;
        let labels: Vec<String> = bars
            .iter()
            .map(|(l, o)| format!("{l} ({})", o.requests))
            .collect();
        c.configure_mesh()
            .disable_y_mesh()
            .disable_x_mesh()
            .x_desc("share of the requests (%)")
            .x_label_formatter(&|x| {
                if *x <= 100.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_labels(bars.len() + 2)
            .y_label_formatter(&|y| {
                let i = (n - y).round();
                if (n - y - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        draw_bars(&mut c, &bars)?;
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY_MAX)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Share;

    #[test]
    fn every_bar_is_labelled() {
        let mut r = Report::default();
        let outcomes = |requests, accepted| Outcomes {
            requests,
            accepted,
            refused: requests - accepted,
            ..Outcomes::default()
        };
        r.by_kind.kind.insert("normal".into(), outcomes(10, 9));
        r.by_kind.kind.insert("malformed".into(), outcomes(3, 0));
        let share = Share {
            outcomes: outcomes(13, 9),
            ..Share::default()
        };
        r.fairness.groups.insert("default".into(), share);
        let svg = outcome_shares(&r).unwrap().unwrap();
        for label in [
            "group default (13)",
            "kind normal (10)",
            "kind malformed (3)",
        ] {
            assert!(svg.contains(label), "no label {label}");
        }
        assert!(outcome_shares(&Report::default()).unwrap().is_none());
    }
}
