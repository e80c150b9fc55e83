//! A filter written in Rust, run by the gateway next to the YAML rules.
//!
//! `smtpgate` is also a library: a [`Filter`] has one method per stage, each
//! defaulting to "continue", and is a synchronous function over an
//! in-memory [`Context`]. This example adds two checks the YAML rules do
//! not have:
//!
//! - a rate limit: at most N transactions per minute from one client IP
//!   (`451 4.7.1` beyond that, so well-behaved senders come back later);
//! - a data-stage check on the parsed headers: a message whose `From`
//!   domain differs from the envelope sender's gets an
//!   `X-Envelope-Mismatch` header (and a point of score for the YAML rules'
//!   thresholds).
//!
//! The chain is: this filter first, then the rule set of `rules_dir`. On
//! SIGHUP only the rule set is replaced (`reload::reload` swaps the filter
//! named `rules`), so the rate limiter keeps its counters.
//!
//! ```text
//! cargo run --example custom_filter -- examples/gateway.yaml
//! swaks --server 127.0.0.1:2525 --to bob@example.com
//! ```

use smtpgate::config::{Config, ConfigError};
use smtpgate::filter::{Context, Filter, FilterChain, Message, Verdict};
use smtpgate::proto::{EnhancedCode, Reply};
use smtpgate::server::Server;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rate limit per client IP, plus a header check at the data stage.
pub struct RateLimit {
    /// Transactions allowed per client IP within `window`.
    pub max: usize,
    /// The sliding window.
    pub window: Duration,
    /// Start times of recent transactions, per client IP. A filter is
    /// shared by every session, hence the lock; it is held for a few
    /// instructions only.
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RateLimit {
    /// At most `max` transactions per `window` from one IP.
    pub fn new(max: usize, window: Duration) -> Self {
        RateLimit {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Filter for RateLimit {
    fn name(&self) -> &str {
        "rate-limit"
    }

    fn mail(&self, ctx: &mut Context) -> Verdict {
        let now = Instant::now();
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let times = seen.entry(ctx.client.ip()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.max {
            return Verdict::Tempfail(Reply::new(
                451,
                EnhancedCode::new(4, 7, 1),
                "Too many messages from your address, slow down",
            ));
        }
        times.push_back(now);
        Verdict::Continue
    }

    fn data(&self, ctx: &mut Context, message: &mut Message<'_>) -> Verdict {
        let Some(Some(sender)) = &ctx.mail_from else {
            return Verdict::Continue;
        };
        let envelope = sender.domain_lowercase();
        // The headers are parsed once per message and shared with the rules.
        let Ok(headers) = message.headers() else {
            return Verdict::Continue;
        };
        let from_domain = headers.first("From").and_then(|f| {
            let v = f.raw.trim_end_matches('>');
            v.rsplit_once('@')
                .map(|(_, d)| d.trim().to_ascii_lowercase())
        });
        if let Some(d) = from_domain {
            if d != envelope {
                ctx.add_headers
                    .push(("X-Envelope-Mismatch".into(), format!("{envelope} != {d}")));
                ctx.score += 1.0;
            }
        }
        Verdict::Continue
    }
}

/// The chain this example runs: the rate limiter, then the YAML rules of
/// `config.rules_dir` (if any).
pub fn build_chain(config: &Config, limit: Arc<RateLimit>) -> Result<FilterChain, ConfigError> {
    let mut chain = FilterChain::new();
    chain.push(limit);
    if let Some(rules) = smtpgate::rules::load_for(config)? {
        chain.push(Arc::new(rules));
    }
    Ok(chain)
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match std::env::args_os().nth(1) {
        Some(path) => Config::load(std::path::Path::new(&path)),
        None => Ok(Config::embedded()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custom_filter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let chain = match build_chain(
        &config,
        Arc::new(RateLimit::new(30, Duration::from_secs(60))),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custom_filter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    async_std::task::block_on(async {
        let server = match Server::bind_with_filters(config, chain).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("custom_filter: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        let shared = server.shared();
        let reopen = server.shared();
        let signals = smtpgate::signals::install(
            server.shutdown_trigger(),
            move || {
                let _ = smtpgate::reload::reload(&shared);
            },
            move || {
                if let Some(a) = reopen.audit() {
                    a.reopen();
                }
            },
        );
        if let Err(e) = signals {
            eprintln!("custom_filter: cannot install signal handlers: {e}");
            return std::process::ExitCode::from(1);
        }
        server.run().await;
        std::process::ExitCode::SUCCESS
    })
}
