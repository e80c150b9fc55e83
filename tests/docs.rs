//! The documentation against the repository and the code:
//!
//! - every relative link in `README.md` and `docs/*.md` leads to a file
//!   that exists (and, into a Markdown file, to a heading it has);
//! - every key `gateway.yaml` accepts is documented in
//!   `docs/configuration.md` (or, for a section that page hands over, in
//!   the page it links to), and named in `examples/gateway.yaml`;
//! - every metric the code registers, and every label value present from
//!   the start, is documented in `docs/metrics.md`, and that page names no
//!   metric the code does not have.
//!
//! The keys are found from the serde types themselves, not from a list kept
//! here: every struct of the configuration rejects unknown keys, and serde's
//! error for an unknown key lists the ones it expects. Probing each mapping
//! with a key nobody uses walks the whole tree, `Option` sections and list
//! items included, so a key added to the code without documentation fails.

use regex::Regex;
use serde_yaml::{Mapping, Value};
use smtpgate::config::Config;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `README.md` and every `docs/*.md`, as paths relative to the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The text outside fenced code blocks and inline code, where links are.
fn prose(text: &str) -> String {
    let code = Regex::new(r"`[^`]*`").unwrap();
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            out.push_str(&code.replace_all(line, "``"));
        }
        out.push('\n');
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let title = line.trim_start_matches('#').replace('`', "");
            let base = slug(&title);
            let mut name = base.clone();
            let mut n = 1;
            while !out.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        for cap in link.captures_iter(&prose(&text)) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target, None),
            };
            let resolved: PathBuf = if path.is_empty() {
                root().join(&file)
            } else {
                root().join(dir).join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{file}: ({target}): no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_some_and(|x| x == "md") {
                    let text = std::fs::read_to_string(&resolved).unwrap();
                    if !anchors(&text).contains(anchor) {
                        broken.push(format!("{file}: ({target}): no heading #{anchor}"));
                    }
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The design file the project once cited, which is not in the
/// repository; spelt in two parts so this file does not cite it either.
const OUTSIDE: &str = concat!("DES", "IGN.md");

#[test]
fn no_document_points_at_what_the_repository_does_not_have() {
    // Everything a reader is sent to is in the repository.
    for file in markdown_files() {
        let text = read(&file);
        for gone in [OUTSIDE, "closing notes of"] {
            assert!(!text.contains(gone), "{file} mentions {gone:?}");
        }
    }
    for file in [
        "src/lib.rs",
        "src/session/replies.rs",
        "rules/10-senders.yaml",
        "rules/30-content.yaml",
    ] {
        assert!(!read(file).contains(OUTSIDE), "{file} cites {OUTSIDE}");
    }
}

#[test]
fn the_readme_stays_short() {
    // A newcomer's five minutes: what it is, the two commands, a first
    // session, and one short example per feature; the rest is in docs/.
    let lines = read("README.md").lines().count();
    assert!(lines <= 400, "README.md has {lines} lines");
}

/// One step of a path into the configuration: a key, or the items of a list.
#[derive(Clone)]
enum Step {
    Key(String),
    Item,
}

/// The YAML document that puts `leaf` at `path`.
fn nest(path: &[Step], leaf: Value) -> Value {
    let mut value = leaf;
    for step in path.iter().rev() {
        value = match step {
            Step::Key(k) => {
                let mut m = Mapping::new();
                m.insert(Value::String(k.clone()), value);
                Value::Mapping(m)
            }
            Step::Item => Value::Sequence(vec![value]),
        };
    }
    value
}

/// The keys the mapping at `path` accepts, when it is a mapping of a
/// configuration struct: serde lists them when it meets a key it does not
/// know.
fn keys_at(path: &[Step]) -> Option<Vec<String>> {
    const PROBE: &str = "zz_not_a_key";
    let mut probe = Mapping::new();
    probe.insert(Value::String(PROBE.into()), Value::Null);
    let err = serde_yaml::from_value::<Config>(nest(path, Value::Mapping(probe))).err()?;
    let text = err.to_string();
    let rest = text.split(&format!("unknown field `{PROBE}`, ")).nth(1)?;
    let names = Regex::new(r"`([a-z0-9_]+)`").unwrap();
    Some(
        names
            .captures_iter(rest)
            .map(|c| c[1].to_string())
            .collect(),
    )
}

fn dotted(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Item => s.push_str("[]"),
        }
    }
    s
}

