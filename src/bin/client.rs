//! `client`: sends one file to an Accio server (installed as accio-client).
//! All logic is in the library; this only maps the result to output and an
//! exit code (see `--help`, EXIT STATUS).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match accio_server::client::main(std::env::args_os().collect()) {
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
