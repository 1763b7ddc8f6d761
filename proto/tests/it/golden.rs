//! Golden bytes of every message: a change to any encoding fails here and
//! must be a protocol version bump (and a change to docs/PROTOCOL.md).
//! Regenerate with `HOARD_BLESS=1` only together with such a bump (or when
//! the fixed instances themselves change, as when their digests became the
//! real digests of the documented objects: same encoding, new values).

use std::path::PathBuf;

use hoard_engine::{Digest, Epoch, ObjectId, Seq, ShardId, ZoneId};
use hoard_proto::wire::*;

/// The digest of the shard every shard message here describes: objects 42
/// (version 7) and 43 (version 9), as in docs/PROTOCOL.md's worked example.
fn digest() -> Digest {
    let mut d = Digest::EMPTY;
    for o in [object(), object_43()] {
        d.add(o.id, o.version, &hoard_engine::digest::state_hash(&o.state));
    }
    d
}

/// The heads the `Fresh` golden's root is computed over (PROTOCOL.md's
/// worked example): shards 4 and 5, both at seq 11 of one epoch, both
/// holding the documented two objects.
fn fresh_heads() -> Vec<(ShardId, Epoch, Seq, Digest)> {
    [4, 5]
        .map(|s| (ShardId(s), Epoch(0x1122_3344_5566_7788), Seq(11), digest()))
        .to_vec()
}

fn object_43() -> WireObject {
    WireObject {
        id: ObjectId(43),
        version: Seq(9),
        state: vec![0x81, 0xa1, b'n', 0xc4, 0x01, 0x06],
    }
}

/// The world key of docs/PROTOCOL.md § "Signed shard heads": the Ed25519
/// key of seed `[1; 32]`, as SubjectPublicKeyInfo DER.
const WORLD_KEY: [u8; 44] =
    hex44("302a300506032b65700321008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");

/// Its signature over the head of the `94-snapshot` golden's shard (the
/// `hoard-net` test `signed_head_of_the_protocol_document` makes it).
const SIGNATURE: &str = "a3b0c841d1bb83f04fc28774256b0cae63c672caa887145215b3d384a474a35e29360cba78c750d42915b6892db4c1b9e8b93389ad2573811ea85ee0c725210b";

/// The set root of that shard (objects 42 and 43).
const SET_ROOT: &str = "bafe1864b8beaa3731b62dc495ea3a7de1726013576847911506829bbe930957";

/// The `9a-packed` golden's content: one Zstandard frame (RFC 8878) of the
/// `91-up-to-date` and `95-answer-end` frames, 15 bytes, as a raw block
/// (docs/PROTOCOL.md's worked example).
const PACKED_DATA: &str = "28b52ffd200f790000000000049192030900000003959101";

