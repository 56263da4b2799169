//! The sender: one client, page-aligned buffers and the socket options every
//! receiver gets, so all receivers see the same traffic.

use super::*;

/// A page-aligned buffer (an unaligned one costs the copying receivers, and the
/// sender's own copy into the socket, noticeably).
pub(crate) struct AlignedBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) layout: Layout,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory for the send buffer");
        // SAFETY: freshly allocated, len bytes.
        let slice = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        for (i, b) in slice.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        AlignedBuf { ptr, layout }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: initialized in new(), lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Sets TCP congestion control "cubic" on the socket (the machine's default `bbr`
/// costs a loopback sender 40-50 %). Returns what the socket ends up using.
pub(crate) fn set_cubic(s: &TcpStream) -> String {
    let name = b"cubic";
    // SAFETY: valid fd and buffer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd and buffer.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(len as usize);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub(crate) fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    Ok(s)
}

pub(crate) fn read_greeting(s: &mut TcpStream) -> Result<(), String> {
    let mut g = [0u8; GREETING.len()];
    s.read_exact(&mut g)
        .map_err(|e| format!("reading the greeting: {e}"))?;
    if g != GREETING {
        return Err(format!(
            "greeting {:?}, expected {:?}",
            String::from_utf8_lossy(&g),
            "accio\r\n"
        ));
    }
    Ok(())
}

/// One transfer as a client does it: connect, wait for the greeting (if the receiver
/// sends one), send `size` bytes, shut down writing, wait for the receiver to close.
/// Returns the time from connect to the close.
pub(crate) fn transfer(
    addr: SocketAddr,
    size: u64,
    greets: bool,
    buf: &AlignedBuf,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut s = connect(addr)?;
    set_cubic(&s);
    if greets {
        read_greeting(&mut s)?;
    }
    send_all(&mut s, buf, size)?;
    close_and_wait(&mut s)?;
    Ok(t0.elapsed())
}

/// Send `size` bytes from `buf`, over and over.
pub(crate) fn send_all(s: &mut TcpStream, buf: &AlignedBuf, size: u64) -> Result<(), String> {
    let data = buf.as_slice();
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        s.write_all(&data[..n])
            .map_err(|e| format!("send ({} of {size} bytes sent): {e}", size - left))?;
        left -= n as u64;
    }
    Ok(())
}

/// Close the sending side and wait until the receiver closed: it has then
/// counted (and, saving, stored) everything.
pub(crate) fn close_and_wait(s: &mut TcpStream) -> Result<(), String> {
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown(SHUT_WR): {e}"))?;
    let mut sink = [0u8; 64];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the receiver to close: {e}")),
        }
    }
}
