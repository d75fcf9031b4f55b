//! `starling-bench`: an MQTT 3.1.1 load generator for Starling or any other broker (Mosquitto
//! included), in the spirit of emqtt-bench. Loopback only.
//!
//! # Scenarios
//! Each scenario is a subcommand: `conn` (many idle connections), `pub` (publishers only), `sub`
//! (subscribers fed by an outside publisher), `fanin` (N publishers → M subscribers), `fanout`
//! (1 publisher → N subscribers) and `p2p` (N independent publisher → subscriber pairs).
//!
//! # Measuring
//! Every payload starts with a 16-byte stamp: send time (`CLOCK_MONOTONIC` ns, the same clock in
//! every process, so a `pub` and a `sub` in two processes still measure latency), publisher id
//! and a per-publisher sequence number. Subscribers keep, per publisher, the next expected
//! sequence number: equal is fine, higher is a gap, lower a duplicate; after the drain,
//! `lost` is the number of acknowledged messages each subscriber should have had but has not.
//! Latency goes into a log-linear histogram (≤0.8% bucket width). A run is: connect everyone,
//! `--warmup` (not measured), `--duration` (measured: rates, latency of messages sent in it,
//! broker CPU), then `--drain` (publishers wait for their acks, subscribers for the rest).
//!
//! # Keeping the generator cheap
//! The bench must never be the bottleneck, so the per-message path does almost nothing:
//! - one task per client owning its socket (`TCP_NODELAY`), on a small multi-thread runtime
//!   (`--threads`, default 2);
//! - publishers copy a pre-encoded PUBLISH and patch 2 + 16 bytes; they fill their whole window
//!   (or whatever the `--rate` schedule has made due) into one buffer and write it with one
//!   syscall; one clock read per batch;
//! - `--rate` is an absolute schedule (message k is due at start + k/rate; a late publisher
//!   catches up in one batch), never a sleep per message;
//! - subscribers read up to 256 KiB at a time, frame packets in place (no allocation, no
//!   `Packet` values), stamp the whole read with one clock read and answer all of its QoS 1/2
//!   messages with one write;
//! - Starling's codec is used only for CONNECT, CONNACK, SUBSCRIBE and SUBACK.
//!
//! The report includes the bench's own CPU over the measured interval next to the broker's, so
//! a saturated generator is visible.

mod conn;
mod hist;
mod os;
mod report;
mod retained;
mod tls;
mod traffic;
mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::traffic::{Plan, Routing, Settings};

const AFTER_HELP: &str = "\
Every run prints a report; with --json it prints the report on stderr and exactly one JSON \
line on stdout holding every number of the report.

Examples:
  starling-bench conn --clients 10000 --broker-pid $(pidof starling)
  starling-bench p2p --pairs 100 --qos 1 --duration 10s
  starling-bench fanout --subs 100 --qos 1 --rate 1000
  starling-bench fanin --pubs 10 --subs 1 --qos 0 --json --label baseline
  starling-bench sub --subs 4 --topic 'bench/demo/in/+' &
  starling-bench pub --pubs 4 --run demo --rate 10000";

