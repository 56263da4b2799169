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
//! the same strict [`parse_port`](crate::cli::parse_port).

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

use crate::cli::{Matched, Section, get_matches, port_arg, program, usage_hint};
use crate::connection::GREETING;

/// Every wait (connect, greeting, a stalled send, the server's close) gives
/// up after this long without progress.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The client's synopsis, for usage hints.
const USAGE: &str = "client [OPTIONS] <HOST> <PORT> <FILE>";
/// The copy buffer for stdin and pipes (regular files never pass through it).
const BUF_SIZE: usize = 64 * 1024;
/// Upper bound for one sendfile(2) call. On a fast link one call can go on
/// for a long time (the peer drains while it fills); 16 MiB keeps the
/// signal checks frequent, and measured as fast as 1 GiB (64 KiB was slower).
const SENDFILE_CHUNK: usize = 16 << 20;
/// The progress display is redrawn this often, also while nothing moves.
const TICK: Duration = Duration::from_millis(200);
/// The narrowest progress bar worth drawing, between its brackets.
const MIN_BAR: usize = 10;
/// While sent data is still unacknowledged after our FIN, look at the send
/// queue this often (its shrinking is not an event poll(2) reports).
const ACK_POLL: Duration = Duration::from_millis(100);
/// The signals that abort a transfer with a reset and exit 128 + signal.
const CAUGHT: [c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Why a transfer did not happen or did not finish. The variant decides the
/// exit code; the text is the rest of the `ERROR:` line.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments or PORT (EX_USAGE, 64).
    Usage(String),
    /// FILE cannot be opened or read (EX_NOINPUT, 66).
    NoInput(String),
    /// HOST cannot be resolved (EX_NOHOST, 68).
    NoHost(String),
    /// Connection refused, reset or otherwise failed, or the server closed
    /// before our FIN (EX_UNAVAILABLE, 69).
    Unavailable(String),
    /// A 10 s timeout: connect, greeting, stalled send, close (EX_TEMPFAIL, 75).
    Timeout(String),
    /// The server's first bytes are not `accio\r\n` (EX_PROTOCOL, 76).
    Protocol(String),
    /// SIGINT, SIGTERM or SIGHUP (the number) arrived: the connection was
    /// reset; exit 128 + the number, as shells report a death by signal.
    Signal(c_int, String),
}

impl Error {
    /// The process exit code for this error, from sysexits.h, or 128 + the
    /// signal's number.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 64,
            Error::NoInput(_) => 66,
            Error::NoHost(_) => 68,
            Error::Unavailable(_) => 69,
            Error::Timeout(_) => 75,
            Error::Protocol(_) => 76,
            Error::Signal(sig, _) => u8::try_from(128 + sig).unwrap_or(u8::MAX),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::NoInput(m)
            | Error::NoHost(m)
            | Error::Unavailable(m)
            | Error::Timeout(m)
            | Error::Protocol(m)
            | Error::Signal(_, m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// What to send where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Host name, IPv4 or IPv6 literal (`::1`; `[::1]` is accepted too).
    pub host: String,
    pub port: u16,
    /// The file to send; `-` is standard input.
    pub file: PathBuf,
    /// `Some(true)`: `--progress`; `Some(false)`: `--no-progress`; `None`:
    /// on when stderr is a terminal (and TERM is not `dumb`).
    pub progress: Option<bool>,
}

/// The outcome of parsing: send, or print text (help, version).
#[derive(Debug)]
pub enum Action {
    Run(Args),
    /// Text for stdout, after which the process exits 0.
    Print(String),
}

/// What a successful transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Bytes of FILE the connection accepted (all of them).
    pub sent: u64,
    /// Bytes the server sent after the greeting (ignored).
    pub ignored: u64,
}

const ABOUT: &str = "Accio protocol client: connects to an Accio server, waits for its \
\"accio\\r\\n\" greeting, sends FILE (- for standard input), closes its sending side and \
waits for the server to close the connection.";

