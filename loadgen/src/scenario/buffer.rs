//! The `[buffer]` section of a scenario: how the buffer `landrush rehearse` starts is laid out —
//! how many intake nodes, on which journal, with or without a synchronous standby — and the one
//! place that layout is checked, whether it came from the file, from the command line
//! (`--nodes`, `--journal`, `--standby`, which override the file key by key) or from both; and
//! whether a scenario's faults fit the layout they are played against.
//!
//! ```toml
//! [buffer]
//! nodes = 2                 # intake nodes sharing one journal (default 1)
//! journal = "postgres"      # "sqlite" (default: one file, one node) or "postgres"
//! standby = true            # a synchronous standby of the database (postgres only)
//! ```

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

use super::faults::{Fault, FaultKind, PostgresAction};

/// Most intake nodes one rehearsal starts (each is a process with its own connections).
pub const MAX_NODES: u32 = 16;

/// Which journal the spawned nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalKind {
    /// One SQLite file in the node's data dir: one node only.
    #[default]
    Sqlite,
    /// A throwaway PostgreSQL cluster in the run folder, shared by every node.
    Postgres,
}

impl JournalKind {
    pub fn name(self) -> &'static str {
        match self {
            JournalKind::Sqlite => "sqlite",
            JournalKind::Postgres => "postgres",
        }
    }
}

impl std::str::FromStr for JournalKind {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "sqlite" => Ok(JournalKind::Sqlite),
            "postgres" | "postgresql" => Ok(JournalKind::Postgres),
            other => bail!("journal `{other}`: expected `sqlite` or `postgres`"),
        }
    }
}

/// The `[buffer]` section as written; every key optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<bool>,
}

impl BufferSection {
    /// This section with every key `over` sets put over it (the command line over the file).
    pub fn overridden_by(self, over: BufferSection) -> BufferSection {
        BufferSection {
            nodes: over.nodes.or(self.nodes),
            journal: over.journal.or(self.journal),
            standby: over.standby.or(self.standby),
        }
    }

    /// Whether nothing is said (the single SQLite node of every other scenario).
    pub fn is_empty(&self) -> bool {
        *self == BufferSection::default()
    }

    /// The layout, checked.
    pub fn layout(self) -> anyhow::Result<BufferLayout> {
        let layout = BufferLayout {
            nodes: self.nodes.unwrap_or(1),
            journal: self.journal.unwrap_or_default(),
            standby: self.standby.unwrap_or(false),
        };
        layout.validate()?;
        Ok(layout)
    }
}

/// How the spawned buffer is laid out, checked ([`BufferSection::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BufferLayout {
    pub nodes: u32,
    pub journal: JournalKind,
    pub standby: bool,
}

impl Default for BufferLayout {
    fn default() -> Self {
        BufferLayout {
            nodes: 1,
            journal: JournalKind::Sqlite,
            standby: false,
        }
    }
}

