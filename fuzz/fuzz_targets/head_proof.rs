//! Fuzzes signed shard heads: `HeadProof` frames checked against the world
//! key of the golden `Welcome` (PROTOCOL.md's worked example, Ed25519) —
//! only the golden proof itself verifies, anything else is refused, never a
//! panic — and arbitrary world keys, schemes and signatures through the
//! verifier (`KeyVerifier`, webpki's parsers): typed errors or `false`.
#![no_main]

use std::sync::Arc;

use hoard_engine::ServerIdentity;
use hoard_trust::heads::KeyVerifier;
use hoard_proto::proof::{HeadVerifier, ProofChecker};
use hoard_proto::wire::{FrameDecoder, MAX_CONTROL_FRAME, Message};
use libfuzzer_sys::fuzz_target;

const WELCOME: &[u8] = include_bytes!("../../proto/tests/golden/81-welcome.bin");
const PROOF: &[u8] = include_bytes!("../../proto/tests/golden/99-head-proof.bin");

fn message(bytes: &[u8]) -> Option<Message> {
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    decoder.push(bytes);
    let (kind, body) = decoder.next_frame().ok()??;
    Message::decode(kind, &body).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(Message::Welcome(welcome)) = message(WELCOME) else {
        panic!("the Welcome golden decodes");
    };
    let Some(Message::HeadProof(golden)) = message(PROOF) else {
        panic!("the HeadProof golden decodes");
    };
    let world = ServerIdentity(welcome.server);
    let verifier = KeyVerifier::new(world, &welcome.world_key).expect("the golden world key");
    let checker = ProofChecker::new(world, "world", Arc::new(verifier));
    if let Some(Message::HeadProof(proof)) = message(data)
        && checker.check_signature(&proof).is_ok()
    {
        assert_eq!(proof, golden, "only the signed head verifies");
    }
    // Any key, scheme and signature: `[u16 key length][key][u16 scheme][u16
    // signature length][signature][statement]`.
    let mut rest = data;
    let mut take = |n: usize| {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    };
    let len = |b: &[u8]| b.iter().fold(0usize, |n, &x| n << 8 | x as usize);
    let key_len = len(take(2));
    let key = take(key_len);
    let scheme = len(take(2)) as u16;
    let sig_len = len(take(2));
    let signature = take(sig_len).to_vec();
    let statement = take(usize::MAX);
    if let Ok(verifier) = KeyVerifier::new(ServerIdentity::of_key(key), key) {
        let _ = verifier.verify(scheme, statement, &signature);
    }
});
