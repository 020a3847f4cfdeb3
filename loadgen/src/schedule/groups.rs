//! Which client sends which request when the scenario has several client groups.
//!
//! Clients are numbered over all groups in file order (group 0's clients first). The sending
//! groups share the requests by a fixed pattern of `period` slots in which each group holds a
//! number of slots proportional to its share, spread evenly (smooth weighted round robin):
//! request `i` falls in slot `i % period`, which names the group and the request's *rank* in
//! that group, and the group's client `rank % count` sends it. Both directions are closed forms,
//! so a client walks its own requests without looking at anyone else's. With one group the
//! pattern has one slot and request `i` is sent by client `i % count`, as it always was.

use crate::scenario::ClientGroups;

/// Most slots of the pattern (shares are rounded to thousandths, counts to this).
const MAX_PERIOD: u64 = 100_000;

/// A sending group's place in the pattern.
#[derive(Debug, Clone)]
struct Sender {
    /// Index of the group in the scenario's list.
    group: usize,
    first_client: u32,
    count: u32,
    /// Slots of the pattern it holds, ascending.
    positions: Vec<u64>,
}

/// The request-to-client assignment of a scenario.
#[derive(Debug, Clone)]
pub struct Assignment {
    period: u64,
    /// Per slot: (sender number, rank of the slot among the sender's slots).
    pattern: Vec<(u32, u64)>,
    senders: Vec<Sender>,
    /// Per group (all groups, file order): its first client number.
    first_client: Vec<u32>,
    total_clients: u32,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Assignment {
    /// The assignment of (validated) groups.
    pub fn new(groups: &ClientGroups) -> Assignment {
        let mut first_client = Vec::new();
        let mut next = 0u32;
        for g in groups.iter() {
            first_client.push(next);
            next += g.count;
        }
        let given = groups.senders().all(|g| g.share.is_some());
        let mut weights: Vec<u64> = groups
            .senders()
            .map(|g| match g.share {
                Some(share) if given => ((share * 1000.0).round() as u64).max(1),
                _ => g.count as u64,
            })
            .collect();
        let divisor = weights.iter().fold(0, |a, &w| gcd(a, w)).max(1);
        weights.iter_mut().for_each(|w| *w /= divisor);
        while weights.iter().sum::<u64>() > MAX_PERIOD {
            weights.iter_mut().for_each(|w| *w = (*w / 2).max(1));
        }
        let period: u64 = weights.iter().sum();
        let mut senders: Vec<Sender> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.behaviour.sends_schedule())
            .map(|(group, g)| Sender {
                group,
                first_client: first_client[group],
                count: g.count,
                positions: Vec::new(),
            })
            .collect();
        // Smooth weighted round robin: each slot goes to the sender furthest behind its share.
        let mut credit = vec![0i64; weights.len()];
        let mut pattern = Vec::with_capacity(period as usize);
        for slot in 0..period {
            for (c, w) in credit.iter_mut().zip(&weights) {
                *c += *w as i64;
            }
            let pick = (0..credit.len())
                .max_by_key(|&s| (credit[s], std::cmp::Reverse(s)))
                .expect("at least one sender");
            credit[pick] -= period as i64;
            let rank = senders[pick].positions.len() as u64;
            senders[pick].positions.push(slot);
            pattern.push((pick as u32, rank));
        }
        Assignment {
            period,
            pattern,
            senders,
            first_client,
            total_clients: next,
        }
    }

    /// Clients over all groups.
    pub fn total_clients(&self) -> u32 {
        self.total_clients
    }

    /// The first client number of group `group` (file order).
    pub fn first_client(&self, group: usize) -> u32 {
        self.first_client[group]
    }

    /// The group (file order) client `client` belongs to, and its number within the group.
    pub fn group_of(&self, client: u32) -> (usize, u32) {
        let group = self.first_client.partition_point(|&f| f <= client) - 1;
        (group, client - self.first_client[group])
    }

    /// The sender holding request `index`, and the request's rank among that group's.
    fn rank(&self, index: u64) -> (&Sender, u64) {
        let (s, in_period) = self.pattern[(index % self.period) as usize];
        let sender = &self.senders[s as usize];
        let rank = (index / self.period) * sender.positions.len() as u64 + in_period;
        (sender, rank)
    }

    fn index_of(sender: &Sender, period: u64, rank: u64) -> u64 {
        let w = sender.positions.len() as u64;
        (rank / w) * period + sender.positions[(rank % w) as usize]
    }

