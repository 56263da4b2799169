//! Diagnostics: syslog (`/dev/log`) or stderr, never stdout.
//!
//! A log sink must never hold up serving or a stop: a journald that stops
//! reading fills `/dev/log` after a few datagrams, and a stderr pipe nobody
//! reads fills after a few kilobytes; a blocking write would then freeze the
//! loop, stop signals included. So every write is non-blocking: a message
//! that does not fit at once is dropped and counted, and the count is
//! reported as soon as the sink takes messages again.
//!
//! `syslog::init()` is avoided on purpose: when `/dev/log` is missing it
//! falls back to TCP and UDP on localhost and hardly ever fails, so messages
//! would vanish. The syslog crate only formats (RFC 3164); the datagram goes
//! out here, on our own non-blocking socket. A send refused because journald
//! restarted is retried once on a fresh connection, then written to stderr.
//!
//! `auto` means stderr when stderr is a terminal (a person runs the server
//! in the foreground and expects to see it talk), else syslog when
//! `/dev/log` accepts messages, else stderr.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, LogFormat, Severity};

/// The syslog identifier, so `journalctl -t accio-server` finds us.
pub const IDENT: &str = "accio-server";
const DEV_LOG: &str = "/dev/log";
/// Quoted values are cut to this many characters.
const QUOTE_MAX: usize = 200;

/// Message severities (syslog priorities), most severe first. As a
/// configured `[log] level` it is the least severe message kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// Where diagnostics go (`[log] target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// stderr if it is a terminal, else syslog if `/dev/log` accepts
    /// messages, else stderr.
    Auto,
    Syslog,
    Stderr,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Err => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        })
    }
}

/// A value from outside (a path, a key's value, an argument) as it may
/// appear in a message: in double quotes, control characters escaped so
/// it cannot forge a line or a terminal escape, cut to 200 characters.
pub fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in value.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text from outside that is not quoted (a library's message that may
/// contain a value): control characters escaped, cut to at most `max`
/// bytes once escaped (plus "..."), so no input makes a long line.
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push_str("...");
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// The diagnostics sink, shared by reference; a Mutex because a reload
/// swaps it and the drop count is shared.
pub struct Log {
    inner: Mutex<Inner>,
}

struct Inner {
    target: Target,
    level: Level,
    syslog: Option<UnixDatagram>,
    /// Messages the sink could not take since the last one it took.
    dropped: u64,
}

fn connect() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(DEV_LOG).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only queries the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

/// How a write to a sink went.
enum Sent {
    Ok,
    /// Full right now: drop and count.
    Full,
    /// The sink is gone (journald restarted, no /dev/log).
    Gone,
}

fn send_syslog(sock: &UnixDatagram, level: Level, msg: &str) -> Sent {
    let formatter = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: IDENT.into(),
        pid: std::process::id(),
    };
    let severity = match level {
        Level::Err => Severity::LOG_ERR,
        Level::Warning => Severity::LOG_WARNING,
        Level::Notice => Severity::LOG_NOTICE,
        Level::Info => Severity::LOG_INFO,
        Level::Debug => Severity::LOG_DEBUG,
    };
    let mut buf = Vec::with_capacity(msg.len() + 64);
    if formatter.format(&mut buf, severity, msg).is_err() {
        return Sent::Gone;
    }
    match sock.send(&buf) {
        Ok(_) => Sent::Ok,
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) =>
        {
            Sent::Full
        }
        Err(_) => Sent::Gone,
    }
}

/// One write(2) of the whole line, only if stderr has room now.
fn send_stderr(level: Level, msg: &str) -> Sent {
    let line = format!("{IDENT}: {level}: {msg}\n");
    let mut fd = libc::pollfd {
        fd: 2,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    if unsafe { libc::poll(&mut fd, 1, 0) } != 1 {
        return Sent::Full;
    }
    // A pipe with room for one page takes a line of up to a page without
    // blocking; a longer line is cut rather than risk a wait.
    let bytes = &line.as_bytes()[..line.len().min(4096)];
    // SAFETY: write(2) from a valid buffer.
    let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
        return Sent::Full;
    }
    Sent::Ok
}

