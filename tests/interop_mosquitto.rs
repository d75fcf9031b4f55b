//! Interop with the Mosquitto command line clients (Debian mosquitto-clients), MQTT 3.1 and
//! 3.1.1: QoS round trips, retained set/replace/clear, and a wildcard matrix including
//! `$`-topics [MQTT-4.7.2-1]. Skipped (or failed with STARLING_INTEROP=1) without the clients.
//!
//! Synchronisation: mosquitto_sub runs with `-d`, and the test publishes only after its
//! "received SUBACK" debug line; messages are printed with `-F` as `MSG|qos|retain|topic|payload`.
//!
//! `mosquitto_clients_churn_loses_nothing_acknowledged` drives the broker with the same clients
//! the way a busy site does: subscribers killed and restarted, takeovers, publishers coming and
//! going. Seeded (`SOAK_SEED`, printed) and `SOAK_SECS` long.

mod common;
#[path = "soak/rng.rs"]
mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const V31: &str = "mqttv31";
const V311: &str = "mqttv311";

#[derive(Debug, PartialEq, Eq)]
struct Msg {
    qos: u8,
    retain: bool,
    topic: String,
    payload: String,
}

fn parse_msg(line: &str) -> Option<Msg> {
    let rest = line.strip_prefix("MSG|")?;
    let mut it = rest.splitn(4, '|');
    let qos = it.next()?.parse().ok()?;
    let retain = it.next()? == "1";
    let topic = it.next()?.to_owned();
    let payload = it.next()?.to_owned();
    Some(Msg {
        qos,
        retain,
        topic,
        payload,
    })
}

/// mosquitto_sub with debug output (for the SUBACK line) and a parseable message format.
/// Runs under `stdbuf -oL` (coreutils): mosquitto_sub's debug lines go through stdio, which is
/// fully buffered on a pipe.
fn sub_cmd(b: &TestBroker, version: &str, id: &str, qos: u8, filters: &[&str]) -> Command {
    sub_cmd_for(b, version, id, qos, filters, 10)
}

/// As [`sub_cmd`], exiting after `secs` (`-W`) however busy.
fn sub_cmd_for(
    b: &TestBroker,
    version: &str,
    id: &str,
    qos: u8,
    filters: &[&str],
    secs: u64,
) -> Command {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub"])
        .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(["-V", version, "-i", id, "-q", &qos.to_string(), "-k", "30"])
        .args(["-d", "-W", &secs.to_string(), "-F", "MSG|%q|%r|%t|%p"]);
    for f in filters {
        cmd.args(["-t", f]);
    }
    cmd
}

/// Starts mosquitto_sub and waits until the broker has acknowledged its subscription.
async fn subscriber(
    b: &TestBroker,
    version: &str,
    id: &str,
    qos: u8,
    filters: &[&str],
    count: Option<usize>,
) -> Proc {
    let mut cmd = sub_cmd(b, version, id, qos, filters);
    if let Some(n) = count {
        cmd.args(["-C", &n.to_string()]);
    }
    subscribed(id, &mut cmd).await
}

/// Starts `cmd` (a [`sub_cmd`]) and waits for its SUBACK.
async fn subscribed(id: &str, cmd: &mut Command) -> Proc {
    let mut p = Proc::spawn(&format!("mosquitto_sub {id}"), cmd);
    p.wait_line("'received SUBACK'", |l| l.contains("received SUBACK"))
        .await;
    p
}

/// Reads the next message line (skipping debug lines).
async fn next_msg(p: &mut Proc) -> Msg {
    let line = p.wait_line("MSG|...", |l| l.starts_with("MSG|")).await;
    parse_msg(&line).unwrap_or_else(|| panic!("unparsable line {line:?}"))
}

/// Runs mosquitto_pub to completion (for QoS 1/2 it exits after PUBACK/PUBCOMP).
async fn publish(
    b: &TestBroker,
    version: &str,
    qos: u8,
    topic: &str,
    payload: Option<&str>,
    retain: bool,
) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(["-V", version, "-q", &qos.to_string(), "-t", topic]);
    match payload {
        Some(m) => cmd.args(["-m", m]),
        None => cmd.arg("-n"),
    };
    if retain {
        cmd.arg("-r");
    }
    run_ok(&format!("mosquitto_pub {topic}"), &mut cmd).await;
}

