//! Crash safety of the disk store: a child process (this test binary, re-invoked with
//! `STARLING_CRASH_CHILD` set) writes batches through the group-commit writer and prints each
//! acknowledged seq; it is SIGKILLed mid-stream, the store is reopened, and every acknowledged
//! batch must be there, whole.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use starling::codec::{Properties, QoS};
use starling::storage::{
    FjallOptions, FjallStore, InflightStage, Op, Store, StoreWriter, StoredDelivery, StoredMessage,
    StoredSession, SyncMode,
};

const CHILD_ENV: &str = "STARLING_CRASH_CHILD";
const CLIENT: &str = "crash-client";

fn msg(seq: u64) -> StoredMessage {
    StoredMessage {
        topic: format!("crash/{seq}"),
        payload: Bytes::from(vec![(seq % 251) as u8; 200]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        expires_at_unix_ms: None,
        publisher: None,
    }
}

/// One batch touches three keyspaces; atomicity means all three records or none.
fn batch(seq: u64) -> Vec<Op> {
    let m = Arc::new(msg(seq));
    vec![
        Op::Enqueue {
            client_id: CLIENT.into(),
            seq,
            delivery: StoredDelivery {
                msg_id: seq,
                msg: m.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
            },
        },
        Op::PutRetained(StoredMessage {
            retain: true,
            ..(*m).clone()
        }),
        Op::PutInflight {
            client_id: CLIENT.into(),
            packet_id: (seq % 60_000) as u16 + 1,
            seq,
            stage: InflightStage::Publish,
        },
    ]
}

/// The child: writes until killed.
fn run_child(dir: &Path) {
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir, &FjallOptions::default()).expect("child opens the store"));
    // Continue after what an earlier child left, as the broker would.
    let snap = store.load().expect("child loads the store");
    let first_seq = snap.sessions.first().map_or(0, |s| s.next_seq);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let writer = Arc::new(StoreWriter::spawn(store, SyncMode::Batch, 256));
        writer
            .submit(vec![Op::PutSession(StoredSession {
                client_id: CLIENT.into(),
                owner_username: None,
                protocol_level: 4,
                expiry_secs: None,
                disconnected_at_unix_ms: None,
                will: None,
            })])
            .await
            .expect("session");
        println!("child ready");
        let next = Arc::new(AtomicU64::new(first_seq));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (writer, next) = (writer.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    writer.submit(batch(seq)).await.expect("write");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {seq}").expect("stdout");
                    out.flush().expect("stdout");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
}

#[test]
fn crash_child() {
    // Only does something when re-invoked by `acknowledged_writes_survive_sigkill`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked = Vec::new();
    for round in 0..2 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let start = Instant::now();
        let target = acked.len() + 300 + round * 2700;
        let mut ready = false;
        while acked.len() < target && start.elapsed() < Duration::from_secs(120) {
            let Some(line) = lines.next() else { break };
            let line = line.expect("read");
            // libtest may print "test crash_child ... " in front of the first line.
            if line.ends_with("child ready") {
                ready = true;
            } else if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().expect("seq"));
            }
        }
        assert!(ready, "the child did not start");
        // SIGKILL while the writers are mid-stream.
        child.kill().expect("kill");
        // Acks printed before the kill are still in the pipe.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().expect("seq"));
            }
        }
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child was killed, not finished");
        assert!(acked.len() >= 300, "only {} acks", acked.len());

        // Reopen: every acknowledged batch is there, whole. The next round appends, so later
        // rounds also check recovery of a store that was itself recovered.
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).expect("reopen");
        let snap = store.load().expect("load");
        assert_eq!(snap.sessions.len(), 1);
        let queued: std::collections::HashSet<u64> = store
            .queue_range(CLIENT, 0, usize::MAX)
            .expect("queue")
            .into_iter()
            .map(|(seq, d)| {
                assert_eq!(d.msg.topic, format!("crash/{seq}"));
                assert_eq!(d.msg.payload, msg(seq).payload);
                seq
            })
            .collect();
        let retained: std::collections::HashSet<u64> = snap
            .retained
            .iter()
            .map(|m| m.topic["crash/".len()..].parse::<u64>().expect("topic"))
            .collect();
        let inflight: std::collections::HashSet<u64> = snap.sessions[0]
            .inflight
            .iter()
            .filter_map(|i| i.seq())
            .collect();
        for seq in &acked {
            assert!(queued.contains(seq), "acknowledged seq {seq} lost");
        }
        assert_eq!(queued, retained, "batches are atomic");
        assert!(
            queued.iter().all(|s| inflight.contains(s)),
            "batches are atomic"
        );
        let report = store.check();
        assert!(report.is_ok(), "{report}");
        println!(
            "round {round}: {} acknowledged, {} stored (the rest were written but not yet acked)",
            acked.len(),
            queued.len()
        );
        drop(store);
    }
}
