//! A real slow disk for tests: tests/fixtures/slowfs.py, a passthrough FUSE
//! file system that throttles writes and delays fsync, mounted for one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/slowfs.py");
/// Debian's python3-fusepy is importable by the system python only, not by
/// a pyenv python3 that may come first on PATH.
const PYTHON: &str = "/usr/bin/python3";
const INSTALL: &str = "apt-get install -y fuse3 libfuse2 python3-fusepy";

/// A mounted slowfs: `mount` shows `backing` slowly. Unmounted, and the
/// daemon reaped, on drop.
pub struct SlowFs {
    pub mount: PathBuf,
    pub backing: PathBuf,
    log: PathBuf,
    child: Child,
}

impl SlowFs {
    /// Mount under `root` (`root/backing` shown at `root/mnt`); panics where
    /// FUSE or fusepy is missing, so a test fails rather than skips.
    pub fn mount(root: &Path, write_mbps: u32, fsync_delay: Duration) -> SlowFs {
        if let Some(why) = missing() {
            panic!("slowfs: {why} (needs `{INSTALL}`)");
        }
        SlowFs::start(root, write_mbps, fsync_delay, Duration::ZERO)
    }

    /// A mount whose every read takes `read_delay` (writes at 20 MB/s, no
    /// fsync delay); panics where FUSE or fusepy is missing.
    pub fn mount_slow_reads(root: &Path, read_delay: Duration) -> SlowFs {
        if let Some(why) = missing() {
            panic!("slowfs: {why} (needs `{INSTALL}`)");
        }
        SlowFs::start(root, 20, Duration::ZERO, read_delay)
    }

    /// Like [`SlowFs::mount`], but None where FUSE or fusepy is missing,
    /// unless CI or ACCIO_FUSE_REQUIRED is set.
    pub fn try_mount(root: &Path, write_mbps: u32, fsync_delay: Duration) -> Option<SlowFs> {
        if let Some(why) = missing() {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("ACCIO_FUSE_REQUIRED").is_some();
            assert!(!required, "slowfs: {why} (needs `{INSTALL}`)");
            eprintln!("skipped: slowfs: {why}");
            return None;
        }
        Some(SlowFs::start(root, write_mbps, fsync_delay, Duration::ZERO))
    }

    fn start(root: &Path, write_mbps: u32, fsync_delay: Duration, read_delay: Duration) -> SlowFs {
        let backing = root.join("backing");
        let mount = root.join("mnt");
        let ready = root.join("slowfs.ready");
        let log = root.join("slowfs.log");
        std::fs::create_dir_all(&backing).expect("create backing dir");
        std::fs::create_dir_all(&mount).expect("create mount point");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(&backing)
            .arg(&mount)
            .arg("--write-mbps")
            .arg(write_mbps.to_string())
            .arg("--fsync-delay")
            .arg(fsync_delay.as_secs_f64().to_string())
            .arg("--read-delay")
            .arg(read_delay.as_secs_f64().to_string())
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file, not a pipe: fusepy logs each failed operation, and
            // nobody reads a pipe while the test runs.
            .stderr(std::fs::File::create(&log).expect("create slowfs log"))
            .spawn()
            .expect("spawn slowfs.py");
        // Built before the wait so that a panic below still unmounts.
        let mut fs = SlowFs {
            mount,
            backing,
            log,
            child,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Ok(Some(status)) = fs.child.try_wait() {
                panic!("slowfs exited ({status}) before mounting:\n{}", fs.log());
            }
            assert!(
                Instant::now() < end,
                "slowfs not mounted within 10 s:\n{}",
                fs.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
        fs
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        // fusermount -u refuses while a file on the mount is still open (a
        // panicking test may hold one): detach lazily then.
        let mount = self.mount.as_os_str();
        if !run_bounded(Command::new("fusermount").arg("-u").arg(mount)) {
            run_bounded(Command::new("umount").arg("-l").arg(mount));
        }
        // Unmounted, the daemon exits by itself; after a lazy detach it may
        // wait for open files, so it is killed after a while.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why slowfs cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    // --help imports fusepy before it prints anything.
    let ok = Command::new(PYTHON)
        .args([SCRIPT, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| format!("{PYTHON} cannot import fusepy"))
}

/// Run a command for at most 5 s (an unmount can hang on a stuck daemon);
/// true when it succeeded.
fn run_bounded(cmd: &mut Command) -> bool {
    let Ok(mut child) = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// An ext4 file system on a loop device whose backing file lives on a
/// [`SlowFs`]: a block device as slow as the SlowFs's writes. Unlike FUSE,
/// where each write goes to the daemon at once, pages written here stay
/// dirty in the page cache, so write-back and its waits (`sync_file_range`,
/// fsync) take real time in the kernel, as on a slow disk.
pub struct SlowExt4 {
    pub mount: PathBuf,
    // Dropped after the ext4 is unmounted (fields drop after `drop`).
    _fs: SlowFs,
}

impl SlowExt4 {
    /// A `size_mib` file system written at `write_mbps`, under `root`.
    pub fn mount(root: &Path, write_mbps: u32, size_mib: u64) -> SlowExt4 {
        let fs = SlowFs::mount(root, write_mbps, Duration::ZERO);
        let image = fs.mount.join("disk.img");
        let mount = root.join("ext4");
        std::fs::create_dir_all(&mount).expect("create ext4 mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("create the disk image");
        let ext4 = SlowExt4 { mount, _fs: fs };
        // Lazy init keeps mkfs from writing the whole image at 20 MB/s.
        let mkfs = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-E",
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg(&image)
            .output()
            .expect("run mkfs.ext4");
        assert!(mkfs.status.success(), "mkfs.ext4: {mkfs:?}");
        // `-o loop` sets up the loop device and frees it at unmount.
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&ext4.mount)
            .output()
            .expect("run mount");
        assert!(
            mounted.status.success(),
            "mounting an ext4 on a loop device (needs root and /dev/loop-control): {mounted:?}"
        );
        ext4
    }
}

impl Drop for SlowExt4 {
    fn drop(&mut self) {
        // A server's detached write-back may still hold a file for as long
        // as the slow device needs: wait for it, then detach lazily.
        let end = Instant::now() + Duration::from_secs(60);
        while !run_bounded(Command::new("umount").arg(&self.mount)) {
            if Instant::now() > end || !is_mounted(&self.mount) {
                run_bounded(Command::new("umount").arg("-l").arg(&self.mount));
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == path.to_str()))
}
