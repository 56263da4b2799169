//! Test support: the real `server` binary as a child process, real TCP
//! clients, and a real NOTIFY_SOCKET to learn when it is ready.
//!
//! (Over 500 lines because it is the one set of helpers every test binary
//! shares; the narrower ones live in the submodules beside it.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod ports;
pub mod proxy_header;
pub mod raw;
pub mod slowfs;
pub use ports::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_server");
pub use accio_server::connection::GREETING;
pub const WAIT: Duration = Duration::from_secs(10);
/// PORT arguments the server must refuse (exit 64, the value quoted).
pub const BAD_PORTS: &[&str] = &[
    "0",
    "00",
    "65536",
    "-1",
    "+5000",
    " 5000",
    "5000abc",
    "0x50",
    "",
    "99999999999999999999",
    "５０００",
];

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// In `base` (a file system of the test's choice: the real disk,
    /// tmpfs, a directory a namespace can reach).
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = base.join(format!("accio-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a child's pipe line by line on a thread, so tests can wait for a
/// line with a timeout while the server keeps running.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    pub fn new<R: Read + Send + 'static>(r: R) -> Lines {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                seen2.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen }
    }

    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn expect(&self) -> String {
        self.next(WAIT).expect("a line within 10 s")
    }

    /// Wait for a line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let end = Instant::now() + WAIT;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(l) if l.contains(needle) => return l,
                Some(_) => {}
                None => break,
            }
        }
        panic!(
            "no line containing {needle:?}; seen: {:?}",
            self.seen.lock().unwrap()
        );
    }

    /// How many of the lines read so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Whether any line read so far contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// Everything until the pipe closes (the process exited).
    pub fn rest(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.rx.recv_timeout(WAIT) {
            out.push(l);
        }
        out
    }
}

/// A NOTIFY_SOCKET the test owns: a real AF_UNIX datagram socket.
pub struct Notify {
    pub sock: UnixDatagram,
    pub path: PathBuf,
    _dir: TempDir,
}

impl Notify {
    pub fn new() -> Notify {
        let dir = TempDir::new("notify");
        let path = dir.path("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        Notify {
            sock,
            path,
            _dir: dir,
        }
    }

    /// The next datagram, within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = vec![0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Skip datagrams until one contains `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let end = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if m.contains(needle) => return m,
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!("no notification containing {needle:?}; seen {seen:?}");
    }
}

/// How to start a server.
pub struct Spawn {
    pub args: Vec<String>,
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
    pub wrapper: Vec<String>,
    pub port: Option<u16>,
    /// Close the read end of the stdout pipe at once (EPIPE on write).
    pub broken_stdout: bool,
    /// Leave the stderr pipe unread until [`Server::read_stderr`].
    pub stalled_stderr: bool,
}

