//! Errors of the configuration loader: [`ConfigError`] (file, line, reason),
//! what start-up prints, and [`ValidationError`] (key path, reason), what
//! [`Config::validate`](super::Config::validate) returns before a line is known.

use std::fmt;

/// A configuration file that cannot be used: which file, which line (when
/// known) and why. Displayed as `gateway.yaml:12: limits.max_recipients: must
/// be at least 1`, or `gateway.yaml: reason` when there is no line (I/O errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in: the path as given, or `<inline>` for text.
    pub file: String,
    /// 1-based line of the offending key or value; `None` when the error is
    /// not about a place in the text (the file could not be read).
    pub line: Option<usize>,
    /// What is wrong, starting with the key path when there is one
    /// (`limits.max_recipients: must be at least 1`).
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A cross-field check that failed: the dotted key path of the offending
/// value (`limits.max_recipients`, `listen[1].addr`) and what is wrong with it.
/// Displayed as `path: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted key path with `[n]` for list items, as written in the YAML
    /// (`timeouts.command_s`, `listen[0].addr`); used to find the line.
    pub path: String,
    /// What is wrong with the value, without the path (`must be at least 1`).
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for the value at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line() {
        let with = ConfigError {
            file: "gateway.yaml".into(),
            line: Some(12),
            reason: "limits.max_recipients: must be at least 1".into(),
        };
        assert_eq!(
            with.to_string(),
            "gateway.yaml:12: limits.max_recipients: must be at least 1"
        );
        let without = ConfigError {
            file: "gateway.yaml".into(),
            line: None,
            reason: "cannot read: gone".into(),
        };
        assert_eq!(without.to_string(), "gateway.yaml: cannot read: gone");
        let v = ValidationError::new("listen", "must not be empty");
        assert_eq!(v.to_string(), "listen: must not be empty");
    }
}
