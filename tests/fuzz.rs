//! The fuzz targets' short mode (FUZZING.md): every front end run on its
//! seed corpus (`fuzz/corpus/<target>/`), on a few inputs at the largest
//! size the real world allows, and on `ACCIO_FUZZ_CASES` (default 5000)
//! inputs made from the seeds by random mutations with the target's
//! dictionary (`fuzz/dicts/<target>.dict`). The checks are the libFuzzer
//! targets' own (`fuzz_support`). Each input must be answered within
//! [`CALL_MAX`], and the process's peak memory must stay under
//! [`HWM_MAX`]. Every input that once found a bug
//! (`tests/fuzz_regressions/<target>/`) is replayed too.
//!
//! `ACCIO_FUZZ_SEED` picks another random sequence (each run prints its
//! seed); a failing input is written to `target/fuzz-failures/` and shown.

mod fuzz_support;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one input may take (optimised; debug builds get 10 times
/// more).
const CALL_MAX: Duration = Duration::from_secs(1);
/// The most memory the test process may ever have held.
const HWM_MAX: u64 = 512 << 20;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fuzz target: one input, checked (panics on a failed check).
type Check = fn(&[u8]);

fn call_max() -> Duration {
    if cfg!(debug_assertions) {
        CALL_MAX * 10
    } else {
        CALL_MAX
    }
}

/// A small, fast, reproducible random source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seed() -> u64 {
    std::env::var("ACCIO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_acc1_0000_0001)
        .max(1)
}

fn cases() -> usize {
    std::env::var("ACCIO_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000)
}

/// Every file in `dir`, sorted by name (none if it does not exist).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).expect("read a corpus file");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// The tokens of a libFuzzer dictionary: `"..."` or `name="..."` lines,
/// with `\\`, `\"` and `\xNN` escapes.
fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(ROOT)
        .join("fuzz/dicts")
        .join(format!("{target}.dict"));
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || !line.ends_with('"') {
            continue;
        }
        let Some(start) = line.find('"') else {
            continue;
        };
        let body = &line.as_bytes()[start + 1..line.len() - 1];
        let mut token = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match (body[i], body.get(i + 1)) {
                (b'\\', Some(b'x')) if i + 4 <= body.len() => {
                    let hex = std::str::from_utf8(&body[i + 2..i + 4]).expect("hex escape");
                    token.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    i += 4;
                }
                (b'\\', Some(&c)) => {
                    token.push(c);
                    i += 2;
                }
                (c, _) => {
                    token.push(c);
                    i += 1;
                }
            }
        }
        tokens.push(token);
    }
    tokens
}

/// One to four random edits of `input`: bytes flipped, set, inserted or
/// removed, a dictionary token put in, a range repeated, or a piece of
/// another seed spliced in.
fn mutate(rng: &mut Rng, input: &[u8], dict: &[Vec<u8>], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(9) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.insert(at, rng.next() as u8),
            3 if !b.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(b.len());
                b.drain(at.min(end)..end);
            }
            4 | 5 if !dict.is_empty() => {
                let token = rng.pick(dict);
                b.splice(at..at, token.iter().copied());
            }
            6 if !dict.is_empty() => {
                let token = rng.pick(dict);
                let end = (at + token.len()).min(b.len());
                b.splice(at..end, token.iter().copied());
            }
            7 if !b.is_empty() => {
                let from = rng.below(b.len());
                let end = (from + 1 + rng.below(16)).min(b.len());
                let piece = b[from..end].to_vec();
                let times = 1 + rng.below(4);
                for _ in 0..times {
                    b.splice(at..at, piece.iter().copied());
                }
            }
            _ if !seeds.is_empty() => {
                let other = rng.pick(seeds);
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(64)).min(other.len());
                b.splice(at..at, other[from..end].iter().copied());
            }
            _ => b.push(rng.next() as u8),
        }
    }
    b.truncate(4096);
    b
}

