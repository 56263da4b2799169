//! `client` (installed as accio-client): all logic is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    accio_server::exit::report(accio_server::client::main(std::env::args_os().collect()))
}
