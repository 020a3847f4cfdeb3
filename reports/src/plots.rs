//! The SVG plots of report.html, drawn with `plotters`' SVG backend.
//!
//! No font files are read (plotters is built without `ttf`): text is emitted as SVG `<text>` in the
//! generic `sans-serif` family and the browser picks a local font, so the page stays offline and
//! builds on a machine with nothing but the Rust toolchain. Time plots share one x axis, seconds
//! since the run's t0, and show injected faults as labelled dashed vertical markers.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::model::{Report, SpectrumPoint};

pub(crate) const WIDTH: u32 = 1100;
const HEIGHT: u32 = 300;

pub(crate) const BLUE_SENT: RGBColor = RGBColor(31, 119, 180);
pub(crate) const GREEN_ACCEPTED: RGBColor = RGBColor(44, 160, 44);
pub(crate) const RED_REFUSED: RGBColor = RGBColor(214, 39, 40);
pub(crate) const ORANGE_UNKNOWN: RGBColor = RGBColor(255, 127, 14);
const PURPLE_FAULT: RGBColor = RGBColor(148, 103, 189);
pub(crate) const GREY_MAX: RGBColor = RGBColor(127, 127, 127);

/// One plot of the report: its anchor id, its title and its SVG (or why there is none).
pub struct Plot {
    pub id: &'static str,
    pub title: &'static str,
    pub svg: Result<String, String>,
}

/// All plots of report.html, in page order.
pub fn all(r: &Report) -> Vec<Plot> {
    let plot = |id, title, svg: anyhow::Result<Option<String>>| Plot {
        id,
        title,
        svg: match svg {
            Ok(Some(svg)) => Ok(svg),
            Ok(None) => Err("no data in this run".into()),
            Err(e) => Err(format!("could not draw: {e:#}")),
        },
    };
    vec![
        plot("requests", "Requests per second", requests_per_second(r)),
        plot("latency", "Reply latency per second", latency_per_second(r)),
        plot(
            "spectrum",
            "Accept latency by percentile",
            latency_spectrum(r),
        ),
        plot("queue", "Queue depth", queue_depth(r)),
        plot(
            "handover",
            "Handover and acks per second",
            handover_per_second(r),
        ),
        plot("ack-delay", "Ack delay distribution", ack_delay(r)),
        plot("lag", "Driver lag", driver_lag(r)),
        plot(
            "shares",
            "Outcomes by client group and request kind",
            crate::share_plot::outcome_shares(r),
        ),
    ]
}

/// Where a per-second figure is drawn: the middle of its second, which it describes as a whole.
fn mid(second: u64) -> f64 {
    second as f64 + 0.5
}

/// One line of a chart.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A chart over the run's time axis.
struct TimeChart<'a> {
    y_desc: &'a str,
    series: Vec<Series>,
    report: &'a Report,
}

/// One per-second count of the report's series as a plotted line.
fn per_second(
    r: &Report,
    name: &'static str,
    color: RGBColor,
    value: fn(&crate::model::SecondStats) -> u64,
) -> Series {
    Series {
        name,
        color,
        points: r
            .series
            .iter()
            .map(|s| (mid(s.second), value(s) as f64))
            .collect(),
    }
}

/// Sent, accepted, refused and unanswered transmissions per second.
pub fn requests_per_second(r: &Report) -> anyhow::Result<Option<String>> {
    draw_time_chart(TimeChart {
        y_desc: "transmissions / s",
        series: vec![
            per_second(r, "sent", BLUE_SENT, |s| s.sent),
            per_second(r, "accepted", GREEN_ACCEPTED, |s| s.accepted),
            per_second(r, "refused", RED_REFUSED, |s| s.refused),
            per_second(r, "no reply", ORANGE_UNKNOWN, |s| s.indeterminate),
        ],
        report: r,
    })
}

