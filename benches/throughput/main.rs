//! Throughput benchmark of accio-server, without the libtest harness.
//!
//! In one run, interleaved round by round, it measures the release `server` against a
//! reference receiver written here (blocking, counts with `recv(fd, NULL, huge,
//! MSG_TRUNC)`, run as a separate process by re-executing this binary) and against the
//! peers a user would otherwise pick (`socat | wc -c`, `nc -l | wc -c`, the textbook
//! Python server in `textbook_server.py` beside this file). The server also runs in its saving mode
//! (`--save-dir` on a tmpfs under /dev/shm). Last come the saving rounds: the
//! server with `--save-dir` against a plain blocking `splice` receiver written here
//! (`__plain DIR PORT`), on tmpfs and on the real disk, and the greeting latency other
//! clients see during a save. Every count line a receiver prints is checked, and so is
//! every file a saving receiver writes; a wrong or missing one makes the run exit
//! non-zero.
//!
//! ```text
//! cargo bench --bench throughput                 # full run, a few minutes
//! cargo bench --bench throughput -- --smoke      # a few seconds: correctness only
//! cargo bench --bench throughput -- --sizes 1M,100M --rounds 3
//! cargo bench --bench throughput -- --only saving   # the saving rounds alone
//! ```
//!
//! See BENCHMARKS.md for what is measured and how to read the table.

mod chart;
mod measure;
mod opts;
mod plain;
#[path = "../../tests/common/ports.rs"]
mod ports;
mod procs;
mod receivers;
mod reference;
mod report;
mod report_saving;
mod saving;
mod sender;
mod stats;

use measure::*;
use opts::*;
use plain::*;
use procs::*;
use receivers::*;
use reference::*;
use report::*;
use report_saving::*;
use saving::*;
use sender::*;
use stats::*;

use std::alloc::{self, Layout};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const GREETING: &[u8] = b"accio\r\n";
/// Size of the sender's page-aligned buffer, and of each `send`.
const CHUNK: usize = 1 << 20;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// How long a receiver may take to start listening (Python is the slow one).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout on every benchmark socket: a stalled receiver fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a count line after the connection ended.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM (or SIGKILL) before we give up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__reference") {
        return reference_main(args.get(1).map(String::as_str).unwrap_or(""));
    }
    if let Some(i) = args.iter().position(|a| a == "--chart") {
        let Some(json) = args.get(i + 1) else {
            eprintln!("ERROR: --chart needs a FILE.json\n{USAGE}");
            return ExitCode::from(64);
        };
        return match chart::redraw(Path::new(json)) {
            Ok(svg) => {
                eprintln!("chart written to {}", svg.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ERROR: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("__plain") {
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        return plain_main(arg(1), arg(2), arg(3));
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ERROR: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::FAILURE
        }
    }
}

/// (round, value): rounds are paired across receivers, for the per-round ratios.
type Series = Vec<(usize, f64)>;

fn median(v: &Series) -> Option<f64> {
    stats(&v.iter().map(|p| p.1).collect::<Vec<_>>()).map(|s| s.med)
}

fn stats_cell(v: &Series) -> String {
    cell(&stats(&v.iter().map(|p| p.1).collect::<Vec<_>>()))
}

/// Everything one run measured.
struct Results {
    /// Transfer receivers, in table order.
    kinds: Vec<Kind>,
    /// Per size, per receiver: throughput MB/s, CPU s/GiB, peak RSS MiB.
    tput: Vec<Vec<Series>>,
    cpu: Vec<Vec<Series>>,
    rss: Vec<Vec<Series>>,
    /// The sender's CPU s/GiB.
    sender: Vec<Vec<Series>>,
    /// The receiver's context switches per MiB.
    switches: Vec<Vec<Series>>,
    transfers_checked: usize,
    /// Receivers that serve many connections (socat and nc serve one).
    multi: Vec<Kind>,
    /// Per receiver in `multi`: connections/s, start → listening ms, SIGTERM → exit ms.
    rates: Vec<Series>,
    starts: Vec<Series>,
    stops: Vec<Series>,
    idle: Option<IdleResult>,
    /// The saving rounds, per file system.
    saving: Vec<SaveFsResults>,
    congestion: String,
    load_start: String,
    /// (busy CPU of the whole machine, CPU of this process and its children) at start.
    machine_start: (f64, f64),
    nofile: u64,
}

fn run(opts: &Opts) -> Result<bool, String> {
    let started = Instant::now();
    // Precise sleeps when polling for start-up and exit.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let nofile = raise_nofile();
    let mut ctx = setup(opts)?;
    let buf = AlignedBuf::new(CHUNK);
    let congestion = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| {
        let s = TcpStream::connect(l.local_addr()?)?;
        Ok(set_cubic(&s))
    }) {
        Ok(cc) => cc,
        Err(e) => format!("unknown ({e})"),
    };
    let kinds = ctx.available.clone();
    // The extras (connection rate, start/stop) are about serving, not saving.
    let multi: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|&k| !k.one_shot() && k != Kind::ServerSave)
        .collect();
    let per_size = vec![vec![Vec::new(); kinds.len()]; opts.sizes.len()];
    let mut res = Results {
        tput: per_size.clone(),
        cpu: per_size.clone(),
        rss: per_size.clone(),
        sender: per_size.clone(),
        switches: per_size,
        kinds,
        transfers_checked: 0,
        rates: vec![Vec::new(); multi.len()],
        starts: vec![Vec::new(); multi.len()],
        stops: vec![Vec::new(); multi.len()],
        multi,
        idle: None,
        saving: Vec::new(),
        congestion,
        load_start: loadavg(),
        machine_start: (busy_cpu_secs(), own_cpu_secs()),
        nofile,
    };
    if opts.transfers {
        run_transfers(opts, &mut ctx, &buf, &mut res);
    }
    if opts.extras {
        run_extras(opts, &mut ctx, &buf, &mut res);
    }
    // Last: gigabytes written to the disk must not disturb the counting figures.
    if opts.saving {
        let mut saving = Vec::new();
        run_saving(opts, &mut ctx, &buf, &mut saving);
        res.saving = saving;
    }
    let out = report(opts, &ctx, &res, started);
    let _ = io::stdout().write_all(out.as_bytes());
    let _ = io::stdout().flush();
    match chart::write(&opts.out_dir, &chart::Summary::of(opts, &res)) {
        Ok(()) => eprintln!(
            "figures and chart written to {}/throughput.{{json,svg}}",
            opts.out_dir.display()
        ),
        Err(e) => ctx.fail(format!("writing the figures and chart: {e}")),
    }
    if ctx.failures.is_empty() {
        let _ = fs::remove_dir_all(&ctx.tmp);
    } else {
        let logs = ctx.log_dir.as_ref().unwrap_or(&ctx.tmp);
        eprintln!("server logs kept in {}", logs.display());
    }
    Ok(ctx.failures.is_empty())
}

