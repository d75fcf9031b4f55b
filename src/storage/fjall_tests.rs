//! What only the disk store has: reopening, the format version, the directory lock, and the
//! writes/s measurement.

use std::sync::Arc;
use std::time::Instant;

use super::{enqueue, session};
use crate::storage::encoding::tests::message;
use crate::storage::*;

fn open(dir: &std::path::Path) -> FjallStore {
    FjallStore::open(dir, &FjallOptions::default()).unwrap()
}

#[test]
fn reopen_after_drop_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(message("t", b"body"));
    let snapshot = {
        let s = open(dir.path());
        s.write(
            &[
                Op::PutSession(session("c")),
                enqueue("c", 0, 5, &m),
                enqueue("c", 1, 5, &m),
                Op::PutInflight {
                    client_id: "c".into(),
                    packet_id: 1,
                    seq: 0,
                    stage: InflightStage::Publish,
                },
                Op::PutRetained(message("r", b"kept")),
                Op::PutMark {
                    name: "m".into(),
                    value: b"v".to_vec(),
                },
            ],
            true,
        )
        .unwrap();
        // Written without sync: still there after a clean close.
        s.write(&[Op::PutRetained(message("r2", b"unsynced"))], false)
            .unwrap();
        s.load().unwrap()
    };
    let s = open(dir.path());
    let again = s.load().unwrap();
    assert_eq!(again, snapshot);
    assert_eq!(again.retained.len(), 2);
    assert_eq!(again.marks.get("m").map(Vec::as_slice), Some(&b"v"[..]));
    assert_eq!(again.next_msg_id, 6);
    assert_eq!(s.queue_len("c").unwrap(), 2);
    assert!(s.check().is_ok());
}

#[test]
fn new_store_records_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.check().format_version, Some(FORMAT_VERSION));
    assert_eq!(s.dir(), dir.path());
}

/// A version 1 store (every body in `msgs`, refcounted) opens as the current version: its records read
/// as they are, its bodies are released by dequeues after the restart, and new messages go
/// inline. Message ids continue above both kinds.
#[test]
fn version_1_store_is_upgraded_and_its_records_still_work() {
    use crate::storage::encoding::{self as enc, QueueEntry};
    use crate::storage::engine::Ks;
    let dir = tempfile::tempdir().unwrap();
    let old = message("old", b"v1 body");
    {
        let s = open(dir.path());
        s.write(&[Op::PutSession(session("c"))], true).unwrap();
        // What version 1 wrote for one message queued at seq 3.
        s.put_raw(Ks::Meta, b"format_version", &enc::encode_format_version(1));
        s.put_raw(Ks::Msgs, &enc::msg_key(9), &enc::encode_message(&old));
        s.put_raw(Ks::MsgRefs, &enc::msg_key(9), &enc::encode_refcount(1));
        let entry = QueueEntry {
            msg_id: 9,
            qos: crate::codec::QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            body: None,
        };
        s.put_raw(
            Ks::Queue,
            &enc::seq_key("c", 3),
            &enc::encode_queue_entry(&entry),
        );
        assert_eq!(s.check().format_version, Some(1));
    }
    let s = open(dir.path());
    let report = s.check();
    assert_eq!(report.format_version, Some(FORMAT_VERSION), "{report}");
    assert!(report.is_ok(), "{report}");
    let snap = s.load().unwrap();
    assert_eq!(snap.next_msg_id, 10);
    assert_eq!(snap.sessions[0].next_seq, 4);
    assert_eq!(*s.queue_range("c", 0, 10).unwrap()[0].1.msg, old);
    let new = Arc::new(message("new", b"inline"));
    s.write(
        &[
            enqueue("c", 4, 10, &new),
            Op::Dequeue {
                client_id: "c".into(),
                seq: 3,
            },
        ],
        true,
    )
    .unwrap();
    let report = s.check();
    assert!(report.is_ok(), "{report}");
    let counts: std::collections::HashMap<_, _> = report.counts.iter().cloned().collect();
    assert_eq!(counts["msgs"], 0, "the old body was released");
    assert_eq!(counts["msg_refs"], 0);
    assert_eq!(counts["queue"], 1);
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.load().unwrap().next_msg_id,
        11,
        "ids continue above inline ones"
    );
}

