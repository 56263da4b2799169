//! One connection's temporary file, written by a disk thread: moving the
//! bytes from the pipe, pushing them to the disk in windows, and the
//! commit (fsync, link, directory fsync) that makes it `N.file`.

use super::*;
use crate::connection::{allowance, at_mark, queued};
use std::os::fd::IntoRawFd;

/// What a pump job did: the bytes it read from the socket, and why it
/// stopped.
pub struct Pumped {
    pub read: u64,
    pub end: PumpEnd,
}

pub enum PumpEnd {
    /// Nothing more queued: wait for the socket to be readable.
    Idle,
    /// [`PUMP_MAX`] moved and maybe more queued: again, after the others.
    More,
    /// The client closed in order.
    Eof,
    /// More than `max_file_size` bytes.
    TooLarge,
    /// Reading the socket failed (a reset, mostly).
    Socket(io::Error),
    /// Writing the file failed, or the stop came first.
    File(io::Error),
}

/// A disk call that can wait for the device, made by [`detached`].
pub(super) enum DiskCall {
    /// fsync(2) the descriptor.
    Fsync(RawFd),
    /// close(2) the descriptor: the last close of a discarded temporary
    /// waits for the write-back under way on its pages.
    Close(RawFd),
    /// Start write-back of `write` and wait for `wait` (each an offset and
    /// a length, as `sync_file_range(2)` takes them). Errors are left for
    /// the fsync that follows to report.
    Push {
        fd: RawFd,
        write: (i64, i64),
        wait: (i64, i64),
    },
}

/// Make `call` in a process of its own that shares our memory and files
/// (`clone` with `CLONE_VM | CLONE_FILES | CLONE_VFORK`), while the calling
/// disk thread waits for it.
///
/// Why: a thread in fsync, in a `sync_file_range` wait or in the last close
/// of a file with write-back under way can sit in an
/// uninterruptible wait (a FUSE file system answers when it likes; ext4
/// waits for the device), and a process cannot exit before all its threads
/// have. The vfork wait of the calling thread is killable, so a stop that
/// ends while such a call is under way exits at once; the detached call
/// finishes on its own and nobody waits for it. Where `clone` fails, the
/// call runs here.
pub(super) fn detached(call: &DiskCall) -> io::Result<()> {
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // Only system calls here: this runs on a borrowed stack, with the
        // suspended caller's thread state.
        // SAFETY: `arg` is the caller's `&DiskCall`, alive while the caller
        // is suspended by CLONE_VFORK.
        let call = unsafe { &*(arg as *const DiskCall) };
        match run(call) {
            0 => 0,
            // SAFETY: errno of the shared thread state, set just now.
            _ => unsafe { *libc::__errno_location() },
        }
    }
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the stack grows down from its 16-byte-aligned end; the child
    // only makes system calls; CLONE_VFORK suspends us until it exits, so
    // the stack and `call` outlive it unless the whole process ends first,
    // and then nothing frees them.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK | libc::SIGCHLD,
            call as *const DiskCall as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return cvt(run(call)).map(|_| ());
    }
    let mut status = 0;
    // SAFETY: reaping the child we just made.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
    }
    drop(stack);
    match libc::WEXITSTATUS(status) {
        0 if libc::WIFEXITED(status) => Ok(()),
        errno if libc::WIFEXITED(status) => Err(io::Error::from_raw_os_error(errno)),
        _ => Err(io::Error::other("the disk call's process was killed")),
    }
}