/// MQTT 3.1.1 load generator for Starling or any MQTT broker on this machine (loopback only).
#[derive(Parser)]
#[command(name = "starling-bench", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C idle connections: connect rate, how many survive, broker memory per connection.
    ///
    /// Connects --clients clients (--concurrency handshakes at a time) spread over source
    /// addresses 127.0.0.1..127.0.0.N (--source-ips) to go past one address's ephemeral ports;
    /// holds them idle for --duration with keep-alive; then sends one PINGREQ on each and counts
    /// the PINGRESPs. Reports CONNACK/s, held connections and, with --broker-pid, broker RSS
    /// growth per connection and broker CPU while idle.
    Conn(ConnArgs),
    /// N publishers, no subscribers: publish rate.
    ///
    /// Publishers on bench/<run>/in/<i>. Reports published msg/s (acknowledged ones at QoS
    /// 1/2).
    Pub(PubArgs),
    /// M subscribers fed by an outside publisher: delivered rate, order, latency.
    ///
    /// Subscribers on --topic, fed by a publisher outside this process (e.g. `starling-bench pub
    /// --run demo` with `--topic 'bench/demo/in/+'`). Latency, gaps and duplicates are measured
    /// when payloads carry bench stamps; other payloads are only counted.
    Sub(SubArgs),
    /// N publishers → M subscribers (each subscriber gets every publisher).
    ///
    /// Publishers on bench/<run>/in/<i>, subscribers on bench/<run>/in/+.
    Fanin(FaninArgs),
    /// 1 publisher → N subscribers on one topic.
    ///
    /// Everyone on bench/<run>/out; --pubs adds publishers on the same topic.
    Fanout(FanoutArgs),
    /// N pairs: publisher i → subscriber i.
    ///
    /// Pair i uses topic bench/<run>/p2p/<i>.
    P2p(P2pArgs),
    /// A large retained set: broker memory per retained message, then the rate at which one
    /// wildcard subscriber receives all of it.
    ///
    /// Loads --messages retained messages of --size bytes on bench/<run>/ret/<i>, reads broker
    /// RSS before and after (--broker-pid), then subscribes to bench/<run>/ret/# at --qos and
    /// counts until every message came or none came for --idle.
    Retained(RetainedArgs),
}

/// Options shared by every scenario.
#[derive(Args)]
struct Common {
    /// Broker host; must resolve to a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Broker process id: report its CPU (from /proc/PID/stat) over the measured interval and
    /// its RSS (VmRSS sampled every 100 ms, and VmHWM).
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Also print one JSON line with every reported number on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
    /// Free text copied into the report and the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// MQTT keep-alive in seconds (0 = off); clients send PINGREQ every half of it.
    #[arg(long, default_value_t = 60)]
    keepalive: u16,
    /// Spread clients over source addresses 127.0.0.1..127.0.0.N (IPv4 loopback targets
    /// only). Default: 1, or for `conn` one address per 25,000 clients.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    source_ips: Option<u8>,
    /// First source address: 127.0.0.N (with --source-ips). A run on addresses the previous
    /// run did not use finds no TIME_WAIT sockets of its own there, so back-to-back `conn` runs
    /// need not wait a minute for them to expire.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_from: u8,
    /// At most this many CONNECT handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Run id used in client ids (bench-<run>-<role>-<i>) and topics; default: random.
    #[arg(long)]
    run: Option<String>,
}

/// Options of the message scenarios.
#[derive(Args)]
struct Traffic {
    /// QoS of every PUBLISH and SUBSCRIBE (0, 1 or 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (min 16: send time ns, publisher id, sequence number; the rest is filler).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..=16_777_216))]
    size: u32,
    /// Measured interval, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Messages per second per publisher; 0 = as fast as the window (QoS 1/2) or the socket
    /// (QoS 0) allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most unacknowledged QoS 1/2 publishes per publisher (at QoS 0: publishes per write).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    window: u32,
    /// Publishing before the measured interval starts (not measured).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// After publishers stop: longest wait for outstanding acks and deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Subscribers connect with clean session 0 (persistent sessions), so a broker with
    /// persistence stores their QoS 1/2 messages. Client ids carry the run id, so every run
    /// starts with new sessions; they are left on the broker afterwards.
    #[arg(long)]
    persistent_subs: bool,
}

#[derive(Args)]
struct ConnArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long, short = 'c', default_value_t = 1000)]
    clients: usize,
    /// How long to hold the connections idle before checking them.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Longest wait for each CONNACK.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Longest wait for the final PINGRESPs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ping_timeout: Duration,
    /// TLS on every connection (the broker's `mqtts` listener at --port); the broker's
    /// certificate is checked against --cafile and --host.
    #[arg(long, requires = "cafile")]
    tls: bool,
    /// PEM bundle of the CA(s) the broker's certificate is checked against (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls")]
    cafile: Option<std::path::PathBuf>,
    /// With --tls: no session resumption (every handshake a full one). By default clients
    /// share one session cache and resume (TLS 1.3 tickets, TLS 1.2 ids or tickets).
    #[arg(long, requires = "tls")]
    no_resume: bool,
}

#[derive(Args)]
struct PubArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    traffic: Traffic,
    /// Publishers.
    #[arg(long, default_value_t = 10)]
    pubs: usize,
}

