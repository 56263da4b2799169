//! Saving where the save directory is shared and the clients are hostile:
//! planted names and symlinks, urgent bytes, one server per directory, the
//! numbering limit, `max_file_size`, `min_free_space`.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn saving(dir: &Path, config: &str) -> Server {
    Spawn::new()
        .config(config)
        .arg("--save-dir")
        .arg(&path_of(dir))
        .start()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Send, half-close, and read until the server closes (or resets).
fn send_all(server: &Server, data: &[u8]) {
    let mut s = server.connect();
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn planted_names_are_never_followed_or_replaced() {
    let tmp = TempDir::new("planted");
    let dir = tmp.path("files");
    let victim = tmp.write("victim", "precious");
    let outside = tmp.path("outside-new");
    let server = saving(&dir, "");
    // After the start (numbering begins at 1): what another user of the
    // directory could plant for the next names.
    std::fs::write(dir.join("1.file"), "theirs").expect("plant 1.file");
    symlink(&victim, dir.join("2.file")).expect("plant 2.file");
    symlink(&outside, dir.join("3.file")).expect("plant 3.file");
    for i in 0..3u64 {
        send_all(&server, &payload(1000, i));
        assert_eq!(server.stdout.expect(), "ERROR", "connection {}", i + 1);
    }
    server.stderr.wait_for("already exists");
    assert_eq!(
        std::fs::read(dir.join("1.file")).expect("1.file"),
        b"theirs"
    );
    assert_eq!(
        std::fs::read_link(dir.join("2.file")).expect("2.file"),
        victim
    );
    assert_eq!(
        std::fs::read_link(dir.join("3.file")).expect("3.file"),
        outside
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert!(!outside.exists(), "a file outside DIR was created");
    // A connection ending with ERROR leaves a planted name alone too.
    symlink(&victim, dir.join("5.file")).expect("plant 5.file");
    let data = payload(5000, 9);
    transfer(&server, &data);
    assert_eq!(server.stdout.expect(), "5000");
    assert_eq!(std::fs::read(dir.join("4.file")).expect("4.file"), data);
    let s = server.connect();
    reset(s);
    assert_eq!(server.stdout.expect(), "ERROR");
    assert_eq!(
        std::fs::read_link(dir.join("5.file")).expect("5.file"),
        victim
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(
        names(&dir),
        ["1.file", "2.file", "3.file", "4.file", "5.file"],
        "a temporary was left behind"
    );
}

#[test]
fn symlinks_planted_before_the_start_are_not_followed() {
    let tmp = TempDir::new("planted-start");
    let dir = tmp.path("files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let victim = tmp.write("victim", "precious");
    // Every name the old start-up probe and temporaries used, and more.
    for pid in 1..200 {
        let _ = symlink(&victim, dir.join(format!(".accio-probe-{pid}.part")));
    }
    for n in 1..50 {
        let _ = symlink(&victim, dir.join(format!(".accio-{n}.part")));
    }
    let server = saving(&dir, "");
    let data = payload(70_000, 3);
    transfer(&server, &data);
    assert_eq!(server.stdout.expect(), "70000");
    assert_eq!(std::fs::read(dir.join("1.file")).expect("1.file"), data);
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    // Another user's entries are not ours to remove.
    assert!(dir.join(".accio-7.part").symlink_metadata().is_ok());
}

/// `abc`, one urgent byte, `def`, FIN.
fn send_urgent(server: &Server) {
    let s = server.connect();
    let sock = socket2::SockRef::from(&s);
    sock.set_tcp_nodelay(true).expect("nodelay");
    sock.send(b"abc").expect("send");
    std::thread::sleep(Duration::from_millis(20));
    sock.send_out_of_band(b"X").expect("send urgent");
    std::thread::sleep(Duration::from_millis(20));
    sock.send(b"def").expect("send");
    finish(s);
}

#[test]
fn urgent_bytes_are_ordinary_bytes() {
    let counting = Spawn::new().start();
    send_urgent(&counting);
    assert_eq!(counting.stdout.expect(), "7");
    let tmp = TempDir::new("urgent");
    let dir = tmp.path("files");
    let server = saving(&dir, "");
    send_urgent(&server);
    assert_eq!(server.stdout.expect(), "7");
    assert_eq!(
        std::fs::read(dir.join("1.file")).expect("1.file"),
        b"abcXdef"
    );
    // Urgent byte last, right before the FIN.
    let s = server.connect();
    let sock = socket2::SockRef::from(&s);
    sock.send(b"ab").expect("send");
    sock.send_out_of_band(b"Z").expect("send urgent");
    finish(s);
    assert_eq!(server.stdout.expect(), "3");
    assert_eq!(std::fs::read(dir.join("2.file")).expect("2.file"), b"abZ");
}

#[test]
fn one_server_per_directory() {
    let tmp = TempDir::new("two");
    let dir = tmp.path("files");
    let first = saving(&dir, "");
    let out = run(&["--save-dir", &path_of(&dir), &free_port().to_string()]);
    assert_eq!(out.status.code(), Some(73));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ERROR:"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    let out = run(&[
        "--check-config",
        "--save-dir",
        &path_of(&dir),
        &free_port().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(73),
        "--check-config sees the lock too"
    );
    // The first one still serves.
    transfer(&first, b"hello");
    assert_eq!(first.stdout.expect(), "5");
}

#[test]
fn the_largest_number_ends_the_numbering() {
    let tmp = TempDir::new("maxnum");
    let dir = tmp.path("files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{}.file", u64::MAX)), "x").expect("plant");
    let out = run(&["--save-dir", &path_of(&dir), &free_port().to_string()]);
    assert_eq!(out.status.code(), Some(73));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&u64::MAX.to_string()), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_directory_others_may_write_is_served_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("shared");
    let dir = tmp.path("files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let server = saving(&dir, "");
    server.stderr.wait_for("writable by other users");
    transfer(&server, b"abc");
    assert_eq!(server.stdout.expect(), "3");
}

#[test]
fn max_file_size_in_both_modes() {
    let config = "max_file_size = \"1KiB\"\n";
    let counting = Spawn::new().config(config).start();
    send_all(&counting, &payload(1024, 1));
    assert_eq!(counting.stdout.expect(), "1024");
    send_all(&counting, &payload(1025, 1));
    assert_eq!(counting.stdout.expect(), "ERROR");
    counting.stderr.wait_for("more than max_file_size");
    send_all(&counting, &payload(10 << 20, 1));
    assert_eq!(counting.stdout.expect(), "ERROR");

    let tmp = TempDir::new("maxsize");
    let dir = tmp.path("files");
    let server = saving(&dir, config);
    let data = payload(1024, 2);
    send_all(&server, &data);
    assert_eq!(server.stdout.expect(), "1024");
    send_all(&server, &payload(5 << 20, 3));
    assert_eq!(server.stdout.expect(), "ERROR");
    assert_eq!(std::fs::read(dir.join("1.file")).expect("1.file"), data);
    wait_until(|| std::fs::read(dir.join("2.file")).is_ok_and(|b| b == b"ERROR"));
    // Live on reload.
    server.rewrite_config("max_file_size = 0\n");
    server.signal(libc::SIGHUP);
    server.stderr.wait_for("reloaded");
    send_all(&server, &payload(2 << 20, 4));
    assert_eq!(server.stdout.expect(), (2u64 << 20).to_string());
    assert_eq!(names(&dir), ["1.file", "2.file", "3.file"]);
}

/// Poll `cond` every 10 ms for up to 10 s.
fn wait_until(mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "condition not met within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connect until greeted (refusals end in ERROR lines meanwhile).
fn wait_greeted(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut greeted = None;
    wait_until(|| {
        greeted = connect_greeted(addr);
        greeted.is_some()
    });
    greeted.expect("greeted")
}

/// A server saving into a tmpfs of `size` in a mount namespace of its own;
/// the test sees the file system through /proc/PID/root.
fn on_small_tmpfs(tmp: &TempDir, size: &str, config: &str) -> (Server, PathBuf) {
    let dir = tmp.path("small");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = format!(
        "mount -n -t tmpfs -o size={size} tmpfs {} && exec \"$@\"",
        path_of(&dir)
    );
    let server = Spawn::new()
        .config(config)
        .wrap(&own_mounts(&script))
        .arg("--save-dir")
        .arg(&path_of(&dir))
        .start();
    let inside = PathBuf::from(format!("/proc/{}/root{}", server.pid(), path_of(&dir)));
    (server, inside)
}

#[test]
fn min_free_space_refuses_while_low_and_recovers() {
    if !prerequisite(
        is_root() && have("unshare"),
        "root and unshare for a private tmpfs",
    ) {
        return;
    }
    let tmp = TempDir::new("floor");
    let (server, inside) = on_small_tmpfs(&tmp, "8m", "min_free_space = \"50%\"\n");
    let data = payload(100_000, 5);
    transfer(&server, &data);
    assert_eq!(server.stdout.expect(), "100000");
    // A transfer that would leave less than 4 MiB free fails like a full disk.
    send_all(&server, &payload(5 << 20, 6));
    assert_eq!(server.stdout.expect(), "ERROR");
    server.stderr.wait_for("min_free_space keeps");
    // The line comes first; the temporary goes before its marker is written.
    wait_until(|| std::fs::read(inside.join("2.file")).is_ok_and(|b| b == b"ERROR"));
    // Something else fills the file system: new clients are refused
    // (no greeting, an ERROR line, no number, no file).
    let filler = inside.join("filler");
    std::fs::write(&filler, vec![0u8; 5 << 20]).expect("fill");
    let addr = server.addr();
    // Clients greeted before the next measurement close with a 0 line.
    wait_until(|| connect_greeted(addr).is_none());
    server.stdout.wait_for("ERROR");
    server.stderr.wait_for("below min_free_space");
    for _ in 0..5 {
        assert!(
            connect_greeted(addr).is_none(),
            "greeted while space is low"
        );
        assert_eq!(server.stdout.expect(), "ERROR");
    }
    // A size below what is free: served again after the reload.
    server.rewrite_config("min_free_space = \"1MiB\"\n");
    server.signal(libc::SIGHUP);
    server.stderr.wait_for("reloaded");
    let s = wait_greeted(addr);
    finish(s);
    server.stdout.wait_for("0");
    // Back to the percentage; space comes back when the filler goes.
    server.rewrite_config("min_free_space = \"50%\"\n");
    server.signal(libc::SIGHUP);
    server.stderr.wait_for("reloaded");
    wait_until(|| match connect_greeted(addr) {
        Some(s) => {
            drop(s);
            false
        }
        None => true,
    });
    std::fs::remove_file(&filler).expect("unfill");
    let mut s = wait_greeted(addr);
    s.write_all(b"back").expect("send");
    finish(s);
    let last = server.stdout.wait_for("4");
    assert_eq!(last, "4");
    // Refusals made no files and used no numbers: 1, 2 (ERROR), 3 (empty),
    // and the transfer after the recovery is the next number.
    let listing = names(&inside);
    assert!(
        listing.contains(&"1.file".into()) && listing.contains(&"3.file".into()),
        "{listing:?}"
    );
    assert!(
        !listing.iter().any(|n| n.starts_with(".accio")),
        "{listing:?}"
    );
}