/// The system calls of `call`: 0, or -1 with errno set.
fn run(call: &DiskCall) -> libc::c_int {
    match *call {
        // SAFETY: fsync on a descriptor of the shared file table.
        DiskCall::Fsync(fd) => unsafe { libc::fsync(fd) },
        // SAFETY: the caller gave up the descriptor (`into_raw_fd`).
        DiskCall::Close(fd) => unsafe { libc::close(fd) },
        DiskCall::Push { fd, write, wait } => {
            // SAFETY: sync_file_range on a descriptor of the shared file
            // table; its errors show up at the fsync.
            unsafe {
                libc::sync_file_range(fd, write.0, write.1, libc::SYNC_FILE_RANGE_WRITE);
                if wait.1 > 0 {
                    libc::sync_file_range(
                        fd,
                        wait.0,
                        wait.1,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
            0
        }
    }
}

impl Part {
    fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if self.dir.exiting.load(Ordering::Relaxed) {
                return Err(io::Error::other("the server stopped first"));
            }
            let (file, name) = self.dir.create_temp()?;
            lock(&self.dir.live).insert(self.id, (file.as_raw_fd(), name.clone()));
            self.name = name;
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("no temporary file"))
    }

    /// Move what the client sent, socket -> pipe -> file, until the socket
    /// has nothing more for now, the client closed, or [`PUMP_MAX`] moved
    /// (so that other connections get the disk threads too). `counted` is
    /// what earlier jobs moved, `max` the `max_file_size` (0: none).
    ///
    /// `splice` stops in front of an urgent byte (the socket has
    /// `SO_OOBINLINE`, so it is an ordinary byte of the stream): that one
    /// byte is read with `recv` and written into the pipe.
    pub fn pump(&mut self, counted: u64, max: u64, fsync: bool, abandon: &AtomicBool) -> Pumped {
        let Some(sock) = self.sock.as_ref().map(AsRawFd::as_raw_fd) else {
            return Pumped {
                read: 0,
                end: PumpEnd::Socket(io::Error::other("the connection ended")),
            };
        };
        let mut read = 0u64;
        let end = loop {
            if abandon.load(Ordering::Relaxed) {
                break PumpEnd::File(io::Error::other("the server stopped first"));
            }
            if read >= PUMP_MAX {
                break PumpEnd::More;
            }
            let want = allowance(counted + read, max, self.pipe.capacity);
            // SAFETY: splice from the socket into our pipe; both are
            // non-blocking.
            let n = unsafe {
                libc::splice(
                    sock,
                    std::ptr::null_mut(),
                    self.pipe.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            let moved = if n > 0 {
                n as usize
            } else {
                let e = io::Error::last_os_error();
                if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if n < 0 && e.kind() != io::ErrorKind::WouldBlock {
                    break PumpEnd::Socket(e);
                }
                // splice returns 0 at the end of the stream and in front of
                // an urgent byte once the client closed, EAGAIN when nothing
                // is queued and in front of an urgent byte before: what is
                // still queued tells them apart.
                if queued(sock) == 0 {
                    break if n == 0 { PumpEnd::Eof } else { PumpEnd::Idle };
                }
                if !at_mark(sock) {
                    break PumpEnd::Idle;
                }
                match self.urgent_byte(sock) {
                    Ok(()) => 1,
                    Err(e) => break PumpEnd::Socket(e),
                }
            };
            read += moved as u64;
            if max != 0 && counted + read > max {
                break PumpEnd::TooLarge;
            }
            if let Err(e) = self.write_out(moved, fsync, abandon) {
                break PumpEnd::File(e);
            }
        };
        Pumped { read, end }
    }

    /// The connection ended: let go of the socket.
    pub fn release_socket(&mut self) {
        self.sock = None;
    }

    /// Read the urgent byte the socket is at into the pipe.
    fn urgent_byte(&mut self, sock: RawFd) -> io::Result<()> {
        let mut byte = 0u8;
        // SAFETY: a one-byte read into a valid buffer.
        let r = unsafe { libc::recv(sock, (&raw mut byte).cast(), 1, libc::MSG_DONTWAIT) };
        if r != 1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a one-byte write from a valid buffer into our pipe, which
        // is empty here.
        let w = unsafe { libc::write(self.pipe.write.as_raw_fd(), (&raw const byte).cast(), 1) };
        if w != 1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Move `amount` bytes, known to be in the pipe, into the file.
    fn write_out(&mut self, amount: usize, fsync: bool, abandon: &AtomicBool) -> io::Result<()> {
        if let Ok((free, floor)) = self.dir.space()
            && floor > 0
            && free.saturating_sub(amount as u64) < floor
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the file system is nearly full: {} free, min_free_space keeps {}",
                    crate::units::bytes(free),
                    crate::units::bytes(floor)
                ),
            ));
        }
        let pipe = self.pipe.read.as_raw_fd();
        let file = self.file()?.as_raw_fd();
        let mut moved = 0;
        while moved < amount {
            if abandon.load(Ordering::Relaxed) {
                return Err(io::Error::other("the server stopped first"));
            }
            // SAFETY: splice between fds we own; null offsets use the file
            // position.
            let n = unsafe {
                libc::splice(
                    pipe,
                    std::ptr::null_mut(),
                    file,
                    std::ptr::null_mut(),
                    amount - moved,
                    libc::SPLICE_F_MOVE,
                )
            };
            if n <= 0 {
                let e = if n == 0 {
                    io::Error::new(io::ErrorKind::WriteZero, "the file accepted no data")
                } else {
                    io::Error::last_os_error()
                };
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            moved += n as usize;
            self.written += n as u64;
            if fsync && self.written - self.pushed >= SYNC_WINDOW {
                self.push(file);
            }
        }
        Ok(())
    }

    /// Start writing out the new window and wait for the one before it,
    /// so dirty pages stay bounded and the final fsync is short. Both can
    /// wait for the device, so they run detached like fsync.
    fn push(&mut self, fd: RawFd) {
        let start = self.pushed as i64;
        let before = start.saturating_sub(SYNC_WINDOW as i64 * 2).max(0);
        let call = DiskCall::Push {
            fd,
            write: (start, (self.written - self.pushed) as i64),
            wait: (before, start - before),
        };
        // A failed push only means a longer final fsync, which reports
        // any error of the file.
        let _ = detached(&call);
        self.pushed = self.written;
    }

    /// The transfer is complete: make it durable (with `fsync`) and give it
    /// the name `N.file`, unless the stop came first. On failure other than
    /// a taken name, the temporary is dropped and the marker written.
    pub fn commit(
        mut self,
        number: u64,
        fsync: bool,
        abandon: &AtomicBool,
    ) -> Result<PathBuf, CommitError> {
        let name = final_name(number);
        let target = self.dir.path.join(format!("{number}.file"));
        let done = (|| {
            let file = self.file().map_err(CommitError::Io)?;
            if fsync {
                detached(&DiskCall::Fsync(file.as_raw_fd())).map_err(CommitError::Io)?;
            }
            if abandon.load(Ordering::Relaxed) {
                return Err(CommitError::Abandoned);
            }
            let file = self.file.take().ok_or(CommitError::Abandoned)?;
            let linked = self.dir.link(&file, self.name.as_deref(), &name);
            self.file = Some(file);
            match linked {
                Ok(()) => {
                    // The temporary name (if any) is gone with the rename.
                    self.name = None;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(CommitError::NameTaken(target.clone()));
                }
                Err(e) => return Err(CommitError::Io(e)),
            }
            if fsync {
                detached(&DiskCall::Fsync(self.dir.dir.as_raw_fd())).map_err(CommitError::Io)?;
            }
            Ok(target.clone())
        })();
        if let Err(CommitError::Io(_)) = &done {
            let dir = Arc::clone(&self.dir);
            drop(self);
            // The failure is what gets reported; a marker that cannot be
            // written either changes nothing for the client.
            let _ = dir.mark_error(number);
        }
        done
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if self.file.is_none() {
            return;
        }
        if self.dir.exiting.load(Ordering::Relaxed) {
            // The exit handover closes it in another process.
            if let Some(f) = self.file.take() {
                std::mem::forget(f);
            }
            return;
        }
        lock(&self.dir.live).remove(&self.id);
        if let Some(name) = self.name.take() {
            self.dir.unlink(&name);
        }
        if let Some(file) = self.file.take() {
            // Nothing to report: the file is discarded.
            let _ = detached(&DiskCall::Close(file.into_raw_fd()));
        }
    }
}
