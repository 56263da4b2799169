//! Saving received bytes as files (`--save-dir`, the full Accio mode): the
//! file system side. Everything here that touches the disk runs on the disk
//! threads ([`crate::disk`]), never on the serving loop.
//!
//! The save directory is treated as shared with an attacker: every name is
//! resolved relative to one directory descriptor, nothing is opened through
//! a symlink, and no existing entry is ever replaced.
//!
//! - A connection's bytes go to an anonymous `O_TMPFILE` file, which has no
//!   name until it is complete and leaves nothing behind after a crash. On a
//!   file system without `O_TMPFILE` (FUSE, some network file systems) the
//!   temporary is `.accio-<random>.part`, created `O_CREAT|O_EXCL|O_NOFOLLOW`
//!   so a planted name or symlink makes the create fail instead of being
//!   followed.
//! - The final `N.file` is made with `linkat` (or `renameat2` with
//!   `RENAME_NOREPLACE` for a named temporary), which fail with `EEXIST`
//!   instead of replacing whatever someone else put there.
//! - An exclusive `flock` on the directory keeps a second server off it:
//!   two servers would number files independently and collide.
//! - With `fsync` on, written pages are pushed to the disk in windows while
//!   the transfer runs (`sync_file_range`), so the final fsync, and so a
//!   stop with a grace that waits for it, has at most two windows to write
//!   instead of the whole file. These waits and fsync run in a detached
//!   helper process ([`part::detached`]) so a stop never waits for them.
//!
//! (Over 500 lines because the directory's whole life, opening, locking,
//! numbering, creating and linking safely, free space and the exit
//! handover, goes through one descriptor and one lock; one connection's
//! file is in `part.rs`, the start-up checks in `check.rs`.)

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::FreeSpace;
use crate::error::Error;

mod check;
mod part;

pub use part::{PumpEnd, Pumped};

pub use check::check;
use check::{cant_create, cstring, cvt, held_by, locker_pid, open_dir};

const PART_PREFIX: &str = ".accio-";

const PART_SUFFIX: &str = ".part";

/// What the file of a connection that ended with ERROR holds.
pub const ERROR_CONTENT: &[u8] = b"ERROR";

/// Requested pipe capacity: fewer splice calls per megabyte. Unprivileged
/// users may get less (`pipe-user-pages-soft`); the default 64 KiB works.
const PIPE_SIZE: i32 = 1 << 20;

/// With fsync on, written data is pushed to the disk in windows this large,
/// and the windows before are waited for: the final fsync then has at most
/// two windows left to write. Smaller windows cost throughput on a real
/// disk (8 MiB reached 0.55-0.93x of a plain receiver, 64 MiB keeps up);
/// the waits run detached, so their size never holds a stop.
const SYNC_WINDOW: u64 = 64 << 20;

/// How much one pump job moves at most before it lets the other
/// connections' jobs have the disk thread.
const PUMP_MAX: u64 = 16 << 20;

/// The save directory, shared by the loop and the disk threads.
pub struct SaveDir {
    path: PathBuf,
    /// Every name is resolved against this descriptor; it also holds the
    /// `flock` that keeps other servers off the directory.
    dir: OwnedFd,
    /// Cleared once `O_TMPFILE` failed here: use named temporaries.
    tmpfile: AtomicBool,
    /// `min_free_space`, live on reload.
    floor: Mutex<FreeSpace>,
    /// Last measured free space below the floor (set by the space monitor,
    /// read by the loop at accept).
    low: AtomicBool,
    /// Free bytes at the last measurement, for the refusal report.
    free: AtomicU64,
    /// The temporary files alive now, so that an exit can hand them to a
    /// process that outlives it (see [`SaveDir::exit_handover`]).
    live: Mutex<HashMap<u64, (RawFd, Option<CString>)>>,
    next_id: AtomicU64,
    /// Set at exit: parts still alive are left to the exit handover.
    exiting: AtomicBool,
    /// Set when a stop's grace is over: from then on `ERROR` markers are
    /// left to the exit handover too. Creating a file waits for the file
    /// system's journal, which on a slow disk can be busy for seconds with
    /// the data a save just wrote, in a wait no signal ends; a disk thread
    /// in it would hold the exit.
    stopping: AtomicBool,
    /// The numbers whose markers wait for the exit handover.
    deferred: Mutex<Vec<u64>>,
}

