//! `starling store check|dump|reset --dir DIR` end to end.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use starling::codec::{Properties, QoS};
use starling::storage::{
    FjallOptions, FjallStore, Op, Store, StoredDelivery, StoredMessage, StoredSession,
};

fn store_cmd(action: &str, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["store", action, "--dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run starling")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn populate(dir: &Path) {
    let store = FjallStore::open(dir, &FjallOptions::default()).unwrap();
    let msg = Arc::new(StoredMessage {
        topic: "sensors/temp".into(),
        payload: Bytes::from(vec![b'z'; 100_000]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        expires_at_unix_ms: None,
        publisher: None,
    });
    store
        .write(
            &[
                Op::PutSession(StoredSession {
                    client_id: "dev-1".into(),
                    owner_username: None,
                    protocol_level: 5,
                    expiry_secs: Some(3600),
                    disconnected_at_unix_ms: Some(1),
                    will: None,
                }),
                Op::Enqueue {
                    client_id: "dev-1".into(),
                    seq: 0,
                    delivery: StoredDelivery {
                        msg_id: 7,
                        msg,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_ids: vec![],
                    },
                },
            ],
            true,
        )
        .unwrap();
}

#[test]
fn check_dump_reset() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    populate(&dir);

    let o = store_cmd("check", &dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("sessions: 1 records"), "{out}");
    assert!(out.contains("OK"), "{out}");

    let o = store_cmd("dump", &dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("client=\"dev-1\""), "{out}");
    assert!(out.contains("topic=\"sensors/temp\" qos=1"), "{out}");
    assert!(out.contains("100000 bytes"), "{out}");
    assert!(out.len() < 3000, "no whole payloads: {} bytes", out.len());

    let o = store_cmd("reset", &dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("data.broken-"), "{out}");
    assert!(out.contains("Nothing was deleted"), "{out}");
    assert!(!dir.exists());
    let moved: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(moved[0].starts_with("data.broken-"), "{moved:?}");

    // Nothing there any more: every command says so and exits 1, creating nothing.
    for action in ["check", "dump", "reset"] {
        let o = store_cmd(action, &dir);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{action}: {err}");
        assert!(err.contains("no store at"), "{action}: {err}");
        assert!(!dir.exists(), "{action} created the directory");
    }
}

#[test]
fn check_reports_corrupt_records_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let sessions = db
            .keyspace("sessions", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        sessions.insert("broken", [1u8, 99, 0]).unwrap();
    }
    let o = store_cmd("check", dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("corrupt record in `sessions` at key broken"),
        "{out}"
    );
    assert!(err.contains("starling store reset --dir"), "{err}");
    let o = store_cmd("dump", dir.path());
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("CORRUPT"), "{out}");
}

#[test]
fn commands_refuse_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let _open = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    for action in ["check", "reset"] {
        let o = store_cmd(action, dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{action}: {err}");
        assert!(err.contains("in use"), "{action}: {err}");
    }
    assert!(dir.path().exists());
}
