//! Diagnostics read back from a real systemd-journald.
//!
//! As root, each case runs `tests/journal/in-namespace.sh` as PID 1 of a
//! private PID + mount namespace (`setpriv --pdeathsig KILL unshare --pid
//! --fork --kill-child --mount --propagation private`), so nothing outlives
//! the test. The script gives the namespace its own /proc, /run,
//! /var/log/journal and /dev (a tmpfs with a few device nodes); the network
//! is the host's, so the test connects to the server directly.
//!
//! (Over 500 lines because every case shares the one namespace harness
//! below, which must stay in one place to be trusted.)
//!
//! - `journal`: a real `/lib/systemd/systemd-journald` (volatile storage in
//!   the private /run) behind `/dev/log`; the server (`[log] target` auto)
//!   starts, serves a connection, times one out, reloads, fails a reload and
//!   stops; `journalctl -o json` must show each with identifier, facility,
//!   priority and message.
//! - `no_dev_log`: no /dev/log at all; the server still serves and its
//!   diagnostics go to stderr.
//!
//! Both check that the host's /dev, /run and /tmp (names and types), and its
//! mount table, are the same afterwards. Not root: "skipped" (a failure with
//! ACCIO_JOURNAL_REQUIRED=1).

mod common;

use common::{Lines, TempDir, WAIT, free_port, greeted, have, is_root};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_server");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/journal/in-namespace.sh");
const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// The cases change nothing on the host, but each compares the host before
/// and after: one at a time, so neither sees the other's namespace.
static SERIAL: Mutex<()> = Mutex::new(());

/// Whether this case can run; "skipped" when it cannot (not root, tools
/// missing), a failure instead with ACCIO_JOURNAL_REQUIRED=1.
fn can_run() -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    for tool in ["unshare", "setpriv", "journalctl", "mknod"] {
        if !have(tool) {
            missing.push(tool.to_string());
        }
    }
    if !Path::new(JOURNALD).exists() {
        missing.push(JOURNALD.to_string());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("ACCIO_JOURNAL_REQUIRED").as_deref() != Ok("1"),
        "ACCIO_JOURNAL_REQUIRED=1 but this needs {missing:?}"
    );
    println!("skipped: needs {}", missing.join(", "));
    false
}

// ------------------------------------------------------------------ host

/// Names and types of the top level of /dev, /run and /tmp, plus the mount
/// points of the host's mount table. Other tests' temp dirs
/// (`/tmp/accio-test-*`) come and go in parallel and are left out; this
/// file's own files live under CARGO_TARGET_TMPDIR.
fn host_snapshot() -> BTreeMap<String, BTreeSet<String>> {
    let mut snap = BTreeMap::new();
    for dir in ["/dev", "/run", "/tmp"] {
        let mut set = BTreeSet::new();
        for e in std::fs::read_dir(dir).expect("list host dir") {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if dir == "/tmp" && name.starts_with("accio-test-") {
                continue;
            }
            let Ok(t) = e.file_type() else { continue };
            let kind = if t.is_symlink() {
                "symlink"
            } else if t.is_dir() {
                "dir"
            } else if t.is_file() {
                "file"
            } else if t.is_socket() {
                "socket"
            } else if t.is_char_device() {
                "char"
            } else if t.is_block_device() {
                "block"
            } else if t.is_fifo() {
                "fifo"
            } else {
                "other"
            };
            set.insert(format!("{name} ({kind})"));
        }
        snap.insert(dir.to_string(), set);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mounts = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(format!("{} {}", f.get(4)?, f.get(sep + 1)?))
        })
        .collect();
    snap.insert("mounts".to_string(), mounts);
    snap
}

fn assert_host_unchanged(before: &BTreeMap<String, BTreeSet<String>>, had_dev_log: bool) {
    let after = host_snapshot();
    for (what, b) in before {
        let a = &after[what];
        let gone: Vec<_> = b.difference(a).collect();
        let new: Vec<_> = a.difference(b).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "host {what} changed: gone {gone:?}, new {new:?}"
        );
    }
    assert_eq!(
        std::fs::symlink_metadata("/dev/log").is_ok(),
        had_dev_log,
        "the host's /dev/log changed"
    );
}

