//! One transfer from connect to the server's close: greeting, sending,
//! half-close, the wait for the close, each wait bounded and watching the
//! signal pipe.

use super::*;

/// One connected transfer: the socket and everything the waits need.
pub(super) struct Run<'a> {
    pub(super) sock: Socket,
    pub(super) peer: &'a Peer,
    pub(super) input: &'a Input,
    pub(super) signals: &'a Signals,
    /// Bytes of FILE the socket accepted so far.
    pub(super) sent: u64,
    pub(super) progress: Progress,
}

impl Run<'_> {
    /// Greeting, FILE, half-close, the server's close.
    pub(super) fn transfer(&mut self, show: bool) -> Result<Report, Error> {
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
    pub(super) fn wait(
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

    pub(super) fn interrupted(&self, sig: c_int, doing: &str) -> Error {
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
    pub(super) fn peer_gone(&self, doing: &str) -> Error {
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
    pub(super) fn check_open(&self, doing: &str) -> Result<(), Error> {
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
    pub(super) fn await_greeting(&self) -> Result<(), Error> {
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
    pub(super) fn await_room(&self, since: Instant) -> Result<(), Error> {
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
    pub(super) fn send_file(&mut self) -> Result<(), Error> {
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
    pub(super) fn stream(&mut self) -> Result<(), Error> {
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
    pub(super) fn await_close(&mut self) -> Result<u64, Error> {
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
