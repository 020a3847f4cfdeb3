//! The web intake's own accept loop: a connection limit (more are answered 503 without being
//! read), a header deadline per connection, and a graceful shutdown that lets requests in flight
//! finish. With a certificate (`web.tls_cert`) every connection is HTTPS (the handshake within
//! the header deadline) and every answer carries HSTS; every answer carries the security headers
//! of [`security_headers`] either way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

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
            accepted = failures.accept(&listener, "web intake") => accepted,
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
        // The certificate in use now: a SIGHUP reload reaches the next connection.
        let tls = limits.tls.as_ref().map(|certs| certs.acceptor());
        let https = tls.is_some();
        let service = tower::ServiceExt::map_response(service, move |mut response| {
            security_headers(&mut response, https);
            response
        });
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            if let Some(io) = handshake(stream, tls, header_timeout).await {
                let service = TowerToHyperService::new(service);
                let _ = watcher
                    .watch(builder.serve_connection(TokioIo::new(io), service))
                    .await;
            }
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

/// The connection as hyper serves it: plain, or after a TLS handshake that had to finish within
/// the header deadline (`None`: it failed or was too slow, and the connection is dropped).
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    deadline: Duration,
) -> Option<Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>> {
    let Some(acceptor) = tls else {
        return Some(Either::Left(stream));
    };
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Either::Right(tls)),
        Ok(Err(e)) => {
            tracing::debug!("web intake: TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// What every answer of the web intake carries: the form may only post to itself and never be
/// framed, nothing loads from elsewhere (the page has only an inline style), no MIME sniffing,
/// no referrer; over HTTPS, HSTS for a year.
fn security_headers<B>(response: &mut hyper::Response<B>, https: bool) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
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
