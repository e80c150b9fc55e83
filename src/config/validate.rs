//! The cross-field checks behind [`Config::validate`]: each returns the key
//! path of the first bad value and what is wrong with it.

use super::{Config, ValidationError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest timeout or grace period accepted, in seconds (one day). Keeps
/// `Instant + Duration` arithmetic far from overflow.
pub(super) const MAX_SECONDS: u64 = 86_400;

/// Log levels accepted in `log.level` (case-insensitive, as env_logger).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Shorthand for building an error.
fn err(path: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::new(path, reason)
}

/// Checks the whole configuration; the first problem found wins, in file
/// order (hostname, listen, upstream, spool_dir, limits, timeouts, ...).
pub(super) fn config(c: &Config) -> Result<(), ValidationError> {
    if let Err(reason) = hostname(&c.hostname) {
        return Err(err("hostname", reason));
    }

    if c.listen.is_empty() {
        return Err(err("listen", "at least one listener is required"));
    }
    for (i, l) in c.listen.iter().enumerate() {
        // Port 0 means "any free port": two of those never collide.
        if l.addr.port() == 0 {
            continue;
        }
        if let Some(j) = c.listen[..i].iter().position(|o| o.addr == l.addr) {
            return Err(err(
                &format!("listen[{i}].addr"),
                format!("{} is already listed at listen[{j}]", l.addr),
            ));
        }
    }

    if let Some(up) = &c.upstream {
        if let Err(reason) = host_port(&up.addr) {
            return Err(err("upstream.addr", reason));
        }
        if let Some(helo) = &up.helo {
            if let Err(reason) = helo_name(helo) {
                return Err(err("upstream.helo", reason));
            }
        }
    }

    for (key, dir) in [
        ("spool_dir", &c.spool_dir),
        ("quarantine_dir", &c.quarantine_dir),
    ] {
        if dir.as_os_str().is_empty() {
            return Err(err(key, "must not be empty"));
        }
        if dir.to_string_lossy().starts_with('~') {
            return Err(err(
                key,
                "a leading '~' is not expanded; write the full path",
            ));
        }
    }

    let l = &c.limits;
    let minimums: [(&str, u64, u64, &str); 6] = [
        (
            "limits.max_command_line",
            l.max_command_line as u64,
            512,
            " (RFC 5321 4.5.3.1.4)",
        ),
        (
            "limits.max_text_line",
            l.max_text_line as u64,
            1000,
            " (RFC 5321 4.5.3.1.6)",
        ),
        ("limits.max_recipients", l.max_recipients as u64, 1, ""),
        ("limits.max_message_bytes", l.max_message_bytes, 1024, ""),
        ("limits.max_connections", l.max_connections as u64, 1, ""),
        ("limits.max_errors", u64::from(l.max_errors), 1, ""),
    ];
    for (path, value, min, why) in minimums {
        if value < min {
            return Err(err(path, format!("must be at least {min}{why}")));
        }
    }

    let t = &c.timeouts;
    let timeouts = [
        ("timeouts.command_s", t.command_s),
        ("timeouts.data_block_s", t.data_block_s),
        ("timeouts.upstream_connect_s", t.upstream_connect_s),
        ("timeouts.upstream_greeting_s", t.upstream_greeting_s),
        ("timeouts.upstream_command_s", t.upstream_command_s),
        ("timeouts.upstream_data_init_s", t.upstream_data_init_s),
        ("timeouts.upstream_data_block_s", t.upstream_data_block_s),
        ("timeouts.upstream_data_end_s", t.upstream_data_end_s),
    ];
    for (path, secs) in timeouts {
        if secs == 0 {
            return Err(err(path, "must be greater than 0"));
        }
        if secs > MAX_SECONDS {
            return Err(err(
                path,
                format!("must be at most {MAX_SECONDS} (one day)"),
            ));
        }
    }

    if c.shutdown_grace_s > MAX_SECONDS {
        return Err(err(
            "shutdown_grace_s",
            format!("must be at most {MAX_SECONDS} (one day)"),
        ));
    }

    if let Some(dir) = &c.rules_dir {
        if dir.as_os_str().is_empty() {
            return Err(err("rules_dir", "must not be empty"));
        }
        if dir.to_string_lossy().starts_with('~') {
            return Err(err(
                "rules_dir",
                "a leading '~' is not expanded; write the full path",
            ));
        }
    }
    if let Some(audit) = &c.audit {
        if audit.path.as_os_str().is_empty() {
            return Err(err(
                "audit.path",
                "must not be empty (use \"-\" for standard output)",
            ));
        }
    }
    if c.limits.max_mime_scan_bytes < 1024 {
        return Err(err("limits.max_mime_scan_bytes", "must be at least 1024"));
    }

    if let Some(level) = &c.log.level {
        if let Err(reason) = log_filter(level) {
            return Err(err("log.level", reason));
        }
    }
    Ok(())
}

/// Whether `s` is a syntactically valid domain name: dot-separated labels
/// of letters, digits and inner hyphens, each 1–63 bytes, 253 in all, no
/// trailing dot, and a last label that is not all digits (RFC 1123 2.1,
/// which keeps `123` and `192.0.2.1` out).
pub(super) fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s
            .rsplit('.')
            .next()
            .unwrap_or("")
            .bytes()
            .all(|b| b.is_ascii_digit())
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `hostname`: a domain name, not an IP address.
fn hostname(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!("{s:?} is an IP address; a domain name is needed"));
    }
    if !is_domain(s) {
        return Err(format!(
            "{s:?} is not a valid domain name (letters, digits, '-' and '.')"
        ));
    }
    Ok(())
}

