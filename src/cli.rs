//! The command line: `server [OPTIONS] [PORT]`.
//!
//! Parsing is strict on purpose. `u16::from_str` accepts `+5000` and `0`,
//! which are not ports, so PORT has its own parser. clap renders help and
//! reports unknown options, but its own error exit (status 2, `error:`) is
//! replaced by the contract's `ERROR:` line and status 64.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, value_parser};

use crate::cmdline::{Section, get_matches, port_arg, program};
use crate::error::Error;

/// What the user asked for on the command line, before any file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// Overrides `port` from the configuration file.
    pub port: Option<u16>,
    /// The TOML file to read at start and on every SIGHUP.
    pub config: Option<PathBuf>,
    /// Validate everything, print one line, bind nothing.
    pub check_config: bool,
    /// Overrides `save_dir` from the configuration file.
    pub save_dir: Option<PathBuf>,
    /// Overrides `bind` from the configuration file.
    pub bind: Option<std::net::IpAddr>,
    /// Overrides `output` from the configuration file.
    pub output: Option<crate::output::Format>,
}

/// The outcome of parsing: run the server, or print text (help, version).
pub type Action = crate::cmdline::Action<Args>;

const ABOUT: &str = "Accio protocol server: greets every TCP client with \"accio\\r\\n\", \
counts the bytes it sends until it closes, and prints one line per connection on stdout.";

/// The manual beyond the options; one source for `--help` and accio-server(8).
pub const MANUAL: &[Section] = &[
    Section {
        title: "OUTPUT",
        items: &[(
            "",
            "One line per accepted connection on stdout, written in one write(2) before the \
             connection is closed: the decimal number of bytes the client sent, when it closed \
             its sending side in order; or ERROR, when it sent nothing for idle_timeout (default \
             10s; restarted by every byte), reset the connection, could not be greeted, or was \
             still open when the server stopped. Nothing else is written to stdout; if stdout is \
             broken the count is logged at err instead.",
        )],
    },
    Section {
        title: "LIMITS",
        items: &[(
            "",
            "Up to max_connections (default 1024) clients are served at once; more wait in the \
             listen backlog. The soft open-file limit is raised to the hard one at start; what \
             still does not fit is a warning, and the server serves as many as fit. A source \
             (an IPv4 address, or an IPv6 /64, see source_prefix_v6) may hold max_per_source \
             (default 16) connections; one more is reset at once with an ERROR line, no \
             greeting and no number. With min_rate, a connection open longer than idle_timeout \
             + bytes / min_rate ends with ERROR. With proxy_protocol, every connection must \
             start with a PROXY v1 or v2 header (HAProxy, nginx, AWS NLB); the greeting \
             follows it, the header is not counted, and logs and limits use the address it \
             carries.",
        )],
    },
    Section {
        title: "SAVING",
        items: &[(
            "",
            "With --save-dir DIR (or save_dir), connection N's bytes are also written, \
             socket to file by splice(2), to a temporary file in DIR that has no name (or a \
             random hidden one) and becomes DIR/N.file once the client closed in order (after \
             fsync unless fsync = false); only then is its count line written. A connection \
             that ends with ERROR leaves exactly the 5 bytes ERROR there. Numbering continues \
             after the largest N.file already in DIR. Disk work runs on at most 8 threads, never \
             on the serving loop: a slow disk slows the saving clients (TCP back-pressure), not \
             the greetings, timeouts or a stop. DIR may be shared with other users: no symlink \
             is followed and no existing entry is replaced (if N.file already exists, that \
             connection ends with ERROR and the entry is left alone). One server per DIR (a \
             lock); a DIR writable by others gets a warning. max_file_size ends a larger \
             transfer with ERROR; min_free_space (default 5%) ends a transfer that would leave \
             less free space, and refuses new clients while space is below it.",
        )],
    },
    Section {
        title: "SIGNALS",
        items: &[
            (
                "SIGTERM, SIGINT, SIGQUIT",
                "Stop accepting, give open connections shutdown_grace (default 0s), end the rest \
                 with ERROR, exit 0. A second signal ends the grace.",
            ),
            (
                "SIGHUP",
                "Reload the --config file: idle_timeout, max_connections, max_per_source, \
                 source_prefix_v6, min_rate, shutdown_grace, fsync, max_file_size, min_free_space \
                 and [log] apply at once; port, bind, backlog, save_dir and proxy_protocol need a \
                 restart. An invalid file is logged and changes nothing.",
            ),
            (
                "SIGUSR1",
                "Log one line of statistics at notice (connections served and open, bytes, \
                 refusals by cause, uptime) and keep serving. SIGUSR2 is ignored.",
            ),
        ],
    },
    Section {
        title: "SYSTEMD",
        items: &[(
            "",
            "Sockets passed by socket activation (LISTEN_FDS, LISTEN_PID) are served and nothing \
             is bound. With NOTIFY_SOCKET set the server sends READY=1, STATUS=, RELOADING=1, \
             STOPPING=1 and, with WATCHDOG_USEC, WATCHDOG=1.",
        )],
    },
    Section {
        title: "FILES",
        items: &[(
            "/etc/accio-server/server.toml",
            "The packaged configuration (TOML; every key optional): port, bind, idle_timeout, \
             max_connections, max_per_source, source_prefix_v6, min_rate, shutdown_grace, \
             backlog, proxy_protocol, save_dir, fsync, max_file_size, min_free_space, [log] \
             target and level.",
        )],
    },
    Section {
        title: "DIAGNOSTICS",
        items: &[(
            "",
            "To stderr when it is a terminal, else to syslog (identifier accio-server, facility \
             daemon) when /dev/log accepts messages, else to stderr; see [log] in the \
             configuration. A sink that does not take a message at once never delays serving: \
             the message is dropped, and the number dropped is logged later. Under systemd, read \
             them with: journalctl -u accio-server _TRANSPORT=syslog (the count lines are \
             _TRANSPORT=stdout).",
        )],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            (
                "0",
                "Stopped by SIGTERM, SIGINT or SIGQUIT; --help, --version, a valid --check-config.",
            ),
            (
                "64",
                "Bad or missing PORT, unknown option, extra argument, bad --bind or --output value.",
            ),
            (
                "71",
                "Socket, bind or listen failure; an inherited fd that is not a listening TCP socket.",
            ),
            (
                "73",
                "The save directory cannot be created, is not a writable directory, is used by \
                 another server, or holds the largest possible N.file.",
            ),
            ("78", "Configuration file unreadable or invalid."),
        ],
    },
    Section {
        title: "EXAMPLES",
        items: &[
            (
                "accio-server 5000",
                "Listen on port 5000 on all IPv4 interfaces.",
            ),
            (
                "accio-server --bind :: --save-dir /srv/uploads 5000",
                "Listen dual-stack (IPv4 and IPv6) and keep every upload as /srv/uploads/N.file.",
            ),
            (
                "accio-server --config /etc/accio-server/server.toml",
                "Take every setting from a file (see accio-server.toml(5)).",
            ),
            (
                "accio-server --config FILE --check-config 5000",
                "Validate a file without starting.",
            ),
            (
                "kill -USR1 $(pidof accio-server)",
                "Log a line of statistics.",
            ),
        ],
    },
];

