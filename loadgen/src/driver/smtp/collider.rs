//! The key-collider's loop: requests that reuse another group's dedup key (envelope sender and
//! Message-ID) with different content, each sent just before the request it copies (contract:
//! Retransmission). They go through the same transmission and record path as every request.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Ctx, Play, Session, Stats, sleep_until};
use crate::driver::recorder::Sink;
use crate::scenario::seeded::unit;

/// The hash stream that picks which of the victim's requests a key-collider copies.
const COLLIDER_PICK: u64 = 2000;

/// A key-collider client: for each chosen request of its victim group (those of rank `r` with
/// `r % count` equal to this client's number), sends `lead` before the victim is due a request
/// with the victim's envelope sender and Message-ID and other content (contract:
/// Retransmission). Its transmissions are recorded like any other, with kind `collider`.
pub async fn run_collider(
    ctx: std::sync::Arc<Ctx>,
    client: u32,
    sink: Sink,
    stop: CancellationToken,
) {
    let plan = ctx.requests.plan();
    let (group, local) = plan.assignment().group_of(client);
    let spec = &ctx.groups[group].spec;
    let victim = ctx
        .groups
        .iter()
        .position(|g| Some(&g.spec.name) == spec.victim.as_ref())
        .expect("the scenario checks that the victim exists");
    let ranks = plan.assignment().group_requests(victim, plan.total());
    let seed = ctx.requests.scenario().seed;
    let mut stats = Stats::default();
    let mut session = Session::default();
    let mut message = Vec::with_capacity(4096);
    for rank in (local as u64..ranks).step_by(spec.count as usize) {
        let Some(index) = plan.assignment().index_of_rank(victim, rank) else {
            break;
        };
        if unit(seed, index, COLLIDER_PICK) >= spec.fraction() {
            continue;
        }
        let due = ctx.start + plan.offset(index).unwrap_or_default();
        let intended = due.checked_sub(spec.lead()).unwrap_or(due);
        if intended >= ctx.deadline
            || Instant::now() >= ctx.deadline
            || !sleep_until(intended, &stop).await
        {
            break;
        }
        let request = ctx.requests.collider(index, client, group);
        message.clear();
        request.render(ctx.clock.stamp(intended), &mut message);
        let mut play = Play {
            ctx: &ctx,
            sink: &sink,
            stats: &mut stats,
            session: &mut session,
            request: &request,
            message: &message,
            intended,
        };
        // No lag: the colliders' timing is theirs, not the schedule's.
        play.all_attempts(None, &stop).await;
        ctx.adversaries[group].lock().unwrap().requests_sent += 1;
    }
    session.quit().await;
    ctx.stats.lock().unwrap().add(stats);
}
