//! One client connection: the greeting, byte counting, and how it ended.
//!
//! The count needs the number of bytes, not the bytes. On Linux,
//! `recv(MSG_TRUNC)` on a TCP socket discards queued data inside the kernel
//! and returns its length, so the payload is never copied to user space and
//! no buffer exists per connection. Elsewhere a small stack buffer is used.
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

use crate::save::{Part, SaveDir, SpliceError};

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
    /// Still open when the server stopped.
    Stopped,
}

impl Outcome {
    pub fn is_counted(&self) -> bool {
        matches!(self, Outcome::Counted)
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
    /// Writing the saved file failed.
    WriteFailed(io::Error),
}

pub struct Connection {
    stream: TcpStream,
    /// 1, 2, 3... in accept order; names the connection in the logs.
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
    pub part: Option<Part>,
    /// The socket was made blocking for [`Connection::stream_until`]; every
    /// other read passes `MSG_DONTWAIT`.
    blocking: bool,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        number: u64,
        peer: SocketAddr,
        now: Instant,
        idle: Duration,
    ) -> Self {
        let deadline = now + idle;
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; log
        // them as the IPv4 address they are.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        Connection {
            stream,
            number,
            peer,
            bytes: 0,
            accepted: now,
            deadline,
            queued: deadline,
            part: None,
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

    /// Count what the kernel has queued, at most `budget` reads, so one
    /// fast client cannot starve the others.
    ///
    /// A read shorter than asked for emptied the queue, and with
    /// edge-triggered epoll anything arriving later (data, FIN, RST) raises
    /// a new event, so the EAGAIN read that would confirm it is skipped:
    /// one syscall less per wake-up. The exception is a FIN that was already
    /// queued behind the data: it raised its event before this read, so when
    /// the event said the peer closed (`peer_closed`), read on to EOF.
    pub fn drain(
        &mut self,
        budget: u32,
        peer_closed: bool,
        mut save: Option<&mut SaveDir>,
    ) -> Progress {
        for _ in 0..budget {
            let moved = match (save.as_deref_mut(), self.part.as_mut()) {
                (Some(dir), Some(part)) => dir.splice(self.stream.as_raw_fd(), part),
                _ => discard(&self.stream, libc::MSG_DONTWAIT).map_err(SpliceError::Socket),
            };
            match moved {
                Ok(0) => return Progress::Eof,
                Ok(n) => {
                    self.bytes += n as u64;
                    // Only a MSG_TRUNC read knows a short read emptied the
                    // queue; a splice may stop early at a full pipe.
                    if self.part.is_none() && n < DISCARD_MAX && !peer_closed {
                        return Progress::Idle;
                    }
                }
                Err(SpliceError::File(e)) => return Progress::WriteFailed(e),
                Err(SpliceError::Socket(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(SpliceError::Socket(e)) => return read_failed(e),
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
    pub fn stream_until(&mut self, until: Instant, idle: Duration) -> Progress {
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
            match discard(&self.stream, 0) {
                Ok(0) => break Progress::Eof,
                Ok(n) => {
                    self.bytes += n as u64;
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

    /// End the connection with a reset instead of an orderly FIN, so a
    /// client still sending learns at once that its data was not taken.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// How long a blocking read in [`Connection::stream_until`] waits for more
/// before the client counts as paused and the event loop takes over again.
const STREAM_PAUSE: Duration = Duration::from_millis(1);

/// A failed read, by what it means for the connection.
fn read_failed(e: io::Error) -> Progress {
    match e.kind() {
        io::ErrorKind::WouldBlock => Progress::Idle,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Progress::Reset,
        _ => Progress::Failed(e),
    }
}

/// The most one read takes: large enough for a whole receive queue.
#[cfg(target_os = "linux")]
const DISCARD_MAX: usize = 1 << 30;
#[cfg(not(target_os = "linux"))]
const DISCARD_MAX: usize = 16 * 1024;

/// Drop what is queued on the socket, returning how many bytes that was;
/// `flags` is 0 or `MSG_DONTWAIT`.
#[cfg(target_os = "linux")]
fn discard(stream: &TcpStream, flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket Linux never writes to the
    // buffer, so a null pointer is valid (tcp(7)).
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::null_mut(),
            DISCARD_MAX,
            libc::MSG_TRUNC | flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn discard(stream: &TcpStream, flags: libc::c_int) -> io::Result<usize> {
    let mut buf = [0u8; DISCARD_MAX];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
