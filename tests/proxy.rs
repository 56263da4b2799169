//! `proxy_protocol = true`: PROXY protocol headers v1 and v2 written by
//! hand on real sockets (whole, cut into pieces, sent with the payload,
//! malformed, never finished), the per-source cap and saving behind a
//! header, and two servers behind a real HAProxy.
//!
//! (Over 500 lines because it covers every header variant against the real
//! binary; the header builders themselves are in `common::proxy_header`.)

mod common;

use common::proxy_header::*;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn loopback() -> IpAddr {
    ip("127.0.0.1")
}

/// A server that wants a PROXY header on every connection.
fn proxied(extra: &str) -> Server {
    Spawn::new()
        .config(&format!("proxy_protocol = true\n{extra}"))
        .start()
}

/// Connect from 127.0.0.1 and send `bytes`.
fn send(server: &Server, bytes: &[u8]) -> TcpStream {
    let mut s = connect_from(loopback(), server.addr()).expect("connect");
    s.write_all(bytes).expect("send");
    s
}

/// Send `header`, get the greeting, send `data`, half-close; the count
/// must be exactly `data`'s length. Returns the TCP peer (our end).
fn upload(server: &Server, header: &[u8], data: &[u8]) -> SocketAddr {
    let mut s = send(server, header);
    let peer = s.local_addr().expect("local address");
    assert!(greeted(&mut s), "no greeting after a valid header");
    s.write_all(data).expect("payload");
    finish(s);
    assert_eq!(server.stdout.expect(), data.len().to_string());
    peer
}

/// The log line of a counted connection.
fn counted(n: u64, client: SocketAddr, bytes: usize) -> String {
    format!("connection {n} from {client}: closed by client, {bytes} bytes")
}

/// What the server sends until it ends the connection, by a FIN or a reset.
fn until_end(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset may surface as any of these, depending on whether a
            // write of ours met it first.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return got;
            }
            Err(e) => panic!(
                "the server did not end the connection: {e} ({:?})",
                e.kind()
            ),
        }
    }
}

/// Not greeted yet: nothing has arrived from the server.
fn nothing_yet(s: &TcpStream) {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    match s.peek(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the server sent something before the header was whole: {other:?}"),
    }
    s.set_nonblocking(false).expect("blocking");
}

/// Write `bytes` a few at a time, each piece its own TCP segment.
fn in_pieces(s: &mut TcpStream, bytes: &[u8], piece: usize) {
    s.set_nodelay(true).expect("TCP_NODELAY");
    let pieces: Vec<&[u8]> = bytes.chunks(piece).collect();
    for (i, chunk) in pieces.iter().enumerate() {
        s.write_all(chunk).expect("send a piece");
        // A pause, not a synchronisation: it makes the pieces separate
        // segments that the server sees one by one.
        thread::sleep(Duration::from_millis(5));
        if i + 1 < pieces.len() {
            nothing_yet(s);
        }
    }
}

/// Connect from 127.0.0.1, send `bytes`: the server must end the
/// connection without a greeting, print `ERROR` and log why.
fn refused_with(server: &Server, bytes: &[u8], why: &str) {
    let mut s = connect_from(loopback(), server.addr()).expect("connect");
    let port = s.local_addr().expect("local address").port();
    // The reset may already be on its way: a failed write is no failure.
    let _ = s.write_all(bytes);
    assert!(
        until_end(&mut s).is_empty(),
        "greeted after {:?}",
        String::from_utf8_lossy(bytes)
    );
    refusal_reported(server, port, why);
}

/// What the refusal of our client on `port` leaves: an `ERROR` line, and
/// why in the log.
fn refusal_reported(server: &Server, port: u16, why: &str) {
    assert_eq!(server.stdout.expect(), "ERROR");
    server.stderr.wait_for(&format!(
        "refused 127.0.0.1:{port}: no valid PROXY protocol header ({why})"
    ));
}

/// Why a client that closes in the middle of its header is refused.
const CLOSED_EARLY: &str = "the client closed before a complete header";

