//! PROXY protocol headers (HAProxy's `proxy-protocol.txt`, versions 1 and
//! 2): where the client a load balancer forwards really comes from.
//!
//! (Over 500 lines because two thirds are its tests: every prefix of every
//! header kind, every malformed byte, kept beside the parser they pin.)
//!
//! The parser works on a prefix of the connection, not on a whole header.
//! The server peeks at most [`PEEK_MAX`] bytes with `MSG_PEEK`, which
//! consumes nothing, asks [`parse`], and only then takes the header off the
//! socket: exactly `len` bytes, with `recv(MSG_TRUNC)`, which discards them
//! inside the kernel. A v2 header may carry up to 64 KiB of TLVs that the
//! server has no use for; a parser that wants the whole header in memory
//! (the `ppp` crate does) would need a buffer that large per connection and
//! would have to read them. Here the TLVs are counted, never read, so the
//! memory a connection costs is the peek buffer, and since the length to
//! discard is exact, no byte of the payload behind the header is ever
//! consumed. Hence no dependency: std is enough, and the crates at hand do
//! not work on a prefix.
//!
//! Undecided prefixes are [`Parsed::Incomplete`] only while they can still
//! grow into a valid header, so a client that does not speak the protocol
//! is refused on its first wrong byte instead of holding a slot until a
//! timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The most bytes the server needs to peek to decide: a v1 line is at most
/// 107 bytes; a v2 header's fixed part is 16 bytes and its largest address
/// block (AF_UNIX) 216.
pub const PEEK_MAX: usize = 232;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are a valid beginning: wait for more.
    Incomplete,
    /// A complete header of `len` bytes (for v2 this includes the TLVs,
    /// which the caller skips without reading them; `len` may exceed the
    /// peeked bytes). `source` is the client address the header carries,
    /// or None where the connection's own peer address is to be used
    /// (v2 LOCAL, v2 AF_UNSPEC or AF_UNIX, v1 UNKNOWN).
    Header {
        len: usize,
        source: Option<std::net::SocketAddr>,
    },
    /// Not a PROXY header: a short reason for the log.
    Invalid(&'static str),
}

/// Parse the first bytes of a connection (at most PEEK_MAX of them are
/// looked at).
///
/// A v4-mapped IPv6 source is returned as given; canonicalising it is the
/// caller's business, as for any peer address.
pub fn parse(peeked: &[u8]) -> Parsed {
    let b = &peeked[..peeked.len().min(PEEK_MAX)];
    match b.first() {
        None => Parsed::Incomplete,
        Some(b'P') => v1(b),
        Some(b'\r') => v2(b),
        Some(_) => Parsed::Invalid("not a PROXY header"),
    }
}

/// The spec's bound on a v1 line, CRLF included.
const V1_MAX: usize = 107;

/// A v1 line so far, before the length bound is applied.
#[derive(Debug, PartialEq)]
enum Line {
    Done(usize, Option<SocketAddr>),
    /// Valid so far, and this is the fewest more bytes that can complete
    /// it. Exact, not a guess: it decides whether the 107-byte bound is
    /// already lost.
    Need(usize),
    Bad(&'static str),
}

fn v1(b: &[u8]) -> Parsed {
    // Bytes past the bound cannot belong to a valid line, so they are never
    // looked at; a line still open at the bound is then simply too long.
    let seen = b.len().min(V1_MAX);
    let refused = |k: usize| match v1_line(&b[..k]) {
        Line::Bad(why) => Some(why),
        Line::Need(more) if k + more > V1_MAX => Some("PROXY v1: no CRLF within 107 bytes"),
        _ => None,
    };
    match v1_line(&b[..seen]) {
        Line::Done(len, source) => return Parsed::Header { len, source },
        Line::Need(more) if seen + more <= V1_MAX => return Parsed::Incomplete,
        _ => {}
    }
    // The reason is the first one met, so that the log says the same for
    // the same bytes however TCP cut them. Both kinds of refusal last once
    // met, so the first refused prefix can be found by bisection.
    let (mut ok, mut bad) = (0, seen);
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        if refused(mid).is_some() {
            bad = mid;
        } else {
            ok = mid;
        }
    }
    // `bad` only ever holds refused lengths: the fallback is never taken.
    Parsed::Invalid(refused(bad).unwrap_or("not a PROXY header"))
}

/// How `b` starts compared with `lit`.
enum Lit {
    Match,
    /// `b` is a proper prefix of `lit`, this many bytes short.
    Short(usize),
    Differ,
}

fn lit(b: &[u8], lit: &[u8]) -> Lit {
    let n = b.len().min(lit.len());
    if b[..n] != lit[..n] {
        Lit::Differ
    } else if n < lit.len() {
        Lit::Short(lit.len() - n)
    } else {
        Lit::Match
    }
}

#[derive(Clone, Copy)]
enum Proto {
    Tcp4,
    Tcp6,
    Unknown,
}

