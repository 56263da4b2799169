//! PROXY protocol headers (v1 lines, v2 binary headers, TLVs) built by
//! hand: the PROXY protocol tests and the soak's server D both send them,
//! and one builder keeps their bytes the same.

use std::net::{IpAddr, SocketAddr};

use super::payload;

/// The 12 bytes a v2 header starts with.
pub const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 line (TCP4 or TCP6 by the addresses) for a client at `src`.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 header: version 2 and `ver_cmd`'s command, family `fam`, and
/// `body` (address block and TLVs) behind its length.
pub fn v2_raw(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(ver_cmd);
    h.push(fam);
    let len = u16::try_from(body.len()).expect("a v2 body fits 64 KiB");
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// The address block of a TCP connection from `src` to `dst`, with its
/// family byte (TCP over IPv4 0x11, TCP over IPv6 0x21).
pub fn v2_block(src: SocketAddr, dst: SocketAddr) -> (u8, Vec<u8>) {
    let (fam, mut block) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, [s.octets(), d.octets()].concat()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (0x21, [s.octets(), d.octets()].concat()),
        _ => panic!("one family for both ends"),
    };
    block.extend_from_slice(&src.port().to_be_bytes());
    block.extend_from_slice(&dst.port().to_be_bytes());
    (fam, block)
}

/// A v2 PROXY (command) header for a client at `src`, with `tlvs` after
/// the addresses.
pub fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let (fam, block) = v2_block(src, dst);
    v2_raw(0x21, fam, &[block, tlvs.to_vec()].concat())
}

/// One type-length-value field.
pub fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).expect("a TLV fits 64 KiB");
    [&[kind][..], &len.to_be_bytes(), value].concat()
}

/// TLVs as HAProxy sends them (ALPN, authority, unique id), and padding
/// (NOOP) that takes the header past what the server peeks at once.
pub fn some_tlvs() -> Vec<u8> {
    [
        tlv(0x01, b"accio"),
        tlv(0x02, b"uploads.example.org"),
        tlv(0x05, &payload(32, 99)),
        tlv(0x04, &[0; 600]),
    ]
    .concat()
}
