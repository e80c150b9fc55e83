//! A reader of the Prometheus text exposition format (0.0.4), for
//! `smtpgate rules stats`, which reads the live counters of a running
//! gateway from its `/metrics`.
//!
//! Strict: a line that is not a comment, blank, or a well-formed sample is
//! an error naming the line, so a scrape of something else is never read
//! as "no hits". `# HELP` and `# TYPE` lines are skipped; timestamps are
//! accepted and dropped.

/// One sample line: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`smtpgate_rule_hits_total`).
    pub name: String,
    /// The labels, in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN` and `±Inf` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole exposition; the error names the first bad line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(sample(line).map_err(|e| format!("line {}: {e}: {line:.80}", i + 1))?);
    }
    Ok(out)
}

/// One sample line.
fn sample(line: &str) -> Result<Sample, String> {
    let name_len = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0, true))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    if name_len == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_len].to_string();
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:.20}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Reads `name="value",...}` into `labels`; returns what follows the `}`.
fn parse_labels<'t>(
    mut rest: &'t str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'t str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let len = rest
            .char_indices()
            .find(|&(i, c)| !is_name_char(c, i == 0, false))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        if len == 0 {
            return Err("bad label name".into());
        }
        let label = rest[..len].to_string();
        rest = rest[len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("no = after label {label}"))?
            .trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {label}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {label}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err(format!("label {label}: bad escape")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| *n == label) {
            return Err(format!("label {label} twice"));
        }
        labels.push((label, value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// A sample value: a Go-style float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        // Rust's parser also takes "inf", "infinity" and "nan" spelled
        // otherwise; the format does not.
        _ if v
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            Err(format!("bad value {v:.20}"))
        }
        _ => v.parse().map_err(|_| format!("bad value {v:.20}")),
    }
}

/// Whether `c` may appear in a metric name (`metric`, colons allowed) or a
/// label name, at the start (`first`) or later.
fn is_name_char(c: char, first: bool, metric: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (!first && c.is_ascii_digit())
}

/// One sample written back in the format (labels escaped).
fn write(s: &Sample) -> String {
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(n, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{n}=\"{v}\"")
        })
        .collect();
    let value = if s.value.is_nan() {
        "NaN".to_string()
    } else if s.value.is_infinite() {
        if s.value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{:e}", s.value)
    };
    format!("{}{{{}}} {value}", s.name, labels.join(","))
}

/// Checks what [`parse`] promises on any input (the fuzz target and the
/// seed replay call this): no panic; every sample read has a valid name
/// and unique label names; written back and read again, it is the same.
pub fn selfcheck(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(samples) = parse(text) else {
        return;
    };
    let same = |a: &Sample, b: &Sample| {
        a.name == b.name
            && a.labels == b.labels
            && (a.value == b.value || (a.value.is_nan() && b.value.is_nan()))
    };
    for s in &samples {
        assert!(!s.name.is_empty() && !s.name.starts_with(|c: char| c.is_ascii_digit()));
        for (i, (n, _)) in s.labels.iter().enumerate() {
            assert!(s.labels[..i].iter().all(|(m, _)| m != n), "label twice");
        }
        let again = parse(&write(s)).expect("a sample written back reads again");
        assert!(
            again.len() == 1 && same(&again[0], s),
            "round trip of {s:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_encoder_writes() {
        let m = crate::metrics::Metrics::new();
        m.rule_hit("a \"quoted\" \\ rule\nname", "reject");
        let samples = parse(&m.render()).unwrap();
        selfcheck(m.render().as_bytes());
        let hit = samples
            .iter()
            .find(|s| s.name == "smtpgate_rule_hits_total")
            .unwrap();
        assert_eq!(hit.label("rule"), Some("a \"quoted\" \\ rule\nname"));
        assert_eq!(hit.label("action"), Some("reject"));
        assert_eq!(hit.value, 1.0);
        assert!(samples.iter().any(|s| s.name.strip_suffix("_bucket")
            == Some("smtpgate_upstream_latency_seconds")
            && s.label("le") == Some("+Inf")));
    }

    #[test]
    fn values_timestamps_and_spacing() {
        let s = parse("# HELP x y\n\nx 1.5e3 1700000000\ny{a=\"1\",} +Inf\nz{} -2\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].value, 1500.0);
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[1].labels, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(s[2].value, -2.0);
        assert!(parse("n NaN\n").unwrap()[0].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for bad in [
            "x\n",
            "x one\n",
            "x infinity\n",
            "x{a=1} 2\n",
            "x{a=\"1\" 2\n",
            "x{a=\"1\"b=\"2\"} 2\n",
            "x{a=\"\\t\"} 2\n",
            "x{a=\"1\",a=\"2\"} 3\n",
            "x 1 2 3\n",
            "x 1 soon\n",
            "{a=\"1\"} 2\n",
            "9x 1\n",
            "x{a=\"1\"}2\n",
            "<html>\n",
        ] {
            let e = parse(&format!("ok 1\n{bad}")).unwrap_err();
            assert!(e.starts_with("line 2: "), "{bad:?}: {e}");
        }
    }
}
