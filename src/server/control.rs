//! What signals ask of the loop: a graceful stop (grace, then the wait for
//! the disk threads, then the exit) and the stats line. A reload is in
//! `reload.rs`.

use std::time::{Duration, Instant};

use super::{DISK_STOP_WAIT, READ_BUDGET, Server};
use crate::config::fmt_duration;
use crate::connection::{Outcome, Progress};
use crate::notify;

impl Server<'_> {
    pub(super) fn begin_stop(&mut self, signal: &str, now: Instant) {
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
    pub(super) fn end_all(&mut self, now: Instant) {
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
    pub(super) fn exit(&mut self) {
        self.disk_results();
        for slot in 0..self.conns.len() {
            self.finish(slot, Outcome::Stopped);
        }
        if let Some(disk) = &self.disk {
            disk.dir().begin_exit();
            disk.defer_unfinished();
            disk.dir().exit_handover();
        }
    }

    /// The SIGUSR1 report: one line at notice.
    pub(super) fn stats(&self, now: Instant) {
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
}

/// `3d 4h 5m 6s`, leading zero units left out.
pub(super) fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m {secs}s"),
        _ => format!("{days}d {hours}h {mins}m {secs}s"),
    }
}
