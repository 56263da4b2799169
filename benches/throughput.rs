//! Throughput benchmark of accio-server, without the libtest harness.
//!
//! In one run, interleaved round by round, it measures the release `server` against a
//! reference receiver written here (blocking, counts with `recv(fd, NULL, huge,
//! MSG_TRUNC)`, run as a separate process by re-executing this binary) and against the
//! peers a user would otherwise pick (`socat | wc -c`, `nc -l | wc -c`, the textbook
//! Python server in `bench/textbook_server.py`). The server also runs in its saving mode
//! (`--save-dir` on a tmpfs under /dev/shm). Last come the saving rounds: the
//! server with `--save-dir` against a plain blocking `splice` receiver written here
//! (`__plain DIR PORT`), on tmpfs and on the real disk, and the greeting latency other
//! clients see during a save. Every count line a receiver prints is checked, and so is
//! every file a saving receiver writes; a wrong or missing one makes the run exit
//! non-zero.
//!
//! ```text
//! cargo bench --bench throughput                 # full run, a few minutes
//! cargo bench --bench throughput -- --smoke      # a few seconds: correctness only
//! cargo bench --bench throughput -- --sizes 1M,100M --rounds 3
//! cargo bench --bench throughput -- --only saving   # the saving rounds alone
//! ```
//!
//! See BENCHMARKS.md for what is measured and how to read the table.

#[path = "../tests/common/ports.rs"]
mod ports;

use std::alloc::{self, Layout};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const GREETING: &[u8] = b"accio\r\n";
/// Size of the sender's page-aligned buffer, and of each `send`.
const CHUNK: usize = 1 << 20;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// How long a receiver may take to start listening (Python is the slow one).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout on every benchmark socket: a stalled receiver fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a count line after the connection ended.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM (or SIGKILL) before we give up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------

const USAGE: &str = "\
usage: cargo bench --bench throughput -- [OPTIONS]

  --smoke             a few seconds: small sizes, one short pass of every test;
                      checks every count line, asserts nothing about speed
  --sizes LIST        transfer sizes, e.g. 1M,100M,1G,4G (suffixes K, M, G = KiB, MiB, GiB)
  --rounds N          interleaved rounds per size (default 15; smoke 2)
  --receivers LIST    subset of reference,server,server-save,socat,nc,python
                      (reference always runs; server-save = server --save-dir on /dev/shm)
  --conns N           sequential connections per connection-rate round (default 2000)
  --idle-conns N      concurrent idle connections to the server (default 1000)
  --skip-extras       no connection rate, start/stop, idle test
  --only LIST         only these parts: transfers (the table), extras, saving
  --save-sizes LIST   saving rounds' sizes (default 1G,4G; smoke 8M)
  --save-rounds N     saving rounds per size and file system (default 5; smoke 2)
  --save-fs LIST      tmpfs (/dev/shm), disk (--disk-dir); default both
  --disk-dir DIR      where the disk saving rounds write (default /var/tmp; not a tmpfs)
  --save-pause SECS   pause before each saving transfer (an experiment; default 0)
  --no-save-warmup    no untimed warm-up transfer before each size's saving rounds
  --plain-window SIZE adds a third saving receiver: the plain one pushing written pages
                      out in windows of SIZE with sync_file_range, as the server does
                      (an experiment; default off)
  --log-dir DIR       the server's stderr logs go to DIR/server-N.log (kept) instead of
                      the scratch directory under the temporary directory
  --pin               during transfers, pin the sender to CPU 0 and the receiver to CPU 1

environment: ACCIO_BENCH_SERVER=PATH benchmarks that binary instead of the one cargo built.";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Reference,
    Server,
    /// The server with `--save-dir` on a fresh directory under /dev/shm (tmpfs).
    ServerSave,
    Socat,
    Nc,
    Python,
    /// The plain saving receiver written here (hidden subcommand `__plain DIR PORT`):
    /// the reference peer of the saving rounds, not one of the transfer table's.
    Plain,
    /// The same, pushing pages out in windows like the server (`--plain-window`, an
    /// experiment): a third receiver of the saving rounds.
    PlainWindowed,
}

const ALL_KINDS: [Kind; 6] = [
    Kind::Reference,
    Kind::Server,
    Kind::ServerSave,
    Kind::Socat,
    Kind::Nc,
    Kind::Python,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Reference => "reference (MSG_TRUNC)",
            Kind::Server => "**server**",
            Kind::ServerSave => "**server --save-dir** (tmpfs)",
            Kind::Socat => "socat \\| wc -c",
            Kind::Nc => "nc -l \\| wc -c",
            Kind::Python => "textbook Python",
            Kind::Plain => "plain splice receiver",
            Kind::PlainWindowed => "plain + sync_file_range windows",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Reference => "reference",
            Kind::Server => "server",
            Kind::ServerSave => "server-save",
            Kind::Socat => "socat",
            Kind::Nc => "nc",
            Kind::Python => "python",
            Kind::Plain => "plain",
            Kind::PlainWindowed => "plain-windowed",
        }
    }

    /// Whether it sends `accio\r\n` (the sender then waits for it before sending).
    fn greets(self) -> bool {
        matches!(
            self,
            Kind::Reference
                | Kind::Server
                | Kind::ServerSave
                | Kind::Python
                | Kind::Plain
                | Kind::PlainWindowed
        )
    }

    /// Whether it serves one connection and exits (socat, nc): its CPU and peak RSS
    /// then come from `wait4` instead of /proc.
    fn one_shot(self) -> bool {
        matches!(self, Kind::Socat | Kind::Nc)
    }
}

/// Where the saving rounds write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SaveFs {
    /// /dev/shm: memory only, what the file system side costs without a disk.
    Tmpfs,
    /// A directory on the real disk (`--disk-dir`, default /var/tmp).
    Disk,
}

const ALL_FS: [SaveFs; 2] = [SaveFs::Tmpfs, SaveFs::Disk];

impl SaveFs {
    fn key(self) -> &'static str {
        match self {
            SaveFs::Tmpfs => "tmpfs",
            SaveFs::Disk => "disk",
        }
    }
}

struct Opts {
    smoke: bool,
    sizes: Vec<u64>,
    rounds: usize,
    kinds: Vec<Kind>,
    conns: usize,
    conn_rounds: usize,
    start_rounds: usize,
    idle_conns: usize,
    idle_time: Duration,
    /// The transfer table (and its server-save column).
    transfers: bool,
    extras: bool,
    /// The saving rounds: server --save-dir against the plain splice receiver.
    saving: bool,
    save_sizes: Vec<u64>,
    save_rounds: usize,
    save_fs: Vec<SaveFs>,
    /// The real-disk directory the `disk` saving rounds write under.
    disk_dir: PathBuf,
    /// A pause before each saving transfer (an experiment: default none).
    save_pause: Duration,
    /// The plain receiver pushes its pages out in windows this large, like the server
    /// (an experiment: default 0, off).
    plain_window: u64,
    /// An untimed transfer (plain receiver) before each size's saving rounds.
    save_warmup: bool,
    /// Where the server's stderr (its per-connection log) goes, if not the scratch
    /// directory under /tmp.
    log_dir: Option<PathBuf>,
    /// Greeting probes: at least this many during an upload, and this many against the
    /// idle saving server.
    min_probes: usize,
    idle_probes: usize,
    pin: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad size {s:?} (examples: 4096, 1M, 100M, 4G)"))
}

fn parse_count(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{flag}: expected a positive number, got {v:?}"))
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut smoke = false;
        let mut sizes = None;
        let mut rounds = None;
        let mut kinds = None;
        let mut conns = None;
        let mut idle_conns = None;
        let mut extras = true;
        let mut transfers = true;
        let mut saving = true;
        let mut save_sizes = None;
        let mut save_rounds = None;
        let mut save_fs = None;
        let mut disk_dir = None;
        let mut save_pause = Duration::ZERO;
        let mut plain_window = 0;
        let mut save_warmup = true;
        let mut log_dir = None;
        let mut pin = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--smoke" => smoke = true,
                "--skip-extras" => extras = false,
                "--pin" => pin = true,
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                "-h" | "--help" => return Err(String::new()),
                "--sizes" => {
                    let v = value()?;
                    sizes = Some(
                        v.split(',')
                            .map(parse_size)
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                "--rounds" => rounds = Some(parse_count(flag, &value()?)?),
                "--conns" => conns = Some(parse_count(flag, &value()?)?),
                "--idle-conns" => idle_conns = Some(parse_count(flag, &value()?)?),
                "--only" => {
                    let v = value()?;
                    (transfers, extras, saving) = (false, false, false);
                    for part in v.split(',') {
                        match part.trim() {
                            "transfers" => transfers = true,
                            "extras" => extras = true,
                            "saving" => saving = true,
                            other => {
                                return Err(format!(
                                    "--only: unknown part {other:?} (transfers, extras, saving)"
                                ));
                            }
                        }
                    }
                }
                "--save-sizes" => {
                    let v = value()?;
                    save_sizes = Some(
                        v.split(',')
                            .map(parse_size)
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                "--save-rounds" => save_rounds = Some(parse_count(flag, &value()?)?),
                "--save-fs" => {
                    let v = value()?;
                    let mut list = Vec::new();
                    for name in v.split(',') {
                        let fs = ALL_FS
                            .iter()
                            .copied()
                            .find(|f| f.key() == name.trim())
                            .ok_or_else(|| format!("--save-fs: unknown {name:?} (tmpfs, disk)"))?;
                        if !list.contains(&fs) {
                            list.push(fs);
                        }
                    }
                    save_fs = Some(list);
                }
                "--disk-dir" => disk_dir = Some(PathBuf::from(value()?)),
                "--plain-window" => plain_window = parse_size(&value()?)?,
                "--no-save-warmup" => save_warmup = false,
                "--log-dir" => log_dir = Some(PathBuf::from(value()?)),
                "--save-pause" => {
                    let v = value()?;
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 600.0)
                        .ok_or_else(|| format!("--save-pause: expected seconds, got {v:?}"))?;
                    save_pause = Duration::from_secs_f64(secs);
                }
                "--receivers" => {
                    let v = value()?;
                    let mut list = vec![Kind::Reference];
                    for name in v.split(',') {
                        let k = ALL_KINDS
                            .iter()
                            .copied()
                            .find(|k| k.key() == name.trim())
                            .ok_or_else(|| format!("unknown receiver {name:?}"))?;
                        if !list.contains(&k) {
                            list.push(k);
                        }
                    }
                    list.sort_by_key(|k| ALL_KINDS.iter().position(|x| x == k));
                    kinds = Some(list);
                }
                f if f.starts_with('-') => return Err(format!("unknown option {f}")),
                // A positional argument is a cargo bench name filter: nothing to filter.
                _ => {}
            }
        }
        Ok(Opts {
            smoke,
            sizes: sizes.unwrap_or_else(|| {
                if smoke {
                    vec![1 << 20, 8 << 20]
                } else {
                    vec![1 << 20, 100 << 20, 1 << 30, 4 << 30]
                }
            }),
            rounds: rounds.unwrap_or(if smoke { 2 } else { 15 }),
            kinds: kinds.unwrap_or_else(|| ALL_KINDS.to_vec()),
            conns: conns.unwrap_or(if smoke { 200 } else { 2000 }),
            conn_rounds: if smoke { 1 } else { 9 },
            start_rounds: if smoke { 3 } else { 15 },
            idle_conns: idle_conns.unwrap_or(if smoke { 100 } else { 1000 }),
            idle_time: if smoke {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            },
            transfers,
            extras,
            saving,
            save_sizes: save_sizes.unwrap_or_else(|| {
                if smoke {
                    vec![8 << 20]
                } else {
                    vec![1 << 30, 4 << 30]
                }
            }),
            save_rounds: save_rounds.unwrap_or(if smoke { 2 } else { 5 }),
            save_fs: save_fs.unwrap_or_else(|| ALL_FS.to_vec()),
            disk_dir: disk_dir.unwrap_or_else(|| PathBuf::from("/var/tmp")),
            save_pause,
            plain_window,
            save_warmup,
            log_dir,
            min_probes: if smoke { 5 } else { 20 },
            idle_probes: if smoke { 5 } else { 100 },
            pin,
        })
    }
}

// ---------------------------------------------------------------------------------
// Reference receiver (hidden subcommand `__reference PORT`)
// ---------------------------------------------------------------------------------

