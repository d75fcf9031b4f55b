//! MQTT 5.0 properties: one struct for every packet type, and its wire codec. The decoder rejects
//! a property that is not allowed on the packet it appears in (spec table 2.2.2.2), a second copy
//! of a once-only property and out-of-range values; only `user_properties` and
//! `subscription_identifiers` repeat.

use bytes::Bytes;

use super::reader::Reader;
use super::sink::{Counter, Sink};
use super::DecodeError;

/// Every MQTT 5.0 property (spec 2.2.2.2). `None`/empty means absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01, PUBLISH / Will.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH / Will, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH / Will.
    pub content_type: Option<String>,
    /// 0x08, PUBLISH / Will.
    pub response_topic: Option<String>,
    /// 0x09, PUBLISH / Will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, PUBLISH (may repeat, server to client) / SUBSCRIBE (at most one, 1..=268435455).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT / CONNACK / DISCONNECT, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, CONNACK, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT / CONNACK / AUTH.
    pub authentication_method: Option<String>,
    /// 0x16, CONNECT / CONNACK / AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT, 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18, Will, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT, 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<String>,
    /// 0x1C, CONNACK / DISCONNECT.
    pub server_reference: Option<String>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<String>,
    /// 0x21, CONNECT / CONNACK, non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT / CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH, non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK, 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK, 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26, everywhere; order kept, may repeat.
    pub user_properties: Vec<(String, String)>,
    /// 0x27, CONNECT / CONNACK, non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK, 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK, 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, CONNACK, 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Where a property block sits; decides which properties it may hold (spec table 2.2.2.2). The
/// Will properties inside the CONNECT payload are their own context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropCtx {
    Connect = 0,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropCtx {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn name(self) -> &'static str {
        match self {
            PropCtx::Connect => "CONNECT",
            PropCtx::ConnAck => "CONNACK",
            PropCtx::Publish => "PUBLISH",
            PropCtx::Will => "Will properties",
            PropCtx::PubAck => "PUBACK",
            PropCtx::PubRec => "PUBREC",
            PropCtx::PubRel => "PUBREL",
            PropCtx::PubComp => "PUBCOMP",
            PropCtx::Subscribe => "SUBSCRIBE",
            PropCtx::SubAck => "SUBACK",
            PropCtx::Unsubscribe => "UNSUBSCRIBE",
            PropCtx::UnsubAck => "UNSUBACK",
            PropCtx::Disconnect => "DISCONNECT",
            PropCtx::Auth => "AUTH",
        }
    }
}

mod ctx {
    //! Bit sets of `PropCtx`, one per row of spec table 2.2.2.2.
    use super::PropCtx::*;
    const fn b(c: super::PropCtx) -> u16 {
        1 << (c as u16)
    }
    pub(super) const MESSAGE: u16 = b(Publish) | b(Will);
    pub(super) const SUB_ID: u16 = b(Publish) | b(Subscribe);
    pub(super) const SESSION_EXPIRY: u16 = b(Connect) | b(ConnAck) | b(Disconnect);
    pub(super) const CONNACK: u16 = b(ConnAck);
    pub(super) const CONNECT: u16 = b(Connect);
    pub(super) const WILL: u16 = b(Will);
    pub(super) const AUTH: u16 = b(Connect) | b(ConnAck) | b(Auth);
    pub(super) const SERVER_REF: u16 = b(ConnAck) | b(Disconnect);
    pub(super) const REASON_STRING: u16 = b(ConnAck)
        | b(PubAck)
        | b(PubRec)
        | b(PubRel)
        | b(PubComp)
        | b(SubAck)
        | b(UnsubAck)
        | b(Disconnect)
        | b(Auth);
    pub(super) const LIMITS: u16 = b(Connect) | b(ConnAck);
    pub(super) const PUBLISH: u16 = b(Publish);
    pub(super) const ALL: u16 = u16::MAX;
}

