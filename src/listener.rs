//! Listening sockets: inherited from systemd socket activation, or bound
//! here.
//!
//! The inherited fds are 3.. as `LISTEN_FDS` counts them (parsed here by
//! [`listen_fds_from`], with the sd-notify crate's rules), but nothing says
//! what they are. A unit that passes a UDP or UNIX socket by mistake
//! would otherwise fail later in obscure ways, so each fd is checked like
//! mitsuhiko/listenfd does (a socket, TCP, IPv4/IPv6), plus `SO_ACCEPTCONN`,
//! because our contract promises a listening socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::error::Error;

/// `SD_LISTEN_FDS_START`: the first inherited fd.
const LISTEN_FDS_START: u32 = 3;

/// How many sockets systemd passed, from the values of `LISTEN_PID` and
/// `LISTEN_FDS` (None: unset or not UTF-8) and our own pid. Pure, so that
/// any value can be tried without touching the environment; the rules are
/// the sd-notify crate's `listen_fds`, which this replaces: no `LISTEN_PID`,
/// another process's, or no `LISTEN_FDS` means none; either value that is
/// not a `u32` (`str::parse`: decimal digits, an optional leading `+`) is an
/// error, and so is a count that runs the fds past `u32::MAX`.
pub fn listen_fds_from(
    pid: Option<&str>,
    fds: Option<&str>,
    our_pid: u32,
) -> Result<usize, String> {
    let Some(pid) = pid else { return Ok(0) };
    let pid: u32 = pid.parse().map_err(|_| "invalid LISTEN_PID".to_string())?;
    if pid != our_pid {
        return Ok(0);
    }
    let Some(fds) = fds else { return Ok(0) };
    let n: u32 = fds.parse().map_err(|_| "invalid LISTEN_FDS".to_string())?;
    LISTEN_FDS_START
        .checked_add(n)
        .ok_or_else(|| "fd count overflowed".to_string())?;
    Ok(n as usize)
}

/// Set `FD_CLOEXEC` on an inherited fd, as sd_listen_fds(3) does.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and set the fd's flags; a closed fd
    // is EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Take the sockets passed by systemd, if any, and unset `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` so children never see them.
///
/// # Safety
/// Changes the environment: call it while the process has a single thread.
pub unsafe fn take_inherited() -> Result<Vec<OwnedFd>, Error> {
    let bad = |e: String| Error::Os(format!("invalid socket activation variables: {e}"));
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let count = listen_fds_from(pid.as_deref(), fds.as_deref(), std::process::id());
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the caller guarantees the process is single-threaded.
        unsafe { std::env::remove_var(name) };
    }
    // 3 + count fits in u32 (listen_fds_from checked it), so in u64.
    let last = u64::from(LISTEN_FDS_START) + count.map_err(bad)? as u64;
    for fd in u64::from(LISTEN_FDS_START)..last {
        // An fd past RawFd is never open: EBADF, as from fcntl.
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF));
        fd.and_then(set_cloexec).map_err(|e| bad(e.to_string()))?;
    }
    let last = RawFd::try_from(last).map_err(|_| bad("fd count overflowed".into()))?;
    Ok((LISTEN_FDS_START as RawFd..last)
        .map(|fd| {
            // SAFETY: systemd passes these fds to us alone (LISTEN_PID is
            // ours); we take ownership exactly once.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect())
}

/// Check that an inherited fd is a listening TCP socket and make it
/// non-blocking. Returns its local address.
pub fn adopt(fd: OwnedFd) -> Result<(std::net::TcpListener, SocketAddr), Error> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let sock = Socket::from(fd);
    let bad = |what: String| {
        Error::Os(format!(
            "inherited file descriptor {raw} is {what}, not a listening TCP socket \
             (check ListenStream= in the .socket unit)"
        ))
    };
    let ty = sock.r#type().map_err(|e| bad(format!("unusable ({e})")))?;
    if ty != Type::STREAM {
        return Err(bad("not a stream socket".into()));
    }
    let domain = sock.domain().map_err(|e| bad(format!("unusable ({e})")))?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(bad("not an IPv4/IPv6 socket".into()));
    }
    if !sock
        .is_listener()
        .map_err(|e| bad(format!("unusable ({e})")))?
    {
        return Err(bad("not listening".into()));
    }
    let addr = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bad("without an address".into()))?;
    sock.set_nonblocking(true)
        .map_err(|e| bad(format!("unusable ({e})")))?;
    Ok((sock.into(), addr))
}

/// Bind `addr` with SO_REUSEADDR and listen with `backlog`. `::` is made
/// dual-stack explicitly, whatever `net.ipv6.bindv6only` says.
pub fn bind(addr: SocketAddr, backlog: u16) -> Result<std::net::TcpListener, Error> {
    let fail = |step: &str, e: io::Error| {
        let hint = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                " (another process uses this port: stop it or choose another PORT)"
            }
            Some(libc::EACCES) => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            Some(libc::EADDRNOTAVAIL) => " (no local interface has this address: check `bind`)",
            _ => "",
        };
        Error::Os(format!("cannot {step} {addr}: {e}{hint}"))
    };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| fail("create a socket for", e))?;
    sock.set_reuse_address(true)
        .map_err(|e| fail("set SO_REUSEADDR on", e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)
            .map_err(|e| fail("make dual-stack", e))?;
    }
    sock.bind(&addr.into()).map_err(|e| fail("bind to", e))?;
    sock.listen(i32::from(backlog))
        .map_err(|e| fail("listen on", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| fail("configure", e))?;
    Ok(sock.into())
}
