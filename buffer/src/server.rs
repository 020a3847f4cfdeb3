//! `barrage serve`: opens and locks the data dir, starts the journal, the SMTP and web intakes and
//! the handover API, and shuts them down in order on SIGTERM/SIGINT.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::endpoints::Endpoints;
use crate::intake::IntakeCounters;
use crate::intake::smtp::SmtpIntake;
use crate::intake::web::WebIntake;
use crate::journal::sqlite::SqliteJournal;

/// The file in the data dir that says where a running barrage listens; see [`Endpoints`].
pub use crate::endpoints::FILE as ENDPOINTS_FILE;

/// Holds the data dir's lock for as long as it lives.
pub struct DataDirLock {
    _file: File,
}

/// Creates the data dir if needed and locks it, so two barrages never write one journal.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data dir {} is in use by another barrage (it holds {}); stop that one or choose \
             another --data-dir",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Process settings a buffer needs: a write beyond RLIMIT_FSIZE must fail with EFBIG (answered
/// 451) rather than kill the process with SIGXFSZ, and thousands of idle clients need file
/// descriptors.
pub fn prepare_process() {
    // SAFETY: setting a signal to SIG_IGN and raising our own soft limit have no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Runs barrage until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let journal = Arc::new(
        SqliteJournal::open(&config.data_dir, config.journal_options())
            .with_context(|| format!("cannot open the journal in {}", config.data_dir.display()))?,
    );
    let listeners = Listeners::bind(&config).await?;
    let endpoints = listeners.endpoints()?;
    endpoints.write(&config.data_dir)?;
    tracing::info!(
        "barrage {} serving: SMTP intake on {}, web intake on {}, handover API on http://{}, \
         journal in {}",
        env!("CARGO_PKG_VERSION"),
        endpoints.smtp,
        endpoints
            .web
            .map_or("(none)".to_string(), |a| format!("http://{a}/")),
        endpoints.http,
        config.data_dir.display()
    );

    let stop = CancellationToken::new();
    let services = Services::start(&config, listeners, journal.clone(), &stop)?;
    crate::notify::ready(&journal);
    wait_for_signal().await?;
    crate::notify::stopping();
    tracing::info!("stopping: no new connections, finishing transactions in flight");
    stop.cancel();
    services.finish().await?;
    Endpoints::remove(&config.data_dir);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The three listeners, bound before anything is served so a taken port fails the start.
struct Listeners {
    smtp: TcpListener,
    http: TcpListener,
    web: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Self> {
        let smtp = TcpListener::bind(config.smtp.listen)
            .await
            .with_context(|| format!("cannot listen for SMTP on {}", config.smtp.listen))?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let web = if config.web.enabled {
            let listener = TcpListener::bind(config.web.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for the web intake on {} (choose another --web ADDR, or \
                     --no-web)",
                        config.web.listen
                    )
                })?;
            Some(listener)
        } else {
            None
        };
        Ok(Listeners { smtp, http, web })
    }

    fn endpoints(&self) -> std::io::Result<Endpoints> {
        Ok(Endpoints {
            smtp: self.smtp.local_addr()?,
            http: self.http.local_addr()?,
            web: self.web.as_ref().map(TcpListener::local_addr).transpose()?,
            pid: std::process::id(),
        })
    }
}

/// The running intakes, handover API and ack sender, all stopping on one token.
struct Services {
    smtp: JoinHandle<std::io::Result<()>>,
    web: Option<JoinHandle<std::io::Result<()>>>,
    http: JoinHandle<std::io::Result<()>>,
    ack_sender: Option<JoinHandle<()>>,
}

impl Services {
    fn start(
        config: &Config,
        listeners: Listeners,
        journal: Arc<SqliteJournal>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let counters = Arc::new(IntakeCounters::default());
        let hostname = config.hostname.clone();
        let intake = Arc::new(SmtpIntake::new(
            journal.clone(),
            counters.clone(),
            hostname.clone(),
        ));
        let smtp = tokio::spawn(crate::smtp::serve(
            listeners.smtp,
            Arc::new(config.smtp_limits()),
            intake,
            stop.clone().cancelled_owned(),
        ));
        let web = listeners.web.map(|listener| {
            let limits = config.web_limits();
            let intake = WebIntake::new(journal.clone(), counters.clone(), hostname, limits);
            let serve = crate::intake::web::serve(
                listener,
                Arc::new(intake),
                stop.clone().cancelled_owned(),
            );
            tokio::spawn(serve)
        });
        let acks = crate::ack::start(
            config.ack.as_ref(),
            journal.clone(),
            journal.instance_id(),
            &config.hostname,
            stop.clone(),
        )?;
        let state = Arc::new(ApiState {
            journal,
            intake: counters,
            token: config.http.api_token.clone(),
            extra: vec![acks.stats],
        });
        let http = tokio::spawn(
            axum::serve(listeners.http, api::router(state))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Ok(Services {
            smtp,
            web,
            http,
            ack_sender: acks.sender,
        })
    }

    /// Waits for every service to finish once the stop token is cancelled.
    async fn finish(self) -> anyhow::Result<()> {
        self.smtp.await??;
        if let Some(web) = self.web {
            web.await??;
        }
        self.http.await??;
        if let Some(sender) = self.ack_sender {
            // Acks in flight at the deadline stay pending and go out after the restart.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sender).await;
        }
        Ok(())
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
