//! Count lines on stdout.
//!
//! Each line goes out in exactly one write(2) on fd 1, bypassing std's
//! line buffer, so a reader of a pipe or file sees whole lines at once and
//! lines are never torn or merged. A failed write (stdout closed, EPIPE) is
//! returned, never fatal: the caller logs the count instead. SIGPIPE is
//! ignored by the Rust runtime, so EPIPE arrives as an error.
//!
//! A reader that stops reading fills the pipe, and a blocking write would
//! then hold the whole server, stop signals included (their handlers
//! restart the write). So the write waits for room with poll(2) in short
//! steps: serving pauses while stdout is full (back-pressure, nothing is
//! dropped). Once a stop was requested, the lines still to be written get
//! [`STOP_WAIT`] in all to find room (a slow reader catches up); after that
//! a line that does not fit is given up and the caller logs it instead, so
//! a reader that never reads cannot keep the server from exiting.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What each connection's line looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The bare count or `ERROR`, as the protocol's users expect.
    #[default]
    Plain,
    /// One JSON object per connection, for machines.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "plain" => Ok(Format::Plain),
            "json" => Ok(Format::Json),
            _ => Err(format!(
                "{} is not an output format (use \"plain\" or \"json\")",
                crate::log::quote(s)
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Plain => "plain",
            Format::Json => "json",
        })
    }
}

/// One connection's line in `format`. `number` is None for a client
/// refused before its greeting; `reason` is None for a counted connection.
pub fn line(
    format: Format,
    number: Option<u64>,
    peer: std::net::SocketAddr,
    bytes: u64,
    reason: Option<&str>,
    secs: f64,
    file: Option<&str>,
) -> String {
    match format {
        Format::Plain => match reason {
            None => format!("{bytes}\n"),
            Some(_) => "ERROR\n".to_string(),
        },
        Format::Json => {
            let mut obj = serde_json::json!({
                "conn": number,
                "peer": peer.to_string(),
                "bytes": bytes,
                "result": if reason.is_none() { "ok" } else { "error" },
                "secs": (secs * 1000.0).round() / 1000.0,
            });
            if let Some(r) = reason {
                obj["reason"] = r.into();
            }
            if let Some(f) = file {
                obj["file"] = f.into();
            }
            format!("{obj}\n")
        }
    }
}

/// How long one wait for room lasts before the stop flag is checked again.
const POLL_STEP_MS: i32 = 20;
/// After a stop signal, how long stdout may stay full before lines are
/// given up (well inside the unit's TimeoutStopSec=).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// Whether fd 1 is /dev/null (the runtime puts it there when stdout was
/// closed at start): then nobody sees the counts, which deserves a word.
pub fn is_dev_null() -> bool {
    let (mut out, mut null): (libc::stat, libc::stat) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: fstat/stat fill the structs; the path is NUL-terminated.
    unsafe {
        libc::fstat(1, &mut out) == 0
            && libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
            && out.st_mode & libc::S_IFMT == libc::S_IFCHR
            && out.st_rdev == null.st_rdev
    }
}

/// Write `line` (which must end in `\n`) to stdout in one write(2).
pub fn write_line(line: &str, stopping: &AtomicBool) -> io::Result<()> {
    wait_writable(stopping)?;
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps
    // this borrowed File from closing it.
    let stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    (&*stdout).write_all(line.as_bytes())
}

/// Return once fd 1 has room for a short line (or reports an error, which
/// the write then returns), or fail if a stop is pending and it has none.
fn wait_writable(stopping: &AtomicBool) -> io::Result<()> {
    let mut timeout = 0;
    loop {
        let mut fd = libc::pollfd {
            fd: 1,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut fd, 1, timeout) };
        if ready != 0 {
            // Writable, or an error (EINTR included) that the write or the
            // next round will report.
            if ready > 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Ok(());
            }
        }
        if stopping.load(Ordering::Relaxed) {
            static FIRST_SEEN: OnceLock<Instant> = OnceLock::new();
            if FIRST_SEEN.get_or_init(Instant::now).elapsed() >= STOP_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "stdout stayed full (its reader does not read) while the server was stopping",
                ));
            }
        }
        timeout = POLL_STEP_MS;
    }
}
