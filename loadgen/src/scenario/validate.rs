//! The checks of a scenario that serde cannot make: possible rates, fractions, bounds, names, and
//! the `[[faults]]`. Run once, by `crate::schedule::ValidScenario`, so that later stages take a
//! scenario as given.

use anyhow::{bail, ensure};

use super::faults::{self, Fault};
use super::limits::*;
use super::{Dur, Scenario, Schedule, is_valid_address, is_valid_domain};

impl Scenario {
    /// Checks everything serde cannot: possible rates, fractions, bounds, names; resolves the
    /// `[[faults]]` (in time order). Where hot names fit in the schedule is checked with the
    /// schedule (`crate::schedule::Plan::new`).
    pub fn validate(&self) -> anyhow::Result<Vec<Fault>> {
        self.validate_bounds()?;
        self.validate_clients()?;
        self.validate_schedule()?;
        self.validate_requests()?;
        self.validate_domains()?;
        self.validate_misbehaviour()?;
        if let Some(http) = &self.http {
            http.validate()?;
        }
        if self.clients.iter().any(|g| g.pre_connect)
            && matches!(self.schedule, Schedule::Closed { .. })
        {
            bail!(
                "clients.pre_connect: a closed model has no instant to fire at; use an open \
                 schedule (instant, burst, …) with pre_connect"
            );
        }
        if matches!(self.schedule, Schedule::Closed { .. })
            && let Some(g) = self
                .clients
                .iter()
                .find(|g| g.behaviour == super::Behaviour::KeyCollider)
        {
            bail!(
                "clients `{}`: a key-collider fires just before its victim is due, and a closed \
                 model has no due times; use an open schedule",
                g.name
            );
        }
        let faults = faults::resolve(&self.faults, self.seed)?;
        // The file's own layout, and the faults against it when it says one; the layout a
        // rehearsal ends up with (the command line over the file) is checked again then.
        let layout = self.buffer.layout()?;
        if !self.buffer.is_empty() {
            layout.check_faults(&faults)?;
        }
        Ok(faults)
    }

    fn validate_bounds(&self) -> anyhow::Result<()> {
        ensure!(!self.name.trim().is_empty(), "name: must not be empty");
        let b = &self.bounds;
        ensure!(
            (1..=MAX_REQUESTS).contains(&b.max_requests),
            "bounds.max_requests: must be between 1 and {MAX_REQUESTS} (got {})",
            b.max_requests
        );
        ensure!(
            !b.max_duration.0.is_zero() && b.max_duration.0.as_secs() <= MAX_DURATION_SECS,
            "bounds.max_duration: must be more than 0 and at most 7 days (got {})",
            b.max_duration
        );
        Ok(())
    }

    fn validate_clients(&self) -> anyhow::Result<()> {
        self.clients.validate(self.http.is_some())
    }

    fn validate_requests(&self) -> anyhow::Result<()> {
        let r = &self.requests;
        ensure!(
            is_valid_address(&r.recipient),
            "requests.recipient: `{}` is not a mail address",
            r.recipient
        );
        ensure!(
            r.requesters >= 1,
            "requests.requesters: at least one requester is needed"
        );
        ensure!(
            is_valid_domain(&r.requester_domain),
            "requests.requester_domain: `{}` is not a valid domain",
            r.requester_domain
        );
        ensure!(
            !r.sizes.is_empty(),
            "requests.sizes: give at least one size"
        );
        ensure!(
            r.sizes.iter().any(|s| s.weight > 0),
            "requests.sizes: at least one size needs a weight above 0"
        );
        for s in &r.sizes {
            ensure!(
                s.bytes <= MAX_MESSAGE_BYTES,
                "requests.sizes: {} bytes is more than the limit of {MAX_MESSAGE_BYTES}",
                s.bytes
            );
        }
        Ok(())
    }

    fn validate_domains(&self) -> anyhow::Result<()> {
        let senders = self.clients.sending_clients();
        let d = &self.domains;
        ensure!(d.pool >= 1, "domains.pool: at least one name is needed");
        ensure!(
            is_valid_domain(&d.tld) && !d.tld.contains('.'),
            "domains.tld: `{}` is not a top-level domain label",
            d.tld
        );
        // A hot name is a request every buffer must accept: barrage's own rule decides.
        for name in &d.hot {
            if let Err(why) = barrage::form::check_domain(name) {
                anyhow::bail!(
                    "domains.hot: {why} (use misbehaviour.malformed for invalid requests)"
                );
            }
        }
        let hot = d.hot.len() + d.hot_generated as usize;
        if hot > 0 {
            ensure!(
                d.askers >= 1,
                "domains.askers: each hot name needs at least one asker"
            );
            ensure!(
                d.askers as u64 <= senders,
                "domains.askers: {} different clients cannot ask the same name with only {} \
                 sending clients",
                d.askers,
                senders
            );
            ensure!(
                hot.saturating_mul(d.askers as usize) <= MAX_HOT_SLOTS,
                "domains: {hot} hot names × {} askers is more than {MAX_HOT_SLOTS} slots",
                d.askers
            );
        }
        Ok(())
    }

