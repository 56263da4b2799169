//! The client's command line: clap definition (also the source of
//! accio-client(1)), the manual, and parsing into [`Args`] with the same
//! strict PORT rules as the server.

use super::*;

/// What to send where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Host name, IPv4 or IPv6 literal (`::1`; `[::1]` is accepted too).
    pub host: String,
    pub port: u16,
    /// The file to send; `-` is standard input.
    pub file: PathBuf,
    /// `Some(true)`: `--progress`; `Some(false)`: `--no-progress`; `None`:
    /// on when stderr is a terminal (and TERM is not `dumb`).
    pub progress: Option<bool>,
}

/// The outcome of parsing: send, or print text (help, version).
pub type Action = crate::cmdline::Action<Args>;

pub(super) const ABOUT: &str = "Accio protocol client: connects to an Accio server, waits for its \
\"accio\\r\\n\" greeting, sends FILE (- for standard input), closes its sending side and \
waits for the server to close the connection.";

/// The manual beyond the options; one source for `--help` and accio-client(1).
pub const MANUAL: &[Section] = &[
    Section {
        title: "TRANSFER",
        items: &[(
            "",
            "FILE is opened before any connection is made. HOST is resolved and its addresses \
             are tried in order. After connecting, the client waits until the complete greeting \
             accio\\r\\n has arrived (it may come in pieces) and sends nothing before. A regular \
             file is sent with sendfile(2); standard input, pipes and devices are copied through \
             one 64 KiB buffer, so files of any size are sent in constant memory. Then the \
             client closes its sending side and waits for the server to close the connection. \
             That close confirms the transfer only if the server had acknowledged every byte \
             and the client's close before: a server that closes its side (or the whole \
             connection) earlier is an error (69). Bytes the server sends after the greeting \
             are read and ignored.",
        )],
    },
    Section {
        title: "INTERRUPTION",
        items: &[(
            "",
            "An upload that did not finish never looks complete. The protocol has no length \
             header: the client's orderly close (FIN) after the last byte is the only \"done\". \
             So on any error after connecting, and on SIGINT, SIGTERM or SIGHUP, the client \
             resets the connection instead of closing it; the server then reports ERROR (and, \
             saving, keeps the ERROR marker instead of a partial file). The socket has \
             SO_LINGER 0 from before it connects, so the kernel resets it too when the client \
             dies some other way, even by SIGKILL. A crash of the client's machine or a cut \
             network sends nothing at all: the server's idle timeout ends such a connection \
             with ERROR. What cannot be told apart from a complete upload is an input that \
             ends early: when the program writing to standard input dies, or FILE is cut short \
             while it is sent, the client sees a normal end of file and the server counts what \
             arrived. Check the writer's exit status (set -o pipefail) before trusting such a \
             count. A signal ends the client with exit 128 + its number (129 SIGHUP, 130 \
             SIGINT, 143 SIGTERM), after the reset; a second signal takes its default action at \
             once. SIGPIPE is ignored: a broken connection is an error like any other.",
        )],
    },
    Section {
        title: "TIMEOUTS",
        items: &[(
            "",
            "10 seconds for each of: connecting (one budget shared by all addresses of HOST), \
             the complete greeting, a send during which the server accepts no data (also \
             after the client's close, while sent data is still unacknowledged), and the \
             server's close once everything sent was acknowledged (10 s in all, never \
             restarted). There is no timeout on reading FILE.",
        )],
    },
    Section {
        title: "PROGRESS",
        items: &[(
            "",
            "With --progress (the default when standard error is a terminal and TERM is not \
             dumb) one line on standard error shows the elapsed time and, for a regular file, a \
             bar, bytes sent of the total and the percentage, the current rate, the average \
             rate (avg) and the estimated time left (ETA); for standard input or a pipe, whose \
             size is unknown, a spinner, bytes sent and both rates. Sizes are binary (KiB, MiB, \
             GiB). The line fits the terminal width (fields are left out, most important last, \
             when it is narrow) and is redrawn 5 times a second, also while the transfer \
             stalls, so the clock and the current rate keep moving. It ends with a newline: \
             \"done\" after a confirmed transfer, \"aborted\" before an ERROR line. When \
             standard error is not a terminal, --progress draws the same line at the width in \
             COLUMNS (default 80), each redraw starting with a carriage return. With \
             --no-progress, or when standard error is not a terminal and --progress is not \
             given, nothing but errors is written to standard error.",
        )],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            (
                "0",
                "FILE was sent, the server acknowledged every byte and then closed the \
                 connection; --help, --version.",
            ),
            (
                "64",
                "Bad arguments: missing or extra argument, bad PORT, unknown option.",
            ),
            ("66", "FILE cannot be opened or read."),
            ("68", "HOST cannot be resolved."),
            (
                "69",
                "Connection refused, reset by the server, or otherwise failed; or the server \
                 closed its side before the client had sent all of FILE and closed.",
            ),
            (
                "75",
                "A timeout: connect, greeting, a stalled send, or the server's close.",
            ),
            (
                "76",
                "The server sent something other than the greeting accio\\r\\n.",
            ),
            (
                "129, 130, 143",
                "Interrupted by SIGHUP, SIGINT or SIGTERM; the connection was reset, so the \
                 server reports ERROR.",
            ),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            (
                "accio-client localhost 5000 backup.tar",
                "Send a file to the server on this machine.",
            ),
            (
                "tar c /etc | accio-client 2001:db8::7 5000 -",
                "Stream standard input to an IPv6 address, in constant memory.",
            ),
            (
                "accio-client --progress files.example.org 5000 big.iso 2>>log",
                "Show progress even though standard error is not a terminal.",
            ),
        ],
    },
];

