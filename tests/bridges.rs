//! Starling bridging to another broker (`[[bridges]]`): a "site" broker carries topics to and
//! from a "central" one, as Mosquitto's `connection` blocks do. Both brokers run in this
//! process; the clients are raw MQTT connections. Every wait is for an event (a message, the
//! bridge's `$SYS/broker/connection/<id>/state` notification), never a sleep.

mod common;
#[path = "bridges/support.rs"]
mod support;

use std::time::Duration;

use common::*;
use starling::codec::{Packet, ReasonCode};
use starling::config::Config;
use support::*;

/// Each direction renames by its prefixes and keeps the QoS; a `both` message reaches each
/// side once: the bridge's subscriptions are No Local here and, at the remote, the 3.1.1
/// bridge bit (or No Local under MQTT 5) keeps it from coming back [MQTT-3.8.3-3].
async fn cross_each_way(protocol: &str) {
    let central = start().await;
    let mut state = watch_state(central.addr, "watch").await;
    let extra = format!("protocol_version = \"{protocol}\"");
    let site = start_with(site_config(central.addr, &extra, TOPICS)).await;
    expect_state(&mut state, b"1").await;
    let mut at_c = client(central.addr, "c-sub", &["site1/sensors/#", "both/#"]).await;
    let mut at_s = client(site.addr, "s-sub", &["cmd/#", "both/#"]).await;
    let mut pub_s = Raw::connect_v311(site.addr, "s-pub").await;
    let mut pub_c = Raw::connect_v311(central.addr, "c-pub").await;

    pub_s.publish("sensors/t", b"s1", 1, false, 1).await;
    assert_eq!(next(&mut at_c).await, msg("site1/sensors/t", "s1", 1));
    pub_c.publish("site1/cmd/go", b"c1", 2, false, 1).await;
    assert_eq!(next(&mut at_s).await, msg("cmd/go", "c1", 2));
    pub_s.publish("both/x", b"s2", 1, false, 2).await;
    assert_eq!(next(&mut at_s).await, msg("both/x", "s2", 1));
    assert_eq!(next(&mut at_c).await, msg("both/x", "s2", 1));
    pub_c.publish("both/y", b"c2", 2, false, 2).await;
    assert_eq!(next(&mut at_c).await, msg("both/y", "c2", 2));
    assert_eq!(next(&mut at_s).await, msg("both/y", "c2", 2));
    // An echo would be queued before these markers on the same links, so it would arrive first.
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
    assert_eq!(seen_c, markers, "central saw an echo");
    assert_eq!(seen_s, markers, "site saw an echo");
    // sensors/t, both/x, both/end out; cmd/go, both/y, both/end in.
    let text = starling::prometheus::render(site.state(), &[]);
    for line in [
        "starling_bridge_up{bridge=\"up\"} 1\n",
        "starling_bridge_connects_total{bridge=\"up\"} 1\n",
        "starling_bridge_messages_sent_total{bridge=\"up\"} 3\n",
        "starling_bridge_messages_received_total{bridge=\"up\"} 3\n",
        "starling_bridge_messages_dropped_total{bridge=\"up\"} 0\n",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    drop(site);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_bridge_carries_each_way_without_loops() {
    cross_each_way("mqttv311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_bridge_carries_each_way_without_loops() {
    cross_each_way("mqttv50").await;
}

/// The state topic: `1` once the bridge is up (here and at the remote); the remote publishes
/// the bridge's will `0` when the link breaks; the bridge comes back by itself and says `1`;
/// a clean stop says `0` at the remote before it disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_notifications_and_reconnection() {
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let site = start_with(site_config(central.addr, "", TOPICS)).await;
    expect_state(&mut at_c, b"1").await;
    let mut at_s = watch_state(site.addr, "watch-s").await;
    expect_state(&mut at_s, b"1").await;

    let kicked =
        central
            .state()
            .disconnect_client("site1", ReasonCode::ADMINISTRATIVE_ACTION, false);
    assert!(
        matches!(kicked, starling::broker::Kicked::Disconnected),
        "{kicked:?}"
    );
    expect_state(&mut at_c, b"0").await;
    expect_state(&mut at_s, b"0").await;
    expect_state(&mut at_c, b"1").await;
    expect_state(&mut at_s, b"1").await;

    assert!(site.stop_within(Duration::from_secs(5)).await);
    expect_state(&mut at_c, b"0").await;
}

/// Store and forward: QoS 1 and 2 messages published here while the remote broker is down are
/// acknowledged, wait in the bridge's session and arrive once it is back, in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_the_remote_is_down_arrive_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let central_cfg = || {
        let mut cfg = test_config();
        cfg.persistence.enabled = Some(true);
        cfg.persistence.dir = dir.path().join("central");
        cfg
    };
    let central = start_with(central_cfg()).await;
    let addr = central.addr;
    // A persistent subscriber at the central broker, there again after its restart.
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    sub.subscribe(1, "site1/#", 2).await;
    drop(sub);
    let site = start_with(site_config(addr, "", TOPICS)).await;
    let mut at_s = watch_state(site.addr, "watch-s").await;
    expect_state(&mut at_s, b"1").await;

    assert!(central.stop_within(Duration::from_secs(5)).await);
    expect_state(&mut at_s, b"0").await;
    let mut pub_s = Raw::connect_v311(site.addr, "s-pub").await;
    for i in 0..20u16 {
        let qos = 1 + (i % 2) as u8;
        pub_s
            .publish("sensors/t", format!("m{i}").as_bytes(), qos, false, i + 1)
            .await;
    }
    let mut cfg = central_cfg();
    cfg.listeners[0].bind = addr.to_string().parse().unwrap();
    let central = start_with(cfg).await;
    expect_state(&mut at_s, b"1").await;
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    for i in 0..20u16 {
        let want = msg("site1/sensors/t", &format!("m{i}"), 1 + (i % 2) as u8);
        assert_eq!(next(&mut sub).await, want);
    }
    // Nothing more: a PINGRESP comes back with no PUBLISH before it.
    let before = sub.ping().await;
    assert!(before.is_empty(), "duplicates: {before:?}");
    drop(central);
}

