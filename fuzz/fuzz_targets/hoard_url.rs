//! Fuzzes the `hoard://` URL parser: never panics, and whatever it accepts
//! displays back to the same text.
#![no_main]

use hoard_engine::HoardUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(url) = text.parse::<HoardUrl>()
    {
        assert_eq!(url.to_string(), text);
    }
});
