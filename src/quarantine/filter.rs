//! Which entries a listing shows: `--since`, `--rule` and `--from` of
//! `smtpgate quarantine list`, and the same query parameters of the API.

use super::store::Entry;
use std::time::{Duration, SystemTime};

/// Filters for a listing; every one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only entries received within this long before now.
    pub since: Option<Duration>,
    /// Only entries held by, or that fired, this rule (exact name).
    pub rule: Option<String>,
    /// Only entries whose sender contains this text, ignoring case.
    pub from: Option<String>,
}

/// Reads an age such as `2h`, `30d` or `1h 30m` (humantime's format).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not an age like 2h, 30m or 7d: {e}"))
}

impl ListFilter {
    /// True when `entry` passes every filter, `now` being the time the
    /// listing is made.
    pub fn matches(&self, entry: &Entry, now: SystemTime) -> bool {
        if let Some(age) = self.since {
            let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
            if received(entry) < cutoff {
                return false;
            }
        }
        if let Some(rule) = &self.rule {
            let Some(s) = &entry.sidecar else {
                return false;
            };
            let fired = s.rules.iter().any(|r| &r.name == rule);
            if !fired && s.held.by.as_ref() != Some(rule) {
                return false;
            }
        }
        if let Some(from) = &self.from {
            let Some(s) = &entry.sidecar else {
                return false;
            };
            let sender = s.envelope.mail_from.to_lowercase();
            if !sender.contains(&from.to_lowercase()) {
                return false;
            }
        }
        true
    }
}

/// When an entry was received: its sidecar's time, else its file's.
pub fn received(entry: &Entry) -> SystemTime {
    entry
        .sidecar
        .as_ref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.received).ok())
        .map(SystemTime::from)
        .unwrap_or(entry.modified)
}

#[cfg(test)]
mod tests {
    use super::super::model::sample;
    use super::*;

    fn entry(received: &str) -> Entry {
        let mut s = sample("a.1");
        s.received = received.to_string();
        Entry {
            id: "a.1".to_string(),
            sidecar: Some(s),
            problem: None,
            file_size: 1,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn filters_by_age_rule_and_sender() {
        let now = SystemTime::from(
            chrono::DateTime::parse_from_rfc3339("2026-01-02T05:00:00+00:00").unwrap(),
        );
        let e = entry("2026-01-02T03:04:05+00:00");
        let by = |f: ListFilter| f.matches(&e, now);
        assert!(by(ListFilter::default()));
        assert!(by(ListFilter {
            since: Some(parse_age("2h").unwrap()),
            ..Default::default()
        }));
        assert!(!by(ListFilter {
            since: Some(parse_age("1h").unwrap()),
            ..Default::default()
        }));
        assert!(by(ListFilter {
            rule: Some("review".into()),
            ..Default::default()
        }));
        assert!(!by(ListFilter {
            rule: Some("other".into()),
            ..Default::default()
        }));
        assert!(by(ListFilter {
            from: Some("@X.test".into()),
            ..Default::default()
        }));
        assert!(!by(ListFilter {
            from: Some("nobody".into()),
            ..Default::default()
        }));
        assert!(parse_age("soon").is_err());
    }
}
