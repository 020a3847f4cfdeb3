//! The schedule: which requests a scenario sends, when each is due, and who sends it.
//!
//! Everything here is a closed-form function of a request's index, so a client (or a shard) can
//! walk its own requests lazily: request `i` is due at [`Plan::offset`]`(i)` after the start and is
//! sent by client [`Plan::client_of`]`(i)` (`i % clients` with one client group). Offsets never decrease with the index. The only table kept is the
//! small, bounded list of hot-name slots.
//!
//! The layer also owns what is computed from the schedule: each request ([`request`]), the slice
//! of a shard ([`shard`]), and the checked scenario every later layer takes ([`ValidScenario`]).

pub mod groups;
pub mod request;
pub mod shard;
mod valid;

pub use valid::ValidScenario;

use std::time::Duration;

use anyhow::{bail, ensure};

use crate::scenario::{Scenario, Schedule};

/// A scenario's schedule, resolved: request count after the bounds, due times, hot-name slots.
#[derive(Debug, Clone)]
pub struct Plan {
    schedule: Schedule,
    /// Which client (of which group) sends which request.
    assignment: groups::Assignment,
    /// Requests the scenario sends: the schedule's count, cut by `bounds.max_requests` and by
    /// `bounds.max_duration` (requests due at or after it are never sent).
    total: u64,
    /// What the schedule alone would send.
    scheduled: u64,
    /// `(request index, hot name number)`, sorted by index.
    hot_slots: Vec<(u64, u32)>,
}

impl Plan {
    /// Resolves the schedule of a (structurally valid) scenario. Fails if hot names cannot be
    /// placed as asked.
    pub fn new(scenario: &Scenario) -> anyhow::Result<Plan> {
        let scheduled = match &scenario.schedule {
            Schedule::Constant { rate, duration } => {
                (rate * duration.0.as_secs_f64()).floor() as u64
            }
            Schedule::Ramp { from, to, duration } => {
                ((from + to) / 2.0 * duration.0.as_secs_f64()).floor() as u64
            }
            Schedule::Steps { steps } => steps
                .iter()
                .map(|s| (s.rate * s.duration.0.as_secs_f64()).floor() as u64)
                .sum(),
            Schedule::Burst { count, .. } => *count,
            Schedule::Instant { count } => *count,
            Schedule::Closed { requests, .. } => *requests,
        };
        ensure!(
            scheduled >= 1,
            "schedule: sends no request at all (rate × duration < 1)"
        );
        let mut plan = Plan {
            schedule: scenario.schedule.clone(),
            assignment: groups::Assignment::new(&scenario.clients),
            total: scheduled.min(scenario.bounds.max_requests),
            scheduled,
            hot_slots: Vec::new(),
        };
        // Cut what is due at or after max_duration (offsets are monotonic: binary search).
        let max = scenario.bounds.max_duration.0;
        if plan.offset(plan.total - 1).is_some_and(|last| last >= max) {
            plan.total = plan.first_due_at_or_after(max);
            ensure!(
                plan.total >= 1,
                "bounds.max_duration: {} leaves no request to send",
                scenario.bounds.max_duration
            );
        }
        plan.place_hot(scenario)?;
        Ok(plan)
    }

    fn place_hot(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let d = &scenario.domains;
        let hot = d.hot.len() as u64 + d.hot_generated as u64;
        if hot == 0 {
            return Ok(());
        }
        let askers = d.askers as u64;
        ensure!(
            hot * askers <= self.total,
            "domains: {hot} hot names × {askers} askers need {} requests, the scenario sends {}",
            hot * askers,
            self.total
        );
        let window = d.hot_within.0.min(self.span());
        let mut next_free = 0u64;
        for h in 0..hot {
            let first = match self.offset(0) {
                Some(_) => {
                    let at = window.mul_f64((h as f64 + 0.5) / hot as f64);
                    self.first_due_at_or_after(at)
                }
                None => self.total * (2 * h + 1) / (2 * hot),
            }
            .max(next_free)
            .min(self.total - askers.min(self.total));
            ensure!(
                first >= next_free,
                "domains: too many hot names to give each its own {askers} requests"
            );
            let last = first + askers - 1;
            if let (Some(a), Some(b)) = (self.offset(first), self.offset(last))
                && b - a >= Duration::from_secs(1)
            {
                bail!(
                    "domains: hot name {} would have its {askers} askers spread over {:.3}s at \
                     the rate there, not within one second; use fewer askers or a hot_within \
                     over a busier part of the schedule",
                    h + 1,
                    (b - a).as_secs_f64()
                );
            }
            for i in first..=last {
                self.hot_slots.push((i, h as u32));
            }
            next_free = last + 1;
        }
        Ok(())
    }

    /// Requests this scenario sends (after the bounds).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Requests the schedule alone would send, before `bounds` cut it.
    pub fn scheduled(&self) -> u64 {
        self.scheduled
    }

    /// Clients over all groups (numbered in file order; see [`groups`]).
    pub fn clients(&self) -> u32 {
        self.assignment.total_clients()
    }

    /// Which client of which group sends which request.
    pub fn assignment(&self) -> &groups::Assignment {
        &self.assignment
    }

    /// True for a closed model: requests have no due time, each follows the previous reply.
    pub fn is_closed(&self) -> bool {
        matches!(self.schedule, Schedule::Closed { .. })
    }

    /// The pause a closed-model client takes between a reply and its next request.
    pub fn think_time(&self) -> Duration {
        match self.schedule {
            Schedule::Closed { think_time, .. } => think_time.0,
            _ => Duration::ZERO,
        }
    }

    /// The client that sends request `index`.
    pub fn client_of(&self, index: u64) -> u32 {
        self.assignment.client_of(index)
    }

