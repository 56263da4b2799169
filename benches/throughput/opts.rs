//! The command line: the options, the receivers a run can compare, and
//! their parsing. Kept apart so that what a run measures is read in one place.

use super::*;

pub(crate) const USAGE: &str = "\
usage: cargo bench --bench throughput -- [OPTIONS]

  --smoke             a few seconds: small sizes, one short pass of every test;
                      checks every count line, asserts nothing about speed
  --sizes LIST        transfer sizes, e.g. 1M,100M,1G,4G (suffixes K, M, G = KiB, MiB, GiB)
  --rounds N          interleaved rounds per size (default 15; smoke 2)
  --receivers LIST    subset of reference,server,server-save,socat,nc,python
                      (reference always runs; server-save = server --save-dir on /dev/shm)
  --conns N           sequential connections per connection-rate round (default 2000)
  --idle-conns N      concurrent idle connections to the server (default 1000)
  --skip-extras       no connection rate, start/stop, idle test
  --only LIST         only these parts: transfers (the table), extras, saving
  --save-sizes LIST   saving rounds' sizes (default 1G,4G; smoke 8M)
  --save-rounds N     saving rounds per size and file system (default 5; smoke 2)
  --save-fs LIST      tmpfs (/dev/shm), disk (--disk-dir); default both
  --disk-dir DIR      where the disk saving rounds write (default /var/tmp; not a tmpfs)
  --save-pause SECS   pause before each saving transfer (an experiment; default 0)
  --no-save-warmup    no untimed warm-up transfer before each size's saving rounds
  --plain-window SIZE adds a third saving receiver: the plain one pushing written pages
                      out in windows of SIZE with sync_file_range, as the server does
                      (an experiment; default off)
  --log-dir DIR       the server's stderr logs go to DIR/server-N.log (kept) instead of
                      the scratch directory under the temporary directory
  --pin               during transfers, pin the sender to CPU 0 and the receiver to CPU 1
  --out DIR           where the figures (throughput.json) and their chart (throughput.svg)
                      go (default target/bench)
  --chart FILE.json   measure nothing: draw the chart of an earlier run's figures, as
                      FILE.svg

environment: ACCIO_BENCH_SERVER=PATH benchmarks that binary instead of the one cargo built.";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Reference,
    Server,
    /// The server with `--save-dir` on a fresh directory under /dev/shm (tmpfs).
    ServerSave,
    Socat,
    Nc,
    Python,
    /// The plain saving receiver written here (hidden subcommand `__plain DIR PORT`):
    /// the reference peer of the saving rounds, not one of the transfer table's.
    Plain,
    /// The same, pushing pages out in windows like the server (`--plain-window`, an
    /// experiment): a third receiver of the saving rounds.
    PlainWindowed,
}

pub(crate) const ALL_KINDS: [Kind; 6] = [
    Kind::Reference,
    Kind::Server,
    Kind::ServerSave,
    Kind::Socat,
    Kind::Nc,
    Kind::Python,
];

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Reference => "reference (MSG_TRUNC)",
            Kind::Server => "**server**",
            Kind::ServerSave => "**server --save-dir** (tmpfs)",
            Kind::Socat => "socat \\| wc -c",
            Kind::Nc => "nc -l \\| wc -c",
            Kind::Python => "textbook Python",
            Kind::Plain => "plain splice receiver",
            Kind::PlainWindowed => "plain + sync_file_range windows",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::Reference => "reference",
            Kind::Server => "server",
            Kind::ServerSave => "server-save",
            Kind::Socat => "socat",
            Kind::Nc => "nc",
            Kind::Python => "python",
            Kind::Plain => "plain",
            Kind::PlainWindowed => "plain-windowed",
        }
    }

    /// Whether it sends `accio\r\n` (the sender then waits for it before sending).
    pub(crate) fn greets(self) -> bool {
        matches!(
            self,
            Kind::Reference
                | Kind::Server
                | Kind::ServerSave
                | Kind::Python
                | Kind::Plain
                | Kind::PlainWindowed
        )
    }

    /// Whether it serves one connection and exits (socat, nc): its CPU and peak RSS
    /// then come from `wait4` instead of /proc.
    pub(crate) fn one_shot(self) -> bool {
        matches!(self, Kind::Socat | Kind::Nc)
    }
}

