//! The `[[faults]]` of a scenario: what a file may say about the faults a rehearsal plays, typed
//! and checked with the rest of the scenario, and resolved into a time-ordered list of [`Fault`]s
//! (random instants drawn from the seed, so the same file gives the same faults). Playing them is
//! `crate::rehearse::faults`'s job.
//!
//! ```toml
//! [[faults]]                 # SIGKILL the buffer, restart it on the same data dir and ports
//! kind = "kill"
//! at = ["2s", "5s"]          # one instant or a list
//! random = 2                 # and this many more at instants drawn (from the seed) in `window`
//! window = ["1s", "15s"]
//! restart_after = "300ms"
//! node = 2                   # which intake node (1..=buffer.nodes; default 1)
//!
//! [[faults]]                 # the PostgreSQL journal's database (a [buffer] on postgres)
//! kind = "postgres"
//! at = "6s"
//! action = "failover"        # "restart" (fast shutdown, started again), "kill" (SIGKILL of the
//!                            # primary, started again) or "failover" (SIGKILL of the primary,
//!                            # the standby promoted)
//! for = "500ms"              # down this long before it is started again (restart: 0s, kill:
//!                            # 1s) or before the standby is promoted (failover: 0s)
//!
//! [[faults]]                 # the registration system slows down, or stops, then comes back
//! kind = "registry"
//! at = "1s"
//! action = "slow"            # "slow" (to `rate` requests/s) or "stop"
//! rate = 20
//! for = "5s"
//!
//! [[faults]]                 # the ack relay is down (connections refused), then back
//! kind = "ack-relay"
//! at = "1s"
//! for = "6s"
//!
//! [[faults]]                 # every write of the buffer fails (RLIMIT_FSIZE set with prlimit)
//! kind = "disk-full"
//! at = "3s"
//! for = "2s"
//! limit_bytes = 0            # the file size limit while full (0: no write succeeds)
//!
//! [[faults]]                 # idle TCP connections held open against the intake
//! kind = "connections"
//! at = "0s"
//! count = 5000
//! for = "20s"                # default: until the scenario's requests are all sent
//! ```
//!
//! `power-loss` is not played: a SIGKILL cannot tell a buffer that fsyncs before replying from
//! one that does not; `landrush fsync-audit` checks that property from a syscall trace.

use std::time::Duration;

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::seeded::mix;

/// Most faults one scenario may play (instants, random ones included).
pub const MAX_FAULTS: usize = 10_000;
/// Most idle connections one `connections` fault may hold.
pub const MAX_FAULT_CONNECTIONS: u32 = 100_000;

/// One `[[faults]]` table, as written: when the fault happens (the keys every kind has) and what
/// it does. Read as one table and split, since serde cannot flatten with `deny_unknown_fields`:
/// each part refuses the keys that are not its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub struct FaultSpec {
    when: When,
    what: What,
}

/// The keys of [`When`], taken out of a `[[faults]]` table before the rest is read as [`What`].
const WHEN_KEYS: [&str; 3] = ["at", "random", "window"];

/// When a fault happens: fixed instants (`at`) and `random` more drawn in `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "is_zero")]
    random: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<[Dur; 2]>,
}

/// What a fault does, as written (the `kind` and its own keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum What {
    Kill {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart_after: Option<Dur>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
    },
    Postgres {
        action: PostgresAction,
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        duration: Option<Dur>,
    },
    Registry {
        #[serde(default)]
        action: RegistryAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<f64>,
        #[serde(rename = "for")]
        duration: Dur,
    },
    AckRelay {
        #[serde(rename = "for")]
        duration: Dur,
    },
    DiskFull {
        #[serde(rename = "for")]
        duration: Dur,
        #[serde(default)]
        limit_bytes: u64,
    },
    Connections {
        count: u32,
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        duration: Option<Dur>,
    },
    PowerLoss {},
}

impl TryFrom<toml::Table> for FaultSpec {
    type Error = String;
    fn try_from(mut table: toml::Table) -> Result<FaultSpec, String> {
        let mut when = toml::Table::new();
        for key in WHEN_KEYS {
            if let Some(value) = table.remove(key) {
                when.insert(key.to_string(), value);
            }
        }
        Ok(FaultSpec {
            when: when
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?,
            what: table.try_into().map_err(|e: toml::de::Error| {
                // serde lists the kind's own keys only.
                let also = if e.message().starts_with("unknown field") {
                    " (every kind also takes `at`, `random` and `window`)"
                } else {
                    ""
                };
                format!("{}{also}", e.message())
            })?,
        })
    }
}

