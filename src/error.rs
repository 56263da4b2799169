//! Startup errors and the exit codes they map to.
//!
//! Every way the server can refuse to start is one variant here, so the
//! mapping to sysexits(3) codes lives in one place and the binary's `main`
//! only prints and exits. Errors while serving are never `Error`s: they are
//! logged and serving goes on.

use std::fmt;

use crate::exit;

/// A reason to refuse to start, with a message a user can act on.
#[derive(Debug)]
pub enum Error {
    /// Bad command line: wrong or missing PORT, unknown option (EX_USAGE).
    Usage(String),
    /// Unreadable or invalid configuration file (EX_CONFIG).
    Config(String),
    /// A socket could not be created, bound or inherited (EX_OSERR).
    Os(String),
    /// The save directory cannot be created or written (EX_CANTCREAT).
    CantCreate(String),
}

impl exit::Status for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Config(_) => exit::CONFIG,
            Error::Os(_) => exit::OSERR,
            Error::CantCreate(_) => exit::CANTCREAT,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Config(m) | Error::Os(m) | Error::CantCreate(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Error {}