/// The reference: minimal, blocking, one connection at a time. Counts with
/// `recv(fd, NULL, 1 GiB, MSG_TRUNC)`, so Linux TCP drops the data without copying it.
/// SIGTERM keeps its default action (the process dies at once).
fn reference_main(port: &str) -> ExitCode {
    let port: u16 = match port.parse() {
        Ok(p) => p,
        Err(_) => {
            eprintln!("ERROR: reference: bad port {port:?}");
            return ExitCode::from(64);
        }
    };
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR: reference: bind 0.0.0.0:{port}: {e}");
            return ExitCode::from(71);
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let fd = stream.as_raw_fd();
        let mut ok = stream.write_all(GREETING).is_ok();
        let mut total: u64 = 0;
        while ok {
            // SAFETY: a NULL buffer is allowed with MSG_TRUNC on TCP (nothing is copied).
            let n = unsafe { libc::recv(fd, std::ptr::null_mut(), 1 << 30, libc::MSG_TRUNC) };
            match n {
                0 => break,
                n if n > 0 => total += n as u64,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => ok = false,
            }
        }
        let line = if ok {
            format!("{total}\n")
        } else {
            "ERROR\n".to_string()
        };
        // One write(2) per line, before the socket is closed (as the contract asks).
        // SAFETY: writing an owned buffer to fd 1.
        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        drop(stream);
    }
}

// ---------------------------------------------------------------------------------
// Plain saving receiver (hidden subcommand `__plain DIR PORT`)
// ---------------------------------------------------------------------------------

/// Pipe capacity the plain receiver asks for (the server asks for the same).
const PLAIN_PIPE: libc::c_int = 1 << 20;

/// The saving rounds' reference: what Linux allows for "store what a socket receives
/// in a file, durably", without anything around it. Blocking, one connection at a
/// time: greeting, `N.file` created in DIR (N = 1, 2, ... per connection), blocking
/// `splice` socket → pipe (1 MiB) → file until EOF, `fsync`, count line, close.
///
/// WINDOW (bytes, 0 = off; an experiment, `--plain-window`) makes it push written
/// pages out the way the server does with fsync on: every WINDOW bytes,
/// `sync_file_range(WRITE)` on the new window and a wait for the two before it.
fn plain_main(dir: &str, port: &str, window: &str) -> ExitCode {
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("ERROR: plain: bad port {port:?}");
        return ExitCode::from(64);
    };
    let Ok(window) = (if window.is_empty() {
        Ok(0)
    } else {
        window.parse::<u64>()
    }) else {
        eprintln!("ERROR: plain: bad window {window:?}");
        return ExitCode::from(64);
    };
    let dir = PathBuf::from(dir);
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR: plain: bind 0.0.0.0:{port}: {e}");
            return ExitCode::from(71);
        }
    };
    let mut number: u64 = 0;
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        number += 1;
        let line = match plain_serve(&mut stream, &dir.join(format!("{number}.file")), window) {
            Ok(total) => format!("{total}\n"),
            Err(e) => {
                eprintln!("plain: connection {number}: {e}");
                "ERROR\n".to_string()
            }
        };
        // SAFETY: writing an owned buffer to fd 1.
        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        drop(stream);
    }
}

fn plain_serve(stream: &mut TcpStream, path: &Path, window: u64) -> io::Result<u64> {
    stream.write_all(GREETING)?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our pipe. A refusal (pipe-user-pages-soft) leaves 64 KiB.
    let cap = unsafe {
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PLAIN_PIPE);
        libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    let cap = if cap > 0 { cap as usize } else { 64 << 10 };
    let (sock, file_fd) = (stream.as_raw_fd(), file.as_raw_fd());
    let mut total: u64 = 0;
    let mut pushed: u64 = 0;
    loop {
        // SAFETY: splice between fds we own; blocks until data or EOF.
        let n = unsafe {
            libc::splice(
                sock,
                std::ptr::null_mut(),
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                cap,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above; the pipe holds `left` bytes.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    file_fd,
                    std::ptr::null_mut(),
                    left,
                    0,
                )
            };
            if m < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "file took nothing",
                ));
            }
            left -= m as usize;
        }
        total += n as u64;
        if window > 0 && total - pushed >= window {
            // The server's scheme (src/save.rs, Part::push): start the new window,
            // wait for the two before it.
            let (start, len) = (pushed as i64, (total - pushed) as i64);
            // SAFETY: sync_file_range on our own file; errors show up at fsync.
            unsafe {
                libc::sync_file_range(file_fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
                if start > 0 {
                    let before = start.saturating_sub(window as i64 * 2).max(0);
                    libc::sync_file_range(
                        file_fd,
                        before,
                        start - before,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
            pushed = total;
        }
    }
    file.sync_all()?;
    Ok(total)
}

// ---------------------------------------------------------------------------------
// Processes: spawn, measure, stop, always reap
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Exit {
    /// Raw wait status.
    status: i32,
    /// user + system CPU over the whole life, from `wait4` (µs precision).
    cpu_ns: u64,
    /// Context switches (voluntary + involuntary) over the whole life.
    switches: u64,
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// A child process that is always reaped: explicitly, or on drop (SIGKILL + wait).
struct Proc {
    what: String,
    child: Child,
    /// pidfd, to wait for exit with a timeout (poll); None on kernels without it.
    pidfd: Option<OwnedFd>,
    exit: Option<Exit>,
}

impl Proc {
    fn spawn(what: String, cmd: &mut Command) -> Result<Proc, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain syscall; the fd it returns is owned by us.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(Proc {
            what,
            child,
            pidfd,
            exit: None,
        })
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Reaps the process if it has exited (never blocks).
    fn try_reap(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: rusage is plain data.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(self.pid(), &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid() {
                let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
                self.exit = Some(Exit {
                    status,
                    cpu_ns: (us(ru.ru_utime) + us(ru.ru_stime)) * 1000,
                    switches: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
                });
            }
        }
        self.exit
    }

    /// Waits at most `timeout` for the process to exit, and reaps it.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap() {
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let ms = left.as_millis().clamp(1, 1000) as i32;
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, ms) };
                }
                None => thread::sleep(left.min(Duration::from_micros(100))),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: the pid is our unreaped child, so it cannot have been reused.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after EXIT_TIMEOUT. Reaps it.
    fn stop(&mut self) -> Result<Exit, String> {
        self.signal(libc::SIGTERM);
        if let Some(e) = self.wait_timeout(EXIT_TIMEOUT) {
            return Ok(e);
        }
        self.signal(libc::SIGKILL);
        self.wait_timeout(EXIT_TIMEOUT);
        Err(format!(
            "{} did not exit within {EXIT_TIMEOUT:?} of SIGTERM",
            self.what
        ))
    }

    /// user + system CPU so far (ns): the process CPU clock (all threads, dead ones
    /// too); the tick-granular utime + stime of /proc/PID/stat if that is refused.
    fn cpu_ns(&self) -> Option<u64> {
        let mut clock: libc::clockid_t = 0;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: out-parameters are valid.
        if unsafe { libc::clock_getcpuclockid(self.pid(), &mut clock) } == 0
            && unsafe { libc::clock_gettime(clock, &mut ts) } == 0
        {
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(ticks * 1_000_000_000 / hz)
    }

    /// A `Vm*:` line of /proc/PID/status, in KiB.
    fn status_kib(&self, key: &str) -> Option<u64> {
        proc_status_field(&format!("/proc/{}/status", self.pid()), key)
    }

    /// Context switches of all threads: how often it woke up.
    fn wakeups(&self) -> u64 {
        let Ok(dir) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        dir.flatten()
            .map(|t| {
                let p = t.path().join("status");
                let p = p.to_string_lossy();
                proc_status_field(&p, "voluntary_ctxt_switches").unwrap_or(0)
                    + proc_status_field(&p, "nonvoluntary_ctxt_switches").unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            if self.wait_timeout(EXIT_TIMEOUT).is_none() {
                eprintln!(
                    "warning: {} (pid {}) could not be reaped",
                    self.what,
                    self.pid()
                );
            }
        }
    }
}

fn proc_status_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Samples VmHWM of processes that will exit on their own, every 2 ms until stopped;
/// the sum of the last value read for each is their peak RSS.
struct HwmSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<u64>,
}

impl HwmSampler {
    fn start(pids: Vec<libc::pid_t>) -> HwmSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            loop {
                for (pid, peak) in pids.iter().zip(&mut peak) {
                    let hwm = proc_status_field(&format!("/proc/{pid}/status"), "VmHWM");
                    *peak = (*peak).max(hwm.unwrap_or(0));
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak.iter().sum();
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        HwmSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Forwards each stdout line of a child to a channel, so we can wait with a timeout.
fn line_reader(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A free port: bind 127.0.0.1:0, read the port, close.
/// A port below the ephemeral range, free for a 0.0.0.0 bind: a client's
/// TIME_WAIT entry on an ephemeral port (thousands after the connection-rate
/// rounds or a test run) would refuse the receiver's bind.
fn free_port() -> Result<u16, String> {
    Ok(ports::free_port())
}

/// Whether some socket listens on `port` (IPv4 or IPv6), without connecting to it:
/// socat and nc serve a single connection, so a probe connection would use it up.
fn is_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        fs::read_to_string(path).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let mut f = line.split_whitespace();
                let local = f.nth(1).unwrap_or("");
                let state = f.nth(1).unwrap_or("");
                state == "0A"
                    && local
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

// ---------------------------------------------------------------------------------
// Receivers
// ---------------------------------------------------------------------------------

struct Ctx {
    /// The server binary that runs: a copy of `server_origin` made at start.
    server: PathBuf,
    server_origin: PathBuf,
    python_script: PathBuf,
    /// The interpreter `python3` runs, resolved once: a version-manager shim
    /// (pyenv) would add its own start-up to every measurement.
    python: PathBuf,
    self_exe: PathBuf,
    tmp: PathBuf,
    /// Receivers whose programs are installed.
    available: Vec<Kind>,
    notes: Vec<String>,
    failures: Vec<String>,
    server_logs: usize,
    /// server-save's base directory, /dev/shm/accio-bench-PID: each of its
    /// transfers saves into a fresh subdirectory. Removed when the Ctx is dropped,
    /// whatever happened.
    save_base: Option<RemoveOnDrop>,
    /// Subdirectories made so far (their names).
    save_dirs: usize,
    /// Files saved by server-save that were checked (size, content) and deleted.
    saves_checked: usize,
    /// The disk saving rounds' base directory, DISK-DIR/accio-bench-disk-PID.
    disk_base: Option<RemoveOnDrop>,
    /// Files of the saving rounds (server and plain) checked and deleted.
    saving_checked: usize,
    /// The plain receiver's sync_file_range window, bytes (0: none, the default).
    plain_window: u64,
    /// Where the server's stderr logs go (`--log-dir`; default `tmp`).
    log_dir: Option<PathBuf>,
}

impl Ctx {
    fn fail(&mut self, msg: String) {
        status_line(&format!("FAIL: {msg}"), true);
        self.failures.push(msg);
    }
}

/// A directory that is removed (with what it holds) when this is dropped: on
/// success, on error and while unwinding alike.
struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    /// Removes it now, reporting a failure (drop would only try).
    fn remove(self) -> Result<(), String> {
        let r =
            fs::remove_dir_all(&self.0).map_err(|e| format!("removing {}: {e}", self.0.display()));
        std::mem::forget(self);
        r
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                eprintln!("warning: cannot remove {}: {e}", self.0.display());
            }
            _ => {}
        }
    }
}

/// Where server-save writes: /dev/shm/accio-bench-PID, created fresh, if /dev/shm is
/// a tmpfs (the target is about saving to tmpfs; a disk would measure the disk).
fn save_base() -> Result<RemoveOnDrop, String> {
    make_base(Path::new("/dev/shm"), "accio-bench-", true)
}

/// Where the disk saving rounds write: DIR/accio-bench-disk-PID, created fresh, if DIR
/// is not a tmpfs (nor ramfs).
fn disk_base(dir: &Path) -> Result<RemoveOnDrop, String> {
    make_base(dir, "accio-bench-disk-", false)
}

/// Whether `path` is on a tmpfs or ramfs (memory only).
fn in_memory_fs(path: &Path) -> Result<bool, String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))?;
    // SAFETY: statfs is plain data; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "{} is not available ({})",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
    Ok(st.f_type == libc::TMPFS_MAGIC || st.f_type == RAMFS_MAGIC)
}

