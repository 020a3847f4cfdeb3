//! `barrage serve`: opens and locks the data dir (private: see [`privacy`]), fits the connection
//! limits into the descriptors it has ([`descriptors`]), starts the journal (SQLite in the data
//! dir, or PostgreSQL with `--journal postgres://…`: the same services on either), the SMTP and web
//! intakes and the handover API, and shuts them down in order on SIGTERM/SIGINT, checkpointing
//! the WAL last so `barrage.db` alone is the complete journal.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::descriptors::{self, ConnectionLimits};
use crate::endpoints::Endpoints;
use crate::intake::IntakeCounters;
use crate::intake::smtp::SmtpIntake;
use crate::intake::web::WebIntake;
use crate::journal::Journal;
use crate::journal::outbox::AckOutbox;
use crate::journal::postgres::PostgresJournal;
use crate::journal::privacy;
use crate::journal::sqlite::SqliteJournal;

/// The file in the data dir that says where a running barrage listens; see [`Endpoints`].
pub use crate::endpoints::FILE as ENDPOINTS_FILE;

/// Holds the data dir's lock for as long as it lives.
pub struct DataDirLock {
    _file: File,
}

/// Creates the data dir if needed (mode 0700) and locks it, so two barrages never write one
/// journal.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    privacy::create_private_dir(dir)
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
/// 451) rather than kill the process with SIGXFSZ; thousands of idle clients need file
/// descriptors; and every file it creates holds personal data (umask 077).
pub fn prepare_process() {
    // SAFETY: setting a signal to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    privacy::restrict_umask();
    descriptors::raise_nofile();
}

