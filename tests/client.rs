//! The `client` binary against the real server and against misbehaving
//! stand-ins written here with std's TcpListener. Real processes, real
//! sockets; every wait has a timeout and every child is reaped.
//!
//! (Over 500 lines because each misbehaving stand-in, a wrong greeting, an
//! early close, a reset, a server that never reads, sits beside the one
//! test that uses it; split up, the stand-ins would be far from their cases.)

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// How a client run ended.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    /// Exit `code`, with one `ERROR:` line on stderr mentioning `needle`.
    fn failed(&self, code: i32, needle: &str) {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert!(self.stderr.starts_with("ERROR: "), "{self:?}");
        let first = self.stderr.lines().next().unwrap_or_default();
        assert!(first.contains(needle), "{needle:?} not in {first:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
    }

    fn ok(&self) {
        assert_eq!(self.code, Some(0), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
    }
}

fn read_all<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Run the client; `feed` writes its stdin (then closes it) when given.
fn client_fed(
    args: &[&str],
    stdin: Stdio,
    feed: Option<Box<dyn FnOnce(ChildStdin) + Send>>,
) -> Outcome {
    measured(args, stdin, feed).1
}

fn client(args: &[&str]) -> Outcome {
    client_fed(args, Stdio::null(), None)
}

/// A file of `len` bytes of a repeating pattern.
fn pattern_file(dir: &TempDir, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.path(name);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, data).expect("write file");
    path
}

/// A one-connection server stand-in on 127.0.0.1: `serve` runs on its own
/// thread with the accepted stream; the connection must come within 20 s.
fn stand_in<T, F>(serve: F) -> (u16, JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(TcpStream) -> T + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < end, "no connection within 20 s");
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        serve(stream)
    });
    (port, handle)
}

/// Everything the client sends until its FIN.
fn read_to_fin(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("read until the client's FIN");
    got
}

/// Block until the test drops its sender (or 30 s pass), holding `s` open.
fn hold(s: TcpStream, until: Receiver<()>) {
    let _ = until.recv_timeout(Duration::from_secs(30));
    drop(s);
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn files_of_0_1_and_some_mib_arrive_whole() {
    let server = Spawn::new().start();
    let port = server.port.to_string();
    let dir = TempDir::new("client-files");
    for len in [0usize, 1, 3 * 1024 * 1024 + 5] {
        let path = pattern_file(&dir, &format!("f{len}"), len);
        let out = client(&["127.0.0.1", &port, &path_of(&path)]);
        out.ok();
        // Not a terminal and no --progress: nothing on stderr.
        assert!(out.stderr.is_empty(), "{out:?}");
        assert_eq!(server.stdout.expect(), len.to_string());
    }
}

#[test]
fn saved_by_server_save_dir_byte_for_byte() {
    let saved = TempDir::new("client-saved");
    let server = Spawn::new()
        .arg("--save-dir")
        .arg(&path_of(&saved.0))
        .start();
    let port = server.port.to_string();
    let dir = TempDir::new("client-save-src");
    for (n, len) in [(1, 0usize), (2, 1), (3, 5 * 1024 * 1024 + 7)] {
        let path = pattern_file(&dir, &format!("f{len}"), len);
        client(&["127.0.0.1", &port, &path_of(&path)]).ok();
        assert_eq!(server.stdout.expect(), len.to_string());
        let copy = std::fs::read(saved.path(&format!("{n}.file"))).expect("saved file");
        assert!(
            copy == std::fs::read(&path).expect("source"),
            "{n}.file differs"
        );
    }
}

#[test]
fn stdin_pipe_and_redirected_file() {
    let server = Spawn::new().start();
    let port = server.port.to_string();
    let len = 2 * 1024 * 1024 + 3;
    let out = client_fed(
        &["127.0.0.1", &port, "-"],
        Stdio::piped(),
        Some(Box::new(move |mut pipe: ChildStdin| {
            // In odd pieces, with pauses: the client must not stop early.
            let block = vec![b'p'; 100_003];
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len());
                pipe.write_all(&block[..n]).expect("feed");
                left -= n;
                thread::sleep(Duration::from_millis(1));
            }
        })),
    );
    out.ok();
    assert_eq!(server.stdout.expect(), len.to_string());

    // stdin redirected from a regular file is sent from its current offset.
    let dir = TempDir::new("client-stdin");
    let path = pattern_file(&dir, "f", 100_000);
    let mut f = File::open(&path).expect("open");
    f.seek(SeekFrom::Start(10)).expect("seek");
    let out = client_fed(&["127.0.0.1", &port, "-"], Stdio::from(f), None);
    out.ok();
    assert_eq!(server.stdout.expect(), "99990");
}

