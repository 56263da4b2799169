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
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::cli::Args;
use crate::config::{Settings, fmt_duration};
use crate::connection::{Connection, Outcome, Progress};
use crate::log::{Level, Log};
use crate::save::SaveDir;
use crate::signals::{Request, Signals};
use crate::{notify, output};

const SIGNAL: Token = Token(usize::MAX);
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

/// Accept failures are reported at most once per interval, with a count of
/// the ones in between, so a flood of EMFILE does not flood the journal.
#[derive(Default)]
struct AcceptReports {
    last: Option<Instant>,
    suppressed: u64,
}

pub struct Server<'a> {
    poll: Poll,
    listeners: Vec<Listener>,
    /// Slots indexed by mio token; `free` holds the empty ones for reuse.
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    active: usize,
    /// (deadline, slot, connection number), earliest first; see
    /// `Connection::queued` for how stale entries are recognised.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections whose read budget ran out with data possibly left.
    busy: Vec<usize>,
    /// The connection (slot, number) to read with blocking reads before the
    /// next poll: the only one with events in the last round, and streaming.
    streaming: Option<(usize, u64)>,
    settings: Settings,
    /// The command line, so a reload applies PORT over the file again.
    args: Args,
    log: &'a Log,
    signals: Signals,
    /// `--save-dir` mode: where each connection's bytes go.
    save: Option<SaveDir>,
    /// The number of the last accepted connection; in saving mode it starts
    /// at the largest `N.file` already saved.
    accepted: u64,
    served: u64,
    bytes: u64,
    accept_backoff: Option<Instant>,
    accept_reports: AcceptReports,
    notify: bool,
    status_due: Option<Instant>,
    last_status: Option<Instant>,
    watchdog: Option<(Duration, Instant)>,
    /// Set once a stop signal arrived: when the grace ends.
    stop_at: Option<Instant>,
}

