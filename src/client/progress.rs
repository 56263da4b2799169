//! The progress display (indicatif): drawn from indicatif's own ticker
//! thread every 200 ms, so a stall keeps the clock and rate moving and the
//! transfer never waits for the terminal; fields are dropped by priority
//! to fit the terminal width.

use super::*;

/// What the progress line says about the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running = 0,
    Done = 1,
    Aborted = 2,
}

impl Phase {
    pub(super) fn from_u8(n: u8) -> Phase {
        match n {
            1 => Phase::Done,
            2 => Phase::Aborted,
            _ => Phase::Running,
        }
    }
}

/// The `--progress` display: an indicatif bar (known size) or spinner
/// (unknown size) on stderr. The transfer only stores the position (an
/// atomic); indicatif's ticker thread draws every [`TICK`], so a stall
/// still moves the clock and the current rate, and the transfer never
/// waits for the terminal.
pub(super) struct Progress {
    pub(super) bar: Option<ProgressBar>,
    pub(super) phase: Arc<AtomicU8>,
    /// The width the draw target last reported, for the line's layout.
    pub(super) width: Arc<AtomicU16>,
}

impl Progress {
    pub(super) fn off() -> Progress {
        Progress {
            bar: None,
            phase: Arc::new(AtomicU8::new(Phase::Running as u8)),
            width: Arc::new(AtomicU16::new(80)),
        }
    }

    pub(super) fn new(on: bool, total: Option<u64>) -> Progress {
        let mut progress = Progress::off();
        if !on {
            return progress;
        }
        let term = StderrTerm {
            tty: io::stderr().is_terminal(),
            width: progress.width.clone(),
            buf: Mutex::new(Vec::new()),
        };
        let bar =
            ProgressBar::with_draw_target(total, ProgressDrawTarget::term_like(Box::new(term)))
                .with_style(progress.style(total.is_none()));
        bar.enable_steady_tick(TICK);
        progress.bar = Some(bar);
        progress
    }

    /// `{line}` for a bar, `{spinner} {line}` for an unknown size.
    pub(super) fn style(&self, spinner: bool) -> ProgressStyle {
        let (phase, width) = (self.phase.clone(), self.width.clone());
        let reserve = if spinner { 2 } else { 0 };
        let line = move |state: &ProgressState, w: &mut dyn fmt::Write| {
            let snap = Snapshot {
                elapsed: state.elapsed(),
                sent: state.pos(),
                total: state.len(),
                rate: state.per_sec(),
                phase: Phase::from_u8(phase.load(Ordering::SeqCst)),
            };
            let cols = usize::from(width.load(Ordering::SeqCst)).saturating_sub(reserve);
            let _ = w.write_str(&render(&snap, cols));
        };
        let template = if spinner {
            "{spinner} {line}"
        } else {
            "{line}"
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .tick_chars("|/-\\ ")
            .with_key("line", line)
    }

    pub(super) fn update(&self, sent: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(sent);
        }
    }

    /// The last frame ("done"), then a newline.
    pub(super) fn finish(&mut self, sent: u64) {
        self.end(Phase::Done, Some(sent));
    }

    /// The last frame as it stood ("aborted"), then a newline, so an
    /// `ERROR:` line starts a line of its own.
    pub(super) fn abandon(&mut self) {
        self.end(Phase::Aborted, None);
    }

    pub(super) fn end(&mut self, phase: Phase, sent: Option<u64>) {
        let Some(bar) = self.bar.take() else { return };
        if let Some(sent) = sent {
            bar.set_position(sent);
        }
        // Stop (and join) the ticker: nothing draws after the last frame.
        bar.disable_steady_tick();
        self.phase.store(phase as u8, Ordering::SeqCst);
        bar.set_style(self.style(false));
        // Abandon keeps the position (finish would set it to the size,
        // which a file that changed meanwhile may not have had).
        bar.abandon();
        let _ = io::stderr().lock().write_all(b"\n");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// indicatif's terminal: stderr, also when it is not a terminal (then
/// `--progress` was asked for; escape sequences are left out, each frame
/// starts with a carriage return and, padded to the width, covers the one
/// before). A frame is written with one write(2).
#[derive(Debug)]
pub(super) struct StderrTerm {
    pub(super) tty: bool,
    pub(super) width: Arc<AtomicU16>,
    pub(super) buf: Mutex<Vec<u8>>,
}

impl StderrTerm {
    pub(super) fn push(&self, s: &str) {
        if let Ok(mut buf) = self.buf.lock() {
            buf.extend_from_slice(s.as_bytes());
        }
    }

    pub(super) fn escape(&self, n: usize, code: char) -> io::Result<()> {
        if self.tty && n > 0 {
            self.push(&format!("\x1b[{n}{code}"));
        }
        Ok(())
    }
}

impl TermLike for StderrTerm {
    fn width(&self) -> u16 {
        let cols = term_size(self.tty).0;
        self.width.store(cols, Ordering::SeqCst);
        cols
    }

    fn height(&self) -> u16 {
        term_size(self.tty).1
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.escape(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.push(s);
        self.push("\n");
        Ok(())
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.push(s);
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.push(if self.tty { "\r\x1b[2K" } else { "\r" });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let frame = match self.buf.lock() {
            Ok(mut buf) => std::mem::take(&mut *buf),
            Err(_) => return Ok(()),
        };
        let mut err = io::stderr().lock();
        err.write_all(&frame)?;
        err.flush()
    }
}

/// Columns and rows of the terminal on stderr; otherwise COLUMNS (or 80)
/// and 24.
pub(super) fn term_size(tty: bool) -> (u16, u16) {
    if tty {
        // SAFETY: TIOCGWINSZ writes one winsize.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return (ws.ws_col, if ws.ws_row > 0 { ws.ws_row } else { 24 });
        }
    }
    let cols = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80);
    (cols, 24)
}

/// What one frame of the progress line shows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    pub(super) elapsed: Duration,
    pub(super) sent: u64,
    /// FILE's size, when known (a regular file).
    pub(super) total: Option<u64>,
    /// The current rate, bytes/s (indicatif's estimate, which decays while
    /// nothing moves).
    pub(super) rate: f64,
    pub(super) phase: Phase,
}