#[test]
fn ipv6_literal_and_host_name() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let server = Spawn::new().config("bind = \"::\"").start();
    let port = server.port.to_string();
    let dir = TempDir::new("client-names");
    let path = path_of(&pattern_file(&dir, "f", 12_345));
    for host in ["::1", "[::1]", "localhost", "127.0.0.1"] {
        client(&[host, &port, &path]).ok();
        assert_eq!(server.stdout.expect(), "12345", "via {host}");
    }
}

#[test]
fn greeting_in_pieces_waits_for_the_last_byte() {
    let dir = TempDir::new("client-pieces");
    let path = pattern_file(&dir, "f", 70_000);
    let expected = std::fs::read(&path).expect("read");
    let (port, stand) = stand_in(|mut s| {
        s.set_nonblocking(true).expect("nonblocking");
        for (i, b) in GREETING.iter().enumerate() {
            thread::sleep(Duration::from_millis(40));
            let mut probe = [0u8; 1];
            match s.peek(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("before greeting byte {i} the client sent: {other:?}"),
            }
            s.write_all(&[*b]).expect("greeting byte");
        }
        s.set_nonblocking(false).expect("blocking");
        read_to_fin(&mut s)
    });
    let out = client(&["127.0.0.1", &port.to_string(), &path_of(&path)]);
    out.ok();
    assert!(out.took >= Duration::from_millis(280), "{out:?}");
    assert!(stand.join().expect("stand-in") == expected);
}

#[test]
fn bytes_after_the_greeting_are_ignored() {
    let (port, stand) = stand_in(|mut s| {
        s.write_all(b"accio\r\nextra bytes").expect("greet");
        let got = read_to_fin(&mut s);
        s.write_all(b"more after FIN").expect("more");
        got
    });
    let dir = TempDir::new("client-extra");
    let path = pattern_file(&dir, "f", 1000);
    client(&["127.0.0.1", &port.to_string(), &path_of(&path)]).ok();
    assert_eq!(stand.join().expect("stand-in").len(), 1000);
}

#[test]
fn wrong_greeting_or_early_close_is_76_and_nothing_is_sent() {
    let dir = TempDir::new("client-wrong");
    let path = path_of(&pattern_file(&dir, "f", 1000));
    for (greeting, needle) in [
        (&b"hello\r\n"[..], "\"hello\\r\\n\""),
        (&b"accio\n"[..], "\"accio\\n\""),
        (&b"ACCIO\r\n"[..], "\"ACCIO\\r\\n\""),
        (&b"acc"[..], "closed the connection after \"acc\""),
        (&b""[..], "closed the connection"),
    ] {
        let (port, stand) = stand_in(move |mut s| {
            s.write_all(greeting).expect("greet");
            s.shutdown(Shutdown::Write).expect("shutdown");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        });
        let out = client(&["127.0.0.1", &port.to_string(), &path]);
        out.failed(76, needle);
        assert!(stand.join().expect("stand-in").is_empty(), "{greeting:?}");
    }
}

