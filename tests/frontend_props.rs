//! Property tests of the front end: any command line and any configuration
//! file either give valid settings or a clean usage/config error with the
//! documented exit code, never a panic. Library calls cover many cases
//! cheaply; a few hundred runs of the real binary (`--check-config`) check
//! the exit code, the `ERROR:` line and the empty stdout end to end.
//!
//! (Over 500 lines because the generators of valid and invalid values for
//! every option and key are kept beside the properties that use them.)

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use accio_server::cli::{self, Action};
use accio_server::config;
use accio_server::error::Error;
use accio_server::exit::Status;
use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `cases`, or `ACCIO_PROP_CASES` for a longer fuzzing run.
fn props(cases: u32) -> PropConfig {
    let cases = std::env::var("ACCIO_PROP_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    PropConfig {
        cases,
        // No regression files next to the tests: a failure prints its input.
        failure_persistence: None,
        ..PropConfig::default()
    }
}

// ---------------------------------------------------------------- argv ----

/// Words a user (or a fuzzer) is likely to type: every option in every
/// spelling, valid ports and plain garbage; with [`common::BAD_PORTS`].
const LIKELY: &[&str] = &[
    "-c",
    "--config",
    "--config=",
    "--config=f.toml",
    "--check-config",
    "--save-dir",
    "--save-dir=/tmp",
    "-h",
    "--help",
    "-V",
    "--version",
    "--",
    "-",
    "-x",
    "--bogus",
    "-cf.toml",
    "5000",
    "1",
    "65535",
    "0005000",
];

fn arg() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => prop::sample::select([LIKELY, common::BAD_PORTS].concat()).prop_map(OsString::from),
        2 => any::<String>().prop_map(OsString::from),
        1 => "[0-9+-]{0,7}".prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

fn argv() -> impl Strategy<Value = Vec<OsString>> {
    prop::collection::vec(arg(), 0..6).prop_map(|mut v| {
        v.insert(0, OsString::from("server"));
        v
    })
}

fn check_cli(argv: &[OsString]) -> Result<(), TestCaseError> {
    match cli::parse(argv.to_vec()) {
        Ok(Action::Print(text)) => {
            prop_assert!(!text.trim().is_empty(), "empty help/version text");
            // --help, --version, or a cluster of short flags with h or V.
            let asks = |a: &OsString| {
                let a = a.to_string_lossy();
                a == "--help"
                    || a == "--version"
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains(['h', 'V']))
            };
            prop_assert!(
                argv.iter().any(asks),
                "printed text without -h/-V: {argv:?}"
            );
        }
        Ok(Action::Run(args)) => {
            if let Some(p) = args.port {
                prop_assert!(p >= 1, "port 0 accepted from {argv:?}");
                // The port came from one argument written the strict way.
                prop_assert!(
                    argv[1..]
                        .iter()
                        .filter_map(|a| a.to_str())
                        .any(|a| accio_server::cmdline::parse_port(a) == Ok(p)),
                    "port {p} from nowhere: {argv:?}"
                );
            }
        }
        Err(e) => check_error(&e, 64, &argv)?,
    }
    Ok(())
}

fn check_error(e: &Error, code: u8, input: &dyn std::fmt::Debug) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.exit_code(), code, "{:?} for {:?}", e, input);
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("");
    prop_assert!(
        !first.trim().is_empty(),
        "empty first line in {msg:?} for {input:?}"
    );
    // The binary prefixes `ERROR: `; the message must not carry clap's own.
    prop_assert!(!first.starts_with("error:"), "{msg:?}");
    Ok(())
}

// -------------------------------------------------------------- config ----

