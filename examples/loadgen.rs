//! SMTP load generator and sink for benchmarking smtpgate.
//!
//! It has three modes:
//!
//! - `--to ADDR`: send load to the SMTP server at ADDR. It prints messages per
//!   second, p50/p99/max latency per delivered message, and counts of 2xx/4xx/5xx
//!   final replies and errors. Latency runs from connect (for the first message
//!   on a connection) or from `MAIL` (for later ones) to the final 2xx reply.
//! - `--sink ADDR`: run only a fast SMTP sink on ADDR until it is killed. The
//!   sink accepts everything, throws the message away and counts messages.
//! - `--compare`: start an in-process sink, measure the load sent straight to
//!   it, then start smtpgate (`--gateway-bin`) in front of it and measure the
//!   same load through the gateway. It prints both results, their ratio,
//!   smtpgate's CPU time per 1,000 messages and its peak RSS. It also checks that
//!   the sink received exactly as many messages as the client got 2xx replies
//!   for. A mismatch makes the exit status 1.
//! - `--idle-rss N`: start smtpgate, open N connections that each read the
//!   greeting and say EHLO, and report how much smtpgate's resident memory
//!   grew per idle connection.
//!
//! `--tls` makes the client use STARTTLS with the server under test (the
//! certificate is not verified); with `--compare` smtpgate gets a generated
//! certificate, and only the through-smtpgate phase uses TLS.
//! `--tls-resume` keeps the TLS sessions the server hands out and resumes
//! them on later connections, as Postfix's TLS session cache does; without
//! it every connection makes a full handshake. Results count both kinds.
//! `--source-ips N` spreads the client connections over N loopback source
//! addresses (127.0.0.2, 127.0.0.3, ...), as N clients would be.
//!
//! This example does not use the smtpgate library: it talks to the gateway only
//! over SMTP.
//!
//! ```text
//! # a sink on port 3525, and load sent to it from a second shell
//! cargo run --release --example loadgen -- --sink 127.0.0.1:3525
//! cargo run --release --example loadgen -- --to 127.0.0.1:3525 --messages 2000
//!
//! # straight to the sink, then through smtpgate, in one run
//! cargo build --release
//! cargo run --release --example loadgen -- --compare --messages 5000
//!
//! # 50 sessions, 10 messages per connection, 3 recipients, 20 KB bodies, pipelined
//! cargo run --release --example loadgen -- --compare --sessions 50 \
//!     --per-connection 10 --recipients 3 --size 20000 --pipelining --json
//!
//! # extra gateway settings (rules, limits, ...) added to the generated config
//! cargo run --release --example loadgen -- --compare --gateway-extra-yaml bench.yaml
//!
//! # the cost of rules: smtpgate without rules, with the example rules, and
//! # with 1,000 generated body-regex rules, 100 KB messages, 3 rounds each
//! echo "rules_dir: $PWD/rules" > /tmp/example-rules.yaml
//! cargo run --release --example loadgen -- --compare --size 102400 \
//!     --variant-yaml /tmp/example-rules.yaml --body-rules 1000 --rounds 3
//! ```
//!
//! With `--variant-yaml`, `--variant-tls` or `--body-rules`, `--compare` then
//! measures, in turn and for `--rounds` rounds, the sink directly, smtpgate
//! without the variants and smtpgate with each, and prints the medians of
//! each (msgs/s, ratios to direct and to plain smtpgate, p99 latency, CPU
//! per 1,000 messages, peak RSS). Variant YAML is merged into the generated
//! config key by key, so a variant can change the upstream section:
//!
//! ```text
//! # the upstream connection pool on (default) and off, 1 message per connection
//! echo "upstream: { pool: { enabled: false } }" > /tmp/pool-off.yaml
//! cargo run --release --example loadgen -- --compare --variant-yaml /tmp/pool-off.yaml
//!
//! # RSS per idle connection at 5,000 connections
//! cargo run --release --example loadgen -- --idle-rss 5000 --source-ips 250
//! ```
//!
//! `scripts/bench.sh` runs the whole benchmark table of `docs/benchmarks.md`
//! this way.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_rustls::rustls;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

