//! Socket activation through the real `systemd-socket-activate`: inherited
//! listeners are served (IPv4 and IPv6), checked, and never re-bound.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

struct Activated {
    child: Reaper,
    stdout: Lines,
    stderr: Lines,
    _dir: TempDir,
}

/// Start `systemd-socket-activate` on `listen` addresses with the server as
/// its program; returns once the first address accepts TCP connections.
fn activate(listen: &[SocketAddr], extra: &[&str], notify: Option<&Notify>) -> Option<Activated> {
    let dir = TempDir::new("activation");
    let config = dir.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let mut cmd = Command::new("systemd-socket-activate");
    for a in listen {
        cmd.arg("-l").arg(a.to_string());
    }
    if let Some(n) = notify {
        cmd.arg(format!("--setenv=NOTIFY_SOCKET={}", n.path.display()));
    }
    cmd.args(["--", BIN, "--config", &path_of(&config)])
        .args(extra);
    let mut child = Reaper(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate"),
    );
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let end = Instant::now() + WAIT;
    // It logs "Listening on ..." once per socket before waiting.
    let mut listening = 0;
    while listening < listen.len() {
        match stderr.next(Duration::from_millis(100)) {
            Some(l) if l.contains("Listening on") => listening += 1,
            Some(l) if l.contains("Address already in use") => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                return None;
            }
            _ => {}
        }
        assert!(
            Instant::now() < end,
            "systemd-socket-activate did not listen"
        );
    }
    Some(Activated {
        child,
        stdout,
        stderr,
        _dir: dir,
    })
}

fn activate_on_free_ports(
    n: usize,
    v6: bool,
    extra: &[&str],
    notify: Option<&Notify>,
) -> (Activated, Vec<SocketAddr>) {
    for _ in 0..20 {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| {
                let ip = if v6 && i % 2 == 1 {
                    "[::1]"
                } else {
                    "127.0.0.1"
                };
                format!("{ip}:{}", free_port()).parse().expect("addr")
            })
            .collect();
        if let Some(a) = activate(&addrs, extra, notify) {
            return (a, addrs);
        }
    }
    panic!("no free ports for systemd-socket-activate");
}

fn transfer_to(addr: SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut s), "greeting");
    s.write_all(payload).expect("send");
    finish(s);
}

fn require_tool() {
    assert!(
        have("systemd-socket-activate"),
        "systemd-socket-activate (package systemd) is required"
    );
}

fn stop(mut a: Activated) -> Vec<String> {
    // SAFETY: kill(2) on our own unreaped child (the server, exec'd in place).
    unsafe { libc::kill(a.child.0.id() as i32, libc::SIGTERM) };
    let status = a.child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    a.stderr.rest()
}

#[test]
fn one_inherited_socket_is_served() {
    require_tool();
    let (a, addrs) = activate_on_free_ports(1, false, &[], None);
    // The first connection starts the server; it is served like any other.
    transfer_to(addrs[0], b"activated");
    assert_eq!(a.stdout.expect(), "9");
    transfer_to(addrs[0], b"again");
    assert_eq!(a.stdout.expect(), "5");
    let log = stop(a).join("\n");
    assert!(!log.contains("warning"), "{log}");
}

#[test]
fn ipv4_and_ipv6_sockets_are_both_served() {
    require_tool();
    let (a, addrs) = activate_on_free_ports(2, true, &[], None);
    transfer_to(addrs[0], b"four");
    assert_eq!(a.stdout.expect(), "4");
    transfer_to(addrs[1], b"sixsix");
    assert_eq!(a.stdout.expect(), "6");
    let start = a.stderr.wait_for("started");
    assert!(
        start.contains(&addrs[0].to_string()) && start.contains(&addrs[1].to_string()),
        "{start}"
    );
    let log = stop(a).join("\n");
    assert!(log.contains("from [::1]:"), "{log}");
}

#[test]
fn a_port_argument_that_matches_no_socket_only_warns() {
    require_tool();
    let (a, addrs) = activate_on_free_ports(1, false, &["1"], None);
    transfer_to(addrs[0], b"x");
    assert_eq!(a.stdout.expect(), "1");
    let warning = a.stderr.wait_for("warning");
    assert!(
        warning.contains("port 1 ") && warning.contains(&addrs[0].to_string()),
        "{warning}"
    );
    stop(a);
}

#[test]
fn ready_is_sent_after_activation() {
    require_tool();
    let notify = Notify::new();
    let (a, addrs) = activate_on_free_ports(1, false, &[], Some(&notify));
    let mut first = TcpStream::connect(addrs[0]).expect("connect");
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS="), "{ready}");
    first.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut first), "greeting");
    finish(first);
    assert_eq!(a.stdout.expect(), "0");
    stop(a);
}

#[test]
fn a_datagram_socket_is_refused_with_71() {
    require_tool();
    let port = free_port();
    let mut child = Reaper(
        Command::new("systemd-socket-activate")
            .args(["--datagram", "-l", &format!("127.0.0.1:{port}"), "--", BIN])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate"),
    );
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    stderr.wait_for("Listening on");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    // Datagram activation waits for a first packet.
    let end = Instant::now() + WAIT;
    let status = loop {
        let _ = udp.send_to(b"wake", ("127.0.0.1", port));
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(Instant::now() < end, "server did not exit");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(71));
    let err = stderr.wait_for("ERROR:");
    assert!(err.contains("not a stream socket"), "{err}");
    let mut out = Vec::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    assert!(out.is_empty(), "stdout: {out:?}");
}

#[test]
fn a_non_socket_fd_is_refused_with_71() {
    // The shell's $$ is the pid the server will have after exec.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {BIN} 5000 3</dev/null"),
        ])
        .output()
        .expect("sh");
    assert_eq!(out.status.code(), Some(71));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR:") && err.contains("descriptor 3"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_listen_pid_for_another_process_is_ignored() {
    // Not ours: the server binds PORT itself, as without activation.
    let port = free_port();
    let dir = TempDir::new("listen-pid");
    let config = dir.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let mut child = Reaper(
        Command::new(BIN)
            .args(["--config", &path_of(&config), &port.to_string()])
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let line = stderr.wait_for("started");
    assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    let _ = child.0.kill();
    let _ = child.0.wait();
}
