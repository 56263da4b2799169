//! `--save-dir`: byte-exact files, numbering across restarts, ERROR files,
//! no partial file ever visible, disk full, unusable directories.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn saving(dir: &Path) -> Server {
    Spawn::new().arg("--save-dir").arg(&path_of(dir)).start()
}

fn file(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n}.file"))
}

/// Wait until `N.file` exists (it appears before the stdout line is read).
fn read_saved(dir: &Path, n: u64) -> Vec<u8> {
    std::fs::read(file(dir, n)).unwrap_or_else(|e| panic!("{n}.file: {e}"))
}

#[test]
fn files_are_byte_exact() {
    let tmp = TempDir::new("save-exact");
    let dir = tmp.path("files");
    let server = saving(&dir);
    let sizes = [0usize, 1, 100 * 1024 * 1024];
    for (i, &size) in sizes.iter().enumerate() {
        let data = payload(size, i as u64 + 1);
        transfer(&server, &data);
        assert_eq!(server.stdout.expect(), size.to_string());
        assert!(
            read_saved(&dir, i as u64 + 1) == data,
            "{}.file differs",
            i + 1
        );
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_concurrent_mix_is_saved_exactly() {
    let tmp = TempDir::new("save-mix");
    let dir = tmp.path("files");
    let server = saving(&dir);
    let addr = server.addr();
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            thread::spawn(move || {
                let data = payload(
                    (i as usize) * 37_003 + (i as usize % 3) * 1_000_000,
                    i + 100,
                );
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                assert!(greeted(&mut s), "greeting");
                for chunk in data.chunks(65_536) {
                    s.write_all(chunk).expect("send");
                }
                finish(s);
                data
            })
        })
        .collect();
    let sent: Vec<Vec<u8>> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    for _ in 0..16 {
        server.stdout.expect();
    }
    // Connection numbers follow accept order, which threads do not fix:
    // every payload must be in exactly one file.
    let mut files: Vec<Vec<u8>> = (1..=16).map(|n| read_saved(&dir, n)).collect();
    for data in &sent {
        let at = files
            .iter()
            .position(|f| f == data)
            .expect("a payload was not saved exactly");
        files.swap_remove(at);
    }
}

#[test]
fn more_big_uploads_than_disk_threads_are_all_saved_exactly() {
    // Twelve uploads of 40 MiB: more than the seven disk threads, and each
    // more than one disk job moves at a time, so jobs take turns.
    let tmp = TempDir::new("save-big");
    let dir = tmp.path("files");
    let server = saving(&dir);
    let addr = server.addr();
    let clients: Vec<_> = (0..12u64)
        .map(|i| {
            thread::spawn(move || {
                let data = payload((40 << 20) + i as usize * 4099, i + 200);
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                assert!(greeted(&mut s), "greeting");
                for chunk in data.chunks(1 << 20) {
                    s.write_all(chunk).expect("send");
                }
                finish(s);
                data
            })
        })
        .collect();
    let mut sent: Vec<Vec<u8>> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let mut lines: Vec<usize> = (0..12)
        .map(|_| server.stdout.expect().parse().expect("a count"))
        .collect();
    lines.sort_unstable();
    sent.sort_by_key(Vec::len);
    assert_eq!(lines, sent.iter().map(Vec::len).collect::<Vec<_>>());
    for n in 1..=12 {
        let saved = read_saved(&dir, n);
        assert!(
            sent.contains(&saved),
            "{n}.file ({} bytes) is none of the uploads",
            saved.len()
        );
    }
}

