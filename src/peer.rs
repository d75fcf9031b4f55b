//! Who is on the other end of a connection: a TCP address (the socket's peer, or the client
//! address a trusted proxy reported in a PROXY header) or a unix-socket peer (the listener's path
//! and the peer process's user id), or a bridge's in-process local end. Logs, `$SYS`, the login slowdown and the admin listing all
//! take the client's identity from here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::slowdown::SlowdownKey;

/// The client's address, as shown in logs and used for per-address state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP client: the socket's peer or, behind a PROXY-protocol listener, the client the
    /// proxy reported.
    Tcp(SocketAddr),
    /// A client of a unix-socket listener. Boxed behind an `Arc` so a connection's copy is one
    /// pointer and cloning it allocates nothing.
    Unix(Arc<UnixPeer>),
    /// The local end of a bridge (`[[bridges]]`), served in-process: its name.
    Bridge(Arc<str>),
}

/// A unix-socket client: which socket, and as which user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixPeer {
    /// The listener's socket path (the client's own end is unnamed).
    pub path: PathBuf,
    /// The peer process's user id (SO_PEERCRED); `None` if the kernel did not say.
    pub uid: Option<u32>,
}

impl PeerAddr {
    /// A unix-socket peer on `path` with user id `uid`.
    pub fn unix(path: &Path, uid: Option<u32>) -> PeerAddr {
        PeerAddr::Unix(Arc::new(UnixPeer {
            path: path.to_path_buf(),
            uid,
        }))
    }

    /// The IP address, for TCP peers.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            PeerAddr::Tcp(a) => Some(a.ip()),
            PeerAddr::Unix(_) | PeerAddr::Bridge(_) => None,
        }
    }

    /// What the login slowdown tracks this peer by: its address, or for a unix-socket peer its
    /// user id. `None` (not tracked) only for a unix peer whose uid the kernel did not give.
    pub fn slowdown_key(&self) -> Option<SlowdownKey> {
        match self {
            PeerAddr::Tcp(a) => Some(SlowdownKey::Ip(a.ip())),
            PeerAddr::Unix(u) => u.uid.map(SlowdownKey::Uid),
            PeerAddr::Bridge(_) => None,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        PeerAddr::Tcp(a)
    }
}

impl fmt::Display for PeerAddr {
    /// `192.0.2.1:51234`, `[2001:db8::1]:51234`, or `unix:/run/starling.sock,uid=1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => a.fmt(f),
            PeerAddr::Bridge(name) => write!(f, "bridge:{name}"),
            PeerAddr::Unix(u) => {
                write!(f, "unix:{}", u.path.display())?;
                match u.uid {
                    Some(uid) => write!(f, ",uid={uid}"),
                    None => f.write_str(",uid=unknown"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_keys() {
        let tcp = PeerAddr::from(SocketAddr::from(([192, 0, 2, 1], 5000)));
        assert_eq!(tcp.to_string(), "192.0.2.1:5000");
        assert_eq!(tcp.ip(), Some(IpAddr::from([192, 0, 2, 1])));
        let unix = PeerAddr::unix(Path::new("/run/s.sock"), Some(1000));
        assert_eq!(unix.to_string(), "unix:/run/s.sock,uid=1000");
        assert_eq!(unix.ip(), None);
        assert_eq!(unix.slowdown_key(), Some(SlowdownKey::Uid(1000)));
        assert_eq!(PeerAddr::unix(Path::new("/s"), None).slowdown_key(), None);
    }
}