// ------------------------------------------------------------ namespace

/// A private work directory under CARGO_TARGET_TMPDIR (inside the checkout,
/// reachable from the namespace), removed on drop.
fn work_dir(tag: &str) -> TempDir {
    TempDir::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), tag)
}

/// A NOTIFY_SOCKET with SO_PASSCRED: each datagram comes with the sender's
/// PID as seen from here (the host), though it runs in another PID namespace.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED");
        Notify { sock, path }
    }

    /// The next datagram and its sender's PID, within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<(String, i32)> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        let mut buf = [0u8; 4096];
        let mut cmsg = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; we point it at our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        // SAFETY: recvmsg into buffers that outlive the call.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return None;
        }
        let mut pid = 0;
        // SAFETY: walking the control messages the kernel just wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    pid = cred.pid;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some((
            String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
            pid,
        ))
    }
}

/// The namespace: setpriv -> unshare -> in-namespace.sh (PID 1 inside).
/// Killed and reaped on drop; its death takes every process inside with it.
struct Namespace {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
}

impl Namespace {
    fn start(args: &[&str]) -> Namespace {
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount"])
            .args(["--propagation", "private", "--", "/bin/bash", SCRIPT])
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv/unshare");
        let stdin = child.stdin.take();
        let stdout = Lines::new(child.stdout.take().expect("stdout"));
        let stderr = Lines::new(child.stderr.take().expect("stderr"));
        Namespace {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn stderr_seen(&self) -> Vec<String> {
        self.stderr.seen.lock().unwrap().clone()
    }

    /// A line on the script's stdin (the go-ahead once journald is ready).
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the namespace script");
    }

    /// The server's exit code, from the script's "server exited RC" line.
    fn server_exit(&self) -> Option<i32> {
        self.stderr_seen().iter().find_map(|l| {
            l.strip_prefix("in-namespace: server exited ")
                .and_then(|rc| rc.trim().parse().ok())
        })
    }

    /// Wait for the server's exit code (its "server exited" line).
    fn wait_server_exit(&self) -> i32 {
        if let Some(rc) = self.server_exit() {
            return rc;
        }
        let line = self.stderr.wait_for("in-namespace: server exited ");
        line.rsplit(' ')
            .next()
            .and_then(|rc| rc.parse().ok())
            .expect("exit code")
    }

    /// Close stdin (the script stops journald and exits) and reap it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let end = Instant::now() + WAIT;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                Instant::now() < end,
                "the namespace did not exit within {WAIT:?}; stderr {:?}",
                self.stderr_seen()
            );
            thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "in-namespace.sh failed: {status}; stderr {:?}",
            self.stderr_seen()
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the namespace with the server on a free port (retrying on a port
/// clash, exit 71) and wait for the server's READY=1. With `journald`, first
/// wait for journald's own READY=1 and give the script the go-ahead.
/// Returns the namespace, the port, the server's host PID and journald's.
fn start(
    mode: &str,
    config: &Path,
    server_notify: &Notify,
    journald_notify: Option<&Notify>,
) -> (Namespace, u16, i32, Option<i32>) {
    for _ in 0..10 {
        let port = free_port();
        let port_s = port.to_string();
        let server_sock = server_notify.path.display().to_string();
        let config_s = config.display().to_string();
        let mut args = vec![mode, BIN, config_s.as_str(), port_s.as_str(), &server_sock];
        let journald_sock = journald_notify.map(|n| n.path.display().to_string());
        if let Some(j) = &journald_sock {
            args.push(j);
        }
        let mut ns = Namespace::start(&args);
        let mut journald_pid = None;
        if let Some(jn) = journald_notify {
            let pid = wait_ready(jn, &mut ns, "journald");
            journald_pid = Some(pid);
            ns.send("go");
        }
        let end = Instant::now() + WAIT;
        loop {
            if let Some((m, pid)) = server_notify.recv(Duration::from_millis(50))
                && m.lines().any(|l| l == "READY=1")
            {
                return (ns, port, pid, journald_pid);
            }
            match ns.server_exit() {
                Some(71) => break,
                Some(rc) => panic!(
                    "server exited early with {rc}; stderr {:?}",
                    ns.stderr_seen()
                ),
                None => {}
            }
            assert!(
                Instant::now() < end,
                "server not ready within {WAIT:?}; stderr {:?}",
                ns.stderr_seen()
            );
        }
        drop(ns);
    }
    panic!("could not start the server on a free port");
}

/// Wait for READY=1 on `n`; returns the sender's host PID.
fn wait_ready(n: &Notify, ns: &mut Namespace, what: &str) -> i32 {
    let end = Instant::now() + WAIT;
    loop {
        if let Some((m, pid)) = n.recv(Duration::from_millis(50))
            && m.lines().any(|l| l == "READY=1")
        {
            return pid;
        }
        if let Ok(Some(st)) = ns.child.try_wait() {
            panic!(
                "namespace exited ({st}) before {what} was ready: {:?}",
                ns.stderr_seen()
            );
        }
        assert!(
            Instant::now() < end,
            "{what} not ready within {WAIT:?}; stderr {:?}",
            ns.stderr_seen()
        );
    }
}

/// Skip notifications until one has the line `line`.
fn wait_notify(n: &Notify, line: &str) {
    let end = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match n.recv(left) {
            Some((m, _)) if m.lines().any(|l| l == line) => return,
            Some((m, _)) => seen.push(m),
            None => break,
        }
    }
    panic!("no notification {line:?}; seen {seen:?}");
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2); the PID is the server's, alive (it has not sent the
    // "server exited" line we wait for after signals that stop it).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Connect, read the greeting; returns the stream and its local address
/// (the peer the server logs).
fn connect(port: u16) -> (TcpStream, SocketAddr) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    assert!(greeted(&mut s), "greeting");
    let local = s.local_addr().expect("local addr");
    (s, local)
}

