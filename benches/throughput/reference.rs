//! The reference receiver (hidden subcommand `__reference PORT`): the
//! simplest receiver Linux allows, which every ratio in the report divides by.

use super::*;

/// The reference: minimal, blocking, one connection at a time. Counts with
/// `recv(fd, NULL, 1 GiB, MSG_TRUNC)`, so Linux TCP drops the data without copying it.
/// SIGTERM keeps its default action (the process dies at once).
pub(crate) fn reference_main(port: &str) -> ExitCode {
    let port: u16 = match port.parse() {
        Ok(p) => p,
        Err(_) => {
            eprintln!("ERROR: reference: bad port {port:?}");
            return ExitCode::from(64);
        }
    };
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR: reference: bind 0.0.0.0:{port}: {e}");
            return ExitCode::from(71);
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let fd = stream.as_raw_fd();
        let mut ok = stream.write_all(GREETING).is_ok();
        let mut total: u64 = 0;
        while ok {
            // SAFETY: a NULL buffer is allowed with MSG_TRUNC on TCP (nothing is copied).
            let n = unsafe { libc::recv(fd, std::ptr::null_mut(), 1 << 30, libc::MSG_TRUNC) };
            match n {
                0 => break,
                n if n > 0 => total += n as u64,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => ok = false,
            }
        }
        let line = if ok {
            format!("{total}\n")
        } else {
            "ERROR\n".to_string()
        };
        // One write(2) per line, before the socket is closed (as the contract asks).
        // SAFETY: writing an owned buffer to fd 1.
        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
        drop(stream);
    }
}
