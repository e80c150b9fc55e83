//! Micro-benchmark of the rule engine alone (no sockets): the data stage
//! of a rule set run over one message many times, in microseconds per
//! message. It shows what the rules cost without the noise of a network
//! load test (see `loadgen --body-rules` for that).
//!
//! ```text
//! cargo run --release --example rules_bench -- --body-rules 1000 --size 102400
//! cargo run --release --example rules_bench -- --rules-dir rules --size 102400
//! ```

use clap::Parser;
use smtpgate::body::Body;
use smtpgate::filter::{Context, FilterChain, Message, Stage};
use smtpgate::proto::Mailbox;
use smtpgate::rules::{RuleOptions, RuleSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Command-line options.
#[derive(Parser)]
struct Args {
    /// Generate this many body-regex rules (the shapes loadgen uses).
    #[arg(long)]
    body_rules: Option<usize>,
    /// Or load this rules directory.
    #[arg(long)]
    rules_dir: Option<PathBuf>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 102400)]
    size: usize,
    /// Messages to run.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
}

fn main() {
    let args = Args::parse();
    let set = match (&args.rules_dir, args.body_rules) {
        (Some(dir), _) => RuleSet::load_dir(dir, RuleOptions::default()),
        (None, Some(n)) => RuleSet::from_yaml(
            &generated(n),
            std::path::Path::new("generated.yaml"),
            RuleOptions::default(),
        ),
        (None, None) => Ok(RuleSet::empty()),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{} rules", set.len());
    let mut chain = FilterChain::new();
    chain.push(Arc::new(set));
    let message = message(args.size);
    let started = Instant::now();
    let mut score = 0.0;
    for _ in 0..args.messages {
        let mut ctx = Context::new("203.0.113.9:4000".parse().unwrap());
        ctx.helo = Some("bench.test".into());
        ctx.mail_from = Some(Some(Mailbox {
            local: "loadgen".into(),
            domain: "bench.test".into(),
        }));
        let mut body = Body::new(1 << 20);
        body.append(&message).unwrap();
        let mut m = Message::new(&mut body);
        chain.run(Stage::Data, &mut ctx, None, Some(&mut m));
        score += ctx.score;
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / args.messages as f64;
    println!(
        "{per:.1} us per {}-byte message ({:.2} ns/byte); total score {score}",
        message.len(),
        per * 1000.0 / message.len() as f64
    );
}

/// `n` rules in the four shapes `loadgen --body-rules` generates.
fn generated(n: usize) -> String {
    let mut y = String::from("rules:\n");
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!("(?i)\\bcasino{i}\\b"),
            1 => format!("(?i)(free|cheap|discount)-offer-{i}"),
            2 => format!("[a-z0-9._%+-]+@spam{i}\\.example"),
            _ => format!("(?i)click\\s+here\\s+now\\s+{i}"),
        };
        y.push_str(&format!(
            "  - {{ name: body-{i}, stage: data, when: {{ body: {{ regex: '{pattern}' }} }}, action: score, score: 1 }}\n"
        ));
    }
    y
}

/// A message like loadgen's: headers and lines of words.
fn message(size: usize) -> Vec<u8> {
    let words = [
        "lorem", "ipsum", "dolor", "sit", "amet", "gateway", "relay", "message", "queue", "filter",
        "upstream", "envelope", "header", "rule", "score", "latency", "42", "2048",
    ];
    let mut m = b"From: Load Generator <loadgen@bench.test>\r\nTo: rcpt0@bench.test\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let mut i = 0usize;
    while m.len() < size {
        let mut line = String::new();
        while line.len() < 60 {
            line.push_str(words[(i * 7 + line.len()) % words.len()]);
            line.push(' ');
            i += 1;
        }
        m.extend_from_slice(line.trim_end().as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m
}
