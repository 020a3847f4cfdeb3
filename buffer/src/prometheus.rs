//! The Prometheus text exposition format (version 0.0.4), the one way `/metrics` lines are
//! written, whoever contributes them (the journal and intake counters, the ack outbox).

use std::fmt::Display;

/// Whether a metric only grows (`counter`) or goes up and down (`gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A `/metrics` body being written: every metric is named `barrage_NAME`.
#[derive(Debug, Default)]
pub struct PrometheusText(String);

impl PrometheusText {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one metric with its `# HELP` and `# TYPE` lines.
    pub fn metric(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        debug_assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "metric name {name:?}"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        self.0.push_str(&format!(
            "# HELP barrage_{name} {help}\n# TYPE barrage_{name} {kind}\nbarrage_{name} {value}\n"
        ));
    }

    /// Appends text another part already rendered with a `PrometheusText`.
    pub fn extend(&mut self, text: &str) {
        self.0.push_str(text);
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_metric_is_three_lines() {
        let mut text = PrometheusText::new();
        text.metric("cursor", Kind::Gauge, "Highest seq handed over.", 7);
        assert_eq!(
            text.into_string(),
            "# HELP barrage_cursor Highest seq handed over.\n# TYPE barrage_cursor gauge\n\
             barrage_cursor 7\n"
        );
    }
}