/// A fresh PARENT/PREFIXpid directory, on a tmpfs or on anything but one.
fn make_base(parent: &Path, prefix: &str, want_tmpfs: bool) -> Result<RemoveOnDrop, String> {
    let tmpfs = in_memory_fs(parent)?;
    if want_tmpfs && !tmpfs {
        return Err(format!("{} is not a tmpfs", parent.display()));
    }
    if !want_tmpfs && tmpfs {
        return Err(format!(
            "{} is a tmpfs or ramfs, not a disk (choose another with --disk-dir)",
            parent.display()
        ));
    }
    // Leftovers of runs that were killed (Ctrl-C skips every Drop): their pid is gone.
    // A leftover of an earlier run with our pid goes too: start empty.
    let ours = std::process::id().to_string();
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .is_some_and(|pid| pid == ours || !Path::new("/proc").join(pid).exists());
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let base = parent.join(format!("{prefix}{}", std::process::id()));
    fs::create_dir(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    Ok(RemoveOnDrop(base))
}

/// The mount `path` is on, from /proc/self/mountinfo: "TYPE SOURCE on MOUNTPOINT
/// (SUPER-OPTIONS)", e.g. whether an ext4 has `discard`.
fn mount_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(mp), Some(ty), Some(src), Some(opts)) =
            (f.get(4), f.get(dash + 1), f.get(dash + 2), f.get(dash + 3))
        else {
            continue;
        };
        let mp_path = Path::new(mp);
        // The last matching line wins a tie: the mount on top.
        if path.starts_with(mp_path) && best.as_ref().is_none_or(|b| mp.len() >= b.0) {
            best = Some((mp.len(), format!("{ty} {src} on {mp} ({opts})")));
        }
    }
    best.map_or_else(|| "unknown".to_string(), |b| b.1)
}

