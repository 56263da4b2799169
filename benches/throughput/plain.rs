//! The plain saving receiver (hidden subcommand `__plain DIR PORT`): the
//! file system's own speed, which the saving rounds compare the server with.

use super::*;

/// Pipe capacity the plain receiver asks for (the server asks for the same).
pub(crate) const PLAIN_PIPE: libc::c_int = 1 << 20;

/// The saving rounds' reference: what Linux allows for "store what a socket receives
/// in a file, durably", without anything around it. Blocking, one connection at a
/// time: greeting, `N.file` created in DIR (N = 1, 2, ... per connection), blocking
/// `splice` socket → pipe (1 MiB) → file until EOF, `fsync`, count line, close.
///
/// WINDOW (bytes, 0 = off; an experiment, `--plain-window`) makes it push written
/// pages out the way the server does with fsync on: every WINDOW bytes,
/// `sync_file_range(WRITE)` on the new window and a wait for the two before it.
pub(crate) fn plain_main(dir: &str, port: &str, window: &str) -> ExitCode {
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("ERROR: plain: bad port {port:?}");
        return ExitCode::from(64);
    };
    let Ok(window) = (if window.is_empty() {
        Ok(0)
    } else {
        window.parse::<u64>()
    }) else {
        eprintln!("ERROR: plain: bad window {window:?}");
        return ExitCode::from(64);
    };
    let dir = PathBuf::from(dir);
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR: plain: bind 0.0.0.0:{port}: {e}");
            return ExitCode::from(71);
        }
    };
    let mut number: u64 = 0;
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        number += 1;
        let line = match plain_serve(&mut stream, &dir.join(format!("{number}.file")), window) {
            Ok(total) => format!("{total}\n"),
            Err(e) => {
                eprintln!("plain: connection {number}: {e}");
                "ERROR\n".to_string()
            }
        };
        // SAFETY: writing an owned buffer to fd 1.
        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        drop(stream);
    }
}

pub(crate) fn plain_serve(stream: &mut TcpStream, path: &Path, window: u64) -> io::Result<u64> {
    stream.write_all(GREETING)?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our pipe. A refusal (pipe-user-pages-soft) leaves 64 KiB.
    let cap = unsafe {
        libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PLAIN_PIPE);
        libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ)
    };
    let cap = if cap > 0 { cap as usize } else { 64 << 10 };
    let (sock, file_fd) = (stream.as_raw_fd(), file.as_raw_fd());
    let mut total: u64 = 0;
    let mut pushed: u64 = 0;
    loop {
        // SAFETY: splice between fds we own; blocks until data or EOF.
        let n = unsafe {
            libc::splice(
                sock,
                std::ptr::null_mut(),
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                cap,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above; the pipe holds `left` bytes.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    file_fd,
                    std::ptr::null_mut(),
                    left,
                    0,
                )
            };
            if m < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "file took nothing",
                ));
            }
            left -= m as usize;
        }
        total += n as u64;
        if window > 0 && total - pushed >= window {
            // The server's scheme (src/save.rs, Part::push): start the new window,
            // wait for the two before it.
            let (start, len) = (pushed as i64, (total - pushed) as i64);
            // SAFETY: sync_file_range on our own file; errors show up at fsync.
            unsafe {
                libc::sync_file_range(file_fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
                if start > 0 {
                    let before = start.saturating_sub(window as i64 * 2).max(0);
                    libc::sync_file_range(
                        file_fd,
                        before,
                        start - before,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
            pushed = total;
        }
    }
    file.sync_all()?;
    Ok(total)
}