/// Read, write and connect timeout on every client socket.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle timeout on sink connections, so dead clients do not hold threads forever.
const SINK_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest reply line the client accepts and longest command line the sink accepts.
const MAX_LINE: u64 = 4096;
/// How long smtpgate gets to start listening: with 10,000 generated rules
/// it compiles for several seconds first.
const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long smtpgate gets to exit after SIGTERM before it is killed.
const GATEWAY_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The sink's reply to EHLO.
const SINK_EHLO_REPLY: &[u8] =
    b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n";

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "SMTP load generator and sink for benchmarking smtpgate")]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["to", "sink", "compare", "idle_rss"])))]
struct Args {
    /// Send the load to the SMTP server at ADDR (host:port).
    #[arg(long, value_name = "ADDR")]
    to: Option<String>,
    /// Run only a fast SMTP sink on ADDR until killed.
    #[arg(long, value_name = "ADDR")]
    sink: Option<String>,
    /// Measure the load straight to an in-process sink, then through smtpgate.
    #[arg(long)]
    compare: bool,
    /// Start smtpgate, open N connections that greet and say EHLO, and
    /// report smtpgate's resident memory growth per idle connection.
    #[arg(long, value_name = "N", value_parser = positive)]
    idle_rss: Option<u64>,
    /// Use STARTTLS with the server under test (its certificate is not
    /// verified). With --compare: through smtpgate only, which gets a
    /// generated certificate.
    #[arg(long)]
    tls: bool,
    /// With TLS: keep the sessions a server hands out (TLS 1.3 tickets,
    /// TLS 1.2 tickets or IDs) and resume them on later connections, as
    /// Postfix's tlsmgr cache does. Without it every connection makes a
    /// full handshake. The result counts both kinds.
    #[arg(long)]
    tls_resume: bool,
    /// With --compare: also measure smtpgate with clients using STARTTLS
    /// (full handshakes; with --tls-resume, also resuming).
    #[arg(long)]
    variant_tls: bool,
    /// Spread client connections over this many loopback source addresses
    /// (127.0.0.2 upwards), as that many clients would; 1 lets the system
    /// choose. Per-client-IP limits then do not cap a benchmark.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    source_ips: u64,
    /// Also print the results as markdown table rows (see scripts/bench.sh).
    #[arg(long)]
    markdown: bool,
    /// The smtpgate binary to start with --compare.
    #[arg(long, value_name = "PATH", default_value = "target/release/smtpgate")]
    gateway_bin: PathBuf,
    /// A YAML file whose lines are appended to the generated gateway config.
    #[arg(long, value_name = "FILE")]
    gateway_extra_yaml: Option<PathBuf>,
    /// With --compare: also measure smtpgate with this YAML appended (e.g.
    /// `rules_dir: /abs/path/rules`), against smtpgate without it; repeat
    /// for several variants.
    #[arg(long = "variant-yaml", value_name = "FILE")]
    variant_yaml: Vec<PathBuf>,
    /// With --compare: also measure another smtpgate binary (an older
    /// build, say) with the base config, labelled LABEL; repeatable.
    #[arg(long = "variant-bin", value_name = "LABEL=PATH")]
    variant_bin: Vec<String>,
    /// With --compare: also measure smtpgate with N generated data-stage
    /// body-regex rules, none of which matches the generated messages (so
    /// every rule is evaluated on every message); repeat for several N.
    #[arg(long = "body-rules", value_name = "N")]
    body_rules: Vec<usize>,
    /// Rounds of the variant comparison; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    rounds: u64,
    /// With --compare and no variants: still measure direct and smtpgate
    /// in --rounds alternating rounds and report the medians (as
    /// scripts/bench.sh's scaling table does for each row).
    #[arg(long)]
    medians: bool,
    /// Concurrent client sessions (threads).
    #[arg(long, default_value_t = 10, value_parser = positive)]
    sessions: u64,
    /// Total messages to send.
    #[arg(long, default_value_t = 20000, value_parser = positive)]
    messages: u64,
    /// Approximate body size in bytes (headers not included).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Messages per SMTP connection (consecutive transactions, no RSET).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    per_connection: u64,
    /// Recipients per message.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    recipients: u64,
    /// Send MAIL, RCPT... and DATA in one write when the server offers PIPELINING.
    #[arg(long)]
    pipelining: bool,
    /// Domain of the sender and recipient addresses.
    #[arg(long, default_value = "bench.test")]
    domain: String,
    /// Send this message (its header and body, e.g. one a DKIM tool
    /// signed) instead of a generated one; `--size` is then ignored. Each
    /// message still gets its own Message-ID and Subject in front.
    #[arg(long, value_name = "FILE")]
    message_file: Option<std::path::PathBuf>,
    /// Also print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Parses a number that must be at least 1.
fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if let Some(addr) = &args.sink {
        run_sink_mode(addr)
    } else if let Some(addr) = &args.to {
        run_to_mode(&args, addr)
    } else if let Some(n) = args.idle_rss {
        run_idle_rss_mode(&args, n)
    } else {
        run_compare_mode(&args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

/// `--sink`: serves until killed, reporting the message count when it changes.
fn run_sink_mode(addr: &str) -> Result<ExitCode, String> {
    let sink = Sink::start(addr).map_err(|e| format!("cannot start sink on {addr}: {e}"))?;
    println!("sink listening on {}", sink.addr);
    let mut last = 0;
    loop {
        thread::sleep(Duration::from_secs(5));
        let now = sink.received();
        if now != last {
            println!("sink: {now} messages received");
            last = now;
        }
    }
}

/// `--to`: one load run against a given server.
fn run_to_mode(args: &Args, addr: &str) -> Result<ExitCode, String> {
    let target = resolve(addr)?;
    let spec = LoadSpec::from_args(args);
    println!("{}", spec.describe(&target.to_string()));
    let result = run_load(target, &spec, Tls::of(args));
    print_result("result", &result);
    if args.json {
        let mut obj = result.to_json();
        obj["mode"] = json!("to");
        obj["target"] = json!(target.to_string());
        obj["load"] = spec.to_json();
        println!("{obj}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--compare`: direct run, then a run through smtpgate, then the comparison;
/// with variants, rounds of all of them.
fn run_compare_mode(args: &Args) -> Result<ExitCode, String> {
    let gateway_bin = gateway_binary(&args.gateway_bin)?;
    let spec = LoadSpec::from_args(args);
    let sink = Sink::start("127.0.0.1:0").map_err(|e| format!("cannot start sink: {e}"))?;
    println!(
        "{}",
        spec.describe(&format!("in-process sink {}", sink.addr))
    );

    let (direct, direct_check) = measured_phase(&sink, || run_load(sink.addr, &spec, Tls::Off));
    print_result("direct", &direct);

    let base_extra = match &args.gateway_extra_yaml {
        Some(path) => read_yaml(path)?,
        None => String::new(),
    };
    let mut gateway = Gateway::start(&gateway_bin, sink.addr, &base_extra, args.tls)?;
    println!(
        "smtpgate pid {} listening on {}{}",
        gateway.pid(),
        gateway.addr,
        if args.tls {
            " (clients use STARTTLS)"
        } else {
            ""
        }
    );
    let cpu_before = gateway.cpu_seconds();
    let (via, via_check) = measured_phase(&sink, || run_load(gateway.addr, &spec, Tls::of(args)));
    let cpu_after = gateway.cpu_seconds();
    let peak_rss_kib = gateway.peak_rss_kib();
    let stop_note = gateway.stop();
    print_result("via smtpgate", &via);
    println!("{stop_note}");

    let cpu_per_1000 = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if via.attempted() > 0 => {
            Some((a - b) * 1000.0 / via.attempted() as f64)
        }
        _ => None,
    };
    let cmp = Comparison {
        direct,
        via,
        cpu_per_1000,
        peak_rss_kib,
        checks: [("direct", direct_check), ("via smtpgate", via_check)],
    };
    cmp.print_table();
    let variants = variant_list(args)?;
    let (variant_table, variants_ok) = if variants.variants.is_empty() && !args.medians {
        (None, true)
    } else {
        let table = run_variants(
            &gateway_bin,
            &sink,
            &spec,
            (&base_extra, Tls::of(args)),
            &variants.variants,
            args.rounds,
        )?;
        let ok = table.checks_ok;
        (Some(table), ok)
    };
    if args.json {
        let mut obj = cmp.to_json();
        obj["load"] = spec.to_json();
        if let Some(t) = &variant_table {
            obj["variants"] = t.to_json();
        }
        println!("{obj}");
    }
    if args.markdown {
        let load = spec.short();
        match &variant_table {
            Some(t) => t.print_markdown(&load),
            None => cmp.print_markdown(&load),
        }
    }
    Ok(if cmp.checks_ok() && variants_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One variant of the gateway: a label, YAML merged into its config, and
/// whether clients use STARTTLS.
struct Variant {
    /// What the tables call it.
    label: String,
    /// Merged into the generated gateway config.
    yaml: String,
    /// How clients use STARTTLS with smtpgate.
    tls: Tls,
    /// Another smtpgate binary to run instead of `--gateway-bin`.
    bin: Option<PathBuf>,
}

/// Sessions opened and closed before `--idle-rss` measures, so the
/// runtime's threads and the allocator's arenas are already there.
const IDLE_WARM_UP: u64 = 200;

/// `--idle-rss N`: smtpgate's resident memory growth per idle connection
/// (greeted, EHLO answered, waiting for the next command).
fn run_idle_rss_mode(args: &Args, n: u64) -> Result<ExitCode, String> {
    let gateway_bin = gateway_binary(&args.gateway_bin)?;
    // One descriptor per connection on our side too.
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if limit < n + 64 {
        return Err(format!(
            "the open-file limit is {limit}, too low for {n} connections (ulimit -Hn)"
        ));
    }
    let spec = LoadSpec::from_args(args);
    let sink = Sink::start("127.0.0.1:0").map_err(|e| format!("cannot start sink: {e}"))?;
    let base_extra = match &args.gateway_extra_yaml {
        Some(path) => read_yaml(path)?,
        None => String::new(),
    };
    let extra = format!(
        "limits: {{ max_connections: {} }}\n---\n{base_extra}",
        n + IDLE_WARM_UP + 100
    );
    let mut gateway = Gateway::start(&gateway_bin, sink.addr, &extra, args.tls)?;
    println!(
        "smtpgate pid {} on {}: {n} idle connections{}",
        gateway.pid(),
        gateway.addr,
        if args.tls { " under TLS" } else { "" }
    );
    let options = |i: u64| spec.connect.for_session(i, gateway.addr, Tls::of(args));
    for i in 0..IDLE_WARM_UP {
        let mut c = Client::connect(gateway.addr, &spec.domain, &options(i))
            .map_err(|e| format!("warm-up connection failed: {e}"))?;
        c.quit();
    }
    thread::sleep(Duration::from_millis(500));
    let before = gateway.rss_kib().ok_or("cannot read smtpgate's RSS")?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(n as usize);
    let mut first_error = None;
    for i in 0..n {
        match Client::connect(gateway.addr, &spec.domain, &options(i)) {
            Ok(c) => open.push(c),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let opening = started.elapsed();
    thread::sleep(Duration::from_secs(1));
    let after = gateway.rss_kib().ok_or("cannot read smtpgate's RSS")?;
    let opened = open.len() as u64;
    let per_connection = (after.saturating_sub(before)) as f64 / opened.max(1) as f64;
    println!(
        "opened {opened} of {n} connections in {:.2} s; smtpgate RSS {:.1} MiB before, \
         {:.1} MiB after: {per_connection:.2} KiB per idle connection",
        opening.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    drop(open);
    println!("{}", gateway.stop());
    if args.json {
        println!(
            "{}",
            json!({
                "mode": "idle_rss",
                "connections": opened,
                "asked": n,
                "tls": args.tls,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_connection": per_connection,
                "first_error": first_error,
            })
        );
    }
    if args.markdown {
        println!(
            "| {opened} idle connections{} | {:.1} MiB | {:.1} MiB | {per_connection:.2} KiB |",
            if args.tls { " (TLS)" } else { "" },
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
    }
    Ok(if opened == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The variants to compare, with what keeps their generated files alive.
struct Variants {
    /// The variants, in command-line order.
    variants: Vec<Variant>,
    /// Generated rule directories, removed on drop.
    _dirs: Vec<tempfile::TempDir>,
}

/// The variants asked for on the command line.
fn variant_list(args: &Args) -> Result<Variants, String> {
    let mut variants = Vec::new();
    let mut dirs = Vec::new();
    for path in &args.variant_yaml {
        let label = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        variants.push(Variant {
            label,
            yaml: read_yaml(path)?,
            tls: Tls::Off,
            bin: None,
        });
    }
    for spec in &args.variant_bin {
        let Some((label, path)) = spec.split_once('=') else {
            return Err(format!("--variant-bin {spec}: expected LABEL=PATH"));
        };
        variants.push(Variant {
            label: label.to_string(),
            yaml: String::new(),
            tls: Tls::Off,
            bin: Some(gateway_binary(Path::new(path))?),
        });
    }
    if args.variant_tls {
        variants.push(Variant {
            label: "TLS (STARTTLS)".to_string(),
            yaml: String::new(),
            tls: Tls::Full,
            bin: None,
        });
        if args.tls_resume {
            variants.push(Variant {
                label: "TLS (STARTTLS), resumed".to_string(),
                yaml: String::new(),
                tls: Tls::Resumed,
                bin: None,
            });
        }
    }
    for &n in &args.body_rules {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        std::fs::write(dir.path().join("body.yaml"), body_rules_yaml(n))
            .map_err(|e| format!("cannot write generated rules: {e}"))?;
        variants.push(Variant {
            label: format!("{n} body-regex rules"),
            yaml: format!("rules_dir: \"{}\"\n", dir.path().display()),
            tls: Tls::Off,
            bin: None,
        });
        dirs.push(dir);
    }
    Ok(Variants {
        variants,
        _dirs: dirs,
    })
}

/// `n` data-stage rules, each with one body regex. Four shapes of pattern
/// (case-insensitive words with boundaries, alternations, character
/// classes, a phrase with flexible spacing), each with a number so no two
/// are alike and none matches the generated bodies.
fn body_rules_yaml(n: usize) -> String {
    let mut y = String::from("rules:\n");
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!("(?i)\\bcasino{i}\\b"),
            1 => format!("(?i)(free|cheap|discount)-offer-{i}"),
            2 => format!("[a-z0-9._%+-]+@spam{i}\\.example"),
            _ => format!("(?i)click\\s+here\\s+now\\s+{i}"),
        };
        let _ = writeln!(
            y,
            "  - {{ name: body-{i}, stage: data, when: {{ body: {{ regex: '{pattern}' }} }}, action: score, score: 1 }}"
        );
    }
    y
}

/// Reads an extra-YAML file.
fn read_yaml(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// One row of the variant table: medians over the rounds.
struct VariantRow {
    /// `direct`, `smtpgate` or `smtpgate + <variant>`.
    label: String,
    /// Median delivered messages per second.
    rate: f64,
    /// Median p99 latency, in milliseconds.
    p99_ms: Option<f64>,
    /// Median CPU seconds of smtpgate per 1,000 messages (not for direct).
    cpu: Option<f64>,
    /// Highest peak RSS of smtpgate over the rounds, in KiB (not for direct).
    peak_rss_kib: Option<u64>,
}

/// Medians of the variant comparison.
struct VariantTable {
    /// Direct first, then smtpgate without variants, then each variant.
    rows: Vec<VariantRow>,
    /// Every phase's sink count matched.
    checks_ok: bool,
}

impl VariantTable {
    /// Throughput of `row` relative to row `base` (0 = direct, 1 = smtpgate).
    fn ratio(&self, row: &VariantRow, base: usize) -> Option<f64> {
        let b = self.rows.get(base)?.rate;
        (b > 0.0).then(|| row.rate / b)
    }

    /// The table as JSON.
    fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    json!({
                        "variant": r.label,
                        "msgs_per_s_median": r.rate,
                        "ratio_to_direct": self.ratio(r, 0),
                        "ratio_to_smtpgate": self.ratio(r, 1),
                        "p99_ms_median": r.p99_ms,
                        "cpu_s_per_1000_median": r.cpu,
                        "peak_rss_kib_max": r.peak_rss_kib,
                    })
                })
                .collect(),
        )
    }

    /// Prints the table for people.
    fn print(&self) {
        println!();
        println!(
            "{:<36} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "median of rounds",
            "msgs/s",
            "/direct",
            "/smtpgate",
            "p99 ms",
            "CPU s/1000",
            "peak RSS"
        );
        for r in &self.rows {
            let ratio = |base| {
                self.ratio(r, base)
                    .map_or("-".into(), |x| format!("{x:.3}"))
            };
            let cpu = r.cpu.map_or("-".into(), |c| format!("{c:.3}"));
            let rss = r
                .peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            println!(
                "{:<36} {:>9.0} {:>9} {:>9} {:>9} {:>10} {:>10}",
                r.label,
                r.rate,
                ratio(0),
                ratio(1),
                ms(r.p99_ms),
                cpu,
                rss
            );
        }
    }

    /// Markdown rows: load, setup, msgs/s, ratio to direct, ratio to
    /// smtpgate, p99 ms, CPU s per 1,000 messages, peak RSS.
    fn print_markdown(&self, load: &str) {
        for r in &self.rows {
            let ratio = |base| {
                self.ratio(r, base)
                    .map_or("-".into(), |x| format!("{x:.2}"))
            };
            println!(
                "| {load} | {} | {:.0} | {} | {} | {} | {} | {} |",
                r.label,
                r.rate,
                ratio(0),
                ratio(1),
                ms(r.p99_ms),
                r.cpu.map_or("-".into(), |c| format!("{c:.3}")),
                r.peak_rss_kib
                    .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            );
        }
    }
}

/// Measures, in turn and for `rounds` rounds (alternating, so drift in the
/// machine's load hits all alike): the sink directly, smtpgate with the
/// base config (`base`: YAML and client TLS), and smtpgate with each
/// variant; prints and returns the medians.
fn run_variants(
    bin: &Path,
    sink: &Sink,
    spec: &LoadSpec,
    base: (&str, Tls),
    variants: &[Variant],
    rounds: u64,
) -> Result<VariantTable, String> {
    // (label, YAML, client TLS, binary); no YAML = direct to the sink.
    let mut all: Vec<(String, Option<String>, Tls, &Path)> = vec![
        ("direct".to_string(), None, Tls::Off, bin),
        (
            "smtpgate".to_string(),
            Some(base.0.to_string()),
            base.1,
            bin,
        ),
    ];
    for v in variants {
        let label = match &v.bin {
            Some(_) => v.label.clone(),
            None => format!("smtpgate + {}", v.label),
        };
        all.push((
            label,
            Some(format!("{}\n---\n{}", base.0, v.yaml)),
            if v.tls == Tls::Off { base.1 } else { v.tls },
            v.bin.as_deref().unwrap_or(bin),
        ));
    }
    let n = all.len();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut rss: Vec<Option<u64>> = vec![None; n];
    let mut checks_ok = true;
    for round in 1..=rounds {
        for (i, (label, yaml, tls, bin)) in all.iter().enumerate() {
            let (result, check, cpu, peak) = match yaml {
                None => {
                    let (result, check) =
                        measured_phase(sink, || run_load(sink.addr, spec, Tls::Off));
                    (result, check, None, None)
                }
                Some(yaml) => {
                    let mut gateway = Gateway::start(bin, sink.addr, yaml, tls.on())?;
                    let cpu_before = gateway.cpu_seconds();
                    let (result, check) =
                        measured_phase(sink, || run_load(gateway.addr, spec, *tls));
                    let cpu_after = gateway.cpu_seconds();
                    let peak = gateway.peak_rss_kib();
                    gateway.stop();
                    let cpu = match (cpu_before, cpu_after) {
                        (Some(b), Some(a)) if result.attempted() > 0 => {
                            Some((a - b) * 1000.0 / result.attempted() as f64)
                        }
                        _ => None,
                    };
                    (result, check, cpu, peak)
                }
            };
            print_result(&format!("round {round} {label}"), &result);
            if !check.ok() || result.tally.ok != result.attempted() {
                checks_ok = false;
                eprintln!(
                    "*** {label}: sink received {} messages, client got {} 2xx of {} ***",
                    check.received,
                    check.accepted,
                    result.attempted()
                );
            }
            rates[i].push(result.rate());
            if let Some(p) = result.percentile_ms(0.99) {
                p99s[i].push(p);
            }
            if let Some(c) = cpu {
                cpus[i].push(c);
            }
            rss[i] = rss[i].max(peak);
        }
    }
    let rows = all
        .iter()
        .enumerate()
        .map(|(i, (label, _, _, _))| VariantRow {
            label: label.clone(),
            rate: median(&rates[i]).unwrap_or(0.0),
            p99_ms: median(&p99s[i]),
            cpu: median(&cpus[i]),
            peak_rss_kib: rss[i],
        })
        .collect();
    let table = VariantTable { rows, checks_ok };
    table.print();
    Ok(table)
}

/// The median of some figures.
fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    Some(if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    })
}

/// Runs one load phase and pairs its result with the sink's count for it.
fn measured_phase(sink: &Sink, run: impl FnOnce() -> LoadResult) -> (LoadResult, SinkCheck) {
    let before = sink.received();
    let result = run();
    let check = SinkCheck {
        received: sink.received() - before,
        accepted: result.ok,
    };
    (result, check)
}

/// Resolves `host:port` to its first socket address.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

// ---------------------------------------------------------------------------
// Load description and generated message
// ---------------------------------------------------------------------------

/// Everything a client thread needs to know about the load.
struct LoadSpec {
    sessions: u64,
    messages: u64,
    per_connection: u64,
    recipients: u64,
    pipelining: bool,
    domain: String,
    /// `MAIL FROM:<...>` with its CRLF.
    mail_cmd: Vec<u8>,
    /// One `RCPT TO:<...>` line per recipient.
    rcpt_cmds: Vec<Vec<u8>>,
    /// Distinguishes Message-IDs of different runs.
    run_id: u64,
    /// Date, From, To and MIME headers plus the blank line ending the header.
    fixed_headers: Vec<u8>,
    /// The body on the wire: dot-stuffed, ending with `.<CRLF>`.
    wire_body: Vec<u8>,
    /// Body size before dot-stuffing.
    body_len: usize,
    /// How clients connect: TLS settings and source addresses.
    connect: ConnectOptions,
}

impl LoadSpec {
    /// Builds the load and its message from the command line.
    fn from_args(args: &Args) -> LoadSpec {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let given = args.message_file.as_ref().map(|p| {
            let text = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let at = text
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(text.len(), |i| i + 4);
            (text[..at].to_vec(), text[at..].to_vec())
        });
        let body = match &given {
            Some((_, body)) => body.clone(),
            None => generate_body(args.size),
        };
        // One recipient per line: a hundred on one line would pass the
        // 998-octet limit on header lines (RFC 5322 section 2.1.1).
        let to = (0..args.recipients)
            .map(|i| recipient(i, &args.domain))
            .collect::<Vec<_>>()
            .join(",\r\n ");
        let fixed_headers = format!(
            "Date: {}\r\nFrom: Load Generator <{}>\r\nTo: {to}\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
            rfc5322_date(now.as_secs()),
            sender(&args.domain),
        );
        LoadSpec {
            sessions: args.sessions,
            messages: args.messages,
            per_connection: args.per_connection,
            recipients: args.recipients,
            pipelining: args.pipelining,
            domain: args.domain.clone(),
            mail_cmd: format!("MAIL FROM:<{}>\r\n", sender(&args.domain)).into_bytes(),
            rcpt_cmds: (0..args.recipients)
                .map(|i| format!("RCPT TO:<{}>\r\n", recipient(i, &args.domain)).into_bytes())
                .collect(),
            run_id: now.as_nanos() as u64,
            fixed_headers: given.map_or(fixed_headers.into_bytes(), |(head, _)| head),
            wire_body: dot_stuff(&body),
            body_len: body.len(),
            connect: ConnectOptions {
                tls_full: insecure_client_config(false),
                tls_resumed: insecure_client_config(true),
                source_ips: args.source_ips,
            },
        }
    }

    /// The load in a few words, for the markdown table.
    fn short(&self) -> String {
        let size = if self.body_len >= 1_000_000 {
            format!("{} MB", self.body_len / 1_000_000)
        } else if self.body_len >= 1000 {
            format!("{} KB", self.body_len / 1000)
        } else {
            format!("{} B", self.body_len)
        };
        format!("{} sessions, {size}", self.sessions)
    }

    /// One line saying what is being sent where.
    fn describe(&self, target: &str) -> String {
        format!(
            "load: {} messages to {target}, {} sessions, {} per connection, {} recipient(s), \
             {}-byte body, pipelining {}",
            self.messages,
            self.sessions,
            self.per_connection,
            self.recipients,
            self.body_len,
            if self.pipelining { "on" } else { "off" },
        )
    }

    /// The load parameters as JSON.
    fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "sessions": self.sessions,
            "per_connection": self.per_connection,
            "recipients": self.recipients,
            "body_bytes": self.body_len,
            "pipelining": self.pipelining,
        })
    }
}

/// The envelope and header sender.
fn sender(domain: &str) -> String {
    format!("loadgen@{domain}")
}

/// The address of recipient number `i`.
fn recipient(i: u64, domain: &str) -> String {
    format!("rcpt{i}@{domain}")
}

/// A small deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    /// The next value in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Generates about `size` bytes of printable text in CRLF lines of at most 78
/// characters. Every tenth line starts with "." to exercise dot-stuffing.
fn generate_body(size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "gateway",
        "relay",
        "message",
        "queue",
        "filter",
        "upstream",
        "envelope",
        "header",
        "rule",
        "score",
        "latency",
        "42",
        "2048",
        "throughput",
        "mail",
        "transfer",
        "protocol",
        "benchmark",
        "x",
        "quota",
        "spool",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut body = Vec::with_capacity(size + 80);
    let mut line_no = 0usize;
    while body.len() < size {
        let remaining = size - body.len();
        let target = (20 + rng.below(59)).min(remaining.saturating_sub(2)).max(1);
        let mut line = String::with_capacity(80);
        if line_no % 10 == 3 {
            line.push('.');
        }
        while line.len() < target {
            if !line.is_empty() && !line.ends_with('.') {
                line.push(' ');
            }
            line.push_str(WORDS[rng.below(WORDS.len())]);
        }
        line.truncate(target);
        body.extend_from_slice(line.as_bytes());
        body.extend_from_slice(b"\r\n");
        line_no += 1;
    }
    body
}

/// Doubles a leading "." on every line and appends the end-of-data line.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 40 + 3);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Formats a Unix time as an RFC 5322 date in UTC.
fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
    )
}

/// Converts days since 1970-01-01 to (year, month 1-12, day 1-31).
/// The algorithm is Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// Load run and its results
// ---------------------------------------------------------------------------

/// What one client thread (or a whole run, once merged) observed.
#[derive(Default)]
struct Tally {
    /// Latency of each delivered message, in microseconds.
    latencies_us: Vec<u32>,
    ok: u64,
    temp_fail: u64,
    perm_fail: u64,
    /// Final replies outside 2xx/4xx/5xx.
    other: u64,
    /// Connection, timeout and protocol errors (one per message affected).
    errors: u64,
    first_error: Option<String>,
    first_rejection: Option<String>,
    /// Pipelining was asked for but the server did not offer it.
    pipelining_unavailable: bool,
    /// TLS handshakes that were full ones.
    tls_full: u64,
    /// TLS handshakes that resumed an earlier session.
    tls_resumed: u64,
}

impl Tally {
    /// Records a final reply and, for a 2xx, the message's latency; `text`
    /// gives the reply text, kept for the first refusal.
    fn reply(&mut self, code: u16, latency: Duration, text: impl FnOnce() -> String) {
        match code / 100 {
            2 => {
                self.ok += 1;
                let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
                self.latencies_us.push(us);
                return;
            }
            4 => self.temp_fail += 1,
            5 => self.perm_fail += 1,
            _ => self.other += 1,
        }
        self.first_rejection.get_or_insert_with(text);
    }

