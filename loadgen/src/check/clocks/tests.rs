use std::collections::BTreeMap;

use super::*;

fn machines(offsets: &[Option<[i64; 2]>]) -> Machines {
    let count = offsets.len() as u32;
    let clocks = (1..=count)
        .map(|i| {
            let clock = MachineClock {
                shard: Shard::new(i, count).unwrap(),
                host: Some(format!("host-{i}")),
                offset_us: offsets[i as usize - 1],
            };
            (i, clock)
        })
        .collect::<BTreeMap<_, _>>();
    Machines::Known { count, clocks }
}

/// (predecessor, successor) index pairs.
type Pairs = Vec<(usize, usize)>;

/// Runs the comparisons with the same rule the sweep applies (a reply strictly before a send),
/// pair by pair: (judged pairs, unjudged pairs) as (pred, succ) indices.
fn pairs(preds: &[Stamped], succs: &[Stamped], m: &Machines, tolerance: u64) -> (Pairs, Pairs) {
    let (mut judged, mut unjudged) = (Vec::new(), Vec::new());
    for c in comparisons(preds, succs, m, tolerance) {
        for &(a, at_a) in &c.preds {
            for &(b, at_b) in &c.succs {
                if at_a < at_b {
                    if c.judged { &mut judged } else { &mut unjudged }.push((a, b));
                }
            }
        }
    }
    judged.sort();
    judged.dedup();
    unjudged.sort();
    unjudged.dedup();
    (judged, unjudged)
}

fn at(at: i64, machine: u32) -> Stamped {
    Stamped { at, machine }
}

#[test]
fn across_machines_only_a_certain_order_counts() {
    // Machine 2 runs 50 ms ahead, known to ±1 ms: [49_000, 51_000].
    let m = machines(&[Some([-500, 500]), Some([49_000, 51_000])]);
    // A (machine 1) replied at 1_000 local = ref [500, 1_500]; B (machine 2) sent at 40_000 local
    // = ref [-11_000, -9_000]: B was really sent first, although its stamp is later.
    let (judged, _) = pairs(&[at(1_000, 1)], &[at(40_000, 2)], &m, 0);
    assert!(judged.is_empty(), "{judged:?}");
    // B sent at 53_000 local = ref [2_000, 4_000]: after A's latest reference reply 1_500.
    let (judged, _) = pairs(&[at(1_000, 1)], &[at(53_000, 2)], &m, 0);
    assert_eq!(judged, vec![(0, 0)]);
    // The tolerance widens both intervals: 300 µs each side swallows a 500 µs margin.
    let (judged, _) = pairs(&[at(1_000, 1)], &[at(53_000, 2)], &m, 300);
    assert!(judged.is_empty());
}

#[test]
fn one_machine_is_compared_exactly_whatever_the_tolerance() {
    let m = machines(&[Some([-5_000, 5_000]), Some([0, 0])]);
    let (judged, _) = pairs(&[at(1_000, 1)], &[at(1_001, 1)], &m, 50_000);
    assert_eq!(judged, vec![(0, 0)]);
    // Without machines the tolerance applies to every pair, as before.
    let (judged, _) = pairs(
        &[at(1_000, 1)],
        &[at(1_001, 1)],
        &Machines::Unattributed,
        50,
    );
    assert!(judged.is_empty());
}

#[test]
fn unknown_offsets_leave_cross_machine_pairs_unjudged() {
    let m = machines(&[Some([0, 0]), None]);
    let (judged, unjudged) = pairs(&[at(1_000, 1)], &[at(900_000, 2)], &m, 0);
    assert!(judged.is_empty());
    assert_eq!(unjudged, vec![(0, 0)]);
    // And the same machine's pairs are still judged.
    let (judged, _) = pairs(&[at(1_000, 2)], &[at(2_000, 2)], &m, 0);
    assert_eq!(judged, vec![(0, 0)]);
    let note = note(&m, 0, 1).unwrap();
    assert!(note.contains("1 requests could not be judged"), "{note}");
}

#[test]
fn an_unknown_offset_proves_no_order_even_when_the_raw_stamps_look_fine() {
    // Machine 2's send is stamped before machine 1's reply, but machine 2's clock may be a second
    // behind: the send may really have come after the reply, so the pair is not judged either way.
    let m = machines(&[Some([0, 0]), None]);
    let (judged, unjudged) = pairs(&[at(900_000, 1)], &[at(1_000, 2)], &m, 0);
    assert!(judged.is_empty());
    assert_eq!(unjudged, vec![(0, 0)]);
    let (judged, unjudged) = pairs(&[at(900_000, 2)], &[at(1_000, 1)], &m, 0);
    assert!(judged.is_empty());
    assert_eq!(unjudged, vec![(0, 0)]);
}

#[test]
fn the_machine_of_a_client_is_the_shard_owning_it() {
    let m = machines(&[None, None, None]);
    for client in 0..9 {
        let machine = m.machine_of(client);
        assert!(Shard::new(machine, 3).unwrap().owns_client(client));
    }
    assert_eq!(m.describe(2)["host"], "host-2");
    assert_eq!(Machines::Unattributed.machine_of(5), 1);
}

#[test]
fn a_single_run_is_one_machine_with_its_own_host_and_clock() {
    let dir = tempfile::tempdir().unwrap();
    let run = serde_json::json!({
        "shard": {"index": 2, "count": 3},
        "host": "solo",
        "clock": {"reference": "buffer x", "method": "buffer-replies", "offset_us": [-5, 5], "samples": 3},
    });
    std::fs::write(dir.path().join(RUN), run.to_string()).unwrap();
    let m = Machines::load(dir.path()).unwrap();
    let Machines::Known { count, clocks } = &m else {
        panic!("{m:?}")
    };
    assert_eq!(*count, 3);
    assert_eq!(clocks[&2].offset_us, Some([-5, 5]));
    assert_eq!(m.describe(m.machine_of(4))["host"], "solo");
}