/// A version 2 store opens as version 3 (in-flight records may then hold their message, which
/// a starling knowing only version 2 could not read: it refuses the store as newer).
#[test]
fn version_2_store_is_upgraded() {
    use crate::storage::encoding as enc;
    use crate::storage::engine::Ks;
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.write(&[Op::PutSession(session("c"))], true).unwrap();
        s.put_raw(Ks::Meta, b"format_version", &enc::encode_format_version(2));
        assert_eq!(s.check().format_version, Some(2));
    }
    let s = open(dir.path());
    let report = s.check();
    assert_eq!(report.format_version, Some(3), "{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(s.load().unwrap().sessions.len(), 1);
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert("format_version", 99u32.to_be_bytes()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = FjallStore::open(dir.path(), &FjallOptions::default())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("format version 99"), "{text}");
    assert!(text.contains("newer"), "{text}");
    assert!(text.contains("starling store reset --dir"), "{text}");
}

#[test]
fn records_without_format_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let sessions = db
            .keyspace("sessions", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        sessions.insert("c", [1u8, 4, 0]).unwrap();
    }
    let text = FjallStore::open(dir.path(), &FjallOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("no format version"), "{text}");
}

#[test]
fn second_open_of_a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let text = FjallStore::open(dir.path(), &FjallOptions::default())
        .err()
        .expect("locked")
        .to_string();
    assert!(text.contains("in use by another process"), "{text}");
}

#[test]
fn open_existing_refuses_missing_or_empty_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let text = FjallStore::open_existing(&missing, &FjallOptions::default())
        .err()
        .expect("missing")
        .to_string();
    assert!(text.contains("no store at"), "{text}");
    assert!(!missing.exists(), "not created");
    let text = FjallStore::open_existing(dir.path(), &FjallOptions::default())
        .err()
        .expect("empty")
        .to_string();
    assert!(text.contains("empty"), "{text}");
    drop(open(dir.path()));
    FjallStore::open_existing(dir.path(), &FjallOptions::default()).unwrap();
}

#[test]
fn garbage_directory_is_an_error_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("version"), b"not a fjall version marker").unwrap();
    let text = FjallStore::open(dir.path(), &FjallOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("cannot open the message store"), "{text}");
    assert!(text.contains("starling store reset --dir"), "{text}");
}

#[test]
fn move_aside_renames_and_refuses_a_store_in_use() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = open(&dir);
    store.write(&[Op::PutSession(session("c"))], true).unwrap();
    let text = FjallStore::move_aside(&dir).unwrap_err().to_string();
    assert!(text.contains("in use"), "{text}");
    drop(store);
    let moved = FjallStore::move_aside(&dir).unwrap();
    assert!(!dir.exists());
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("data.broken-"), "{name}");
    assert_eq!(moved.parent(), Some(parent.path()));
    // Nothing was lost: the moved store still opens with its data.
    assert_eq!(open(&moved).load().unwrap().sessions.len(), 1);
    // A second reset in the same second gets its own name.
    drop(open(&dir));
    let again = FjallStore::move_aside(&dir).unwrap();
    assert_ne!(again, moved);
    assert!(
        FjallStore::move_aside(&dir).is_err(),
        "nothing left to move"
    );
}