    /// Records an error that cost one message.
    fn error(&mut self, e: &io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// Adds another thread's tally to this one.
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        self.temp_fail += other.temp_fail;
        self.perm_fail += other.perm_fail;
        self.other += other.other;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.first_rejection = self.first_rejection.take().or(other.first_rejection);
        self.pipelining_unavailable |= other.pipelining_unavailable;
        self.tls_full += other.tls_full;
        self.tls_resumed += other.tls_resumed;
    }
}

/// The result of one load run.
struct LoadResult {
    elapsed: Duration,
    /// Merged tally with its latencies sorted.
    tally: Tally,
    ok: u64,
}

impl LoadResult {
    /// Messages that got a final reply or an error.
    fn attempted(&self) -> u64 {
        let t = &self.tally;
        t.ok + t.temp_fail + t.perm_fail + t.other + t.errors
    }

    /// Delivered (2xx) messages per second.
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-quantile (0..=1) of delivered-message latency, in milliseconds.
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let l = &self.tally.latencies_us;
        if l.is_empty() {
            return None;
        }
        let rank = ((p * l.len() as f64).ceil() as usize).clamp(1, l.len());
        Some(f64::from(l[rank - 1]) / 1000.0)
    }

    /// The result as JSON.
    fn to_json(&self) -> Value {
        let t = &self.tally;
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "msgs_per_s": self.rate(),
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.percentile_ms(1.0),
            "replies": { "2xx": t.ok, "4xx": t.temp_fail, "5xx": t.perm_fail, "other": t.other },
            "errors": t.errors,
            "tls_handshakes": { "full": t.tls_full, "resumed": t.tls_resumed },
            "first_error": t.first_error,
            "first_rejection": t.first_rejection,
        })
    }
}