#[test]
fn numbering_continues_after_existing_files_and_stale_parts_are_removed() {
    let tmp = TempDir::new("save-numbering");
    let dir = tmp.path("files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(file(&dir, 7), b"old seven").expect("seed");
    std::fs::write(file(&dir, 2), b"old two").expect("seed");
    std::fs::write(dir.join("notes.txt"), b"not ours").expect("seed");
    std::fs::write(dir.join("12.file.bak"), b"not a number").expect("seed");
    std::fs::write(dir.join(".accio-9.part"), b"from a crash").expect("seed");
    let mut server = saving(&dir);
    transfer(&server, b"eight");
    assert_eq!(server.stdout.expect(), "5");
    assert_eq!(read_saved(&dir, 8), b"eight");
    assert_eq!(read_saved(&dir, 7), b"old seven");
    assert!(!dir.join(".accio-9.part").exists(), "stale part file kept");
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    // A restart continues after 8.
    let server = saving(&dir);
    transfer(&server, b"nine!");
    assert_eq!(server.stdout.expect(), "5");
    assert_eq!(read_saved(&dir, 9), b"nine!");
    assert_eq!(read_saved(&dir, 8), b"eight");
}

#[test]
fn error_connections_leave_exactly_error() {
    let tmp = TempDir::new("save-error");
    let dir = tmp.path("files");
    let mut server = Spawn::new()
        .config("idle_timeout = \"300ms\"")
        .arg("--save-dir")
        .arg(&path_of(&dir))
        .start();
    // 1: timeout after some bytes.
    let mut s = server.connect();
    s.write_all(b"partial data").expect("send");
    assert_eq!(server.stdout.expect(), "ERROR");
    drop(s);
    // 2: reset mid-transfer.
    let mut s = server.connect();
    s.write_all(&payload(300_000, 5)).expect("send");
    reset(s);
    assert_eq!(server.stdout.expect(), "ERROR");
    // 3: still open at stop.
    let mut s = server.connect();
    s.write_all(b"unfinished").expect("send");
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(server.stdout.rest(), vec!["ERROR"]);
    for n in 1..=3 {
        assert_eq!(read_saved(&dir, n), b"ERROR", "{n}.file");
    }
    drop(s);
}

#[test]
fn no_partial_file_is_ever_visible() {
    let tmp = TempDir::new("save-watch");
    let dir = tmp.path("files");
    let server = saving(&dir);
    let size = 64 * 1024 * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let dir = dir.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(meta) = std::fs::metadata(dir.join("1.file")) {
                    assert_eq!(meta.len(), size as u64, "a partial 1.file was visible");
                }
                looks += 1;
            }
            looks
        })
    };
    let mut s = server.connect();
    let chunk = payload(1024 * 1024, 9);
    for _ in 0..64 {
        s.write_all(&chunk).expect("send");
        thread::sleep(Duration::from_millis(2));
    }
    finish(s);
    assert_eq!(server.stdout.expect(), size.to_string());
    stop.store(true, Ordering::SeqCst);
    let looks = watcher.join().expect("watcher saw a partial file");
    assert!(looks > 100, "the watcher hardly looked ({looks} times)");
}

#[test]
fn disk_full_fails_that_connection_only() {
    if !prerequisite(
        is_root() && have("unshare"),
        "root and unshare for a private 1 MiB tmpfs",
    ) {
        return;
    }
    let tmp = TempDir::new("save-full");
    let dir = tmp.path("small");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = tmp.write("server.toml", "[log]\ntarget = \"stderr\"\n");
    let port = free_port();
    let notify = Notify::new();
    // A 1 MiB tmpfs in the server's own mount namespace: the host's mount
    // table never changes. The test reads it through /proc/PID/root.
    let script = format!(
        "mount -n -t tmpfs -o size=1m tmpfs {dir} && exec {BIN} --config {config} --save-dir {dir} {port}",
        dir = path_of(&dir),
        config = path_of(&config),
    );
    let mut child = Reaper(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare"),
    );
    notify.wait_for("READY=1");
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    let stderr = Lines::new(child.0.stderr.take().expect("stderr"));
    let inside = PathBuf::from(format!("/proc/{}/root{}", child.0.id(), path_of(&dir)));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let greet = || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        assert!(greeted(&mut s), "greeting");
        s
    };
    // 1: 4 MiB into a 1 MiB file system.
    let mut s = greet();
    let big = payload(4 * 1024 * 1024, 3);
    let _ = s.write_all(&big);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(stdout.expect(), "ERROR");
    let err = stderr.wait_for("saving failed");
    assert!(
        err.contains("error") && err.contains("connection 1"),
        "{err}"
    );
    // The ERROR marker is written by a disk thread after the line.
    let end = std::time::Instant::now() + WAIT;
    while std::fs::read(inside.join("1.file")).ok().as_deref() != Some(b"ERROR") {
        assert!(std::time::Instant::now() < end, "1.file is not ERROR");
        std::thread::sleep(Duration::from_millis(5));
    }
    // 2: the next connection succeeds.
    let mut s = greet();
    s.write_all(b"fits").expect("send");
    finish(s);
    assert_eq!(stdout.expect(), "4");
    assert_eq!(
        std::fs::read(inside.join("2.file")).expect("2.file"),
        b"fits"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&inside)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    child.signal(libc::SIGTERM);
    assert_eq!(child.0.wait().expect("wait").code(), Some(0));
}