impl Spawn {
    pub fn new() -> Spawn {
        Spawn {
            args: Vec::new(),
            config: None,
            env: Vec::new(),
            wrapper: Vec::new(),
            port: None,
            broken_stdout: false,
            stalled_stderr: false,
        }
    }
    /// Nobody reads stderr: the pipe fills (see [`Server::read_stderr`]).
    pub fn stalled_stderr(mut self) -> Spawn {
        self.stalled_stderr = true;
        self
    }
    pub fn broken_stdout(mut self) -> Spawn {
        self.broken_stdout = true;
        self
    }
    /// Configuration text; `[log] target = "stderr"` is added unless given.
    pub fn config(mut self, text: &str) -> Spawn {
        self.config = Some(text.to_string());
        self
    }
    pub fn arg(mut self, a: &str) -> Spawn {
        self.args.push(a.to_string());
        self
    }
    /// Run the server under another program (prlimit, strace ...).
    pub fn wrap(mut self, argv: &[&str]) -> Spawn {
        self.wrapper = argv.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Spawn {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Start the server on a free port and wait until it is ready.
    pub fn start(self) -> Server {
        for _ in 0..20 {
            let port = self.port.unwrap_or_else(free_port);
            match self.try_start(port) {
                Some(s) => return s,
                None => continue,
            }
        }
        panic!("could not start the server on a free port");
    }

    fn try_start(&self, port: u16) -> Option<Server> {
        let dir = TempDir::new("server");
        let notify = Notify::new();
        let mut argv: Vec<String> = self.wrapper.clone();
        argv.push(BIN.to_string());
        let text = self.config.clone().unwrap_or_default();
        let text = if text.contains("[log]") {
            text
        } else {
            format!("{text}\n[log]\ntarget = \"stderr\"\n")
        };
        let config = dir.write("server.toml", &text);
        argv.push("--config".into());
        argv.push(config.display().to_string());
        argv.extend(self.args.iter().cloned());
        argv.push(port.to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn server");
        let pipe = child.stdout.take().expect("stdout");
        let stdout = if self.broken_stdout {
            drop(pipe);
            Lines::new(std::io::empty())
        } else {
            Lines::new(pipe)
        };
        let (stderr, stalled) = if self.stalled_stderr {
            (Lines::new(std::io::empty()), child.stderr.take())
        } else {
            (Lines::new(child.stderr.take().expect("stderr")), None)
        };
        if !wait_ready(&notify, &mut child, &stderr) {
            return None;
        }
        Some(Server {
            child,
            port,
            stdout,
            stderr,
            stalled,
            notify,
            config,
            dir,
        })
    }
}

/// Wait for READY=1 from a starting server: true when it came, false when
/// the server exited 71 (its port was taken meanwhile: try another one).
/// Panics on any other exit, or after [`WAIT`].
pub fn wait_ready(notify: &Notify, child: &mut Child, stderr: &Lines) -> bool {
    let end = Instant::now() + WAIT;
    loop {
        if notify
            .recv(Duration::from_millis(50))
            .is_some_and(|m| m.contains("READY=1"))
        {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            assert_eq!(
                status.code(),
                Some(71),
                "server exited early: {:?}",
                stderr.rest()
            );
            return false;
        }
        assert!(Instant::now() < end, "server not ready within 10 s");
    }
}

/// A server run under `strace -f`, which records some of its system calls.
pub struct Traced {
    pub server: Server,
    trace: PathBuf,
    _dir: TempDir,
}

impl Traced {
    /// Start a default server, recording the calls in `calls` (strace's
    /// `trace=` list); None, with a note, where strace is not installed.
    pub fn start(calls: &str) -> Option<Traced> {
        if !prerequisite(have("strace"), "strace") {
            return None;
        }
        let dir = TempDir::new("strace");
        let trace = dir.path("trace");
        let trace_arg = path_of(&trace);
        let filter = format!("trace={calls}");
        let server = Spawn::new()
            .wrap(&[
                "strace",
                "-f",
                "-e",
                &filter,
                "-e",
                "signal=none",
                "-o",
                &trace_arg,
            ])
            .start();
        Some(Traced {
            server,
            trace,
            _dir: dir,
        })
    }

    /// What strace recorded so far, a call a line.
    pub fn record(&self) -> String {
        std::fs::read_to_string(&self.trace).expect("read the strace record")
    }
}

/// A running server child; killed and reaped on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stdout: Lines,
    pub stderr: Lines,
    /// The stderr pipe of a [`Spawn::stalled_stderr`] server, unread.
    stalled: Option<std::process::ChildStderr>,
    pub notify: Notify,
    pub config: PathBuf,
    pub dir: TempDir,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Wait for exit within `timeout`; returns the status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return (st, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "server did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Connect and read the full greeting.
    pub fn connect(&self) -> TcpStream {
        let mut s = TcpStream::connect(self.addr()).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut g = [0u8; 7];
        s.read_exact(&mut g).expect("greeting");
        assert_eq!(&g, GREETING);
        s
    }

    /// Start reading a stalled stderr.
    pub fn read_stderr(&mut self) {
        if let Some(pipe) = self.stalled.take() {
            self.stderr = Lines::new(pipe);
        }
    }

    /// CPU time (utime + stime) in clock ticks from /proc/PID/stat.
    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid())
    }

    /// Rewrite the config file (keeps `[log] target = "stderr"`).
    pub fn rewrite_config(&self, text: &str) {
        let text = if text.contains("[log]") {
            text.to_string()
        } else {
            format!("{text}\n[log]\ntarget = \"stderr\"\n")
        };
        std::fs::write(&self.config, text).expect("rewrite config");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A wrapper such as strace leaves its tracee running when killed:
        // kill the wrapper's children first.
        kill_children(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill_children(pid: i32) {
    let list =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in list
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
}

/// A child process that is killed and reaped when the test ends, also when
/// it panics.
pub struct Reaper(pub Child);

impl Reaper {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_children(self.0.id() as i32);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Send `payload`, half-close, and wait for the server to close.
pub fn transfer(server: &Server, payload: &[u8]) {
    let mut s = server.connect();
    s.write_all(payload).expect("send");
    finish(s);
}

/// Half-close and wait for the server's close (EOF on our side).
pub fn finish(mut s: TcpStream) {
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "server sent more than the greeting: {rest:?}"
    );
}

/// Close with a reset (SO_LINGER 0).
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(s);
}

/// Run the server binary to completion with these args (no port added).
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run server")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Raise this process's soft open-file limit to the hard one; returns it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// A command that runs the server (`BIN PORT`) in a mount namespace of its
/// own whose private /dev holds only `null` and `log`, a symlink to
/// `sock`: a /dev/log the test owns, while the host's /dev stays untouched.
pub fn with_private_dev_log(sock: &Path, port: u16) -> Command {
    let script = format!(
        "mount -n --make-rprivate / && \
         mount -n -t tmpfs -o mode=0755,size=1m accio-dev /dev && \
         mknod -m 666 /dev/null c 1 3 && ln -s {} /dev/log && exec \"$@\"",
        path_of(sock)
    );
    let [unshare, args @ ..] = own_mounts(&script);
    let mut cmd = Command::new(unshare);
    cmd.args(args).args([BIN, &port.to_string()]);
    cmd
}

/// A wrapper that runs `script` in a mount namespace of its own, so that
/// what it mounts never reaches the host's mount table; the script ends in
/// `exec "$@"` to run the command behind the wrapper.
pub fn own_mounts(script: &str) -> [&str; 8] {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]
}

/// Lower a running process's open-file limit (soft and hard) with prlimit.
pub fn lower_nofile(pid: i32, n: u32) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:{n}")])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid failed");
}

