//! The event loop: listeners, connections, signals and timers on one thread.
//!
//! (Over 500 lines because the loop and one connection's way through it
//! are meant to be read in one place; what is not the loop is in `accept`,
//! `saving` and `control`.)
//!
//! This file is the loop itself and one connection's way through it: a
//! readiness event is read ([`Server::service`]), what the read found is
//! acted on ([`Server::settle`]), timers end silent or slow connections
//! ([`Server::expire`]), and every connection ends in [`Server::finish`],
//! which writes its line. Around it: `accept` (listeners, admission, the
//! greeting, PROXY headers), `saving` (the way to the disk threads and
//! back) and `control` (stop, reload, stats), each an `impl Server` of its
//! own.
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

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::admission::Admission;
use crate::cli::Args;
use crate::config::Settings;
use crate::connection::{Connection, Outcome, Progress, Saving};
use crate::disk::{Disk, For, Job};
use crate::log::Log;
use crate::report::RateLimited;
use crate::save::SaveDir;
use crate::signals::{Request, Signals};
use crate::{notify, output};

mod accept;
mod control;
mod reload;
mod saving;

use accept::{fd_room, listener_token};
use reload::Reloads;

const SIGNAL: Token = Token(usize::MAX);
/// The disk threads' results are waiting.
const DISK: Token = Token(usize::MAX - 1);
/// The wake-up of a finished configuration read.
const RELOAD: Token = Token(usize::MAX - 2);
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
/// STATUS= is re-sent at most this often (the promise is: within 1 s of a
/// change), so a busy server sends two a second, not one per connection.
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

/// Everything the loop owns. One thread, so no field needs a lock.
pub struct Server<'a> {
    /// The epoll instance: listeners, connections, the signal pipe and the
    /// disk threads' waker.
    poll: Poll,
    /// Emptied at a stop, which closes them: new clients wait in systemd's
    /// copy of the socket, or are refused by the kernel.
    listeners: Vec<Listener>,
    /// Slots indexed by mio token; `free` holds the empty ones for reuse.
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    /// Connections in slots, for `max_connections` and the stats.
    active: usize,
    /// (deadline, slot, connection id), earliest first; see
    /// `Connection::queued` for how stale entries are recognised.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections whose read budget ran out with data possibly left.
    busy: Vec<usize>,
    /// The connection (slot, id) to read with blocking reads before the
    /// next poll: the only one with events in the last round, and streaming.
    streaming: Option<(usize, u64)>,
    /// What applies now; a reload replaces the live part of it.
    settings: Settings,
    /// The command line, so a reload applies PORT over the file again.
    args: Args,
    /// Borrowed from `app`, which made it before the loop existed (start
    /// errors are logged too).
    log: &'a Log,
    /// Stop, reload and stats requests, as events of the loop.
    signals: Signals,
    /// `--save-dir` mode: the threads that write each connection's bytes.
    disk: Option<Disk>,
    /// SIGHUP's configuration read, off the loop.
    reloads: Reloads,
    /// The id of the last accepted socket.
    ids: u64,
    /// The number of the last admitted connection; in saving mode it starts
    /// at the largest `N.file` already saved.
    accepted: u64,
    /// Connections admitted and ended, for STATUS= and stats (refusals are
    /// counted by cause in `admission`).
    served: u64,
    /// Bytes counted on connections that ended, for STATUS= and stats.
    bytes: u64,
    /// Set after an accept failed for lack of a resource: accepting pauses
    /// until then instead of spinning on EMFILE.
    accept_backoff: Option<Instant>,
    /// Failing accepts are reported once per interval, not per failure.
    accept_reports: RateLimited,
    /// Per-source counts and the refusal rules.
    admission: Admission,
    /// How many connections the file descriptor limit leaves room for;
    /// `max_connections` beyond it would only fail later with EMFILE.
    fd_room: usize,
    /// Whether a service manager listens: no status lines are built if not.
    notify: bool,
    /// When the next STATUS= goes out (set when a connection ends).
    status_due: Option<Instant>,
    last_status: Option<Instant>,
    /// The watchdog period and when WATCHDOG=1 is next due: sent by this
    /// loop, so a hung loop misses it and systemd notices.
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
        let reloads = Reloads::new(poll.registry(), RELOAD)?;
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
            reloads,
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
                    DISK | RELOAD => {}
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
            self.reload_results();
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
                let busy = self.disk.as_ref().is_some_and(Disk::busy);
                if (self.active == 0 && !busy) || Instant::now() >= exit_at {
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
            // A client that closed in order is done, and one whose bytes a
            // disk thread is moving is not idle: the wait is the disk's, and
            // its count is not known until the disk thread reports.
            let at_disk = conn.save.as_ref().is_some_and(|s| s.eof || s.at_disk());
            if at_disk {
                conn.deadline = now + idle;
            }
            let rate_deadline = (min_rate > 0 && !at_disk).then(|| {
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
            self.admission.release(source, now);
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
