//! The start sequence, in the order daemon(7) and the contract need it.
//!
//! 1. Take the socket-activation fds and unset their variables while the
//!    process is still single-threaded.
//! 2. Parse the command line and the configuration; nothing is bound and
//!    nothing is printed to stdout before they are valid.
//! 3. Install signal handlers before binding, so a SIGTERM during start is
//!    a clean stop, not a kill.
//! 4. Open or adopt the listeners, then serve (READY=1 once they listen).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use crate::cli::{self, Action};
use crate::config::Settings;
use crate::error::Error;
use crate::listener;
use crate::log::Log;
use crate::save::SaveDir;
use crate::server::Server;
use crate::signals::Signals;

/// Run the server with this argv; `Ok(Some(text))` is text for stdout
/// (help, version).
///
/// # Safety
/// Must be called while the process is single-threaded (it edits the
/// environment).
pub unsafe fn main(argv: Vec<std::ffi::OsString>) -> Result<Option<String>, Error> {
    // SAFETY: forwarded from the caller.
    let inherited = unsafe { listener::take_inherited() }?;
    guard_std_fds();
    let args = match cli::parse(argv)? {
        Action::Print(text) => return Ok(Some(text)),
        Action::Run(args) => args,
    };
    let settings = Settings::load(&args)?;
    let port = match (settings.port, inherited.is_empty()) {
        (Some(p), _) => Some(p),
        (None, false) => None,
        (None, true) => {
            return Err(Error::Usage(format!(
                "missing PORT: give it as an argument (server 5000) or as `port` in the --config file\n{}",
                crate::cmdline::usage_hint(cli::USAGE)
            )));
        }
    };
    if args.check_config {
        let listen = if inherited.is_empty() {
            format!("{}:{}", settings.bind, port.unwrap_or_default())
        } else {
            // The same checks a start makes: each must be a listening
            // TCP socket.
            let addrs = inherited
                .into_iter()
                .map(|fd| listener::adopt(fd).map(|(_, a)| a.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            format!("the inherited sockets {}", addrs.join(", "))
        };
        let source = settings
            .source
            .as_ref()
            .map_or("no configuration file".to_string(), |p| {
                p.display().to_string()
            });
        let saving = match &settings.save_dir {
            Some(dir) => {
                crate::save::check(dir)?;
                format!(", save files in {}", dir.display())
            }
            None => String::new(),
        };
        eprintln!("configuration OK ({source}): would listen on {listen}{saving}");
        return Ok(None);
    }
    let log = Log::new(settings.log_target, settings.log_level);
    let save = match &settings.save_dir {
        Some(dir) => Some(SaveDir::open(dir, settings.min_free_space, &|m| {
            log.warning(m)
        })?),
        None => None,
    };
    let signals = Signals::install()
        .map_err(|e| Error::Os(format!("cannot install signal handlers: {e}")))?;
    let listeners = if inherited.is_empty() {
        let addr = SocketAddr::new(settings.bind, port.unwrap_or_default());
        let l = listener::bind(addr, settings.backlog)?;
        vec![(l, addr)]
    } else {
        adopt_all(inherited, port, &log)?
    };
    let server = Server::new(listeners, settings, args, &log, signals, save)
        .map_err(|e| Error::Os(format!("cannot start the event loop: {e}")))?;
    server
        .run()
        .map_err(|e| Error::Os(format!("event loop failed: {e}")))?;
    Ok(None)
}

fn adopt_all(
    fds: Vec<OwnedFd>,
    port: Option<u16>,
    log: &Log,
) -> Result<Vec<(std::net::TcpListener, SocketAddr)>, Error> {
    let listeners = fds
        .into_iter()
        .map(listener::adopt)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = port
        && !listeners.iter().any(|(_, a)| a.port() == p)
    {
        let have: Vec<String> = listeners.iter().map(|(_, a)| a.to_string()).collect();
        log.warning(&format!(
            "port {p} from the command line or configuration is ignored under socket activation; serving the inherited sockets {}",
            have.join(", ")
        ));
    }
    Ok(listeners)
}

/// If stdin, stdout or stderr is closed, park /dev/null there so a socket
/// can never land on fd 0-2. stdout gets it read-only: writing a count then
/// fails and is logged, instead of silently vanishing.
fn guard_std_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(fd != 1)
            .open("/dev/null")
        else {
            continue;
        };
        // fds below `fd` are open, so open(2) normally returns `fd` itself.
        if null.as_raw_fd() == fd {
            let _ = null.into_raw_fd();
        } else {
            // SAFETY: dup2 onto a closed standard descriptor; `null` itself
            // is closed when dropped, the copy stays.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