/// One frame of the progress line, at most `cols` columns (ASCII only):
///
/// `1:02 [=====>    ] 1.50 MiB/4.00 GiB 37% 12.00 MiB/s avg 11.90 MiB/s ETA 5:12`
///
/// The bar (known size only) takes the width the fields leave; fields that
/// do not fit are left out, the least important first: for a known size
/// avg, ETA, rate, percentage; bytes go last, then the bar, then the clock.
pub(super) fn render(s: &Snapshot, cols: usize) -> String {
    let secs = s.elapsed.as_secs_f64();
    let avg = if secs > 0.0 {
        s.sent as f64 / secs
    } else {
        0.0
    };
    // (priority: 0 kept longest, text), in display order.
    let mut fields: Vec<(u8, String)> = Vec::new();
    match (s.phase, s.total) {
        (Phase::Running, Some(total)) => {
            fields.push((0, format!("{}/{}", BinaryBytes(s.sent), BinaryBytes(total))));
            fields.push((1, format!("{}%", percent(s.sent, total))));
            fields.push((2, per_sec(s.rate)));
            fields.push((4, format!("avg {}", per_sec(avg))));
            fields.push((3, format!("ETA {}", eta(s.sent, total, s.rate))));
        }
        (Phase::Running, None) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((1, per_sec(s.rate)));
            fields.push((2, format!("avg {}", per_sec(avg))));
        }
        (Phase::Done, _) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((2, format!("avg {}", per_sec(avg))));
            fields.push((1, "done".to_string()));
        }
        (Phase::Aborted, Some(total)) => {
            fields.push((0, format!("{}/{}", BinaryBytes(s.sent), BinaryBytes(total))));
            fields.push((2, format!("{}%", percent(s.sent, total))));
            fields.push((1, "aborted".to_string()));
        }
        (Phase::Aborted, None) => {
            fields.push((0, format!("{}", BinaryBytes(s.sent))));
            fields.push((1, "aborted".to_string()));
        }
    }
    let clock = clock(s.elapsed);
    let fraction = s.total.map(|total| match total {
        0 => 1.0,
        t => (s.sent as f64 / t as f64).clamp(0.0, 1.0),
    });
    layout(cols, &clock, fraction, &fields)
}

/// Which fields fit in `budget` columns (each costs its length and a
/// space), chosen by priority; returns " a b c" in display order.
pub(super) fn pick(fields: &[(u8, String)], budget: usize) -> (String, bool) {
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| fields[i].0);
    let mut keep = vec![false; fields.len()];
    let mut used = 0;
    for i in order {
        let cost = fields[i].1.len() + 1;
        if used + cost <= budget {
            used += cost;
            keep[i] = true;
        }
    }
    let first = fields.iter().zip(&keep).any(|((p, _), k)| *p == 0 && *k);
    let mut tail = String::new();
    for ((_, text), k) in fields.iter().zip(&keep) {
        if *k {
            tail.push(' ');
            tail.push_str(text);
        }
    }
    (tail, first)
}

pub(super) fn layout(
    cols: usize,
    clock: &str,
    fraction: Option<f64>,
    fields: &[(u8, String)],
) -> String {
    // "clock [bar] fields": the bar takes what the fields leave.
    if let Some(f) = fraction {
        let fixed = clock.len() + 3 + MIN_BAR;
        if cols >= fixed {
            let (tail, first) = pick(fields, cols - fixed);
            if first {
                let inner = cols - clock.len() - 3 - tail.len();
                return format!("{clock} [{}]{tail}", bar(f, inner));
            }
        }
    }
    // Too narrow for a bar: the clock and what fits.
    if clock.len() >= cols {
        return clock[..cols].to_string();
    }
    let (tail, _) = pick(fields, cols - clock.len());
    format!("{clock}{tail}")
}