/// Name and allowed contexts of a property identifier; `None` if the identifier is unknown.
fn property_info(id: u32) -> Option<(&'static str, u16)> {
    Some(match id {
        0x01 => ("Payload Format Indicator", ctx::MESSAGE),
        0x02 => ("Message Expiry Interval", ctx::MESSAGE),
        0x03 => ("Content Type", ctx::MESSAGE),
        0x08 => ("Response Topic", ctx::MESSAGE),
        0x09 => ("Correlation Data", ctx::MESSAGE),
        0x0B => ("Subscription Identifier", ctx::SUB_ID),
        0x11 => ("Session Expiry Interval", ctx::SESSION_EXPIRY),
        0x12 => ("Assigned Client Identifier", ctx::CONNACK),
        0x13 => ("Server Keep Alive", ctx::CONNACK),
        0x15 => ("Authentication Method", ctx::AUTH),
        0x16 => ("Authentication Data", ctx::AUTH),
        0x17 => ("Request Problem Information", ctx::CONNECT),
        0x18 => ("Will Delay Interval", ctx::WILL),
        0x19 => ("Request Response Information", ctx::CONNECT),
        0x1A => ("Response Information", ctx::CONNACK),
        0x1C => ("Server Reference", ctx::SERVER_REF),
        0x1F => ("Reason String", ctx::REASON_STRING),
        0x21 => ("Receive Maximum", ctx::LIMITS),
        0x22 => ("Topic Alias Maximum", ctx::LIMITS),
        0x23 => ("Topic Alias", ctx::PUBLISH),
        0x24 => ("Maximum QoS", ctx::CONNACK),
        0x25 => ("Retain Available", ctx::CONNACK),
        0x26 => ("User Property", ctx::ALL),
        0x27 => ("Maximum Packet Size", ctx::LIMITS),
        0x28 => ("Wildcard Subscription Available", ctx::CONNACK),
        0x29 => ("Subscription Identifier Available", ctx::CONNACK),
        0x2A => ("Shared Subscription Available", ctx::CONNACK),
        _ => return None,
    })
}

/// Stores a once-only property; a second copy is a Protocol Error (each property's section).
fn set_once<T>(slot: &mut Option<T>, v: T, id: u8, name: &'static str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { id, name });
    }
    *slot = Some(v);
    Ok(())
}

fn non_zero<T: Into<u32> + Copy>(v: T, name: &'static str) -> Result<T, DecodeError> {
    if v.into() == 0 {
        return Err(DecodeError::InvalidPropertyValue { name, value: 0 });
    }
    Ok(v)
}

fn flag(v: u8, name: &'static str) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue {
            name,
            value: u32::from(v),
        });
    }
    Ok(v)
}

/// As [`decode_properties`], boxed; an empty block (Property Length 0, nearly every packet)
/// allocates and builds nothing.
pub(crate) fn decode_boxed_properties(
    r: &mut Reader,
    ctx: PropCtx,
) -> Result<BoxedProperties, DecodeError> {
    if r.peek_u8() == Some(0) {
        r.u8("property length")?;
        return Ok(BoxedProperties::default());
    }
    Ok(BoxedProperties(Some(Box::new(decode_properties(r, ctx)?))))
}