/// The four 10 s timeouts, run side by side so the test costs 10 s once:
/// a connect that gets no answer (a listener whose backlog is full drops
/// SYNs), no greeting, a server that stops reading, and one that never
/// closes after the client's FIN.
#[test]
fn timeouts_are_ten_seconds() {
    let dir = TempDir::new("client-timeouts");
    let small = path_of(&pattern_file(&dir, "small", 1000));
    let big = dir.path("big");
    File::create(&big)
        .and_then(|f| f.set_len(256 << 20))
        .expect("sparse file");
    let big = path_of(&big);

    // Each stand-in holds its connection until the test drops its sender.
    let (release1, until1) = channel::<()>();
    let (release2, until2) = channel::<()>();
    let (release3, until3) = channel::<()>();
    let (silent, s1) = stand_in(move |s| hold(s, until1));
    let (stuck, s2) = stand_in(move |mut s| {
        s.write_all(GREETING).expect("greet");
        let _ = until2.recv_timeout(Duration::from_secs(30));
        // The client gave up: it must have reset the connection, not closed
        // it in order (that would pass a partial file for a whole one).
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Err("orderly close".to_string()),
                Ok(_) => {}
                Err(e) => return Ok(e.kind()),
            }
        }
    });
    let (open, s3) = stand_in(move |mut s| {
        s.write_all(GREETING).expect("greet");
        let got = read_to_fin(&mut s).len();
        hold(s, until3);
        got
    });
    let run = |port: u16, path: String| {
        thread::spawn(move || client(&["127.0.0.1", &port.to_string(), &path]))
    };
    // backlog 0 holds one connection; the kernel drops further SYNs.
    let full =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    full.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    full.listen(0).expect("listen");
    let full_port = full
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("addr")
        .port();
    let _queued = TcpStream::connect(("127.0.0.1", full_port)).expect("fill the backlog");
    let runs = [
        (
            run(full_port, small.clone()),
            "could not connect to 127.0.0.1 port",
        ),
        (
            run(silent, small.clone()),
            "no greeting arrived within 10 s",
        ),
        (run(stuck, big), "stalled: no data accepted for 10 s"),
        (run(open, small), "did not close the connection within 10 s"),
    ];
    for (handle, needle) in runs {
        let out = handle.join().expect("client run");
        out.failed(75, needle);
        // 10 s in all, never restarted (a FIN's acknowledgement used to
        // restart the close wait).
        assert!(
            out.took >= Duration::from_secs(10) && out.took < Duration::from_secs(11),
            "{needle}: {out:?}"
        );
    }
    drop((release1, release2, release3));
    s1.join().expect("silent stand-in");
    assert_eq!(
        s2.join().expect("stuck stand-in"),
        Ok(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(s3.join().expect("open stand-in"), 1000);
}

#[test]
fn reset_during_the_transfer_is_69() {
    let dir = TempDir::new("client-reset");
    let big = dir.path("big");
    File::create(&big)
        .and_then(|f| f.set_len(256 << 20))
        .expect("sparse file");
    let (port, stand) = stand_in(|mut s| {
        s.write_all(GREETING).expect("greet");
        let mut buf = vec![0u8; 65536];
        s.read_exact(&mut buf).expect("some data");
        reset(s);
    });
    let out = client(&["127.0.0.1", &port.to_string(), &path_of(&big)]);
    out.failed(69, "aborted the connection");
    stand.join().expect("stand-in");
}

#[test]
fn connection_refused_is_69() {
    let port = free_port().to_string();
    let out = client(&["127.0.0.1", &port, "/dev/null"]);
    out.failed(69, "Connection refused");
    assert!(out.stderr.contains(&format!("port {port}")), "{out:?}");
}

#[test]
fn unknown_host_is_68() {
    let out = client(&["no-such-host.invalid", "5000", "/dev/null"]);
    out.failed(68, "no-such-host.invalid");
}

#[test]
fn unreadable_file_is_66_and_connects_nowhere() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port().to_string();
    let dir = TempDir::new("client-unreadable");
    let missing = path_of(&dir.path("missing"));
    let mut cases = vec![
        (missing, "No such file or directory".to_string()),
        (path_of(&dir.0), "is a directory".to_string()),
    ];
    if !is_root() {
        let locked = dir.write("locked", "secret");
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .expect("chmod");
        cases.push((path_of(&locked), "Permission denied".to_string()));
    }
    for (path, needle) in cases {
        client(&["127.0.0.1", &port, &path]).failed(66, &needle);
    }
    // Also before resolving: a bad file and a bad host report the file.
    client(&[
        "no-such-host.invalid",
        &port,
        &path_of(&dir.path("missing")),
    ])
    .failed(66, "missing");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the client connected: {other:?}"),
    }
}

#[test]
fn bad_arguments_are_64() {
    for args in [
        vec![],
        vec!["localhost"],
        vec!["localhost", "5000"],
        vec!["localhost", "0", "f"],
        vec!["localhost", "65536", "f"],
        vec!["localhost", "-1", "f"],
        vec!["localhost", "+5000", "f"],
        vec!["localhost", "5000abc", "f"],
        vec!["localhost", "", "f"],
        vec!["localhost", "5000", "f", "g"],
        vec!["--bogus", "localhost", "5000", "f"],
        vec!["", "5000", "f"],
    ] {
        let out = client(&args);
        out.failed(64, "");
        assert!(out.stderr.contains("client --help"), "{args:?}: {out:?}");
    }
    for flag in ["--help", "-h", "--version", "-V"] {
        let out = client(&[flag]);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stderr.is_empty() && !out.stdout.is_empty(), "{out:?}");
    }
    let help = client(&["--help"]).stdout;
    for needle in ["<HOST> <PORT> <FILE>", "--progress", "EXIT STATUS", "76"] {
        assert!(help.contains(needle), "{needle} not in --help");
    }
}