    /// The client that sends request `index`.
    pub fn client_of(&self, index: u64) -> u32 {
        let (sender, rank) = self.rank(index);
        sender.first_client + (rank % sender.count as u64) as u32
    }

    /// The group (file order) that sends request `index`.
    pub fn group_of_request(&self, index: u64) -> usize {
        self.rank(index).0.group
    }

    /// The request the same client sent before `index`, if any.
    pub fn previous_of(&self, index: u64) -> Option<u64> {
        let (sender, rank) = self.rank(index);
        let count = sender.count as u64;
        (rank >= count).then(|| Self::index_of(sender, self.period, rank - count))
    }

    fn sender_of_client(&self, client: u32) -> Option<(&Sender, u64)> {
        self.senders
            .iter()
            .find(|s| (s.first_client..s.first_client + s.count).contains(&client))
            .map(|s| (s, (client - s.first_client) as u64))
    }

    /// The requests (below `total`) client `client` sends, in order; none for a client of a
    /// group that sends no scheduled requests.
    pub fn requests_of(&self, client: u32, total: u64) -> impl Iterator<Item = u64> + use<> {
        let found = self
            .sender_of_client(client)
            .map(|(s, local)| (s.clone(), local));
        let period = self.period;
        found.into_iter().flat_map(move |(sender, local)| {
            let step = sender.count as u64;
            (0u64..)
                .map(move |k| Self::index_of(&sender, period, local + k * step))
                .take_while(move |&i| i < total)
        })
    }

    /// The ranks of group `group`'s requests below `total`: request `index_of_rank(group, r)`
    /// for `r` in `0..n`.
    pub fn group_requests(&self, group: usize, total: u64) -> u64 {
        let Some(sender) = self.senders.iter().find(|s| s.group == group) else {
            return 0;
        };
        let w = sender.positions.len() as u64;
        let rest = total % self.period;
        (total / self.period) * w + sender.positions.iter().filter(|&&p| p < rest).count() as u64
    }

    /// The index of group `group`'s request of rank `rank`.
    pub fn index_of_rank(&self, group: usize, rank: u64) -> Option<u64> {
        let sender = self.senders.iter().find(|s| s.group == group)?;
        Some(Self::index_of(sender, self.period, rank))
    }

    /// How many requests below `total` client `client` sends.
    pub fn count_of(&self, client: u32, total: u64) -> u64 {
        let Some((sender, local)) = self.sender_of_client(client) else {
            return 0;
        };
        let ranks = self.group_requests(sender.group, total);
        if local >= ranks {
            0
        } else {
            (ranks - local).div_ceil(sender.count as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn groups(text: &str) -> ClientGroups {
        let scenario = Scenario::from_toml(&format!(
            "name = \"t\"\nseed = 1\nstart = \"+1s\"\n[bounds]\nmax_requests = 10\n\
             max_duration = \"1m\"\n[schedule]\nmodel = \"instant\"\ncount = 10\n{text}"
        ))
        .unwrap();
        scenario.clients.validate(false).unwrap();
        scenario.clients
    }

    #[test]
    fn one_group_is_round_robin() {
        let a = Assignment::new(&groups("[clients]\ncount = 4\n"));
        let clients: Vec<u32> = (0..9).map(|i| a.client_of(i)).collect();
        assert_eq!(clients, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(a.requests_of(1, 9).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(a.previous_of(5), Some(1));
        assert_eq!(a.previous_of(3), None);
    }

    #[test]
    fn shares_split_requests_and_both_directions_agree() {
        let a = Assignment::new(&groups(
            "[[clients]]\nname = \"a\"\ncount = 3\nshare = 0.75\n\
             [[clients]]\nname = \"hog\"\ncount = 5\nbehaviour = \"hog\"\n\
             [[clients]]\nname = \"b\"\ncount = 2\nshare = 0.25\n",
        ));
        let total = 1000;
        let mut seen = vec![0u64; a.total_clients() as usize];
        for c in 0..a.total_clients() {
            let mine: Vec<u64> = a.requests_of(c, total).collect();
            assert_eq!(mine.len() as u64, a.count_of(c, total));
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
            for &i in &mine {
                assert_eq!(a.client_of(i), c);
                seen[c as usize] += 1;
            }
        }
        assert_eq!(seen.iter().sum::<u64>(), total);
        let a_share: u64 = seen[0..3].iter().sum();
        assert_eq!(a_share, 750);
        assert!(seen[3..8].iter().all(|&n| n == 0), "the hog sends none");
        assert_eq!(a.group_of(9), (2, 1));
        assert_eq!(a.group_requests(2, total), 250);
    }
}
