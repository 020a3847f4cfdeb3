//! The `barrage` command line: its arguments, help texts and dispatch. It lives in the library so
//! that `landrush` can run the very same buffer as a child process of its own binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;

/// barrage: a durable FIFO intake buffer for one-shot request floods.
///
/// Requests arrive as mails over SMTP; each is fsynced into a journal before it is answered
/// `250 … queued as ticket N`, and the registration system pulls them in ticket order through the
/// handover API (`GET /v1/requests?after=SEQ`, `POST /v1/cursor`).
#[derive(Parser)]
#[command(name = "barrage", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the SMTP and web intakes and the handover API until SIGTERM/SIGINT.
    ///
    /// Settings come from the config file (see buffer/barrage.example.toml), then these flags,
    /// which override it.
    Serve(ServeArgs),
    /// Acknowledgement mails.
    #[command(subcommand)]
    Ack(AckCommand),
    /// Copy the journal of a data dir into one consistent SQLite file, while barrage serves
    /// (SQLite's online backup). The copy opens on its own, without a WAL.
    Backup {
        /// The data dir of the journal to copy.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The file to write (it must not exist yet).
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
    /// Check a journal from the inside (contract: Provable order): seqs gap-free, accepted-at
    /// never decreasing, every chain link, one outbox row per request with an ack address, the
    /// cursor at or below the last seq. Exits 0 with a summary, or 1 naming the first bad seq.
    Audit {
        /// The data dir of the journal to check (barrage may be serving it).
        #[arg(long, value_name = "DIR", required_unless_present = "journal")]
        data_dir: Option<PathBuf>,
        /// The PostgreSQL journal to check instead, postgres://USER@HOST:PORT/DB.
        #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
        journal: Option<String>,
    },
}

#[derive(Subcommand)]
enum AckCommand {
    /// Print the ack mail of a sample request, rendered with the [ack] settings and template of
    /// the config file, to check it before the day.
    Preview {
        /// TOML config file with an [ack] section.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; every key is documented in buffer/barrage.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the journal (created if missing, locked while barrage runs).
    /// [default: ./barrage-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the journal in PostgreSQL, shared with other barrage nodes, instead of SQLite in
    /// the data dir: postgres://USER@HOST:PORT/DB (several HOST:PORT, comma-separated, with
    /// ?target_session_attrs=read-write to follow a failover). Same as `[journal] url`.
    #[arg(long, value_name = "URL")]
    journal: Option<String>,
    /// Address of the SMTP intake. [default: 127.0.0.1:2525]
    #[arg(long, value_name = "ADDR")]
    smtp: Option<SocketAddr>,
    /// Address of the private handover and operations API. A non-loopback address needs
    /// --api-token. [default: 127.0.0.1:8025]
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Address of the public web intake (the form at `/`, `POST /requests`).
    /// [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", conflicts_with = "no_web")]
    web: Option<SocketAddr>,
    /// Serve no web intake (SMTP only), whatever the config file says.
    #[arg(long)]
    no_web: bool,
    /// Bearer token every /v1 call (and /metrics) must carry. Visible to every local user in
    /// `ps`: prefer --api-token-file or the environment variable BARRAGE_API_TOKEN.
    #[arg(long, value_name = "TOKEN", conflicts_with = "api_token_file")]
    api_token: Option<String>,
    /// File whose first line is the bearer token (keep it mode 0600).
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
}

/// The environment variable that may hold the API token.
pub const TOKEN_ENV: &str = "BARRAGE_API_TOKEN";

/// Runs `barrage` with these command-line arguments (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(|| LossyStderr)
        .try_init()
        .ok();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("barrage: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Backup { data_dir, out } => {
            crate::journal::privacy::restrict_umask();
            let rows = crate::journal::sqlite::backup(&data_dir, &out)?;
            println!(
                "copied the journal of {} ({rows} requests) into {}",
                data_dir.display(),
                out.display()
            );
            Ok(())
        }
        Command::Audit { data_dir, journal } => audit(data_dir.as_deref(), journal.as_deref()),
        Command::Ack(AckCommand::Preview { config }) => {
            let config = Config::load(&config)?;
            let Some(ack) = &config.ack else {
                anyhow::bail!("the config file has no [ack] section: no acks would be sent");
            };
            print!("{}", crate::ack::preview(ack, &config.hostname)?);
            Ok(())
        }
    }
}

/// `barrage serve`: the config file, then the flags over it, then the server until a signal.
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.journal {
        config.journal.url = Some(url);
    }
    if let Some(addr) = args.smtp {
        config.smtp.listen = addr;
    }
    if let Some(addr) = args.http {
        config.http.listen = addr;
    }
    if let Some(addr) = args.web {
        config.web.listen = addr;
        config.web.enabled = true;
    }
    if args.no_web {
        config.web.enabled = false;
    }
    apply_token(&mut config, args.api_token, args.api_token_file)?;
    crate::server::prepare_process();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()?;
    runtime.block_on(crate::server::serve(config))
}

/// `barrage audit`: the journal of a data dir or a PostgreSQL database, verified; a finding is
/// an error that says what to keep as evidence.
fn audit(data_dir: Option<&Path>, journal: Option<&str>) -> anyhow::Result<()> {
    let (outcome, what) = match (data_dir, journal) {
        (_, Some(url)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(crate::audit::postgres::audit(url))?;
            let what = format!(
                "the journal in {} does not verify; keep a copy of the database (pg_dump) as \
                 evidence",
                crate::journal::postgres::describe(url)
            );
            (outcome, what)
        }
        (Some(dir), None) => {
            let what = format!(
                "the journal of {} does not verify; keep a copy of the data dir as evidence",
                dir.display()
            );
            (crate::audit::audit(dir)?, what)
        }
        (None, None) => anyhow::bail!("give --data-dir DIR or --journal URL"),
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        Err(finding) => Err(anyhow::Error::new(finding).context(what)),
    }
}

/// The API token: `--api-token` (warned about: `ps` shows it), else `--api-token-file` or
/// `http.api_token_file`, else `BARRAGE_API_TOKEN`, else `http.api_token`.
fn apply_token(
    config: &mut Config,
    flag: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(token) = flag {
        tracing::warn!(
            "the API token was given with --api-token: every local user can read it with `ps`; \
             use --api-token-file FILE or the environment variable {TOKEN_ENV} instead"
        );
        config.http.api_token = Some(token);
    } else if let Some(path) = file.or_else(|| config.http.api_token_file.clone()) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the API token file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "the API token file {} is empty: write the token on its first line",
            path.display()
        );
        config.http.api_token = Some(token);
    } else if let Some(token) = std::env::var_os(TOKEN_ENV) {
        let token = token
            .into_string()
            .map_err(|_| anyhow::anyhow!("{TOKEN_ENV} is not valid UTF-8"))?;
        config.http.api_token = Some(token);
    }
    Ok(())
}

/// Standard error that never fails: a log line that cannot be written (stderr is a file on a
/// full disk, a closed pipe) is dropped. Without it, the failed write makes tracing fall back to
/// `eprintln!`, which panics, and the panic would kill whichever thread logged, the journal
/// writer included.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