/// Formats an optional millisecond figure.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// Prints one run's figures under a label.
fn print_result(label: &str, r: &LoadResult) {
    let t = &r.tally;
    println!(
        "{label}: {:.0} msgs/s over {:.2} s | latency ms p50 {} p99 {} max {} | \
         2xx {} 4xx {} 5xx {} other {} errors {}",
        r.rate(),
        r.elapsed.as_secs_f64(),
        ms(r.percentile_ms(0.50)),
        ms(r.percentile_ms(0.99)),
        ms(r.percentile_ms(1.0)),
        t.ok,
        t.temp_fail,
        t.perm_fail,
        t.other,
        t.errors,
    );
    if let Some(text) = &t.first_rejection {
        println!("  first rejection: {text}");
    }
    if let Some(e) = &t.first_error {
        println!("  first error: {e}");
    }
    if t.pipelining_unavailable {
        println!("  note: server did not offer PIPELINING; commands were sent in lockstep");
    }
    if t.tls_full + t.tls_resumed > 0 {
        println!(
            "  TLS handshakes: {} full, {} resumed",
            t.tls_full, t.tls_resumed
        );
    }
}

/// Sends the whole load to `target` from `spec.sessions` threads and waits;
/// with `tls`, every connection uses STARTTLS.
fn run_load(target: SocketAddr, spec: &LoadSpec, tls: Tls) -> LoadResult {
    let next = AtomicU64::new(0);
    let start_line = Barrier::new(spec.sessions as usize + 1);
    let (tally, elapsed) = thread::scope(|s| {
        let workers: Vec<_> = (0..spec.sessions)
            .map(|i| {
                let next = &next;
                let start_line = &start_line;
                let options = spec.connect.for_session(i, target, tls);
                s.spawn(move || {
                    start_line.wait();
                    client_worker(target, spec, &options, next)
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        let mut total = Tally::default();
        for w in workers {
            total.merge(w.join().expect("client thread panicked"));
        }
        (total, started.elapsed())
    });
    let mut tally = tally;
    tally.latencies_us.sort_unstable();
    LoadResult {
        elapsed,
        ok: tally.ok,
        tally,
    }
}

/// Takes the next message number, or `None` when the load is used up.
fn claim(next: &AtomicU64, total: u64) -> Option<u64> {
    let n = next.fetch_add(1, Ordering::Relaxed);
    (n < total).then_some(n)
}

/// One client thread: opens connections and sends messages until none are left.
fn client_worker(
    target: SocketAddr,
    spec: &LoadSpec,
    options: &SessionOptions,
    next: &AtomicU64,
) -> Tally {
    let mut tally = Tally::default();
    while let Some(first) = claim(next, spec.messages) {
        let started = Instant::now();
        match Client::connect(target, &spec.domain, options) {
            Ok(mut client) => {
                if spec.pipelining && !client.pipelining {
                    tally.pipelining_unavailable = true;
                }
                match client.tls_resumed {
                    Some(true) => tally.tls_resumed += 1,
                    Some(false) => tally.tls_full += 1,
                    None => {}
                }
                run_connection(&mut client, spec, next, first, started, &mut tally);
            }
            Err(e) => tally.error(&e),
        }
    }
    tally
}

/// Sends up to `spec.per_connection` messages on one open connection, then QUIT.
fn run_connection(
    client: &mut Client,
    spec: &LoadSpec,
    next: &AtomicU64,
    first: u64,
    connected: Instant,
    tally: &mut Tally,
) {
    let (mut index, mut started) = (first, connected);
    let mut sent = 1;
    loop {
        match client.transaction(spec, index) {
            Ok(code) => tally.reply(code, started.elapsed(), || client.last_line()),
            Err(e) => {
                tally.error(&e);
                return;
            }
        }
        if client.closed || sent >= spec.per_connection {
            break;
        }
        let Some(n) = claim(next, spec.messages) else {
            break;
        };
        (index, started, sent) = (n, Instant::now(), sent + 1);
    }
    if !client.closed {
        client.quit();
    }
}

// ---------------------------------------------------------------------------
// SMTP client
// ---------------------------------------------------------------------------

/// How a client connects: TLS, and which source address it uses.
#[derive(Clone)]
struct ConnectOptions {
    /// The configuration for STARTTLS (verification off) with full
    /// handshakes every time.
    tls_full: Arc<rustls::ClientConfig>,
    /// The same, keeping sessions to resume.
    tls_resumed: Arc<rustls::ClientConfig>,
    /// Loopback source addresses to spread sessions over (1: none chosen).
    source_ips: u64,
}

impl ConnectOptions {
    /// The options of session (thread) `i` towards `target`: its own source
    /// address when several are asked for and the target is on loopback.
    fn for_session(&self, i: u64, target: SocketAddr, tls: Tls) -> SessionOptions {
        let source = (self.source_ips > 1 && target.ip().is_loopback() && target.is_ipv4())
            .then(|| source_ip(i % self.source_ips));
        SessionOptions {
            tls: match tls {
                Tls::Off => None,
                Tls::Full => Some(self.tls_full.clone()),
                Tls::Resumed => Some(self.tls_resumed.clone()),
            },
            source,
        }
    }
}

/// How clients use TLS with the server under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Plain SMTP.
    Off,
    /// STARTTLS, a full handshake on every connection.
    Full,
    /// STARTTLS, resuming the sessions the server handed out.
    Resumed,
}

impl Tls {
    /// What `--tls` and `--tls-resume` ask for.
    fn of(args: &Args) -> Tls {
        match (args.tls, args.tls_resume) {
            (false, _) => Tls::Off,
            (true, false) => Tls::Full,
            (true, true) => Tls::Resumed,
        }
    }

    /// Whether the server needs a certificate.
    fn on(self) -> bool {
        self != Tls::Off
    }
}

/// The `n`th loopback source address: 127.0.0.2, 127.0.0.3, ...
fn source_ip(n: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f00_0002_u32.wrapping_add(n as u32)))
}

/// How one session connects.
struct SessionOptions {
    /// STARTTLS with this configuration after the first EHLO.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Bind to this address before connecting.
    source: Option<IpAddr>,
}

/// Connects to `addr`, from `source` when given (bind before connect).
fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect_timeout(&addr, IO_TIMEOUT);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    Ok(socket.into())
}

