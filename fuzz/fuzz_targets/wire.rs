//! Fuzzes the wire decoders: the frame splitter and every message body.
//! Typed errors only, never a panic, never an allocation beyond the input;
//! whatever decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use hoard_net::wire::{FrameDecoder, MAX_CONTROL_FRAME, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    decoder.push(data);
    while let Ok(Some((kind, body))) = decoder.next_frame() {
        if let Ok(msg) = Message::decode(kind, &body) {
            let frame = msg.to_frame();
            let again = Message::decode(frame[4], &frame[5..]).expect("re-encoded message decodes");
            assert_eq!(again, msg);
        }
    }
    // Bodies tried directly against every type code.
    if let Some((&kind, body)) = data.split_first() {
        let _ = Message::decode(kind, body);
    }
});
