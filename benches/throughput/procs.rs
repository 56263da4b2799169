//! Processes: spawn, measure, stop and always reap every receiver, so a
//! failed round never leaves a process behind or a figure unchecked.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Exit {
    /// Raw wait status.
    pub(crate) status: i32,
    /// user + system CPU over the whole life, from `wait4` (µs precision).
    pub(crate) cpu_ns: u64,
    /// Context switches (voluntary + involuntary) over the whole life.
    pub(crate) switches: u64,
}

pub(crate) fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// A child process that is always reaped: explicitly, or on drop (SIGKILL + wait).
pub(crate) struct Proc {
    pub(crate) what: String,
    pub(crate) child: Child,
    /// pidfd, to wait for exit with a timeout (poll); None on kernels without it.
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) exit: Option<Exit>,
}

impl Proc {
    pub(crate) fn spawn(what: String, cmd: &mut Command) -> Result<Proc, String> {
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

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Reaps the process if it has exited (never blocks).
    pub(crate) fn try_reap(&mut self) -> Option<Exit> {
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
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
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

    pub(crate) fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: the pid is our unreaped child, so it cannot have been reused.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after EXIT_TIMEOUT. Reaps it.
    pub(crate) fn stop(&mut self) -> Result<Exit, String> {
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
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
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
    pub(crate) fn status_kib(&self, key: &str) -> Option<u64> {
        proc_status_field(&format!("/proc/{}/status", self.pid()), key)
    }

    /// Context switches of all threads: how often it woke up.
    pub(crate) fn wakeups(&self) -> u64 {
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

pub(crate) fn proc_status_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Samples VmHWM of processes that will exit on their own, every 2 ms until stopped;
/// the sum of the last value read for each is their peak RSS.
pub(crate) struct HwmSampler {
    pub(crate) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) thread: thread::JoinHandle<u64>,
}

impl HwmSampler {
    pub(crate) fn start(pids: Vec<libc::pid_t>) -> HwmSampler {
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

    pub(crate) fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Forwards each stdout line of a child to a channel, so we can wait with a timeout.
pub(crate) fn line_reader(out: ChildStdout) -> mpsc::Receiver<String> {
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
pub(crate) fn free_port() -> Result<u16, String> {
    Ok(ports::free_port())
}

/// Whether some socket listens on `port` (IPv4 or IPv6), without connecting to it:
/// socat and nc serve a single connection, so a probe connection would use it up.
pub(crate) fn is_listening(port: u16) -> bool {
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
