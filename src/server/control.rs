//! What signals ask of the loop: a graceful stop (grace, then the wait for
//! the disk threads, then the exit), a reload, and the stats line.

use std::time::{Duration, Instant};

use super::{DISK_STOP_WAIT, READ_BUDGET, Server};
use crate::config::{Settings, fmt_duration};
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
            disk.dir().exit_handover();
        }
    }

    pub(super) fn reload(&mut self) {
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