/// The clap definition; also the source of the man page.
pub fn command() -> Command {
    program("client", ABOUT, MANUAL)
        .arg(
            Arg::new("host")
                .value_name("HOST")
                .required(true)
                .help("Server to send to: host name, IPv4 or IPv6 address (::1 or [::1])"),
        )
        .arg(port_arg("TCP port of the server, 1-65535").required(true))
        .arg(
            Arg::new("file")
                .value_name("FILE")
                .required(true)
                .help("File to send; - sends standard input")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("progress")
                .long("progress")
                .action(ArgAction::SetTrue)
                .overrides_with("no-progress")
                .help("Show progress on stderr: bar, bytes, rates, ETA (default: only if stderr is a terminal)"),
        )
        .arg(
            Arg::new("no-progress")
                .long("no-progress")
                .action(ArgAction::SetTrue)
                .overrides_with("progress")
                .help("Never show progress"),
        )
}

/// Parse argv (including the program name) into an [`Action`].
pub fn parse(argv: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Action, Error> {
    get_matches(command(), argv, USAGE)
        .map_err(Error::Usage)?
        .and_then(args)
}

/// The client's arguments from clap's matches: HOST must not be empty.
fn args(matches: clap::ArgMatches) -> Result<Args, Error> {
    let host = matches
        .get_one::<String>("host")
        .cloned()
        .unwrap_or_default();
    // `[::1]` as in URLs: the brackets are not part of the address.
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => host,
    };
    if host.is_empty() {
        return Err(Error::Usage(format!(
            "HOST is empty: give a host name or an IP address\n{}",
            usage_hint(USAGE)
        )));
    }
    let progress = if matches.get_flag("progress") {
        Some(true)
    } else if matches.get_flag("no-progress") {
        Some(false)
    } else {
        None
    };
    Ok(Args {
        host,
        port: matches.get_one::<u16>("port").copied().unwrap_or_default(),
        file: matches
            .get_one::<PathBuf>("file")
            .cloned()
            .unwrap_or_default(),
        progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Status;

    fn run(argv: &[&str]) -> Result<Action, Error> {
        parse(argv)
    }

    #[test]
    fn parses_host_port_file() {
        match run(&["client", "localhost", "05000", "-"]) {
            Ok(Action::Run(a)) => {
                assert_eq!(a.host, "localhost");
                assert_eq!(a.port, 5000);
                assert_eq!(a.file, PathBuf::from("-"));
                assert_eq!(a.progress, None);
            }
            other => panic!("{other:?}"),
        }
        match run(&["client", "[::1]", "1", "f", "--progress"]) {
            Ok(Action::Run(a)) => {
                assert_eq!(a.host, "::1");
                assert_eq!(a.progress, Some(true));
            }
            other => panic!("{other:?}"),
        }
        match run(&["client", "--progress", "--no-progress", "h", "1", "f"]) {
            Ok(Action::Run(a)) => assert_eq!(a.progress, Some(false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_64_and_one_error_line() {
        for argv in [
            vec!["client"],
            vec!["client", "h", "1"],
            vec!["client", "h", "0", "f"],
            vec!["client", "h", "65536", "f"],
            vec!["client", "h", "-1", "f"],
            vec!["client", "h", "+5000", "f"],
            vec!["client", "h", "5000abc", "f"],
            vec!["client", "h", "1", "f", "extra"],
            vec!["client", "--bogus", "h", "1", "f"],
            vec!["client", "", "1", "f"],
            vec!["client", "[]", "1", "f"],
        ] {
            match run(&argv) {
                Err(e @ Error::Usage(_)) => {
                    assert_eq!(e.exit_code(), 64);
                    let m = e.to_string();
                    assert!(!m.starts_with("error"), "{m}");
                    assert!(m.contains("Usage: client"), "{m}");
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn help_and_version_are_printed() {
        for argv in [["client", "--help"], ["client", "-V"]] {
            assert!(matches!(run(&argv), Ok(Action::Print(_))), "{argv:?}");
        }
    }
}