/// Every key path of the configuration (`limits.max_errors`,
/// `listen[].addr`, and the sections themselves: `limits`, `listen`).
fn config_keys() -> BTreeSet<String> {
    fn walk(path: Vec<Step>, out: &mut BTreeSet<String>) {
        let Some(keys) = keys_at(&path) else { return };
        for key in keys {
            let mut child = path.clone();
            child.push(Step::Key(key));
            out.insert(dotted(&child));
            if keys_at(&child).is_some() {
                walk(child, out);
            } else {
                let mut item = child.clone();
                item.push(Step::Item);
                if keys_at(&item).is_some() {
                    walk(item, out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Vec::new(), &mut out);
    out
}

/// The key paths of a YAML value (mappings, and the first item of lists).
fn value_keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                value_keys(v, &path, out);
            }
        }
        Value::Sequence(items) => {
            if let Some(first @ Value::Mapping(_)) = items.first() {
                value_keys(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_key_walk_finds_what_serde_writes() {
    let keys = config_keys();
    for want in [
        "hostname",
        "listen[].addr",
        "upstream.pool.max_idle",
        "upstream.auth.password_file",
        "limits.max_mime_scan_bytes",
        "protection.rate_limits.per_user.recipients_per_hour",
        "protection.exempt_networks",
        "metrics.allow_remote",
    ] {
        assert!(keys.contains(want), "{want} not found in {keys:?}");
    }
    // Whatever serde writes of the defaults is a key the walk found.
    let mut written = BTreeSet::new();
    for config in [Config::default(), Config::embedded()] {
        value_keys(&serde_yaml::to_value(&config).unwrap(), "", &mut written);
    }
    let missing: Vec<_> = written.difference(&keys).collect();
    assert!(missing.is_empty(), "not found by the walk: {missing:?}");
}

#[test]
fn every_config_key_is_documented() {
    let page = read("docs/configuration.md");
    let example = read("examples/gateway.yaml");
    let mut undocumented = Vec::new();
    let mut not_in_example = Vec::new();
    for key in config_keys() {
        if !documented(&page, &key) {
            undocumented.push(key.clone());
        }
        let leaf = key.rsplit('.').next().unwrap().trim_end_matches("[]");
        if !example.contains(&format!("{leaf}:")) {
            not_in_example.push(key);
        }
    }
    assert!(
        undocumented.is_empty(),
        "keys missing in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        not_in_example.is_empty(),
        "keys examples/gateway.yaml does not name: {not_in_example:?}"
    );
}

/// `key` is in the page as `` `key` ``; or a section above it is handed
/// over to another page (a line naming `` `section` `` and linking
/// `section.md`), and that page names the key.
fn documented(page: &str, key: &str) -> bool {
    if page.contains(&format!("`{key}`")) {
        return true;
    }
    let top = key.split(['.', '[']).next().unwrap();
    let link = format!("]({top}.md");
    let handed_over = page
        .lines()
        .any(|l| l.contains(&format!("`{top}`")) && l.contains(&link));
    if !handed_over {
        return false;
    }
    let Ok(other) = std::fs::read_to_string(root().join("docs").join(format!("{top}.md"))) else {
        return false;
    };
    let within = key[top.len()..].trim_start_matches('.');
    let leaf = key.rsplit('.').next().unwrap();
    [key, within, leaf]
        .iter()
        .any(|k| !k.is_empty() && other.contains(&format!("`{k}")))
}

#[test]
fn every_documented_key_exists() {
    // Rows of the key tables: `| `key` | ...`. A row handing a section over
    // to another page is that page's business.
    let page = read("docs/configuration.md");
    let keys = config_keys();
    let row = Regex::new(r"^\| `([a-z0-9_.\[\]]+)` \|").unwrap();
    let mut stale = Vec::new();
    for line in page.lines() {
        if let Some(c) = row.captures(line) {
            let key = &c[1];
            if !keys.contains(key) && !line.contains(&format!("]({key}.md")) {
                stale.push(key.to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "documented but not in the code: {stale:?}"
    );
}

/// Metric names in the source: every registration names its metric in a
/// string literal.
fn registered_metrics() -> BTreeSet<String> {
    let name = Regex::new(r#""(smtpgate_[a-z0-9_]+)""#).unwrap();
    let mut out = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for c in name.captures_iter(&text) {
                    out.insert(c[1].to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_metric_is_documented() {
    let page = read("docs/metrics.md");
    let metrics = smtpgate::metrics::Metrics::new();
    // Families with labels known only later show up once used.
    let _ = metrics.connections("127.0.0.1:25");
    metrics.rule_hit("some-rule", "reject");
    let text = metrics.render();

    let family = Regex::new(r"(?m)^# TYPE (smtpgate_[a-z0-9_]+) ").unwrap();
    let rendered: BTreeSet<String> = family
        .captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect();
    let registered = registered_metrics();
    let missing: Vec<_> = rendered.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "rendered but not found in src/: {missing:?}"
    );
    let undocumented: Vec<_> = registered
        .iter()
        .filter(|m| !page.contains(&format!("`{m}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing in docs/metrics.md: {undocumented:?}"
    );

    // The label values present from the start (verdicts, error kinds, ...).
    let label = Regex::new(r#"([a-z_]+)="([^"]*)""#).unwrap();
    let mut values = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for c in label.captures_iter(line) {
            let (name, value) = (&c[1], &c[2]);
            if ["le", "version", "listener", "rule"].contains(&name) {
                continue;
            }
            values.insert(format!("{name}={value}"));
        }
    }
    let undocumented: Vec<_> = values
        .iter()
        .filter(|nv| {
            let value = nv.split_once('=').unwrap().1;
            !page.contains(&format!("`{value}`"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "label values missing in docs/metrics.md: {undocumented:?}"
    );

    // And the page names no metric the code does not have.
    let named = Regex::new(r"`(smtpgate_[a-z0-9_]+)").unwrap();
    let stale: BTreeSet<String> = named
        .captures_iter(&page)
        .map(|c| c[1].to_string())
        .filter(|m| {
            let base = m
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            !registered.contains(m) && !registered.contains(base)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "docs/metrics.md names unknown metrics: {stale:?}"
    );
}