/// Finds the server binary, the peers that are installed, a scratch directory.
fn setup(opts: &Opts) -> Result<Ctx, String> {
    let server = env::var_os("ACCIO_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_server")));
    if !server.is_file() {
        return Err(format!("server binary {} does not exist", server.display()));
    }
    let tmp = env::temp_dir().join(format!("accio-bench-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Some(dir) = &opts.log_dir {
        fs::create_dir_all(dir).map_err(|e| format!("--log-dir {}: {e}", dir.display()))?;
    }
    // Run copies, so that a rebuild during the run cannot mix two builds in one table.
    let copy = |from: &Path, name: &str| {
        let to = tmp.join(name);
        fs::copy(from, &to)
            .map(|_| to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), tmp.display()))
    };
    let self_exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut ctx = Ctx {
        server: copy(&server, "server")?,
        server_origin: server,
        python_script: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/throughput/textbook_server.py"),
        python: PathBuf::from("python3"),
        self_exe: copy(&self_exe, "throughput")?,
        tmp,
        available: Vec::new(),
        notes: Vec::new(),
        failures: Vec::new(),
        server_logs: 0,
        save_base: None,
        save_dirs: 0,
        saves_checked: 0,
        disk_base: None,
        saving_checked: 0,
        plain_window: opts.plain_window,
        log_dir: opts.log_dir.clone(),
    };
    for &k in &opts.kinds {
        let missing = match k {
            Kind::Reference | Kind::Server | Kind::Plain | Kind::PlainWindowed => None,
            Kind::ServerSave => match save_base() {
                Ok(base) => {
                    ctx.save_base = Some(base);
                    None
                }
                Err(why) => Some(why),
            },
            Kind::Socat => (!in_path("socat"))
                .then(|| "socat is not installed (apt-get install -y socat)".to_string()),
            Kind::Nc => {
                let mut nc = Command::new("nc");
                nc.arg("-h");
                let openbsd = probe(nc).is_some_and(|(_, text)| text.contains("OpenBSD"));
                (!openbsd).then(|| {
                    "OpenBSD nc is not installed (apt-get install -y netcat-openbsd)".to_string()
                })
            }
            Kind::Python => match python_executable() {
                Some(py) => {
                    ctx.python = py;
                    None
                }
                None => Some("python3 is not installed".to_string()),
            },
        };
        match missing {
            Some(why) => ctx.notes.push(format!("skipped {}: {why}", k.key())),
            None if k.one_shot() && !in_path("wc") => ctx
                .notes
                .push(format!("skipped {}: wc is not installed", k.key())),
            None => ctx.available.push(k),
        }
    }
    if opts.saving {
        for &f in &opts.save_fs {
            let made = match f {
                SaveFs::Tmpfs if ctx.save_base.is_some() => Ok(()),
                SaveFs::Tmpfs => save_base().map(|b| ctx.save_base = Some(b)),
                SaveFs::Disk => disk_base(&opts.disk_dir).map(|b| ctx.disk_base = Some(b)),
            };
            if let Err(why) = made {
                ctx.notes
                    .push(format!("skipped the saving rounds on {}: {why}", f.key()));
            }
        }
    }
    Ok(ctx)
}

