//! Signed heads, sans-IO: a client in proof mode takes a shard and its live
//! changes only with the world's signature over exactly what it ends up
//! holding. The signer here is a keyed BLAKE3 stand-in (the real ones,
//! rustls's and webpki's, are `hoard-net`'s and tested there): what is
//! tested is which statements a client accepts.

use std::sync::Arc;

use hoard_engine::digest::state_hash;
use hoard_engine::state::StateBuilder;
use hoard_engine::{Digest, Epoch, ObjectId, ObjectState, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_proto::proof::{HeadSigner, HeadVerifier, ProofChecker, ProofError, signed_statement};
use hoard_proto::sync::client::{CheckedCopy, ClientConfig, ClientSync, Effect, SyncError};
use hoard_proto::wire::{AnswerBegin, AnswerEnd, Delta, HeadProof, Message, Snapshot, WireObject};

const WORLD: ServerIdentity = ServerIdentity([4; 32]);
const KEY: [u8; 32] = [9; 32];

#[derive(Debug)]
struct KeyedHash;

impl HeadSigner for KeyedHash {
    fn scheme(&self) -> u16 {
        0xfe00
    }
    fn sign(&self, statement: &[u8]) -> Result<Vec<u8>, String> {
        Ok(blake3::keyed_hash(&KEY, statement).as_bytes().to_vec())
    }
}

impl HeadVerifier for KeyedHash {
    fn verify(&self, _: u16, statement: &[u8], signature: &[u8]) -> bool {
        blake3::keyed_hash(&KEY, statement).as_bytes() == signature
    }
}

fn zone() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn state(n: u8) -> ObjectState {
    StateBuilder::new().component("n", vec![n]).finish()
}

fn object(id: u64, version: u64, n: u8) -> WireObject {
    WireObject {
        id: ObjectId(id),
        version: Seq(version),
        state: state(n).into_bytes(),
    }
}

/// The head of `objects` at `seq`, signed.
fn proof(objects: &[WireObject], seq: u64) -> HeadProof {
    let mut sorted = objects.to_vec();
    sorted.sort_by_key(|o| o.id);
    let mut digest = Digest::EMPTY;
    for o in &sorted {
        digest.add(o.id, o.version, &state_hash(&o.state));
    }
    let root =
        hoard_engine::set_root::set_root(sorted.iter().map(|o| (o.id, o.version, &o.state[..]))).expect("sorted");
    let statement = signed_statement(&WORLD, "world", ShardId(1), Epoch(7), Seq(seq), &digest, &root);
    HeadProof {
        shard: ShardId(1),
        epoch: Epoch(7),
        seq: Seq(seq),
        digest,
        root,
        scheme: 0xfe00,
        signature: KeyedHash.sign(&statement).expect("sign"),
    }
}

fn client() -> ClientSync {
    ClientSync::new(ClientConfig {
        server: WORLD,
        service: "world".into(),
        perspective: "ann".into(),
        registry: RegistryHash([2; 32]),
        wall_clock_at_zero: chrono::Utc::now(),
        proofs: Some(ProofChecker::new(WORLD, "world", Arc::new(KeyedHash))),
    })
}

fn snapshot(objects: &[WireObject], seq: u64, digest: Digest) -> Message {
    Message::Snapshot(Snapshot {
        shard: ShardId(1),
        epoch: Epoch(7),
        seq: Seq(seq),
        digest,
        perspective: None,
        objects: objects.to_vec(),
    })
}

/// A client that entered the zone (one shard, objects 1 and 2 at seq 3)
/// with the answer signed.
fn entered() -> ClientSync {
    let mut c = client();
    let request = c.enter_zone(0.0, zone(), &[], true);
    c.provide_copies(0.0, request, Vec::<CheckedCopy>::new())
        .expect("copies");
    let objects = [object(1, 2, 10), object(2, 3, 20)];
    let head = proof(&objects, 3);
    let digest = head.digest;
    for m in [
        Message::AnswerBegin(AnswerBegin {
            request,
            zone: zone(),
            shards: 1,
        }),
        Message::HeadProof(head),
        snapshot(&objects, 3, digest),
        Message::AnswerEnd(AnswerEnd { request }),
    ] {
        c.handle_answer(0.1, request, m, 10).expect("a signed answer is taken");
    }
    let effects: Vec<Effect> = std::iter::from_fn(|| c.poll_effect()).collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ZoneReady { proofs, .. } if proofs.len() == 1))
    );
    c
}

fn delta(base: u64, seq: u64, digest: Digest, tombstones: Vec<u64>, upserts: Vec<WireObject>) -> Message {
    Message::Delta(Delta {
        zone: zone(),
        shard: ShardId(1),
        epoch: Epoch(7),
        base: Seq(base),
        seq: Seq(seq),
        digest,
        tombstones: tombstones.into_iter().map(ObjectId).collect(),
        upserts,
    })
}

