//! The two ends of a transfer: the input (a regular file sent with
//! sendfile, or anything else through one fixed buffer, read only when
//! poll says so) and the server socket (non-blocking, with SO_LINGER 0 so
//! any end but the orderly one is a reset).

use super::*;

/// FILE, opened: a file of ours or the inherited stdin.
pub(super) struct Input {
    /// Keeps the descriptor open; `None` for stdin.
    pub(super) _file: Option<File>,
    pub(super) fd: RawFd,
    /// For messages: the path, or "standard input".
    pub(super) name: String,
    /// A regular file: sent with sendfile(2) from its current offset.
    pub(super) regular: bool,
    /// Bytes from the current offset to the end, for a regular file.
    pub(super) size: Option<u64>,
}
impl Input {
    pub(super) fn open(path: &Path) -> Result<Input, Error> {
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

    pub(super) fn read_error(&self, sent: u64, e: &io::Error) -> Error {
        Error::NoInput(format!(
            "reading {} failed after {sent} bytes were sent: {}; the connection was aborted \
             (the server reports ERROR), check FILE and send it again",
            self.name,
            describe(e)
        ))
    }
}

/// HOST and PORT, resolved.
pub(super) struct Peer {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) addrs: Vec<SocketAddr>,
    /// The address we connected to, for messages.
    pub(super) connected: Option<SocketAddr>,
}

impl Peer {
    pub(super) fn resolve(host: &str, port: u16) -> Result<Peer, Error> {
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
    pub(super) fn name(&self) -> String {
        let base = format!("{} port {}", self.host, self.port);
        match self.connected {
            Some(a) if a.ip().to_string() != self.host => format!("{base} ({})", a.ip()),
            _ => base,
        }
    }

    /// Connect to the first address that accepts, within one 10 s budget.
    /// Each socket gets SO_LINGER 0 before it connects (see the module
    /// documentation); a signal ends the attempt.
    pub(super) fn connect(&mut self, signals: &Signals) -> Result<Socket, Error> {
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
    pub(super) fn failed(&self, doing: &str, sent: u64, e: &io::Error) -> Error {
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

    pub(super) fn stalled(&self, sent: u64) -> Error {
        Error::Timeout(format!(
            "sending to {} stalled: no data accepted for {} s after {sent} bytes; the server or \
             the network is stuck, check them and send the file again",
            self.name(),
            TIMEOUT.as_secs()
        ))
    }
}

/// recv(2) without blocking (the socket is non-blocking); EINTR retried.
pub(super) fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) fn unacked(fd: RawFd) -> i64 {
    let mut n: c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    i64::from(n)
}

/// Errors of sendfile(2) and send(2) that are the connection's, not FILE's.
pub(super) fn is_socket_error(e: &io::Error) -> bool {
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