/// Where the saving rounds write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SaveFs {
    /// /dev/shm: memory only, what the file system side costs without a disk.
    Tmpfs,
    /// A directory on the real disk (`--disk-dir`, default /var/tmp).
    Disk,
}

pub(crate) const ALL_FS: [SaveFs; 2] = [SaveFs::Tmpfs, SaveFs::Disk];

impl SaveFs {
    pub(crate) fn key(self) -> &'static str {
        match self {
            SaveFs::Tmpfs => "tmpfs",
            SaveFs::Disk => "disk",
        }
    }
}

pub(crate) struct Opts {
    pub(crate) smoke: bool,
    pub(crate) sizes: Vec<u64>,
    pub(crate) rounds: usize,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) conns: usize,
    pub(crate) conn_rounds: usize,
    pub(crate) start_rounds: usize,
    pub(crate) idle_conns: usize,
    pub(crate) idle_time: Duration,
    /// The transfer table (and its server-save column).
    pub(crate) transfers: bool,
    pub(crate) extras: bool,
    /// The saving rounds: server --save-dir against the plain splice receiver.
    pub(crate) saving: bool,
    pub(crate) save_sizes: Vec<u64>,
    pub(crate) save_rounds: usize,
    pub(crate) save_fs: Vec<SaveFs>,
    /// The real-disk directory the `disk` saving rounds write under.
    pub(crate) disk_dir: PathBuf,
    /// A pause before each saving transfer (an experiment: default none).
    pub(crate) save_pause: Duration,
    /// The plain receiver pushes its pages out in windows this large, like the server
    /// (an experiment: default 0, off).
    pub(crate) plain_window: u64,
    /// An untimed transfer (plain receiver) before each size's saving rounds.
    pub(crate) save_warmup: bool,
    /// Where the server's stderr (its per-connection log) goes, if not the scratch
    /// directory under /tmp.
    pub(crate) log_dir: Option<PathBuf>,
    /// Where the run's JSON figures and SVG chart go.
    pub(crate) out_dir: PathBuf,
    /// Greeting probes: at least this many during an upload, and this many against the
    /// idle saving server.
    pub(crate) min_probes: usize,
    pub(crate) idle_probes: usize,
    pub(crate) pin: bool,
}

/// `target/bench` of the build directory cargo uses.
fn default_out_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad size {s:?} (examples: 4096, 1M, 100M, 4G)"))
}

pub(crate) fn parse_count(flag: &str, v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{flag}: expected a positive number, got {v:?}"))
}