/// One connection's temporary file (created on the first write) and the
/// read end of its pipe. Dropping it removes the temporary; only disk
/// threads drop parts, since freeing a large file takes disk time.
pub struct Part {
    dir: Arc<SaveDir>,
    /// The connection's socket (a duplicate: the loop keeps its own), which
    /// a pump job reads; dropped when the connection ends, so the client
    /// sees its close at once, not after the disk work.
    sock: Option<OwnedFd>,
    /// Both ends of the pipe the bytes go through on their way to the file.
    pipe: Pipe,
    file: Option<File>,
    /// The name of a named temporary; `None` for `O_TMPFILE` or once it
    /// was given its final name.
    name: Option<CString>,
    id: u64,
    written: u64,
    /// Bytes handed to `sync_file_range` so far.
    pushed: u64,
}

/// A non-blocking pipe: the kernel's buffer between socket and file, so
/// that `splice` moves the bytes without a copy to user space.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes it holds at most.
    capacity: usize,
}

/// Why a saved file could not be given its name.
#[derive(Debug)]
pub enum CommitError {
    /// `N.file` already exists: it was left untouched.
    NameTaken(PathBuf),
    /// The stop ended before the file was durable.
    Abandoned,
    /// fsync, link or rename failed; the marker is written instead.
    Io(io::Error),
}

