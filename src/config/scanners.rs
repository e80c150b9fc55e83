//! `scanners:`: external content scanners the data stage asks, rspamd
//! (over its HTTP protocol) and clamd (over `zINSTREAM`). See
//! `docs/scanners.md`.
//!
//! ```yaml
//! scanners:
//!   rspamd:
//!     url: "http://127.0.0.1:11333"  # or its Unix socket: "unix:/run/rspamd/normal.sock"
//!     password: ""            # sent as the Password header when set
//!     timeout_ms: 10000
//!     max_size: 20971520      # larger messages are not sent (rspamd.action: skipped)
//!     on_error: fail_open     # or tempfail
//!     apply_action: true      # rspamd's action is the verdict unless a rule decides
//!     add_score: false        # add rspamd's score to the transaction score
//!     subject_template: "*** SPAM *** %s"  # `rewrite subject` when rspamd gives no subject
//!   clamav:
//!     addr: "127.0.0.1:3310"  # or a Unix socket: "/run/clamav/clamd.ctl"
//!     timeout_ms: 30000
//!     chunk_size: 65536       # bytes per INSTREAM chunk
//!     max_size: 26214400      # within clamd's StreamMaxLength
//!     on_error: tempfail      # fail closed; or fail_open
//!     action: reject          # or quarantine
//! ```

use super::{CheckSettings, OnError, ValidationError};
use serde::{Deserialize, Serialize};

/// The scanners the data stage asks. Default: none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScannersOptions {
    /// rspamd's normal worker. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rspamd: Option<RspamdOptions>,
    /// clamd. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clamav: Option<ClamavOptions>,
}

/// How to ask rspamd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RspamdOptions {
    /// The normal worker's base URL, `http://host:port` (a path prefix is
    /// kept), or `unix:/absolute/path` for its Unix socket. Default
    /// `http://127.0.0.1:11333`.
    pub url: String,
    /// Sent as the `Password` header when set (rspamd's `password` of the
    /// controller, or a proxy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// How long one scan may take in all. Default 10000.
    pub timeout_ms: u64,
    /// Messages larger than this many bytes are not sent; `rspamd.action`
    /// says `skipped`. Default 20 MiB.
    pub max_size: u64,
    /// What a failed scan does: `fail_open` (default: facts say
    /// `temperror`, the rules decide) or `tempfail` (`451 4.7.1`).
    pub on_error: OnError,
    /// rspamd's action is the verdict when no rule decided at the data
    /// stage. Default true.
    pub apply_action: bool,
    /// rspamd's score is added to the transaction's score. Default false.
    pub add_score: bool,
    /// The new Subject of a `rewrite subject` message when rspamd's answer
    /// carries none: `%s` is the old Subject, `%d` the score. Default
    /// `*** SPAM *** %s` (rspamd's own default).
    pub subject_template: String,
}

impl Default for RspamdOptions {
    fn default() -> Self {
        RspamdOptions {
            url: "http://127.0.0.1:11333".to_string(),
            password: None,
            timeout_ms: 10_000,
            max_size: 20 * 1024 * 1024,
            on_error: OnError::FailOpen,
            apply_action: true,
            add_score: false,
            subject_template: "*** SPAM *** %s".to_string(),
        }
    }
}

impl RspamdOptions {
    /// The check's timeout and failure policy.
    pub fn settings(&self) -> CheckSettings {
        CheckSettings {
            timeout_ms: self.timeout_ms,
            on_error: self.on_error,
        }
    }
}

/// How to ask clamd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClamavOptions {
    /// `host:port` of clamd's TCP socket, or the path of its Unix socket
    /// (an absolute path, or `unix:PATH`). Default `127.0.0.1:3310`.
    pub addr: String,
    /// How long one scan may take in all. Default 30000.
    pub timeout_ms: u64,
    /// Bytes per `INSTREAM` chunk. Default 65536; between 1 and 16 MiB.
    pub chunk_size: usize,
    /// Messages larger than this many bytes are not sent (`clamav.virus`
    /// says `skipped`): keep it within clamd's `StreamMaxLength`, which
    /// otherwise refuses the stream. Default 25 MiB.
    pub max_size: u64,
    /// What a failed scan does: `tempfail` (default: `451 4.7.1`, a virus
    /// scanner that fails open is no scanner) or `fail_open`.
    pub on_error: OnError,
    /// What a found virus does: `reject` (default, `554 5.7.1 Virus
    /// found: NAME`) or `quarantine`.
    pub action: VirusAction,
}

impl Default for ClamavOptions {
    fn default() -> Self {
        ClamavOptions {
            addr: "127.0.0.1:3310".to_string(),
            timeout_ms: 30_000,
            chunk_size: 65_536,
            max_size: 25 * 1024 * 1024,
            on_error: OnError::Tempfail,
            action: VirusAction::Reject,
        }
    }
}

impl ClamavOptions {
    /// The check's timeout and failure policy.
    pub fn settings(&self) -> CheckSettings {
        CheckSettings {
            timeout_ms: self.timeout_ms,
            on_error: self.on_error,
        }
    }

    /// The Unix socket path, when `addr` names one.
    pub fn unix_path(&self) -> Option<&str> {
        if let Some(p) = self.addr.strip_prefix("unix:") {
            return Some(p);
        }
        self.addr.starts_with('/').then_some(self.addr.as_str())
    }
}

