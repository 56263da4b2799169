//! The run's figures as JSON, and a chart of them as SVG: a table of
//! medians hides the spread and the shape across sizes that one picture
//! shows at a glance. The chart is drawn from the JSON alone, so a saved
//! run can be drawn again (`--chart FILE.json`) without measuring anything.

use super::*;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Median and range of one figure over the rounds.
#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    fn of(v: &Series) -> Option<Spread> {
        let s = stats(&v.iter().map(|p| p.1).collect::<Vec<_>>())?;
        Some(Spread {
            median: s.med,
            min: s.min,
            max: s.max,
        })
    }
}

/// One receiver at one transfer size (counting mode).
#[derive(Serialize, Deserialize)]
pub(crate) struct Transfer {
    pub(crate) size: u64,
    pub(crate) receiver: String,
    pub(crate) mb_per_s: Spread,
    pub(crate) cpu_s_per_gib: Spread,
}

/// One receiver saving one size on one file system.
#[derive(Serialize, Deserialize)]
pub(crate) struct Save {
    pub(crate) fs: String,
    pub(crate) size: u64,
    pub(crate) receiver: String,
    pub(crate) mb_per_s: Spread,
}

/// Greeting latency against the saving server, idle or during an upload.
#[derive(Serialize, Deserialize)]
pub(crate) struct Greeting {
    pub(crate) fs: String,
    pub(crate) during_upload: bool,
    pub(crate) probes: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// Everything the chart shows, as the JSON file holds it.
#[derive(Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) date: String,
    pub(crate) smoke: bool,
    pub(crate) transfers: Vec<Transfer>,
    pub(crate) saving: Vec<Save>,
    pub(crate) greetings: Vec<Greeting>,
}

impl Summary {
    pub(crate) fn of(opts: &Opts, res: &Results) -> Summary {
        let mut transfers = Vec::new();
        for (i, &size) in opts.sizes.iter().enumerate() {
            for (j, kind) in res.kinds.iter().enumerate() {
                if let (Some(mb_per_s), Some(cpu_s_per_gib)) =
                    (Spread::of(&res.tput[i][j]), Spread::of(&res.cpu[i][j]))
                {
                    transfers.push(Transfer {
                        size,
                        receiver: kind.key().to_string(),
                        mb_per_s,
                        cpu_s_per_gib,
                    });
                }
            }
        }
        let mut saving = Vec::new();
        let mut greetings = Vec::new();
        for fs in &res.saving {
            for (i, &size) in opts.save_sizes.iter().enumerate() {
                for (j, kind) in fs.kinds.iter().enumerate() {
                    if let Some(mb_per_s) = fs.tput.get(i).and_then(|t| Spread::of(&t[j])) {
                        saving.push(Save {
                            fs: fs.fs.key().to_string(),
                            size,
                            receiver: kind.key().to_string(),
                            mb_per_s,
                        });
                    }
                }
            }
            for (lat, during_upload) in [(&fs.idle, false), (&fs.during, true)] {
                if let Some((lat, (p50_ms, p99_ms, max_ms))) =
                    lat.as_ref().and_then(|l| Some((l, latency_stats(&l.ms)?)))
                {
                    greetings.push(Greeting {
                        fs: fs.fs.key().to_string(),
                        during_upload,
                        probes: lat.ms.len(),
                        p50_ms,
                        p99_ms,
                        max_ms,
                    });
                }
            }
        }
        Summary {
            date: utc_now(),
            smoke: opts.smoke,
            transfers,
            saving,
            greetings,
        }
    }
}

/// Write `DIR/throughput.json` and `DIR/throughput.svg`.
pub(crate) fn write(dir: &Path, summary: &Summary) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = dir.join("throughput.json");
    let text = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    fs::write(&json, text + "\n").map_err(|e| format!("{}: {e}", json.display()))?;
    draw(summary, &dir.join("throughput.svg"))
}

/// Draw the chart of a JSON file an earlier run wrote, beside it.
pub(crate) fn redraw(json: &Path) -> Result<PathBuf, String> {
    let text = fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let summary: Summary =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let svg = json.with_extension("svg");
    draw(&summary, &svg)?;
    Ok(svg)
}

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// The legend name of a receiver key.
fn label(key: &str) -> String {
    ALL_KINDS
        .iter()
        .chain(&[Kind::Plain, Kind::PlainWindowed])
        .find(|k| k.key() == key)
        .map_or(key, |k| k.name())
        .replace("**", "")
        .replace("\\|", "|")
}

fn draw(s: &Summary, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1280, 900)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "accio-server benchmark, {}{}",
        s.date,
        if s.smoke {
            " (smoke run: numbers mean nothing)"
        } else {
            ""
        }
    );
    let root = root.titled(&title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((2, 2));
    let tput = |t: &Transfer| t.mb_per_s;
    let cpu = |t: &Transfer| t.cpu_s_per_gib;
    lines(&panels[0], s, "Counting: throughput (MB/s, log)", &tput).map_err(err)?;
    lines(
        &panels[1],
        s,
        "Counting: receiver CPU (s per GiB, log)",
        &cpu,
    )
    .map_err(err)?;
    saving(&panels[2], s).map_err(err)?;
    greetings(&panels[3], s).map_err(err)?;
    root.present().map_err(err)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn<'a> = Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

/// The positive range of `values`, widened for a log axis.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.1..10.0;
    }
    lo / 2.0..hi * 2.0
}