/// `=====>    `, `inner` columns.
pub(super) fn bar(fraction: f64, inner: usize) -> String {
    let filled = ((fraction * inner as f64) as usize).min(inner);
    let mut s = "=".repeat(filled);
    if filled < inner {
        s.push(if filled > 0 { '>' } else { ' ' });
        s.push_str(&" ".repeat(inner - filled - 1));
    }
    s
}

/// 0-100; an empty file is 100% done.
pub(super) fn percent(sent: u64, total: u64) -> u64 {
    match total {
        0 => 100,
        t => (u128::from(sent) * 100 / u128::from(t)).min(100) as u64,
    }
}

/// `12.00 MiB/s`.
pub(super) fn per_sec(rate: f64) -> String {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate as u64
    } else {
        0
    };
    format!("{}/s", BinaryBytes(rate))
}

/// The time left at `rate`, or `--:--` while it cannot be told.
pub(super) fn eta(sent: u64, total: u64, rate: f64) -> String {
    if sent >= total {
        return clock(Duration::ZERO);
    }
    let secs = (total - sent) as f64 / rate;
    if rate.is_finite() && rate >= 1.0 && secs < 100.0 * 3600.0 {
        clock(Duration::from_secs_f64(secs))
    } else {
        "--:--".to_string()
    }
}

/// `M:SS`, or `H:MM:SS` from an hour on.
pub(super) fn clock(d: Duration) -> String {
    let t = d.as_secs();
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_fit_every_width() {
        let snaps = [
            Snapshot {
                elapsed: Duration::from_secs(3725),
                sent: 1_023_990_000,
                total: Some(1_099_511_627_775),
                rate: 1_073_741_823.0,
                phase: Phase::Running,
            },
            Snapshot {
                elapsed: Duration::from_millis(1500),
                sent: 1536,
                total: None,
                rate: 1000.0,
                phase: Phase::Running,
            },
            Snapshot {
                elapsed: Duration::ZERO,
                sent: 0,
                total: Some(0),
                rate: 0.0,
                phase: Phase::Done,
            },
            Snapshot {
                elapsed: Duration::from_secs(59),
                sent: 5 << 20,
                total: Some(50 << 20),
                rate: f64::NAN,
                phase: Phase::Aborted,
            },
        ];
        for snap in &snaps {
            for cols in 0..300 {
                let line = render(snap, cols);
                assert!(line.len() <= cols, "{cols}: {line:?}");
                assert!(line.is_ascii(), "{line:?}");
                if snap.total.is_some() && line.contains('[') {
                    // With a bar the line fills the width exactly.
                    assert_eq!(line.len(), cols, "{line:?}");
                }
            }
        }
        let wide = render(&snaps[0], 120);
        for needle in ["1:02:05 [", "976.55 MiB/1024.00 GiB", "0%", "avg ", "ETA "] {
            assert!(wide.contains(needle), "{needle:?} not in {wide:?}");
        }
        assert!(wide.contains("1024.00 MiB/s"), "{wide:?}");
        let medium = render(&snaps[0], 60);
        assert!(medium.starts_with("1:02:05 [") && medium.contains(" 976.55 MiB/1024.00 GiB "));
        // No room for a bar beside the bytes: the bar goes first.
        assert_eq!(render(&snaps[0], 40), "1:02:05 976.55 MiB/1024.00 GiB 0%");
        assert_eq!(
            render(&snaps[1], 38),
            "0:01 1.50 KiB 1000 B/s avg 1.00 KiB/s"
        );
        assert_eq!(render(&snaps[1], 20), "0:01 1.50 KiB");
        assert_eq!(
            render(&snaps[2], 40),
            "0:00 [==============] 0 B avg 0 B/s done"
        );
        assert_eq!(
            render(&snaps[3], 40),
            "0:59 [=>        ] 5.00 MiB/50.00 MiB 10%"
        );
    }

    #[test]
    fn clock_eta_and_bar() {
        assert_eq!(clock(Duration::from_millis(59_999)), "0:59");
        assert_eq!(clock(Duration::from_secs(3599)), "59:59");
        assert_eq!(clock(Duration::from_secs(3600)), "1:00:00");
        assert_eq!(eta(0, 100, 0.0), "--:--");
        assert_eq!(eta(0, 100, 10.0), "0:10");
        assert_eq!(eta(100, 100, 0.0), "0:00");
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(0.5, 4), "==> ");
        assert_eq!(bar(1.0, 4), "====");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 100);
    }
}