#[test]
fn v1_headers_carry_the_client_and_are_not_counted() {
    let server = proxied("");
    let dst = sa("127.0.0.1:5000");
    let data = payload(100_000, 1);
    let client = sa("192.0.2.44:56324");
    upload(&server, &v1(client, dst), &data);
    server.stderr.wait_for(&counted(1, client, data.len()));

    let client = sa("[2001:db8:5::7]:40000");
    let header = v1(client, sa("[2001:db8::1]:5000"));
    upload(&server, &header, &data[..7]);
    server.stderr.wait_for(&counted(2, client, 7));

    // A v4-mapped IPv6 client is its IPv4 address.
    let header = v1(sa("[::ffff:198.51.100.9]:1234"), sa("[::1]:5000"));
    upload(&server, &header, b"");
    server
        .stderr
        .wait_for(&counted(3, sa("198.51.100.9:1234"), 0));
}

#[test]
fn v2_headers_carry_the_client_and_are_not_counted() {
    let server = proxied("");
    let data = payload(250_000, 2);

    // IPv4 with TLVs: 12 address bytes and 668 TLV bytes, all skipped.
    let client = sa("203.0.113.7:61000");
    let header = v2(client, sa("198.51.100.1:5000"), &some_tlvs());
    assert_eq!(header.len(), 16 + 12 + 668);
    upload(&server, &header, &data);
    server.stderr.wait_for(&counted(1, client, data.len()));

    let client = sa("[2001:db8:abcd::42]:65535");
    let header = v2(client, sa("[2001:db8::1]:5000"), &[]);
    assert_eq!(header.len(), 16 + 36);
    upload(&server, &header, &data[..1000]);
    server.stderr.wait_for(&counted(2, client, 1000));

    // LOCAL (what a balancer's own health check sends): the connection's
    // own peer is the client, also when addresses follow.
    let peer = upload(&server, &v2_raw(0x20, 0x00, &[]), &data[..5]);
    assert_eq!(peer.ip(), loopback());
    server.stderr.wait_for(&counted(3, peer, 5));
    let (fam, block) = v2_block(sa("192.0.2.99:1"), sa("192.0.2.100:2"));
    let peer = upload(&server, &v2_raw(0x20, fam, &block), &data[..6]);
    server.stderr.wait_for(&counted(4, peer, 6));
    assert!(
        !server.stderr.saw("192.0.2.99"),
        "a LOCAL header's addresses were taken for the client"
    );
}

#[test]
fn a_header_in_pieces_is_waited_for() {
    let server = proxied("");
    let data = payload(70_000, 3);
    let cases = [
        (
            v1(sa("192.0.2.50:4242"), sa("192.0.2.1:5000")),
            3,
            sa("192.0.2.50:4242"),
        ),
        (
            v2(
                sa("192.0.2.51:4343"),
                sa("192.0.2.1:5000"),
                &tlv(0x02, b"pieces.example.org"),
            ),
            5,
            sa("192.0.2.51:4343"),
        ),
    ];
    for (n, (header, piece, client)) in cases.into_iter().enumerate() {
        let mut s = connect_from(loopback(), server.addr()).expect("connect");
        in_pieces(&mut s, &header, piece);
        assert!(greeted(&mut s), "no greeting after a header in pieces");
        s.write_all(&data).expect("payload");
        finish(s);
        assert_eq!(server.stdout.expect(), data.len().to_string());
        server
            .stderr
            .wait_for(&counted(n as u64 + 1, client, data.len()));
    }
}

#[test]
fn header_and_payload_in_one_write() {
    let server = proxied("");
    let data = payload(1 << 20, 4);
    let headers = [
        v1(sa("192.0.2.60:1000"), sa("192.0.2.1:5000")),
        v2(sa("192.0.2.61:1001"), sa("192.0.2.1:5000"), &some_tlvs()),
    ];
    for header in headers {
        // Header, payload and FIN at once, as a balancer forwards a short
        // upload; only then the greeting is read.
        let mut s = connect_from(loopback(), server.addr()).expect("connect");
        s.write_all(&[header, data.clone()].concat())
            .expect("send all");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("read until the server closes");
        assert_eq!(got, GREETING);
        assert_eq!(server.stdout.expect(), data.len().to_string());
    }
    server
        .stderr
        .wait_for(&counted(1, sa("192.0.2.60:1000"), data.len()));
    server
        .stderr
        .wait_for(&counted(2, sa("192.0.2.61:1001"), data.len()));
}

