//! Offline inspection behind `starling store check` and `starling store dump`: decode every
//! record, cross-check references and refcounts, print records human-readably.
//!
//! Invariants: nothing here writes; every decode failure is reported, never a panic; payloads
//! are printed as a length and at most [`PREVIEW`] bytes, so a dump of a store holding large
//! messages stays readable.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Write;

use super::encoding::{self as enc, DecodeError, InflightRecord};
use super::engine::{scan_all, Ks, Kv, META_FORMAT_VERSION, META_MSG_ID_HW};
use super::{InflightStage, StoreError, StoredMessage};

/// Bytes of a payload shown by `dump`.
pub const PREVIEW: usize = 32;

/// Problems listed in full before the rest are only counted.
const MAX_LISTED: usize = 50;

/// The result of a check.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckReport {
    /// The stored format version, when present.
    pub format_version: Option<u32>,
    /// Records per keyspace, in keyspace order.
    pub counts: Vec<(&'static str, u64)>,
    /// Records that do not decode.
    pub corrupt: Vec<String>,
    /// Records that decode but disagree with others: orphans, dangling references, wrong
    /// refcounts.
    pub inconsistent: Vec<String>,
    /// Problems beyond the first [`MAX_LISTED`] of each kind, only counted.
    pub unlisted: u64,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.inconsistent.is_empty() && self.unlisted == 0
    }

    fn corrupt(&mut self, e: StoreError) {
        if self.corrupt.len() < MAX_LISTED {
            self.corrupt.push(e.to_string());
        } else {
            self.unlisted += 1;
        }
    }

    fn inconsistent(&mut self, msg: String) {
        if self.inconsistent.len() < MAX_LISTED {
            self.inconsistent.push(msg);
        } else {
            self.unlisted += 1;
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format_version {
            Some(v) => writeln!(f, "format version: {v}")?,
            None => writeln!(f, "format version: missing")?,
        }
        for (name, n) in &self.counts {
            writeln!(f, "{name:>10}: {n} records")?;
        }
        for c in &self.corrupt {
            writeln!(f, "corrupt: {c}")?;
        }
        for i in &self.inconsistent {
            writeln!(f, "inconsistent: {i}")?;
        }
        if self.unlisted > 0 {
            writeln!(f, "... and {} more problems", self.unlisted)?;
        }
        if self.is_ok() {
            write!(f, "OK: every record decodes and every reference resolves")
        } else {
            write!(
                f,
                "FAILED: {} corrupt, {} inconsistent records",
                self.corrupt.len() as u64 + self.unlisted,
                self.inconsistent.len()
            )
        }
    }
}

fn at(ks: Ks, key: &[u8]) -> impl FnOnce(DecodeError) -> StoreError + '_ {
    move |e| e.at(ks.name(), key)
}

/// Every record of every keyspace, with the checks described on [`CheckReport`]. A keyspace
/// that cannot be read at all is reported as corrupt.
pub(crate) fn check(kv: &dyn Kv) -> CheckReport {
    let mut r = CheckReport::default();
    let seen = scan_records(kv, &mut r);
    check_owners(&mut r, seen.per_client, &seen.clients);
    check_inflight_targets(kv, &mut r, seen.inflight_publish);
    check_refcounts(&mut r, &seen.refs, &seen.bodies, &seen.stored_refs);
    r
}

/// What the scan gathers for the cross-checks, which need every record first.
#[derive(Default)]
struct Seen {
    /// The `meta` record's format version, when present.
    format_version: Option<u32>,
    /// Client ids of the `sessions` records.
    clients: BTreeSet<String>,
    /// Queue entries naming each shared message body.
    refs: HashMap<u64, u64>,
    /// Ids of the stored message bodies.
    bodies: BTreeSet<u64>,
    /// Refcounts as stored in `msg_refs`.
    stored_refs: HashMap<u64, u64>,
    /// Inflight publishes: client, packet id, queue seq.
    inflight_publish: Vec<(String, u16, u64)>,
    /// The client of every client-keyed record, in scan order.
    per_client: Vec<(Ks, String)>,
}