/// Purely random bytes, mostly printable.
fn random(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(128);
    (0..len)
        .map(|_| match rng.below(4) {
            0 => rng.next() as u8,
            1 => 0,
            _ => b' ' + rng.below(95) as u8,
        })
        .collect()
}

/// Peak resident memory of this process so far.
fn vm_hwm() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

/// Panic messages cut to a few lines: a check's message may quote a huge
/// input.
fn short_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg.len() > 2000 {
                let mut end = 2000;
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                eprintln!(
                    "panicked at {at}:\n{}... ({} bytes)",
                    &msg[..end],
                    msg.len()
                );
            } else {
                default(info);
            }
        }));
    });
}

/// Run `check` on `input`; on a panic or a slow answer, save the input
/// and say which it was.
fn run_one(target: &str, what: &str, check: Check, input: &[u8]) {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    let took = start.elapsed();
    let saved = || {
        let dir = Path::new(ROOT).join("target/fuzz-failures").join(target);
        let _ = fs::create_dir_all(&dir);
        let name = format!("{:016x}", hash(input));
        let path = dir.join(name);
        let _ = fs::write(&path, input);
        path
    };
    if let Err(panic) = outcome {
        let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
        eprintln!(
            "fuzz target {target}: {what} failed; input saved as {} ({} bytes): {shown:?}",
            saved().display(),
            input.len(),
        );
        resume_unwind(panic);
    }
    assert!(
        took <= call_max(),
        "fuzz target {target}: {what} took {took:?}; input saved as {}",
        saved().display()
    );
}