#[test]
fn a_malformed_header_is_refused_without_a_greeting() {
    let server = proxied("");
    let mut bad_version = v2(sa("192.0.2.1:1000"), sa("192.0.2.2:5000"), &[]);
    bad_version[12] = 0x11;
    let cases: [(&[u8], &str); 5] = [
        (b"hello\r\n", "not a PROXY header"),
        (&bad_version, "PROXY v2: version is not 2"),
        (
            b"PROXY TCP4 192.0.2.300 192.0.2.2 1000 5000\r\n",
            "PROXY v1: bad source address",
        ),
        (
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 5000\n",
            "PROXY v1: bad destination port",
        ),
        (b"\r\n\r\n\0\r\nQUIT\r", "PROXY v2: bad signature"),
    ];
    for (bytes, why) in cases {
        refused_with(&server, bytes, why);
    }
    // Closing before any header byte is refused the same way.
    let mut s = connect_from(loopback(), server.addr()).expect("connect");
    let port = s.local_addr().expect("local address").port();
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(until_end(&mut s).is_empty());
    refusal_reported(&server, port, CLOSED_EARLY);
    // Refusals took no connection number: the next client is number 1.
    let client = sa("192.0.2.9:999");
    upload(&server, &v1(client, sa("192.0.2.1:5000")), b"ok");
    server.stderr.wait_for(&counted(1, client, 2));
}

#[test]
fn a_header_cut_short_by_a_close_is_refused_at_once() {
    let server = proxied("idle_timeout = \"5s\"\n");
    let mut s = send(&server, b"PROXY TCP4 192.0.2.1 ");
    let port = s.local_addr().expect("local address").port();
    let start = Instant::now();
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(until_end(&mut s).is_empty());
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "ended after {took:?}");
    refusal_reported(&server, port, CLOSED_EARLY);
}

#[test]
fn a_header_not_complete_within_idle_timeout_is_refused() {
    let server = proxied("idle_timeout = \"1s\"\n");
    let addr = server.addr();
    let start = Instant::now();
    let silent = connect_from(loopback(), addr).expect("connect");
    let stalled = send(&server, b"PROXY TCP4 192.0.2.1 ");
    // Never idle for 1 s, yet never done: bytes do not buy more time.
    let dripping = connect_from(loopback(), addr).expect("connect");
    let mut drip = dripping.try_clone().expect("clone");
    let dripper = thread::spawn(move || {
        for &b in b"PROXY UNKNOWN ".iter().chain([b'x'; 80].iter()) {
            if drip.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(150));
        }
    });
    let mut ports = Vec::new();
    for mut s in [silent, stalled, dripping] {
        ports.push(s.local_addr().expect("local address").port());
        assert!(until_end(&mut s).is_empty(), "greeted without a header");
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&took),
            "ended after {took:?}, not about 1 s"
        );
    }
    dripper.join().expect("dripper");
    for _ in 0..3 {
        assert_eq!(server.stdout.expect(), "ERROR");
    }
    let mut said = Vec::new();
    for _ in 0..3 {
        said.push(server.stderr.wait_for("not complete within idle_timeout"));
    }
    for port in ports {
        assert!(
            said.iter().any(|l| l.contains(&format!(
                "refused 127.0.0.1:{port}: no valid PROXY protocol header"
            ))),
            "no refusal logged for port {port}: {said:?}"
        );
    }
}

