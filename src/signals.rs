//! Signal handling as readiness events.
//!
//! signal-hook installs its handlers with SA_RESTART, so a blocked syscall
//! would never wake for SIGTERM. Instead each signal writes to a self-pipe
//! that the event loop polls beside the sockets (signal-hook-mio), and the
//! loop itself decides what to do. SIGPIPE needs nothing: the Rust runtime
//! ignores it, so a broken stdout is an EPIPE error. SIGUSR1 asks for a
//! stats line; SIGUSR2 is ignored, so that neither kills the server by its
//! default action.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals as Pipe;

/// What a signal asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stop(&'static str),
    Reload,
    Stats,
}

pub struct Signals {
    pipe: Pipe,
    /// Set by the handler itself on a stop signal, so code that waits
    /// outside the loop (a stdout write) can see a stop the loop has not
    /// read from the pipe yet.
    stopping: Arc<AtomicBool>,
}

impl Signals {
    /// Install the handlers. Call early: until then SIGTERM kills the
    /// process with its default action.
    pub fn install() -> io::Result<Signals> {
        let stopping = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT, SIGQUIT] {
            signal_hook::flag::register(sig, stopping.clone())?;
        }
        // SAFETY: SIG_IGN installs no handler code.
        if unsafe { libc::signal(SIGUSR2, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
        Ok(Signals {
            pipe: Pipe::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])?,
            stopping,
        })
    }

    /// True from the moment a stop signal arrived.
    pub fn stopping(&self) -> &AtomicBool {
        &self.stopping
    }

    pub fn source(&mut self) -> &mut Pipe {
        &mut self.pipe
    }

    /// The signals that arrived since the last call, in order.
    pub fn pending(&mut self) -> Vec<Request> {
        self.pipe
            .pending()
            .map(|sig| match sig {
                SIGHUP => Request::Reload,
                SIGUSR1 => Request::Stats,
                SIGINT => Request::Stop("SIGINT"),
                SIGQUIT => Request::Stop("SIGQUIT"),
                _ => Request::Stop("SIGTERM"),
            })
            .collect()
    }
}