    fn validate_misbehaviour(&self) -> anyhow::Result<()> {
        let m = &self.misbehaviour;
        for (key, value) in [
            ("resubmissions", m.resubmissions),
            ("retransmissions", m.retransmissions),
            ("malformed", m.malformed),
            ("oversize", m.oversize),
            ("slow_clients", m.slow_clients),
        ] {
            ensure!(
                (0.0..=1.0).contains(&value),
                "misbehaviour.{key}: a fraction between 0 and 1 (got {value})"
            );
        }
        let total = m.resubmissions + m.retransmissions + m.malformed + m.oversize;
        ensure!(
            total <= 1.0,
            "misbehaviour: resubmissions + retransmissions + malformed + oversize = {total}, \
             more than all the requests"
        );
        ensure!(
            m.oversize_bytes <= MAX_MESSAGE_BYTES,
            "misbehaviour.oversize_bytes: more than the limit of {MAX_MESSAGE_BYTES}"
        );
        ensure!(
            m.slow_bytes_per_second >= 1,
            "misbehaviour.slow_bytes_per_second: must be at least 1"
        );
        Ok(())
    }

    fn validate_schedule(&self) -> anyhow::Result<()> {
        match &self.schedule {
            Schedule::Constant { rate, duration } => {
                rate_ok("rate", *rate)?;
                duration_ok("duration", *duration)?;
            }
            Schedule::Ramp { from, to, duration } => {
                for (key, rate) in [("from", *from), ("to", *to)] {
                    ensure!(
                        rate.is_finite() && (0.0..=MAX_RATE).contains(&rate),
                        "schedule.{key}: a rate between 0 and {MAX_RATE} requests per second \
                         (got {rate})"
                    );
                }
                ensure!(
                    *from > 0.0 || *to > 0.0,
                    "schedule: a ramp from 0 to 0 sends nothing"
                );
                duration_ok("duration", *duration)?;
            }
            Schedule::Steps { steps } => {
                ensure!(!steps.is_empty(), "schedule.steps: give at least one step");
                ensure!(
                    steps.len() <= MAX_STEPS,
                    "schedule.steps: more than {MAX_STEPS} steps"
                );
                for (n, step) in steps.iter().enumerate() {
                    rate_ok(&format!("steps[{n}].rate"), step.rate)?;
                    duration_ok(&format!("steps[{n}].duration"), step.duration)?;
                }
            }
            Schedule::Burst {
                count,
                within,
                front_load,
            } => validate_burst(*count, *within, *front_load)?,
            Schedule::Instant { count } => count_ok("count", *count)?,
            Schedule::Closed {
                requests,
                think_time,
            } => {
                count_ok("requests", *requests)?;
                ensure!(
                    think_time.0.as_secs() <= 3600,
                    "schedule.think_time: at most an hour"
                );
            }
        }
        Ok(())
    }
}

fn rate_ok(key: &str, rate: f64) -> anyhow::Result<()> {
    ensure!(
        rate.is_finite() && rate > 0.0 && rate <= MAX_RATE,
        "schedule.{key}: a rate must be more than 0 and at most {MAX_RATE} requests per second \
         (got {rate})"
    );
    Ok(())
}

fn duration_ok(key: &str, d: Dur) -> anyhow::Result<()> {
    ensure!(
        !d.0.is_zero() && d.0.as_secs() <= MAX_DURATION_SECS,
        "schedule.{key}: must be more than 0 and at most 7 days (got {d})"
    );
    Ok(())
}

fn count_ok(key: &str, count: u64) -> anyhow::Result<()> {
    ensure!(
        (1..=MAX_REQUESTS).contains(&count),
        "schedule.{key}: between 1 and {MAX_REQUESTS}"
    );
    Ok(())
}

fn validate_burst(count: u64, within: Dur, front_load: f64) -> anyhow::Result<()> {
    count_ok("count", count)?;
    duration_ok("within", within)?;
    ensure!(
        front_load.is_finite() && (1.0..=1000.0).contains(&front_load),
        "schedule.front_load: between 1 (even) and 1000 (got {front_load})"
    );
    // The busiest instant is the very start: rate there = count × front_load / within.
    let peak = count as f64 * front_load / within.0.as_secs_f64();
    ensure!(
        peak <= MAX_RATE,
        "schedule: {count} within {within} with front_load {front_load} peaks at {peak:.0} \
         requests per second, more than {MAX_RATE}; use model = \"instant\" for requests all due \
         at one instant"
    );
    Ok(())
}
