//! The four fuzz targets: each front end fed one input, and everything that
//! must hold of its answer checked. Shared, word for word, by the libFuzzer
//! targets in `fuzz/fuzz_targets/` (coverage-guided, long runs) and by
//! `tests/fuzz.rs` (seed corpus, regression inputs and a few thousand
//! generated inputs under `cargo test`), so that an input replays the same
//! way in both. See FUZZING.md.
//!
//! Each target takes the raw bytes of its input in a plain, readable
//! encoding rather than through `arbitrary`, so that a seed or a crashing
//! input is a file a person can read and write:
//!
//! - `cli`: argv, the arguments separated by NUL bytes (argv[0] first; an
//!   argument can never hold a NUL).
//! - `config`: the file's text (invalid UTF-8 replaced by U+FFFD, as only
//!   UTF-8 reaches `config::from_str`).
//! - `proxy`: the first bytes of a connection.
//! - `env`: `WATCHDOG_USEC`, `WATCHDOG_PID`, `LISTEN_PID`, `LISTEN_FDS`,
//!   `NOTIFY_SOCKET` and our pid, separated by NUL bytes (a variable's value
//!   can never hold a NUL). A missing field is an unset variable, and so is
//!   a field that is not UTF-8, as `std::env::var` reads it (NOTIFY_SOCKET
//!   is read as bytes, so only a missing field unsets it). Our pid is 4242
//!   unless the sixth field is a `u32`.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

use accio_server::cli::{self, Action};
use accio_server::config::{self, FreeSpace};
use accio_server::error::Error;
use accio_server::proxy::{self, PEEK_MAX, Parsed};
use accio_server::{listener, notify};

/// The longest any message built from user input may be, in bytes.
pub const MESSAGE_MAX: usize = 2000;

