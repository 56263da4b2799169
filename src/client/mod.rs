//! The client: `client [OPTIONS] <HOST> <PORT> <FILE>` (installed as
//! `accio-client`).
//!
//! One transfer, in this order, each wait bounded by [`TIMEOUT`]:
//!
//! 1. open FILE (`-` is stdin) before anything touches the network, so a bad
//!    FILE never makes a connection (66);
//! 2. resolve HOST (68), catch SIGINT, SIGTERM and SIGHUP, and connect to
//!    HOST's addresses in turn, all within one 10 s budget (69 refused or
//!    failed, 75 timeout). Every socket has SO_LINGER 0 from before its
//!    connect: whenever it is closed before the server's orderly close, also
//!    by the kernel when the process dies (even by SIGKILL), the server gets
//!    a reset and reports `ERROR`, never a partial file as a complete one;
//! 3. read the greeting until all of `accio\r\n` is there; it may come in
//!    pieces, anything else is 76, silence 75. Nothing is sent before;
//! 4. send FILE: a regular file with sendfile(2), anything else through one
//!    fixed 64 KiB buffer, so memory does not grow with the size. The socket
//!    is non-blocking and every `EAGAIN` waits in poll(2) for at most 10 s
//!    since the socket last accepted a byte (75). FILE is never read with a
//!    blocking read(2): poll(2) waits for it beside the socket;
//! 5. check that the server has not closed its side (it may only close after
//!    our FIN: 69 otherwise), shutdown(SHUT_WR), and read until the server
//!    closes. Data still unacknowledged gets the stall rule of step 4; once
//!    all of it is acknowledged the server has 10 s in all to close (75).
//!    The close counts only if every byte and our FIN were acknowledged
//!    (SIOCOUTQ is 0): a server that closed earlier is 69. Bytes the server
//!    sends after the greeting are read and ignored.
//!
//! Every wait after connecting is a poll(2) that also watches a self-pipe
//! written by the signal handlers (signal-hook installs them with
//! SA_RESTART, so a blocked call would not return). A caught signal resets
//! the connection and ends the run with exit 128 + the signal's number
//! (129 SIGHUP, 130 SIGINT, 143 SIGTERM); a second one takes the signal's
//! default action at once.
//!
//! Errors are [`Error`]s whose variant is the exit code (sysexits.h) and
//! whose text says what failed and what to do; the binary prints them as
//! one `ERROR:` line. Parsing mirrors [`crate::cli`]: clap renders help and
//! version, every usage error becomes one line and exit 64, and PORT uses
//! the same strict [`parse_port`](crate::cmdline::parse_port).

mod args;
mod error;
mod peer;
mod progress;
mod run;
mod signals;

pub use args::{Action, Args, MANUAL, command, parse};
pub use error::Error;
use error::describe;
use peer::*;
use progress::*;
use run::*;
use signals::*;

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command, value_parser};
use indicatif::{
    BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};
use libc::{c_int, c_short};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cmdline::{Section, get_matches, port_arg, program, usage_hint};
use crate::connection::GREETING;

/// Every wait (connect, greeting, a stalled send, the server's close) gives
/// up after this long without progress.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The client's synopsis, for usage hints.
pub(crate) const USAGE: &str = "client [OPTIONS] <HOST> <PORT> <FILE>";
/// The copy buffer for stdin and pipes (regular files never pass through it).
pub(crate) const BUF_SIZE: usize = 64 * 1024;
/// Upper bound for one sendfile(2) call. On a fast link one call can go on
/// for a long time (the peer drains while it fills); 16 MiB keeps the
/// signal checks frequent, and measured as fast as 1 GiB (64 KiB was slower).
pub(crate) const SENDFILE_CHUNK: usize = 16 << 20;
/// The progress display is redrawn this often, also while nothing moves.
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// The narrowest progress bar worth drawing, between its brackets.
pub(crate) const MIN_BAR: usize = 10;
/// While sent data is still unacknowledged after our FIN, look at the send
/// queue this often (its shrinking is not an event poll(2) reports).
pub(crate) const ACK_POLL: Duration = Duration::from_millis(100);
/// The signals that abort a transfer with a reset and exit 128 + signal.
pub(crate) const CAUGHT: [c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// What a successful transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Bytes of FILE the connection accepted (all of them).
    pub sent: u64,
    /// Bytes the server sent after the greeting (ignored).
    pub ignored: u64,
}

/// Everything the `client` binary does: `Ok(Some(text))` is help or version
/// for stdout, `Ok(None)` a completed transfer.
pub fn main(argv: Vec<OsString>) -> Result<Option<String>, Error> {
    match parse(argv)? {
        Action::Print(text) => Ok(Some(text)),
        Action::Run(args) => {
            send(&args)?;
            Ok(None)
        }
    }
}

/// One transfer, as described in the module documentation.
///
/// Installs handlers for SIGINT, SIGTERM and SIGHUP that stay for the life
/// of the process (they only set flags and write to a pipe of their own).
pub fn send(args: &Args) -> Result<Report, Error> {
    let input = Input::open(&args.file)?;
    let mut peer = Peer::resolve(&args.host, args.port)?;
    // After resolving (getaddrinfo cannot be interrupted, and until now the
    // default actions are right: nothing is connected).
    let signals = Signals::install().map_err(|e| {
        Error::Unavailable(format!(
            "cannot install the signal handlers: {}",
            describe(&e)
        ))
    })?;
    let sock = peer.connect(&signals)?;
    let show = args.progress.unwrap_or_else(|| {
        io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
    });
    let mut run = Run {
        sock,
        peer: &peer,
        input: &input,
        signals: &signals,
        sent: 0,
        progress: Progress::off(),
    };
    let result = run.transfer(show);
    let Run {
        sock, mut progress, ..
    } = run;
    // SO_LINGER 0: after an error or a signal this close is a reset, so the
    // server never takes a partial file for a complete one; after the
    // server's close there is nothing left to reset. Reset first, then
    // tidy the terminal.
    drop(sock);
    match &result {
        Ok(report) => progress.finish(report.sent),
        Err(_) => progress.abandon(),
    }
    result
}
