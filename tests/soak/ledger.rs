//! What the model soak's clients record, and the invariants checked over it at the end.
//!
//! Ordering across clients comes from one logical [`Clock`]: a client takes a tick right after
//! it read an acknowledgement (SUBACK, PUBACK, PUBCOMP) and right before it writes a packet
//! (PUBLISH, SUBSCRIBE, UNSUBSCRIBE). "SUBACK tick < PUBLISH tick" therefore means the
//! subscriber had its SUBACK, so the broker had the subscription, before the publisher sent.
//!
//! Messages are told apart by their payload, `m <client> <seq>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use starling::codec::QoS;

/// The logical clock shared by every client of a run.
#[derive(Debug, Default)]
pub struct Clock(AtomicU64);

impl Clock {
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// (publishing client index, sequence number in its log).
pub type Key = (usize, usize);

pub fn payload(client: usize, seq: usize) -> Bytes {
    Bytes::from(format!("m {client} {seq}"))
}

pub fn parse_payload(p: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(p).ok()?;
    let mut it = s.strip_prefix("m ")?.split(' ');
    let client = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((client, seq))
}

/// Topic filter matching, written independently of the broker's trie [MQTT-4.7.1-2]
/// [MQTT-4.7.1-3]; `$share/<group>/` is stripped first.
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = shared_parts(filter).map_or(filter, |(_, f)| f);
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `$share/<group>/<filter>` → (group, filter).
pub fn shared_parts(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// One message a client published.
#[derive(Debug, Clone)]
pub struct PubRecord {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    /// Tick before the first PUBLISH was written.
    pub first_send: u64,
    /// PUBLISH packets written for it (1 + resends with DUP=1).
    pub sends: u32,
    /// Tick after its PUBACK (QoS 1) or PUBCOMP (QoS 2) was read.
    pub acked: Option<u64>,
}

/// One subscription of one session, from its SUBACK to the moment something may have removed
/// it (UNSUBSCRIBE or a replacing SUBSCRIBE sent).
#[derive(Debug, Clone)]
pub struct SubInterval {
    pub filter: String,
    pub granted: QoS,
    pub start: u64,
    pub end: Option<u64>,
}

/// How one message reached one session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copies {
    /// RETAIN=0, DUP=0: a first transmission of a routed copy.
    pub fresh: u32,
    /// RETAIN=0, DUP=1: a redelivery.
    pub resent: u32,
    /// RETAIN=1: sent because of a new subscription.
    pub retained: u32,
    /// RETAIN=0 copies at QoS 2 handed to the application (first per packet id).
    pub qos2_delivered: u32,
}

/// One session of a client: from a CONNACK with Session Present 0 to the end of that session.
#[derive(Debug, Clone)]
pub struct EpochLog {
    /// The broker keeps it when the connection ends.
    pub persistent: bool,
    /// Known to be gone (non-persistent and its connection ended, or replaced by a clean start).
    pub ended: bool,
    pub subs: Vec<SubInterval>,
    pub copies: HashMap<Key, Copies>,
}

impl EpochLog {
    pub fn new(persistent: bool) -> EpochLog {
        EpochLog {
            persistent,
            ended: false,
            subs: Vec::new(),
            copies: HashMap::new(),
        }
    }

    /// Distinct shared subscriptions (`$share/g/f`) this session held that match `topic`:
    /// each may route its own copy of a message.
    fn shared_routes(&self, topic: &str) -> u32 {
        let mut seen: Vec<&str> = self
            .subs
            .iter()
            .filter(|s| shared_parts(&s.filter).is_some() && matches(&s.filter, topic))
            .map(|s| s.filter.as_str())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() as u32
    }

    /// Per topic, the (start, end) of the non-shared QoS >= 1 subscriptions covering it.
    fn windows<'a>(&self, topics: impl Iterator<Item = &'a str>) -> HashMap<&'a str, Windows> {
        let mut out = HashMap::new();
        for t in topics {
            out.entry(t).or_insert_with(|| {
                self.subs
                    .iter()
                    .filter(|s| {
                        shared_parts(&s.filter).is_none()
                            && s.granted != QoS::AtMostOnce
                            && matches(&s.filter, t)
                    })
                    .map(|s| (s.start, s.end))
                    .collect()
            });
        }
        out
    }
}

/// Everything one client recorded.
#[derive(Debug, Clone)]
pub struct ClientLog {
    pub id: String,
    pub pubs: Vec<PubRecord>,
    pub epochs: Vec<EpochLog>,
    pub errors: Vec<String>,
    pub ops: HashMap<&'static str, u64>,
}

/// The outcome of [`check`].
#[derive(Debug, Default)]
pub struct Verdict {
    /// Messages published at QoS 0, 1, 2.
    pub published: [u64; 3],
    /// QoS 1/2 messages acknowledged to their publisher.
    pub acked: u64,
    /// (message, session) pairs that had to arrive.
    pub required: u64,
    /// Copies received (RETAIN=0) over all sessions.
    pub received: u64,
    pub redelivered: u64,
    pub missing: u64,
    /// Protocol violations, each with its evidence (loss is counted in `missing`).
    pub violations: Vec<String>,
    pub missing_examples: Vec<String>,
}