impl From<FaultSpec> for toml::Table {
    fn from(spec: FaultSpec) -> toml::Table {
        let part = |value: Result<toml::Table, toml::ser::Error>| {
            value.expect("durations, numbers and names make a table")
        };
        let mut table = part(toml::Table::try_from(&spec.what));
        table.extend(part(toml::Table::try_from(&spec.when)));
        table
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Dur),
    Many(Vec<Dur>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAction {
    Slow,
    #[default]
    Stop,
}

/// What a `postgres` fault does to the journal's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresAction {
    /// A fast shutdown (every session cut, a checkpoint), then started again.
    Restart,
    /// SIGKILL of the primary's postmaster (crash recovery at the next start), started again.
    Kill,
    /// SIGKILL of the primary, and the synchronous standby promoted in its place.
    Failover,
}

impl PostgresAction {
    pub fn name(self) -> &'static str {
        match self {
            PostgresAction::Restart => "restart",
            PostgresAction::Kill => "kill",
            PostgresAction::Failover => "failover",
        }
    }

    /// How long the database stays down when the file does not say (`for`).
    fn default_down(self) -> Duration {
        match self {
            PostgresAction::Kill => Duration::from_secs(1),
            PostgresAction::Restart | PostgresAction::Failover => Duration::ZERO,
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// SIGKILL of intake node `node` (1-based), restarted after `restart_after`.
    Kill {
        node: u32,
        restart_after: Duration,
    },
    /// The database down for `down` (restarted, or the standby promoted, after it).
    Postgres {
        action: PostgresAction,
        down: Duration,
    },
    RegistrySlow {
        rate: f64,
        duration: Duration,
    },
    RegistryStop {
        duration: Duration,
    },
    AckRelayDown {
        duration: Duration,
    },
    DiskFull {
        duration: Duration,
        limit_bytes: u64,
    },
    Connections {
        count: u32,
        duration: Option<Duration>,
    },
}

impl FaultKind {
    /// The name in faults.jsonl.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill { .. } => "kill",
            FaultKind::Postgres { .. } => "postgres",
            FaultKind::RegistrySlow { .. } | FaultKind::RegistryStop { .. } => "registry",
            FaultKind::AckRelayDown { .. } => "ack-relay",
            FaultKind::DiskFull { .. } => "disk-full",
            FaultKind::Connections { .. } => "connections",
        }
    }

    /// How long after its beginning the fault ends (`None`: when every request is sent).
    pub fn lasts(&self) -> Option<Duration> {
        match self {
            FaultKind::Kill { restart_after, .. } => Some(*restart_after),
            FaultKind::Postgres { down, .. } => Some(*down),
            FaultKind::RegistrySlow { duration, .. }
            | FaultKind::RegistryStop { duration }
            | FaultKind::AckRelayDown { duration }
            | FaultKind::DiskFull { duration, .. } => Some(*duration),
            FaultKind::Connections { duration, .. } => *duration,
        }
    }
}

/// One fault at one instant after time zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
}