/// Runs barrage until SIGTERM or SIGINT.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    config.validate()?;
    // Before anything is created: SQLite makes the WAL and SHM with the database's mode.
    privacy::restrict_umask();
    fit_connection_limits(&mut config, descriptors::raise_nofile())?;
    let _lock = lock_data_dir(&config.data_dir)?;
    // Logged absolute: a relative `./barrage-data` started elsewhere is another journal.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("cannot resolve data dir {}", config.data_dir.display()))?;
    if let Some(options) = config.postgres_options() {
        let journal = Arc::new(PostgresJournal::open(options).await?);
        let stats = Journal::stats(&*journal);
        tracing::info!(
            "journal {} on PostgreSQL: last seq {}, cursor {}",
            journal.journal_id(),
            stats.accepted,
            stats.cursor
        );
        run(&config, journal).await?;
    } else {
        let journal = Arc::new(
            SqliteJournal::open(&config.data_dir, config.journal_options()).with_context(|| {
                format!("cannot open the journal in {}", config.data_dir.display())
            })?,
        );
        for warning in privacy::exposed_entries(&config.data_dir)? {
            tracing::warn!("{warning}");
        }
        let stats = Journal::stats(&*journal);
        tracing::info!(
            "journal {} in {}: last seq {}, cursor {}",
            journal.instance_id(),
            config.data_dir.display(),
            stats.accepted,
            stats.cursor
        );
        run(&config, journal.clone()).await?;
        match journal.checkpoint() {
            Ok(()) => tracing::info!("journal checkpointed: barrage.db alone is complete"),
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    Endpoints::remove(&config.data_dir);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Serves on `journal` until SIGTERM or SIGINT, then stops the services in order.
async fn run<J: Journal + AckOutbox>(config: &Config, journal: Arc<J>) -> anyhow::Result<()> {
    // Before any listener: a configured key that cannot be used stops the start here.
    let signer =
        crate::signing::Signer::from_config(config.signing.key_file.as_deref(), &config.data_dir)?;
    tracing::info!(
        "checkpoints and receipts are signed with the Ed25519 key of fingerprint {} \
         (SHA-256 of the public key; GET /v1/public-key)",
        signer.fingerprint()
    );
    let listeners = Listeners::bind(config).await?;
    let endpoints = listeners.endpoints()?;
    // Before the endpoints file and READY=1 say barrage runs: a SIGTERM from then on stops it
    // cleanly, never kills it with the signal's default action.
    let stopped = stop_signal()?;
    endpoints.write(&config.data_dir)?;
    let journal_at = match &config.journal.url {
        Some(url) => crate::journal::postgres::describe(url),
        None => config.data_dir.display().to_string(),
    };
    tracing::info!(
        "barrage {} serving: SMTP intake on {}, web intake on {}, handover API on http://{}, \
         journal in {journal_at}",
        env!("CARGO_PKG_VERSION"),
        endpoints.smtp,
        endpoints
            .web
            .map_or("(none)".to_string(), |a| format!("http://{a}/")),
        endpoints.http,
    );

    let stop = CancellationToken::new();
    let services = Services::start(config, listeners, journal.clone(), Arc::new(signer), &stop)?;
    crate::notify::ready(&journal);
    stopped.await;
    crate::notify::stopping();
    tracing::info!("stopping: no new connections, finishing transactions in flight");
    stop.cancel();
    services.finish().await
}

/// Clamps the connection limits into `nofile` descriptors, with a warning naming what to raise.
fn fit_connection_limits(config: &mut Config, nofile: u64) -> anyhow::Result<()> {
    let asked = ConnectionLimits {
        smtp: config.smtp.max_connections,
        web: if config.web.enabled {
            config.web.max_connections
        } else {
            0
        },
        api: config.http.max_connections,
    };
    let fitted = asked.fit(nofile)?;
    if fitted != asked {
        tracing::warn!(
            "the connection limits (smtp.max_connections {}, web.max_connections {}, \
             http.max_connections {}) need more file descriptors than RLIMIT_NOFILE allows \
             ({nofile}, {} kept for the journal and refusals): clamped to {}, {} and {}. Raise \
             the limit (`ulimit -n`, LimitNOFILE= in a systemd unit) to serve more",
            asked.smtp,
            asked.web,
            asked.api,
            descriptors::RESERVE,
            fitted.smtp,
            fitted.web,
            fitted.api
        );
    }
    config.smtp.max_connections = fitted.smtp;
    config.web.max_connections = fitted.web.max(1);
    config.http.max_connections = fitted.api;
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
    fn start<J: Journal + AckOutbox>(
        config: &Config,
        listeners: Listeners,
        journal: Arc<J>,
        signer: Arc<crate::signing::Signer>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let counters = Arc::new(IntakeCounters::default());
        let hostname = config.hostname.clone();
        let ack_recipient = config.ack.as_ref().map(|ack| ack.recipient);
        let intake = Arc::new(
            SmtpIntake::new(journal.clone(), counters.clone(), hostname.clone())
                .with_ack_recipient(ack_recipient.unwrap_or_default()),
        );
        let mut limits = config.smtp_limits();
        limits.tls = config.smtp_tls()?;
        let web_tls = config.web_tls()?;
        // Always handled, so a reload of a config without TLS does not end the process.
        let smtp_tls = limits.tls.iter().map(|tls| tls.certificates.clone());
        reload_on_hangup(smtp_tls.chain(web_tls.clone()).collect(), stop.clone())?;
        let smtp = tokio::spawn(crate::smtp::serve(
            listeners.smtp,
            Arc::new(limits),
            intake,
            stop.clone().cancelled_owned(),
        ));
        let web = listeners.web.map(|listener| {
            let mut limits = config.web_limits();
            limits.tls = web_tls;
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
            journal.journal_id(),
            &config.hostname,
            signer.clone(),
            stop.clone(),
        )?;
        let state = ApiState {
            journal,
            signer,
            intake: counters,
            token: config.http.api_token.clone(),
            extra: vec![acks.stats],
            limits: config.api_limits(),
        };
        let http = spawn_api(listeners.http, state, stop);
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

/// The handover and operations API on `listener`, until `stop`.
fn spawn_api<J: Journal + AckOutbox>(
    listener: TcpListener,
    state: ApiState<J>,
    stop: &CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let limits = state.limits.clone();
    let app = api::router(Arc::new(state));
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move { api::listener::serve(listener, app, &limits, shutdown).await })
}

/// Rereads the certificates on every SIGHUP until `stop`; sessions already in TLS keep theirs.
/// Other settings are read only at start: a change to them is a restart.
fn reload_on_hangup(
    certificates: Vec<Arc<crate::tls::Certificates>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while stop
            .run_until_cancelled(hangup.recv())
            .await
            .flatten()
            .is_some()
        {
            for certs in &certificates {
                match certs.reload() {
                    Ok(()) => tracing::info!("SIGHUP: certificate reloaded: {certs:?}"),
                    Err(e) => tracing::error!("SIGHUP: certificate kept, reload failed: {e:#}"),
                }
            }
        }
    });
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the future ends at the first of them.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
