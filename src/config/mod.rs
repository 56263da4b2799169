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

mod keys;
mod locate;
mod values;

pub use keys::{EXAMPLE, FILE_FORMAT, KEYS, KeyDoc};
use locate::{first_key, key_at, line_col};
use values::*;
pub use values::{FreeSpace, parse_duration, parse_ip};

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
        msg.push_str(&format!(": {}", clean(what, 500)));
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