/// The manual beyond the options; one source for `--help` and accio-client(1).
pub const MANUAL: &[Section] = &[
    Section {
        title: "TRANSFER",
        items: &[(
            "",
            "FILE is opened before any connection is made. HOST is resolved and its addresses \
             are tried in order. After connecting, the client waits until the complete greeting \
             accio\\r\\n has arrived (it may come in pieces) and sends nothing before. A regular \
             file is sent with sendfile(2); standard input, pipes and devices are copied through \
             one 64 KiB buffer, so files of any size are sent in constant memory. Then the \
             client closes its sending side and waits for the server to close the connection. \
             That close confirms the transfer only if the server had acknowledged every byte \
             and the client's close before: a server that closes its side (or the whole \
             connection) earlier is an error (69). Bytes the server sends after the greeting \
             are read and ignored.",
        )],
    },
    Section {
        title: "INTERRUPTION",
        items: &[(
            "",
            "An upload that did not finish never looks complete. The protocol has no length \
             header: the client's orderly close (FIN) after the last byte is the only \"done\". \
             So on any error after connecting, and on SIGINT, SIGTERM or SIGHUP, the client \
             resets the connection instead of closing it; the server then reports ERROR (and, \
             saving, keeps the ERROR marker instead of a partial file). The socket has \
             SO_LINGER 0 from before it connects, so the kernel resets it too when the client \
             dies some other way, even by SIGKILL. A crash of the client's machine or a cut \
             network sends nothing at all: the server's idle timeout ends such a connection \
             with ERROR. What cannot be told apart from a complete upload is an input that \
             ends early: when the program writing to standard input dies, or FILE is cut short \
             while it is sent, the client sees a normal end of file and the server counts what \
             arrived. Check the writer's exit status (set -o pipefail) before trusting such a \
             count. A signal ends the client with exit 128 + its number (129 SIGHUP, 130 \
             SIGINT, 143 SIGTERM), after the reset; a second signal takes its default action at \
             once. SIGPIPE is ignored: a broken connection is an error like any other.",
        )],
    },
    Section {
        title: "TIMEOUTS",
        items: &[(
            "",
            "10 seconds for each of: connecting (one budget shared by all addresses of HOST), \
             the complete greeting, a send during which the server accepts no data (also \
             after the client's close, while sent data is still unacknowledged), and the \
             server's close once everything sent was acknowledged (10 s in all, never \
             restarted). There is no timeout on reading FILE.",
        )],
    },
    Section {
        title: "PROGRESS",
        items: &[(
            "",
            "With --progress (the default when standard error is a terminal and TERM is not \
             dumb) one line on standard error shows the elapsed time and, for a regular file, a \
             bar, bytes sent of the total and the percentage, the current rate, the average \
             rate (avg) and the estimated time left (ETA); for standard input or a pipe, whose \
             size is unknown, a spinner, bytes sent and both rates. Sizes are binary (KiB, MiB, \
             GiB). The line fits the terminal width (fields are left out, most important last, \
             when it is narrow) and is redrawn 5 times a second, also while the transfer \
             stalls, so the clock and the current rate keep moving. It ends with a newline: \
             \"done\" after a confirmed transfer, \"aborted\" before an ERROR line. When \
             standard error is not a terminal, --progress draws the same line at the width in \
             COLUMNS (default 80), each redraw starting with a carriage return. With \
             --no-progress, or when standard error is not a terminal and --progress is not \
             given, nothing but errors is written to standard error.",
        )],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            (
                "0",
                "FILE was sent, the server acknowledged every byte and then closed the \
                 connection; --help, --version.",
            ),
            (
                "64",
                "Bad arguments: missing or extra argument, bad PORT, unknown option.",
            ),
            ("66", "FILE cannot be opened or read."),
            ("68", "HOST cannot be resolved."),
            (
                "69",
                "Connection refused, reset by the server, or otherwise failed; or the server \
                 closed its side before the client had sent all of FILE and closed.",
            ),
            (
                "75",
                "A timeout: connect, greeting, a stalled send, or the server's close.",
            ),
            (
                "76",
                "The server sent something other than the greeting accio\\r\\n.",
            ),
            (
                "129, 130, 143",
                "Interrupted by SIGHUP, SIGINT or SIGTERM; the connection was reset, so the \
                 server reports ERROR.",
            ),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            (
                "accio-client localhost 5000 backup.tar",
                "Send a file to the server on this machine.",
            ),
            (
                "tar c /etc | accio-client 2001:db8::7 5000 -",
                "Stream standard input to an IPv6 address, in constant memory.",
            ),
            (
                "accio-client --progress files.example.org 5000 big.iso 2>>log",
                "Show progress even though standard error is not a terminal.",
            ),
        ],
    },
];

/// The clap definition; also the source of the man page.
pub fn command() -> Command {
    program("client", ABOUT, MANUAL)
        .arg(
            Arg::new("host")
                .value_name("HOST")
                .required(true)
                .help("Server to send to: host name, IPv4 or IPv6 address (::1 or [::1])"),
        )
        .arg(port_arg("TCP port of the server, 1-65535").required(true))
        .arg(
            Arg::new("file")
                .value_name("FILE")
                .required(true)
                .help("File to send; - sends standard input")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("progress")
                .long("progress")
                .action(ArgAction::SetTrue)
                .overrides_with("no-progress")
                .help("Show progress on stderr: bar, bytes, rates, ETA (default: only if stderr is a terminal)"),
        )
        .arg(
            Arg::new("no-progress")
                .long("no-progress")
                .action(ArgAction::SetTrue)
                .overrides_with("progress")
                .help("Never show progress"),
        )
}

/// Parse argv (including the program name) into an [`Action`].
pub fn parse<I, T>(argv: I) -> Result<Action, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match get_matches(command(), argv, USAGE).map_err(Error::Usage)? {
        Matched::Print(text) => return Ok(Action::Print(text)),
        Matched::Args(m) => m,
    };
    let host = matches
        .get_one::<String>("host")
        .cloned()
        .unwrap_or_default();
    // `[::1]` as in URLs: the brackets are not part of the address.
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => host,
    };
    if host.is_empty() {
        return Err(Error::Usage(format!(
            "HOST is empty: give a host name or an IP address\n{}",
            usage_hint(USAGE)
        )));
    }
    let progress = if matches.get_flag("progress") {
        Some(true)
    } else if matches.get_flag("no-progress") {
        Some(false)
    } else {
        None
    };
    Ok(Action::Run(Args {
        host,
        port: matches.get_one::<u16>("port").copied().unwrap_or_default(),
        file: matches
            .get_one::<PathBuf>("file")
            .cloned()
            .unwrap_or_default(),
        progress,
    }))
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

/// `e` without std's " (os error N)" suffix.
fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught: each sets flags and writes a byte to
/// a socket pair whose other end every wait polls.
struct Signals {
    /// The number of the last signal caught; 0 for none.
    caught: Arc<AtomicUsize>,
    /// The read end of the self-pipe (never drained: one signal ends the run).
    wake: UnixStream,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        let caught = Arc::new(AtomicUsize::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let (wake, alarm) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        for sig in CAUGHT {
            // In this order: a second signal (fired already set) takes the
            // default action; the number is stored before the pipe wakes
            // the poll that reads it.
            signal_hook::flag::register_conditional_default(sig, fired.clone())?;
            signal_hook::flag::register_usize(sig, caught.clone(), sig as usize)?;
            signal_hook::flag::register(sig, fired.clone())?;
            signal_hook::low_level::pipe::register(sig, alarm.try_clone()?)?;
        }
        Ok(Signals { caught, wake })
    }