    /// The requests client `client` sends, in order (none for a group that sends none).
    pub fn requests_of(&self, client: u32) -> impl Iterator<Item = u64> + use<> {
        self.assignment.requests_of(client, self.total)
    }

    /// How many requests client `client` sends.
    pub fn request_count_of(&self, client: u32) -> u64 {
        self.assignment.count_of(client, self.total)
    }

    /// The hot name number request `index` asks for, if it is a hot slot.
    pub fn hot_of(&self, index: u64) -> Option<u32> {
        self.hot_slots
            .binary_search_by_key(&index, |&(i, _)| i)
            .ok()
            .map(|n| self.hot_slots[n].1)
    }

    /// The hot slots, `(request index, hot name number)` sorted by index.
    pub fn hot_slots(&self) -> &[(u64, u32)] {
        &self.hot_slots
    }

    /// How long after the start request `index` is due (`None` in a closed model).
    pub fn offset(&self, index: u64) -> Option<Duration> {
        let i = index as f64;
        let seconds = match &self.schedule {
            Schedule::Constant { rate, .. } => i / rate,
            Schedule::Ramp { from, to, duration } => {
                // rate(t) = from + (to - from) t / T, so requests by t: from t + c t², c = (to-from)/2T.
                // Request i is due when that reaches i; this form is stable when c is 0 or from is 0.
                if index == 0 {
                    0.0
                } else {
                    let c = (to - from) / (2.0 * duration.0.as_secs_f64());
                    let disc = (from * from + 4.0 * c * i).max(0.0);
                    2.0 * i / (from + disc.sqrt())
                }
            }
            Schedule::Steps { steps } => {
                let mut first = 0f64;
                let mut start = 0f64;
                let mut at = None;
                for step in steps {
                    let n = (step.rate * step.duration.0.as_secs_f64()).floor();
                    if i < first + n {
                        at = Some(start + (i - first) / step.rate);
                        break;
                    }
                    first += n;
                    start += step.duration.0.as_secs_f64();
                }
                at.unwrap_or(start)
            }
            Schedule::Burst {
                count,
                within,
                front_load,
            } => {
                let p = i / *count as f64;
                within.0.as_secs_f64() * (1.0 - (1.0 - p).powf(1.0 / front_load))
            }
            Schedule::Instant { .. } => 0.0,
            Schedule::Closed { .. } => return None,
        };
        Some(Duration::from_secs_f64(seconds.max(0.0)))
    }

    /// How long the open schedule lasts (the last request's offset; zero for closed/instant).
    pub fn span(&self) -> Duration {
        self.offset(self.total.saturating_sub(1))
            .unwrap_or(Duration::ZERO)
    }

    /// The first index due at or after `at` (or `total` if none).
    fn first_due_at_or_after(&self, at: Duration) -> u64 {
        let (mut lo, mut hi) = (0u64, self.total);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.offset(mid).is_some_and(|o| o < at) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Requests due in each whole second after the start (open models; closed models give an
    /// empty list). Walks every request: for `--dry-run` and tests.
    pub fn per_second(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        if self.is_closed() {
            return counts;
        }
        for i in 0..self.total {
            let second = self.offset(i).unwrap_or_default().as_secs() as usize;
            if counts.len() <= second {
                counts.resize(second + 1, 0);
            }
            counts[second] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schedule: &str) -> Plan {
        let text = format!(
            "name = \"t\"\nseed = 1\nstart = \"+1s\"\n[bounds]\nmax_requests = 1000000\n\
             max_duration = \"1h\"\n[clients]\ncount = 10\n[schedule]\n{schedule}\n"
        );
        ValidScenario::parse(&text).unwrap().plan().clone()
    }

    #[test]
    fn constant_is_evenly_spaced() {
        let p = plan("model = \"constant\"\nrate = 100\nduration = \"5s\"");
        assert_eq!(p.total(), 500);
        assert_eq!(p.per_second(), vec![100; 5]);
        assert_eq!(p.offset(50), Some(Duration::from_millis(500)));
    }

    #[test]
    fn ramp_integrates_the_rate() {
        let p = plan("model = \"ramp\"\nfrom = 0\nto = 100\nduration = \"10s\"");
        assert_eq!(p.total(), 500);
        let per = p.per_second();
        assert_eq!(per.len(), 10);
        // Rate at the middle of second s is 10 s + 5.
        for (s, n) in per.iter().enumerate() {
            assert!((*n as i64 - (10 * s as i64 + 5)).abs() <= 1, "{per:?}");
        }
    }

    #[test]
    fn steps_follow_each_other() {
        let p = plan(
            "model = \"steps\"\nsteps = [{ rate = 10, duration = \"2s\" }, \
             { rate = 50, duration = \"1s\" }]",
        );
        assert_eq!(p.per_second(), vec![10, 10, 50]);
    }

    #[test]
    fn burst_is_front_loaded() {
        let p = plan("model = \"burst\"\ncount = 12000\nwithin = \"60s\"\nfront_load = 6");
        let per = p.per_second();
        assert_eq!(per.iter().sum::<u64>(), 12000);
        assert!(per[0] > 1000 && per[0] < 1300, "{}", per[0]);
        assert!(per.windows(2).all(|w| w[0] + 1 >= w[1]), "{per:?}");
    }

    #[test]
    fn max_duration_cuts_the_tail() {
        let text = "name = \"t\"\nseed = 1\nstart = \"+1s\"\n[bounds]\nmax_requests = 300\n\
                    max_duration = \"2s\"\n[clients]\ncount = 3\n[schedule]\nmodel = \"constant\"\n\
                    rate = 100\nduration = \"10s\"\n";
        let p = ValidScenario::parse(text).unwrap().plan().clone();
        assert_eq!(p.total(), 200);
        assert_eq!(p.scheduled(), 1000);
    }
}
