//! The results as markdown: the tables, and BENCHMARKS.md around them with
//! the machine, the method and what the numbers mean for each target.

use std::fmt::Write as _;
use std::time::Duration;

use crate::figures::{med_spread, median};
use crate::{EchoLoad, EchoSample, Options, Results, Targets};

const TOKIO: usize = 1;
const SB: usize = 0;

fn med(v: &[EchoSample], f: impl Fn(&EchoSample) -> f64) -> f64 {
    median(v.iter().map(f).collect())
}

/// Context switches per message.
fn cs(v: f64) -> String {
    format!("{v:.3}")
}

fn group(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn us(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} s", v / 1e6)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else if v >= 10.0 {
        format!("{v:.1} µs")
    } else {
        format!("{v:.2} µs")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// One table of echo medians (spread over the rounds in parentheses).
fn echo_table(s: &mut String, rows: &[&(EchoLoad, [Vec<EchoSample>; 2])]) {
    s.push_str(
        "| load | switchboard msg/s | tokio msg/s | ratio | switchboard p99 | tokio p99 | \
         switchboard CPU/msg | tokio CPU/msg | ratio | switchboard ctx switches/msg | \
         tokio ctx switches/msg | ratio | load-gen CPU/msg |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (load, runs) in rows {
        let (sb, tk) = (&runs[SB], &runs[TOKIO]);
        if sb.is_empty() && tk.is_empty() {
            let _ = writeln!(s, "| {} | (failed) | | | | | | | | | | | |", load.name);
            continue;
        }
        let msgs = (med(sb, |x| x.msgs), med(tk, |x| x.msgs));
        let cpu = (med(sb, |x| x.server_cpu_us), med(tk, |x| x.server_cpu_us));
        let ctx = (med(sb, |x| x.ctx_per_msg), med(tk, |x| x.ctx_per_msg));
        let lg = med(sb, |x| x.load_cpu_us);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            load.name,
            med_spread(sb, |x| x.msgs, group),
            med_spread(tk, |x| x.msgs, group),
            ratio(msgs.0, msgs.1),
            med_spread(sb, |x| x.p99_us, us),
            med_spread(tk, |x| x.p99_us, us),
            med_spread(sb, |x| x.server_cpu_us, us),
            med_spread(tk, |x| x.server_cpu_us, us),
            ratio(cpu.0, cpu.1),
            med_spread(sb, |x| x.ctx_per_msg, cs),
            med_spread(tk, |x| x.ctx_per_msg, cs),
            ratio(ctx.0, ctx.1),
            us(lg)
        );
    }
}