/// A TCP connection from `local` (any 127.x.y.z is a local source).
pub fn connect_from(local: std::net::IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let domain = if local.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(local, 0).into())?;
    sock.connect_timeout(&server.into(), WAIT)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(WAIT))?;
    Ok(s)
}

/// Read the greeting; false if the server ended the connection instead.
pub fn greeted(s: &mut TcpStream) -> bool {
    let mut g = [0u8; 7];
    match s.read_exact(&mut g) {
        Ok(()) => {
            assert_eq!(&g, GREETING);
            true
        }
        Err(_) => false,
    }
}

/// Deterministic bytes that differ at every offset, so a misplaced chunk shows.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// True when a test may run: `ok`, or else a note and false. Under CI
/// (`ACCIO_TOOLS_REQUIRED` set by `.ci/run`) a missing prerequisite fails
/// the test instead: nothing may pass without testing.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("ACCIO_TOOLS_REQUIRED").is_none(),
            "missing prerequisite under CI: {what}"
        );
        eprintln!("skipped: {what}");
    }
    ok
}

/// Connect from a given local address (another loopback source) and read
/// the full greeting; None if the server refused before greeting.
pub fn connect_greeted(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut g = [0u8; 7];
    s.read_exact(&mut g).ok()?;
    assert_eq!(&g, GREETING);
    Some(s)
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}