#[test]
fn an_unusable_directory_is_exit_73() {
    let tmp = TempDir::new("save-73");
    let not_dir = tmp.write("plain-file", "x");
    let out = run(&["--save-dir", &path_of(&not_dir), "5000"]);
    assert_eq!(out.status.code(), Some(73));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR:") && err.contains("plain-file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let below_file = not_dir.join("sub");
    let out = run(&["--save-dir", &path_of(&below_file), "5000"]);
    assert_eq!(out.status.code(), Some(73));
    // --check-config finds the same problems without creating anything.
    for bad in [&not_dir, &below_file] {
        let out = run(&["--save-dir", &path_of(bad), "--check-config", "5000"]);
        assert_eq!(out.status.code(), Some(73), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("ERROR:"));
    }
    let fresh = tmp.path("fresh/deeper");
    let out = run(&["--save-dir", &path_of(&fresh), "--check-config", "5000"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fresh.exists(), "--check-config created the directory");
    if is_root() && have("setpriv") {
        let locked = tmp.path("locked");
        std::fs::create_dir(&locked).expect("mkdir");
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o555))
            .expect("chmod");
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "--save-dir",
            ])
            .arg(&locked)
            .arg("5000")
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(73));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not writable"));
    }
}

#[test]
fn save_dir_from_the_config_file_and_the_option_wins() {
    let tmp = TempDir::new("save-config");
    let from_file = tmp.path("from-file");
    let from_option = tmp.path("from-option");
    let server = Spawn::new()
        .config(&format!(
            "save_dir = \"{}\"\nfsync = false\n",
            path_of(&from_file)
        ))
        .start();
    transfer(&server, b"cfg");
    assert_eq!(server.stdout.expect(), "3");
    assert_eq!(read_saved(&from_file, 1), b"cfg");
    drop(server);
    let server = Spawn::new()
        .config(&format!("save_dir = \"{}\"\n", path_of(&from_file)))
        .arg("--save-dir")
        .arg(&path_of(&from_option))
        .start();
    transfer(&server, b"opt");
    assert_eq!(server.stdout.expect(), "3");
    assert_eq!(read_saved(&from_option, 1), b"opt");
    assert!(!file(&from_file, 2).exists());
}

#[test]
fn server_py_with_a_directory_saves_files() {
    let root = env!("CARGO_MANIFEST_DIR");
    // server.py runs target/release/server, which `cargo test --release`
    // has built (BIN is that file).
    assert!(
        Path::new(root).join("target/release/server").exists(),
        "target/release/server is missing: run the tests with --release"
    );
    let tmp = TempDir::new("save-py");
    let dir = tmp.path("files");
    let port = free_port();
    let mut child = Reaper(
        Command::new(format!("{root}/server.py"))
            .args([port.to_string(), path_of(&dir)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server.py"),
    );
    let stdout = Lines::new(child.0.stdout.take().expect("stdout"));
    let end = Instant::now() + WAIT;
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("server.py did not listen: {e}"),
        }
    };
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(greeted(&mut s), "greeting");
    s.write_all(b"assignment").expect("send");
    finish(s);
    assert_eq!(stdout.expect(), "10");
    assert_eq!(read_saved(&dir, 1), b"assignment");
}
