//! Who gets a greeting: the rules a client must pass before it is given a
//! connection number, and the words for those that do not.
//!
//! A refused client is accepted and ended at once (no greeting, a reset)
//! rather than left in the listen backlog: it gets its `ERROR` line, and a
//! flood of refusals costs neither a connection number nor a file. Reports
//! are rate-limited so that a flood does not flood the log either; the
//! per-connection line of a refusal is `debug`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::log::Level;
use crate::report::RateLimited;
use crate::sources::{Refused, Source, Sources};

/// At most one free-space refusal report per this interval.
const LOW_SPACE_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Refusals so far, by cause (for the stats line).
#[derive(Debug, Default, Clone, Copy)]
pub struct Refusals {
    pub per_source: u64,
    pub low_space: u64,
    pub proxy: u64,
    pub numbers: u64,
}

/// Why a client is not served, with the message to log and its priority.
pub struct Refusal {
    pub level: Level,
    pub message: String,
    /// A short reason for the JSON line.
    pub reason: &'static str,
}

pub struct Admission {
    sources: Sources,
    low_space_reports: RateLimited,
    pub refused: Refusals,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            sources: Sources::default(),
            low_space_reports: RateLimited::new(LOW_SPACE_REPORT_EVERY),
            refused: Refusals::default(),
        }
    }
}

impl Admission {
    /// Admit a client whose address is `client` (the peer, or the one its
    /// PROXY header carries): its source, counted until [`release`], or the
    /// refusal. `low_space` is the free space when saving is below its
    /// floor.
    ///
    /// [`release`]: Admission::release
    pub fn admit(
        &mut self,
        client: SocketAddr,
        settings: &Settings,
        low_space: Option<u64>,
        now: Instant,
    ) -> Result<Source, Refusal> {
        if let Some(free) = low_space {
            self.refused.low_space += 1;
            return Err(match self.low_space_reports.due(now) {
                Some(held) => Refusal {
                    reason: LOW_SPACE,
                    level: Level::Err,
                    message: format!(
                        "refused {client}: the save file system has {} free, below min_free_space {}{}",
                        crate::units::bytes(free),
                        settings.min_free_space,
                        more(held, "clients refused")
                    ),
                },
                None => quiet(
                    client,
                    "the save file system is below min_free_space",
                    LOW_SPACE,
                ),
            });
        }
        let source = Source::of(client.ip(), settings.source_prefix_v6);
        match self.sources.admit(source, settings.max_per_source, now) {
            Ok(()) => Ok(source),
            Err(refused) => {
                self.refused.per_source += 1;
                Err(match refused {
                    Refused::Report(held) => Refusal {
                        reason: PER_SOURCE,
                        level: Level::Warning,
                        message: format!(
                            "refused {client}: source {source} already has max_per_source = {} connections open{}",
                            settings.max_per_source,
                            more(held, "connections from it refused")
                        ),
                    },
                    Refused::Quiet => quiet(client, "its source is at max_per_source", PER_SOURCE),
                })
            }
        }
    }

    /// A bad or missing PROXY header.
    pub fn bad_proxy(&mut self, peer: SocketAddr, why: &str) -> Refusal {
        self.refused.proxy += 1;
        Refusal {
            reason: "bad PROXY header",
            level: Level::Warning,
            message: format!("refused {peer}: no valid PROXY protocol header ({why})"),
        }
    }

    /// Connection numbers ran out.
    pub fn no_numbers(&mut self, peer: SocketAddr) -> Refusal {
        self.refused.numbers += 1;
        Refusal {
            reason: "connection numbers used up",
            level: Level::Err,
            message: format!(
                "refused {peer}: connection numbers are used up (the save directory holds the largest one); restart with another directory"
            ),
        }
    }

    pub fn release(&mut self, source: Source, now: Instant) {
        self.sources.release(source, now);
    }
}

const LOW_SPACE: &str = "below min_free_space";
const PER_SOURCE: &str = "max_per_source";

fn quiet(client: SocketAddr, why: &str, reason: &'static str) -> Refusal {
    Refusal {
        reason,
        level: Level::Debug,
        message: format!("refused {client}: {why}"),
    }
}

fn more(held: u64, what: &str) -> String {
    if held == 0 {
        String::new()
    } else {
        format!("; {held} more {what} since the last report")
    }
}
