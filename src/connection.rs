//! One client connection: the greeting, byte counting, and how it ended.
//!
//! (Over 500 lines because a connection is read in three shapes, counting
//! (event-driven or streaming), its PROXY header, and saving's hand-over to
//! the disk threads, which share its state, its deadlines and how a failed
//! read ends it; apart, each would reach into the others.)
//!
//! The count needs the number of bytes, not the bytes: `recv(MSG_TRUNC)` on
//! a TCP socket discards queued data inside the kernel and returns its
//! length, so the payload is never copied to user space and no buffer
//! exists per connection. When saving, a disk thread reads the socket
//! instead (see [`Saving`]).
//!
//! Urgent (`MSG_OOB`) bytes are ordinary bytes here: sockets are accepted
//! with `SO_OOBINLINE`, so `recv` counts them in order.
//!
//! Two ways to read. [`Connection::drain`] is the event loop's: it never
//! blocks and reads what an epoll event announced. [`Connection::stream_until`]
//! is for a client that has the server to itself and is streaming: blocking
//! reads, like a receiver serving one client, save the `epoll_wait` per
//! wake-up (a quarter of the CPU a bulk transfer costs), for a short stretch
//! after which the loop looks at everything else again.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::config::fmt_duration;
use crate::disk::Job;
use crate::log::{Level, quote};
use crate::proxy;
use crate::save::Part;
use crate::sources::Source;

/// The first and only bytes the server ever sends.
pub const GREETING: &[u8] = b"accio\r\n";

/// How a connection ended; decides the stdout line and the log priority.
#[derive(Debug)]
pub enum Outcome {
    /// The client closed its sending side in order: print the count.
    Counted,
    /// No byte for the idle timeout.
    TimedOut(Duration),
    /// The client reset the connection.
    Reset,
    /// The greeting could not be sent.
    GreetingFailed(io::Error),
    /// Any other socket error.
    Failed(io::Error),
    /// The saved file could not be written.
    SaveFailed(io::Error),
    /// `N.file` already existed when the file was complete: left untouched.
    NameTaken(std::path::PathBuf),
    /// More than `max_file_size` bytes.
    TooLarge(u64),
    /// Averaged less than `min_rate` bytes per second.
    TooSlow(u64),
    /// Still open when the server stopped.
    Stopped,
}

impl Outcome {
    pub fn is_counted(&self) -> bool {
        matches!(self, Outcome::Counted)
    }

    /// A short reason for the JSON line (None when counted).
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Outcome::Counted => return None,
            Outcome::TimedOut(_) => "idle timeout",
            Outcome::Reset => "reset by client",
            Outcome::GreetingFailed(_) => "greeting failed",
            Outcome::Failed(_) => "connection failed",
            Outcome::SaveFailed(_) => "saving failed",
            Outcome::NameTaken(_) => "file name taken",
            Outcome::TooLarge(_) => "max_file_size exceeded",
            Outcome::TooSlow(_) => "below min_rate",
            Outcome::Stopped => "server stopped",
        })
    }

    /// The log priority of this ending and what to say about it.
    pub fn describe(&self) -> (Level, String) {
        match self {
            Outcome::Counted => (Level::Info, "closed by client".to_string()),
            Outcome::TimedOut(d) => (
                Level::Warning,
                format!("idle timeout ({} without data)", fmt_duration(*d)),
            ),
            Outcome::Reset => (Level::Warning, "reset by client".to_string()),
            Outcome::Stopped => (Level::Warning, "aborted at stop".to_string()),
            Outcome::TooLarge(max) => (
                Level::Warning,
                format!("more than max_file_size ({max} bytes)"),
            ),
            Outcome::TooSlow(rate) => (
                Level::Warning,
                format!("too slow (below min_rate, {rate} bytes/s on average)"),
            ),
            Outcome::GreetingFailed(e) => (Level::Err, format!("greeting failed: {e}")),
            Outcome::Failed(e) => (Level::Err, format!("failed: {e}")),
            Outcome::SaveFailed(e) => (Level::Err, format!("saving failed: {e}")),
            Outcome::NameTaken(p) => (
                Level::Err,
                format!(
                    "saving failed: {} already exists (not made by this server); it was left untouched",
                    quote(&p.display().to_string())
                ),
            ),
        }
    }
}

/// What one round of reading found.
#[derive(Debug)]
pub enum Progress {
    /// Nothing more to read now; wait for readiness.
    Idle,
    /// The read budget ran out with data possibly left: come back soon.
    Busy,
    /// The client closed its sending side.
    Eof,
    Reset,
    Failed(io::Error),
    /// More than `max_file_size` bytes arrived.
    TooLarge,
}

