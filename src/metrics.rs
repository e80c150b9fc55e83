//! Operational metrics, in the Prometheus text format (0.0.4), and the
//! small HTTP listener that serves them with a health check ([`http`]).
//!
//! One [`Metrics`] per gateway (not a process-wide registry), so several
//! gateways in one process — the tests — count apart. The counters are the
//! `prometheus` crate's atomics; label values known in advance (verdicts,
//! reply classes, error kinds) are created at start, so a scrape shows them
//! at 0 before anything happened, and the handles used on every reply are
//! resolved once, not looked up per reply.
//!
//! Every metric is named `smtpgate_*`; `docs/metrics.md` lists them all
//! (and `tests/docs.rs` checks that it does).

mod dkim;
pub mod exposition;
pub mod http;
mod milter;
mod rules;

pub use dkim::DkimMetrics;
pub use milter::MilterMetrics;
pub use rules::{RuleMetrics, RuleSeries, StageEvaluations};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Transaction verdicts, as in the audit trail.
pub const VERDICTS: [&str; 7] = [
    "delivered",
    "rejected",
    "tempfailed",
    "discarded",
    "quarantined",
    "disconnected",
    "aborted",
];

/// Kinds of upstream failure: the `kind` label values the upstream client
/// reports (each `UpstreamError` names its own), created at 0 at start.
pub const UPSTREAM_ERROR_KINDS: [&str; 12] = [
    "connect",
    "timeout",
    "closed",
    "io",
    "protocol",
    "refused",
    "tls",
    "tls_required",
    "auth",
    "auth_unavailable",
    "closing_421",
    "client_refused",
];

/// How a check run can end, as the `outcome` label.
pub const CHECK_OUTCOMES: [&str; 3] = ["ok", "error", "timeout"];

/// Upstream latency buckets in seconds: sub-millisecond on a LAN up to a
/// minute for a slow content filter behind the upstream.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every metric of one gateway.
pub struct Metrics {
    /// What `/metrics` renders.
    registry: Registry,
    /// `smtpgate_connections_total{listener}`: connections accepted.
    connections: IntCounterVec,
    /// `smtpgate_sessions`: client sessions open now.
    pub sessions: IntGauge,
    /// `smtpgate_transactions_total{verdict}`.
    transactions: IntCounterVec,
    /// `smtpgate_replies_total{class}`: replies sent to clients.
    replies: ReplyCounters,
    /// `smtpgate_rule_hits_total{rule,action}`.
    rule_hits: IntCounterVec,
    /// Per loaded rule: evaluations and the last hit time.
    pub rules: RuleMetrics,
    /// `smtpgate_upstream_latency_seconds{phase}`.
    upstream_latency: HistogramVec,
    /// `smtpgate_upstream_errors_total{kind}`.
    upstream_errors: IntCounterVec,
    /// `smtpgate_message_bytes_total{direction}`: message bytes received
    /// from clients, and delivered (upstream or spool).
    message_bytes: IntCounterVec,
    /// `smtpgate_check_duration_seconds{check}`: how long each check took.
    check_duration: HistogramVec,
    /// `smtpgate_checks_total{check,outcome}`: check runs by outcome
    /// (`ok`, `error`, `timeout`).
    checks: IntCounterVec,
    /// `smtpgate_dkim_verifications_total`: messages whose DKIM signatures
    /// were verified (once for the DKIM and DMARC checks together).
    pub dkim_verifications: IntCounter,
    /// The upstream connection pool's counters.
    pub pool: PoolMetrics,
    /// `smtpgate_tls_handshakes_total{result}` (client side of the gateway).
    tls_handshakes: IntCounterVec,
    /// `smtpgate_auth_total{result}`: SMTP AUTH attempts that ended.
    auth: IntCounterVec,
    /// `smtpgate_auth_backend_total{backend,result}`: logins each AUTH
    /// backend accepted, rejected, or could not answer.
    auth_backend: IntCounterVec,
    /// DKIM signing: messages signed, failures, eligible ones unsigned.
    pub dkim: DkimMetrics,
    /// Milters: each one's verdict per transaction.
    pub milter: MilterMetrics,
    /// `smtpgate_dns_list_errors_total{zone}`: DNS list answers that are
    /// errors, not listings.
    dns_list_errors: IntCounterVec,
    /// `smtpgate_config_reload_failures_total{reason}`: reloads refused.
    reload_failures: IntCounterVec,
    /// `smtpgate_config_reloads_total`: reloads that took effect.
    reloads: IntCounter,
    /// `smtpgate_config_last_reload_success_timestamp_seconds`.
    last_reload: IntGauge,
    /// The families components registered through
    /// [`counter_family`](Metrics::counter_family), by name: a component
    /// rebuilt on reload counts on in the same family.
    families: Mutex<HashMap<String, IntCounterVec>>,
}

