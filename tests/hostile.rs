//! One client must not keep the others out: the per-source cap (IPv4 and
//! IPv6 /64 sources), `min_rate`, and 1024 clients under a low soft
//! `RLIMIT_NOFILE` that the server raises itself.

mod common;

use common::*;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn one_source_cannot_keep_the_others_out() {
    let server = Spawn::new().start();
    let addr = server.addr();
    // The attacker holds as many connections as it can and drips a byte
    // into each every few seconds.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match connect_from(ip("127.0.0.1"), addr) {
            Ok(mut s) => {
                if greeted(&mut s) {
                    held.push(s);
                } else {
                    refused += 1;
                }
            }
            // A reset can reach the client before its connect returns.
            Err(_) => refused += 1,
        }
    }
    assert_eq!(held.len(), 16, "the default max_per_source");
    assert_eq!(refused, 24);
    for s in &mut held {
        s.write_all(b"x").expect("drip");
    }
    for _ in 0..24 {
        assert_eq!(server.stdout.expect(), "ERROR");
    }
    // Another source is greeted at once and counted exactly.
    let start = Instant::now();
    let mut other = connect_from(ip("127.0.0.2"), addr).expect("connect");
    assert!(greeted(&mut other), "the other source was refused");
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_millis(100),
        "greeting took {waited:?}"
    );
    let data = payload(1 << 20, 1);
    other.write_all(&data).expect("send");
    finish(other);
    assert_eq!(server.stdout.expect(), (1u64 << 20).to_string());
    // One report for the flood, not 24.
    server.stderr.wait_for("already has max_per_source");
    thread::sleep(Duration::from_millis(200));
    let reports = server.stderr.count("max_per_source");
    assert_eq!(reports, 1, "refusals were not rate-limited");
    // A slot freed is a slot for the same source again.
    let s = held.pop().expect("held");
    finish(s);
    assert_eq!(server.stdout.expect(), "1");
    let mut again = connect_from(ip("127.0.0.1"), addr).expect("connect");
    assert!(greeted(&mut again));
}

/// Run `f` on a thread that lives in the network namespace of `pid`.
fn in_netns<T: Send + 'static>(pid: i32, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open netns");
    thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace fd; it moves only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .expect("netns thread")
}

#[test]
fn an_ipv6_source_is_its_64() {
    if !prerequisite(
        is_root() && have("unshare") && have("ip"),
        "root, unshare and ip for a private network namespace",
    ) {
        return;
    }
    let setup = "ip link set lo up && \
                 ip addr add 2001:db8::1/64 dev lo nodad && \
                 ip addr add 2001:db8::2/64 dev lo nodad && \
                 ip addr add 2001:db8:0:1::1/64 dev lo nodad && \
                 exec \"$@\"";
    let server = Spawn::new()
        .config("bind = \"::\"\nmax_per_source = 2\n")
        .wrap(&["unshare", "--net", "sh", "-c", setup, "sh"])
        .start();
    let port = server.port;
    let counts = in_netns(server.pid(), move || {
        let to = SocketAddr::new(ip("::1"), port);
        let try_greet = |from: &str| -> Option<TcpStream> {
            let mut s = connect_from(ip(from), to).ok()?;
            greeted(&mut s).then_some(s)
        };
        let a = try_greet("2001:db8::1");
        let b = try_greet("2001:db8::2");
        // The same /64, a third time: refused.
        let c = try_greet("2001:db8::1");
        // Another /64, and IPv4 over the dual-stack socket: served.
        let d = try_greet("2001:db8:0:1::1");
        let e = connect_from(ip("127.0.0.1"), SocketAddr::new(ip("127.0.0.1"), port))
            .ok()
            .and_then(|mut s| greeted(&mut s).then_some(s));
        let served = [&a, &b, &c, &d, &e].map(|s| s.is_some());
        drop((a, b, c, d, e));
        served
    });
    assert_eq!(counts, [true, true, false, true, true]);
    server
        .stderr
        .wait_for("source 2001:db8::/64 already has max_per_source = 2");
}

