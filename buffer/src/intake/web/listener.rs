//! The web intake's own accept loop: a connection limit (more are answered 503 without being
//! read), a header deadline per connection, and a graceful shutdown that lets requests in flight
//! finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{ClientAddr, WebIntake, router};
use crate::journal::Journal;

/// Serves the web intake on `listener` until `shutdown` resolves, then lets requests in flight
/// finish (at most 30 s).
pub async fn serve<J: Journal>(
    listener: TcpListener,
    intake: Arc<WebIntake<J>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = intake.limits.clone();
    let app = router(intake);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut failures = crate::descriptors::AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    failures.record("web intake", &e);
                    tokio::time::sleep(crate::descriptors::ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream, limits.retry_after_secs));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        // The handler meets per-client limits by the peer address, which only this loop knows.
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(peer));
                request
            },
        );
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("web intake: connections still open after 30 s, closing them");
    }
    Ok(())
}

/// Too many connections: a minimal 503 and close, without reading the request.
async fn refuse_connection(mut stream: tokio::net::TcpStream, retry_after: u64) {
    let body = "{\"error\":\"too many connections, try again later\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