const fn hex44(s: &str) -> [u8; 44] {
    let b = s.as_bytes();
    let mut out = [0u8; 44];
    let mut i = 0;
    while i < 44 {
        out[i] = nibble(b[2 * i]) * 16 + nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn zone() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn object() -> WireObject {
    WireObject {
        id: ObjectId(42),
        version: Seq(7),
        state: vec![0x81, 0xa1, b'n', 0xc4, 0x01, 0x05],
    }
}

/// One fixed instance of every message.
fn messages() -> Vec<(&'static str, Message)> {
    vec![
        (
            "01-hello",
            Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                registry: [0xab; 32],
                service: "world".into(),
                token: "v1.ann.1700000000.00".into(),
                codecs: vec![CODEC_ZSTD],
                token_keys: false,
            }),
        ),
        (
            "02-enter-zone",
            Message::EnterZone(EnterZone {
                request: 1,
                zone: zone(),
                subscribe: true,
                have: vec![ShardHave {
                    shard: ShardId(3),
                    epoch: Epoch(0x1122_3344_5566_7788),
                    hwm: Seq(9),
                    digest: digest(),
                }],
                held: vec![(ShardId(4), Seq(11)), (ShardId(5), Seq(11)), (ShardId(7), Seq(2))],
                proofs: false,
            }),
        ),
        ("03-leave-zone", Message::LeaveZone(LeaveZone { zone: zone() })),
        (
            "04-repair",
            Message::Repair(Repair {
                request: 2,
                zone: zone(),
                shard: ShardId(3),
                hwm: Seq(9),
                have: vec![RepairEntry {
                    id: ObjectId(42),
                    version: Seq(7),
                    hash: [1, 2, 3, 4, 5, 6, 7, 8],
                }],
            }),
        ),
        (
            "05-intent",
            Message::Intent(Intent {
                seq: 3,
                kind: "pick_up".into(),
                payload: vec![0x91, 0x2a],
                signature: Vec::new(),
            }),
        ),
        ("05-intent-signed", Message::Intent(signed_intent())),
        (
            "81-welcome-token-keys",
            Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                server: hoard_engine::ServerIdentity::of_key(&WORLD_KEY).0,
                perspective: "relay-one".into(),
                zones: vec![zone()],
                tick_hz: 20,
                world_key: WORLD_KEY.to_vec(),
                token_keys: Some(signed_token_keys()),
            }),
        ),
        ("86-intent-nonce", Message::IntentNonce(IntentNonce { nonce: NONCE })),
        (
            "81-welcome",
            Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                // The world identity names the world key: BLAKE3 of it.
                server: hoard_engine::ServerIdentity::of_key(&WORLD_KEY).0,
                perspective: "ann".into(),
                zones: vec![zone()],
                tick_hz: 20,
                world_key: WORLD_KEY.to_vec(),
                token_keys: None,
            }),
        ),
        (
            "82-error",
            Message::Error(ErrorMsg {
                code: ErrorCode::Expired as u16,
                message: "token expired".into(),
            }),
        ),
        (
            "83-zone-denied",
            Message::ZoneDenied(ZoneDenied {
                request: 1,
                zone: zone(),
                code: ErrorCode::Forbidden as u16,
                message: "no".into(),
            }),
        ),
        (
            "85-zone-elsewhere",
            Message::ZoneElsewhere(ZoneElsewhere {
                request: 1,
                zone: zone(),
                address: "10.0.0.2:7000".into(),
            }),
        ),
        (
            "84-intent-rejected",
            Message::IntentRejected(IntentRejected {
                seq: 3,
                code: ErrorCode::RateLimited as u16,
                message: "slow down".into(),
            }),
        ),
        (
            "90-answer-begin",
            Message::AnswerBegin(AnswerBegin {
                request: 1,
                zone: zone(),
                shards: 64,
            }),
        ),
        (
            "91-up-to-date",
            Message::UpToDate(UpToDate {
                shard: ShardId(3),
                seq: Seq(9),
            }),
        ),
        (
            "92-changes",
            Message::Changes(Changes {
                shard: ShardId(3),
                epoch: Epoch(5),
                base: Seq(9),
                seq: Seq(11),
                digest: digest(),
                tombstones: vec![ObjectId(40)],
                upserts: vec![object()],
            }),
        ),
        (
            "93-manifest",
            Message::Manifest(Manifest {
                shard: ShardId(3),
                epoch: Epoch(5),
                base: Seq(2),
                seq: Seq(11),
                digest: digest(),
                live: vec![ObjectId(42), ObjectId(43)],
                upserts: vec![object()],
            }),
        ),
        (
            "94-snapshot",
            Message::Snapshot(Snapshot {
                shard: ShardId(3),
                epoch: Epoch(5),
                seq: Seq(11),
                digest: digest(),
                perspective: Some("ann".into()),
                objects: vec![object(), object_43()],
            }),
        ),
        (
            "98-fresh",
            Message::Fresh(Fresh {
                // Of the EnterZone golden's held shards 4, 5 and 7: the first two.
                mask: vec![0b011],
                tags: fresh_heads()
                    .iter()
                    .map(|(shard, epoch, seq, digest)| head_tag(*shard, *epoch, *seq, digest))
                    .collect(),
                root: fresh_root(&fresh_heads()),
            }),
        ),
        (
            "99-head-proof",
            Message::HeadProof(HeadProof {
                shard: ShardId(3),
                epoch: Epoch(5),
                seq: Seq(11),
                digest: digest(),
                root: unhex(SET_ROOT).try_into().expect("32 bytes"),
                scheme: 0x0807,
                signature: unhex(SIGNATURE),
            }),
        ),
        ("95-answer-end", Message::AnswerEnd(AnswerEnd { request: 1 })),
        (
            "9a-packed",
            Message::Packed(Packed {
                codec: CODEC_ZSTD,
                size: 15,
                data: unhex(PACKED_DATA),
            }),
        ),
        (
            "a0-delta",
            Message::Delta(Delta {
                zone: zone(),
                shard: ShardId(3),
                epoch: Epoch(5),
                base: Seq(11),
                seq: Seq(12),
                digest: digest(),
                tombstones: vec![],
                upserts: vec![object()],
            }),
        ),
        (
            "a1-transient",
            Message::Transient(Transient {
                zone: zone(),
                payload: vec![0x92, 0xa3, b'a', b'n', b'n', 0x07],
            }),
        ),
        (
            "a4-transient-patch",
            Message::TransientPatch(TransientPatch {
                zone: zone(),
                base: hoard_proto::transient::base_tag(&[0x92, 0xa3, b'a', b'n', b'n', 0x07]).to_vec(),
                ops: vec![PatchOp(0, 5, vec![0x08])],
            }),
        ),
        (
            "a5-game-message",
            Message::GameMessage(GameMessage {
                kind: "notice".into(),
                zone: Some(zone()),
                payload: vec![0x91, 0xa2, b'h', b'i'],
            }),
        ),
        ("96-parts", Message::Parts(Parts { count: 2 })),
        (
            "97-more",
            Message::More(More {
                objects: vec![object()],
            }),
        ),
        ("a3-processed", Message::Processed(Processed { seqs: vec![3, 4] })),
        (
            "a2-status",
            Message::Status(Status {
                writable: false,
                message: "store failing".into(),
            }),
        ),
    ]
}

