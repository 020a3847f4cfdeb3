//! The key-collider's loop: requests that reuse another group's dedup key (envelope sender and
//! Message-ID) with different content, each sent just before the request it copies (contract:
//! Retransmission). They go through the same transmission and record path as every request.

use reports::records::{Outcome, SentRecord};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Ctx, Play, Session, Stats, sleep_until};
use crate::driver::http;
use crate::driver::http::collider::{Answer, Collision, post};
use crate::driver::recorder::{Event, Sink};
use crate::scenario::groups::WEB_VICTIM;
use crate::scenario::seeded::{mix, unit};
use crate::schedule::request::{Kind, generated_name};

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
    if spec.victim.as_deref() == Some(WEB_VICTIM) {
        return run_web_collider(ctx.clone(), client, sink, stop).await;
    }
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

/// A web key-collider client: for each chosen web user `u` (with `u % count` equal to this
/// client's number), posts `lead` before the user's first form is due a form with the user's
/// requester and `Idempotency-Key` and another domain, and records it (intake `http`, kind
/// `collider`, id `USER-FORM-ID-k`).
pub async fn run_web_collider(
    ctx: std::sync::Arc<Ctx>,
    client: u32,
    sink: Sink,
    stop: CancellationToken,
) {
    let scenario = ctx.requests.scenario();
    let (Some(part), Some(target)) = (&scenario.http, ctx.web_target) else {
        // No web part played: nothing to collide with.
        return;
    };
    let (group, local) = ctx.requests.plan().assignment().group_of(client);
    let run = &ctx.groups[group];
    let spec = &run.spec;
    let tag = ctx.requests.tag();
    for u in (local as usize..part.users as usize).step_by(spec.count as usize) {
        if unit(scenario.seed, u as u64, COLLIDER_PICK) >= spec.fraction() {
            continue;
        }
        let due = ctx.start + http::first_form_due(u, part.hatch_rate());
        let intended = due.checked_sub(spec.lead()).unwrap_or(due);
        if intended >= ctx.deadline || !sleep_until(intended, &stop).await {
            break;
        }
        let (victim_id, key) = http::form_identity(tag, scenario.seed, u, 0);
        let requests = &scenario.requests;
        let email = http::web_email(u, requests.requesters, &requests.requester_domain);
        let d = &scenario.domains;
        let domain = generated_name(
            mix(scenario.seed, u as u64, COLLIDER_PICK) % d.pool.max(1),
            &d.tld,
        );
        let id = format!("{victim_id}-k");
        let holder = format!("Collider {u}");
        let collision = Collision {
            target,
            path: &part.path,
            source: run.source_of(local, requests.requesters),
            timeout: spec.reply_timeout.0,
            id: &id,
            key: &key,
            email: &email,
            domain: &domain,
            holder: &holder,
        };
        let sent = Instant::now();
        let answer = post(&collision).await;
        let replied = Instant::now();
        let record = web_record(&ctx, client, &collision, (intended, sent, replied), answer);
        let service = record.replied_at.map(|_| replied - sent);
        let corrected = record
            .replied_at
            .map(|_| replied.saturating_duration_since(intended));
        let _ = sink
            .send(Event {
                record,
                lag: None,
                service,
                corrected,
            })
            .await;
        ctx.adversaries[group].lock().unwrap().requests_sent += 1;
    }
}

/// The `sent.jsonl` line of one colliding POST.
fn web_record(
    ctx: &Ctx,
    client: u32,
    c: &Collision<'_>,
    (intended, sent, replied): (Instant, Instant, Instant),
    answer: Answer,
) -> SentRecord {
    let clock = &ctx.clock;
    let (group, _) = ctx.requests.plan().assignment().group_of(client);
    let (code, reply, ticket, outcome) = match answer {
        Answer::Replied {
            status,
            body,
            ticket,
        } => {
            let outcome = if status == 202 {
                Outcome::Accepted
            } else {
                Outcome::Refused
            };
            (
                Some(status),
                Some(format!("{status} {body}")),
                ticket,
                outcome,
            )
        }
        Answer::NoReply(why) => (None, Some(why), None, Outcome::Indeterminate),
    };
    SentRecord {
        id: c.id.to_string(),
        client,
        message_id: format!("<{}>", c.key),
        domain: c.domain.to_string(),
        sender: c.email.to_string(),
        intake: "http".into(),
        kind: Kind::Collider.as_str().into(),
        attempt: 1,
        intended_at: clock.stamp(intended),
        sent_at: Some(clock.stamp(sent)),
        replied_at: code.map(|_| clock.stamp(replied)),
        code,
        reply,
        ticket,
        outcome,
        group: Some(ctx.group_name(group).to_string()),
        raw_sha256: None,
        tls_handshake_us: None,
        node: Some(c.target.to_string()),
    }
}
