//! Soak: the release binary under mixed load, faults and hostile clients,
//! checked against the central promise: every accepted connection yields
//! exactly one stdout line (its exact count, or ERROR), and the server never
//! stops serving unless told to.
//!
//! - `soak_short` (about 8 s) runs with every `cargo test --release`.
//! - `soak_long` (60 s of load, `ACCIO_SOAK_SECS` to change it) runs with
//!   `cargo test --release --test soak -- --ignored --nocapture`.
//!
//! Three servers run at the same time:
//!
//! - A, the main one (`max_connections = 1000`, `idle_timeout = "1s"`, its
//!   stdout a 4 KiB pipe that, every 2.5 s, is read at a trickle for
//!   0.3 s and then not at all for 0.7 s, so the server blocks in write): short clients of 0 B to
//!   1 MiB, large transfers, bursts beyond `max_connections`, clients that
//!   reset mid-transfer, that close before reading the greeting, that never
//!   send, slowloris clients, SIGHUP every 100 ms alternating a valid and an
//!   invalid file. Then a quiet period (fds, RSS, idle CPU) and a SIGTERM
//!   during a last wave of load.
//! - B, under `prlimit --nofile=40:40`: accepts hit EMFILE; no spin, a
//!   rate-limited report, every waiting client served once fds free up.
//! - C, whose stdout reader is gone (EPIPE): every count is logged at err.
//!
//! Every client binds its own loopback address (127.x.y.z), so the server's
//! per-connection log line (`connection N from IP:PORT: ...`) names exactly
//! one client: counts are matched through it, and stdout is compared with
//! the sequence of log lines (both are written by the same `finish`).
//!
//! Tolerances: fds after the load equal the idle count exactly; RSS after
//! the load at most 4 MiB above idle; idle CPU at most 1 tick in 2 s;
//! B out of fds at most 3 ticks in 2 s; the stop under load within 1 s
//! (the SPEC's 250 ms is checked on a quiet machine by tests/signals.rs).

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_CONNECTIONS: usize = 1000;
const IDLE: Duration = Duration::from_secs(1);

// ------------------------------------------------------------- helpers ----

/// xorshift64: enough randomness for sizes and choices, reproducible from
/// the seed printed in the summary.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn data() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut r = Rng::new(7);
        (0..MIB).map(|_| r.next() as u8).collect()
    })
}

/// Raise our own RLIMIT_NOFILE to the hard limit (1100 held connections
/// plus everything else); the servers inherit it.
/// A fresh loopback address per connection: 127.a.b.c, never reused in
/// this process, so the server's log names the client unambiguously.
fn next_local_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, SeqCst);
    let c = (n % 254) as u8 + 1;
    let b = ((n / 254) % 256) as u8;
    let a = ((n / 254 / 256) % 254) as u8 + 1;
    Ipv4Addr::new(127, a, b, c)
}

fn dial(server: SocketAddr) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(IpAddr::V4(next_local_ip()), 0).into())?;
    sock.connect_timeout(&server.into(), Duration::from_secs(10))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn read_greeting(s: &mut TcpStream) -> io::Result<()> {
    let mut g = [0u8; 7];
    s.read_exact(&mut g)?;
    if g != GREETING {
        return Err(io::Error::other(format!("bad greeting {g:?}")));
    }
    Ok(())
}

/// After our FIN: the server closes in order (EOF) without sending more.
fn expect_eof(s: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 64];
    match s.read(&mut buf)? {
        0 => Ok(()),
        n => Err(io::Error::other(format!("{n} unexpected bytes"))),
    }
}

fn send(s: &mut TcpStream, n: u64, rng: &mut Rng, sent: &mut u64, chunk: u64) -> io::Result<()> {
    let d = data();
    let mut left = n;
    while left > 0 {
        let c = left.min(1 + rng.below(chunk)).min(d.len() as u64) as usize;
        s.write_all(&d[..c])?;
        *sent += c as u64;
        left -= c as u64;
    }
    Ok(())
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn spawn_named<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    name: &str,
    f: F,
) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn thread")
}

// ------------------------------------------------------------- clients ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Short,
    Large,
    Reset,
    CloseEarly,
    Idle,
    Slow,
    Burst,
    Streamer,
}

#[derive(Debug)]
enum End {
    /// The client finished its script (for counted kinds: EOF after FIN;
    /// for idle ones: the server closed it).
    Done,
    /// The client went away on purpose (reset, early close).
    Gone,
    Failed(String, Instant),
}

#[derive(Debug)]
struct Rec {
    kind: Kind,
    local: Option<SocketAddr>,
    sent: u64,
    greeted: bool,
    fin: bool,
    /// The client itself fell behind its schedule (a byte gap of 0.9 s or
    /// more): an idle timeout is then legitimate.
    late: bool,
    /// Idle clients: from greeting to the server's close.
    waited: Option<Duration>,
    end: End,
    /// When the client's script ended (set by `Ctx::push`).
    ended: Instant,
}

impl Rec {
    fn new(kind: Kind) -> Rec {
        Rec {
            kind,
            local: None,
            sent: 0,
            greeted: false,
            fin: false,
            late: false,
            waited: None,
            end: End::Done,
            ended: Instant::now(),
        }
    }
    fn dial(&mut self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = dial(addr)?;
        self.local = s.local_addr().ok();
        Ok(s)
    }
    fn greet(&mut self, s: &mut TcpStream) -> io::Result<()> {
        read_greeting(s)?;
        self.greeted = true;
        Ok(())
    }
    fn close(&mut self, s: &mut TcpStream) -> io::Result<()> {
        s.shutdown(Shutdown::Write)?;
        self.fin = true;
        if !self.greeted {
            self.greet(s)?;
        }
        expect_eof(s)
    }
}

struct Ctx {
    addr: SocketAddr,
    recs: Mutex<Vec<Rec>>,
    /// Workers start no new client once this is set.
    halt: AtomicBool,
    stop_at: Mutex<Option<Instant>>,
}

impl Ctx {
    fn new(addr: SocketAddr) -> Arc<Ctx> {
        Arc::new(Ctx {
            addr,
            recs: Mutex::new(Vec::new()),
            halt: AtomicBool::new(false),
            stop_at: Mutex::new(None),
        })
    }
    fn halted(&self) -> bool {
        self.halt.load(SeqCst)
    }
    fn push(&self, mut rec: Rec, r: io::Result<()>) {
        rec.ended = Instant::now();
        if let Err(e) = r {
            rec.end = End::Failed(e.to_string(), rec.ended);
        }
        self.recs.lock().unwrap().push(rec);
    }
}

