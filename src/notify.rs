//! sd_notify(3) messages to the service manager.
//!
//! Every function is a silent no-op without `NOTIFY_SOCKET`, and a failed
//! send is never fatal: the server's job is to serve, and systemd notices a
//! missing READY or WATCHDOG on its own.
//!
//! The messages are formatted by the sd-notify crate, but sent here on one
//! socket kept for the life of the process: the crate opens a socket per
//! message, which fails with EMFILE exactly when the server is out of file
//! descriptors, and WATCHDOG=1 must keep flowing then. A send timeout keeps a
//! manager that stops reading from freezing the serving loop.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

/// The longest a notification may hold up the serving loop.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

fn socket() -> Option<&'static UnixDatagram> {
    static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
                Some(name) => SocketAddr::from_abstract_name(name).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            let sock = UnixDatagram::unbound().ok()?;
            sock.connect_addr(&addr).ok()?;
            sock.set_write_timeout(Some(SEND_TIMEOUT)).ok()?;
            Some(sock)
        })
        .as_ref()
}

fn send(states: &[NotifyState]) {
    let Some(sock) = socket() else { return };
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    let _ = sock.send(msg.as_bytes());
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
