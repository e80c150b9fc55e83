//! The literal prefilter of the body regexes: for each pattern, the words
//! one of which every match must contain, and a short list of needles that
//! covers them all, searched for with one Aho-Corasick automaton.
//!
//! A body line can only match a pattern if it holds one of the pattern's
//! required literals, so a line where no needle occurs needs no regex at
//! all. Most lines of most messages hold none, and a SIMD needle search is
//! several times faster than the regex set's DFA over the same bytes.
//! Needles are lower-case and searched for in a lower-cased copy of the
//! text, which is sound for case-sensitive and case-insensitive patterns
//! alike: a line holding a literal holds it lower-cased in the copy.

use aho_corasick::{packed, AhoCorasick, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};
use regex_syntax::hir::{Hir, HirKind};
use std::collections::{HashMap, HashSet};

/// Shortest literal worth searching for: shorter ones occur on most lines.
const MIN_LITERAL: usize = 3;

/// Needle length: long enough to be rare in ordinary text, short enough
/// that patterns differing only in a number or suffix share one.
const NEEDLE_LEN: usize = 6;

/// The lower-cased literals one of which every match of `pattern` holds;
/// `None` when there is no usable set (the pattern must always run).
pub(crate) fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    required(&hir)
}

/// The best literal set of `h`: its prefixes, its suffixes, or the set of
/// a part that every match goes through (a piece of a concatenation, the
/// body of a repetition done at least once, every branch of an alternation).
fn required(h: &Hir) -> Option<Vec<Vec<u8>>> {
    let mut best: Option<Vec<Vec<u8>>> = None;
    let mut consider = |cand: Option<Vec<Vec<u8>>>| {
        if let Some(c) = cand {
            if best.as_ref().is_none_or(|b| score(&c) > score(b)) {
                best = Some(c);
            }
        }
    };
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        consider(usable(Extractor::new().kind(kind).extract(h)));
    }
    match h.kind() {
        HirKind::Capture(c) => consider(required(&c.sub)),
        HirKind::Repetition(r) if r.min >= 1 => consider(required(&r.sub)),
        HirKind::Concat(parts) => {
            for p in parts {
                consider(required(p));
            }
        }
        HirKind::Alternation(branches) => {
            let mut all = Vec::new();
            for b in branches {
                match required(b) {
                    Some(lits) => all.extend(lits),
                    None => {
                        all.clear();
                        break;
                    }
                }
            }
            if !all.is_empty() {
                all.sort();
                all.dedup();
                consider(Some(all));
            }
        }
        _ => {}
    }
    best
}

/// A set is better when its shortest literal is longer (fewer false
/// alarms), then when it has fewer literals.
fn score(lits: &[Vec<u8>]) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = lits.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(NEEDLE_LEN), std::cmp::Reverse(lits.len()))
}