#[test]
fn max_per_source_counts_the_address_in_the_header() {
    let server = proxied("max_per_source = 2\n");
    let dst = sa("192.0.2.1:5000");
    // Every TCP connection comes from 127.0.0.1; the headers say otherwise.
    let open = |header: Vec<u8>| -> Option<TcpStream> {
        let mut s = connect_from(loopback(), server.addr()).ok()?;
        s.write_all(&header).ok()?;
        greeted(&mut s).then_some(s)
    };
    let a = open(v1(sa("203.0.113.5:1001"), dst)).expect("first greeted");
    let b = open(v2(sa("203.0.113.5:1002"), dst, &[])).expect("second greeted");
    assert!(
        open(v1(sa("203.0.113.5:1003"), dst)).is_none(),
        "a third from the same carried source was greeted"
    );
    assert_eq!(server.stdout.expect(), "ERROR");
    server.stderr.wait_for(
        "refused 203.0.113.5:1003: source 203.0.113.5 already has max_per_source = 2 connections open",
    );
    let c = open(v2(sa("203.0.113.6:1004"), dst, &some_tlvs())).expect("another source greeted");
    // IPv6 sources are /64s, also when they come in a header.
    let v6dst = sa("[2001:db8::1]:5000");
    let d = open(v1(sa("[2001:db8:1::1]:2001"), v6dst)).expect("greeted");
    let e = open(v2(sa("[2001:db8:1::2]:2002"), v6dst, &[])).expect("greeted");
    assert!(open(v1(sa("[2001:db8:1::3]:2003"), v6dst)).is_none());
    assert_eq!(server.stdout.expect(), "ERROR");
    server
        .stderr
        .wait_for("source 2001:db8:1::/64 already has max_per_source = 2");
    let f = open(v1(sa("[2001:db8:2::1]:2004"), v6dst)).expect("another /64 greeted");
    // A slot freed is a slot for that source again.
    finish(a);
    assert_eq!(server.stdout.expect(), "0");
    let g = open(v1(sa("203.0.113.5:1005"), dst)).expect("greeted after a close");
    for s in [b, c, d, e, f, g] {
        finish(s);
        assert_eq!(server.stdout.expect(), "0");
    }
}

#[test]
fn a_saved_file_holds_the_payload_not_the_header() {
    let tmp = TempDir::new("proxy-save");
    let dir = tmp.path("files");
    let server = Spawn::new()
        .config("proxy_protocol = true\n")
        .arg("--save-dir")
        .arg(&path_of(&dir))
        .start();
    // A refused client gets no number and leaves no file.
    refused_with(&server, b"hello\r\n", "not a PROXY header");
    let data = payload(300_000, 5);
    let header = v2(sa("192.0.2.70:7000"), sa("192.0.2.1:5000"), &some_tlvs());
    let mut s = send(&server, &[header, data.clone()].concat());
    assert!(greeted(&mut s));
    finish(s);
    assert_eq!(server.stdout.expect(), data.len().to_string());
    let small = b"a v1 header is not saved either";
    upload(
        &server,
        &v1(sa("192.0.2.71:7001"), sa("192.0.2.1:5000")),
        small,
    );
    assert!(
        std::fs::read(dir.join("1.file")).expect("1.file") == data,
        "1.file is not exactly the payload"
    );
    assert_eq!(std::fs::read(dir.join("2.file")).expect("2.file"), small);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["1.file", "2.file"]);
}

// --- A real HAProxy in front of two servers. ---

/// The haproxy binary: on PATH, or where Debian puts it (/usr/sbin is not
/// on every user's PATH).
fn haproxy_bin() -> Option<String> {
    if have("haproxy") {
        Some("haproxy".into())
    } else if Path::new("/usr/sbin/haproxy").exists() {
        Some("/usr/sbin/haproxy".into())
    } else {
        None
    }
}

/// Whether something listens on 127.0.0.1 or 0.0.0.0 port `port` (IPv4),
/// from /proc/net/tcp: a connection to find out would be a client too.
fn listening(port: u16) -> bool {
    let tail = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .expect("read /proc/net/tcp")
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&tail) && f[3] == "0A"
        })
}