// With the shortest line each could still become after its keyword: the
// bound can only be judged against the cheapest way to finish.
const PROTOS: [(&[u8], Proto, usize); 3] = [
    (b"TCP4 ", Proto::Tcp4, "0.0.0.0 0.0.0.0 0 0\r\n".len()),
    (b"TCP6 ", Proto::Tcp6, ":: :: 0 0\r\n".len()),
    (b"UNKNOWN", Proto::Unknown, "\r\n".len()),
];

fn v1_line(b: &[u8]) -> Line {
    const MAGIC: &[u8] = b"PROXY ";
    match lit(b, MAGIC) {
        Lit::Differ => return Line::Bad("not a PROXY header"),
        Lit::Short(n) => return Line::Need(n + "UNKNOWN\r\n".len()),
        Lit::Match => {}
    }
    let rest = &b[MAGIC.len()..];
    let mut need = None;
    for (word, proto, after) in PROTOS {
        match lit(rest, word) {
            Lit::Match => {
                let at = MAGIC.len() + word.len();
                return match proto {
                    Proto::Tcp4 => v1_inet(b, at, false),
                    Proto::Tcp6 => v1_inet(b, at, true),
                    Proto::Unknown => v1_unknown(b, at),
                };
            }
            Lit::Short(n) => need = Some(need.unwrap_or(usize::MAX).min(n + after)),
            Lit::Differ => {}
        }
    }
    need.map_or(Line::Bad("PROXY v1: unknown protocol"), Line::Need)
}

/// After `UNKNOWN`: the spec has the receiver ignore whatever precedes the
/// CRLF, so only the line's end is looked for.
fn v1_unknown(b: &[u8], at: usize) -> Line {
    match b.get(at) {
        None => Line::Need(2),
        Some(b'\r') => match b.get(at + 1) {
            None => Line::Need(1),
            Some(b'\n') => Line::Done(at + 2, None),
            Some(_) => Line::Bad("PROXY v1: CR without LF"),
        },
        Some(b' ') => {
            // The first LF ends the line; it must be the second half of a
            // CRLF. A lone CR in the ignored part is ignored like the rest.
            let tail = at + 1;
            match b[tail..].iter().position(|&c| c == b'\n') {
                Some(i) if i > 0 && b[tail + i - 1] == b'\r' => Line::Done(tail + i + 1, None),
                Some(_) => Line::Bad("PROXY v1: LF without CR"),
                None if b.len() > tail && b[b.len() - 1] == b'\r' => Line::Need(1),
                None => Line::Need(2),
            }
        }
        Some(_) => Line::Bad("PROXY v1: unknown protocol"),
    }
}

/// `src dst sport dport\r\n` from `at`, every field checked as its bytes
/// arrive.
fn v1_inet(b: &[u8], mut at: usize, v6: bool) -> Line {
    const WHY: [&str; 4] = [
        "PROXY v1: bad source address",
        "PROXY v1: bad destination address",
        "PROXY v1: bad source port",
        "PROXY v1: bad destination port",
    ];
    let addr_min = if v6 { "::".len() } else { "0.0.0.0".len() };
    // Each field at its shortest, with the delimiter behind it.
    let least = [addr_min + 1, addr_min + 1, 1 + 1, 1 + 2];
    let mut src = None;
    let mut sport = None;
    for field in 0..4 {
        let last = field == 3;
        let Some(len) = b[at..].iter().position(|&c| c == b' ' || c == b'\r') else {
            let token = &b[at..];
            let rest = match field {
                0 | 1 if v6 => v6_rest(token),
                0 | 1 => v4_rest(token),
                _ => port_rest(token),
            };
            let delim = if last { 2 } else { 1 };
            let later: usize = least[field + 1..].iter().sum();
            return rest.map_or(Line::Bad(WHY[field]), |r| Line::Need(r + delim + later));
        };
        let end = at + len;
        let token = &b[at..end];
        let ok = match field {
            0 => {
                src = if v6 { ipv6(token) } else { ipv4(token) };
                src.is_some()
            }
            1 if v6 => ipv6(token).is_some(),
            1 => ipv4(token).is_some(),
            2 => {
                sport = port(token);
                sport.is_some()
            }
            _ => port(token).is_some(),
        };
        // The token first: its bytes came before the delimiter, and the
        // reason must not depend on how many bytes had arrived.
        if !ok {
            return Line::Bad(WHY[field]);
        }
        match (b[end], last) {
            (b'\r', false) => return Line::Bad("PROXY v1: line ends early"),
            (b' ', true) => return Line::Bad("PROXY v1: too many fields"),
            _ => {}
        }
        at = end + 1;
    }
    // Just past the CR; the loop has set both halves of the source.
    match b.get(at) {
        None => Line::Need(1),
        Some(b'\n') => Line::Done(at + 1, src.zip(sport).map(|(ip, p)| SocketAddr::new(ip, p))),
        Some(_) => Line::Bad("PROXY v1: CR without LF"),
    }
}

