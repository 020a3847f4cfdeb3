//! Shards: `--shard I/N` plays one slice of a scenario so that N machines together play all of it.
//!
//! Slices are cut by client: shard `I` runs the clients `c` with `c % N == I - 1` (and the idle
//! connections `j` with `j % N == I - 1`), so every connection lives on exactly one machine and
//! every request (request `i` belongs to client `Plan::client_of(i)`) is in exactly one slice.

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

use super::Plan;

/// Slice `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl Shard {
    /// The whole scenario.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    pub fn new(index: u32, count: u32) -> anyhow::Result<Shard> {
        ensure!(count >= 1, "shard `{index}/{count}`: N must be at least 1");
        ensure!(
            (1..=count).contains(&index),
            "shard `{index}/{count}`: I must be between 1 and N"
        );
        Ok(Shard { index, count })
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether sending client `client` is in this slice.
    pub fn owns_client(&self, client: u32) -> bool {
        client % self.count == self.index - 1
    }

    /// Whether idle connection `n` is in this slice.
    pub fn owns_idle(&self, n: u32) -> bool {
        n % self.count == self.index - 1
    }

    /// The requests of `plan` in this slice, in index order.
    pub fn requests<'a>(&self, plan: &'a Plan) -> impl Iterator<Item = u64> + 'a {
        let shard = *self;
        (0..plan.total()).filter(move |&i| shard.owns_client(plan.client_of(i)))
    }

    /// How many requests of `plan` are in this slice (without walking them).
    pub fn request_count(&self, plan: &Plan) -> u64 {
        (0..plan.clients())
            .filter(|&c| self.owns_client(c))
            .map(|c| plan.request_count_of(c))
            .sum()
    }
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Shard> {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("shard `{text}`: expected I/N, e.g. 2/5"))?;
        let i = i
            .trim()
            .parse()
            .with_context(|| format!("shard `{text}`: I is not a number"))?;
        let n = n
            .trim()
            .parse()
            .with_context(|| format!("shard `{text}`: N is not a number"))?;
        Shard::new(i, n)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
