//! Inflight records that hold their own message (`Op::PutOwnedInflight`: retained messages
//! sent to a new subscription), run on both stores by the suite in `tests.rs`.

use std::sync::Arc;

use super::{enqueue, session, Fixture};
use crate::storage::encoding::tests::message;
use crate::storage::*;

fn owned(packet_id: u16, before: u64, nth: u32, d: Option<StoredDelivery>) -> Op {
    Op::PutOwnedInflight {
        client_id: "c".into(),
        packet_id,
        order: OwnedOrder { before, nth },
        delivery: d,
    }
}

fn queued(packet_id: u16, seq: u64) -> Op {
    Op::PutInflight {
        client_id: "c".into(),
        packet_id,
        seq,
        stage: InflightStage::Publish,
    }
}

/// Records holding their message load with it, in send order among the records naming queue
/// entries [MQTT-4.6.0-1], name no queue entry (the replay and the next position ignore them,
/// but new positions never sort before them), and go with `DeleteInflight`.
pub(super) fn owned_inflight_records_load_in_send_order(f: Fixture) {
    let s = f.store();
    let retained = Arc::new(message("r/1", b"retained"));
    let d = StoredDelivery {
        msg_id: 0,
        msg: retained.clone(),
        qos: QoS::ExactlyOnce,
        retain: true,
        subscription_ids: vec![7],
    };
    let mut batch = vec![Op::PutSession(session("c"))];
    for seq in 10..15u64 {
        let m = Arc::new(message("t", seq.to_string().as_bytes()));
        batch.push(enqueue("c", seq, seq, &m));
    }
    // Sent: queue entry 10, two retained messages (the second already PUBREC'd), queue entry
    // 11, then a retained one again; packet ids wrapped meanwhile.
    batch.extend([
        queued(65534, 10),
        owned(65535, 11, 0, Some(d.clone())),
        owned(1, 11, 1, None),
        queued(2, 11),
        owned(3, 12, 2, Some(d.clone())),
    ]);
    s.write(&batch, true).unwrap();
    // A session that only ever got retained messages: nothing queued.
    let mut only = owned(9, 40, 0, Some(d.clone()));
    if let Op::PutOwnedInflight { client_id, .. } = &mut only {
        *client_id = "d".into();
    }
    s.write(&[Op::PutSession(session("d")), only], true)
        .unwrap();

    let snap = s.load().unwrap();
    let l = &snap.sessions[0];
    let order: Vec<u16> = l.inflight.iter().map(LoadedInflight::packet_id).collect();
    assert_eq!(order, [65534, 65535, 1, 2, 3]);
    match &l.inflight[1] {
        LoadedInflight::Owned {
            order,
            delivery: Some(got),
            ..
        } => {
            assert_eq!(*order, OwnedOrder { before: 11, nth: 0 });
            assert_eq!(got.msg, retained);
            assert_eq!((got.qos, got.retain), (QoS::ExactlyOnce, true));
            assert_eq!(got.subscription_ids, [7]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        l.inflight[2],
        LoadedInflight::Owned { delivery: None, .. }
    ));
    assert_eq!((l.next_seq, l.replay_from_seq), (15, 12));
    let d_loaded = &snap.sessions[1];
    assert_eq!(
        (d_loaded.next_seq, d_loaded.replay_from_seq),
        (40, 0),
        "new queue entries sort after the retained message sent before position 40"
    );
    f.assert_consistent();

    s.write(
        &[Op::DeleteInflight {
            client_id: "c".into(),
            packet_id: 65535,
        }],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    let order: Vec<u16> = snap.sessions[0]
        .inflight
        .iter()
        .map(LoadedInflight::packet_id)
        .collect();
    assert_eq!(order, [65534, 1, 2, 3]);
    assert!(f
        .dump()
        .contains("sent_before_seq=12 nth=2 stage=Publish qos=2"));
    s.write(
        &[Op::DeleteSession {
            client_id: "c".into(),
            retire_below: 15,
        }],
        true,
    )
    .unwrap();
    assert_eq!(s.load().unwrap().sessions.len(), 1);
    f.assert_consistent();
}
