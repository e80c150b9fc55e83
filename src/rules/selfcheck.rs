//! The invariants of reading a rule file, shared by the `rule_file` fuzz
//! target and the seed replay test: any text gives a rule set or an
//! error, never a panic; an error names the file and a line inside it;
//! each rule's line is the one the exact probe finds; a rule set's test
//! cases each have a line inside it and a unique name.

use super::{Actual, RuleOptions, RuleSet};
use crate::filter::Stage;
use std::collections::HashSet;
use std::path::Path;

/// Reads `data` as a rule file and checks the invariants; panics when one
/// is broken. A text naming a file (`*_file:`) is skipped: the fuzzer must
/// not read the machine's files (or block on `/dev/zero`).
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    let origin = Path::new("/nonexistent/smtpgate-fuzz/rules.yaml");
    // YAML breaks lines at CR LF, LF and a lone CR alike, and so do the
    // line numbers of its errors.
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    let lines = breaks + 2;
    match RuleSet::from_yaml(text, origin, RuleOptions::default()) {
        Err(e) => {
            assert_eq!(e.file, origin.display().to_string(), "{e}");
            assert!(e.line.is_none_or(|l| (1..=lines).contains(&l)), "{e}");
            assert!(!e.reason.is_empty());
        }
        Ok(set) => {
            // The one-pass rule lines agree with the exact probe.
            for rule in set.stages.iter().flat_map(|s| &s.rules) {
                let probed =
                    crate::config::locate::line_of(text, &format!("rules[{}]", rule.index));
                assert_eq!(rule.line(), probed, "rule {:?}", rule.name);
            }
            let mut names = HashSet::new();
            for t in set.tests() {
                assert!(names.insert(t.name.clone()), "duplicate {:?}", t.name);
                assert!(t.line.is_some_and(|l| (1..=lines).contains(&l)));
                let _ = t.expect.to_string();
                let _ = t.helo_name();
                let nothing = Actual {
                    verdict: "delivered".into(),
                    greylisted: false,
                    reply: None,
                    score: 0.0,
                    stage: Stage::Data,
                    matched: Vec::new(),
                };
                let _ = t.judge(&nothing);
            }
        }
    }
}
