//! The live progress line (indicatif, drawn only when stderr is a terminal) and the end-of-run
//! summary (always printed to stderr).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::RunInfo;
use super::recorder::Live;

/// The live line, refreshed four times a second.
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What clients use to print a warning without garbling the live line.
#[derive(Clone)]
pub struct Handle(ProgressBar);

impl Handle {
    pub fn warn(&self, text: String) {
        if self.0.is_hidden() {
            eprintln!("{text}");
        } else {
            self.0.println(text);
        }
    }
}

impl Progress {
    /// Starts the live line (`enabled` false, or stderr not a terminal: nothing is drawn).
    pub fn start(enabled: bool, live: Arc<Live>, planned: u64, max: Duration) -> Progress {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(planned), target);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        if bar.is_hidden() {
            return Progress { bar, task: None };
        }
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_done = 0u64;
            let mut last_at = tokio::time::Instant::now();
            let mut rate = 0f64;
            let started = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let accepted = live.accepted.load(Ordering::Relaxed);
                let refused = live.refused.load(Ordering::Relaxed);
                let unknown = live.indeterminate.load(Ordering::Relaxed);
                let done = accepted + refused + unknown;
                let now = tokio::time::Instant::now();
                let dt = (now - last_at).as_secs_f64();
                if dt >= 1.0 {
                    rate = (done - last_done) as f64 / dt;
                    last_done = done;
                    last_at = now;
                }
                let lag = live.lag_max_us.load(Ordering::Relaxed);
                let lag_note = if lag > super::LAG_WARN_MAX.as_micros() as u64 {
                    format!("  LAG max {:.0} ms!", lag as f64 / 1000.0)
                } else {
                    String::new()
                };
                shown.set_position(live.done.load(Ordering::Relaxed));
                shown.set_message(format!(
                    "sent {} accepted {accepted} refused {refused} unknown {unknown} \
                     in-flight {} idle {} {rate:.0}/s p99 {:.1} ms{lag_note}{}",
                    live.sent.load(Ordering::Relaxed),
                    live.in_flight.load(Ordering::Relaxed),
                    live.idle_held.load(Ordering::Relaxed),
                    live.recent_p99_us.load(Ordering::Relaxed) as f64 / 1000.0,
                    if started.elapsed() > max {
                        " (max_duration)"
                    } else {
                        ""
                    }
                ));
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle(self.bar.clone())
    }

    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// Prints the end-of-run summary to stderr.
pub fn print_summary(info: &RunInfo, dir: &Path) {
    let elapsed = (info.finished_at.micros() - info.started_at.micros()).max(1) as f64 / 1e6;
    let mut out = String::new();
    out.push_str(&format!(
        "landrush run `{}` (seed {}, shard {}) against {} — records in {}\n",
        info.scenario,
        info.seed,
        info.shard,
        info.target,
        dir.display()
    ));
    out.push_str(&format!(
        "  requests   {} started of {} planned, {} transmissions in {:.1} s ({:.0}/s)\n",
        info.requests_started,
        info.shard_requests_planned,
        info.transmissions,
        elapsed,
        info.transmissions as f64 / elapsed
    ));
    out.push_str(&format!(
        "  outcomes   accepted {}  refused {}  indeterminate {}  failed {}\n",
        info.accepted, info.refused, info.indeterminate, info.failed
    ));
    if !info.kinds.is_empty() {
        let kinds: Vec<String> = info.kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  kinds      {}\n", kinds.join("  ")));
    }
    if !info.errors.is_empty() {
        let errors: Vec<String> = info
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push_str(&format!("  no reply   {}\n", errors.join("  ")));
    }
    if info.idle_opened > 0 {
        out.push_str(&format!(
            "  idle       {} opened, {} still held at the end\n",
            info.idle_opened, info.idle_held_at_end
        ));
    }
    for (name, s) in [
        ("latency   ", &info.latency_service),
        ("corrected ", &info.latency_corrected),
        ("driver lag", &info.driver_lag.summary),
    ] {
        if s.count > 0 {
            out.push_str(&format!(
                "  {name} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.max_us)
            ));
        }
    }
    for warning in &info.warnings {
        out.push_str(&format!("  !! {warning}\n"));
    }
    eprint!("{out}");
}
