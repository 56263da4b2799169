//! `server` (installed as accio-server): all logic is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    accio_server::exit::report(unsafe { accio_server::app::main(std::env::args_os().collect()) })
}
