//! accio-server: a daemon that speaks the Accio protocol.
//!
//! For each TCP connection it sends `accio\r\n`, counts the bytes the client
//! sends until it closes, and prints the count (or `ERROR`) as one line on
//! stdout. The README and the man pages are the user's contract.
//!
//! # Layout
//!
//! - [`cli`]: the server's argv to [`cli::Args`].
//! - [`cmdline`]: what both command lines share: manual, clap skeleton,
//!   usage errors, strict PORT.
//! - [`config`]: the TOML file to [`config::Settings`]; reload diffs.
//! - [`error`]: startup errors and their sysexits codes.
//! - [`exit`]: the exit statuses of both programs, and `report`.
//! - [`listener`]: sockets inherited from systemd, or bound here.
//! - [`server`]: the event loop: accept, limits, timers, stop, reload.
//! - [`admission`]: who gets a greeting; refusals and their reports.
//! - [`proxy`]: PROXY protocol v1/v2 headers, judged from a peeked prefix.
//! - [`sources`]: open connections per source (`max_per_source`).
//! - [`connection`]: greeting, zero-copy counting, outcomes.
//! - [`output`]: one write(2) per stdout line.
//! - [`save`]: `--save-dir`: safe temporaries, exclusive names, the lock.
//! - [`disk`]: the threads that do every file-system call of saving.
//! - [`report`]: rate-limited reports.
//! - [`units`]: sizes and rates in binary units.
//! - [`signals`]: signals as events of the loop.
//! - [`notify`]: sd_notify(3) messages.
//! - [`log`]: syslog or stderr diagnostics.
//! - [`app`]: the start sequence the `server` binary runs.
//! - [`client`]: the `client` binary: greeting, sendfile or streaming, timeouts.

pub mod admission;
pub mod app;
pub mod cli;
pub mod client;
pub mod cmdline;
pub mod config;
pub mod connection;
pub mod disk;
pub mod error;
pub mod exit;
pub mod listener;
pub mod log;
pub mod notify;
pub mod output;
pub mod proxy;
pub mod report;
pub mod save;
pub mod server;
pub mod signals;
pub mod sources;
pub mod units;

#[cfg(not(target_os = "linux"))]
compile_error!("accio-server is Linux only: it relies on splice, MSG_TRUNC, O_TMPFILE and epoll");