    /// The signal caught, if any.
    fn pending(&self) -> Option<c_int> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => c_int::try_from(n).ok(),
        }
    }

    /// poll(2) `fds` (a descriptor of -1 is skipped) beside the self-pipe
    /// until one is ready (true, their `revents` set), `deadline` passes
    /// (false; `None` waits forever) or a signal arrives (its number). An
    /// error of poll itself counts as ready: the next call reports it.
    fn wait(&self, fds: &mut [libc::pollfd; 2], deadline: Option<Instant>) -> Result<bool, c_int> {
        loop {
            if let Some(sig) = self.pending() {
                return Err(sig);
            }
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    // Round up: never spin on a sub-millisecond remainder.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as c_int
                }
            };
            let mut all = [
                fds[0],
                fds[1],
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: three valid pollfds.
            let n = unsafe { libc::poll(all.as_mut_ptr(), all.len() as libc::nfds_t, timeout) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Ok(true);
            }
            if all[0].revents != 0 || all[1].revents != 0 {
                fds[0].revents = all[0].revents;
                fds[1].revents = all[1].revents;
                return Ok(true);
            }
            // A signal (the next turn returns it), EINTR, or the timeout.
        }
    }
}

/// The signal's name for messages: "SIGINT".
fn signal_name(sig: c_int) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), String::from)
}

/// One connected transfer: the socket and everything the waits need.
struct Run<'a> {
    sock: Socket,
    peer: &'a Peer,
    input: &'a Input,
    signals: &'a Signals,
    /// Bytes of FILE the socket accepted so far.
    sent: u64,
    progress: Progress,
}

