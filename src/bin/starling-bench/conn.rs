//! The `conn` scenario: open many idle connections (plain or, with `--tls`, TLS with session
//! resumption), hold them, then prove they are all still alive with one PINGREQ each.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::os::{self, now_ns, CpuMark, RssSampler};
use crate::report::Json;
use crate::tls::TlsClient;
use crate::wire::{self, In};

pub struct ConnSettings {
    pub target: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub keepalive: u16,
    pub concurrency: usize,
    pub broker_pid: Option<u32>,
    pub run: String,
    pub clients: usize,
    pub hold: Duration,
    pub connect_timeout: Duration,
    pub ping_timeout: Duration,
    /// TLS on every connection (`--tls`).
    pub tls: Option<TlsClient>,
}

/// A connected client's byte stream, TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A successful connect: when its CONNACK arrived and whether its TLS handshake resumed.
struct Connected {
    at_ns: u64,
    resumed: bool,
}

/// TCP connect, TLS handshake (with `--tls`), CONNECT and CONNACK.
async fn open(
    s: &ConnSettings,
    source: Option<IpAddr>,
    id: &str,
) -> anyhow::Result<(Box<dyn Io>, bool)> {
    let tcp = wire::tcp(s.target, source).await?;
    let (mut stream, resumed): (Box<dyn Io>, bool) = match &s.tls {
        Some(tls) => {
            let (t, resumed) = tls.handshake(tcp).await?;
            (Box::new(t), resumed)
        }
        None => (Box::new(tcp), false),
    };
    // An idle client expects nothing after CONNACK: the leftover bytes are dropped.
    wire::mqtt_connect(&mut stream, id, s.keepalive, true).await?;
    Ok((stream, resumed))
}

enum End {
    /// Answered the final PINGREQ.
    Held,
    /// The broker closed it (or it failed) while idle.
    ClosedEarly,
    /// No PINGRESP within the ping timeout.
    Silent,
    /// Never connected.
    NotConnected,
}

/// One idle client: connect, report, keep alive until `check`, then PINGREQ and wait.
async fn client(
    i: usize,
    s: Arc<ConnSettings>,
    sem: Arc<Semaphore>,
    connected: mpsc::UnboundedSender<Result<Connected, String>>,
    check: CancellationToken,
) -> End {
    let id = format!("bench-{}-conn-{i}", s.run);
    let source = (!s.sources.is_empty()).then(|| s.sources[i % s.sources.len()]);
    let conn = {
        let Ok(_permit) = sem.acquire().await else {
            return End::NotConnected;
        };
        tokio::time::timeout(s.connect_timeout, open(&s, source, &id)).await
    };
    let mut stream = match conn {
        Ok(Ok((stream, resumed))) => {
            let _ = connected.send(Ok(Connected {
                at_ns: now_ns(),
                resumed,
            }));
            stream
        }
        Ok(Err(e)) => {
            let _ = connected.send(Err(format!("{id}: {e:#}")));
            return End::NotConnected;
        }
        Err(_) => {
            let _ = connected.send(Err(format!("{id}: no CONNACK in {:?}", s.connect_timeout)));
            return End::NotConnected;
        }
    };
    drop(connected);
    let mut buf = [0u8; 64];
    let mut have = 0usize;
    let ping_every = if s.keepalive > 0 {
        Duration::from_secs(u64::from(s.keepalive)) / 2
    } else {
        Duration::from_secs(86_400 * 365)
    };
    // Idle: keep-alive pings only, until the final check.
    loop {
        tokio::select! {
            () = check.cancelled() => break,
            r = stream.read(&mut buf[have..]) => match r {
                Ok(0) | Err(_) => return End::ClosedEarly,
                Ok(n) => have = drop_pingresps(&mut buf, have + n),
            },
            () = tokio::time::sleep(ping_every) => {
                if write(&mut stream, &wire::PINGREQ).await.is_err() {
                    return End::ClosedEarly;
                }
            }
        }
    }
    // Earlier PINGRESPs were consumed above, so the next one answers this PINGREQ.
    if write(&mut stream, &wire::PINGREQ).await.is_err() {
        return End::ClosedEarly;
    }
    let answered = tokio::time::timeout(s.ping_timeout, async {
        loop {
            let n = stream.read(&mut buf[have..]).await?;
            if n == 0 {
                bail!("closed");
            }
            let mut off = 0;
            while let Some((p, used)) = wire::parse(&buf[off..have + n])? {
                off += used;
                if matches!(p, In::PingResp) {
                    return anyhow::Ok(());
                }
            }
            buf.copy_within(off..have + n, 0);
            have = have + n - off;
        }
    })
    .await;
    let _ = write(&mut stream, &wire::DISCONNECT).await;
    match answered {
        Ok(Ok(())) => End::Held,
        Ok(Err(_)) => End::ClosedEarly,
        Err(_) => End::Silent,
    }
}

