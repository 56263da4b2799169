//! The client's errors: each variant is its exit code (sysexits.h, or
//! 128 + a signal), and its text says what failed and what to do.

use super::*;
use crate::exit;

/// Why a transfer did not happen or did not finish. The variant decides the
/// exit code; the text is the rest of the `ERROR:` line.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments or PORT (EX_USAGE, 64).
    Usage(String),
    /// FILE cannot be opened or read (EX_NOINPUT, 66).
    NoInput(String),
    /// HOST cannot be resolved (EX_NOHOST, 68).
    NoHost(String),
    /// Connection refused, reset or otherwise failed, or the server closed
    /// before our FIN (EX_UNAVAILABLE, 69).
    Unavailable(String),
    /// A 10 s timeout: connect, greeting, stalled send, close (EX_TEMPFAIL, 75).
    Timeout(String),
    /// The server's first bytes are not `accio\r\n` (EX_PROTOCOL, 76).
    Protocol(String),
    /// SIGINT, SIGTERM or SIGHUP (the number) arrived: the connection was
    /// reset; exit 128 + the number, as shells report a death by signal.
    Signal(c_int, String),
}

/// From sysexits.h, or 128 + the signal's number, as shells report it.
impl exit::Status for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NoInput(_) => exit::NOINPUT,
            Error::NoHost(_) => exit::NOHOST,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::Timeout(_) => exit::TEMPFAIL,
            Error::Protocol(_) => exit::PROTOCOL,
            Error::Signal(sig, _) => u8::try_from(128 + sig).unwrap_or(u8::MAX),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::NoInput(m)
            | Error::NoHost(m)
            | Error::Unavailable(m)
            | Error::Timeout(m)
            | Error::Protocol(m)
            | Error::Signal(_, m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// `e` without std's " (os error N)" suffix.
pub(super) fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Status;
    use libc::{SIGHUP, SIGINT, SIGTERM};

    #[test]
    fn exit_codes() {
        let codes: Vec<u8> = [
            Error::Usage(String::new()),
            Error::NoInput(String::new()),
            Error::NoHost(String::new()),
            Error::Unavailable(String::new()),
            Error::Timeout(String::new()),
            Error::Protocol(String::new()),
            Error::Signal(SIGHUP, String::new()),
            Error::Signal(SIGINT, String::new()),
            Error::Signal(SIGTERM, String::new()),
        ]
        .iter()
        .map(Error::exit_code)
        .collect();
        assert_eq!(codes, [64, 66, 68, 69, 75, 76, 129, 130, 143]);
    }
}
