//! The Markdown report: the tables BENCHMARKS.md quotes, from [`Results`].

use super::*;

/// The Markdown report.
pub(crate) fn report(opts: &Opts, ctx: &Ctx, res: &Results, started: Instant) -> String {
    let mut w = String::new();
    let mode = if opts.smoke { "smoke run" } else { "full run" };
    let _ = writeln!(w, "## accio-server throughput benchmark ({mode})\n");
    for fact in machine_facts() {
        let _ = writeln!(w, "- {fact}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let others = (busy_cpu_secs() - res.machine_start.0) - (own_cpu_secs() - res.machine_start.1);
    let capacity = elapsed * thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let _ = writeln!(
        w,
        "- other processes used {:.1} CPU-s during the run's {elapsed:.0} s ({:.0} % of the \
         machine{}); load average at start {}, at end {} (this run itself keeps about 2 busy)",
        others.max(0.0),
        (others.max(0.0) / capacity * 100.0),
        if others > 0.05 * capacity {
            ": the machine was shared, numbers are scattered"
        } else {
            ""
        },
        res.load_start,
        loadavg()
    );
    let _ = writeln!(
        w,
        "- sender: this process, page-aligned 1 MiB buffer, congestion control on its \
         sockets: {}; {} interleaved rounds per size, a fresh receiver process per transfer{}",
        res.congestion,
        opts.rounds,
        if opts.pin {
            "; sender pinned to CPU 0, receiver to CPU 1"
        } else {
            "; not pinned"
        }
    );
    let logs = ctx.log_dir.as_ref().unwrap_or(&ctx.tmp);
    let _ = writeln!(
        w,
        "- server: `{}`; RLIMIT_NOFILE {}; its stderr (the per-connection log) goes to files \
         in `{}`, {}",
        ctx.server_origin.display(),
        res.nofile,
        logs.display(),
        mount_of(logs)
    );
    if opts.transfers {
        report_transfers(&mut w, opts, ctx, res);
    }
    if opts.extras {
        report_extras(&mut w, opts, res);
    }
    if opts.saving {
        report_saving(&mut w, opts, ctx, res);
    }
    write_targets(&mut w, opts, res);
    for n in &ctx.notes {
        let _ = writeln!(w, "\nNote: {n}");
    }
    if opts.smoke {
        let _ = writeln!(
            w,
            "\nSmoke run: small sizes and few rounds; its numbers and targets mean nothing."
        );
    }
    let _ = writeln!(w, "\nRun time {:.1} s.", started.elapsed().as_secs_f64());
    if !ctx.failures.is_empty() {
        let _ = writeln!(w, "\n### FAILURES\n");
        for f in &ctx.failures {
            let _ = writeln!(w, "- {f}");
        }
    }
    w
}

/// The transfer table.
pub(crate) fn report_transfers(w: &mut String, opts: &Opts, ctx: &Ctx, res: &Results) {
    let _ = writeln!(
        w,
        "\nCells: median (min–max) over the rounds. × ref: ratio of the medians to the \
         reference's (min–max of the per-round ratios).\n"
    );
    let _ = writeln!(
        w,
        "| size | receiver | throughput MB/s | × ref | CPU s/GiB | × ref | peak RSS MiB | × ref \
         | sender CPU s/GiB | receiver sleeps/MiB |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let ri = res.kinds.iter().position(|&k| k == Kind::Reference);
    for (si, &size) in opts.sizes.iter().enumerate() {
        for (ki, &k) in res.kinds.iter().enumerate() {
            let _ = write!(w, "| {} | {} ", size_name(size), k.name());
            for metric in [&res.tput, &res.cpu, &res.rss] {
                let v = &metric[si][ki];
                let ratio = match ri {
                    Some(ri) if ri != ki => ratio_cell(v, &metric[si][ri]),
                    _ => String::new(),
                };
                let _ = write!(w, "| {} | {} ", stats_cell(v), ratio);
            }
            let _ = writeln!(
                w,
                "| {} | {} |",
                stats_cell(&res.sender[si][ki]),
                median(&res.switches[si][ki]).map_or("–".to_string(), num)
            );
        }
    }
    let _ = writeln!(
        w,
        "\nEvery transfer's count line was checked: {} correct.",
        res.transfers_checked
    );
    if let Some(base) = &ctx.save_base {
        let _ = writeln!(
            w,
            "\nserver --save-dir: the same binary with `--save-dir` on a fresh directory under \
             `{}` (tmpfs) per transfer, default configuration (fsync on). After each transfer \
             the directory had to hold exactly `1.file` with the bytes sent ({}); {} files \
             checked, then deleted.",
            base.0.display(),
            if opts.smoke {
                "compared whole".to_string()
            } else {
                format!(
                    "compared whole up to {}, above it {SAMPLES} windows of {} KiB",
                    size_name(WHOLE_CHECK_MAX),
                    SAMPLE_LEN >> 10
                )
            },
            ctx.saves_checked
        );
    }
}

/// Connection rate, start/stop, idle connections.
pub(crate) fn report_extras(w: &mut String, opts: &Opts, res: &Results) {
    {
        let _ = writeln!(
            w,
            "\n| test | receiver | median (min–max) | × ref |\n| --- | --- | ---: | ---: |"
        );
        let mri = res.multi.iter().position(|&k| k == Kind::Reference);
        let tests = [
            (
                "sequential connections/s (connect, greeting, close)",
                &res.rates,
            ),
            ("start → listening, ms", &res.starts),
            ("SIGTERM → exit when idle, ms", &res.stops),
        ];
        for (name, data) in tests {
            for (ki, &k) in res.multi.iter().enumerate() {
                let ratio = match mri {
                    Some(ri) if ri != ki => ratio_cell(&data[ki], &data[ri]),
                    _ => String::new(),
                };
                let _ = writeln!(
                    w,
                    "| {name} | {} | {} | {ratio} |",
                    k.name(),
                    stats_cell(&data[ki])
                );
            }
        }
        let _ = writeln!(
            w,
            "\nConnection rate: {} connections per round, {} rounds; start/stop: {} rounds.",
            opts.conns, opts.conn_rounds, opts.start_rounds
        );
        if let Some(r) = &res.idle {
            let _ = writeln!(
                w,
                "\n{} concurrent idle connections to the server: RSS {} MiB (the idle server \
                 before them: {} MiB); CPU while idle for {:.1} s: {:.1} ms, {} wake-ups; all {} \
                 counts right after each sent a few bytes and closed.",
                r.conns,
                num(r.rss_kib as f64 / 1024.0),
                num(r.rss_base_kib as f64 / 1024.0),
                r.idle_secs,
                r.cpu_secs * 1e3,
                r.wakeups,
                r.conns
            );
        }
    }
}