fn hash(b: &[u8]) -> u64 {
    // FNV-1a: a stable name for a failing input.
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The short mode of one target: seeds, regressions, `extra` inputs, then
/// mutations.
fn short_run(target: &str, check: Check, extra: &[(&str, Vec<u8>)]) {
    short_panics();
    let started = Instant::now();
    let corpus = files(&Path::new(ROOT).join("fuzz/corpus").join(target));
    assert!(!corpus.is_empty(), "no seed corpus for {target}");
    for (path, input) in &corpus {
        run_one(target, &path.display().to_string(), check, input);
    }
    for (name, input) in extra {
        run_one(target, name, check, input);
    }
    let dict = dictionary(target);
    let seeds: Vec<Vec<u8>> = corpus.into_iter().map(|(_, b)| b).collect();
    let seed = seed();
    let mut rng = Rng(seed ^ hash(target.as_bytes()));
    let n = cases();
    for i in 0..n {
        let input = if i % 8 == 7 {
            random(&mut rng)
        } else {
            let base = rng.pick(&seeds).clone();
            mutate(&mut rng, &base, &dict, &seeds)
        };
        run_one(target, &format!("case {i} of seed {seed}"), check, &input);
    }
    let hwm = vm_hwm();
    eprintln!(
        "fuzz target {target}: {} inputs in {:?}, seed {seed}, peak memory {} MiB",
        n + seeds.len() + extra.len(),
        started.elapsed(),
        hwm >> 20
    );
    assert!(hwm < HWM_MAX, "peak memory {hwm} bytes after {target}");
}

/// Bytes `text` repeated to `len`.
fn repeat(text: &str, len: usize) -> Vec<u8> {
    text.as_bytes().iter().copied().cycle().take(len).collect()
}

/// The largest configuration file read is 1 MiB.
const MIB: usize = 1 << 20;
/// The largest argument execve(2) takes (MAX_ARG_STRLEN).
const ARG_MAX: usize = 128 << 10;

#[test]
fn fuzz_cli_short() {
    let long = |prefix: &str, fill: &str| {
        let mut b = prefix.as_bytes().to_vec();
        b.extend(repeat(fill, ARG_MAX - prefix.len()));
        b
    };
    let many: Vec<u8> = repeat("\0-c\0x", 100_000);
    short_run(
        "cli",
        fuzz_support::cli,
        &[
            ("a 128 KiB unknown option", long("server\0--", "configx")),
            ("a 128 KiB PORT", long("server\0", "9")),
            ("a 128 KiB --config", long("server\0--config=", "f")),
            ("a 128 KiB --bind", long("server\0--bind=", "1:")),
            ("a 128 KiB argv[0] with --version", {
                let mut b = repeat("\u{1b}x", ARG_MAX);
                b.extend_from_slice(b"\0--version");
                b
            }),
            ("40 000 -c options", {
                let mut b = b"server".to_vec();
                b.extend(many);
                b
            }),
        ],
    );
}

#[test]
fn fuzz_config_short() {
    let nested = |open: &str, fill: usize| {
        let mut b = b"a = ".to_vec();
        b.extend(repeat(open, fill));
        b
    };
    short_run(
        "config",
        fuzz_support::config,
        &[
            ("1 MiB of [", nested("[", MIB - 4)),
            ("1 MiB of {", nested("{a=", MIB - 4)),
            ("1 MiB of [[a]]", repeat("[[a]]\n", MIB)),
            ("1 MiB of tables", {
                let mut b = Vec::new();
                let mut i = 0;
                while b.len() < MIB {
                    b.extend(format!("[t{i}]\n").bytes());
                    i += 1;
                }
                b
            }),
            ("1 MiB dotted key", {
                let mut b = repeat("a.", MIB - 4);
                b.extend_from_slice(b"b=1");
                b
            }),
            ("1 MiB key", {
                let mut b = repeat("\u{10348}", MIB - 4);
                b.extend_from_slice(b"=1");
                b
            }),
            ("1 MiB string", {
                let mut b = b"save_dir = \"".to_vec();
                b.extend(repeat("\u{7f}\u{1b}\u{10348}", MIB - 14));
                b.push(b'"');
                b
            }),
            ("1 MiB of comments", repeat("#\u{1b}\n", MIB)),
            ("1 MiB of newlines then an error", {
                let mut b = repeat("\n", MIB - 10);
                b.extend_from_slice(b"port = -1");
                b
            }),
        ],
    );
}

#[test]
fn fuzz_proxy_short() {
    short_run(
        "proxy",
        fuzz_support::proxy,
        &[
            ("4 KiB of PROXY", repeat("PROXY ", 4096)),
            ("a v2 header of 64 KiB", {
                let mut b = b"\r\n\r\n\0\r\nQUIT\n\x21\x31\xff\xff".to_vec();
                b.extend(repeat("x", 65535));
                b
            }),
        ],
    );
}

#[test]
fn fuzz_env_short() {
    short_run(
        "env",
        fuzz_support::env,
        &[
            ("128 KiB values", {
                let mut b = Vec::new();
                for _ in 0..4 {
                    b.extend(repeat("9", ARG_MAX));
                    b.push(0);
                }
                b.extend(repeat("@\u{1b}", ARG_MAX));
                b
            }),
            ("a 128 KiB path", {
                let mut b = b"\0\0\0\0/".to_vec();
                b.extend(repeat("\u{1b}/", ARG_MAX));
                b
            }),
        ],
    );
}

/// Every input that once found a bug (`tests/fuzz_regressions/<target>/`,
/// FUZZING.md), replayed with its target's checks.
#[test]
fn fuzz_regressions() {
    short_panics();
    let targets: [(&str, Check); 4] = [
        ("cli", fuzz_support::cli),
        ("config", fuzz_support::config),
        ("proxy", fuzz_support::proxy),
        ("env", fuzz_support::env),
    ];
    let mut replayed = 0;
    for (target, check) in targets {
        let dir = Path::new(ROOT).join("tests/fuzz_regressions").join(target);
        for (path, input) in files(&dir) {
            run_one(target, &path.display().to_string(), check, &input);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression inputs");
}
