//! `hoard-bench trust`: what signed trust costs — a world token's check
//! beside the previous version's MAC token's, and per intent the player's
//! signature (made on the client, checked at the origin) and its bytes on
//! the wire beside an unsigned intent's. CPU per operation, medians of
//! batches, both cases of each pair in the same run.
//!
//! ```text
//! cargo run --release -p hoard-bench -- trust
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use hoard_engine::ServerIdentity;
use hoard_proto::auth::TokenAuthority;
use hoard_proto::intent_sig::{IntentChecker, IntentSigner, PlayerKey};
use hoard_proto::wire::{Intent, Message};
use hoard_proto::world_token::{TokenKeys, TokenSigningKey};

use crate::report::{median, print_table, write_json};

/// Options of `trust`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Operations per batch.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Batches (the median batch is reported).
    #[arg(long, default_value_t = 15)]
    batches: usize,
}

/// The median time of one operation over `batches` batches of `batch`.
fn per_op(args: &Args, mut op: impl FnMut(usize)) -> Duration {
    let mut samples = Vec::with_capacity(args.batches);
    for _ in 0..args.batches {
        let start = Instant::now();
        for i in 0..args.batch {
            op(i);
        }
        samples.push(start.elapsed() / args.batch as u32);
    }
    median(samples)
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e8).round() / 100.0
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let world = ServerIdentity([7; 32]);
    let signing = TokenSigningKey::generate();
    let player = PlayerKey::generate();
    let keys = TokenKeys::new(world, vec![signing.public().clone()]);
    let far = chrono::Utc::now().timestamp() + 3600;
    let world_token = signing.mint(&world, "ann", far, Some(&player.public()))?;
    let mac = TokenAuthority::new([9; 32]);
    let mac_token = mac.issue("ann", far)?;
    let now = chrono::Utc::now().timestamp();

    let mac_check = per_op(args, |_| {
        std::hint::black_box(mac.verify(&mac_token, now).is_ok());
    });
    let world_check = per_op(args, |_| {
        std::hint::black_box(keys.verify(&world_token, now).is_ok());
    });

    // One intent of the demo game's size: `action` with a Move payload.
    let (kind, payload) = (
        "action",
        vec![0x81, 0xa4, b'M', b'o', b'v', b'e', 0x93, 0x00, 0x28, 0x29],
    );
    let nonce = [3; 16];
    let mut signer = IntentSigner::new(world, "ann", player.clone(), nonce);
    let signatures: Vec<(u32, [u8; 64])> = (0..args.batch * args.batches)
        .map(|_| signer.sign_next(kind, &payload))
        .collect();
    let mut signer = IntentSigner::new(world, "ann", player.clone(), nonce);
    let sign = per_op(args, |_| {
        std::hint::black_box(signer.sign_next(kind, &payload));
    });
    let mut checker = IntentChecker::new(world, "ann", player.public(), nonce);
    let mut next = 0;
    let verify = per_op(args, |_| {
        let (seq, sig) = &signatures[next];
        next += 1;
        std::hint::black_box(checker.check(*seq, kind, &payload, sig).is_ok());
    });
    let frame = |signature: Vec<u8>| {
        Message::Intent(Intent {
            seq: 1,
            kind: kind.into(),
            payload: payload.clone(),
            signature,
        })
        .to_frame()
        .len()
    };
    let (unsigned, signed) = (frame(Vec::new()), frame(signatures[0].1.to_vec()));

    let rows = vec![
        vec![
            "token check, MAC (v1, baseline)".into(),
            format!("{:.2}", us(mac_check)),
            mac_token.len().to_string(),
        ],
        vec![
            "token check, world (v4.public)".into(),
            format!("{:.2}", us(world_check)),
            world_token.len().to_string(),
        ],
        vec!["intent, unsigned (baseline)".into(), "0".into(), unsigned.to_string()],
        vec![
            "intent, sign (client)".into(),
            format!("{:.2}", us(sign)),
            signed.to_string(),
        ],
        vec![
            "intent, verify (origin)".into(),
            format!("{:.2}", us(verify)),
            signed.to_string(),
        ],
    ];
    print_table(
        "signed trust: CPU per operation (median of batches) and bytes",
        &["case", "µs", "bytes"],
        &rows,
    );
    write_json(
        out,
        "trust",
        &serde_json::json!({
            "mac_token_check_us": us(mac_check),
            "world_token_check_us": us(world_check),
            "mac_token_bytes": mac_token.len(),
            "world_token_bytes": world_token.len(),
            "intent_sign_us": us(sign),
            "intent_verify_us": us(verify),
            "intent_frame_bytes_unsigned": unsigned,
            "intent_frame_bytes_signed": signed,
        }),
    )?;
    Ok(())
}
