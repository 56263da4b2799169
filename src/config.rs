//! The TOML configuration file, merged with the command line into
//! [`Settings`].
//!
//! Parsing is two-step so that every error can name its key and position:
//! serde (with `deny_unknown_fields`) turns the text into typed values and
//! validates ranges; when it fails, the byte span it reports is mapped back
//! to the dotted key that holds it with toml's spanned `DeTable`, and to a
//! 1-based line and column.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use crate::cli::Args;
use crate::error::Error;
use crate::log::{Level, Target, clean, quote};
use crate::output::Format;

/// The effective configuration: defaults, overlaid by the file, overlaid by
/// the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// None only under socket activation, where nothing is bound.
    pub port: Option<u16>,
    pub bind: IpAddr,
    /// Restarted by every received byte; a connection silent this long ends
    /// with ERROR.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a stop waits for open connections before ending them.
    pub shutdown_grace: Duration,
    pub backlog: u16,
    /// Where to save each connection's bytes; None: counting only.
    pub save_dir: Option<PathBuf>,
    /// fsync each saved file (and the directory) before it appears.
    pub fsync: bool,
    /// A transfer larger than this ends with ERROR; 0 = no limit.
    pub max_file_size: u64,
    /// Saving stops short of leaving less free space than this.
    pub min_free_space: FreeSpace,
    /// Open connections per source; 0 = no cap.
    pub max_per_source: u32,
    /// An IPv6 source is its address cut to this many bits.
    pub source_prefix_v6: u8,
    /// Bytes per second a client must average (after `idle_timeout`); 0 =
    /// off.
    pub min_rate: u64,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// What each stdout line looks like.
    pub output: Format,
    pub log_target: Target,
    pub log_level: Level,
    /// Where these settings came from, for the start line.
    pub source: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: None,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::ZERO,
            backlog: 128,
            save_dir: None,
            fsync: true,
            max_file_size: 0,
            min_free_space: FreeSpace::Percent(5),
            max_per_source: 16,
            source_prefix_v6: 64,
            min_rate: 0,
            proxy_protocol: false,
            output: Format::Plain,
            log_target: Target::Auto,
            log_level: Level::Info,
            source: None,
        }
    }
}

impl Settings {
    /// Build the settings for a start: read `args.config` if given and
    /// apply the command line on top.
    pub fn load(args: &Args) -> Result<Settings, Error> {
        let mut settings = match &args.config {
            Some(path) => from_file(path)?,
            None => Settings::default(),
        };
        if args.port.is_some() {
            settings.port = args.port;
        }
        if args.save_dir.is_some() {
            settings.save_dir = args.save_dir.clone();
        }
        if let Some(bind) = args.bind {
            settings.bind = bind;
        }
        if let Some(output) = args.output {
            settings.output = output;
        }
        Ok(settings)
    }

    /// A one-line description of what changed from `self` to `new`, split
    /// into what applies at once and what needs a restart.
    pub fn diff(&self, new: &Settings) -> (Vec<String>, Vec<String>) {
        let mut live = Vec::new();
        let mut restart = Vec::new();
        let note = |list: &mut Vec<String>, key: &str, old: String, new: String| {
            if old != new {
                list.push(format!("{key} {old} -> {new}"));
            }
        };
        let port = |p: Option<u16>| p.map_or("unset".to_string(), |p| p.to_string());
        note(&mut restart, "port", port(self.port), port(new.port));
        note(
            &mut restart,
            "bind",
            self.bind.to_string(),
            new.bind.to_string(),
        );
        note(
            &mut restart,
            "backlog",
            self.backlog.to_string(),
            new.backlog.to_string(),
        );
        note(
            &mut live,
            "idle_timeout",
            fmt_duration(self.idle_timeout),
            fmt_duration(new.idle_timeout),
        );
        note(
            &mut live,
            "max_connections",
            self.max_connections.to_string(),
            new.max_connections.to_string(),
        );
        note(
            &mut live,
            "shutdown_grace",
            fmt_duration(self.shutdown_grace),
            fmt_duration(new.shutdown_grace),
        );
        note(
            &mut live,
            "max_file_size",
            self.max_file_size.to_string(),
            new.max_file_size.to_string(),
        );
        note(
            &mut live,
            "min_free_space",
            self.min_free_space.to_string(),
            new.min_free_space.to_string(),
        );
        note(
            &mut live,
            "fsync",
            self.fsync.to_string(),
            new.fsync.to_string(),
        );
        note(
            &mut live,
            "max_per_source",
            self.max_per_source.to_string(),
            new.max_per_source.to_string(),
        );
        note(
            &mut live,
            "source_prefix_v6",
            self.source_prefix_v6.to_string(),
            new.source_prefix_v6.to_string(),
        );
        note(
            &mut live,
            "min_rate",
            self.min_rate.to_string(),
            new.min_rate.to_string(),
        );
        note(
            &mut restart,
            "proxy_protocol",
            self.proxy_protocol.to_string(),
            new.proxy_protocol.to_string(),
        );
        note(
            &mut restart,
            "output",
            self.output.to_string(),
            new.output.to_string(),
        );
        note(
            &mut restart,
            "save_dir",
            format!("{:?}", self.save_dir),
            format!("{:?}", new.save_dir),
        );
        note(
            &mut live,
            "log.target",
            self.log_target.to_string(),
            new.log_target.to_string(),
        );
        note(
            &mut live,
            "log.level",
            self.log_level.to_string(),
            new.log_level.to_string(),
        );
        (live, restart)
    }
}