impl FaultSpec {
    fn name(&self) -> &'static str {
        match self.what {
            What::Kill { .. } => "kill",
            What::Postgres { .. } => "postgres",
            What::Registry { .. } => "registry",
            What::AckRelay { .. } => "ack-relay",
            What::DiskFull { .. } => "disk-full",
            What::Connections { .. } => "connections",
            What::PowerLoss {} => "power-loss",
        }
    }

    /// What the fault does, checked.
    fn kind(&self) -> anyhow::Result<FaultKind> {
        Ok(match &self.what {
            What::Kill {
                restart_after,
                node,
            } => {
                let node = node.unwrap_or(1);
                ensure!(
                    node >= 1,
                    "`node`: intake nodes are numbered from 1 (1..=buffer.nodes)"
                );
                FaultKind::Kill {
                    node,
                    restart_after: restart_after.map_or(Duration::from_millis(500), |d| d.0),
                }
            }
            What::Postgres { action, duration } => FaultKind::Postgres {
                action: *action,
                down: duration.map_or(action.default_down(), |d| d.0),
            },
            What::Registry {
                action: RegistryAction::Slow,
                rate,
                duration,
            } => match rate {
                Some(rate) if rate.is_finite() && *rate > 0.0 => FaultKind::RegistrySlow {
                    rate: *rate,
                    duration: duration.0,
                },
                _ => bail!("a slow registry needs `rate` > 0 (requests per second)"),
            },
            What::Registry {
                action: RegistryAction::Stop,
                rate,
                duration,
            } => {
                ensure!(
                    rate.is_none(),
                    "`rate` is for action = \"slow\", not \"stop\""
                );
                FaultKind::RegistryStop {
                    duration: duration.0,
                }
            }
            What::AckRelay { duration } => FaultKind::AckRelayDown {
                duration: duration.0,
            },
            What::DiskFull {
                duration,
                limit_bytes,
            } => FaultKind::DiskFull {
                duration: duration.0,
                limit_bytes: *limit_bytes,
            },
            What::Connections { count, duration } => {
                ensure!(
                    (1..=MAX_FAULT_CONNECTIONS).contains(count),
                    "`count`: between 1 and {MAX_FAULT_CONNECTIONS} connections"
                );
                FaultKind::Connections {
                    count: *count,
                    duration: duration.map(|d| d.0),
                }
            }
            What::PowerLoss {} => bail!(
                "power-loss is checked by `landrush fsync-audit` (a syscall trace), not played \
                 in a rehearsal"
            ),
        })
    }
}

impl When {
    /// The instants, random ones drawn from `seed` and the fault's number.
    fn instants(&self, seed: u64, number: u64) -> anyhow::Result<Vec<Duration>> {
        let mut at: Vec<Duration> = match &self.at {
            None => Vec::new(),
            Some(OneOrMany::One(d)) => vec![d.0],
            Some(OneOrMany::Many(v)) => v.iter().map(|d| d.0).collect(),
        };
        if self.random > 0 {
            let Some([from, to]) = self.window else {
                bail!("`random` needs `window = [FROM, TO]`");
            };
            ensure!(to.0 > from.0, "the window ends before it starts");
            ensure!(
                self.random as usize <= MAX_FAULTS,
                "`random`: at most {MAX_FAULTS}"
            );
            let span = (to.0 - from.0).as_micros() as u64;
            for draw in 0..self.random as u64 {
                let r = mix(seed, number, draw) % span.max(1);
                at.push(from.0 + Duration::from_micros(r));
            }
        } else {
            ensure!(self.window.is_none(), "`window` is for `random` instants");
        }
        ensure!(!at.is_empty(), "say when (`at`, or `random` + `window`)");
        Ok(at)
    }
}