impl Run<'_> {
    /// Greeting, FILE, half-close, the server's close.
    fn transfer(&mut self, show: bool) -> Result<Report, Error> {
        self.await_greeting()?;
        self.progress = Progress::new(show, self.input.size);
        if self.input.regular {
            self.send_file()?;
        } else {
            self.stream()?;
        }
        let ignored = self.await_close()?;
        Ok(Report {
            sent: self.sent,
            ignored,
        })
    }

    /// Wait for `events` on the socket (0: none but errors) and, with
    /// `input`, for FILE to be readable. `Ok(None)`: `deadline` passed;
    /// `Ok(Some(r))`: ready, `r` the socket's revents (0 if only FILE is).
    fn wait(
        &self,
        events: c_short,
        input: bool,
        deadline: Option<Instant>,
        doing: &str,
    ) -> Result<Option<c_short>, Error> {
        let mut fds = [
            libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: if input { self.input.fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        match self.signals.wait(&mut fds, deadline) {
            Ok(true) => Ok(Some(fds[0].revents)),
            Ok(false) => Ok(None),
            Err(sig) => Err(self.interrupted(sig, doing)),
        }
    }

    fn interrupted(&self, sig: c_int, doing: &str) -> Error {
        Error::Signal(
            sig,
            format!(
                "{} received while {doing} ({} bytes sent to {}): the connection was reset, so \
                 the server reports ERROR for it and keeps no partial file; send the file again",
                signal_name(sig),
                self.sent,
                self.peer.name()
            ),
        )
    }

    /// The socket reported a hang-up or an error while we were sending:
    /// the error if there is one, else the server closed its side early.
    fn peer_gone(&self, doing: &str) -> Error {
        match self.sock.take_error() {
            Ok(Some(e)) => self.peer.failed(doing, self.sent, &e),
            _ => Error::Unavailable(format!(
                "{} closed its side of the connection after {} bytes, before the client had \
                 sent all of FILE and closed: the transfer is not complete (the connection was \
                 reset); check the server's output and log, then send the file again",
                self.peer.name(),
                self.sent
            )),
        }
    }

    /// Fail if the server has already closed its side (or reset).
    fn check_open(&self, doing: &str) -> Result<(), Error> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n > 0 && pfd.revents != 0 {
            return Err(self.peer_gone(doing));
        }
        Ok(())
    }

    /// Read exactly the greeting: never more, so nothing of a later byte is
    /// taken for it, and fail at the first byte that differs.
    fn await_greeting(&self) -> Result<(), Error> {
        let deadline = Instant::now() + TIMEOUT;
        let peer = self.peer;
        let mut got = [0u8; GREETING.len()];
        let mut n = 0;
        while n < got.len() {
            match recv(&self.sock, &mut got[n..]) {
                Ok(0) => {
                    return Err(Error::Protocol(format!(
                        "{} closed the connection {}instead of greeting with \"accio\\r\\n\": \
                         not an Accio server? check HOST and PORT",
                        peer.name(),
                        if n == 0 {
                            String::new()
                        } else {
                            format!("after \"{}\" ", got[..n].escape_ascii())
                        }
                    )));
                }
                Ok(k) => {
                    n += k;
                    if got[..n] != GREETING[..n] {
                        return Err(Error::Protocol(format!(
                            "{} sent \"{}\" instead of the greeting \"accio\\r\\n\": not an Accio \
                             server; check HOST and PORT",
                            peer.name(),
                            got[..n].escape_ascii()
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waited = self.wait(
                        libc::POLLIN,
                        false,
                        Some(deadline),
                        "waiting for the greeting",
                    )?;
                    if waited.is_none() {
                        return Err(Error::Timeout(format!(
                            "connected to {}, but {} within {} s; is it an Accio server, and \
                             is it overloaded?",
                            peer.name(),
                            if n == 0 {
                                "no greeting arrived".to_string()
                            } else {
                                format!("only {n} of the 7 greeting bytes arrived")
                            },
                            TIMEOUT.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(peer.failed("waiting for the greeting", 0, &e)),
            }
        }
        Ok(())
    }

    /// The socket is full: wait until it takes more, at most 10 s after it
    /// last did (`since`). The server closing its side meanwhile is an error.
    fn await_room(&self, since: Instant) -> Result<(), Error> {
        match self.wait(
            libc::POLLOUT | libc::POLLRDHUP,
            false,
            Some(since + TIMEOUT),
            "sending",
        )? {
            None => Err(self.peer.stalled(self.sent)),
            Some(r) if r & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 => {
                Err(self.peer_gone("sending"))
            }
            Some(_) => Ok(()),
        }
    }

    /// A regular file: sendfile(2) from the current offset until it reports
    /// the end (a file that grows or shrinks meanwhile is sent as it is read).
    fn send_file(&mut self) -> Result<(), Error> {
        let out = self.sock.as_raw_fd();
        let mut stalled_since: Option<Instant> = None;
        loop {
            if let Some(sig) = self.signals.pending() {
                return Err(self.interrupted(sig, "sending"));
            }
            // SAFETY: two descriptors we hold; a null offset uses and
            // advances the file position.
            let n =
                unsafe { libc::sendfile(out, self.input.fd, std::ptr::null_mut(), SENDFILE_CHUNK) };
            if n > 0 {
                self.sent += n as u64;
                stalled_since = None;
                self.progress.update(self.sent);
                continue;
            }
            if n == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    self.await_room(*stalled_since.get_or_insert_with(Instant::now))?;
                }
                // Some file systems cannot sendfile: copy instead.
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if self.sent == 0 => {
                    return self.stream();
                }
                _ if is_socket_error(&e) => return Err(self.peer.failed("sending", self.sent, &e)),
                _ => return Err(self.input.read_error(self.sent, &e)),
            }
        }
    }

    /// Anything else (stdin, a pipe, a device): read into one fixed buffer
    /// and send it, so memory stays constant whatever the size. FILE is
    /// read only once poll(2) says it is readable: a read that blocks would
    /// not return for a signal.
    fn stream(&mut self) -> Result<(), Error> {
        let out = self.sock.as_raw_fd();
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            // No deadline: FILE may take as long as it takes.
            if self.wait(libc::POLLRDHUP, true, None, "reading FILE")? != Some(0) {
                return Err(self.peer_gone("sending"));
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.input.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    // Not readable after all (a non-blocking stdin): poll again.
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(self.input.read_error(self.sent, &e)),
                }
            }
            let mut chunk = &buf[..n as usize];
            let mut stalled_since: Option<Instant> = None;
            while !chunk.is_empty() {
                // SAFETY: chunk is valid for its length; MSG_NOSIGNAL: EPIPE, not SIGPIPE.
                let k = unsafe {
                    libc::send(out, chunk.as_ptr().cast(), chunk.len(), libc::MSG_NOSIGNAL)
                };
                if k >= 0 {
                    chunk = &chunk[k as usize..];
                    self.sent += k as u64;
                    stalled_since = None;
                    self.progress.update(self.sent);
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => {
                        self.await_room(*stalled_since.get_or_insert_with(Instant::now))?;
                    }
                    _ => return Err(self.peer.failed("sending", self.sent, &e)),
                }
            }
        }
    }

    /// Half-close, then read until the server closes. Returns the number of
    /// bytes it sent meanwhile (ignored).
    ///
    /// Until the server has acknowledged all data the stall rule applies
    /// (10 s without the send queue shrinking); from then on the server has
    /// 10 s in all to close. Our FIN is one more unit in the send queue
    /// (SIOCOUTQ), so "all data acknowledged" is a queue of at most 1, and
    /// the FIN's acknowledgement never restarts anything.
    fn await_close(&mut self) -> Result<u64, Error> {
        self.check_open("finishing")?;
        self.sock
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| self.peer.failed("closing the sending side", self.sent, &e))?;
        let fd = self.sock.as_raw_fd();
        let mut queued = unacked(fd);
        let mut moved = Instant::now();
        let mut close_by: Option<Instant> = None;
        let mut ignored = 0u64;
        let mut buf = [0u8; 512];
        loop {
            match recv(&self.sock, &mut buf) {
                Ok(0) => {
                    // The server's FIN carries its acknowledgement of ours:
                    // anything still unacknowledged means it closed first.
                    let left = unacked(fd);
                    if left > 0 {
                        return Err(Error::Unavailable(format!(
                            "{} closed the connection before it had acknowledged all {} bytes \
                             and the client's close ({left} still unacknowledged): the transfer \
                             is not confirmed; check the server's output and log, then send the \
                             file again",
                            self.peer.name(),
                            self.sent
                        )));
                    }
                    return Ok(ignored);
                }
                Ok(k) => ignored += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    let q = unacked(fd);
                    if q < queued {
                        queued = q;
                        moved = now;
                    }
                    if close_by.is_none() && q <= 1 {
                        close_by = Some(now + TIMEOUT);
                    }
                    let deadline = close_by.unwrap_or(moved + TIMEOUT);
                    if now >= deadline {
                        return Err(match close_by {
                            Some(_) => Error::Timeout(format!(
                                "all {} bytes were sent to {} and acknowledged, but it did not \
                                 close the connection within {} s; the transfer may be \
                                 incomplete, check the server's output and log",
                                self.sent,
                                self.peer.name(),
                                TIMEOUT.as_secs()
                            )),
                            None => self.peer.stalled(self.sent),
                        });
                    }
                    // The queue shrinking is no poll(2) event: look again soon.
                    let until = match close_by {
                        Some(d) => d,
                        None => deadline.min(now + ACK_POLL),
                    };
                    self.wait(
                        libc::POLLIN,
                        false,
                        Some(until),
                        "waiting for the server to close",
                    )?;
                }
                Err(e) => {
                    return Err(self
                        .peer
                        .failed("waiting for the server to close", self.sent, &e));
                }
            }
        }
    }
}

/// FILE, opened: a file of ours or the inherited stdin.
struct Input {
    /// Keeps the descriptor open; `None` for stdin.
    _file: Option<File>,
    fd: RawFd,
    /// For messages: the path, or "standard input".
    name: String,
    /// A regular file: sent with sendfile(2) from its current offset.
    regular: bool,
    /// Bytes from the current offset to the end, for a regular file.
    size: Option<u64>,
}
impl Input {
    fn open(path: &Path) -> Result<Input, Error> {
        let (file, fd, name) = if path.as_os_str() == "-" {
            (None, 0, "standard input".to_string())
        } else {
            let name = format!("'{}'", path.display());
            let file = File::open(path).map_err(|e| {
                Error::NoInput(format!(
                    "cannot open FILE {name}: {}; check the path and its permissions",
                    describe(&e)
                ))
            })?;
            let fd = file.as_raw_fd();
            (Some(file), fd, name)
        };
        // SAFETY: fstat only writes the stat buffer we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            let e = io::Error::last_os_error();
            return Err(Error::NoInput(format!(
                "cannot use {name}: {}; give a readable FILE",
                describe(&e)
            )));
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFDIR {
            return Err(Error::NoInput(format!(
                "FILE {name} is a directory; give a file (for a directory, e.g. tar c DIR | client HOST PORT -)"
            )));
        }
        let regular = kind == libc::S_IFREG;
        let size = if regular {
            // SAFETY: lseek on a descriptor we hold; SEEK_CUR 0 only reads.
            let pos = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }.max(0) as u64;
            Some((st.st_size.max(0) as u64).saturating_sub(pos))
        } else {
            None
        };
        Ok(Input {
            _file: file,
            fd,
            name,
            regular,
            size,
        })
    }

    fn read_error(&self, sent: u64, e: &io::Error) -> Error {
        Error::NoInput(format!(
            "reading {} failed after {sent} bytes were sent: {}; the connection was aborted \
             (the server reports ERROR), check FILE and send it again",
            self.name,
            describe(e)
        ))
    }
}

/// HOST and PORT, resolved.
struct Peer {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    /// The address we connected to, for messages.
    connected: Option<SocketAddr>,
}

impl Peer {
    fn resolve(host: &str, port: u16) -> Result<Peer, Error> {
        let unknown = |why: String| {
            Error::NoHost(format!(
                "cannot resolve HOST '{host}': {why}; check the name (or give an IPv4 or IPv6 address)"
            ))
        };
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                let why = describe(&e);
                let why = why
                    .strip_prefix("failed to lookup address information: ")
                    .unwrap_or(&why)
                    .to_string();
                unknown(why)
            })?
            .collect();
        if addrs.is_empty() {
            return Err(unknown("no addresses".to_string()));
        }
        Ok(Peer {
            host: host.to_string(),
            port,
            addrs,
            connected: None,
        })
    }

    /// "HOST port P", plus the address when HOST is a name.
    fn name(&self) -> String {
        let base = format!("{} port {}", self.host, self.port);
        match self.connected {
            Some(a) if a.ip().to_string() != self.host => format!("{base} ({})", a.ip()),
            _ => base,
        }
    }

    /// Connect to the first address that accepts, within one 10 s budget.
    /// Each socket gets SO_LINGER 0 before it connects (see the module
    /// documentation); a signal ends the attempt.
    fn connect(&mut self, signals: &Signals) -> Result<Socket, Error> {
        let deadline = Instant::now() + TIMEOUT;
        let mut failures = Vec::new();
        let setup =
            |e: io::Error| Error::Unavailable(format!("socket setup failed: {}", describe(&e)));
        for addr in &self.addrs {
            if Instant::now() >= deadline {
                break;
            }
            let sock = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create a socket for {addr}: {}",
                    describe(&e)
                ))
            })?;
            sock.set_linger(Some(Duration::ZERO)).map_err(setup)?;
            sock.set_nonblocking(true).map_err(setup)?;
            let outcome = match sock.connect(&(*addr).into()) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                    let mut fds = [
                        libc::pollfd {
                            fd: sock.as_raw_fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: -1,
                            events: 0,
                            revents: 0,
                        },
                    ];
                    match signals.wait(&mut fds, Some(deadline)) {
                        Err(sig) => {
                            return Err(Error::Signal(
                                sig,
                                format!(
                                    "{} received while connecting to {} port {}: nothing was sent",
                                    signal_name(sig),
                                    self.host,
                                    self.port
                                ),
                            ));
                        }
                        // The budget is spent.
                        Ok(false) => break,
                        Ok(true) => match sock.take_error() {
                            Ok(None) => Ok(()),
                            Ok(Some(e)) | Err(e) => Err(e),
                        },
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    self.connected = Some(*addr);
                    return Ok(sock);
                }
                Err(e) if self.addrs.len() == 1 => failures.push(describe(&e)),
                Err(e) => failures.push(format!("{addr}: {}", describe(&e))),
            }
        }
        if failures.len() < self.addrs.len() {
            return Err(Error::Timeout(format!(
                "could not connect to {} port {} within {} s{}; check that the host is up and \
                 that no firewall drops the connection",
                self.host,
                self.port,
                TIMEOUT.as_secs(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failures.join(", "))
                }
            )));
        }
        Err(Error::Unavailable(format!(
            "cannot connect to {} port {}: {}; is an Accio server running there and listening \
             on port {}?",
            self.host,
            self.port,
            failures.join(", "),
            self.port
        )))
    }

    /// A socket error: 69, with what we were doing and how far we got.
    fn failed(&self, doing: &str, sent: u64, e: &io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => {
                "the server aborted the connection (see its output and log); send the file again"
            }
            _ => "check the network and the server, then send the file again",
        };
        Error::Unavailable(format!(
            "connection to {} failed while {doing} ({sent} bytes sent): {}; {hint}",
            self.name(),
            describe(e)
        ))
    }

    fn stalled(&self, sent: u64) -> Error {
        Error::Timeout(format!(
            "sending to {} stalled: no data accepted for {} s after {sent} bytes; the server or \
             the network is stuck, check them and send the file again",
            self.name(),
            TIMEOUT.as_secs()
        ))
    }
}