/// What a message with a virus gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirusAction {
    /// `554 5.7.1 Virus found: NAME`.
    Reject,
    /// Accepted and stored in the quarantine directory.
    Quarantine,
}

/// Where an HTTP server listens, from a scanner's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEndpoint {
    /// `http://host:port/prefix`: `host:port` and the path prefix (no
    /// final `/`, empty for none).
    Tcp {
        /// `host:port`.
        authority: String,
        /// The path prefix.
        prefix: String,
    },
    /// `unix:/path`: the server's Unix socket (no path prefix).
    Unix(String),
}

impl HttpEndpoint {
    /// The endpoint `url` names: `http://host[:port][/prefix]` or
    /// `unix:/absolute/path`.
    pub fn parse(url: &str) -> Result<HttpEndpoint, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!(
                    "`{url}` does not name a socket by its absolute path (unix:/path)"
                ));
            }
            return Ok(HttpEndpoint::Unix(path.to_string()));
        }
        let (authority, prefix) = split_http_url(url)?;
        Ok(HttpEndpoint::Tcp { authority, prefix })
    }
}

/// `host` and `port` and path prefix of an `http://` URL.
pub fn split_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}` is neither an http:// URL (https is not supported) nor unix:/path")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}` has no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Range checks of `scanners:`.
pub(super) fn check(s: &ScannersOptions) -> Result<(), ValidationError> {
    let timeout = |path: &str, ms: u64| {
        if (1..=600_000).contains(&ms) {
            Ok(())
        } else {
            Err(ValidationError::new(
                path,
                format!("must be between 1 and 600000, not {ms}"),
            ))
        }
    };
    if let Some(r) = &s.rspamd {
        HttpEndpoint::parse(&r.url).map_err(|e| ValidationError::new("scanners.rspamd.url", e))?;
        timeout("scanners.rspamd.timeout_ms", r.timeout_ms)?;
        if r.max_size == 0 {
            return Err(ValidationError::new(
                "scanners.rspamd.max_size",
                "must be at least 1",
            ));
        }
        if r.subject_template.chars().any(char::is_control) || r.subject_template.len() > 200 {
            return Err(ValidationError::new(
                "scanners.rspamd.subject_template",
                "must be one line of at most 200 bytes",
            ));
        }
    }
    if let Some(c) = &s.clamav {
        if c.unix_path().is_none()
            && !c
                .addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(ValidationError::new(
                "scanners.clamav.addr",
                format!(
                    "`{}` is neither host:port nor an absolute socket path",
                    c.addr
                ),
            ));
        }
        timeout("scanners.clamav.timeout_ms", c.timeout_ms)?;
        if !(1..=16 * 1024 * 1024).contains(&c.chunk_size) {
            return Err(ValidationError::new(
                "scanners.clamav.chunk_size",
                format!("must be between 1 and 16777216, not {}", c.chunk_size),
            ));
        }
        if c.max_size == 0 {
            return Err(ValidationError::new(
                "scanners.clamav.max_size",
                "must be at least 1",
            ));
        }
    }
    Ok(())
}

/// The `scanners:` line of `smtpgate check`, when a scanner is configured.
pub(super) fn summary(s: &ScannersOptions, out: &mut String) {
    use std::fmt::Write as _;
    let policy = |o: OnError| match o {
        OnError::FailOpen => "fail open",
        OnError::Tempfail => "tempfail",
    };
    let mut parts = Vec::new();
    if let Some(r) = &s.rspamd {
        parts.push(format!(
            "rspamd at {} ({} ms, up to {} bytes, {}, action {})",
            r.url,
            r.timeout_ms,
            r.max_size,
            policy(r.on_error),
            if r.apply_action {
                "applied"
            } else {
                "left to rules"
            }
        ));
    }
    if let Some(c) = &s.clamav {
        parts.push(format!(
            "clamd at {} ({} ms, up to {} bytes, {}, virus: {})",
            c.addr,
            c.timeout_ms,
            c.max_size,
            policy(c.on_error),
            match c.action {
                VirusAction::Reject => "reject",
                VirusAction::Quarantine => "quarantine",
            }
        ));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "scanners:  {}", parts.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:11333").unwrap(),
            ("127.0.0.1:11333".into(), "".into())
        );
        assert_eq!(
            split_http_url("http://rspamd/prefix/").unwrap(),
            ("rspamd:80".into(), "/prefix".into())
        );
        assert!(split_http_url("https://x").is_err());
        assert!(split_http_url("http:///x").is_err());
    }

    #[test]
    fn a_unix_url_names_an_absolute_socket_path() {
        assert_eq!(
            HttpEndpoint::parse("unix:/run/rspamd/normal.sock").unwrap(),
            HttpEndpoint::Unix("/run/rspamd/normal.sock".into())
        );
        assert_eq!(
            HttpEndpoint::parse("http://127.0.0.1:11333/p").unwrap(),
            HttpEndpoint::Tcp {
                authority: "127.0.0.1:11333".into(),
                prefix: "/p".into()
            }
        );
        for bad in ["unix:", "unix:/", "unix:relative.sock", "/run/rspamd.sock"] {
            assert!(HttpEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = ScannersOptions {
            clamav: Some(ClamavOptions {
                addr: "nowhere".into(),
                ..ClamavOptions::default()
            }),
            ..ScannersOptions::default()
        };
        assert_eq!(check(&s).unwrap_err().path, "scanners.clamav.addr");
    }
}
