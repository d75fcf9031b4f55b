//! Process resource limits the broker adjusts at start-up.

/// Raises the soft `RLIMIT_NOFILE` (open file descriptors) to the hard limit and returns the
/// soft limit now in force.
///
/// Why: every MQTT connection holds a socket, and distributions default the soft limit to 1024,
/// which would cap the broker far below `limits.max_connections`. The hard limit is the most an
/// unprivileged process may take, so raising to it needs no privileges. `RLIM_INFINITY` is
/// reported as `u64::MAX`.
#[allow(unsafe_code)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux but not on every Unix.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call; getrlimit only writes
    // into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit` that outlives the call; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_to_at_least_the_previous_limit_and_is_idempotent() {
        let first = raise_fd_limit().unwrap();
        assert!(first > 0);
        assert_eq!(raise_fd_limit().unwrap(), first);
    }
}