#[test]
fn every_message_encodes_to_its_golden_bytes_and_back() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, msg) in messages() {
        let frame = msg.to_frame();
        let path = dir.join(format!("{name}.bin"));
        if std::env::var_os("HOARD_BLESS").is_some() {
            std::fs::write(&path, &frame).expect("bless");
        }
        let golden = std::fs::read(&path).unwrap_or_else(|_| panic!("{name}: golden file missing (HOARD_BLESS=1)"));
        assert!(
            golden == frame,
            "{name}: encoding changed; bump PROTOCOL_VERSION and docs/PROTOCOL.md"
        );
        let mut decoder = FrameDecoder::new(MAX_BULK_FRAME);
        decoder.push(&golden);
        let (kind, body) = decoder.next_frame().expect("frame").expect("whole");
        assert_eq!(kind, msg.kind(), "{name}");
        assert_eq!(Message::decode(kind, &body).expect("decodes"), msg, "{name}");
    }
}

/// The golden digests are real: the snapshot's digest is the documented
/// formula over its objects, and its 40 bytes are the worked example's.
#[test]
fn the_golden_snapshot_digest_is_the_digest_of_its_objects() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bytes = std::fs::read(dir.join("94-snapshot.bin")).expect("golden");
    let Ok(Message::Snapshot(snapshot)) = Message::decode(bytes[4], &bytes[5..]) else {
        panic!("94-snapshot.bin is a snapshot")
    };
    let mut recomputed = Digest::EMPTY;
    for o in &snapshot.objects {
        recomputed.add(o.id, o.version, &hoard_engine::digest::state_hash(&o.state));
    }
    assert_eq!(recomputed, snapshot.digest);
    let hex: String = snapshot.digest.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, "a22388281831f7aee87e004812d966b623a174a0ccf5c7a0ae3051dd0eb9784d0200000000000000",
        "the worked example of docs/PROTOCOL.md"
    );
}

#[test]
fn the_golden_fresh_root_is_the_documented_one() {
    let hex: String = fresh_root(&fresh_heads()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, FRESH_ROOT, "the worked example of docs/PROTOCOL.md");
}

/// docs/PROTOCOL.md § World tokens: the world's token key is the Ed25519
/// key of seed `[2; 32]`, the player's intent key that of seed `[3; 32]`.
fn token_key() -> hoard_proto::world_token::TokenSigningKey {
    hoard_proto::world_token::TokenSigningKey::from_seed([2; 32])
}

