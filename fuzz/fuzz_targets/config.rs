//! accio_server::config::from_str on a configuration file's text.
//! The checks: tests/fuzz_support/mod.rs.
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::config(data));
