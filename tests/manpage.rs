//! accio-server(8) is generated from the clap definition, so it cannot
//! drift from `--help`. The rendered page is committed (packaging needs no
//! build step); this test fails when it is stale. Regenerate with:
//! `ACCIO_UPDATE_MAN=1 cargo test --release --test manpage`.

use std::path::Path;

use clap_mangen::roff::{Roff, bold, roman};

/// The standard sections from clap, then the manual's own sections as
/// real man sections (clap's `after_help` would be one preformatted blob).
fn render() -> Vec<u8> {
    let cmd = accio_server::cli::command()
        .name("accio-server")
        .bin_name("accio-server");
    render_page(
        cmd,
        "8",
        accio_server::cli::MANUAL,
        "accio-server.toml(5), accio-client(1), systemd.socket(5), sd_notify(3), journalctl(1), haproxy(1)",
    )
}

/// One page: clap's sections, `manual`, SEE ALSO, version.
fn render_page(
    cmd: clap::Command,
    section: &str,
    manual: &[accio_server::cmdline::Section],
    see_also: &str,
) -> Vec<u8> {
    let man_cmd = cmd.clone();
    let man = clap_mangen::Man::new(cmd.after_help("")).section(section);
    let mut out = Vec::new();
    man.render_title(&mut out).expect("title");
    man.render_name_section(&mut out).expect("name");
    synopsis(&man_cmd).to_writer(&mut out).expect("synopsis");
    man.render_description_section(&mut out)
        .expect("description");
    man.render_options_section(&mut out).expect("options");
    let mut roff = Roff::new();
    for section in manual {
        roff.control("SH", [section.title]);
        for (term, text) in section.items {
            if term.is_empty() {
                roff.control("PP", []).text([roman(*text)]);
            } else {
                roff.control("TP", [])
                    .text([bold(*term)])
                    .text([roman(*text)]);
            }
        }
    }
    roff.control("SH", ["SEE ALSO"]).text([roman(see_also)]);
    roff.to_writer(&mut out).expect("sections");
    man.render_version_section(&mut out).expect("version");
    out
}

/// The synopsis with each option's value placeholder (clap_mangen leaves
/// them out): `accio-server [--config FILE] [--save-dir DIR] ... [PORT]`.
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    for arg in cmd.get_arguments() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        if arg.is_positional() {
            positionals.push((value, arg.is_required_set()));
            continue;
        }
        let mut names = Vec::new();
        if let Some(s) = arg.get_short() {
            names.push(format!("-{s}"));
        }
        if let Some(l) = arg.get_long() {
            names.push(format!("--{l}"));
        }
        let takes = arg.get_action().takes_values();
        options.push((names.join("|"), takes.then_some(value)));
    }
    let mut line = vec![bold(cmd.get_name().to_string())];
    for (names, value) in options {
        line.push(roman(" ["));
        line.push(bold(names));
        if let Some(v) = value {
            line.push(roman(" "));
            line.push(clap_mangen::roff::italic(v));
        }
        line.push(roman("]"));
    }
    for (value, required) in positionals {
        line.push(roman(if required { " " } else { " [" }));
        line.push(clap_mangen::roff::italic(value));
        if !required {
            line.push(roman("]"));
        }
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    roff
}

/// accio-server.toml(5): every key, its default, and whether a reload
/// applies it, from the same table the server's documentation uses.
fn render_config_page() -> Vec<u8> {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "accio-server.toml",
            "5",
            "",
            &format!("accio-server {}", env!("CARGO_PKG_VERSION")),
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "accio-server.toml - configuration file of accio-server",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("/etc/accio-server/server.toml")]);
    roff.control("SH", ["DESCRIPTION"]);
    for para in accio_server::config::FILE_FORMAT {
        roff.control("PP", []).text([roman(*para)]);
    }
    roff.control("SH", ["KEYS"]);
    for key in accio_server::config::KEYS {
        roff.control("TP", []).text([
            bold(key.name),
            roman(format!(" (default {}; {})", key.default, key.reload)),
        ]);
        roff.text([roman(key.text)]);
    }
    roff.control("SH", ["EXAMPLE"]);
    roff.control("nf", []);
    for line in accio_server::config::EXAMPLE.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("accio-server(8), accio-client(1), systemctl(1)")]);
    let mut out = Vec::new();
    roff.to_writer(&mut out).expect("config page");
    out
}

#[test]
fn committed_config_man_page_matches_the_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/accio-server.toml.5");
    let fresh = render_config_page();
    if std::env::var_os("ACCIO_UPDATE_MAN").is_some() {
        std::fs::write(&path, &fresh).expect("write man page");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "doc/accio-server.toml.5 is stale: run ACCIO_UPDATE_MAN=1 cargo test --release --test manpage"
    );
    // Every key the shipped example names is documented, and back.
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/server.toml"))
            .expect("config/server.toml");
    for key in accio_server::config::KEYS {
        let bare = key.name.trim_start_matches("[log] ");
        assert!(
            example.contains(bare),
            "{bare} missing from config/server.toml"
        );
    }
}

#[test]
fn committed_man_page_matches_the_command_line() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/accio-server.8");
    let fresh = render();
    if std::env::var_os("ACCIO_UPDATE_MAN").is_some() {
        std::fs::write(&path, &fresh).expect("write man page");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "doc/accio-server.8 is stale: run ACCIO_UPDATE_MAN=1 cargo test --release --test manpage"
    );
    let text = String::from_utf8_lossy(&fresh);
    for needle in [
        "accio-server",
        "\\-\\-config",
        "\\-\\-check\\-config",
        "EXIT STATUS",
        "SIGHUP",
    ] {
        assert!(text.contains(needle), "{needle} missing from the man page");
    }
}

#[test]
fn committed_client_man_page_matches_the_command_line() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/accio-client.1");
    let cmd = accio_server::client::command()
        .name("accio-client")
        .bin_name("accio-client");
    let fresh = render_page(
        cmd,
        "1",
        accio_server::client::MANUAL,
        "accio-server(8), accio-server.toml(5), sendfile(2), sysexits.h(3head)",
    );
    if std::env::var_os("ACCIO_UPDATE_MAN").is_some() {
        std::fs::write(&path, &fresh).expect("write man page");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "doc/accio-client.1 is stale: run ACCIO_UPDATE_MAN=1 cargo test --release --test manpage"
    );
    let text = String::from_utf8_lossy(&fresh);
    for needle in [
        "accio\\-client",
        "\\-\\-progress",
        "EXIT STATUS",
        "TIMEOUTS",
        "76",
    ] {
        assert!(text.contains(needle), "{needle} missing from the man page");
    }
}
