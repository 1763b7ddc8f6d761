//! Fuzzes the decoders of the store's on-disk records (shard records, object
//! values, zone records): typed errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hoard_engine::store::fuzzing::decode_records(data);
});