/// A rustls client configuration that does not verify the server's
/// certificate: benchmarks talk to a gateway with a generated one. With
/// `resume`, one session store shared by every connection (big enough for
/// the tickets of thousands of connections); without, none.
fn insecure_client_config(resume: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(16 * 1024)
    } else {
        rustls::client::Resumption::disabled()
    };
    Arc::new(config)
}

/// Accepts any certificate, but checks the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's connection: plain TCP, or TLS over it after STARTTLS.
enum Wire {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Nothing, while the connection is being switched to TLS.
    Gone,
}

impl Wire {
    /// The TCP stream underneath.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Wire::Plain(t) => Some(t),
            Wire::Tls(t) => Some(&t.sock),
            Wire::Gone => None,
        }
    }
}

/// The error of using a [`Wire::Gone`].
fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection is being switched to TLS",
    )
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(t) => t.read(buf),
            Wire::Tls(t) => t.read(buf),
            Wire::Gone => Err(gone()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(t) => t.write(buf),
            Wire::Tls(t) => t.write(buf),
            Wire::Gone => Err(gone()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(t) => t.flush(),
            Wire::Tls(t) => t.flush(),
            Wire::Gone => Err(gone()),
        }
    }
}

/// Bodies larger than this are written straight to the connection instead
/// of being copied into the output buffer first.
const DIRECT_WRITE: usize = 32 * 1024;

/// One client SMTP connection.
struct Client {
    /// Reads replies; writes go to the same connection via `get_mut`.
    reader: BufReader<Wire>,
    /// Commands queued for the next [`Client::flush`].
    writer: Vec<u8>,
    /// The last reply line read (reused buffer).
    line: Vec<u8>,
    /// The server offered PIPELINING.
    pipelining: bool,
    /// The server offered STARTTLS.
    starttls: bool,
    /// The server sent 421 and is closing the connection.
    closed: bool,
    /// After STARTTLS: whether the handshake resumed an earlier session.
    tls_resumed: Option<bool>,
}

