//! Mosquitto bridges connecting to Starling (issue 13, item 6). A Mosquitto bridge with
//! `try_private true` sends CONNECT with the protocol level's top bit set (0x83 for 3.1, 0x84
//! for 3.1.1; never for 5.0). Starling accepts it and treats the connection as a bridge, as
//! Mosquitto does: its subscriptions get No Local (its own messages are not sent back, the
//! loop prevention the bit exists for) and Retain As Published (RETAIN stays as published), and
//! it may set its will on, and publish to, `$SYS/broker/connection/<its client id>/state`. The
//! bit grants nothing else: the ACL applies as to any client.
//!
//! Raw packets first, then Debian's real `mosquitto` bridging to Starling (skipped when it is
//! not installed, a failure with STARLING_INTEROP=1).

mod common;

use std::process::Command;

use common::*;

/// A 3.1.1 bridge CONNECT (level 0x84).
fn bridge(id: &str) -> ConnectOpts {
    let mut o = ConnectOpts::v311(id);
    o.level = 0x84;
    o
}

fn state_topic(id: &str) -> String {
    format!("$SYS/broker/connection/{id}/state")
}

/// The level's top bit marks a bridge for 3.1 (0x83) and 3.1.1 (0x84): CONNACK 0, where
/// Starling answered 1 (unacceptable protocol version). 5.0 has no such level (Mosquitto's
/// bridges never set the bit for it): 0x85 is still refused [MQTT-3.1.2-2].
#[tokio::test]
async fn try_private_levels_0x83_and_0x84_are_accepted_0x85_is_not() {
    let b = start().await;
    let (_c, ack) = Raw::connect_raw(b.addr, &bridge("br-84")).await;
    assert_eq!(ack.code.0, 0, "3.1.1 bridge (0x84): {ack:?}");
    let mut v31 = ConnectOpts::v31("br-83");
    v31.level = 0x83;
    let (_c, ack) = Raw::connect_raw(b.addr, &v31).await;
    assert_eq!(ack.code.0, 0, "3.1 bridge (0x83): {ack:?}");
    let mut raw = Raw::open(b.addr).await;
    let mut v5 = ConnectOpts::v311("br-85");
    v5.level = 0x85;
    raw.send(&v5.encode()).await;
    let (seen, _) = raw
        .closed_within(CLOSE_WAIT)
        .await
        .unwrap_or_else(|seen| panic!("0x85 accepted? still open after {seen:?}"));
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, starling::codec::Packet::ConnAck(a) if a.code.0 == 0)),
        "0x85 accepted: {seen:?}"
    );
}

/// A bridge's subscriptions are No Local and Retain As Published, as Mosquitto makes them
/// (MQTT 5.0 [MQTT-3.8.3-3], §3.8.3.1 Retain As Published, applied to the 3.x bridge): the
/// bridge does not get its own messages back, and a retained message published live reaches it
/// with RETAIN 1, where an ordinary 3.1.1 subscriber gets RETAIN 0 [MQTT-3.3.1-9]. Its messages
/// still reach everyone else.
#[tokio::test]
async fn bridge_gets_no_local_and_retain_as_published() {
    let b = start().await;
    let (mut br, _) = Raw::connect(b.addr, &bridge("br-nl")).await;
    assert_eq!(br.subscribe(1, "nl/#", 1).await, 1);
    let mut plain = Raw::connect_v311(b.addr, "br-nl-plain").await;
    assert_eq!(plain.subscribe(1, "nl/#", 1).await, 1);

    br.publish("nl/from-bridge", b"b", 1, false, 7).await;
    let p = plain.recv_and_ack().await;
    assert_publish(&p, "nl/from-bridge", b"b");
    plain.publish("nl/retained", b"r", 1, true, 8).await;

    let first = br.recv_and_ack().await;
    assert_publish(&first, "nl/retained", b"r");
    assert!(first.retain, "retain as published to the bridge: {first:?}");
    let to_plain = plain.recv_and_ack().await;
    assert_publish(&to_plain, "nl/retained", b"r");
    assert!(
        !to_plain.retain,
        "[MQTT-3.3.1-9] live delivery to a plain client"
    );
    assert!(
        br.ping().await.is_empty(),
        "the bridge got its own message back"
    );
}