/// The tables of medians.
pub(crate) fn tables(r: &Results) -> String {
    let mut s = String::new();
    s.push_str("Defaults, load generator sharing every core:\n\n");
    echo_table(&mut s, &r.echo.iter().filter(|(l, _)| !l.pinned).collect::<Vec<_>>());
    s.push_str("\nPinned: each server on CPU 0 with one worker, the load generator on CPU 1:\n\n");
    echo_table(&mut s, &r.echo.iter().filter(|(l, _)| l.pinned).collect::<Vec<_>>());
    s.push('\n');
    s.push_str("| load | switchboard p50 | tokio p50 | switchboard p99.9 | tokio p99.9 |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for (load, runs) in &r.echo {
        let (sb, tk) = (&runs[SB], &runs[TOKIO]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            load.name,
            us(med(sb, |x| x.p50_us)),
            us(med(tk, |x| x.p50_us)),
            us(med(sb, |x| x.p999_us)),
            us(med(tk, |x| x.p999_us))
        );
    }
    s.push('\n');
    s.push_str("| load | switchboard | baseline | ratio |\n|---|---:|---:|---:|\n");
    let (isb, itk) = (&r.idle[SB], &r.idle[TOKIO]);
    if !isb.is_empty() || !itk.is_empty() {
        let rss = |v: &[crate::IdleSample]| median(v.iter().map(|x| x.rss).collect());
        let before = |v: &[crate::IdleSample]| median(v.iter().map(|x| x.rss_before).collect());
        let conns = |v: &[crate::IdleSample]| median(v.iter().map(|x| x.conns as f64).collect());
        let _ = writeln!(
            s,
            "| {} idle connections: server RSS (growth) | {} (+{}, {} conns) | tokio {} (+{}, {} conns) | {} |",
            group(r.idle_conns as f64),
            mb(rss(isb)),
            mb(rss(isb) - before(isb)),
            group(conns(isb)),
            mb(rss(itk)),
            mb(rss(itk) - before(itk)),
            group(conns(itk)),
            ratio(rss(isb), rss(itk))
        );
    }
    if !r.chat.is_empty() || !r.chat_tokio.is_empty() {
        let cell = |v: &[crate::ChatSample]| {
            if v.is_empty() {
                return "–".to_string();
            }
            let m = |f: fn(&crate::ChatSample) -> f64| median(v.iter().map(f).collect());
            format!(
                "{} ({}; {}, {}; {}; {}/{})",
                group(m(|c| c.delivered)),
                group(m(|c| c.sent)),
                us(m(|c| c.p50_us)),
                us(m(|c| c.p99_us)),
                us(m(|c| c.server_cpu_us)),
                group(m(|c| c.complete as f64)),
                group(m(|c| c.members as f64)),
            )
        };
        let delivered = |v: &[crate::ChatSample]| median(v.iter().map(|c| c.delivered).collect());
        let _ = writeln!(
            s,
            "| chat, {} members: deliveries/s (sent/s; p50, p99; server CPU per delivery; members that got every message) | {} | tokio-chat {} | {} |",
            group(r.chat_members as f64),
            cell(&r.chat),
            cell(&r.chat_tokio),
            ratio(delivered(&r.chat), delivered(&r.chat_tokio)),
        );
    }
    if !r.chat_cluster.is_empty() {
        let m = |f: fn(&crate::ChatSample) -> f64| median(r.chat_cluster.iter().map(f).collect());
        let single = median(r.chat.iter().map(|c| c.p99_us).collect());
        // Signed: on a busy machine the two-server run can come out ahead.
        let hop = match m(|c| c.p99_us) - single {
            _ if r.chat.is_empty() => "–".to_string(),
            d if d < 0.0 => format!("-{}", us(-d)),
            d => format!("+{}", us(d)),
        };
        let _ = writeln!(
            s,
            "| chat, {} members, half on each of 2 servers sharing Redis: deliveries/s (p50, p99; extra p99 of the hop over one server; CPU of both servers per delivery; members that got every message) | {} ({}, {}; {}; {}; {}/{}) | no tokio chat | – |",
            group(r.chat_members as f64),
            group(m(|c| c.delivered)),
            us(m(|c| c.p50_us)),
            us(m(|c| c.p99_us)),
            hop,
            us(m(|c| c.server_cpu_us)),
            group(m(|c| c.complete as f64)),
            group(m(|c| c.members as f64)),
        );
    }
    if !r.file.is_empty() {
        let sbm = median(r.file.iter().map(|x| x.switchboard).collect());
        let base = median(r.file.iter().map(|x| x.baseline).collect());
        let base_load = median(r.file.iter().map(|x| x.baseline_load).collect());
        let _ = writeln!(
            s,
            "| file get, {} MiB, 1 connection: MB/s | {:.0} | sendfile {:.0} (minimal client) | {} |",
            r.file_size >> 20,
            sbm / 1e6,
            base / 1e6,
            ratio(sbm, base)
        );
        let _ = writeln!(
            s,
            "| file get, same client (switchboard-load) for both: MB/s | {:.0} | sendfile {:.0} | {} |",
            sbm / 1e6,
            base_load / 1e6,
            ratio(sbm, base_load)
        );
    }
    s.push_str(&crate::udpbench::table(&r.udp));
    s
}

