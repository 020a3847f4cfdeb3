//! Playing the scenario in a rehearsal: the SMTP driver, the web part against the spawned
//! buffer's web intake, and the faults, all timed from one time zero.

use reports::records::Stamp;
use tokio_util::sync::CancellationToken;

use super::faults;
use super::rig::Rig;
use crate::driver::smtp::run_scenario;
use crate::driver::{RunOptions, RunSummary, http};
use crate::scenario::Start;
use crate::schedule::ValidScenario;

impl Rig {
    /// Plays the scenario against the buffer.
    pub async fn play(&mut self, scenario: &ValidScenario) -> anyhow::Result<RunSummary> {
        anyhow::ensure!(
            self.client_tls.is_some() || !scenario.clients.iter().any(|g| g.starttls),
            "the scenario's clients do STARTTLS: rehearse them against the buffer `rehearse` \
             starts (no --target), or play them against a running buffer with `landrush run \
             --tls-ca FILE`"
        );
        let mut options = RunOptions {
            tag: self.options.tag.clone(),
            start: self.options.start,
            progress: self.options.progress,
            print_summary: self.options.progress,
            scenario_file: self.options.scenario_file.clone(),
            tls: self.client_tls.clone(),
            target_label: Some(match self.nodes.first() {
                Some(b) => format!(
                    "{} (barrage, {}{})",
                    self.targets.label(),
                    b.spec().program.describe(),
                    match self.layout == Default::default() {
                        true => String::new(),
                        false => format!("; {}", self.layout.describe()),
                    }
                ),
                None => self.targets.label(),
            }),
            ..RunOptions::default()
        };
        // The web part plays against the spawned buffer's web intake, when it has one.
        let web = match (&scenario.http, self.nodes.first()) {
            (Some(_), Some(buffer)) => buffer.endpoints().web,
            _ => None,
        };
        // A web key-collider posts to the same intake.
        options.web_target = web;
        if scenario.http.is_some() && web.is_none() {
            self.notes.push(
                "the scenario's [http] part was not played: no web intake to play it against"
                    .into(),
            );
        }
        if scenario.faults().is_empty() && web.is_none() {
            return run_scenario(scenario, self.targets.clone(), &self.out_dir, options).await;
        }
        // Faults and the web part are timed from the scenario's time zero: fix it here and give
        // it to the drivers.
        let t0 = self
            .options
            .start
            .unwrap_or(scenario.start)
            .resolve(Stamp::now());
        options.start = Some(Start::At(t0));
        let Some(web) = web else {
            return self.play_with_faults(scenario, t0, options).await;
        };
        let (out_dir, tag) = (self.out_dir.clone(), self.options.tag.clone());
        let progress = self.options.progress;
        let web_part = http::run_http(scenario, web, &out_dir, t0, tag);
        let (run, web_run) = tokio::join!(self.play_with_faults(scenario, t0, options), web_part);
        let run = run?;
        let web_run = web_run?;
        http::append_to_sent(&out_dir)?;
        if progress {
            http::print_summary(&web_run);
        }
        Ok(run)
    }

    /// Plays the SMTP part with the scenario's faults (none is fine) from the fixed time zero
    /// `t0`.
    async fn play_with_faults(
        &mut self,
        scenario: &ValidScenario,
        t0: Stamp,
        options: RunOptions,
    ) -> anyhow::Result<RunSummary> {
        if scenario.faults().is_empty() {
            return run_scenario(scenario, self.targets.clone(), &self.out_dir, options).await;
        }
        let (targets, out_dir) = (self.targets.clone(), self.out_dir.clone());
        let sent_all = CancellationToken::new();
        // The driver plays the requests; the faults are played here.
        let driver = async {
            let run = run_scenario(scenario, targets, &out_dir, options).await;
            sent_all.cancel();
            run
        };
        let rate = self.options.registry_rate;
        let (run, played) = tokio::join!(
            driver,
            faults::play(self, scenario.faults(), t0, rate, sent_all.clone())
        );
        self.notes.extend(played?);
        run
    }
}
