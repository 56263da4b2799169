//! Checks of the save directory that need no disk writes: the path, the
//! kind of file, writability and the lock of another server. Shared by a
//! start and by `--check-config`, so that "OK" means the start would
//! succeed.

use super::*;

pub(super) fn cant_create(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::CantCreate(format!(
        "cannot use save directory {}: {what}: {e} (create it writable for the server's user, or choose another --save-dir)",
        crate::log::quote(&dir.display().to_string())
    ))
}

pub(super) fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

pub(super) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Open `dir` as a directory without following a symlink at its last
/// component.
pub(super) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = cstring(dir)?;
    // SAFETY: open(2) with a NUL-terminated path; the fd is ours.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `--check-config` can tell without creating anything: the path is
/// usable, DIR is a writable directory or can be created in one, and no
/// other server holds it.
pub fn check(dir: &Path) -> Result<(), Error> {
    let c = cstring(dir).map_err(|e| cant_create(dir, "invalid path", e))?;
    if c.as_bytes().len() >= libc::PATH_MAX as usize {
        return Err(cant_create(
            dir,
            "invalid path",
            "it is longer than PATH_MAX",
        ));
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return match open_dir(&dir.join(".")) {
                Ok(fd) => check_open(dir, &fd),
                Err(e) => Err(cant_create(
                    dir,
                    "it is a symlink that leads nowhere usable",
                    e,
                )),
            };
        }
        Ok(m) if !m.is_dir() => {
            return Err(cant_create(
                dir,
                "it is not a directory",
                "exists as another kind of file",
            ));
        }
        Ok(_) => {
            let fd = open_dir(dir).map_err(|e| cant_create(dir, "cannot open it", e))?;
            return check_open(dir, &fd);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(cant_create(dir, "cannot inspect it", e)),
    }
    let parent = dir
        .ancestors()
        .skip(1)
        .find(|a| a.as_os_str().is_empty() || a.exists())
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(cant_create(
            dir,
            "it cannot be created",
            format!("{} is not a directory", parent.display()),
        ));
    }
    writable(parent).map_err(|e| cant_create(dir, "it cannot be created", e))
}

pub(super) fn writable(p: &Path) -> io::Result<()> {
    let c = cstring(p)?;
    // SAFETY: access(2) only reads the NUL-terminated path.
    cvt(unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) }).map(|_| ())
}

/// An existing directory: writable and not locked by another server.
pub(super) fn check_open(dir: &Path, fd: &OwnedFd) -> Result<(), Error> {
    writable(dir).map_err(|e| cant_create(dir, "it is not writable", e))?;
    if let Some(pid) = lock_holder(fd) {
        return Err(held_by(dir, pid));
    }
    Ok(())
}

pub(super) fn held_by(dir: &Path, pid: Option<u32>) -> Error {
    let who = pid.map_or("another process".to_string(), |p| {
        format!("another server (pid {p})")
    });
    Error::CantCreate(format!(
        "cannot use save directory {}: {who} is saving into it (one server per directory: stop it or choose another --save-dir)",
        crate::log::quote(&dir.display().to_string())
    ))
}

/// `Some(pid)` if another process holds an exclusive flock on `fd`'s
/// directory (pid from /proc/locks when it can be found).
pub(super) fn lock_holder(fd: &OwnedFd) -> Option<Option<u32>> {
    // SAFETY: flock on a descriptor we own; LOCK_SH|LOCK_NB never blocks,
    // and the shared lock is released at once.
    let free = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        // SAFETY: as above.
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    Some(locker_pid(fd))
}

/// The pid of the process holding a FLOCK on the file behind `fd`, read
/// from /proc/locks (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`).
pub(super) fn locker_pid(fd: &OwnedFd) -> Option<u32> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the struct for a valid fd.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }).ok()?;
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(st.st_dev),
        libc::minor(st.st_dev),
        st.st_ino
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}