/// `upstream.helo`: a domain name or an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`), as RFC 5321 allows in EHLO.
fn helo_name(s: &str) -> Result<(), String> {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ok = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                inner[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "{s:?} is not a valid address literal (e.g. [192.0.2.1] or [IPv6:2001:db8::1])"
            ))
        };
    }
    hostname(s).map_err(|reason| format!("{reason}, or an address literal like [192.0.2.1]"))
}

/// `upstream.addr`: `host:port`, the host a domain name, an IPv4 address
/// or a bracketed IPv6 address, the port 1–65535.
pub(super) fn host_port(s: &str) -> Result<(), String> {
    let example = "e.g. \"10.0.0.5:25\", \"mail.internal:25\" or \"[::1]:25\"";
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return Err(format!("{s:?} must be host:port, {example}"));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not a valid IPv6 address"));
        }
        (None, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; write host:port, {example}"));
        };
        if host.contains(':') {
            return Err(format!(
                "{s:?}: an IPv6 address needs brackets, e.g. \"[::1]:25\""
            ));
        }
        (Some(host), port)
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("{s:?} has no host; {example}"));
        }
        if host.parse::<Ipv4Addr>().is_err() && !is_domain(host) {
            return Err(format!("{host:?} is not a valid host name or IPv4 address"));
        }
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "{port:?} is not a valid port (1-65535); write host:port, {example}"
        )),
    }
}

/// Whether `s` is one of [`LEVELS`], ignoring case.
fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s))
}

/// `log.level`: comma-separated env_logger directives, each a level or
/// `target=level`, optionally followed by `/regex`. A bare target (which
/// env_logger reads as `target=trace`) is refused: it is far more often a
/// misspelt level.
fn log_filter(s: &str) -> Result<(), String> {
    let levels = LEVELS.join(", ");
    let (directives, regex) = match s.split_once('/') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let mut any = false;
    for directive in directives.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        any = true;
        match directive.split_once('=') {
            None if is_level(directive) => {}
            None => {
                return Err(format!(
                    "{directive:?} is not a log level (one of {levels}); \
                     for a module write e.g. \"smtpgate=debug\""
                ))
            }
            Some((target, level)) => {
                let target_ok = !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
                if !target_ok {
                    return Err(format!(
                        "{target:?} is not a module path (letters, digits, '_' and '::')"
                    ));
                }
                if !is_level(level) {
                    return Err(format!(
                        "{level:?} in {directive:?} is not a log level (one of {levels})"
                    ));
                }
            }
        }
    }
    if !any {
        return Err(format!("must name a level: one of {levels}"));
    }
    if let Some(regex) = regex {
        if let Err(e) = regex::Regex::new(regex) {
            return Err(format!("the filter after '/' is not a valid regex: {e}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in ["localhost", "mx.example.com", "a-b.c1", "x", "123.example"] {
            assert!(is_domain(ok), "{ok}");
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 5].join(".");
        for bad in [
            "",
            "-a.com",
            "a-.com",
            "a..com",
            "a.com.",
            "under_score.com",
            "sp ace",
            "é.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
        for bad in ["123", "mx.123", "1.2.3.4"] {
            assert!(!is_domain(bad), "{bad}");
        }
        assert!(hostname("192.0.2.1").is_err());
        assert!(hostname("::1").is_err());
    }

    #[test]
    fn helo_names() {
        for ok in [
            "gw.example.com",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "[ipv6:::1]",
        ] {
            assert!(helo_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "[gw.example.com]",
            "[2001:db8::1]",
            "[IPv6:1.2.3.4]",
            "192.0.2.1",
            "a_b",
        ] {
            assert!(helo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        for ok in [
            "10.0.0.5:25",
            "mail.internal:25",
            "[::1]:25",
            "localhost:65535",
        ] {
            assert_eq!(host_port(ok), Ok(()), "{ok}");
        }
        let bad: &[(&str, &str)] = &[
            ("10.0.0.5", "has no port"),
            ("mail.internal", "has no port"),
            ("", "has no port"),
            (":25", "has no host"),
            ("::1:25", "needs brackets"),
            ("[::1]", "must be host:port"),
            ("[::1]:", "not a valid port"),
            ("[zz]:25", "not a valid IPv6"),
            ("host:0", "not a valid port"),
            ("host:65536", "not a valid port"),
            ("host:smtp", "not a valid port"),
            ("bad_host:25", "not a valid host name"),
            (" host:25", "not a valid host name"),
        ];
        for (input, want) in bad {
            let got = host_port(input).unwrap_err();
            assert!(got.contains(want), "{input:?}: {got}");
        }
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "OFF",
            "Debug",
            "smtpgate=debug",
            "warn,smtpgate=trace",
            "info, smtpgate::session=debug,",
            "info/session \\d+",
        ] {
            assert_eq!(log_filter(ok), Ok(()), "{ok}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "must name a level"),
            ("/abc", "must name a level"),
            (" , ", "must name a level"),
            ("infoo", "is not a log level"),
            ("smtpgate", "is not a log level"),
            ("smtpgate=loud", "is not a log level"),
            ("=debug", "is not a module path"),
            ("smtp-gate=debug", "is not a module path"),
            ("info/(", "not a valid regex"),
        ];
        for (input, want) in bad {
            let got = log_filter(input).unwrap_err();
            assert!(got.contains(want), "{input:?}: {got}");
        }
    }
}