fn short_size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..10 => 0,
        10..50 => rng.below(KIB),
        50..85 => rng.below(64 * KIB),
        85..88 => MIB,
        _ => rng.below(MIB + 1),
    }
}

/// 0 B to 1 MiB; one in ten sends before reading the greeting.
fn short_client(ctx: &Ctx, rng: &mut Rng) {
    let mut rec = Rec::new(Kind::Short);
    let size = short_size(rng);
    let early = rng.chance(10);
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        if !early {
            rec.greet(&mut s)?;
        }
        send(&mut s, size, rng, &mut rec.sent, 256 * KIB)?;
        rec.close(&mut s)
    })();
    ctx.push(rec, r);
}

fn large_client(ctx: &Ctx, rng: &mut Rng, size: u64) {
    let mut rec = Rec::new(Kind::Large);
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        rec.greet(&mut s)?;
        send(&mut s, size, rng, &mut rec.sent, MIB)?;
        rec.close(&mut s)
    })();
    ctx.push(rec, r);
}

/// Reset (SO_LINGER 0) mid-transfer, or before even reading the greeting.
fn reset_client(ctx: &Ctx, rng: &mut Rng) {
    let mut rec = Rec::new(Kind::Reset);
    let read_first = rng.chance(70);
    let n = if rng.chance(20) {
        0
    } else {
        1 + rng.below(256 * KIB)
    };
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        if read_first {
            rec.greet(&mut s)?;
        }
        send(&mut s, n, rng, &mut rec.sent, 64 * KIB)?;
        if rng.chance(50) {
            thread::sleep(Duration::from_millis(rng.below(20)));
        }
        reset(s);
        rec.end = End::Gone;
        Ok(())
    })();
    ctx.push(rec, r);
}

/// Close (FIN, or RST because the greeting is unread) without reading the
/// greeting, after sending nothing or a little.
fn close_early_client(ctx: &Ctx, rng: &mut Rng) {
    let mut rec = Rec::new(Kind::CloseEarly);
    let n = if rng.chance(50) { 0 } else { rng.below(4096) };
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        send(&mut s, n, rng, &mut rec.sent, 4096)?;
        if rng.chance(50) {
            s.shutdown(Shutdown::Write)?;
            rec.fin = true;
        }
        drop(s);
        rec.end = End::Gone;
        Ok(())
    })();
    ctx.push(rec, r);
}

/// Connect, read the greeting, never send: the server must close it with
/// ERROR after idle_timeout.
fn idle_client(ctx: &Ctx) {
    let mut rec = Rec::new(Kind::Idle);
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        rec.greet(&mut s)?;
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => return Err(io::Error::other(format!("{n} unexpected bytes"))),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e),
        }
        rec.waited = Some(t0.elapsed());
        Ok(())
    })();
    ctx.push(rec, r);
}

/// One byte every 0.5 s: slower than anyone reasonable, but within the
/// 1 s idle timeout, so the connection must be kept and counted.
fn slow_client(ctx: &Ctx, bytes: u64) {
    let mut rec = Rec::new(Kind::Slow);
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        rec.greet(&mut s)?;
        let mut last = Instant::now();
        for _ in 0..bytes {
            thread::sleep(Duration::from_millis(500));
            let gap = last.elapsed();
            if gap >= Duration::from_millis(900) {
                rec.late = true;
            }
            s.write_all(b"s")?;
            last = Instant::now();
            rec.sent += 1;
        }
        rec.close(&mut s)
    })();
    ctx.push(rec, r);
}

/// More connections than max_connections at once: all held open (a byte
/// every 300 ms keeps the accepted ones from timing out), then all closed
/// and every one must be counted, the ones from the backlog too.
/// Returns (opened, greeted while held).
fn burst(ctx: &Ctx, n: usize, hold: Duration) -> (usize, usize) {
    let mut socks: Vec<(TcpStream, Rec)> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut rec = Rec::new(Kind::Burst);
        match rec.dial(ctx.addr).and_then(|mut s| {
            s.write_all(b"b")?;
            Ok(s)
        }) {
            Ok(s) => {
                rec.sent = 1;
                socks.push((s, rec));
            }
            Err(e) => ctx.push(rec, Err(e)),
        }
    }
    let start = Instant::now();
    let mut last = Instant::now();
    let mut late = false;
    let mut greeted = 0;
    while start.elapsed() < hold {
        thread::sleep(Duration::from_millis(300));
        if last.elapsed() >= Duration::from_millis(900) {
            late = true;
        }
        last = Instant::now();
        for (s, rec) in socks.iter_mut() {
            if s.write_all(b"b").is_ok() {
                rec.sent += 1;
            }
        }
        if start.elapsed() >= Duration::from_millis(500) {
            let now = socks.iter().filter(|(s, _)| greeting_waiting(s)).count();
            greeted = greeted.max(now);
        }
    }
    for (s, rec) in socks.iter_mut() {
        rec.late = late;
        if s.shutdown(Shutdown::Write).is_ok() {
            rec.fin = true;
        }
    }
    let opened = socks.len();
    for (mut s, mut rec) in socks {
        let r = rec.greet(&mut s).and_then(|()| expect_eof(&mut s));
        ctx.push(rec, r);
    }
    (opened, greeted)
}

fn greeting_waiting(s: &TcpStream) -> bool {
    let mut g = [0u8; 7];
    // SAFETY: recv into a valid buffer; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            g.as_mut_ptr().cast(),
            g.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 7
}

/// Mid-transfer when the stop comes: greeted, some bytes sent, no FIN.
fn streamers(ctx: &Ctx, n: usize) -> Vec<(TcpStream, Rec)> {
    let mut rng = Rng::new(99);
    let mut out = Vec::new();
    for _ in 0..n {
        let mut rec = Rec::new(Kind::Streamer);
        let r = rec.dial(ctx.addr).and_then(|mut s| {
            rec.greet(&mut s)?;
            let k = 1 + rng.below(64 * KIB);
            send(&mut s, k, &mut rng, &mut rec.sent, 16 * KIB)?;
            Ok(s)
        });
        match r {
            Ok(s) => out.push((s, rec)),
            Err(e) => ctx.push(rec, Err(e)),
        }
    }
    out
}

