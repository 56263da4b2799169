//! The saving part of the report and the targets table: what the saving
//! rounds measured, and whether each target was met in this run.

use super::*;

/// The saving rounds: per file system and size, server-save against the plain splice
/// receiver; the rounds in run order; greeting latency.
pub(crate) fn report_saving(w: &mut String, opts: &Opts, ctx: &Ctx, res: &Results) {
    let _ = writeln!(
        w,
        "\n### Saving: server --save-dir against a plain splice receiver\n"
    );
    for fr in &res.saving {
        let _ = writeln!(
            w,
            "- {}: `{}`, {}",
            fr.fs.key(),
            fr.base.display(),
            fr.mount
        );
    }
    let _ = writeln!(
        w,
        "- {} rounds per size and file system{}, the two receivers in alternating order{}, \
         a fresh process and an empty directory per transfer. server: `server --save-dir DIR \
         PORT`, default configuration (fsync on). plain: this program's `__plain DIR PORT` \
         (blocking accept, greeting, splice socket → 1 MiB pipe → `N.file`, fsync, count \
         line, close{}). Throughput: bytes / (connect → the receiver's close, which follows \
         its fsync). After each transfer the file is checked ({}), deleted and the deletion \
         flushed (`syncfs`), outside the timed part: {} files checked.",
        opts.save_rounds,
        if opts.save_warmup {
            " after an untimed warm-up transfer (plain)"
        } else {
            ""
        },
        if opts.save_pause.is_zero() {
            String::new()
        } else {
            format!(", {:.1} s pause before each", opts.save_pause.as_secs_f64())
        },
        if opts.plain_window > 0 {
            format!(
                "; an experiment, plain + windows: the same, pushing written pages out with \
                 sync_file_range in {} windows and waiting for the two before, as the server \
                 does",
                size_name(opts.plain_window)
            )
        } else {
            String::new()
        },
        if opts.smoke {
            "length and whole content".to_string()
        } else {
            format!(
                "length; content whole up to {}, above it {SAMPLES} windows of {} KiB",
                size_name(WHOLE_CHECK_MAX),
                SAMPLE_LEN >> 10
            )
        },
        ctx.saving_checked
    );
    let _ = writeln!(
        w,
        "\nCells: median (min–max) over the rounds. × plain: ratio of the medians (min–max of \
         the per-round ratios).\n\n\
         | file system | size | receiver | throughput MB/s | × plain | CPU s/GiB | sleeps/MiB \
         | peak RSS MiB | check + delete + syncfs, s |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            if fr.tput[si].iter().all(Vec::is_empty) {
                continue;
            }
            for (ki, &k) in fr.kinds.iter().enumerate() {
                let name = match k {
                    Kind::ServerSave => "**server --save-dir**",
                    k => k.name(),
                };
                let ratio = if ki != 1 {
                    ratio_cell(&fr.tput[si][ki], &fr.tput[si][1])
                } else {
                    String::new()
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {ratio} | {} | {} | {} | {} |",
                    fr.fs.key(),
                    size_name(size),
                    name,
                    stats_cell(&fr.tput[si][ki]),
                    stats_cell(&fr.cpu[si][ki]),
                    median(&fr.switches[si][ki]).map_or("–".to_string(), num),
                    stats_cell(&fr.rss[si][ki]),
                    stats_cell(&fr.cleanup[si][ki]),
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "\nEvery saving transfer in run order: MB/s (receiver CPU s/GiB); s = server, p = \
         plain, w = plain with windows; rounds separated by `|`; the untimed warm-up \
         transfer first.\n"
    );
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            if fr.order[si].is_empty() {
                continue;
            }
            let mut line = String::new();
            if let Some((mbps, cpu)) = fr.warmup[si] {
                let _ = write!(line, " (warm-up: p {} ({})) ‖", num(mbps), num(cpu));
            }
            let mut last_round = None;
            for &(round, ki, mbps, cpu) in &fr.order[si] {
                if last_round.is_some_and(|r| r != round) {
                    line.push_str(" |");
                }
                last_round = Some(round);
                let _ = write!(
                    line,
                    " {} {} ({})",
                    ["s", "p", "w"][ki],
                    num(mbps),
                    num(cpu)
                );
            }
            let _ = writeln!(w, "- {} {}:{line}", fr.fs.key(), size_name(size));
        }
    }
    let _ = writeln!(
        w,
        "\nGreeting latency against the saving server (`max_per_source = 0`: all clients here \
         share 127.0.0.1): a client connects every {} ms, times connect() → the full \
         greeting and closes (each such connection is a 0-byte upload: the server saves an \
         empty `N.file` for it, with fsync; every one was checked). \
         \"during\": while one client uploads (probing from its greeting until the server \
         closed it, after its fsync).\n\n\
         | file system | while | probes | p50 ms | p99 ms | max ms | upload MB/s | server \
         peak RSS MiB | loop waiting for a CPU: ms in all, µs per run |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        PROBE_EVERY.as_millis()
    );
    for fr in &res.saving {
        for l in [&fr.idle, &fr.during].into_iter().flatten() {
            let Some((p50, p99, max)) = latency_stats(&l.ms) else {
                continue;
            };
            let (what, mbps) = match l.upload {
                Some((size, mbps)) => (format!("a {} upload", size_name(size)), num(mbps)),
                None => ("idle".to_string(), "–".to_string()),
            };
            let wait = if l.runs > 0 {
                format!(
                    "{} ms, {} µs over {} runs",
                    num(l.runq_wait_ns as f64 / 1e6),
                    num(l.runq_wait_ns as f64 / 1e3 / l.runs as f64),
                    l.runs
                )
            } else {
                "–".to_string()
            };
            let _ = writeln!(
                w,
                "| {} | {what} | {} | {} | {} | {} | {mbps} | {} | {wait} |",
                fr.fs.key(),
                l.ms.len(),
                num(p50),
                num(p99),
                num(max),
                num(l.rss_kib as f64 / 1024.0)
            );
        }
    }
    let _ = writeln!(
        w,
        "\nThe serving loop (the server's main thread) sampled every {} ms while probing \
         (R: running or waiting for a CPU, S: sleeping, D: blocked in the kernel, e.g. on \
         I/O, with where):\n",
        STATE_EVERY.as_millis()
    );
    for fr in &res.saving {
        for l in [&fr.idle, &fr.during].into_iter().flatten() {
            let total: u64 = l.states.iter().map(|s| s.1).sum();
            if total == 0 {
                continue;
            }
            let states: Vec<String> = l
                .states
                .iter()
                .map(|(c, n)| format!("{c} {:.1} %", *n as f64 * 100.0 / total as f64))
                .collect();
            let d: Vec<String> = l
                .d_wchan
                .iter()
                .map(|(wchan, n)| format!("{n} × {}", if wchan.is_empty() { "?" } else { wchan }))
                .collect();
            let _ = writeln!(
                w,
                "- {} {}: {total} samples: {}{}",
                fr.fs.key(),
                match l.upload {
                    Some((size, _)) => format!("during a {} upload", size_name(size)),
                    None => "idle".to_string(),
                },
                states.join(", "),
                if d.is_empty() {
                    String::new()
                } else {
                    format!("; D in {}", d.join(", "))
                }
            );
        }
    }
}

