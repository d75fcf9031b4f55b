//! The `retained` scenario: what a large retained set costs a broker in memory, and how fast a
//! wildcard subscriber receives all of it (issue 15's retained row).
//!
//! A loader publishes `messages` retained messages of `size` bytes on `bench/<run>/ret/<i>`
//! (QoS 0, pipelined), then one QoS 1 PUBLISH on another topic: its PUBACK means the broker has
//! handled every retained PUBLISH before it (a broker handles one connection's packets in
//! order). Broker RSS is read before and after (with `--broker-pid`). Then a new client
//! subscribes to `bench/<run>/ret/#` at `qos` and reads until it has every message, or until
//! nothing came for `idle`: a broker that caps what it queues for one client stops early
//! (Mosquitto's `max_queued_messages`, 1,000 by default, applies at QoS 1 and 2).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Json;
use crate::wire::{self, In, ReadBuf, PUBACK};

/// What one retained run does.
pub struct RetainedSettings {
    pub target: SocketAddr,
    pub broker_pid: Option<u32>,
    pub run: String,
    pub keepalive: u16,
    pub messages: usize,
    pub size: usize,
    pub qos: u8,
    pub idle: Duration,
}

/// Loads the retained set, measures the broker's RSS growth, then streams the set to one
/// wildcard subscriber and reports its rate.
pub async fn run(s: RetainedSettings, label: &str) -> anyhow::Result<Json> {
    let rss = |pid: Option<u32>| pid.and_then(|p| crate::os::memory(&p.to_string()));
    let before = rss(s.broker_pid);
    let load_start = Instant::now();
    load(&s).await.context("loading the retained messages")?;
    let load_s = load_start.elapsed().as_secs_f64();
    let after = rss(s.broker_pid);
    let (delivered, delivery_s) = stream(&s).await.context("streaming them to a subscriber")?;
    let mut j = Json::new();
    j.str("scenario", "retained")
        .str("target", &s.target.to_string())
        .str("run", &s.run)
        .str("label", label)
        .int("retained_messages", s.messages as u64)
        .int("size", s.size as u64)
        .int("qos", u64::from(s.qos))
        .num("retained_load_s", load_s);
    if let (Some((b, _)), Some((a, _))) = (before, after) {
        j.int("broker_rss_before", b)
            .int("broker_rss_loaded", a)
            .num(
                "retained_bytes_per_msg",
                a.saturating_sub(b) as f64 / s.messages.max(1) as f64,
            );
    }
    j.int("retained_delivered", delivered as u64)
        .num("retained_delivery_s", delivery_s)
        .num(
            "retained_delivery_rate",
            delivered as f64 / delivery_s.max(1e-9),
        )
        .int("errors", 0);
    Ok(j)
}

fn topic(run: &str, i: usize) -> String {
    format!("bench/{run}/ret/{i}")
}

/// Appends one MQTT 3.1.1 PUBLISH.
fn push_publish(out: &mut Vec<u8>, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let mut remaining = 2 + topic.len() + id_len + payload.len();
    out.push(0x30 | (qos << 1) | u8::from(retain));
    loop {
        let b = (remaining % 128) as u8;
        remaining /= 128;
        out.push(if remaining > 0 { b | 0x80 } else { b });
        if remaining == 0 {
            break;
        }
    }
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&1u16.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Publishes the set, then waits for the PUBACK of a QoS 1 marker published after it.
async fn load(s: &RetainedSettings) -> anyhow::Result<()> {
    let loader_id = format!("bench-{}-retloader", s.run);
    let mut c = wire::connect(s.target, None, &loader_id, s.keepalive, true).await?;
    let payload = vec![b'r'; s.size];
    let mut out = Vec::with_capacity(1 << 20);
    for i in 0..s.messages {
        push_publish(&mut out, &topic(&s.run, i), 0, true, &payload);
        if out.len() >= 1 << 20 {
            c.stream.write_all(&out).await?;
            out.clear();
        }
    }
    push_publish(&mut out, &format!("bench/{}/marker", s.run), 1, false, b"m");
    c.stream.write_all(&out).await?;
    let mut rb = ReadBuf::new(4096, &c.leftover);
    loop {
        while let Some((pkt, n)) = wire::parse(rb.data())? {
            let acked = matches!(pkt, In::PubAck(1));
            rb.consume(n);
            if acked {
                let _ = c.stream.write_all(&wire::DISCONNECT).await;
                return Ok(());
            }
        }
        let n = c.stream.read(rb.spare()).await?;
        if n == 0 {
            bail!("broker closed the loader's connection");
        }
        rb.filled(n);
    }
}

/// Subscribes to the whole set; returns how many messages came and the seconds from SUBSCRIBE
/// to the last one.
async fn stream(s: &RetainedSettings) -> anyhow::Result<(usize, f64)> {
    let sub_id = format!("bench-{}-retsub", s.run);
    let mut c = wire::connect(s.target, None, &sub_id, s.keepalive, true).await?;
    let start = Instant::now();
    // The SUBACK may come after the first retained messages: read everything here.
    let filter = format!("bench/{}/ret/#", s.run);
    c.subscribe_no_wait(&filter, s.qos).await?;
    let mut rb = ReadBuf::new(1 << 16, &c.leftover);
    let (mut got, mut last) = (0usize, start);
    let mut acks = Vec::new();
    while got < s.messages {
        while let Some((pkt, n)) = wire::parse(rb.data())? {
            if let In::Publish { qos, packet_id, .. } = pkt {
                got += 1;
                if qos == 1 {
                    wire::push_ack(&mut acks, PUBACK, packet_id);
                }
            }
            rb.consume(n);
        }
        last = if got > 0 { Instant::now() } else { last };
        if !acks.is_empty() {
            c.stream.write_all(&acks).await?;
            acks.clear();
        }
        if got >= s.messages {
            break;
        }
        match tokio::time::timeout(s.idle, c.stream.read(rb.spare())).await {
            Err(_) => break,
            Ok(Ok(0)) => bail!("broker closed the subscriber's connection after {got}"),
            Ok(Ok(n)) => rb.filled(n),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let _ = c.stream.write_all(&wire::DISCONNECT).await;
    Ok((got, last.duration_since(start).as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_parse_back() {
        let mut out = Vec::new();
        push_publish(&mut out, "bench/x/ret/1", 0, true, &[7; 200]);
        push_publish(&mut out, "m", 1, false, b"m");
        assert_eq!(out[0], 0x31);
        let (p, n) = wire::parse(&out).expect("ok").expect("whole");
        assert!(matches!(p, In::Publish { qos: 0, payload, .. } if payload.len() == 200));
        let (p, _) = wire::parse(&out[n..]).expect("ok").expect("whole");
        assert!(matches!(
            p,
            In::Publish {
                qos: 1,
                packet_id: 1,
                ..
            }
        ));
    }
}
