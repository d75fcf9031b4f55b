//! Bridges over TLS: the remote broker's certificate is verified against the bridge's
//! `cafile` (nothing else is trusted), and a client certificate is presented when the bridge
//! has one. The remote is a Starling broker with TLS listeners; certificates are made by
//! rcgen at run time.

#[path = "transports/support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use starling::config::Config;
use starling::Broker;
use support::*;
use tokio::net::TcpStream;

/// A site broker (plain listener) with a bridge `up` to `remote` over TLS, carrying
/// `sensors/#` out, with `extra` keys.
async fn site(remote: SocketAddr, pki: &Pki, extra: &str, id: &str) -> starling::BrokerHandle {
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval = \"0s\"\n\
         [[bridges]]\nname = \"up\"\naddress = \"{remote}\"\nremote_clientid = \"{id}\"\n\
         restart_timeout = \"20ms\"\nrestart_timeout_max = \"100ms\"\n\
         cafile = {ca:?}\n{extra}\n\
         [[bridges.topics]]\npattern = \"sensors/#\"\nqos = 1\nremote_prefix = \"{id}/\"\n",
        ca = pki.path("ca.pem").display().to_string(),
    );
    let cfg = Config::from_toml_str(&toml).expect("site config");
    Broker::start(cfg).await.expect("site starts")
}

/// Polls `cond` (no event to wait on: a counter inside the broker) for up to 10 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Over TLS to the listener whose certificate the CA signed: messages cross; with a client
/// certificate to the mutual-TLS listener (which takes the certificate's CN as username).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_over_tls_and_mutual_tls_carries_messages() {
    let pki = Pki::new("bridge-tls");
    let central = Broker::start(config(&pki)).await.expect("central starts");
    let addrs = central.local_addrs();
    let (plain, mqtts, mtls) = (addrs[0], addrs[1], addrs[2]);
    for (id, remote, extra) in [
        ("site1", mqtts, String::new()),
        (
            "site2",
            mtls,
            format!(
                "certfile = {:?}\nkeyfile = {:?}\n",
                pki.path("client.pem").display().to_string(),
                pki.path("client.key").display().to_string()
            ),
        ),
    ] {
        let mut state = watcher(plain, &format!("$SYS/broker/connection/{id}/state")).await;
        let mut sub = watcher(plain, &format!("{id}/#")).await;
        let site = site(remote, &pki, &extra, id).await;
        // The retained state of an earlier bridge may come first.
        while state.recv_publish().await.expect("a state").1 != b"1" {}
        let tcp = TcpStream::connect(site.local_addrs()[0]).await.unwrap();
        let (mut p, rc) = Mqtt::connect(tcp, "s-pub").await.unwrap();
        assert_eq!(rc, 0);
        p.publish("sensors/t", b"over tls").await.unwrap();
        expect(&mut sub, b"over tls").await;
        let info = central
            .state()
            .session_info(id)
            .expect("the bridge's session");
        let user = info.username.as_deref().map(str::to_owned);
        let want = (remote == mtls).then(|| "client1".to_owned());
        assert_eq!(user, want, "username of the bridge at {remote}");
        site.shutdown();
        site.wait().await;
    }
    central.shutdown();
}

/// A remote certificate the bridge's CA did not sign is refused: the link never comes up and
/// every attempt counts as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("bridge-tls-central");
    let other = Pki::new("bridge-tls-other");
    let central = Broker::start(config(&pki)).await.expect("central starts");
    let mqtts = central.local_addrs()[1];
    let site = site(mqtts, &other, "", "site1").await;
    let m = &site.state().metrics().bridges[0];
    eventually("two attempts failed", || m.failures.get() >= 2).await;
    assert_eq!(m.connects.get(), 0);
    assert!(central.state().session_info("site1").is_none());
    site.shutdown();
    central.shutdown();
}