/// The frames of a progress display written to a pipe or file: no escape
/// sequences, each redraw after a carriage return, one final newline.
fn frames(stderr: &str) -> Vec<&str> {
    assert!(!stderr.contains('\x1b'), "escape sequences: {stderr:?}");
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert_eq!(stderr.matches('\n').count(), 1, "{stderr:?}");
    stderr
        .trim_end_matches('\n')
        .split('\r')
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn progress_only_when_asked_and_five_redraws_a_second() {
    let server = Spawn::new().start();
    let port = server.port.to_string();
    let dir = TempDir::new("client-progress");
    let path = path_of(&pattern_file(&dir, "f", 1_000_000));

    let out = client(&["--progress", "127.0.0.1", &port, &path]);
    out.ok();
    assert_eq!(server.stdout.expect(), "1000000");
    let shown = frames(&out.stderr);
    // COLUMNS unset and not a terminal: 80 columns, every frame padded.
    for frame in &shown {
        assert_eq!(frame.len(), 80, "{frame:?}");
    }
    let last = shown.last().copied().unwrap_or_default().trim_end();
    assert!(
        last.starts_with("0:0") && last.contains(" [=========="),
        "{last:?}"
    );
    assert!(
        last.contains("976.56 KiB") && last.ends_with("done"),
        "{last:?}"
    );

    let out = client(&["--progress", "--no-progress", "127.0.0.1", &port, &path]);
    out.ok();
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(server.stdout.expect(), "1000000");

    // 1.5 s of trickling stdin: a frame every 200 ms, not one per chunk.
    let out = client_fed(
        &["127.0.0.1", &port, "-", "--progress"],
        Stdio::piped(),
        Some(Box::new(|mut pipe: ChildStdin| {
            for _ in 0..300 {
                pipe.write_all(&[b'x'; 100]).expect("feed");
                thread::sleep(Duration::from_millis(5));
            }
        })),
    );
    out.ok();
    assert_eq!(server.stdout.expect(), "30000");
    let shown = frames(&out.stderr);
    let limit = (out.took.as_secs_f64() * 5.0).ceil() as usize + 3;
    assert!(
        shown.len() >= 5 && shown.len() <= limit,
        "{} frames in {:?}",
        shown.len(),
        out.took
    );
    for frame in &shown {
        assert_eq!(frame.len(), 80, "{frame:?}");
        assert!(
            !frame.contains('%'),
            "no percentage without a size: {frame:?}"
        );
    }
    let last = shown.last().copied().unwrap_or_default().trim_end();
    assert!(
        last.contains("29.30 KiB") && last.ends_with("done"),
        "{last:?}"
    );
}

/// Run the client as [`client_fed`] does, polling its VmHWM while it runs;
/// returns (max KiB seen, outcome).
fn measured(
    args: &[&str],
    stdin: Stdio,
    feed: Option<Box<dyn FnOnce(ChildStdin) + Send>>,
) -> (u64, Outcome) {
    let start = Instant::now();
    let mut child = Reaper(
        Command::new(CLIENT)
            .args(args)
            .env_remove("COLUMNS")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client"),
    );
    let pid = child.0.id();
    let feeder = feed.map(|f| {
        let pipe = child.0.stdin.take().expect("stdin pipe");
        thread::spawn(move || f(pipe))
    });
    let out = read_all(child.0.stdout.take().expect("stdout"));
    let err = read_all(child.0.stderr.take().expect("stderr"));
    let mut hwm = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            hwm = hwm.max(kib);
        }
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "client still running after 120 s"
        );
        thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let outcome = Outcome {
        code: status.code(),
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
        took,
    };
    (hwm, outcome)
}