impl BufferLayout {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_NODES).contains(&self.nodes),
            "buffer.nodes: between 1 and {MAX_NODES} (got {})",
            self.nodes
        );
        ensure!(
            self.nodes == 1 || self.journal == JournalKind::Postgres,
            "buffer.nodes = {}: several nodes share one journal only on PostgreSQL; add \
             journal = \"postgres\" (or --journal postgres)",
            self.nodes
        );
        ensure!(
            !self.standby || self.journal == JournalKind::Postgres,
            "buffer.standby: a standby is a PostgreSQL replica; add journal = \"postgres\" (or \
             --journal postgres)"
        );
        Ok(())
    }

    /// Whether a PostgreSQL cluster is started for the nodes.
    pub fn uses_postgres(&self) -> bool {
        self.journal == JournalKind::Postgres
    }

    /// Refuses faults that this layout cannot play: a kill of a node it does not have, a
    /// database fault without a database, a failover without a standby.
    pub fn check_faults(&self, faults: &[Fault]) -> anyhow::Result<()> {
        for fault in faults {
            match fault.kind {
                FaultKind::Kill { node, .. } => ensure!(
                    node <= self.nodes,
                    "[[faults]] kill at +{:?}: node = {node}, but the buffer has {} node(s) \
                     (buffer.nodes or --nodes)",
                    fault.at,
                    self.nodes
                ),
                FaultKind::Postgres { action, .. } => {
                    ensure!(
                        self.uses_postgres(),
                        "[[faults]] postgres at +{:?}: the buffer's journal is SQLite; add \
                         journal = \"postgres\" to [buffer] (or --journal postgres)",
                        fault.at
                    );
                    ensure!(
                        action != PostgresAction::Failover || self.standby,
                        "[[faults]] postgres failover at +{:?}: there is no standby to promote; \
                         add standby = true to [buffer] (or --standby)",
                        fault.at
                    );
                }
                _ => {}
            }
        }
        let failovers = faults
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FaultKind::Postgres {
                        action: PostgresAction::Failover,
                        ..
                    }
                )
            })
            .count();
        ensure!(
            failovers <= 1,
            "[[faults]]: {failovers} postgres failovers, but the one standby can be promoted only \
             once"
        );
        Ok(())
    }

    /// A short description for run records and summaries (`2 nodes on postgres + standby`).
    pub fn describe(&self) -> String {
        format!(
            "{} node{} on {}{}",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.journal.name(),
            if self.standby {
                " + synchronous standby"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> anyhow::Result<BufferSection> {
        Ok(toml::from_str(text)?)
    }

    #[test]
    fn the_command_line_overrides_the_file_key_by_key() {
        let file = section("nodes = 2\njournal = \"postgres\"").unwrap();
        let cli = BufferSection {
            standby: Some(true),
            nodes: Some(3),
            journal: None,
        };
        let layout = file.overridden_by(cli).layout().unwrap();
        assert_eq!(
            layout,
            BufferLayout {
                nodes: 3,
                journal: JournalKind::Postgres,
                standby: true
            }
        );
        assert_eq!(
            BufferSection::default().layout().unwrap(),
            BufferLayout::default()
        );
        assert_eq!(
            layout.describe(),
            "3 nodes on postgres + synchronous standby"
        );
    }

    #[test]
    fn impossible_layouts_are_refused_saying_what_to_add() {
        for (bad, says) in [
            ("nodes = 2", "journal = \"postgres\""),
            ("standby = true", "PostgreSQL replica"),
            ("nodes = 0\njournal = \"postgres\"", "between 1 and"),
            ("nodes = 17\njournal = \"postgres\"", "between 1 and"),
            ("nodes = 2\njournal = \"sqlite\"", "--journal postgres"),
        ] {
            let err = format!("{:#}", section(bad).unwrap().layout().unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = format!("{:#}", section("journal = \"oracle\"").unwrap_err());
        assert!(err.contains("oracle"), "{err}");
        let err = format!("{:#}", section("replicas = 2").unwrap_err());
        assert!(err.contains("replicas"), "{err}");
        assert!("postgres".parse::<JournalKind>().is_ok());
        assert!("mysql".parse::<JournalKind>().is_err());
    }

    fn faults(text: &str) -> Vec<Fault> {
        #[derive(Deserialize)]
        struct F {
            faults: Vec<super::super::faults::FaultSpec>,
        }
        let specs = toml::from_str::<F>(text).unwrap().faults;
        super::super::faults::resolve(&specs, 1).unwrap()
    }

    #[test]
    fn faults_must_fit_the_layout_they_are_played_against() {
        let kill2 = faults("[[faults]]\nkind = \"kill\"\nat = \"1s\"\nnode = 2");
        assert_eq!(
            kill2[0].kind,
            FaultKind::Kill {
                node: 2,
                restart_after: std::time::Duration::from_millis(500)
            }
        );
        let failover =
            faults("[[faults]]\nkind = \"postgres\"\naction = \"failover\"\nat = \"6s\"");
        let restart = faults("[[faults]]\nkind = \"postgres\"\naction = \"restart\"\nat = \"2s\"");
        let one = BufferLayout::default();
        let two = BufferLayout {
            nodes: 2,
            journal: JournalKind::Postgres,
            standby: false,
        };
        let ha = BufferLayout {
            standby: true,
            ..two
        };
        let says = |layout: BufferLayout, f: &[Fault]| {
            format!("{:#}", layout.check_faults(f).unwrap_err())
        };
        assert!(says(one, &kill2).contains("node = 2"));
        assert!(two.check_faults(&kill2).is_ok());
        assert!(says(one, &restart).contains("journal is SQLite"));
        assert!(two.check_faults(&restart).is_ok());
        assert!(says(two, &failover).contains("no standby"));
        assert!(ha.check_faults(&failover).is_ok());
        let twice = [failover.clone(), failover].concat();
        assert!(says(ha, &twice).contains("only once"));
    }
}
