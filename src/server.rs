//! The event loop: listeners, connections, signals and timers on one thread.
//!
//! One `epoll` loop (mio) instead of a thread per connection: the packaged
//! unit caps tasks, a stop must finish within 250 ms whatever the clients do,
//! and 1000 idle connections should cost a few hundred bytes each, not a
//! stack each. Idle timeouts live in a min-heap of deadlines that is only
//! touched at accept and when an entry falls due; a byte received just moves
//! the connection's deadline, so the hot path stays a `recv` and a store.
//!
//! A loop pays an `epoll_wait` per wake-up that a receiver serving one
//! client does not: a quarter more CPU per byte. So a client streaming
//! alone gets stretches of blocking reads (`STRETCH`) between zero-timeout
//! polls, and costs what it would cost a one-client receiver. Cutting
//! wake-ups with `SO_RCVLOWAT` instead was measured and rejected: the
//! receive window shrinks to the mark, or the TCP work the receiver no
//! longer does per wake-up lands on the sender, and throughput falls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::admission::{Admission, Refusal};
use crate::cli::Args;
use crate::config::{Settings, fmt_duration};
use crate::connection::{Connection, Header, HeaderProgress, Outcome, Progress, Saving};
use crate::disk::{Disk, Done, For, Job};
use crate::log::Log;
use crate::report::RateLimited;
use crate::save::{CommitError, SaveDir};
use crate::signals::{Request, Signals};
use crate::sources::Source;
use crate::{notify, output};

const SIGNAL: Token = Token(usize::MAX);
/// The disk threads' results are waiting.
const DISK: Token = Token(usize::MAX - 1);
/// After the stop's grace, how long the loop still waits for the disk
/// threads: commits that are about to finish, ERROR markers. A stop with
/// the default grace must be over within 250 ms.
const DISK_STOP_WAIT: Duration = Duration::from_millis(120);

/// Longest a rate deadline is computed for (a huge transfer at a tiny
/// `min_rate` must not overflow an `Instant`).
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// Listener `i` has token `LISTENER_BASE + i`; connections use their slot
/// index, which stays far below.
const LISTENER_BASE: usize = usize::MAX / 2;
/// Reads per readiness event before other connections get their turn.
const READ_BUDGET: u32 = 8;
/// Pause before retrying accept after EMFILE/ENFILE/ENOBUFS/ENOMEM: long
/// enough not to spin, short enough to resume quickly when fds free up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one report of failing accepts per this interval.
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(5);
/// STATUS= is re-sent at most this often (SPEC: within 1 s of a change).
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// A connection that had the loop to itself and is streaming is read with
/// blocking reads for this long before the loop looks at everything else:
/// the most a new client, a timer or another connection waits for it.
const STRETCH: Duration = Duration::from_millis(1);
/// A round's read at least this large says the client is streaming.
const STREAMING: u64 = 64 * 1024;

/// A listening socket and whether it may have connections waiting. mio is
/// edge-triggered, so a listener left with a non-empty backlog (at
/// `max_connections`, or in back-off) must be remembered, not re-polled.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    pending: bool,
}

pub struct Server<'a> {
    poll: Poll,
    listeners: Vec<Listener>,
    /// Slots indexed by mio token; `free` holds the empty ones for reuse.
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    active: usize,
    /// (deadline, slot, connection id), earliest first; see
    /// `Connection::queued` for how stale entries are recognised.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections whose read budget ran out with data possibly left.
    busy: Vec<usize>,
    /// The connection (slot, id) to read with blocking reads before the
    /// next poll: the only one with events in the last round, and streaming.
    streaming: Option<(usize, u64)>,
    settings: Settings,
    /// The command line, so a reload applies PORT over the file again.
    args: Args,
    log: &'a Log,
    signals: Signals,
    /// `--save-dir` mode: the threads that write each connection's bytes.
    disk: Option<Disk>,
    /// The id of the last accepted socket.
    ids: u64,
    /// The number of the last admitted connection; in saving mode it starts
    /// at the largest `N.file` already saved.
    accepted: u64,
    served: u64,
    bytes: u64,
    accept_backoff: Option<Instant>,
    accept_reports: RateLimited,
    /// Per-source counts and the refusal rules.
    admission: Admission,
    /// How many connections the file descriptor limit leaves room for;
    /// `max_connections` beyond it would only fail later with EMFILE.
    fd_room: usize,
    notify: bool,
    status_due: Option<Instant>,
    last_status: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
    /// Set once a stop signal arrived: when the grace ends.
    stop_at: Option<Instant>,
    /// For the uptime in the stats line.
    started: Instant,
    /// Set once the grace ended: when the wait for the disk ends too.
    exit_at: Option<Instant>,
}