/// An error of kind `InvalidData` with a message.
fn protocol_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Splits a reply line into its code and whether it is the last line.
fn parse_reply_line(line: &[u8]) -> Option<(u16, bool)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let last = match line.get(3) {
        None | Some(b' ' | b'\r' | b'\n') => true,
        Some(b'-') => false,
        Some(_) => return None,
    };
    Some((code, last))
}

/// Whether an EHLO reply line's text (after `250-`) names `keyword`.
fn has_keyword(text: &[u8], keyword: &[u8]) -> bool {
    text.len() >= keyword.len()
        && text[..keyword.len()].eq_ignore_ascii_case(keyword)
        && matches!(text.get(keyword.len()), None | Some(b' ' | b'\r' | b'\n'))
}

impl Client {
    /// Connects, reads the greeting and says EHLO (falling back to HELO);
    /// with TLS options, STARTTLS and EHLO again.
    fn connect(addr: SocketAddr, domain: &str, options: &SessionOptions) -> io::Result<Client> {
        let stream = connect_from(addr, options.source)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut client = Client {
            reader: BufReader::with_capacity(8 * 1024, Wire::Plain(stream)),
            writer: Vec::with_capacity(4 * 1024),
            line: Vec::with_capacity(256),
            pipelining: false,
            starttls: false,
            closed: false,
            tls_resumed: None,
        };
        client.expect(220, "greeting")?;
        client.greet(domain)?;
        if let Some(config) = &options.tls {
            client.start_tls(config.clone())?;
            client.greet(domain)?;
        }
        Ok(client)
    }

    /// Writes the queued commands.
    fn flush(&mut self) -> io::Result<()> {
        let wire = self.reader.get_mut();
        let result = wire.write_all(&self.writer).and_then(|()| wire.flush());
        self.writer.clear();
        result
    }

    /// STARTTLS and the TLS handshake (RFC 3207).
    fn start_tls(&mut self, config: Arc<rustls::ClientConfig>) -> io::Result<()> {
        if !self.starttls {
            return Err(protocol_error("the server does not offer STARTTLS".into()));
        }
        self.writer.extend_from_slice(b"STARTTLS\r\n");
        self.flush()?;
        self.expect(220, "STARTTLS")?;
        if !self.reader.buffer().is_empty() {
            return Err(protocol_error("data after the reply to STARTTLS".into()));
        }
        let wire = std::mem::replace(self.reader.get_mut(), Wire::Gone);
        let Wire::Plain(tcp) = wire else {
            return Err(protocol_error("STARTTLS twice".into()));
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| protocol_error(format!("TLS: {e}")))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.tls_resumed = Some(tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
        *self.reader.get_mut() = Wire::Tls(Box::new(tls));
        Ok(())
    }

    /// Sends EHLO (or HELO if EHLO is refused) and notes PIPELINING and
    /// STARTTLS.
    fn greet(&mut self, domain: &str) -> io::Result<()> {
        write!(self.writer, "EHLO loadgen.{domain}\r\n")?;
        self.flush()?;
        let (mut pipelining, mut starttls) = (false, false);
        let code = self.read_reply(|text| {
            pipelining |= has_keyword(text, b"PIPELINING");
            starttls |= has_keyword(text, b"STARTTLS");
        })?;
        (self.pipelining, self.starttls) = (pipelining, starttls);
        if code / 100 == 2 {
            return Ok(());
        }
        write!(self.writer, "HELO loadgen.{domain}\r\n")?;
        self.flush()?;
        self.expect(250, "HELO")
    }

    /// Reads one reply and fails unless it has code `want`.
    fn expect(&mut self, want: u16, what: &str) -> io::Result<()> {
        let code = self.read_reply(|_| ())?;
        if code != want {
            return Err(protocol_error(format!(
                "unexpected {what} reply: {}",
                self.last_line()
            )));
        }
        Ok(())
    }

    /// Reads a (possibly multi-line) reply, passing each line's text to
    /// `on_line`, and returns its code.
    fn read_reply(&mut self, mut on_line: impl FnMut(&[u8])) -> io::Result<u16> {
        let mut first_code = None;
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            if self.line.last() != Some(&b'\n') {
                return Err(protocol_error("reply line too long".into()));
            }
            let Some((code, last)) = parse_reply_line(&self.line) else {
                return Err(protocol_error(format!(
                    "malformed reply line: {}",
                    self.last_line()
                )));
            };
            if *first_code.get_or_insert(code) != code {
                return Err(protocol_error(format!(
                    "reply code changed within a reply: {}",
                    self.last_line()
                )));
            }
            on_line(self.line.get(4..).unwrap_or_default());
            if last {
                self.closed |= code == 421;
                return Ok(code);
            }
        }
    }

    /// The last reply line read, without its line ending.
    fn last_line(&self) -> String {
        String::from_utf8_lossy(&self.line)
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    }

    /// Reads one reply, ignoring its text.
    fn reply(&mut self) -> io::Result<u16> {
        self.read_reply(|_| ())
    }

    /// Runs one mail transaction and returns its final reply code: the
    /// reply to the message, or the refusal that ended the transaction early.
    fn transaction(&mut self, spec: &LoadSpec, index: u64) -> io::Result<u16> {
        if spec.pipelining && self.pipelining {
            self.pipelined_transaction(spec, index)
        } else {
            self.lockstep_transaction(spec, index)
        }
    }

    /// Writes the envelope commands (without flushing).
    fn write_envelope(&mut self, spec: &LoadSpec) -> io::Result<()> {
        self.writer.write_all(&spec.mail_cmd)?;
        for rcpt in &spec.rcpt_cmds {
            self.writer.write_all(rcpt)?;
        }
        Ok(())
    }

    /// A transaction waiting for each reply before sending the next command.
    fn lockstep_transaction(&mut self, spec: &LoadSpec, index: u64) -> io::Result<u16> {
        self.writer.write_all(&spec.mail_cmd)?;
        self.flush()?;
        let mail = self.reply()?;
        if mail / 100 != 2 {
            return Ok(mail);
        }
        let (mut accepted, mut refusal) = (0, 0);
        for rcpt in &spec.rcpt_cmds {
            self.writer.write_all(rcpt)?;
            self.flush()?;
            match self.reply()? {
                c if c / 100 == 2 => accepted += 1,
                c => refusal = c,
            }
            if self.closed {
                return Ok(refusal);
            }
        }
        if accepted == 0 {
            return self.abort(refusal);
        }
        self.writer.write_all(b"DATA\r\n")?;
        self.flush()?;
        match self.reply()? {
            354 => self.send_message(spec, index),
            code => self.abort(code),
        }
    }

    /// A transaction sending MAIL, RCPT... and DATA in one write (RFC 2920).
    fn pipelined_transaction(&mut self, spec: &LoadSpec, index: u64) -> io::Result<u16> {
        self.write_envelope(spec)?;
        self.writer.write_all(b"DATA\r\n")?;
        self.flush()?;
        // The final reply is the first thing that ended the transaction: a
        // refused MAIL, all recipients refused, or a refused DATA. Its text is
        // copied only when something was refused.
        let mail = self.reply()?;
        let mail_refusal = (mail / 100 != 2).then(|| (mail, self.line.clone()));
        let (mut accepted, mut rcpt_refusal) = (0, None);
        for _ in &spec.rcpt_cmds {
            match self.reply()? {
                c if c / 100 == 2 => accepted += 1,
                c => rcpt_refusal = Some((c, self.line.clone())),
            }
        }
        let data = self.reply()?;
        if data == 354 {
            return self.send_message(spec, index);
        }
        let transaction_open = mail_refusal.is_none();
        let (code, text) = match (mail_refusal, rcpt_refusal) {
            (Some(refusal), _) => refusal,
            (None, Some(refusal)) if accepted == 0 => refusal,
            _ => (data, self.line.clone()),
        };
        self.line = text;
        if transaction_open {
            self.abort(code)
        } else {
            Ok(code)
        }
    }

    /// Ends a transaction refused after MAIL was accepted: RSET, and return
    /// `code` (the refusal) as the final reply.
    fn abort(&mut self, code: u16) -> io::Result<u16> {
        if self.closed {
            return Ok(code);
        }
        let text = self.line.clone();
        self.writer.write_all(b"RSET\r\n")?;
        self.flush()?;
        self.reply()?;
        self.line = text;
        Ok(code)
    }

