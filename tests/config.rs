//! The configuration file: every key, every kind of bad input (exit 78 with
//! file, key, line and column), precedence, --check-config, live reload.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn check(args: &[&str]) -> (Option<i32>, String) {
    let out = run(args);
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_text(text: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = TempDir::new("config");
    let file = dir.write("server.toml", text);
    let mut args = vec![
        "--config",
        file.to_str().expect("utf8 path"),
        "--check-config",
    ];
    args.extend_from_slice(extra);
    check(&args)
}

#[test]
fn the_shipped_example_is_valid_and_lists_every_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/server.toml");
    // No port in the shipped file (the socket unit decides it).
    let (code, err) = check(&["--config", example, "--check-config", "5000"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("would listen on 0.0.0.0:5000"), "{err}");
    let (code, _) = check(&["--config", example, "--check-config"]);
    assert_eq!(code, Some(64), "a start without a port is a usage error");
    let text = std::fs::read_to_string(example).expect("example");
    for key in [
        "port",
        "bind",
        "idle_timeout",
        "max_connections",
        "max_per_source",
        "source_prefix_v6",
        "min_rate",
        "shutdown_grace",
        "backlog",
        "proxy_protocol",
        "output",
        "save_dir",
        "fsync",
        "max_file_size",
        "min_free_space",
        "[log]",
        "target",
        "level",
    ] {
        assert!(text.contains(key), "{key} missing from config/server.toml");
    }
}

#[test]
fn every_key_is_accepted() {
    let (code, err) = check_text(
        "port = 6000\nbind = \"::\"\nidle_timeout = \"500ms\"\nmax_connections = 1\n\
         shutdown_grace = \"2m\"\nbacklog = 65535\n[log]\ntarget = \"stderr\"\nlevel = \"debug\"\n",
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("would listen on :::6000"), "{err}");
    for (key, value) in [
        ("idle_timeout", "\"1h\""),
        ("shutdown_grace", "\"0s\""),
        ("bind", "\"127.0.0.1\""),
        ("bind", "\"::1\""),
        ("backlog", "1"),
        ("port", "65535"),
    ] {
        let (code, err) = check_text(&format!("{key} = {value}\n"), &["7000"]);
        assert_eq!(code, Some(0), "{key} = {value}: {err}");
    }
    for level in ["error", "warning", "info", "debug"] {
        let (code, err) = check_text(&format!("[log]\nlevel = \"{level}\"\n"), &["7000"]);
        assert_eq!(code, Some(0), "{err}");
    }
    for target in ["auto", "syslog", "stderr"] {
        let (code, err) = check_text(&format!("[log]\ntarget = \"{target}\"\n"), &["7000"]);
        assert_eq!(code, Some(0), "{err}");
    }
}

#[test]
fn every_bad_value_names_file_key_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        ("colour = \"red\"\n", "`colour`", "line 1, column 1"),
        (
            "port = 5000\nidle_timeout = \"10\"\n",
            "`idle_timeout`",
            "line 2, column 16",
        ),
        ("idle_timeout = \"1.5s\"\n", "`idle_timeout`", "line 1"),
        ("idle_timeout = \"10 s\"\n", "`idle_timeout`", "line 1"),
        ("idle_timeout = 10\n", "`idle_timeout`", "line 1"),
        (
            "idle_timeout = \"0s\"\n",
            "`idle_timeout`",
            "greater than zero",
        ),
        ("shutdown_grace = \"-1s\"\n", "`shutdown_grace`", "line 1"),
        ("port = 0\n", "`port`", "out of range"),
        ("port = 65536\n", "`port`", "line 1, column 8"),
        ("port = \"5000\"\n", "`port`", "line 1, column 8"),
        ("port = 50.5\n", "`port`", "line 1"),
        ("backlog = 0\n", "`backlog`", "out of range"),
        ("max_connections = 0\n", "`max_connections`", "out of range"),
        ("max_connections = -3\n", "`max_connections`", "line 1"),
        ("bind = \"localhost\"\n", "`bind`", "not an IP address"),
        ("bind = 127\n", "`bind`", "line 1"),
        (
            "\n\n[log]\nlevel = \"loud\"\n",
            "`log.level`",
            "line 4, column 9",
        ),
        ("[log]\ntarget = \"journal\"\n", "`log.target`", "line 2"),
        ("[log]\ncolour = true\n", "colour", "line 2"),
        ("log = 3\n", "`log`", "line 1"),
        ("port = [\n", "invalid configuration file", "line 1"),
        (
            "port = 1\nport = 2\n",
            "invalid configuration file",
            "line 2",
        ),
        ("= 5\n", "invalid configuration file", "line 1"),
    ];
    for (text, key, position) in cases {
        let (code, err) = check_text(text, &["7000"]);
        assert_eq!(code, Some(78), "{text:?}: {err}");
        assert!(err.starts_with("ERROR:"), "{text:?}: {err}");
        assert!(
            err.contains("server.toml"),
            "{text:?} does not name the file: {err}"
        );
        assert!(err.contains(key), "{text:?} does not name {key}: {err}");
        assert!(err.contains(position), "{text:?} lacks {position:?}: {err}");
        assert_eq!(
            err.lines().next().map(|l| l.len() < 400),
            Some(true),
            "{err}"
        );
    }
}

