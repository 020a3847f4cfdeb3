//! The organiser's time reference for a foreign buffer (contract: FIFO, rule 9): `landrush
//! observe` serves `GET /time`, and each volunteer's `landrush run --time-reference URL` does a
//! four-timestamp exchange with it before the instant and after the run.
//!
//! One exchange: the client reads its clock (`t1`), the server stamps the request's arrival
//! (`t2`) and its answer (`t3`) on the reference clock, the client reads its clock again (`t4`).
//! The reference instants lie between the local ones, so `t1 − t2 ≤ offset ≤ t4 − t3`: the
//! offset ± half the round trip. Several exchanges are intersected like [`super::from_replies`]'s
//! bounds, and for the same reason nothing is thrown away as an outlier: a slow exchange gives a
//! wide interval, never a false one.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::routing::get;
use reports::records::{ClockEstimate, ClockMethod, Stamp};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Intersection;

/// The endpoint's path.
pub const TIME_PATH: &str = "/time";
/// Exchanges per measurement (before the instant, and again after the run).
pub const SAMPLES: u32 = 8;
/// One exchange gives up after this long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /time`'s body: the reference clock when the request arrived and when it was answered,
/// in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeReply {
    pub received_us: i64,
    pub sent_us: i64,
}

/// One exchange's four timestamps (µs): local, reference, reference, local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub t1: i64,
    pub t2: i64,
    pub t3: i64,
    pub t4: i64,
}

impl Exchange {
    /// `[t1 − t2, t4 − t3]`: where the offset lay during the exchange.
    pub fn interval(&self) -> [i64; 2] {
        [self.t1 - self.t2, self.t4 - self.t3]
    }

    /// The round trip less the server's own time.
    pub fn round_trip_us(&self) -> i64 {
        (self.t4 - self.t1) - (self.t3 - self.t2)
    }
}

/// The time endpoint, serving until `stop`. Returns its address and task.
pub async fn serve(
    bind: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for the time endpoint"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        TIME_PATH,
        get(|| async {
            let received_us = Stamp::now().micros();
            Json(TimeReply {
                received_us,
                sent_us: Stamp::now().micros(),
            })
        }),
    );
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!("time endpoint stopped: {e}");
        }
    });
    Ok((addr, task))
}

/// `URL` as given to `--time-reference`, with `/time` added when it names only the server.
pub fn time_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with(TIME_PATH) {
        url.to_string()
    } else {
        format!("{url}{TIME_PATH}")
    }
}

/// `count` exchanges with the time endpoint at `url`, one after the other.
pub async fn measure(url: &str, count: u32) -> anyhow::Result<Vec<Exchange>> {
    let url = time_url(url);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(EXCHANGE_TIMEOUT)
        .build()?;
    let mut exchanges = Vec::new();
    for _ in 0..count {
        let t1 = Stamp::now().micros();
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("the time reference {url} did not answer"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "the time reference {url} answered {}; is it a `landrush observe`?",
            response.status()
        );
        let reply: TimeReply = response.json().await.with_context(|| {
            format!("the time reference {url} did not answer with {{received_us, sent_us}}")
        })?;
        let t4 = Stamp::now().micros();
        exchanges.push(Exchange {
            t1,
            t2: reply.received_us,
            t3: reply.sent_us,
            t4,
        });
    }
    Ok(exchanges)
}

/// The intersection of the exchanges' intervals.
pub fn estimate(url: &str, exchanges: &[Exchange]) -> ClockEstimate {
    let mut cut = Intersection::default();
    for (n, e) in exchanges.iter().enumerate() {
        let [lo, hi] = e.interval();
        let name = format!("exchange {}", n + 1);
        cut.lower(&name, lo);
        cut.upper(&name, hi);
        cut.samples += 1;
    }
    if cut.samples == 0 {
        return super::unknown("no exchange with the time reference");
    }
    cut.estimate(&time_url(url), ClockMethod::TimeExchange)
}