/// The whole BENCHMARKS.md.
pub(crate) fn render(opts: &Options, r: &Results, took: Duration) -> String {
    let (cores, model, kernel) = crate::procs::machine();
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str("Generated by the benchmark runner (it builds the release binaries it runs); regenerate with:\n\n```sh\n");
    let args = if opts.args.is_empty() { String::new() } else { format!(" -- {}", opts.args.join(" ")) };
    let _ = writeln!(s, "cargo run --release -p switchboard-benches --bin bench{args}\n```\n");
    let _ = writeln!(
        s,
        "Machine: {cores} cores (`nproc`), {model}, Linux {kernel}; load average {} when the run \
         started. Run on {} (UTC), {} round{} ({}; took {:.0} s).\n",
        r.loadavg,
        today(),
        opts.rounds,
        if opts.rounds == 1 { "" } else { "s" },
        if opts.quick { "`--quick`: 1 s per load, 64 MiB file" } else { "3 s per load, 1 GiB file" },
        took.as_secs_f64()
    );
    s.push_str("## Method\n\n");
    let _ = writeln!(
        s,
        "- Servers, defaults: `switchboard-server --handler echo --listen 127.0.0.1:0` (no `--workers`, \
         no `--max-connections`: the server starts one worker per available core, activating them as \
         load grows, and derives its connection limit from the descriptor limit) against `tokio-echo` \
         (in `benches/`: tokio's default multi-thread runtime, one worker per available core — {cores} \
         here —, a task per connection, TCP_NODELAY, 4 KiB buffer). A fresh server process for every \
         run; the two servers alternate within each round and swap order between rounds. Every number \
         is the median over the rounds, with the lowest and highest round in parentheses when there \
         are several."
    );
    s.push_str(
        "- Servers, pinned (rows marked `pinned`): `taskset -c 0 switchboard-server --handler echo \
         --workers 1` against `taskset -c 0 tokio-echo --workers 1`, the load generator under \
         `taskset -c 1`: one core each, the engines compared per core.\n",
    );
    s.push_str(
        "- Servers, Unix rows: the same defaults over a Unix domain socket, `switchboard-server --handler \
         echo --listen unix:PATH` against `tokio-echo --listen unix:PATH` (a tokio `UnixListener`, the \
         same task per connection), loaded by `switchboard-load echo --target unix:PATH`.\n",
    );
    s.push_str(
        "- Load: `switchboard-load` (one event-loop thread, closed loop: each connection keeps `depth` \
         messages in flight; every echoed byte is checked). Connections open at 5,000/s; the measured \
         window starts once all are connected. Outside the pinned rows the load generator and the \
         server share the same cores, as in DESIGN.md's measurements. The targets apply at 64, 1,000 \
         and 10,000 connections (pinned: 64 and 1,000); the other rows are for reference.\n",
    );
    s.push_str(
        "- Server CPU per message: utime + stime of the server from /proc/PID/stat (10 ms ticks) before \
         and after the run, divided by the messages echoed; it includes accepting the connections. \
         Load-gen CPU/msg is the load generator's own CPU (clock of the process) over the window, per \
         message.\n",
    );
    s.push_str(
        "- Context switches per message: `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` \
         summed over the server's threads (/proc/PID/task/*/status) before and after the run, divided \
         by the messages echoed; like the CPU figure it includes accepting the connections.\n",
    );
    let _ = writeln!(
        s,
        "- Idle: {} connections opened by `switchboard-load idle` to each echo server with its \
         defaults; the server's VmRSS from /proc/PID/status once its descriptor count shows every \
         connection established (growth: against the RSS before connecting; per connection: the \
         growth divided by the connections held).",
        group(r.idle_conns as f64)
    );
    let _ = writeln!(
        s,
        "- Chat: {} members in one room of `--handler chat --chat-rate 0 --chat-room-rate 0` (the defaults \
         but flood control, which tokio-chat does not have: the room's default 512 KiB/s alone would cap the \
         relay near 6,800 lines of this size a second, 6.8 million deliveries/s), each keeping one message \
         on its way to all others (closed loop); every member checks it receives every other member's messages. \
         The latency is that of a burst: in each turn of the closed loop all members send at once, so \
         a message can wait behind up to a million deliveries. Baseline: `tokio-chat` (in `benches/`: \
         the shape of tokio's chat example, a task per member, a bounded channel per member and a \
         shared map of members; the same protocol and limits), under the same load, the two servers \
         alternating.",
        group(r.chat_members as f64)
    );
    let _ = writeln!(
        s,
        "- File get: a {} MiB file of random bytes, downloaded {} times over one connection. Baseline: \
         `sendfile-server` (in `benches/`: blocking, a thread per connection, `sendfile()` of the whole \
         file) read by a minimal blocking client with 256 KiB reads: the loopback bandwidth. \
         Switchboard: `--handler file` (defaults) read by `switchboard-load file --no-md5` (bytes counted, md5 \
         not computed, so the load generator's md5 speed does not cap the number), after one warm-up \
         download (the server computes a file's md5 on its first request and caches it); the warm-up \
         of the first round checks the md5. The sendfile baseline is also read by `switchboard-load`, \
         to tell the server's share from the client's.\n",
        r.file_size >> 20,
        opts.file_gets()
    );
    s.push_str("## Results (medians)\n\n");
    s.push_str(&tables(r));
    if !r.plots.is_empty() {
        s.push_str(
            "\n## Latency percentiles\n\nEach echo load's latency by percentile (the x axis stretches the tail: \
             1/(1-p) on a log scale), switchboard beside tokio, from each server's last round.\n\n",
        );
        for (name, path) in &r.plots {
            let _ = writeln!(s, "![{name}: latency by percentile]({path})\n");
        }
    }
    s.push_str("\n## What it means\n\n");
    s.push_str(&meaning(r));
    s.push('\n');
    s.push_str(&r.profile);
    s.push_str(&r.tls);
    s.push_str(&r.blocking);
    s.push_str(&r.proxy);
    if !r.failures.is_empty() {
        s.push_str("\n## Runs that failed\n\n");
        for f in &r.failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

/// One line per target, from the numbers.
fn meaning(r: &Results) -> String {
    let mut s = String::new();
    let mut missed = 0;
    let mut line = |s: &mut String, ok: bool, text: String| {
        if !ok {
            missed += 1;
        }
        let _ = writeln!(s, "- {} {text}", verdict(ok));
    };
    s.push_str(
        "Targets (issue 9): with both servers' defaults and the load generator sharing the cores, echo \
         msg/s ≥ 1.2× tokio at 64, 1,000 and 10,000 connections, p99 ≤ tokio's, server CPU per \
         message ≤ 0.8× tokio's, server context switches per message ≤ tokio's; pinned (one core and \
         one worker each, load generator on another core), msg/s ≥ 1.2× tokio at 64 and 1,000 \
         connections; Unix echo (issue 23), defaults, msg/s ≥ 1.2× tokio's `UnixListener` echo at 64 \
         and 1,000 connections; 10,000 idle connections at ≤ 512 bytes of server RSS each; file get ≥ 0.9× the \
         sendfile baseline.\n\n",
    );
    for (load, runs) in &r.echo {
        let (sb, tk) = (&runs[SB], &runs[TOKIO]);
        if sb.is_empty() || tk.is_empty() {
            if load.targets == Targets::Reference {
                let _ = writeln!(s, "- {}: no comparison (a run failed, see below).", load.name);
            } else {
                line(
                    &mut s,
                    false,
                    format!("{}: no measurement to compare (a run failed, see below).", load.name),
                );
            }
            continue;
        }
        let msgs = (med(sb, |x| x.msgs), med(tk, |x| x.msgs));
        let p99 = (med(sb, |x| x.p99_us), med(tk, |x| x.p99_us));
        let cpu = (med(sb, |x| x.server_cpu_us), med(tk, |x| x.server_cpu_us));
        let ctx = (med(sb, |x| x.ctx_per_msg), med(tk, |x| x.ctx_per_msg));
        // The figures a row without its own target lines is given as is.
        let others = format!(
            "p99 {} vs {}; server CPU {} vs {} per message = {}; context switches {} vs {} per message = {}.",
            us(p99.0),
            us(p99.1),
            us(cpu.0),
            us(cpu.1),
            ratio(cpu.0, cpu.1),
            cs(ctx.0),
            cs(ctx.1),
            ratio(ctx.0, ctx.1)
        );
        if load.targets == Targets::Reference {
            let _ = writeln!(
                s,
                "- {} (no target; for reference): throughput {} vs {} msg/s = {}; {others}",
                load.name,
                group(msgs.0),
                group(msgs.1),
                ratio(msgs.0, msgs.1),
            );
            continue;
        }
        line(
            &mut s,
            msgs.0 >= 1.2 * msgs.1,
            format!(
                "{}: throughput {} vs {} msg/s = {} (target ≥ 1.20×).",
                load.name,
                group(msgs.0),
                group(msgs.1),
                ratio(msgs.0, msgs.1)
            ),
        );
        if load.targets == Targets::Throughput {
            let _ = writeln!(s, "  (for reference: {others})");
            if !load.pinned {
                continue;
            }
            // One core each: how busy each was says whether the server
            // alone, or the load generator too, set the rate.
            let busy = |runs: &[EchoSample]| med(runs, |x| x.msgs * x.server_cpu_us / 1e6);
            let _ = writeln!(
                s,
                "  (busy share of its core: server {:.2} vs {:.2}, load generator {:.2} vs {:.2}; \
                 near 1.00 on both sides, the pair sets the rate, not the server alone.)",
                busy(sb),
                busy(tk),
                med(sb, |x| x.load_cores),
                med(tk, |x| x.load_cores)
            );
            continue;
        }
        line(
            &mut s,
            p99.0 <= p99.1,
            format!("{}: p99 {} vs tokio's {} (target ≤ tokio's).", load.name, us(p99.0), us(p99.1)),
        );
        line(
            &mut s,
            cpu.0 <= 0.8 * cpu.1,
            format!(
                "{}: server CPU {} vs {} per message = {} (target ≤ 0.80×).",
                load.name,
                us(cpu.0),
                us(cpu.1),
                ratio(cpu.0, cpu.1)
            ),
        );
        line(
            &mut s,
            ctx.0 <= ctx.1,
            format!(
                "{}: server context switches {} vs {} per message = {} (target ≤ tokio's).",
                load.name,
                cs(ctx.0),
                cs(ctx.1),
                ratio(ctx.0, ctx.1)
            ),
        );
    }
    if !r.idle[SB].is_empty() {
        let rss = median(r.idle[SB].iter().map(|x| x.rss).collect());
        let before = median(r.idle[SB].iter().map(|x| x.rss_before).collect());
        let conns = median(r.idle[SB].iter().map(|x| x.conns as f64).collect());
        let all = conns as usize >= r.idle_conns;
        let per = if conns > 0.0 { (rss - before) / conns } else { 0.0 };
        line(
            &mut s,
            per <= 512.0 && all,
            format!(
                "{} idle connections: server RSS {} ({} before connecting): {:.0} bytes per \
                 connection; {} of {} connections held (target ≤ 512 bytes each, every connection \
                 held).",
                group(r.idle_conns as f64),
                mb(rss),
                mb(before),
                per,
                group(conns),
                group(r.idle_conns as f64)
            ),
        );
    }
    if !r.file.is_empty() {
        let sbm = median(r.file.iter().map(|x| x.switchboard).collect());
        let base = median(r.file.iter().map(|x| x.baseline).collect());
        let base_load = median(r.file.iter().map(|x| x.baseline_load).collect());
        line(
            &mut s,
            sbm >= 0.9 * base,
            format!(
                "file get: {:.0} MB/s vs the sendfile baseline's {:.0} MB/s = {} (target ≥ 0.90×). \
                 With the same client (switchboard-load) on both servers: {:.0} vs {:.0} MB/s = {}.",
                sbm / 1e6,
                base / 1e6,
                ratio(sbm, base),
                sbm / 1e6,
                base_load / 1e6,
                ratio(sbm, base_load)
            ),
        );
    }
    if let Some((ok, bad, mbs)) = r.file_md5 {
        let _ = writeln!(
            s,
            "- file get with md5 checked by the load generator: {ok} download(s) matched, {bad} \
             mismatched ({mbs:.0} MB/s: the server computes the md5 on this first request, and the \
             load generator computes it too, on the same cores)."
        );
    }
    if !r.chat.is_empty() {
        let complete = r.chat.iter().chain(&r.chat_tokio).all(|c| c.complete == c.members && c.errors == 0);
        let (sb, tk) = (
            median(r.chat.iter().map(|c| c.delivered).collect()),
            median(r.chat_tokio.iter().map(|c| c.delivered).collect()),
        );
        let (sb99, tk99) = (
            median(r.chat.iter().map(|c| c.p99_us).collect()),
            median(r.chat_tokio.iter().map(|c| c.p99_us).collect()),
        );
        let verdict = if r.chat_tokio.is_empty() {
            "no tokio-chat run".to_string()
        } else {
            format!(
                "{} tokio-chat's {} deliveries/s (target ≥ 1.5×: {}), p99 against its {} (target ≤: {})",
                ratio(sb, tk),
                group(tk),
                if sb >= 1.5 * tk { "met" } else { "not met" },
                us(tk99),
                if sb99 <= tk99 { "met" } else { "not met" }
            )
        };
        let _ = writeln!(
            s,
            "- chat, {} members: {} deliveries/s, p99 {}: {verdict}; {}.",
            group(r.chat_members as f64),
            group(sb),
            us(sb99),
            if complete {
                "every member received every other member's messages in every round, on both servers"
                    .to_string()
            } else {
                format!(
                    "NOT every member received every message (errors per round: switchboard {:?}, tokio-chat {:?})",
                    r.chat.iter().map(|c| c.errors).collect::<Vec<_>>(),
                    r.chat_tokio.iter().map(|c| c.errors).collect::<Vec<_>>()
                )
            }
        );
    }
    let errors: u64 =
        r.echo.iter().flat_map(|(_, runs)| runs.iter().flatten()).map(|x| x.errors + x.failed).sum();
    let file_errors: u64 = r.file.iter().map(|x| x.errors).sum();
    if errors + file_errors > 0 {
        let _ = writeln!(
            s,
            "- Errors: the load generator counted {} errors or failed connections over all runs; \
             the numbers above include those runs.",
            errors + file_errors
        );
    } else {
        s.push_str("- No run saw an error or a failed connection.\n");
    }
    let spread = r
        .echo
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .filter(|v| v.len() > 1)
        .map(|v| {
            let xs: Vec<f64> = v.iter().map(|x| x.msgs).collect();
            let (lo, hi) = xs.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let m = median(xs);
            if m > 0.0 {
                (hi - lo) / m
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "- Spread: between rounds, one server's echo throughput on one load varied by up to {:.0}% of \
         its median; ratios within that band are not conclusive.",
        spread * 100.0
    );
    let cores = r
        .echo
        .iter()
        .filter(|(l, _)| !l.pinned)
        .flat_map(|(_, runs)| runs[SB].iter())
        .map(|x| x.load_cores)
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "- The load generator used at most {cores:.2} cores during a measured window of the default \
         setting; there it shares the cores with the server, so absolute numbers are lower than with \
         separate machines, equally for both servers."
    );
    let _ = writeln!(
        s,
        "\n{}",
        if missed == 0 {
            "Every target with a measurement is met.".to_string()
        } else {
            format!("{missed} target line(s) not met (see above).")
        }
    );
    s
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdleSample;

    fn sample(msgs: f64, p99_us: f64, server_cpu_us: f64, ctx_per_msg: f64) -> EchoSample {
        EchoSample { msgs, p99_us, server_cpu_us, ctx_per_msg, ..EchoSample::default() }
    }

    fn load(name: &str, targets: Targets, pinned: bool) -> EchoLoad {
        EchoLoad { name: name.into(), conns: 64, depth: 1, targets, pinned, unix: false }
    }

    /// The verdict lines of `meaning` for the given results.
    fn verdicts(r: &Results) -> Vec<String> {
        meaning(r).lines().filter(|l| l.starts_with("- **")).map(str::to_string).collect()
    }

    #[test]
    fn every_default_target_is_judged_from_the_medians() {
        let mut r = Results { idle_conns: 10_000, ..Results::default() };
        // Switchboard: rounds 130/140/90 msg/s (median 130 = 1.3× tokio's 100),
        // p99 equal, CPU 0.7×, context switches 1.1× tokio's.
        let sb =
            vec![sample(130.0, 5.0, 7.0, 1.1), sample(140.0, 5.0, 7.0, 1.1), sample(90.0, 5.0, 7.0, 1.1)];
        let tk = vec![sample(100.0, 5.0, 10.0, 1.0); 3];
        r.echo.push((load("defaults", Targets::All, false), [sb, tk]));
        let v = verdicts(&r);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].starts_with("- **met** defaults: throughput 130 vs 100 msg/s = 1.30×"), "{}", v[0]);
        assert!(v[1].starts_with("- **met** defaults: p99"), "{}", v[1]);
        assert!(v[2].starts_with("- **met** defaults: server CPU"), "{}", v[2]);
        assert!(
            v[3].starts_with("- **not met** defaults: server context switches 1.100 vs 1.000"),
            "{}",
            v[3]
        );
        assert!(meaning(&r).contains("1 target line(s) not met"));
        // The table shows the spread of the rounds.
        assert!(tables(&r).contains("| 130 (90–140) | 100 (100–100) | 1.30× |"), "{}", tables(&r));
    }

    #[test]
    fn pinned_rows_say_how_busy_each_core_was() {
        let mut r = Results { idle_conns: 10_000, ..Results::default() };
        let sb = EchoSample { load_cores: 0.95, ..sample(100_000.0, 50.0, 9.0, 0.01) };
        let tk = EchoSample { load_cores: 0.97, ..sample(90_000.0, 50.0, 10.0, 0.01) };
        r.echo.push((load("pinned 64", Targets::Throughput, true), [vec![sb], vec![tk]]));
        let text = meaning(&r);
        assert!(
            text.contains("busy share of its core: server 0.90 vs 0.90, load generator 0.95 vs 0.97;"),
            "{text}"
        );
    }

    #[test]
    fn unix_rows_judge_throughput_only_and_say_nothing_of_a_core_they_do_not_have() {
        let mut r = Results { idle_conns: 10_000, ..Results::default() };
        let unix = EchoLoad { unix: true, ..load("Unix echo 64", Targets::Throughput, false) };
        r.echo.push((unix, [vec![sample(125.0, 50.0, 20.0, 2.0)], vec![sample(100.0, 5.0, 10.0, 1.0)]]));
        assert_eq!(
            verdicts(&r),
            ["- **met** Unix echo 64: throughput 125 vs 100 msg/s = 1.25× (target ≥ 1.20×)."]
        );
        let text = meaning(&r);
        assert!(text.contains("(for reference: p99 50.0 µs vs 5.00 µs;"), "{text}");
        assert!(!text.contains("busy share"), "{text}");
        assert!(tables(&r).contains("| Unix echo 64 | 125 | 100 | 1.25× |"), "{}", tables(&r));
    }

    #[test]
    fn pinned_rows_judge_throughput_only_and_a_missing_run_is_not_met() {
        let mut r = Results { idle_conns: 10_000, ..Results::default() };
        r.echo.push((
            load("pinned 64", Targets::Throughput, true),
            [vec![sample(119.0, 50.0, 20.0, 2.0)], vec![sample(100.0, 5.0, 10.0, 1.0)]],
        ));
        r.echo.push((load("pinned 1000", Targets::Throughput, true), [Vec::new(), Vec::new()]));
        let v = verdicts(&r);
        assert_eq!(
            v,
            [
                "- **not met** pinned 64: throughput 119 vs 100 msg/s = 1.19× (target ≥ 1.20×).",
                "- **not met** pinned 1000: no measurement to compare (a run failed, see below).",
            ]
        );
        assert!(tables(&r).contains("Pinned"));
        let opts = Options {
            quick: true,
            rounds: 1,
            out: None,
            bin_dir: ".".into(),
            args: Vec::new(),
            tls_only: false,
            blocking_only: false,
            proxy_only: false,
            profile_only: false,
            echo_only: None,
            chat_only: false,
        };
        let md = render(&opts, &r, Duration::from_secs(1));
        assert!(md.contains("`taskset -c 0 switchboard-server --handler echo --workers 1`"), "{md}");
        assert!(md.contains("no `--workers`, no `--max-connections`"), "{md}");
    }

    #[test]
    fn idle_target_is_bytes_per_connection() {
        let idle = |rss: f64| IdleSample { rss, rss_before: 4e6, conns: 10_000 };
        let mut r = Results { idle_conns: 10_000, ..Results::default() };
        r.idle[SB].push(idle(4e6 + 512.0 * 10_000.0));
        assert!(verdicts(&r)[0].starts_with("- **met** 10,000 idle connections"), "{:?}", verdicts(&r));
        r.idle[SB][0] = idle(4e6 + 513.0 * 10_000.0);
        assert!(verdicts(&r)[0].starts_with("- **not met** 10,000 idle connections"), "{:?}", verdicts(&r));
        // Not every connection held: not met, however small the growth.
        r.idle[SB][0] = IdleSample { rss: 4e6, rss_before: 4e6, conns: 9_000 };
        assert!(verdicts(&r)[0].starts_with("- **not met**"), "{:?}", verdicts(&r));
    }
}