/// A remote session can hold a subscription no topic line maps any more (the configuration
/// changed): what it brings is acknowledged and dropped by the bridge, so it never fills the
/// window and what the lines do map still comes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_no_line_maps_are_acknowledged_and_dropped() {
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let old = "[[bridges.topics]]\npattern = \"x/#\"\ndirection = \"in\"\nqos = 2\n";
    let site = start_with(site_config(central.addr, "", old)).await;
    expect_state(&mut at_c, b"1").await;
    assert!(site.stop_within(Duration::from_secs(5)).await);
    expect_state(&mut at_c, b"0").await;

    let new = "[[bridges.topics]]\npattern = \"y/#\"\ndirection = \"in\"\nqos = 2\n";
    let site = start_with(site_config(central.addr, "", new)).await;
    expect_state(&mut at_c, b"1").await;
    let mut at_s = client(site.addr, "s-sub", &["#"]).await;
    let mut pub_c = Raw::connect_v311(central.addr, "c-pub").await;
    // More than the bridge's window (max_inflight 20), at both QoS.
    for i in 0..30u16 {
        let qos = 1 + (i % 2) as u8;
        pub_c.publish("x/old", b"dropped", qos, false, i + 1).await;
    }
    pub_c.publish("y/new", b"kept", 1, false, 100).await;
    assert_eq!(next(&mut at_s).await, msg("y/new", "kept", 1));
    let m = &site.state().metrics().bridges[0];
    assert_eq!((m.dropped.get(), m.received.get()), (30, 1));
    central
        .wait_until(
            "the bridge's session at the central broker is drained",
            |s| {
                s.session_info("site1")
                    .is_some_and(|i| i.inflight == 0 && i.queued == 0)
            },
        )
        .await;
    drop(site);
}

/// The local end is checked against no ACL (as in Mosquitto): the site's ACL file allows
/// clients nothing on `sensors/#`, yet the bridge carries it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_is_outside_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite other/#\npattern write sensors/%c\n").unwrap();
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let mut cfg = site_config(central.addr, "", TOPICS);
    cfg.auth.acl_file = Some(acl);
    let site = start_with(cfg).await;
    expect_state(&mut at_c, b"1").await;
    let mut sub = client(central.addr, "c-sub", &["site1/#"]).await;
    // Allowed to write its own `sensors/<client id>` only: the bridge still reads it.
    let mut p = Raw::connect_v311(site.addr, "dev1").await;
    p.publish("sensors/dev1", b"v", 1, false, 1).await;
    assert_eq!(next(&mut sub).await, msg("site1/sensors/dev1", "v", 1));
    let ping = sub.ping().await;
    assert!(ping.iter().all(|p| !matches!(p, Packet::Publish(_))));
    drop(site);
}