/// recv(2) without blocking (the socket is non-blocking); EINTR retried.
fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sequence space sent but not yet acknowledged by the peer (SIOCOUTQ):
/// data bytes, plus 1 for our FIN once it is queued; 0 if unknown.
fn unacked(fd: RawFd) -> i64 {
    let mut n: c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    i64::from(n)
}

/// Errors of sendfile(2) and send(2) that are the connection's, not FILE's.
fn is_socket_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EPIPE
                | libc::ECONNRESET
                | libc::ECONNABORTED
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ENOTCONN
        )
    )
}

/// What the progress line says about the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running = 0,
    Done = 1,
    Aborted = 2,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            1 => Phase::Done,
            2 => Phase::Aborted,
            _ => Phase::Running,
        }
    }
}

/// The `--progress` display: an indicatif bar (known size) or spinner
/// (unknown size) on stderr. The transfer only stores the position (an
/// atomic); indicatif's ticker thread draws every [`TICK`], so a stall
/// still moves the clock and the current rate, and the transfer never
/// waits for the terminal.
struct Progress {
    bar: Option<ProgressBar>,
    phase: Arc<AtomicU8>,
    /// The width the draw target last reported, for the line's layout.
    width: Arc<AtomicU16>,
}

impl Progress {
    fn off() -> Progress {
        Progress {
            bar: None,
            phase: Arc::new(AtomicU8::new(Phase::Running as u8)),
            width: Arc::new(AtomicU16::new(80)),
        }
    }