/// One documented key of the file, for accio-server.toml(5).
pub struct KeyDoc {
    pub name: &'static str,
    pub default: &'static str,
    /// "live" or "restart needed".
    pub reload: &'static str,
    pub text: &'static str,
}

/// The file's format, before the keys: one paragraph each.
pub const FILE_FORMAT: &[&str] = &[
    "accio-server reads this TOML file when started with --config FILE, and again on SIGHUP \
     (systemctl reload accio-server). Every key is optional; a key that is not there keeps its \
     default. A key it does not know, a value of the wrong type or out of range stops the start \
     with exit status 78 and one line naming the file, the key and the line and column; on a \
     reload such a file changes nothing (the error is logged) and serving goes on. The file \
     must be a regular file of at most 1 MiB.",
    "Durations are a whole number and a unit in quotes: \"500ms\", \"10s\", \"2m\", \"1h\". \
     Sizes are a number of bytes, or a string of digits with an optional binary unit: \
     \"512KiB\", \"100MiB\", \"2GiB\", \"1TiB\". Keys marked live apply at the reload; the \
     others need a restart (a reload that changes one logs a warning).",
    "Check a file without starting: accio-server --config FILE --check-config PORT.",
];

/// Every key, in the order of the shipped example.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "port",
        default: "none",
        reload: "restart needed",
        text: "TCP port, 1 to 65535. A PORT argument overrides it. Not bound under socket \
               activation, where the .socket unit decides the port.",
    },
    KeyDoc {
        name: "bind",
        default: "\"0.0.0.0\"",
        reload: "restart needed",
        text: "The IPv4 or IPv6 literal to listen on; \"::\" listens dual-stack. Host names are \
               not accepted. --bind overrides it.",
    },
    KeyDoc {
        name: "idle_timeout",
        default: "\"10s\"",
        reload: "live, for open connections from their next byte on",
        text: "A connection that sends nothing for this long ends with ERROR. The clock starts \
               at the accept and restarts at every byte. Greater than zero.",
    },
    KeyDoc {
        name: "max_connections",
        default: "1024",
        reload: "live",
        text: "Connections served at once, 1 to 1000000; more wait in the listen backlog. 1 is \
               strictly sequential. Limited to what the open-file limit allows (a warning says \
               so).",
    },
    KeyDoc {
        name: "max_per_source",
        default: "16",
        reload: "live",
        text: "Open connections per client source (an IPv4 address, or an IPv6 network, see \
               source_prefix_v6); one more is reset at once with an ERROR line and no greeting. \
               0 means no cap.",
    },
    KeyDoc {
        name: "source_prefix_v6",
        default: "64",
        reload: "live, for new connections",
        text: "An IPv6 client counts as its address cut to this many bits, 1 to 128.",
    },
    KeyDoc {
        name: "min_rate",
        default: "0",
        reload: "live",
        text: "Bytes per second a client must average: a connection open longer than \
               idle_timeout + bytes / min_rate ends with ERROR. 0 turns it off.",
    },
    KeyDoc {
        name: "shutdown_grace",
        default: "\"0s\"",
        reload: "live",
        text: "How long a stop (SIGTERM, SIGINT, SIGQUIT) waits for open connections before it \
               ends them with ERROR.",
    },
    KeyDoc {
        name: "backlog",
        default: "128",
        reload: "restart needed",
        text: "The listen backlog when the server binds its socket itself, 1 to 65535.",
    },
    KeyDoc {
        name: "proxy_protocol",
        default: "false",
        reload: "restart needed",
        text: "true: every connection starts with a PROXY protocol header, version 1 or 2, as \
               HAProxy, nginx and AWS NLB send it. The greeting follows the header; the header \
               is not counted; logs and max_per_source use the client address it carries.",
    },
    KeyDoc {
        name: "output",
        default: "\"plain\"",
        reload: "restart needed",
        text: "Each connection's stdout line: \"plain\" (the byte count, or ERROR) or \"json\" \
               (one object: conn, peer, bytes, result, reason, secs, file). --output overrides \
               it.",
    },
    KeyDoc {
        name: "save_dir",
        default: "unset (nothing is saved)",
        reload: "restart needed",
        text: "Also save connection N's bytes as N.file in this directory. --save-dir overrides \
               it.",
    },
    KeyDoc {
        name: "fsync",
        default: "true",
        reload: "live",
        text: "Flush each saved file and the directory to disk before the file appears and its \
               count is printed.",
    },
    KeyDoc {
        name: "max_file_size",
        default: "\"0\" (no limit)",
        reload: "live",
        text: "A connection that sends more ends with ERROR and a reset, in counting mode too.",
    },
    KeyDoc {
        name: "min_free_space",
        default: "\"5%\"",
        reload: "live",
        text: "A size, or a percentage of the save directory's file system (\"0%\" to \"99%\"); \
               \"0\" turns it off. A transfer that would leave less free space ends with ERROR, \
               and while free space is below it new clients are refused.",
    },
    KeyDoc {
        name: "[log] target",
        default: "\"auto\"",
        reload: "live",
        text: "\"auto\": stderr when it is a terminal, else syslog when /dev/log accepts \
               messages, else stderr. \"syslog\" or \"stderr\" force one.",
    },
    KeyDoc {
        name: "[log] level",
        default: "\"info\"",
        reload: "live",
        text: "The least severe message kept: \"error\", \"warning\" (or \"warn\"), \"info\" or \
               \"debug\". Start, stop and reload lines are kept at every level but \"error\".",
    },
];

