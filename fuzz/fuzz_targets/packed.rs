//! Fuzzes `Packed` frames and the stream decoder that expands them: the
//! input as a bulk stream; the input compressed into a `Packed` (which must
//! read back as exactly the messages the input holds unpacked); and that
//! `Packed` with one byte of its compressed data or its declared size
//! changed. Typed errors only, never a panic, never more than the declared
//! size (at most `MAX_PACKED_BYTES`) decompressed.
#![no_main]

use hoard_proto::wire::{CODEC_ZSTD, MAX_PACKED_BYTES, Message, Packed, StreamDecoder, unpack};
use libfuzzer_sys::fuzz_target;

/// Every message `bytes` holds as a bulk stream, until the first error
/// (with `packed`, `Packed` frames expanded; without, refused).
fn messages(bytes: &[u8], packed: bool) -> (Vec<Message>, bool) {
    let mut stream = if packed {
        StreamDecoder::bulk()
    } else {
        StreamDecoder::new(hoard_proto::wire::MAX_BULK_FRAME)
    };
    stream.push(bytes);
    let mut out = Vec::new();
    loop {
        match stream.next_message() {
            Ok(Some((msg, _))) => out.push(msg),
            Ok(None) => return (out, stream.finish().is_ok()),
            Err(_) => return (out, false),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The input itself as a stream (it may hold Packed frames).
    let _ = messages(data, true);
    if data.is_empty() || data.len() > MAX_PACKED_BYTES {
        return;
    }
    // The input packed: the same messages (and the same verdict) as unpacked.
    let Ok(compressed) = zstd::bulk::compress(data, 1) else { return };
    let packed = Message::Packed(Packed {
        codec: CODEC_ZSTD,
        size: data.len() as u32,
        data: compressed.clone(),
    })
    .to_frame();
    let plain = messages(data, false);
    let expanded = messages(&packed, true);
    if plain.1 {
        // Whole frames, none packed: within the ratio cap, the same messages.
        if data.len() <= compressed.len() * hoard_proto::wire::MAX_PACK_RATIO {
            assert_eq!(expanded, plain);
        }
    } else {
        assert!(!expanded.1, "a packed run that is not whole unpacked frames is refused");
    }
    // One byte changed, or the size: an error or exactly the declared bytes.
    let at = data[0] as usize * 7 % compressed.len();
    let mut bent = compressed;
    bent[at] ^= data[data.len() - 1] | 1;
    for size in [data.len() as u32, data.len() as u32 ^ u32::from(data[0]), data.len() as u32 + 1] {
        let p = Packed {
            codec: CODEC_ZSTD,
            size,
            data: bent.clone(),
        };
        if let Ok(out) = unpack(&p) {
            assert_eq!(out.len(), size as usize);
            assert!(out.len() <= MAX_PACKED_BYTES);
        }
    }
});
