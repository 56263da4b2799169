//! Count lines on stdout.
//!
//! Each line goes out in exactly one write(2) on fd 1, bypassing std's
//! line buffer, so a reader of a pipe or file sees whole lines at once and
//! lines are never torn or merged. A failed write (stdout closed, EPIPE) is
//! returned, never fatal: the caller logs the count instead. SIGPIPE is
//! ignored by the Rust runtime, so EPIPE arrives as an error.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

/// Write `line` (which must end in `\n`) to stdout in one write(2).
pub fn write_line(line: &str) -> io::Result<()> {
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps
    // this borrowed File from closing it.
    let stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    (&*stdout).write_all(line.as_bytes())
}
