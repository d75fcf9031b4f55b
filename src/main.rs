//! The `starling` command: runs the broker or checks a configuration file.
//!
//! - `starling [--config FILE]` / `starling run [--config FILE]`: run the broker until SIGINT or
//!   SIGTERM, then shut down gracefully. Without `--config` the embedded defaults are used (one
//!   listener on 127.0.0.1:1883). SIGHUP re-reads the configuration file, applies the
//!   reloadable settings (auth files, TLS certificates, keys and CAs) and logs which settings
//!   changed, which were applied and which need a restart ([`starling::BrokerHandle::reload`]).
//!   SIGHUP and SIGUSR1 re-open `log.file` (see `log_output`), for log rotation.
//!
//! Under systemd (`Type=notify`, `NOTIFY_SOCKET` set) the broker reports `READY=1` once every
//! listener is bound, `RELOADING=1` / `READY=1` around a reload and `STOPPING=1` when shutdown
//! begins; without `NOTIFY_SOCKET` those notifications do nothing.
//! - `starling check-config FILE`: print the whole effective configuration (defaults included,
//!   relative file paths made absolute) and exit 0, or print the error and exit 1. The password
//!   and ACL files it names are loaded too.
//! - `starling passwd [-c] [-b] [-D] [-U] [-I ITERATIONS] FILE [USER] [PASSWORD]`: manage a
//!   Mosquitto-compatible password file, like `mosquitto_passwd` (see [`passwd`]).
//! - `starling migrate MOSQUITTO_CONF [-o FILE]`: translate a Mosquitto configuration into
//!   Starling TOML, each key commented with its Mosquitto line; options with no equivalent are
//!   listed on stderr (see `migrate`).
//! - `starling store check|dump|reset --dir DIR`: inspect the message store, print its records,
//!   or move it aside (see `store_cmd`).
//!
//! Exit codes: 0 success, 1 runtime or configuration error, 2 command-line usage error (clap),
//! 3 `migrate` left some options out.

#![deny(unsafe_code)]

mod dynsec_cmd;
mod limits;
mod log_output;
mod migrate;
mod passwd;
mod store_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sd_notify::NotifyState;
use starling::auth::AuthSet;
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// Starling, an async MQTT broker.
#[derive(Debug, Parser)]
#[command(
    name = "starling",
    version,
    about,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options for running the broker when no subcommand is given.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML configuration file to check.
        file: PathBuf,
    },
    /// Add, change or delete users in a Mosquitto-compatible password file (like
    /// mosquitto_passwd).
    Passwd(passwd::PasswdArgs),
    /// Manage Mosquitto-compatible dynamic security (auth.dynamic_security).
    Dynsec {
        #[command(subcommand)]
        action: dynsec_cmd::DynsecCommand,
    },
    /// Translate a Mosquitto configuration (mosquitto.conf, with its include_dir) into
    /// Starling TOML. Options with no equivalent are listed on stderr; exit code 3 when any
    /// was left out.
    Migrate(migrate::MigrateArgs),
    /// Inspect, dump or move aside the message store (persistence.dir).
    Store {
        #[command(subcommand)]
        action: store_cmd::StoreCommand,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file; without it the built-in defaults are used.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Store { action }) => store_cmd::run(action),
        Some(Command::Run(args)) => run(args),
        Some(Command::Passwd(args)) => passwd::run(args),
        Some(Command::Dynsec { action }) => dynsec_cmd::run(action),
        Some(Command::Migrate(args)) => match migrate::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(migrate::EXIT_LEFT_OUT),
            Err(e) => Err(e),
        },
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once. Many messages already end with their
/// cause (`cannot listen on ADDR: {source}`, with `source` also reported as the error's
/// source), so anyhow's `{:#}` would print that cause twice or three times; a cause whose text
/// the line already holds is not appended again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// `check-config`: the effective configuration goes to stdout so it can be redirected into a
/// file and used as is; errors go to stderr.
fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    AuthSet::load(&config)?;
    // The binary stores on disk unless `persistence.enabled = false`.
    print!("{}", config.render_effective(true));
    eprintln!("{}: configuration is valid", file.display());
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let config = Config::default();
            config.validate()?;
            config
        }
    };
    // Kept until `run` returns: dropping it flushes the queued log lines.
    let (_log_guard, log_file) = log_output::init(&config.log)?;
    match &args.config {
        Some(path) => info!("configuration loaded from {}", path.display()),
        None => info!("no --config given: using built-in defaults"),
    }
    match limits::raise_fd_limit() {
        Ok(n) if n == u64::MAX => info!("open file limit: unlimited"),
        Ok(n) => info!("open file limit: {n}"),
        Err(e) => warn!("could not raise the open file limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("starling")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.config, log_file))
}

/// Sends systemd notifications; a failure is logged, never fatal (the broker works the same
/// without a service manager).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager: {e}");
    }
}

async fn serve(
    config: Config,
    path: Option<PathBuf>,
    log_file: Option<log_output::LogFile>,
) -> anyhow::Result<()> {
    // Install the handlers before binding, so a signal that arrives as soon as the ports are
    // open is handled as a shutdown and not by the default action (immediate termination).
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("cannot install SIGUSR1 handler")?;

    let protocols: Vec<_> = config.listeners.iter().map(|l| l.protocol).collect();
    let handle = Broker::builder(config)
        .persistence_default(true)
        .start()
        .await
        .context("cannot start the broker")?;
    let addrs = handle.local_binds();
    for (addr, protocol) in addrs.iter().zip(&protocols) {
        info!("listening on {addr} ({protocol})");
    }
    if let Some(addr) = handle.metrics_addr() {
        info!("serving metrics at http://{addr}/metrics (health: /healthz, /readyz)");
    }
    info!("starling {} started", env!("CARGO_PKG_VERSION"));
    let status = match addrs.as_slice() {
        [one] => format!("accepting MQTT connections on {one}"),
        many => format!("accepting MQTT connections on {} listeners", many.len()),
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);

    let name = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => {
                log_output::reopen(log_file.as_ref(), "SIGHUP");
                reload(&handle, path.as_deref(), &status);
            }
            _ = sigusr1.recv() => log_output::reopen(log_file.as_ref(), "SIGUSR1"),
        }
    };
    info!("{name} received: shutting down (send it again to exit at once)");
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    handle.shutdown();
    tokio::select! {
        _ = handle.wait() => {
            info!("shutdown complete");
            Ok(())
        }
        _ = sigint.recv() => anyhow::bail!("second SIGINT: exiting without finishing shutdown"),
        _ = sigterm.recv() => anyhow::bail!("second SIGTERM: exiting without finishing shutdown"),
    }
}

/// SIGHUP: re-reads the configuration file and logs what changed. An unreadable or invalid file
/// is logged and the broker keeps running as it was.
fn reload(handle: &BrokerHandle, path: Option<&Path>, status: &str) {
    info!("SIGHUP received: reload requested");
    let Some(path) = path else {
        info!("no --config file: nothing to reload");
        return;
    };
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    match Config::load(path) {
        Err(e) => error!("reload failed, keeping the running configuration: {e}"),
        Ok(new) => {
            let report = handle.reload(&new);
            if report.is_empty() {
                info!("reload: {} has no changes", path.display());
            }
            for change in report.applied() {
                info!("reload: {change}");
            }
            for change in report.restart_required() {
                warn!("reload: {change}");
            }
            for change in report.failed() {
                error!("reload: {change}");
            }
            for files in &report.files {
                match files.status {
                    starling::reload::ChangeStatus::Failed(_) => error!("reload: {files}"),
                    _ => info!("reload: {files}"),
                }
            }
        }
    }
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}
