//! sd_notify(3) messages to the service manager.
//!
//! Every function is a silent no-op without `NOTIFY_SOCKET` (the sd-notify
//! crate checks), and a failed send is never fatal: the server's job is to
//! serve, and systemd notices a missing READY or WATCHDOG on its own.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    let _ = sd_notify::notify(states);
}

/// Every listener is open: `READY=1` with the first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd needs to order it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set
/// for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Whether a service manager listens at all; lets the server skip building
/// status lines nobody reads.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}
