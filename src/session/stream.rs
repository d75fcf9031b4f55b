//! Retained messages owed to new subscriptions [MQTT-3.3.1-6], streamed from the retained store
//! as the client takes them instead of being copied into the queue at SUBSCRIBE.
//!
//! Each subscription that wants its retained messages gets a [`Stream`]: its filter, the options
//! it was granted and a cursor, the last topic read from the store. The connection reads the
//! store a batch at a time ([`StreamRequest`], `RetainedStore::matches_after`) when the front
//! stream's buffer is empty, so memory per stream is the filter, the cursor and at most one
//! batch, however many retained messages match. A batch re-reads the store, so a topic removed
//! meanwhile is skipped and a replaced one is sent as it is now.
//!
//! Order: a session sends its streams (oldest first) before anything in its queue. A live
//! message that arrives while a stream runs waits in the queue behind it, so a live message on
//! a topic is never followed by an older retained copy of that topic; it does count against
//! the queue's limits while it waits.
//!
//! Streams live in memory only. A session resumed by a reconnect carries on where its stream
//! was; after a broker restart the rest is not sent (a client gets its retained messages again
//! by subscribing again). Streamed QoS 1/2 copies get no stored queue position: once sent, a
//! persistent session's inflight record holds the message itself (`Stored::Inflight`), so one
//! in flight at a restart is sent again under its packet id like any other [MQTT-4.4.0-1].

use std::collections::VecDeque;
use std::sync::Arc;

use crate::codec::SubscriptionOptions;
use crate::message::Message;

use super::Delivery;

/// Retained messages read from the store per batch.
pub const STREAM_BATCH: usize = 64;

/// What the connection should read from the retained store for the front stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream asking, so a batch for a stream replaced meanwhile is dropped.
    pub id: u64,
    /// The subscription's filter (never a shared one: those get no retained messages).
    pub filter: Arc<str>,
    /// The last topic read; None before the first batch.
    pub after: Option<Arc<str>>,
    /// How many to read.
    pub max: usize,
}

/// One subscription's retained messages still to send.
#[derive(Debug)]
struct Stream {
    id: u64,
    filter: Arc<str>,
    options: SubscriptionOptions,
    sub_id: Option<u32>,
    cursor: Option<Arc<str>>,
    /// Read from the store, not yet sent.
    buffer: VecDeque<Delivery>,
    /// Nothing more is read from the store (read to the end, unsubscribed or replaced).
    exhausted: bool,
}

impl Stream {
    fn finished(&self) -> bool {
        self.exhausted && self.buffer.is_empty()
    }
}

/// The retained streams of one session, sent in the order they were started.
#[derive(Debug, Default)]
pub struct RetainedStreams {
    streams: VecDeque<Stream>,
    next_id: u64,
    /// Memory the buffers hold, accounted like queued deliveries.
    bytes: usize,
}

impl RetainedStreams {
    /// No streams; the first one started gets id `first + 1`. A session's state passes a
    /// value above every id it handed out before a clean start dropped its streams, so a batch
    /// read for one of those never fills a new stream.
    pub fn with_ids_after(first: u64) -> RetainedStreams {
        RetainedStreams {
            next_id: first,
            ..RetainedStreams::default()
        }
    }

    /// Starts sending the retained messages matching `filter`. A stream already running for the
    /// same filter stops reading (a repeated SUBSCRIBE starts over, not twice over).
    pub fn start(&mut self, filter: &str, options: SubscriptionOptions, sub_id: Option<u32>) {
        self.stop(filter);
        self.next_id += 1;
        self.streams.push_back(Stream {
            id: self.next_id,
            filter: filter.into(),
            options,
            sub_id,
            cursor: None,
            buffer: VecDeque::new(),
            exhausted: false,
        });
    }

    /// Stops reading the stream of `filter` (unsubscribed); what it has buffered is still sent.
    pub fn stop(&mut self, filter: &str) {
        for s in self.streams.iter_mut().filter(|s| *s.filter == *filter) {
            s.exhausted = true;
        }
        self.streams.retain(|s| !s.finished());
    }

    /// Whether any stream is running: the queue waits until none is.
    pub fn is_active(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Streams running (for tests and the session list).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is running.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Memory the buffers hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The read the front stream needs: its buffer ran empty and the store has more.
    pub fn request(&self) -> Option<StreamRequest> {
        let s = self.streams.front()?;
        (s.buffer.is_empty() && !s.exhausted).then(|| StreamRequest {
            id: s.id,
            filter: s.filter.clone(),
            after: s.cursor.clone(),
            max: STREAM_BATCH,
        })
    }

    /// Takes a batch read for `req`: `batch` is what the store returned (fewer than `req.max`
    /// means the end), `keep` says which to send (not expired, readable). Returns the memory
    /// added. A batch for a stream replaced or stopped since is dropped.
    pub fn fill(
        &mut self,
        req: &StreamRequest,
        batch: Vec<(Arc<str>, Arc<Message>)>,
        keep: &dyn Fn(&Message) -> bool,
    ) -> usize {
        let Some(s) = self.streams.front_mut() else {
            return 0;
        };
        if s.id != req.id || s.exhausted || !s.buffer.is_empty() {
            return 0;
        }
        s.exhausted = batch.len() < req.max;
        let mut added = 0;
        for (topic, msg) in batch {
            s.cursor = Some(topic);
            if !keep(&msg) {
                continue;
            }
            let d = Delivery {
                qos: msg.qos.min(s.options.qos),
                // Sent because of a new subscription: RETAIN=1, with or without Retain As
                // Published [MQTT-3.3.1-8] (5.0 [MQTT-3.3.1-9]).
                retain: true,
                subscription_ids: s.sub_id.into_iter().collect(),
                shared: None,
                stored: None,
                msg,
            };
            added += d.msg.record_cost();
            s.buffer.push_back(d);
        }
        self.bytes += added;
        if s.finished() {
            self.streams.pop_front();
        }
        added
    }

    /// The next buffered delivery, if the front stream has one.
    pub fn front(&self) -> Option<&Delivery> {
        self.streams.front()?.buffer.front()
    }

    /// Takes the next buffered delivery; a stream read to the end and emptied is dropped.
    pub fn pop(&mut self) -> Option<Delivery> {
        let s = self.streams.front_mut()?;
        let d = s.buffer.pop_front()?;
        if s.finished() {
            self.streams.pop_front();
        }
        self.bytes -= d.msg.record_cost();
        Some(d)
    }
}