/// Counters of the upstream connection pool, cheap to clone.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `smtpgate_upstream_pool_hits_total`: a session got an idle connection.
    pub hits: IntCounter,
    /// `smtpgate_upstream_pool_misses_total`: a session had to connect.
    pub misses: IntCounter,
    /// `smtpgate_upstream_pool_stale_total`: an idle connection turned out
    /// dead when taken, and was replaced before the client saw anything.
    pub stale: IntCounter,
    /// `smtpgate_upstream_pool_idle`: idle connections kept now.
    pub idle: IntGauge,
    /// `smtpgate_upstream_pool_closed_total{reason}`: idle connections
    /// closed by the pool (`idle_age`, `lifetime`, `full`, `shutdown`).
    pub closed: IntCounterVec,
}

/// The per-class reply counters, one handle shared by every session.
#[derive(Clone)]
pub struct ReplyCounters(Arc<[IntCounter; 4]>);

impl ReplyCounters {
    /// Counts one reply with this code (2xx to 5xx; others are not counted).
    pub fn count(&self, code: u16) {
        if let Some(c) = (code / 100)
            .checked_sub(2)
            .and_then(|i| self.0.get(i as usize))
        {
            c.inc();
        }
    }
}

/// Registers a counter family with label names and returns it.
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Registers a plain counter and returns it.
fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Registers a gauge and returns it.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("smtpgate_build_info", "Always 1; the version in a label."),
            &["version"],
        )
        .expect("valid metric");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(info)).expect("unique metric");
        let connections = counter_vec(
            &r,
            "smtpgate_connections_total",
            "Client connections accepted, by listener address.",
            &["listener"],
        );
        let sessions = gauge(&r, "smtpgate_sessions", "Client sessions open now.");
        let transactions = counter_vec(
            &r,
            "smtpgate_transactions_total",
            "Mail transactions by how they ended (as in the audit trail).",
            &["verdict"],
        );
        for v in VERDICTS {
            transactions.with_label_values(&[v]);
        }
        let replies_vec = counter_vec(
            &r,
            "smtpgate_replies_total",
            "Replies sent to clients, by code class.",
            &["class"],
        );
        let replies = ReplyCounters(Arc::new(
            ["2xx", "3xx", "4xx", "5xx"].map(|c| replies_vec.with_label_values(&[c])),
        ));
        let rule_hits = counter_vec(
            &r,
            "smtpgate_rule_hits_total",
            "Rules that matched, by rule name and action.",
            &["rule", "action"],
        );
        let rules = RuleMetrics::new(&r, rule_hits.clone());
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "smtpgate_upstream_latency_seconds",
                "Upstream latency: connect (TCP, greeting, EHLO, TLS, AUTH), \
                 mail (MAIL round trip), data (DATA to the reply to the final dot).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["phase"],
        )
        .expect("valid metric");
        r.register(Box::new(upstream_latency.clone()))
            .expect("unique metric");
        for p in ["connect", "mail", "data"] {
            upstream_latency.with_label_values(&[p]);
        }
        let upstream_errors = counter_vec(
            &r,
            "smtpgate_upstream_errors_total",
            "Upstream failures by kind.",
            &["kind"],
        );
        for k in UPSTREAM_ERROR_KINDS {
            upstream_errors.with_label_values(&[k]);
        }
        let message_bytes = counter_vec(
            &r,
            "smtpgate_message_bytes_total",
            "Message bytes received from clients, and delivered (upstream or spool).",
            &["direction"],
        );
        for d in ["received", "delivered"] {
            message_bytes.with_label_values(&[d]);
        }
        let pool = PoolMetrics {
            hits: counter(
                &r,
                "smtpgate_upstream_pool_hits_total",
                "Sessions that reused an idle upstream connection.",
            ),
            misses: counter(
                &r,
                "smtpgate_upstream_pool_misses_total",
                "Sessions that opened a new upstream connection.",
            ),
            stale: counter(
                &r,
                "smtpgate_upstream_pool_stale_total",
                "Reused upstream connections found dead and replaced.",
            ),
            idle: gauge(
                &r,
                "smtpgate_upstream_pool_idle",
                "Idle upstream connections kept now.",
            ),
            closed: counter_vec(
                &r,
                "smtpgate_upstream_pool_closed_total",
                "Idle upstream connections closed by the pool, by reason.",
                &["reason"],
            ),
        };
        for reason in ["idle_age", "lifetime", "full", "shutdown"] {
            pool.closed.with_label_values(&[reason]);
        }
        let tls_handshakes = counter_vec(
            &r,
            "smtpgate_tls_handshakes_total",
            "TLS handshakes with clients (STARTTLS and implicit), by result.",
            &["result"],
        );
        let auth = counter_vec(
            &r,
            "smtpgate_auth_total",
            "SMTP AUTH attempts by result.",
            &["result"],
        );
        let auth_backend = counter_vec(
            &r,
            "smtpgate_auth_backend_total",
            "SMTP AUTH logins by backend and result (accepted, rejected, unavailable).",
            &["backend", "result"],
        );
        for result in ["success", "failure"] {
            tls_handshakes.with_label_values(&[if result == "success" { "ok" } else { "failed" }]);
            auth.with_label_values(&[result]);
        }
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "smtpgate_check_duration_seconds",
                "How long each check (iprev, ...) took, whatever its outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["check"],
        )
        .expect("valid metric");
        r.register(Box::new(check_duration.clone()))
            .expect("unique metric");
        let checks = counter_vec(
            &r,
            "smtpgate_checks_total",
            "Check runs by check and outcome: ok, error (the check failed) or timeout.",
            &["check", "outcome"],
        );
        let dns_list_errors = counter_vec(
            &r,
            "smtpgate_dns_list_errors_total",
            "DNS list answers that are errors, not listings (127.255.255.0/24, outside 127.0.0.0/8).",
            &["zone"],
        );
        let dkim = DkimMetrics::new(&r);
        let milter = MilterMetrics::new(&r);
        let reload_failures = counter_vec(
            &r,
            "smtpgate_config_reload_failures_total",
            "Reloads (SIGHUP) refused, by reason; the configuration in force stayed.",
            &["reason"],
        );
        reload_failures.with_label_values(&["invalid"]);
        reload_failures.with_label_values(&["rule_tests"]);
        let reloads = counter(
            &r,
            "smtpgate_config_reloads_total",
            "Reloads (SIGHUP) that took effect.",
        );
        let last_reload = gauge(
            &r,
            "smtpgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last reload that took effect (0: none since start).",
        );
        let dkim_verifications = counter(
            &r,
            "smtpgate_dkim_verifications_total",
            "Messages whose DKIM signatures were verified, once for the DKIM and DMARC checks.",
        );
        Metrics {
            reload_failures,
            reloads,
            last_reload,
            families: Mutex::new(HashMap::new()),
            dkim,
            milter,
            dkim_verifications,
            dns_list_errors,
            check_duration,
            checks,
            registry: r,
            connections,
            sessions,
            transactions,
            replies,
            rule_hits,
            rules,
            upstream_latency,
            upstream_errors,
            message_bytes,
            pool,
            tls_handshakes,
            auth,
            auth_backend,
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.rules.flush();
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec fails only on a malformed family, which the
        // constructors above rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The connection counter of one listener, resolved once per listener.
    pub fn connections(&self, listener: &str) -> IntCounter {
        self.connections.with_label_values(&[listener])
    }

    /// The reply counters every session's connection shares.
    pub fn replies(&self) -> ReplyCounters {
        self.replies.clone()
    }

    /// Counts a finished transaction.
    pub fn transaction(&self, verdict: &str) {
        self.transactions.with_label_values(&[verdict]).inc();
    }

    /// Counts a rule hit.
    pub fn rule_hit(&self, rule: &str, action: &str) {
        self.rule_hits.with_label_values(&[rule, action]).inc();
    }

    /// Records how long an upstream phase (`connect`, `mail`, `data`) took.
    pub fn upstream_latency(&self, phase: &str, took: Duration) {
        self.upstream_latency
            .with_label_values(&[phase])
            .observe(took.as_secs_f64());
    }

    /// The latency histogram of one phase, e.g. to time a call.
    pub fn upstream_phase(&self, phase: &str) -> Histogram {
        self.upstream_latency.with_label_values(&[phase])
    }

    /// Counts an upstream failure of a kind (one of [`UPSTREAM_ERROR_KINDS`]).
    pub fn upstream_error_kind(&self, kind: &str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// Adds message bytes `received` from a client or `delivered`.
    pub fn message_bytes(&self, direction: &str, n: u64) {
        self.message_bytes.with_label_values(&[direction]).inc_by(n);
    }

    /// Creates the series of a check that may run, so they show at 0.
    pub fn check_known(&self, check: &str) {
        self.check_duration.with_label_values(&[check]);
        for outcome in CHECK_OUTCOMES {
            self.checks.with_label_values(&[check, outcome]);
        }
    }

    /// Counts one run of a check: its outcome (one of [`CHECK_OUTCOMES`])
    /// and how long it took.
    pub fn check_ran(&self, check: &str, outcome: &str, took: Duration) {
        self.check_duration
            .with_label_values(&[check])
            .observe(took.as_secs_f64());
        self.checks.with_label_values(&[check, outcome]).inc();
    }

    /// The counter of DNS list answers that are errors, by zone, for the
    /// DNS list checks to count into.
    pub fn dns_list_errors(&self) -> IntCounterVec {
        self.dns_list_errors.clone()
    }

    /// Counts a TLS handshake with a client.
    pub fn tls_handshake(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_handshakes.with_label_values(&[result]).inc();
    }

    /// Counts an AUTH attempt that ended in success or failure.
    pub fn auth(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.auth.with_label_values(&[result]).inc();
    }

    /// Counts one AUTH backend's answer: `accepted`, `rejected` or
    /// `unavailable`.
    pub fn auth_backend(&self, backend: &str, result: &str) {
        self.auth_backend
            .with_label_values(&[backend, result])
            .inc();
    }

    /// Counts a reload that was refused (the configuration in force
    /// stays), by `reason`: `invalid` for a configuration that cannot be
    /// used.
    pub fn reload_failed(&self, reason: &str) {
        self.reload_failures.with_label_values(&[reason]).inc();
    }

    /// Counts a reload that took effect, and notes its time.
    pub fn reloaded(&self) {
        self.reloads.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.last_reload.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Registers a counter family a component owns (its name must be
    /// documented in `docs/metrics.md`) with the label values it knows in
    /// advance created at 0. Asked again for the same name (the component
    /// rebuilt by a reload), the family registered first, so its counts go
    /// on; `None` when the name belongs to another kind of metric.
    pub fn counter_family(
        &self,
        name: &str,
        help: &str,
        label: &str,
        known: &[&str],
    ) -> Option<IntCounterVec> {
        let mut families = match self.families.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let c = match families.get(name) {
            Some(c) => c.clone(),
            None => {
                let c = IntCounterVec::new(Opts::new(name, help), &[label]).ok()?;
                self.registry.register(Box::new(c.clone())).ok()?;
                families.insert(name.to_string(), c.clone());
                c
            }
        };
        for v in known {
            c.with_label_values(&[v]);
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_labels_at_zero_and_counts() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("smtpgate_transactions_total{verdict=\"delivered\"} 0\n"));
        assert!(text.contains("# TYPE smtpgate_upstream_latency_seconds histogram\n"));
        m.transaction("delivered");
        m.replies().count(250);
        m.replies().count(354);
        m.replies().count(554);
        m.replies().count(999);
        m.rule_hit("lottery", "score");
        m.upstream_latency("connect", Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("smtpgate_transactions_total{verdict=\"delivered\"} 1\n"));
        assert!(text.contains("smtpgate_replies_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("smtpgate_replies_total{class=\"3xx\"} 1\n"));
        assert!(text.contains("smtpgate_replies_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("smtpgate_rule_hits_total{action=\"score\",rule=\"lottery\"} 1\n"));
        assert!(text.contains(
            "smtpgate_upstream_latency_seconds_bucket{phase=\"connect\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "smtpgate_upstream_latency_seconds_bucket{phase=\"connect\",le=\"0.0025\"} 0\n"
        ));
    }

    #[test]
    fn a_family_asked_for_again_counts_on_and_reloads_are_counted() {
        let m = Metrics::new();
        let a = m
            .counter_family("smtpgate_greylist_total", "h", "result", &["new"])
            .unwrap();
        a.with_label_values(&["new"]).inc();
        let b = m
            .counter_family("smtpgate_greylist_total", "h", "result", &["new"])
            .unwrap();
        b.with_label_values(&["new"]).inc();
        assert!(m
            .render()
            .contains("smtpgate_greylist_total{result=\"new\"} 2\n"));

        let text = m.render();
        assert!(text.contains("smtpgate_config_reload_failures_total{reason=\"invalid\"} 0\n"));
        assert!(text.contains("smtpgate_config_last_reload_success_timestamp_seconds 0\n"));
        m.reload_failed("invalid");
        m.reloaded();
        let text = m.render();
        assert!(text.contains("smtpgate_config_reload_failures_total{reason=\"invalid\"} 1\n"));
        assert!(text.contains("smtpgate_config_reloads_total 1\n"));
        assert!(!text.contains("smtpgate_config_last_reload_success_timestamp_seconds 0\n"));
    }
}
