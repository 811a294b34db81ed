//! Arbitrary bytes as a `GET /keys` page: parsed by the client's own
//! `upstream::parse_keys_page`, then built into a snapshot and rendered.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::keys_page(data);
});