/// A character that must never reach a terminal or a log raw.
fn raw_control(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

// ----------------------------------------------------------------- cli ----

/// argv as the `cli` target encodes it.
pub fn argv_of(data: &[u8]) -> Vec<OsString> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

/// `cli::parse` on any argv: a Run whose values come from the arguments, a
/// Print for -h/-V, or a usage error of one clean line (and clap's `tip:`
/// line, made as clean) plus the hint.
pub fn cli(data: &[u8]) {
    let argv = argv_of(data);
    match cli::parse(argv.clone()) {
        Ok(Action::Run(args)) => {
            let words: Vec<&str> = argv.iter().skip(1).filter_map(|a| a.to_str()).collect();
            if let Some(p) = args.port {
                assert!(p >= 1, "port 0 from {argv:?}");
                assert!(
                    words
                        .iter()
                        .any(|a| accio_server::cmdline::parse_port(a) == Ok(p)),
                    "port {p} from nowhere: {argv:?}"
                );
            }
            if let Some(ip) = args.bind {
                assert!(
                    words.iter().any(|a| ends_with_ip(a, ip)),
                    "bind {ip} from nowhere: {argv:?}"
                );
            }
            for path in [&args.config, &args.save_dir].into_iter().flatten() {
                let p = path.as_os_str().as_bytes();
                assert!(
                    argv.iter().skip(1).any(|a| contains(a.as_bytes(), p)),
                    "path {path:?} from nowhere: {argv:?}"
                );
            }
        }
        Ok(Action::Print(text)) => {
            assert!(!text.trim().is_empty(), "empty text for {argv:?}");
            let asks = |a: &OsString| {
                let a = a.to_string_lossy();
                a == "--help"
                    || a == "--version"
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains(['h', 'V']))
            };
            assert!(
                argv.iter().skip(1).any(asks),
                "printed without -h/-V: {argv:?}"
            );
            // Help shows argv[0]'s file name (finding 2, FUZZING.md).
            for line in text.lines() {
                assert_eq!(raw_control(line), None, "{text:?} for {argv:?}");
            }
        }
        Err(Error::Usage(m)) => {
            let lines: Vec<&str> = m.split('\n').collect();
            let hint = accio_server::cmdline::usage_hint(cli::USAGE);
            assert!(
                (2..=3).contains(&lines.len()),
                "not one line plus the hint: {m:?} for {argv:?}"
            );
            assert_eq!(lines[lines.len() - 1], hint, "{m:?}");
            let first = lines[0];
            assert!(!first.trim().is_empty(), "empty first line: {m:?}");
            assert!(!first.starts_with("error"), "clap's own prefix: {m:?}");
            if lines.len() == 3 {
                assert!(lines[1].starts_with("  tip: "), "{m:?}");
            }
            // Findings 1 and 3 (FUZZING.md).
            for line in &lines {
                assert_eq!(raw_control(line), None, "{m:?} for {argv:?}");
            }
            assert!(m.len() < MESSAGE_MAX, "{} bytes: {m:?}", m.len());
        }
        Err(e) => panic!("not a usage error: {e:?} for {argv:?}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether some suffix of `a` (`--bind=ADDR`) is the address `ip`.
fn ends_with_ip(a: &str, ip: IpAddr) -> bool {
    a.char_indices()
        .any(|(i, _)| a[i..].parse::<IpAddr>() == Ok(ip))
}

// -------------------------------------------------------------- config ----

/// Where the `config` target's text claims to come from.
pub const CONFIG_PATH: &str = "/etc/accio-server/fuzz.toml";

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `config::from_str` on any text: settings in their documented ranges, or
/// one clean line that names the file, a line and a column.
pub fn config(data: &[u8]) {
    config_text(&String::from_utf8_lossy(data));
}

pub fn config_text(text: &str) {
    let path = Path::new(CONFIG_PATH);
    match config::from_str(text, path) {
        Ok(s) => {
            assert!(s.port.is_none_or(|p| p >= 1), "port 0 from {text:?}");
            assert!(
                !s.idle_timeout.is_zero() && s.idle_timeout <= YEAR,
                "idle_timeout {:?} from {text:?}",
                s.idle_timeout
            );
            assert!(
                s.shutdown_grace <= YEAR,
                "shutdown_grace {:?}",
                s.shutdown_grace
            );
            assert!(
                (1..=1_000_000).contains(&s.max_connections),
                "max_connections {} from {text:?}",
                s.max_connections
            );
            assert!(s.backlog >= 1, "backlog 0 from {text:?}");
            assert!(s.max_per_source <= 1_000_000, "{}", s.max_per_source);
            assert!(
                (1..=128).contains(&s.source_prefix_v6),
                "source_prefix_v6 {} from {text:?}",
                s.source_prefix_v6
            );
            assert!(s.min_rate <= i64::MAX as u64, "{}", s.min_rate);
            if let FreeSpace::Percent(p) = s.min_free_space {
                assert!(p <= 99, "min_free_space {p}% from {text:?}");
            }
            if let Some(d) = &s.save_dir {
                let b = d.as_os_str().as_bytes();
                assert!(!b.is_empty() && !b.contains(&0), "save_dir {d:?}");
            }
            assert_eq!(s.source.as_deref(), Some(path));
        }
        Err(Error::Config(m)) => {
            assert!(
                m.starts_with(&format!("invalid configuration file \"{CONFIG_PATH}\"")),
                "{m:?}"
            );
            assert_eq!(raw_control(&m), None, "{m:?} for {text:?}");
            // Finding 3 (FUZZING.md).
            assert!(m.len() < MESSAGE_MAX, "{} bytes: {m:?}", m.len());
            let (line, col) = position(&m).unwrap_or_else(|| panic!("no position: {m:?}"));
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(&line),
                "line {line} of {}: {m:?}",
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            assert!(
                (1..=width + 1).contains(&col),
                "column {col} of a line of {width}: {m:?}"
            );
        }
        Err(e) => panic!("not a config error: {e:?} for {text:?}"),
    }
}

/// The `line L, column C` a config error names.
fn position(m: &str) -> Option<(usize, usize)> {
    let at = m.find(" at line ")?;
    let rest = &m[at + " at line ".len()..];
    let (line, rest) = rest.split_once(", column ")?;
    let col = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((line.parse().ok()?, col.parse().ok()?))
}

// --------------------------------------------------------------- proxy ----

/// `proxy::parse` on every prefix of the input: an answer once given never
/// changes as bytes arrive, Incomplete only while a header can still
/// follow, and a header is exactly as long as its bytes say.
pub fn proxy(input: &[u8]) {
    let mut decided: Option<(usize, Parsed)> = None;
    // Past PEEK_MAX more bytes change nothing: the prefixes up to it and
    // the whole input.
    let ks = (0..=input.len().min(PEEK_MAX + 1)).chain([input.len()]);
    for k in ks {
        let p = proxy::parse(&input[..k]);
        match &decided {
            Some((at, d)) => assert_eq!(&p, d, "after {k} bytes, decided at {at}: {input:?}"),
            None if p != Parsed::Incomplete => decided = Some((k, p)),
            None => {
                // Undecided at PEEK_MAX would let a client hold a slot.
                assert!(k < PEEK_MAX, "undecided after {k} bytes: {input:?}");
            }
        }
    }
    let Some((at, d)) = decided else { return };
    match d {
        Parsed::Incomplete => unreachable!(),
        Parsed::Invalid(why) => {
            assert!(!why.is_empty() && raw_control(why).is_none(), "{why:?}");
        }
        Parsed::Header { len, source } => {
            if input[0] == b'P' {
                let crlf = input
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("a v1 header ends with CRLF");
                assert_eq!(len, crlf + 2, "{input:?}");
                assert!(len <= 107, "{input:?}");
                assert_eq!(at, len, "decided before the CRLF: {input:?}");
                let line = std::str::from_utf8(&input[..len]).ok();
                if input.starts_with(b"PROXY TCP4 ") {
                    assert!(source.is_some_and(|s| s.is_ipv4()), "{input:?}");
                } else if input.starts_with(b"PROXY TCP6 ") {
                    assert!(source.is_some_and(|s| s.is_ipv6()), "{input:?}");
                } else {
                    assert!(input.starts_with(b"PROXY UNKNOWN"), "{input:?}");
                    assert_eq!(source, None);
                }
                if let (Some(line), Some(src)) = (line, source) {
                    // The source is the line's third and fifth fields.
                    let f: Vec<&str> = line.trim_end().split(' ').collect();
                    assert_eq!(f[2].parse::<IpAddr>().ok(), Some(src.ip()), "{line:?}");
                    assert_eq!(f[4].parse::<u16>().ok(), Some(src.port()), "{line:?}");
                }
            } else {
                assert!(input.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{input:?}");
                let length = usize::from(u16::from_be_bytes([input[14], input[15]]));
                assert_eq!(len, 16 + length);
                let block = match (input[12], input[13]) {
                    (0x21, 0x11) => 12,
                    (0x21, 0x21) => 36,
                    (0x21, 0x31 | 0x32) => 216,
                    _ => 0,
                };
                assert!(length >= block && at == 16 + block, "{input:?}");
                match (input[12], input[13]) {
                    (0x21, 0x11) => assert!(source.is_some_and(|s| s.is_ipv4())),
                    (0x21, 0x21) => assert!(source.is_some_and(|s| s.is_ipv6())),
                    _ => assert_eq!(source, None),
                }
            }
        }
    }
}

// ----------------------------------------------------------------- env ----

/// Our pid unless the input names another.
pub const ENV_PID: u32 = 4242;

/// The `env` target's fields: the five variables (None: unset or, for all
/// but NOTIFY_SOCKET, not UTF-8) and our pid.
pub struct EnvInput<'a> {
    pub watchdog_usec: Option<&'a str>,
    pub watchdog_pid: Option<&'a str>,
    pub listen_pid: Option<&'a str>,
    pub listen_fds: Option<&'a str>,
    pub notify_socket: Option<&'a OsStr>,
    pub our_pid: u32,
}

pub fn env_of(data: &[u8]) -> EnvInput<'_> {
    let fields: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0).collect()
    };
    let text = |i: usize| fields.get(i).and_then(|f| std::str::from_utf8(f).ok());
    EnvInput {
        watchdog_usec: text(0),
        watchdog_pid: text(1),
        listen_pid: text(2),
        listen_fds: text(3),
        notify_socket: fields.get(4).map(|f| OsStr::from_bytes(f)),
        our_pid: text(5).and_then(|p| p.parse().ok()).unwrap_or(ENV_PID),
    }
}