/// A client may set its will on, and publish to, `$SYS/broker/connection/<its id>/state`
/// (Mosquitto's bridge notifications, which Mosquitto accepts from any client: its MQTT 5
/// bridges carry no bridge bit); everything else in `$SYS` stays refused: a bridge whose will
/// names another connection's state is refused (3.1.1 return code 5). The state is retained;
/// the will ("0") goes when the bridge drops.
#[tokio::test]
async fn bridge_state_will_and_notification_in_sys() {
    let b = start().await;
    let id = "br-state";
    let topic = state_topic(id);
    let mut watch = Raw::connect_v311(b.addr, "br-state-watch").await;
    assert_eq!(watch.subscribe(1, "$SYS/broker/connection/#", 1).await, 1);

    let plain = ConnectOpts::v311(id).will(&topic, b"0", 1, true);
    let (c, ack) = Raw::connect_raw(b.addr, &plain).await;
    assert_eq!(ack.code.0, 0, "a plain client's will on its own state");
    drop(c);
    assert_publish(&watch.recv_and_ack().await, &topic, b"0");
    let plain = ConnectOpts::v311("plain").will(&topic, b"0", 1, true);
    let (_c, ack) = Raw::connect_raw(b.addr, &plain).await;
    assert_eq!(
        ack.code.0, 5,
        "a client's will on another connection's state"
    );
    let other = bridge(id).will(&state_topic("someone-else"), b"0", 1, true);
    let (_c, ack) = Raw::connect_raw(b.addr, &other).await;
    assert_eq!(
        ack.code.0, 5,
        "a bridge's will on another connection's state"
    );

    let (mut br, _) =
        Raw::connect(b.addr, &bridge(id).clean(false).will(&topic, b"0", 1, true)).await;
    br.publish(&topic, b"1", 1, true, 1).await;
    assert_publish(&watch.recv_and_ack().await, &topic, b"1");
    let mut late = Raw::connect_v311(b.addr, "br-state-late").await;
    assert_eq!(late.subscribe(1, &topic, 1).await, 1);
    let retained = late.recv_and_ack().await;
    assert_publish(&retained, &topic, b"1");
    assert!(retained.retain);

    drop(br);
    let will = watch.recv_and_ack().await;
    assert_publish(&will, &topic, b"0");
    assert!(watch.ping().await.is_empty());
}

/// The bit grants no ACL bypass: with an ACL that gives the bridge `bridged/#` only, its will
/// on its own state topic is refused (3.1.1 return code 5), its publish to its state topic and
/// outside `bridged/#` is dropped, and it receives nothing it may not read.
#[tokio::test]
async fn bridge_gets_no_acl_bypass() {
    let dir = std::env::temp_dir().join(format!("starling-bridge-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let acl = dir.join("acl");
    std::fs::write(&acl, "user br\ntopic readwrite bridged/#\n\nuser watch\ntopic read #\ntopic read $SYS/#\ntopic write other/#\ntopic write bridged/#\n")
        .expect("write acl");
    let mut cfg = test_config();
    cfg.auth.acl_file = Some(acl);
    let b = start_with(cfg).await;
    let with_user = |mut o: ConnectOpts, user: &str| {
        o.username = Some(user.to_owned());
        o
    };
    let mut watch = Raw::connect(b.addr, &with_user(ConnectOpts::v311("acl-watch"), "watch"))
        .await
        .0;
    assert_eq!(watch.subscribe(1, "#", 0).await, 0);
    assert_eq!(watch.subscribe(2, "$SYS/broker/connection/#", 0).await, 0);

    let topic = state_topic("acl-br");
    let (_c, ack) = Raw::connect_raw(
        b.addr,
        &with_user(bridge("acl-br").will(&topic, b"0", 0, true), "br"),
    )
    .await;
    assert_eq!(ack.code.0, 5, "the ACL does not grant the will topic");

    let (mut br, _) = Raw::connect(b.addr, &with_user(bridge("acl-br"), "br")).await;
    assert_eq!(br.subscribe(1, "#", 0).await, 0);
    br.publish(&topic, b"1", 0, true, 0).await;
    br.publish("elsewhere/x", b"x", 0, false, 0).await;
    br.publish("bridged/ok", b"ok", 0, false, 0).await;
    assert_publish(&watch.recv_publish().await, "bridged/ok", b"ok");
    watch
        .publish("other/x", b"not readable by br", 0, false, 0)
        .await;
    watch.publish("bridged/y", b"readable", 0, false, 0).await;
    assert_publish(&br.recv_publish().await, "bridged/y", b"readable");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Debian's mosquitto as a bridge to Starling
// ---------------------------------------------------------------------------------------------

/// Mosquitto with a listener on `port` and a `try_private` 3.1.1 bridge to Starling at
/// `starling_port` that carries every topic both ways, connecting as `bridge_id`. It logs to
/// stdout, so its lines can be waited for.
fn spawn_bridge(
    mosquitto: &std::path::Path,
    dir: &std::path::Path,
    (port, starling_port): (u16, u16),
    bridge_id: &str,
    protocol: &str,
) -> Proc {
    let conf = dir.join("mosquitto.conf");
    // With MQTT 5 Mosquitto never sets the try_private bit: its subscription options do that
    // job (No Local, Retain As Published).
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         log_dest stdout\nlog_type all\n\n\
         connection starling\naddress 127.0.0.1:{starling_port}\ntopic # both 0\n\
         try_private true\nbridge_protocol_version {protocol}\n\
         remote_clientid {bridge_id}\nrestart_timeout 1\n"
    );
    std::fs::write(&conf, text).expect("write mosquitto.conf");
    let mut cmd = Command::new("stdbuf");
    cmd.arg("-oL").arg(mosquitto).arg("-c").arg(&conf);
    Proc::spawn("mosquitto (bridge)", &mut cmd)
}

/// Waits until the bridge `id` is up on Starling: its state `1` published (and retained, as a
/// late subscriber sees) and its `#` subscription in place.
async fn bridge_up(b: &TestBroker, state: &mut Raw, id: &str) {
    let topic = state_topic(id);
    assert_publish(&state.recv_and_ack().await, &topic, b"1");
    b.wait_until("the bridge subscribed to # on Starling", |s| {
        s.session_info(id)
            .is_some_and(|i| i.connected && i.subscriptions.iter().any(|f| f == "#"))
    })
    .await;
    let mut late = Raw::connect_v311(b.addr, "bridge-state-late").await;
    assert_eq!(late.subscribe(1, &topic, 1).await, 1);
    let retained = late.recv_and_ack().await;
    assert_publish(&retained, &topic, b"1");
    assert!(retained.retain, "the bridge state is retained on Starling");
}

/// Debian's `mosquitto` bridging to Starling with `try_private true` (MQTT 3.1.1): the bridge
/// connects (Starling once answered CONNACK 1), its `1` state is retained on Starling under
/// `$SYS/broker/connection/<id>/state`, a message published on either side reaches a subscriber
/// on the other exactly once (no loop: each direction is checked with a marker sent after it
/// over the same path, which a looped copy would precede), and when Mosquitto dies its will
/// sets the state to `0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_bridge_to_starling_both_ways_without_loops() {
    bridge_both_ways("mqttv311").await;
}

/// The same with `bridge_protocol_version mqttv50`, where Mosquitto sets no try_private bit: its
/// default notifications still put its will on `$SYS/broker/connection/<id>/state`, which
/// Starling once refused from a client without the bit, so such a bridge never connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v5_bridge_to_starling_both_ways_without_loops() {
    bridge_both_ways("mqttv50").await;
}

