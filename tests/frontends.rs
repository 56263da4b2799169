//! The daemon's own inputs at their edges: the configuration file (FIFO,
//! device, too large, forged values), `--check-config` parity, the
//! service manager's variables, signals a user may send, and what a user
//! meets first (`--bind`, `--output json`, `--version`, messages).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run the server binary with `args` and a bound on its run time.
fn run_bounded(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Reaper(cmd.spawn().expect("spawn"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        assert!(
            start.elapsed() < limit,
            "{args:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    (status.code(), out, err)
}

#[test]
fn a_config_that_is_not_a_small_regular_file_is_refused_unread() {
    let dir = TempDir::new("cfg-kinds");
    let fifo = dir.path("fifo");
    let c = std::ffi::CString::new(path_of(&fifo)).expect("path");
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.write("big.toml", &format!("# {}\n", "x".repeat(2 << 20)));
    for (path, why) in [
        (path_of(&fifo), "not a regular file"),
        ("/dev/zero".to_string(), "not a regular file"),
        (path_of(&big), "more than a configuration file may be"),
    ] {
        for extra in [&["5000"][..], &["--check-config", "5000"][..]] {
            let mut args = vec!["--config", path.as_str()];
            args.extend_from_slice(extra);
            let (code, out, err) = run_bounded(&args, &[], Duration::from_secs(5));
            assert_eq!(code, Some(78), "{path}: {err}");
            assert!(
                err.starts_with("ERROR:") && err.contains(why),
                "{path}: {err}"
            );
            assert!(out.is_empty());
        }
    }
}

#[test]
fn a_config_that_becomes_a_fifo_fails_the_reload_and_serving_goes_on() {
    let mut server = Spawn::new().start();
    std::fs::remove_file(&server.config).expect("rm config");
    let c = std::ffi::CString::new(path_of(&server.config)).expect("path");
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    server.signal(libc::SIGHUP);
    server.stderr.wait_for("reload failed");
    transfer(&server, b"still here");
    assert_eq!(server.stdout.expect(), "10");
    server.signal(libc::SIGTERM);
    let (status, took) = server.wait_exit(WAIT);
    assert!(
        status.success() && took < Duration::from_millis(250),
        "{status:?} {took:?}"
    );
}

#[test]
fn quoted_values_cannot_forge_lines_or_blow_up() {
    let forged = "bind = \"x\\nERROR: fake\\u001b[31m\"\n";
    let dir = TempDir::new("forged");
    let file = dir.write("server.toml", forged);
    let (code, _, err) = run_bounded(&["--config", &path_of(&file), "5000"], &[], WAIT);
    assert_eq!(code, Some(78));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains('\u{1b}') && err.contains("\\n"), "{err}");
    let huge = dir.write(
        "huge.toml",
        &format!("bind = \"{}\"\n", "y".repeat(900_000)),
    );
    let (code, _, err) = run_bounded(&["--config", &path_of(&huge), "5000"], &[], WAIT);
    assert_eq!(code, Some(78));
    assert!(err.len() < 2000, "an error line of {} bytes", err.len());
    // A PORT with a newline in it is quoted whole, escaped.
    let (code, _, err) = run_bounded(&["12\n34"], &[], WAIT);
    assert_eq!(code, Some(64));
    assert!(err.contains("\"12\\n34\""), "{err}");
}

#[test]
fn config_errors_speak_a_users_language() {
    let dir = TempDir::new("words");
    for (text, want) in [
        (
            "port = \"25006\"\n",
            "number from 1 to 65535, written without quotes",
        ),
        ("idle_timeout = 10\n", "durations need a unit, e.g. \"10s\""),
        ("max_file_size = \"12 MB\"\n", "is not a size"),
        ("min_free_space = \"150%\"\n", "is not a percentage"),
        ("output = \"xml\"\n", "is not an output format"),
        ("source_prefix_v6 = 0\n", "a prefix length from 1 to 128"),
    ] {
        let file = dir.write("c.toml", text);
        let (code, _, err) = run_bounded(
            &["--config", &path_of(&file), "--check-config", "5000"],
            &[],
            WAIT,
        );
        assert_eq!(code, Some(78), "{text}");
        assert!(
            err.contains(want) && err.contains("line 1"),
            "{text}: {err}"
        );
    }
    // Nesting too deep for the parser still names a key and a position.
    let deep = format!("a{} = 1\n", ".a".repeat(300));
    let file = dir.write("c.toml", &deep);
    let (code, _, err) = run_bounded(
        &["--config", &path_of(&file), "--check-config", "5000"],
        &[],
        WAIT,
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("key `a.a.a") && err.contains("line 1, column 1") && err.len() < 400,
        "{err}"
    );
    let file = dir.write("c.toml", "[log]\nlevel = \"warn\"\n");
    let (code, _, err) = run_bounded(
        &["--config", &path_of(&file), "--check-config", "5000"],
        &[],
        WAIT,
    );
    assert_eq!(code, Some(0), "\"warn\" is \"warning\": {err}");
}

#[test]
fn check_config_says_ok_only_where_a_start_would_succeed() {
    let dir = TempDir::new("parity");
    let dangling = dir.path("dangling");
    std::os::unix::fs::symlink(dir.path("nowhere/at/all"), &dangling).expect("symlink");
    let long = format!("/tmp/{}", "d/".repeat(2100));
    for save in [path_of(&dangling), long] {
        let (code, _, err) =
            run_bounded(&["--check-config", "--save-dir", &save, "5000"], &[], WAIT);
        assert_eq!(code, Some(73), "{err}");
        let (code, _, _) = run_bounded(&["--save-dir", &save, &free_port().to_string()], &[], WAIT);
        assert_eq!(code, Some(73), "a start fails the same way");
    }
    // A UDP socket passed as fd 3 under socket activation.
    let script = format!(
        "import os, socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1', 0))\n\
         os.dup2(s.fileno(), 3)\n\
         os.environ['LISTEN_FDS'] = '1'\n\
         os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv('{BIN}', ['{BIN}', '--check-config'])\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert_eq!(
        out.status.code(),
        Some(71),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn watchdog_usec_zero_means_no_watchdog() {
    let server = Spawn::new().env("WATCHDOG_USEC", "0").start();
    let before = server.cpu_ticks();
    let end = Instant::now() + Duration::from_secs(1);
    let mut dogs = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(m) = server.notify.recv(left)
            && m.contains("WATCHDOG=1")
        {
            dogs += 1;
        }
    }
    assert_eq!(dogs, 0, "WATCHDOG=1 with WATCHDOG_USEC=0");
    assert!(server.cpu_ticks() - before <= 5, "the server spun");
}

/// Start the server with `NOTIFY_SOCKET` set to `value`; it must serve and
/// say once why it cannot notify.
fn unusable_notify(value: &str) {
    let port = free_port();
    let dir = TempDir::new("bad-notify");
    let config = dir.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let mut child = Reaper(
        Command::new(BIN)
            .args(["--config", &path_of(&config), &port.to_string()])
            .env("NOTIFY_SOCKET", value)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    stderr.wait_for("started");
    let warning = stderr.wait_for("NOTIFY_SOCKET=");
    assert!(warning.contains("warning"), "{warning}");
    let mut s = connect_greeted(SocketAddr::from(([127, 0, 0, 1], port))).expect("served");
    s.write_all(b"ok").expect("send");
    finish(s);
    assert_eq!(stdout.expect(), "2");
    child.signal(libc::SIGTERM);
    let _ = child.0.wait();
    let warnings = stderr.count("NOTIFY_SOCKET");
    assert_eq!(warnings, 1, "one warning at start");
}

#[test]
fn an_unusable_notify_socket_is_one_warning() {
    let dir = TempDir::new("notify-kinds");
    let file = dir.write("regular", "");
    let stream = dir.path("stream.sock");
    let _listener = UnixListener::bind(&stream).expect("stream socket");
    let long = format!("/tmp/{}", "n".repeat(200));
    for value in [
        path_of(&file),
        path_of(&dir.path("missing.sock")),
        path_of(&stream),
        "relative.sock".to_string(),
        long,
    ] {
        unusable_notify(&value);
    }
}

#[test]
fn sigusr1_reports_stats_and_sigusr2_is_ignored() {
    let server = Spawn::new().start();
    transfer(&server, b"12345");
    assert_eq!(server.stdout.expect(), "5");
    server.signal(libc::SIGUSR2);
    server.signal(libc::SIGUSR1);
    let stats = server.stderr.wait_for("stats:");
    assert!(
        stats.contains("notice") && stats.contains("connections served 1"),
        "{stats}"
    );
    assert!(
        stats.contains("uptime") && stats.contains("refused"),
        "{stats}"
    );
    transfer(&server, b"67");
    assert_eq!(server.stdout.expect(), "2");
}

#[test]
fn bind_option_listens_where_told() {
    let server = Spawn::new().arg("--bind").arg("::1").start();
    let mut s =
        connect_greeted(SocketAddr::new("::1".parse().expect("ip"), server.port)).expect("::1");
    s.write_all(b"v6").expect("send");
    finish(s);
    assert_eq!(server.stdout.expect(), "2");
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "127.0.0.1 is not ::1"
    );
    let (code, _, err) = run_bounded(&["--bind", "localhost", "5000"], &[], WAIT);
    assert_eq!(code, Some(64));
    assert!(err.contains("not an IP address"), "{err}");
}

#[test]
fn json_lines_match_the_plain_counts() {
    let server = Spawn::new()
        .config("max_per_source = 2\n")
        .arg("--output")
        .arg("json")
        .start();
    transfer(&server, &payload(1000, 1));
    let held = [server.connect(), server.connect()];
    // The third from this source is refused: no number.
    let mut third = TcpStream::connect(server.addr()).expect("connect");
    third.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = third.read(&mut [0u8; 7]);
    let lines: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_str(&server.stdout.expect()).expect("json line"))
        .collect();
    assert_eq!(lines[0]["conn"], 1);
    assert_eq!(lines[0]["bytes"], 1000);
    assert_eq!(lines[0]["result"], "ok");
    assert!(
        lines[0]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert!(lines[0]["secs"].is_number());
    assert_eq!(lines[1]["conn"], serde_json::Value::Null);
    assert_eq!(lines[1]["result"], "error");
    assert_eq!(lines[1]["reason"], "max_per_source");
    drop(held);
    let (code, _, err) = run_bounded(&["--output", "xml", "5000"], &[], WAIT);
    assert_eq!(code, Some(64), "{err}");
}

#[test]
fn stdout_on_dev_null_is_a_warning() {
    let port = free_port();
    let notify = Notify::new();
    let dir = TempDir::new("devnull");
    let config = dir.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let mut child = Reaper(
        Command::new(BIN)
            .args(["--config", &path_of(&config), &port.to_string()])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let line = stderr.wait_for("stdout is /dev/null");
    assert!(line.contains("warning"), "{line}");
    child.signal(libc::SIGTERM);
    let _ = child.0.wait();
}

#[test]
fn version_names_the_program_as_invoked() {
    let dir = TempDir::new("version");
    let link = dir.path("accio-server");
    std::os::unix::fs::symlink(BIN, &link).expect("symlink");
    let out = Command::new(&link).arg("--version").output().expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("accio-server {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_syslog_at_hand_does_not_hide_the_server_from_a_terminal() {
    if !prerequisite(
        is_root() && have("unshare"),
        "root and unshare for a private /dev",
    ) {
        return;
    }
    let dir = TempDir::new("tty");
    let sock_path = dir.path("log.sock");
    let sink = UnixDatagram::bind(&sock_path).expect("a live /dev/log");
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty fills two fds.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        use std::os::fd::FromRawFd;
        // SAFETY: both fds were just opened and are ours.
        unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
    };
    let notify = Notify::new();
    let port = free_port();
    let mut child = Reaper(
        with_private_dev_log(&sock_path, port)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(slave)
            .spawn()
            .expect("spawn"),
    );
    notify.wait_for("READY=1");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&seen).contains("started") {
        assert!(
            Instant::now() < end,
            "nothing on the terminal: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let n = master.read(&mut buf).expect("read the pty");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        sink.recv(&mut buf).is_err(),
        "the start went to syslog, not the terminal"
    );
    child.signal(libc::SIGTERM);
    let _ = child.0.wait();
}

#[test]
fn a_usage_error_names_every_missing_argument() {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .arg("localhost")
        .output()
        .expect("run the client");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("ERROR:") && first.contains("<PORT>") && first.contains("<FILE>"),
        "{err}"
    );
}