/// A directory for sparse files: in /dev/shm (tmpfs) where it exists,
/// else the temporary directory. Removed on drop.
fn sparse_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if std::fs::metadata(shm).is_ok_and(|m| m.is_dir()) {
        TempDir::new_in(shm, "client-sparse")
    } else {
        TempDir::new("client-sparse")
    }
}

#[test]
fn four_gib_from_a_sparse_file_in_constant_memory() {
    const SIZE: u64 = 4 << 30;
    // On tmpfs the holes read as the shared zero page: no disk, no 4 GiB of
    // page cache, and the test measures the client rather than the disk.
    let dir = sparse_dir();
    let path = dir.0.join("sparse");
    File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("sparse file");
    let server = Spawn::new().start();
    let (hwm, out) = measured(
        &["127.0.0.1", &server.port.to_string(), &path_of(&path)],
        Stdio::null(),
        None,
    );
    out.ok();
    assert_eq!(server.stdout.expect(), SIZE.to_string());
    eprintln!(
        "4 GiB file: {:.2} s, {:.2} GiB/s, client peak RSS {hwm} KiB",
        out.took.as_secs_f64(),
        4.0 / out.took.as_secs_f64()
    );
    assert!(hwm > 0, "VmHWM never read");
    assert!(hwm <= 4096, "client peak RSS {hwm} KiB > 4 MiB");
}

#[test]
fn one_gib_through_stdin_in_constant_memory() {
    const SIZE: usize = 1 << 30;
    let server = Spawn::new().start();
    let (hwm, out) = measured(
        &["127.0.0.1", &server.port.to_string(), "-"],
        Stdio::piped(),
        Some(Box::new(|mut pipe: ChildStdin| {
            let block = vec![0u8; 1 << 20];
            for _ in 0..SIZE / block.len() {
                pipe.write_all(&block).expect("feed");
            }
        })),
    );
    out.ok();
    assert_eq!(server.stdout.expect(), SIZE.to_string());
    eprintln!(
        "1 GiB pipe: {:.2} s, {:.2} GiB/s, client peak RSS {hwm} KiB",
        out.took.as_secs_f64(),
        1.0 / out.took.as_secs_f64()
    );
    assert!(hwm > 0, "VmHWM never read");
    assert!(hwm <= 4096, "client peak RSS {hwm} KiB > 4 MiB");
}

/// A client started in the background; its stdout and stderr (when piped)
/// are read on threads.
struct Running {
    child: Reaper,
    pid: i32,
    start: Instant,
    stdout: JoinHandle<String>,
    stderr: Option<JoinHandle<String>>,
}

/// Start the client; returns its stdin pipe when `stdin` is piped.
fn start_client(
    args: &[&str],
    stdin: Stdio,
    stderr: Stdio,
    env: &[(&str, &str)],
) -> (Running, Option<ChildStdin>) {
    let start = Instant::now();
    let mut cmd = Command::new(CLIENT);
    cmd.args(args)
        .env_remove("COLUMNS")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Reaper(cmd.spawn().expect("spawn client"));
    let pid = child.0.id() as i32;
    let pipe = child.0.stdin.take();
    let stdout = read_all(child.0.stdout.take().expect("stdout"));
    let stderr = child.0.stderr.take().map(read_all);
    (
        Running {
            child,
            pid,
            start,
            stdout,
            stderr,
        },
        pipe,
    )
}

impl Running {
    /// Wait for the exit (at most `within`) and collect the output.
    fn finish(mut self, within: Duration) -> (ExitStatus, Outcome) {
        let status = loop {
            if let Some(st) = self.child.0.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                self.start.elapsed() < within,
                "client still running after {within:?}"
            );
            thread::sleep(Duration::from_millis(2));
        };
        let took = self.start.elapsed();
        let outcome = Outcome {
            code: status.code(),
            stdout: self.stdout.join().expect("stdout"),
            stderr: self
                .stderr
                .map(|h| h.join().expect("stderr"))
                .unwrap_or_default(),
            took,
        };
        (status, outcome)
    }
}

/// Poll `cond` every 2 ms until it holds; fail after `within`.
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The main thread of `pid` sleeps in poll(2).
fn blocked_in_poll(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("poll"))
}

/// Bytes waiting in a pipe (FIONREAD works on either end).
fn pipe_queued(fd: RawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
    n
}