/// A bridge's session restored from the store is the bridge's before the bridge connects:
/// after a restart with the remote broker down, what it carries is queued for it although the
/// ACL lets no client read it (a restored session has no listener until its client is back,
/// and `[auth]`'s rules would have dropped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_bridge_session_queues_outside_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "pattern write sensors/%c\n").unwrap();
    let stored = |cfg: &mut Config, name: &str| {
        cfg.persistence.enabled = Some(true);
        cfg.persistence.dir = dir.path().join(name);
    };
    let mut central_cfg = test_config();
    stored(&mut central_cfg, "central");
    let central = start_with(central_cfg.clone()).await;
    let addr = central.addr;
    central_cfg.listeners[0].bind = addr.to_string().parse().unwrap();
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    sub.subscribe(1, "site1/#", 2).await;
    drop(sub);
    let mut site_cfg = site_config(addr, "", TOPICS);
    site_cfg.auth.acl_file = Some(acl);
    stored(&mut site_cfg, "site");
    let mut at_c = watch_state(addr, "watch-c").await;
    let site = start_with(site_cfg.clone()).await;
    expect_state(&mut at_c, b"1").await;
    assert!(central.stop_within(Duration::from_secs(5)).await);
    assert!(site.stop_within(Duration::from_secs(5)).await);

    let site = start_with(site_cfg).await;
    let mut p = Raw::connect_v311(site.addr, "dev1").await;
    p.publish("sensors/dev1", b"queued", 1, false, 1).await;
    let central = start_with(central_cfg).await;
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    assert_eq!(next(&mut sub).await, msg("site1/sensors/dev1", "queued", 1));
    drop((site, central));
}

/// The bridge's session is readied at start, before clients are served and although the
/// remote broker has never been reached: what is published from the first moment waits for
/// the bridge. A restart with other `out` lines leaves the session subscribed to those only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_ready_before_the_remote_is_ever_reached() {
    let dir = tempfile::tempdir().unwrap();
    let mut central_cfg = test_config();
    central_cfg.persistence.enabled = Some(true);
    central_cfg.persistence.dir = dir.path().join("central");
    let central = start_with(central_cfg.clone()).await;
    let addr = central.addr;
    central_cfg.listeners[0].bind = addr.to_string().parse().unwrap();
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    sub.subscribe(1, "#", 2).await;
    drop(sub);
    assert!(central.stop_within(Duration::from_secs(5)).await);

    let old = "[[bridges.topics]]\npattern = \"old/#\"\n";
    let mut site_cfg = site_config(addr, "", old);
    site_cfg.persistence.enabled = Some(true);
    site_cfg.persistence.dir = dir.path().join("site");
    let site = start_with(site_cfg.clone()).await;
    let info = site
        .state()
        .session_info("local.site1")
        .expect("the bridge's session");
    assert_eq!(info.subscriptions, ["old/#"]);
    assert!(site.stop_within(Duration::from_secs(5)).await);

    site_cfg.bridges = site_config(addr, "", TOPICS).bridges;
    let site = start_with(site_cfg).await;
    let info = site
        .state()
        .session_info("local.site1")
        .expect("the bridge's session");
    let mut subs = info.subscriptions;
    subs.sort();
    assert_eq!(
        subs,
        ["both/#", "sensors/#"],
        "old/# is gone, the out lines are there"
    );
    let mut p = Raw::connect_v311(site.addr, "s-pub").await;
    p.publish("sensors/first", b"early", 2, false, 1).await;
    p.publish("old/x", b"not carried", 1, false, 2).await;
    let central = start_with(central_cfg).await;
    let mut sub = Raw::connect(addr, &ConnectOpts::v311("c-sub").clean(false))
        .await
        .0;
    assert_eq!(next(&mut sub).await, msg("site1/sensors/first", "early", 2));
    // Nothing else came: old/x was not carried (and `#` does not match the `$SYS` state
    // topic [MQTT-4.7.2-1]).
    let ping = sub.ping().await;
    assert!(
        ping.iter().all(|p| !matches!(p, Packet::Publish(_))),
        "{ping:?}"
    );
    drop((site, central));
}

