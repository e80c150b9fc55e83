//! Operations settings: the upstream connection pool (`upstream.pool`) and
//! the metrics and health endpoint (`metrics`), with their checks.

use super::ValidationError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Reuse of idle upstream connections across client sessions. YAML:
/// `upstream: { addr: ..., pool: { enabled: true, max_idle: 16, max_idle_age_s: 30 } }`.
///
/// On by default: smtpgate sits in front of its own mail server, and a
/// connection that finished a transaction cleanly is as good as a new one,
/// without the connect, greeting, EHLO (and TLS and AUTH) round trips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolOptions {
    /// Whether idle connections are kept for the next session. Default true;
    /// `false` closes (QUIT) each connection when its client session ends.
    pub enabled: bool,
    /// Idle connections kept per upstream server; beyond that the oldest is
    /// closed. Default 16; between 1 and 10000.
    pub max_idle: usize,
    /// Seconds an idle connection may wait for its next session before it is
    /// closed with QUIT. Keep it well below the upstream's own idle timeout
    /// (Postfix `smtpd_timeout`: 300 s). Default 30; between 1 and 3600.
    pub max_idle_age_s: u64,
    /// Seconds after it was opened that a connection is no longer put back
    /// (closed with QUIT instead), so no connection lives forever (like
    /// Postfix's `smtp_connection_reuse_time_limit`). Default 300; between 1
    /// and 86400.
    pub max_lifetime_s: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            enabled: true,
            max_idle: 16,
            max_idle_age_s: 30,
            max_lifetime_s: 300,
        }
    }
}

impl PoolOptions {
    /// [`max_idle_age_s`](Self::max_idle_age_s) as a duration.
    pub fn max_idle_age(&self) -> Duration {
        Duration::from_secs(self.max_idle_age_s)
    }

    /// [`max_lifetime_s`](Self::max_lifetime_s) as a duration.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_s)
    }
}

/// The HTTP listener for Prometheus metrics and the load balancer's health
/// check. YAML: `metrics: { addr: "127.0.0.1:9025" }`. Absent: no listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsOptions {
    /// Address and port to serve `GET /metrics` and `GET /healthz` on.
    /// Required. A loopback address unless `allow_remote` is set.
    #[serde(deserialize_with = "super::socket_addr")]
    pub addr: SocketAddr,
    /// Allow a non-loopback `addr` (e.g. for a load balancer's health check
    /// from another host). The endpoint has no authentication: firewall it.
    /// Default false.
    #[serde(default)]
    pub allow_remote: bool,
    /// The quarantine's JSON API on this listener (`/quarantine`...),
    /// behind a bearer token. Absent (the default): no API, those paths
    /// answer 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_api: Option<QuarantineApiOptions>,
}

/// The quarantine API. YAML:
/// `metrics: { addr: ..., quarantine_api: { token_file: /etc/smtpgate/api.token } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineApiOptions {
    /// A file holding the bearer token (surrounding whitespace ignored)
    /// that requests must present as `Authorization: Bearer TOKEN`.
    /// Required; read at start-up, so a missing or empty file stops it.
    pub token_file: PathBuf,
}

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;

impl QuarantineApiOptions {
    /// The token from [`token_file`](Self::token_file), trimmed; an error
    /// (the reason) when it cannot be read or is too short.
    pub fn read_token(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read {}: {e}", self.token_file.display()))?;
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "the token in {} is shorter than {MIN_TOKEN_CHARS} characters",
                self.token_file.display()
            ));
        }
        Ok(token.to_string())
    }
}

/// Checks `upstream.pool` (when there is an upstream).
pub(super) fn check_pool(p: &PoolOptions) -> Result<(), ValidationError> {
    let err =
        |key: &str, reason: String| ValidationError::new(format!("upstream.pool.{key}"), reason);
    if !(1..=10_000).contains(&p.max_idle) {
        return Err(err("max_idle", "must be between 1 and 10000".into()));
    }
    if !(1..=3600).contains(&p.max_idle_age_s) {
        return Err(err("max_idle_age_s", "must be between 1 and 3600".into()));
    }
    if !(1..=super::validate::MAX_SECONDS).contains(&p.max_lifetime_s) {
        return Err(err(
            "max_lifetime_s",
            format!("must be between 1 and {}", super::validate::MAX_SECONDS),
        ));
    }
    Ok(())
}

