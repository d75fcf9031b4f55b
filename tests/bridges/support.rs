//! What the bridge tests share: the site broker's bridge (`up`, remote client id `site1`)
//! and its topic lines, the state topic, and small client helpers over `common::Raw`.

#![allow(dead_code)]

use std::net::SocketAddr;

use starling::codec::Publish;
use starling::config::Config;

use super::common::{test_config, Raw};

/// The bridge's client id at the remote broker.
pub const REMOTE_ID: &str = "site1";
/// Its state topic, at both brokers.
pub const STATE: &str = "$SYS/broker/connection/site1/state";
/// The bridge's session at the site broker (`local.<remote client id>`, the default).
pub const LOCAL_ID: &str = "local.site1";

/// Out: `sensors/#` at the site goes to `site1/sensors/#` at the remote. In: `site1/cmd/#`
/// there comes in as `cmd/#`. Both: `both/#` unchanged.
pub const TOPICS: &str = r#"
[[bridges.topics]]
pattern = "sensors/#"
direction = "out"
qos = 2
remote_prefix = "site1/"
[[bridges.topics]]
pattern = "cmd/#"
direction = "in"
qos = 2
remote_prefix = "site1/"
[[bridges.topics]]
pattern = "both/#"
direction = "both"
qos = 2
"#;

/// A site broker whose bridge `up` connects to `remote` as `site1`, retrying fast, with
/// `extra` bridge keys and `topics` (`[[bridges.topics]]` tables).
pub fn site_config(remote: SocketAddr, extra: &str, topics: &str) -> Config {
    let toml = format!(
        "[[bridges]]\nname = \"up\"\naddress = \"{remote}\"\nremote_clientid = \"{REMOTE_ID}\"\n\
         restart_timeout = \"20ms\"\nrestart_timeout_max = \"100ms\"\n{extra}\n{topics}"
    );
    let mut cfg = test_config();
    cfg.bridges = Config::from_toml_str(&toml).expect("bridge config").bridges;
    cfg
}

/// A client (at either broker) subscribed to the bridge's state topic at QoS 1, so that a
/// message's QoS tells the will (QoS 1) from the bridge's own notification (QoS 0).
pub async fn watch_state(addr: SocketAddr, id: &str) -> Raw {
    let mut w = Raw::connect_v311(addr, id).await;
    assert_eq!(w.subscribe(1, STATE, 1).await, 1);
    w
}

/// Reads the state topic until it says `want` (retained copies first, then live ones).
pub async fn expect_state(w: &mut Raw, want: &[u8]) -> Publish {
    loop {
        let p = w.recv_and_ack().await;
        assert_eq!(&*p.topic, STATE);
        if &p.payload[..] == want {
            return p;
        }
    }
}

/// A 3.1.1 client subscribed to `filters` at QoS 2.
pub async fn client(addr: SocketAddr, id: &str, filters: &[&str]) -> Raw {
    let mut c = Raw::connect_v311(addr, id).await;
    for (i, f) in filters.iter().enumerate() {
        assert_eq!(c.subscribe(i as u16 + 1, f, 2).await, 2, "{f}");
    }
    c
}

/// Receives (and acknowledges) the next PUBLISH: its topic, payload and QoS.
pub async fn next(c: &mut Raw) -> (String, String, u8) {
    let p = c.recv_and_ack().await;
    let payload = String::from_utf8_lossy(&p.payload).into_owned();
    (p.topic.to_string(), payload, p.qos as u8)
}

/// What [`next`] returns for a message.
pub fn msg(topic: &str, payload: &str, qos: u8) -> (String, String, u8) {
    (topic.to_string(), payload.to_string(), qos)
}