/// For each size, `rounds` rounds; in each round every receiver once, the order
/// reversed every other round so that drift hits all of them alike.
fn run_transfers(opts: &Opts, ctx: &mut Ctx, buf: &AlignedBuf, res: &mut Results) {
    let n = res.kinds.len();
    for (si, &size) in opts.sizes.iter().enumerate() {
        status_line(
            &format!("transfers of {}, {} rounds", size_name(size), opts.rounds),
            true,
        );
        // server-save needs room for one file (each is deleted after its check).
        let room = ctx
            .save_base
            .as_ref()
            .and_then(|b| free_bytes(&b.0))
            .unwrap_or(0);
        let save_fits = size.saturating_add(256 << 20) <= room;
        if res.kinds.contains(&Kind::ServerSave) && !save_fits {
            ctx.notes.push(format!(
                "skipped server-save at {}: /dev/shm has {} MiB free",
                size_name(size),
                room >> 20
            ));
        }
        for round in 0..opts.rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for ki in order {
                let kind = res.kinds[ki];
                if kind == Kind::ServerSave && !save_fits {
                    continue;
                }
                let what = format!("{} round {}/{}", size_name(size), round + 1, opts.rounds);
                status_line(&format!("{what}: {}", kind.key()), false);
                match measure_transfer(ctx, kind, size, buf, opts.pin, opts.smoke, None) {
                    Ok(s) => {
                        res.transfers_checked += 1;
                        res.tput[si][ki].push((round, size as f64 / s.secs / 1e6));
                        res.cpu[si][ki].push((round, s.cpu_secs / (size as f64 / GIB)));
                        res.rss[si][ki].push((round, s.rss_kib as f64 / 1024.0));
                        let gib = size as f64 / GIB;
                        res.sender[si][ki].push((round, s.sender_cpu_secs / gib));
                        let mib = size as f64 / (1 << 20) as f64;
                        res.switches[si][ki].push((round, s.switches as f64 / mib));
                    }
                    Err(e) => ctx.fail(e),
                }
            }
        }
    }
    status_line("", false);
}

/// Connection rate, start and stop latency (interleaved), then the idle test.
fn run_extras(opts: &Opts, ctx: &mut Ctx, buf: &AlignedBuf, res: &mut Results) {
    let what = format!(
        "sequential connection rate, {} rounds of {}",
        opts.conn_rounds, opts.conns
    );
    status_line(&what, true);
    for round in 0..opts.conn_rounds {
        for (ki, &k) in res.multi.iter().enumerate() {
            let what = format!("connection rate round {}/{}", round + 1, opts.conn_rounds);
            status_line(&format!("{what}: {}", k.key()), false);
            match measure_conn_rate(ctx, k, opts.conns) {
                Ok(r) => res.rates[ki].push((round, r)),
                Err(e) => ctx.fail(e),
            }
        }
    }
    status_line(
        &format!("start and stop latency, {} rounds", opts.start_rounds),
        true,
    );
    for round in 0..opts.start_rounds {
        for (ki, &k) in res.multi.iter().enumerate() {
            let what = format!("start/stop round {}/{}", round + 1, opts.start_rounds);
            status_line(&format!("{what}: {}", k.key()), false);
            match measure_start_stop(ctx, k) {
                Ok((start, stop, status)) => {
                    res.starts[ki].push((round, start * 1e3));
                    res.stops[ki].push((round, stop * 1e3));
                    if k == Kind::Server && !exited_zero(status) {
                        ctx.fail(format!(
                            "server ended with {} after SIGTERM (the contract says exit 0)",
                            describe_status(status)
                        ));
                    }
                }
                Err(e) => ctx.fail(e),
            }
        }
    }
    let what = format!(
        "{} concurrent idle connections to the server",
        opts.idle_conns
    );
    status_line(&what, true);
    match measure_idle(ctx, opts.idle_conns, opts.idle_time, buf) {
        Ok(r) => {
            if !exited_zero(r.exit_status) {
                ctx.fail(format!(
                    "server ended with {} after SIGTERM (idle test)",
                    describe_status(r.exit_status)
                ));
            }
            res.idle = Some(r);
        }
        Err(e) => ctx.fail(e),
    }
}

fn exited_zero(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}
