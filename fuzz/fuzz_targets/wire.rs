//! Fuzzes the wire decoders: the frame splitter and every message body.
//! Typed errors only, never a panic, never an allocation beyond the input;
//! whatever decodes re-encodes to a frame that decodes to the same message;
//! the decoded messages also go through a parts assembler, as on a stream;
//! a decoded `TransientPatch` is applied to the input as its base.
#![no_main]

use hoard_proto::wire::{Assembler, FrameDecoder, MAX_CONTROL_FRAME, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    decoder.push(data);
    let mut assembler = Assembler::default();
    while let Ok(Some((kind, body))) = decoder.next_frame() {
        if let Ok(msg) = Message::decode(kind, &body) {
            let frame = msg.to_frame();
            let again = Message::decode(frame[4], &frame[5..]).expect("re-encoded message decodes");
            assert_eq!(again, msg);
            // A patch applies to any base with a typed error or a result
            // within the limit, never a panic.
            if let Message::TransientPatch(p) = &msg {
                if let Ok(out) = hoard_proto::transient::apply(data, &p.ops) {
                    assert!(out.len() <= hoard_proto::wire::MAX_TRANSIENT_BYTES);
                }
            }
            if assembler.push(msg, frame.len()).is_err() {
                assembler = Assembler::default();
            }
        }
    }
    // Bodies tried directly against every type code.
    if let Some((&kind, body)) = data.split_first() {
        let _ = Message::decode(kind, body);
    }
});