#[derive(Args)]
struct SubArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    traffic: Traffic,
    /// Subscribers.
    #[arg(long, default_value_t = 10)]
    subs: usize,
    /// Topic filter every subscriber subscribes to.
    #[arg(long, default_value = "bench/+/in/+")]
    topic: String,
}

#[derive(Args)]
struct FaninArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    traffic: Traffic,
    /// Publishers.
    #[arg(long, default_value_t = 10)]
    pubs: usize,
    /// Subscribers (each receives every publisher).
    #[arg(long, default_value_t = 1)]
    subs: usize,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    traffic: Traffic,
    /// Publishers (all on the same topic).
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    subs: usize,
}

#[derive(Args)]
struct P2pArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    traffic: Traffic,
    /// Publisher/subscriber pairs.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
}

#[derive(Args)]
struct RetainedArgs {
    #[command(flatten)]
    common: Common,
    /// Retained messages to load (one topic each).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Payload bytes of each.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    size: u32,
    /// QoS of the wildcard subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Stop reading when nothing came for this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    idle: Duration,
}

/// `10s`, `500ms`, `2m`, `1h`, `250us`, or a plain number of seconds (fractions allowed).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use us, ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The broker address, refusing anything that is not loopback.
fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let Some(addr) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
    else {
        bail!("{host} resolves to no address");
    };
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "refusing {host} ({}): starling-bench only targets loopback addresses",
            addr.ip()
        );
    }
    Ok(addr)
}

fn source_ips(target: SocketAddr, n: u8, from: u8) -> Vec<IpAddr> {
    if !target.is_ipv4() || (n <= 1 && from == 1) {
        return Vec::new();
    }
    (0..n.max(1))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, from.saturating_add(i).min(254))))
        .collect()
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finaliser: spread the bits.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    format!("{:06x}", x & 0xff_ffff)
}

fn traffic_settings(c: &Common, t: &Traffic, run: &str) -> anyhow::Result<Settings> {
    let target = resolve(&c.host, c.port)?;
    if !(t.rate >= 0.0 && t.rate.is_finite()) {
        bail!("--rate must be a finite number ≥ 0");
    }
    if t.duration.is_zero() {
        bail!("--duration must be > 0");
    }
    Ok(Settings {
        target,
        sources: source_ips(target, c.source_ips.unwrap_or(1), c.source_from),
        keepalive: c.keepalive,
        concurrency: c.concurrency,
        broker_pid: c.broker_pid,
        run: run.to_string(),
        qos: t.qos,
        size: t.size as usize,
        rate: t.rate,
        window: t.window,
        duration: t.duration,
        warmup: t.warmup,
        drain: t.drain,
        persistent_subs: t.persistent_subs,
    })
}

fn plan(scenario: &Scenario, run: &str) -> Option<Plan> {
    let topics = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    Some(match scenario {
        Scenario::Conn(_) | Scenario::Retained(_) => return None,
        Scenario::Pub(a) => Plan {
            scenario: "pub",
            pubs: a.pubs,
            subs: 0,
            routing: Routing::NoSubscribers,
            pub_topics: topics(a.pubs, &|i| format!("bench/{run}/in/{i}")),
            sub_filters: Vec::new(),
        },
        Scenario::Sub(a) => Plan {
            scenario: "sub",
            pubs: 0,
            subs: a.subs,
            routing: Routing::External,
            pub_topics: Vec::new(),
            sub_filters: topics(a.subs, &|_| a.topic.clone()),
        },
        Scenario::Fanin(a) => Plan {
            scenario: "fanin",
            pubs: a.pubs,
            subs: a.subs,
            routing: Routing::All,
            pub_topics: topics(a.pubs, &|i| format!("bench/{run}/in/{i}")),
            sub_filters: topics(a.subs, &|_| format!("bench/{run}/in/+")),
        },
        Scenario::Fanout(a) => Plan {
            scenario: "fanout",
            pubs: a.pubs,
            subs: a.subs,
            routing: Routing::All,
            pub_topics: topics(a.pubs, &|_| format!("bench/{run}/out")),
            sub_filters: topics(a.subs, &|_| format!("bench/{run}/out")),
        },
        Scenario::P2p(a) => Plan {
            scenario: "p2p",
            pubs: a.pairs,
            subs: a.pairs,
            routing: Routing::Pairwise,
            pub_topics: topics(a.pairs, &|i| format!("bench/{run}/p2p/{i}")),
            sub_filters: topics(a.pairs, &|i| format!("bench/{run}/p2p/{i}")),
        },
    })
}