    /// Sends the header and body of message `index` after a 354 and returns
    /// the final reply code.
    fn send_message(&mut self, spec: &LoadSpec, index: u64) -> io::Result<u16> {
        write!(
            self.writer,
            "Message-ID: <{index}.{}@loadgen.{}>\r\nSubject: loadgen message {index}\r\n",
            spec.run_id, spec.domain
        )?;
        self.writer.extend_from_slice(&spec.fixed_headers);
        if spec.wire_body.len() > DIRECT_WRITE {
            self.flush()?;
            let wire = self.reader.get_mut();
            wire.write_all(&spec.wire_body)?;
            wire.flush()?;
        } else {
            self.writer.extend_from_slice(&spec.wire_body);
            self.flush()?;
        }
        self.reply()
    }

    /// Says QUIT and waits briefly for the server to close first, so the
    /// client side does not collect TIME_WAIT sockets. Errors are ignored:
    /// the messages are already counted.
    fn quit(&mut self) {
        self.writer.extend_from_slice(b"QUIT\r\n");
        let _ = self.flush();
        if self.reply().is_ok() {
            if let Some(tcp) = self.reader.get_ref().tcp() {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
            }
            let mut scratch = [0u8; 64];
            let _ = self.reader.read(&mut scratch);
        }
    }
}

// ---------------------------------------------------------------------------
// SMTP sink
// ---------------------------------------------------------------------------

/// A running sink server.
struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl Sink {
    /// Binds `addr` and serves on background threads (one per connection).
    fn start(addr: &str) -> io::Result<Sink> {
        let listener = listen(resolve(addr).map_err(io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || sink_accept_loop(&listener, &counter))?;
        Ok(Sink { addr, received })
    }

    /// Messages received so far.
    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

/// Connections the sink's listener queues: a run with 1,000 sessions
/// connects that many at once, and the standard library's 128 would make
/// the kernel drop SYNs (the client then waits a second to retry).
const SINK_BACKLOG: i32 = 4096;

/// A listener on `addr` with [`SINK_BACKLOG`].
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(SINK_BACKLOG)?;
    Ok(socket.into())
}

/// Accepts connections forever, one thread each.
fn sink_accept_loop(listener: &TcpListener, counter: &Arc<AtomicU64>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sink: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let counter = Arc::clone(counter);
        let spawned = thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = sink_session(stream, &counter);
            });
        if let Err(e) = spawned {
            eprintln!("sink: cannot start a session thread: {e}");
        }
    }
}

/// Serves one sink connection until QUIT, EOF or an error.
fn sink_session(stream: TcpStream, counter: &AtomicU64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SINK_IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(SINK_IDLE_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(16 * 1024, stream);
    writer.write_all(b"220 sink.test ESMTP loadgen sink\r\n")?;
    let mut line = Vec::with_capacity(512);
    let (mut has_sender, mut recipients) = (false, 0u32);
    loop {
        // Replies to pipelined commands go out together, once the commands
        // already received are answered.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
        line.clear();
        if (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            writer.write_all(b"500 5.5.6 line too long\r\n")?;
            return writer.flush();
        }
        let reply: &[u8] = match verb(&line) {
            b"EHLO" => {
                (has_sender, recipients) = (false, 0);
                SINK_EHLO_REPLY
            }
            b"HELO" => {
                (has_sender, recipients) = (false, 0);
                b"250 sink.test\r\n"
            }
            b"RSET" => {
                (has_sender, recipients) = (false, 0);
                b"250 2.0.0 OK\r\n"
            }
            b"MAIL" => {
                (has_sender, recipients) = (true, 0);
                b"250 2.1.0 OK\r\n"
            }
            b"RCPT" if has_sender => {
                recipients += 1;
                b"250 2.1.5 OK\r\n"
            }
            b"DATA" if recipients > 0 => {
                writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                if reader.buffer().is_empty() {
                    writer.flush()?;
                }
                skip_body(&mut reader)?;
                counter.fetch_add(1, Ordering::SeqCst);
                (has_sender, recipients) = (false, 0);
                b"250 2.0.0 queued\r\n"
            }
            b"RCPT" | b"DATA" => b"503 5.5.1 bad sequence of commands\r\n",
            b"NOOP" => b"250 2.0.0 OK\r\n",
            b"QUIT" => {
                writer.write_all(b"221 2.0.0 bye\r\n")?;
                return writer.flush();
            }
            _ => b"500 5.5.2 command not recognized\r\n",
        };
        writer.write_all(reply)?;
    }
}

/// The first four bytes of a command line, upper-cased (or empty if short).
fn verb(line: &[u8]) -> &'static [u8] {
    const VERBS: [&[u8]; 9] = [
        b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT", b"VRFY",
    ];
    let Some(head) = line.get(..4) else {
        return b"";
    };
    let end_ok = matches!(line.get(4), None | Some(b' ' | b'\r' | b'\n'));
    VERBS
        .iter()
        .find(|v| end_ok && head.eq_ignore_ascii_case(v))
        .copied()
        .unwrap_or(b"")
}

/// Consumes a message body up to and including `<CRLF>.<CRLF>` without
/// copying it. The body starts at the beginning of a line.
fn skip_body(reader: &mut impl BufRead) -> io::Result<()> {
    let mut state = EndOfData::LINE_START;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in DATA",
            ));
        }
        let (used, done) = state.scan(buf);
        reader.consume(used);
        if done {
            return Ok(());
        }
    }
}

/// How much of `<CRLF>.<CRLF>` has been seen so far (0 to 4 bytes).
#[derive(Clone, Copy)]
struct EndOfData(u8);

impl EndOfData {
    /// Right after a CRLF: the state at the start of the body.
    const LINE_START: EndOfData = EndOfData(2);

    /// Scans `buf` and returns how many bytes belong to the body (including
    /// the terminator) and whether the terminator was found.
    fn scan(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < buf.len() {
            if self.0 == 0 {
                // Fast path: nothing matched, skip to the next CR.
                match buf[i..].iter().position(|&b| b == b'\r') {
                    Some(p) => i += p,
                    None => return (buf.len(), false),
                }
            }
            self.0 = match (self.0, buf[i]) {
                (3, b'\r') => 4,
                (4, b'\n') => return (i + 1, true),
                (_, b'\r') => 1,
                (1, b'\n') => 2,
                (2, b'.') => 3,
                _ => 0,
            };
            i += 1;
        }
        (buf.len(), false)
    }
}

// ---------------------------------------------------------------------------
// smtpgate child process
// ---------------------------------------------------------------------------

/// smtpgate running as a child process with a generated config.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// Holds the config file (and smtpgate's working directory) until drop.
    _dir: tempfile::TempDir,
    stopped: bool,
}

