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

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

/// The longest a notification may hold up the serving loop.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// The address a `NOTIFY_SOCKET` value names: an absolute path, or
/// `@name` for an abstract socket. Pure, so that any value can be tried; the
/// error is the one-line warning the server logs (the value quoted).
pub fn notify_addr(value: &OsStr) -> Result<SocketAddr, String> {
    let shown = || crate::log::quote(&value.to_string_lossy());
    let bytes = value.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None if !bytes.starts_with(b"/") => {
            return Err(format!(
                "NOTIFY_SOCKET={} is not an absolute path or @abstract name",
                shown()
            ));
        }
        None => SocketAddr::from_pathname(value),
    };
    addr.map_err(|e| format!("NOTIFY_SOCKET={} cannot be used: {e}", shown()))
}

/// The socket, or why `NOTIFY_SOCKET` cannot be used (None: not set).
fn open() -> Option<Result<UnixDatagram, String>> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    let addr = match notify_addr(&path) {
        Ok(addr) => addr,
        Err(e) => return Some(Err(e)),
    };
    let connect = || {
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(&addr)?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok::<_, std::io::Error>(sock)
    };
    Some(connect().map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPROTOTYPE) => "it is not a datagram socket".to_string(),
            Some(libc::ECONNREFUSED) => "nothing listens there (not a socket?)".to_string(),
            _ => e.to_string(),
        };
        format!(
            "NOTIFY_SOCKET={} cannot be used: {why}",
            crate::log::quote(&path.to_string_lossy())
        )
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
/// for this process. See [`watchdog_from`].
pub fn watchdog_period() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The watchdog period for the values of `WATCHDOG_USEC` and `WATCHDOG_PID`
/// (None: unset or not UTF-8) in the process `our_pid`. As systemd reads
/// it, 0 or a value that is not a number means no watchdog (the sd-notify
/// crate takes 0 as a period of zero, which would spin); `WATCHDOG_PID`,
/// when set, must be ours. Numbers are read by `str::parse` (decimal
/// digits, an optional leading `+`).
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(our_pid)
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