/// Wait (at most `within`) for `s` to carry an error, as a reset leaves
/// it, and return the error's kind; `None` if none came (an orderly close
/// leaves no error).
fn reset_seen(s: &TcpStream, within: Duration) -> Option<std::io::ErrorKind> {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // SAFETY: one valid pollfd. With no events asked for, only an
        // error or a hang-up wakes it.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        if n > 0 && pfd.revents & libc::POLLERR != 0 {
            return s.take_error().ok().flatten().map(|e| e.kind());
        }
    }
}

/// A sparse file of `len` bytes.
fn sparse_file(dir: &TempDir, name: &str, len: u64) -> String {
    let path = dir.path(name);
    File::create(&path)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
    path_of(&path)
}

#[test]
fn a_signal_resets_the_connection_and_exits_128_plus_its_number() {
    let saved = TempDir::new("client-signals");
    let server = Spawn::new()
        .arg("--save-dir")
        .arg(&path_of(&saved.0))
        .start();
    let port = server.port.to_string();
    let cases = [
        (libc::SIGINT, "SIGINT", Some(130), true),
        (libc::SIGTERM, "SIGTERM", Some(143), false),
        (libc::SIGHUP, "SIGHUP", Some(129), false),
        // Not caught at all: SO_LINGER 0 makes the kernel's close a reset.
        (libc::SIGKILL, "SIGKILL", None, false),
    ];
    for (n, (sig, name, code, progress)) in cases.into_iter().enumerate() {
        let mut args = vec!["127.0.0.1", port.as_str(), "-"];
        if progress {
            args.insert(0, "--progress");
        }
        let (run, pipe) = start_client(&args, Stdio::piped(), Stdio::piped(), &[]);
        let mut pipe = pipe.expect("stdin pipe");
        // More than a pipe holds, so this returns only once the client
        // reads, which it does after the greeting: mid-transfer.
        pipe.write_all(&vec![b'x'; 200_000]).expect("feed");
        wait_for("the client to wait for more of stdin", WAIT, || {
            pipe_queued(pipe.as_raw_fd()) == 0 && blocked_in_poll(run.pid)
        });
        run.child.signal(sig);
        let (status, out) = run.finish(WAIT);
        drop(pipe);
        assert_eq!(status.code(), code, "{name}: {out:?}");
        // Within 5 s: from the reset, not from the server's 10 s idle
        // timeout.
        assert_eq!(
            server.stdout.next(Duration::from_secs(5)).as_deref(),
            Some("ERROR"),
            "{name}: {out:?}"
        );
        let file = saved.path(&format!("{}.file", n + 1));
        wait_for(&format!("{} to hold ERROR", file.display()), WAIT, || {
            std::fs::read(&file).is_ok_and(|d| d == b"ERROR")
        });
        let Some(_) = code else {
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{out:?}");
            continue;
        };
        assert!(out.stdout.is_empty(), "{out:?}");
        let at = out.stderr.find("ERROR: ").expect("an ERROR line");
        let (display, error) = out.stderr.split_at(at);
        assert!(
            error.starts_with(&format!(
                "ERROR: {name} received while reading FILE (200000 bytes sent"
            )) && error.contains("reset")
                && error.ends_with('\n')
                && error.matches('\n').count() == 1,
            "{error:?}"
        );
        if progress {
            // Abandoned cleanly: the last frame, then a newline of its own.
            let last = frames(display).last().copied().unwrap_or_default();
            assert!(last.trim_end().ends_with("aborted"), "{display:?}");
        } else {
            assert!(display.is_empty(), "{display:?}");
        }
    }
}