/// Flushes the file system of `dir` (syncfs): after a deletion, so that its journal
/// commit (and with `discard` the discards) is not paid by the next transfer.
fn syncfs(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        // SAFETY: syncfs on an fd we own.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}

/// Free bytes for an unprivileged user on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Progress on stderr: a line rewritten in place on a terminal; in a log (CI) only
/// the lines that are kept.
fn status_line(msg: &str, keep: bool) {
    // SAFETY: isatty has no preconditions.
    let tty = unsafe { libc::isatty(2) } == 1;
    match (tty, keep) {
        (true, true) => eprintln!("\r\x1b[K{msg}"),
        (true, false) => eprint!("\r\x1b[K{msg}"),
        (false, true) => eprintln!("{msg}"),
        (false, false) => {}
    }
}

/// A running receiver: its processes (the last one prints the count lines).
struct Receiver {
    kind: Kind,
    port: u16,
    procs: Vec<Proc>,
    lines: mpsc::Receiver<String>,
    /// server-save's fresh directory; declared after `procs`, so that on drop the
    /// server is killed before its directory is removed.
    save_dir: Option<RemoveOnDrop>,
}

impl Receiver {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn cpu_ns(&self) -> Vec<u64> {
        self.procs.iter().map(|p| p.cpu_ns().unwrap_or(0)).collect()
    }

    fn next_line(&self, timeout: Duration) -> Result<String, String> {
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| format!("{}: no count line within {timeout:?}", self.kind.key()))
    }

    /// Stops every process (SIGTERM, then SIGKILL), reaps them, and checks that the
    /// receiver printed nothing more than what was consumed. Returns the exits.
    fn stop(mut self) -> Result<Vec<Exit>, String> {
        let mut exits = Vec::new();
        let mut err = None;
        for p in &mut self.procs {
            match p.stop() {
                Ok(e) => exits.push(e),
                Err(e) => err = err.or(Some(e)),
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        // The stdout pipe is closed now: every line it held has been forwarded or
        // will be shortly.
        let deadline = Instant::now() + Duration::from_millis(200);
        if let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            return Err(format!(
                "{}: unexpected extra line {line:?}",
                self.kind.key()
            ));
        }
        Ok(exits)
    }
}

/// A fresh, empty directory for one saving receiver: under `save_in`, or under the
/// tmpfs base of the transfer table's server-save.
fn fresh_save_dir(ctx: &mut Ctx, save_in: Option<&Path>) -> Result<RemoveOnDrop, String> {
    let base = match save_in {
        Some(b) => b.to_path_buf(),
        None => ctx
            .save_base
            .as_ref()
            .ok_or("server-save: no directory under /dev/shm")?
            .0
            .clone(),
    };
    ctx.save_dirs += 1;
    let dir = base.join(ctx.save_dirs.to_string());
    fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(RemoveOnDrop(dir))
}

/// Starts a receiver on `port`. Saving receivers (server-save, plain) get a fresh
/// directory under `save_in` (default: server-save's tmpfs base).
fn start_receiver(
    ctx: &mut Ctx,
    kind: Kind,
    port: u16,
    config: Option<&Path>,
    save_in: Option<&Path>,
) -> Result<Receiver, String> {
    let p = port.to_string();
    let mut procs = Vec::new();
    let mut save_dir = None;
    let stdout;
    match kind {
        Kind::Reference
        | Kind::Server
        | Kind::ServerSave
        | Kind::Python
        | Kind::Plain
        | Kind::PlainWindowed => {
            let mut cmd = match kind {
                Kind::Reference => {
                    let mut c = Command::new(&ctx.self_exe);
                    c.arg("__reference").arg(&p);
                    c
                }
                Kind::Plain | Kind::PlainWindowed => {
                    let dir = fresh_save_dir(ctx, save_in)?;
                    let window = if kind == Kind::Plain {
                        0
                    } else {
                        ctx.plain_window
                    };
                    let mut c = Command::new(&ctx.self_exe);
                    c.arg("__plain").arg(&dir.0).arg(&p).arg(window.to_string());
                    save_dir = Some(dir);
                    c
                }
                Kind::Server | Kind::ServerSave => {
                    let mut c = Command::new(&ctx.server);
                    if let Some(cfg) = config {
                        c.arg("--config").arg(cfg);
                    }
                    if kind == Kind::ServerSave {
                        let dir = fresh_save_dir(ctx, save_in)?;
                        c.arg("--save-dir").arg(&dir.0);
                        save_dir = Some(dir);
                    }
                    c.arg(&p);
                    // Its per-connection log lines (stderr when /dev/log is absent).
                    ctx.server_logs += 1;
                    let log = ctx
                        .log_dir
                        .as_ref()
                        .unwrap_or(&ctx.tmp)
                        .join(format!("server-{}.log", ctx.server_logs));
                    let f =
                        fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
                    c.stderr(f);
                    c
                }
                _ => {
                    let mut c = Command::new(&ctx.python);
                    c.arg("-u").arg(&ctx.python_script).arg(&p);
                    c
                }
            };
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            let mut proc = Proc::spawn(kind.key().to_string(), &mut cmd)?;
            stdout = proc.child.stdout.take();
            procs.push(proc);
        }
        Kind::Socat | Kind::Nc => {
            let mut cmd = if kind == Kind::Socat {
                let mut c = Command::new("socat");
                c.arg("-u")
                    .arg(format!("TCP-LISTEN:{port},reuseaddr"))
                    .arg("-");
                c
            } else {
                let mut c = Command::new("nc");
                c.arg("-l").arg(&p);
                c
            };
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            let mut first = Proc::spawn(kind.key().to_string(), &mut cmd)?;
            let pipe = first.child.stdout.take().expect("piped stdout");
            procs.push(first);
            let mut wc = Command::new("wc");
            wc.arg("-c").stdin(pipe).stdout(Stdio::piped());
            let mut wc = Proc::spawn("wc -c".to_string(), &mut wc)?;
            stdout = wc.child.stdout.take();
            procs.push(wc);
        }
    }
    let stdout = stdout.ok_or("child stdout was not piped")?;
    Ok(Receiver {
        kind,
        port,
        procs,
        lines: line_reader(stdout),
        save_dir,
    })
}

/// Starts a receiver on a fresh port and waits (without connecting) until it listens.
fn spawn_receiver(
    ctx: &mut Ctx,
    kind: Kind,
    config: Option<&Path>,
    save_in: Option<&Path>,
) -> Result<Receiver, String> {
    let mut last = String::new();
    for _attempt in 0..3 {
        let port = free_port()?;
        let mut r = start_receiver(ctx, kind, port, config, save_in)?;
        let t0 = Instant::now();
        loop {
            if is_listening(port) {
                return Ok(r);
            }
            if let Some(e) = r.procs.iter_mut().find_map(|p| p.try_reap()) {
                // Most likely the port was taken in between: try another one.
                last = format!(
                    "{} exited before listening ({})",
                    kind.key(),
                    describe_status(e.status)
                );
                break;
            }
            if t0.elapsed() > LISTEN_TIMEOUT {
                last = format!(
                    "{} not listening on {port} after {LISTEN_TIMEOUT:?}",
                    kind.key()
                );
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        // r is dropped here: its processes are killed and reaped.
    }
    Err(last)
}

// ---------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------

/// A page-aligned buffer (an unaligned one costs the copying receivers, and the
/// sender's own copy into the socket, noticeably).
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory for the send buffer");
        // SAFETY: freshly allocated, len bytes.
        let slice = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        for (i, b) in slice.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        AlignedBuf { ptr, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: initialized in new(), lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Sets TCP congestion control "cubic" on the socket (the machine's default `bbr`
/// costs a loopback sender 40-50 %). Returns what the socket ends up using.
fn set_cubic(s: &TcpStream) -> String {
    let name = b"cubic";
    // SAFETY: valid fd and buffer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd and buffer.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(len as usize);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    Ok(s)
}

fn read_greeting(s: &mut TcpStream) -> Result<(), String> {
    let mut g = [0u8; GREETING.len()];
    s.read_exact(&mut g)
        .map_err(|e| format!("reading the greeting: {e}"))?;
    if g != GREETING {
        return Err(format!(
            "greeting {:?}, expected {:?}",
            String::from_utf8_lossy(&g),
            "accio\r\n"
        ));
    }
    Ok(())
}

/// One transfer as a client does it: connect, wait for the greeting (if the receiver
/// sends one), send `size` bytes, shut down writing, wait for the receiver to close.
/// Returns the time from connect to the close.
fn transfer(
    addr: SocketAddr,
    size: u64,
    greets: bool,
    buf: &AlignedBuf,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut s = connect(addr)?;
    set_cubic(&s);
    if greets {
        read_greeting(&mut s)?;
    }
    let data = buf.as_slice();
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        s.write_all(&data[..n])
            .map_err(|e| format!("send ({} of {size} bytes sent): {e}", size - left))?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown(SHUT_WR): {e}"))?;
    let mut sink = [0u8; 64];
    loop {
        match s.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the receiver to close: {e}")),
        }
    }
    Ok(t0.elapsed())
}

// ---------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    cpu_secs: f64,
    rss_kib: u64,
    /// CPU of the sending thread (this process): where the ceiling comes from.
    sender_cpu_secs: f64,
    /// The receiver's context switches during the transfer: how often it slept.
    switches: u64,
    /// Saving receivers: checking, deleting the file and flushing the deletion
    /// (after the transfer, not timed with it).
    cleanup_secs: f64,
}

/// Sets the CPU affinity of one thread (0 = the caller): `Some(cpu)` or all CPUs.
fn set_affinity(tid: libc::pid_t, cpu: Option<usize>) {
    // SAFETY: cpu_set_t is plain data; the CPU_* helpers stay within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..thread::available_parallelism().map_or(1, |n| n.get()) {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Every thread of a process (a thread's affinity is its own).
fn set_affinity_all_threads(pid: libc::pid_t, cpu: Option<usize>) {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in dir.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            set_affinity(tid, cpu);
        }
    }
}

/// Pins the calling thread to one CPU until dropped.
struct PinSelf;

impl PinSelf {
    fn to(cpu: usize) -> PinSelf {
        set_affinity(0, Some(cpu));
        PinSelf
    }
}

impl Drop for PinSelf {
    fn drop(&mut self) {
        set_affinity(0, None);
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{} GiB", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// One transfer to a fresh receiver: throughput, its CPU (delta across the transfer)
/// and its peak RSS; checks its count line.
/// Saving receivers write under `save_in` (default: server-save's tmpfs base); their
/// file is checked and deleted afterwards, and a disk (`sync_after`) flushed.
fn measure_transfer(
    ctx: &mut Ctx,
    kind: Kind,
    size: u64,
    buf: &AlignedBuf,
    pin: bool,
    whole_check: bool,
    save_in: Option<&Path>,
) -> Result<Sample, String> {
    let mut r = spawn_receiver(ctx, kind, None, save_in)?;
    let _pinned = if pin {
        for p in &r.procs {
            set_affinity_all_threads(p.pid(), Some(1));
        }
        Some(PinSelf::to(0))
    } else {
        None
    };
    let cpu0 = r.cpu_ns();
    let switches0: Vec<u64> = r.procs.iter().map(Proc::wakeups).collect();
    // socat, nc and wc exit when done, and wait4's ru_maxrss cannot stand in for their
    // VmHWM: exec folds the spawning process's (this one's) peak RSS into it.
    let sampler = kind
        .one_shot()
        .then(|| HwmSampler::start(r.procs.iter().map(Proc::pid).collect()));
    let sender0 = thread_cpu_secs();
    let dur = transfer(r.addr(), size, kind.greets(), buf)
        .map_err(|e| format!("{} {}: {e}", kind.key(), size_name(size)))?;
    let sender_cpu_secs = thread_cpu_secs() - sender0;
    let line = r.next_line(LINE_TIMEOUT)?;
    if line.trim() != size.to_string() {
        return Err(format!(
            "{} {}: count line {line:?}, expected \"{size}\"",
            kind.key(),
            size_name(size)
        ));
    }
    let (cpu_ns, rss_kib, switches) = if let Some(sampler) = sampler {
        // Stopped before any of them is reaped, so their pids cannot be reused.
        let rss = sampler.stop();
        let (mut cpu, mut switches) = (0, 0);
        for ((p, c0), s0) in r.procs.iter_mut().zip(&cpu0).zip(&switches0) {
            let e = p
                .wait_timeout(EXIT_TIMEOUT)
                .ok_or_else(|| format!("{} did not exit after the transfer", p.what))?;
            cpu += e.cpu_ns.saturating_sub(*c0);
            switches += e.switches.saturating_sub(*s0);
        }
        (cpu, rss, switches)
    } else {
        let cpu: u64 = r
            .cpu_ns()
            .iter()
            .zip(&cpu0)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum();
        let rss = r
            .procs
            .iter()
            .map(|p| p.status_kib("VmHWM").unwrap_or(0))
            .sum();
        let switches = r
            .procs
            .iter()
            .zip(&switches0)
            .map(|(p, s0)| p.wakeups().saturating_sub(*s0))
            .sum();
        (cpu, rss, switches)
    };
    let saved = r.save_dir.take();
    r.stop()?;
    let t_clean = Instant::now();
    if let Some(dir) = saved {
        // The server renames the file into place before it writes the line.
        check_saved(&dir.0, size, buf, whole_check)
            .map_err(|e| format!("{} {}: {e}", kind.key(), size_name(size)))?;
        let parent = dir.0.parent().map(Path::to_path_buf);
        dir.remove()?;
        if let Some(parent) = parent.filter(|_| save_in.is_some()) {
            syncfs(&parent);
        }
        if save_in.is_some() {
            ctx.saving_checked += 1;
        } else {
            ctx.saves_checked += 1;
        }
    }
    Ok(Sample {
        secs: dur.as_secs_f64(),
        cpu_secs: cpu_ns as f64 / 1e9,
        rss_kib,
        sender_cpu_secs,
        switches,
        cleanup_secs: t_clean.elapsed().as_secs_f64(),
    })
}

/// Up to this size a saved file is compared whole with what was sent (and in a smoke
/// run at any size); above it, `SAMPLES` windows of `SAMPLE_LEN` bytes.
const WHOLE_CHECK_MAX: u64 = 64 << 20;
const SAMPLES: u64 = 32;
const SAMPLE_LEN: u64 = 64 << 10;

/// What `server --save-dir` left in its fresh directory after one transfer of `size`
/// bytes: exactly `1.file` (no temporary file left over), `size` bytes long, holding
/// the sender's 1 MiB buffer repeated: whole, or sampled (the first and last window
/// and windows at odd offsets in between).
fn check_saved(dir: &Path, size: u64, buf: &AlignedBuf, whole: bool) -> Result<(), String> {
    let names = dir_names(dir)?;
    if names != ["1.file"] {
        return Err(format!(
            "{} holds {names:?}, expected exactly [\"1.file\"]",
            dir.display()
        ));
    }
    check_file(&dir.join("1.file"), size, buf, whole)
}

/// The names in `dir`, sorted.
fn dir_names(dir: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// `path` is `size` bytes long and holds the sender's 1 MiB buffer repeated (compared
/// whole, or sampled above WHOLE_CHECK_MAX).
fn check_file(path: &Path, size: u64, buf: &AlignedBuf, whole: bool) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len != size {
        return Err(format!(
            "{} is {len} bytes, {size} were sent",
            path.display()
        ));
    }
    let data = buf.as_slice();
    let chunk = data.len() as u64;
    let windows: Vec<(u64, u64)> = if whole || size <= WHOLE_CHECK_MAX {
        (0..size.div_ceil(chunk))
            .map(|k| (k * chunk, chunk.min(size - k * chunk)))
            .collect()
    } else {
        (0..SAMPLES)
            .map(|i| {
                // Spread over the file, off any page or chunk boundary, last one at the end.
                let at = (size - SAMPLE_LEN) / (SAMPLES - 1) * i + i * 4093;
                (at.min(size - SAMPLE_LEN), SAMPLE_LEN)
            })
            .collect()
    };
    let mut got = vec![0u8; chunk as usize];
    for (at, n) in windows {
        let got = &mut got[..n as usize];
        file.read_exact_at(got, at)
            .map_err(|e| format!("{}: reading {n} bytes at {at}: {e}", path.display()))?;
        let start = (at % chunk) as usize;
        if data.get(start..start + got.len()) == Some(&*got) {
            continue;
        }
        let mismatch = got
            .iter()
            .enumerate()
            .find(|&(j, &b)| b != data[(start + j) % data.len()]);
        if let Some((j, &b)) = mismatch {
            let off = at + j as u64;
            return Err(format!(
                "{} differs from what was sent at byte {off}: {b}, sent {}",
                path.display(),
                data[(off % chunk) as usize]
            ));
        }
    }
    Ok(())
}

/// Sequential connections: connect, read the greeting, close; until all `n` lines
/// ("0") are back. Returns connections per second.
fn measure_conn_rate(ctx: &mut Ctx, kind: Kind, n: usize) -> Result<f64, String> {
    let r = spawn_receiver(ctx, kind, None, None)?;
    let t0 = Instant::now();
    for i in 0..n {
        let mut s = connect(r.addr()).map_err(|e| format!("{} connection {i}: {e}", kind.key()))?;
        read_greeting(&mut s).map_err(|e| format!("{} connection {i}: {e}", kind.key()))?;
    }
    for i in 0..n {
        let line = r.next_line(LINE_TIMEOUT)?;
        if line.trim() != "0" {
            return Err(format!(
                "{} connection {i}: count line {line:?}, expected \"0\"",
                kind.key()
            ));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    r.stop()?;
    Ok(n as f64 / secs)
}

/// Start-to-listening (spawn until a connect succeeds, polling every ~50 µs) and
/// SIGTERM-to-exit when idle. Returns (start s, stop s, exit status).
fn measure_start_stop(ctx: &mut Ctx, kind: Kind) -> Result<(f64, f64, i32), String> {
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let t0 = Instant::now();
    let mut r = start_receiver(ctx, kind, port, None, None)?;
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                if let Some(e) = r.procs[0].try_reap() {
                    return Err(format!(
                        "{} exited before listening ({})",
                        kind.key(),
                        describe_status(e.status)
                    ));
                }
                if t0.elapsed() > LISTEN_TIMEOUT {
                    return Err(format!(
                        "{} not listening after {LISTEN_TIMEOUT:?}",
                        kind.key()
                    ));
                }
                thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(format!("connect {addr}: {e}")),
        }
    };
    let start = t0.elapsed().as_secs_f64();
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    read_greeting(&mut s).map_err(|e| format!("{}: {e}", kind.key()))?;
    drop(s);
    let line = r.next_line(LINE_TIMEOUT)?;
    if line.trim() != "0" {
        return Err(format!(
            "{}: count line {line:?}, expected \"0\"",
            kind.key()
        ));
    }
    // Let it settle back into its idle wait.
    thread::sleep(Duration::from_millis(20));
    let t1 = Instant::now();
    r.procs[0].signal(libc::SIGTERM);
    let exit = r.procs[0].wait_timeout(EXIT_TIMEOUT);
    let stop = t1.elapsed().as_secs_f64();
    let exit = exit.ok_or_else(|| {
        format!(
            "{} still running {EXIT_TIMEOUT:?} after SIGTERM",
            kind.key()
        )
    })?;
    r.stop()?;
    Ok((start, stop, exit.status))
}

struct IdleResult {
    conns: usize,
    idle_secs: f64,
    rss_base_kib: u64,
    rss_kib: u64,
    cpu_secs: f64,
    wakeups: u64,
    exit_status: i32,
}

/// Many concurrent idle connections to the server: RSS, CPU while idle, then each
/// sends a few bytes and closes and every count must come back right.
fn measure_idle(
    ctx: &mut Ctx,
    n: usize,
    idle: Duration,
    buf: &AlignedBuf,
) -> Result<IdleResult, String> {
    let cfg = ctx.tmp.join("idle.toml");
    // One client address holds all n: lift the per-source cap (default 16).
    let text = format!(
        "max_connections = {}\nmax_per_source = 0\nbacklog = 4096\nidle_timeout = \"120s\"\n",
        n + 16
    );
    fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let r = spawn_receiver(ctx, Kind::Server, Some(&cfg), None)?;
    thread::sleep(Duration::from_millis(50));
    let rss_base_kib = r.procs[0].status_kib("VmRSS").unwrap_or(0);
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(r.addr()).map_err(|e| format!("idle connection {i}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        read_greeting(&mut s).map_err(|e| format!("idle connection {i}: {e}"))?;
        streams.push(s);
    }
    thread::sleep(Duration::from_millis(100));
    let p = &r.procs[0];
    let cpu0 = p.cpu_ns().unwrap_or(0);
    let w0 = p.wakeups();
    let t0 = Instant::now();
    thread::sleep(idle);
    let cpu1 = p.cpu_ns().unwrap_or(0);
    let w1 = p.wakeups();
    let idle_secs = t0.elapsed().as_secs_f64();
    let rss_kib = p.status_kib("VmRSS").unwrap_or(0);
    let mut expected = Vec::with_capacity(n);
    for (i, s) in streams.iter_mut().enumerate() {
        let k = 1 + i % 97;
        s.write_all(&buf.as_slice()[..k])
            .map_err(|e| format!("idle connection {i}: send: {e}"))?;
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("idle connection {i}: shutdown: {e}"))?;
        expected.push(k.to_string());
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .map_err(|e| format!("idle connection {i}: waiting for close: {e}"))?;
    }
    drop(streams);
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(r.next_line(LINE_TIMEOUT)?.trim().to_string());
    }
    expected.sort();
    got.sort();
    if got != expected {
        let wrong: Vec<&String> = got
            .iter()
            .filter(|l| !expected.contains(l))
            .take(5)
            .collect();
        return Err(format!(
            "idle test: the {n} count lines differ from what was sent (e.g. {wrong:?})"
        ));
    }
    let exits = r.stop()?;
    Ok(IdleResult {
        conns: n,
        idle_secs,
        rss_base_kib,
        rss_kib,
        cpu_secs: cpu1.saturating_sub(cpu0) as f64 / 1e9,
        wakeups: w1.saturating_sub(w0),
        exit_status: exits[0].status,
    })
}

// ---------------------------------------------------------------------------------
// Saving rounds: server --save-dir against the plain splice receiver
// ---------------------------------------------------------------------------------

/// The receivers of the saving rounds, in table order: the server, the plain receiver
/// (index 1, what the ratios compare with), and with `--plain-window` the windowed one.
fn save_kinds(opts: &Opts) -> Vec<Kind> {
    let mut kinds = vec![Kind::ServerSave, Kind::Plain];
    if opts.plain_window > 0 {
        kinds.push(Kind::PlainWindowed);
    }
    kinds
}
/// A greeting probe connects this often during a save.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// How long an upload waits at most for its minimum number of probes.
const PROBE_WAIT: Duration = Duration::from_secs(60);

/// What one file system's saving rounds measured.
struct SaveFsResults {
    fs: SaveFs,
    base: PathBuf,
    /// The mount: type, device, options (e.g. ext4's `discard`).
    mount: String,
    /// The receivers (see [`save_kinds`]).
    kinds: Vec<Kind>,
    /// Per save size, per receiver: throughput MB/s, CPU s/GiB, peak RSS MiB, and the
    /// untimed check + delete + syncfs after each transfer, s.
    tput: Vec<Vec<Series>>,
    cpu: Vec<Vec<Series>>,
    rss: Vec<Vec<Series>>,
    cleanup: Vec<Vec<Series>>,
    /// The receiver's context switches per MiB (all its threads).
    switches: Vec<Vec<Series>>,
    /// Per save size, the untimed warm-up transfer (plain receiver): MB/s, CPU s/GiB.
    warmup: Vec<Option<(f64, f64)>>,
    /// Per save size, the transfers in run order: (round, receiver index, MB/s, CPU
    /// s/GiB).
    order: Vec<Vec<(usize, usize, f64, f64)>>,
    /// Greeting latency against the saving server while idle, and during an upload.
    idle: Option<Latency>,
    during: Option<Latency>,
}

/// Greeting probes: connect, read `accio\r\n`, close, every PROBE_EVERY.
struct Latency {
    /// The upload they ran alongside: size and MB/s (none: the server was idle).
    upload: Option<(u64, f64)>,
    /// connect() → full greeting, ms, per probe.
    ms: Vec<f64>,
    /// The server's VmHWM at the end.
    rss_kib: u64,
    /// The server's main thread (the serving loop) while probing, from
    /// /proc/PID/task/PID/schedstat: time it waited on a run queue for a CPU (ns), and
    /// how many times it was given one.
    runq_wait_ns: u64,
    runs: u64,
    /// The serving loop's state sampled every STATE_EVERY while probing: samples per
    /// state letter (R running or runnable, S sleeping, D uninterruptible), and where
    /// it waited (wchan) in the D samples.
    states: Vec<(char, u64)>,
    d_wchan: Vec<(String, u64)>,
}

/// How often the loop thread's state is sampled during the greeting probes.
const STATE_EVERY: Duration = Duration::from_millis(2);

/// Samples per state letter, and per wchan of the D samples.
type States = (Vec<(char, u64)>, Vec<(String, u64)>);

/// Samples the state of thread `pid` of process `pid` (its main thread) until `stop`.
fn state_sampler(
    pid: libc::pid_t,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<States> {
    use std::collections::BTreeMap;
    thread::spawn(move || {
        let mut states: BTreeMap<char, u64> = BTreeMap::new();
        let mut wchan: BTreeMap<String, u64> = BTreeMap::new();
        let stat = format!("/proc/{pid}/task/{pid}/stat");
        let wchan_path = format!("/proc/{pid}/task/{pid}/wchan");
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let state = fs::read_to_string(&stat)
                .ok()
                .and_then(|t| t.rsplit_once(')')?.1.trim_start().chars().next());
            if let Some(c) = state {
                *states.entry(c).or_default() += 1;
                if c == 'D' {
                    let w = fs::read_to_string(&wchan_path).unwrap_or_default();
                    *wchan.entry(w.trim().to_string()).or_default() += 1;
                }
            }
            thread::sleep(STATE_EVERY);
        }
        (states.into_iter().collect(), wchan.into_iter().collect())
    })
}

/// (run time ns, run-queue wait ns, timeslices) of one thread.
fn schedstat(pid: libc::pid_t) -> Option<(u64, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// Nearest-rank percentile of a sorted, non-empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// (p50, p99, max) of probe times.
fn latency_stats(ms: &[f64]) -> Option<(f64, f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    Some((percentile(&v, 50.0), percentile(&v, 99.0), v[v.len() - 1]))
}

/// For each file system: for each size, `save_rounds` rounds of server-save and plain
/// (alternating which goes first), then greeting probes against the idle saving
/// server and during an upload of the largest size.
fn run_saving(opts: &Opts, ctx: &mut Ctx, buf: &AlignedBuf, out: &mut Vec<SaveFsResults>) {
    for &fs_kind in &opts.save_fs {
        let base = match fs_kind {
            SaveFs::Tmpfs => ctx.save_base.as_ref().map(|b| b.0.clone()),
            SaveFs::Disk => ctx.disk_base.as_ref().map(|b| b.0.clone()),
        };
        let Some(base) = base else {
            continue;
        };
        let kinds = save_kinds(opts);
        let empty = || vec![vec![Vec::new(); kinds.len()]; opts.save_sizes.len()];
        let mut fr = SaveFsResults {
            kinds: kinds.clone(),
            fs: fs_kind,
            mount: mount_of(&base),
            base: base.clone(),
            tput: empty(),
            cpu: empty(),
            rss: empty(),
            cleanup: empty(),
            switches: empty(),
            order: vec![Vec::new(); opts.save_sizes.len()],
            warmup: vec![None; opts.save_sizes.len()],
            idle: None,
            during: None,
        };
        syncfs(&base);
        let mut largest = None;
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            let room = free_bytes(&base).unwrap_or(0);
            if size.saturating_add(256 << 20) > room {
                ctx.notes.push(format!(
                    "skipped saving {} on {}: {} has {} MiB free",
                    size_name(size),
                    fs_kind.key(),
                    base.display(),
                    room >> 20
                ));
                continue;
            }
            largest = largest.max(Some(size));
            status_line(
                &format!(
                    "saving {} on {}, {} rounds",
                    size_name(size),
                    fs_kind.key(),
                    opts.save_rounds
                ),
                true,
            );
            if opts.save_warmup {
                // The first transfer after a while writes into memory the VM has handed
                // back to the host (see BENCHMARKS.md): it would penalise whichever
                // receiver goes first.
                status_line(
                    &format!("saving {} on {}: warm-up", size_name(size), fs_kind.key()),
                    false,
                );
                match measure_transfer(ctx, Kind::Plain, size, buf, opts.pin, false, Some(&base)) {
                    Ok(s) => {
                        fr.warmup[si] =
                            Some((size as f64 / s.secs / 1e6, s.cpu_secs / (size as f64 / GIB)))
                    }
                    Err(e) => ctx.fail(format!("saving on {} (warm-up): {e}", fs_kind.key())),
                }
            }
            for round in 0..opts.save_rounds {
                let mut order: Vec<usize> = (0..kinds.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for ki in order {
                    let kind = kinds[ki];
                    if !opts.save_pause.is_zero() {
                        thread::sleep(opts.save_pause);
                    }
                    let what = format!(
                        "saving {} on {} round {}/{}: {}",
                        size_name(size),
                        fs_kind.key(),
                        round + 1,
                        opts.save_rounds,
                        kind.key()
                    );
                    status_line(&what, false);
                    match measure_transfer(ctx, kind, size, buf, opts.pin, opts.smoke, Some(&base))
                    {
                        Ok(s) => {
                            let mbps = size as f64 / s.secs / 1e6;
                            let cpu = s.cpu_secs / (size as f64 / GIB);
                            fr.tput[si][ki].push((round, mbps));
                            fr.cpu[si][ki].push((round, cpu));
                            fr.rss[si][ki].push((round, s.rss_kib as f64 / 1024.0));
                            fr.cleanup[si][ki].push((round, s.cleanup_secs));
                            let mib = size as f64 / (1 << 20) as f64;
                            fr.switches[si][ki].push((round, s.switches as f64 / mib));
                            fr.order[si].push((round, ki, mbps, cpu));
                        }
                        Err(e) => ctx.fail(format!("saving on {}: {e}", fs_kind.key())),
                    }
                }
            }
        }
        status_line(
            &format!(
                "greeting latency against the saving server on {}",
                fs_kind.key()
            ),
            true,
        );
        match measure_latency(ctx, &base, None, opts.idle_probes, buf, opts.smoke) {
            Ok(l) => fr.idle = Some(l),
            Err(e) => ctx.fail(format!("greeting probes (idle, {}): {e}", fs_kind.key())),
        }
        if let Some(size) = largest {
            match measure_latency(ctx, &base, Some(size), opts.min_probes, buf, opts.smoke) {
                Ok(l) => fr.during = Some(l),
                Err(e) => ctx.fail(format!(
                    "greeting probes during a {} upload ({}): {e}",
                    size_name(size),
                    fs_kind.key()
                )),
            }
        }
        out.push(fr);
    }
    status_line("", false);
}

/// Greeting latency against `server --save-dir` (a fresh directory under `base`): a
/// probe thread connects every PROBE_EVERY, times connect() → full greeting and
/// closes. With `upload`, it runs while one client sends that many bytes (the upload
/// holds its close until `probes` probes are done, and probing goes on until the
/// server closed the upload, i.e. through its fsync); without, until `probes` probes.
/// Every count line and every file is checked: the upload's, and the empty one each
/// probe leaves.
fn measure_latency(
    ctx: &mut Ctx,
    base: &Path,
    upload: Option<u64>,
    probes: usize,
    buf: &AlignedBuf,
    whole_check: bool,
) -> Result<Latency, String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // The probes stand for other clients, which would come from other addresses: here
    // they share 127.0.0.1 with the upload, and a probe that closed stays counted
    // against max_per_source (default 16) until its empty file is fsynced, which on a
    // busy disk takes long enough for 16 to pile up. Lift the cap.
    let cfg = ctx.tmp.join("latency.toml");
    fs::write(&cfg, "max_per_source = 0\n").map_err(|e| format!("{}: {e}", cfg.display()))?;
    let mut r = spawn_receiver(ctx, Kind::ServerSave, Some(&cfg), Some(base))?;
    let addr = r.addr();
    let sched0 = schedstat(r.procs[0].pid());
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = state_sampler(r.procs[0].pid(), stop.clone());
    let done = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (go, stop, done) = (go.clone(), stop.clone(), done.clone());
        thread::spawn(move || -> Result<Vec<f64>, String> {
            while !go.load(Ordering::Acquire) {
                if stop.load(Ordering::Acquire) {
                    return Ok(Vec::new());
                }
                thread::sleep(Duration::from_micros(100));
            }
            let mut ms = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Acquire) {
                let k = ms.len() + 1;
                let t0 = Instant::now();
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map_err(|e| format!("probe {k}: connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| format!("probe {k}: SO_RCVTIMEO: {e}"))?;
                read_greeting(&mut s).map_err(|e| format!("probe {k}: {e}"))?;
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
                drop(s);
                done.fetch_add(1, Ordering::Release);
                next += PROBE_EVERY;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            Ok(ms)
        })
    };
    let wait_probes = |n: usize| -> Result<(), String> {
        let t0 = Instant::now();
        while done.load(Ordering::Acquire) < n {
            if prober.is_finished() {
                return Err("the probe thread ended early".to_string());
            }
            if t0.elapsed() > PROBE_WAIT {
                return Err(format!("fewer than {n} probes after {PROBE_WAIT:?}"));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    let uploaded = (|| -> Result<Option<f64>, String> {
        let Some(size) = upload else {
            go.store(true, Ordering::Release);
            wait_probes(probes)?;
            return Ok(None);
        };
        let t0 = Instant::now();
        let mut s = connect(addr)?;
        set_cubic(&s);
        read_greeting(&mut s)?;
        // The upload is connection 1: probing starts once it has been greeted.
        go.store(true, Ordering::Release);
        let data = buf.as_slice();
        let mut left = size;
        while left > 0 {
            let n = left.min(data.len() as u64) as usize;
            s.write_all(&data[..n])
                .map_err(|e| format!("upload: send ({} of {size} sent): {e}", size - left))?;
            left -= n as u64;
        }
        wait_probes(probes)?;
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("upload: shutdown(SHUT_WR): {e}"))?;
        let mut sink = [0u8; 64];
        loop {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("upload: waiting for the close: {e}")),
            }
        }
        Ok(Some(size as f64 / t0.elapsed().as_secs_f64() / 1e6))
    })();
    stop.store(true, Ordering::Release);
    let sched1 = schedstat(r.procs[0].pid());
    let (states, d_wchan) = sampler.join().unwrap_or_default();
    let ms = prober
        .join()
        .map_err(|_| "the probe thread panicked".to_string())??;
    let mbps = uploaded?;
    // Count lines: the upload's size once, "0" for every probe (in any order).
    let mut zeros = 0;
    let mut sized = 0;
    for _ in 0..ms.len() + usize::from(upload.is_some()) {
        let line = r.next_line(LINE_TIMEOUT)?;
        match line.trim() {
            "0" => zeros += 1,
            l if upload.is_some_and(|u| l == u.to_string()) => sized += 1,
            _ => return Err(format!("unexpected count line {line:?}")),
        }
    }
    if zeros != ms.len() || sized != usize::from(upload.is_some()) {
        return Err(format!(
            "count lines: {zeros} × 0 and {sized} × the upload, expected {} and {}",
            ms.len(),
            usize::from(upload.is_some())
        ));
    }
    let rss_kib = r.procs[0].status_kib("VmHWM").unwrap_or(0);
    let saved = r.save_dir.take();
    r.stop()?;
    if let Some(dir) = saved {
        let files = ms.len() + usize::from(upload.is_some());
        let mut expected: Vec<String> = (1..=files).map(|n| format!("{n}.file")).collect();
        expected.sort();
        let names = dir_names(&dir.0)?;
        if names != expected {
            return Err(format!(
                "{} holds {} entries, expected 1.file … {files}.file",
                dir.0.display(),
                names.len()
            ));
        }
        for n in 1..=files {
            let path = dir.0.join(format!("{n}.file"));
            match upload {
                Some(size) if n == 1 => check_file(&path, size, buf, whole_check)?,
                _ => check_file(&path, 0, buf, true)?,
            }
        }
        ctx.saving_checked += files;
        dir.remove()?;
        syncfs(base);
    }
    let (runq_wait_ns, runs) = match (sched0, sched1) {
        (Some(a), Some(b)) => (b.1.saturating_sub(a.1), b.2.saturating_sub(a.2)),
        _ => (0, 0),
    };
    Ok(Latency {
        upload: upload.zip(mbps),
        ms,
        rss_kib,
        runq_wait_ns,
        runs,
        states,
        d_wchan,
    })
}

// ---------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------

struct Stats {
    med: f64,
    min: f64,
    max: f64,
}

fn stats(v: &[f64]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    let med = if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    };
    Some(Stats {
        med,
        min: s[0],
        max: s[s.len() - 1],
    })
}

/// Three significant digits, at most three decimals.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: &Option<Stats>) -> String {
    match s {
        Some(s) if s.min == s.max => num(s.med),
        Some(s) => format!("{} ({}–{})", num(s.med), num(s.min), num(s.max)),
        None => "–".to_string(),
    }
}

/// Ratio of medians, and the spread of the per-round ratios (rounds are paired).
fn ratio_cell(v: &[(usize, f64)], reference: &[(usize, f64)]) -> String {
    let med = |x: &[(usize, f64)]| stats(&x.iter().map(|p| p.1).collect::<Vec<_>>()).map(|s| s.med);
    let (Some(a), Some(b)) = (med(v), med(reference)) else {
        return "–".to_string();
    };
    if b == 0.0 {
        return "–".to_string();
    }
    let per_round: Vec<f64> = v
        .iter()
        .filter_map(|&(r, x)| {
            reference
                .iter()
                .find(|p| p.0 == r)
                .filter(|p| p.1 > 0.0)
                .map(|p| x / p.1)
        })
        .collect();
    match stats(&per_round) {
        Some(s) if per_round.len() > 1 => {
            format!("{}× ({}–{})", num(a / b), num(s.min), num(s.max))
        }
        _ => format!("{}×", num(a / b)),
    }
}

fn machine_facts() -> Vec<String> {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mtu = fs::read_to_string("/sys/class/net/lo/mtu")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cc = fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    vec![
        format!("date: {}", utc_now()),
        format!(
            "machine: `nproc` {nproc}, CPU {cpu}, kernel {kernel}, loopback MTU {mtu}, default congestion control {cc}"
        ),
    ]
}

/// Busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq), in seconds.
/// irq and softirq count because a task's system time includes the softirq work done
/// in its context (loopback TCP runs there), which /proc/stat books apart.
fn busy_cpu_secs() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let ticks: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// user + system CPU of this process and its reaped children, in seconds.
fn own_cpu_secs() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .iter()
        .map(|&who| {
            // SAFETY: rusage is plain data.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut ru) };
            let s = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            s(ru.ru_utime) + s(ru.ru_stime)
        })
        .sum()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn utc_now() -> String {
    // SAFETY: time/gmtime_r with valid out-parameters.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&t, &mut tm);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        )
    }
}

fn in_path(prog: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|d| d.join(prog).is_file()))
}

