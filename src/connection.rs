//! One client connection: the greeting, byte counting, and how it ended.
//!
//! The count needs the number of bytes, not the bytes. On Linux,
//! `recv(MSG_TRUNC)` on a TCP socket discards queued data inside the kernel
//! and returns its length, so the payload is never copied to user space and
//! no buffer exists per connection. Elsewhere a small stack buffer is used.

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
                _ => discard(&self.stream).map_err(SpliceError::Socket),
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
                Err(SpliceError::Socket(e)) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Progress::Idle,
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                            Progress::Reset
                        }
                        _ => Progress::Failed(e),
                    };
                }
            }
        }
        Progress::Busy
    }

    /// End the connection with a reset instead of an orderly FIN, so a
    /// client still sending learns at once that its data was not taken.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// Drop everything queued on the socket, returning how many bytes that was.
/// The most one read takes: large enough for a whole receive queue.
#[cfg(target_os = "linux")]
const DISCARD_MAX: usize = 1 << 30;
#[cfg(not(target_os = "linux"))]
const DISCARD_MAX: usize = 16 * 1024;

#[cfg(target_os = "linux")]
fn discard(stream: &TcpStream) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket Linux never writes to the
    // buffer, so a null pointer is valid (tcp(7)).
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::null_mut(),
            DISCARD_MAX,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn discard(mut stream: &TcpStream) -> io::Result<usize> {
    use std::io::Read;
    let mut buf = [0u8; DISCARD_MAX];
    stream.read(&mut buf)
}