/// A number as `str::parse` reads it for an unsigned type: an optional `+`,
/// then at least one decimal digit, and nothing else. None: not a number or
/// larger than `max`. Written without `parse` to be a second opinion.
fn decimal(s: &str, max: u64) -> Option<u64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u128 = 0;
    for b in digits.bytes() {
        v = v * 10 + u128::from(b - b'0');
        if v > u128::from(max) {
            return None;
        }
    }
    Some(v as u64)
}

/// The environment handling: `watchdog_from`, `listen_fds_from` and
/// `notify_addr` against a model of what systemd's variables mean.
pub fn env(data: &[u8]) {
    let e = env_of(data);

    let got = notify::watchdog_from(e.watchdog_usec, e.watchdog_pid, e.our_pid);
    let usec = e.watchdog_usec.and_then(|u| decimal(u, u64::MAX));
    let ours = e
        .watchdog_pid
        .is_none_or(|p| decimal(p, u64::from(u32::MAX)) == Some(u64::from(e.our_pid)));
    let want = usec
        .filter(|&u| u > 0 && ours)
        .map(|u| Duration::from_micros(u) / 2);
    assert_eq!(
        got, want,
        "WATCHDOG_USEC={:?} WATCHDOG_PID={:?} pid {}",
        e.watchdog_usec, e.watchdog_pid, e.our_pid
    );
    if e.watchdog_usec
        .is_some_and(|u| decimal(u, u64::MAX) == Some(0))
    {
        assert_eq!(got, None);
    }

    let got = listener::listen_fds_from(e.listen_pid, e.listen_fds, e.our_pid);
    let u32_max = u64::from(u32::MAX);
    let want = match e.listen_pid.map(|p| decimal(p, u32_max)) {
        None => Ok(0),
        Some(None) => Err("invalid LISTEN_PID"),
        Some(Some(p)) if p != u64::from(e.our_pid) => Ok(0),
        Some(Some(_)) => match e.listen_fds.map(|n| decimal(n, u32_max)) {
            None => Ok(0),
            Some(None) => Err("invalid LISTEN_FDS"),
            Some(Some(n)) if n + 3 > u32_max => Err("fd count overflowed"),
            Some(Some(n)) => Ok(n as usize),
        },
    };
    assert_eq!(
        got.as_ref().copied().map_err(String::as_str),
        want,
        "LISTEN_PID={:?} LISTEN_FDS={:?} pid {}",
        e.listen_pid,
        e.listen_fds,
        e.our_pid
    );

    if let Some(value) = e.notify_socket {
        let b = value.as_bytes();
        match notify::notify_addr(value) {
            Ok(addr) => {
                if let Some(name) = b.strip_prefix(b"@") {
                    assert_eq!(addr.as_abstract_name(), Some(name), "{value:?}");
                } else {
                    assert!(b.starts_with(b"/"), "{value:?}");
                    assert_eq!(addr.as_pathname(), Some(Path::new(value)), "{value:?}");
                }
            }
            Err(m) => {
                assert!(m.starts_with("NOTIFY_SOCKET=\""), "{m:?}");
                assert_eq!(raw_control(&m), None, "{m:?}");
                assert!(m.len() < MESSAGE_MAX, "{} bytes: {m:?}", m.len());
                // What fits sockaddr_un (108 bytes, a NUL after a path) is
                // always taken.
                let fits = !b.contains(&0)
                    && match b.first() {
                        Some(b'@') => b.len() <= 108,
                        Some(b'/') => b.len() < 108,
                        _ => false,
                    };
                assert!(!fits, "{value:?} refused: {m}");
            }
        }
    }
}
