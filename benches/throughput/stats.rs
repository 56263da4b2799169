//! Statistics and formatting: medians, ranges and ratios, and the facts
//! about the machine a report must state to be read later.

use super::*;

pub(crate) struct Stats {
    pub(crate) med: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn stats(v: &[f64]) -> Option<Stats> {
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
pub(crate) fn num(v: f64) -> String {
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

pub(crate) fn cell(s: &Option<Stats>) -> String {
    match s {
        Some(s) if s.min == s.max => num(s.med),
        Some(s) => format!("{} ({}–{})", num(s.med), num(s.min), num(s.max)),
        None => "–".to_string(),
    }
}

/// Ratio of medians, and the spread of the per-round ratios (rounds are paired).
pub(crate) fn ratio_cell(v: &[(usize, f64)], reference: &[(usize, f64)]) -> String {
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

pub(crate) fn machine_facts() -> Vec<String> {
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
pub(crate) fn busy_cpu_secs() -> f64 {
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
pub(crate) fn own_cpu_secs() -> f64 {
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

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn utc_now() -> String {
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

pub(crate) fn in_path(prog: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|d| d.join(prog).is_file()))
}

/// The real interpreter behind `python3` (sys.executable).
pub(crate) fn python_executable() -> Option<PathBuf> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let (ok, stdout) = probe(cmd)?;
    let path = PathBuf::from(stdout.trim());
    (ok && path.is_file()).then_some(path)
}

/// Runs a short probe command with a timeout: (exited 0, stdout + stderr).
pub(crate) fn probe(mut cmd: Command) -> Option<(bool, String)> {
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

pub(crate) fn raise_nofile() -> u64 {
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
