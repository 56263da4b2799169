//! accio_server::cli::parse on argv (arguments separated by NUL bytes).
//! The checks: tests/fuzz_support/mod.rs.
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::cli(data));
