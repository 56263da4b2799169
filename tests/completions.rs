//! Shell completions for bash, zsh and fish, generated from the clap
//! definitions with clap_complete, so they cannot drift from `--help`. The
//! generated files are committed (the package installs them without a
//! build step); this test fails when one is stale. Regenerate with:
//! `ACCIO_UPDATE_COMPLETIONS=1 cargo test --release --test completions`.

use std::path::{Path, PathBuf};

use clap_complete::{Shell, generate};

/// (installed name, clap definition) of both programs.
fn programs() -> [(&'static str, clap::Command); 2] {
    [
        ("accio-server", accio_server::cli::command()),
        ("accio-client", accio_server::client::command()),
    ]
}

/// Where each shell's file goes in doc/completions/, as the package
/// installs it under the shell's own directory.
fn file_name(shell: Shell, name: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_string(),
    }
}

fn dir(shell: Shell) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("doc/completions")
        .join(shell.to_string())
}

#[test]
fn committed_completions_match_the_command_lines() {
    let update = std::env::var_os("ACCIO_UPDATE_COMPLETIONS").is_some();
    let mut stale = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        for (name, cmd) in programs() {
            let mut cmd = cmd.name(name).bin_name(name);
            let mut out = Vec::new();
            generate(shell, &mut cmd, name, &mut out);
            let path = dir(shell).join(file_name(shell, name));
            if update {
                std::fs::create_dir_all(dir(shell)).expect("mkdir");
                std::fs::write(&path, &out).expect("write completion");
            } else if std::fs::read(&path).ok() != Some(out) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale completions {stale:?}: run ACCIO_UPDATE_COMPLETIONS=1 cargo test --release --test completions"
    );
}

#[test]
fn bash_completion_offers_the_options() {
    let text =
        std::fs::read_to_string(dir(Shell::Bash).join("accio-server")).expect("bash completion");
    for option in [
        "--config",
        "--save-dir",
        "--bind",
        "--output",
        "--check-config",
    ] {
        assert!(text.contains(option), "{option} missing");
    }
    // bash itself accepts the file.
    let status = std::process::Command::new("bash")
        .args([
            "-n",
            &dir(Shell::Bash).join("accio-server").display().to_string(),
        ])
        .status()
        .expect("bash -n");
    assert!(status.success());
}