impl Opts {
    pub(crate) fn parse(args: &[String]) -> Result<Opts, String> {
        let mut smoke = false;
        let mut sizes = None;
        let mut rounds = None;
        let mut kinds = None;
        let mut conns = None;
        let mut idle_conns = None;
        let mut extras = true;
        let mut transfers = true;
        let mut saving = true;
        let mut save_sizes = None;
        let mut save_rounds = None;
        let mut save_fs = None;
        let mut disk_dir = None;
        let mut save_pause = Duration::ZERO;
        let mut plain_window = 0;
        let mut save_warmup = true;
        let mut log_dir = None;
        let mut out_dir = None;
        let mut pin = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--smoke" => smoke = true,
                "--skip-extras" => extras = false,
                "--pin" => pin = true,
                "--out" => out_dir = Some(PathBuf::from(value()?)),
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                "-h" | "--help" => return Err(String::new()),
                "--sizes" => {
                    let v = value()?;
                    sizes = Some(
                        v.split(',')
                            .map(parse_size)
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                "--rounds" => rounds = Some(parse_count(flag, &value()?)?),
                "--conns" => conns = Some(parse_count(flag, &value()?)?),
                "--idle-conns" => idle_conns = Some(parse_count(flag, &value()?)?),
                "--only" => {
                    let v = value()?;
                    (transfers, extras, saving) = (false, false, false);
                    for part in v.split(',') {
                        match part.trim() {
                            "transfers" => transfers = true,
                            "extras" => extras = true,
                            "saving" => saving = true,
                            other => {
                                return Err(format!(
                                    "--only: unknown part {other:?} (transfers, extras, saving)"
                                ));
                            }
                        }
                    }
                }
                "--save-sizes" => {
                    let v = value()?;
                    save_sizes = Some(
                        v.split(',')
                            .map(parse_size)
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                "--save-rounds" => save_rounds = Some(parse_count(flag, &value()?)?),
                "--save-fs" => {
                    let v = value()?;
                    let mut list = Vec::new();
                    for name in v.split(',') {
                        let fs = ALL_FS
                            .iter()
                            .copied()
                            .find(|f| f.key() == name.trim())
                            .ok_or_else(|| format!("--save-fs: unknown {name:?} (tmpfs, disk)"))?;
                        if !list.contains(&fs) {
                            list.push(fs);
                        }
                    }
                    save_fs = Some(list);
                }
                "--disk-dir" => disk_dir = Some(PathBuf::from(value()?)),
                "--plain-window" => plain_window = parse_size(&value()?)?,
                "--no-save-warmup" => save_warmup = false,
                "--log-dir" => log_dir = Some(PathBuf::from(value()?)),
                "--save-pause" => {
                    let v = value()?;
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 600.0)
                        .ok_or_else(|| format!("--save-pause: expected seconds, got {v:?}"))?;
                    save_pause = Duration::from_secs_f64(secs);
                }
                "--receivers" => {
                    let v = value()?;
                    let mut list = vec![Kind::Reference];
                    for name in v.split(',') {
                        let k = ALL_KINDS
                            .iter()
                            .copied()
                            .find(|k| k.key() == name.trim())
                            .ok_or_else(|| format!("unknown receiver {name:?}"))?;
                        if !list.contains(&k) {
                            list.push(k);
                        }
                    }
                    list.sort_by_key(|k| ALL_KINDS.iter().position(|x| x == k));
                    kinds = Some(list);
                }
                f if f.starts_with('-') => return Err(format!("unknown option {f}")),
                // A positional argument is a cargo bench name filter: nothing to filter.
                _ => {}
            }
        }
        Ok(Opts {
            smoke,
            sizes: sizes.unwrap_or_else(|| {
                if smoke {
                    vec![1 << 20, 8 << 20]
                } else {
                    vec![1 << 20, 100 << 20, 1 << 30, 4 << 30]
                }
            }),
            rounds: rounds.unwrap_or(if smoke { 2 } else { 15 }),
            kinds: kinds.unwrap_or_else(|| ALL_KINDS.to_vec()),
            conns: conns.unwrap_or(if smoke { 200 } else { 2000 }),
            conn_rounds: if smoke { 1 } else { 9 },
            start_rounds: if smoke { 3 } else { 15 },
            idle_conns: idle_conns.unwrap_or(if smoke { 100 } else { 1000 }),
            idle_time: if smoke {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            },
            transfers,
            extras,
            saving,
            save_sizes: save_sizes.unwrap_or_else(|| {
                if smoke {
                    vec![8 << 20]
                } else {
                    vec![1 << 30, 4 << 30]
                }
            }),
            save_rounds: save_rounds.unwrap_or(if smoke { 2 } else { 5 }),
            save_fs: save_fs.unwrap_or_else(|| ALL_FS.to_vec()),
            disk_dir: disk_dir.unwrap_or_else(|| PathBuf::from("/var/tmp")),
            save_pause,
            plain_window,
            save_warmup,
            log_dir,
            out_dir: out_dir.unwrap_or_else(default_out_dir),
            min_probes: if smoke { 5 } else { 20 },
            idle_probes: if smoke { 5 } else { 100 },
            pin,
        })
    }
}