/// Checks every recorded delivery against what was published, and every required delivery of
/// the sessions still alive at the end.
pub fn check(logs: &[ClientLog]) -> Verdict {
    let mut v = Verdict::default();
    for log in logs {
        for rec in &log.pubs {
            v.published[rec.qos as usize] += 1;
            v.acked += u64::from(rec.qos != QoS::AtMostOnce && rec.acked.is_some());
        }
    }
    for log in logs {
        for (n, epoch) in log.epochs.iter().enumerate() {
            check_copies(logs, log, n, epoch, &mut v);
        }
        if let Some(last) = log.epochs.last().filter(|e| e.persistent && !e.ended) {
            check_loss(logs, log, last, &mut v);
        }
    }
    v
}

fn check_copies(logs: &[ClientLog], log: &ClientLog, n: usize, e: &EpochLog, v: &mut Verdict) {
    let at = format!("{} session #{n}", log.id);
    for (&(client, seq), c) in &e.copies {
        let Some(rec) = logs.get(client).and_then(|l| l.pubs.get(seq)) else {
            v.violations.push(format!(
                "{at}: got message m {client} {seq}, never published"
            ));
            continue;
        };
        v.received += u64::from(c.fresh + c.resent);
        v.redelivered += u64::from(c.resent);
        let what = format!("{at}: m {client} {seq} ({:?} to {})", rec.qos, rec.topic);
        if c.retained > 0 && !rec.retain {
            v.violations.push(format!(
                "{what}: RETAIN=1 on a message published without RETAIN [MQTT-3.3.1-9]"
            ));
        }
        let routes = if rec.topic.starts_with("share/") {
            e.shared_routes(&rec.topic)
        } else {
            1
        };
        if c.qos2_delivered > routes {
            v.violations.push(format!(
                "{what}: delivered {} times at QoS 2 to one session (routes: {routes}) \
                 [MQTT-4.3.3-2]",
                c.qos2_delivered
            ));
        }
        // A copy is sent with DUP=0 once; every redelivery carries DUP=1 [MQTT-3.3.1-1], and
        // overlapping subscriptions of one session yield one copy (Starling, broker.rs).
        let routings = routes
            * if rec.qos == QoS::AtLeastOnce {
                rec.sends
            } else {
                1
            };
        if c.fresh > routings {
            v.violations.push(format!(
                "{what}: {} first transmissions (DUP=0) to one session, expected at most \
                 {routings}",
                c.fresh
            ));
        }
    }
}

type Windows = Vec<(u64, Option<u64>)>;

/// Every message acknowledged to its publisher must have reached this session when a
/// non-shared subscription at QoS >= 1 covering its topic was acknowledged before the PUBLISH
/// was sent and was not touched before the acknowledgement [MQTT-4.5.0-1].
fn check_loss(logs: &[ClientLog], log: &ClientLog, e: &EpochLog, v: &mut Verdict) {
    let topics = logs
        .iter()
        .flat_map(|l| l.pubs.iter().map(|p| p.topic.as_str()));
    let windows = e.windows(topics);
    for (client, other) in logs.iter().enumerate() {
        for (seq, rec) in other.pubs.iter().enumerate() {
            let Some(acked) = rec.acked.filter(|_| rec.qos != QoS::AtMostOnce) else {
                continue;
            };
            let required = windows[rec.topic.as_str()]
                .iter()
                .any(|&(start, end)| start < rec.first_send && end.is_none_or(|end| end > acked));
            if !required {
                continue;
            }
            v.required += 1;
            let got = e
                .copies
                .get(&(client, seq))
                .is_some_and(|c| c.fresh + c.resent > 0);
            if !got {
                v.missing += 1;
                if v.missing_examples.len() < 10 {
                    let covering: Vec<&SubInterval> = e
                        .subs
                        .iter()
                        .filter(|s| matches(&s.filter, &rec.topic))
                        .collect();
                    v.missing_examples.push(format!(
                        "{}: never received m {client} {seq} ({:?} to {}, sent at tick {}, \
                         acked at tick {acked}); subscriptions covering it: {covering:?}",
                        log.id, rec.qos, rec.topic, rec.first_send
                    ));
                }
            }
        }
    }
}

#[test]
fn matching_and_payloads() {
    assert!(matches("soak/#", "soak/1/2"));
    assert!(matches("soak/+/2", "soak/1/2"));
    assert!(!matches("soak/+", "soak/1/2"));
    assert!(matches("$share/ga/share/+", "share/1"));
    assert!(
        matches("soak/1/#", "soak/1"),
        "[MQTT-4.7.1-2] # matches the parent level"
    );
    assert_eq!(parse_payload(&payload(3, 17)), Some((3, 17)));
    assert_eq!(parse_payload(b"probe round 1"), None);
}