impl<'a> Server<'a> {
    /// Take over bound listeners; nothing is served until [`Server::run`].
    pub fn new(
        listeners: Vec<(std::net::TcpListener, SocketAddr)>,
        settings: Settings,
        args: Args,
        log: &'a Log,
        mut signals: Signals,
        save: Option<(Arc<SaveDir>, u64)>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let (disk, accepted) = match save {
            Some((dir, largest)) => {
                let waker = mio::Waker::new(poll.registry(), DISK)?;
                (Some(Disk::start(dir, waker)?), largest)
            }
            None => (None, 0),
        };
        poll.registry()
            .register(signals.source(), SIGNAL, Interest::READABLE)?;
        let mut ours = Vec::with_capacity(listeners.len());
        for (i, (std_listener, addr)) in listeners.into_iter().enumerate() {
            let mut socket = TcpListener::from_std(std_listener);
            poll.registry()
                .register(&mut socket, listener_token(i), Interest::READABLE)?;
            ours.push(Listener {
                socket,
                addr,
                pending: true,
            });
        }
        let now = Instant::now();
        Ok(Server {
            poll,
            listeners: ours,
            conns: Vec::new(),
            free: Vec::new(),
            active: 0,
            timers: BinaryHeap::new(),
            busy: Vec::new(),
            streaming: None,
            settings,
            args,
            log,
            signals,
            disk,
            ids: 0,
            accepted,
            served: 0,
            bytes: 0,
            accept_backoff: None,
            accept_reports: RateLimited::new(ACCEPT_REPORT_EVERY),
            admission: Admission::default(),
            fd_room: usize::MAX,
            notify: notify::enabled(),
            status_due: None,
            last_status: None,
            watchdog: notify::watchdog_period().map(|p| (p, now)),
            stop_at: None,
            started: now,
            exit_at: None,
        })
    }

