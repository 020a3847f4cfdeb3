//! Where the SMTP driver sends: one address, or several intake nodes that stand for
//! equal-preference MX records of the registry's domain. RFC 5321 §5.1 has a client order
//! equal-preference hosts at random and try the next one when a host cannot be reached; here each
//! client's order is drawn from the scenario's seed, so the same file spreads the clients the
//! same way on every run, and a client whose node is down (connection refused, or a greeting
//! that is not `220`) connects to the next node of its order at once, as an MTA does within one
//! delivery attempt. What happens after a message was sent (a `451`, a reply that never came) is
//! the request's own retry model (`retries` of its client group), not this one's.

use std::net::SocketAddr;

use anyhow::ensure;

use crate::scenario::seeded::mix;

/// Most addresses one run sends to.
pub const MAX_TARGETS: usize = 64;

/// The seeded stream of the node orders (distinct from every other draw of the scenario).
const ORDER_STREAM: u64 = 0x004d_584f_5244_4552; // "MXORDER"

/// The intake addresses of a run, in the order given (the first one names the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    nodes: Vec<SocketAddr>,
}

impl From<SocketAddr> for Targets {
    fn from(addr: SocketAddr) -> Self {
        Targets { nodes: vec![addr] }
    }
}

impl Targets {
    /// Several nodes, at least one, all of one address family (a client reaches every one from
    /// its source address).
    pub fn new(nodes: Vec<SocketAddr>) -> anyhow::Result<Targets> {
        ensure!(!nodes.is_empty(), "no intake address to send to");
        ensure!(
            nodes.len() <= MAX_TARGETS,
            "at most {MAX_TARGETS} intake addresses (got {})",
            nodes.len()
        );
        let (v4, loopback) = (nodes[0].is_ipv4(), nodes[0].ip().is_loopback());
        ensure!(
            nodes.iter().all(|n| n.is_ipv4() == v4),
            "the intake addresses mix IPv4 and IPv6: {nodes:?}"
        );
        // The clients' source addresses are checked against the first one.
        ensure!(
            nodes.iter().all(|n| n.ip().is_loopback() == loopback),
            "the intake addresses mix loopback and other hosts: {nodes:?}"
        );
        Ok(Targets { nodes })
    }

    /// The first address (labels, address-family checks).
    pub fn first(&self) -> SocketAddr {
        self.nodes[0]
    }

    pub fn all(&self) -> &[SocketAddr] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The order in which `client` tries the nodes: a permutation drawn from `seed` (a seeded
    /// Fisher–Yates shuffle), its first entry the client's own node.
    pub fn order(&self, seed: u64, client: u32) -> Vec<SocketAddr> {
        let mut order = self.nodes.clone();
        for i in (1..order.len()).rev() {
            let draw = mix(seed, client as u64, ORDER_STREAM + i as u64);
            order.swap(i, (draw % (i as u64 + 1)) as usize);
        }
        order
    }

    /// The number (0-based, in [`all`](Targets::all)) of the node `client` tries first.
    pub fn preferred(&self, seed: u64, client: u32) -> usize {
        let first = self.order(seed, client)[0];
        self.nodes
            .iter()
            .position(|&n| n == first)
            .expect("the order is a permutation of the nodes")
    }

    /// `HOST:PORT` of every node, joined by commas (run.json's target label).
    pub fn label(&self) -> String {
        let names: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u16) -> Targets {
        Targets::new(
            (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 2500 + i)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn clients_spread_evenly_and_the_same_way_for_the_same_seed() {
        let targets = nodes(2);
        let per_node = |seed| {
            let mut count = [0u32; 2];
            for c in 0..2000 {
                count[targets.preferred(seed, c)] += 1;
            }
            count
        };
        let count = per_node(7);
        assert_eq!(count, per_node(7), "the same seed spreads the same way");
        assert!(
            count.iter().all(|&n| (900..=1100).contains(&n)),
            "equal preference: about half each, got {count:?}"
        );
        let moved = (0..2000)
            .filter(|&c| targets.preferred(7, c) != targets.preferred(8, c))
            .count();
        assert!(
            moved > 500,
            "another seed spreads another way ({moved} moved)"
        );
    }

    #[test]
    fn every_order_tries_every_node_once() {
        let targets = nodes(5);
        let mut firsts = [0u32; 5];
        for c in 0..500 {
            let mut order = targets.order(3, c);
            firsts[targets.preferred(3, c)] += 1;
            assert_eq!(order[0], targets.all()[targets.preferred(3, c)]);
            order.sort();
            assert_eq!(order, targets.all(), "client {c}");
        }
        assert!(firsts.iter().all(|&n| n > 50), "{firsts:?}");
        assert_eq!(
            Targets::from(targets.first()).order(3, 9),
            vec![targets.first()]
        );
    }

    #[test]
    fn impossible_target_lists_are_refused() {
        assert!(Targets::new(Vec::new()).is_err());
        let mixed = vec![
            SocketAddr::from(([127, 0, 0, 1], 25)),
            "[::1]:25".parse().unwrap(),
        ];
        assert!(format!("{:#}", Targets::new(mixed).unwrap_err()).contains("mix"));
        assert_eq!(nodes(2).label(), "127.0.0.1:2500,127.0.0.1:2501");
    }
}