async fn round_trips(version: &str) {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    for qos in 0..=2u8 {
        let topic = format!("mq/{version}/q{qos}");
        let mut sub = subscriber(
            &b,
            version,
            &format!("sub-{version}-{qos}"),
            qos,
            &[&topic],
            Some(3),
        )
        .await;
        for n in 0..3 {
            publish(
                &b,
                version,
                qos,
                &topic,
                Some(&format!("{version}-q{qos}-{n}")),
                false,
            )
            .await;
        }
        for n in 0..3 {
            let m = next_msg(&mut sub).await;
            assert_eq!(
                m,
                Msg {
                    qos,
                    retain: false,
                    topic: topic.clone(),
                    payload: format!("{version}-q{qos}-{n}")
                },
                "{}",
                sub.transcript()
            );
        }
        // -C 3: the subscriber exits cleanly after exactly three messages.
        sub.success(WAIT).await;
    }
}

/// mosquitto_pub → mosquitto_sub at QoS 0, 1 and 2 over MQTT 3.1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v311_qos_0_1_2_round_trips() {
    round_trips(V311).await;
}

/// mosquitto_pub → mosquitto_sub at QoS 0, 1 and 2 over MQTT 3.1 (`MQIsdp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v31_qos_0_1_2_round_trips() {
    round_trips(V31).await;
}

async fn retained(version: &str) {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let topic = format!("mret/{version}");
    // QoS 1 so mosquitto_pub exits only after the broker has processed the message.
    publish(&b, version, 1, &topic, Some("v1"), true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret1-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain, m.qos),
        ("v1", true, 1),
        "set [MQTT-3.3.1-6][MQTT-3.3.1-8]"
    );
    s.success(WAIT).await;

    publish(&b, version, 1, &topic, Some("v2"), true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret2-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain),
        ("v2", true),
        "replace [MQTT-3.3.1-7]"
    );
    s.success(WAIT).await;

    // -r -n: zero-length retained message clears the topic [MQTT-3.3.1-10].
    publish(&b, version, 1, &topic, None, true).await;
    let mut s = subscriber(
        &b,
        version,
        &format!("ret3-{version}"),
        1,
        &[&topic],
        Some(1),
    )
    .await;
    publish(&b, version, 1, &topic, Some("marker"), false).await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        (m.payload.as_str(), m.retain),
        ("marker", false),
        "after clearing, the first message must be the live marker\n{}",
        s.transcript()
    );
    s.success(WAIT).await;
}

/// Retained set / replace / clear seen by new mosquitto_sub subscribers, MQTT 3.1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v311_retained_set_replace_clear() {
    retained(V311).await;
}

/// Retained set / replace / clear seen by new mosquitto_sub subscribers, MQTT 3.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v31_retained_set_replace_clear() {
    retained(V31).await;
}

/// Wildcard matrix: each filter gets exactly the topics it matches. `#` and `+/...` do not match
/// topics starting with `$` [MQTT-4.7.2-1], while `$foo/#` and `$foo/+` do; `sport/#` matches
/// its parent `sport` [4.7.1.2]; `+` matches an empty level [4.7.1.3].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_wildcard_matrix_with_dollar_topics_mqtt_4_7_2_1() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let topics = [
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "/finance",
        "$foo/bar",
        "a/bar",
    ];
    let matrix: &[(&str, &[&str])] = &[
        (
            "#",
            &[
                "sport",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "/finance",
                "a/bar",
            ],
        ),
        ("+", &["sport"]),
        ("+/+", &["sport/tennis", "/finance", "a/bar"]),
        ("+/+/+", &["sport/tennis/player1"]),
        ("/+", &["/finance"]),
        (
            "sport/#",
            &[
                "sport",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
            ],
        ),
        ("sport/+", &["sport/tennis"]),
        ("sport/tennis/+", &["sport/tennis/player1"]),
        (
            "+/tennis/#",
            &[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
            ],
        ),
        (
            "sport/tennis/player1/#",
            &["sport/tennis/player1", "sport/tennis/player1/ranking"],
        ),
        ("+/bar", &["a/bar"]),
        ("$foo/#", &["$foo/bar"]),
        ("$foo/+", &["$foo/bar"]),
        (
            "+/+/#",
            &[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "/finance",
                "a/bar",
            ],
        ),
    ];
    let mut subs = Vec::new();
    for (i, (filter, _)) in matrix.iter().enumerate() {
        // Alternate protocol versions across subscribers.
        let version = if i % 2 == 0 { V311 } else { V31 };
        subs.push(
            subscriber(
                &b,
                version,
                &format!("wild-{i}"),
                1,
                &[filter, "ctl/end"],
                None,
            )
            .await,
        );
    }
    for t in topics {
        publish(&b, V311, 1, t, Some(t), false).await;
    }
    publish(&b, V311, 1, "ctl/end", Some("end"), false).await;

    let mut failures = Vec::new();
    for ((filter, want), sub) in matrix.iter().zip(subs.iter_mut()) {
        let mut got = BTreeSet::new();
        loop {
            let m = next_msg(sub).await;
            if m.topic == "ctl/end" {
                break;
            }
            assert_eq!(m.topic, m.payload);
            assert!(
                got.insert(m.topic.clone()),
                "{filter}: duplicate {}",
                m.topic
            );
        }
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("filter {filter:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wildcard matrix:\n{}",
        failures.join("\n")
    );
}