async fn bridge_both_ways(protocol: &str) {
    let Some(mosquitto) = mosquitto_binary().filter(|_| have_mosquitto_clients()) else {
        return;
    };
    let b = start().await;
    let dir =
        std::env::temp_dir().join(format!("starling-bridge-{protocol}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let id = format!("mosq-bridge-{protocol}-{}", std::process::id());
    let topic = state_topic(&id);
    let mut state = Raw::connect_v311(b.addr, "bridge-state-watch").await;
    assert_eq!(state.subscribe(1, &topic, 1).await, 1);
    let port = free_port();
    let mosq = spawn_bridge(&mosquitto, &dir, (port, b.port()), &id, protocol);
    bridge_up(&b, &mut state, &id).await;

    // Starling → Mosquitto, exactly once.
    let mut on_mosq = mosquitto_sub(port, "s2m/#").await;
    let mut on_starling = Raw::connect_v311(b.addr, "bridge-starling-side").await;
    assert_eq!(on_starling.subscribe(1, "s2m/#", 1).await, 1);
    assert_eq!(on_starling.subscribe(2, "m2s/#", 1).await, 1);
    let mut starling_pub = Raw::connect_v311(b.addr, "bridge-starling-pub").await;
    starling_pub
        .publish("s2m/one", b"from-starling", 1, false, 1)
        .await;
    assert_eq!(next_msg(&mut on_mosq).await, "MSG|s2m/one|from-starling");
    assert_publish(
        &on_starling.recv_and_ack().await,
        "s2m/one",
        b"from-starling",
    );
    // A copy looped back by Mosquitto would reach Starling before this marker.
    mosquitto_pub(port, "s2m/marker", "m1").await;
    assert_publish(&on_starling.recv_and_ack().await, "s2m/marker", b"m1");
    assert_eq!(next_msg(&mut on_mosq).await, "MSG|s2m/marker|m1");

    // Mosquitto → Starling, exactly once.
    let mut on_mosq_in = mosquitto_sub(port, "m2s/#").await;
    mosquitto_pub(port, "m2s/one", "from-mosquitto").await;
    assert_publish(
        &on_starling.recv_and_ack().await,
        "m2s/one",
        b"from-mosquitto",
    );
    assert_eq!(
        next_msg(&mut on_mosq_in).await,
        "MSG|m2s/one|from-mosquitto"
    );
    // A copy Starling sent back to the bridge would reach Mosquitto before this marker.
    starling_pub.publish("m2s/marker", b"m2", 1, false, 2).await;
    assert_eq!(next_msg(&mut on_mosq_in).await, "MSG|m2s/marker|m2");
    assert_publish(&on_starling.recv_and_ack().await, "m2s/marker", b"m2");
    assert!(on_starling.ping().await.is_empty(), "{}", mosq.transcript());

    // Mosquitto dies without DISCONNECT: its will marks the bridge down.
    drop(mosq);
    assert_publish(&state.recv_and_ack().await, &topic, b"0");
    let _ = std::fs::remove_dir_all(&dir);
}
