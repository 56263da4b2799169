//! Exit statuses, from sysexits.h, for both programs, and the one way a
//! program's result becomes output and a status: so the numbers are written
//! once, and `main` in each binary is a single call.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

/// Bad command line (an option, PORT, a value).
pub const USAGE: u8 = 64;
/// An input file that cannot be read.
pub const NOINPUT: u8 = 66;
/// A host name that does not resolve.
pub const NOHOST: u8 = 68;
/// The other side refused, failed or closed too early.
pub const UNAVAILABLE: u8 = 69;
/// A socket could not be made, bound or inherited.
pub const OSERR: u8 = 71;
/// A directory to write into cannot be used.
pub const CANTCREAT: u8 = 73;
/// A timeout: trying again later may work.
pub const TEMPFAIL: u8 = 75;
/// The other side does not speak the protocol.
pub const PROTOCOL: u8 = 76;
/// The configuration file is unreadable or invalid.
pub const CONFIG: u8 = 78;

/// An error that knows its exit status.
pub trait Status: Display {
    fn exit_code(&self) -> u8;
}

/// Print what a program's run produced and turn it into its exit status:
/// text (help, version) to stdout and 0, or one `ERROR:` line on stderr and
/// the error's status. A stdout that cannot be written is not an error of
/// the program's.
pub fn report<E: Status>(result: Result<Option<String>, E>) -> ExitCode {
    match result {
        Ok(Some(text)) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "ERROR: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
