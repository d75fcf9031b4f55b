//! Starling bridging to a real Mosquitto (`[[bridges]]` with Debian's `mosquitto` as the
//! remote broker): the topic lines cross each way with their prefixes and QoS and without
//! loops, QoS 1/2 messages published while Mosquitto is down wait in the bridge's session and
//! arrive once it is back (Mosquitto restarted with persistence), and Mosquitto publishes the
//! bridge's will (`0` on its state topic) when the link breaks, but not after a clean stop,
//! where the bridge says `0` itself. Each for MQTT 3.1.1 with `try_private` (Mosquitto then
//! treats Starling as a bridge: No Local and Retain As Published on its subscriptions) and
//! for MQTT 5 (where the bridge's own subscription options do that).
//!
//! Starling runs in this process, Mosquitto as a child process logging to stdout; the clients
//! are raw MQTT 3.1.1 connections on either side. Every wait is for an event (a message, the
//! bridge's `$SYS/broker/connection/site1/state`, a Mosquitto log line), never a sleep. Skipped
//! when `mosquitto` is not installed, a failure with STARLING_INTEROP=1.

mod common;
#[path = "bridges/support.rs"]
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use starling::config::Config;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Mosquitto, a relay the test can cut, and the two brokers' clients
// ---------------------------------------------------------------------------------------------

/// A running Mosquitto, logging everything to stdout (read through [`Proc`]).
struct Mosquitto {
    proc: Proc,
    pid: libc::pid_t,
    addr: SocketAddr,
}

