//! The `starling` command: runs the broker or checks a configuration file.
//!
//! - `starling [--config FILE]` / `starling run [--config FILE]`: run the broker until SIGINT or
//!   SIGTERM, then shut down gracefully. Without `--config` the embedded defaults are used (one
//!   listener on 127.0.0.1:1883).
//! - `starling check-config FILE`: print the effective configuration and exit 0, or print the
//!   error and exit 1.
//! - `starling store check|dump|reset --dir DIR`: inspect the message store, print its records,
//!   or move it aside (see `store_cmd`).
//!
//! Exit codes: 0 success, 1 runtime or configuration error, 2 command-line usage error (clap).

#![deny(unsafe_code)]

mod limits;
mod store_cmd;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use starling::config::Config;
use starling::Broker;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

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
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: the effective configuration goes to stdout so it can be redirected into a
/// file and used as is; errors go to stderr.
fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    print!("{}", config.to_toml_string());
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
    init_logging(&config.log.level)?;
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
    runtime.block_on(serve(config))
}

/// Logs go to stderr. `RUST_LOG`, when set and non-empty, overrides `log.level` so a running
/// deployment can be debugged without editing its file.
fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            EnvFilter::try_new(&env).with_context(|| format!("invalid RUST_LOG {env:?}"))?
        }
        _ => EnvFilter::try_new(level).with_context(|| format!("invalid log.level {level:?}"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the handlers before binding, so a signal that arrives as soon as the ports are
    // open is handled as a shutdown and not by the default action (immediate termination).
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;

    let handle = Broker::start(config)
        .await
        .context("cannot start the broker")?;
    for addr in handle.local_addrs() {
        info!("listening on {addr}");
    }
    info!("starling {} started", env!("CARGO_PKG_VERSION"));

    let name = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    };
    info!("{name} received: shutting down (send it again to exit at once)");
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