/// A short example for the manual.
pub const EXAMPLE: &str = "idle_timeout = \"30s\"
max_per_source = 8
save_dir = \"/var/lib/accio-server\"
max_file_size = \"10GiB\"

[log]
level = \"warning\"";

/// Render a duration the way the configuration file writes it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    if ms == 0 {
        "0s".into()
    } else {
        format!("{ms}ms")
    }
}

/// The largest configuration file read; anything larger is refused unread.
const MAX_FILE: u64 = 1 << 20;

/// Read and validate a configuration file. Only a regular file of at most
/// [`MAX_FILE`] is read: the path is opened without blocking (a FIFO would
/// hang a start, or the serving loop at a reload) and checked with fstat
/// before a byte is read (`/dev/zero` would never end).
pub fn from_file(path: &Path) -> Result<Settings, Error> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| {
        Error::Config(format!(
            "cannot read configuration file {}: {why}",
            quote(&path.display().to_string())
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(describe_io(&e)))?;
    let meta = file.metadata().map_err(|e| fail(describe_io(&e)))?;
    if meta.is_dir() {
        return Err(fail("it is a directory, not a file".into()));
    }
    if !meta.is_file() {
        return Err(fail(
            "it is not a regular file (a FIFO, device or socket is never read)".into(),
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(fail(format!(
            "it is {} bytes, more than a configuration file may be (1 MiB)",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(describe_io(&e)))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(fail("it grew past 1 MiB while being read".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8 text".into()))?;
    from_str(&text, path)
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file (check the --config path)".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (check the file's mode and owner)".into()
        }
        std::io::ErrorKind::IsADirectory => "it is a directory, not a file".into(),
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// Parse configuration text; `path` is only used in messages.
pub fn from_str(text: &str, path: &Path) -> Result<Settings, Error> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let mut msg = format!(
            "invalid configuration file {}",
            quote(&path.display().to_string())
        );
        // Every error names a position; toml gives none for a few (such
        // as nesting too deep), then the start of the file is the best.
        let start = e.span().map_or(0, |span| span.start);
        let (line, col) = line_col(text, start);
        let key = match e.span() {
            Some(_) => key_at(text, start),
            None => first_key(text),
        };
        if let Some(key) = key {
            msg.push_str(&format!(": key `{}`", clean(&key, 60)));
        }
        msg.push_str(&format!(" at line {line}, column {col}"));
        let what = e.message().trim_end();
        let what = if what.contains("recursion limit") {
            "keys or tables are nested too deeply"
        } else {
            what
        };
        msg.push_str(&format!(": {}", clean(what, 600)));
        Error::Config(msg)
    })?;
    let mut s = Settings {
        source: Some(path.to_path_buf()),
        ..Settings::default()
    };
    if let Some(Port(p)) = file.port {
        s.port = Some(p);
    }
    if let Some(Ip(ip)) = file.bind {
        s.bind = ip;
    }
    if let Some(Positive(d)) = file.idle_timeout {
        s.idle_timeout = d;
    }
    if let Some(AtLeastOne(n)) = file.max_connections {
        s.max_connections = n;
    }
    if let Some(Dur(d)) = file.shutdown_grace {
        s.shutdown_grace = d;
    }
    if let Some(Backlog(b)) = file.backlog {
        s.backlog = b;
    }
    if let Some(SaveDirPath(d)) = file.save_dir {
        s.save_dir = Some(d);
    }
    if let Some(f) = file.fsync {
        s.fsync = f;
    }
    if let Some(Size(n)) = file.max_file_size {
        s.max_file_size = n;
    }
    if let Some(f) = file.min_free_space {
        s.min_free_space = f;
    }
    if let Some(Count(n)) = file.max_per_source {
        s.max_per_source = n;
    }
    if let Some(Prefix(p)) = file.source_prefix_v6 {
        s.source_prefix_v6 = p;
    }
    if let Some(Count64(n)) = file.min_rate {
        s.min_rate = n;
    }
    if let Some(p) = file.proxy_protocol {
        s.proxy_protocol = p;
    }
    if let Some(OutputFormat(f)) = file.output {
        s.output = f;
    }
    if let Some(log) = file.log {
        if let Some(t) = log.target {
            s.log_target = t;
        }
        if let Some(l) = log.level {
            s.log_level = l;
        }
    }
    Ok(s)
}

/// The first key written in the file, for an error toml cannot place.
fn first_key(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let key = line.split('=').next()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose name or value covers byte `offset`, if the text is
/// syntactically valid TOML.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = toml::de::DeTable::parse(text).ok()?;
    find_key(root.get_ref(), offset)
}

/// Tables are searched whole: a `[log]` header's span does not cover the
/// keys below it.
fn find_key(table: &toml::de::DeTable<'_>, offset: usize) -> Option<String> {
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if key.span().contains(&offset) {
            return Some(name);
        }
        if let Some(inner) = value.get_ref().as_table() {
            if let Some(sub) = find_key(inner, offset) {
                return Some(format!("{name}.{sub}"));
            }
        } else if value.span().contains(&offset) {
            return Some(name);
        }
    }
    None
}

/// The file's shape. Every field has its own type so that range errors are
/// reported by serde with the value's span.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    port: Option<Port>,
    bind: Option<Ip>,
    idle_timeout: Option<Positive>,
    max_connections: Option<AtLeastOne>,
    shutdown_grace: Option<Dur>,
    backlog: Option<Backlog>,
    save_dir: Option<SaveDirPath>,
    fsync: Option<bool>,
    max_file_size: Option<Size>,
    min_free_space: Option<FreeSpace>,
    max_per_source: Option<Count>,
    source_prefix_v6: Option<Prefix>,
    min_rate: Option<Count64>,
    proxy_protocol: Option<bool>,
    output: Option<OutputFormat>,
    log: Option<LogSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    target: Option<Target>,
    level: Option<Level>,
}

struct Port(u16);
struct Ip(IpAddr);
struct Dur(Duration);
struct Positive(Duration);
struct AtLeastOne(usize);
struct Backlog(u16);
struct SaveDirPath(PathBuf);
struct Size(u64);
struct Count(u32);
struct OutputFormat(Format);

impl<'de> Deserialize<'de> for OutputFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Value::deserialize(d)?
            .text("must be \"plain\" or \"json\"")
            .map_err(de::Error::custom)?;
        Format::parse(&s)
            .map(OutputFormat)
            .map_err(de::Error::custom)
    }
}
struct Count64(u64);
struct Prefix(u8);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 0, 1_000_000, "a number from 0 (no cap) to 1000000").map(|n| Count(n as u32))
    }
}

