//! The behavioural suite, run against both stores (`suite!` instantiates every test for
//! [`MemoryStore`] and [`FjallStore`]), plus tests only the disk store can have.

use std::sync::Arc;

use bytes::Bytes;

use super::encoding::tests::{full_properties, message};
use super::engine::Ks;
use super::*;
use crate::codec::SubscriptionOptions;

/// A store under test, with what the `Store` trait does not cover.
pub(crate) enum Fixture {
    Memory(Arc<MemoryStore>),
    Fjall(Arc<FjallStore>, #[allow(dead_code)] tempfile::TempDir),
}

impl Fixture {
    pub(crate) fn memory() -> Fixture {
        Fixture::Memory(Arc::new(MemoryStore::new()))
    }

    pub(crate) fn fjall() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        Fixture::Fjall(Arc::new(store), dir)
    }

    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match self {
            Fixture::Memory(s) => s.clone(),
            Fixture::Fjall(s, _) => s.clone(),
        }
    }

    fn check(&self) -> CheckReport {
        match self {
            Fixture::Memory(s) => s.check(),
            Fixture::Fjall(s, _) => s.check(),
        }
    }

    fn put_raw(&self, ks: Ks, key: &[u8], value: &[u8]) {
        match self {
            Fixture::Memory(s) => s.put_raw(ks, key, value),
            Fixture::Fjall(s, _) => s.put_raw(ks, key, value),
        }
    }

    fn dump(&self) -> String {
        let mut out = Vec::new();
        match self {
            Fixture::Memory(s) => s.dump(&mut out).unwrap(),
            Fixture::Fjall(s, _) => s.dump(&mut out).unwrap(),
        }
        String::from_utf8(out).unwrap()
    }

    /// Records in a keyspace, as `check` counts them.
    fn count(&self, name: &str) -> u64 {
        let report = self.check();
        report
            .counts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .unwrap()
    }

    fn assert_consistent(&self) {
        let report = self.check();
        assert!(report.is_ok(), "{report}");
    }
}

pub(crate) fn session(client_id: &str) -> StoredSession {
    StoredSession {
        client_id: client_id.into(),
        owner_username: None,
        protocol_level: 4,
        expiry_secs: None,
        disconnected_at_unix_ms: None,
        will: None,
    }
}

pub(crate) fn delivery(msg_id: u64, msg: &Arc<StoredMessage>) -> StoredDelivery {
    StoredDelivery {
        msg_id,
        msg: msg.clone(),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
    }
}

pub(crate) fn enqueue(client: &str, seq: u64, msg_id: u64, msg: &Arc<StoredMessage>) -> Op {
    Op::Enqueue {
        client_id: client.into(),
        seq,
        delivery: delivery(msg_id, msg),
    }
}

fn sub(filter: &str) -> StoredSubscription {
    StoredSubscription {
        filter: filter.into(),
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
        id: None,
    }
}

