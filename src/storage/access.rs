//! Telling a permission problem from a damaged store: when the broker may not write its store
//! directory (a Docker bind mount owned by another user, for one), the error names the
//! directory, its owner and the user the broker runs as, and does not advise moving the store
//! aside (it is healthy).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::error::OpenError;

/// The text of the I/O permission error that is `e` or one of its causes, if there is one.
pub(crate) fn permission_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::PermissionDenied {
                return Some(io.to_string());
            }
        }
        cause = c.source();
    }
    None
}

/// [`OpenError::NotWritable`] for `dir`, with `cause`: names the nearest existing directory
/// (the store directory, or the parent it could not be created in), its owner and mode, and
/// the user this process runs as.
pub(crate) fn not_writable(dir: &Path, cause: String) -> OpenError {
    let existing = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .unwrap_or(Path::new("."));
    let path = std::path::absolute(existing).unwrap_or_else(|_| existing.to_path_buf());
    let meta = std::fs::metadata(&path).ok();
    OpenError::NotWritable {
        dir: Arc::from(path),
        store: Arc::from(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())),
        cause: Arc::from(cause),
        owner: meta.as_ref().map(|m| Account::of(m.uid())),
        mode: meta.as_ref().map(|m| m.mode() & 0o7777),
        user: effective_uid().map(Account::of),
    }
}

/// A user id and, when `/etc/passwd` lists it, its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The numeric user id.
    pub uid: u32,
    /// The user name, if known.
    pub name: Option<String>,
}

impl Account {
    fn of(uid: u32) -> Account {
        Account {
            uid,
            name: user_name(uid),
        }
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "user {name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// The effective user id, from `/proc/self/status` (no `unsafe` call needed); None when it
/// cannot be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The name `/etc/passwd` gives `uid`, if any.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// The advice that ends a [`OpenError::NotWritable`] message. A command it suggests only
/// ever changes the store directory: when that is missing and its parent (`existing`) is
/// not writable, the parent is likely a system directory (`/` when a unit without
/// `WorkingDirectory=` starts the broker with a relative `persistence.dir`), whose owner must
/// not change.
pub(crate) fn advice(store: &Path, existing: &Path, user: Option<&Account>) -> String {
    let who = match user.and_then(|u| u.name.clone()) {
        Some(name) => name,
        None => user.map_or("<broker user>".to_owned(), |u| u.uid.to_string()),
    };
    let store = store.display();
    let fix = if store.to_string() == existing.display().to_string() {
        format!("give that user write access (e.g. `chown -R {who} {store}`)")
    } else {
        format!(
            "create the store directory for that user (e.g. as root: `mkdir -p {store} && \
             chown {who} {store}`)"
        )
    };
    format!(
        "{fix}, run the broker as the directory's owner, or set persistence.dir to a \
         directory it may write (a relative one is resolved against the working directory). \
         The store itself is not damaged: do not reset it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_found_in_the_cause_chain() {
        let denied = || io::Error::from_raw_os_error(13);
        let text = denied().to_string();
        assert_eq!(permission_error(&denied()), Some(text.clone()));
        assert_eq!(permission_error(&fjall::Error::Io(denied())), Some(text));
        let other = fjall::Error::Io(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(permission_error(&other), None);
        assert_eq!(permission_error(&fjall::Error::Unrecoverable), None);
    }

    #[test]
    fn not_writable_names_the_directory_its_owner_and_the_broker_user() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("missing/store");
        let e = not_writable(&dir, "Permission denied (os error 13)".into());
        let text = e.to_string();
        let me = effective_uid().unwrap();
        assert!(text.contains(&tmp.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("{} is owned by", tmp.path().display())),
            "names the existing parent's owner: {text}"
        );
        assert!(text.contains(&format!("uid {me})")), "{text}");
        assert!(
            text.contains("owned by") && text.contains("runs as"),
            "{text}"
        );
        assert!(text.contains("Permission denied"), "{text}");
        assert!(!text.contains("store reset"), "{text}");
        // h11 M4: the advice changes only the store directory, never its parent.
        assert!(!text.contains("chown -R"), "{text}");
        assert!(
            text.contains(&format!("mkdir -p {}", dir.display())),
            "{text}"
        );
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