/// Start the client workers; they run until `ctx.halt`.
fn start_load(ctx: &Arc<Ctx>, seed: u64, plan: &Plan) -> Vec<JoinHandle<()>> {
    let mut hs = Vec::new();
    for w in 0..plan.short_workers {
        let ctx = ctx.clone();
        let mut rng = Rng::new(seed ^ ((w as u64 + 1) * 1000));
        let pause = plan.short_pause;
        hs.push(spawn_named("short", move || {
            while !ctx.halted() {
                short_client(&ctx, &mut rng);
                thread::sleep(pause);
            }
        }));
    }
    if plan.large.0 > 0 {
        let ctx = ctx.clone();
        let mut rng = Rng::new(seed ^ 0x1a);
        let (base, spread, pause) = plan.large;
        hs.push(spawn_named("large", move || {
            while !ctx.halted() {
                let size = base + rng.below(spread);
                large_client(&ctx, &mut rng, size);
                thread::sleep(pause);
            }
        }));
    }
    if plan.faults {
        let ctx2 = ctx.clone();
        let mut rng = Rng::new(seed ^ 0x2b);
        hs.push(spawn_named("faults", move || {
            while !ctx2.halted() {
                if rng.chance(50) {
                    reset_client(&ctx2, &mut rng);
                } else {
                    close_early_client(&ctx2, &mut rng);
                }
                thread::sleep(Duration::from_millis(rng.below(10)));
            }
        }));
        // Idle and slowloris clients, a thread each, a few at a time.
        let ctx3 = ctx.clone();
        let mut rng = Rng::new(seed ^ 0x3c);
        let slow_max = plan.slow_bytes;
        hs.push(spawn_named("idle-slow", move || {
            let mut kids = Vec::new();
            while !ctx3.halted() {
                let c = ctx3.clone();
                kids.push(spawn_named("idle", move || idle_client(&c)));
                let c = ctx3.clone();
                let bytes = 2 + rng.below(slow_max - 1);
                kids.push(spawn_named("slow", move || slow_client(&c, bytes)));
                thread::sleep(Duration::from_millis(150 + rng.below(100)));
                kids.retain(|k: &JoinHandle<()>| !k.is_finished());
            }
            for k in kids {
                k.join().expect("idle/slow client");
            }
        }));
    }
    hs
}

// --------------------------------------------------------- the servers ----

/// Server A's process: stdout through our slow reader, stderr lines, the
/// notify socket drained on a thread.
struct Main {
    child: Reaper,
    pid: i32,
    addr: SocketAddr,
    config: PathBuf,
    stderr: Lines,
    stdout: JoinHandle<Vec<u8>>,
    notify: NotifyLog,
    _notify: Notify,
    _dir: TempDir,
}

/// Every datagram the server sent to NOTIFY_SOCKET (drained so that it can
/// never block the server).
struct NotifyLog {
    msgs: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyLog {
    fn drain(sock: &std::os::unix::net::UnixDatagram) -> NotifyLog {
        let sock = sock.try_clone().expect("clone notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (m, d) = (msgs.clone(), done.clone());
        let thread = spawn_named("notify", move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => m.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    // Drained after `finish`: stop at the first quiet 50 ms.
                    Err(_) if d.load(SeqCst) => break,
                    Err(_) => {}
                }
            }
        });
        NotifyLog {
            msgs,
            done,
            thread: Some(thread),
        }
    }
    fn finish(&mut self) -> Vec<String> {
        self.done.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("notify thread");
        }
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
    /// How many messages containing `needle` arrived since `since`.
    fn count_since(&self, needle: &str, since: Instant) -> usize {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| *t >= since && m.contains(needle))
            .count()
    }
}

const MAIN_CONFIG: &str = "idle_timeout = \"1s\"\nmax_connections = 1000\nbacklog = 2048\n\
                           shutdown_grace = \"0s\"\n[log]\ntarget = \"stderr\"\nlevel = \"info\"\n";

const BAD_CONFIGS: &[&str] = &[
    "idle_timeout = \"1.5s\"\n",
    "max_connections = 0\n",
    "max_connections = 1000001\n",
    "port = [\n",
    "colour = 1\n",
    "[log]\nlevel = \"loud\"\n",
];

/// A server child with raw pipes, ready (READY=1 seen); `wrapper` runs it
/// (prlimit), `env` adds variables. Retries on a port clash (exit 71).
struct Raw {
    child: Reaper,
    port: u16,
    stdout: std::process::ChildStdout,
    stderr: Lines,
    notify: Notify,
    config: PathBuf,
    dir: TempDir,
}

fn spawn_raw(config: &str, wrapper: &[&str], env: &[(&str, &str)]) -> Raw {
    for _ in 0..20 {
        let dir = TempDir::new("soak");
        let config = dir.write("server.toml", config);
        let notify = Notify::new();
        let port = free_port();
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(BIN.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("--config")
            .arg(&config)
            .arg(port.to_string())
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = Reaper(cmd.spawn().expect("spawn server"));
        let stdout = child.0.stdout.take().expect("stdout");
        // A 4 KiB pipe: a slow reader makes the server's writes block soon.
        // SAFETY: fcntl on a pipe fd we own.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
        if wait_ready(&notify, &mut child.0, &stderr) {
            return Raw {
                child,
                port,
                stdout,
                stderr,
                notify,
                config,
                dir,
            };
        }
    }
    panic!("could not start the server on a free port");
}

fn start_main(slow: Arc<AtomicU8>) -> Main {
    let raw = spawn_raw(MAIN_CONFIG, &[], &[]);
    let pipe = raw.stdout;
    let stdout = spawn_named("stdout", move || slow_reader(pipe, &slow));
    let pid = raw.child.0.id() as i32;
    Main {
        child: raw.child,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], raw.port)),
        config: raw.config,
        stderr: raw.stderr,
        stdout,
        notify: NotifyLog::drain(&raw.notify.sock),
        _notify: raw.notify,
        _dir: raw.dir,
    }
}

/// How server A's stdout is read: at once, at a trickle, or not at all.
const READ_FAST: u8 = 0;
const READ_TRICKLE: u8 = 1;
const READ_STALLED: u8 = 2;