    fn new(on: bool, total: Option<u64>) -> Progress {
        let mut progress = Progress::off();
        if !on {
            return progress;
        }
        let term = StderrTerm {
            tty: io::stderr().is_terminal(),
            width: progress.width.clone(),
            buf: Mutex::new(Vec::new()),
        };
        let bar =
            ProgressBar::with_draw_target(total, ProgressDrawTarget::term_like(Box::new(term)))
                .with_style(progress.style(total.is_none()));
        bar.enable_steady_tick(TICK);
        progress.bar = Some(bar);
        progress
    }

    /// `{line}` for a bar, `{spinner} {line}` for an unknown size.
    fn style(&self, spinner: bool) -> ProgressStyle {
        let (phase, width) = (self.phase.clone(), self.width.clone());
        let reserve = if spinner { 2 } else { 0 };
        let line = move |state: &ProgressState, w: &mut dyn fmt::Write| {
            let snap = Snapshot {
                elapsed: state.elapsed(),
                sent: state.pos(),
                total: state.len(),
                rate: state.per_sec(),
                phase: Phase::from_u8(phase.load(Ordering::SeqCst)),
            };
            let cols = usize::from(width.load(Ordering::SeqCst)).saturating_sub(reserve);
            let _ = w.write_str(&render(&snap, cols));
        };
        let template = if spinner {
            "{spinner} {line}"
        } else {
            "{line}"
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .tick_chars("|/-\\ ")
            .with_key("line", line)
    }

    fn update(&self, sent: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(sent);
        }
    }

    /// The last frame ("done"), then a newline.
    fn finish(&mut self, sent: u64) {
        self.end(Phase::Done, Some(sent));
    }

    /// The last frame as it stood ("aborted"), then a newline, so an
    /// `ERROR:` line starts a line of its own.
    fn abandon(&mut self) {
        self.end(Phase::Aborted, None);
    }

    fn end(&mut self, phase: Phase, sent: Option<u64>) {
        let Some(bar) = self.bar.take() else { return };
        if let Some(sent) = sent {
            bar.set_position(sent);
        }
        // Stop (and join) the ticker: nothing draws after the last frame.
        bar.disable_steady_tick();
        self.phase.store(phase as u8, Ordering::SeqCst);
        bar.set_style(self.style(false));
        // Abandon keeps the position (finish would set it to the size,
        // which a file that changed meanwhile may not have had).
        bar.abandon();
        let _ = io::stderr().lock().write_all(b"\n");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// indicatif's terminal: stderr, also when it is not a terminal (then
/// `--progress` was asked for; escape sequences are left out, each frame
/// starts with a carriage return and, padded to the width, covers the one
/// before). A frame is written with one write(2).
#[derive(Debug)]
struct StderrTerm {
    tty: bool,
    width: Arc<AtomicU16>,
    buf: Mutex<Vec<u8>>,
}

impl StderrTerm {
    fn push(&self, s: &str) {
        if let Ok(mut buf) = self.buf.lock() {
            buf.extend_from_slice(s.as_bytes());
        }
    }

    fn escape(&self, n: usize, code: char) -> io::Result<()> {
        if self.tty && n > 0 {
            self.push(&format!("\x1b[{n}{code}"));
        }
        Ok(())
    }
}

impl TermLike for StderrTerm {
    fn width(&self) -> u16 {
        let cols = term_size(self.tty).0;
        self.width.store(cols, Ordering::SeqCst);
        cols
    }

    fn height(&self) -> u16 {
        term_size(self.tty).1
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.push(s);
        self.push("\n");
        Ok(())
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.push(s);
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.push(if self.tty { "\r\x1b[2K" } else { "\r" });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let frame = match self.buf.lock() {
            Ok(mut buf) => std::mem::take(&mut *buf),
            Err(_) => return Ok(()),
        };
        let mut err = io::stderr().lock();
        err.write_all(&frame)?;
        err.flush()
    }
}

/// Columns and rows of the terminal on stderr; otherwise COLUMNS (or 80)
/// and 24.
fn term_size(tty: bool) -> (u16, u16) {
    if tty {
        // SAFETY: TIOCGWINSZ writes one winsize.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return (ws.ws_col, if ws.ws_row > 0 { ws.ws_row } else { 24 });
        }
    }
    let cols = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80);
    (cols, 24)
}

