//! Stop and reload signals: exit 0 within 250 ms whatever the clients do,
//! one line per connection, the shutdown grace, SIGHUP.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

const STOP_LIMIT: Duration = Duration::from_millis(250);

fn stop_and_check(mut server: Server, sig: i32) -> Vec<String> {
    server.signal(sig);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status after signal {sig}");
    assert!(took <= STOP_LIMIT, "signal {sig}: exit took {took:?}");
    server.stdout.rest()
}

#[test]
fn idle_server_stops_at_once_on_each_stop_signal() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
        let server = Spawn::new().start();
        let lines = stop_and_check(server, sig);
        assert!(lines.is_empty(), "{lines:?}");
    }
}

#[test]
fn open_connections_end_with_error_lines() {
    let server = Spawn::new().start();
    let conns: Vec<TcpStream> = (0..5).map(|_| server.connect()).collect();
    transfer(&server, b"done");
    assert_eq!(server.stdout.expect(), "4");
    let lines = stop_and_check(server, libc::SIGTERM);
    assert_eq!(lines, vec!["ERROR"; 5]);
    drop(conns);
}

#[test]
fn stops_within_250ms_during_a_transfer() {
    let server = Spawn::new().start();
    let mut s = server.connect();
    let (sending, started) = std::sync::mpsc::channel();
    let sender = thread::spawn(move || {
        let buf = vec![0u8; 1 << 20];
        // 16 MiB through: the transfer is under way (the server is reading).
        for _ in 0..16 {
            s.write_all(&buf).expect("first megabytes");
        }
        let _ = sending.send(());
        // Ends when the server goes away (reset or broken pipe).
        while s.write_all(&buf).is_ok() {}
    });
    started.recv_timeout(WAIT).expect("the transfer started");
    let lines = stop_and_check(server, libc::SIGTERM);
    assert_eq!(lines, vec!["ERROR"]);
    sender.join().expect("sender");
}

#[test]
fn stops_within_250ms_with_64_open_and_more_waiting() {
    let server = Spawn::new()
        .config("max_connections = 64\nmax_per_source = 0\n")
        .start();
    let open: Vec<TcpStream> = (0..64).map(|_| server.connect()).collect();
    let waiting: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr()).expect("connect"))
        .collect();
    let lines = stop_and_check(server, libc::SIGINT);
    // Only accepted connections have lines; the backlog was never accepted.
    assert_eq!(lines, vec!["ERROR"; 64]);
    drop((open, waiting));
}

#[test]
fn grace_lets_open_connections_finish() {
    let mut server = Spawn::new().config("shutdown_grace = \"5s\"").start();
    let mut finishing = server.connect();
    let lingering = server.connect();
    server.signal(libc::SIGTERM);
    server.notify.wait_for("STOPPING=1");
    // The listener is closed before STOPPING=1 is sent.
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "still accepting after SIGTERM"
    );
    finishing.write_all(b"graceful").expect("send");
    finish(finishing);
    assert_eq!(server.stdout.expect(), "8");
    // A second signal ends the grace: the lingering one gets ERROR.
    server.signal(libc::SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took <= STOP_LIMIT, "second signal: exit took {took:?}");
    assert_eq!(server.stdout.rest(), vec!["ERROR"]);
    drop(lingering);
}

#[test]
fn grace_expires_with_error_lines() {
    let mut server = Spawn::new().config("shutdown_grace = \"300ms\"").start();
    let lingering = server.connect();
    server.signal(libc::SIGQUIT);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(800),
        "{took:?}"
    );
    assert_eq!(server.stdout.rest(), vec!["ERROR"]);
    drop(lingering);
}

#[test]
fn grace_ends_early_when_the_last_connection_closes() {
    let mut server = Spawn::new().config("shutdown_grace = \"1m\"").start();
    let s = server.connect();
    server.signal(libc::SIGTERM);
    server.notify.wait_for("STOPPING=1");
    finish(s);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(server.stdout.rest(), vec!["0"]);
}

#[test]
fn sighup_without_config_changes_nothing_and_keeps_serving() {
    let port = free_port();
    let notify = Notify::new();
    let mut child = Reaper(
        std::process::Command::new(BIN)
            .arg(port.to_string())
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    notify.wait_for("READY=1");
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    // SAFETY: kill(2) on our own unreaped child.0.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    stderr.wait_for("nothing to reload");
    transfer_raw(std::net::SocketAddr::from(([127, 0, 0, 1], port)), b"hup");
    assert_eq!(stdout.expect(), "3");
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(child.0.wait().expect("wait").code(), Some(0));
}

#[test]
fn broken_stdout_logs_the_count_and_keeps_serving() {
    // The only reader of the stdout pipe is gone: writes fail with EPIPE.
    let server = Spawn::new().broken_stdout().start();
    for _ in 0..3 {
        transfer_raw(server.addr(), b"lost?");
    }
    server.stderr.wait_for("its line was: 5");
    transfer_raw(server.addr(), b"still here");
    server.stderr.wait_for("its line was: 10");
}

fn transfer_raw(addr: std::net::SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut s), "greeting");
    s.write_all(payload).expect("send");
    finish(s);
}

#[test]
fn a_stdout_nobody_reads_delays_a_stop_by_5_s_at_most() {
    // A pipe the test fills itself and never reads: the server's first
    // count line finds no room.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the fds were just created and are owned here.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: F_SETPIPE_SZ/F_SETFL on our own pipe.
    unsafe {
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut w = &write_end;
    while w.write(&[b'x'; 512]).is_ok() {}
    // SAFETY: clear O_NONBLOCK again; the server gets a blocking stdout.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, 0) };
    let port = free_port();
    let dir = TempDir::new("full-stdout");
    let config = dir.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let notify = Notify::new();
    let mut child = Reaper(
        std::process::Command::new(BIN)
            .args(["--config", &path_of(&config), &port.to_string()])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(std::process::Stdio::from(write_end))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    notify.wait_for("READY=1");
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Counted, but its line cannot be written: the server waits for room
    // in poll(2) (not in its epoll_wait), holding the connection open.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"stuck").expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let wchan = format!("/proc/{}/wchan", child.0.id());
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.starts_with("poll_schedule_timeout")) {
        assert!(start.elapsed() < WAIT, "the server never waited for stdout");
        thread::sleep(Duration::from_millis(5));
    }
    child.signal(libc::SIGTERM);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server hung on a full stdout"
        );
        thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(status.code(), Some(0));
    // The pending line gets 5 s to find room, then it is logged instead.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(6),
        "stop took {took:?}"
    );
    let log = stderr.rest().join("\n");
    assert!(log.contains("its line was: 5"), "{log}");
    drop((s, read_end));
}
