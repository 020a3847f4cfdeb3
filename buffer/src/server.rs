//! `barrage serve`: opens and locks the data dir, starts the journal, the SMTP and web intakes and
//! the handover API, and shuts them down in order on SIGTERM/SIGINT.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::intake::IntakeCounters;
use crate::intake::smtp::SmtpIntake;
use crate::intake::web::WebIntake;
use crate::journal::sqlite::SqliteJournal;

/// The file in the data dir that says where a running barrage listens (for scripts and the
/// harness, which may start barrage on port 0).
pub const ENDPOINTS_FILE: &str = "endpoints.json";

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
    let counters = Arc::new(IntakeCounters::default());

    let smtp_listener = TcpListener::bind(config.smtp.listen)
        .await
        .with_context(|| format!("cannot listen for SMTP on {}", config.smtp.listen))?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let web_listener = if config.web.enabled {
        Some(
            TcpListener::bind(config.web.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for the web intake on {} (choose another --web ADDR, or \
                         --no-web)",
                        config.web.listen
                    )
                })?,
        )
    } else {
        None
    };
    let smtp_addr = smtp_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let web_addr = match &web_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let mut endpoints = serde_json::json!({
        "smtp": smtp_addr.to_string(),
        "http": http_addr.to_string(),
        "pid": std::process::id(),
    });
    if let Some(addr) = web_addr {
        endpoints["web"] = addr.to_string().into();
    }
    std::fs::write(config.data_dir.join(ENDPOINTS_FILE), endpoints.to_string())?;
    tracing::info!(
        "barrage {} serving: SMTP intake on {smtp_addr}, web intake on {}, handover API on \
         http://{http_addr}, journal in {}",
        env!("CARGO_PKG_VERSION"),
        web_addr.map_or("(none)".to_string(), |a| format!("http://{a}/")),
        config.data_dir.display()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };

    let intake = Arc::new(SmtpIntake::new(
        journal.clone(),
        counters.clone(),
        config.hostname.clone(),
    ));
    let smtp = tokio::spawn(crate::smtp::serve(
        smtp_listener,
        Arc::new(config.smtp_limits()),
        intake,
        stopped(stop_rx.clone()),
    ));
    let web = web_listener.map(|listener| {
        let intake = Arc::new(WebIntake::new(
            journal.clone(),
            counters.clone(),
            config.hostname.clone(),
            config.web_limits(),
        ));
        tokio::spawn(crate::intake::web::serve(
            listener,
            intake,
            stopped(stop_rx.clone()),
        ))
    });
    let acks = crate::ack::start(
        config.ack.as_ref(),
        journal.clone(),
        journal.instance_id(),
        &config.hostname,
        stop_rx.clone(),
    )?;
    let state = Arc::new(ApiState {
        journal: journal.clone(),
        intake: counters,
        token: config.http.api_token.clone(),
        extra: vec![acks.stats],
    });
    let http = tokio::spawn(
        axum::serve(http_listener, api::router(state))
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );

    crate::notify::ready(&journal);
    wait_for_signal().await?;
    crate::notify::stopping();
    tracing::info!("stopping: no new connections, finishing transactions in flight");
    let _ = stop_tx.send(true);
    smtp.await??;
    if let Some(web) = web {
        web.await??;
    }
    http.await??;
    if let Some(sender) = acks.sender {
        // Acks in flight at the deadline stay pending and go out after the restart.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sender).await;
    }
    let _ = std::fs::remove_file(config.data_dir.join(ENDPOINTS_FILE));
    tracing::info!("stopped cleanly");
    Ok(())
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