/// Reads a Property Length and the properties it covers, checking each against `ctx`.
pub(crate) fn decode_properties(r: &mut Reader, ctx: PropCtx) -> Result<Properties, DecodeError> {
    let len = r.var_int("property length")? as usize;
    if len > r.remaining() {
        return Err(DecodeError::PropertyLengthExceedsPacket {
            len,
            available: r.remaining(),
        });
    }
    let mut pr = Reader::new(r.take(len, "properties")?, r.packet_type());
    let mut p = Properties::default();
    while !pr.is_empty() {
        let id = pr.var_int("property identifier")?;
        let (name, allowed) = property_info(id).ok_or(DecodeError::UnknownProperty(id))?;
        // property_info only knows one-byte identifiers.
        let id = id as u8;
        if allowed & ctx.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id,
                name,
                packet_type: ctx.name(),
            });
        }
        match id {
            0x01 => set_once(
                &mut p.payload_format_indicator,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
            0x02 => set_once(&mut p.message_expiry_interval, pr.u32(name)?, id, name)?,
            0x03 => set_once(&mut p.content_type, pr.string(name)?, id, name)?,
            0x08 => {
                let topic = pr.string(name)?;
                // [MQTT-3.3.2-14]: a Response Topic is a Topic Name, so no wildcards.
                if !super::topic::valid_topic_name(&topic) {
                    return Err(DecodeError::InvalidResponseTopic);
                }
                set_once(&mut p.response_topic, topic, id, name)?
            }
            0x09 => set_once(&mut p.correlation_data, pr.binary(name)?, id, name)?,
            0x0B => {
                let v = non_zero(pr.var_int(name)?, name)?;
                // Only a server-to-client PUBLISH may carry several [MQTT-3.3.4-3]; SUBSCRIBE
                // may carry one (spec 3.8.2.1.2).
                if ctx == PropCtx::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty { id, name });
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => set_once(&mut p.session_expiry_interval, pr.u32(name)?, id, name)?,
            0x12 => set_once(
                &mut p.assigned_client_identifier,
                pr.string(name)?,
                id,
                name,
            )?,
            0x13 => set_once(&mut p.server_keep_alive, pr.u16(name)?, id, name)?,
            0x15 => set_once(&mut p.authentication_method, pr.string(name)?, id, name)?,
            0x16 => set_once(&mut p.authentication_data, pr.binary(name)?, id, name)?,
            0x17 => set_once(
                &mut p.request_problem_information,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
            0x18 => set_once(&mut p.will_delay_interval, pr.u32(name)?, id, name)?,
            0x19 => set_once(
                &mut p.request_response_information,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
            0x1A => set_once(&mut p.response_information, pr.string(name)?, id, name)?,
            0x1C => set_once(&mut p.server_reference, pr.string(name)?, id, name)?,
            0x1F => set_once(&mut p.reason_string, pr.string(name)?, id, name)?,
            0x21 => set_once(
                &mut p.receive_maximum,
                non_zero(pr.u16(name)?, name)?,
                id,
                name,
            )?,
            0x22 => set_once(&mut p.topic_alias_maximum, pr.u16(name)?, id, name)?,
            0x23 => {
                let alias = pr.u16(name)?;
                if alias == 0 {
                    return Err(DecodeError::TopicAliasZero);
                }
                set_once(&mut p.topic_alias, alias, id, name)?
            }
            0x24 => set_once(&mut p.maximum_qos, flag(pr.u8(name)?, name)?, id, name)?,
            0x25 => set_once(&mut p.retain_available, flag(pr.u8(name)?, name)?, id, name)?,
            0x26 => {
                let key = pr.string(name)?;
                let value = pr.string(name)?;
                p.user_properties.push((key, value));
            }
            0x27 => set_once(
                &mut p.maximum_packet_size,
                non_zero(pr.u32(name)?, name)?,
                id,
                name,
            )?,
            0x28 => set_once(
                &mut p.wildcard_subscription_available,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
            0x29 => set_once(
                &mut p.subscription_identifier_available,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
            _ => set_once(
                &mut p.shared_subscription_available,
                flag(pr.u8(name)?, name)?,
                id,
                name,
            )?,
        }
    }
    // "It is a Protocol Error to include Authentication Data if there is no Authentication
    // Method" (3.1.2.11.10; the same pairing holds in CONNACK and AUTH).
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(p)
}

/// Writes the properties without their length prefix, in identifier order (user properties in
/// their own order, which the spec says is significant).
fn write_body<S: Sink>(p: &Properties, s: &mut S) {
    fn byte<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
        if let Some(v) = v {
            s.u8(id);
            s.u8(v);
        }
    }
    fn two<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            s.u8(id);
            s.u16(v);
        }
    }
    fn four<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            s.u8(id);
            s.u32(v);
        }
    }
    fn string<S: Sink>(s: &mut S, id: u8, v: &Option<String>) {
        if let Some(v) = v {
            s.u8(id);
            s.string(v);
        }
    }
    fn binary<S: Sink>(s: &mut S, id: u8, v: &Option<Bytes>) {
        if let Some(v) = v {
            s.u8(id);
            s.binary(v);
        }
    }
    byte(s, 0x01, p.payload_format_indicator);
    four(s, 0x02, p.message_expiry_interval);
    string(s, 0x03, &p.content_type);
    string(s, 0x08, &p.response_topic);
    binary(s, 0x09, &p.correlation_data);
    for id in &p.subscription_identifiers {
        s.u8(0x0B);
        s.var_int(*id as usize);
    }
    four(s, 0x11, p.session_expiry_interval);
    string(s, 0x12, &p.assigned_client_identifier);
    two(s, 0x13, p.server_keep_alive);
    string(s, 0x15, &p.authentication_method);
    binary(s, 0x16, &p.authentication_data);
    byte(s, 0x17, p.request_problem_information);
    four(s, 0x18, p.will_delay_interval);
    byte(s, 0x19, p.request_response_information);
    string(s, 0x1A, &p.response_information);
    string(s, 0x1C, &p.server_reference);
    string(s, 0x1F, &p.reason_string);
    two(s, 0x21, p.receive_maximum);
    two(s, 0x22, p.topic_alias_maximum);
    two(s, 0x23, p.topic_alias);
    byte(s, 0x24, p.maximum_qos);
    byte(s, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        s.u8(0x26);
        s.string(k);
        s.string(v);
    }
    four(s, 0x27, p.maximum_packet_size);
    byte(s, 0x28, p.wildcard_subscription_available);
    byte(s, 0x29, p.subscription_identifier_available);
    byte(s, 0x2A, p.shared_subscription_available);
}