/// Reads stdout to EOF; `READ_TRICKLE`: 16 bytes per 10 ms; `READ_STALLED`:
/// nothing, so the server blocks in write(2) once the 4 KiB pipe is full.
fn slow_reader(mut pipe: std::process::ChildStdout, mode: &AtomicU8) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while mode.load(SeqCst) == READ_STALLED {
            thread::sleep(Duration::from_millis(5));
        }
        let slow = mode.load(SeqCst) == READ_TRICKLE;
        let want = if slow { 16 } else { buf.len() };
        match pipe.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading stdout: {e}"),
        }
        if slow {
            thread::sleep(Duration::from_millis(10));
        }
    }
    all
}

/// Replace the config file atomically (a reload never sees half a file).
fn swap_config(path: &std::path::Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

// ---------------------------------------------------------- the checks ----

#[derive(Debug, Clone, PartialEq)]
enum Out {
    Counted,
    Idle,
    Reset,
    Stopped,
    Other(String),
}

#[derive(Debug, Clone)]
struct Entry {
    n: u64,
    level: String,
    peer: SocketAddr,
    out: Out,
    bytes: u64,
}

impl Entry {
    fn line(&self) -> String {
        if self.out == Out::Counted {
            self.bytes.to_string()
        } else {
            "ERROR".into()
        }
    }
}

/// `accio-server: <level>: connection N from IP:PORT: <outcome>, B bytes in S s (RATE)`
fn parse_conn(line: &str) -> Option<Entry> {
    let rest = line.strip_prefix("accio-server: ")?;
    let (level, rest) = rest.split_once(": ")?;
    let rest = rest.strip_prefix("connection ")?;
    let (n, rest) = rest.split_once(" from ")?;
    let n: u64 = n.parse().ok()?;
    let (peer, rest) = rest.split_once(": ")?;
    let peer: SocketAddr = peer.parse().ok()?;
    let (what, tail) = rest.rsplit_once(", ")?;
    let bytes: u64 = tail.split_once(" bytes in ")?.0.parse().ok()?;
    let out = match what {
        "closed by client" => Out::Counted,
        "reset by client" => Out::Reset,
        "aborted at stop" => Out::Stopped,
        w if w.starts_with("idle timeout (") => Out::Idle,
        w => Out::Other(w.to_string()),
    };
    Some(Entry {
        n,
        level: level.to_string(),
        peer,
        out,
        bytes,
    })
}

/// `accio-server: error: connection N: stdout is unavailable (...); its line was: X`
fn parse_lost(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("accio-server: error: connection ")?;
    let (n, rest) = rest.split_once(": stdout is unavailable (")?;
    let (_, x) = rest.rsplit_once("; its line was: ")?;
    Some((n.parse().ok()?, x.to_string()))
}

fn is_count_line(l: &str) -> bool {
    l == "ERROR"
        || l == "0"
        || (!l.is_empty() && !l.starts_with('0') && l.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Default, Debug)]
struct Figures {
    connections: u64,
    bytes: u64,
    lines: u64,
    counted: u64,
    resets: u64,
    timeouts: u64,
    stopped: u64,
    other_errors: u64,
    emfile_reports: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    by_kind: BTreeMap<String, u64>,
    reset_counted: u64,
    never_accepted: BTreeMap<String, u64>,
    other_outcomes: BTreeMap<String, u64>,
    late_clients: u64,
    max_idle_wait: Duration,
    note: String,
}

/// The per-server check: the stdout lines (or, with a broken stdout, the
/// `its line was:` reports) against the log lines against the clients.
fn verify(
    name: &str,
    stderr: &[String],
    lines: &[String],
    recs: &[Rec],
    stop_at: Option<Instant>,
    problems: &mut Vec<String>,
) -> Figures {
    let mut f = Figures::default();
    let mut p = |s: String| problems.push(format!("[{name}] {s}"));
    let entries: Vec<Entry> = stderr.iter().filter_map(|l| parse_conn(l)).collect();
    // Exactly one log line per connection, numbered 1..=max without gaps.
    let mut by_n: HashMap<u64, &Entry> = HashMap::new();
    for e in &entries {
        if by_n.insert(e.n, e).is_some() {
            p(format!("connection {} logged twice", e.n));
        }
    }
    let max = entries.iter().map(|e| e.n).max().unwrap_or(0);
    if by_n.len() as u64 != max {
        p(format!(
            "connection numbers not contiguous: {} lines, max {max}",
            by_n.len()
        ));
    }
    // stdout: well-formed lines, as many as connections, in log order.
    for l in lines {
        if !is_count_line(l) {
            p(format!("malformed stdout line {l:?}"));
        }
    }
    if lines.len() != entries.len() {
        p(format!(
            "{} stdout lines for {} accepted connections",
            lines.len(),
            entries.len()
        ));
    }
    let expected: Vec<String> = entries.iter().map(Entry::line).collect();
    let mut a = lines.to_vec();
    let mut b = expected.clone();
    a.sort();
    b.sort();
    if a != b {
        p("multiset of stdout lines differs from the logged outcomes".into());
    } else if lines != expected.as_slice() {
        p("stdout lines are not in the order of the log lines".into());
    }
    for e in &entries {
        let want = match e.out {
            Out::Counted => "info",
            Out::Idle | Out::Reset | Out::Stopped => "warning",
            Out::Other(_) => "error",
        };
        if e.level != want {
            p(format!("connection {} logged at {}: {e:?}", e.n, e.level));
        }
        f.bytes += e.bytes;
        match &e.out {
            Out::Counted => f.counted += 1,
            Out::Idle => f.timeouts += 1,
            Out::Reset => f.resets += 1,
            Out::Stopped => f.stopped += 1,
            Out::Other(w) => {
                f.other_errors += 1;
                // "failed: Broken pipe (os error 32)" -> "failed: Broken pipe"
                let w = w.split(" (os error").next().unwrap_or(w);
                *f.other_outcomes.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    f.connections = entries.len() as u64;
    f.lines = lines.len() as u64;
    f.emfile_reports = stderr
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count() as u64;
    f.reloads_ok = stderr
        .iter()
        .filter(|l| l.contains("reloaded configuration"))
        .count() as u64;
    f.reloads_failed = stderr
        .iter()
        .filter(|l| l.contains("reload failed"))
        .count() as u64;
    // Every client against its connection's log line.
    let by_peer: HashMap<SocketAddr, &Entry> = entries.iter().map(|e| (e.peer, e)).collect();
    let mut mine = 0;
    let after_stop = |at: &Instant| stop_at.is_some_and(|s| *at >= s);
    // A client that ended shortly before the stop may still have been in
    // the listen backlog when the listener closed.
    let near_stop = |at: &Instant| stop_at.is_some_and(|s| *at + Duration::from_secs(2) >= s);
    for r in recs {
        *f.by_kind.entry(format!("{:?}", r.kind)).or_default() += 1;
        f.late_clients += r.late as u64;
        if let Some(w) = r.waited {
            f.max_idle_wait = f.max_idle_wait.max(w);
        }
        let e = r.local.and_then(|a| by_peer.get(&a).copied());
        mine += e.is_some() as u64;
        let Some(e) = e else {
            let ok = match &r.end {
                End::Failed(..) | End::Gone => !r.greeted && near_stop(&r.ended),
                End::Done => false,
            };
            if ok {
                *f.never_accepted.entry(format!("{:?}", r.kind)).or_default() += 1;
            } else {
                p(format!("client never accepted: {r:?}"));
            }
            continue;
        };
        // A count, when there is one, is exactly what the client sent
        // before its FIN.
        if e.out == Out::Counted && (!r.fin || e.bytes != r.sent) && r.kind != Kind::CloseEarly {
            p(format!("wrong count: {e:?} for {r:?}"));
        }
        match (&r.kind, &r.end) {
            (Kind::Idle, End::Done) if after_stop(&r.ended) && e.out == Out::Stopped => {}
            (Kind::Idle, End::Done) => {
                if e.out != Out::Idle {
                    p(format!("idle client not timed out: {e:?}"));
                }
                let w = r.waited.unwrap_or_default();
                if w < IDLE - Duration::from_millis(100) || w > IDLE + Duration::from_secs(5) {
                    p(format!("idle client closed after {w:?}: {e:?}"));
                }
            }
            (Kind::Reset, _) => {
                if e.out == Out::Counted {
                    f.reset_counted += 1;
                    p(format!("a reset client was counted: {e:?} for {r:?}"));
                }
            }
            (Kind::CloseEarly, _) => {
                if e.out == Out::Counted && e.bytes != r.sent {
                    p(format!("wrong count: {e:?} for {r:?}"));
                }
            }
            (_, End::Done) => {
                if e.out != Out::Counted {
                    p(format!("finished client not counted: {e:?} for {r:?}"));
                }
            }
            (Kind::Streamer, End::Failed(..)) => {
                if e.out != Out::Stopped {
                    p(format!("stopped mid-transfer but: {e:?}"));
                }
            }
            (_, End::Failed(err, at)) => {
                let excused = after_stop(at) || (r.late && e.out == Out::Idle);
                if !excused {
                    p(format!(
                        "client failed while serving ({err}): {e:?} for {r:?}"
                    ));
                }
            }
            (_, End::Gone) => {}
        }
    }
    if mine != entries.len() as u64 {
        p(format!(
            "{} log lines name no client of ours",
            entries.len() as u64 - mine
        ));
    }
    f
}

fn report_problems(problems: &[String]) {
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(25).collect();
        panic!(
            "{} problems, the first ones:\n{}",
            problems.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ------------------------------------------------------------ the soak ----

#[derive(Clone, Copy)]
struct Plan {
    secs: f64,
    short_workers: usize,
    /// Pause between one worker's short clients.
    short_pause: Duration,
    /// (base size, random extra, pause between transfers)
    large: (u64, u64, Duration),
    faults: bool,
    slow_bytes: u64,
    burst: usize,
    burst_every: Duration,
    burst_hold: Duration,
    emfile_hold: Duration,
}

#[derive(Default)]
struct Peaks {
    fds: AtomicUsize,
    rss: AtomicU64,
}

fn soak(plan: Plan) {
    let started = Instant::now();
    let nofile = raise_nofile();
    assert!(
        nofile >= 4096,
        "RLIMIT_NOFILE hard limit {nofile} is too low for {} connections",
        plan.burst
    );
    let seed = std::env::var("ACCIO_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_acc1_u64);
    let mut problems = Vec::new();

    // Server A and its watchers.
    let slow = Arc::new(AtomicU8::new(READ_FAST));
    let slow_windows = Arc::new(AtomicUsize::new(0));
    let mut main = start_main(slow.clone());
    let ctx = Ctx::new(main.addr);
    thread::sleep(Duration::from_millis(200));
    let pid = main.pid;
    let idle_fds = fd_count(pid);
    let idle_rss = rss_kib(pid);
    let peaks = Arc::new(Peaks::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling) = (peaks.clone(), sampling.clone());
        spawn_named("sampler", move || {
            while sampling.load(SeqCst) {
                peaks.fds.fetch_max(fd_count(pid), SeqCst);
                peaks.rss.fetch_max(rss_kib(pid), SeqCst);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // B and C run beside A's load. All three are started here, one after
    // the other: a child forked while C's stdout pipe still had its read end
    // here would hold a copy of it until its exec, and C's first lines
    // would go into that pipe instead of failing.
    let b_server = start_emfile_server();
    let c_server = start_broken_stdout_server();
    let b = {
        let hold = plan.emfile_hold;
        spawn_named("emfile", move || emfile_server(b_server, hold))
    };
    let c = {
        let secs = plan.secs;
        spawn_named("broken", move || broken_stdout_server(c_server, secs, seed))
    };

    // A's load: clients, bursts, reloads, slow stdout windows.
    let load_start = Instant::now();
    let mut workers = start_load(&ctx, seed, &plan);
    let hups = Arc::new(AtomicU64::new(0));
    let reloader = {
        let (ctx, hups, config) = (ctx.clone(), hups.clone(), main.config.clone());
        spawn_named("sighup", move || {
            let mut i = 0usize;
            while !ctx.halted() {
                let text: Vec<u8> = if i % 2 == 0 {
                    MAIN_CONFIG.as_bytes().to_vec()
                } else if i % 6 == 5 {
                    b"idle_timeout = \"\xff\xfe\"\n".to_vec()
                } else {
                    BAD_CONFIGS[(i / 2) % BAD_CONFIGS.len()].as_bytes().to_vec()
                };
                swap_config(&config, &text);
                // SAFETY: kill(2) on our unreaped child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
                hups.fetch_add(1, SeqCst);
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
            swap_config(&config, MAIN_CONFIG.as_bytes());
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGHUP) };
        })
    };
    let bursts = Arc::new(Mutex::new(Vec::new()));
    {
        let (ctx, bursts) = (ctx.clone(), bursts.clone());
        let (n, every, hold) = (plan.burst, plan.burst_every, plan.burst_hold);
        workers.push(spawn_named("burst", move || {
            thread::sleep(Duration::from_millis(700));
            while !ctx.halted() {
                let r = burst(&ctx, n, hold);
                bursts.lock().unwrap().push(r);
                let t = Instant::now();
                while t.elapsed() < every && !ctx.halted() {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    {
        let (ctx, slow, windows) = (ctx.clone(), slow.clone(), slow_windows.clone());
        workers.push(spawn_named("slow-windows", move || {
            thread::sleep(Duration::from_millis(300));
            while !ctx.halted() {
                slow.store(READ_TRICKLE, SeqCst);
                windows.fetch_add(1, SeqCst);
                thread::sleep(Duration::from_millis(300));
                slow.store(READ_STALLED, SeqCst);
                thread::sleep(Duration::from_millis(700));
                slow.store(READ_FAST, SeqCst);
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(1500) && !ctx.halted() {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    while load_start.elapsed().as_secs_f64() < plan.secs {
        thread::sleep(Duration::from_millis(50));
        assert!(
            main.child.0.try_wait().expect("try_wait").is_none(),
            "server A died during the load"
        );
    }
    ctx.halt.store(true, SeqCst);
    for w in workers {
        w.join().expect("client worker");
    }
    reloader.join().expect("sighup thread");
    let load_secs = load_start.elapsed().as_secs_f64();

    // Quiet: every connection closed; fds exactly back, RSS near, no CPU.
    let t = Instant::now();
    while fd_count(pid) != idle_fds && t.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    let after_fds = fd_count(pid);
    thread::sleep(Duration::from_millis(300));
    let after_rss = rss_kib(pid);
    let cpu0 = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(2));
    let idle_cpu = cpu_ticks(pid) - cpu0;
    if after_fds != idle_fds {
        problems.push(format!(
            "[A] fds after the load {after_fds}, idle {idle_fds}"
        ));
    }
    if after_rss > idle_rss + 4 * 1024 {
        problems.push(format!(
            "[A] RSS after the load {after_rss} KiB, idle {idle_rss} KiB"
        ));
    }
    if idle_cpu > 1 {
        problems.push(format!("[A] {idle_cpu} CPU ticks in 2 s while idle"));
    }
    // Still serving after all that.
    transfer_checked(&ctx, b"still serving");

    // The last wave, and SIGTERM in the middle of it.
    ctx.halt.store(false, SeqCst);
    let held = streamers(&ctx, 200);
    let mut last_load = start_load(
        &ctx,
        seed ^ 0xf1,
        &Plan {
            short_workers: 2,
            large: (256 * MIB, 1, Duration::ZERO),
            faults: true,
            ..plan
        },
    );
    thread::sleep(Duration::from_millis(300));
    *ctx.stop_at.lock().unwrap() = Some(Instant::now());
    // SAFETY: kill(2) on our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The clients in flight finish (or fail); no new ones start.
    ctx.halt.store(true, SeqCst);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = main.child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server A still running 10 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(2));
    };
    let stop_took = t.elapsed();
    for w in last_load.drain(..) {
        w.join().expect("client worker");
    }
    for (mut s, mut rec) in held {
        let mut buf = [0u8; 16];
        let why = match s.read(&mut buf) {
            Ok(0) => "closed in order at stop".to_string(),
            Ok(_) => "data at stop".to_string(),
            Err(e) => e.to_string(),
        };
        rec.end = End::Failed(why, Instant::now());
        ctx.recs.lock().unwrap().push(rec);
    }
    sampling.store(false, SeqCst);
    sampler.join().expect("sampler");
    if status.code() != Some(0) {
        problems.push(format!("[A] exit status {status} after SIGTERM"));
    }
    if stop_took > Duration::from_secs(1) {
        problems.push(format!("[A] stop under load took {stop_took:?}"));
    }

    // A's verdict.
    let raw = main.stdout.join().expect("stdout reader");
    if !raw.is_empty() && raw.last() != Some(&b'\n') {
        problems.push("[A] stdout ends in a partial line".into());
    }
    let text = String::from_utf8(raw).unwrap_or_else(|_| {
        problems.push("[A] stdout is not UTF-8".into());
        String::new()
    });
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let stderr = {
        let _ = main.stderr.rest();
        main.stderr.seen.lock().unwrap().clone()
    };
    let notes = main.notify.finish();
    let recs = std::mem::take(&mut *ctx.recs.lock().unwrap());
    let stop_at = *ctx.stop_at.lock().unwrap();
    let fa = verify("A", &stderr, &lines, &recs, stop_at, &mut problems);
    // Every reload attempt, failed ones too, is followed by READY=1.
    let reloading = notes.iter().filter(|m| m.contains("RELOADING=1")).count();
    let ready = notes.iter().filter(|m| m.contains("READY=1")).count();
    // (The READY=1 of the start was read by `start_main`.)
    if reloading == 0 || ready != reloading {
        problems.push(format!(
            "[A] {reloading} RELOADING=1 but {ready} READY=1 after them"
        ));
    }
    if fa.reloads_ok == 0 || fa.reloads_failed == 0 {
        problems.push(format!(
            "[A] reloads: {} applied, {} failed",
            fa.reloads_ok, fa.reloads_failed
        ));
    }
    let peak_active = notes
        .iter()
        .filter_map(|m| {
            let s = m.lines().find_map(|l| l.strip_prefix("STATUS="))?;
            let (_, rest) = s.split_once(" connections served, ")?;
            rest.split_once(" active")?.0.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    let bursts = bursts.lock().unwrap().clone();
    for &(opened, greeted) in &bursts {
        if greeted > MAX_CONNECTIONS || opened - greeted < opened.saturating_sub(MAX_CONNECTIONS) {
            problems.push(format!(
                "[A] burst of {opened}: {greeted} greeted at once, max_connections {MAX_CONNECTIONS}"
            ));
        }
        if greeted < MAX_CONNECTIONS / 2 {
            problems.push(format!(
                "[A] burst of {opened}: only {greeted} greeted while held"
            ));
        }
    }

    let fb = b.join().expect("server B (EMFILE)");
    let fc = c.join().expect("server C (broken stdout)");
    problems.extend(fb.1);
    problems.extend(fc.1);
    let (fb, fc) = (fb.0, fc.0);

    eprintln!(
        "soak summary: seed {seed:#x}, duration {:.1} s (load {load_secs:.1} s); \
         A: connections {} (counted {}, resets {}, idle timeouts {}, aborted at stop {}, \
         other errors {}), bytes {} ({:.2} GiB), stdout lines {}, peak fds {} (idle {idle_fds}, \
         after {after_fds}), peak RSS {} KiB (idle {idle_rss}, after {after_rss}), peak active {peak_active}, \
         bursts (opened, greeted while held) {bursts:?}, SIGHUPs {} (applied {}, failed {}), \
         RELOADING/READY {reloading}/{}, slow-stdout windows {}, idle CPU {idle_cpu} ticks/2 s, \
         stop under load {stop_took:?}, never accepted (at the stop) {:?}, late clients {}, \
         max idle wait {:?}, other outcomes {:?}, clients {:?}; B (EMFILE): connections {}, EMFILE reports {}, {}; \
         C (broken stdout): connections {}, counts logged at err {}; \
         total connections {}, total bytes {}",
        started.elapsed().as_secs_f64(),
        fa.connections,
        fa.counted,
        fa.resets,
        fa.timeouts,
        fa.stopped,
        fa.other_errors,
        fa.bytes,
        fa.bytes as f64 / GIB as f64,
        fa.lines,
        peaks.fds.load(SeqCst),
        peaks.rss.load(SeqCst),
        hups.load(SeqCst),
        fa.reloads_ok,
        fa.reloads_failed,
        ready,
        slow_windows.load(SeqCst),
        fa.never_accepted,
        fa.late_clients,
        fa.max_idle_wait,
        fa.other_outcomes,
        fa.by_kind,
        fb.connections,
        fb.emfile_reports,
        fb.note,
        fc.connections,
        fc.lines,
        fa.connections + fb.connections + fc.connections,
        fa.bytes + fb.bytes + fc.bytes,
    );
    report_problems(&problems);
}

fn transfer_checked(ctx: &Ctx, payload: &[u8]) {
    let mut rec = Rec::new(Kind::Short);
    let r = (|| {
        let mut s = rec.dial(ctx.addr)?;
        rec.greet(&mut s)?;
        s.write_all(payload)?;
        rec.sent = payload.len() as u64;
        rec.close(&mut s)
    })();
    assert!(r.is_ok(), "a transfer after the load failed: {r:?}");
    ctx.push(rec, r);
}

/// Server B: accepts beyond RLIMIT_NOFILE. Returns its figures and problems.
fn start_emfile_server() -> Option<Server> {
    if !prerequisite(have("prlimit"), "prlimit (util-linux) for server B") {
        return None;
    }
    // The limit is lowered once it runs: at start the server would size
    // its connections to fit and never reach EMFILE.
    let server = Spawn::new()
        .config(
            "idle_timeout = \"1h\"\nmax_connections = 1000\nbacklog = 512\nmax_per_source = 0\n",
        )
        .start();
    lower_nofile(server.pid(), 40);
    Some(server)
}

fn emfile_server(server: Option<Server>, hold: Duration) -> (Figures, Vec<String>) {
    let mut problems = Vec::new();
    let Some(mut server) = server else {
        return (Figures::default(), problems);
    };
    let mut notify = NotifyLog::drain(&server.notify.sock);
    let ctx = Ctx::new(server.addr());
    let pid = server.pid();
    thread::sleep(Duration::from_millis(100));
    let idle_fds = fd_count(pid);
    // 80 clients, each 1 byte, no FIN yet: about 30 fit, the rest hit EMFILE.
    let mut held = Vec::new();
    for _ in 0..80 {
        let mut rec = Rec::new(Kind::Burst);
        match rec
            .dial(ctx.addr)
            .and_then(|mut s| s.write_all(b"e").map(|()| s))
        {
            Ok(s) => {
                rec.sent = 1;
                held.push((s, rec));
            }
            Err(e) => ctx.push(rec, Err(e)),
        }
    }
    let t0 = Instant::now();
    let first = server.stderr.wait_for("accept failed");
    if !first.contains("Too many open files") || !first.starts_with("accio-server: error: ") {
        problems.push(format!("[B] EMFILE report: {first}"));
    }
    // A reload while out of fds: the file cannot even be opened.
    server.signal(libc::SIGHUP);
    let cpu0 = server.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let spin = server.cpu_ticks() - cpu0;
    if spin > 3 {
        problems.push(format!("[B] {spin} CPU ticks in 2 s while out of fds"));
    }
    thread::sleep(hold.saturating_sub(Duration::from_secs(2)));
    let out_of_fds = t0.elapsed();
    // Free them: every one, accepted or waiting, is served and counted.
    for (s, rec) in held.iter_mut() {
        if s.shutdown(Shutdown::Write).is_ok() {
            rec.fin = true;
        }
    }
    for (mut s, mut rec) in held {
        let r = rec.greet(&mut s).and_then(|()| expect_eof(&mut s));
        ctx.push(rec, r);
    }
    // Service resumes at once.
    let t = Instant::now();
    transfer_checked(&ctx, b"after EMFILE");
    if t.elapsed() > Duration::from_secs(1) {
        problems.push(format!(
            "[B] first transfer after EMFILE took {:?}",
            t.elapsed()
        ));
    }
    let tq = Instant::now();
    while fd_count(pid) != idle_fds && tq.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    if fd_count(pid) != idle_fds {
        problems.push(format!("[B] fds {} after, idle {idle_fds}", fd_count(pid)));
    }
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    if status.code() != Some(0) {
        problems.push(format!("[B] exit status {status}"));
    }
    let lines = server.stdout.rest();
    let stderr = server.stderr.seen.lock().unwrap().clone();
    let recs = std::mem::take(&mut *ctx.recs.lock().unwrap());
    let f = verify("B", &stderr, &lines, &recs, None, &mut problems);
    // At most one report per 5 s (plus the first).
    let notes = notify.finish();
    let mut f = f;
    f.note = format!(
        "CPU {spin} ticks in 2 s out of fds, out of fds for {:.1} s, \
         SIGHUP while out of fds: {} RELOADING=1, {} READY=1 received",
        out_of_fds.as_secs_f64(),
        notes.iter().filter(|m| m.contains("RELOADING=1")).count(),
        notes.iter().filter(|m| m.contains("READY=1")).count(),
    );
    let allowed = 1 + (out_of_fds.as_secs_f64() / 5.0).ceil() as u64;
    if f.emfile_reports == 0 || f.emfile_reports > allowed {
        problems.push(format!(
            "[B] {} accept failure reports in {out_of_fds:?}",
            f.emfile_reports
        ));
    }
    (f, problems)
}

/// Server C: nobody reads stdout. Every count must reach the log at err.
fn start_broken_stdout_server() -> Server {
    Spawn::new()
        .broken_stdout()
        .config("idle_timeout = \"1s\"\nmax_connections = 1000\n")
        .start()
}

fn broken_stdout_server(mut server: Server, secs: f64, seed: u64) -> (Figures, Vec<String>) {
    let mut problems = Vec::new();
    let mut notify = NotifyLog::drain(&server.notify.sock);
    let ctx = Ctx::new(server.addr());
    let workers = start_load(
        &ctx,
        seed ^ 0xc0,
        &Plan {
            secs,
            short_workers: 2,
            short_pause: Duration::from_millis(5),
            large: (0, 0, Duration::ZERO),
            faults: true,
            slow_bytes: 3,
            burst: 0,
            burst_every: Duration::ZERO,
            burst_hold: Duration::ZERO,
            emfile_hold: Duration::ZERO,
        },
    );
    thread::sleep(Duration::from_secs_f64(secs * 0.8));
    *ctx.stop_at.lock().unwrap() = Some(Instant::now());
    server.signal(libc::SIGTERM);
    ctx.halt.store(true, SeqCst);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    for w in workers {
        w.join().expect("client worker");
    }
    if status.code() != Some(0) {
        problems.push(format!("[C] exit status {status}"));
    }
    let _ = server.stderr.rest();
    let stderr = server.stderr.seen.lock().unwrap().clone();
    // The lost lines, in order, stand in for stdout.
    let mut lost: Vec<(u64, String)> = stderr.iter().filter_map(|l| parse_lost(l)).collect();
    let mut seen = HashMap::new();
    for (n, _) in &lost {
        if seen.insert(*n, ()).is_some() {
            problems.push(format!("[C] connection {n}: line reported twice"));
        }
    }
    let lines: Vec<String> = lost.iter().map(|(_, x)| x.clone()).collect();
    let recs = std::mem::take(&mut *ctx.recs.lock().unwrap());
    let stop_at = *ctx.stop_at.lock().unwrap();
    let f = verify("C", &stderr, &lines, &recs, stop_at, &mut problems);
    // And each report belongs to its own connection's outcome.
    let entries: HashMap<u64, Entry> = stderr
        .iter()
        .filter_map(|l| parse_conn(l))
        .map(|e| (e.n, e))
        .collect();
    lost.sort();
    let reported: HashMap<u64, ()> = lost.iter().map(|(n, _)| (*n, ())).collect();
    let mut missing: Vec<&Entry> = entries
        .values()
        .filter(|e| !reported.contains_key(&e.n))
        .collect();
    missing.sort_by_key(|e| e.n);
    for e in missing.iter().take(10) {
        let near: Vec<&String> = stderr
            .iter()
            .filter(|l| {
                l.contains(&format!("connection {} ", e.n))
                    || l.contains(&format!("connection {}:", e.n))
            })
            .collect();
        problems.push(format!(
            "[C] no report of connection {}'s line: {e:?}; {near:?}",
            e.n
        ));
    }
    for (n, x) in &lost {
        match entries.get(n) {
            Some(e) if e.line() == *x => {}
            other => problems.push(format!(
                "[C] connection {n}: reported {x}, logged {other:?}"
            )),
        }
    }
    notify.finish();
    (f, problems)
}

fn soak_secs(default: f64) -> f64 {
    std::env::var("ACCIO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soak_short() {
    soak(Plan {
        secs: 3.0,
        short_workers: 6,
        short_pause: Duration::ZERO,
        large: (64 * MIB, 64 * MIB, Duration::from_millis(100)),
        faults: true,
        slow_bytes: 4,
        burst: MAX_CONNECTIONS + 100,
        burst_every: Duration::from_secs(60),
        burst_hold: Duration::from_millis(1500),
        emfile_hold: Duration::from_secs(2),
    });
}

#[test]
#[ignore = "long soak (60 s of load): cargo test --release --test soak -- --ignored --nocapture"]
fn soak_long() {
    let secs = soak_secs(60.0);
    soak(Plan {
        secs,
        short_workers: 8,
        short_pause: Duration::from_millis(5),
        large: (GIB, 256 * MIB, Duration::from_secs(2)),
        faults: true,
        slow_bytes: 10,
        burst: MAX_CONNECTIONS + 100,
        burst_every: Duration::from_secs(10),
        burst_hold: Duration::from_secs(3),
        emfile_hold: Duration::from_secs(12).min(Duration::from_secs_f64(secs / 2.0)),
    });
}

// ---------------------------------------------------------- regressions ----
//
// Minimal reproductions of the defects the soak found, kept as regression
// tests: each asserts the behaviour SPEC.md promises, and each failed
// before its fix.

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
    read_greeting(&mut z).expect("greeting");
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
        read_greeting(&mut z).expect("greeting");
    }
    // The server is blocked in write(2); x waits in the backlog.
    thread::sleep(Duration::from_millis(1500));
    let mut pipe = raw.stdout;
    let reader = spawn_named("stdout", move || {
        let mut v = Vec::new();
        let _ = pipe.read_to_end(&mut v);
        v
    });
    read_greeting(&mut x).expect("x greeted once the server runs again");
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
        if read_greeting(&mut s).is_err() {
            stuck = Some(i);
            break;
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        let _ = expect_eof(&mut s);
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