/// The real interpreter behind `python3` (sys.executable).
fn python_executable() -> Option<PathBuf> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let (ok, stdout) = probe(cmd)?;
    let path = PathBuf::from(stdout.trim());
    (ok && path.is_file()).then_some(path)
}

/// Runs a short probe command with a timeout: (exited 0, stdout + stderr).
fn probe(mut cmd: Command) -> Option<(bool, String)> {
    let path = env::temp_dir().join(format!("accio-probe-{}", std::process::id()));
    let out = fs::File::create(&path).ok()?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().ok()?)
        .stderr(out);
    let mut p = Proc::spawn("probe".to_string(), &mut cmd).ok()?;
    let exit = p.wait_timeout(EXIT_TIMEOUT);
    let text = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::remove_file(&path);
    Some((exit.is_some_and(|e| exited_zero(e.status)), text))
}

fn raise_nofile() -> u64 {
    // SAFETY: valid out-parameter.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        }
        rl.rlim_cur
    }
}

// ---------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__reference") {
        return reference_main(args.get(1).map(String::as_str).unwrap_or(""));
    }
    if args.first().map(String::as_str) == Some("__plain") {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        return plain_main(arg(1), arg(2), arg(3));
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ERROR: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

/// (round, value): rounds are paired across receivers, for the per-round ratios.
type Series = Vec<(usize, f64)>;

fn median(v: &Series) -> Option<f64> {
    stats(&v.iter().map(|p| p.1).collect::<Vec<_>>()).map(|s| s.med)
}

fn stats_cell(v: &Series) -> String {
    cell(&stats(&v.iter().map(|p| p.1).collect::<Vec<_>>()))
}

/// Everything one run measured.
struct Results {
    /// Transfer receivers, in table order.
    kinds: Vec<Kind>,
    /// Per size, per receiver: throughput MB/s, CPU s/GiB, peak RSS MiB.
    tput: Vec<Vec<Series>>,
    cpu: Vec<Vec<Series>>,
    rss: Vec<Vec<Series>>,
    /// The sender's CPU s/GiB.
    sender: Vec<Vec<Series>>,
    /// The receiver's context switches per MiB.
    switches: Vec<Vec<Series>>,
    transfers_checked: usize,
    /// Receivers that serve many connections (socat and nc serve one).
    multi: Vec<Kind>,
    /// Per receiver in `multi`: connections/s, start → listening ms, SIGTERM → exit ms.
    rates: Vec<Series>,
    starts: Vec<Series>,
    stops: Vec<Series>,
    idle: Option<IdleResult>,
    /// The saving rounds, per file system.
    saving: Vec<SaveFsResults>,
    congestion: String,
    load_start: String,
    /// (busy CPU of the whole machine, CPU of this process and its children) at start.
    machine_start: (f64, f64),
    nofile: u64,
}

fn run(opts: &Opts) -> Result<bool, String> {
    let started = Instant::now();
    // Precise sleeps when polling for start-up and exit.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let nofile = raise_nofile();
    let mut ctx = setup(opts)?;
    let buf = AlignedBuf::new(CHUNK);
    let congestion = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| {
        let s = TcpStream::connect(l.local_addr()?)?;
        Ok(set_cubic(&s))
    }) {
        Ok(cc) => cc,
        Err(e) => format!("unknown ({e})"),
    };
    let kinds = ctx.available.clone();
    // The extras (connection rate, start/stop) are about serving, not saving.
    let multi: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|&k| !k.one_shot() && k != Kind::ServerSave)
        .collect();
    let per_size = vec![vec![Vec::new(); kinds.len()]; opts.sizes.len()];
    let mut res = Results {
        tput: per_size.clone(),
        cpu: per_size.clone(),
        rss: per_size.clone(),
        sender: per_size.clone(),
        switches: per_size,
        kinds,
        transfers_checked: 0,
        rates: vec![Vec::new(); multi.len()],
        starts: vec![Vec::new(); multi.len()],
        stops: vec![Vec::new(); multi.len()],
        multi,
        idle: None,
        saving: Vec::new(),
        congestion,
        load_start: loadavg(),
        machine_start: (busy_cpu_secs(), own_cpu_secs()),
        nofile,
    };
    if opts.transfers {
        run_transfers(opts, &mut ctx, &buf, &mut res);
    }
    if opts.extras {
        run_extras(opts, &mut ctx, &buf, &mut res);
    }
    // Last: gigabytes written to the disk must not disturb the counting figures.
    if opts.saving {
        let mut saving = Vec::new();
        run_saving(opts, &mut ctx, &buf, &mut saving);
        res.saving = saving;
    }
    let out = report(opts, &ctx, &res, started);
    let _ = io::stdout().write_all(out.as_bytes());
    let _ = io::stdout().flush();
    if ctx.failures.is_empty() {
        let _ = fs::remove_dir_all(&ctx.tmp);
    } else {
        let logs = ctx.log_dir.as_ref().unwrap_or(&ctx.tmp);
        eprintln!("server logs kept in {}", logs.display());
    }
    Ok(ctx.failures.is_empty())
}

