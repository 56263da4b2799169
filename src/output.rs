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

/// How long one wait for room lasts before the stop flag is checked again.
const POLL_STEP_MS: i32 = 20;
/// After a stop signal, how long stdout may stay full before lines are
/// given up (well inside the unit's TimeoutStopSec=).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

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
