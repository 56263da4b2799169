//! What both programs' command lines share: the manual sections (one
//! source for `--help` and the man pages), the clap skeleton, turning
//! clap's errors into one `ERROR:` line with exit 64, and the strict PORT.

use std::ffi::OsString;

use clap::{Arg, Command};

/// A titled part of the manual after the options: in `--help` and, as its
/// own section, in the man page. An item with an empty term is a paragraph.
pub struct Section {
    pub title: &'static str,
    pub items: &'static [(&'static str, &'static str)],
}

/// Word-wrap `text` to `width` columns, each line indented by `indent`.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&format!("{:indent$}{line}\n", ""));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{:indent$}{line}\n", ""));
    }
    out
}

/// Render manual sections as plain text for clap's `after_help`.
pub fn render_manual(sections: &[Section]) -> String {
    let mut out = String::new();
    for section in sections {
        out.push_str(section.title);
        out.push('\n');
        for (term, text) in section.items {
            if term.is_empty() {
                out.push_str(&wrap(text, 4, 80));
            } else {
                out.push_str(&format!("    {term}\n"));
                out.push_str(&wrap(text, 8, 80));
            }
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// How both programs' clap definitions begin: name, version, summary, and
/// the manual after the options.
pub fn program(name: &'static str, about: &'static str, manual: &[Section]) -> Command {
    Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .after_help(render_manual(manual))
}

/// A PORT argument, parsed by [`parse_port`]. Negative numbers are let
/// through to it, so `-1` gets the port message, not "unknown option".
pub fn port_arg(help: &'static str) -> Arg {
    Arg::new("port")
        .value_name("PORT")
        .help(help)
        .allow_negative_numbers(true)
        .value_parser(parse_port)
}

/// What a command line asks for: to run (with clap's matches, then with
/// the program's arguments made from them), or to print text.
#[derive(Debug)]
pub enum Action<A> {
    Run(A),
    /// Help or version text for stdout, after which the process exits 0.
    Print(String),
}

impl<A> Action<A> {
    /// The program's arguments made from clap's matches by `f`, which may
    /// still refuse them; text to print passes through.
    pub fn and_then<B, E>(self, f: impl FnOnce(A) -> Result<B, E>) -> Result<Action<B>, E> {
        match self {
            Action::Run(a) => f(a).map(Action::Run),
            Action::Print(text) => Ok(Action::Print(text)),
        }
    }
}

/// Run clap without letting it exit: help and version become text to
/// print, any other error the one-line usage message (`Err`) that the
/// caller turns into `ERROR:` and exit 64.
pub fn get_matches<I, T>(
    cmd: Command,
    argv: I,
    usage: &str,
) -> Result<Action<clap::ArgMatches>, String>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // The program's name as invoked (accio-server once installed), made
    // safe to print: clap shows it in help and version text.
    let name = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or(
            usage
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            |n| crate::log::clean(&n.to_string_lossy(), 100),
        );
    if let Some(first) = argv.first_mut() {
        *first = OsString::from(&name);
    }
    match cmd.try_get_matches_from(&argv) {
        Ok(m) => Ok(Action::Run(m)),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp => Ok(Action::Print(e.to_string())),
            // As the program was invoked: accio-server once installed.
            clap::error::ErrorKind::DisplayVersion => Ok(Action::Print(format!(
                "{name} {}\n",
                env!("CARGO_PKG_VERSION")
            ))),
            _ => Err(usage_message(&e.to_string(), usage)),
        },
    }
}

/// The second line of every usage error: the synopsis and where to read on.
pub fn usage_hint(usage: &str) -> String {
    let program = usage.split_whitespace().next().unwrap_or(usage);
    format!("Usage: {usage}; try '{program} --help'")
}

/// Turn clap's multi-line `error: ...` report into one `ERROR:` line plus
/// a hint: the lines up to the first blank one are one sentence (the
/// missing arguments are listed on the lines after the first).
fn usage_message(clap_text: &str, usage: &str) -> String {
    let first: Vec<&str> = clap_text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = if first.is_empty() {
        "invalid command line".to_string()
    } else {
        first.join(" ")
    };
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    let first = crate::log::clean(first, 600);
    let tip = clap_text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!("\n  {}", crate::log::clean(t, 300)))
        .unwrap_or_default();
    format!("{first}{tip}\n{}", usage_hint(usage))
}

/// PORT as the command line takes it: ASCII digits only (leading zeros allowed),
/// value 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    let bad = || {
        format!(
            "PORT must be a number from 1 to 65535 written in digits, not {}",
            crate::log::quote(s)
        )
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let significant = s.trim_start_matches('0');
    if significant.len() > 5 {
        return Err(bad());
    }
    match significant.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(bad()),
    }
}