#[test]
fn min_rate_ends_a_dripping_client_and_keeps_a_steady_one() {
    let server = Spawn::new()
        .config("idle_timeout = \"1s\"\nmin_rate = 1000\n")
        .start();
    let addr = server.addr();
    // 100 bytes every 300 ms is never idle for 1 s, but averages 333 B/s.
    let dripper = thread::spawn(move || {
        let mut s = connect_greeted(addr).expect("greeted");
        let start = Instant::now();
        while s.write_all(&[b'd'; 100]).is_ok() && start.elapsed() < Duration::from_secs(8) {
            thread::sleep(Duration::from_millis(300));
        }
        start.elapsed()
    });
    // 100 bytes every 50 ms is 2000 B/s: above the rate, counted.
    let mut steady = connect_greeted(addr).expect("greeted");
    for _ in 0..60 {
        steady.write_all(&[b's'; 100]).expect("steady send");
        thread::sleep(Duration::from_millis(50));
    }
    finish(steady);
    let cut = dripper.join().expect("dripper");
    assert!(cut < Duration::from_secs(4), "the dripper lasted {cut:?}");
    let mut lines = [server.stdout.expect(), server.stdout.expect()];
    lines.sort();
    assert_eq!(lines, ["6000", "ERROR"]);
    server.stderr.wait_for("below min_rate");
}

#[test]
fn a_thousand_clients_under_a_low_soft_file_limit() {
    if !prerequisite(have("prlimit"), "prlimit (util-linux)") {
        return;
    }
    assert!(
        raise_nofile() >= 4096,
        "the test needs 2048 descriptors itself"
    );
    // Soft 1024 (what most shells give), hard 8192: the server must raise
    // the soft limit itself to serve 1024 clients at once.
    let server = Spawn::new()
        .wrap(&["prlimit", "--nofile=1024:8192", "--"])
        .start();
    let addr = server.addr();
    let mut open = Vec::new();
    for i in 0..1024u32 {
        // 64 sources, 16 each: exactly the default max_per_source.
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i % 64) as u8 + 1));
        let mut s = connect_from(from, addr).expect("connect");
        assert!(greeted(&mut s), "client {i} was not greeted");
        open.push(s);
    }
    for (i, s) in open.iter_mut().enumerate() {
        s.write_all(&payload(i + 1, i as u64)).expect("send");
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    let mut counts: Vec<u64> = (0..1024)
        .map(|_| server.stdout.expect().parse().expect("a count"))
        .collect();
    counts.sort();
    assert_eq!(counts, (1..=1024).collect::<Vec<u64>>());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile");
    assert!(line.split_whitespace().nth(3) == Some("8192"), "{line}");
}

#[test]
fn a_file_limit_too_low_for_max_connections_is_a_warning_and_serving_fits_it() {
    if !prerequisite(have("prlimit"), "prlimit (util-linux)") {
        return;
    }
    // 40 descriptors: the default 1024 connections cannot fit.
    let server = Spawn::new()
        .config("max_per_source = 0\n")
        .wrap(&["prlimit", "--nofile=40:40", "--"])
        .start();
    let warning = server.stderr.wait_for("does not fit the open file limit");
    let fit: usize = warning
        .split("serving at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("the number served");
    assert!((10..40).contains(&fit), "{warning}");
    // As many as fit are served at once, the rest wait; none is lost.
    let addr = server.addr();
    let mut open: Vec<TcpStream> = (0..fit)
        .map(|_| connect_greeted(addr).expect("greeted"))
        .collect();
    let mut waiting = TcpStream::connect(addr).expect("connect");
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(!greeted(&mut waiting), "greeted beyond what fits");
    finish(open.pop().expect("one"));
    assert_eq!(server.stdout.expect(), "0");
    waiting.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut waiting));
    assert!(
        !server.stderr.saw("Too many open files"),
        "accept failed with EMFILE"
    );
}