/// p50, p99 and max of the accept latency of the replies of each second.
pub fn latency_per_second(r: &Report) -> anyhow::Result<Option<String>> {
    let percentile = |name, color, value: fn(&crate::model::Percentiles) -> f64| Series {
        name,
        color,
        points: r
            .series
            .iter()
            .filter_map(|s| Some((mid(s.second), value(s.latency_ms.as_ref()?))))
            .collect(),
    };
    draw_time_chart(TimeChart {
        y_desc: "accept latency (ms)",
        series: vec![
            percentile("p50", GREEN_ACCEPTED, |p| p.p50),
            percentile("p99", ORANGE_UNKNOWN, |p| p.p99),
            percentile("max", RED_REFUSED, |p| p.max),
        ],
        report: r,
    })
}

/// Queue depth: the buffer's samples, or the depth derived from the records.
pub fn queue_depth(r: &Report) -> anyhow::Result<Option<String>> {
    let mut series = vec![Series {
        name: if r.queue_source == "stats" {
            "queue depth (buffer stats)"
        } else {
            "queue depth (accepted − handed over)"
        },
        color: BLUE_SENT,
        points: r.queue.iter().map(|q| (q.t_s, q.depth as f64)).collect(),
    }];
    if r.queue.iter().any(|q| q.acks_pending.is_some()) {
        series.push(Series {
            name: "acks pending",
            color: ORANGE_UNKNOWN,
            points: r
                .queue
                .iter()
                .filter_map(|q| Some((q.t_s, q.acks_pending? as f64)))
                .collect(),
        });
    }
    draw_time_chart(TimeChart {
        y_desc: "requests",
        series,
        report: r,
    })
}

/// Handover records and ack mails received per second.
pub fn handover_per_second(r: &Report) -> anyhow::Result<Option<String>> {
    draw_time_chart(TimeChart {
        y_desc: "per second",
        series: vec![
            per_second(r, "handed over", BLUE_SENT, |s| s.handed),
            per_second(r, "acks received", GREEN_ACCEPTED, |s| s.acked),
        ],
        report: r,
    })
}

/// The largest driver lag of each second's intended sends.
pub fn driver_lag(r: &Report) -> anyhow::Result<Option<String>> {
    draw_time_chart(TimeChart {
        y_desc: "max lag (ms)",
        series: vec![Series {
            name: "driver lag, max per second (sent − intended)",
            color: PURPLE_FAULT,
            points: r
                .series
                .iter()
                .filter_map(|s| Some((mid(s.second), s.max_lag_ms?)))
                .collect(),
        }],
        report: r,
    })
}

