//! SIGHUP: read the configuration file again and apply what can change
//! while running.
//!
//! The file is read on a thread of its own, never on the loop: it may sit
//! on a hung network file system or a FUSE mount that answers when it
//! likes, and the loop must go on greeting, timing out and stopping
//! meanwhile. The result comes back over a channel with a wake-up of the
//! loop. One read at a time; a SIGHUP during one asks for another after it,
//! so the last edit of the file is always the one applied.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use mio::{Registry, Token, Waker};

use super::Server;
use crate::cli::Args;
use crate::config::Settings;
use crate::error::Error;
use crate::notify;

/// The loop's side of reloads.
pub(super) struct Reloads {
    waker: Arc<Waker>,
    tx: Sender<Result<Settings, Error>>,
    rx: Receiver<Result<Settings, Error>>,
    /// A read is under way.
    running: bool,
    /// A SIGHUP came during it.
    again: bool,
}

impl Reloads {
    pub(super) fn new(registry: &Registry, token: Token) -> io::Result<Reloads> {
        let (tx, rx) = mpsc::channel();
        Ok(Reloads {
            waker: Arc::new(Waker::new(registry, token)?),
            tx,
            rx,
            running: false,
            again: false,
        })
    }

    /// Read the configuration for `args` on a thread; the result arrives
    /// with a wake-up. Where no thread can be started (`TasksMax=`), it is
    /// read here.
    fn start(&mut self, args: &Args) {
        self.running = true;
        let (theirs, tx, waker) = (args.clone(), self.tx.clone(), Arc::clone(&self.waker));
        let spawned = thread::Builder::new().name("reload".into()).spawn(move || {
            // The loop may be gone (a stop); nobody is left to tell.
            let _ = tx.send(Settings::load(&theirs));
            let _ = waker.wake();
        });
        if spawned.is_err() {
            let _ = self.tx.send(Settings::load(args));
        }
    }
}

impl Server<'_> {
    /// SIGHUP.
    pub(super) fn reload(&mut self) {
        if self.args.config.is_none() {
            self.log
                .notice("SIGHUP: no configuration file was given (--config), nothing to reload");
            return;
        }
        if self.reloads.running {
            self.reloads.again = true;
            return;
        }
        notify::reloading();
        let args = self.args.clone();
        self.reloads.start(&args);
    }

    /// Apply what a reload read, if it has finished.
    pub(super) fn reload_results(&mut self) {
        while let Ok(result) = self.reloads.rx.try_recv() {
            self.reloads.running = false;
            self.apply(result);
            notify::ready(&self.status_line());
            if std::mem::take(&mut self.reloads.again) {
                self.reload();
            }
        }
    }

    fn apply(&mut self, result: Result<Settings, Error>) {
        let new = match result {
            Ok(new) => new,
            Err(e) => {
                self.log
                    .err(&format!("reload failed, configuration unchanged: {e}"));
                return;
            }
        };
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
        let path = self
            .args
            .config
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        self.log
            .notice(&format!("reloaded configuration from {path}: {applied}"));
    }
}