/// A client cannot publish into `$SYS/...`: the broker drops it, so a `$SYS/#` subscriber
/// receives nothing while a positive control on another `$` topic arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_client_publish_to_sys_is_dropped() {
    if !have_mosquitto_clients() {
        return;
    }
    let b = start().await;
    let mut s = subscriber(&b, V311, "sys-watch", 1, &["$SYS/#", "$ctl/end"], None).await;
    publish(&b, V311, 1, "$SYS/broker/fake", Some("fake"), false).await;
    publish(&b, V311, 1, "$ctl/end", Some("end"), false).await;
    let m = next_msg(&mut s).await;
    assert_eq!(
        m.topic,
        "$ctl/end",
        "a client's $SYS publish must be dropped\n{}",
        s.transcript()
    );
}

/// Churning clients for the churn test: each task starts a mosquitto_sub (random QoS and
/// filters; a third of them persistent sessions sharing four client ids, so two of them race
/// for one session) and kills it after a random 50-400 ms, until `end`.
fn spawn_churners(
    b: &TestBroker,
    rng: &mut rng::Rng,
    end: Instant,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..8)
        .map(|i| {
            let mut r = rng.fork();
            let port = b.port().to_string();
            tokio::spawn(async move {
                let mut spawned = 0u64;
                while Instant::now() < end {
                    let persistent = r.chance(33);
                    let id = if persistent {
                        format!("churn-p{}", r.below(4))
                    } else {
                        format!("churn-{i}-{spawned}")
                    };
                    let mut cmd = Command::new("mosquitto_sub");
                    cmd.args(["-h", "127.0.0.1", "-p", &port, "-V", V311, "-i", &id])
                        .args(["-q", &r.below(3).to_string()])
                        .args(["-t", *r.pick(&["churn/#", "churn/+/+", "churn/q1/#"])]);
                    if persistent {
                        cmd.arg("-c");
                    }
                    let p = Proc::spawn(&id, &mut cmd);
                    spawned += 1;
                    tokio::time::sleep(Duration::from_millis(r.between(50, 400))).await;
                    // Dropped: killed with SIGKILL, no DISCONNECT.
                    drop(p);
                }
                spawned
            })
        })
        .collect()
}

/// One publisher: batches of `mosquitto_pub -l` (a new connection each) to `churn/q{qos}/p{n}`
/// until `end`. mosquitto_pub exits 0 only once its last message was acknowledged, so the
/// payloads of successful batches are what the broker acknowledged.
async fn publish_batches(port: u16, qos: u8, n: usize, end: Instant) -> Vec<String> {
    let mut acked = Vec::new();
    let mut batch = 0;
    while Instant::now() < end {
        let cmd = format!(
            "seq -f 'q{qos}-p{n}-b{batch}-%g' 1 200 | mosquitto_pub -h 127.0.0.1 -p {port} \
             -V {V311} -q {qos} -t churn/q{qos}/p{n} -l"
        );
        let name = format!("mosquitto_pub q{qos} p{n} b{batch}");
        run_ok(&name, Command::new("sh").args(["-c", &cmd])).await;
        acked.extend((1..=200).map(|i| format!("q{qos}-p{n}-b{batch}-{i}")));
        batch += 1;
    }
    acked
}