/// A signal also ends the waits on the socket: a send the server does not
/// take (sendfile, EAGAIN) and the wait for its close after the FIN.
#[test]
fn a_signal_ends_a_blocked_send_and_the_wait_for_the_close() {
    let dir = TempDir::new("client-signal-waits");
    let big = sparse_file(&dir, "big", 256 << 20);
    let small = path_of(&pattern_file(&dir, "small", 1000));
    let (sending_tx, sending) = channel();
    let (finished_tx, finished) = channel();
    let (full, s1) = stand_in(move |mut s| {
        s.write_all(GREETING).expect("greet");
        let mut buf = vec![0u8; 65536];
        s.read_exact(&mut buf).expect("some data");
        let _ = sending_tx.send(());
        reset_seen(&s, Duration::from_secs(20))
    });
    let (open, s2) = stand_in(move |mut s| {
        s.write_all(GREETING).expect("greet");
        let got = read_to_fin(&mut s).len();
        let _ = finished_tx.send(());
        (got, reset_seen(&s, Duration::from_secs(20)))
    });
    let (a, _) = start_client(
        &["127.0.0.1", &full.to_string(), &big],
        Stdio::null(),
        Stdio::piped(),
        &[],
    );
    let (b, _) = start_client(
        &["127.0.0.1", &open.to_string(), &small],
        Stdio::null(),
        Stdio::piped(),
        &[],
    );
    sending
        .recv_timeout(WAIT)
        .expect("the big transfer started");
    finished
        .recv_timeout(WAIT)
        .expect("the small transfer reached its FIN");
    wait_for("both clients to wait in poll", WAIT, || {
        blocked_in_poll(a.pid) && blocked_in_poll(b.pid)
    });
    a.child.signal(libc::SIGTERM);
    b.child.signal(libc::SIGINT);
    let (_, out_a) = a.finish(WAIT);
    let (_, out_b) = b.finish(WAIT);
    out_a.failed(143, "SIGTERM received while sending (");
    out_b.failed(
        130,
        "SIGINT received while waiting for the server to close (1000 bytes sent",
    );
    assert_eq!(
        s1.join().expect("full stand-in"),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    let (got, reset) = s2.join().expect("open stand-in");
    assert_eq!(got, 1000);
    // After the client's FIN a reset shows as EPIPE on Linux.
    assert!(reset.is_some(), "no reset after the FIN");
}

/// A server may close only after the client's FIN. One that greets and at
/// once shuts its sending side (and never reads) is an error, whether the
/// client notices before its FIN (a small file), while the socket is full
/// (a big file) or while it waits for stdin; and the connection is reset.
#[test]
fn a_server_that_closes_before_the_clients_fin_is_69() {
    let dir = TempDir::new("client-half-closed");
    let small = path_of(&pattern_file(&dir, "small", 1000));
    let big = sparse_file(&dir, "big", 256 << 20);
    let half_closed = || {
        stand_in(|s| {
            // MSG_MORE holds the greeting back until the FIN, so both reach
            // the client together: it cannot finish sending first.
            // SAFETY: a send from a valid buffer on our socket.
            let n = unsafe {
                libc::send(
                    s.as_raw_fd(),
                    GREETING.as_ptr().cast(),
                    GREETING.len(),
                    libc::MSG_MORE,
                )
            };
            assert_eq!(n, GREETING.len() as isize, "greet");
            s.shutdown(Shutdown::Write).expect("shutdown");
            reset_seen(&s, Duration::from_secs(20))
        })
    };
    let (p1, s1) = half_closed();
    let (p2, s2) = half_closed();
    let (p3, s3) = half_closed();
    let (r1, _) = start_client(
        &["127.0.0.1", &p1.to_string(), &small],
        Stdio::null(),
        Stdio::piped(),
        &[],
    );
    let (r2, _) = start_client(
        &["127.0.0.1", &p2.to_string(), &big],
        Stdio::null(),
        Stdio::piped(),
        &[],
    );
    let (r3, pipe) = start_client(
        &["127.0.0.1", &p3.to_string(), "-"],
        Stdio::piped(),
        Stdio::piped(),
        &[],
    );
    // stdin stays open: the client must notice the close while it waits.
    let mut pipe = pipe.expect("stdin pipe");
    pipe.write_all(&[b's'; 1000]).expect("feed");
    for (run, needle) in [
        (r1, "closed its side of the connection after 1000 bytes"),
        (r2, "closed its side of the connection after "),
        // 0 or 1000 bytes: the FIN may come before stdin's data.
        (r3, "closed its side of the connection after "),
    ] {
        let (_, out) = run.finish(WAIT);
        out.failed(69, needle);
        assert!(out.took < Duration::from_secs(5), "{out:?}");
    }
    drop(pipe);
    for s in [s1, s2, s3] {
        assert_eq!(
            s.join().expect("stand-in"),
            Some(std::io::ErrorKind::ConnectionReset)
        );
    }
}

/// A pseudo-terminal `cols` columns wide: (master, slave), close-on-exec.
fn pty(cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors; no name, default termios.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are fresh descriptors we own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    assert_eq!(
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
    (master, slave)
}

/// Everything written to the terminal, read as it comes (so the client
/// never blocks on it) until no slave is left or, once `done` is set,
/// nothing more comes for 50 ms.
fn read_pty(master: OwnedFd, done: Arc<AtomicBool>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut pfd = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return out; // EIO: the last slave is closed
                }
                out.extend_from_slice(&buf[..n as usize]);
            } else if done.load(Ordering::SeqCst) {
                return out;
            }
        }
    })
}

