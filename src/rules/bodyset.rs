//! The body regexes of a stage, compiled for matching over blocks of
//! lines, and the scan that says which of them match some line.
//!
//! Patterns with required literals ([`prefilter`]) are looked at only on
//! the lines where one of their needles occurs; the others are matched on
//! whole blocks first, then line by line where a block matches. Either way
//! the result is exactly that of matching every line with one `RegexSet`.

use super::compile::REGEX_SIZE_LIMIT;
use super::prefilter;
use regex::bytes::{RegexSet, RegexSetBuilder};

/// Lines of a block with a needle matched one by one before the whole
/// block is tried instead (a few lines cost less than the block).
const LINES_BEFORE_BLOCK_CHECK: usize = 8;

/// All the body regexes of a stage (or of its raw and decoded lists).
pub(crate) struct BodySet {
    /// Number of patterns.
    len: usize,
    /// Patterns with required literals; `None` when there are none.
    gated: Option<Gated>,
    /// Patterns without; `None` when there are none.
    always: Option<Always>,
}

/// The patterns found through their needles.
struct Gated {
    /// Index in the whole list of each pattern of `lines`.
    ids: Vec<usize>,
    /// The patterns, matched against a line where a needle occurs.
    lines: RegexSet,
    /// Lower-case needles, searched for in lower-cased text.
    needles: prefilter::Searcher,
    /// The patterns on whole blocks (see [`Always::blocks`]), tried once
    /// needles occur on [`LINES_BEFORE_BLOCK_CHECK`] lines of a block: a
    /// needle common in the text then costs little more than one search of
    /// the block.
    blocks: Option<RegexSet>,
}

/// The patterns that run on every block.
struct Always {
    /// Index in the whole list of each pattern of `lines`.
    ids: Vec<usize>,
    /// Matched against each line (without its line ending).
    lines: RegexSet,
    /// Matched against blocks of whole lines, multi-line and CRLF-aware:
    /// a pattern that matches a line also matches the block holding it
    /// (`^`, `$` match at line ends there), so a block where this finds
    /// nothing needs no line-by-line look. `None` when some pattern anchors
    /// to the start or end of the text (`\A`, `\z`, `(?-m)^`), which would
    /// make it miss.
    blocks: Option<RegexSet>,
}

impl BodySet {
    /// Compiles `patterns` (each already checked on its own); `None` when
    /// there are none.
    pub(crate) fn build(patterns: &[String]) -> Result<Option<BodySet>, regex::Error> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut gated = (Vec::new(), Vec::new(), Vec::new());
        let mut always = (Vec::new(), Vec::new());
        for (i, p) in patterns.iter().enumerate() {
            match prefilter::required_literals(p) {
                Some(lits) => {
                    gated.0.push(i);
                    gated.1.push(p.as_str());
                    gated.2.extend(lits);
                }
                None => {
                    always.0.push(i);
                    always.1.push(p.as_str());
                }
            }
        }
        let gated = if gated.0.is_empty() {
            None
        } else {
            let needles = prefilter::needles(&gated.2);
            Some(Gated {
                ids: gated.0,
                lines: line_set(&gated.1)?,
                blocks: block_set(&gated.1)?,
                needles: prefilter::Searcher::new(&needles)
                    .map_err(|e| regex::Error::Syntax(format!("literal prefilter: {e}")))?,
            })
        };
        let always = if always.0.is_empty() {
            None
        } else {
            Some(Always {
                ids: always.0,
                lines: line_set(&always.1)?,
                blocks: block_set(&always.1)?,
            })
        };
        Ok(Some(BodySet {
            len: patterns.len(),
            gated,
            always,
        }))
    }

    /// Number of patterns.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the patterns without literals are tried on whole blocks
    /// before lines (false when one anchors to the text's start or end).
    #[cfg(test)]
    pub(crate) fn blocks_prechecked(&self) -> bool {
        self.always.as_ref().is_some_and(|a| a.blocks.is_some())
    }

    /// A scan with nothing matched yet.
    pub(crate) fn scan(&self) -> BodyScan<'_> {
        BodyScan {
            set: self,
            hits: vec![false; self.len],
            left: self.len,
            lower: Vec::new(),
        }
    }
}

