//! `bind` as TCP address or unix socket, the unix-socket and PROXY keys, `handshake_timeout` on
//! plain listeners, and how check-config renders them.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{BindAddr, Cidr, Config, ConfigError, ListenerProtocol};

fn invalid(toml: &str) -> (String, String) {
    match Config::from_toml_str(toml) {
        Err(ConfigError::Invalid { key, reason }) => (key, reason),
        other => panic!("expected an Invalid error for {toml:?}, got {other:?}"),
    }
}

#[test]
fn bind_is_an_address_or_a_unix_socket() {
    let c = Config::from_toml_str(
        r#"
[[listeners]]
bind = "0.0.0.0:1883"

[[listeners]]
bind = "unix:/run/starling/starling.sock"
protocol = "ws"
mode = "0660"
owner = "mqtt"
group = "1000"
"#,
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].bind,
        BindAddr::Tcp("0.0.0.0:1883".parse().unwrap())
    );
    assert_eq!(
        c.listeners[1].bind,
        BindAddr::Unix("/run/starling/starling.sock".into())
    );
    assert_eq!(c.listeners[1].protocol, ListenerProtocol::Ws);
    // A unix socket is local, like loopback: anonymous clients stay allowed by default.
    assert!(!c.listeners_all_loopback(), "0.0.0.0 is not local");
    let local = Config::from_toml_str("[[listeners]]\nbind = \"unix:/tmp/s.sock\"\n").unwrap();
    assert!(local.listeners_all_loopback());
    // Rendered and parsed back unchanged, with `bind` spelt as written.
    let text = c.render_effective(false);
    assert!(
        text.contains("bind = \"unix:/run/starling/starling.sock\""),
        "{text}"
    );
    assert!(text.contains("mode = \"0660\""), "{text}");
    assert!(text.contains("proxy_protocol = false"), "{text}");
    let back = Config::from_toml_str(&text).unwrap();
    assert_eq!(back.listeners[1], c.effective(false).listeners[1]);
    // A relative socket path is relative to the configuration file.
    let mut r = Config::from_toml_str("[[listeners]]\nbind = \"unix:run/s.sock\"\n").unwrap();
    r.resolve_paths(Path::new("/etc/starling"));
    assert_eq!(
        r.listeners[0].bind,
        BindAddr::Unix("/etc/starling/run/s.sock".into())
    );
    let unset = local.render_effective(false);
    for key in ["mode", "owner", "group"] {
        assert!(
            unset.contains(&format!("# listeners[0].{key} is not set")),
            "{unset}"
        );
    }
}

#[test]
fn bind_and_unix_keys_are_validated() {
    let err = Config::from_toml_str("[[listeners]]\nbind = \"localhost\"\n").unwrap_err();
    assert!(err.to_string().contains("unix:"), "says both forms: {err}");
    for (doc, key) in [
        ("[[listeners]]\nmode = \"0600\"\n", "listeners[0].mode"),
        ("[[listeners]]\nowner = \"root\"\n", "listeners[0].owner"),
        ("[[listeners]]\ngroup = \"root\"\n", "listeners[0].group"),
        ("[[listeners]]\nbind = \"unix:\"\n", "listeners[0].bind"),
        (
            "[[listeners]]\nbind = \"unix:/s\"\nmode = \"rw\"\n",
            "listeners[0].mode",
        ),
        (
            "[[listeners]]\nbind = \"unix:/s\"\nmode = \"01777\"\n",
            "listeners[0].mode",
        ),
        (
            "[[listeners]]\nbind = \"unix:/s\"\nowner = \"\"\n",
            "listeners[0].owner",
        ),
        (
            "[[listeners]]\nproxy_protocol_trusted = [\"10.0.0.0/8\"]\n",
            "listeners[0].proxy_protocol_trusted",
        ),
    ] {
        assert_eq!(invalid(doc).0, key, "{doc}");
    }
    let long = format!("[[listeners]]\nbind = \"unix:/{}\"\n", "a".repeat(120));
    assert_eq!(invalid(&long).0, "listeners[0].bind");
    let dup = "[[listeners]]\nbind = \"unix:/s\"\n[[listeners]]\nbind = \"unix:/s\"\n";
    assert_eq!(invalid(dup).0, "listeners[1].bind");
}

#[test]
fn handshake_timeout_on_plain_listeners() {
    let c = Config::from_toml_str(
        "[mqtt]\nconnect_timeout = \"7s\"\n[[listeners]]\n[[listeners]]\nbind = \"127.0.0.1:0\"\n\
         handshake_timeout = \"2s\"\n",
    )
    .unwrap();
    let connect = c.mqtt.connect_timeout;
    assert_eq!(
        c.listeners[0].handshake_timeout(connect),
        Duration::from_secs(7)
    );
    assert_eq!(
        c.listeners[1].handshake_timeout(connect),
        Duration::from_secs(2)
    );
    let text = c.render_effective(false);
    assert!(text.contains("handshake_timeout = \"7s\""), "{text}");
    assert!(text.contains("handshake_timeout = \"2s\""), "{text}");
}

#[test]
fn proxy_protocol_keys_and_cidrs() {
    let c = Config::from_toml_str(
        "[[listeners]]\nproxy_protocol = true\n[[listeners]]\nbind = \"127.0.0.1:0\"\n\
         proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/8\", \"2001:db8::/32\", \
         \"192.0.2.7\"]\n",
    )
    .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // A loopback listener behind a proxy serves remote clients: not local for anonymous access.
    assert!(!c.listeners_all_loopback());
    let default = c.listeners[0].proxy_trusted();
    assert!(default.iter().any(|n| n.contains(ip("127.0.0.1"))));
    assert!(default.iter().any(|n| n.contains(ip("::1"))));
    assert!(!default.iter().any(|n| n.contains(ip("127.0.0.2"))), "/32");
    assert!(!default.iter().any(|n| n.contains(ip("10.0.0.1"))));
    let set = c.listeners[1].proxy_trusted();
    assert!(set.iter().any(|n| n.contains(ip("10.255.0.1"))));
    assert!(
        set.iter().any(|n| n.contains(ip("::ffff:10.1.2.3"))),
        "v4-mapped"
    );
    assert!(set.iter().any(|n| n.contains(ip("2001:db8:ffff::1"))));
    assert!(!set.iter().any(|n| n.contains(ip("2001:db9::1"))));
    assert!(set.iter().any(|n| n.contains(ip("192.0.2.7"))));
    assert!(!set.iter().any(|n| n.contains(ip("192.0.2.8"))));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("198.51.100.1")) && !all.contains(ip("2001:db8::1")));
    for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/-1"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    let text = c.render_effective(false);
    assert!(
        text.contains("proxy_protocol_trusted = [\"127.0.0.1/32\", \"::1/128\"]"),
        "{text}"
    );
    assert_eq!(
        Config::from_toml_str(&text).unwrap().listeners,
        c.effective(false).listeners
    );
}
