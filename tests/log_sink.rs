//! A log sink that stops taking messages (a stderr pipe nobody reads, a
//! `/dev/log` whose reader stalls) never delays serving or a stop; what was
//! dropped is reported once the sink takes messages again.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Serve `n` connections of a few bytes each; every line must be the count.
fn serve_many(addr: std::net::SocketAddr, stdout: &Lines, n: usize) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let mut s = connect_greeted(addr).expect("greeted");
        std::io::Write::write_all(&mut s, b"abc").expect("send");
        finish(s);
        assert_eq!(stdout.expect(), "3", "connection {}", i + 1);
    }
    start.elapsed()
}

#[test]
fn a_stderr_pipe_nobody_reads_never_stalls_serving_or_a_stop() {
    // 1500 info lines are several times what a pipe holds.
    let mut server = Spawn::new().stalled_stderr().start();
    let took = serve_many(server.addr(), &server.stdout, 1500);
    assert!(
        took < Duration::from_secs(20),
        "1500 connections took {took:?}"
    );
    server.signal(libc::SIGTERM);
    let (status, stop) = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(stop < Duration::from_millis(250), "stop took {stop:?}");

    // Once someone reads, the number dropped is reported.
    let mut server = Spawn::new().stalled_stderr().start();
    serve_many(server.addr(), &server.stdout, 1500);
    server.read_stderr();
    let addr = server.addr();
    let mut note = None;
    // The pipe's backlog comes first; a new message follows the note.
    for _ in 0..50 {
        serve_many(addr, &server.stdout, 1);
        if let Some(l) = server
            .stderr
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("were dropped"))
        {
            note = Some(l.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let note = note.expect("a report of the dropped messages");
    let dropped: u64 = note
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a number in the note");
    assert!(dropped > 100, "{note}");
}

/// A server in a mount namespace whose private /dev has `log` leading to
/// `sock`, a datagram socket the test owns.
fn with_dev_log(sock: &std::path::Path, port: u16, notify: &Notify) -> Reaper {
    Reaper(
        with_private_dev_log(sock, port)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare"),
    )
}

#[test]
fn a_syslog_socket_that_never_reads_never_stalls_serving_or_a_stop() {
    if !prerequisite(
        is_root() && have("unshare"),
        "root and unshare for a private /dev",
    ) {
        return;
    }
    let dir = TempDir::new("devlog");
    let path = dir.path("log.sock");
    let sink = UnixDatagram::bind(&path).expect("bind the fake /dev/log");
    let notify = Notify::new();
    let port = free_port();
    let mut child = with_dev_log(&path, port, &notify);
    notify.wait_for("READY=1");
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // The socket's queue holds a few datagrams; 300 connections log 300.
    let took = serve_many(addr, &stdout, 300);
    assert!(
        took < Duration::from_secs(10),
        "300 connections took {took:?}"
    );
    // The sink reads again: the next message brings the dropped count.
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = vec![0u8; 8192];
    while sink.recv(&mut buf).is_ok() {}
    serve_many(addr, &stdout, 1);
    let mut seen = Vec::new();
    while let Ok(n) = sink.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        seen.iter()
            .any(|m| m.contains("log messages were dropped") && m.contains("accio-server")),
        "{seen:?}"
    );
    // Stalled again: the stop is still quick.
    serve_many(addr, &stdout, 50);
    child.signal(libc::SIGTERM);
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}: {:?}", stderr.rest());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "stop took longer than 250 ms"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