fn ipv4(t: &[u8]) -> Option<IpAddr> {
    let a: Ipv4Addr = std::str::from_utf8(t).ok()?.parse().ok()?;
    Some(a.into())
}

fn ipv6(t: &[u8]) -> Option<IpAddr> {
    let a: Ipv6Addr = std::str::from_utf8(t).ok()?.parse().ok()?;
    Some(a.into())
}

/// A decimal port, 0..=65535. Leading zeros are refused: the spec forbids
/// them (they could be read as octal), so they point at a broken or forged
/// line. HAProxy's own receiver is laxer here; no sender writes them.
fn port(t: &[u8]) -> Option<u16> {
    if t.is_empty() || t.len() > 5 || (t[0] == b'0' && t.len() > 1) {
        return None;
    }
    let mut v: u32 = 0;
    for &c in t {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    u16::try_from(v).ok()
}

// The `*_rest` functions take the beginning of a field and say how many
// bytes at least it still needs to be valid, None if no continuation can
// make it valid. Their Some(0) is exactly what std's parsers (and `port`)
// accept; the tests check that against std.

/// A port's prefixes are themselves ports or empty: digits only make the
/// value grow, and a leading zero stays leading.
fn port_rest(t: &[u8]) -> Option<usize> {
    if t.is_empty() {
        Some(1)
    } else {
        port(t).map(|_| 0)
    }
}

/// Dotted quad as std reads it: four octets of 0..=255, no leading zeros.
fn v4_rest(t: &[u8]) -> Option<usize> {
    let mut dots = 0;
    let mut digits = 0;
    let mut octet: u32 = 0;
    for &c in t {
        match c {
            b'.' if digits > 0 && dots < 3 => {
                dots += 1;
                digits = 0;
                octet = 0;
            }
            b'0'..=b'9' if !(digits == 1 && octet == 0) => {
                octet = octet * 10 + u32::from(c - b'0');
                digits += 1;
                if octet > 255 {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(usize::from(digits == 0) + 2 * (3 - dots))
}

/// IPv6 text as std reads it: eight groups of 1 to 4 hex digits, or fewer
/// around a single `::` that stands for at least one zero group; the last
/// two groups may be written as a dotted quad (after `::`, or as the 7th and
/// 8th of eight).
fn v6_rest(t: &[u8]) -> Option<usize> {
    // A dot means the piece it is in, which starts after the last colon
    // before it, is the dotted quad; whatever precedes is hex groups.
    let quad_at = t.iter().position(|&c| c == b'.').map(|dot| {
        t[..dot]
            .iter()
            .rposition(|&c| c == b':')
            .map_or(0, |i| i + 1)
    });
    let g = v6_groups(&t[..quad_at.unwrap_or(t.len())])?;
    if let Some(at) = quad_at {
        let fits = if g.double {
            g.groups + 2 <= 7
        } else {
            g.groups == 6
        };
        return if fits { v4_rest(&t[at..]) } else { None };
    }
    Some(if t.is_empty() {
        "::".len()
    } else if g.leading {
        1
    } else if g.piece > 0 {
        // The piece can be the last group: it is the 8th, or `::` follows.
        if g.double || g.groups == 7 { 0 } else { 2 }
    } else if g.colons == 2 {
        0
    } else {
        1
    })
}

/// Hex groups and colons scanned so far.
struct Groups {
    /// Groups finished by a colon, on both sides of `::`.
    groups: usize,
    /// `::` seen.
    double: bool,
    /// Colons at the end (0, 1 or 2).
    colons: u8,
    /// A lone colon at the start: only `::` can follow it.
    leading: bool,
    /// Hex digits of the group being read.
    piece: usize,
}

/// Every check is made at the first byte that can fail it, so that a dead
/// end is seen as soon as it is one.
fn v6_groups(t: &[u8]) -> Option<Groups> {
    let mut g = Groups {
        groups: 0,
        double: false,
        colons: 0,
        leading: false,
        piece: 0,
    };
    for (i, &c) in t.iter().enumerate() {
        if c == b':' {
            if g.piece > 0 {
                g.groups += 1;
                g.piece = 0;
                g.colons = 1;
                // Room must remain for one more group, or (no `::` yet)
                // for a `::` that stands for at least one.
                if g.groups > if g.double { 6 } else { 7 } {
                    return None;
                }
            } else if g.colons == 1 && !g.double {
                g.double = true;
                g.colons = 2;
                g.leading = false;
            } else if i == 0 {
                g.leading = true;
                g.colons = 1;
            } else {
                return None;
            }
        } else if c.is_ascii_hexdigit() {
            if g.piece == 0 {
                let room = if g.double { 7 } else { 8 };
                if g.leading || g.groups + 1 > room {
                    return None;
                }
            }
            g.piece += 1;
            g.colons = 0;
            if g.piece > 4 {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(g)
}

/// The binary header's signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family, length.
const V2_FIXED: usize = 16;

fn v2(b: &[u8]) -> Parsed {
    let n = b.len().min(V2_SIG.len());
    if b[..n] != V2_SIG[..n] {
        return Parsed::Invalid("PROXY v2: bad signature");
    }
    let Some(&ver_cmd) = b.get(12) else {
        return Parsed::Incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("PROXY v2: version is not 2");
    }
    let proxy = match ver_cmd & 0x0f {
        0 => false,
        1 => true,
        _ => return Parsed::Invalid("PROXY v2: unknown command"),
    };
    let Some(&fam) = b.get(13) else {
        return Parsed::Incomplete;
    };
    // LOCAL (a health check from the proxy itself): the spec has the
    // receiver ignore the family and the addresses, so they are not judged.
    let block = if !proxy {
        0
    } else {
        match fam {
            0x00 => 0,
            0x11 => 12,
            0x21 => 36,
            0x31 | 0x32 => 216,
            0x12 | 0x22 => return Parsed::Invalid("PROXY v2: UDP, but this is a TCP server"),
            _ => return Parsed::Invalid("PROXY v2: unknown address family"),
        }
    };
    let Some(length) = b.get(14..16) else {
        return Parsed::Incomplete;
    };
    let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
    if length < block {
        return Parsed::Invalid("PROXY v2: length shorter than the address block");
    }
    // The whole address block is waited for even when it is not used
    // (AF_UNIX): a header is accepted only once its address part is there.
    let Some(addr) = b.get(V2_FIXED..V2_FIXED + block) else {
        return Parsed::Incomplete;
    };
    let source = match (proxy, fam) {
        (true, 0x11) => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            let port = u16::from_be_bytes([addr[8], addr[9]]);
            Some(SocketAddr::new(ip.into(), port))
        }
        (true, 0x21) => {
            let mut ip = [0; 16];
            ip.copy_from_slice(&addr[0..16]);
            let port = u16::from_be_bytes([addr[32], addr[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    };
    Parsed::Header {
        len: V2_FIXED + length,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn header(len: usize, source: Option<&str>) -> Parsed {
        Parsed::Header {
            len,
            source: source.map(|s| s.parse().unwrap()),
        }
    }

    fn invalid(p: Parsed) -> bool {
        matches!(p, Parsed::Invalid(_))
    }

    /// A v2 header with `extra` TLV bytes after the address block.
    fn v2_header(ver_cmd: u8, fam: u8, block: &[u8], extra: usize) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        let length = u16::try_from(block.len() + extra).unwrap();
        h.extend_from_slice(&length.to_be_bytes());
        h.extend_from_slice(block);
        h.extend(std::iter::repeat_n(0xAB, extra));
        h
    }

    fn v4_block() -> Vec<u8> {
        // 192.0.2.1:56324 -> 198.51.100.7:443
        let mut b = vec![192, 0, 2, 1, 198, 51, 100, 7];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn v6_block() -> Vec<u8> {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut b = src.octets().to_vec();
        b.extend_from_slice(&dst.octets());
        b.extend_from_slice(&65535u16.to_be_bytes());
        b.extend_from_slice(&80u16.to_be_bytes());
        b
    }

    const V1_GOOD: &[&str] = &[
        "PROXY TCP4 192.168.0.1 10.0.0.1 56324 443\r\n",
        "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
        "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n",
        "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        "PROXY UNKNOWN \r\n",
    ];

    #[test]
    fn v1_tcp4() {
        let line = "PROXY TCP4 192.168.0.1 10.0.0.1 56324 443\r\n";
        let with_payload = format!("{line}GET / HTTP/1.1\r\n");
        let want = header(line.len(), Some("192.168.0.1:56324"));
        assert_eq!(parse(line.as_bytes()), want);
        assert_eq!(parse(with_payload.as_bytes()), want);
        assert_eq!(
            parse(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
            header(32, Some("0.0.0.0:0"))
        );
    }

    #[test]
    fn v1_tcp6() {
        let line = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
        assert_eq!(
            parse(line.as_bytes()),
            header(line.len(), Some("[2001:db8::1]:65535"))
        );
        // v4-mapped stays an IPv6 address: canonicalising is the caller's.
        let line = "PROXY TCP6 ::ffff:192.0.2.1 ::1 7 8\r\n";
        assert_eq!(
            parse(line.as_bytes()),
            header(line.len(), Some("[::ffff:192.0.2.1]:7"))
        );
        let line = V1_GOOD[5];
        assert_eq!(line.len(), 104);
        assert!(matches!(
            parse(line.as_bytes()),
            Parsed::Header { len: 104, .. }
        ));
    }

    #[test]
    fn v1_unknown() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\nhello"), header(15, None));
        assert_eq!(parse(b"PROXY UNKNOWN whatever\r\n"), header(24, None));
        // The longest line the spec allows.
        let line = V1_GOOD[7];
        assert_eq!(parse(line.as_bytes()), header(line.len(), None));
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 16));
        assert_eq!(longest.len(), 107);
        assert_eq!(parse(longest.as_bytes()), header(107, None));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let mut good: Vec<Vec<u8>> = V1_GOOD.iter().map(|s| s.as_bytes().to_vec()).collect();
        good.push(v2_header(0x21, 0x11, &v4_block(), 0));
        good.push(v2_header(0x21, 0x21, &v6_block(), 0));
        good.push(v2_header(0x21, 0x31, &[b'/'; 216], 0));
        good.push(v2_header(0x21, 0x00, &[], 0));
        good.push(v2_header(0x20, 0x00, &[], 0));
        for h in &good {
            assert!(matches!(parse(h), Parsed::Header { .. }), "{h:?}");
            for k in 0..h.len() {
                assert_eq!(parse(&h[..k]), Parsed::Incomplete, "{:?}", &h[..k]);
            }
        }
    }

    #[test]
    fn v2_ipv4() {
        let h = v2_header(0x21, 0x11, &v4_block(), 0);
        assert_eq!(h.len(), 28);
        let want = header(28, Some("192.0.2.1:56324"));
        assert_eq!(parse(&h), want);
        let mut more = h.clone();
        more.extend_from_slice(b"payload");
        assert_eq!(parse(&more), want);
    }

    #[test]
    fn v2_ipv6() {
        let h = v2_header(0x21, 0x21, &v6_block(), 0);
        assert_eq!(parse(&h), header(52, Some("[2001:db8::1]:65535")));
    }

    #[test]
    fn v2_local() {
        assert_eq!(parse(&v2_header(0x20, 0x00, &[], 0)), header(16, None));
        // Addresses in a LOCAL header are not the client's.
        assert_eq!(
            parse(&v2_header(0x20, 0x11, &v4_block(), 0)),
            header(28, None)
        );
        // Nor is its family judged: the spec has it ignored.
        assert_eq!(parse(&v2_header(0x20, 0x12, &[], 0)), header(16, None));
        assert_eq!(parse(&v2_header(0x20, 0x11, &[], 0)), header(16, None));
        assert_eq!(parse(&v2_header(0x20, 0x77, &[], 3)), header(19, None));
    }

    #[test]
    fn v2_tlvs_are_counted_not_read() {
        let h = v2_header(0x21, 0x11, &v4_block(), 1000);
        let want = header(28 + 1000, Some("192.0.2.1:56324"));
        // Only the fixed part and the address block are needed.
        assert_eq!(parse(&h[..28]), want);
        assert_eq!(parse(&h[..PEEK_MAX]), want);
        assert_eq!(parse(&h), want);
        for k in 0..28 {
            assert_eq!(parse(&h[..k]), Parsed::Incomplete);
        }
        let h = v2_header(0x21, 0x21, &v6_block(), 65535 - 36);
        assert!(matches!(parse(&h[..52]), Parsed::Header { len: 65551, .. }));
    }

    #[test]
    fn v2_unix_and_unspec() {
        let h = v2_header(0x21, 0x31, &[0; 216], 0);
        assert_eq!(h.len(), PEEK_MAX);
        assert_eq!(parse(&h), header(232, None));
        assert_eq!(
            parse(&v2_header(0x21, 0x32, &[0; 216], 5)),
            header(237, None)
        );
        assert_eq!(parse(&v2_header(0x21, 0x00, &[], 0)), header(16, None));
        assert_eq!(
            parse(&v2_header(0x21, 0x00, &[], 7)[..16]),
            header(23, None)
        );
    }

    #[test]
    fn v2_malformed() {
        let good = v2_header(0x21, 0x11, &v4_block(), 0);
        for i in 0..12 {
            let mut h = good.clone();
            h[i] ^= 0x01;
            assert!(invalid(parse(&h)), "byte {i}");
            // Refused at the wrong byte, not later.
            assert!(invalid(parse(&h[..=i])), "byte {i}");
        }
        for ver in [0x01, 0x11, 0x31, 0xF1] {
            assert!(invalid(parse(&v2_header(ver, 0x11, &v4_block(), 0)[..13])));
        }
        for cmd in 0x22..=0x2F {
            assert!(invalid(parse(&v2_header(cmd, 0x11, &v4_block(), 0)[..13])));
        }
        for fam in [0x12, 0x22] {
            assert_eq!(
                parse(&v2_header(0x21, fam, &v4_block(), 0)[..14]),
                Parsed::Invalid("PROXY v2: UDP, but this is a TCP server")
            );
        }
        for fam in [0x01, 0x10, 0x13, 0x20, 0x30, 0x41, 0xFF] {
            assert!(invalid(parse(&v2_header(0x21, fam, &[], 0)[..14])));
        }
        for (fam, block) in [(0x11, 12), (0x21, 36), (0x31, 216), (0x32, 216)] {
            let h = v2_header(0x21, fam, &vec![0; block - 1], 0);
            assert_eq!(
                parse(&h[..16]),
                Parsed::Invalid("PROXY v2: length shorter than the address block")
            );
        }
    }

    #[test]
    fn v1_malformed() {
        let bad: &[&[u8]] = &[
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
            b"PROXY TCP6 ::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN\rX",
            b"PROXY UNKNOWN x\nx\r\n",
            b"PROXY\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
            b"hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for b in bad {
            assert!(invalid(parse(b)), "{}", String::from_utf8_lossy(b));
        }
        // Over 107 bytes, however it goes on.
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 15));
        assert_eq!(long.len(), 108);
        assert!(invalid(parse(long.as_bytes())));
        assert!(invalid(parse(&long.as_bytes()[..107])));
        // 106 bytes without a CR cannot end within 107.
        assert!(invalid(parse(&long.as_bytes()[..106])));
        assert_eq!(parse(&long.as_bytes()[..105]), Parsed::Incomplete);
    }

    #[test]
    fn refused_at_the_first_wrong_byte() {
        // (bytes, how many of them make the first Invalid prefix)
        let cases: &[(&[u8], usize)] = &[
            (b"hello", 1),
            (b"GET / HTTP/1.1\r\n", 1),
            (b"proxy", 1),
            (b"PROXy", 5),
            (b"PROXY TCPX", 10),
            (b"PROXY TCP4X", 11),
            (b"PROXY TCP4 256", 14),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01", 29),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", 32),
            (b"PROXY TCP6 1.", 13),
            (b"PROXY TCP6 12345", 16),
            (b"PROXY TCP6 1:2:3:4:5:6:7:8:", 27),
            (b"PROXY TCP6 1::2:3:4:5:6:7:", 26),
            (b"PROXY TCP6 1:2:3:4:5:6:7:1.", 27),
            (b"\r\n\r\n\0\r\nQUIT\nX", 13),
        ];
        for &(b, at) in cases {
            let name = String::from_utf8_lossy(b);
            for k in 0..at {
                assert_eq!(parse(&b[..k]), Parsed::Incomplete, "{name} at {k}");
            }
            assert!(invalid(parse(&b[..at])), "{name}");
        }
        let open: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 6553",
            b"PROXY TCP6 1:2:3:4:5:6:1.",
            b"PROXY TCP6 ::1.2.3.4",
            b"PROXY UNKNOWN \r",
            b"\r\n",
        ];
        for &b in open {
            assert_eq!(
                parse(b),
                Parsed::Incomplete,
                "{}",
                String::from_utf8_lossy(b)
            );
        }
    }

    /// Every string over `alphabet` of at most `max` bytes.
    fn strings(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..max {
            let next: Vec<Vec<u8>> = last
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    alphabet.iter().map(move |&c| {
                        let mut t = s.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    type Rest = fn(&[u8]) -> Option<usize>;

    /// What makes a `*_rest` answer exact, checked one byte at a time:
    /// Some(0) is what `valid` accepts; a dead end stays one; a need of m
    /// has a byte after which m - 1 remain and none after which fewer do.
    /// By induction, m is then the length of the shortest valid
    /// continuation, and None means there is none.
    fn check_step(rest: Rest, valid: fn(&[u8]) -> bool, s: &[u8], alphabet: &[u8]) {
        let here = rest(s);
        let show = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
        assert_eq!(here == Some(0), valid(s), "{}", show(s));
        let mut t = s.to_vec();
        t.push(0);
        let mut best = None;
        for &c in alphabet {
            *t.last_mut().unwrap() = c;
            let next = rest(&t);
            assert_eq!(next == Some(0), valid(&t), "{}", show(&t));
            match (here, next) {
                (None, Some(_)) => panic!("{} revives {}", show(&t), show(s)),
                (Some(m), Some(n)) => {
                    assert!(n + 1 >= m, "{} needs {n}, {} {m}", show(&t), show(s));
                    best = Some(best.unwrap_or(usize::MAX).min(n));
                }
                _ => {}
            }
        }
        if let Some(m) = here.filter(|&m| m > 0) {
            assert_eq!(best, Some(m - 1), "{}", show(s));
        }
    }

    fn std_v4(s: &[u8]) -> bool {
        ipv4(s).is_some()
    }

    fn std_v6(s: &[u8]) -> bool {
        ipv6(s).is_some()
    }

    fn std_port(s: &[u8]) -> bool {
        // std's u16 takes a '+' and leading zeros; the spec's ports do not.
        std::str::from_utf8(s).is_ok_and(|t| t.parse::<u16>().is_ok())
            && !s.starts_with(b"+")
            && !(s.len() > 1 && s[0] == b'0')
    }

    #[test]
    fn v4_rest_is_exact() {
        let alphabet = b"01256.x";
        for s in strings(alphabet, 6) {
            check_step(v4_rest, std_v4, &s, alphabet);
        }
        for s in ["255.255.255.255", "0.0.0.0", "10.200.3.4"] {
            let s = s.as_bytes();
            for k in 0..=s.len() {
                check_step(v4_rest, std_v4, &s[..k], alphabet);
            }
        }
    }

    #[test]
    fn v6_rest_is_exact() {
        // Every short string, byte by byte.
        let alphabet = b"01a:.";
        for s in strings(alphabet, 7) {
            check_step(v6_rest, std_v6, &s, alphabet);
        }
        // Long enough for eight groups, `::` and the dotted quad in every
        // arrangement: strings of a few pieces, and every prefix of them.
        const PIECES: [&[u8]; 6] = [b"1:1:", b"1:", b"1", b"::", b":", b"1.1.1.1"];
        fn walk(s: &mut Vec<u8>, depth: usize) {
            if depth == 0 {
                return;
            }
            for piece in PIECES {
                let at = s.len();
                for &c in piece {
                    s.push(c);
                    check_step(v6_rest, std_v6, s, b"1:.");
                }
                walk(s, depth - 1);
                s.truncate(at);
            }
        }
        walk(&mut vec![], 6);
    }

    #[test]
    fn port_rest_is_exact() {
        let alphabet = b"0156+-";
        for s in strings(alphabet, 6) {
            check_step(port_rest, std_port, &s, alphabet);
        }
    }

    /// IPv6 text in any form std accepts: padded or not, either case,
    /// `::` anywhere, dotted quad last.
    fn v6_text() -> impl Strategy<Value = String> {
        (
            any::<[u16; 8]>(),
            any::<[u8; 8]>(),
            any::<bool>(),
            any::<Option<(usize, usize)>>(),
            any::<Option<[u8; 4]>>(),
        )
            .prop_map(|(groups, pad, upper, double, quad)| {
                let slots = if quad.is_some() { 6 } else { 8 };
                let hex = |i: usize| {
                    let s = format!("{:0w$x}", groups[i], w = usize::from(pad[i] % 4 + 1));
                    if upper { s.to_uppercase() } else { s }
                };
                let quad = quad.map(|q| Ipv4Addr::from(q).to_string());
                match double {
                    None => {
                        let mut parts: Vec<String> = (0..slots).map(hex).collect();
                        parts.extend(quad);
                        parts.join(":")
                    }
                    Some((n, h)) => {
                        let n = n % slots;
                        let h = h % (n + 1);
                        let head: Vec<String> = (0..h).map(hex).collect();
                        let mut tail: Vec<String> = (h..n).map(hex).collect();
                        tail.extend(quad);
                        format!("{}::{}", head.join(":"), tail.join(":"))
                    }
                }
            })
    }

    /// A header of each kind, its expected result, and then the payload.
    fn valid_header() -> impl Strategy<Value = (Vec<u8>, Parsed)> {
        (
            0u8..9,
            any::<[u8; 16]>(),
            v6_text(),
            any::<(u16, u16)>(),
            vec(any::<u8>(), 0..120),
            0usize..400,
        )
            .prop_map(|(kind, raw, text, (sp, dp), junk, extra)| {
                let v4 = Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]);
                let v6 = Ipv6Addr::from(raw);
                let src4 = SocketAddr::new(v4.into(), sp);
                let src6 = SocketAddr::new(v6.into(), sp);
                let line = |l: String| {
                    let len = l.len();
                    (l.into_bytes(), len)
                };
                let (bytes, source, len) = match kind {
                    0 => {
                        let (b, len) = line(format!("PROXY TCP4 {v4} {v4} {sp} {dp}\r\n"));
                        (b, Some(src4), len)
                    }
                    1 => {
                        let (b, len) = line(format!("PROXY TCP6 {v6} {v6} {sp} {dp}\r\n"));
                        (b, Some(src6), len)
                    }
                    2 => {
                        let ip: Ipv6Addr = text.parse().unwrap();
                        let (b, len) = line(format!("PROXY TCP6 {text} ::1 {sp} {dp}\r\n"));
                        (b, Some(SocketAddr::new(ip.into(), sp)), len)
                    }
                    3 => {
                        // The ignored part: anything without a LF.
                        let rest: Vec<u8> =
                            junk.iter().map(|&c| c.max(b'\n' + 1)).take(90).collect();
                        let mut b = b"PROXY UNKNOWN ".to_vec();
                        b.extend_from_slice(&rest);
                        if b.last() == Some(&b'\r') {
                            b.pop();
                        }
                        b.extend_from_slice(b"\r\n");
                        let len = b.len();
                        (b, None, len)
                    }
                    4 => {
                        let mut block = raw[..4].to_vec();
                        block.extend_from_slice(&raw[4..8]);
                        block.extend_from_slice(&sp.to_be_bytes());
                        block.extend_from_slice(&dp.to_be_bytes());
                        (v2_header(0x21, 0x11, &block, extra), Some(src4), 28 + extra)
                    }
                    5 => {
                        let mut block = raw.to_vec();
                        block.extend_from_slice(&raw);
                        block.extend_from_slice(&sp.to_be_bytes());
                        block.extend_from_slice(&dp.to_be_bytes());
                        (v2_header(0x21, 0x21, &block, extra), Some(src6), 52 + extra)
                    }
                    6 => (v2_header(0x21, 0x31, &[7; 216], extra), None, 232 + extra),
                    7 => (v2_header(0x21, 0x00, &[], extra), None, 16 + extra),
                    _ => (v2_header(0x20, raw[0], &[], extra), None, 16 + extra),
                };
                let mut bytes = bytes;
                bytes.extend_from_slice(&junk);
                let want = if len <= V1_MAX || bytes[0] == b'\r' {
                    Parsed::Header { len, source }
                } else {
                    Parsed::Invalid("PROXY v1: no CRLF within 107 bytes")
                };
                (bytes, want)
            })
    }

    /// What must hold of any input: no panic; an answer, once given, does
    /// not change as more bytes arrive; a header is as long as it says.
    fn check_input(input: &[u8]) {
        let mut decided: Option<Parsed> = None;
        for k in 0..=input.len() {
            let p = parse(&input[..k]);
            match &decided {
                Some(d) => assert_eq!(&p, d, "after {k} bytes"),
                None if p != Parsed::Incomplete => decided = Some(p),
                None => {}
            }
        }
        let Some(Parsed::Header { len, .. }) = decided else {
            return;
        };
        if input[0] == b'P' {
            let crlf = input.windows(2).position(|w| w == b"\r\n").unwrap();
            assert_eq!(len, crlf + 2);
            assert!(len <= V1_MAX);
        } else {
            assert!(input.starts_with(V2_SIG));
            let length = usize::from(u16::from_be_bytes([input[14], input[15]]));
            assert_eq!(len, V2_FIXED + length);
            let block = match (input[12], input[13]) {
                (0x21, 0x11) => 12,
                (0x21, 0x21) => 36,
                (0x21, 0x31 | 0x32) => 216,
                _ => 0,
            };
            assert!(len >= V2_FIXED + block);
            assert!(input.len() >= V2_FIXED + block);
        }
    }

    proptest! {
        #[test]
        fn any_bytes(input in vec(any::<u8>(), 0..=300)) {
            check_input(&input);
        }

        #[test]
        fn near_valid_headers(
            (bytes, want) in valid_header(),
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            check_input(&bytes);
            prop_assert_eq!(parse(&bytes), want);
            let mut bytes = bytes;
            if let Some((at, x)) = flip {
                let at = at.index(bytes.len());
                bytes[at] ^= x;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            check_input(&bytes);
        }

        #[test]
        fn v6_text_prefixes(text in v6_text()) {
            let t = text.as_bytes();
            prop_assert!(std_v6(t), "{}", text);
            for k in 0..=t.len() {
                let need = v6_rest(&t[..k]);
                prop_assert!(need.is_some_and(|m| k + m <= t.len()), "{} at {}", text, k);
                check_step(v6_rest, std_v6, &t[..k], b"0159afAF:.g");
            }
        }

        #[test]
        fn v1_lines_step_exactly(text in v6_text(), ports in any::<(u16, u16)>()) {
            // Long addresses both ways so that some lines pass 107 bytes.
            let line = format!("PROXY TCP6 {text} {text} {} {}\r\n", ports.0, ports.1);
            let b = line.as_bytes();
            for k in 0..b.len() {
                let need = v1_line(&b[..k]);
                prop_assert!(matches!(need, Line::Need(m) if k + m <= b.len()), "{} at {}", line, k);
                check_line_step(&b[..k]);
            }
            let whole = parse(b);
            if b.len() <= V1_MAX {
                let done = matches!(whole, Parsed::Header { len, .. } if len == b.len());
                prop_assert!(done, "{}", line);
            } else {
                prop_assert!(invalid(whole));
            }
        }
    }

    /// `check_step` for whole v1 lines.
    fn check_line_step(s: &[u8]) {
        let need = |s: &[u8]| match v1_line(s) {
            Line::Done(..) => Some(0),
            Line::Need(m) => Some(m),
            Line::Bad(_) => None,
        };
        let here = need(s);
        let mut t = s.to_vec();
        t.push(0);
        let mut best = None;
        for &c in b"019af:. \r\nPROXYTCUNKW46" {
            *t.last_mut().unwrap() = c;
            match (here, need(&t)) {
                (None, Some(_)) => panic!("{:?} revives", String::from_utf8_lossy(&t)),
                (Some(m), Some(n)) => {
                    assert!(n + 1 >= m, "{:?}", String::from_utf8_lossy(&t));
                    best = Some(best.unwrap_or(usize::MAX).min(n));
                }
                _ => {}
            }
        }
        if let Some(m) = here.filter(|&m| m > 0) {
            assert_eq!(best, Some(m - 1), "{:?}", String::from_utf8_lossy(s));
        }
    }
}