/// One line per receiver across the transfer sizes, with min-max whiskers.
fn lines<'a>(
    area: &Area<'a>,
    s: &Summary,
    caption: &str,
    figure: &dyn Fn(&Transfer) -> Spread,
) -> Drawn<'a> {
    let mut sizes: Vec<u64> = s.transfers.iter().map(|t| t.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut receivers: Vec<&str> = Vec::new();
    for t in &s.transfers {
        if !receivers.contains(&t.receiver.as_str()) {
            receivers.push(&t.receiver);
        }
    }
    let y = log_range(
        s.transfers
            .iter()
            .flat_map(|t| [figure(t).min, figure(t).max]),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..sizes.len() as f64 - 0.5, y.log_scale())?;
    chart
        .configure_mesh()
        .x_labels(sizes.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            sizes
                .get(i as usize)
                .map_or(String::new(), |&b| size_name(b))
        })
        .y_label_formatter(&|v| num(*v))
        .light_line_style(BLACK.mix(0.04))
        .disable_x_mesh()
        .draw()?;
    for (n, r) in receivers.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let points: Vec<(f64, Spread)> = s
            .transfers
            .iter()
            .filter(|t| t.receiver == *r)
            .filter_map(|t| Some((sizes.iter().position(|&z| z == t.size)? as f64, figure(t))))
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, f)| (*x, f.median)),
                color.stroke_width(2),
            ))?
            .label(label(r))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|(x, f)| {
            PathElement::new(vec![(*x, f.min), (*x, f.max)], color.stroke_width(1))
        }))?;
        chart.draw_series(
            points
                .iter()
                .map(|(x, f)| Circle::new((*x, f.median), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
}

/// Bars with min-max whiskers: `groups` along x, one bar per series in
/// each; a missing figure leaves a gap.
fn bars<'a>(
    area: &Area<'a>,
    caption: &str,
    groups: &[String],
    series: &[(String, Vec<Option<Spread>>)],
) -> Drawn<'a> {
    let y = log_range(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().flat_map(|f| [f.min, f.max])),
    );
    let bottom = y.start;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..groups.len() as f64 - 0.5, y.log_scale())?;
    chart
        .configure_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            groups.get(i as usize).cloned().unwrap_or_default()
        })
        .y_label_formatter(&|v| num(*v))
        .light_line_style(BLACK.mix(0.04))
        .disable_x_mesh()
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (n, (name, values)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let at = |g: usize| g as f64 - 0.4 + width * n as f64;
        let present: Vec<(usize, Spread)> = values
            .iter()
            .enumerate()
            .filter_map(|(g, f)| Some((g, (*f)?)))
            .collect();
        chart
            .draw_series(present.iter().map(|&(g, f)| {
                Rectangle::new(
                    [(at(g) + 0.02, bottom), (at(g) + width - 0.02, f.median)],
                    color.mix(0.8).filled(),
                )
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        chart.draw_series(present.iter().map(|&(g, f)| {
            let mid = at(g) + width / 2.0;
            PathElement::new(vec![(mid, f.min), (mid, f.max)], BLACK.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
}

/// Saving throughput: per file system and size, the server against the
/// plain receiver(s).
fn saving<'a>(area: &Area<'a>, s: &Summary) -> Drawn<'a> {
    let mut groups: Vec<(String, u64)> = Vec::new();
    let mut receivers: Vec<String> = Vec::new();
    for v in &s.saving {
        if !groups.contains(&(v.fs.clone(), v.size)) {
            groups.push((v.fs.clone(), v.size));
        }
        if !receivers.contains(&v.receiver) {
            receivers.push(v.receiver.clone());
        }
    }
    let series: Vec<(String, Vec<Option<Spread>>)> = receivers
        .iter()
        .map(|r| {
            let values = groups
                .iter()
                .map(|(fs, size)| {
                    s.saving
                        .iter()
                        .find(|v| &v.receiver == r && &v.fs == fs && v.size == *size)
                        .map(|v| v.mb_per_s)
                })
                .collect();
            // Both file systems here, whatever the counting table's label says.
            (label(r).replace(" (tmpfs)", ""), values)
        })
        .collect();
    let names: Vec<String> = groups
        .iter()
        .map(|(fs, size)| format!("{fs} {}", size_name(*size)))
        .collect();
    bars(
        area,
        "Saving with fsync: throughput (MB/s, log)",
        &names,
        &series,
    )
}

/// Greeting latency against the saving server, idle and during an upload.
fn greetings<'a>(area: &Area<'a>, s: &Summary) -> Drawn<'a> {
    let names: Vec<String> = s
        .greetings
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g.fs,
                if g.during_upload { "saving" } else { "idle" }
            )
        })
        .collect();
    let point = |v: f64| {
        Some(Spread {
            median: v,
            min: v,
            max: v,
        })
    };
    let series = vec![
        (
            "p50".to_string(),
            s.greetings.iter().map(|g| point(g.p50_ms)).collect(),
        ),
        (
            "p99".to_string(),
            s.greetings.iter().map(|g| point(g.p99_ms)).collect(),
        ),
        (
            "max".to_string(),
            s.greetings.iter().map(|g| point(g.max_ms)).collect(),
        ),
    ];
    bars(
        area,
        "Greeting latency of other clients (ms, log)",
        &names,
        &series,
    )
}