#[test]
fn unreadable_files_are_config_errors() {
    let dir = TempDir::new("unreadable");
    let missing = dir.path("missing.toml");
    let (code, err) = check(&["--config", missing.to_str().expect("path"), "7000"]);
    assert_eq!(code, Some(78));
    assert!(
        err.starts_with("ERROR:") && err.contains("missing.toml") && err.contains("no such file"),
        "{err}"
    );
    let (code, err) = check(&["--config", dir.0.to_str().expect("path"), "7000"]);
    assert_eq!(code, Some(78));
    assert!(err.contains("directory"), "{err}");
    let binary = dir.path("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
    let (code, err) = check(&["--config", binary.to_str().expect("path"), "7000"]);
    assert_eq!(code, Some(78));
    assert!(err.contains("UTF-8"), "{err}");
    if is_root() && have("setpriv") {
        let secret = dir.write("secret.toml", "port = 1\n");
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "--config",
            ])
            .arg(&secret)
            .arg("7000")
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(78));
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    }
}

#[test]
fn port_argument_overrides_the_file_and_check_config_binds_nothing() {
    // A port in use: --check-config must still succeed, since it binds nothing.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, err) = check_text("port = 1\n", &[&port]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("0.0.0.0:{port}")), "{err}");
    let (code, err) = check_text(&format!("port = {port}\n"), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("0.0.0.0:{port}")), "{err}");
    // Without a port anywhere, --check-config fails like a real start.
    let (code, err) = check_text("", &[]);
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = check(&["--check-config"]);
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = check(&["--check-config", "5000"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_port_from_the_file_is_used_without_an_argument() {
    for _ in 0..10 {
        let port = free_port();
        let dir = TempDir::new("file-port");
        let file = dir.write(
            "server.toml",
            &format!("port = {port}\n[log]\ntarget = \"stderr\"\n"),
        );
        let notify = Notify::new();
        let mut child = Reaper(
            std::process::Command::new(BIN)
                .arg("--config")
                .arg(&file)
                .env("NOTIFY_SOCKET", &notify.path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        );
        let ready = notify.recv(WAIT).is_some_and(|m| m.contains("READY=1"));
        let ok = ready && TcpStream::connect(("127.0.0.1", port)).is_ok();
        let _ = child.0.kill();
        let _ = child.0.wait();
        if ok {
            return;
        }
    }
    panic!("server never listened on the port from its config file");
}

fn reload(server: &Server, text: &str) {
    server.rewrite_config(text);
    server.signal(libc::SIGHUP);
    server.notify.wait_for("RELOADING=1");
    server.notify.wait_for("READY=1");
}

#[test]
fn reload_applies_idle_timeout_live() {
    let server = Spawn::new().config("idle_timeout = \"1m\"").start();
    // Open before the reload: the new timeout applies from its next byte.
    let mut old = server.connect();
    reload(&server, "idle_timeout = \"300ms\"");
    server.stderr.wait_for("idle_timeout 1m -> 300ms");
    let start = Instant::now();
    let fresh = server.connect();
    assert_eq!(server.stdout.expect(), "ERROR");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    old.write_all(b"x").expect("send");
    assert_eq!(server.stdout.expect(), "ERROR");
    drop((fresh, old));
}

#[test]
fn reload_applies_max_connections_live() {
    let server = Spawn::new().config("max_connections = 1").start();
    let first = server.connect();
    let mut second = TcpStream::connect(server.addr()).expect("connect");
    reload(&server, "max_connections = 2");
    second.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut second), "greeted once the limit was raised");
    finish(second);
    finish(first);
    assert_eq!(server.stdout.expect(), "0");
    assert_eq!(server.stdout.expect(), "0");
}

#[test]
fn reload_applies_log_level_live() {
    let server = Spawn::new().start();
    transfer(&server, b"a");
    server.stderr.wait_for("connection 1 from");
    reload(&server, "[log]\ntarget = \"stderr\"\nlevel = \"warning\"\n");
    transfer(&server, b"b");
    assert_eq!(server.stdout.expect(), "1");
    assert_eq!(server.stdout.expect(), "1");
    let s = server.connect();
    common::reset(s);
    server.stderr.wait_for("connection 3 from");
    let seen = server.stderr.seen.lock().unwrap().join("\n");
    assert!(
        !seen.contains("connection 2 from"),
        "info line logged at level warning: {seen}"
    );
}

#[test]
fn an_invalid_reload_changes_nothing_and_keeps_serving() {
    let server = Spawn::new().config("idle_timeout = \"1m\"").start();
    reload(&server, "idle_timeout = \"soon\"\n");
    let err = server.stderr.wait_for("reload failed");
    assert!(
        err.contains("error") && err.contains("`idle_timeout`") && err.contains("line 1"),
        "{err}"
    );
    // The old timeout (1 minute) still holds: a 1 s pause is fine.
    let mut s = server.connect();
    s.write_all(b"ab").expect("send");
    std::thread::sleep(Duration::from_secs(1));
    s.write_all(b"c").expect("send");
    finish(s);
    assert_eq!(server.stdout.expect(), "3");
    // A deleted file is an error too, and changes nothing.
    std::fs::remove_file(&server.config).expect("rm");
    server.signal(libc::SIGHUP);
    server.stderr.wait_for("no such file");
    transfer(&server, b"ok");
    assert_eq!(server.stdout.expect(), "2");
}

#[test]
fn reload_warns_about_changes_that_need_a_restart() {
    let server = Spawn::new().start();
    reload(&server, "bind = \"127.0.0.1\"\nbacklog = 7\n");
    server
        .stderr
        .wait_for("bind 0.0.0.0 -> 127.0.0.1 needs a restart");
    server.stderr.wait_for("backlog 128 -> 7 needs a restart");
    transfer(&server, b"still");
    assert_eq!(server.stdout.expect(), "5");
}
