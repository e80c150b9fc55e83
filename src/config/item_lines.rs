//! The lines where the items of a top-level list (`rules:`) start, all in
//! one pass.
//!
//! [`super::locate::line_of`] finds one path by re-reading the text, which
//! is exact but costs a parse per question: asking it for each of 10,000
//! rules made `smtpgate check` take minutes. This reads the text once with
//! an event parser that keeps positions (yaml-rust2), and callers check
//! its answer against `line_of` on the first and the last item before
//! trusting it for the others.

use yaml_rust2::parser::{Event, Parser};

/// The 1-based line where each item of the top-level list `key` starts, in
/// order; `None` if the text does not parse, is not a mapping, or has no
/// list at `key`. Only the first document counts.
pub(crate) fn item_lines(text: &str, key: &str) -> Option<Vec<usize>> {
    let mut events = Events {
        parser: Parser::new_from_str(text),
    };
    if !matches!(events.next()?.0, Event::StreamStart)
        || !matches!(events.next()?.0, Event::DocumentStart)
        || !matches!(events.next()?.0, Event::MappingStart(..))
    {
        return None;
    }
    loop {
        let (event, _) = events.next()?;
        match event {
            Event::MappingEnd => return None,
            Event::Scalar(name, ..) if name == key => {
                if !matches!(events.next()?.0, Event::SequenceStart(..)) {
                    return None;
                }
                let mut lines = Vec::new();
                loop {
                    let (event, mark) = events.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        return Some(lines);
                    }
                    lines.push(mark.line());
                    events.skip(&event)?;
                }
            }
            other => {
                // A key (perhaps itself a collection), then its value.
                events.skip(&other)?;
                let (value, _) = events.next()?;
                events.skip(&value)?;
            }
        }
    }
}

/// The parser's events, ending (`None`) at the end of the stream or at an
/// error.
struct Events<'a> {
    /// The parser over the text.
    parser: Parser<std::str::Chars<'a>>,
}

impl Events<'_> {
    /// The next event and where it starts.
    fn next(&mut self) -> Option<(Event, yaml_rust2::scanner::Marker)> {
        match self.parser.next_token() {
            Ok((Event::StreamEnd, _)) | Err(_) => None,
            Ok(pair) => Some(pair),
        }
    }

    /// Passes over the rest of the node `first` began: nothing for a
    /// scalar or alias, up to the matching end for a collection.
    fn skip(&mut self, first: &Event) -> Option<()> {
        let mut depth = usize::from(matches!(
            first,
            Event::MappingStart(..) | Event::SequenceStart(..)
        ));
        while depth > 0 {
            match self.next()?.0 {
                Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                Event::MappingEnd | Event::SequenceEnd => depth -= 1,
                _ => {}
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::item_lines;
    use crate::config::locate::line_of;

    /// Every item's line, as `line_of` finds it one probe at a time.
    fn probed(text: &str, n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| line_of(text, &format!("rules[{i}]")).unwrap())
            .collect()
    }

    #[test]
    fn block_flow_and_mixed_items_start_where_the_probe_says() {
        let text = r#"# rules
scoring: { reject: 10 }
rules:
  - name: a
    stage: mail
    when: { sender: { domains: [x.test] } }
    action: reject

  - { name: b, stage: data, action: score, score: 1 }
  -
    name: c
    description: |
      - not an item
      - nor this
    action: accept
  - &anchor { name: d, action: accept }
tests:
  - name: t
"#;
        let lines = item_lines(text, "rules").unwrap();
        assert_eq!(lines, probed(text, 4));
        assert_eq!(lines, [4, 9, 11, 16]);
        assert_eq!(item_lines(text, "tests").unwrap(), [18]);
    }

    #[test]
    fn a_flow_list_and_crlf_lines() {
        let text = "rules: [ { name: a },\r\n  { name: b } ]\r\n";
        let lines = item_lines(text, "rules").unwrap();
        assert_eq!(lines, probed(text, 2));
        assert_eq!(lines, [1, 2]);
    }

    #[test]
    fn no_list_or_no_yaml_is_none() {
        assert_eq!(item_lines("rules: 3\n", "rules"), None);
        assert_eq!(item_lines("other: [1]\n", "rules"), None);
        assert_eq!(item_lines("- a\n- b\n", "rules"), None);
        assert_eq!(item_lines("rules: [ {\n", "rules"), None);
        assert_eq!(item_lines("", "rules"), None);
        assert_eq!(item_lines("rules: []\n", "rules"), Some(vec![]));
    }
}