/// The clap definition; also the source of the man page.
pub fn command() -> Command {
    program("server", ABOUT, MANUAL)
        .arg(port_arg(
            "TCP port to listen on, 1-65535 (overrides `port` from the config file)",
        ))
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .help("Read settings from this TOML file (and again on SIGHUP)")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("save-dir")
                .long("save-dir")
                .value_name("DIR")
                .help("Also save each connection's bytes as DIR/<N>.file (overrides `save_dir`)")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("bind")
                .long("bind")
                .value_name("ADDR")
                .help("Listen on this IPv4 or IPv6 address instead of `bind` (\"::\" is dual-stack)")
                .value_parser(|s: &str| crate::config::parse_ip(s)),
        )
        .arg(
            Arg::new("output")
                .long("output")
                .value_name("FORMAT")
                .help("Each connection's stdout line: plain (the count or ERROR) or json")
                .value_parser(|s: &str| crate::output::Format::parse(s)),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the command line and the config file, print one line to stderr, bind nothing"),
        )
}

/// The server's synopsis, for usage hints.
pub const USAGE: &str = "server [OPTIONS] [PORT]";

/// Parse argv (including the program name) into an [`Action`].
pub fn parse(argv: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<Action, Error> {
    get_matches(command(), argv, USAGE)
        .map_err(Error::Usage)?
        .and_then(|matches| {
            Ok(Args {
                port: matches.get_one::<u16>("port").copied(),
                config: matches.get_one::<PathBuf>("config").cloned(),
                check_config: matches.get_flag("check-config"),
                save_dir: matches.get_one::<PathBuf>("save-dir").cloned(),
                bind: matches.get_one::<std::net::IpAddr>("bind").copied(),
                output: matches.get_one::<crate::output::Format>("output").copied(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_port;

    #[test]
    fn port_accepts_digits_in_range() {
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("5000"), Ok(5000));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("0005000"), Ok(5000));
        assert_eq!(parse_port("000000000000000080"), Ok(80));
    }

    #[test]
    fn port_rejects_everything_else() {
        for bad in [
            "0",
            "00",
            "65536",
            "-1",
            "+5000",
            " 5000",
            "5000 ",
            "5000abc",
            "0x50",
            "",
            "99999999999",
            "５０００",
        ] {
            assert!(parse_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn usage_errors_become_one_error_line() {
        for argv in [
            vec!["server", "--bogus"],
            vec!["server", "1", "2"],
            vec!["server", "0x50"],
            vec!["server", "-1"],
            vec!["server", "--config"],
        ] {
            match parse(&argv) {
                Err(Error::Usage(m)) => assert!(!m.starts_with("error"), "{m}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn config_forms() {
        for argv in [
            vec!["server", "-c", "f.toml"],
            vec!["server", "--config", "f.toml"],
            vec!["server", "--config=f.toml"],
        ] {
            match parse(&argv) {
                Ok(Action::Run(a)) => assert_eq!(a.config, Some(PathBuf::from("f.toml"))),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }
}
