//! Minimal reproductions of defects the soak found, kept as regression
//! tests: each asserts a promise of the README and each failed before its
//! fix.

mod common;

use common::raw::{NotifyLog, spawn_named, spawn_raw};
use common::*;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Defect 1 (fixed: fresh clock in open/service): the idle deadline is computed from the event loop's `now`,
/// taken before the loop processed its events. When a stdout write blocks
/// (a slow or stalled reader), every connection accepted later in the same
/// round (and every byte counted later in it) gets a deadline that is
/// already partly or wholly spent: a client is cut off with ERROR after
/// less than idle_timeout of silence, or right after its greeting.
#[test]
fn regression_idle_timeout_counts_time_spent_blocked_on_stdout() {
    // max_connections = 1 keeps the next client waiting in the backlog with
    // the listener marked pending, so it is accepted in the very round in
    // which the server blocked.
    let raw = spawn_raw(
        "idle_timeout = \"1s\"\nmax_connections = 1\n[log]\ntarget = \"stderr\"\n",
        &[],
        &[],
    );
    let mut notify = NotifyLog::drain(&raw.notify.sock);
    let addr = SocketAddr::from(([127, 0, 0, 1], raw.port));
    let connect = || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s
    };
    // Nobody reads stdout (a 4 KiB pipe): 0-byte transfers until the
    // server blocks writing one's line "0\n".
    let mut z = connect();
    assert!(greeted(&mut z), "greeting");
    let mut x;
    let mut rounds = 0;
    loop {
        x = connect();
        z.shutdown(Shutdown::Write).expect("shutdown");
        z.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 8];
        match z.read(&mut buf) {
            Ok(0) => {}
            Ok(_) => panic!("unexpected bytes"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        rounds += 1;
        assert!(rounds < 5000, "the server never blocked on stdout");
        z = x;
        assert!(greeted(&mut z), "greeting");
    }
    // The server is blocked in write(2); x waits in the backlog.
    thread::sleep(Duration::from_millis(1500));
    let mut pipe = raw.stdout;
    let reader = spawn_named("stdout", move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    });
    assert!(greeted(&mut x), "x greeted once the server runs again");
    let greeted = Instant::now();
    let mut buf = [0u8; 8];
    let _ = x.read(&mut buf);
    let silent = greeted.elapsed();
    let mut child = raw.child;
    child.signal(libc::SIGTERM);
    let _ = child.0.wait();
    let _ = reader.join();
    notify.finish();
    assert!(
        silent >= Duration::from_millis(900),
        "a client was cut off after {silent:?} of silence (idle_timeout = 1s) \
         because the server had been blocked on stdout for 1.5 s; its log: {:?}",
        raw.stderr
            .seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| l.contains("idle timeout"))
    );
}

/// Defect 2 (fixed: one notify socket for the process): every sd_notify message opens a new socket. While the process
/// is out of file descriptors (accepts failing with EMFILE, which the
/// server otherwise rides out) WATCHDOG=1 cannot be sent, so systemd
/// (WatchdogSec=30s in the packaged unit) kills a server that is alive and
/// serving, and every open connection loses its line. READY=1 after a
/// SIGHUP is lost the same way.
#[test]
fn regression_watchdog_stops_while_out_of_fds() {
    if !prerequisite(have("prlimit"), "prlimit (util-linux)") {
        return;
    }
    let raw = spawn_raw(
        "idle_timeout = \"1h\"\nmax_connections = 1000\nmax_per_source = 0\n[log]\ntarget = \"stderr\"\n",
        &[],
        &[("WATCHDOG_USEC", "400000")],
    );
    lower_nofile(raw.child.0.id() as i32, 24);
    let mut notify = NotifyLog::drain(&raw.notify.sock);
    let addr = SocketAddr::from(([127, 0, 0, 1], raw.port));
    let t = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let before = notify.count_since("WATCHDOG=1", t);
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    raw.stderr.wait_for("accept failed");
    let t = Instant::now();
    raw.child.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(1500));
    let during = notify.count_since("WATCHDOG=1", t);
    let ready_after_hup = notify.count_since("READY=1", t);
    drop(held);
    let mut child = raw.child;
    child.signal(libc::SIGTERM);
    let _ = child.0.wait();
    notify.finish();
    assert!(before >= 3, "{before} WATCHDOG=1 in 1 s before");
    assert!(
        during >= 4 && ready_after_hup == 1,
        "while out of fds: {during} WATCHDOG=1 in 1.5 s (period 200 ms), \
         {ready_after_hup} READY=1 after SIGHUP"
    );
}

/// Defect 3 (fixed: a send timeout; low severity under systemd, which reads its socket): every
/// sd_notify message is a blocking send(2) on a fresh datagram socket. When
/// the receiver stops reading (a supervisor that only waits for READY=1, a
/// busy or frozen manager), its queue fills (net.unix.max_dgram_qlen, 10 by
/// default) and the next STATUS= blocks the serving loop for good (wchan
/// `unix_wait_for_peer`): nobody is greeted any more.
#[test]
fn regression_unread_notify_socket_freezes_the_server() {
    // spawn_raw reads only up to READY=1; nothing reads after that.
    let raw = spawn_raw("[log]\ntarget = \"stderr\"\n", &[], &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], raw.port));
    let mut pipe = raw.stdout;
    let reader = spawn_named("stdout", move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
    });
    let mut stuck = None;
    // STATUS= goes out at most every 500 ms after a connection ends.
    for i in 1..=20 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        if !greeted(&mut s) {
            stuck = Some(i);
            break;
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        // Only the greeting matters here; the close is not waited for.
        let _ = s.read(&mut [0u8; 64]);
        thread::sleep(Duration::from_millis(600));
    }
    let mut child = raw.child;
    let wchan =
        std::fs::read_to_string(format!("/proc/{}/wchan", child.0.id())).unwrap_or_default();
    child.signal(libc::SIGKILL);
    let _ = child.0.wait();
    let _ = reader.join();
    assert_eq!(
        stuck, None,
        "connection {stuck:?} was never greeted: the server is blocked in {wchan:?}"
    );
}