/// Checks the scenario's `[[faults]]` and resolves them, in time order. Errors name the fault by
/// its number and kind.
pub fn resolve(specs: &[FaultSpec], seed: u64) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let number = i as u64 + 1;
        let named =
            |e: anyhow::Error| e.context(format!("[[faults]] number {number} ({})", spec.name()));
        let kind = spec.kind().map_err(named)?;
        let at = spec.when.instants(seed, number).map_err(named)?;
        faults.extend(at.into_iter().map(|at| Fault {
            at,
            kind: kind.clone(),
        }));
        ensure!(
            faults.len() <= MAX_FAULTS,
            "[[faults]]: more than {MAX_FAULTS} fault instants"
        );
    }
    faults.sort_by_key(|f| f.at);
    Ok(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(text: &str) -> anyhow::Result<Vec<FaultSpec>> {
        #[derive(Deserialize)]
        struct F {
            faults: Vec<FaultSpec>,
        }
        Ok(toml::from_str::<F>(text)?.faults)
    }

    fn parse(text: &str, seed: u64) -> anyhow::Result<Vec<Fault>> {
        resolve(&specs(text)?, seed)
    }

    const MIXED: &str = r#"
        [[faults]]
        kind = "kill"
        at = ["5s", "2s"]
        random = 2
        window = ["1s", "10s"]
        restart_after = "300ms"
        [[faults]]
        kind = "registry"
        action = "slow"
        rate = 20
        at = "1s"
        for = "4s"
        [[faults]]
        kind = "disk-full"
        at = "3s"
        for = "2s"
        "#;

    #[test]
    fn faults_parse_in_time_order_with_seeded_random_instants() {
        let a = parse(MIXED, 7).unwrap();
        assert_eq!(
            a,
            parse(MIXED, 7).unwrap(),
            "the same seed gives the same faults"
        );
        assert_ne!(a, parse(MIXED, 8).unwrap());
        assert_eq!(a.len(), 6);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let kills: Vec<&Fault> = a.iter().filter(|f| f.kind.name() == "kill").collect();
        assert_eq!(kills.len(), 4);
        assert!(
            kills
                .iter()
                .all(|f| f.at >= Duration::from_secs(1) && f.at <= Duration::from_secs(10))
        );
        assert!(a.contains(&Fault {
            at: Duration::from_secs(1),
            kind: FaultKind::RegistrySlow {
                rate: 20.0,
                duration: Duration::from_secs(4)
            }
        }));
        assert!(a.contains(&Fault {
            at: Duration::from_secs(3),
            kind: FaultKind::DiskFull {
                duration: Duration::from_secs(2),
                limit_bytes: 0
            }
        }));
    }

    #[test]
    fn a_fault_is_written_back_as_the_one_table_it_was_read_from() {
        let read = specs(MIXED).unwrap();
        #[derive(Serialize)]
        struct F<'a> {
            faults: &'a [FaultSpec],
        }
        let text = toml::to_string(&F { faults: &read }).unwrap();
        assert_eq!(specs(&text).unwrap(), read, "{text}");
        let json = serde_json::to_value(&read[1]).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["action", "at", "for", "kind", "rate"], "{json}");
    }

    #[test]
    fn postgres_faults_are_down_for_their_default_or_for() {
        let f = parse(
            "[[faults]]\nkind = \"postgres\"\naction = \"kill\"\nat = \"2s\"\n\
             [[faults]]\nkind = \"postgres\"\naction = \"restart\"\nat = \"1s\"\n\
             [[faults]]\nkind = \"postgres\"\naction = \"failover\"\nat = \"3s\"\nfor = \"200ms\"",
            1,
        )
        .unwrap();
        let down: Vec<(PostgresAction, Duration)> = f
            .iter()
            .map(|f| match f.kind {
                FaultKind::Postgres { action, down } => (action, down),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            down,
            [
                (PostgresAction::Restart, Duration::ZERO),
                (PostgresAction::Kill, Duration::from_secs(1)),
                (PostgresAction::Failover, Duration::from_millis(200)),
            ]
        );
        assert!(f.iter().all(|f| f.kind.name() == "postgres"));
    }

    #[test]
    fn bad_faults_are_refused_naming_the_fault() {
        for (bad, says) in [
            ("[[faults]]\nkind = \"meteor\"\nat = \"1s\"", "meteor"),
            ("[[faults]]\nkind = \"kill\"", "say when"),
            ("[[faults]]\nkind = \"kill\"\nrandom = 2", "window"),
            ("[[faults]]\nkind = \"ack-relay\"\nat = \"1s\"", "for"),
            (
                "[[faults]]\nkind = \"registry\"\naction = \"slow\"\nat = \"1s\"\nfor = \"1s\"",
                "rate",
            ),
            (
                "[[faults]]\nkind = \"power-loss\"\nat = \"1s\"",
                "fsync-audit",
            ),
            (
                "[[faults]]\nkind = \"kill\"\nat = \"1s\"\ncolour = \"red\"",
                "colour",
            ),
            (
                "[[faults]]\nkind = \"kill\"\nat = \"1s\"\nfor = \"1s\"",
                "for",
            ),
            (
                "[[faults]]\nkind = \"kill\"\nat = \"1s\"\nnode = 0",
                "numbered from 1",
            ),
            ("[[faults]]\nkind = \"postgres\"\nat = \"1s\"", "action"),
            (
                "[[faults]]\nkind = \"postgres\"\nat = \"1s\"\naction = \"drop\"",
                "drop",
            ),
        ] {
            let err = format!("{:#}", parse(bad, 1).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = format!(
            "{:#}",
            parse(
                "[[faults]]\nkind = \"kill\"\nat = \"1s\"\n[[faults]]\nkind = \"kill\"",
                1
            )
            .unwrap_err()
        );
        assert!(err.contains("number 2 (kill)"), "{err}");
    }
}
