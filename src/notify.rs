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

/// The socket, or why `NOTIFY_SOCKET` cannot be used (None: not set).
fn open() -> Option<Result<UnixDatagram, String>> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    let shown = crate::log::quote(&path.to_string_lossy());
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None if !bytes.starts_with(b"/") => {
            return Some(Err(format!(
                "NOTIFY_SOCKET={shown} is not an absolute path or @abstract name"
            )));
        }
        None => SocketAddr::from_pathname(&path),
    };
    let connect = || {
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(&addr?)?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok::<_, std::io::Error>(sock)
    };
    Some(connect().map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPROTOTYPE) => "it is not a datagram socket".to_string(),
            Some(libc::ECONNREFUSED) => "nothing listens there (not a socket?)".to_string(),
            _ => e.to_string(),
        };
        format!("NOTIFY_SOCKET={shown} cannot be used: {why}")
    }))
}

fn opened() -> Option<&'static Result<UnixDatagram, String>> {
    static SOCKET: OnceLock<Option<Result<UnixDatagram, String>>> = OnceLock::new();
    SOCKET.get_or_init(open).as_ref()
}

fn socket() -> Option<&'static UnixDatagram> {
    opened()?.as_ref().ok()
}

/// Why `NOTIFY_SOCKET` is set but unusable, for one warning at start;
/// the server then runs without notifications.
pub fn problem() -> Option<String> {
    opened()?.as_ref().err().cloned()
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
/// for this process. As systemd reads it, 0 or a value that is not a
/// number means no watchdog (the sd-notify crate takes 0 as a period of
/// zero, which would spin); `WATCHDOG_PID`, when set, must be ours.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Whether a service manager listens at all; lets the server skip building
/// status lines nobody reads.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}