impl Mosquitto {
    /// Starts `bin` listening on `port` with `extra` configuration lines (its config file in
    /// `dir`); returns once it logs that it runs.
    async fn start(bin: &Path, dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             log_dest stdout\nlog_type all\n{extra}"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        // The shell prints its pid and becomes Mosquitto (exec keeps the pid), so the test can
        // send it SIGTERM; stdbuf makes its log lines arrive as they are written.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo "pid $$"; exec stdbuf -oL "$0" -c "$1""#)
            .arg(bin)
            .arg(&conf);
        let mut proc = Proc::spawn("mosquitto", &mut cmd);
        let line = proc.wait_line("'pid N'", |l| l.starts_with("pid ")).await;
        let pid = line["pid ".len()..].parse().expect("the shell's pid");
        proc.wait_line("'mosquitto version ... running'", |l| {
            l.ends_with(" running")
        })
        .await;
        Mosquitto {
            proc,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Stops Mosquitto the way an init system does (SIGTERM): it closes every connection,
    /// saves its database (with `persistence true`) and exits.
    async fn terminate(&mut self) {
        // SAFETY: kill(2) takes no pointers; `pid` is our child, not reaped yet (Proc reaps
        // it only on drop or exit_within, below).
        let rc = unsafe { libc::kill(self.pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        self.log("terminating").await;
        let status = self.proc.exit_within(WAIT).await;
        assert!(status.success(), "{status}\n{}", self.proc.transcript());
    }

    /// Waits for a log line containing `text`.
    async fn log(&mut self, text: &str) -> String {
        self.proc
            .wait_line(&format!("{text:?}"), |l| l.contains(text))
            .await
    }
}

/// A TCP relay between the bridge and Mosquitto whose connections the test can cut: both
/// ends then see the network go away, with no DISCONNECT, which is what makes Mosquitto
/// publish the bridge's will.
struct Relay {
    addr: SocketAddr,
    /// Whether new connections are refused (closed at once), and the relays running.
    state: Arc<Mutex<(bool, Vec<JoinHandle<()>>)>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((false, Vec::new())));
        let relays = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut st = relays.lock().unwrap();
                if st.0 {
                    // Cut: the connection is closed before any CONNACK.
                    continue;
                }
                st.1.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Relay {
            addr,
            state,
            accept,
        }
    }

    /// Closes every relayed connection (no DISCONNECT either way) and refuses new ones.
    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.0 = true;
        for relay in st.1.drain(..) {
            relay.abort();
        }
    }

    /// Lets connections through again.
    fn mend(&self) {
        self.state.lock().unwrap().0 = false;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A Starling whose bridge `up` connects to `remote` as `site1`, speaking `protocol`
/// (try_private on: Mosquitto's bridge bit under 3.1.1), retrying fast.
fn mosquitto_site(remote: SocketAddr, protocol: &str) -> Config {
    let extra = format!("protocol_version = \"{protocol}\"\ntry_private = true");
    site_config(remote, &extra, TOPICS)
}

/// Mosquitto's log line for the bridge's CONNECT: `New bridge connected ... as site1 (p2, ...`
/// when it honoured the 3.1.1 bridge bit, a plain `New client` under MQTT 5 (p5), which has no
/// such bit.
async fn expect_bridge_login(m: &mut Mosquitto, protocol: &str) {
    let (kind, level) = match protocol {
        "mqttv311" => ("New bridge connected", "(p2,"),
        _ => ("New client connected", "(p5,"),
    };
    let line = m.log(&format!(" as {REMOTE_ID} ")).await;
    assert!(
        line.contains(kind) && line.contains(level),
        "expected {kind} {level}: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The topic lines, each way, without loops
// ---------------------------------------------------------------------------------------------

/// Each direction renames by its prefixes and keeps the QoS (1 and 2; the subscriptions on
/// both sides are QoS 2, so each message keeps its own, 3.1.1 [MQTT-3.8.4-6]); RETAIN crosses as
/// published both ways (Retain As Published, MQTT 5.0 §3.8.3.1: the bridge's subscription here,
/// and at Mosquitto the bridge bit or the v5 option), so each broker keeps the other's
/// retained message. A `both` message reaches each side exactly once: No Local on the bridge's
/// subscription here, and at Mosquitto the 3.1.1 bridge bit (which Mosquitto turns into No
/// Local) or the MQTT 5 No Local option, keep it from coming back [MQTT-3.8.3-3].
async fn cross_each_way(protocol: &str) {
    let Some(bin) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut central = Mosquitto::start(&bin, dir.path(), free_port(), "persistence false\n").await;
    let mut state = watch_state(central.addr, "watch").await;
    let site = start_with(mosquitto_site(central.addr, protocol)).await;
    // Sent once both brokers acknowledged the bridge's subscriptions: nothing below is lost.
    let up = expect_state(&mut state, b"1").await;
    assert_eq!(up.qos as u8, 0, "the bridge's own notification is QoS 0");
    expect_bridge_login(&mut central, protocol).await;

    let mut at_c = client(central.addr, "c-sub", &["site1/sensors/#", "both/#"]).await;
    let mut at_s = client(site.addr, "s-sub", &["cmd/#", "both/#"]).await;
    let mut pub_s = Raw::connect_v311(site.addr, "s-pub").await;
    let mut pub_c = Raw::connect_v311(central.addr, "c-pub").await;

    // Out, at QoS 1 and 2.
    pub_s.publish("sensors/t", b"s1", 1, false, 1).await;
    assert_eq!(next(&mut at_c).await, msg("site1/sensors/t", "s1", 1));
    pub_s.publish("sensors/t", b"s2", 2, false, 2).await;
    assert_eq!(next(&mut at_c).await, msg("site1/sensors/t", "s2", 2));
    // In, at QoS 1 and 2.
    pub_c.publish("site1/cmd/go", b"c1", 1, false, 1).await;
    assert_eq!(next(&mut at_s).await, msg("cmd/go", "c1", 1));
    pub_c.publish("site1/cmd/go", b"c2", 2, false, 2).await;
    assert_eq!(next(&mut at_s).await, msg("cmd/go", "c2", 2));
    // Both, from each side.
    pub_s.publish("both/x", b"s3", 1, false, 3).await;
    assert_eq!(next(&mut at_s).await, msg("both/x", "s3", 1));
    assert_eq!(next(&mut at_c).await, msg("both/x", "s3", 1));
    pub_c.publish("both/y", b"c3", 2, false, 3).await;
    assert_eq!(next(&mut at_c).await, msg("both/y", "c3", 2));
    assert_eq!(next(&mut at_s).await, msg("both/y", "c3", 2));
    pub_s.publish("both/x", b"s4", 2, false, 4).await;
    assert_eq!(next(&mut at_s).await, msg("both/x", "s4", 2));
    assert_eq!(next(&mut at_c).await, msg("both/x", "s4", 2));
    pub_c.publish("both/y", b"c4", 1, false, 4).await;
    assert_eq!(next(&mut at_c).await, msg("both/y", "c4", 1));
    assert_eq!(next(&mut at_s).await, msg("both/y", "c4", 1));

    // Retained messages stay retained on the other side: a late subscriber there gets them.
    pub_s.publish("sensors/r", b"rs", 1, true, 5).await;
    assert_eq!(next(&mut at_c).await, msg("site1/sensors/r", "rs", 1));
    pub_c.publish("site1/cmd/r", b"rc", 1, true, 5).await;
    assert_eq!(next(&mut at_s).await, msg("cmd/r", "rc", 1));
    let mut late = Raw::connect_v311(central.addr, "c-late").await;
    late.subscribe(1, "site1/sensors/r", 1).await;
    let kept = late.recv_and_ack().await;
    assert_publish(&kept, "site1/sensors/r", b"rs");
    assert!(kept.retain, "retained at Mosquitto: {kept:?}");
    let mut late = Raw::connect_v311(site.addr, "s-late").await;
    late.subscribe(1, "cmd/r", 1).await;
    let kept = late.recv_and_ack().await;
    assert_publish(&kept, "cmd/r", b"rc");
    assert!(kept.retain, "retained at Starling: {kept:?}");

    // An echo would be queued before these markers on the same links, so it would arrive
    // first: each side gets exactly the two markers next.
    pub_s.publish("both/end", b"s", 0, false, 0).await;
    pub_c.publish("both/end", b"c", 0, false, 0).await;
    let (mut seen_c, mut seen_s) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        seen_c.push(next(&mut at_c).await);
        seen_s.push(next(&mut at_s).await);
    }
    seen_c.sort();
    seen_s.sort();
    let markers = vec![msg("both/end", "c", 0), msg("both/end", "s", 0)];
    assert_eq!(seen_c, markers, "Mosquitto's side saw an echo");
    assert_eq!(seen_s, markers, "Starling's side saw an echo");
    drop(site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_bridge_to_mosquitto_carries_each_way_without_loops() {
    cross_each_way("mqttv311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_bridge_to_mosquitto_carries_each_way_without_loops() {
    cross_each_way("mqttv50").await;
}

// ---------------------------------------------------------------------------------------------
// 2. Store and forward across a Mosquitto restart
// ---------------------------------------------------------------------------------------------

/// QoS 1 and 2 messages published here while Mosquitto is stopped are acknowledged, wait in
/// the bridge's session and reach Mosquitto once it is back; a persistent subscriber session
/// there (restored from Mosquitto's database) then gets each exactly once, in order for each
/// QoS. The order between the two QoS is not kept by Mosquitto, and MQTT does not require it:
/// it orders messages "for the same Topic and QoS" [MQTT-4.6.0-6], and Mosquitto passes a
/// QoS 2 message on at PUBREL (the spec's Method B), a round trip after the QoS 1 messages
/// sent behind it.
async fn store_and_forward(protocol: &str) {
    const N: u16 = 20;
    let Some(bin) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Run as root, Mosquitto drops to its own user before it writes the database.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let extra = format!(
        "persistence true\npersistence_location {}/\n",
        dir.path().display()
    );
    let mut central = Mosquitto::start(&bin, dir.path(), port, &extra).await;
    // A persistent subscriber at Mosquitto: its session (and subscription) is saved with the
    // database, so it is there again, queueing, before the bridge comes back.
    let (mut sub, _) = Raw::connect(central.addr, &ConnectOpts::v311("m-sub").clean(false)).await;
    assert_eq!(sub.subscribe(1, "site1/sensors/#", 2).await, 2);
    sub.send(&DISCONNECT).await;
    drop(sub);

    let site = start_with(mosquitto_site(central.addr, protocol)).await;
    let mut at_s = watch_state(site.addr, "watch-s").await;
    expect_state(&mut at_s, b"1").await;

    // Mosquitto saves its database when it stops on SIGTERM (and every `autosave_interval`,
    // 30 min by default, so only this save can hold the subscriber's session here).
    central.terminate().await;
    central.log("Saving in-memory database").await;
    drop(central);
    assert!(
        dir.path().join("mosquitto.db").is_file(),
        "Mosquitto saved no database on SIGTERM"
    );
    expect_state(&mut at_s, b"0").await;
    let mut pub_s = Raw::connect_v311(site.addr, "s-pub").await;
    let qos = |i: u16| 1 + (i % 2) as u8;
    for i in 0..N {
        // Acknowledged by Starling (PUBACK, or PUBREC/PUBREL/PUBCOMP) while Mosquitto is down.
        pub_s
            .publish(
                "sensors/t",
                format!("m{i}").as_bytes(),
                qos(i),
                false,
                i + 1,
            )
            .await;
    }
    site.wait_until("the messages wait in the bridge's session", |s| {
        s.session_info(LOCAL_ID)
            .is_some_and(|i| i.queued + i.inflight as u64 == u64::from(N))
    })
    .await;

    let mut central = Mosquitto::start(&bin, dir.path(), port, &extra).await;
    expect_state(&mut at_s, b"1").await;
    expect_bridge_login(&mut central, protocol).await;
    // Every message acknowledged by Mosquitto (PUBACK / PUBCOMP): all are queued there for the
    // subscriber before it reconnects. No event says so, hence the bounded poll.
    site.wait_until("Mosquitto acknowledged every message", |s| {
        s.session_info(LOCAL_ID)
            .is_some_and(|i| i.queued == 0 && i.inflight == 0)
    })
    .await;
    let (mut sub, ack) = Raw::connect(central.addr, &ConnectOpts::v311("m-sub").clean(false)).await;
    assert!(
        ack.session_present,
        "Mosquitto restored the subscriber's session"
    );
    let mut got = Vec::new();
    for _ in 0..N {
        got.push(next(&mut sub).await);
    }
    for q in [1, 2] {
        let want: Vec<_> = (0..N)
            .filter(|&i| qos(i) == q)
            .map(|i| msg("site1/sensors/t", &format!("m{i}"), q))
            .collect();
        let seen: Vec<_> = got.iter().filter(|m| m.2 == q).cloned().collect();
        assert_eq!(
            seen, want,
            "QoS {q} messages, each once, in order; all: {got:?}"
        );
    }
    // Nothing more: a duplicate from the bridge's session would come before this marker.
    pub_s.publish("sensors/t", b"end", 1, false, 100).await;
    assert_eq!(next(&mut sub).await, msg("site1/sensors/t", "end", 1));
    drop(site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_bridge_stores_and_forwards_across_a_mosquitto_restart() {
    store_and_forward("mqttv311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_bridge_stores_and_forwards_across_a_mosquitto_restart() {
    store_and_forward("mqttv50").await;
}

// ---------------------------------------------------------------------------------------------
// 3. The bridge's will at Mosquitto, and its farewell
// ---------------------------------------------------------------------------------------------

/// The bridge connects to Mosquitto with a will: `0`, QoS 1, retained, on its state topic.
/// When the link breaks without DISCONNECT Mosquitto publishes it [MQTT-3.1.2-8]; the bridge
/// comes back by itself and says `1`. When Starling stops, the bridge says `0` itself (QoS 0)
/// and disconnects cleanly, so Mosquitto discards the will [MQTT-3.14.4-3], and `0` stays
/// retained there.
async fn will_and_farewell(protocol: &str) {
    let Some(bin) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut central = Mosquitto::start(&bin, dir.path(), free_port(), "persistence false\n").await;
    let relay = Relay::start(central.addr).await;
    let mut state = watch_state(central.addr, "watch").await;
    let site = start_with(mosquitto_site(relay.addr, protocol)).await;
    expect_state(&mut state, b"1").await;
    expect_bridge_login(&mut central, protocol).await;

    relay.cut();
    let will = state.recv_and_ack().await;
    assert_publish(&will, STATE, b"0");
    assert_eq!(will.qos as u8, 1, "the will, not a notification: {will:?}");
    central
        .log(&format!("Client {REMOTE_ID} closed its connection"))
        .await;
    relay.mend();
    let back = state.recv_and_ack().await;
    assert_publish(&back, STATE, b"1");

    assert!(site.stop_within(Duration::from_secs(5)).await);
    let bye = state.recv_and_ack().await;
    assert_publish(&bye, STATE, b"0");
    // How the connection ended, as Mosquitto logs it once it is gone (a will would be
    // published by then).
    let gone = central
        .proc
        .wait_line("the bridge's connection ending", |l| {
            l.contains(&format!("Client {REMOTE_ID} disconnected."))
                || l.contains(&format!("Client {REMOTE_ID} closed its connection."))
        })
        .await;
    assert!(
        gone.contains(" disconnected.") && bye.qos as u8 == 0,
        "the bridge left without its farewell and DISCONNECT, so Mosquitto published its \
         will: {bye:?}\n{}",
        central.proc.transcript()
    );
    let after = state.ping().await;
    assert!(
        after.is_empty(),
        "the will came after a clean DISCONNECT: {after:?}"
    );
    let mut late = Raw::connect_v311(central.addr, "late").await;
    late.subscribe(1, STATE, 1).await;
    let kept = late.recv_and_ack().await;
    assert_publish(&kept, STATE, b"0");
    assert!(kept.retain, "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_bridge_will_and_farewell_at_mosquitto() {
    will_and_farewell("mqttv311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_bridge_will_and_farewell_at_mosquitto() {
    will_and_farewell("mqttv50").await;
}
