//! `starling dynsec init FILE ADMIN_USER`: creates a dynamic-security file, like
//! `mosquitto_ctrl dynsec init`: one admin client in the `admin` role, which may use the
//! control API (`$CONTROL/dynamic-security/v1`, e.g. through `mosquitto_ctrl`) and read every
//! topic, and Mosquitto's default access. The password is read like `starling passwd` reads
//! it (twice from a terminal, else the first line of standard input). An existing file is never
//! overwritten. The file is written atomically with mode 0600 (it holds password hashes).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use starling::auth::dynsec::DynSec;
use starling::auth::password::DEFAULT_ITERATIONS;

/// `starling dynsec ...`.
#[derive(Debug, Subcommand)]
pub enum DynsecCommand {
    /// Create a dynamic-security file with an admin client (like `mosquitto_ctrl dynsec
    /// init`).
    Init(InitArgs),
}

/// Arguments of `starling dynsec init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The file to create (auth.dynamic_security); it must not exist.
    file: PathBuf,
    /// The admin client's username.
    admin_user: String,
    /// PBKDF2 iterations for the admin's password hash.
    #[arg(
        short = 'I',
        value_name = "ITERATIONS",
        default_value_t = DEFAULT_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    iterations: u32,
}

/// Runs `starling dynsec ...`.
pub fn run(cmd: DynsecCommand) -> anyhow::Result<()> {
    match cmd {
        DynsecCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.admin_user.is_empty() {
        bail!("the admin username must not be empty");
    }
    if args.file.exists() {
        bail!(
            "{} already exists; not overwriting it (delete it first to start afresh)",
            args.file.display()
        );
    }
    let password = crate::passwd::read_password()?;
    crate::passwd::check_password(&password)?;
    let d = DynSec::with_admin(&args.admin_user, password.as_bytes(), args.iterations)?;
    d.save(&args.file)
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    eprintln!(
        "The client '{}' has been created in the file '{}'.\n\
         It may administer dynamic security (e.g. with mosquitto_ctrl) and read every topic,\n\
         but not publish to normal topics: create application clients and roles for that.",
        args.admin_user,
        args.file.display()
    );
    Ok(())
}