/// HAProxy running in the foreground, killed and reaped on drop.
struct Balancer {
    _proc: Reaper,
    port: u16,
    log: Lines,
    _dir: TempDir,
}

impl Balancer {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn said(&self) -> Vec<String> {
        self.log.seen.lock().unwrap().clone()
    }
}

/// The shipped configuration's shape, on loopback ports: one frontend,
/// round robin over two servers, one sent v1 headers, the other v2, no
/// health checks (each would be a connection, and a line).
fn haproxy_config(front: u16, servers: [u16; 2]) -> String {
    format!(
        "global
    maxconn 1000
    log stderr format raw local0

defaults
    log global
    mode tcp
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend accio
    bind 127.0.0.1:{front}
    default_backend accio_servers

backend accio_servers
    balance roundrobin
    server accio1 127.0.0.1:{} send-proxy
    server accio2 127.0.0.1:{} send-proxy-v2
",
        servers[0], servers[1]
    )
}

/// Start HAProxy in front of `servers`, on a free port, and wait until its
/// frontend listens.
fn balancer(bin: &str, servers: [&Server; 2]) -> Balancer {
    for _ in 0..20 {
        let port = free_port();
        let dir = TempDir::new("haproxy");
        let cfg = dir.write(
            "haproxy.cfg",
            &haproxy_config(port, [servers[0].port, servers[1].port]),
        );
        let mut child = Command::new(bin)
            .args(["-db", "-f", &path_of(&cfg)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haproxy");
        let log = Lines::new(child.stderr.take().expect("stderr"));
        let mut proc = Reaper(child);
        let end = Instant::now() + WAIT;
        loop {
            if listening(port) {
                return Balancer {
                    _proc: proc,
                    port,
                    log,
                    _dir: dir,
                };
            }
            if let Some(status) = proc.0.try_wait().expect("try_wait") {
                let said = log.rest();
                // The port was taken meanwhile: try another one.
                if said.iter().any(|l| l.contains("cannot bind socket")) {
                    break;
                }
                panic!("haproxy exited ({status}): {said:?}");
            }
            assert!(
                Instant::now() < end,
                "haproxy not listening within 10 s: {:?}",
                log.seen.lock().unwrap()
            );
            // Polling: a socket going to LISTEN raises no event we can wait on.
            thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("could not start haproxy on a free port");
}

/// Two servers as they run behind the balancer.
fn two_servers() -> [Server; 2] {
    let conf = "proxy_protocol = true\nmax_per_source = 2\n";
    [
        Spawn::new().config(conf).start(),
        Spawn::new().config(conf).start(),
    ]
}

/// The next `n` stdout lines of the servers together, by server.
fn lines_of(servers: &[Server; 2], n: usize) -> [Vec<String>; 2] {
    let end = Instant::now() + WAIT;
    let mut got = [Vec::new(), Vec::new()];
    while got[0].len() + got[1].len() < n {
        assert!(
            Instant::now() < end,
            "only {got:?} of {n} lines within 10 s"
        );
        for (i, s) in servers.iter().enumerate() {
            if let Some(l) = s.stdout.next(Duration::from_millis(10)) {
                got[i].push(l);
            }
        }
    }
    got
}

fn haproxy_or_skip() -> Option<String> {
    let bin = haproxy_bin();
    prerequisite(bin.is_some(), "haproxy (Debian package haproxy)").then_some(bin?)
}

#[test]
fn the_shipped_haproxy_config_is_valid() {
    let Some(bin) = haproxy_or_skip() else {
        return;
    };
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/haproxy/accio.cfg");
    let out = Command::new(&bin)
        .args(["-c", "-f", &path_of(&cfg)])
        .stdin(Stdio::null())
        .output()
        .expect("run haproxy -c");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "haproxy -c failed: {said}");
    assert!(
        !said.contains("WARNING") && !said.contains("ALERT"),
        "haproxy -c: {said}"
    );
    // The shape the tests below run: PROXY v2 to every server, no checks.
    let text = std::fs::read_to_string(&cfg).expect("read the shipped config");
    let servers: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server "))
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    for s in servers {
        let words: Vec<&str> = s.split_whitespace().collect();
        assert!(words.contains(&"send-proxy-v2"), "{s}");
        assert!(!words.contains(&"check"), "{s}");
    }
    assert!(text.lines().any(|l| l.trim() == "bind :5000"));
    assert!(text.lines().any(|l| l.trim() == "mode tcp"));
}

#[test]
fn haproxy_spreads_clients_and_the_servers_see_who_they_are() {
    let Some(bin) = haproxy_or_skip() else {
        return;
    };
    let servers = two_servers();
    let lb = balancer(&bin, [&servers[0], &servers[1]]);
    // Client N comes from 127.0.0.N and sends its own size.
    let mut sent = Vec::new();
    for n in 2..=9u8 {
        let size = 12_345 * usize::from(n) * usize::from(n);
        let mut s = connect_from(IpAddr::from([127, 0, 0, n]), lb.addr()).expect("connect");
        let client = s.local_addr().expect("local address");
        assert!(
            greeted(&mut s),
            "client {client} not greeted through haproxy: {:?}",
            lb.said()
        );
        s.write_all(&payload(size, u64::from(n))).expect("send");
        finish(s);
        sent.push((size, client));
    }
    let got = lines_of(&servers, 8);
    let mut counts: Vec<usize> = got
        .iter()
        .flatten()
        .map(|l| l.parse().expect("a count"))
        .collect();
    counts.sort();
    let mut sizes: Vec<usize> = sent.iter().map(|&(size, _)| size).collect();
    sizes.sort();
    assert_eq!(counts, sizes, "every count exactly once");
    assert_eq!([got[0].len(), got[1].len()], [4, 4], "round robin: {got:?}");
    // Each server's log names the real client of each of its connections.
    for (server, lines) in servers.iter().zip(&got) {
        for (i, line) in lines.iter().enumerate() {
            let size: usize = line.parse().expect("a count");
            let client = sent.iter().find(|s| s.0 == size).expect("sent").1;
            server.stderr.wait_for(&counted(i as u64 + 1, client, size));
        }
        assert!(
            !server.stderr.saw("from 127.0.0.1:"),
            "a server saw the balancer as the client"
        );
    }
}

#[test]
fn max_per_source_holds_per_client_through_haproxy() {
    let Some(bin) = haproxy_or_skip() else {
        return;
    };
    let servers = two_servers();
    let lb = balancer(&bin, [&servers[0], &servers[1]]);
    let attacker = ip("127.0.0.20");
    // Six held at once, three to each server: each greets two and refuses
    // its third, which the balancer passes on as the end of the connection.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match connect_from(attacker, lb.addr()) {
            Ok(mut s) => {
                if greeted(&mut s) {
                    held.push(s);
                } else {
                    refused += 1;
                }
            }
            // A reset can reach the client before its connect returns.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => refused += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    assert_eq!(
        (held.len(), refused),
        (4, 2),
        "greeted and refused: {:?}",
        lb.said()
    );
    for server in &servers {
        assert_eq!(server.stdout.expect(), "ERROR");
        server
            .stderr
            .wait_for("source 127.0.0.20 already has max_per_source = 2 connections open");
    }
    // Another client is served while the first holds its share.
    let mut other = connect_from(ip("127.0.0.21"), lb.addr()).expect("connect");
    assert!(greeted(&mut other), "another source was refused");
    other.write_all(b"still served").expect("send");
    finish(other);
    for s in held {
        finish(s);
    }
    let got = lines_of(&servers, 5);
    let mut all: Vec<&str> = got.iter().flatten().map(String::as_str).collect();
    all.sort();
    assert_eq!(all, ["0", "0", "0", "0", "12"]);
    // The server that counted its 12 bytes logged its real address.
    let which = got
        .iter()
        .position(|lines| lines.iter().any(|l| l == "12"))
        .expect("the other client's count");
    servers[which].stderr.wait_for("from 127.0.0.21:");
}