/// Checks `metrics`: a loopback address unless remote access is allowed,
/// and not one of the SMTP listeners' addresses.
pub(super) fn check_metrics(
    m: &MetricsOptions,
    listen: &[super::Listener],
) -> Result<(), ValidationError> {
    if !m.addr.ip().is_loopback() && !m.allow_remote {
        return Err(ValidationError::new(
            "metrics.addr",
            format!(
                "{} is not a loopback address and the endpoint has no authentication; \
                 set metrics.allow_remote: true to serve it there anyway",
                m.addr
            ),
        ));
    }
    if let Some(api) = &m.quarantine_api {
        if api.token_file.as_os_str().is_empty() {
            return Err(ValidationError::new(
                "metrics.quarantine_api.token_file",
                "must name the file holding the API's bearer token",
            ));
        }
    }
    if m.addr.port() != 0 {
        if let Some(i) = listen.iter().position(|l| l.addr == m.addr) {
            return Err(ValidationError::new(
                "metrics.addr",
                format!("{} is already the SMTP listener listen[{i}]", m.addr),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(yaml: &str) -> String {
        Config::from_yaml(yaml, "gw.yaml")
            .expect_err("config must be refused")
            .to_string()
    }

    #[test]
    fn pool_defaults_to_on_with_modest_limits() {
        let c = Config::from_yaml("upstream: { addr: \"127.0.0.1:25\" }\n", "gw.yaml").unwrap();
        let p = c.upstream.unwrap().pool;
        assert!(p.enabled);
        assert_eq!(
            (p.max_idle, p.max_idle_age_s, p.max_lifetime_s),
            (16, 30, 300)
        );
        assert!(c.metrics.is_none());
    }

    #[test]
    fn bad_pool_values_name_the_file_line_and_key() {
        let yaml =
            "hostname: gw.test\nupstream:\n  addr: \"127.0.0.1:25\"\n  pool:\n    max_idle: 0\n";
        assert_eq!(
            error(yaml),
            "gw.yaml:5: upstream.pool.max_idle: must be between 1 and 10000"
        );
        let yaml = "upstream:\n  addr: \"127.0.0.1:25\"\n  pool: { max_idle_age_s: 7200 }\n";
        assert_eq!(
            error(yaml),
            "gw.yaml:3: upstream.pool.max_idle_age_s: must be between 1 and 3600"
        );
        let yaml = "upstream:\n  addr: \"127.0.0.1:25\"\n  pool:\n    idle: 3\n";
        let e = error(yaml);
        assert!(
            e.starts_with("gw.yaml:4: ") && e.contains("unknown field `idle`"),
            "{e}"
        );
    }

    #[test]
    fn metrics_must_be_on_loopback_unless_allowed() {
        let e = error("metrics:\n  addr: \"0.0.0.0:9025\"\n");
        assert!(
            e.starts_with("gw.yaml:2: metrics.addr: 0.0.0.0:9025 is not a loopback address"),
            "{e}"
        );
        let c = Config::from_yaml(
            "metrics: { addr: \"0.0.0.0:9025\", allow_remote: true }\n",
            "gw.yaml",
        )
        .unwrap();
        assert!(c.metrics.unwrap().allow_remote);
        let e = error(
            "listen: [{ addr: \"127.0.0.1:2525\" }]\nmetrics: { addr: \"127.0.0.1:2525\" }\n",
        );
        assert!(e.contains("already the SMTP listener listen[0]"), "{e}");
        let e =
            error("metrics:\n  addr: \"127.0.0.1:9025\"\n  quarantine_api: { token_file: \"\" }\n");
        assert!(
            e.starts_with("gw.yaml:3: metrics.quarantine_api.token_file: must name"),
            "{e}"
        );
        let e = error("metrics:\n  addr: \"127.0.0.1:9025\"\n  quarantine_api:\n    token: x\n");
        assert!(
            e.starts_with("gw.yaml:4: ") && e.contains("unknown field `token`"),
            "{e}"
        );
        let e = error("metrics: { port: 9025 }\n");
        assert!(e.starts_with("gw.yaml:1: "), "{e}");
    }
}