/// A configuration as a model: rendering it must parse back to exactly
/// these values.
#[derive(Debug, Clone)]
struct Model {
    port: Option<u16>,
    bind: Option<String>,
    idle_timeout: Option<(u64, &'static str)>,
    max_connections: Option<usize>,
    shutdown_grace: Option<(u64, &'static str)>,
    backlog: Option<u16>,
    fsync: Option<bool>,
    target: Option<&'static str>,
    level: Option<&'static str>,
}

fn unit_ms(unit: &str) -> u64 {
    match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => 3_600_000,
    }
}

fn duration(positive: bool) -> impl Strategy<Value = (u64, &'static str)> {
    (
        prop::sample::select(&["ms", "s", "m", "h"][..]),
        0u64..100_000,
    )
        .prop_map(move |(unit, n)| {
            let max = 365 * 24 * 3_600_000 / unit_ms(unit);
            let n = n % (max + 1);
            (if positive { n.max(1) } else { n }, unit)
        })
}

fn model() -> impl Strategy<Value = Model> {
    (
        prop::option::of(1u16..=65535),
        prop::option::of(prop::sample::select(
            &["0.0.0.0", "127.0.0.1", "::", "::1", "10.1.2.3", "fe80::1"][..],
        )),
        prop::option::of(duration(true)),
        prop::option::of(prop_oneof![1usize..=100, 1usize..=1_000_000]),
        prop::option::of(duration(false)),
        prop::option::of(1u16..=65535),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(&["auto", "syslog", "stderr"][..])),
        prop::option::of(prop::sample::select(
            &["error", "warning", "info", "debug"][..],
        )),
    )
        .prop_map(
            |(port, bind, idle, max, grace, backlog, fsync, target, level)| Model {
                port,
                bind: bind.map(str::to_string),
                idle_timeout: idle,
                max_connections: max,
                shutdown_grace: grace,
                backlog,
                fsync,
                target,
                level,
            },
        )
}

fn render(m: &Model) -> String {
    let mut t = String::new();
    if let Some(p) = m.port {
        t += &format!("port = {p}\n");
    }
    if let Some(b) = &m.bind {
        t += &format!("bind = \"{b}\"\n");
    }
    if let Some((n, u)) = m.idle_timeout {
        t += &format!("idle_timeout = \"{n}{u}\"\n");
    }
    if let Some(n) = m.max_connections {
        t += &format!("max_connections = {n}\n");
    }
    if let Some((n, u)) = m.shutdown_grace {
        t += &format!("# the grace\nshutdown_grace = \"{n}{u}\"\n");
    }
    if let Some(n) = m.backlog {
        t += &format!("backlog = {n}\n");
    }
    if let Some(f) = m.fsync {
        t += &format!("fsync = {f}\n");
    }
    if m.target.is_some() || m.level.is_some() {
        t += "\n[log]\n";
        if let Some(x) = m.target {
            t += &format!("target = \"{x}\"\n");
        }
        if let Some(x) = m.level {
            t += &format!("level = \"{x}\"\n");
        }
    }
    t
}