fn draw_time_chart(chart: TimeChart) -> anyhow::Result<Option<String>> {
    if chart.series.iter().all(|s| s.points.is_empty()) {
        return Ok(None);
    }
    let r = chart.report;
    let faults = fault_positions(r);
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x_max = points()
        .map(|p| p.0)
        .chain(faults.iter().map(|f| f.0))
        .fold(r.duration_s, f64::max)
        .max(1.0);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let markers = chart.series.iter().all(|s| s.points.len() <= 60);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut c = chart_on(&root, 0.0..x_max, 0.0..y_max)?;
        c.configure_mesh()
            .x_desc("seconds since start")
            .y_desc(chart.y_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for series in &chart.series {
            draw_line(&mut c, series, markers)?;
        }
        for (at, kind) in &faults {
            draw_fault(&mut c, *at, kind, x_max, y_max)?;
        }
        legend(&mut c)?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// Each fault's instant in seconds since `t0`, with its kind.
fn fault_positions(r: &Report) -> Vec<(f64, &str)> {
    match r.t0 {
        Some(t0) => r
            .faults
            .iter()
            .map(|f| ((f.at.micros() - t0.micros()) as f64 / 1e6, f.kind.as_str()))
            .collect(),
        None => Vec::new(),
    }
}

/// One series as a labelled line, with a dot per point when there are few enough to tell apart.
fn draw_line(c: &mut Chart, series: &Series, markers: bool) -> anyhow::Result<()> {
    if series.points.is_empty() {
        return Ok(());
    }
    let color = series.color;
    c.draw_series(LineSeries::new(
        series.points.iter().copied(),
        color.stroke_width(2),
    ))?
    .label(series.name)
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    if markers {
        c.draw_series(
            series
                .points
                .iter()
                .map(|p| Circle::new(*p, 2, color.filled())),
        )?;
    }
    Ok(())
}

/// A fault as a dashed vertical line at its instant, labelled with its kind.
fn draw_fault(c: &mut Chart, at: f64, kind: &str, x_max: f64, y_max: f64) -> anyhow::Result<()> {
    c.draw_series(DashedLineSeries::new(
        [(at, 0.0), (at, y_max)],
        6,
        4,
        PURPLE_FAULT.stroke_width(2),
    ))?;
    c.draw_series(std::iter::once(Text::new(
        format!("⚡ {kind}"),
        (at + x_max / 200.0, y_max * 0.97),
        ("sans-serif", 16).into_font().color(&PURPLE_FAULT),
    )))?;
    Ok(())
}

/// Latency against percentile, raw and corrected, with the tail stretched as HdrHistogram does:
/// x is log10(1 / (1 − p)), so 90%, 99%, 99.9% are evenly spaced.
pub fn latency_spectrum(r: &Report) -> anyhow::Result<Option<String>> {
    let stretch = |points: &[SpectrumPoint], count: u64| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| {
                let x = if p.percentile >= 100.0 {
                    // The maximum sits where one value in `count` lies beyond.
                    (count.max(2) as f64).log10()
                } else {
                    (100.0 / (100.0 - p.percentile)).log10()
                };
                (x, p.ms)
            })
            .collect()
    };
    let series = [
        (
            "accept (reply − sent)",
            GREEN_ACCEPTED,
            stretch(&r.spectrum.accept, r.latency_ms.accept.count),
        ),
        (
            "accept, corrected (reply − intended)",
            RED_REFUSED,
            stretch(
                &r.spectrum.accept_corrected,
                r.latency_ms.accept_corrected.count,
            ),
        ),
    ];
    let points = || series.iter().flat_map(|s| s.2.iter());
    if points().next().is_none() {
        return Ok(None);
    }
    let x_max = points().map(|p| p.0).fold(1.0, f64::max).ceil();
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut c = chart_on(&root, 0.0..x_max, 0.0..y_max)?;
        c.configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| percentile_label(*x))
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for (name, color, points) in series {
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
            c.draw_series(points.iter().map(|p| Circle::new(*p, 2, color.filled())))?;
        }
        legend(&mut c)?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// `99.9%` for x = 3 on the stretched percentile axis.
fn percentile_label(x: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{percentile:.4}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Bars of the delay from a request's acceptance to its first ack.
pub fn ack_delay(r: &Report) -> anyhow::Result<Option<String>> {
    let (Some(last), false) = (r.ack_delay_buckets.last(), r.ack_delay_buckets.is_empty()) else {
        return Ok(None);
    };
    let y_max = r
        .ack_delay_buckets
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(1) as f64
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut c = chart_on(&root, 0.0..last.to_ms, 0.0..y_max.max(1.0))?;
        c.configure_mesh()
            .x_desc("ack delay (ms): first ack received − accept reply")
            .y_desc("requests")
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        c.draw_series(r.ack_delay_buckets.iter().map(|b| {
            Rectangle::new(
                [(b.from_ms, 0.0), (b.to_ms, b.count as f64)],
                BLUE_SENT.mix(0.7).filled(),
            )
        }))?;
        root.present()?;
    }
    Ok(Some(svg))
}

pub(crate) type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A white chart with room for axis labels; titles are the page's headings, not the SVG's.
fn chart_on<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> anyhow::Result<Chart<'a, 'b>> {
    root.fill(&WHITE)?;
    Ok(ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?)
}

fn legend<'a, 'b: 'a>(c: &mut Chart<'a, 'b>) -> anyhow::Result<()> {
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY_MAX)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }

    #[test]
    fn a_report_without_records_draws_no_plot() {
        assert!(all(&Report::default()).iter().all(|p| p.svg.is_err()));
    }
}
