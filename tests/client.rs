//! The `client` binary against the real server and against misbehaving
//! stand-ins written here with std's TcpListener. Real processes, real
//! sockets; every wait has a timeout and every child is reaped.

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{ChildStdin, Command, Stdio};
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
        assert!(
            out.took >= Duration::from_secs(10) && out.took < Duration::from_secs(14),
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

#[test]
fn progress_only_when_asked_and_at_most_ten_redraws_a_second() {
    let server = Spawn::new().start();
    let port = server.port.to_string();
    let dir = TempDir::new("client-progress");
    let path = path_of(&pattern_file(&dir, "f", 1_000_000));

    let out = client(&["--progress", "127.0.0.1", &port, &path]);
    out.ok();
    assert_eq!(server.stdout.expect(), "1000000");
    assert!(out.stderr.starts_with('\r'), "{out:?}");
    assert!(out.stderr.ends_with('\n'), "{out:?}");
    assert_eq!(out.stderr.matches('\n').count(), 1, "{out:?}");
    let last = out.stderr.rsplit('\r').next().unwrap_or_default();
    assert!(last.contains("(100%)") && last.contains("done"), "{last:?}");

    let out = client(&["--progress", "--no-progress", "127.0.0.1", &port, &path]);
    out.ok();
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(server.stdout.expect(), "1000000");

    // 1.5 s of trickling stdin: about 15 redraws, not one per chunk.
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
    let redraws = out.stderr.matches('\r').count();
    let limit = (out.took.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(
        redraws >= 5 && redraws <= limit,
        "{redraws} redraws in {:?}",
        out.took
    );
    assert!(
        !out.stderr.contains('%'),
        "no percentage without a size: {out:?}"
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

/// A directory for sparse files: in /dev/shm when it is a tmpfs we can
/// write, else the temporary directory. Removed on drop.
struct SparseDir(std::path::PathBuf);

impl SparseDir {
    fn new() -> SparseDir {
        let shm = std::path::Path::new("/dev/shm");
        let base = if std::fs::metadata(shm).is_ok_and(|m| m.is_dir()) {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("accio-client-test-{}", std::process::id()));
        match std::fs::create_dir_all(&dir) {
            Ok(()) => SparseDir(dir),
            Err(_) => {
                let dir =
                    std::env::temp_dir().join(format!("accio-client-test-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("create sparse dir");
                SparseDir(dir)
            }
        }
    }
}

impl Drop for SparseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn four_gib_from_a_sparse_file_in_constant_memory() {
    const SIZE: u64 = 4 << 30;
    // On tmpfs the holes read as the shared zero page: no disk, no 4 GiB of
    // page cache, and the test measures the client rather than the disk.
    let dir = SparseDir::new();
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
