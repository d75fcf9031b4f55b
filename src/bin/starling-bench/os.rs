//! The few operating-system facts the bench needs: a system-wide monotonic clock (so latency is
//! meaningful between two bench processes), the open-file limit, and a broker's CPU time and
//! memory from `/proc`.

use std::time::{Duration, Instant};

/// Nanoseconds of `CLOCK_MONOTONIC`: the same clock in every process on the machine, so a
/// timestamp written by one bench process can be compared by another (`pub` + `sub`).
#[allow(unsafe_code)]
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, and
    // clock_gettime only writes through the pointer it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Maps `now_ns()` values to tokio `Instant`s (both are CLOCK_MONOTONIC, captured together once).
#[derive(Clone, Copy)]
pub struct Clock {
    base_instant: Instant,
    base_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base_instant: Instant::now(),
            base_ns: now_ns(),
        }
    }

    pub fn instant(&self, ns: u64) -> tokio::time::Instant {
        let i = if ns >= self.base_ns {
            self.base_instant + Duration::from_nanos(ns - self.base_ns)
        } else {
            self.base_instant
                .checked_sub(Duration::from_nanos(self.base_ns - ns))
                .unwrap_or(self.base_instant)
        };
        tokio::time::Instant::from_std(i)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the bench holds one socket per client).
#[allow(unsafe_code)]
pub fn raise_nofile() -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit; getrlimit writes only into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a fully initialised rlimit read above; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Clock ticks per second of `/proc/*/stat` times.
#[allow(unsafe_code)]
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds. `pid` "self" reads this process.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck())
}

/// (VmRSS, VmHWM) of a process in bytes.
pub fn memory(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples a broker's RSS every 100 ms in the background and keeps the maximum.
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            let pid = pid.to_string();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Some((rss, _)) = memory(&pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        RssSampler { peak, task }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU seconds of the broker (if watched) and of this process, read at one instant.
#[derive(Clone, Copy, Default)]
pub struct CpuMark {
    pub broker: Option<f64>,
    pub bench: Option<f64>,
}

impl CpuMark {
    pub fn take(broker_pid: Option<u32>) -> CpuMark {
        CpuMark {
            broker: broker_pid.and_then(|p| cpu_seconds(&p.to_string())),
            bench: cpu_seconds("self"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").is_some());
        let (rss, hwm) = memory("self").expect("status");
        assert!(rss > 0 && hwm >= rss / 2);
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
