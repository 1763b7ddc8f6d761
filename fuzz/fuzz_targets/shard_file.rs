//! Fuzzes the cache's shard-file parser (header and whole file) and the
//! journal replay: typed errors, never a panic, and no allocation beyond the
//! input's size. Whatever decodes re-encodes to the same bytes.
#![no_main]

use hoard_world_cache::format::{decode_header, decode_shard, encode_shard};
use hoard_world_cache::journal::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    if let Ok(shard) = decode_shard(data) {
        assert_eq!(encode_shard(&shard), data, "a decoded shard re-encodes to its bytes");
    }
    let _ = replay(data);
});