/// Send `payload`, half-close, wait for the server's close.
fn transfer(port: u16, payload: &[u8]) -> SocketAddr {
    let (mut s, local) = connect(port);
    s.write_all(payload).expect("send");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("wait for the server's close");
    assert!(rest.is_empty(), "server sent more than the greeting");
    local
}

// --------------------------------------------------------------- journal

/// One journal entry: its string fields (binary or null ones are left out).
type Entry = BTreeMap<String, String>;

/// `journalctl -o json` of the namespace's /run/log/journal, reached through
/// journald's /proc/PID/root (its mount namespace).
fn journal(journald_pid: i32) -> Vec<Entry> {
    let dir = format!("/proc/{journald_pid}/root/run/log/journal");
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "json", "-D", &dir])
        .stdin(Stdio::null())
        .output()
        .expect("run journalctl");
    assert!(
        out.status.success(),
        "journalctl -D {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_json_object(l).unwrap_or_else(|| panic!("not a JSON object: {l}")))
        .collect()
}

/// Poll the journal until an entry of the server's has a MESSAGE containing
/// `needle` (journald reads /dev/log in order, so everything sent before it
/// is in too).
fn journal_until(journald_pid: i32, needle: &str) -> Vec<Entry> {
    let end = Instant::now() + WAIT;
    loop {
        let entries = journal(journald_pid);
        if entries.iter().any(|e| {
            e.get("_EXE").map(String::as_str) == Some(BIN)
                && e.get("MESSAGE").is_some_and(|m| m.contains(needle))
        }) {
            return entries;
        }
        assert!(
            Instant::now() < end,
            "no journal entry with {needle:?} within {WAIT:?}; messages {:?}",
            entries.iter().map(|e| e.get("MESSAGE")).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A flat JSON object as journalctl writes it: string values are kept;
/// null, numbers and arrays (binary fields) are skipped.
fn parse_json_object(s: &str) -> Option<Entry> {
    let mut p = s.trim().chars().peekable();
    let mut out = Entry::new();
    let ws = |p: &mut std::iter::Peekable<std::str::Chars>| {
        while p.peek().is_some_and(|c| c.is_whitespace()) {
            p.next();
        }
    };
    fn string(p: &mut std::iter::Peekable<std::str::Chars>) -> Option<String> {
        if p.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match p.next()? {
                '"' => return Some(s),
                '\\' => match p.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| p.next()).collect();
                        let cp = u32::from_str_radix(&hex, 16).ok()?;
                        s.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    }
    ws(&mut p);
    if p.next()? != '{' {
        return None;
    }
    loop {
        ws(&mut p);
        if p.peek() == Some(&'}') {
            return Some(out);
        }
        let key = string(&mut p)?;
        ws(&mut p);
        if p.next()? != ':' {
            return None;
        }
        ws(&mut p);
        if p.peek() == Some(&'"') {
            out.insert(key, string(&mut p)?);
        } else {
            // null, a number or an array of numbers: skip to the next field.
            let mut depth = 0;
            while let Some(&c) = p.peek() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    ',' | '}' if depth == 0 => break,
                    _ => {}
                }
                p.next();
            }
        }
        ws(&mut p);
        match p.next()? {
            ',' => continue,
            '}' => return Some(out),
            _ => return None,
        }
    }
}

/// The server's entries whose MESSAGE contains `needle`: exactly one, with
/// the given priority; returns its message.
fn one(entries: &[&Entry], needle: &str, priority: u8) -> String {
    let hits: Vec<&&Entry> = entries
        .iter()
        .filter(|e| e.get("MESSAGE").is_some_and(|m| m.contains(needle)))
        .collect();
    let all: Vec<_> = entries
        .iter()
        .map(|e| (e.get("PRIORITY"), e.get("MESSAGE")))
        .collect();
    assert_eq!(hits.len(), 1, "one entry with {needle:?}; entries {all:?}");
    let e = hits[0];
    assert_eq!(
        e.get("PRIORITY").map(String::as_str),
        Some(priority.to_string().as_str()),
        "PRIORITY of {:?}",
        e.get("MESSAGE")
    );
    e["MESSAGE"].clone()
}

#[test]
fn diagnostics_in_a_real_journal() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let had_dev_log = std::fs::symlink_metadata("/dev/log").is_ok();
    let before = host_snapshot();
    {
        let dir = work_dir("journal");
        let config = dir.path("server.toml");
        // No [log]: target "auto", which must find journald's /dev/log.
        std::fs::write(&config, "idle_timeout = \"300ms\"\n").unwrap();
        let server_notify = Notify::new(dir.path("server.sock"));
        let journald_notify = Notify::new(dir.path("journald.sock"));
        let (ns, port, pid, journald_pid) =
            start("journal", &config, &server_notify, Some(&journald_notify));
        let journald_pid = journald_pid.expect("journald pid");

        // 1: served and counted.
        let payload = b"accio journal test payload";
        let peer1 = transfer(port, payload);
        // 2: idle timeout: the server closes it after 300 ms without data.
        let (mut idle, peer2) = connect(port);
        // (a close or a reset, but within the read timeout)
        let mut rest = Vec::new();
        if let Err(e) = idle.read_to_end(&mut rest) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "the server closes an idle connection: {e}"
            );
        }
        drop(idle);
        // A good reload, then a bad one (a wrong type).
        std::fs::write(&config, "idle_timeout = \"400ms\"\n").unwrap();
        signal(pid, libc::SIGHUP);
        wait_notify(&server_notify, "RELOADING=1");
        wait_notify(&server_notify, "READY=1");
        std::fs::write(&config, "idle_timeout = 5\n").unwrap();
        signal(pid, libc::SIGHUP);
        wait_notify(&server_notify, "RELOADING=1");
        wait_notify(&server_notify, "READY=1");
        // Stop.
        signal(pid, libc::SIGTERM);
        assert_eq!(ns.wait_server_exit(), 0, "exit status after SIGTERM");

        let entries = journal_until(journald_pid, "stopped:");
        let server: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.get("_EXE").map(String::as_str) == Some(BIN))
            .collect();
        for e in &server {
            let field = |k: &str| e.get(k).map(String::as_str);
            assert_eq!(field("SYSLOG_IDENTIFIER"), Some("accio-server"), "{e:?}");
            assert_eq!(field("SYSLOG_FACILITY"), Some("3"), "daemon: {e:?}");
            assert_eq!(field("_TRANSPORT"), Some("syslog"), "{e:?}");
            assert_eq!(field("SYSLOG_PID"), field("_PID"), "{e:?}");
        }
        let ns_pid = &server[0]["_PID"];

        let start = one(&server, "listening on", 5);
        assert!(
            start.contains(&format!("listening on 0.0.0.0:{port}")),
            "{start}"
        );
        assert!(start.contains(&format!("pid {ns_pid}")), "{start}");
        assert!(
            start.contains(&format!("config {}", config.display())),
            "{start}"
        );
        let served = one(&server, "connection 1 ", 6);
        assert!(
            served.contains(&format!(
                "connection 1 from {peer1}: closed by client, {} bytes in ",
                payload.len()
            )),
            "{served}"
        );
        assert!(served.ends_with("/s)"), "a rate: {served}");
        let timeout = one(&server, "connection 2 ", 4);
        assert!(
            timeout.contains(&format!("connection 2 from {peer2}: idle timeout (")),
            "{timeout}"
        );
        let reloaded = one(&server, "reloaded configuration", 5);
        assert!(
            reloaded.contains(&format!("reloaded configuration from {}", config.display())),
            "{reloaded}"
        );
        let failed = one(&server, "reload failed", 3);
        assert!(
            failed.contains("reload failed, configuration unchanged: "),
            "{failed}"
        );
        assert!(failed.contains("idle_timeout"), "names the key: {failed}");
        let stopping = one(&server, "stopping on SIGTERM", 5);
        assert!(stopping.starts_with("stopping on SIGTERM: "), "{stopping}");
        let stopped = one(&server, "stopped:", 5);
        assert!(stopped.starts_with("stopped: "), "{stopped}");
        // Nothing else at err or worse, and nothing of ours on stderr.
        for e in &server {
            let p: u8 = e["PRIORITY"].parse().expect("PRIORITY");
            assert!(
                p > 3 || e["MESSAGE"].contains("reload failed"),
                "unexpected {e:?}"
            );
        }
        assert!(
            !ns.stderr_seen()
                .iter()
                .any(|l| l.starts_with("accio-server:")),
            "diagnostics went to stderr: {:?}",
            ns.stderr_seen()
        );
        // Counts only on stdout: the first connection's, then ERROR.
        assert_eq!(ns.stdout.expect(), payload.len().to_string());
        assert_eq!(ns.stdout.expect(), "ERROR");
        ns.finish();
    }
    assert_host_unchanged(&before, had_dev_log);
}

