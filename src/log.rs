//! Diagnostics: syslog (`/dev/log`) or stderr, never stdout.
//!
//! `syslog::init()` is avoided on purpose: when `/dev/log` is missing it
//! falls back to TCP and UDP on localhost and hardly ever fails, so messages
//! would vanish. The socket is opened here directly, and with `auto` a
//! missing or dead `/dev/log` means stderr. A send that fails is retried once
//! on a fresh connection (journald restarts), then written to stderr, so a
//! diagnostic is never silently lost.

use std::io::Write;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

/// The syslog identifier, so `journalctl -t accio-server` finds us.
pub const IDENT: &str = "accio-server";
const DEV_LOG: &str = "/dev/log";

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
    /// syslog if `/dev/log` accepts messages at start, else stderr.
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

type Syslog = Logger<LoggerBackend, Formatter3164>;

/// The diagnostics sink, shared by reference; a Mutex because the syslog
/// writer needs `&mut` and a reload swaps it.
pub struct Log {
    inner: Mutex<Inner>,
}

struct Inner {
    target: Target,
    level: Level,
    syslog: Option<Syslog>,
}

fn connect() -> Option<Syslog> {
    let formatter = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: IDENT.into(),
        pid: std::process::id(),
    };
    syslog::unix_custom(formatter, DEV_LOG).ok()
}

impl Log {
    pub fn new(target: Target, level: Level) -> Log {
        let log = Log {
            inner: Mutex::new(Inner {
                target,
                level,
                syslog: None,
            }),
        };
        log.reconfigure(target, level);
        log
    }

    /// Apply a new `[log]` section (at start and on reload).
    pub fn reconfigure(&self, target: Target, level: Level) {
        let mut inner = self.lock();
        if inner.target != target || inner.syslog.is_none() {
            inner.syslog = match target {
                Target::Stderr => None,
                Target::Auto | Target::Syslog => connect(),
            };
        }
        inner.target = target;
        inner.level = level;
    }

    /// True when messages go to syslog (for the start line).
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
        if inner.target == Target::Stderr {
            return to_stderr(level, msg);
        }
        for attempt in 0..2 {
            if inner.syslog.is_none() && (attempt > 0 || inner.target == Target::Syslog) {
                inner.syslog = connect();
            }
            let Some(sys) = inner.syslog.as_mut() else {
                break;
            };
            let sent = match level {
                Level::Err => sys.err(msg),
                Level::Warning => sys.warning(msg),
                Level::Notice => sys.notice(msg),
                Level::Info => sys.info(msg),
                Level::Debug => sys.debug(msg),
            };
            if sent.is_ok() {
                return;
            }
            inner.syslog = None;
        }
        to_stderr(level, msg);
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
}

fn to_stderr(level: Level, msg: &str) {
    let line = format!("{IDENT}: {level}: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
}
