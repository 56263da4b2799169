//! SIGINT, SIGTERM and SIGHUP as a self-pipe the transfer polls beside
//! the socket: signal-hook installs handlers with SA_RESTART, so a blocked
//! call would never return, and an interrupted upload must end in a reset.

use super::*;

/// SIGINT, SIGTERM and SIGHUP, caught: each sets flags and writes a byte to
/// a socket pair whose other end every wait polls.
pub(super) struct Signals {
    /// The number of the last signal caught; 0 for none.
    pub(super) caught: Arc<AtomicUsize>,
    /// The read end of the self-pipe (never drained: one signal ends the run).
    pub(super) wake: UnixStream,
}

impl Signals {
    pub(super) fn install() -> io::Result<Signals> {
        let caught = Arc::new(AtomicUsize::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let (wake, alarm) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        for sig in CAUGHT {
            // In this order: a second signal (fired already set) takes the
            // default action; the number is stored before the pipe wakes
            // the poll that reads it.
            signal_hook::flag::register_conditional_default(sig, fired.clone())?;
            signal_hook::flag::register_usize(sig, caught.clone(), sig as usize)?;
            signal_hook::flag::register(sig, fired.clone())?;
            signal_hook::low_level::pipe::register(sig, alarm.try_clone()?)?;
        }
        Ok(Signals { caught, wake })
    }

    /// The signal caught, if any.
    pub(super) fn pending(&self) -> Option<c_int> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => c_int::try_from(n).ok(),
        }
    }

    /// poll(2) `fds` (a descriptor of -1 is skipped) beside the self-pipe
    /// until one is ready (true, their `revents` set), `deadline` passes
    /// (false; `None` waits forever) or a signal arrives (its number). An
    /// error of poll itself counts as ready: the next call reports it.
    pub(super) fn wait(
        &self,
        fds: &mut [libc::pollfd; 2],
        deadline: Option<Instant>,
    ) -> Result<bool, c_int> {
        loop {
            if let Some(sig) = self.pending() {
                return Err(sig);
            }
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    // Round up: never spin on a sub-millisecond remainder.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as c_int
                }
            };
            let mut all = [
                fds[0],
                fds[1],
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: three valid pollfds.
            let n = unsafe { libc::poll(all.as_mut_ptr(), all.len() as libc::nfds_t, timeout) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Ok(true);
            }
            if all[0].revents != 0 || all[1].revents != 0 {
                fds[0].revents = all[0].revents;
                fds[1].revents = all[1].revents;
                return Ok(true);
            }
            // A signal (the next turn returns it), EINTR, or the timeout.
        }
    }
}

/// The signal's name for messages: "SIGINT".
pub(super) fn signal_name(sig: c_int) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), String::from)
}
