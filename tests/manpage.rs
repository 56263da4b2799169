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
        "systemd.socket(5), sd_notify(3), journalctl(1)",
    )
}

/// One page: clap's sections, `manual`, SEE ALSO, version.
fn render_page(
    cmd: clap::Command,
    section: &str,
    manual: &[accio_server::cli::Section],
    see_also: &str,
) -> Vec<u8> {
    let man = clap_mangen::Man::new(cmd.after_help("")).section(section);
    let mut out = Vec::new();
    man.render_title(&mut out).expect("title");
    man.render_name_section(&mut out).expect("name");
    man.render_synopsis_section(&mut out).expect("synopsis");
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
        "accio-server(8), sendfile(2), sysexits.h(3head)",
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