/// A bridge carries what many clients published at the other broker: the per-client publish
/// rate limit does not apply to it (an MQTT 5 client above it is disconnected, 0x96, and the
/// bridge would only come back and resend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_rate_limit_does_not_hold_back_a_bridge() {
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let mut cfg = site_config(central.addr, "", TOPICS);
    cfg.limits.max_publish_rate = 5;
    let site = start_with(cfg).await;
    expect_state(&mut at_c, b"1").await;
    let mut at_s = client(site.addr, "s-sub", &["cmd/#"]).await;
    let mut pub_c = Raw::connect_v311(central.addr, "c-pub").await;
    for i in 0..50u16 {
        pub_c
            .publish("site1/cmd/x", format!("{i}").as_bytes(), 1, false, i + 1)
            .await;
    }
    for i in 0..50 {
        assert_eq!(next(&mut at_s).await, msg("cmd/x", &format!("{i}"), 1));
    }
    assert_eq!(site.state().metrics().bridges[0].connects.get(), 1);
    drop(site);
}

/// What the remote broker says it takes, under MQTT 5, shapes what the bridge sends it: a
/// Maximum QoS of 1 caps the bridge's subscriptions here, so a QoS 2 message goes out at QoS 1
/// (a QoS 2 PUBLISH would be a protocol error there [MQTT-3.2.2-11]); Retain Available 0
/// clears RETAIN [MQTT-3.2.2-14] and, after the one CONNACK 0x9A its retained will gets
/// [MQTT-3.2.2-13], the will goes without it; a Maximum Packet Size keeps larger messages
/// here (dropped as too large for the bridge's session) while the others cross. The link
/// stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_remotes_limits_shape_what_is_sent() {
    let mut central_cfg = test_config();
    central_cfg.mqtt.max_qos = 1;
    central_cfg.mqtt.retain_available = false;
    central_cfg.mqtt.max_packet_size = 512;
    let central = start_with(central_cfg).await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let site = start_with(site_config(
        central.addr,
        "protocol_version = \"mqttv50\"",
        TOPICS,
    ))
    .await;
    expect_state(&mut at_c, b"1").await;
    let mut sub = client_up_to(central.addr, "c-sub", "site1/#", 1).await;
    let mut p = Raw::connect_v311(site.addr, "s-pub").await;
    p.publish("sensors/big", &[b'x'; 1024], 2, false, 1).await;
    p.publish("sensors/t", b"kept", 2, true, 2).await;
    let got = sub.recv_and_ack().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("site1/sensors/t", &b"kept"[..])
    );
    assert_eq!(got.qos as u8, 1, "QoS 2 went out at the remote's maximum");
    assert!(
        !got.retain,
        "RETAIN cleared where retained messages are not available"
    );
    let m = &site.state().metrics().bridges[0];
    assert_eq!((m.connects.get(), m.failures.get()), (1, 1));
    drop(site);
}

/// A 3.1.1 client subscribed to `filter` at `qos`, the QoS the broker grants checked.
async fn client_up_to(addr: std::net::SocketAddr, id: &str, filter: &str, qos: u8) -> Raw {
    let mut c = Raw::connect_v311(addr, id).await;
    assert_eq!(c.subscribe(1, filter, qos).await, qos, "{filter}");
    c
}

/// A bridge's local client id is the bridge's alone: a client connecting with it is refused
/// (3.1.1 return code 2, identifier rejected) instead of taking the bridge's session over, and
/// the bridge stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_take_the_bridges_session_over() {
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let site = start_with(site_config(central.addr, "", TOPICS)).await;
    expect_state(&mut at_c, b"1").await;
    let (_c, ack) = Raw::connect_raw(site.addr, &ConnectOpts::v311(LOCAL_ID)).await;
    assert_eq!(ack.code.0, 2, "{ack:?}");
    let mut sub = client(central.addr, "c-sub", &["site1/#"]).await;
    let mut p = Raw::connect_v311(site.addr, "s-pub").await;
    p.publish("sensors/t", b"still up", 1, false, 1).await;
    assert_eq!(next(&mut sub).await, msg("site1/sensors/t", "still up", 1));
    assert_eq!(site.state().metrics().bridges[0].connects.get(), 1);
    drop(site);
}

