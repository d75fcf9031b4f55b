//! Unix-socket listeners (`bind = "unix:/path"`): binding the socket file with its mode and
//! owner, replacing a stale file left by a broker that crashed (but never a live one), and
//! removing the file again at clean shutdown.
//!
//! Order matters for safety: the socket is bound, then chmod/chown'ed, and only then listens, so
//! no client can connect while the file still has the umask's permissions.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixSocket};

use crate::config::ListenerConfig;

/// Why a unix-socket listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    /// Another process answers on the socket: a broker is running there already.
    #[error("{}: another process is listening on this socket (is a broker already running?)",
        path.display())]
    InUse { path: PathBuf },
    /// Something that is not a socket is in the way; it is never removed.
    #[error("{}: the path exists and is not a socket; remove it or choose another path",
        path.display())]
    NotASocket { path: PathBuf },
    /// `owner` or `group` names nobody.
    #[error("{what} {name:?}: no such {what} on this system")]
    UnknownId { what: &'static str, name: String },
    /// chown failed, usually for lack of privileges.
    #[error("{}: cannot change the owner to {owner}:{group}: {source} (changing the owner \
        needs root or CAP_CHOWN; changing the group needs membership of it)", path.display())]
    Chown {
        path: PathBuf,
        owner: String,
        group: String,
        source: io::Error,
    },
    /// Any other failure, with the step that failed.
    #[error("{}: {step}: {source}", path.display())]
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
}

/// A bound unix socket and the identity of its file, so that shutdown removes the file only if
/// it is still the one this broker created.
#[derive(Debug)]
pub struct BoundUnix {
    /// The listening socket.
    pub listener: UnixListener,
    /// The socket file's path.
    pub path: PathBuf,
    /// (device, inode) of the socket file as bound.
    id: (u64, u64),
}

impl BoundUnix {
    /// Removes the socket file if it is still ours (a later broker may have replaced it).
    pub fn remove_file(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot remove the unix socket file");
                }
            }
            _ => {}
        }
    }
}

/// Binds listener `l`'s unix socket at `path`: clears a stale file, applies `mode`, `owner`
/// and `group`, then listens with `l.backlog`.
pub fn bind(path: &Path, l: &ListenerConfig) -> Result<BoundUnix, UnixBindError> {
    let io_err = |step| {
        move |source| UnixBindError::Io {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    // Resolved before touching the file system, so a typo changes nothing.
    let uid = l.owner.as_deref().map(|o| resolve(o, "user")).transpose()?;
    let gid = l
        .group
        .as_deref()
        .map(|g| resolve(g, "group"))
        .transpose()?;
    let mode = match &l.mode {
        Some(m) => Some(
            ListenerConfig::parse_mode(m).map_err(|why| UnixBindError::Io {
                path: path.to_path_buf(),
                step: "mode",
                source: io::Error::new(io::ErrorKind::InvalidInput, why),
            })?,
        ),
        None => None,
    };
    clear_stale(path)?;
    let socket = UnixSocket::new_stream().map_err(io_err("socket"))?;
    socket.bind(path).map_err(io_err("bind"))?;
    let configure = || -> Result<(), UnixBindError> {
        if let Some(mode) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod"))?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid).map_err(|source| UnixBindError::Chown {
                path: path.to_path_buf(),
                owner: l.owner.clone().unwrap_or_else(|| "-".into()),
                group: l.group.clone().unwrap_or_else(|| "-".into()),
                source,
            })?;
        }
        Ok(())
    };
    // A socket file we created and could not set up must not stay behind.
    if let Err(e) = configure() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    let meta = std::fs::symlink_metadata(path).map_err(io_err("stat"))?;
    let listener = socket.listen(l.backlog).map_err(io_err("listen"))?;
    Ok(BoundUnix {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

/// Makes room for the socket: nothing there is fine; a socket nobody answers on (a broker that
/// crashed) is removed; a socket with a live listener, or anything that is not a socket, stops
/// the start.
fn clear_stale(path: &Path) -> Result<(), UnixBindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(UnixBindError::Io {
                path: path.to_path_buf(),
                step: "stat",
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(UnixBindError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(UnixBindError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale unix socket file");
            std::fs::remove_file(path).map_err(|source| UnixBindError::Io {
                path: path.to_path_buf(),
                step: "remove the stale socket",
                source,
            })
        }
        Err(source) => Err(UnixBindError::Io {
            path: path.to_path_buf(),
            step: "check whether the existing socket is live",
            source,
        }),
    }
}

/// A user or group id: a number as is, else looked up by name (`what` is "user" or "group").
fn resolve(name: &str, what: &'static str) -> Result<u32, UnixBindError> {
    let name = name.trim();
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let unknown = || UnixBindError::UnknownId {
        what,
        name: name.to_owned(),
    };
    let found = if what == "user" {
        lookup_uid(name)
    } else {
        lookup_gid(name)
    };
    found.ok().flatten().ok_or_else(unknown)
}

/// Buffer for the passwd/group entry strings; entries larger than this are not found.
const ENTRY_BUF: usize = 16 * 1024;

/// The uid of user `name` (through NSS, like `id -u name`).
#[allow(unsafe_code)]
fn lookup_uid(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0 as libc::c_char; ENTRY_BUF];
    // SAFETY: an all-zero `passwd` is valid (null pointers, zero ids); getpwnam_r only writes it.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `buf` is writable
    // for `buf.len()` bytes, `entry` and `result` are writable and outlive the call.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(entry.pw_uid))
}

/// The gid of group `name` (through NSS, like `getent group name`).
#[allow(unsafe_code)]
fn lookup_gid(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0 as libc::c_char; ENTRY_BUF];
    // SAFETY: an all-zero `group` is valid (null pointers, zero id); getgrnam_r only writes it.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup_uid`.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(entry.gr_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_number_and_name() {
        assert_eq!(resolve("1234", "user").ok(), Some(1234));
        assert_eq!(resolve("root", "user").ok(), Some(0));
        assert_eq!(resolve("root", "group").ok(), Some(0));
        assert!(matches!(
            resolve("no-such-user-xyz", "user"),
            Err(UnixBindError::UnknownId { .. })
        ));
    }

    #[tokio::test]
    async fn stale_replaced_live_refused_file_kept_safe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = ListenerConfig {
            mode: Some("0600".into()),
            ..ListenerConfig::default()
        };
        let first = bind(&path, &l).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Live: refused, and the file is left alone.
        assert!(matches!(bind(&path, &l), Err(UnixBindError::InUse { .. })));
        assert!(path.exists());
        // Stale: the listener is gone, the file stays (as after a crash); it is replaced.
        drop(first);
        assert!(path.exists());
        let second = bind(&path, &l).unwrap();
        second.remove_file();
        assert!(!path.exists());
        // Not a socket: never removed.
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(
            bind(&path, &l),
            Err(UnixBindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