impl Log {
    pub fn new(target: Target, level: Level) -> Log {
        let log = Log {
            inner: Mutex::new(Inner {
                target,
                level,
                syslog: None,
                dropped: 0,
            }),
        };
        log.reconfigure(target, level);
        log
    }

    /// Apply a new `[log]` section (at start and on reload).
    pub fn reconfigure(&self, target: Target, level: Level) {
        let mut inner = self.lock();
        let wants_syslog = match target {
            Target::Stderr => false,
            Target::Syslog => true,
            Target::Auto => !stderr_is_terminal(),
        };
        if !wants_syslog {
            inner.syslog = None;
        } else if inner.target != target || inner.syslog.is_none() {
            inner.syslog = connect();
        }
        inner.target = target;
        inner.level = level;
    }

    /// True when messages go to syslog.
    pub fn is_syslog(&self) -> bool {
        self.lock().syslog.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a message of `level` would be written.
    pub fn enabled(&self, level: Level) -> bool {
        let threshold = self.lock().level;
        match threshold {
            Level::Err => level == Level::Err,
            t => level <= t.max(Level::Notice),
        }
    }

    pub fn log(&self, level: Level, msg: &str) {
        if !self.enabled(level) {
            return;
        }
        let mut inner = self.lock();
        if inner.dropped > 0 {
            let note = format!(
                "{} log messages were dropped because the log sink did not take them",
                inner.dropped
            );
            match inner.send(Level::Warning, &note) {
                Sent::Ok => inner.dropped = 0,
                Sent::Full | Sent::Gone => {
                    inner.dropped += 1;
                    return;
                }
            }
        }
        match inner.send(level, msg) {
            Sent::Ok => {}
            Sent::Full | Sent::Gone => inner.dropped += 1,
        }
    }

    pub fn err(&self, msg: &str) {
        self.log(Level::Err, msg)
    }
    pub fn warning(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }
    pub fn notice(&self, msg: &str) {
        self.log(Level::Notice, msg)
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }
}

impl Inner {
    fn send(&mut self, level: Level, msg: &str) -> Sent {
        let wants_syslog = match self.target {
            Target::Stderr => false,
            Target::Syslog => true,
            Target::Auto => self.syslog.is_some(),
        };
        if !wants_syslog {
            return send_stderr(level, msg);
        }
        for attempt in 0..2 {
            if self.syslog.is_none() && (attempt > 0 || self.target == Target::Syslog) {
                self.syslog = connect();
            }
            let Some(sock) = self.syslog.as_ref() else {
                break;
            };
            match send_syslog(sock, level, msg) {
                Sent::Ok => return Sent::Ok,
                Sent::Full => return Sent::Full,
                Sent::Gone => self.syslog = None,
            }
        }
        send_stderr(level, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_is_kept_unless_level_is_error() {
        let log = Log::new(Target::Stderr, Level::Warning);
        assert!(log.enabled(Level::Notice) && log.enabled(Level::Err));
        assert!(!log.enabled(Level::Info));
        log.reconfigure(Target::Stderr, Level::Err);
        assert!(!log.enabled(Level::Notice) && log.enabled(Level::Err));
        log.reconfigure(Target::Stderr, Level::Info);
        assert!(log.enabled(Level::Info) && !log.enabled(Level::Debug));
    }

    #[test]
    fn quoting_escapes_and_cuts() {
        assert_eq!(
            quote("a\nERROR: x\u{1b}[31m"),
            "\"a\\nERROR: x\\u{1b}[31m\""
        );
        let long = quote(&"x".repeat(1000));
        assert_eq!(long.len(), 200 + 2 + 3);
    }
}