/// `fallback_addresses`: while the main broker is down the bridge connects to the fallback;
/// once the main broker accepts connections again (checked every `keepalive_interval`) the
/// bridge leaves the fallback cleanly (its own `0` there at QoS 0, not the QoS 1 will) and
/// goes back to the main one, as Mosquitto's bridges do with `round_robin false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_serves_while_the_main_broker_is_down() {
    let main_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let fallback = start().await;
    let mut at_f = watch_state(fallback.addr, "watch-f").await;
    let extra = format!(
        "fallback_addresses = [\"{}\"]\nkeepalive_interval = \"1s\"",
        fallback.addr
    );
    let site = start_with(site_config(main_addr, &extra, TOPICS)).await;
    expect_state(&mut at_f, b"1").await;
    let mut sub_f = client(fallback.addr, "f-sub", &["site1/#"]).await;
    let mut p = Raw::connect_v311(site.addr, "s-pub").await;
    p.publish("sensors/t", b"via the fallback", 1, false, 1)
        .await;
    assert_eq!(
        next(&mut sub_f).await,
        msg("site1/sensors/t", "via the fallback", 1)
    );

    let mut cfg = test_config();
    cfg.listeners[0].bind = main_addr.to_string().parse().unwrap();
    let main = start_with(cfg).await;
    let mut at_m = watch_state(main.addr, "watch-m").await;
    expect_state(&mut at_m, b"1").await;
    let bye = expect_state(&mut at_f, b"0").await;
    assert_eq!(bye.qos as u8, 0, "the bridge's own 0, not its will");
    let mut sub_m = client(main.addr, "m-sub", &["site1/#"]).await;
    p.publish("sensors/t", b"via the main broker", 1, false, 2)
        .await;
    assert_eq!(
        next(&mut sub_m).await,
        msg("site1/sensors/t", "via the main broker", 1)
    );
    drop(site);
}

/// A remote broker that breaks the protocol after CONNACK gets its link dropped, with the
/// reason logged, and the bridge connects again: a packet type 3.1.1 does not have, a PUBLISH
/// at QoS 3 [MQTT-3.3.1-4], a Remaining Length of five bytes (spec 1.5.5). The broker itself
/// serves on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_breaks_the_protocol_is_dropped_and_tried_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = start_with(site_config(fake.local_addr().unwrap(), "", TOPICS)).await;
    let garbage: [&[u8]; 3] = [
        &[0xF0, 0x00],
        &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
    ];
    for bad in garbage {
        let (mut s, _) = tokio::time::timeout(WAIT, fake.accept())
            .await
            .expect("the bridge connects (again)")
            .unwrap();
        let mut buf = [0u8; 4096];
        // CONNECT (a 3.1.1 bridge: level 0x84), then a CONNACK accepting it.
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0 && buf[0] == 0x10, "CONNECT: {:02x?}", &buf[..n]);
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        s.write_all(bad).await.unwrap();
        // The bridge closes the link: reads reach EOF (after its SUBSCRIBE).
        let closed = tokio::time::timeout(WAIT, async {
            while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        });
        closed
            .await
            .expect("the bridge drops a link that breaks the protocol");
    }
    let mut p = Raw::connect_v311(site.addr, "still-serving").await;
    p.publish("sensors/t", b"x", 1, false, 1).await;
    drop(site);
}

/// Real clients each side of a Starling bridge: Debian's mosquitto_pub at the site and
/// mosquitto_sub at the central broker, and the other way round (skipped without
/// mosquitto-clients, a failure with STARLING_INTEROP=1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_talk_across_a_starling_bridge() {
    if !have_mosquitto_clients() {
        return;
    }
    let central = start().await;
    let mut at_c = watch_state(central.addr, "watch-c").await;
    let site = start_with(site_config(central.addr, "", TOPICS)).await;
    expect_state(&mut at_c, b"1").await;
    let mut sub_c = mosquitto_sub(central.port(), "site1/sensors/#").await;
    let mut sub_s = mosquitto_sub(site.port(), "cmd/#").await;
    mosquitto_pub(site.port(), "sensors/temp", "21.5").await;
    assert_eq!(next_msg(&mut sub_c).await, "MSG|site1/sensors/temp|21.5");
    mosquitto_pub(central.port(), "site1/cmd/fan", "on").await;
    assert_eq!(next_msg(&mut sub_s).await, "MSG|cmd/fan|on");
    drop(site);
}
