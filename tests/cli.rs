//! The command line contract: strict PORT, usage errors (64), bind errors
//! (71), help and version. Every case runs the real binary.

mod common;

use common::*;
use std::net::TcpListener;

fn assert_startup_error(out: &std::process::Output, code: i32, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with("ERROR:"), "stderr: {stderr}");
    assert!(stderr.contains(mentions), "{mentions:?} not in: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
}

#[test]
fn every_incorrect_port_is_a_usage_error() {
    for &bad in BAD_PORTS {
        let out = run(&[bad]);
        assert_startup_error(&out, 64, &format!("'{bad}'"));
    }
}

#[test]
fn missing_extra_and_unknown_arguments_are_usage_errors() {
    assert_startup_error(&run(&[]), 64, "missing PORT");
    assert_startup_error(&run(&["5000", "5001"]), 64, "'5001'");
    assert_startup_error(&run(&["--frobnicate", "5000"]), 64, "'--frobnicate'");
    assert_startup_error(&run(&["5000", "--config"]), 64, "--config");
}

#[test]
fn address_in_use_is_an_os_error() {
    let taken = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    assert_startup_error(&run(&[&port]), 71, "in use");
}

#[test]
fn permission_denied_is_an_os_error() {
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if !prerequisite(
        is_root() && have("setpriv") && start > 1,
        "root, setpriv and privileged low ports",
    ) {
        return;
    }
    // Run the real binary as user nobody, which may not bind port 1.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "1"])
        .output()
        .expect("setpriv");
    assert_startup_error(&out, 71, "ermission denied");
}

#[test]
fn help_and_version_go_to_stdout() {
    for flag in ["-h", "--help"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        for section in [
            "PORT",
            "--config",
            "EXIT STATUS",
            "SIGNALS",
            "64",
            "71",
            "78",
        ] {
            assert!(text.contains(section), "{section} missing from --help");
        }
        assert!(out.stderr.is_empty());
    }
    for flag in ["-V", "--version"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("server {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
