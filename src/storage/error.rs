//! Why a store operation failed: [`StoreError`] and the typed details it carries.
//!
//! Every error is `Clone`, because the writer hands one failure to every waiter of a group;
//! the engine's and the OS's errors (not `Clone`) are kept behind an `Arc`. Each message says
//! everything there is to say, its cause included, so none of these types reports a `source`:
//! `{:#}` (anyhow's chain) prints every cause once.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FORMAT_VERSION, MAX_KEY_LEN};

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// An error from the storage engine. The store is poisoned afterwards.
    #[error("storage I/O error: {0}")]
    Engine(Arc<fjall::Error>),
    /// An I/O error outside the engine (a test store's failure, for one). Fatal like
    /// [`StoreError::Engine`].
    #[error("storage I/O error: {0}")]
    Io(Arc<io::Error>),
    /// The writer thread could not be started; nothing can be written.
    #[error("storage I/O error: cannot start the store writer thread: {0}")]
    WriterThread(Arc<io::Error>),
    /// A read of the store on a blocking thread did not finish (it panicked or was cancelled).
    #[error("storage read failed: {0}")]
    ReadTask(Arc<tokio::task::JoinError>),
    /// A previous write or fsync failed; the store refuses further writes.
    #[error("the store refuses writes after an earlier failure ({0}); restart the broker")]
    Poisoned(PoisonCause),
    /// A record that does not decode.
    #[error("corrupt record in `{keyspace}` at key {key}: {reason}")]
    Corrupt {
        keyspace: &'static str,
        /// The key, printable (see `encoding::key_display`).
        key: String,
        /// What the decoder found wrong.
        reason: String,
    },
    /// A key or value over the engine's limits; the batch was not written.
    #[error("cannot store {0}")]
    TooLarge(TooLarge),
    /// The store could not be opened (or moved aside).
    #[error("{0}")]
    Open(OpenError),
    /// The writer was shut down.
    #[error("the store writer has shut down")]
    Closed,
}

impl StoreError {
    /// True when the store can take no more writes: I/O failures and poisoning. False for
    /// errors that concern one batch only (too large, a corrupt record met while planning) or
    /// one read.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Engine(_)
                | StoreError::Io(_)
                | StoreError::WriterThread(_)
                | StoreError::Poisoned(_)
                | StoreError::Closed
                | StoreError::Open(_)
        )
    }
}

/// The engine's own poisoning is reported as [`StoreError::Poisoned`]; every other engine
/// error as [`StoreError::Engine`].
impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> StoreError {
        match e {
            fjall::Error::Poisoned => StoreError::Poisoned(PoisonCause::Engine),
            e => StoreError::Engine(Arc::new(e)),
        }
    }
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> StoreError {
        StoreError::Open(e)
    }
}

/// What poisoned a store.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PoisonCause {
    /// The engine refused the write itself, after a failure it saw earlier.
    #[error("the storage engine reported an earlier failure")]
    Engine,
    /// The failed write or fsync.
    #[error("{0}")]
    Earlier(Arc<StoreError>),
}

/// What was over the engine's limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// A value longer than `u32::MAX` bytes.
    #[error("a {len} byte record in `{keyspace}`")]
    Record { keyspace: &'static str, len: usize },
    /// A key longer than [`MAX_KEY_LEN`].
    #[error(
        "a {len} byte key in `{keyspace}` (at most {max}: client id or topic too long)",
        max = MAX_KEY_LEN
    )]
    Key { keyspace: &'static str, len: usize },
}

/// Why a store could not be opened, or moved aside. Messages about a store that exists but
/// cannot be used end with how to inspect it or move it aside.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OpenError {
    /// The store directory could not be created.
    #[error("cannot create the store directory {}: {cause}", .dir.display())]
    CreateDir { dir: PathBuf, cause: Arc<io::Error> },
    /// The directory cannot be read (it does not exist, for one).
    #[error("no store at {}: {cause}", .dir.display())]
    Missing { dir: PathBuf, cause: Arc<io::Error> },
    /// The broker may not write the store directory (or create it): a permission problem, not
    /// a damaged store, so the message names the owner and the broker's user instead of
    /// advising `store reset`.
    #[error(
        "the broker may not write its message store {} ({cause}): {} is owned by {}{}, and \
         the broker runs as {}; {}",
        .store.display(),
        .dir.display(),
        .owner.as_ref().map_or("an unknown user".to_owned(), ToString::to_string),
        .mode.map_or(String::new(), |m| format!(" with mode {m:04o}")),
        .user.as_ref().map_or("an unknown user".to_owned(), ToString::to_string),
        super::access::advice(.store, .dir, .user.as_ref())
    )]
    NotWritable {
        /// The nearest existing directory: the store directory, or the parent it could not be
        /// created in. This and `store` are shared, like `cause`: the error stays small
        /// enough to return by value.
        dir: Arc<Path>,
        /// The store directory itself (absolute).
        store: Arc<Path>,
        /// The OS error, as text.
        cause: Arc<str>,
        /// The directory's owner, when its metadata can be read.
        owner: Option<super::access::Account>,
        /// The directory's permission bits.
        mode: Option<u32>,
        /// The user the broker runs as (effective uid).
        user: Option<super::access::Account>,
    },
    /// `check`/`dump` on an empty directory.
    #[error("no store at {}: the directory is empty", .dir.display())]
    Empty { dir: PathBuf },
    /// Another process holds the store open (fjall's lock).
    #[error(
        "the message store in {} is in use by another process (is another starling running \
         with the same persistence.dir?)",
        .dir.display()
    )]
    InUse { dir: PathBuf },
    /// The store exists but the engine cannot open it, or its format version is unusable.
    #[error("cannot open the message store in {}: {problem}. {}", .dir.display(), hint(.dir))]
    Damaged { dir: PathBuf, problem: Damage },
    /// Written by a newer starling.
    #[error(
        "the message store in {} has format version {version}, newer than the version \
         {current} this starling understands: run a newer starling, or {}",
        .dir.display(), hint(.dir), current = FORMAT_VERSION
    )]
    Newer { dir: PathBuf, version: u32 },
    /// Opened, but a record needed at start does not decode.
    #[error("cannot load the message store in {}: {cause}. {}", .dir.display(), hint(.dir))]
    Unloadable {
        dir: PathBuf,
        cause: Box<StoreError>,
    },
    /// `reset` on something that is not a directory.
    #[error("{} is not a directory", .dir.display())]
    NotADirectory { dir: PathBuf },
    /// `reset` on a path without a last component (`/`, `..`).
    #[error("cannot move {} aside: name the store's own directory", .dir.display())]
    Unnamed { dir: PathBuf },
    /// `reset`: the lock file cannot be opened.
    #[error("cannot open {}: {cause}", .path.display())]
    LockFile {
        path: PathBuf,
        cause: Arc<io::Error>,
    },
    /// `reset`: the lock file cannot be locked.
    #[error("cannot lock {}: {cause}", .path.display())]
    Lock {
        path: PathBuf,
        cause: Arc<io::Error>,
    },
    /// `reset` while a process holds the store open.
    #[error(
        "the store in {} is in use by a running process (a starling broker?); stop it first",
        .dir.display()
    )]
    Running { dir: PathBuf },
    /// `reset`: the rename failed.
    #[error("cannot move {} to {}: {cause}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        cause: Arc<io::Error>,
    },
}