    /// Serve until a stop signal; every accepted connection gets its line.
    pub fn run(mut self) -> io::Result<()> {
        let addrs: Vec<String> = self.listeners.iter().map(|l| l.addr.to_string()).collect();
        let saving = self.disk.as_ref().map_or(String::new(), |d| {
            format!(
                ", saving to {} from {}.file on",
                d.dir().path().display(),
                self.accepted + 1
            )
        });
        self.log.notice(&format!(
            "started {} {}: listening on {}, pid {}, config {}{saving}",
            crate::log::IDENT,
            env!("CARGO_PKG_VERSION"),
            addrs.join(", "),
            std::process::id(),
            self.settings
                .source
                .as_ref()
                .map_or("defaults".to_string(), |p| p.display().to_string()),
        ));
        if let Some(problem) = notify::problem() {
            self.log.warning(&format!(
                "{problem}; running without service manager notifications"
            ));
        }
        if output::is_dev_null() {
            self.log.warning("stdout is /dev/null: the count lines are discarded (give the server a stdout that keeps them, or use --output json with a file)");
        }
        self.fd_room = fd_room(self.listeners.len(), self.disk.is_some());
        self.warn_fd_room(self.settings.max_connections);
        notify::ready(&self.status_line());
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let mut timeout = self.next_wakeup(now);
            // Still streaming after its stretch: read on if nothing else
            // turns up in the poll that follows it.
            let mut stretched = None;
            if let Some((slot, id)) = self.streaming.take()
                && timeout != Some(Duration::ZERO)
            {
                let until = now + timeout.map_or(STRETCH, |t| t.min(STRETCH));
                stretched = self.stretch(slot, id, until).then_some(slot);
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let mut signalled = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL => signalled = true,
                    DISK => {}
                    Token(t) if t >= LISTENER_BASE => {
                        if let Some(l) = self.listeners.get_mut(t - LISTENER_BASE) {
                            l.pending = true;
                        }
                    }
                    Token(_) => {}
                }
            }
            if signalled {
                for request in self.signals.pending() {
                    match request {
                        Request::Stop(name) => self.begin_stop(name, now),
                        Request::Reload => self.reload(),
                        Request::Stats => self.stats(now),
                    }
                }
            }
            // New clients first: each waits for its greeting, while the
            // lines of the connections that ended can wait a moment.
            self.accept(now);
            self.disk_results();
            let mut candidate = None;
            for event in events.iter() {
                let Token(slot) = event.token();
                if slot >= LISTENER_BASE {
                    continue;
                }
                let closed = event.is_read_closed() || event.is_error();
                let moved = self.service(slot, closed);
                if stretched == Some(slot) || moved >= STREAMING {
                    candidate = Some(slot);
                }
            }
            // Only a client alone with the server gets a stretch.
            let alone = match events.iter().count() {
                0 => stretched,
                1 => candidate,
                _ => None,
            };
            self.streaming = alone
                .filter(|_| self.disk.is_none())
                .and_then(|slot| Some((slot, self.conns.get(slot)?.as_ref()?.id)));
            // No fresh event for these: read until the queue is known empty.
            for slot in std::mem::take(&mut self.busy) {
                self.service(slot, true);
            }
            // Again, for clients waiting on a slot freed in this round.
            self.accept(now);
            self.expire(now);
            self.housekeeping(now);
            if let Some(stop_at) = self.stop_at
                && self.exit_at.is_none()
                && (self.active == 0 || now >= stop_at)
            {
                self.end_all(now);
            }
            if let Some(exit_at) = self.exit_at {
                let outstanding = self.disk.as_ref().map_or(0, |d| d.outstanding);
                if (self.active == 0 && outstanding == 0) || Instant::now() >= exit_at {
                    self.exit();
                    break;
                }
            }
        }
        self.log.notice(&format!(
            "stopped: connections served {}, bytes received {}",
            self.served, self.bytes
        ));
        Ok(())
    }

    /// How long poll may sleep: until the nearest deadline of any kind.
    fn next_wakeup(&self, now: Instant) -> Option<Duration> {
        if !self.busy.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.accept_backoff,
            self.status_due,
            self.watchdog.map(|(_, due)| due),
            self.stop_at,
            self.exit_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Read what an event announced; returns how many bytes that was.
    fn service(&mut self, slot: usize, peer_closed: bool) -> u64 {
        let idle = self.settings.idle_timeout;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return 0;
        };
        if conn.header.is_some() {
            self.header(slot, peer_closed);
            return 0;
        }
        let before = conn.bytes;
        let progress = conn.drain(READ_BUDGET, peer_closed, self.settings.max_file_size);
        let moved = conn.bytes - before;
        if moved != 0 {
            // A fresh clock, not the round's: a stdout write that blocked
            // earlier in this round must not eat into the new idle period.
            conn.deadline = Instant::now() + idle;
        }
        self.settle(slot, progress);
        moved
    }

    /// Blocking reads on one streaming connection until `until`; true if it
    /// is still streaming.
    fn stretch(&mut self, slot: usize, id: u64, until: Instant) -> bool {
        let idle = self.settings.idle_timeout;
        // The id tells whether the slot still holds that connection.
        let Some(conn) = self
            .conns
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
        else {
            return false;
        };
        let progress = conn.stream_until(until, idle, self.settings.max_file_size);
        let streaming = matches!(progress, Progress::Busy);
        if streaming {
            self.requeue(slot);
        } else {
            self.settle(slot, progress);
        }
        streaming
    }

    /// Act on what reading a connection found.
    fn settle(&mut self, slot: usize, progress: Progress) {
        self.requeue(slot);
        let saving = self.is_saving(slot);
        match progress {
            Progress::Idle => {}
            Progress::Busy => self.busy.push(slot),
            Progress::Blocked => {
                if let Some(save) = self.saving_mut(slot) {
                    save.blocked = true;
                }
            }
            // A saving connection's line waits for its file.
            Progress::Eof if saving => {}
            Progress::Eof => self.finish(slot, Outcome::Counted),
            Progress::Reset => self.finish(slot, Outcome::Reset),
            Progress::Failed(e) => self.finish(slot, Outcome::Failed(e)),
            Progress::TooLarge => {
                let max = self.settings.max_file_size;
                self.finish(slot, Outcome::TooLarge(max))
            }
        }
        if saving {
            self.kick(slot);
        }
    }

    fn is_saving(&self, slot: usize) -> bool {
        self.conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.save.is_some())
    }

    fn saving_mut(&mut self, slot: usize) -> Option<&mut Saving> {
        self.conns.get_mut(slot)?.as_mut()?.save.as_mut()
    }

    /// Hand a saving connection's next step to the disk threads, if its
    /// part is home and there is one.
    fn kick(&mut self, slot: usize) {
        let fsync = self.settings.fsync;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let to = For {
            slot,
            id: conn.id,
            number: conn.number,
        };
        if let (Some(save), Some(disk)) = (conn.save.as_mut(), self.disk.as_mut())
            && let Some(job) = save.next_job(fsync)
        {
            disk.submit(to, job);
        }
    }

    /// Act on what the disk threads finished.
    fn disk_results(&mut self) {
        while let Some((to, done)) = self.disk.as_mut().and_then(Disk::result) {
            let present = self
                .conns
                .get(to.slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == to.id);
            match done {
                Done::Drained { part, .. } if !present => {
                    // The connection ended (timeout, reset, stop) while its
                    // bytes were on the way: now its marker can be written.
                    if let Some(disk) = self.disk.as_mut() {
                        disk.submit(to, Job::Fail { part });
                    }
                }
                Done::Drained { part, moved, error } => {
                    let idle = self.settings.idle_timeout;
                    let Some(conn) = self.conns.get_mut(to.slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    let Some(save) = conn.save.as_mut() else {
                        continue;
                    };
                    save.drained(part, moved);
                    if let Some(e) = error {
                        self.finish(to.slot, Outcome::SaveFailed(e));
                        continue;
                    }
                    if std::mem::take(&mut save.blocked) {
                        // The client was waiting for the disk, not idle.
                        conn.deadline = Instant::now() + idle;
                        self.busy.push(to.slot);
                    }
                    self.kick(to.slot);
                }
                Done::Committed(result) if present => {
                    if let Some(save) = self.saving_mut(to.slot) {
                        save.committing = false;
                    }
                    let outcome = match result {
                        Ok(_) => Outcome::Counted,
                        Err(CommitError::NameTaken(path)) => Outcome::NameTaken(path),
                        Err(CommitError::Abandoned) => Outcome::Stopped,
                        Err(CommitError::Io(e)) => Outcome::SaveFailed(e),
                    };
                    self.finish(to.slot, outcome);
                }
                Done::Committed(_) => {}
                Done::Marked(Err(e)) => self.log.err(&format!(
                    "connection {}: cannot write its ERROR file: {e}",
                    to.number
                )),
                Done::Marked(Ok(())) => {}
            }
        }
    }

    /// Only a deadline that moved earlier (a shorter timeout after a
    /// reload) needs a new timer entry; a later one is picked up when the
    /// old entry falls due.
    fn requeue(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut)
            && conn.deadline < conn.queued
        {
            conn.queued = conn.deadline;
            self.timers.push(Reverse((conn.deadline, slot, conn.id)));
        }
    }

    fn accept(&mut self, now: Instant) {
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

    fn report_accept_error(&mut self, e: &io::Error, now: Instant, backing_off: bool) {
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
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, refusal: Refusal, now: Instant) {
        self.served += 1;
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
    fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
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
    fn admit(&mut self, client: SocketAddr, now: Instant) -> Result<(Source, u64), Refusal> {
        let low_space = self.disk.as_ref().and_then(|d| d.dir().low_space());
        let source = self
            .admission
            .admit(client, &self.settings, low_space, now)?;
        let Some(number) = self.accepted.checked_add(1) else {
            self.admission.release(source);
            return Err(self.admission.no_numbers(client));
        };
        self.accepted = number;
        Ok((source, number))
    }

    /// An admitted connection gets its number, its way to the disk when
    /// saving, and the greeting.
    fn start(&mut self, slot: usize, source: Source, number: u64) {
        let pipe = self.disk.as_ref().map(|d| d.dir().pipe());
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.number = number;
        conn.source = Some(source);
        let started = match pipe {
            Some(Ok((pipe, part))) => {
                conn.save = Some(Saving::new(pipe, part));
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
    fn header(&mut self, slot: usize, peer_closed: bool) {
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
    fn end_refused(&mut self, slot: usize, refusal: Refusal) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.active -= 1;
        let peer = conn.peer;
        self.refuse(conn.into_stream(), peer, refusal, Instant::now());
    }

    /// Pop due timers; a connection whose deadline moved gets a new entry.
    ///
    /// Two rules end a connection: no byte for `idle_timeout` (its
    /// `deadline`, moved by every read), and with `min_rate`, Apache's
    /// `MinRate`: open longer than `idle_timeout + bytes / min_rate`. Both
    /// deadlines only ever move later, so an entry may fall due early and
    /// is then pushed again: the rate costs nothing per byte, only a
    /// division when an entry falls due.
    fn expire(&mut self, now: Instant) {
        let idle = self.settings.idle_timeout;
        let min_rate = self.settings.min_rate;
        while let Some(&Reverse((when, slot, id))) = self.timers.peek() {
            if when > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.id != id || conn.queued != when {
                continue;
            }
            if conn.header.is_some() {
                if conn.deadline <= now {
                    let refusal = self
                        .admission
                        .bad_proxy(conn.peer, "not complete within idle_timeout");
                    self.end_refused(slot, refusal);
                } else {
                    conn.queued = conn.deadline;
                    self.timers.push(Reverse((conn.deadline, slot, id)));
                }
                continue;
            }
            // A client that closed in order is done; the wait is the disk's.
            if conn.save.as_ref().is_some_and(|s| s.eof) {
                conn.deadline = now + idle;
            }
            let rate_deadline = (min_rate > 0).then(|| {
                let bought = Duration::from_secs_f64(conn.bytes as f64 / min_rate as f64);
                conn.accepted + idle + bought.min(YEAR)
            });
            if conn.deadline <= now {
                self.finish(slot, Outcome::TimedOut(idle));
            } else if rate_deadline.is_some_and(|t| t <= now) {
                self.finish(slot, Outcome::TooSlow(min_rate));
            } else {
                let next = rate_deadline.map_or(conn.deadline, |t| t.min(conn.deadline));
                conn.queued = next;
                self.timers.push(Reverse((next, slot, id)));
            }
        }
        self.compact_timers();
    }

    /// A finished connection's entry stays in the heap until it falls due,
    /// which with a long `idle_timeout` would make memory grow with the
    /// connections served, not the ones open. Rebuild the heap from the
    /// live entries once stale ones outnumber them: O(1) amortised.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 64 + 2 * self.active {
            return;
        }
        let conns = &self.conns;
        self.timers.retain(|Reverse((when, slot, id))| {
            conns
                .get(*slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == *id && c.queued == *when)
        });
        self.timers.shrink_to(64 + 2 * self.active);
    }

    /// Write the connection's line, log it, close the socket. A saving
    /// connection that did not end counted leaves its part to a disk
    /// thread, which removes it and writes the `ERROR` marker.
    fn finish(&mut self, slot: usize, outcome: Outcome) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // Fresh: the logged duration and the status schedule must not lag
        // behind stdout writes that blocked earlier in this round.
        let now = Instant::now();
        if let (Some(part), Some(disk)) = (
            conn.save.as_mut().and_then(Saving::take_part),
            self.disk.as_mut(),
        ) {
            disk.submit(
                For {
                    slot,
                    id: conn.id,
                    number: conn.number,
                },
                Job::Fail { part },
            );
        }
        if let Some(source) = conn.source.take() {
            self.admission.release(source);
        }
        self.free.push(slot);
        self.active -= 1;
        self.served += 1;
        self.bytes += conn.bytes;
        let file =
            (outcome.is_counted() && conn.save.is_some()).then(|| format!("{}.file", conn.number));
        let line = output::line(
            self.settings.output,
            (conn.number > 0).then_some(conn.number),
            conn.peer,
            conn.bytes,
            outcome.reason(),
            now.duration_since(conn.accepted).as_secs_f64(),
            file.as_deref(),
        );
        let written = output::write_line(&line, self.signals.stopping());
        let (level, what) = outcome.describe();
        if self.log.enabled(level) {
            self.log.log(level, &conn.summary(&what, now));
        }
        if let Err(e) = written {
            self.log.err(&format!(
                "connection {}: stdout is unavailable ({e}); its line was: {}",
                conn.number,
                line.trim_end()
            ));
        }
        if !outcome.is_counted() {
            conn.abort();
        }
        self.schedule_status(now);
    }

    fn schedule_status(&mut self, now: Instant) {
        if self.notify && self.status_due.is_none() {
            let earliest = self.last_status.map_or(now, |t| t + STATUS_EVERY);
            self.status_due = Some(earliest.max(now));
        }
    }

    fn begin_stop(&mut self, signal: &str, now: Instant) {
        if self.stop_at.is_some() {
            self.log
                .notice(&format!("{signal} again: ending the shutdown grace now"));
            self.stop_at = Some(now);
            self.exit_at = self.exit_at.map(|t| t.min(now + DISK_STOP_WAIT));
            return;
        }
        // Closing the listeners stops accepting at once; under socket
        // activation systemd keeps its copies and queues new clients. Then
        // STOPPING=1: whoever sees it finds the port already closed.
        self.listeners.clear();
        notify::stopping();
        self.stop_at = Some(now + self.settings.shutdown_grace);
        self.log.notice(&format!(
            "stopping on {signal}: connections open {}, shutdown grace {}",
            self.active,
            fmt_duration(self.settings.shutdown_grace)
        ));
    }

    /// The grace is over: a counting connection whose FIN is already queued
    /// still gets its count, every other one ends with ERROR, except saving
    /// connections whose commit is under way: they get until `exit_at`.
    fn end_all(&mut self, now: Instant) {
        self.exit_at = Some(now + DISK_STOP_WAIT);
        if let Some(disk) = &self.disk {
            disk.abandon();
        }
        let max = self.settings.max_file_size;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let outcome = match &conn.save {
                Some(save) if save.committing => continue,
                Some(_) => Outcome::Stopped,
                None if conn.header.is_some() => Outcome::Stopped,
                None => match conn.drain(READ_BUDGET, true, max) {
                    Progress::Eof => Outcome::Counted,
                    _ => Outcome::Stopped,
                },
            };
            self.finish(slot, outcome);
        }
    }

    /// The wait for the disk is over too: whatever is left ends with ERROR,
    /// and temporaries still open go to a process that outlives this one.
    fn exit(&mut self) {
        self.disk_results();
        for slot in 0..self.conns.len() {
            self.finish(slot, Outcome::Stopped);
        }
        if let Some(disk) = &self.disk {
            disk.dir().begin_exit();
            disk.dir().exit_handover();
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.args.config.clone() else {
            self.log
                .notice("SIGHUP: no configuration file was given (--config), nothing to reload");
            return;
        };
        notify::reloading();
        match Settings::load(&self.args) {
            Err(e) => self
                .log
                .err(&format!("reload failed, configuration unchanged: {e}")),
            Ok(new) => {
                let (live, restart) = self.settings.diff(&new);
                for change in &restart {
                    self.log.warning(&format!(
                        "reload: {change} needs a restart to take effect (systemctl restart accio-server)"
                    ));
                }
                let more_room = new.max_connections > self.settings.max_connections;
                self.warn_fd_room(new.max_connections);
                let s = &mut self.settings;
                s.idle_timeout = new.idle_timeout;
                s.max_connections = new.max_connections;
                s.shutdown_grace = new.shutdown_grace;
                s.fsync = new.fsync;
                s.max_file_size = new.max_file_size;
                s.min_free_space = new.min_free_space;
                s.max_per_source = new.max_per_source;
                s.source_prefix_v6 = new.source_prefix_v6;
                s.min_rate = new.min_rate;
                if let Some(disk) = &self.disk {
                    // The space monitor applies it within half a second.
                    disk.dir().set_floor(new.min_free_space);
                }
                s.log_target = new.log_target;
                s.log_level = new.log_level;
                self.log.reconfigure(new.log_target, new.log_level);
                if more_room {
                    for l in &mut self.listeners {
                        l.pending = true;
                    }
                }
                let applied = if live.is_empty() {
                    "no live changes".to_string()
                } else {
                    live.join(", ")
                };
                self.log.notice(&format!(
                    "reloaded configuration from {}: {applied}",
                    path.display()
                ));
            }
        }
        notify::ready(&self.status_line());
    }

    /// The SIGUSR1 report: one line at notice.
    fn stats(&self, now: Instant) {
        let r = self.admission.refused;
        self.log.notice(&format!(
            "stats: connections served {}, open {}, bytes received {} ({}), refused: {} per source, {} low disk space, {} bad PROXY header, {} numbers used up; uptime {}",
            self.served,
            self.active,
            self.bytes,
            crate::units::bytes(self.bytes),
            r.per_source,
            r.low_space,
            r.proxy,
            r.numbers,
            fmt_uptime(now.duration_since(self.started)),
        ));
    }

    fn warn_fd_room(&self, max_connections: usize) {
        if max_connections > self.fd_room {
            self.log.warning(&format!(
                "max_connections = {max_connections} does not fit the open file limit (RLIMIT_NOFILE, LimitNOFILE= under systemd): serving at most {} connections at once; raise the limit or lower max_connections",
                self.fd_room
            ));
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if self.status_due.is_some_and(|due| now >= due) {
            self.status_due = None;
            self.last_status = Some(now);
            notify::status(&self.status_line());
        }
        if let Some((period, due)) = self.watchdog
            && now >= due
        {
            notify::watchdog();
            self.watchdog = Some((period, now + period));
        }
    }

    fn status_line(&self) -> String {
        format!(
            "{} connections served, {} active, {} bytes received",
            self.served, self.active, self.bytes
        )
    }
}

/// `3d 4h 5m 6s`, leading zero units left out.
fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m {secs}s"),
        _ => format!("{days}d {hours}h {mins}m {secs}s"),
    }
}

/// Raise the soft open-file limit to the hard one, and return how many
/// connections fit: each needs its socket, and when saving a pipe and its
/// file (three more); the reserve is for stdio, epoll, the signal pipe,
/// the notify and log sockets, the save directory and a config file read
/// at a reload.
fn fd_room(listeners: usize, saving: bool) -> usize {
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
    let per = if saving { 4 } else { 1 };
    let room = lim.rlim_cur.saturating_sub(RESERVE + listeners as u64) / per;
    usize::try_from(room).unwrap_or(usize::MAX).max(1)
}

fn listener_token(i: usize) -> Token {
    Token(LISTENER_BASE + i)
}

/// Accept errors that concern one connection only (it was aborted or
/// refused on the way in): the next accept may well succeed at once.
fn is_per_connection(e: &io::Error) -> bool {
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