impl<'de> Deserialize<'de> for Count64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 0, i64::MAX, "bytes per second, 0 (off) or more").map(|n| Count64(n as u64))
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 128, "a prefix length from 1 to 128").map(|n| Prefix(n as u8))
    }
}

/// `min_free_space`: bytes, or a percentage of the file system's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(u8),
}

impl fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeSpace::Bytes(b) => write!(f, "{b}"),
            FreeSpace::Percent(p) => write!(f, "{p}%"),
        }
    }
}

const SIZE_HINT: &str = "write bytes as a number, or a string with a unit: \"0\", \"512KiB\", \"100MiB\", \"2GiB\", \"1TiB\"";

fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let per: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("{} is not a size ({SIZE_HINT})", quote(s))),
    };
    if num.is_empty() {
        return Err(format!("{} is not a size ({SIZE_HINT})", quote(s)));
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| format!("{} is too large", quote(s)))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) => u64::try_from(n)
                .map(Size)
                .map_err(|_| de::Error::custom(format!("{n} is negative ({SIZE_HINT})"))),
            Value::Text(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "must be a size ({SIZE_HINT}), not {}",
                other.describe()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "or a percentage of the file system, \"5%\" (0% to 99%)";
        match Value::deserialize(d)? {
            Value::Int(n) => u64::try_from(n)
                .map(FreeSpace::Bytes)
                .map_err(|_| de::Error::custom(format!("{n} is negative ({SIZE_HINT})"))),
            other @ (Value::Bool(_) | Value::Float(_)) => Err(de::Error::custom(format!(
                "must be a size ({SIZE_HINT}), {hint}, not {}",
                other.describe()
            ))),
            Value::Text(s) => match s.strip_suffix('%') {
                Some(p) if (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(FreeSpace::Percent).map_err(de::Error::custom)
                }
                Some(_) => Err(de::Error::custom(format!(
                    "{} is not a percentage ({hint})",
                    quote(&s)
                ))),
                None => parse_size(&s)
                    .map(FreeSpace::Bytes)
                    .map_err(|e| de::Error::custom(format!("{e}, {hint}"))),
            },
        }
    }
}