/// Length of the properties without their length prefix.
pub(crate) fn properties_len(p: &Properties) -> usize {
    let mut c = Counter::default();
    write_body(p, &mut c);
    c.0
}

/// Writes Property Length then the properties; `len` is `properties_len(p)`, passed in so a
/// caller that already computed it does not walk the properties again.
pub(crate) fn write_properties<S: Sink>(p: &Properties, len: usize, s: &mut S) {
    s.var_int(len);
    write_body(p, s);
}

/// Properties boxed only when there are any: in every packet but CONNECT (whose Will has its
/// own) and in a routed or retained message. Most packets (every 3.x one, nearly every ack)
/// carry none, and an inline [`Properties`] is ~340 bytes that each decoded packet would
/// otherwise zero, move through decode and handling, and compare. Reads see an empty
/// `Properties` when absent; the first write allocates.
#[derive(Clone, Debug, Default)]
pub struct BoxedProperties(Option<Box<Properties>>);

/// By content: a box emptied by writes equals an absent one.
impl PartialEq for BoxedProperties {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            _ => **self == **other,
        }
    }
}

impl Eq for BoxedProperties {}

/// What an absent [`BoxedProperties`] reads as.
static EMPTY: std::sync::LazyLock<Properties> = std::sync::LazyLock::new(Properties::default);

impl BoxedProperties {
    /// The properties, unboxed (a copy of the empty set when absent).
    pub fn into_inner(self) -> Properties {
        self.0.map(|b| *b).unwrap_or_default()
    }

    /// The properties for an edit that must not allocate when there are none (unlike
    /// `DerefMut`, which boxes an empty set first).
    pub fn existing_mut(&mut self) -> Option<&mut Properties> {
        self.0.as_deref_mut()
    }

    /// Frees a box that edits left empty.
    pub fn compact(&mut self) {
        if self.0.as_deref().is_some_and(Properties::is_empty) {
            self.0 = None;
        }
    }

    /// True when there are none, without comparing ~340 bytes when nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Properties::is_empty)
    }
}

impl From<Properties> for BoxedProperties {
    fn from(p: Properties) -> Self {
        if p == *EMPTY {
            BoxedProperties(None)
        } else {
            BoxedProperties(Some(Box::new(p)))
        }
    }
}

impl std::ops::Deref for BoxedProperties {
    type Target = Properties;

    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for BoxedProperties {
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}