#[test]
fn no_dev_log_means_stderr() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let had_dev_log = std::fs::symlink_metadata("/dev/log").is_ok();
    let before = host_snapshot();
    {
        let dir = work_dir("nolog");
        let config = dir.path("server.toml");
        std::fs::write(&config, "# [log] target is auto\n").unwrap();
        let server_notify = Notify::new(dir.path("server.sock"));
        let (ns, port, pid, _) = start("nolog", &config, &server_notify, None);
        let payload = b"no syslog here";
        let peer = transfer(port, payload);
        let count = ns.stdout.expect();
        assert_eq!(count, payload.len().to_string(), "the count on stdout");
        let line = ns.stderr.wait_for("connection 1 from");
        assert_eq!(
            line,
            format!(
                "accio-server: info: connection 1 from {peer}: closed by client, {} bytes in {}",
                payload.len(),
                line.split(" bytes in ").nth(1).unwrap_or("")
            ),
            "the connection line on stderr"
        );
        signal(pid, libc::SIGTERM);
        assert_eq!(ns.wait_server_exit(), 0);
        let err = ns.stderr_seen();
        assert!(
            err.iter().any(|l| l.starts_with("accio-server: notice: ")
                && l.contains(&format!("listening on 0.0.0.0:{port}"))),
            "the start line on stderr: {err:?}"
        );
        assert!(
            err.iter()
                .any(|l| l.starts_with("accio-server: notice: stopped: ")),
            "the stop line on stderr: {err:?}"
        );
        assert!(
            err.iter().any(|l| l == "in-namespace: no /dev/log"),
            "the namespace had no /dev/log: {err:?}"
        );
        ns.finish();
    }
    assert_host_unchanged(&before, had_dev_log);
}