/// A persistent session deleted (clean start, expiry, discard) while its acknowledgements were
/// still on their way: the old session's `Dequeue`s reach the store after the `DeleteSession`,
/// find no entry and are remembered as early. The store matches them to enqueues by client id
/// and seq only, so the next session under the same client id numbers its queue past the old
/// one's (`Persistence::first_seq`; an `Enqueue` of seq 0 here would be taken for the old
/// session's and skipped); then its entries are all written, and survive a reopen.
#[test]
fn a_late_dequeue_of_a_deleted_session_spares_the_next_sessions_entries() {
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(message("t", b"old"));
    let new = Arc::new(message("t", b"new"));
    let dequeue = |seq| Op::Dequeue {
        client_id: "c".into(),
        seq,
    };
    {
        let s = open(dir.path());
        s.write(
            &[
                Op::PutSession(session("c")),
                enqueue("c", 0, 1, &old),
                enqueue("c", 1, 1, &old),
            ],
            true,
        )
        .unwrap();
        s.write(
            &[Op::DeleteSession {
                client_id: "c".into(),
                retire_below: 3,
            }],
            true,
        )
        .unwrap();
        // One was written before the delete, one never was (its Enqueue is late as well).
        s.write(&[dequeue(1), dequeue(2)], true).unwrap();
        s.write(
            &[
                Op::PutSession(session("c")),
                enqueue("c", 3, 2, &new),
                enqueue("c", 4, 2, &new),
            ],
            true,
        )
        .unwrap();
        s.write(&[enqueue("c", 2, 1, &old)], true).unwrap();
    }
    let s = open(dir.path());
    let queued: Vec<_> = s
        .queue_range("c", 0, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, d)| (seq, d.msg.payload.clone()))
        .collect();
    let new = bytes::Bytes::from_static(b"new");
    assert_eq!(queued, [(3, new.clone()), (4, new)]);
    assert!(s.check().is_ok());
}

/// A live refill reads a session's queue while the writer commits a batch: it sees the queue
/// as it was before the batch or after it, never half of it. fjall applies a batch key by key,
/// queue entries before the bodies they name, and plain reads see every key applied so far;
/// such a torn read skipped entries whose body was not in yet ("names missing message").
///
/// Each batch moves both clients' queues from one pair of entries to the next, fanned out so
/// the bodies are shared, and with the later seq naming the lower message id, so that any read
/// inside the batch sees something other than a whole pair. Only a torn read fails this; how
/// often one happens on a store that allows them depends on the scheduler.
#[test]
fn a_queue_read_during_a_write_sees_the_batch_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let m = Arc::new(message("t", b"x"));
    let pair = |j: u64| -> Vec<Op> {
        let mut ops = Vec::new();
        for c in ["a", "b"] {
            ops.push(enqueue(c, 2 * j, 2 * j + 1, &m));
            ops.push(enqueue(c, 2 * j + 1, 2 * j, &m));
        }
        for c in ["a", "b"] {
            for seq in [2 * j, 2 * j + 1]
                .into_iter()
                .filter_map(|x| x.checked_sub(2))
            {
                ops.push(Op::Dequeue {
                    client_id: c.into(),
                    seq,
                });
            }
        }
        ops
    };
    s.write(&pair(0), false).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let seqs: Vec<u64> = s
                    .queue_range("a", 0, 10)
                    .unwrap()
                    .into_iter()
                    .map(|(seq, _)| seq)
                    .collect();
                let whole = seqs.len() == 2 && seqs[0].is_multiple_of(2) && seqs[1] == seqs[0] + 1;
                assert!(whole, "read {reads}: a torn batch: {seqs:?}");
                reads += 1;
            }
            reads
        })
    };
    for j in 1..1_000 {
        s.write(&pair(j), false).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("no torn read");
    assert!(reads > 0);
}

/// One step of queue churn for `hot`: a 1 MiB message queued at `seq`, then acknowledged.
fn churn_step(s: &FjallStore, seq: u64, m: &Arc<StoredMessage>) {
    s.write(&[enqueue("hot", seq, seq, m)], false).unwrap();
    let ack = Op::Dequeue {
        client_id: "hot".into(),
        seq,
    };
    s.write(&[ack], false).unwrap();
}

