//! Saving received bytes as files (`--save-dir`, the full Accio mode).
//!
//! Bytes move socket -> pipe -> file with splice(2), so the payload never
//! enters user space. One pipe serves every connection: the loop is single
//! threaded and empties the pipe into the file before it reads the next
//! socket, so the pipe is empty between calls (after a failed file write it
//! may not be, and is replaced). Connection N is written to the hidden
//! `.accio-N.part` and renamed to `N.file` only when complete (after fsync
//! unless `fsync = false`), so no reader ever sees a partial `N.file`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::Error;

const PART_PREFIX: &str = ".accio-";
const PART_SUFFIX: &str = ".part";
/// What the file of a connection that ended with ERROR holds.
pub const ERROR_CONTENT: &[u8] = b"ERROR";
/// Requested pipe capacity: fewer splice calls per megabyte.
const PIPE_SIZE: i32 = 1 << 20;

/// The save directory and the shared pipe.
pub struct SaveDir {
    dir: PathBuf,
    /// Kept open to fsync the directory after a rename.
    handle: File,
    pub fsync: bool,
    pipe: Option<Pipe>,
}

/// One connection's temporary file.
pub struct Part {
    file: File,
    temp: PathBuf,
    number: u64,
}

/// Which side of a splice failed: the socket ends the connection as a
/// reset or failure, the file as a write failure.
#[derive(Debug)]
pub enum SpliceError {
    Socket(io::Error),
    File(io::Error),
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ only resizes; failure keeps the default.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: F_GETPIPE_SZ only queries.
        let capacity = if size > 0 {
            size
        } else {
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            read,
            write,
            capacity: usize::try_from(capacity).unwrap_or(64 * 1024).max(4096),
        })
    }
}

fn cant_create(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::CantCreate(format!(
        "cannot use save directory {}: {what}: {e} (create it writable for the server's user, or choose another --save-dir)",
        dir.display()
    ))
}

/// What `--check-config` can tell without creating anything: DIR is a
/// writable directory, or its nearest existing ancestor is one (so DIR can
/// be created).
pub fn check(dir: &Path) -> Result<(), Error> {
    let existing = dir
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || a.exists());
    let existing = match existing {
        Some(a) if a.as_os_str().is_empty() => Path::new("."),
        Some(a) => a,
        None => Path::new("/"),
    };
    if !existing.is_dir() {
        let what = if existing == dir {
            "it is not a directory"
        } else {
            "it cannot be created"
        };
        return Err(cant_create(
            dir,
            what,
            format!("{} is not a directory", existing.display()),
        ));
    }
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|_| cant_create(dir, "invalid path", "contains a NUL byte"))?;
    // SAFETY: access(2) only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let what = if existing == dir {
            "it is not writable"
        } else {
            "it cannot be created"
        };
        return Err(cant_create(dir, what, io::Error::last_os_error()));
    }
    Ok(())
}

impl SaveDir {
    /// Create DIR if missing, check it is a writable directory, remove
    /// temporary files a crash left behind, and return the largest `N` of
    /// the `N.file`s already there (0 if none), so numbering continues.
    pub fn open(dir: &Path, fsync: bool) -> Result<(SaveDir, u64), Error> {
        fs::create_dir_all(dir).map_err(|e| cant_create(dir, "cannot create it", e))?;
        let handle = File::open(dir).map_err(|e| cant_create(dir, "cannot open it", e))?;
        let meta = handle
            .metadata()
            .map_err(|e| cant_create(dir, "cannot inspect it", e))?;
        if !meta.is_dir() {
            return Err(cant_create(
                dir,
                "it is not a directory",
                "exists as a file",
            ));
        }
        let probe = dir.join(format!(
            "{PART_PREFIX}probe-{}{PART_SUFFIX}",
            std::process::id()
        ));
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| cant_create(dir, "it is not writable", e))?;
        let mut largest = 0;
        let entries = fs::read_dir(dir).map_err(|e| cant_create(dir, "cannot list it", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name
                .strip_suffix(".file")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
            {
                largest = largest.max(n);
            } else if name.starts_with(PART_PREFIX) && name.ends_with(PART_SUFFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok((
            SaveDir {
                dir: dir.to_path_buf(),
                handle,
                fsync,
                pipe: None,
            },
            largest,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Start connection `number`'s temporary file.
    pub fn create(&self, number: u64) -> io::Result<Part> {
        let temp = self.dir.join(format!("{PART_PREFIX}{number}{PART_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        Ok(Part { file, temp, number })
    }

    /// Move what the socket has queued (at most one pipe-full) into the
    /// part file. Returns the bytes moved; 0 means the client closed.
    pub fn splice(&mut self, socket: RawFd, part: &mut Part) -> Result<usize, SpliceError> {
        if self.pipe.is_none() {
            self.pipe = Some(Pipe::new().map_err(SpliceError::File)?);
        }
        let Some(pipe) = self.pipe.as_ref() else {
            return Err(SpliceError::File(io::Error::other("no pipe")));
        };
        // SAFETY: splice between fds we own; null offsets use file positions.
        let n = unsafe {
            libc::splice(
                socket,
                std::ptr::null_mut(),
                pipe.write.as_raw_fd(),
                std::ptr::null_mut(),
                pipe.capacity,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(SpliceError::Socket(io::Error::last_os_error()));
        }
        let n = n as usize;
        let mut left = n;
        while left > 0 {
            // SAFETY: as above; the pipe holds `left` bytes of this socket.
            let m = unsafe {
                libc::splice(
                    pipe.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    part.file.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            if m <= 0 {
                let e = if m == 0 {
                    io::Error::new(io::ErrorKind::WriteZero, "file accepted no data")
                } else {
                    io::Error::last_os_error()
                };
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Bytes may be left in the pipe: never reuse it.
                self.pipe = None;
                return Err(SpliceError::File(e));
            }
            left -= m as usize;
        }
        Ok(n)
    }

    /// The transfer is complete: flush it (unless `fsync = false`) and give
    /// it its final name.
    pub fn commit(&self, part: Part) -> io::Result<PathBuf> {
        self.finish(part, None)
    }

    /// The connection ended with ERROR: the file says exactly `ERROR`.
    /// Not fsynced: a stop ends every open connection this way and must
    /// stay fast, and a lost ERROR marker loses no data.
    pub fn fail(&self, part: Part) -> io::Result<PathBuf> {
        self.finish(part, Some(ERROR_CONTENT))
    }

    fn finish(&self, mut part: Part, replace: Option<&[u8]>) -> io::Result<PathBuf> {
        let target = self.dir.join(format!("{}.file", part.number));
        let durable = self.fsync && replace.is_none();
        let done = (|| {
            if let Some(content) = replace {
                part.file.set_len(0)?;
                part.file.rewind()?;
                part.file.write_all(content)?;
            }
            if durable {
                part.file.sync_all()?;
            }
            fs::rename(&part.temp, &target)?;
            if durable {
                self.handle.sync_all()?;
            }
            Ok(target)
        })();
        if done.is_err() {
            let _ = fs::remove_file(&part.temp);
        }
        done
    }
}