/// What one frame of the progress line shows.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    elapsed: Duration,
    sent: u64,
    /// FILE's size, when known (a regular file).
    total: Option<u64>,
    /// The current rate, bytes/s (indicatif's estimate, which decays while
    /// nothing moves).
    rate: f64,
    phase: Phase,
}

/// One frame of the progress line, at most `cols` columns (ASCII only):
///
/// `1:02 [=====>    ] 1.50 MiB/4.00 GiB 37% 12.00 MiB/s avg 11.90 MiB/s ETA 5:12`
///
/// The bar (known size only) takes the width the fields leave; fields that
/// do not fit are left out, the least important first: for a known size
/// avg, ETA, rate, percentage; bytes go last, then the bar, then the clock.
fn render(s: &Snapshot, cols: usize) -> String {
    let secs = s.elapsed.as_secs_f64();
    let avg = if secs > 0.0 {
        s.sent as f64 / secs
    } else {
        0.0
    };
    // (priority: 0 kept longest, text), in display order.
    let mut fields: Vec<(u8, String)> = Vec::new();
    match (s.phase, s.total) {
        (Phase::Running, Some(total)) => {
            fields.push((0, format!("{}/{}", BinaryBytes(s.sent), BinaryBytes(total))));
            fields.push((1, format!("{}%", percent(s.sent, total))));
            fields.push((2, per_sec(s.rate)));
            fields.push((4, format!("avg {}", per_sec(avg))));
            fields.push((3, format!("ETA {}", eta(s.sent, total, s.rate))));
        }
        (Phase::Running, None) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((1, per_sec(s.rate)));
            fields.push((2, format!("avg {}", per_sec(avg))));
        }
        (Phase::Done, _) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((2, format!("avg {}", per_sec(avg))));
            fields.push((1, "done".to_string()));
        }
        (Phase::Aborted, Some(total)) => {
            fields.push((0, format!("{}/{}", BinaryBytes(s.sent), BinaryBytes(total))));
            fields.push((2, format!("{}%", percent(s.sent, total))));
            fields.push((1, "aborted".to_string()));
        }
        (Phase::Aborted, None) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((1, "aborted".to_string()));
        }
    }
    let clock = clock(s.elapsed);
    let fraction = s.total.map(|total| match total {
        0 => 1.0,
        t => (s.sent as f64 / t as f64).clamp(0.0, 1.0),
    });
    layout(cols, &clock, fraction, &fields)
}

/// Which fields fit in `budget` columns (each costs its length and a
/// space), chosen by priority; returns " a b c" in display order.
fn pick(fields: &[(u8, String)], budget: usize) -> (String, bool) {
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| fields[i].0);
    let mut keep = vec![false; fields.len()];
    let mut used = 0;
    for i in order {
        let cost = fields[i].1.len() + 1;
        if used + cost <= budget {
            used += cost;
            keep[i] = true;
        }
    }
    let first = fields.iter().zip(&keep).any(|((p, _), k)| *p == 0 && *k);
    let mut tail = String::new();
    for ((_, text), k) in fields.iter().zip(&keep) {
        if *k {
            tail.push(' ');
            tail.push_str(text);
        }
    }
    (tail, first)
}

fn layout(cols: usize, clock: &str, fraction: Option<f64>, fields: &[(u8, String)]) -> String {
    // "clock [bar] fields": the bar takes what the fields leave.
    if let Some(f) = fraction {
        let fixed = clock.len() + 3 + MIN_BAR;
        if cols >= fixed {
            let (tail, first) = pick(fields, cols - fixed);
            if first {
                let inner = cols - clock.len() - 3 - tail.len();
                return format!("{clock} [{}]{tail}", bar(f, inner));
            }
        }
    }
    // Too narrow for a bar: the clock and what fits.
    if clock.len() >= cols {
        return clock[..cols].to_string();
    }
    let (tail, _) = pick(fields, cols - clock.len());
    format!("{clock}{tail}")
}

/// `=====>    `, `inner` columns.
fn bar(fraction: f64, inner: usize) -> String {
    let filled = ((fraction * inner as f64) as usize).min(inner);
    let mut s = "=".repeat(filled);
    if filled < inner {
        s.push(if filled > 0 { '>' } else { ' ' });
        s.push_str(&" ".repeat(inner - filled - 1));
    }
    s
}

/// 0-100; an empty file is 100% done.
fn percent(sent: u64, total: u64) -> u64 {
    match total {
        0 => 100,
        t => (u128::from(sent) * 100 / u128::from(t)).min(100) as u64,
    }
}

/// `12.00 MiB/s`.
fn per_sec(rate: f64) -> String {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate as u64
    } else {
        0
    };
    format!("{}/s", BinaryBytes(rate))
}

/// The time left at `rate`, or `--:--` while it cannot be told.
fn eta(sent: u64, total: u64, rate: f64) -> String {
    if sent >= total {
        return clock(Duration::ZERO);
    }
    let secs = (total - sent) as f64 / rate;
    if rate.is_finite() && rate >= 1.0 && secs < 100.0 * 3600.0 {
        clock(Duration::from_secs_f64(secs))
    } else {
        "--:--".to_string()
    }
}

