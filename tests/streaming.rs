//! A client streaming alone gets blocking reads for short stretches
//! (`STRETCH` in src/server.rs): these tests hold that path to the same
//! promises as the event loop's: exact counts, no one else held up, idle
//! timeouts on time, signals seen at once. Real sockets, real binary.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Send `chunks` MiB on `s` from a thread; `started` fires after the first
/// 16, when the server is reading a stream. Returns the socket when done.
fn stream(mut s: TcpStream, chunks: usize) -> (thread::JoinHandle<TcpStream>, mpsc::Receiver<()>) {
    let (tx, started) = mpsc::channel();
    let sender = thread::spawn(move || {
        let buf = vec![0x5au8; MIB];
        for i in 0..chunks {
            s.write_all(&buf).expect("send");
            if i == 16 {
                let _ = tx.send(());
            }
        }
        s
    });
    (sender, started)
}

#[test]
fn a_streaming_client_does_not_hold_up_others() {
    let server = Spawn::new().start();
    let (sender, started) = stream(server.connect(), 4096);
    started.recv_timeout(WAIT).expect("the stream started");
    // Each short client, from connect to its count line, while the stream
    // runs: a stretch lasts 1 ms, so 100 ms means the stream held it up.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let start = Instant::now();
        transfer(&server, &vec![1u8; i]);
        assert_eq!(server.stdout.expect(), i.to_string());
        slowest = slowest.max(start.elapsed());
    }
    let s = sender.join().expect("sender");
    finish(s);
    assert_eq!(server.stdout.expect(), (4096 * MIB).to_string());
    assert!(
        slowest < Duration::from_millis(100),
        "a short client took {slowest:?} beside a stream"
    );
}

#[test]
fn silence_after_a_stream_times_out_on_time() {
    let server = Spawn::new().config("idle_timeout = \"600ms\"").start();
    let (sender, started) = stream(server.connect(), 64);
    started.recv_timeout(WAIT).expect("the stream started");
    let s = sender.join().expect("sender");
    // The last bytes are in the server's socket now; it reads them within
    // a few ms, then hears nothing.
    let silent = Instant::now();
    assert_eq!(
        server.stdout.next(Duration::from_secs(5)).as_deref(),
        Some("ERROR")
    );
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
        "idle timeout of 600 ms ended the connection after {took:?} of silence"
    );
    server.stderr.wait_for("idle timeout");
    drop(s);
}

#[test]
fn pauses_between_bursts_lose_no_byte() {
    let server = Spawn::new().start();
    let mut s = server.connect();
    let burst = vec![3u8; 8 * MIB + 5];
    for _ in 0..6 {
        s.write_all(&burst).expect("send");
        // Longer than a blocking read waits (1 ms): the stretch ends and
        // the event loop takes the connection back, then gives it another.
        thread::sleep(Duration::from_millis(20));
    }
    finish(s);
    assert_eq!(server.stdout.expect(), (6 * burst.len()).to_string());
}

#[test]
fn sighup_during_a_stream_loses_no_byte() {
    let server = Spawn::new().start();
    let (sender, started) = stream(server.connect(), 2048);
    started.recv_timeout(WAIT).expect("the stream started");
    // Each SIGHUP interrupts a blocking read (EINTR): the bytes around it
    // must all be counted, and the server must go on reading.
    for _ in 0..5 {
        server.signal(libc::SIGHUP);
        server.stderr.wait_for("reloaded configuration");
    }
    let s = sender.join().expect("sender");
    finish(s);
    assert_eq!(server.stdout.expect(), (2048 * MIB).to_string());
}

#[test]
fn a_client_alone_is_read_without_a_poll_per_read() {
    let Some(traced) = Traced::start("epoll_wait,epoll_pwait,epoll_pwait2,recvfrom") else {
        return;
    };
    let server = &traced.server;
    let (sender, started) = stream(server.connect(), 512);
    started.recv_timeout(WAIT).expect("the stream started");
    let s = sender.join().expect("sender");
    finish(s);
    assert_eq!(server.stdout.expect(), (512 * MIB).to_string());
    let trace = traced.record();
    let count = |call: &str| trace.lines().filter(|l| l.contains(call)).count();
    let (polls, reads) = (count("epoll_"), count("recvfrom("));
    // The event loop alone makes a poll per read. A stretch makes dozens
    // of blocking reads per poll, but under strace, which stops the server
    // twice per call, only three or so fit in its millisecond.
    assert!(
        reads > 100 && polls * 2 < reads,
        "{polls} polls for {reads} reads"
    );
}
