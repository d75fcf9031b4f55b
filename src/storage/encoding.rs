//! The binary encoding of keys and records: hand-written, length-prefixed, big-endian.
//!
//! Why hand-written rather than serde + postcard/bincode: the records are few and small, the
//! codec types (`Properties`, `QoS`, `SubscriptionOptions`) carry no serde derives and must not
//! grow them for storage's sake, and an explicit layout makes the on-disk format reviewable
//! and stable independently of a serializer's versioning.
//!
//! Invariants:
//! - Every record value starts with [`RECORD_V1`]; an unknown version, a truncated field,
//!   invalid UTF-8, an out-of-range enum or trailing bytes is a [`DecodeError`], never a panic.
//! - Keys that belong to a client start with `u16 BE length ‖ client id`, so the prefix of one
//!   client never matches another (`"a"` vs `"ab"`), and end with big-endian integers, so key
//!   order is numeric order (queue order for seqs).
//! - Strings are `u16 BE length ‖ UTF-8`, byte strings `u32 BE length ‖ bytes` (MQTT limits
//!   both below these).

use std::fmt;

use bytes::Bytes;

use super::{
    InflightStage, OwnedOrder, StoreError, StoredDelivery, StoredMessage, StoredSession,
    StoredSubscription, StoredWill,
};
use crate::codec::{Properties, QoS, SubscriptionOptions};

/// The version byte every record value starts with.
pub(crate) const RECORD_V1: u8 = 1;

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DecodeError {
    /// Attaches where the record was found.
    pub(crate) fn at(self, keyspace: &'static str, key: &[u8]) -> StoreError {
        StoreError::Corrupt {
            keyspace,
            key: key_display(key),
            reason: self.0,
        }
    }
}

