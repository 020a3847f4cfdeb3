//! The handover API's own accept loop: a connection limit (more are answered `503` without being
//! read), a deadline for the request headers, pauses when the process is out of descriptors
//! (with the log rate-limited), and a graceful shutdown that lets calls in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::descriptors::AcceptFailures;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The bounds of the API's connections.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    /// With a token configured, `/metrics` needs it too.
    pub metrics_require_token: bool,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            metrics_require_token: true,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets calls in flight finish (at
/// most 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ApiLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut failures = AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            (stream, _) = failures.accept(&listener, "handover API") => stream,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("handover API: calls still open after 10 s, closing them");
    }
    Ok(())
}

/// Too many connections: a minimal 503 and close, without reading the request.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    let body = "{\"error\":\"too many connections to the handover API, try again later\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
