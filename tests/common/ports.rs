//! Free ports for tests and the benchmark (shared by `#[path]`).

/// A port that was free a moment ago, chosen below the ephemeral range.
///
/// Client sockets take ephemeral ports, and a client's TIME_WAIT entry
/// (thousands after a soak run) blocks a later bind of that port even with
/// SO_REUSEADDR. Ports below the range never carry one; the candidate is
/// checked by binding 0.0.0.0 without SO_REUSEADDR. Callers that bind it
/// still retry on a clash.
pub fn free_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let (first, span) = if low > 12_000 {
        (10_000u64, u64::from(low) - 10_000)
    } else {
        (1_024, 8_000)
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32);
    for _ in 0..1000 {
        let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst) ^ seed;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let port = (first + x % span) as u16;
        let Ok(sock) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
            continue;
        };
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        if sock.bind(&addr.into()).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}
