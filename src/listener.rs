//! Listening sockets: inherited from systemd socket activation, or bound
//! here.
//!
//! The sd-notify crate hands over fds 3.. from `LISTEN_FDS` but does not
//! check what they are. A unit that passes a UDP or UNIX socket by mistake
//! would otherwise fail later in obscure ways, so each fd is checked like
//! mitsuhiko/listenfd does (a socket, TCP, IPv4/IPv6), plus `SO_ACCEPTCONN`,
//! because our contract promises a listening socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::error::Error;

/// Take the sockets passed by systemd, if any, and unset `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` so children never see them.
///
/// # Safety
/// Changes the environment: call it while the process has a single thread.
pub unsafe fn take_inherited() -> Result<Vec<OwnedFd>, Error> {
    // SAFETY: the caller guarantees the process is single-threaded.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() };
    // SAFETY: as above.
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    let fds: Vec<RawFd> = fds
        .map_err(|e| Error::Os(format!("invalid socket activation variables: {e}")))?
        .collect();
    Ok(fds
        .into_iter()
        .map(|fd| {
            // SAFETY: systemd passes these fds to us alone; we take ownership
            // exactly once, and the crate already verified LISTEN_PID.
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
