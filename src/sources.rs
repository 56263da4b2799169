//! Per-source limits: one client machine must not keep the others out.
//!
//! Without a cap, one source can hold every slot for as long as it likes by
//! dripping a byte now and then (each byte restarts the idle clock). So the
//! open connections of each source are counted, and a connection beyond
//! `max_per_source` is refused at once, as nginx's `limit_conn` and
//! OpenSSH's `PerSourceMaxStartups` do.
//!
//! A source is an IPv4 address, or an IPv6 address cut to
//! `source_prefix_v6` bits (default 64: one subnet is usually one site, and
//! a /64 is what a single host can use as it pleases, as OpenSSH's
//! `PerSourceNetBlockSize` reasons). An IPv4-mapped IPv6 address is its IPv4
//! address.
//!
//! The table holds only sources with open connections (an entry goes when
//! its count reaches zero), so it is O(open connections), and every
//! operation is one hash lookup.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// At most one report of refusals per source per this interval.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A client's address as the per-source rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    addr: IpAddr,
    /// Bits kept of an IPv6 address (128 for IPv4, which is kept whole).
    prefix: u8,
}

impl Source {
    pub fn of(ip: IpAddr, v6_prefix: u8) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source {
                addr: IpAddr::V4(v4),
                prefix: 32,
            },
            IpAddr::V6(v6) => {
                let prefix = v6_prefix.clamp(1, 128);
                let mask = u128::MAX << (128 - u32::from(prefix));
                Source {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                }
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) if self.prefix == 128 => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/{}", self.prefix),
        }
    }
}

struct Entry {
    open: u32,
    last_report: Option<Instant>,
    /// Refusals since the last report.
    held: u64,
}

/// Open connections per source.
#[derive(Default)]
pub struct Sources {
    open: HashMap<Source, Entry>,
    /// Releases since stale entries were last swept.
    since_sweep: usize,
}

/// What to say about a refusal.
pub enum Refused {
    /// Report now; this many more were refused since the last report.
    Report(u64),
    /// Within the interval: a debug line at most.
    Quiet,
}

impl Sources {
    /// Count a new connection from `source`, unless it already has `cap`
    /// open (0 = no cap): then `Err` with what to report.
    pub fn admit(&mut self, source: Source, cap: u32, now: Instant) -> Result<(), Refused> {
        let entry = self.open.entry(source).or_insert(Entry {
            open: 0,
            last_report: None,
            held: 0,
        });
        if cap == 0 || entry.open < cap {
            entry.open += 1;
            return Ok(());
        }
        if entry
            .last_report
            .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            entry.held += 1;
            return Err(Refused::Quiet);
        }
        entry.last_report = Some(now);
        Err(Refused::Report(std::mem::take(&mut entry.held)))
    }

    /// A connection from `source` ended. An entry goes with its last
    /// connection unless it still owes a report (refusals held back, or a
    /// report less than an interval ago), so a source that drops to zero
    /// between floods neither loses its count nor restarts its interval;
    /// such entries are swept once their interval is over.
    pub fn release(&mut self, source: Source, now: Instant) {
        let recent = |e: &Entry| {
            e.held > 0
                || e.last_report
                    .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        };
        if let Some(entry) = self.open.get_mut(&source) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && !recent(entry) {
                self.open.remove(&source);
            }
        }
        self.since_sweep += 1;
        if self.since_sweep >= 1024 {
            self.since_sweep = 0;
            self.open.retain(|_, e| {
                e.open > 0
                    || e.last_report
                        .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
            });
        }
    }

    /// Sources with open connections.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str, prefix: u8) -> Source {
        Source::of(s.parse().expect("ip"), prefix)
    }

    #[test]
    fn ipv6_sources_are_their_prefix_and_mapped_ipv4_is_ipv4() {
        assert_eq!(src("2001:db8::1", 64), src("2001:db8::ffff:2", 64));
        assert_ne!(src("2001:db8::1", 64), src("2001:db8:0:1::1", 64));
        assert_eq!(src("2001:db8::1", 64).to_string(), "2001:db8::/64");
        assert_eq!(src("::ffff:192.0.2.1", 64), src("192.0.2.1", 64));
        assert_ne!(src("192.0.2.1", 64), src("192.0.2.2", 64));
        assert_eq!(src("2001:db8::1", 128).to_string(), "2001:db8::1");
    }

    #[test]
    fn the_cap_holds_per_source_and_entries_go_at_zero() {
        let mut s = Sources::default();
        let a = src("192.0.2.1", 64);
        let b = src("192.0.2.2", 64);
        let t = Instant::now();
        assert!(s.admit(a, 2, t).is_ok() && s.admit(a, 2, t).is_ok());
        assert!(matches!(s.admit(a, 2, t), Err(Refused::Report(0))));
        assert!(matches!(s.admit(a, 2, t), Err(Refused::Quiet)));
        assert!(s.admit(b, 2, t).is_ok());
        assert!(matches!(
            s.admit(a, 2, t + REPORT_EVERY),
            Err(Refused::Report(1))
        ));
        s.release(a, t);
        assert!(s.admit(a, 2, t).is_ok());
        // A refusal held back survives the source dropping to zero.
        assert!(matches!(s.admit(a, 2, t), Err(Refused::Quiet)));
        s.release(a, t);
        s.release(a, t);
        s.release(b, t);
        assert!(s.admit(a, 1, t).is_ok());
        assert!(matches!(
            s.admit(a, 1, t + REPORT_EVERY * 2),
            Err(Refused::Report(1))
        ));
        let later = t + REPORT_EVERY * 3;
        s.release(a, later);
        assert!(s.is_empty(), "an entry owing nothing goes");
        assert!(s.admit(a, 0, t).is_ok());
    }
}