/// The set matched against each line on its own.
fn line_set(patterns: &[&str]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(64 << 20)
        .build()
}

/// The set matched against blocks of whole lines; `None` when some
/// pattern is not [`block_safe`].
fn block_set(patterns: &[&str]) -> Result<Option<RegexSet>, regex::Error> {
    if !patterns.iter().all(|p| block_safe(p)) {
        return Ok(None);
    }
    RegexSetBuilder::new(patterns)
        .multi_line(true)
        .crlf(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(64 << 20)
        .build()
        .map(Some)
}

/// Matching a body set over blocks of lines.
pub(crate) struct BodyScan<'s> {
    /// The set.
    set: &'s BodySet,
    /// Which patterns matched some line, by index in the whole list.
    pub hits: Vec<bool>,
    /// Patterns not matched yet.
    left: usize,
    /// The block lower-cased, for the needle search (kept for its memory).
    lower: Vec<u8>,
}

impl BodyScan<'_> {
    /// Looks at one block of whole lines; false once every pattern
    /// matched (nothing more to learn).
    pub(crate) fn block(&mut self, block: &[u8]) -> bool {
        if let Some(g) = &self.set.gated {
            self.gated(g, block);
        }
        if let Some(a) = &self.set.always {
            // Most blocks of most messages match nothing: one search says so.
            if a.blocks.as_ref().is_none_or(|b| b.is_match(block)) {
                for line in crate::message::lines(block) {
                    if self.left == 0 {
                        break;
                    }
                    if a.lines.is_match(line) {
                        for i in a.lines.matches(line).iter() {
                            mark(&mut self.hits, &mut self.left, a.ids[i]);
                        }
                    }
                }
            }
        }
        self.left > 0
    }

    /// The gated patterns on the lines of `block` where a needle occurs.
    fn gated(&mut self, g: &Gated, block: &[u8]) {
        self.lower.clear();
        self.lower.extend_from_slice(block);
        self.lower.make_ascii_lowercase();
        let mut from = 0;
        let mut looked = 0;
        while from < block.len() {
            let Some(at) = g.needles.find(&self.lower, from) else {
                break;
            };
            looked += 1;
            if looked == LINES_BEFORE_BLOCK_CHECK
                && g.blocks.as_ref().is_some_and(|b| !b.is_match(block))
            {
                return;
            }
            // The line holding the needle, as `message::lines` cuts it.
            let start = memchr::memrchr(b'\n', &block[..at]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &block[at..]).map_or(block.len(), |i| at + i);
            let line = &block[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            for i in g.lines.matches(line).iter() {
                mark(&mut self.hits, &mut self.left, g.ids[i]);
            }
            if self.left == 0 {
                return;
            }
            from = end + 1;
        }
    }
}

/// Notes that pattern `i` matched.
fn mark(hits: &mut [bool], left: &mut usize, i: usize) {
    if !hits[i] {
        hits[i] = true;
        *left -= 1;
    }
}

