//! The client: `client [OPTIONS] <HOST> <PORT> <FILE>` (installed as
//! `accio-client`).
//!
//! One transfer, in this order, each wait bounded by [`TIMEOUT`]:
//!
//! 1. open FILE (`-` is stdin) before anything touches the network, so a bad
//!    FILE never makes a connection (66);
//! 2. resolve HOST (68) and connect to its addresses in turn, all within one
//!    10 s budget (69 refused or failed, 75 timeout);
//! 3. read the greeting until all of `accio\r\n` is there; it may come in
//!    pieces, anything else is 76, silence 75. Nothing is sent before;
//! 4. send FILE: a regular file with sendfile(2), anything else through one
//!    fixed 64 KiB buffer, so memory does not grow with the size. The socket
//!    is non-blocking and every `EAGAIN` waits in poll(2) for at most 10 s
//!    since the socket last accepted a byte (75);
//! 5. shutdown(SHUT_WR) and read until the server closes. The 10 s close
//!    budget restarts while the server is still acknowledging our data (the
//!    send queue, SIOCOUTQ, shrinks), so a slow link is not a timeout. Bytes
//!    the server sends after the greeting are read and ignored: the
//!    transfer is judged by the orderly close alone.
//!
//! Any error after connecting aborts the connection with a reset
//! (SO_LINGER 0), so the server never mistakes a partial file for a whole
//! one: it reports `ERROR` for it.
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command, value_parser};
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
/// progress line moving, and measured as fast as 1 GiB (64 KiB was slower).
const SENDFILE_CHUNK: usize = 16 << 20;
/// The progress line is redrawn at most this often.
const REDRAW: Duration = Duration::from_millis(100);

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
    /// Connection refused, reset or otherwise failed (EX_UNAVAILABLE, 69).
    Unavailable(String),
    /// A 10 s timeout: connect, greeting, stalled send, close (EX_TEMPFAIL, 75).
    Timeout(String),
    /// The server's first bytes are not `accio\r\n` (EX_PROTOCOL, 76).
    Protocol(String),
}