/// Finds the server binary, the peers that are installed, a scratch directory.
fn setup(opts: &Opts) -> Result<Ctx, String> {
    let server = env::var_os("ACCIO_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_server")));
    if !server.is_file() {
        return Err(format!("server binary {} does not exist", server.display()));
    }
    let tmp = env::temp_dir().join(format!("accio-bench-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Some(dir) = &opts.log_dir {
        fs::create_dir_all(dir).map_err(|e| format!("--log-dir {}: {e}", dir.display()))?;
    }
    // Run copies, so that a rebuild during the run cannot mix two builds in one table.
    let copy = |from: &Path, name: &str| {
        let to = tmp.join(name);
        fs::copy(from, &to)
            .map(|_| to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), tmp.display()))
    };
    let self_exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut ctx = Ctx {
        server: copy(&server, "server")?,
        server_origin: server,
        python_script: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/textbook_server.py"),
        python: PathBuf::from("python3"),
        self_exe: copy(&self_exe, "throughput")?,
        tmp,
        available: Vec::new(),
        notes: Vec::new(),
        failures: Vec::new(),
        server_logs: 0,
        save_base: None,
        save_dirs: 0,
        saves_checked: 0,
        disk_base: None,
        saving_checked: 0,
        plain_window: opts.plain_window,
        log_dir: opts.log_dir.clone(),
    };
    for &k in &opts.kinds {
        let missing = match k {
            Kind::Reference | Kind::Server | Kind::Plain | Kind::PlainWindowed => None,
            Kind::ServerSave => match save_base() {
                Ok(base) => {
                    ctx.save_base = Some(base);
                    None
                }
                Err(why) => Some(why),
            },
            Kind::Socat => (!in_path("socat"))
                .then(|| "socat is not installed (apt-get install -y socat)".to_string()),
            Kind::Nc => {
                let mut nc = Command::new("nc");
                nc.arg("-h");
                let openbsd = probe(nc).is_some_and(|(_, text)| text.contains("OpenBSD"));
                (!openbsd).then(|| {
                    "OpenBSD nc is not installed (apt-get install -y netcat-openbsd)".to_string()
                })
            }
            Kind::Python => match python_executable() {
                Some(py) => {
                    ctx.python = py;
                    None
                }
                None => Some("python3 is not installed".to_string()),
            },
        };
        match missing {
            Some(why) => ctx.notes.push(format!("skipped {}: {why}", k.key())),
            None if k.one_shot() && !in_path("wc") => ctx
                .notes
                .push(format!("skipped {}: wc is not installed", k.key())),
            None => ctx.available.push(k),
        }
    }
    if opts.saving {
        for &f in &opts.save_fs {
            let made = match f {
                SaveFs::Tmpfs if ctx.save_base.is_some() => Ok(()),
                SaveFs::Tmpfs => save_base().map(|b| ctx.save_base = Some(b)),
                SaveFs::Disk => disk_base(&opts.disk_dir).map(|b| ctx.disk_base = Some(b)),
            };
            if let Err(why) = made {
                ctx.notes
                    .push(format!("skipped the saving rounds on {}: {why}", f.key()));
            }
        }
    }
    Ok(ctx)
}