/// The literals of an extracted sequence, lower-cased and deduplicated,
/// when every match must hold one: finite, not empty, none shorter than
/// [`MIN_LITERAL`] and none with a line end (a line never holds one).
fn usable(seq: Seq) -> Option<Vec<Vec<u8>>> {
    let lits = seq.literals()?;
    if lits.is_empty() {
        return None;
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(lits.len());
    for l in lits {
        let b = l.as_bytes();
        if b.len() < MIN_LITERAL || b.contains(&b'\n') {
            return None;
        }
        out.push(b.to_ascii_lowercase());
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// Few needles such that each literal holds one: a greedy cover by
/// windows of [`NEEDLE_LEN`] bytes (or whole shorter literals), the
/// windows shared by most literals first.
pub(crate) fn needles(literals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let lits: Vec<&[u8]> = {
        let set: HashSet<&[u8]> = literals.iter().map(Vec::as_slice).collect();
        let mut v: Vec<&[u8]> = set.into_iter().collect();
        v.sort();
        v
    };
    let candidates: HashSet<&[u8]> = lits
        .iter()
        .flat_map(|l| l.windows(l.len().min(NEEDLE_LEN)))
        .collect();
    let lengths: HashSet<usize> = candidates.iter().map(|c| c.len()).collect();
    let mut covers: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, l) in lits.iter().enumerate() {
        let mut seen = HashSet::new();
        for &n in &lengths {
            for w in l.windows(n) {
                if candidates.contains(w) && seen.insert(w) {
                    covers.entry(w).or_default().push(i);
                }
            }
        }
    }
    let mut order: Vec<(&[u8], Vec<usize>)> = covers.into_iter().collect();
    // Most literals covered first, then the longer needle, then the one
    // whose first bytes are rarer in ordinary text (the searchers look
    // for those first).
    let rarity = |n: &[u8]| -> u32 {
        n.iter()
            .take(3)
            .map(|&b| u32::from(regex_syntax::hir::literal::rank(b)))
            .sum()
    };
    order.sort_by(|a, b| {
        b.1.len()
            .cmp(&a.1.len())
            .then(b.0.len().cmp(&a.0.len()))
            .then(rarity(a.0).cmp(&rarity(b.0)))
            .then(a.0.cmp(b.0))
    });
    let mut covered = vec![false; lits.len()];
    let mut out = Vec::new();
    for (needle, ids) in order {
        if ids.iter().any(|&i| !covered[i]) {
            for i in ids {
                covered[i] = true;
            }
            out.push(needle.to_vec());
        }
    }
    out
}

/// The needle search over lower-cased text.
pub(crate) enum Searcher {
    /// SIMD (Teddy), for up to a few dozen needles.
    Packed(packed::Searcher),
    /// An Aho-Corasick automaton, for more.
    Automaton(AhoCorasick),
}

impl Searcher {
    /// Searches for any of `needles`.
    pub(crate) fn new(needles: &[Vec<u8>]) -> Result<Searcher, aho_corasick::BuildError> {
        // Teddy is several times faster than the automaton's own start-byte
        // prefilters on text where those bytes are common (any letter).
        let packed = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(needles)
            .build();
        if let Some(p) = packed {
            return Ok(Searcher::Packed(p));
        }
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(needles)
            .map(Searcher::Automaton)
    }

    /// Where the first needle at or after `from` in `text` starts.
    pub(crate) fn find(&self, text: &[u8], from: usize) -> Option<usize> {
        match self {
            Searcher::Packed(p) => p
                .find_in(text, aho_corasick::Span::from(from..text.len()))
                .map(|m| m.start()),
            Searcher::Automaton(a) => a
                .find(aho_corasick::Input::new(text).range(from..))
                .map(|m| m.start()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|v| {
            v.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    #[test]
    fn literals_of_common_shapes() {
        assert_eq!(lits("casino"), Some(vec!["casino".into()]));
        assert!(lits("(?i)casino").unwrap().contains(&"casino".to_string()));
        // Unicode case folding: `(?i)s` also matches U+017F.
        assert!(lits("(?i)casino").unwrap().iter().any(|l| l.contains('ſ')));
        assert!(lits(r"[a-z]+@spam1\.example")
            .unwrap()
            .iter()
            .all(|l| l.contains("@spam1.example")));
        assert!(lits(r"\d+ casino \d+").is_some());
        assert_eq!(lits(".*"), None);
        assert_eq!(lits(r"\d{16}"), None);
        assert_eq!(lits("ab"), None);
        assert_eq!(lits("(foo|x)barbaz"), Some(vec!["barbaz".into()]));
    }

    #[test]
    fn needles_cover_every_literal() {
        let lits: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("casino{i}").into_bytes())
            .chain((0..100).map(|i| format!("free-offer-{i}").into_bytes()))
            .chain([b"ab\xffcd".to_vec()])
            .collect();
        let n = needles(&lits);
        assert!(n.len() <= 4, "{n:?}");
        for l in &lits {
            assert!(n
                .iter()
                .any(|w| l.windows(w.len()).any(|x| x == w.as_slice())));
        }
    }
}
