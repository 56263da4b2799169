//! Receivers: the context of a run (binaries, scratch directories, notes,
//! failures) and starting each receiver the way a user would.

use super::*;

pub(crate) struct Ctx {
    /// The server binary that runs: a copy of `server_origin` made at start.
    pub(crate) server: PathBuf,
    pub(crate) server_origin: PathBuf,
    pub(crate) python_script: PathBuf,
    /// The interpreter `python3` runs, resolved once: a version-manager shim
    /// (pyenv) would add its own start-up to every measurement.
    pub(crate) python: PathBuf,
    pub(crate) self_exe: PathBuf,
    pub(crate) tmp: PathBuf,
    /// Receivers whose programs are installed.
    pub(crate) available: Vec<Kind>,
    pub(crate) notes: Vec<String>,
    pub(crate) failures: Vec<String>,
    pub(crate) server_logs: usize,
    /// server-save's base directory, /dev/shm/accio-bench-PID: each of its
    /// transfers saves into a fresh subdirectory. Removed when the Ctx is dropped,
    /// whatever happened.
    pub(crate) save_base: Option<RemoveOnDrop>,
    /// Subdirectories made so far (their names).
    pub(crate) save_dirs: usize,
    /// Files saved by server-save that were checked (size, content) and deleted.
    pub(crate) saves_checked: usize,
    /// The disk saving rounds' base directory, DISK-DIR/accio-bench-disk-PID.
    pub(crate) disk_base: Option<RemoveOnDrop>,
    /// Files of the saving rounds (server and plain) checked and deleted.
    pub(crate) saving_checked: usize,
    /// The plain receiver's sync_file_range window, bytes (0: none, the default).
    pub(crate) plain_window: u64,
    /// Where the server's stderr logs go (`--log-dir`; default `tmp`).
    pub(crate) log_dir: Option<PathBuf>,
}

impl Ctx {
    pub(crate) fn fail(&mut self, msg: String) {
        status_line(&format!("FAIL: {msg}"), true);
        self.failures.push(msg);
    }
}

/// A directory that is removed (with what it holds) when this is dropped: on
/// success, on error and while unwinding alike.
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl RemoveOnDrop {
    /// Removes it now, reporting a failure (drop would only try).
    pub(crate) fn remove(self) -> Result<(), String> {
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
pub(crate) fn save_base() -> Result<RemoveOnDrop, String> {
    make_base(Path::new("/dev/shm"), "accio-bench-", true)
}

/// Where the disk saving rounds write: DIR/accio-bench-disk-PID, created fresh, if DIR
/// is not a tmpfs (nor ramfs).
pub(crate) fn disk_base(dir: &Path) -> Result<RemoveOnDrop, String> {
    make_base(dir, "accio-bench-disk-", false)
}

/// Whether `path` is on a tmpfs or ramfs (memory only).
pub(crate) fn in_memory_fs(path: &Path) -> Result<bool, String> {
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
pub(crate) fn make_base(
    parent: &Path,
    prefix: &str,
    want_tmpfs: bool,
) -> Result<RemoveOnDrop, String> {
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
pub(crate) fn mount_of(path: &Path) -> String {
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
pub(crate) fn syncfs(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        // SAFETY: syncfs on an fd we own.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}

/// Free bytes for an unprivileged user on the filesystem of `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Progress on stderr: a line rewritten in place on a terminal; in a log (CI) only
/// the lines that are kept.
pub(crate) fn status_line(msg: &str, keep: bool) {
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
pub(crate) struct Receiver {
    pub(crate) kind: Kind,
    pub(crate) port: u16,
    pub(crate) procs: Vec<Proc>,
    pub(crate) lines: mpsc::Receiver<String>,
    /// server-save's fresh directory; declared after `procs`, so that on drop the
    /// server is killed before its directory is removed.
    pub(crate) save_dir: Option<RemoveOnDrop>,
}

impl Receiver {
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub(crate) fn cpu_ns(&self) -> Vec<u64> {
        self.procs.iter().map(|p| p.cpu_ns().unwrap_or(0)).collect()
    }

    pub(crate) fn next_line(&self, timeout: Duration) -> Result<String, String> {
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| format!("{}: no count line within {timeout:?}", self.kind.key()))
    }

    /// Stops every process (SIGTERM, then SIGKILL), reaps them, and checks that the
    /// receiver printed nothing more than what was consumed. Returns the exits.
    pub(crate) fn stop(mut self) -> Result<Vec<Exit>, String> {
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
pub(crate) fn fresh_save_dir(
    ctx: &mut Ctx,
    save_in: Option<&Path>,
) -> Result<RemoveOnDrop, String> {
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
pub(crate) fn start_receiver(
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
pub(crate) fn spawn_receiver(
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