impl<'de> Deserialize<'de> for SaveDirPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Value::deserialize(d)?
            .text("must be a directory path in quotes")
            .map_err(de::Error::custom)?;
        if s.is_empty() || s.contains('\0') {
            return Err(de::Error::custom(
                "save_dir must be a non-empty directory path",
            ));
        }
        Ok(SaveDirPath(PathBuf::from(s)))
    }
}

/// Any single TOML value, so that each key can say in a user's words what
/// it expected and what it got, instead of serde's "expected i64".
enum Value {
    Int(i64),
    Text(String),
    Bool(bool),
    Float(f64),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (a number, a string or true/false)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    /// What the file holds, for messages.
    fn describe(&self) -> String {
        match self {
            Value::Int(n) => format!("the number {n}"),
            Value::Text(s) => format!("the string {}", quote(s)),
            Value::Bool(b) => format!("{b}"),
            Value::Float(x) => format!("the number {x}"),
        }
    }

    /// A whole number in `lo..=hi`; `what` says what the key is.
    fn int_in(self, lo: i64, hi: i64, what: &str) -> Result<i64, String> {
        match self {
            Value::Int(n) if (lo..=hi).contains(&n) => Ok(n),
            Value::Int(n) => Err(format!("{n} is out of range: {what}")),
            Value::Text(s) if s.parse::<i64>().is_ok() => Err(format!(
                "must be {what}, written without quotes (not the string {})",
                quote(&s)
            )),
            other => Err(format!("must be {what}, not {}", other.describe())),
        }
    }

    /// A string; `hint` says what to write instead of anything else.
    fn text(self, hint: &str) -> Result<String, String> {
        match self {
            Value::Text(s) => Ok(s),
            other => Err(format!("{hint}, not {}", other.describe())),
        }
    }
}