pub struct Connection {
    stream: TcpStream,
    /// Unique per accepted socket: tells a reused slot's occupants apart
    /// (timer entries, disk results).
    pub id: u64,
    /// 1, 2, 3... in admission order; names the connection in the logs and
    /// its saved file. 0 while a PROXY header is awaited.
    pub number: u64,
    pub peer: SocketAddr,
    pub bytes: u64,
    pub accepted: Instant,
    /// When this connection times out unless a byte arrives first.
    pub deadline: Instant,
    /// The deadline of this connection's live entry in the timer heap; an
    /// entry with another deadline is stale.
    pub queued: Instant,
    /// The file being saved, in `--save-dir` mode.
    pub save: Option<Saving>,
    /// The source this connection counts against (`max_per_source`).
    pub source: Option<Source>,
    /// With `proxy_protocol`: the header still to read before the greeting.
    pub header: Option<Header>,
    /// The socket was made blocking for [`Connection::stream_until`]; every
    /// other read passes `MSG_DONTWAIT`.
    blocking: bool,
}

/// Where a connection is in its PROXY protocol header.
#[derive(Debug, Clone, Copy)]
pub enum Header {
    /// Peeking until the header is complete (or known to be invalid).
    Waiting,
    /// The header is known to be `left` more bytes (v2 TLVs included):
    /// dropped in the kernel, never read into memory.
    Skipping {
        left: usize,
        client: Option<SocketAddr>,
    },
}

/// What reading a PROXY header found.
#[derive(Debug)]
pub enum HeaderProgress {
    /// Not complete yet: wait for more bytes.
    Wait,
    /// Complete and consumed: the client's address (the one it carries, or
    /// the peer's for a `LOCAL` header or an unknown family).
    Done(SocketAddr),
    /// Not a valid header, or the connection ended before it was complete.
    Bad(String),
}

/// A saving connection's side of the way to the disk. Its bytes move from
/// the socket through a pipe into the file on a disk thread (a pump job,
/// see [`Part::pump`]), never on the loop: one thread does both splices,
/// as a plain receiver would, and the loop only says when to start.
pub struct Saving {
    /// Home between jobs; `None` while a disk thread has it.
    part: Option<Box<Part>>,
    /// The socket was readable since the last pump job began.
    pub readable: bool,
    /// The client closed in order; the file is to be committed.
    pub eof: bool,
    /// The commit is with a disk thread.
    pub committing: bool,
}

impl Saving {
    pub fn new(part: Part) -> Saving {
        Saving {
            part: Some(Box::new(part)),
            readable: false,
            eof: false,
            committing: false,
        }
    }

    /// The job this connection needs next, if its part is home: pump what
    /// the client sent (`counted` bytes so far, `max` at most), or, once it
    /// closed, commit.
    pub fn next_job(&mut self, fsync: bool, max: u64, counted: u64) -> Option<Job> {
        if self.part.is_none() || self.committing {
            return None;
        }
        if self.eof {
            self.committing = true;
            let part = self.part.take()?;
            return Some(Job::Commit { part, fsync });
        }
        if std::mem::take(&mut self.readable) {
            let part = self.part.take()?;
            return Some(Job::Pump {
                part,
                max,
                counted,
                fsync,
            });
        }
        None
    }