/// Decodes every record, counting them per keyspace and reporting those that do not decode.
fn scan_records(kv: &dyn Kv, r: &mut CheckReport) -> Seen {
    let mut counts = [0u64; 9];
    let mut seen = Seen::default();
    for ks in Ks::ALL {
        let result = scan_all(kv, ks, &mut |k, v| {
            counts[ks.index()] += 1;
            if let Err(e) = check_record(ks, k, v, &mut seen) {
                r.corrupt(e);
            }
            Ok(true)
        });
        if let Err(e) = result {
            r.corrupt(e);
        }
    }
    r.counts = Ks::ALL
        .iter()
        .map(|ks| (ks.name(), counts[ks.index()]))
        .collect();
    r.format_version = seen.format_version;
    seen
}

/// Decodes one record and notes in `seen` what the cross-checks need of it.
fn check_record(ks: Ks, k: &[u8], v: &[u8], seen: &mut Seen) -> Result<(), StoreError> {
    match ks {
        Ks::Meta => {
            if k == META_FORMAT_VERSION {
                seen.format_version = Some(enc::decode_format_version(v).map_err(at(ks, k))?);
            }
        }
        Ks::Sessions => {
            let id = enc::decode_str_key(k, "client id").map_err(at(ks, k))?;
            enc::decode_session(id.clone(), v).map_err(at(ks, k))?;
            seen.clients.insert(id);
        }
        Ks::Subs => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            let f = enc::decode_str_key(rest, "filter").map_err(at(ks, k))?;
            enc::decode_subscription(f, v).map_err(at(ks, k))?;
            seen.per_client.push((ks, c));
        }
        Ks::Queue => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            enc::decode_u64_suffix(rest).map_err(at(ks, k))?;
            let q = enc::decode_queue_entry(v).map_err(at(ks, k))?;
            if q.body.is_none() {
                *seen.refs.entry(q.msg_id).or_default() += 1;
            }
            seen.per_client.push((ks, c));
        }
        Ks::Msgs => {
            let id = enc::decode_u64_suffix(k).map_err(at(ks, k))?;
            enc::decode_message(v).map_err(at(ks, k))?;
            seen.bodies.insert(id);
        }
        Ks::MsgRefs => {
            let id = enc::decode_u64_suffix(k).map_err(at(ks, k))?;
            seen.stored_refs
                .insert(id, enc::decode_refcount(v).map_err(at(ks, k))?);
        }
        Ks::Inflight => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            let pid = enc::decode_u16_suffix(rest).map_err(at(ks, k))?;
            // A record holding its own message names no queue entry.
            if let InflightRecord::Queue(InflightStage::Publish, seq) =
                enc::decode_inflight(v).map_err(at(ks, k))?
            {
                seen.inflight_publish.push((c.clone(), pid, seq));
            }
            seen.per_client.push((ks, c));
        }
        Ks::Qos2In => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            enc::decode_u16_suffix(rest).map_err(at(ks, k))?;
            enc::decode_inbound_qos2(v).map_err(at(ks, k))?;
            seen.per_client.push((ks, c));
        }
        Ks::Retained => check_retained(k, v)?,
    }
    Ok(())
}

/// A retained record is keyed by its topic: one whose topic differs is corrupt.
fn check_retained(k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    let ks = Ks::Retained;
    let m = enc::decode_message(v).map_err(at(ks, k))?;
    if m.topic.as_bytes() != k {
        return Err(
            DecodeError(format!("record topic {:?} differs from its key", m.topic))
                .at(ks.name(), k),
        );
    }
    Ok(())
}

/// Every client-keyed record must belong to a stored session.
fn check_owners(
    r: &mut CheckReport,
    mut per_client: Vec<(Ks, String)>,
    clients: &BTreeSet<String>,
) {
    per_client.dedup();
    for (ks, c) in per_client {
        if !clients.contains(&c) {
            r.inconsistent(format!(
                "`{}` has records of unknown session {c:?}",
                ks.name()
            ));
        }
    }
}

