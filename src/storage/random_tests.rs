//! Random batches of every kind of op, applied to the store under test and to a reference
//! [`MemoryStore`]: both load the same, and the store stays consistent. Run on both stores by
//! the suite in `tests.rs`.

use std::sync::Arc;

use super::{delivery, enqueue, session, Fixture};
use crate::storage::encoding::tests::message;
use crate::storage::*;

pub(super) fn random_ops_stay_consistent(f: Fixture) {
    let s = f.store();
    let reference = MemoryStore::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let bodies: Vec<Arc<StoredMessage>> = (0..8)
        .map(|i| Arc::new(message(&format!("t/{i}"), &[i as u8; 3])))
        .collect();
    for _ in 0..200 {
        let mut batch = vec![];
        for _ in 0..1 + next(6) {
            let c = format!("c{}", next(4));
            let op = match next(8) {
                0 => Op::PutSession(session(&c)),
                1 => Op::DeleteSession {
                    client_id: c,
                    retire_below: 0,
                },
                2..=4 => {
                    let id = next(8);
                    enqueue(&c, next(20), id, &bodies[id as usize])
                }
                5..=6 => Op::Dequeue {
                    client_id: c,
                    seq: next(20),
                },
                _ => {
                    let packet_id = next(3) as u16 + 1;
                    let order = OwnedOrder {
                        before: next(20),
                        nth: next(4) as u32,
                    };
                    match next(4) {
                        0 => Op::PutInflight {
                            client_id: c,
                            packet_id,
                            seq: next(20),
                            stage: InflightStage::Released,
                        },
                        1 => Op::PutOwnedInflight {
                            client_id: c,
                            packet_id,
                            order,
                            delivery: Some(delivery(0, &bodies[next(8) as usize])),
                        },
                        2 => Op::PutOwnedInflight {
                            client_id: c,
                            packet_id,
                            order,
                            delivery: None,
                        },
                        _ => Op::DeleteInflight {
                            client_id: c,
                            packet_id,
                        },
                    }
                }
            };
            batch.push(op);
        }
        s.write(&batch, false).unwrap();
        reference.write(&batch, false).unwrap();
    }
    // Sessions for every client, so no record is an orphan.
    let sessions: Vec<Op> = (0..4)
        .map(|c| Op::PutSession(session(&format!("c{c}"))))
        .collect();
    s.write(&sessions, true).unwrap();
    reference.write(&sessions, true).unwrap();
    assert_eq!(s.load().unwrap(), reference.load().unwrap());
    for c in 0..4 {
        let c = format!("c{c}");
        assert_eq!(
            s.queue_range(&c, 0, 100).unwrap(),
            reference.queue_range(&c, 0, 100).unwrap()
        );
    }
    f.assert_consistent();
}