/// What a terminal showed, frame by frame: escape sequences dropped, split
/// at carriage returns and newlines.
fn terminal_frames(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split(['\r', '\n'])
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect()
}

/// The display on a real terminal (a pty 40 columns wide, progress on by
/// default there): a bar for a file, a spinner for stdin. The stand-in
/// greets and then reads nothing for 2 s; the display must keep redrawing
/// through the stall (the clock moves while the byte count stands still),
/// never be wider than the terminal, and end with "done" and a newline.
#[test]
fn progress_on_a_terminal_redraws_through_a_stall_and_fits_40_columns() {
    const SIZE: usize = 64 << 20;
    let dir = TempDir::new("client-pty");
    let file = sparse_file(&dir, "big", SIZE as u64);
    let stalling = || {
        stand_in(|mut s| {
            s.write_all(GREETING).expect("greet");
            // The stall under test (not a synchronisation).
            thread::sleep(Duration::from_secs(2));
            std::io::copy(&mut s, &mut std::io::sink()).expect("read until the FIN")
        })
    };
    let (file_port, file_stand) = stalling();
    let (pipe_port, pipe_stand) = stalling();
    let mut runs = Vec::new();
    for (port, source) in [(file_port, file.as_str()), (pipe_port, "-")] {
        let (master, slave) = pty(40);
        let done = Arc::new(AtomicBool::new(false));
        let reader = read_pty(master, done.clone());
        let stdin = if source == "-" {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let (run, pipe) = start_client(
            &["127.0.0.1", &port.to_string(), source],
            stdin,
            Stdio::from(slave),
            &[("TERM", "xterm")],
        );
        let feeder = pipe.map(|mut pipe| {
            thread::spawn(move || {
                let block = vec![b'z'; 1 << 20];
                for _ in 0..SIZE / block.len() {
                    pipe.write_all(&block).expect("feed");
                }
            })
        });
        runs.push((run, done, reader, feeder, source == "-"));
    }
    for (run, done, reader, feeder, spinner) in runs {
        let (_, out) = run.finish(Duration::from_secs(60));
        done.store(true, Ordering::SeqCst);
        let raw = reader.join().expect("pty reader");
        if let Some(f) = feeder {
            f.join().expect("feeder");
        }
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("\x1b[2K"), "not redrawn in place: {text:?}");
        assert!(text.ends_with("\r\n"), "no final newline: {text:?}");
        let shown = terminal_frames(&raw);
        for frame in &shown {
            assert!(frame.chars().count() <= 40, "wider than 40: {frame:?}");
        }
        let last = shown.last().map(|f| f.trim_end()).unwrap_or_default();
        assert!(
            last.ends_with("done") && last.contains("64.00 MiB"),
            "{last:?}"
        );
        // (clock, bytes) of every frame drawn while sending.
        let moments: Vec<(String, String)> = shown
            .iter()
            .filter(|f| !f.contains("done"))
            .filter_map(|f| {
                let words: Vec<&str> = f.split_whitespace().collect();
                if spinner {
                    assert!(!f.contains('%'), "{f:?}");
                    // "| 0:01 8.00 MiB 3.00 MiB/s ..."
                    Some((words.get(1)?.to_string(), words.get(2..4)?.join(" ")))
                } else {
                    // "0:01 [==>       ] 8.00 MiB/64.00 MiB 12%"
                    let bytes = f.split_once("] ")?.1.split('/').next()?;
                    Some((words.first()?.to_string(), bytes.to_string()))
                }
            })
            .collect();
        let stalled = moments.iter().any(|(clock, bytes)| {
            bytes != "0 B" && moments.iter().any(|(c, b)| b == bytes && c != clock)
        });
        assert!(
            stalled,
            "no redraw with a new clock while the bytes stood still: {shown:?}"
        );
    }
    assert_eq!(file_stand.join().expect("file stand-in"), SIZE as u64);
    assert_eq!(pipe_stand.join().expect("pipe stand-in"), SIZE as u64);
}
