//! The slow FUSE fixture is slow for real: throttled writes, delayed fsync,
//! and the open flags a saving server relies on behave as on a real disk
//! (or fail as FUSE's high-level API makes them fail).

mod common;

use common::slowfs::SlowFs;
use common::*;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

#[test]
fn writes_are_throttled_and_arrive_intact() {
    let dir = TempDir::new("slowfs-write");
    let fs = SlowFs::mount(&dir.0, 20, Duration::from_millis(500));
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();

    let start = Instant::now();
    let mut f = File::create(fs.mount.join("big")).expect("create on the mount");
    f.write_all(&data).expect("write 4 MiB");
    drop(f);
    let took = start.elapsed();

    // 4 MiB at 20 MB/s is 0.21 s.
    assert!(
        took >= Duration::from_millis(150),
        "4 MiB took only {took:?}"
    );
    let back = std::fs::read(fs.backing.join("big")).expect("read backing");
    assert!(back == data, "backing file differs ({} bytes)", back.len());
    eprintln!("4 MiB through slowfs at 20 MB/s: {took:?}");
}

#[test]
fn only_fsync_is_delayed() {
    let dir = TempDir::new("slowfs-fsync");
    let delay = Duration::from_millis(500);
    let fs = SlowFs::mount(&dir.0, 20, delay);

    let start = Instant::now();
    let mut f = File::create(fs.mount.join("small")).expect("create");
    f.write_all(b"hello\n").expect("write");
    drop(f);
    let plain = start.elapsed();
    assert!(plain < Duration::from_millis(300), "close took {plain:?}");

    let mut f = File::create(fs.mount.join("synced")).expect("create");
    f.write_all(b"hello\n").expect("write");
    let start = Instant::now();
    f.sync_all().expect("fsync");
    let synced = start.elapsed();
    assert!(synced >= delay, "fsync took only {synced:?}");
    eprintln!("create+write+close {plain:?}, fsync {synced:?}");
}

#[test]
fn tmpfile_unsupported_and_excl_honoured() {
    let dir = TempDir::new("slowfs-flags");
    let fs = SlowFs::mount(&dir.0, 20, Duration::from_millis(500));

    let err = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&fs.mount)
        .expect_err("O_TMPFILE on FUSE's high-level API");
    let code = err.raw_os_error();
    assert!(
        [Some(libc::EOPNOTSUPP), Some(libc::EISDIR)].contains(&code),
        "O_TMPFILE: {err}"
    );

    let name = fs.mount.join("taken");
    File::create(&name).expect("create");
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&name)
        .expect_err("O_EXCL on an existing name");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");

    // Hard links work; a saving server's link-then-unlink fallback for
    // RENAME_NOREPLACE can run here, since renameat2 with flags cannot:
    // libfuse 2 speaks a FUSE protocol too old for it (EINVAL).
    std::fs::hard_link(&name, fs.mount.join("linked")).expect("link");
    assert_eq!(std::fs::metadata(&name).expect("stat").nlink(), 2);
    let from = std::ffi::CString::new(path_of(&name)).unwrap();
    let to = std::ffi::CString::new(path_of(&fs.mount.join("new"))).unwrap();
    // SAFETY: two NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    let err = std::io::Error::last_os_error();
    assert_eq!((rc, err.raw_os_error()), (-1, Some(libc::EINVAL)), "{err}");
}
