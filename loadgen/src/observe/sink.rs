//! A restartable SMTP server for the harness's receiving ends (ack sink, SMTP handover): barrage's
//! own `smtp::serve` with a recording handler, which can be taken down and brought back on the
//! same address (a fault: "the ack relay is down for a while").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use barrage::smtp::{MessageHandler, SmtpLimits, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The limits of a harness sink: generous sizes (it must never be the one that refuses), short
/// grace at shutdown.
pub fn sink_limits() -> SmtpLimits {
    SmtpLimits {
        hostname: "landrush-sink.localhost".into(),
        max_message_size: 8 * 1024 * 1024,
        max_recipients: 100,
        command_timeout: Duration::from_secs(120),
        data_timeout: Duration::from_secs(10),
        ..SmtpLimits::default()
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// An SMTP server around `handler`, listening on a fixed address once bound.
pub struct SmtpSink<H> {
    addr: SocketAddr,
    handler: Arc<H>,
    running: Option<Running>,
}

impl<H: MessageHandler> SmtpSink<H> {
    /// Binds `bind` (port 0 picks a free port) and starts serving.
    pub async fn start(bind: SocketAddr, handler: Arc<H>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen for SMTP on {bind}"))?;
        let addr = listener.local_addr()?;
        let mut sink = SmtpSink {
            addr,
            handler,
            running: None,
        };
        sink.serve_on(listener);
        Ok(sink)
    }

    fn serve_on(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Arc::new(sink_limits()),
            self.handler.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        self.running = Some(Running { stop, task });
    }

    /// Where it listens (also while stopped: a restart binds the same address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops accepting connections and waits for the sessions to end (idle ones are told 421):
    /// from now on, connecting is refused.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.task.await;
        }
    }

    /// Listens again on the same address (a no-op if running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("cannot listen for SMTP on {} again", self.addr))?;
        self.serve_on(listener);
        Ok(())
    }
}