fn int_in<'de, D: Deserializer<'de>>(d: D, lo: i64, hi: i64, what: &str) -> Result<i64, D::Error> {
    Value::deserialize(d)?
        .int_in(lo, hi, what)
        .map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 65535, "a port number from 1 to 65535").map(|n| Port(n as u16))
    }
}

impl<'de> Deserialize<'de> for Backlog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 65535, "a number from 1 to 65535").map(|n| Backlog(n as u16))
    }
}

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 1_000_000, "a number from 1 to 1000000").map(|n| AtLeastOne(n as usize))
    }
}

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "write an IPv4 or IPv6 literal such as \"0.0.0.0\", \"127.0.0.1\" or \"::\"; host names are not accepted";
        let s = Value::deserialize(d)?
            .text(&format!("must be an IP address in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        parse_ip(&s).map(Ip).map_err(de::Error::custom)
    }
}

/// An IPv4 or IPv6 literal (the `bind` key and `--bind`).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{} is not an IP address (write an IPv4 or IPv6 literal such as \"0.0.0.0\", \"127.0.0.1\" or \"::\"; host names are not accepted)",
            quote(s)
        )
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match Value::deserialize(d)? {
            Value::Int(n) => {
                return Err(de::Error::custom(format!(
                    "durations need a unit, e.g. \"{n}s\" or \"{n}ms\", not the bare number {n}"
                )));
            }
            other => other
                .text("must be a duration in quotes, e.g. \"10s\"")
                .map_err(de::Error::custom)?,
        };
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Dur(dur) = Dur::deserialize(d)?;
        if dur.is_zero() {
            return Err(de::Error::custom(
                "the timeout must be greater than zero (e.g. \"10s\")",
            ));
        }
        Ok(Positive(dur))
    }
}

/// `^[0-9]+(ms|s|m|h)$`: a whole number and a unit, nothing else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{} is not a duration (write a whole number with a unit: \"500ms\", \"10s\", \"2m\", \"1h\")",
            quote(s)
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .filter(|&ms| ms <= 365 * 24 * 3_600_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{} is too long (at most a year)", quote(s)))
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "use \"auto\", \"syslog\" or \"stderr\"";
        let s = Value::deserialize(d)?
            .text(&format!("must be a log target in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        match s.as_str() {
            "auto" => Ok(Target::Auto),
            "syslog" => Ok(Target::Syslog),
            "stderr" => Ok(Target::Stderr),
            _ => Err(de::Error::custom(format!(
                "{} is not a log target ({hint})",
                quote(&s)
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "use \"error\", \"warning\", \"info\" or \"debug\"";
        let s = Value::deserialize(d)?
            .text(&format!("must be a log level in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        match s.as_str() {
            "error" => Ok(Level::Err),
            // What syslog(3) and most people call it.
            "warning" | "warn" => Ok(Level::Warning),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(de::Error::custom(format!(
                "{} is not a log level ({hint})",
                quote(&s)
            ))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Auto => "auto",
            Target::Syslog => "syslog",
            Target::Stderr => "stderr",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        from_str(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_defaults() {
        let s = parse("").expect("empty file");
        assert_eq!(s.idle_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 1024);
        assert_eq!(s.max_per_source, 16);
        assert_eq!(s.source_prefix_v6, 64);
        assert_eq!(s.port, None);
    }

    #[test]
    fn errors_name_key_and_position() {
        let e = parse("port = 5000\nidle_timeout = \"10\"\n").unwrap_err();
        assert!(
            e.contains("`idle_timeout`") && e.contains("line 2, column 16"),
            "{e}"
        );
        let e = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert!(e.contains("`log.level`") && e.contains("line 2"), "{e}");
        let e = parse("colour = 1\n").unwrap_err();
        assert!(
            e.contains("colour") && e.contains("line 1, column 1"),
            "{e}"
        );
        let e = parse("port = \"80\"\n").unwrap_err();
        assert!(
            e.contains("`port`") && e.contains("line 1, column 8"),
            "{e}"
        );
        let e = parse("port = [\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "10",
            "1.5s",
            " 1s",
            "1 s",
            "s",
            "-1s",
            "1S",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_render_in_the_largest_exact_unit() {
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "90s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbé = x", 6), (2, 4));
    }
}
