//! The saving rounds: `server --save-dir` against the plain splice receiver
//! on tmpfs and on the disk, and the greeting latency other clients see
//! during a save.

use super::*;

/// The receivers of the saving rounds, in table order: the server, the plain receiver
/// (index 1, what the ratios compare with), and with `--plain-window` the windowed one.
pub(crate) fn save_kinds(opts: &Opts) -> Vec<Kind> {
    let mut kinds = vec![Kind::ServerSave, Kind::Plain];
    if opts.plain_window > 0 {
        kinds.push(Kind::PlainWindowed);
    }
    kinds
}
/// A greeting probe connects this often during a save.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(10);
/// How long an upload waits at most for its minimum number of probes.
pub(crate) const PROBE_WAIT: Duration = Duration::from_secs(60);

/// What one file system's saving rounds measured.
pub(crate) struct SaveFsResults {
    pub(crate) fs: SaveFs,
    pub(crate) base: PathBuf,
    /// The mount: type, device, options (e.g. ext4's `discard`).
    pub(crate) mount: String,
    /// The receivers (see [`save_kinds`]).
    pub(crate) kinds: Vec<Kind>,
    /// Per save size, per receiver: throughput MB/s, CPU s/GiB, peak RSS MiB, and the
    /// untimed check + delete + syncfs after each transfer, s.
    pub(crate) tput: Vec<Vec<Series>>,
    pub(crate) cpu: Vec<Vec<Series>>,
    pub(crate) rss: Vec<Vec<Series>>,
    pub(crate) cleanup: Vec<Vec<Series>>,
    /// The receiver's context switches per MiB (all its threads).
    pub(crate) switches: Vec<Vec<Series>>,
    /// Per save size, the untimed warm-up transfer (plain receiver): MB/s, CPU s/GiB.
    pub(crate) warmup: Vec<Option<(f64, f64)>>,
    /// Per save size, the transfers in run order: (round, receiver index, MB/s, CPU
    /// s/GiB).
    pub(crate) order: Vec<Vec<(usize, usize, f64, f64)>>,
    /// Greeting latency against the saving server while idle, and during an upload.
    pub(crate) idle: Option<Latency>,
    pub(crate) during: Option<Latency>,
}

/// Greeting probes: connect, read `accio\r\n`, close, every PROBE_EVERY.
pub(crate) struct Latency {
    /// The upload they ran alongside: size and MB/s (none: the server was idle).
    pub(crate) upload: Option<(u64, f64)>,
    /// connect() → full greeting, ms, per probe.
    pub(crate) ms: Vec<f64>,
    /// The server's VmHWM at the end.
    pub(crate) rss_kib: u64,
    /// The server's main thread (the serving loop) while probing, from
    /// /proc/PID/task/PID/schedstat: time it waited on a run queue for a CPU (ns), and
    /// how many times it was given one.
    pub(crate) runq_wait_ns: u64,
    pub(crate) runs: u64,
    /// The serving loop's state sampled every STATE_EVERY while probing: samples per
    /// state letter (R running or runnable, S sleeping, D uninterruptible), and where
    /// it waited (wchan) in the D samples.
    pub(crate) states: Vec<(char, u64)>,
    pub(crate) d_wchan: Vec<(String, u64)>,
}

/// How often the loop thread's state is sampled during the greeting probes.
pub(crate) const STATE_EVERY: Duration = Duration::from_millis(2);

/// Samples per state letter, and per wchan of the D samples.
pub(crate) type States = (Vec<(char, u64)>, Vec<(String, u64)>);

/// Samples the state of thread `pid` of process `pid` (its main thread) until `stop`.
pub(crate) fn state_sampler(
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
pub(crate) fn schedstat(pid: libc::pid_t) -> Option<(u64, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// Nearest-rank percentile of a sorted, non-empty slice.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// (p50, p99, max) of probe times.
pub(crate) fn latency_stats(ms: &[f64]) -> Option<(f64, f64, f64)> {
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
pub(crate) fn run_saving(
    opts: &Opts,
    ctx: &mut Ctx,
    buf: &AlignedBuf,
    out: &mut Vec<SaveFsResults>,
) {
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
pub(crate) fn measure_latency(
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
        send_all(&mut s, buf, size).map_err(|e| format!("upload: {e}"))?;
        wait_probes(probes)?;
        close_and_wait(&mut s).map_err(|e| format!("upload: {e}"))?;
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
