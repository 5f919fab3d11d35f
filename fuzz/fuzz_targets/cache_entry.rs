//! The cache's stored-entry head: decoding arbitrary bucket bytes never panics, a decoded head
//! encodes to bytes that decode to the same head (checked inside `cache_entry_decode`), and
//! re-encoding is a fixed point; a head built from the input encodes and decodes back
//! (`cache_entry_round_trip`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{cache_entry_decode, cache_entry_round_trip};

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = cache_entry_decode(data) {
        assert_eq!(cache_entry_decode(&encoded).as_ref(), Some(&encoded));
    }
    cache_entry_round_trip(data);
});