impl<'a> Server<'a> {
    /// Take over bound listeners; nothing is served until [`Server::run`].
    pub fn new(
        listeners: Vec<(std::net::TcpListener, SocketAddr)>,
        settings: Settings,
        args: Args,
        log: &'a Log,
        mut signals: Signals,
        save: Option<(SaveDir, u64)>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
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
        let (save, accepted) = match save {
            Some((dir, largest)) => (Some(dir), largest),
            None => (None, 0),
        };
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
            save,
            accepted,
            served: 0,
            bytes: 0,
            accept_backoff: None,
            accept_reports: AcceptReports::default(),
            notify: notify::enabled(),
            status_due: None,
            last_status: None,
            watchdog: notify::watchdog_period().map(|p| (p, now)),
            stop_at: None,
        })
    }

    /// Serve until a stop signal; every accepted connection gets its line.
    pub fn run(mut self) -> io::Result<()> {
        let addrs: Vec<String> = self.listeners.iter().map(|l| l.addr.to_string()).collect();
        let saving = self.save.as_ref().map_or(String::new(), |d| {
            format!(
                ", saving to {} from {}.file on",
                d.path().display(),
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
        notify::ready(&self.status_line());
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let mut timeout = self.next_wakeup(now);
            // Still streaming after its stretch: read on if nothing else
            // turns up in the poll that follows it.
            let mut stretched = None;
            if let Some((slot, number)) = self.streaming.take()
                && timeout != Some(Duration::ZERO)
            {
                let until = now + timeout.map_or(STRETCH, |t| t.min(STRETCH));
                stretched = self.stretch(slot, number, until).then_some(slot);
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
                    }
                }
            }
            // New clients first: each waits for its greeting, while the
            // lines of the connections that ended can wait a moment.
            self.accept(now);
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
                .filter(|_| self.save.is_none())
                .and_then(|slot| Some((slot, self.conns.get(slot)?.as_ref()?.number)));
            // No fresh event for these: read until the queue is known empty.
            for slot in std::mem::take(&mut self.busy) {
                self.service(slot, true);
            }
            // Again, for clients waiting on a slot freed in this round.
            self.accept(now);
            self.expire(now);
            self.housekeeping(now);
            if let Some(stop_at) = self.stop_at
                && (self.active == 0 || now >= stop_at)
            {
                self.end_all();
                break;
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
        let before = conn.bytes;
        let progress = conn.drain(READ_BUDGET, peer_closed, self.save.as_mut());
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
    fn stretch(&mut self, slot: usize, number: u64, until: Instant) -> bool {
        let idle = self.settings.idle_timeout;
        // The number tells whether the slot still holds that connection.
        let Some(conn) = self
            .conns
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|c| c.number == number)
        else {
            return false;
        };
        let progress = conn.stream_until(until, idle);
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
        match progress {
            Progress::Idle => {}
            Progress::Busy => self.busy.push(slot),
            Progress::Eof => self.finish(slot, Outcome::Counted),
            Progress::Reset => self.finish(slot, Outcome::Reset),
            Progress::Failed(e) => self.finish(slot, Outcome::Failed(e)),
            Progress::WriteFailed(e) => self.finish(slot, Outcome::SaveFailed(e)),
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
            self.timers
                .push(Reverse((conn.deadline, slot, conn.number)));
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
                if self.active >= self.settings.max_connections {
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
        let r = &mut self.accept_reports;
        if r.last
            .is_some_and(|last| now.duration_since(last) < ACCEPT_REPORT_EVERY)
        {
            r.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut r.suppressed);
        r.last = Some(now);
        let hint = match e.raw_os_error() {
            Some(libc::EMFILE) => {
                " (out of file descriptors: raise LimitNOFILE= or lower max_connections)"
            }
            Some(libc::ENFILE) => " (the system is out of file descriptors)",
            _ => "",
        };
        let mut msg = format!("accept failed: {e}{hint}");
        if suppressed > 0 {
            msg.push_str(&format!(
                "; {suppressed} more failures since the last report"
            ));
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

    fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
        // The idle clock starts at this accept, not when the round began
        // (stdout writes earlier in the round may have blocked).
        let now = Instant::now();
        self.accepted += 1;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn =
            Connection::new(stream, self.accepted, peer, now, self.settings.idle_timeout);
        self.active += 1;
        let part = match &self.save {
            Some(dir) => dir
                .create(conn.number)
                .map(Some)
                .map_err(Outcome::SaveFailed),
            None => Ok(None),
        };
        let started = part
            .and_then(|part| {
                conn.part = part;
                conn.greet().map_err(|e| match e.kind() {
                    // The client reset (or closed) before its greeting.
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
                    _ => Outcome::GreetingFailed(e),
                })
            })
            .and_then(|()| {
                self.poll
                    .registry()
                    .register(conn.stream(), Token(slot), Interest::READABLE)
                    .map_err(Outcome::Failed)
            });
        self.timers
            .push(Reverse((conn.deadline, slot, conn.number)));
        self.conns[slot] = Some(conn);
        if let Err(outcome) = started {
            self.finish(slot, outcome);
        }
    }

    /// Pop due timers; a connection whose deadline moved gets a new entry.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((when, slot, number))) = self.timers.peek() {
            if when > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.number != number || conn.queued != when {
                continue;
            }
            if conn.deadline <= now {
                let idle = self.settings.idle_timeout;
                self.finish(slot, Outcome::TimedOut(idle));
            } else {
                conn.queued = conn.deadline;
                self.timers.push(Reverse((conn.deadline, slot, number)));
            }
        }
    }

    /// Write the connection's line, log it, close the socket.
    fn finish(&mut self, slot: usize, outcome: Outcome) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // Fresh: the logged duration and the status schedule must not lag
        // behind stdout writes that blocked earlier in this round.
        let now = Instant::now();
        let outcome = self.save_file(&mut conn, outcome);
        self.free.push(slot);
        self.active -= 1;
        self.served += 1;
        self.bytes += conn.bytes;
        let line = if outcome.is_counted() {
            format!("{}\n", conn.bytes)
        } else {
            "ERROR\n".to_string()
        };
        let written = output::write_line(&line, self.signals.stopping());
        self.log_connection(&conn, &outcome, now);
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
        if self.notify && self.status_due.is_none() {
            let earliest = self.last_status.map_or(now, |t| t + STATUS_EVERY);
            self.status_due = Some(earliest.max(now));
        }
    }

    /// Give a saved connection its final `N.file` (the bytes, or `ERROR`)
    /// before its line is written; a failure to save turns a count into
    /// ERROR, since the line must not promise a file that is not there.
    fn save_file(&self, conn: &mut Connection, outcome: Outcome) -> Outcome {
        let (Some(dir), Some(part)) = (&self.save, conn.part.take()) else {
            return outcome;
        };
        let outcome = if outcome.is_counted() {
            match dir.commit(part) {
                Ok(_) => return outcome,
                Err(e) => Outcome::SaveFailed(e),
            }
        } else {
            match dir.fail(part) {
                Ok(_) => return outcome,
                Err(e) => {
                    self.log.err(&format!(
                        "connection {}: cannot write its ERROR file in {}: {e}",
                        conn.number,
                        dir.path().display()
                    ));
                    return outcome;
                }
            }
        };
        // The part file is gone; leave ERROR in N.file if the disk allows.
        if let Err(e) = dir.create(conn.number).and_then(|p| dir.fail(p)) {
            self.log.err(&format!(
                "connection {}: cannot write its ERROR file in {}: {e}",
                conn.number,
                dir.path().display()
            ));
        }
        outcome
    }

    fn log_connection(&self, conn: &Connection, outcome: &Outcome, now: Instant) {
        let (level, what) = match outcome {
            Outcome::Counted => (Level::Info, "closed by client".to_string()),
            Outcome::TimedOut(d) => (
                Level::Warning,
                format!("idle timeout ({} without data)", fmt_duration(*d)),
            ),
            Outcome::Reset => (Level::Warning, "reset by client".to_string()),
            Outcome::Stopped => (Level::Warning, "aborted at stop".to_string()),
            Outcome::GreetingFailed(e) => (Level::Err, format!("greeting failed: {e}")),
            Outcome::Failed(e) => (Level::Err, format!("failed: {e}")),
            Outcome::SaveFailed(e) => (Level::Err, format!("saving failed: {e}")),
        };
        if !self.log.enabled(level) {
            return;
        }
        let secs = now.duration_since(conn.accepted).as_secs_f64();
        self.log.log(
            level,
            &format!(
                "connection {} from {}: {what}, {} bytes in {secs:.3} s ({})",
                conn.number,
                conn.peer,
                conn.bytes,
                rate(conn.bytes, secs)
            ),
        );
    }

    fn begin_stop(&mut self, signal: &str, now: Instant) {
        if self.stop_at.is_some() {
            self.log
                .notice(&format!("{signal} again: ending the shutdown grace now"));
            self.stop_at = Some(now);
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

    /// The stop's last step: a connection whose FIN is already queued still
    /// gets its count; every other one ends with ERROR.
    fn end_all(&mut self) {
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let outcome = match conn.drain(READ_BUDGET, true, self.save.as_mut()) {
                Progress::Eof => Outcome::Counted,
                _ => Outcome::Stopped,
            };
            self.finish(slot, outcome);
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
                let s = &mut self.settings;
                s.idle_timeout = new.idle_timeout;
                s.max_connections = new.max_connections;
                s.shutdown_grace = new.shutdown_grace;
                s.fsync = new.fsync;
                if let Some(dir) = self.save.as_mut() {
                    dir.fsync = new.fsync;
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

/// Human transfer rate, decimal units.
fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "- B/s".to_string();
    }
    let r = bytes as f64 / secs;
    match r {
        r if r >= 1e9 => format!("{:.2} GB/s", r / 1e9),
        r if r >= 1e6 => format!("{:.2} MB/s", r / 1e6),
        r if r >= 1e3 => format!("{:.2} kB/s", r / 1e3),
        r => format!("{r:.0} B/s"),
    }
}
