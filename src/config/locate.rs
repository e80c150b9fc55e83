//! Finds the line where a dotted key path (`limits.max_recipients`,
//! `listen[1].addr`) is defined in YAML text, so that errors found after
//! parsing (by `validate`) can still name a line.
//!
//! Rather than guessing from indentation, this re-reads the text with the
//! same YAML parser that loaded it: a probe walks the event stream along the
//! path and stops with a marker error at the target, and the parser stamps
//! that error with the target's position. Block style, flow style
//! (`limits: { max_recipients: 0 }`), quoting and comments are all handled
//! exactly as the loader saw them.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Text of the marker error that means "the probe reached the target here".
const FOUND: &str = "\u{0}smtpgate-config-locate-found";

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `name` in `a.name`.
    Key(String),
    /// `n` in `a[n]`.
    Index(usize),
}

/// Splits `listen[1].addr` into `[Key(listen), Index(1), Key(addr)]`;
/// `None` if the path is malformed.
fn parse_path(path: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && (segs.is_empty() || rest.is_empty()) {
            return None;
        }
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let index = rest.get(1..close)?.parse().ok()?;
            segs.push(Seg::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(segs)
}

/// The 1-based line where `path` is defined in `text`: the line of the last
/// key for a path ending in a key, the line where the item starts for a path
/// ending in an index. If the path is not in the text (a default value), the
/// line of its nearest ancestor that is; `None` if none is (or the text does
/// not parse).
pub(crate) fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut segs = parse_path(path)?;
    while !segs.is_empty() {
        if let Some(line) = probe(text, &segs, 0) {
            return Some(line);
        }
        segs.pop();
    }
    None
}

/// The 1-based line of the second definition of the key `path` (which must
/// end in a key): where a "duplicate field" error belongs. `None` if the key
/// is not defined twice.
pub(crate) fn line_of_duplicate(text: &str, path: &str) -> Option<usize> {
    let segs = parse_path(path)?;
    match segs.last() {
        Some(Seg::Key(_)) => probe(text, &segs, 1),
        _ => None,
    }
}

/// Runs one probe for the exact path, passing over the first `skip`
/// definitions of its final key; `Some(line)` if it was found.
fn probe(text: &str, segs: &[Seg], skip: usize) -> Option<usize> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Probe { path: segs, skip }).deserialize(de) {
        Ok(()) => None,
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|l| l.line()),
        Err(_) => None,
    }
}

/// Deserializes a value, descending along the remaining path.
struct Probe<'p> {
    /// The rest of the path, from this value down.
    path: &'p [Seg],
    /// How many definitions of the final key to pass over.
    skip: usize,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Seg::Key(k), rest)) => (k.as_str(), rest),
            Some((Seg::Index(_), _)) => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        };
        // A key that matches and ends the path stops the probe on the key
        // itself, so the line reported is the key's, not its value's.
        let last = rest.is_empty();
        let mut skip = self.skip;
        while let Some(matched) = map.next_key_seed(KeyProbe {
            want,
            stop: last && skip == 0,
        })? {
            if matched && !last {
                return map.next_value_seed(Probe {
                    path: rest,
                    skip: self.skip,
                });
            }
            if matched {
                skip -= 1;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Seg::Index(i), rest)) => (*i, rest),
            Some((Seg::Key(_), _)) => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe {
            path: rest,
            skip: self.skip,
        })?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // Tagged values (`!tag value`): look through the tag.
        let (IgnoredAny, variant) = data.variant()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Probe<'_> {
    /// At a scalar: found if the path ends here, otherwise the path goes
    /// through a scalar and is not in the text.
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

/// Reads one mapping key: `true` if it is the wanted one. If it is and
/// `stop` is set, stops the probe on the key.
struct KeyProbe<'a> {
    /// The key looked for.
    want: &'a str,
    /// Whether finding the key ends the probe (last step of the path, no
    /// more definitions to pass over).
    stop: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key == self.want {
            if self.stop {
                return Err(E::custom(FOUND));
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
# comment line
hostname: mx.example.com

listen:
  - addr: \"127.0.0.1:2525\"   # first
  - # second, on its own
    addr: \"127.0.0.1:2526\"
- bad
";

    const TEXT: &str = "\
# comment line
hostname: mx.example.com   # the name

listen:
  - addr: \"127.0.0.1:2525\"
  -
    addr: \"127.0.0.1:2526\"
  - { addr: \"127.0.0.1:2527\" }
upstream:
  addr: \"10.0.0.5:25\"
  helo: gw.example.com
limits: { max_recipients: 0,
          max_errors: 3 }
timeouts:
    # nested comment
    command_s: 0
\"log\":
  level: 'info'
listen_again:
- a
- b: 1
  c: 2
";

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("listen[1].addr"),
            Some(vec![
                Seg::Key("listen".into()),
                Seg::Index(1),
                Seg::Key("addr".into())
            ])
        );
        assert_eq!(
            parse_path("a[0][2]"),
            Some(vec![Seg::Key("a".into()), Seg::Index(0), Seg::Index(2)])
        );
        for bad in ["", ".a", "a.", "a[x]", "a[1", "a[1]b", "[0]"] {
            assert_eq!(parse_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn finds_lines() {
        let cases: &[(&str, Option<usize>)] = &[
            ("hostname", Some(2)),
            ("listen", Some(4)),
            ("listen[0]", Some(5)),
            ("listen[0].addr", Some(5)),
            ("listen[1].addr", Some(7)),
            ("listen[2].addr", Some(8)),
            ("listen[2]", Some(8)),
            ("upstream", Some(9)),
            ("upstream.addr", Some(10)),
            ("upstream.helo", Some(11)),
            ("limits.max_recipients", Some(12)),
            ("limits.max_errors", Some(13)),
            ("timeouts.command_s", Some(16)),
            ("log.level", Some(18)),
            ("listen_again[1].c", Some(22)),
            // Not in the text: the nearest ancestor that is.
            ("upstream.pipelining", Some(9)),
            ("listen[7].addr", Some(4)),
            ("timeouts.data_block_s", Some(14)),
            ("hostname.sub", Some(2)),
            ("nowhere", None),
            ("nowhere.deeper[3]", None),
        ];
        for (path, want) in cases {
            assert_eq!(line_of(TEXT, path), *want, "{path}");
        }
    }

    #[test]
    fn finds_second_definitions() {
        let text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\nl:\n  - { x: 1, x: 2 }\n";
        assert_eq!(line_of_duplicate(text, "a"), Some(6));
        assert_eq!(line_of_duplicate(text, "b.c"), Some(5));
        assert_eq!(line_of_duplicate(text, "l[0].x"), Some(8));
        assert_eq!(line_of_duplicate(text, "b.d"), None);
        assert_eq!(line_of_duplicate(text, "l[0]"), None);
    }

    #[test]
    fn stops_at_syntax_errors() {
        // The probe reads as far as it needs: keys before a syntax error are
        // found, anything the error hides is not.
        assert_eq!(line_of(BLOCK, "hostname"), Some(2));
        assert_eq!(line_of(BLOCK, "listen[1].addr"), Some(7));
        assert_eq!(line_of(BLOCK, "nowhere"), None);
        assert_eq!(line_of("", "hostname"), None);
        assert_eq!(line_of("just a scalar", "hostname"), None);
    }
}
