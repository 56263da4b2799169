//! Measurements of one transfer, the connection rate, start and stop, and
//! idle connections; every file a saving receiver writes is checked here.

use super::*;

#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: u64,
    /// CPU of the sending thread (this process): where the ceiling comes from.
    pub(crate) sender_cpu_secs: f64,
    /// The receiver's context switches during the transfer: how often it slept.
    pub(crate) switches: u64,
    /// Saving receivers: checking, deleting the file and flushing the deletion
    /// (after the transfer, not timed with it).
    pub(crate) cleanup_secs: f64,
}

/// Sets the CPU affinity of one thread (0 = the caller): `Some(cpu)` or all CPUs.
pub(crate) fn set_affinity(tid: libc::pid_t, cpu: Option<usize>) {
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
pub(crate) fn set_affinity_all_threads(pid: libc::pid_t, cpu: Option<usize>) {
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
pub(crate) struct PinSelf;

impl PinSelf {
    pub(crate) fn to(cpu: usize) -> PinSelf {
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
pub(crate) fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

pub(crate) fn size_name(size: u64) -> String {
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
pub(crate) fn measure_transfer(
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
pub(crate) const WHOLE_CHECK_MAX: u64 = 64 << 20;
pub(crate) const SAMPLES: u64 = 32;
pub(crate) const SAMPLE_LEN: u64 = 64 << 10;

/// What `server --save-dir` left in its fresh directory after one transfer of `size`
/// bytes: exactly `1.file` (no temporary file left over), `size` bytes long, holding
/// the sender's 1 MiB buffer repeated: whole, or sampled (the first and last window
/// and windows at odd offsets in between).
pub(crate) fn check_saved(
    dir: &Path,
    size: u64,
    buf: &AlignedBuf,
    whole: bool,
) -> Result<(), String> {
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
pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>, String> {
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
pub(crate) fn check_file(
    path: &Path,
    size: u64,
    buf: &AlignedBuf,
    whole: bool,
) -> Result<(), String> {
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
pub(crate) fn measure_conn_rate(ctx: &mut Ctx, kind: Kind, n: usize) -> Result<f64, String> {
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
pub(crate) fn measure_start_stop(ctx: &mut Ctx, kind: Kind) -> Result<(f64, f64, i32), String> {
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

pub(crate) struct IdleResult {
    pub(crate) conns: usize,
    pub(crate) idle_secs: f64,
    pub(crate) rss_base_kib: u64,
    pub(crate) rss_kib: u64,
    pub(crate) cpu_secs: f64,
    pub(crate) wakeups: u64,
    pub(crate) exit_status: i32,
}

/// Many concurrent idle connections to the server: RSS, CPU while idle, then each
/// sends a few bytes and closes and every count must come back right.
pub(crate) fn measure_idle(
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