fn player_key() -> hoard_proto::intent_sig::PlayerKey {
    hoard_proto::intent_sig::PlayerKey::from_seed([3; 32])
}

fn world() -> hoard_engine::ServerIdentity {
    hoard_engine::ServerIdentity::of_key(&WORLD_KEY)
}

/// The session nonce of the signed-intent example: bytes 0x00 … 0x0f.
const NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// ann's first intent under `NONCE`, signed with her key.
fn signed_intent() -> Intent {
    let (seq, kind, payload) = (1, "pick_up", vec![0x91, 0x2a]);
    let statement = hoard_proto::intent_sig::intent_statement(&world(), &NONCE, "ann", seq, kind, &payload);
    Intent {
        seq,
        kind: kind.into(),
        payload,
        signature: player_key().sign(&statement).to_vec(),
    }
}

/// The world's one token key, signed with the world key (Ed25519, TLS
/// scheme 0x0807).
fn signed_token_keys() -> SignedTokenKeys {
    let keys = [*token_key().public().bytes()];
    let statement = hoard_proto::world_token::token_keys_statement(&world(), &keys);
    let world_secret = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([1; 32]));
    SignedTokenKeys {
        keys: keys.into_iter().map(serde_bytes::ByteArray::new).collect(),
        scheme: 0x0807,
        signature: world_secret.sk.sign(&statement, None).to_vec(),
    }
}

/// ann's world token of docs/PROTOCOL.md, binding her key, expiring at
/// 2,000,000,000 (2033-05-18T03:33:20Z).
#[test]
fn the_golden_world_token_and_signatures_verify() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/token-v4.txt");
    let minted = token_key()
        .mint(&world(), "ann", 2_000_000_000, Some(&player_key().public()))
        .expect("mint");
    if std::env::var_os("HOARD_BLESS").is_some() {
        std::fs::write(path, format!("{minted}\n")).expect("bless");
    }
    let golden = std::fs::read_to_string(path).expect("golden token");
    assert_eq!(golden.trim(), minted, "token encoding changed");
    let keys = hoard_proto::world_token::TokenKeys::new(world(), vec![token_key().public().clone()]);
    let verified = keys.verify(golden.trim(), 1_999_999_999).expect("verifies");
    assert_eq!(
        (verified.player.as_str(), verified.player_key),
        ("ann", Some(player_key().public()))
    );
    // The signed intent checks under the nonce, as the origin checks it.
    let intent = signed_intent();
    let mut check = hoard_proto::intent_sig::IntentChecker::new(world(), "ann", player_key().public(), NONCE);
    assert_eq!(
        check.check(intent.seq, &intent.kind, &intent.payload, &intent.signature),
        Ok(())
    );
    // The token key list verifies with the world key.
    let signed = signed_token_keys();
    let raw = [signed.keys[0].into_array()];
    let statement = hoard_proto::world_token::token_keys_statement(&world(), &raw);
    let world_public = ed25519_compact::PublicKey::from_slice(&WORLD_KEY[12..]).expect("key");
    let signature = ed25519_compact::Signature::from_slice(&signed.signature).expect("sig");
    assert!(world_public.verify(&statement, &signature).is_ok());
}

/// docs/PROTOCOL.md § The fresh root.
const FRESH_ROOT: &str = "b6091ea3c617cb2aea77055caec237dbd0ec403e80a56be1fc339ef055b7e684";

/// The set root of docs/PROTOCOL.md's worked example, over the objects of
/// the `94-snapshot` golden.
#[test]
fn the_golden_welcome_names_the_world_by_its_key() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/81-welcome.bin")).expect("golden");
    let mut decoder = FrameDecoder::new(MAX_BULK_FRAME);
    decoder.push(&bytes);
    let (kind, body) = decoder.next_frame().expect("frame").expect("whole");
    let message = Message::decode(kind, &body).expect("decodes");
    let Message::Welcome(welcome) = message else {
        panic!("not a Welcome: {message:?}")
    };
    assert_eq!(
        welcome.server,
        *blake3::hash(&welcome.world_key).as_bytes(),
        "Welcome.server = BLAKE3(world_key), as signed heads require"
    );
}