/// Writes and flushes (TLS holds written bytes until flushed).
async fn write(stream: &mut Box<dyn Io>, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Consumes whole packets at the front of `buf[..len]`; returns the bytes left.
fn drop_pingresps(buf: &mut [u8], len: usize) -> usize {
    let mut off = 0;
    while let Ok(Some((_, used))) = wire::parse(&buf[off..len]) {
        off += used;
    }
    buf.copy_within(off..len, 0);
    if len - off == buf.len() {
        // A packet larger than an idle client ever gets: forget it.
        return 0;
    }
    len - off
}

pub async fn run(s: ConnSettings, label: &str) -> anyhow::Result<Json> {
    let pid_str = s.broker_pid.map(|p| p.to_string());
    if let Some(p) = &pid_str {
        if os::memory(p).is_none() {
            bail!("--broker-pid {p}: no such process (cannot read /proc/{p}/status)");
        }
    }
    let rss_before = pid_str.as_deref().and_then(os::memory).map(|m| m.0);
    let sampler = s.broker_pid.map(RssSampler::start);
    let s = Arc::new(s);
    let sem = Arc::new(Semaphore::new(s.concurrency.max(1)));
    let check = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cpu_start = CpuMark::take(s.broker_pid);
    let t0 = now_ns();
    let tasks: Vec<_> = (0..s.clients)
        .map(|i| tokio::spawn(client(i, s.clone(), sem.clone(), tx.clone(), check.clone())))
        .collect();
    drop(tx);
    let (mut ok, mut failed, mut last_ok, mut resumed) = (0u64, 0u64, t0, 0u64);
    let mut errors = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Ok(c) => {
                ok += 1;
                resumed += u64::from(c.resumed);
                last_ok = last_ok.max(c.at_ns);
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
        }
    }
    let connect_s = (last_ok - t0) as f64 / 1e9;
    let cpu_connected = CpuMark::take(s.broker_pid);
    for e in &errors {
        eprintln!("error: {e}");
    }
    if failed > errors.len() as u64 {
        eprintln!("error: ... {} connections failed in all", failed);
    }

    let cpu0 = CpuMark::take(s.broker_pid);
    tokio::time::sleep(s.hold).await;
    let cpu1 = CpuMark::take(s.broker_pid);
    let mem_after = pid_str.as_deref().and_then(os::memory);
    let rss_peak = sampler.as_ref().map(|s| s.peak());
    drop(sampler);
    check.cancel();
    let (mut held, mut closed, mut silent) = (0u64, 0u64, 0u64);
    for t in tasks {
        match t.await.context("client task panicked")? {
            End::Held => held += 1,
            End::ClosedEarly => closed += 1,
            End::Silent => silent += 1,
            End::NotConnected => {}
        }
    }

    let mut j = Json::new();
    j.str("scenario", "conn")
        .str("label", label)
        .str("run", &s.run)
        .str("target", &s.target.to_string())
        .int("clients", s.clients as u64)
        .int("source_ips", s.sources.len().max(1) as u64)
        .int("keepalive_s", u64::from(s.keepalive))
        .int("concurrency", s.concurrency as u64)
        .str("transport", if s.tls.is_some() { "tls" } else { "tcp" })
        .int("connected", ok)
        .int("failed", failed)
        .num("connect_s", connect_s)
        .num(
            "connect_rate",
            if connect_s > 0.0 {
                ok as f64 / connect_s
            } else {
                0.0
            },
        )
        .num("hold_s", s.hold.as_secs_f64())
        .int("held", held)
        .int("closed_early", closed)
        .int("no_pingresp", silent);
    if s.tls.is_some() {
        j.int("tls_resumed", resumed);
    }
    // CPU while connecting, in % of one core: a bench near 100% per thread is the bottleneck.
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if connect_s > 0.0 => Some((b - a) / connect_s * 100.0),
        _ => None,
    };
    // The same per connection, in µs: steadier than the rate on a busy machine.
    let per_connect = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a) / ok as f64 * 1e6),
        _ => None,
    };
    for (pct_key, us_key, a, b) in [
        (
            "broker_cpu_pct_connect",
            "broker_cpu_us_per_connect",
            cpu_start.broker,
            cpu_connected.broker,
        ),
        (
            "bench_cpu_pct_connect",
            "bench_cpu_us_per_connect",
            cpu_start.bench,
            cpu_connected.bench,
        ),
    ] {
        if let Some(p) = pct(a, b) {
            j.num(pct_key, p);
        }
        if let Some(us) = per_connect(a, b) {
            j.num(us_key, us);
        }
    }
    if let (Some(before), Some((after, _))) = (rss_before, mem_after) {
        if ok > 0 {
            j.num(
                "broker_bytes_per_conn",
                (after as f64 - before as f64) / ok as f64,
            );
        }
    }
    crate::report::add_cpu_mem(
        &mut j,
        s.broker_pid,
        cpu0,
        cpu1,
        s.hold.as_secs_f64(),
        rss_before,
        mem_after,
        rss_peak,
        0,
    );
    j.int("errors", failed + closed + silent);
    Ok(j)
}