/// Waits (polling: fjall has no event for it) until the store keeps only its active journal.
fn only_active_journal(s: &FjallStore, within: std::time::Duration) -> bool {
    let deadline = Instant::now() + within;
    while s.journals().0 > 1 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// After a crash the restart replays the journal and goes on writing to it. Once fjall seals
/// it (past 64 MB), a keyspace written in it only now and then (`sessions` here: a client
/// connected) must not keep it on disk: a store kept two or three such journals beside the
/// active one and replayed all of them at every start, so SIGKILL restarts of a broker with a
/// busy queue took 4 to 8 s instead of 2.
#[test]
fn a_sealed_journal_is_deleted_although_sessions_are_rarely_written() {
    let dir = tempfile::tempdir().unwrap();
    // Incompressible, so the journal grows by what is written (fjall compresses entries).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let payload: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let m = Arc::new(message("hot/t", &payload));
    // Dropped without a clean close, like a SIGKILL: fjall flushes no memtable on drop.
    {
        let s = open(dir.path());
        s.write(&[Op::PutSession(session("idle-1"))], true).unwrap();
        (0..8).for_each(|seq| churn_step(&s, seq, &m));
    }
    let s = open(dir.path());
    s.write(&[Op::PutSession(session("idle-2"))], true).unwrap();
    let mut seq = 8;
    while s.journals().0 < 2 {
        assert!(seq < 300, "fjall sealed no journal after {seq} MiB");
        churn_step(&s, seq, &m);
        seq += 1;
    }
    // The first write after the seal sees it.
    churn_step(&s, seq, &m);
    let within = std::time::Duration::from_secs(10);
    assert!(
        only_active_journal(&s, within),
        "a sealed journal is still on disk after {within:?}: {:?} (journals, bytes)",
        s.journals()
    );
    drop(s);
    // What the next start replays: the active journal only, nothing was lost.
    let s = open(dir.path());
    let (journals, bytes) = s.journals();
    assert_eq!(journals, 1, "{bytes} bytes of journal");
    assert!(bytes <= 64 * 1024 * 1024, "{bytes} bytes of journal");
    let sessions = s.load().unwrap().sessions;
    let ids: Vec<&str> = sessions.iter().map(|l| &*l.session.client_id).collect();
    assert!(
        ids.contains(&"idle-1") && ids.contains(&"idle-2"),
        "{ids:?}"
    );
    assert_eq!(s.queue_len("hot").unwrap(), 0);
}

/// Writes/s of group commit against fsync per request, on this machine's disk. Not a timed
/// assertion: run with `cargo test --release -- --ignored --nocapture store_throughput`.
#[test]
#[ignore]
fn store_throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (mode, n) in [
        (SyncMode::Always, 2_000u64),
        (SyncMode::Batch, 50_000),
        (SyncMode::None, 50_000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(open(dir.path()));
        let writer = Arc::new(StoreWriter::spawn(store, mode, 1024));
        let start = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            // 256 concurrent publishers, each waiting for its write like a PUBACK would.
            for p in 0..256u64 {
                let writer = writer.clone();
                tasks.push(tokio::spawn(async move {
                    let msg = Arc::new(message("bench/topic", &[0u8; 128]));
                    let client = format!("client-{p}");
                    let mut seq = 0;
                    while seq * 256 + p < n {
                        writer
                            .submit(vec![enqueue(&client, seq, seq * 256 + p, &msg)])
                            .await
                            .unwrap();
                        seq += 1;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let secs = start.elapsed().as_secs_f64();
        let stats = writer.stats();
        println!(
            "{mode:?}: {n} acknowledged writes in {secs:.2}s = {:.0} writes/s ({} groups, {} fsyncs)",
            n as f64 / secs,
            stats.groups,
            stats.syncs
        );
    }
}
