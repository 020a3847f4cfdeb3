//! The checked scenario: parsed and validated once, faults resolved and the schedule planned, so
//! that drivers, rehearsals and commands take it as given and never check it again.

use std::ops::Deref;
use std::path::Path;

use anyhow::Context;

use super::Plan;
use crate::scenario::Scenario;
use crate::scenario::faults::Fault;

/// A scenario that passed every check; only [`ValidScenario::new`] (and the readers built on it)
/// make one.
#[derive(Debug, Clone)]
pub struct ValidScenario {
    scenario: Scenario,
    faults: Vec<Fault>,
    plan: Plan,
}

impl ValidScenario {
    /// Checks `scenario` (its fields, its `[[faults]]`, where its hot names fall in the schedule).
    pub fn new(scenario: Scenario) -> anyhow::Result<ValidScenario> {
        let faults = scenario.validate()?;
        let plan = Plan::new(&scenario)?;
        Ok(ValidScenario {
            scenario,
            faults,
            plan,
        })
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> anyhow::Result<ValidScenario> {
        ValidScenario::new(Scenario::from_toml(text)?)
    }

    /// Reads, parses and checks a scenario file; errors name the file.
    pub fn load(path: &Path) -> anyhow::Result<ValidScenario> {
        let scenario = Scenario::from_file(path)?;
        ValidScenario::new(scenario).with_context(|| format!("scenario {}", path.display()))
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The `[[faults]]`, resolved and in time order.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The same scenario with every client group upgrading its connections with STARTTLS
    /// (`rehearse --tls`); nothing else changes, so its requests are the same.
    pub fn with_starttls(&self) -> ValidScenario {
        let mut tls = self.clone();
        for group in &mut tls.scenario.clients.0 {
            group.starttls = true;
        }
        tls
    }
}

impl Deref for ValidScenario {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        &self.scenario
    }
}
