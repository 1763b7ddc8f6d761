//! Fuzzes the demo's world-file decoder (RON scenes, as world files and as
//! mods) and the checks run on what it finds: never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hoard_demo::fuzzing::world_file(data);
});
