//! Servers with raw pipes, for the soak and the regression tests: stdout
//! as a small pipe that the test reads at its own pace (so the server's
//! writes block), stderr with room for a burst of debug lines, and every
//! notification kept with its arrival time.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{BIN, Lines, Notify, Reaper, TempDir, free_port, wait_ready};

pub fn spawn_named<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    name: &str,
    f: F,
) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn thread")
}

/// Every datagram the server sent to NOTIFY_SOCKET (drained so that it can
/// never block the server).
pub struct NotifyLog {
    msgs: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyLog {
    pub fn drain(sock: &std::os::unix::net::UnixDatagram) -> NotifyLog {
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
    pub fn finish(&mut self) -> Vec<String> {
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
    pub fn count_since(&self, needle: &str, since: Instant) -> usize {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| *t >= since && m.contains(needle))
            .count()
    }
}

/// A server child with raw pipes, ready (READY=1 seen); `wrapper` runs it
/// (prlimit), `env` adds variables. Retries on a port clash (exit 71).
pub struct Raw {
    pub child: Reaper,
    pub port: u16,
    pub stdout: std::process::ChildStdout,
    pub stderr: Lines,
    pub notify: Notify,
    pub config: PathBuf,
    pub dir: TempDir,
}

pub fn spawn_raw(config: &str, wrapper: &[&str], env: &[(&str, &str)]) -> Raw {
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
        let stderr = child.0.stderr.take().expect("stderr");
        // The log is written without blocking: a line that does not fit in
        // the pipe is dropped. 1 MiB rides out a reader held up for a while.
        // SAFETY: fcntl on a pipe fd we own.
        unsafe { libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        let stderr = Lines::new(stderr);
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