/// The counting targets, the saving targets and those of the saving rounds (against
/// the plain receiver, greeting latency), judged on this run.
pub(crate) fn write_targets(w: &mut String, opts: &Opts, res: &Results) {
    let _ = writeln!(
        w,
        "\n### Targets (this run)\n\n| target | measured | met |\n| --- | --- | --- |"
    );
    // A run of the saving rounds only does not list the counting targets it skipped.
    let quiet = !opts.transfers && !opts.extras;
    let mut target = |name: &str, measured: Option<(String, bool)>| {
        if quiet && measured.is_none() {
            return;
        }
        let (m, ok) = match measured {
            Some((m, ok)) => (m, if ok { "yes" } else { "**no**" }),
            None => ("not measured in this run".to_string(), "–"),
        };
        let _ = writeln!(w, "| {name} | {m} | {ok} |");
    };
    let si_of = |size: u64| opts.sizes.iter().position(|&s| s == size);
    let server = res.kinds.iter().position(|&k| k == Kind::Server);
    let reference = res.kinds.iter().position(|&k| k == Kind::Reference);
    let at = |metric: &Vec<Vec<Series>>, size: u64, ki: Option<usize>| {
        median(&metric[si_of(size)?][ki?])
    };
    let ratio_at = |metric: &Vec<Vec<Series>>, size: u64| {
        let b = at(metric, size, reference)?;
        Some(at(metric, size, server)? / b).filter(|_| b > 0.0)
    };
    target(
        "1 GiB throughput ≥ 0.95× reference",
        ratio_at(&res.tput, 1 << 30).map(|r| (format!("{}×", num(r)), r >= 0.95)),
    );
    for size in [1u64 << 30, 4 << 30] {
        target(
            &format!("CPU per GiB ≤ 1.2× reference ({})", size_name(size)),
            ratio_at(&res.cpu, size).map(|r| (format!("{}×", num(r)), r <= 1.2)),
        );
    }
    target(
        "peak RSS ≤ 4 MiB during a 4 GiB transfer",
        at(&res.rss, 4 << 30, server).map(|m| (format!("{} MiB", num(m)), m <= 4.0)),
    );
    let largest = opts.sizes.iter().copied().max().unwrap_or(0);
    let growth = match (at(&res.rss, 1 << 20, server), at(&res.rss, largest, server)) {
        (Some(a), Some(b)) if largest > 1 << 20 => Some((a, b)),
        _ => None,
    };
    target(
        &format!("no RSS growth from 1 MiB to {}", size_name(largest)),
        growth.map(|(a, b)| {
            let d = (b - a) * 1024.0;
            (
                format!("{} → {} MiB ({d:+.0} KiB)", num(a), num(b)),
                d <= 256.0,
            )
        }),
    );
    let ms = res.multi.iter().position(|&k| k == Kind::Server);
    let mr = res.multi.iter().position(|&k| k == Kind::Reference);
    let rate_ratio = ms
        .zip(mr)
        .and_then(|(s, r)| Some(median(&res.rates[s])? / median(&res.rates[r])?));
    target(
        "sequential connection rate ≥ 0.9× reference",
        rate_ratio.map(|r| (format!("{}×", num(r)), r >= 0.9)),
    );
    let start = ms.and_then(|s| median(&res.starts[s]));
    target(
        "start to listening ≤ 5 ms",
        start.map(|m| (format!("{} ms", num(m)), m <= 5.0)),
    );
    let stop = ms.and_then(|s| median(&res.stops[s]));
    target(
        "SIGTERM to exit ≤ 5 ms when idle",
        stop.map(|m| (format!("{} ms", num(m)), m <= 5.0)),
    );
    let idle = res.idle.as_ref();
    target(
        &format!("{} idle connections: ≤ 32 MiB RSS", opts.idle_conns),
        idle.map(|r| {
            (
                format!("{} MiB", num(r.rss_kib as f64 / 1024.0)),
                r.rss_kib <= 32 * 1024,
            )
        }),
    );
    target(
        &format!("{} idle connections: all counted right", opts.idle_conns),
        idle.map(|r| (format!("{} of {}", r.conns, r.conns), true)),
    );
    target(
        "no CPU while idle",
        idle.map(|r| {
            let m = format!(
                "{:.1} ms CPU, {} wake-ups in {:.1} s",
                r.cpu_secs * 1e3,
                r.wakeups,
                r.idle_secs
            );
            (m, r.cpu_secs <= 0.001)
        }),
    );
    // Saving against counting only, both from this run.
    let save = res.kinds.iter().position(|&k| k == Kind::ServerSave);
    let save_ratio = si_of(1 << 30)
        .zip(save)
        .zip(server)
        .and_then(|((si, sv), s)| {
            let r = median(&res.tput[si][sv])? / median(&res.tput[si][s])?;
            Some((ratio_cell(&res.tput[si][sv], &res.tput[si][s]), r))
        });
    target(
        "saving 1 GiB to tmpfs ≥ 0.8× counting-only server (same run)",
        save_ratio.map(|(cell, r)| (cell, r >= 0.8)),
    );
    // The largest peak RSS of any saving transfer, at any size.
    let save_rss = save.and_then(|sv| {
        let all: Vec<f64> = res
            .rss
            .iter()
            .flat_map(|per_kind| per_kind[sv].iter().map(|p| p.1))
            .collect();
        let max = all
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?;
        Some((max, all.len()))
    });
    target(
        "peak RSS ≤ 4 MiB while saving",
        save_rss.map(|(max, n)| {
            (
                format!("{} MiB (largest of {n} transfers)", num(max)),
                max <= 4.0,
            )
        }),
    );
    // The saving rounds: the server against the plain splice receiver, same run.
    for fr in &res.saving {
        for (si, &size) in opts.save_sizes.iter().enumerate() {
            let (server, plain) = (&fr.tput[si][0], &fr.tput[si][1]);
            let measured = median(server)
                .zip(median(plain))
                .filter(|p| p.1 > 0.0)
                .map(|(a, b)| (ratio_cell(server, plain), a / b >= 0.9));
            target(
                &format!(
                    "saving {} to {} ≥ 0.9× plain splice receiver (same run)",
                    size_name(size),
                    fr.fs.key()
                ),
                measured,
            );
        }
    }
    for fr in &res.saving {
        // Every saving server of this file system: the rounds and the probed uploads.
        let all: Vec<f64> = fr
            .rss
            .iter()
            .flat_map(|per_kind| per_kind[0].iter().map(|p| p.1))
            .chain(
                [&fr.idle, &fr.during]
                    .into_iter()
                    .flatten()
                    .map(|l| l.rss_kib as f64 / 1024.0),
            )
            .collect();
        let max = all.iter().copied().reduce(f64::max);
        target(
            &format!("peak RSS ≤ 4 MiB while saving to {}", fr.fs.key()),
            max.map(|m| {
                (
                    format!("{} MiB (largest of {} servers)", num(m), all.len()),
                    m <= 4.0,
                )
            }),
        );
    }
    for fr in &res.saving {
        let during = fr.during.as_ref().and_then(|l| {
            let (_, p99, max) = latency_stats(&l.ms)?;
            Some((l, p99, max))
        });
        target(
            &format!("greeting p99 ≤ 10 ms during a save to {}", fr.fs.key()),
            during.map(|(l, p99, max)| {
                (
                    format!(
                        "{} ms ({} probes, max {} ms)",
                        num(p99),
                        l.ms.len(),
                        num(max)
                    ),
                    p99 <= 10.0,
                )
            }),
        );
    }
}