impl Error {
    /// The process exit code for this error, from sysexits.h.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 64,
            Error::NoInput(_) => 66,
            Error::NoHost(_) => 68,
            Error::Unavailable(_) => 69,
            Error::Timeout(_) => 75,
            Error::Protocol(_) => 76,
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
            | Error::Protocol(m) => f.write_str(m),
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
    /// on when stderr is a terminal.
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
             client closes its sending side and waits for the server to close the connection; \
             that close confirms the transfer. Bytes the server sends after the greeting are \
             read and ignored. On any error after connecting, the connection is reset rather \
             than closed, so the server reports ERROR instead of counting a partial file.",
        )],
    },
    Section {
        title: "TIMEOUTS",
        items: &[(
            "",
            "10 seconds for each of: connecting (one budget shared by all addresses of HOST), \
             the complete greeting, a send during which the server accepts no data, and the \
             server's close after the last byte (restarted as long as the server is still \
             acknowledging data). There is no timeout on reading FILE.",
        )],
    },
    Section {
        title: "PROGRESS",
        items: &[(
            "",
            "With --progress (the default when standard error is a terminal) one line on \
             standard error shows the bytes sent, the average rate and, for a regular file, the \
             percentage; it is redrawn in place (carriage return) at most 10 times a second and \
             ends with a newline. With --no-progress, or when standard error is not a terminal \
             and --progress is not given, nothing but errors is written to standard error.",
        )],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            (
                "0",
                "FILE was sent and the server closed the connection; --help, --version.",
            ),
            (
                "64",
                "Bad arguments: missing or extra argument, bad PORT, unknown option.",
            ),
            ("66", "FILE cannot be opened or read."),
            ("68", "HOST cannot be resolved."),
            (
                "69",
                "Connection refused, reset by the server, or otherwise failed.",
            ),
            (
                "75",
                "A timeout: connect, greeting, a stalled send, or the server's close.",
            ),
            (
                "76",
                "The server sent something other than the greeting accio\\r\\n.",
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
                .help("Show bytes sent, rate and percentage on stderr (default: only if stderr is a terminal)"),
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
pub fn send(args: &Args) -> Result<Report, Error> {
    let input = Input::open(&args.file)?;
    let mut peer = Peer::resolve(&args.host, args.port)?;
    let sock = peer.connect()?;
    let show = args.progress.unwrap_or_else(|| io::stderr().is_terminal());
    let result = transfer(&sock, &input, &peer, show);
    if result.is_err() {
        // Abort with a reset: a plain close would send FIN after whatever is
        // still queued, and the server would take a partial file for a
        // complete one.
        let _ = sock.set_linger(Some(Duration::ZERO));
    }
    result
}

/// Greeting, FILE, half-close, the server's close.
fn transfer(sock: &Socket, input: &Input, peer: &Peer, show: bool) -> Result<Report, Error> {
    peer.await_greeting(sock)?;
    let mut progress = Progress::new(show, input.size);
    let sent = match input.regular {
        true => send_file(sock, input, peer, &mut progress)?,
        false => stream(sock, input, peer, &mut progress, 0)?,
    };
    let ignored = peer.await_close(sock, sent)?;
    progress.finish(sent);
    Ok(Report { sent, ignored })
}

/// `e` without std's " (os error N)" suffix.
fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
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
    fn connect(&mut self) -> Result<Socket, Error> {
        let deadline = Instant::now() + TIMEOUT;
        let mut failures = Vec::new();
        for addr in &self.addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
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
            match sock.connect_timeout(&(*addr).into(), left) {
                Ok(()) => {
                    sock.set_nonblocking(true).map_err(|e| {
                        Error::Unavailable(format!("socket setup failed: {}", describe(&e)))
                    })?;
                    self.connected = Some(*addr);
                    return Ok(sock);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    break;
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

    /// Read exactly the greeting: never more, so nothing of a later byte is
    /// taken for it, and fail at the first byte that differs.
    fn await_greeting(&self, sock: &Socket) -> Result<(), Error> {
        let deadline = Instant::now() + TIMEOUT;
        let mut got = [0u8; GREETING.len()];
        let mut n = 0;
        while n < got.len() {
            match recv(sock, &mut got[n..]) {
                Ok(0) => {
                    return Err(Error::Protocol(format!(
                        "{} closed the connection {}instead of greeting with \"accio\\r\\n\": \
                         not an Accio server? check HOST and PORT",
                        self.name(),
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
                            self.name(),
                            got[..n].escape_ascii()
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait(sock.as_raw_fd(), libc::POLLIN, Some(deadline)) {
                        return Err(Error::Timeout(format!(
                            "connected to {}, but {} within {} s; is it an Accio server, and \
                             is it overloaded?",
                            self.name(),
                            if n == 0 {
                                "no greeting arrived".to_string()
                            } else {
                                format!("only {n} of the 7 greeting bytes arrived")
                            },
                            TIMEOUT.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(self.failed("waiting for the greeting", 0, &e)),
            }
        }
        Ok(())
    }

    /// Half-close, then read until the server closes. Returns the number of
    /// bytes it sent meanwhile (ignored).
    fn await_close(&self, sock: &Socket, sent: u64) -> Result<u64, Error> {
        sock.shutdown(std::net::Shutdown::Write)
            .map_err(|e| self.failed("closing the sending side", sent, &e))?;
        let fd = sock.as_raw_fd();
        let mut queued = unacked(fd);
        let mut deadline = Instant::now() + TIMEOUT;
        let mut ignored = 0u64;
        let mut buf = [0u8; 512];
        loop {
            match recv(sock, &mut buf) {
                Ok(0) => return Ok(ignored),
                Ok(k) => ignored += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wake up now and then: data still being acknowledged
                    // is progress, and restarts the budget.
                    let slice = (Instant::now() + Duration::from_millis(250)).min(deadline);
                    if !wait(fd, libc::POLLIN, Some(slice)) {
                        let now_queued = unacked(fd);
                        if now_queued < queued {
                            queued = now_queued;
                            deadline = Instant::now() + TIMEOUT;
                        } else if Instant::now() >= deadline {
                            return Err(Error::Timeout(format!(
                                "all {sent} bytes were sent to {}, but it did not close the \
                                 connection within {} s; the transfer may be incomplete, check \
                                 the server's output and log",
                                self.name(),
                                TIMEOUT.as_secs()
                            )));
                        }
                    }
                }
                Err(e) => return Err(self.failed("waiting for the server to close", sent, &e)),
            }
        }
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

/// Bytes sent but not yet acknowledged by the peer (SIOCOUTQ); 0 if unknown.
fn unacked(fd: RawFd) -> i64 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    i64::from(n)
}

/// poll(2) one descriptor until it is ready (true) or `deadline` passes
/// (false); `None` waits forever. An error or hang-up counts as ready: the
/// next call reports it.
fn wait(fd: RawFd, events: libc::c_short, deadline: Option<Instant>) -> bool {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                // Round up: never spin on a sub-millisecond remainder.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n > 0 {
            return true;
        }
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true;
        }
    }
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

/// A regular file: sendfile(2) from the current offset until it reports the
/// end (a file that grows or shrinks meanwhile is sent as it is read).
fn send_file(
    sock: &Socket,
    input: &Input,
    peer: &Peer,
    progress: &mut Progress,
) -> Result<u64, Error> {
    let out = sock.as_raw_fd();
    let mut sent = 0u64;
    let mut stalled_since: Option<Instant> = None;
    progress.update(sent);
    loop {
        // SAFETY: two descriptors we hold; a null offset uses and advances
        // the file position.
        let n = unsafe { libc::sendfile(out, input.fd, std::ptr::null_mut(), SENDFILE_CHUNK) };
        if n > 0 {
            sent += n as u64;
            stalled_since = None;
            progress.update(sent);
            continue;
        }
        if n == 0 {
            return Ok(sent);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if !wait(out, libc::POLLOUT, Some(since + TIMEOUT)) {
                    return Err(peer.stalled(sent));
                }
            }
            // Some file systems cannot sendfile: copy instead.
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if sent == 0 => {
                return stream(sock, input, peer, progress, 0);
            }
            _ if is_socket_error(&e) => return Err(peer.failed("sending", sent, &e)),
            _ => return Err(input.read_error(sent, &e)),
        }
    }
}

/// Anything else (stdin, a pipe, a device): read into one fixed buffer and
/// send it, so memory stays constant whatever the size.
fn stream(
    sock: &Socket,
    input: &Input,
    peer: &Peer,
    progress: &mut Progress,
    mut sent: u64,
) -> Result<u64, Error> {
    let out = sock.as_raw_fd();
    let mut buf = vec![0u8; BUF_SIZE];
    progress.update(sent);
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(input.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return Ok(sent);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // A non-blocking stdin: wait for data, as long as it takes.
                io::ErrorKind::WouldBlock => {
                    wait(input.fd, libc::POLLIN, None);
                    continue;
                }
                _ => return Err(input.read_error(sent, &e)),
            }
        }
        let mut chunk = &buf[..n as usize];
        let mut stalled_since: Option<Instant> = None;
        while !chunk.is_empty() {
            // SAFETY: chunk is valid for its length; MSG_NOSIGNAL: EPIPE, not SIGPIPE.
            let k =
                unsafe { libc::send(out, chunk.as_ptr().cast(), chunk.len(), libc::MSG_NOSIGNAL) };
            if k >= 0 {
                chunk = &chunk[k as usize..];
                sent += k as u64;
                stalled_since = None;
                progress.update(sent);
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if !wait(out, libc::POLLOUT, Some(since + TIMEOUT)) {
                        return Err(peer.stalled(sent));
                    }
                }
                _ => return Err(peer.failed("sending", sent, &e)),
            }
        }
    }
}

/// The `--progress` line on stderr.
struct Progress {
    on: bool,
    total: Option<u64>,
    start: Instant,
    last_draw: Option<Instant>,
    /// Length of the last line drawn, to blank what a shorter one leaves.
    width: usize,
    done: bool,
}

impl Progress {
    fn new(on: bool, total: Option<u64>) -> Progress {
        Progress {
            on,
            total,
            start: Instant::now(),
            last_draw: None,
            width: 0,
            done: false,
        }
    }

    /// Redraw, unless the last redraw was less than 100 ms ago.
    fn update(&mut self, sent: u64) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t) < REDRAW)
        {
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(sent, now);
        self.draw(&line, "");
    }

    /// The final state, ended with a newline.
    fn finish(&mut self, sent: u64) {
        if !self.on || self.done {
            return;
        }
        let line = format!("{}, done", self.line(sent, Instant::now()));
        self.draw(&line, "\n");
        self.done = true;
    }

    fn line(&self, sent: u64, now: Instant) -> String {
        let secs = now.duration_since(self.start).as_secs_f64();
        let mut line = format!("{} sent", human(sent));
        if let Some(total) = self.total {
            // An empty file is 100% done.
            let pct = sent
                .saturating_mul(100)
                .checked_div(total)
                .map_or(100, |p| p.min(100));
            line.push_str(&format!(" of {} ({pct}%)", human(total)));
        }
        if secs > 0.0 && sent > 0 {
            line.push_str(&format!(", {}/s", human((sent as f64 / secs) as u64)));
        }
        line.push_str(&format!(", {secs:.1} s"));
        line
    }

    fn draw(&mut self, line: &str, end: &str) {
        let pad = self.width.saturating_sub(line.len());
        self.width = line.len();
        let text = format!("\r{line}{:pad$}{end}", "");
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}

impl Drop for Progress {
    /// On an error, end the line so the `ERROR:` line starts a new one.
    fn drop(&mut self) {
        if self.on && !self.done && self.last_draw.is_some() {
            let _ = io::stderr().lock().write_all(b"\n");
        }
    }
}

/// 1023 B, 1.5 KiB, 12.3 MiB, 4.00 GiB.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = if v < 10.0 { 2 } else { 1 };
    format!("{v:.decimals$} {}", UNITS[unit])
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
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(4 << 30), "4.00 GiB");
        assert_eq!(human(123 << 20), "123.0 MiB");
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
        ]
        .iter()
        .map(Error::exit_code)
        .collect();
        assert_eq!(codes, [64, 66, 68, 69, 75, 76]);
    }
}