/// A key as printable text: printable ASCII as is, other bytes as `\xNN`; long keys shortened.
pub(crate) fn key_display(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key.iter().take(96) {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if key.len() > 96 {
        s.push_str(&format!("…({} bytes)", key.len()));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Primitive writer and reader.

#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    fn record() -> Enc {
        Enc(vec![RECORD_V1])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Strings longer than 65,535 bytes cannot come from MQTT; they are cut at a char boundary
    /// rather than corrupting the record.
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(u16::try_from(end).unwrap_or(u16::MAX));
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn bytes(&mut self, b: &[u8]) {
        let len = b.len().min(u32::MAX as usize);
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
        self.0.extend_from_slice(&b[..len]);
    }
}

pub(crate) struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    /// Starts a record: checks the version byte.
    pub(crate) fn record(buf: &'a [u8]) -> Result<Dec<'a>, DecodeError> {
        let mut d = Dec { buf };
        match d.u8("record version")? {
            RECORD_V1 => Ok(d),
            v => Err(DecodeError(format!("unknown record version {v}"))),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!(
                "truncated {what}: need {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn str(&mut self, what: &str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError(format!("{what} is not UTF-8")))
    }
    fn bytes(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, what)?))
    }
    fn qos(&mut self, bits: u8, what: &str) -> Result<QoS, DecodeError> {
        QoS::from_u8(bits).ok_or_else(|| DecodeError(format!("{what}: invalid QoS {bits}")))
    }
    /// Every record must be consumed exactly.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError(format!(
                "{} unexpected trailing bytes",
                self.buf.len()
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys.

/// `u16 BE len ‖ client id`: the prefix of every per-client key.
pub(crate) fn client_prefix(client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(client_id.len() + 10);
    // Over-long ids are caught by the key length check before anything is written.
    k.extend_from_slice(
        &u16::try_from(client_id.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    k.extend_from_slice(client_id.as_bytes());
    k
}

pub(crate) fn seq_key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix in `meta` of the marks ([`Op::PutMark`](super::Op::PutMark)): `mark/<name>`.
pub(crate) const META_MARK_PREFIX: &[u8] = b"mark/";

/// The `meta` key of the mark `name`.
pub(crate) fn mark_key(name: &str) -> Vec<u8> {
    [META_MARK_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn pid_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(&packet_id.to_be_bytes());
    k
}

pub(crate) fn sub_key(client_id: &str, filter: &str) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(filter.as_bytes());
    k
}

pub(crate) fn msg_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Splits a per-client key into the client id and the rest.
pub(crate) fn split_client_key(key: &[u8]) -> Result<(String, &[u8]), DecodeError> {
    let mut d = Dec { buf: key };
    let id = d.str("client id in key")?;
    Ok((id, d.buf))
}

pub(crate) fn decode_u64_suffix(rest: &[u8]) -> Result<u64, DecodeError> {
    let a: [u8; 8] = rest
        .try_into()
        .map_err(|_| DecodeError(format!("key suffix is {} bytes, want 8", rest.len())))?;
    Ok(u64::from_be_bytes(a))
}

pub(crate) fn decode_u16_suffix(rest: &[u8]) -> Result<u16, DecodeError> {
    let a: [u8; 2] = rest
        .try_into()
        .map_err(|_| DecodeError(format!("key suffix is {} bytes, want 2", rest.len())))?;
    Ok(u16::from_be_bytes(a))
}

pub(crate) fn decode_str_key(key: &[u8], what: &str) -> Result<String, DecodeError> {
    String::from_utf8(key.to_vec()).map_err(|_| DecodeError(format!("{what} is not UTF-8")))
}

// ---------------------------------------------------------------------------------------------
// Properties (the forwarded subset).

const P_FORMAT: u8 = 1;
const P_CONTENT_TYPE: u8 = 2;
const P_RESPONSE_TOPIC: u8 = 4;
const P_CORRELATION: u8 = 8;

fn put_props(e: &mut Enc, p: &Properties) {
    let mut flags = 0;
    if p.payload_format_indicator.is_some() {
        flags |= P_FORMAT;
    }
    if p.content_type.is_some() {
        flags |= P_CONTENT_TYPE;
    }
    if p.response_topic.is_some() {
        flags |= P_RESPONSE_TOPIC;
    }
    if p.correlation_data.is_some() {
        flags |= P_CORRELATION;
    }
    e.u8(flags);
    if let Some(v) = p.payload_format_indicator {
        e.u8(v);
    }
    if let Some(v) = &p.content_type {
        e.str(v);
    }
    if let Some(v) = &p.response_topic {
        e.str(v);
    }
    if let Some(v) = &p.correlation_data {
        e.bytes(v);
    }
    let n = p.user_properties.len().min(u32::MAX as usize);
    e.u32(u32::try_from(n).unwrap_or(u32::MAX));
    for (k, v) in p.user_properties.iter().take(n) {
        e.str(k);
        e.str(v);
    }
}

fn get_props(d: &mut Dec) -> Result<Properties, DecodeError> {
    let flags = d.u8("property flags")?;
    if flags & !(P_FORMAT | P_CONTENT_TYPE | P_RESPONSE_TOPIC | P_CORRELATION) != 0 {
        return Err(DecodeError(format!("unknown property flags {flags:#x}")));
    }
    let mut p = Properties::default();
    if flags & P_FORMAT != 0 {
        p.payload_format_indicator = Some(d.u8("payload format indicator")?);
    }
    if flags & P_CONTENT_TYPE != 0 {
        p.content_type = Some(d.str("content type")?);
    }
    if flags & P_RESPONSE_TOPIC != 0 {
        p.response_topic = Some(d.str("response topic")?);
    }
    if flags & P_CORRELATION != 0 {
        p.correlation_data = Some(d.bytes("correlation data")?);
    }
    let n = d.u32("user property count")?;
    for _ in 0..n {
        // Each pair takes at least 4 bytes, so a corrupt count fails on truncation before it
        // can make this loop allocate much.
        let k = d.str("user property name")?;
        let v = d.str("user property value")?;
        p.user_properties.push((k, v));
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Records.

const M_RETAIN: u8 = 4;
const M_EXPIRES: u8 = 8;
const M_PUBLISHER: u8 = 16;

pub(crate) fn encode_message(m: &StoredMessage) -> Vec<u8> {
    let mut e = Enc::record();
    put_message(&mut e, m);
    e.0
}

fn put_message(e: &mut Enc, m: &StoredMessage) {
    let mut flags = m.qos as u8;
    if m.retain {
        flags |= M_RETAIN;
    }
    if m.expires_at_unix_ms.is_some() {
        flags |= M_EXPIRES;
    }
    if m.publisher.is_some() {
        flags |= M_PUBLISHER;
    }
    e.u8(flags);
    e.str(&m.topic);
    e.bytes(&m.payload);
    if let Some(t) = m.expires_at_unix_ms {
        e.u64(t);
    }
    if let Some(p) = &m.publisher {
        e.str(p);
    }
    put_props(e, &m.properties);
}

pub(crate) fn decode_message(buf: &[u8]) -> Result<StoredMessage, DecodeError> {
    let mut d = Dec::record(buf)?;
    let m = get_message(&mut d)?;
    d.finish()?;
    Ok(m)
}

fn get_message(d: &mut Dec) -> Result<StoredMessage, DecodeError> {
    let flags = d.u8("message flags")?;
    if flags & !(0b11 | M_RETAIN | M_EXPIRES | M_PUBLISHER) != 0 {
        return Err(DecodeError(format!("unknown message flags {flags:#x}")));
    }
    let qos = d.qos(flags & 0b11, "message")?;
    let topic = d.str("topic")?;
    let payload = d.bytes("payload")?;
    let expires_at_unix_ms = if flags & M_EXPIRES != 0 {
        Some(d.u64("expiry")?)
    } else {
        None
    };
    let publisher = if flags & M_PUBLISHER != 0 {
        Some(d.str("publisher")?)
    } else {
        None
    };
    let properties = get_props(d)?;
    Ok(StoredMessage {
        topic,
        payload,
        qos,
        retain: flags & M_RETAIN != 0,
        properties,
        expires_at_unix_ms,
        publisher,
    })
}

const S_OWNER: u8 = 1;
const S_EXPIRY: u8 = 2;
const S_DISCONNECTED: u8 = 4;
const S_WILL: u8 = 8;
const W_RETAIN: u8 = 4;
const W_EXPIRY: u8 = 8;

/// The client id is the key, so it is not repeated in the value.
pub(crate) fn encode_session(s: &StoredSession) -> Vec<u8> {
    let mut e = Enc::record();
    e.u8(s.protocol_level);
    let mut flags = 0;
    if s.owner_username.is_some() {
        flags |= S_OWNER;
    }
    if s.expiry_secs.is_some() {
        flags |= S_EXPIRY;
    }
    if s.disconnected_at_unix_ms.is_some() {
        flags |= S_DISCONNECTED;
    }
    if s.will.is_some() {
        flags |= S_WILL;
    }
    e.u8(flags);
    if let Some(o) = &s.owner_username {
        e.str(o);
    }
    if let Some(x) = s.expiry_secs {
        e.u32(x);
    }
    if let Some(t) = s.disconnected_at_unix_ms {
        e.u64(t);
    }
    if let Some(w) = &s.will {
        let mut wf = w.qos as u8;
        if w.retain {
            wf |= W_RETAIN;
        }
        if w.expiry_interval_secs.is_some() {
            wf |= W_EXPIRY;
        }
        e.u8(wf);
        e.str(&w.topic);
        e.bytes(&w.payload);
        if let Some(x) = w.expiry_interval_secs {
            e.u32(x);
        }
        e.u32(w.delay_secs);
        put_props(&mut e, &w.properties);
    }
    e.0
}

pub(crate) fn decode_session(client_id: String, buf: &[u8]) -> Result<StoredSession, DecodeError> {
    let mut d = Dec::record(buf)?;
    let protocol_level = d.u8("protocol level")?;
    if !(3..=5).contains(&protocol_level) {
        return Err(DecodeError(format!(
            "invalid protocol level {protocol_level}"
        )));
    }
    let flags = d.u8("session flags")?;
    if flags & !(S_OWNER | S_EXPIRY | S_DISCONNECTED | S_WILL) != 0 {
        return Err(DecodeError(format!("unknown session flags {flags:#x}")));
    }
    let owner_username = (flags & S_OWNER != 0).then(|| d.str("owner")).transpose()?;
    let expiry_secs = (flags & S_EXPIRY != 0)
        .then(|| d.u32("session expiry"))
        .transpose()?;
    let disconnected_at_unix_ms = (flags & S_DISCONNECTED != 0)
        .then(|| d.u64("disconnect time"))
        .transpose()?;
    let will = if flags & S_WILL != 0 {
        let wf = d.u8("will flags")?;
        if wf & !(0b11 | W_RETAIN | W_EXPIRY) != 0 {
            return Err(DecodeError(format!("unknown will flags {wf:#x}")));
        }
        let qos = d.qos(wf & 0b11, "will")?;
        let topic = d.str("will topic")?;
        let payload = d.bytes("will payload")?;
        let expiry_interval_secs = (wf & W_EXPIRY != 0)
            .then(|| d.u32("will expiry"))
            .transpose()?;
        let delay_secs = d.u32("will delay")?;
        let properties = get_props(&mut d)?;
        Some(StoredWill {
            topic,
            payload,
            qos,
            retain: wf & W_RETAIN != 0,
            properties,
            expiry_interval_secs,
            delay_secs,
        })
    } else {
        None
    };
    d.finish()?;
    Ok(StoredSession {
        client_id,
        owner_username,
        protocol_level,
        expiry_secs,
        disconnected_at_unix_ms,
        will,
    })
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling & 0b11) << 4
        | u8::from(o.local_origin) << 6
}

/// The filter is the key suffix, so it is not repeated in the value.
pub(crate) fn encode_subscription(s: &StoredSubscription) -> Vec<u8> {
    let mut e = Enc::record();
    e.u8(options_byte(&s.options));
    match s.id {
        Some(id) => {
            e.u8(1);
            e.u32(id);
        }
        None => e.u8(0),
    }
    e.0
}

pub(crate) fn decode_subscription(
    filter: String,
    buf: &[u8],
) -> Result<StoredSubscription, DecodeError> {
    let mut d = Dec::record(buf)?;
    let o = d.u8("subscription options")?;
    if o & 0b1000_0000 != 0 || (o >> 4) & 0b11 == 3 {
        return Err(DecodeError(format!("invalid subscription options {o:#x}")));
    }
    let options = SubscriptionOptions {
        qos: d.qos(o & 0b11, "subscription")?,
        no_local: o & 0x04 != 0,
        retain_as_published: o & 0x08 != 0,
        retain_handling: (o >> 4) & 0b11,
        local_origin: o & 0x40 != 0,
    };
    let id = match d.u8("subscription id flag")? {
        0 => None,
        1 => Some(d.u32("subscription id")?),
        f => return Err(DecodeError(format!("invalid subscription id flag {f}"))),
    };
    d.finish()?;
    Ok(StoredSubscription {
        filter,
        options,
        id,
    })
}

/// A queue entry: the body's id and the per-subscriber parts of the delivery, plus the body
/// itself when no other entry shares it (`body` inline: one record per queued message).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueueEntry {
    pub msg_id: u64,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// The message, stored in the entry (format 2); `None`: it is in `msgs` under `msg_id`,
    /// shared by several entries and refcounted (format 1, and messages queued for several
    /// sessions in one batch).
    pub body: Option<StoredMessage>,
}

/// Delivery flag: the message body follows the subscription ids.
const Q_INLINE: u8 = 8;

#[cfg(test)]
pub(crate) fn encode_queue_entry(q: &QueueEntry) -> Vec<u8> {
    encode_queue_entry_with(
        q.msg_id,
        q.qos,
        q.retain,
        &q.subscription_ids,
        q.body.as_ref(),
    )
}

/// [`encode_queue_entry`] from borrowed parts, so the caller need not clone the body.
pub(crate) fn encode_queue_entry_with(
    msg_id: u64,
    qos: QoS,
    retain: bool,
    subscription_ids: &[u32],
    body: Option<&StoredMessage>,
) -> Vec<u8> {
    let mut e = Enc::record();
    put_queue_entry(&mut e, msg_id, qos, retain, subscription_ids, body);
    e.0
}

fn put_queue_entry(
    e: &mut Enc,
    msg_id: u64,
    qos: QoS,
    retain: bool,
    subscription_ids: &[u32],
    body: Option<&StoredMessage>,
) {
    e.u64(msg_id);
    let inline = if body.is_some() { Q_INLINE } else { 0 };
    e.u8(qos as u8 | u8::from(retain) << 2 | inline);
    let n = subscription_ids.len().min(usize::from(u16::MAX));
    e.u16(u16::try_from(n).unwrap_or(u16::MAX));
    for id in subscription_ids.iter().take(n) {
        e.u32(*id);
    }
    if let Some(m) = body {
        put_message(e, m);
    }
}

pub(crate) fn decode_queue_entry(buf: &[u8]) -> Result<QueueEntry, DecodeError> {
    let mut d = Dec::record(buf)?;
    let q = get_queue_entry(&mut d)?;
    d.finish()?;
    Ok(q)
}

fn get_queue_entry(d: &mut Dec) -> Result<QueueEntry, DecodeError> {
    let msg_id = d.u64("message id")?;
    let f = d.u8("delivery flags")?;
    if f & !(0b111 | Q_INLINE) != 0 {
        return Err(DecodeError(format!("unknown delivery flags {f:#x}")));
    }
    let qos = d.qos(f & 0b11, "delivery")?;
    let n = d.u16("subscription id count")?;
    let mut subscription_ids = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        subscription_ids.push(d.u32("subscription id")?);
    }
    let body = if f & Q_INLINE != 0 {
        Some(get_message(d)?)
    } else {
        None
    };
    Ok(QueueEntry {
        msg_id,
        qos,
        retain: f & 0b100 != 0,
        subscription_ids,
        body,
    })
}

pub(crate) fn encode_refcount(n: u64) -> Vec<u8> {
    let mut e = Enc::record();
    e.u64(n);
    e.0
}

pub(crate) fn decode_refcount(buf: &[u8]) -> Result<u64, DecodeError> {
    let mut d = Dec::record(buf)?;
    let n = d.u64("refcount")?;
    d.finish()?;
    Ok(n)
}

pub(crate) fn encode_inflight(stage: InflightStage, seq: u64) -> Vec<u8> {
    let mut e = Enc::record();
    e.u8(match stage {
        InflightStage::Publish => INFLIGHT_PUBLISH,
        InflightStage::Released => INFLIGHT_RELEASED,
    });
    e.u64(seq);
    e.0
}

/// Inflight record stages: naming a queue entry, or holding the message itself.
const INFLIGHT_PUBLISH: u8 = 0;
const INFLIGHT_RELEASED: u8 = 1;
const INFLIGHT_OWNED_PUBLISH: u8 = 2;
const INFLIGHT_OWNED_RELEASED: u8 = 3;

/// A decoded inflight record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum InflightRecord {
    /// Names the queue entry `seq`.
    Queue(InflightStage, u64),
    /// Holds the delivery awaiting PUBACK / PUBREC, or None once PUBREL was sent.
    Owned(OwnedOrder, Option<Box<StoredDelivery>>),
}

/// An inflight record holding its message (see `Op::PutOwnedInflight`); `d` None: PUBREL sent.
pub(crate) fn encode_owned_inflight(order: OwnedOrder, d: Option<&StoredDelivery>) -> Vec<u8> {
    let mut e = Enc::record();
    e.u8(match d {
        Some(_) => INFLIGHT_OWNED_PUBLISH,
        None => INFLIGHT_OWNED_RELEASED,
    });
    e.u64(order.before);
    e.u32(order.nth);
    if let Some(d) = d {
        put_queue_entry(
            &mut e,
            0,
            d.qos,
            d.retain,
            &d.subscription_ids,
            Some(&d.msg),
        );
    }
    e.0
}

pub(crate) fn decode_inflight(buf: &[u8]) -> Result<InflightRecord, DecodeError> {
    let mut d = Dec::record(buf)?;
    let record = match d.u8("inflight stage")? {
        INFLIGHT_PUBLISH => InflightRecord::Queue(InflightStage::Publish, d.u64("inflight seq")?),
        INFLIGHT_RELEASED => InflightRecord::Queue(InflightStage::Released, d.u64("inflight seq")?),
        s @ (INFLIGHT_OWNED_PUBLISH | INFLIGHT_OWNED_RELEASED) => {
            let order = OwnedOrder {
                before: d.u64("inflight order")?,
                nth: d.u32("inflight order")?,
            };
            let entry = if s == INFLIGHT_OWNED_PUBLISH {
                let q = get_queue_entry(&mut d)?;
                let Some(body) = q.body else {
                    return Err(DecodeError("inflight record without its message".into()));
                };
                Some(Box::new(StoredDelivery {
                    msg_id: q.msg_id,
                    msg: std::sync::Arc::new(body),
                    qos: q.qos,
                    retain: q.retain,
                    subscription_ids: q.subscription_ids,
                }))
            } else {
                None
            };
            InflightRecord::Owned(order, entry)
        }
        s => return Err(DecodeError(format!("invalid inflight stage {s}"))),
    };
    d.finish()?;
    Ok(record)
}

pub(crate) fn encode_inbound_qos2(msg: Option<&StoredMessage>) -> Vec<u8> {
    let mut e = Enc::record();
    match msg {
        Some(m) => {
            e.u8(1);
            put_message(&mut e, m);
        }
        None => e.u8(0),
    }
    e.0
}

pub(crate) fn decode_inbound_qos2(buf: &[u8]) -> Result<Option<StoredMessage>, DecodeError> {
    let mut d = Dec::record(buf)?;
    let m = match d.u8("message flag")? {
        0 => None,
        1 => Some(get_message(&mut d)?),
        f => return Err(DecodeError(format!("invalid message flag {f}"))),
    };
    d.finish()?;
    Ok(m)
}

pub(crate) fn encode_format_version(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub(crate) fn decode_format_version(buf: &[u8]) -> Result<u32, DecodeError> {
    let a: [u8; 4] = buf
        .try_into()
        .map_err(|_| DecodeError(format!("format version is {} bytes, want 4", buf.len())))?;
    Ok(u32::from_be_bytes(a))
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
pub(crate) mod tests;