fn seqs(store: &dyn Store, client: &str) -> Vec<u64> {
    store
        .queue_range(client, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn session_and_state(f: Fixture) {
    let s = f.store();
    let mut sess = session("c1");
    sess.owner_username = Some("alice".into());
    sess.expiry_secs = Some(60);
    s.write(
        &[
            Op::PutSession(sess.clone()),
            Op::PutSubscription {
                client_id: "c1".into(),
                sub: sub("b/#"),
            },
            Op::PutSubscription {
                client_id: "c1".into(),
                sub: sub("a/+"),
            },
            Op::PutInboundQos2 {
                client_id: "c1".into(),
                packet_id: 7,
                msg: None,
            },
            Op::PutInboundQos2 {
                client_id: "c1".into(),
                packet_id: 3,
                msg: Some(message("in", b"q2")),
            },
        ],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    let l = &snap.sessions[0];
    assert_eq!(l.session, sess);
    let filters: Vec<_> = l.subscriptions.iter().map(|x| x.filter.as_str()).collect();
    assert_eq!(filters, ["a/+", "b/#"]);
    assert_eq!(
        l.inbound_qos2,
        vec![(3, Some(message("in", b"q2"))), (7, None)]
    );
    assert_eq!((l.next_seq, l.replay_from_seq), (0, 0));

    // Replacing the session record keeps its subscriptions; deletes remove single records.
    sess.disconnected_at_unix_ms = Some(5);
    s.write(
        &[
            Op::PutSession(sess.clone()),
            Op::DeleteSubscription {
                client_id: "c1".into(),
                filter: "a/+".into(),
            },
            Op::DeleteInboundQos2 {
                client_id: "c1".into(),
                packet_id: 7,
            },
        ],
        false,
    )
    .unwrap();
    let snap = s.load().unwrap();
    let l = &snap.sessions[0];
    assert_eq!(l.session, sess);
    assert_eq!(l.subscriptions, vec![sub("b/#")]);
    assert_eq!(l.inbound_qos2.len(), 1);
    f.assert_consistent();
}

fn batches_are_atomic(f: Fixture) {
    let s = f.store();
    let m = Arc::new(message("t", b"x"));
    let too_long = "x".repeat(MAX_KEY_LEN);
    let err = s
        .write(
            &[
                Op::PutSession(session("ok")),
                enqueue("ok", 0, 1, &m),
                Op::PutRetained(message("r", b"1")),
                Op::PutSession(session(&too_long)),
                enqueue(&too_long, 0, 1, &m),
            ],
            true,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge(_)), "{err}");
    assert!(!err.is_fatal());
    assert_eq!(
        s.load().unwrap(),
        Snapshot::default(),
        "nothing of the batch"
    );
    assert_eq!(s.queue_len("ok").unwrap(), 0);
    // The store still takes writes.
    s.write(&[Op::PutSession(session("ok"))], true).unwrap();
    assert_eq!(s.load().unwrap().sessions.len(), 1);
    // The longest client id whose keys fit is accepted.
    let longest = "y".repeat(MAX_KEY_LEN - 2 - 8);
    s.write(
        &[
            Op::PutSession(session(&longest)),
            enqueue(&longest, 1, 2, &m),
        ],
        true,
    )
    .unwrap();
    assert_eq!(s.queue_len(&longest).unwrap(), 1);
    f.assert_consistent();
}

fn queue_order_by_seq(f: Fixture) {
    let s = f.store();
    s.write(&[Op::PutSession(session("c"))], false).unwrap();
    let order = [300u64, 1, 256, 2, 1 << 40, 0, 255, u64::MAX];
    for (i, seq) in order.iter().enumerate() {
        let m = Arc::new(message("t", seq.to_string().as_bytes()));
        s.write(&[enqueue("c", *seq, i as u64, &m)], false).unwrap();
    }
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    assert_eq!(seqs(&*s, "c"), sorted);
    let got = s.queue_range("c", 0, 100).unwrap();
    for (seq, d) in &got {
        assert_eq!(d.msg.payload, Bytes::from(seq.to_string()));
    }
    let snap = s.load().unwrap();
    assert_eq!(snap.sessions[0].next_seq, u64::MAX, "saturates");
    assert_eq!(snap.next_msg_id, order.len() as u64);
}

fn range_scans_page_and_isolate_clients(f: Fixture) {
    let s = f.store();
    let m = Arc::new(message("t", b"m"));
    let mut batch = vec![];
    for c in ["a", "ab", "b"] {
        batch.push(Op::PutSession(session(c)));
    }
    for seq in 0..1000u64 {
        batch.push(enqueue("a", seq, 1, &m));
    }
    batch.push(enqueue("ab", 5, 1, &m));
    s.write(&batch, true).unwrap();
    assert_eq!(s.queue_len("a").unwrap(), 1000);
    assert_eq!(s.queue_len("ab").unwrap(), 1);
    assert_eq!(s.queue_len("b").unwrap(), 0);
    assert_eq!(s.queue_len("nobody").unwrap(), 0);
    let mut paged = vec![];
    let mut from = 0;
    loop {
        let page = s.queue_range("a", from, 64).unwrap();
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        paged.extend(page.into_iter().map(|(seq, _)| seq));
    }
    assert_eq!(paged, (0..1000).collect::<Vec<_>>());
    assert_eq!(seqs(&*s, "a").len(), 1000);
    assert_eq!(s.queue_range("a", 990, 100).unwrap().len(), 10);
    assert!(s.queue_range("a", 10, 0).unwrap().is_empty());
    assert_eq!(seqs(&*s, "ab"), [5]);
    // One body shared by 1001 entries.
    assert_eq!(f.count("msgs"), 1);
    let d = s.queue_range("a", 0, 2).unwrap();
    assert!(
        Arc::ptr_eq(&d[0].1.msg, &d[1].1.msg),
        "one Arc per body per call"
    );
    f.assert_consistent();
}

fn shared_bodies_are_refcounted(f: Fixture) {
    let s = f.store();
    let body = Arc::new(message("shared", &[7u8; 1000]));
    let clients: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let mut batch: Vec<Op> = clients.iter().map(|c| Op::PutSession(session(c))).collect();
    batch.extend(clients.iter().map(|c| enqueue(c, 0, 42, &body)));
    s.write(&batch, true).unwrap();
    assert_eq!(f.count("msgs"), 1, "stored once for ten sessions");
    f.assert_consistent();
    for c in &clients[..9] {
        s.write(
            &[Op::Dequeue {
                client_id: c.clone(),
                seq: 0,
            }],
            false,
        )
        .unwrap();
        assert_eq!(f.count("msgs"), 1);
        f.assert_consistent();
    }
    assert_eq!(s.queue_range("c9", 0, 1).unwrap()[0].1.msg, body);
    // Dequeuing twice or what never existed is harmless.
    for seq in [0, 0, 99] {
        s.write(
            &[Op::Dequeue {
                client_id: "c9".into(),
                seq,
            }],
            false,
        )
        .unwrap();
    }
    assert_eq!(f.count("msgs"), 0);
    assert_eq!(f.count("msg_refs"), 0);
    f.assert_consistent();
}

/// A dequeue written before the enqueue it undoes (two tasks submitted in the opposite order to
/// their changes) cancels that enqueue: the message is not brought back, so a restart does not
/// deliver it again (QoS 2 exactly once, [MQTT-4.3.3-2]).
fn early_dequeue_cancels_its_late_enqueue(f: Fixture) {
    let s = f.store();
    let body = Arc::new(message("t", b"x"));
    s.write(&[Op::PutSession(session("b"))], false).unwrap();
    let dequeue = |seq| Op::Dequeue {
        client_id: "b".into(),
        seq,
    };
    s.write(&[dequeue(7)], false).unwrap();
    s.write(
        &[enqueue("b", 7, 1, &body), enqueue("b", 8, 1, &body)],
        false,
    )
    .unwrap();
    assert_eq!(seqs(&*s, "b"), [8], "7 was delivered already");
    assert_eq!(f.count("msgs"), 1);
    f.assert_consistent();
    // Only once: a later enqueue of the same position is a new entry.
    s.write(&[enqueue("b", 7, 2, &body)], false).unwrap();
    assert_eq!(seqs(&*s, "b"), [7, 8]);
    // Deleting the session forgets its early dequeues.
    s.write(
        &[
            dequeue(9),
            Op::DeleteSession {
                client_id: "b".into(),
                retire_below: 0,
            },
        ],
        false,
    )
    .unwrap();
    s.write(
        &[Op::PutSession(session("b")), enqueue("b", 9, 3, &body)],
        false,
    )
    .unwrap();
    assert_eq!(seqs(&*s, "b"), [9]);
    f.assert_consistent();
}

/// A deleted session's `Enqueue` that reaches the store after its `DeleteSession` (a
/// publisher's batch that waited for room in the writer's queue) is skipped, shared body
/// included; the next session under the client id numbers from `retire_below` on and keeps
/// every entry.
fn late_enqueue_of_a_deleted_session_is_skipped(f: Fixture) {
    let s = f.store();
    let old = Arc::new(message("t", b"old"));
    let new = Arc::new(message("t", b"new"));
    s.write(
        &[Op::PutSession(session("c")), enqueue("c", 0, 1, &old)],
        false,
    )
    .unwrap();
    s.write(
        &[
            Op::DeleteSession {
                client_id: "c".into(),
                retire_below: 2,
            },
            Op::PutSession(session("c")),
            enqueue("c", 2, 2, &new),
        ],
        false,
    )
    .unwrap();
    // Seq 1 was the old session's, its message fanned out to "d" as well.
    s.write(&[Op::PutSession(session("d"))], false).unwrap();
    s.write(&[enqueue("c", 1, 1, &old), enqueue("d", 0, 1, &old)], false)
        .unwrap();
    assert_eq!(
        seqs(&*s, "c"),
        [2],
        "no orphan below the new session's queue"
    );
    assert_eq!(seqs(&*s, "d"), [0]);
    s.write(&[enqueue("c", 3, 3, &new)], false).unwrap();
    assert_eq!(seqs(&*s, "c"), [2, 3]);
    f.assert_consistent();
}

fn ops_see_earlier_ops_of_their_batch(f: Fixture) {
    let s = f.store();
    let m = Arc::new(message("t", b"x"));
    let m2 = Arc::new(message("t2", b"y"));
    s.write(
        &[
            Op::PutSession(session("c")),
            enqueue("c", 0, 1, &m),
            enqueue("c", 1, 1, &m),
            Op::Dequeue {
                client_id: "c".into(),
                seq: 0,
            },
            // Replacing entry 1 releases body 1 and takes body 2.
            enqueue("c", 1, 2, &m2),
            enqueue("c", 2, 2, &m2),
        ],
        false,
    )
    .unwrap();
    assert_eq!(seqs(&*s, "c"), [1, 2]);
    assert_eq!(f.count("msgs"), 1);
    f.assert_consistent();
    s.write(
        &[
            enqueue("c", 3, 3, &m),
            Op::DeleteSession {
                client_id: "c".into(),
                retire_below: 0,
            },
            Op::PutSession(session("c")),
            enqueue("c", 0, 4, &m),
        ],
        true,
    )
    .unwrap();
    assert_eq!(seqs(&*s, "c"), [0]);
    // Body 2 went with the session; message 4 is queued once, so inline in its entry.
    assert_eq!(f.count("msgs"), 0);
    assert_eq!(s.queue_range("c", 0, 1).unwrap()[0].1.msg, m);
    f.assert_consistent();
}

fn delete_session_removes_everything(f: Fixture) {
    let s = f.store();
    let shared = Arc::new(message("t", b"shared"));
    let own = Arc::new(message("t", b"own"));
    let mut batch = vec![];
    for c in ["gone", "gone2", "stays"] {
        batch.push(Op::PutSession(session(c)));
        batch.push(Op::PutSubscription {
            client_id: c.into(),
            sub: sub("#"),
        });
        batch.push(enqueue(c, 0, 1, &shared));
        batch.push(Op::PutInflight {
            client_id: c.into(),
            packet_id: 1,
            seq: 0,
            stage: InflightStage::Publish,
        });
        batch.push(Op::PutInboundQos2 {
            client_id: c.into(),
            packet_id: 9,
            msg: Some(message("in", b"x")),
        });
    }
    batch.push(enqueue("gone", 1, 2, &own));
    s.write(&batch, true).unwrap();
    // `own` is queued once: inline in its entry.
    assert_eq!(f.count("msgs"), 1);
    s.write(
        &[
            Op::DeleteSession {
                client_id: "gone".into(),
                retire_below: 0,
            },
            Op::DeleteSession {
                client_id: "gone2".into(),
                retire_below: 0,
            },
        ],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    let l = &snap.sessions[0];
    assert_eq!(l.session.client_id, "stays");
    assert_eq!(l.subscriptions.len(), 1);
    assert_eq!(l.inbound_qos2.len(), 1);
    match &l.inflight[..] {
        [LoadedInflight::Publish { delivery, .. }] => assert_eq!(delivery.msg, shared),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.queue_len("gone").unwrap(), 0);
    for ks in ["subs", "inflight", "qos2_in", "queue", "msgs", "msg_refs"] {
        assert_eq!(f.count(ks), 1, "{ks}");
    }
    // Deleting an unknown session is harmless.
    s.write(
        &[Op::DeleteSession {
            client_id: "never".into(),
            retire_below: 0,
        }],
        false,
    )
    .unwrap();
    f.assert_consistent();
}

fn inflight_loads_in_send_order(f: Fixture) {
    let s = f.store();
    let mut batch = vec![Op::PutSession(session("c"))];
    for seq in 10..15u64 {
        let m = Arc::new(message("t", seq.to_string().as_bytes()));
        batch.push(enqueue("c", seq, seq, &m));
    }
    // Packet ids wrapped around: send order is seq order, not packet id order.
    for (pid, seq) in [(65535u16, 10u64), (1, 11), (2, 12)] {
        batch.push(Op::PutInflight {
            client_id: "c".into(),
            packet_id: pid,
            seq,
            stage: InflightStage::Publish,
        });
    }
    s.write(&batch, true).unwrap();
    // PUBREC for the first: Released, and its queue entry goes.
    s.write(
        &[
            Op::PutInflight {
                client_id: "c".into(),
                packet_id: 65535,
                seq: 10,
                stage: InflightStage::Released,
            },
            Op::Dequeue {
                client_id: "c".into(),
                seq: 10,
            },
        ],
        true,
    )
    .unwrap();
    // PUBACK for the second.
    s.write(
        &[
            Op::DeleteInflight {
                client_id: "c".into(),
                packet_id: 1,
            },
            Op::Dequeue {
                client_id: "c".into(),
                seq: 11,
            },
        ],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    let l = &snap.sessions[0];
    assert_eq!(
        l.inflight
            .iter()
            .map(|i| (i.packet_id(), i.seq()))
            .collect::<Vec<_>>(),
        [(65535, Some(10)), (2, Some(12))]
    );
    assert!(matches!(l.inflight[0], LoadedInflight::Released { .. }));
    match &l.inflight[1] {
        LoadedInflight::Publish { delivery, .. } => {
            assert_eq!(delivery.msg.payload, Bytes::from_static(b"12"));
            assert_eq!(delivery.msg_id, 12);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((l.next_seq, l.replay_from_seq), (15, 13));
    assert_eq!(seqs(&*s, "c"), [12, 13, 14]);
    let replay: Vec<u64> = s
        .queue_range("c", l.replay_from_seq, 10)
        .unwrap()
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(replay, [13, 14]);
    f.assert_consistent();
}

fn retained_put_replace_delete(f: Fixture) {
    let s = f.store();
    let mut rich = message("a/b", b"v1");
    rich.retain = true;
    rich.qos = QoS::ExactlyOnce;
    rich.properties = full_properties();
    rich.expires_at_unix_ms = Some(123);
    rich.publisher = Some("p".into());
    s.write(
        &[
            Op::PutRetained(rich.clone()),
            Op::PutRetained(message("z", b"z")),
            Op::PutRetained(message("a", b"a")),
        ],
        true,
    )
    .unwrap();
    let topics = |s: &dyn Store| -> Vec<String> {
        s.load()
            .unwrap()
            .retained
            .into_iter()
            .map(|m| m.topic)
            .collect()
    };
    assert_eq!(topics(&*s), ["a", "a/b", "z"]);
    assert_eq!(s.load().unwrap().retained[1], rich);
    s.write(&[Op::PutRetained(message("a/b", b"v2"))], true)
        .unwrap();
    assert_eq!(
        s.load().unwrap().retained[1].payload,
        Bytes::from_static(b"v2")
    );
    s.write(
        &[
            Op::DeleteRetained { topic: "a".into() },
            Op::DeleteRetained {
                topic: "missing".into(),
            },
        ],
        true,
    )
    .unwrap();
    assert_eq!(topics(&*s), ["a/b", "z"]);
    f.assert_consistent();
}

/// A mark is written with the batch it comes in, replaced by the next one of its name, and
/// does not disturb the records the broker restores.
fn marks_are_kept_and_replaced(f: Fixture) {
    let s = f.store();
    let m = Arc::new(message("t", b"x"));
    let mark = |name: &str, value: &[u8]| Op::PutMark {
        name: name.into(),
        value: value.to_vec(),
    };
    s.write(
        &[
            Op::PutSession(session("c")),
            enqueue("c", 0, 1, &m),
            mark("cluster/s", b"one"),
        ],
        true,
    )
    .unwrap();
    s.write(&[mark("cluster/s", b"two"), mark("other", b"")], true)
        .unwrap();
    let loaded = s.load().unwrap();
    let marks: Vec<(&str, &[u8])> = loaded
        .marks
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(marks, [("cluster/s", &b"two"[..]), ("other", &b""[..])]);
    assert_eq!(loaded.sessions.len(), 1);
    assert_eq!(loaded.next_msg_id, 2);
    f.assert_consistent();
}

fn corrupt_records_are_errors(f: Fixture) {
    let s = f.store();
    let m = Arc::new(message("t", b"x"));
    s.write(
        &[Op::PutSession(session("c")), enqueue("c", 0, 1, &m)],
        true,
    )
    .unwrap();
    f.put_raw(Ks::Sessions, b"bad", &[1, 200]);
    let err = s.load().unwrap_err();
    assert!(err.to_string().contains("sessions"), "{err}");
    let report = f.check();
    assert!(!report.is_ok());
    assert_eq!(report.corrupt.len(), 1, "{report}");
    assert!(f.dump().contains("CORRUPT"));

    // A corrupt queue entry is an error on replay, and can still be dequeued.
    f.put_raw(
        Ks::Sessions,
        b"bad",
        &super::encoding::encode_session(&session("bad")),
    );
    // (The entry is written first: the writer knows which entries it wrote, and the store is
    // locked against other writers while open, so only an entry it wrote can rot under it.)
    s.write(&[enqueue("c", 1, 77, &Arc::new(message("t", b"z")))], true)
        .unwrap();
    f.put_raw(Ks::Queue, &super::encoding::seq_key("c", 1), b"\x01garbage");
    assert!(s.queue_range("c", 0, 10).is_err());
    s.write(
        &[Op::Dequeue {
            client_id: "c".into(),
            seq: 1,
        }],
        true,
    )
    .unwrap();
    assert_eq!(s.queue_range("c", 0, 10).unwrap().len(), 1);
    f.assert_consistent();
}

fn dangling_references_are_skipped_and_reported(f: Fixture) {
    let s = f.store();
    s.write(
        &[
            Op::PutSession(session("c")),
            Op::PutInflight {
                client_id: "c".into(),
                packet_id: 4,
                seq: 99,
                stage: InflightStage::Publish,
            },
            Op::PutSubscription {
                client_id: "ghost".into(),
                sub: sub("x"),
            },
        ],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert!(snap.sessions[0].inflight.is_empty());
    assert_eq!(snap.skipped, 2);
    let report = f.check();
    assert_eq!(report.inconsistent.len(), 2, "{report}");
}

fn dump_is_readable(f: Fixture) {
    let s = f.store();
    let big = Arc::new(message("big/topic", &vec![b'p'; 1_000_000]));
    s.write(
        &[
            Op::PutSession(session("dumped")),
            enqueue("dumped", 3, 8, &big),
            Op::PutRetained(message("ret", b"hello")),
        ],
        true,
    )
    .unwrap();
    let text = f.dump();
    assert!(text.contains("client=\"dumped\""), "{text}");
    assert!(text.contains("seq=3 msg=8"), "{text}");
    assert!(text.contains("topic=\"big/topic\" qos=1"), "{text}");
    assert!(text.contains("1000000 bytes"), "{text}");
    assert!(text.contains("5 bytes \"hello\""), "{text}");
    assert!(text.len() < 4000, "no huge payloads: {} bytes", text.len());
}

/// Random batches applied to both stores give the same state, and refcounts stay exact.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[test] fn $name() { super::$name(super::Fixture::memory()); })*
        }
        mod fjall_store {
            $(#[test] fn $name() { super::$name(super::Fixture::fjall()); })*
        }
    };
}

suite!(
    session_and_state,
    batches_are_atomic,
    queue_order_by_seq,
    range_scans_page_and_isolate_clients,
    shared_bodies_are_refcounted,
    early_dequeue_cancels_its_late_enqueue,
    late_enqueue_of_a_deleted_session_is_skipped,
    ops_see_earlier_ops_of_their_batch,
    delete_session_removes_everything,
    inflight_loads_in_send_order,
    owned_inflight_records_load_in_send_order,
    retained_put_replace_delete,
    marks_are_kept_and_replaced,
    corrupt_records_are_errors,
    dangling_references_are_skipped_and_reported,
    dump_is_readable,
    random_ops_stay_consistent,
);

#[path = "fjall_tests.rs"]
mod fjall_only;

#[path = "owned_tests.rs"]
mod owned;
use owned::owned_inflight_records_load_in_send_order;

#[path = "random_tests.rs"]
mod random;
use random::random_ops_stay_consistent;
