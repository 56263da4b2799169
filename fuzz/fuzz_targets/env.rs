//! The systemd variables: notify::watchdog_from, listener::listen_fds_from,
//! notify::notify_addr (fields separated by NUL bytes).
//! The checks: tests/fuzz_support/mod.rs.
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::env(data));