impl SaveDir {
    /// Create DIR if missing, lock it, check it is a writable directory,
    /// remove our own temporaries a crash left behind, and return the
    /// largest `N` of the `N.file`s already there (0 if none), so numbering
    /// continues. Warns (through `warn`) about a directory others may write.
    pub fn open(
        dir: &Path,
        floor: FreeSpace,
        warn: &dyn Fn(&str),
    ) -> Result<(Arc<SaveDir>, u64), Error> {
        if cstring(dir)
            .map_err(|e| cant_create(dir, "invalid path", e))?
            .as_bytes()
            .len()
            >= libc::PATH_MAX as usize
        {
            return Err(cant_create(
                dir,
                "invalid path",
                "it is longer than PATH_MAX",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| cant_create(dir, "cannot create it", e))?;
        // A symlink as DIR itself is the operator's choice: follow it once,
        // here, and never again below it.
        let fd = open_dir(&dir.join(".")).map_err(|e| cant_create(dir, "cannot open it", e))?;
        // SAFETY: flock on our own descriptor, non-blocking.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(held_by(dir, locker_pid(&fd)));
        }
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills the struct for a valid fd.
        cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })
            .map_err(|e| cant_create(dir, "cannot inspect it", e))?;
        if st.st_mode & (libc::S_IWGRP | libc::S_IWOTH) != 0 {
            warn(&format!(
                "save directory {} is writable by other users (mode {:o}): they can plant or remove files there; accio-server never follows or replaces their entries, but give it a directory of its own (chmod go-w)",
                dir.display(),
                st.st_mode & 0o7777
            ));
        }
        let save = Arc::new(SaveDir {
            path: dir.to_path_buf(),
            dir: fd,
            tmpfile: AtomicBool::new(true),
            floor: Mutex::new(floor),
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            exiting: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            deferred: Mutex::new(Vec::new()),
        });
        // The probe is a temporary like any other: anonymous, or created
        // exclusively under a random name, and gone when dropped.
        let (probe, name) = save
            .create_temp()
            .map_err(|e| cant_create(dir, "it is not writable", e))?;
        drop(probe);
        if let Some(name) = name {
            save.unlink(&name);
        }
        let largest = save
            .scan()
            .map_err(|e| cant_create(dir, "cannot list it", e))?;
        if largest == u64::MAX {
            return Err(Error::CantCreate(format!(
                "cannot use save directory {}: it holds {}.file, the largest number there is, so no new file can be numbered (move the files away)",
                dir.display(),
                u64::MAX
            )));
        }
        save.measure();
        Ok((save, largest))
    }

    /// The largest `N.file`; removes `.accio-*.part` leftovers that are
    /// regular files owned by us (another user's entries are not ours).
    fn scan(&self) -> io::Result<u64> {
        let mut largest = 0;
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        for entry in std::fs::read_dir(self.path.join("."))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if let Some(n) = bytes
                .strip_suffix(b".file")
                .filter(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
            {
                largest = largest.max(n);
            } else if bytes.starts_with(PART_PREFIX.as_bytes())
                && bytes.ends_with(PART_SUFFIX.as_bytes())
                && let Ok(c) = CString::new(bytes)
                && self.stat_nofollow(&c).is_some_and(|st| {
                    st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == uid
                })
            {
                self.unlink(&c);
            }
        }
        Ok(largest)
    }

    fn stat_nofollow(&self, name: &CStr) -> Option<libc::stat> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat relative to our directory fd, not following links.
        let r = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }

    fn unlink(&self, name: &CStr) {
        // SAFETY: unlinkat removes the entry itself, never a link's target.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new pipe for a connection: the loop keeps the write end, the part
    /// (and with it a disk thread) the read end.
    /// The part of a new saving connection whose socket is `sock`. Memory
    /// only: the file is made by the first pump job.
    pub fn part(self: &Arc<Self>, sock: RawFd) -> io::Result<Part> {
        // SAFETY: F_DUPFD_CLOEXEC on the caller's open socket.
        let dup = cvt(unsafe { libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: the descriptor was just made and is owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(dup) };
        Ok(Part {
            dir: Arc::clone(self),
            sock: Some(sock),
            pipe: Pipe::new()?,
            file: None,
            name: None,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            written: 0,
            pushed: 0,
        })
    }

    /// A new temporary file: anonymous where the file system allows it,
    /// else an exclusive random name. Never follows a symlink.
    fn create_temp(&self) -> io::Result<(File, Option<CString>)> {
        if self.tmpfile.load(Ordering::Relaxed) {
            // SAFETY: openat relative to our directory fd.
            let fd = unsafe {
                libc::openat(
                    self.dir.as_raw_fd(),
                    c".".as_ptr(),
                    libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd >= 0 {
                // SAFETY: just opened, owned by nobody else.
                return Ok((unsafe { File::from_raw_fd(fd) }, None));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT) => {
                    self.tmpfile.store(false, Ordering::Relaxed)
                }
                _ => return Err(e),
            }
        }
        loop {
            let name = CString::new(format!("{PART_PREFIX}{:016x}{PART_SUFFIX}", random()))
                .map_err(io::Error::other)?;
            // SAFETY: openat relative to our directory fd; O_EXCL|O_NOFOLLOW
            // refuse an existing name or a symlink.
            let fd = unsafe {
                libc::openat(
                    self.dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_WRONLY
                        | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd >= 0 {
                // SAFETY: just opened, owned by nobody else.
                return Ok((unsafe { File::from_raw_fd(fd) }, Some(name)));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
    }

    /// Give a complete temporary its final name, never replacing an entry.
    fn link(&self, file: &File, temp: Option<&CStr>, final_name: &CStr) -> io::Result<()> {
        let dirfd = self.dir.as_raw_fd();
        match temp {
            None => {
                // Root may link a descriptor directly; everyone else goes
                // through /proc, which linkat resolves to the same inode.
                // SAFETY: linkat with AT_EMPTY_PATH links the fd's inode.
                let r = unsafe {
                    libc::linkat(
                        file.as_raw_fd(),
                        c"".as_ptr(),
                        dirfd,
                        final_name.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                };
                if r == 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EEXIST) {
                    return Err(e);
                }
                let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .map_err(io::Error::other)?;
                // SAFETY: as above, through the /proc magic link.
                cvt(unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        proc_path.as_ptr(),
                        dirfd,
                        final_name.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                })
                .map(|_| ())
            }
            Some(temp) => {
                // SAFETY: renameat2 within our directory; NOREPLACE fails
                // with EEXIST instead of replacing.
                let r = unsafe {
                    libc::renameat2(
                        dirfd,
                        temp.as_ptr(),
                        dirfd,
                        final_name.as_ptr(),
                        libc::RENAME_NOREPLACE,
                    )
                };
                if r == 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) {
                    return Err(e);
                }
                // No RENAME_NOREPLACE here: a hard link cannot replace
                // either; then drop the temporary name.
                // SAFETY: linkat within our directory, not following links.
                cvt(unsafe { libc::linkat(dirfd, temp.as_ptr(), dirfd, final_name.as_ptr(), 0) })?;
                self.unlink(temp);
                Ok(())
            }
        }
    }

    /// Write the `ERROR` marker as `N.file`, exclusively: an existing entry
    /// is left as it is.
    pub fn mark_error(&self, number: u64) -> io::Result<()> {
        if self.stopping.load(Ordering::Relaxed) || self.exiting.load(Ordering::Relaxed) {
            self.defer_marker(number);
            return Ok(());
        }
        self.write_marker(number)
    }

    /// Leave the marker of `number` to the exit handover.
    pub fn defer_marker(&self, number: u64) {
        lock(&self.deferred).push(number);
    }

    fn write_marker(&self, number: u64) -> io::Result<()> {
        let (mut file, temp) = self.create_temp()?;
        let done = file
            .write_all(ERROR_CONTENT)
            .and_then(|()| self.link(&file, temp.as_deref(), &final_name(number)));
        if done.is_err()
            && let Some(t) = &temp
        {
            self.unlink(t);
        }
        done
    }

    /// `min_free_space` changed on reload.
    pub fn set_floor(&self, floor: FreeSpace) {
        *lock(&self.floor) = floor;
    }

    /// Free bytes for us and the floor in bytes, now.
    fn space(&self) -> io::Result<(u64, u64)> {
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatvfs fills the struct for a valid fd.
        cvt(unsafe { libc::fstatvfs(self.dir.as_raw_fd(), &mut vfs) })?;
        let unit = vfs.f_frsize as u64;
        let free = (vfs.f_bavail as u64).saturating_mul(unit);
        let floor = match *lock(&self.floor) {
            FreeSpace::Bytes(b) => b,
            FreeSpace::Percent(p) => {
                (vfs.f_blocks as u64).saturating_mul(unit) / 100 * u64::from(p)
            }
        };
        Ok((free, floor))
    }

    /// Refresh the figure the loop refuses new connections by (the space
    /// monitor calls this about twice a second).
    pub fn measure(&self) {
        if let Ok((free, floor)) = self.space() {
            self.free.store(free, Ordering::Relaxed);
            self.low.store(floor > 0 && free < floor, Ordering::Relaxed);
        }
    }

    /// Free space was below the floor at the last measurement: Some(free).
    pub fn low_space(&self) -> Option<u64> {
        self.low
            .load(Ordering::Relaxed)
            .then(|| self.free.load(Ordering::Relaxed))
    }

    /// The stop is over: parts still alive are left to [`exit_handover`],
    /// and no new temporary is created.
    /// The stop's grace is over (see `stopping`).
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn begin_exit(&self) {
        self.exiting.store(true, Ordering::Relaxed);
    }

    /// Hand the temporaries still open at exit to a child process that
    /// removes their names and closes them after we are gone, and then
    /// writes the `ERROR` markers left to it: freeing a large discarded
    /// file takes disk time (a quarter second per GiB on ext4 with
    /// `discard`), and creating a file can wait for the journal, which
    /// would otherwise be paid by the exiting process, and a stop must be
    /// quick.
    pub fn exit_handover(&self) {
        let live: Vec<(RawFd, Option<CString>)> = lock(&self.live).values().cloned().collect();
        let deferred = std::mem::take(&mut *lock(&self.deferred));
        if live.is_empty() && deferred.is_empty() {
            return;
        }
        let keep: Vec<RawFd> = live
            .iter()
            .map(|(fd, _)| *fd)
            .chain([self.dir.as_raw_fd()])
            .collect();
        // SAFETY: the child closes and unlinks with system calls on memory
        // prepared before the fork. The markers then take a few small
        // allocations (names), which glibc's fork keeps usable in the
        // child, and no lock another thread could have held.
        unsafe {
            if libc::fork() != 0 {
                return;
            }
            let mut next = 0;
            let mut sorted = keep;
            sorted.sort_unstable();
            for fd in sorted {
                if fd > next {
                    libc::syscall(
                        libc::SYS_close_range,
                        next as libc::c_uint,
                        (fd - 1) as libc::c_uint,
                        0,
                    );
                }
                next = fd + 1;
            }
            libc::syscall(
                libc::SYS_close_range,
                next as libc::c_uint,
                libc::c_uint::MAX,
                0,
            );
            for (fd, name) in &live {
                if let Some(name) = name {
                    libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0);
                }
                libc::close(*fd);
            }
            for number in deferred {
                // Nobody is left to tell of a failure.
                let _ = self.write_marker(number);
            }
            libc::_exit(0);
        }
    }
}

impl Pipe {
    /// Of [`PIPE_SIZE`] if the system allows.
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array on success.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ only resizes; failure keeps the default.
        let mut size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        if size <= 0 {
            // SAFETY: F_GETPIPE_SZ only queries.
            size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        let capacity = usize::try_from(size).unwrap_or(64 * 1024).max(4096);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

fn final_name(number: u64) -> CString {
    CString::new(format!("{number}.file")).unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 64 unpredictable bits for a temporary's name.
fn random() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 8 {
        // No entropy source: still unique, if not secret; O_EXCL keeps it
        // safe either way.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(buf)
}