/// Small edits that turn valid TOML into almost-valid TOML: the inputs
/// most likely to reach the error paths (positions, key lookup).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DupLine(usize),
    Replace(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        prop::sample::select(
            &[
                "=",
                "\"",
                "[",
                "]",
                "[log]",
                "\n",
                "#",
                "'",
                "\\",
                "-",
                "1",
                "0",
                ".",
                "é",
                "\u{0}",
                "\r",
                "port = 0\n",
                "x = 1\n",
                "[[log]]",
                "inf",
                "nan",
                "1e9",
                "0x10",
                "true",
                "\"\"\"",
                "{",
                "}",
                ",",
                "99999999999999999999",
            ][..]
        )
        .prop_map(str::to_string),
        any::<String>(),
    ];
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), junk).prop_map(|(at, s)| Edit::Insert(at, s)),
        any::<usize>().prop_map(Edit::DupLine),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Replace(at, c)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len();
        match e {
            Edit::Delete(at, n) if len > 0 => {
                let at = at % len;
                let end = (at + n).min(len);
                chars.drain(at..end);
            }
            Edit::Insert(at, s) => {
                let at = at % (len + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::DupLine(i) => {
                let s: String = chars.iter().collect();
                let lines: Vec<&str> = s.split_inclusive('\n').collect();
                if !lines.is_empty() {
                    let i = i % lines.len();
                    let mut out = String::new();
                    for (j, l) in lines.iter().enumerate() {
                        out += l;
                        if j == i {
                            out += l;
                        }
                    }
                    chars = out.chars().collect();
                }
            }
            Edit::Replace(at, c) if len > 0 => chars[at % len] = *c,
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Free-form `key = value` lines mixing known and unknown keys with valid
/// and invalid values.
fn key_values() -> impl Strategy<Value = String> {
    let key = prop::sample::select(
        &[
            "port",
            "bind",
            "idle_timeout",
            "max_connections",
            "shutdown_grace",
            "backlog",
            "save_dir",
            "fsync",
            "target",
            "level",
            "colour",
            "Port",
            "log.level",
            "log",
        ][..],
    );
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..70_000).prop_map(|n| n.to_string()),
        "\"[0-9]{0,6}(ms|s|m|h|S|us|)\"",
        "\"[0-9a-f:.]{0,20}\"",
        prop::sample::select(
            &[
                "\"auto\"",
                "\"stderr\"",
                "\"syslog\"",
                "\"info\"",
                "\"debug\"",
                "\"loud\"",
                "true",
                "false",
                "1.5",
                "-0",
                "[]",
                "{}",
                "\"\"",
                "inf",
                "\"/tmp/x\"",
                "1000001",
                "1000000",
                "0",
            ][..]
        )
        .prop_map(str::to_string),
    ];
    prop::collection::vec(
        (prop::bool::weighted(0.15), key, value).prop_map(|(section, k, v)| {
            if section {
                format!("[log]\n{k} = {v}\n")
            } else {
                format!("{k} = {v}\n")
            }
        }),
        0..6,
    )
    .prop_map(|lines| lines.concat())
}

fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (model(), prop::collection::vec(edit(), 1..4))
            .prop_map(|(m, edits)| apply(&render(&m), &edits)),
        2 => key_values(),
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => any::<String>(),
    ]
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("/etc/accio-server/fuzz.toml");
    match config::from_str(text, path) {
        Ok(s) => {
            prop_assert!(s.port.is_none_or(|p| p >= 1), "port 0 from {text:?}");
            prop_assert!(
                !s.idle_timeout.is_zero() && s.idle_timeout <= YEAR,
                "idle_timeout {:?} from {text:?}",
                s.idle_timeout
            );
            prop_assert!(s.shutdown_grace <= YEAR, "{:?}", s.shutdown_grace);
            prop_assert!(
                (1..=1_000_000).contains(&s.max_connections),
                "max_connections {} from {text:?}",
                s.max_connections
            );
            prop_assert!(s.backlog >= 1, "backlog 0 from {text:?}");
            prop_assert_eq!(s.source.as_deref(), Some(path));
        }
        Err(e) => {
            check_error(&e, 78, &text)?;
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz.toml"), "file not named: {msg}");
            // `line L, column C` is 1-based and inside the text.
            if let Some(at) = msg.find(" at line ") {
                let rest = &msg[at + 9..];
                let line: usize = rest
                    .split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let lines = text.split('\n').count();
                prop_assert!(line >= 1 && line <= lines, "line {line} of {lines}: {msg}");
                prop_assert!(rest.contains(", column "), "{msg}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(props(2000))]

    #[test]
    fn any_argv_is_a_run_a_print_or_a_usage_error(argv in argv()) {
        check_cli(&argv)?;
    }

    #[test]
    fn any_config_text_is_settings_in_range_or_a_config_error(text in config_text()) {
        check_config(&text)?;
    }

    #[test]
    fn a_valid_config_parses_to_exactly_its_values(m in model()) {
        let text = render(&m);
        let s = match config::from_str(&text, Path::new("m.toml")) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n--- text:\n{text}"))),
        };
        let ms = |d: Option<(u64, &str)>| d.map(|(n, u)| Duration::from_millis(n * unit_ms(u)));
        prop_assert_eq!(s.port, m.port);
        prop_assert_eq!(s.bind.to_string(), m.bind.clone().map_or("0.0.0.0".to_string(), |b| b.parse::<std::net::IpAddr>().unwrap().to_string()));
        prop_assert_eq!(s.idle_timeout, ms(m.idle_timeout).unwrap_or(Duration::from_secs(10)));
        prop_assert_eq!(s.max_connections, m.max_connections.unwrap_or(1024));
        prop_assert_eq!(s.shutdown_grace, ms(m.shutdown_grace).unwrap_or(Duration::ZERO));
        prop_assert_eq!(s.backlog, m.backlog.unwrap_or(128));
        prop_assert_eq!(s.log_target.to_string(), m.target.unwrap_or("auto"));
        prop_assert_eq!(format!("{}", s.log_level), m.level.unwrap_or("info"));
    }
}

// -------------------------------------------------------------- binary ----

/// The file bytes for a real `--check-config` run: mostly text as above,
/// sometimes not UTF-8 at all.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => config_text().prop_map(String::into_bytes),
        1 => (model(), 0usize..64, any::<u8>()).prop_map(|(m, at, b)| {
            let mut v = render(&m).into_bytes();
            let at = at % (v.len() + 1);
            v.insert(at, b | 0x80);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(props(300))]

    #[test]
    fn the_binary_checks_any_file_cleanly(
        bytes in file_bytes(),
        port in prop::option::of(prop::sample::select(&["5000", "0", "65536", "x", "1"][..])),
        extra in prop::option::of(arg()),
    ) {
        let dir = common::TempDir::new("props");
        let file = dir.path("server.toml");
        std::fs::write(&file, &bytes).expect("write config");
        let mut cmd = Command::new(common::BIN);
        cmd.arg("--config").arg(&file).arg("--check-config");
        if let Some(p) = port {
            cmd.arg(p);
        }
        if let Some(x) = &extra {
            // An extra word that is an option could print help and exit 0.
            // (argv cannot hold a NUL byte).
            if !x.to_string_lossy().starts_with('-') && !x.as_encoded_bytes().contains(&0) {
                cmd.arg(x);
            }
        }
        let out = cmd
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .output()
            .expect("run server");
        let code = out.status.code();
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("");
        prop_assert!(out.stdout.is_empty(), "stdout {:?}", out.stdout);
        prop_assert!(
            matches!(code, Some(0 | 64 | 73 | 78)),
            "exit {code:?}: {err}"
        );
        if code == Some(0) {
            prop_assert!(first.starts_with("configuration OK"), "{err}");
            prop_assert_eq!(err.lines().count(), 1, "{}", err);
        } else {
            prop_assert!(first.starts_with("ERROR: "), "{err}");
            prop_assert!(first.len() > "ERROR: ".len(), "{err}");
        }
        // The binary agrees with the library on a plain invocation.
        if extra.is_none() {
            let lib = std::str::from_utf8(&bytes)
                .ok()
                .map(|t| config::from_str(t, &file));
            let port_ok = port.map(accio_server::cmdline::parse_port);
            let expect = match (lib, port_ok) {
                (_, Some(Err(_))) => 64,
                (None, _) | (Some(Err(_)), _) => 78,
                (Some(Ok(s)), p) => {
                    if s.port.is_none() && p.is_none() {
                        64
                    } else if s.save_dir.as_deref().is_some_and(|d| accio_server::save::check(d).is_err()) {
                        73
                    } else {
                        0
                    }
                }
            };
            prop_assert_eq!(code, Some(expect), "{}", err);
        }
    }
}