/// Every inflight publish must name a queue entry that exists.
fn check_inflight_targets(
    kv: &dyn Kv,
    r: &mut CheckReport,
    inflight_publish: Vec<(String, u16, u64)>,
) {
    for (c, pid, seq) in inflight_publish {
        match kv.get(Ks::Queue, &enc::seq_key(&c, seq)) {
            Ok(Some(_)) => {}
            Ok(None) => r.inconsistent(format!(
                "inflight packet {pid} of {c:?} names missing queue entry {seq}"
            )),
            Err(e) => r.corrupt(e),
        }
    }
}

/// Shared message bodies, their stored refcounts and the queue entries naming them must
/// agree.
fn check_refcounts(
    r: &mut CheckReport,
    refs: &HashMap<u64, u64>,
    bodies: &BTreeSet<u64>,
    stored_refs: &HashMap<u64, u64>,
) {
    for (id, n) in refs {
        if !bodies.contains(id) {
            r.inconsistent(format!(
                "message {id} is named by {n} queue entries but missing"
            ));
        }
        if stored_refs.get(id) != Some(n) {
            r.inconsistent(format!(
                "message {id} has refcount {:?} but {n} queue entries",
                stored_refs.get(id)
            ));
        }
    }
    for id in bodies {
        if !refs.contains_key(id) {
            r.inconsistent(format!(
                "message {id} is stored but no queue entry names it"
            ));
        }
    }
    for id in stored_refs.keys() {
        if !refs.contains_key(id) && !bodies.contains(id) {
            r.inconsistent(format!("refcount of message {id} without a message"));
        }
    }
}

fn payload(p: &[u8]) -> String {
    let shown: String = p
        .iter()
        .take(PREVIEW)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    let more = if p.len() > PREVIEW { "…" } else { "" };
    format!("{} bytes \"{shown}{more}\"", p.len())
}

fn message(m: &StoredMessage) -> String {
    let mut s = format!(
        "topic={:?} qos={} retain={} payload={}",
        m.topic,
        m.qos as u8,
        m.retain,
        payload(&m.payload)
    );
    if let Some(t) = m.expires_at_unix_ms {
        s.push_str(&format!(" expires_at_unix_ms={t}"));
    }
    if let Some(p) = &m.publisher {
        s.push_str(&format!(" publisher={p:?}"));
    }
    s
}

/// One line describing a record.
fn describe(ks: Ks, k: &[u8], v: &[u8]) -> Result<String, StoreError> {
    Ok(match ks {
        Ks::Meta => {
            let value = if k == META_FORMAT_VERSION {
                enc::decode_format_version(v)
                    .map_err(at(ks, k))?
                    .to_string()
            } else if k == META_MSG_ID_HW {
                enc::decode_refcount(v).map_err(at(ks, k))?.to_string()
            } else {
                format!("{} bytes", v.len())
            };
            format!("{} = {value}", enc::key_display(k))
        }
        Ks::Sessions => describe_session(k, v)?,
        Ks::Subs => describe_subscription(k, v)?,
        Ks::Queue => describe_queue_entry(k, v)?,
        Ks::Msgs => {
            let id = enc::decode_u64_suffix(k).map_err(at(ks, k))?;
            let m = enc::decode_message(v).map_err(at(ks, k))?;
            format!("msg={id} {}", message(&m))
        }
        Ks::MsgRefs => {
            let id = enc::decode_u64_suffix(k).map_err(at(ks, k))?;
            let n = enc::decode_refcount(v).map_err(at(ks, k))?;
            format!("msg={id} refs={n}")
        }
        Ks::Inflight => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            let pid = enc::decode_u16_suffix(rest).map_err(at(ks, k))?;
            match enc::decode_inflight(v).map_err(at(ks, k))? {
                InflightRecord::Queue(stage, seq) => {
                    format!("client={c:?} packet_id={pid} stage={stage:?} seq={seq}")
                }
                InflightRecord::Owned(order, entry) => {
                    let stage = match &entry {
                        Some(d) => format!(
                            "Publish qos={} subscription_ids={:?} {}",
                            d.qos as u8,
                            d.subscription_ids,
                            message(&d.msg)
                        ),
                        None => "Released".into(),
                    };
                    format!(
                        "client={c:?} packet_id={pid} sent_before_seq={} nth={} stage={stage}",
                        order.before, order.nth
                    )
                }
            }
        }
        Ks::Qos2In => {
            let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
            let pid = enc::decode_u16_suffix(rest).map_err(at(ks, k))?;
            let m = enc::decode_inbound_qos2(v).map_err(at(ks, k))?;
            match m {
                Some(m) => format!("client={c:?} packet_id={pid} {}", message(&m)),
                None => format!("client={c:?} packet_id={pid}"),
            }
        }
        Ks::Retained => message(&enc::decode_message(v).map_err(at(ks, k))?),
    })
}