#[test]
fn a_signed_delta_is_applied_and_reported_with_its_proof() {
    let mut c = entered();
    let after = [object(1, 2, 10), object(2, 4, 21)];
    let head = proof(&after, 4);
    let digest = head.digest;
    c.handle(0.2, Message::HeadProof(head), 10).expect("proof");
    c.handle(0.2, delta(3, 4, digest, vec![], vec![object(2, 4, 21)]), 10)
        .expect("delta");
    let applied = std::iter::from_fn(|| c.poll_effect()).find_map(|e| match e {
        Effect::DeltaApplied { proof, .. } => Some(proof),
        _ => None,
    });
    assert_eq!(applied.flatten().map(|p| p.seq), Some(Seq(4)));
}

#[test]
fn an_altered_delta_under_a_genuine_signature_is_refused_and_not_applied() {
    let mut c = entered();
    let honest = [object(1, 2, 10), object(2, 4, 21)];
    let head = proof(&honest, 4);
    // The relay changes the value and makes the digest fit its change.
    let forged = [object(1, 2, 10), object(2, 4, 99)];
    let forged_digest = proof(&forged, 4).digest;
    c.handle(0.2, Message::HeadProof(head), 10).expect("proof");
    let result = c.handle(0.2, delta(3, 4, forged_digest, vec![], vec![object(2, 4, 99)]), 10);
    assert!(
        matches!(result, Err(SyncError::Forged(ProofError::OtherHead { .. }))),
        "{result:?}"
    );
    assert!(
        std::iter::from_fn(|| c.poll_effect())
            .all(|e| !matches!(e, Effect::DeltaApplied { .. } | Effect::JournalShard { .. })),
        "nothing of it reaches the game or the disk"
    );
}

#[test]
fn a_dropped_tombstone_is_caught_by_the_set_root_and_count() {
    let mut c = entered();
    // Object 1 leaves; the relay keeps it and drops the tombstone.
    let honest = [object(2, 3, 20)];
    let head = proof(&honest, 4);
    let kept = [object(1, 2, 10), object(2, 3, 20)];
    let kept_digest = proof(&kept, 4).digest;
    c.handle(0.2, Message::HeadProof(head), 10).expect("proof");
    let result = c.handle(0.2, delta(3, 4, kept_digest, vec![], vec![]), 10);
    assert!(matches!(result, Err(SyncError::Forged(_))), "{result:?}");
}

#[test]
fn a_replayed_older_head_and_a_bad_signature_are_refused() {
    let mut c = entered();
    let older = proof(&[object(1, 2, 10)], 2);
    let result = c.handle(0.2, Message::HeadProof(older), 10);
    assert!(
        matches!(
            result,
            Err(SyncError::Forged(ProofError::Rollback {
                seq: Seq(2),
                held: Seq(3),
                ..
            }))
        ),
        "{result:?}"
    );
    let mut c = entered();
    let mut bad = proof(&[object(1, 2, 10), object(2, 4, 21)], 4);
    bad.signature[0] ^= 1;
    let result = c.handle(0.2, Message::HeadProof(bad), 10);
    assert!(
        matches!(result, Err(SyncError::Forged(ProofError::BadSignature(_)))),
        "{result:?}"
    );
}

#[test]
fn an_unsigned_delta_is_not_applied_but_repaired() {
    let mut c = entered();
    let after = [object(1, 2, 10), object(2, 4, 21)];
    let digest = proof(&after, 4).digest;
    c.handle(0.2, delta(3, 4, digest, vec![], vec![object(2, 4, 21)]), 10)
        .expect("handled");
    assert!(std::iter::from_fn(|| c.poll_effect()).all(|e| !matches!(e, Effect::DeltaApplied { .. })));
    assert!(
        std::iter::from_fn(|| c.poll_transmit()).any(|m| matches!(m, Message::Repair(_))),
        "the shard is asked for again, signed"
    );
}

#[test]
fn an_entry_answer_without_a_proof_is_refused() {
    let mut c = client();
    let request = c.enter_zone(0.0, zone(), &[], true);
    c.provide_copies(0.0, request, Vec::<CheckedCopy>::new())
        .expect("copies");
    let objects = [object(1, 2, 10)];
    let digest = proof(&objects, 3).digest;
    c.handle_answer(
        0.1,
        request,
        Message::AnswerBegin(AnswerBegin {
            request,
            zone: zone(),
            shards: 1,
        }),
        10,
    )
    .expect("begin");
    let result = c.handle_answer(0.1, request, snapshot(&objects, 3, digest), 10);
    assert!(
        matches!(result, Err(SyncError::Forged(ProofError::Missing(_)))),
        "{result:?}"
    );
    assert!(std::iter::from_fn(|| c.poll_effect()).all(|e| !matches!(e, Effect::WriteShard(_))));
}
