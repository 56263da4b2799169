//! New clients: accepting with back-off, the admission rules, the PROXY
//! header, the greeting; and how many connections the file limit allows.
//! A client refused here gets its `ERROR` line but no number.

use std::cmp::Reverse;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{ACCEPT_BACKOFF, LISTENER_BASE, Server};
use crate::admission::Refusal;
use crate::connection::{Connection, Header, HeaderProgress, Outcome, Saving};
use crate::output;
use crate::sources::Source;

impl Server<'_> {
    pub(super) fn accept(&mut self, now: Instant) {
        if self.stop_at.is_some() {
            return;
        }
        if let Some(until) = self.accept_backoff {
            if now < until {
                return;
            }
            self.accept_backoff = None;
        }
        // One accept per listener per round, so no listener starves another.
        while self.listeners.iter().any(|l| l.pending) {
            for i in 0..self.listeners.len() {
                if self.active >= self.settings.max_connections.min(self.fd_room) {
                    return;
                }
                if !self.listeners[i].pending {
                    continue;
                }
                match self.listeners[i].socket.accept() {
                    Ok((stream, peer)) => self.open(stream, peer),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.listeners[i].pending = false
                    }
                    Err(e) if is_per_connection(&e) => self.report_accept_error(&e, now, false),
                    Err(e) => {
                        self.accept_backoff = Some(now + ACCEPT_BACKOFF);
                        self.report_accept_error(&e, now, true);
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn report_accept_error(&mut self, e: &io::Error, now: Instant, backing_off: bool) {
        let Some(held) = self.accept_reports.due(now) else {
            return;
        };
        let hint = match e.raw_os_error() {
            Some(libc::EMFILE) => {
                " (out of file descriptors: raise LimitNOFILE= or lower max_connections)"
            }
            Some(libc::ENFILE) => " (the system is out of file descriptors)",
            _ => "",
        };
        let mut msg = format!("accept failed: {e}{hint}");
        if held > 0 {
            msg.push_str(&format!("; {held} more failures since the last report"));
        }
        if backing_off {
            msg.push_str(&format!(
                "; retrying every {} ms",
                ACCEPT_BACKOFF.as_millis()
            ));
            self.log.err(&msg);
        } else {
            self.log.warning(&msg);
        }
    }

    /// End a client before its greeting: a reset, an `ERROR` line, no
    /// connection number and no file.
    pub(super) fn refuse(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        refusal: Refusal,
        now: Instant,
    ) {
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        let line = output::line(
            self.settings.output,
            None,
            peer,
            0,
            Some(refusal.reason),
            0.0,
            None,
        );
        if let Err(e) = output::write_line(&line, self.signals.stopping()) {
            self.log.err(&format!(
                "stdout is unavailable ({e}); a refused client's line was: {}",
                line.trim_end()
            ));
        }
        drop(stream);
        self.log.log(refusal.level, &refusal.message);
        self.schedule_status(now);
    }

    /// A client was accepted: admit it and greet it, or, with
    /// `proxy_protocol`, wait for its header first.
    pub(super) fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
        // The idle clock starts at this accept, not when the round began
        // (stdout writes earlier in the round may have blocked).
        let now = Instant::now();
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let admitted = if self.settings.proxy_protocol {
            None
        } else {
            match self.admit(peer, now) {
                Ok(admitted) => Some(admitted),
                Err(refusal) => return self.refuse(stream, peer, refusal, now),
            }
        };
        // Urgent bytes are ordinary bytes: counted and saved in order.
        let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.ids += 1;
        let mut conn = Connection::new(stream, self.ids, peer, now, self.settings.idle_timeout);
        self.active += 1;
        let registered =
            self.poll
                .registry()
                .register(conn.stream(), Token(slot), Interest::READABLE);
        self.timers.push(Reverse((conn.deadline, slot, conn.id)));
        if admitted.is_none() {
            conn.header = Some(Header::Waiting);
        }
        self.conns[slot] = Some(conn);
        if let Err(e) = registered {
            return self.finish(slot, Outcome::Failed(e));
        }
        if let Some((source, number)) = admitted {
            self.start(slot, source, number);
        }
    }

    /// The admission rules for a client (the peer, or the address its
    /// PROXY header carries): its source and connection number.
    pub(super) fn admit(
        &mut self,
        client: SocketAddr,
        now: Instant,
    ) -> Result<(Source, u64), Refusal> {
        let low_space = self.disk.as_ref().and_then(|d| d.dir().low_space());
        let source = self
            .admission
            .admit(client, &self.settings, low_space, now)?;
        let Some(number) = self.accepted.checked_add(1) else {
            self.admission.release(source, now);
            return Err(self.admission.no_numbers(client));
        };
        self.accepted = number;
        Ok((source, number))
    }

    /// An admitted connection gets its number, its way to the disk when
    /// saving, and the greeting.
    pub(super) fn start(&mut self, slot: usize, source: Source, number: u64) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let part = self
            .disk
            .as_ref()
            .map(|d| d.dir().part(conn.stream().as_raw_fd()));
        conn.number = number;
        conn.source = Some(source);
        let started = match part {
            Some(Ok(part)) => {
                conn.save = Some(Saving::new(part));
                Ok(())
            }
            Some(Err(e)) => Err(Outcome::SaveFailed(e)),
            None => Ok(()),
        };
        let started = started.and_then(|()| {
            conn.greet().map_err(|e| match e.kind() {
                // The client reset (or closed) before its greeting.
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
                _ => Outcome::GreetingFailed(e),
            })
        });
        if let Err(outcome) = started {
            self.finish(slot, outcome);
        }
    }

    /// Read on in a PROXY header; once it is complete, the client it names
    /// is admitted (or refused) like any other.
    pub(super) fn header(&mut self, slot: usize, peer_closed: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let peer = conn.peer;
        match conn.read_header() {
            // A peek sees the partial header again and again, never the
            // FIN behind it: the event's flag is what tells.
            HeaderProgress::Wait if peer_closed => {
                let refusal = self
                    .admission
                    .bad_proxy(peer, "the client closed before a complete header");
                self.end_refused(slot, refusal);
            }
            HeaderProgress::Wait => {}
            HeaderProgress::Bad(why) => {
                let refusal = self.admission.bad_proxy(peer, &why);
                self.end_refused(slot, refusal);
            }
            HeaderProgress::Done(client) => match self.admit(client, Instant::now()) {
                Ok((source, number)) => {
                    self.start(slot, source, number);
                    // Payload that came with the header raises no new event.
                    self.busy.push(slot);
                }
                Err(refusal) => self.end_refused(slot, refusal),
            },
        }
    }

    /// A connection refused after its accept (with `proxy_protocol`): the
    /// same ending as [`Server::refuse`], for a connection in a slot.
    pub(super) fn end_refused(&mut self, slot: usize, refusal: Refusal) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.active -= 1;
        let peer = conn.peer;
        self.refuse(conn.into_stream(), peer, refusal, Instant::now());
    }

    pub(super) fn warn_fd_room(&self, max_connections: usize) {
        if max_connections > self.fd_room {
            self.log.warning(&format!(
                "max_connections = {max_connections} does not fit the open file limit (RLIMIT_NOFILE, LimitNOFILE= under systemd): serving at most {} connections at once; raise the limit or lower max_connections",
                self.fd_room
            ));
        }
    }
}

/// Raise the soft open-file limit to the hard one, and return how many
/// connections fit: each needs its socket, and when saving a duplicate of
/// it for the disk threads, a pipe and its file (four more); the reserve is for stdio, epoll, the signal pipe,
/// the notify and log sockets, the save directory and a config file read
/// at a reload.
pub(super) fn fd_room(listeners: usize, saving: bool) -> usize {
    const RESERVE: u64 = 16;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return usize::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    let per = if saving { 5 } else { 1 };
    let room = lim.rlim_cur.saturating_sub(RESERVE + listeners as u64) / per;
    usize::try_from(room).unwrap_or(usize::MAX).max(1)
}

pub(super) fn listener_token(i: usize) -> Token {
    Token(LISTENER_BASE + i)
}

/// Accept errors that concern one connection only (it was aborted or
/// refused on the way in): the next accept may well succeed at once.
pub(super) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}
