//! sd_notify(3) messages, read from a real AF_UNIX datagram socket passed
//! as NOTIFY_SOCKET: content and order of READY, STATUS, RELOADING,
//! STOPPING and WATCHDOG.

mod common;

use common::*;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ready_comes_with_status_once_the_port_accepts() {
    let server = Spawn::new().start();
    // Spawn returned on READY=1: the port must accept right now.
    let s = TcpStream::connect(server.addr()).expect("connect right after READY");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(server.stdout.expect(), "0");
}

#[test]
fn the_first_message_is_ready_with_status() {
    let notify = Notify::new();
    let mut child = Reaper(
        Command::new(BIN)
            .arg(free_port().to_string())
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let first = notify.recv(WAIT).expect("a notification");
    let _ = child.0.kill();
    let _ = child.0.wait();
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines.contains(&"READY=1"), "{first}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=0 connections served")),
        "{first}"
    );
}

#[test]
fn status_follows_each_connection_within_a_second() {
    let server = Spawn::new().start();
    transfer(&server, b"12345");
    let start = Instant::now();
    let status = server.notify.wait_for("STATUS=1 connections served");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        status.contains("0 active") && status.contains("5 bytes"),
        "{status}"
    );
    transfer(&server, b"678");
    let status = server.notify.wait_for("STATUS=2 connections served");
    assert!(status.contains("8 bytes"), "{status}");
}

#[test]
fn reload_is_announced_and_followed_by_ready() {
    let server = Spawn::new().start();
    server.signal(libc::SIGHUP);
    let reloading = server.notify.wait_for("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the same message");
    assert!(usec.parse::<u64>().expect("a number") > 0);
    let next = server.notify.recv(WAIT).expect("READY after reload");
    assert!(next.contains("READY=1"), "{next}");
    // A failed reload ends with READY=1 too.
    server.rewrite_config("idle_timeout = 5\n");
    server.signal(libc::SIGHUP);
    server.notify.wait_for("RELOADING=1");
    let next = server
        .notify
        .recv(WAIT)
        .expect("READY after a failed reload");
    assert!(next.contains("READY=1"), "{next}");
}

#[test]
fn stopping_is_sent_when_a_stop_begins() {
    let mut server = Spawn::new().start();
    server.signal(libc::SIGTERM);
    server.notify.wait_for("STOPPING=1");
    let (status, _) = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn watchdog_pings_at_least_every_half_interval() {
    // WATCHDOG_PID names the server itself: sh's $$ survives the exec.
    let notify = Notify::new();
    let mut child = Reaper(
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "WATCHDOG_PID=$$ WATCHDOG_USEC=400000 exec {BIN} {}",
                    free_port()
                ),
            ])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    notify.wait_for("READY=1");
    let start = Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = notify.recv(Duration::from_millis(500))
            && m.contains("WATCHDOG=1")
        {
            pings.push(start.elapsed());
        }
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(
        pings.len() >= 6,
        "only {} pings in 1.5 s: {pings:?}",
        pings.len()
    );
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().expect("gaps");
    assert!(
        worst <= Duration::from_millis(300),
        "gap of {worst:?} with a 400 ms watchdog"
    );
}

#[test]
fn no_watchdog_for_another_pid() {
    let notify = Notify::new();
    let mut child = Reaper(
        Command::new(BIN)
            .arg(free_port().to_string())
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000")
            .env("WATCHDOG_PID", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    notify.wait_for("READY=1");
    let got = notify.recv(Duration::from_millis(600));
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(got.is_none(), "unexpected notification: {got:?}");
}

#[test]
fn without_notify_socket_everything_still_works() {
    let port = free_port();
    let mut child = Reaper(
        Command::new(BIN)
            .arg(port.to_string())
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    let end = Instant::now() + WAIT;
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    };
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut s), "greeting");
    finish(s);
    assert_eq!(stdout.expect(), "0");
    // SAFETY: kill(2) on our own unreaped child.0.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(child.0.wait().expect("wait").code(), Some(0));
}