/// What is wrong with a store the engine cannot open ([`OpenError::Damaged`]).
#[derive(Clone, Debug, thiserror::Error)]
pub enum Damage {
    /// The engine's error.
    #[error("{0}")]
    Engine(Arc<fjall::Error>),
    /// The engine panicked while recovering the database.
    #[error("the storage engine failed while recovering it")]
    Recovery,
    /// A keyspace could not be opened.
    #[error("keyspace `{keyspace}`: {cause}")]
    Keyspace {
        keyspace: &'static str,
        cause: Arc<fjall::Error>,
    },
    /// The engine panicked while recovering a keyspace.
    #[error("keyspace `{keyspace}` could not be recovered")]
    KeyspaceRecovery { keyspace: &'static str },
    /// The format version record does not decode.
    #[error("unreadable format version: {reason}")]
    UnreadableVersion { reason: String },
    /// A format version older than this build's that it does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u32),
    /// Records without a format version: not a store this build wrote.
    #[error("it holds records in `{keyspace}` but no format version")]
    Unversioned { keyspace: &'static str },
    /// A new store's format version could not be written.
    #[error("cannot record the format version: {0}")]
    RecordVersion(Arc<fjall::Error>),
}

impl From<fjall::Error> for Damage {
    fn from(e: fjall::Error) -> Damage {
        Damage::Engine(Arc::new(e))
    }
}

/// What to tell a user whose store cannot be opened.
fn hint(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "inspect it with `starling store check --dir {d}` (or `dump`); to start with an empty \
         store, move it aside with `starling store reset --dir {d}` (renames it to \
         {d}.broken-<unix time>, deletes nothing)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are those of the stringly errors they replaced, word for word.
    #[test]
    fn messages_are_unchanged() {
        let dir = PathBuf::from("/d");
        let hint = "inspect it with `starling store check --dir /d` (or `dump`); to start with \
                    an empty store, move it aside with `starling store reset --dir /d` (renames \
                    it to /d.broken-<unix time>, deletes nothing)";
        let cases: Vec<(StoreError, String)> = vec![
            (
                fjall::Error::Poisoned.into(),
                "the store refuses writes after an earlier failure (the storage engine \
                 reported an earlier failure); restart the broker"
                    .into(),
            ),
            (
                fjall::Error::Unrecoverable.into(),
                "storage I/O error: FjallError: Unrecoverable".into(),
            ),
            (
                StoreError::Poisoned(PoisonCause::Earlier(Arc::new(
                    fjall::Error::Unrecoverable.into(),
                ))),
                "the store refuses writes after an earlier failure (storage I/O error: \
                 FjallError: Unrecoverable); restart the broker"
                    .into(),
            ),
            (
                StoreError::TooLarge(TooLarge::Key {
                    keyspace: "sessions",
                    len: 70000,
                }),
                "cannot store a 70000 byte key in `sessions` (at most 65535: client id or \
                 topic too long)"
                    .into(),
            ),
            (
                StoreError::TooLarge(TooLarge::Record {
                    keyspace: "msgs",
                    len: 5,
                }),
                "cannot store a 5 byte record in `msgs`".into(),
            ),
            (
                OpenError::Damaged {
                    dir: dir.clone(),
                    problem: Damage::Recovery,
                }
                .into(),
                format!(
                    "cannot open the message store in /d: the storage engine failed while \
                     recovering it. {hint}"
                ),
            ),
            (
                OpenError::Newer {
                    dir: dir.clone(),
                    version: 99,
                }
                .into(),
                format!(
                    "the message store in /d has format version 99, newer than the version \
                     {FORMAT_VERSION} this starling understands: run a newer starling, or {hint}"
                ),
            ),
            (
                OpenError::InUse { dir: dir.clone() }.into(),
                "the message store in /d is in use by another process (is another starling \
                 running with the same persistence.dir?)"
                    .into(),
            ),
            (
                OpenError::Empty { dir }.into(),
                "no store at /d: the directory is empty".into(),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
