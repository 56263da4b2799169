//! The documentation of every key, one table for accio-server.toml(5)
//! (rendered by tests/manpage.rs), checked against the shipped example.

/// One documented key of the file, for accio-server.toml(5).
pub struct KeyDoc {
    pub name: &'static str,
    pub default: &'static str,
    /// "live" or "restart needed".
    pub reload: &'static str,
    pub text: &'static str,
}

/// The file's format, before the keys: one paragraph each.
pub const FILE_FORMAT: &[&str] = &[
    "accio-server reads this TOML file when started with --config FILE, and again on SIGHUP \
     (systemctl reload accio-server). Every key is optional; a key that is not there keeps its \
     default. A key it does not know, a value of the wrong type or out of range stops the start \
     with exit status 78 and one line naming the file, the key and the line and column; on a \
     reload such a file changes nothing (the error is logged) and serving goes on. The file \
     must be a regular file of at most 1 MiB.",
    "Durations are a whole number and a unit in quotes: \"500ms\", \"10s\", \"2m\", \"1h\". \
     Sizes are a number of bytes, or a string of digits with an optional binary unit: \
     \"512KiB\", \"100MiB\", \"2GiB\", \"1TiB\". Keys marked live apply at the reload; the \
     others need a restart (a reload that changes one logs a warning).",
    "Check a file without starting: accio-server --config FILE --check-config PORT.",
];

/// Every key, in the order of the shipped example.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "port",
        default: "none",
        reload: "restart needed",
        text: "TCP port, 1 to 65535. A PORT argument overrides it. Not bound under socket \
               activation, where the .socket unit decides the port.",
    },
    KeyDoc {
        name: "bind",
        default: "\"0.0.0.0\"",
        reload: "restart needed",
        text: "The IPv4 or IPv6 literal to listen on; \"::\" listens dual-stack. Host names are \
               not accepted. --bind overrides it.",
    },
    KeyDoc {
        name: "idle_timeout",
        default: "\"10s\"",
        reload: "live, for open connections from their next byte on",
        text: "A connection that sends nothing for this long ends with ERROR. The clock starts \
               at the accept and restarts at every byte. Greater than zero.",
    },
    KeyDoc {
        name: "max_connections",
        default: "1024",
        reload: "live",
        text: "Connections served at once, 1 to 1000000; more wait in the listen backlog. 1 is \
               strictly sequential. Limited to what the open-file limit allows (a warning says \
               so).",
    },
    KeyDoc {
        name: "max_per_source",
        default: "16",
        reload: "live",
        text: "Open connections per client source (an IPv4 address, or an IPv6 network, see \
               source_prefix_v6); one more is reset at once with an ERROR line and no greeting. \
               0 means no cap.",
    },
    KeyDoc {
        name: "source_prefix_v6",
        default: "64",
        reload: "live, for new connections",
        text: "An IPv6 client counts as its address cut to this many bits, 1 to 128.",
    },
    KeyDoc {
        name: "min_rate",
        default: "0",
        reload: "live",
        text: "Bytes per second a client must average: a connection open longer than \
               idle_timeout + bytes / min_rate ends with ERROR. 0 turns it off.",
    },
    KeyDoc {
        name: "shutdown_grace",
        default: "\"0s\"",
        reload: "live",
        text: "How long a stop (SIGTERM, SIGINT, SIGQUIT) waits for open connections before it \
               ends them with ERROR.",
    },
    KeyDoc {
        name: "backlog",
        default: "128",
        reload: "restart needed",
        text: "The listen backlog when the server binds its socket itself, 1 to 65535.",
    },
    KeyDoc {
        name: "proxy_protocol",
        default: "false",
        reload: "restart needed",
        text: "true: every connection starts with a PROXY protocol header, version 1 or 2, as \
               HAProxy, nginx and AWS NLB send it. The greeting follows the header; the header \
               is not counted; logs and max_per_source use the client address it carries.",
    },
    KeyDoc {
        name: "output",
        default: "\"plain\"",
        reload: "restart needed",
        text: "Each connection's stdout line: \"plain\" (the byte count, or ERROR) or \"json\" \
               (one object: conn, peer, bytes, result, reason, secs, file). --output overrides \
               it.",
    },
    KeyDoc {
        name: "save_dir",
        default: "unset (nothing is saved)",
        reload: "restart needed",
        text: "Also save connection N's bytes as N.file in this directory. --save-dir overrides \
               it.",
    },
    KeyDoc {
        name: "fsync",
        default: "true",
        reload: "live",
        text: "Flush each saved file and the directory to disk before the file appears and its \
               count is printed.",
    },
    KeyDoc {
        name: "max_file_size",
        default: "\"0\" (no limit)",
        reload: "live",
        text: "A connection that sends more ends with ERROR and a reset, in counting mode too.",
    },
    KeyDoc {
        name: "min_free_space",
        default: "\"5%\"",
        reload: "live",
        text: "A size, or a percentage of the save directory's file system (\"0%\" to \"99%\"); \
               \"0\" turns it off. A transfer that would leave less free space ends with ERROR, \
               and while free space is below it new clients are refused.",
    },
    KeyDoc {
        name: "[log] target",
        default: "\"auto\"",
        reload: "live",
        text: "\"auto\": stderr when it is a terminal, else syslog when /dev/log accepts \
               messages, else stderr. \"syslog\" or \"stderr\" force one.",
    },
    KeyDoc {
        name: "[log] level",
        default: "\"info\"",
        reload: "live",
        text: "The least severe message kept: \"error\", \"warning\" (or \"warn\"), \"info\" or \
               \"debug\". Start, stop and reload lines are kept at every level but \"error\".",
    },
];

/// A short example for the manual.
pub const EXAMPLE: &str = "idle_timeout = \"30s\"
max_per_source = 8
save_dir = \"/var/lib/accio-server\"
max_file_size = \"10GiB\"

[log]
level = \"warning\"";