/// `M:SS`, or `H:MM:SS` from an hour on.
fn clock(d: Duration) -> String {
    let t = d.as_secs();
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Result<Action, Error> {
        parse(argv)
    }

    #[test]
    fn parses_host_port_file() {
        match run(&["client", "localhost", "05000", "-"]) {
            Ok(Action::Run(a)) => {
                assert_eq!(a.host, "localhost");
                assert_eq!(a.port, 5000);
                assert_eq!(a.file, PathBuf::from("-"));
                assert_eq!(a.progress, None);
            }
            other => panic!("{other:?}"),
        }
        match run(&["client", "[::1]", "1", "f", "--progress"]) {
            Ok(Action::Run(a)) => {
                assert_eq!(a.host, "::1");
                assert_eq!(a.progress, Some(true));
            }
            other => panic!("{other:?}"),
        }
        match run(&["client", "--progress", "--no-progress", "h", "1", "f"]) {
            Ok(Action::Run(a)) => assert_eq!(a.progress, Some(false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_64_and_one_error_line() {
        for argv in [
            vec!["client"],
            vec!["client", "h", "1"],
            vec!["client", "h", "0", "f"],
            vec!["client", "h", "65536", "f"],
            vec!["client", "h", "-1", "f"],
            vec!["client", "h", "+5000", "f"],
            vec!["client", "h", "5000abc", "f"],
            vec!["client", "h", "1", "f", "extra"],
            vec!["client", "--bogus", "h", "1", "f"],
            vec!["client", "", "1", "f"],
            vec!["client", "[]", "1", "f"],
        ] {
            match run(&argv) {
                Err(e @ Error::Usage(_)) => {
                    assert_eq!(e.exit_code(), 64);
                    let m = e.to_string();
                    assert!(!m.starts_with("error"), "{m}");
                    assert!(m.contains("Usage: client"), "{m}");
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn help_and_version_are_printed() {
        for argv in [["client", "--help"], ["client", "-V"]] {
            assert!(matches!(run(&argv), Ok(Action::Print(_))), "{argv:?}");
        }
    }

    #[test]
    fn progress_lines_fit_every_width() {
        let snaps = [
            Snapshot {
                elapsed: Duration::from_secs(3725),
                sent: 1_023_990_000,
                total: Some(1_099_511_627_775),
                rate: 1_073_741_823.0,
                phase: Phase::Running,
            },
            Snapshot {
                elapsed: Duration::from_millis(1500),
                sent: 1536,
                total: None,
                rate: 1000.0,
                phase: Phase::Running,
            },
            Snapshot {
                elapsed: Duration::ZERO,
                sent: 0,
                total: Some(0),
                rate: 0.0,
                phase: Phase::Done,
            },
            Snapshot {
                elapsed: Duration::from_secs(59),
                sent: 5 << 20,
                total: Some(50 << 20),
                rate: f64::NAN,
                phase: Phase::Aborted,
            },
        ];
        for snap in &snaps {
            for cols in 0..300 {
                let line = render(snap, cols);
                assert!(line.len() <= cols, "{cols}: {line:?}");
                assert!(line.is_ascii(), "{line:?}");
                if snap.total.is_some() && line.contains('[') {
                    // With a bar the line fills the width exactly.
                    assert_eq!(line.len(), cols, "{line:?}");
                }
            }
        }
        let wide = render(&snaps[0], 120);
        for needle in ["1:02:05 [", "976.55 MiB/1024.00 GiB", "0%", "avg ", "ETA "] {
            assert!(wide.contains(needle), "{needle:?} not in {wide:?}");
        }
        assert!(wide.contains("1024.00 MiB/s"), "{wide:?}");
        let medium = render(&snaps[0], 60);
        assert!(medium.starts_with("1:02:05 [") && medium.contains(" 976.55 MiB/1024.00 GiB "));
        // No room for a bar beside the bytes: the bar goes first.
        assert_eq!(render(&snaps[0], 40), "1:02:05 976.55 MiB/1024.00 GiB 0%");
        assert_eq!(
            render(&snaps[1], 38),
            "0:01 1.50 KiB 1000 B/s avg 1.00 KiB/s"
        );
        assert_eq!(render(&snaps[1], 20), "0:01 1.50 KiB");
        assert_eq!(
            render(&snaps[2], 40),
            "0:00 [==============] 0 B avg 0 B/s done"
        );
        assert_eq!(
            render(&snaps[3], 40),
            "0:59 [=>        ] 5.00 MiB/50.00 MiB 10%"
        );
    }

    #[test]
    fn clock_eta_and_bar() {
        assert_eq!(clock(Duration::from_millis(59_999)), "0:59");
        assert_eq!(clock(Duration::from_secs(3599)), "59:59");
        assert_eq!(clock(Duration::from_secs(3600)), "1:00:00");
        assert_eq!(eta(0, 100, 0.0), "--:--");
        assert_eq!(eta(0, 100, 10.0), "0:10");
        assert_eq!(eta(100, 100, 0.0), "0:00");
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(0.5, 4), "==> ");
        assert_eq!(bar(1.0, 4), "====");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 100);
    }

    #[test]
    fn exit_codes() {
        let codes: Vec<u8> = [
            Error::Usage(String::new()),
            Error::NoInput(String::new()),
            Error::NoHost(String::new()),
            Error::Unavailable(String::new()),
            Error::Timeout(String::new()),
            Error::Protocol(String::new()),
            Error::Signal(SIGHUP, String::new()),
            Error::Signal(SIGINT, String::new()),
            Error::Signal(SIGTERM, String::new()),
        ]
        .iter()
        .map(Error::exit_code)
        .collect();
        assert_eq!(codes, [64, 66, 68, 69, 75, 76, 129, 130, 143]);
    }
}