/// For each size, `rounds` rounds; in each round every receiver once, the order
/// reversed every other round so that drift hits all of them alike.
fn run_transfers(opts: &Opts, ctx: &mut Ctx, buf: &AlignedBuf, res: &mut Results) {
    let n = res.kinds.len();
    for (si, &size) in opts.sizes.iter().enumerate() {
        status_line(
            &format!("transfers of {}, {} rounds", size_name(size), opts.rounds),
            true,
        );
        // server-save needs room for one file (each is deleted after its check).
        let room = ctx
            .save_base
            .as_ref()
            .and_then(|b| free_bytes(&b.0))
            .unwrap_or(0);
        let save_fits = size.saturating_add(256 << 20) <= room;
        if res.kinds.contains(&Kind::ServerSave) && !save_fits {
            ctx.notes.push(format!(
                "skipped server-save at {}: /dev/shm has {} MiB free",
                size_name(size),
                room >> 20
            ));
        }
        for round in 0..opts.rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for ki in order {
                let kind = res.kinds[ki];
                if kind == Kind::ServerSave && !save_fits {
                    continue;
                }
                let what = format!("{} round {}/{}", size_name(size), round + 1, opts.rounds);
                status_line(&format!("{what}: {}", kind.key()), false);
                match measure_transfer(ctx, kind, size, buf, opts.pin, opts.smoke, None) {
                    Ok(s) => {
                        res.transfers_checked += 1;
                        res.tput[si][ki].push((round, size as f64 / s.secs / 1e6));
                        res.cpu[si][ki].push((round, s.cpu_secs / (size as f64 / GIB)));
                        res.rss[si][ki].push((round, s.rss_kib as f64 / 1024.0));
                        let gib = size as f64 / GIB;
                        res.sender[si][ki].push((round, s.sender_cpu_secs / gib));
                        let mib = size as f64 / (1 << 20) as f64;
                        res.switches[si][ki].push((round, s.switches as f64 / mib));
                    }
                    Err(e) => ctx.fail(e),
                }
            }
        }
    }
    status_line("", false);
}

/// Connection rate, start and stop latency (interleaved), then the idle test.
fn run_extras(opts: &Opts, ctx: &mut Ctx, buf: &AlignedBuf, res: &mut Results) {
    let what = format!(
        "sequential connection rate, {} rounds of {}",
        opts.conn_rounds, opts.conns
    );
    status_line(&what, true);
    for round in 0..opts.conn_rounds {
        for (ki, &k) in res.multi.iter().enumerate() {
            let what = format!("connection rate round {}/{}", round + 1, opts.conn_rounds);
            status_line(&format!("{what}: {}", k.key()), false);
            match measure_conn_rate(ctx, k, opts.conns) {
                Ok(r) => res.rates[ki].push((round, r)),
                Err(e) => ctx.fail(e),
            }
        }
    }
    status_line(
        &format!("start and stop latency, {} rounds", opts.start_rounds),
        true,
    );
    for round in 0..opts.start_rounds {
        for (ki, &k) in res.multi.iter().enumerate() {
            let what = format!("start/stop round {}/{}", round + 1, opts.start_rounds);
            status_line(&format!("{what}: {}", k.key()), false);
            match measure_start_stop(ctx, k) {
                Ok((start, stop, status)) => {
                    res.starts[ki].push((round, start * 1e3));
                    res.stops[ki].push((round, stop * 1e3));
                    if k == Kind::Server && !exited_zero(status) {
                        ctx.fail(format!(
                            "server ended with {} after SIGTERM (the contract says exit 0)",
                            describe_status(status)
                        ));
                    }
                }
                Err(e) => ctx.fail(e),
            }
        }
    }
    let what = format!(
        "{} concurrent idle connections to the server",
        opts.idle_conns
    );
    status_line(&what, true);
    match measure_idle(ctx, opts.idle_conns, opts.idle_time, buf) {
        Ok(r) => {
            if !exited_zero(r.exit_status) {
                ctx.fail(format!(
                    "server ended with {} after SIGTERM (idle test)",
                    describe_status(r.exit_status)
                ));
            }
            res.idle = Some(r);
        }
        Err(e) => ctx.fail(e),
    }
}