    /// The socket raised an event. Bytes are for a disk thread to move (see
    /// [`Saving`]); a close or a reset with nothing queued the loop tells
    /// apart itself, so that they are not held up behind slow disk jobs.
    fn readable(&mut self, sock: libc::c_int) -> Progress {
        if self.eof {
            return Progress::Idle;
        }
        if queued(sock) > 0 {
            self.readable = true;
            return Progress::Idle;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a valid buffer; it takes nothing.
        let n = unsafe {
            libc::recv(
                sock,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => {
                self.eof = true;
                Progress::Eof
            }
            n if n > 0 => {
                self.readable = true;
                Progress::Idle
            }
            _ => read_failed(io::Error::last_os_error()),
        }
    }

    /// A pump job came back.
    pub fn home(&mut self, part: Box<Part>) {
        self.part = Some(part);
    }

    /// A disk thread has the part (pumping or committing): the client is
    /// waiting for the disk, not idle.
    pub fn at_disk(&self) -> bool {
        self.part.is_none()
    }

    /// The part, if it is home, for a marker job; its pipe goes with it.
    pub fn take_part(&mut self) -> Option<Box<Part>> {
        let mut part = self.part.take()?;
        part.release_socket();
        Some(part)
    }
}

impl Connection {
    pub fn new(stream: TcpStream, id: u64, peer: SocketAddr, now: Instant, idle: Duration) -> Self {
        let deadline = now + idle;
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; log
        // them as the IPv4 address they are.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        Connection {
            stream,
            id,
            number: 0,
            peer,
            bytes: 0,
            accepted: now,
            deadline,
            queued: deadline,
            save: None,
            source: None,
            header: None,
            blocking: false,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Send the greeting. A fresh socket's send buffer always has room for
    /// 7 bytes, so anything short of a full write is a failure.
    pub fn greet(&mut self) -> io::Result<()> {
        loop {
            match self.stream.write(GREETING) {
                Ok(n) if n == GREETING.len() => return Ok(()),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "greeting only partly sent",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// How many bytes the next read may take: all there is, or up to one
    /// past `max_file_size`, which is enough to know it was exceeded.
    fn allowance(&self, max: u64, want: usize) -> usize {
        allowance(self.bytes, max, want)
    }

    /// Read what the kernel has queued, at most `budget` reads, so one
    /// fast client cannot starve the others: counted and dropped, or into
    /// the pipe to the disk when saving.
    ///
    /// A read shorter than asked for emptied the queue, and with
    /// edge-triggered epoll anything arriving later (data, FIN, RST) raises
    /// a new event, so the EAGAIN read that would confirm it is skipped:
    /// one syscall less per wake-up. The exception is a FIN that was already
    /// queued behind the data: it raised its event before this read, so when
    /// the event said the peer closed (`peer_closed`), read on to EOF.
    pub fn drain(&mut self, budget: u32, peer_closed: bool, max: u64) -> Progress {
        if let Some(save) = self.save.as_mut() {
            return save.readable(self.stream.as_raw_fd());
        }
        for _ in 0..budget {
            let want = self.allowance(max, DISCARD_MAX);
            match discard(&self.stream, libc::MSG_DONTWAIT, want) {
                Ok(0) => return Progress::Eof,
                Ok(n) => {
                    self.bytes += n as u64;
                    if max != 0 && self.bytes > max {
                        return Progress::TooLarge;
                    }
                    if n < want && !peer_closed {
                        return Progress::Idle;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return read_failed(e),
            }
        }
        Progress::Busy
    }

    /// Count with blocking reads until `until`: [`Progress::Busy`] if the
    /// client was still sending then, [`Progress::Idle`] if it paused for
    /// `STREAM_PAUSE` or a signal arrived, or how the connection ended.
    ///
    /// A blocking `recv` sleeps until data arrives and takes it in the same
    /// system call, where the loop needs `epoll_wait` and then `recv`. The
    /// socket's receive timeout bounds each sleep, and also makes a signal
    /// interrupt it (EINTR) even though the handlers use SA_RESTART
    /// (signal(7)), so a stop is seen at once. Counting connections only:
    /// saving needs `splice`, which has no such timeout.
    pub fn stream_until(&mut self, until: Instant, idle: Duration, max: u64) -> Progress {
        if !self.blocking {
            let sock = socket2::SockRef::from(&self.stream);
            if sock.set_read_timeout(Some(STREAM_PAUSE)).is_err()
                || sock.set_nonblocking(false).is_err()
            {
                // Not worth failing a connection for: it goes on with the
                // event loop's reads.
                let _ = sock.set_nonblocking(true);
                return Progress::Idle;
            }
            self.blocking = true;
        }
        // The clock is read per read anyway (for `until`); the deadline
        // follows from the last read's time, once, on the way out.
        let mut last_read = None;
        let progress = loop {
            match discard(&self.stream, 0, self.allowance(max, DISCARD_MAX)) {
                Ok(0) => break Progress::Eof,
                Ok(n) => {
                    self.bytes += n as u64;
                    if max != 0 && self.bytes > max {
                        break Progress::TooLarge;
                    }
                    let now = Instant::now();
                    last_read = Some(now);
                    if now >= until {
                        break Progress::Busy;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break Progress::Idle,
                Err(e) => break read_failed(e),
            }
        };
        if let Some(t) = last_read {
            self.deadline = t + idle;
        }
        progress
    }

    /// Read the PROXY header: peek at most [`proxy::PEEK_MAX`] bytes to
    /// judge it, then drop exactly its length, so the first payload byte
    /// stays queued for the count. Never reads more, never blocks.
    pub fn read_header(&mut self) -> HeaderProgress {
        let sock = self.stream.as_raw_fd();
        loop {
            match self.header {
                None => return HeaderProgress::Done(self.peer),
                Some(Header::Waiting) => {
                    let mut buf = [0u8; proxy::PEEK_MAX];
                    // SAFETY: a peek into a valid buffer of its length.
                    let n = unsafe {
                        libc::recv(
                            sock,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_PEEK | libc::MSG_DONTWAIT,
                        )
                    };
                    let got = match usize::try_from(n) {
                        Ok(0) => {
                            return HeaderProgress::Bad(
                                "the client closed before a complete header".into(),
                            );
                        }
                        Ok(got) => got,
                        Err(_) => return header_failed(io::Error::last_os_error()),
                    };
                    match proxy::parse(&buf[..got]) {
                        proxy::Parsed::Incomplete => return HeaderProgress::Wait,
                        proxy::Parsed::Invalid(why) => return HeaderProgress::Bad(why.into()),
                        proxy::Parsed::Header { len, source } => {
                            self.header = Some(Header::Skipping {
                                left: len,
                                client: source,
                            })
                        }
                    }
                }
                Some(Header::Skipping { left, client }) => {
                    match discard(&self.stream, libc::MSG_DONTWAIT, left) {
                        Ok(0) => {
                            return HeaderProgress::Bad(
                                "the client closed before a complete header".into(),
                            );
                        }
                        Ok(n) if n >= left => {
                            self.header = None;
                            let client = client.map_or(self.peer, |c| {
                                SocketAddr::new(c.ip().to_canonical(), c.port())
                            });
                            self.peer = client;
                            return HeaderProgress::Done(client);
                        }
                        Ok(n) => {
                            self.header = Some(Header::Skipping {
                                left: left - n,
                                client,
                            })
                        }
                        Err(e) => return header_failed(e),
                    }
                }
            }
        }
    }

    /// The per-connection log line.
    pub fn summary(&self, what: &str, now: Instant) -> String {
        let secs = now.duration_since(self.accepted).as_secs_f64();
        if self.number == 0 {
            return format!(
                "client {} before its PROXY header: {what} after {secs:.3} s",
                self.peer
            );
        }
        format!(
            "connection {} from {}: {what}, {} bytes in {secs:.3} s ({})",
            self.number,
            self.peer,
            self.bytes,
            crate::units::rate(self.bytes, secs)
        )
    }

    /// The socket, for a connection refused before its greeting.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// End the connection with a reset instead of an orderly FIN, so a
    /// client still sending learns at once that its data was not taken.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// At most `want`, and at most one byte past `max` (0 = no limit) after
/// `bytes` already received: enough to know the limit was exceeded.
pub fn allowance(bytes: u64, max: u64, want: usize) -> usize {
    if max == 0 {
        return want;
    }
    let left = (max + 1).saturating_sub(bytes);
    want.min(usize::try_from(left).unwrap_or(usize::MAX))
}

/// How long a blocking read in [`Connection::stream_until`] waits for more
/// before the client counts as paused and the event loop takes over again.
const STREAM_PAUSE: Duration = Duration::from_millis(1);

fn header_failed(e: io::Error) -> HeaderProgress {
    match e.kind() {
        io::ErrorKind::WouldBlock => HeaderProgress::Wait,
        io::ErrorKind::Interrupted => HeaderProgress::Wait,
        _ => HeaderProgress::Bad(format!("reading it failed: {e}")),
    }
}

/// A failed read, by what it means for the connection.
pub fn read_failed(e: io::Error) -> Progress {
    match e.kind() {
        io::ErrorKind::WouldBlock => Progress::Idle,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Progress::Reset,
        _ => Progress::Failed(e),
    }
}

/// The most one read takes: large enough for a whole receive queue.
const DISCARD_MAX: usize = 1 << 30;

/// Drop up to `len` queued bytes, returning how many that was; `flags` is 0
/// or `MSG_DONTWAIT`.
fn discard(stream: &TcpStream, flags: libc::c_int, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket Linux never writes to the
    // buffer, so a null pointer is valid (tcp(7)).
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Bytes queued on a socket (SIOCINQ); 0 if it cannot be asked.
pub fn queued(sock: libc::c_int) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int.
    if unsafe { libc::ioctl(sock, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n
}

/// Whether the next byte to read is the urgent one (SIOCATMARK).
pub fn at_mark(sock: libc::c_int) -> bool {
    const SIOCATMARK: libc::c_ulong = 0x8905;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int.
    unsafe { libc::ioctl(sock, SIOCATMARK, &mut n) == 0 && n != 0 }
}
