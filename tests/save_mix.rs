//! Many saving clients at once, each doing something else: whole uploads of
//! all sizes (some larger than one disk job moves), uploads with urgent
//! bytes in them, resets in the middle, slow drips, connections closed at
//! once. Every connection must end in exactly one line that agrees with its
//! file, and the server must be back where it started: no temporary left,
//! no descriptor leaked.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Act {
    Whole,
    Urgent,
    ResetMidway,
    Drip,
    Empty,
}

/// What a connection sent and the line it must get.
struct Sent {
    bytes: Vec<u8>,
    line: String,
}

/// A small deterministic generator: the same run every time.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn send_urgent(s: &TcpStream, byte: u8) {
    // SAFETY: a one-byte send from a valid buffer on our socket.
    let n = unsafe { libc::send(s.as_raw_fd(), (&raw const byte).cast(), 1, libc::MSG_OOB) };
    assert_eq!(n, 1, "send MSG_OOB: {}", std::io::Error::last_os_error());
}

fn one(addr: SocketAddr, source: IpAddr, act: Act, size: usize, seed: u64) -> Sent {
    let data = payload(size, seed);
    let mut s = connect_from(source, addr).expect("connect");
    assert!(greeted(&mut s), "greeting");
    match act {
        Act::Whole => {
            for chunk in data.chunks(256 << 10) {
                s.write_all(chunk).expect("send");
            }
            finish(s);
        }
        Act::Urgent => {
            let (head, tail) = data.split_at(size / 2);
            s.write_all(head).expect("send");
            send_urgent(&s, tail[0]);
            s.write_all(&tail[1..]).expect("send");
            finish(s);
        }
        Act::ResetMidway => {
            s.write_all(&data[..size / 2]).expect("send");
            reset(s);
            return Sent {
                bytes: b"ERROR".to_vec(),
                line: "ERROR".into(),
            };
        }
        Act::Drip => {
            for chunk in data.chunks(size.div_ceil(8).max(1)) {
                s.write_all(chunk).expect("send");
                // Pacing the client: a slow sender, not a wait for the server.
                thread::sleep(Duration::from_millis(15));
            }
            finish(s);
        }
        Act::Empty => finish(s),
    }
    let bytes = if matches!(act, Act::Empty) {
        Vec::new()
    } else {
        data
    };
    Sent {
        line: bytes.len().to_string(),
        bytes,
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_crowd_of_saving_clients_gets_one_true_line_and_file_each() {
    let tmp = TempDir::new("save-crowd");
    let dir = tmp.path("files");
    let server = Spawn::new().arg("--save-dir").arg(&path_of(&dir)).start();
    let addr = server.addr();
    let fds_before = open_fds(server.pid());
    const CLIENTS: u64 = 24;
    const EACH: u64 = 6;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                let mut rng = Lcg(c + 1);
                // One source per client thread: max_per_source stays out of it.
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 7, 1 + c as u8));
                (0..EACH)
                    .map(|k| {
                        let act = match rng.below(5) {
                            0 => Act::Whole,
                            1 => Act::Urgent,
                            2 => Act::ResetMidway,
                            3 => Act::Drip,
                            _ => Act::Empty,
                        };
                        // Two of them more than one disk job moves (16 MiB).
                        let size = match (c, k) {
                            (0 | 1, 0) => (20 << 20) + c as usize,
                            _ => 2 + rng.below(3 << 20) as usize,
                        };
                        one(addr, source, act, size, c * 100 + k + 1)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for _ in 0..sent.len() {
        *lines.entry(server.stdout.expect()).or_default() += 1;
    }
    let mut expected: HashMap<String, usize> = HashMap::new();
    for s in &sent {
        *expected.entry(s.line.clone()).or_default() += 1;
    }
    assert_eq!(lines, expected, "the lines are not one per connection");
    // The ERROR markers are written after the lines; wait for all files.
    let end = Instant::now() + WAIT;
    let count = || {
        std::fs::read_dir(&dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".file"))
                .count()
        })
    };
    while count() < sent.len() && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    let mut wanted: Vec<&[u8]> = sent.iter().map(|s| s.bytes.as_slice()).collect();
    for n in 1..=sent.len() {
        let got = std::fs::read(dir.join(format!("{n}.file")))
            .unwrap_or_else(|e| panic!("{n}.file: {e}"));
        let at = wanted
            .iter()
            .position(|w| *w == got.as_slice())
            .unwrap_or_else(|| panic!("{n}.file ({} bytes) matches no connection", got.len()));
        wanted.swap_remove(at);
    }
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".file"))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    // Every connection's socket, pipe, file and duplicate are closed again.
    let end = Instant::now() + WAIT;
    while open_fds(server.pid()) > fds_before && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open_fds(server.pid()), fds_before, "descriptors leaked");
}