/// Whether a pattern that matches a line surely matches a block of lines
/// holding it: true unless it anchors to the very start or end of the text
/// (which, in a block, is not the start or end of each line).
fn block_safe(pattern: &str) -> bool {
    use regex_syntax::hir::{Hir, HirKind, Look};
    fn walk(h: &Hir) -> bool {
        match h.kind() {
            HirKind::Look(Look::Start | Look::End) => false,
            HirKind::Repetition(r) => walk(&r.sub),
            HirKind::Capture(c) => walk(&c.sub),
            HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().all(walk),
            _ => true,
        }
    }
    regex_syntax::ParserBuilder::new()
        .multi_line(true)
        .crlf(true)
        .utf8(false)
        .build()
        .parse(pattern)
        .map(|h| walk(&h))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Words of the random bodies: the rules' literals in several cases,
    /// Unicode case variants (U+017F, U+212A), digits and filler.
    const WORDS: &[&str] = &[
        "casino",
        "CaSiNo",
        "ca\u{17f}ino",
        "free-offer",
        "FREE-OFFER",
        "cheap",
        "@spam.example",
        "bob@spam.example",
        "viagra",
        "V1agra",
        "click",
        "here",
        "now",
        "lorem",
        "ipsum",
        "42",
        "2048",
        "kelvin",
        "\u{212a}elvin",
        " ",
        "  ",
        "\t",
        "x",
        "\u{e9}",
        "\r",
        "pills",
    ];

    /// Pattern shapes: literal-rich, literal-free, case-insensitive and
    /// anchored; `{}` is filled with a word.
    const SHAPES: &[&str] = &[
        "{}",
        "(?i){}",
        r"(?i)\b{}\b",
        "^{}",
        "{}$",
        r"\A{}",
        r"(?-m)^{}",
        "(?i)^{}$",
        r"{}\s+\w+",
        r"\d+ {}",
        r"(?i)(free|cheap|discount)-{}",
        r"[a-z0-9._%+-]+@{}",
        "(?i)click\\s+{}",
        ".*",
        r"\d{3}",
        "^$",
        "[A-Z]{2}",
        "(?i)[a-z]{3}o",
        "x|y{}",
    ];

    /// Words usable inside a pattern (escaped) for the shapes.
    const PATTERN_WORDS: &[&str] = &[
        "casino",
        "offer",
        "spam.example",
        "viagra",
        "cheap",
        "here",
        "now",
        "kelvin",
        "ipsum",
        "42",
        "lorem ipsum",
        "pills",
        "ca\u{17f}ino",
    ];

    fn patterns() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec((0..SHAPES.len(), 0..PATTERN_WORDS.len()), 1..12).prop_map(|v| {
            v.into_iter()
                .map(|(s, w)| SHAPES[s].replace("{}", &regex::escape(PATTERN_WORDS[w])))
                .collect()
        })
    }

    /// A body of lines (CRLF or LF endings) and where it is cut into
    /// blocks of whole lines.
    fn body() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        let line = prop::collection::vec(0..WORDS.len(), 0..8);
        prop::collection::vec((line, any::<bool>(), 0..4u8), 0..30).prop_map(|lines| {
            let mut body = Vec::new();
            let mut cuts = Vec::new();
            for (words, crlf, cut) in lines {
                for w in words {
                    body.extend_from_slice(WORDS[w].as_bytes());
                }
                body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                if cut == 0 {
                    cuts.push(body.len());
                }
            }
            (body, cuts)
        })
    }

    /// Which patterns match some line of some block, by one plain
    /// `RegexSet` on every line.
    fn plain(patterns: &[String], body: &[u8], cuts: &[usize]) -> Vec<bool> {
        let set = RegexSet::new(patterns).unwrap();
        let mut hits = vec![false; patterns.len()];
        for block in blocks(body, cuts) {
            for line in crate::message::lines(block) {
                for i in set.matches(line).iter() {
                    hits[i] = true;
                }
            }
        }
        hits
    }

    /// The body cut at `cuts` (line ends).
    fn blocks<'b>(body: &'b [u8], cuts: &[usize]) -> Vec<&'b [u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&body.len()]) {
            if end > start {
                out.push(&body[start..end]);
                start = end;
            }
        }
        out
    }

    /// Which patterns the optimised scan finds, block by block.
    fn scanned(patterns: &[String], body: &[u8], cuts: &[usize]) -> Vec<bool> {
        let set = BodySet::build(patterns).unwrap().unwrap();
        let mut scan = set.scan();
        for block in blocks(body, cuts) {
            if !scan.block(block) {
                break;
            }
        }
        scan.hits
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn prefiltered_scan_matches_plain_set(pats in patterns(), (body, cuts) in body()) {
            prop_assert_eq!(scanned(&pats, &body, &cuts), plain(&pats, &body, &cuts));
        }
    }

    #[test]
    fn unicode_case_variants_are_found() {
        let pats = vec!["(?i)casino".to_string(), r"(?i)\bkelvin\b".to_string()];
        let body = "a ca\u{17f}ino b\r\n\u{212a}ELVIN\r\n".as_bytes();
        assert_eq!(scanned(&pats, body, &[]), vec![true, true]);
        assert_eq!(plain(&pats, body, &[]), vec![true, true]);
    }

    #[test]
    fn needle_on_a_later_line_of_a_block_is_found() {
        let pats = vec!["^offer$".to_string(), "offer x".to_string()];
        let body = b"the offer x\r\noffer\r\n";
        assert_eq!(scanned(&pats, body, &[]), vec![true, true]);
    }
}