#[test]
fn the_golden_set_root_is_the_documented_one() {
    let objects = [object(), object_43()];
    let root =
        hoard_engine::set_root::set_root(objects.iter().map(|o| (o.id, o.version, &o.state[..]))).expect("sorted");
    let hex: String = root.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, SET_ROOT);
    assert_eq!(
        hoard_engine::ServerIdentity::of_key(&WORLD_KEY).to_hex(),
        "f4298f90fd6f9627a3f0f2678dcfca9c3019eacc227433144b6b41d1ac6f144c"
    );
}

#[test]
fn trailing_bytes_and_wrong_types_are_refused() {
    let hello = messages().remove(0).1;
    let mut body = hello.body();
    body.push(0);
    assert!(matches!(Message::decode(0x01, &body), Err(DecodeError::Body { .. })));
    assert!(matches!(
        Message::decode(0x02, &hello.body()),
        Err(DecodeError::Body { .. })
    ));
    assert_eq!(Message::decode(0x7f, &[]), Err(DecodeError::UnknownType(0x7f)));
}

#[test]
fn a_fresh_mask_that_does_not_fit_the_held_list_is_refused() {
    let held = [ShardId(4), ShardId(5), ShardId(7)];
    let fresh = |mask: Vec<u8>, tags: Vec<u8>| Fresh {
        mask,
        tags,
        root: [0; 32],
    };
    assert_eq!(
        fresh(vec![0b101], vec![1, 2]).selected(&held),
        Ok(vec![ShardId(4), ShardId(7)])
    );
    assert!(
        fresh(vec![0b101, 0], vec![1, 2]).selected(&held).is_err(),
        "mask too long"
    );
    assert!(
        fresh(vec![0b1000], vec![1]).selected(&held).is_err(),
        "a bit past the list"
    );
    assert!(fresh(vec![0b011], vec![1]).selected(&held).is_err(), "too few tags");
    assert_eq!(fresh(vec![], vec![]).selected(&[]), Ok(vec![]));
}

/// docs/PROTOCOL.md § Transient state: the golden patch turns the golden
/// `Transient`'s payload into `["ann", 8]`, and its base is the documented
/// tag of that payload.
#[test]
fn the_golden_transient_patch_rebuilds_the_documented_payload() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let read = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).expect("golden");
        Message::decode(bytes[4], &bytes[5..]).expect("decodes")
    };
    let (Message::Transient(whole), Message::TransientPatch(patch)) =
        (read("a1-transient.bin"), read("a4-transient-patch.bin"))
    else {
        panic!("a transient and a patch")
    };
    assert_eq!(patch.base, [0xc1, 0x05, 0x73, 0x8e, 0xe6, 0xc0, 0x89, 0xbc]);
    assert_eq!(patch.base, hoard_proto::transient::base_tag(&whole.payload));
    assert_eq!(
        hoard_proto::transient::apply(&whole.payload, &patch.ops).expect("applies"),
        [0x92, 0xa3, b'a', b'n', b'n', 0x08]
    );
}

#[test]
fn the_golden_packed_frame_holds_the_documented_frames() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let read = |name: &str| std::fs::read(dir.join(format!("{name}.bin"))).expect("golden");
    let packed = read("9a-packed");
    let mut inner = read("91-up-to-date");
    inner.extend(read("95-answer-end"));
    let Message::Packed(p) = Message::decode(packed[4], &packed[5..]).expect("decodes") else {
        panic!("not a Packed");
    };
    assert_eq!(unpack(&p).expect("unpacks"), inner);
    // On a bulk stream it reads as the two messages, their shares its 34 bytes.
    let mut stream = StreamDecoder::bulk();
    stream.push(&packed);
    let (first, a) = stream.next_message().expect("valid").expect("a message");
    let (second, b) = stream.next_message().expect("valid").expect("a message");
    assert_eq!(
        first,
        Message::UpToDate(UpToDate {
            shard: ShardId(3),
            seq: Seq(9)
        })
    );
    assert_eq!(second, Message::AnswerEnd(AnswerEnd { request: 1 }));
    assert_eq!((a + b, packed.len()), (34, 34));
    assert_eq!(stream.next_message(), Ok(None));
}