/// The line of a `sessions` record, with its will when it has one.
fn describe_session(k: &[u8], v: &[u8]) -> Result<String, StoreError> {
    let ks = Ks::Sessions;
    let id = enc::decode_str_key(k, "client id").map_err(at(ks, k))?;
    let s = enc::decode_session(id, v).map_err(at(ks, k))?;
    let mut line = format!(
        "client={:?} protocol={} expiry_secs={} disconnected_at_unix_ms={}",
        s.client_id,
        s.protocol_level,
        s.expiry_secs.map_or("never".to_string(), |x| x.to_string()),
        s.disconnected_at_unix_ms
            .map_or("-".to_string(), |x| x.to_string()),
    );
    if let Some(o) = &s.owner_username {
        line.push_str(&format!(" owner={o:?}"));
    }
    if let Some(w) = &s.will {
        line.push_str(&format!(
            " will: topic={:?} qos={} retain={} delay_secs={} payload={}",
            w.topic,
            w.qos as u8,
            w.retain,
            w.delay_secs,
            payload(&w.payload)
        ));
    }
    Ok(line)
}

/// The line of a `subs` record.
fn describe_subscription(k: &[u8], v: &[u8]) -> Result<String, StoreError> {
    let ks = Ks::Subs;
    let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
    let f = enc::decode_str_key(rest, "filter").map_err(at(ks, k))?;
    let s = enc::decode_subscription(f, v).map_err(at(ks, k))?;
    Ok(format!(
        "client={c:?} filter={:?} qos={} no_local={} retain_as_published={} \
         retain_handling={} id={:?}",
        s.filter,
        s.options.qos as u8,
        s.options.no_local,
        s.options.retain_as_published,
        s.options.retain_handling,
        s.id
    ))
}

/// The line of a `queue` record, with its message when it is stored inline.
fn describe_queue_entry(k: &[u8], v: &[u8]) -> Result<String, StoreError> {
    let ks = Ks::Queue;
    let (c, rest) = enc::split_client_key(k).map_err(at(ks, k))?;
    let seq = enc::decode_u64_suffix(rest).map_err(at(ks, k))?;
    let q = enc::decode_queue_entry(v).map_err(at(ks, k))?;
    let mut line = format!(
        "client={c:?} seq={seq} msg={} qos={} retain={} subscription_ids={:?}",
        q.msg_id, q.qos as u8, q.retain, q.subscription_ids
    );
    if let Some(m) = &q.body {
        line.push_str(&format!(" inline {}", message(m)));
    }
    Ok(line)
}

/// Prints every record, one per line, grouped by keyspace. Corrupt records are printed as
/// `CORRUPT: ...` lines and the dump goes on.
pub(crate) fn dump(kv: &dyn Kv, out: &mut dyn Write) -> std::io::Result<()> {
    for ks in Ks::ALL {
        writeln!(out, "[{}]", ks.name())?;
        let mut io_err = None;
        let result = scan_all(kv, ks, &mut |k, v| {
            let line = match describe(ks, k, v) {
                Ok(line) => line,
                Err(e) => format!("CORRUPT: {e}"),
            };
            match writeln!(out, "  {line}") {
                Ok(()) => Ok(true),
                Err(e) => {
                    io_err = Some(e);
                    Ok(false)
                }
            }
        });
        if let Some(e) = io_err {
            return Err(e);
        }
        if let Err(e) = result {
            writeln!(out, "  CORRUPT: cannot read keyspace: {e}")?;
        }
    }
    Ok(())
}