impl Gateway {
    /// Writes a config pointing at `upstream` (with a generated certificate
    /// when `tls`, for STARTTLS), starts `bin` (an absolute path, see
    /// [`gateway_binary`]) and waits until it answers SMTP.
    fn start(
        bin: &Path,
        upstream: SocketAddr,
        extra_yaml: &str,
        tls: bool,
    ) -> Result<Self, String> {
        let addr = free_local_addr().map_err(|e| format!("cannot find a free port: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let config = dir.path().join("gateway.yaml");
        let tls_files = if tls {
            Some(write_certificate(dir.path())?)
        } else {
            None
        };
        let yaml = gateway_config(addr, upstream, extra_yaml, tls_files.as_ref())?;
        std::fs::write(&config, yaml)
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut gateway = Gateway {
            child,
            addr,
            _dir: dir,
            stopped: false,
        };
        gateway.wait_ready()?;
        Ok(gateway)
    }

    /// The child's process id.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until the gateway greets and answers EHLO, or fails if it exits
    /// or takes too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                return Err(format!("smtpgate exited during start-up ({status})"));
            }
            let plain = SessionOptions {
                tls: None,
                source: None,
            };
            let last_error = match Client::connect(self.addr, "bench.test", &plain) {
                Ok(mut client) => {
                    client.quit();
                    return Ok(());
                }
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "smtpgate did not answer on {} within {} s: {last_error}",
                    self.addr,
                    GATEWAY_START_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// User plus system CPU time used so far, from `/proc/PID/stat`.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the parenthesised command name start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / clock_ticks_per_second())
    }

    /// Peak resident set size in KiB (`VmHWM` in `/proc/PID/status`).
    fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now, in KiB (`VmRSS` in `/proc/PID/status`).
    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// A `/proc/PID/status` figure in KiB.
    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM, waits up to 10 s, then kills. Returns a line saying how
    /// it went.
    fn stop(&mut self) -> String {
        if self.stopped {
            return "smtpgate had already exited".into();
        }
        self.stopped = true;
        let started = Instant::now();
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        if !matches!(term, Ok(s) if s.success()) {
            let _ = self.child.kill();
            return format!("smtpgate: `kill -TERM` failed ({term:?}); killed it");
        }
        match wait_timeout(&mut self.child, GATEWAY_STOP_TIMEOUT) {
            Some(status) => format!(
                "smtpgate stopped after SIGTERM in {:.2} s ({status})",
                started.elapsed().as_secs_f64()
            ),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                format!(
                    "smtpgate did NOT stop within {} s of SIGTERM; killed it",
                    GATEWAY_STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The gateway binary as an absolute path (smtpgate runs in a temp dir), or
/// a hint to build it.
fn gateway_binary(bin: &Path) -> Result<PathBuf, String> {
    bin.canonicalize().map_err(|e| {
        format!(
            "smtpgate binary {} not usable ({e}); build it with `cargo build --release`",
            bin.display()
        )
    })
}

/// Waits for `child` to exit for at most `limit`.
fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Writes a self-signed certificate for `localhost` and its key into
/// `dir`; returns their paths.
fn write_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem())
        .and_then(|()| std::fs::write(&key, generated.signing_key.serialize_pem()))
        .map_err(|e| format!("cannot write the certificate: {e}"))?;
    Ok((cert, key))
}

/// The generated gateway config (listener, upstream, TLS files) with each
/// YAML document of `extra_yaml` merged into it, key by key: a mapping
/// merges into a mapping, anything else replaces what was there. So
/// `upstream: { pool: { enabled: false } }` keeps the generated address.
fn gateway_config(
    listen: SocketAddr,
    upstream: SocketAddr,
    extra_yaml: &str,
    tls: Option<&(PathBuf, PathBuf)>,
) -> Result<String, String> {
    let mut yaml = String::new();
    let _ = write!(
        yaml,
        "hostname: bench.test\nlisten:\n  - {{ addr: \"{listen}\" }}\n\
         upstream: {{ addr: \"{upstream}\" }}\n"
    );
    if let Some((cert, key)) = tls {
        let _ = writeln!(
            yaml,
            "tls: {{ cert: \"{}\", key: \"{}\" }}",
            cert.display(),
            key.display()
        );
    }
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&yaml).map_err(|e| format!("generated config: {e}"))?;
    for doc in serde_yaml::Deserializer::from_str(extra_yaml) {
        let extra = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("extra gateway YAML: {e}"))?;
        merge_yaml(&mut config, extra);
    }
    serde_yaml::to_string(&config).map_err(|e| format!("generated config: {e}"))
}

/// Merges `extra` into `base` (see [`gateway_config`]).
fn merge_yaml(base: &mut serde_yaml::Value, extra: serde_yaml::Value) {
    use serde_yaml::Value;
    match (base, extra) {
        (_, Value::Null) => {}
        (Value::Mapping(b), Value::Mapping(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(old) => merge_yaml(old, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_local_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Clock ticks per second for `/proc` CPU times (`getconf CLK_TCK`, else 100).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------
// Comparison report
// ---------------------------------------------------------------------------

/// The sink's count for one phase against the client's 2xx count.
#[derive(Clone, Copy)]
struct SinkCheck {
    received: u64,
    accepted: u64,
}

impl SinkCheck {
    /// Whether the counts agree.
    fn ok(self) -> bool {
        self.received == self.accepted
    }
}

/// Both runs of `--compare` and the gateway's resource figures.
struct Comparison {
    direct: LoadResult,
    via: LoadResult,
    cpu_per_1000: Option<f64>,
    peak_rss_kib: Option<u64>,
    checks: [(&'static str, SinkCheck); 2],
}

impl Comparison {
    /// Throughput through the gateway relative to direct.
    fn ratio(&self) -> Option<f64> {
        let d = self.direct.rate();
        (d > 0.0).then(|| self.via.rate() / d)
    }

    /// Whether every phase's sink count matched.
    fn checks_ok(&self) -> bool {
        self.checks.iter().all(|(_, c)| c.ok())
    }

    /// Prints the comparison table and the sink checks.
    fn print_table(&self) {
        println!();
        println!(
            "{:<20} {:>10} {:>9} {:>9}",
            "", "msgs/s", "p50 ms", "p99 ms"
        );
        for (label, r) in [("direct", &self.direct), ("via smtpgate", &self.via)] {
            println!(
                "{label:<20} {:>10.0} {:>9} {:>9}",
                r.rate(),
                ms(r.percentile_ms(0.50)),
                ms(r.percentile_ms(0.99))
            );
        }
        let ratio = self.ratio().map_or("-".into(), |r| format!("{r:.3}"));
        println!("{:<20} {ratio:>10}", "ratio (via/direct)");
        let cpu = self
            .cpu_per_1000
            .map_or("-".into(), |c| format!("{c:.3} s"));
        println!("smtpgate CPU per 1,000 messages: {cpu}");
        let rss = self
            .peak_rss_kib
            .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!("smtpgate peak RSS: {rss}");
        for (label, c) in &self.checks {
            if c.ok() {
                println!(
                    "sink check {label}: {} messages received = 2xx replies",
                    c.received
                );
            } else {
                let msg = format!(
                    "*** MISMATCH ({label}): sink received {} messages but the client got {} 2xx replies ***",
                    c.received, c.accepted
                );
                println!("{msg}");
                eprintln!("{msg}");
            }
        }
    }

    /// Markdown rows for direct and through smtpgate (see
    /// [`VariantTable::print_markdown`]).
    fn print_markdown(&self, load: &str) {
        let ratio = self.ratio().map_or("-".into(), |r| format!("{r:.2}"));
        println!(
            "| {load} | direct | {:.0} | 1.00 | - | {} | - | - |",
            self.direct.rate(),
            ms(self.direct.percentile_ms(0.99))
        );
        println!(
            "| {load} | smtpgate | {:.0} | {ratio} | 1.00 | {} | {} | {} |",
            self.via.rate(),
            ms(self.via.percentile_ms(0.99)),
            self.cpu_per_1000.map_or("-".into(), |c| format!("{c:.3}")),
            self.peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }

    /// The comparison as JSON.
    fn to_json(&self) -> Value {
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|(label, c)| {
                let v = json!({ "received": c.received, "accepted": c.accepted, "ok": c.ok() });
                ((*label).to_owned(), v)
            })
            .collect();
        json!({
            "mode": "compare",
            "direct": self.direct.to_json(),
            "via_smtpgate": self.via.to_json(),
            "ratio": self.ratio(),
            "smtpgate_cpu_s_per_1000": self.cpu_per_1000,
            "smtpgate_peak_rss_kib": self.peak_rss_kib,
            "sink_check": checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_data_found_across_buffers() {
        let mut state = EndOfData::LINE_START;
        assert_eq!(state.scan(b"abc\r\n.."), (7, false));
        assert_eq!(state.scan(b"x\r"), (2, false));
        assert_eq!(state.scan(b"\n.\r"), (3, false));
        assert_eq!(state.scan(b"\nQUIT\r\n"), (1, true));
    }

    #[test]
    fn end_of_data_at_body_start() {
        assert_eq!(EndOfData::LINE_START.scan(b".\r\nQUIT"), (3, true));
        assert_eq!(EndOfData::LINE_START.scan(b"\r\r\n.\r\n"), (6, true));
    }

    #[test]
    fn reply_lines_parse() {
        assert_eq!(parse_reply_line(b"250-PIPELINING\r\n"), Some((250, false)));
        assert_eq!(parse_reply_line(b"250 OK\r\n"), Some((250, true)));
        assert_eq!(parse_reply_line(b"354\r\n"), Some((354, true)));
        assert_eq!(parse_reply_line(b"25x OK\r\n"), None);
        assert_eq!(parse_reply_line(b"250xOK\r\n"), None);
    }

    #[test]
    fn body_is_printable_short_lines_and_stuffed() {
        let body = generate_body(2048);
        assert!((2048..2051).contains(&body.len()));
        let lines: Vec<_> = body.split(|&b| b == b'\n').collect();
        assert!(lines.iter().any(|l| l.starts_with(b".")));
        for l in &lines[..lines.len() - 1] {
            assert!(l.ends_with(b"\r") && l.len() <= 79);
            assert!(l[..l.len() - 1].iter().all(|b| (b' '..=b'~').contains(b)));
        }
        let wire = dot_stuff(&body);
        assert!(wire.ends_with(b"\r\n.\r\n"));
        let mut state = EndOfData::LINE_START;
        assert_eq!(state.scan(&wire), (wire.len(), true));
    }

    #[test]
    fn dates_format() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_709_210_096),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
    }
}