fn exited_zero(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The Markdown report.
fn report(opts: &Opts, ctx: &Ctx, res: &Results, started: Instant) -> String {
    let mut w = String::new();
    let mode = if opts.smoke { "smoke run" } else { "full run" };
    let _ = writeln!(w, "## accio-server throughput benchmark ({mode})\n");
    for fact in machine_facts() {
        let _ = writeln!(w, "- {fact}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let others = (busy_cpu_secs() - res.machine_start.0) - (own_cpu_secs() - res.machine_start.1);
    let capacity = elapsed * thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let _ = writeln!(
        w,
        "- other processes used {:.1} CPU-s during the run's {elapsed:.0} s ({:.0} % of the \
         machine{}); load average at start {}, at end {} (this run itself keeps about 2 busy)",
        others.max(0.0),
        (others.max(0.0) / capacity * 100.0),
        if others > 0.05 * capacity {
            ": the machine was shared, numbers are scattered"
        } else {
            ""
        },
        res.load_start,
        loadavg()
    );
    let _ = writeln!(
        w,
        "- sender: this process, page-aligned 1 MiB buffer, congestion control on its \
         sockets: {}; {} interleaved rounds per size, a fresh receiver process per transfer{}",
        res.congestion,
        opts.rounds,
        if opts.pin {
            "; sender pinned to CPU 0, receiver to CPU 1"
        } else {
            "; not pinned"
        }
    );
    let logs = ctx.log_dir.as_ref().unwrap_or(&ctx.tmp);
    let _ = writeln!(
        w,
        "- server: `{}`; RLIMIT_NOFILE {}; its stderr (the per-connection log) goes to files \
         in `{}`, {}",
        ctx.server_origin.display(),
        res.nofile,
        logs.display(),
        mount_of(logs)
    );
    if opts.transfers {
        report_transfers(&mut w, opts, ctx, res);
    }
    if opts.extras {
        report_extras(&mut w, opts, res);
    }
    if opts.saving {
        report_saving(&mut w, opts, ctx, res);
    }
    write_targets(&mut w, opts, res);
    for n in &ctx.notes {
        let _ = writeln!(w, "\nNote: {n}");
    }
    if opts.smoke {
        let _ = writeln!(
            w,
            "\nSmoke run: small sizes and few rounds; its numbers and targets mean nothing."
        );
    }
    let _ = writeln!(w, "\nRun time {:.1} s.", started.elapsed().as_secs_f64());
    if !ctx.failures.is_empty() {
        let _ = writeln!(w, "\n### FAILURES\n");
        for f in &ctx.failures {
            let _ = writeln!(w, "- {f}");
        }
    }
    w
}

/// The transfer table.
fn report_transfers(w: &mut String, opts: &Opts, ctx: &Ctx, res: &Results) {
    let _ = writeln!(
        w,
        "\nCells: median (min–max) over the rounds. × ref: ratio of the medians to the \
         reference's (min–max of the per-round ratios).\n"
    );
    let _ = writeln!(
        w,
        "| size | receiver | throughput MB/s | × ref | CPU s/GiB | × ref | peak RSS MiB | × ref \
         | sender CPU s/GiB | receiver sleeps/MiB |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let ri = res.kinds.iter().position(|&k| k == Kind::Reference);
    for (si, &size) in opts.sizes.iter().enumerate() {
        for (ki, &k) in res.kinds.iter().enumerate() {
            let _ = write!(w, "| {} | {} ", size_name(size), k.name());
            for metric in [&res.tput, &res.cpu, &res.rss] {
                let v = &metric[si][ki];
                let ratio = match ri {
                    Some(ri) if ri != ki => ratio_cell(v, &metric[si][ri]),
                    _ => String::new(),
                };
                let _ = write!(w, "| {} | {} ", stats_cell(v), ratio);
            }
            let _ = writeln!(
                w,
                "| {} | {} |",
                stats_cell(&res.sender[si][ki]),
                median(&res.switches[si][ki]).map_or("–".to_string(), num)
            );
        }
    }
    let _ = writeln!(
        w,
        "\nEvery transfer's count line was checked: {} correct.",
        res.transfers_checked
    );
    if let Some(base) = &ctx.save_base {
        let _ = writeln!(
            w,
            "\nserver --save-dir: the same binary with `--save-dir` on a fresh directory under \
             `{}` (tmpfs) per transfer, default configuration (fsync on). After each transfer \
             the directory had to hold exactly `1.file` with the bytes sent ({}); {} files \
             checked, then deleted.",
            base.0.display(),
            if opts.smoke {
                "compared whole".to_string()
            } else {
                format!(
                    "compared whole up to {}, above it {SAMPLES} windows of {} KiB",
                    size_name(WHOLE_CHECK_MAX),
                    SAMPLE_LEN >> 10
                )
            },
            ctx.saves_checked
        );
    }
}

/// Connection rate, start/stop, idle connections.
fn report_extras(w: &mut String, opts: &Opts, res: &Results) {
    {
        let _ = writeln!(
            w,
            "\n| test | receiver | median (min–max) | × ref |\n| --- | --- | ---: | ---: |"
        );
        let mri = res.multi.iter().position(|&k| k == Kind::Reference);
        let tests = [
            (
                "sequential connections/s (connect, greeting, close)",
                &res.rates,
            ),
            ("start → listening, ms", &res.starts),
            ("SIGTERM → exit when idle, ms", &res.stops),
        ];
        for (name, data) in tests {
            for (ki, &k) in res.multi.iter().enumerate() {
                let ratio = match mri {
                    Some(ri) if ri != ki => ratio_cell(&data[ki], &data[ri]),
                    _ => String::new(),
                };
                let _ = writeln!(
                    w,
                    "| {name} | {} | {} | {ratio} |",
                    k.name(),
                    stats_cell(&data[ki])
                );
            }
        }
        let _ = writeln!(
            w,
            "\nConnection rate: {} connections per round, {} rounds; start/stop: {} rounds.",
            opts.conns, opts.conn_rounds, opts.start_rounds
        );
        if let Some(r) = &res.idle {
            let _ = writeln!(
                w,
                "\n{} concurrent idle connections to the server: RSS {} MiB (the idle server \
                 before them: {} MiB); CPU while idle for {:.1} s: {:.1} ms, {} wake-ups; all {} \
                 counts right after each sent a few bytes and closed.",
                r.conns,
                num(r.rss_kib as f64 / 1024.0),
                num(r.rss_base_kib as f64 / 1024.0),
                r.idle_secs,
                r.cpu_secs * 1e3,
                r.wakeups,
                r.conns
            );
        }
    }
}

/// The saving rounds: per file system and size, server-save against the plain splice
/// receiver; the rounds in run order; greeting latency.
fn report_saving(w: &mut String, opts: &Opts, ctx: &Ctx, res: &Results) {
    let _ = writeln!(
        w,
        "\n### Saving: server --save-dir against a plain splice receiver\n"
    );
    for fr in &res.saving {
        let _ = writeln!(
            w,
            "- {}: `{}`, {}",
            fr.fs.key(),
            fr.base.display(),
            fr.mount
        );
    }
    let _ = writeln!(
        w,
        "- {} rounds per size and file system{}, the two receivers in alternating order{}, \
         a fresh process and an empty directory per transfer. server: `server --save-dir DIR \
         PORT`, default configuration (fsync on). plain: this program's `__plain DIR PORT` \
         (blocking accept, greeting, splice socket → 1 MiB pipe → `N.file`, fsync, count \
         line, close{}). Throughput: bytes / (connect → the receiver's close, which follows \
         its fsync). After each transfer the file is checked ({}), deleted and the deletion \
         flushed (`syncfs`), outside the timed part: {} files checked.",
        opts.save_rounds,
        if opts.save_warmup {
            " after an untimed warm-up transfer (plain)"
        } else {
            ""
        },
        if opts.save_pause.is_zero() {
            String::new()
        } else {
            format!(", {:.1} s pause before each", opts.save_pause.as_secs_f64())
        },
        if opts.plain_window > 0 {
            format!(
                "; an experiment, plain + windows: the same, pushing written pages out with \
                 sync_file_range in {} windows and waiting for the two before, as the server \
                 does",
                size_name(opts.plain_window)
            )
        } else {
            String::new()
        },
        if opts.smoke {
            "length and whole content".to_string()
        } else {
            format!(
                "length; content whole up to {}, above it {SAMPLES} windows of {} KiB",
                size_name(WHOLE_CHECK_MAX),
                SAMPLE_LEN >> 10
            )
        },
        ctx.saving_checked
    );
    let _ = writeln!(
        w,
        "\nCells: median (min–max) over the rounds. × plain: ratio of the medians (min–max of \
         the per-round ratios).\n\n\
         | file system | size | receiver | throughput MB/s | × plain | CPU s/GiB | sleeps/MiB \
         | peak RSS MiB | check + delete + syncfs, s |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            if fr.tput[si].iter().all(Vec::is_empty) {
                continue;
            }
            for (ki, &k) in fr.kinds.iter().enumerate() {
                let name = match k {
                    Kind::ServerSave => "**server --save-dir**",
                    k => k.name(),
                };
                let ratio = if ki != 1 {
                    ratio_cell(&fr.tput[si][ki], &fr.tput[si][1])
                } else {
                    String::new()
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {ratio} | {} | {} | {} | {} |",
                    fr.fs.key(),
                    size_name(size),
                    name,
                    stats_cell(&fr.tput[si][ki]),
                    stats_cell(&fr.cpu[si][ki]),
                    median(&fr.switches[si][ki]).map_or("–".to_string(), num),
                    stats_cell(&fr.rss[si][ki]),
                    stats_cell(&fr.cleanup[si][ki]),
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "\nEvery saving transfer in run order: MB/s (receiver CPU s/GiB); s = server, p = \
         plain, w = plain with windows; rounds separated by `|`; the untimed warm-up \
         transfer first.\n"
    );
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            if fr.order[si].is_empty() {
                continue;
            }
            let mut line = String::new();
            if let Some((mbps, cpu)) = fr.warmup[si] {
                let _ = write!(line, " (warm-up: p {} ({})) ‖", num(mbps), num(cpu));
            }
            let mut last_round = None;
            for &(round, ki, mbps, cpu) in &fr.order[si] {
                if last_round.is_some_and(|r| r != round) {
                    line.push_str(" |");
                }
                last_round = Some(round);
                let _ = write!(
                    line,
                    " {} {} ({})",
                    ["s", "p", "w"][ki],
                    num(mbps),
                    num(cpu)
                );
            }
            let _ = writeln!(w, "- {} {}:{line}", fr.fs.key(), size_name(size));
        }
    }
    let _ = writeln!(
        w,
        "\nGreeting latency against the saving server (`max_per_source = 0`: all clients here \
         share 127.0.0.1): a client connects every {} ms, times connect() → the full \
         greeting and closes (each such connection is a 0-byte upload: the server saves an \
         empty `N.file` for it, with fsync; every one was checked). \
         \"during\": while one client uploads (probing from its greeting until the server \
         closed it, after its fsync).\n\n\
         | file system | while | probes | p50 ms | p99 ms | max ms | upload MB/s | server \
         peak RSS MiB | loop waiting for a CPU: ms in all, µs per run |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        PROBE_EVERY.as_millis()
    );
    for fr in &res.saving {
        for l in [&fr.idle, &fr.during].into_iter().flatten() {
            let Some((p50, p99, max)) = latency_stats(&l.ms) else {
                continue;
            };
            let (what, mbps) = match l.upload {
                Some((size, mbps)) => (format!("a {} upload", size_name(size)), num(mbps)),
                None => ("idle".to_string(), "–".to_string()),
            };
            let wait = if l.runs > 0 {
                format!(
                    "{} ms, {} µs over {} runs",
                    num(l.runq_wait_ns as f64 / 1e6),
                    num(l.runq_wait_ns as f64 / 1e3 / l.runs as f64),
                    l.runs
                )
            } else {
                "–".to_string()
            };
            let _ = writeln!(
                w,
                "| {} | {what} | {} | {} | {} | {} | {mbps} | {} | {wait} |",
                fr.fs.key(),
                l.ms.len(),
                num(p50),
                num(p99),
                num(max),
                num(l.rss_kib as f64 / 1024.0)
            );
        }
    }
    let _ = writeln!(
        w,
        "\nThe serving loop (the server's main thread) sampled every {} ms while probing \
         (R: running or waiting for a CPU, S: sleeping, D: blocked in the kernel, e.g. on \
         I/O, with where):\n",
        STATE_EVERY.as_millis()
    );
    for fr in &res.saving {
        for l in [&fr.idle, &fr.during].into_iter().flatten() {
            let total: u64 = l.states.iter().map(|s| s.1).sum();
            if total == 0 {
                continue;
            }
            let states: Vec<String> = l
                .states
                .iter()
                .map(|(c, n)| format!("{c} {:.1} %", *n as f64 * 100.0 / total as f64))
                .collect();
            let d: Vec<String> = l
                .d_wchan
                .iter()
                .map(|(wchan, n)| format!("{n} × {}", if wchan.is_empty() { "?" } else { wchan }))
                .collect();
            let _ = writeln!(
                w,
                "- {} {}: {total} samples: {}{}",
                fr.fs.key(),
                match l.upload {
                    Some((size, _)) => format!("during a {} upload", size_name(size)),
                    None => "idle".to_string(),
                },
                states.join(", "),
                if d.is_empty() {
                    String::new()
                } else {
                    format!("; D in {}", d.join(", "))
                }
            );
        }
    }
}

/// The counting targets, the saving targets and those of the saving rounds (against
/// the plain receiver, greeting latency), judged on this run.
fn write_targets(w: &mut String, opts: &Opts, res: &Results) {
    let _ = writeln!(
        w,
        "\n### Targets (this run)\n\n| target | measured | met |\n| --- | --- | --- |"
    );
    // A run of the saving rounds only does not list the counting targets it skipped.
    let quiet = !opts.transfers && !opts.extras;
    let mut target = |name: &str, measured: Option<(String, bool)>| {
        if quiet && measured.is_none() {
            return;
        }
        let (m, ok) = match measured {
            Some((m, ok)) => (m, if ok { "yes" } else { "**no**" }),
            None => ("not measured in this run".to_string(), "–"),
        };
        let _ = writeln!(w, "| {name} | {m} | {ok} |");
    };
    let si_of = |size: u64| opts.sizes.iter().position(|&s| s == size);
    let server = res.kinds.iter().position(|&k| k == Kind::Server);
    let reference = res.kinds.iter().position(|&k| k == Kind::Reference);
    let at = |metric: &Vec<Vec<Series>>, size: u64, ki: Option<usize>| {
        median(&metric[si_of(size)?][ki?])
    };
    let ratio_at = |metric: &Vec<Vec<Series>>, size: u64| {
        let b = at(metric, size, reference)?;
        Some(at(metric, size, server)? / b).filter(|_| b > 0.0)
    };
    target(
        "1 GiB throughput ≥ 0.95× reference",
        ratio_at(&res.tput, 1 << 30).map(|r| (format!("{}×", num(r)), r >= 0.95)),
    );
    for size in [1u64 << 30, 4 << 30] {
        target(
            &format!("CPU per GiB ≤ 1.2× reference ({})", size_name(size)),
            ratio_at(&res.cpu, size).map(|r| (format!("{}×", num(r)), r <= 1.2)),
        );
    }
    target(
        "peak RSS ≤ 4 MiB during a 4 GiB transfer",
        at(&res.rss, 4 << 30, server).map(|m| (format!("{} MiB", num(m)), m <= 4.0)),
    );
    let largest = opts.sizes.iter().copied().max().unwrap_or(0);
    let growth = match (at(&res.rss, 1 << 20, server), at(&res.rss, largest, server)) {
        (Some(a), Some(b)) if largest > 1 << 20 => Some((a, b)),
        _ => None,
    };
    target(
        &format!("no RSS growth from 1 MiB to {}", size_name(largest)),
        growth.map(|(a, b)| {
            let d = (b - a) * 1024.0;
            (
                format!("{} → {} MiB ({d:+.0} KiB)", num(a), num(b)),
                d <= 256.0,
            )
        }),
    );
    let ms = res.multi.iter().position(|&k| k == Kind::Server);
    let mr = res.multi.iter().position(|&k| k == Kind::Reference);
    let rate_ratio = ms
        .zip(mr)
        .and_then(|(s, r)| Some(median(&res.rates[s])? / median(&res.rates[r])?));
    target(
        "sequential connection rate ≥ 0.9× reference",
        rate_ratio.map(|r| (format!("{}×", num(r)), r >= 0.9)),
    );
    let start = ms.and_then(|s| median(&res.starts[s]));
    target(
        "start to listening ≤ 5 ms",
        start.map(|m| (format!("{} ms", num(m)), m <= 5.0)),
    );
    let stop = ms.and_then(|s| median(&res.stops[s]));
    target(
        "SIGTERM to exit ≤ 5 ms when idle",
        stop.map(|m| (format!("{} ms", num(m)), m <= 5.0)),
    );
    let idle = res.idle.as_ref();
    target(
        &format!("{} idle connections: ≤ 32 MiB RSS", opts.idle_conns),
        idle.map(|r| {
            (
                format!("{} MiB", num(r.rss_kib as f64 / 1024.0)),
                r.rss_kib <= 32 * 1024,
            )
        }),
    );
    target(
        &format!("{} idle connections: all counted right", opts.idle_conns),
        idle.map(|r| (format!("{} of {}", r.conns, r.conns), true)),
    );
    target(
        "no CPU while idle",
        idle.map(|r| {
            let m = format!(
                "{:.1} ms CPU, {} wake-ups in {:.1} s",
                r.cpu_secs * 1e3,
                r.wakeups,
                r.idle_secs
            );
            (m, r.cpu_secs <= 0.001)
        }),
    );
    // Saving against counting only, both from this run.
    let save = res.kinds.iter().position(|&k| k == Kind::ServerSave);
    let save_ratio = si_of(1 << 30)
        .zip(save)
        .zip(server)
        .and_then(|((si, sv), s)| {
            let r = median(&res.tput[si][sv])? / median(&res.tput[si][s])?;
            Some((ratio_cell(&res.tput[si][sv], &res.tput[si][s]), r))
        });
    target(
        "saving 1 GiB to tmpfs ≥ 0.8× counting-only server (same run)",
        save_ratio.map(|(cell, r)| (cell, r >= 0.8)),
    );
    // The largest peak RSS of any saving transfer, at any size.
    let save_rss = save.and_then(|sv| {
        let all: Vec<f64> = res
            .rss
            .iter()
            .flat_map(|per_kind| per_kind[sv].iter().map(|p| p.1))
            .collect();
        let max = all
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?;
        Some((max, all.len()))
    });
    target(
        "peak RSS ≤ 4 MiB while saving",
        save_rss.map(|(max, n)| {
            (
                format!("{} MiB (largest of {n} transfers)", num(max)),
                max <= 4.0,
            )
        }),
    );
    // The saving rounds: the server against the plain splice receiver, same run.
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            let (server, plain) = (&fr.tput[si][0], &fr.tput[si][1]);
            let measured = median(server)
                .zip(median(plain))
                .filter(|p| p.1 > 0.0)
                .map(|(a, b)| (ratio_cell(server, plain), a / b >= 0.9));
            target(
                &format!(
                    "saving {} to {} ≥ 0.9× plain splice receiver (same run)",
                    size_name(size),
                    fr.fs.key()
                ),
                measured,
            );
        }
    }
    for fr in &res.saving {
        // Every saving server of this file system: the rounds and the probed uploads.
        let all: Vec<f64> = fr
            .rss
            .iter()
            .flat_map(|per_kind| per_kind[0].iter().map(|p| p.1))
            .chain(
                [&fr.idle, &fr.during]
                    .into_iter()
                    .flatten()
                    .map(|l| l.rss_kib as f64 / 1024.0),
            )
            .collect();
        let max = all.iter().copied().reduce(f64::max);
        target(
            &format!("peak RSS ≤ 4 MiB while saving to {}", fr.fs.key()),
            max.map(|m| {
                (
                    format!("{} MiB (largest of {} servers)", num(m), all.len()),
                    m <= 4.0,
                )
            }),
        );
    }
    for fr in &res.saving {
        let during = fr.during.as_ref().and_then(|l| {
            let (_, p99, max) = latency_stats(&l.ms)?;
            Some((l, p99, max))
        });
        target(
            &format!("greeting p99 ≤ 10 ms during a save to {}", fr.fs.key()),
            during.map(|(l, p99, max)| {
                (
                    format!(
                        "{} ms ({} probes, max {} ms)",
                        num(p99),
                        l.ms.len(),
                        num(max)
                    ),
                    p99 <= 10.0,
                )
            }),
        );
    }
}