/// Reads `sub` until every payload of `expected` arrived (or nothing new for `WAIT`); returns
/// how often each payload was received.
async fn collect(sub: &mut Proc, expected: &BTreeSet<String>) -> BTreeMap<String, u32> {
    let mut got: BTreeMap<String, u32> = BTreeMap::new();
    let mut missing = expected.len();
    while missing > 0 {
        let Some(line) = sub.line_within(WAIT).await else {
            break;
        };
        if let Some(m) = parse_msg(&line) {
            let wanted = expected.contains(&m.payload);
            let n = got.entry(m.payload).or_default();
            *n += 1;
            if *n == 1 && wanted {
                missing -= 1;
            }
        }
    }
    got
}

/// Real clients together: two steady subscribers (QoS 1 and QoS 2) while eight tasks start and
/// kill mosquitto_sub clients (clean and persistent, with takeovers) and four publishers send
/// QoS 1 and 2 batches; a new client must get its CONNACK within 2 s all along. Invariants:
/// every acknowledged QoS 1 message reaches the QoS 1 subscriber at least once [MQTT-4.3.2-2]
/// and every acknowledged QoS 2 message the QoS 2 subscriber exactly once [MQTT-4.3.3-2]; the
/// broker then stops within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_churn_loses_nothing_acknowledged() {
    if !have_mosquitto_clients() {
        return;
    }
    let seed = rng::seed_from_env();
    let secs = rng::secs_from_env(8);
    eprintln!("[mosquitto churn] SOAK_SEED={seed} SOAK_SECS={secs}");
    let mut r = rng::Rng::new(seed);
    let b = start().await;
    // They outlive the churn, and the collection after it (`-W`).
    let life = secs + 60;
    let mut cmd = sub_cmd_for(&b, V311, "steady-q1", 1, &["churn/q1/#"], life);
    let mut steady1 = subscribed("steady-q1", &mut cmd).await;
    let mut cmd = sub_cmd_for(&b, V311, "steady-q2", 2, &["churn/q2/#"], life);
    let mut steady2 = subscribed("steady-q2", &mut cmd).await;
    let end = Instant::now() + Duration::from_secs(secs);
    let churners = spawn_churners(&b, &mut r, end);
    let publishers: Vec<_> = [(1u8, 0usize), (1, 1), (2, 2), (2, 3)]
        .into_iter()
        .map(|(qos, n)| (qos, tokio::spawn(publish_batches(b.port(), qos, n, end))))
        .collect();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], b.port()).into();
    let mut probes = 0;
    while Instant::now() < end {
        let probe_id = format!("probe-{probes}");
        let probe = Raw::connect_v311(addr, &probe_id);
        assert!(
            tokio::time::timeout(Duration::from_secs(2), probe)
                .await
                .is_ok(),
            "probe {probes}: no CONNACK within 2 s (seed {seed})"
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expected: [BTreeSet<String>; 3] = Default::default();
    for (qos, h) in publishers {
        expected[usize::from(qos)].extend(h.await.expect("publisher task"));
    }
    let mut spawned = 0;
    for h in churners {
        spawned += h.await.expect("churner task");
    }
    eprintln!(
        "[mosquitto churn] {probes} probes, {spawned} churning clients, {} QoS 1 and {} QoS 2 acknowledged",
        expected[1].len(),
        expected[2].len()
    );
    assert!(
        !expected[1].is_empty() && !expected[2].is_empty(),
        "nothing was published"
    );
    let got1 = collect(&mut steady1, &expected[1]).await;
    let missing1: Vec<_> = expected[1]
        .iter()
        .filter(|p| !got1.contains_key(*p))
        .collect();
    assert!(
        missing1.is_empty(),
        "{} acknowledged QoS 1 messages lost (seed {seed}), first {:?}",
        missing1.len(),
        missing1.first()
    );
    let got2 = collect(&mut steady2, &expected[2]).await;
    let missing2: Vec<_> = expected[2]
        .iter()
        .filter(|p| !got2.contains_key(*p))
        .collect();
    let dup2: Vec<_> = got2.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing2.is_empty() && dup2.is_empty(),
        "QoS 2 (seed {seed}): {} lost (first {:?}), {} duplicated (first {:?})",
        missing2.len(),
        missing2.first(),
        dup2.len(),
        dup2.first()
    );
    assert!(
        b.stop_within(Duration::from_secs(5)).await,
        "the broker did not stop within 5 s after the churn (seed {seed})"
    );
}