async fn run(cli: Cli) -> anyhow::Result<report::Json> {
    let scenario = &cli.scenario;
    match scenario {
        Scenario::Conn(a) => {
            let c = &a.common;
            let target = resolve(&c.host, c.port)?;
            let auto = a.clients.div_ceil(25_000).clamp(1, 254) as u8;
            let run = c.run.clone().unwrap_or_else(run_id);
            let tls = match (&a.cafile, a.tls) {
                (Some(ca), true) => Some(tls::TlsClient::new(ca, &c.host, !a.no_resume)?),
                _ => None,
            };
            conn::run(
                conn::ConnSettings {
                    target,
                    sources: source_ips(target, c.source_ips.unwrap_or(auto), c.source_from),
                    keepalive: c.keepalive,
                    concurrency: c.concurrency,
                    broker_pid: c.broker_pid,
                    run,
                    clients: a.clients,
                    hold: a.duration,
                    connect_timeout: a.connect_timeout,
                    ping_timeout: a.ping_timeout,
                    tls,
                },
                &c.label,
            )
            .await
        }
        Scenario::Retained(a) => {
            let c = &a.common;
            retained::run(
                retained::RetainedSettings {
                    target: resolve(&c.host, c.port)?,
                    broker_pid: c.broker_pid,
                    run: c.run.clone().unwrap_or_else(run_id),
                    keepalive: c.keepalive,
                    messages: a.messages,
                    size: a.size as usize,
                    qos: a.qos,
                    idle: a.idle,
                },
                &c.label,
            )
            .await
        }
        Scenario::Pub(PubArgs {
            common, traffic, ..
        })
        | Scenario::Sub(SubArgs {
            common, traffic, ..
        })
        | Scenario::Fanin(FaninArgs {
            common, traffic, ..
        })
        | Scenario::Fanout(FanoutArgs {
            common, traffic, ..
        })
        | Scenario::P2p(P2pArgs {
            common, traffic, ..
        }) => {
            let run = common.run.clone().unwrap_or_else(run_id);
            let settings = traffic_settings(common, traffic, &run)?;
            let plan = plan(scenario, &run).ok_or_else(|| anyhow!("not a traffic scenario"))?;
            traffic::run(plan, settings, &common.label).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (threads, json) = match &cli.scenario {
        Scenario::Conn(a) => (a.common.threads, a.common.json),
        Scenario::Pub(a) => (a.common.threads, a.common.json),
        Scenario::Sub(a) => (a.common.threads, a.common.json),
        Scenario::Fanin(a) => (a.common.threads, a.common.json),
        Scenario::Fanout(a) => (a.common.threads, a.common.json),
        Scenario::P2p(a) => (a.common.threads, a.common.json),
        Scenario::Retained(a) => (a.common.threads, a.common.json),
    };
    if let Err(e) = os::raise_nofile() {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(threads))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(report) => {
            let text = report.to_text();
            if json {
                eprint!("{text}");
                println!("{}", report.to_line());
            } else {
                print!("{text}");
            }
            let failed = matches!(report.get("errors"), Some(report::Val::Int(n)) if *n > 0);
            if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn loopback_only() {
        assert!(resolve("127.0.0.1", 1883).is_ok());
        assert!(resolve("::1", 1883).is_ok());
        assert!(resolve("10.0.0.1", 1883).is_err());
        assert!(resolve("8.8.8.8", 1883).is_err());
        let v4 = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(source_ips(v4, 3, 1).len(), 3);
        assert_eq!(
            source_ips(v4, 2, 9),
            vec![
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10))
            ]
        );
        assert!(source_ips(v4, 1, 1).is_empty());
        assert!(source_ips("[::1]:1".parse().expect("addr"), 3, 1).is_empty());
    }
}
