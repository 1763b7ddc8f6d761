//! Fuzzes the canonical object-state decoder: never panics, and anything it
//! accepts re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use hoard_engine::ObjectState;
use hoard_engine::state::StateBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = ObjectState::from_bytes(data.to_vec()) {
        let parts = state.components().expect("accepted state parses");
        let mut builder = StateBuilder::new();
        for (name, bytes) in &parts {
            builder.component(name, bytes.to_vec());
        }
        assert_eq!(builder.finish().as_bytes(), data, "accepted input is canonical");
    }
});
