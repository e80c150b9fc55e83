//! Return-code filters of DNS lists (`returns:` of a zone): which answers
//! of a list count as a listing.
//!
//! The syntax is postscreen's, with bit masks added:
//! - `127.0.0.2`: that address;
//! - `127.0.0.[2..11]`, `127.0.[0..255].[1;3]`: an octet may be a range
//!   `[a..b]`, a list `[a;b;c]`, or a list of ranges `[1..3;7]`;
//! - `127.0.0.2&0.0.0.4`: a bit mask. An answer matches when it has at
//!   least one of the mask's bits set, and the octets the mask does not
//!   cover (zero octets) equal the pattern's: here any `127.0.0.x` with
//!   bit 4 set in `x` (SURBL's multi list encodes its lists so).

use std::fmt;
use std::net::Ipv4Addr;

/// Longest filter text accepted: a filter is a line of config.
const MAX_LEN: usize = 256;

/// The values one octet may take, as inclusive ranges.
type Ranges = Vec<(u8, u8)>;

/// One parsed return-code filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnFilter {
    /// For each octet, the ranges of values it may take.
    octets: [Ranges; 4],
    /// The bit mask, when there is one.
    mask: Option<Ipv4Addr>,
}

impl ReturnFilter {
    /// True when `answer` is one this filter counts as a listing.
    pub fn matches(&self, answer: Ipv4Addr) -> bool {
        let a = answer.octets();
        let octet_in = |i: usize| {
            self.octets[i]
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&a[i]))
        };
        match self.mask {
            None => (0..4).all(octet_in),
            Some(mask) => {
                let m = mask.octets();
                (u32::from(answer) & u32::from(mask)) != 0
                    && (0..4).filter(|i| m[*i] == 0).all(octet_in)
            }
        }
    }
}

impl fmt::Display for ReturnFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ranges) in self.octets.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match ranges.as_slice() {
                [(lo, hi)] if lo == hi => write!(f, "{lo}")?,
                _ => {
                    let items: Vec<String> = ranges
                        .iter()
                        .map(|(lo, hi)| {
                            if lo == hi {
                                lo.to_string()
                            } else {
                                format!("{lo}..{hi}")
                            }
                        })
                        .collect();
                    write!(f, "[{}]", items.join(";"))?;
                }
            }
        }
        if let Some(m) = self.mask {
            write!(f, "&{m}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ReturnFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<ReturnFilter, String> {
        if s.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} characters"));
        }
        let bad = |why: &str| {
            format!(
                "{s:?} is not a return-code filter ({why}); write e.g. 127.0.0.2, \
                 127.0.0.[2..11], 127.0.0.[2;4] or 127.0.0.2&0.0.0.4"
            )
        };
        let (pattern, mask) = match s.split_once('&') {
            Some((p, m)) => {
                let mask: Ipv4Addr = m
                    .trim()
                    .parse()
                    .map_err(|_| bad("the mask is not an address"))?;
                if mask.is_unspecified() {
                    return Err(bad("the mask has no bits set"));
                }
                (p.trim(), Some(mask))
            }
            None => (s.trim(), None),
        };
        let mut octets: [Ranges; 4] = Default::default();
        let mut rest = pattern;
        for (i, slot) in octets.iter_mut().enumerate() {
            if i > 0 {
                rest = rest
                    .strip_prefix('.')
                    .ok_or_else(|| bad("four octets separated by dots are needed"))?;
            }
            let (ranges, after) = octet(rest).map_err(|why| bad(&why))?;
            *slot = ranges;
            rest = after;
        }
        if !rest.is_empty() {
            return Err(bad("text after the fourth octet"));
        }
        Ok(ReturnFilter { octets, mask })
    }
}

/// One octet at the start of `s`: a number or a bracketed list of numbers
/// and ranges; the ranges and what follows.
fn octet(s: &str) -> Result<(Ranges, &str), String> {
    if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']').ok_or("a `[` without its `]`")?;
        let mut ranges = Vec::new();
        for item in inner[..end].split(';') {
            let item = item.trim();
            let range = match item.split_once("..") {
                Some((lo, hi)) => (number(lo)?, number(hi)?),
                None => {
                    let n = number(item)?;
                    (n, n)
                }
            };
            if range.0 > range.1 {
                return Err(format!("the range {item} is empty"));
            }
            ranges.push(range);
        }
        return Ok((ranges, &inner[end + 1..]));
    }
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = number(&s[..end])?;
    Ok((vec![(n, n)], &s[end..]))
}

/// An octet's value, 0 to 255.
fn number(s: &str) -> Result<u8, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number from 0 to 255"));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not a number from 0 to 255"))
}

/// The invariants the fuzz target checks: parsing never panics, and a
/// filter that parses prints as text that parses back to the same filter.
pub fn selfcheck(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = text.parse::<ReturnFilter>() else {
        return;
    };
    let printed = filter.to_string();
    let again: ReturnFilter = printed
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
    assert_eq!(again, filter, "{printed:?} parses to another filter");
    let _ = filter.matches(Ipv4Addr::new(127, 0, 0, 2));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> ReturnFilter {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_ranges_and_lists() {
        assert!(f("127.0.0.2").matches(ip("127.0.0.2")));
        assert!(!f("127.0.0.2").matches(ip("127.0.0.3")));
        let r = f("127.0.0.[2..11]");
        assert!(r.matches(ip("127.0.0.2")) && r.matches(ip("127.0.0.11")));
        assert!(!r.matches(ip("127.0.0.1")) && !r.matches(ip("127.0.0.12")));
        let l = f("127.0.[0..255].[1;3]");
        assert!(l.matches(ip("127.0.9.3")) && !l.matches(ip("127.0.9.2")));
        assert!(f("127.0.0.[1..3;7]").matches(ip("127.0.0.7")));
    }

    #[test]
    fn bit_masks() {
        let m = f("127.0.0.2&0.0.0.4");
        assert!(m.matches(ip("127.0.0.4")));
        assert!(m.matches(ip("127.0.0.6")));
        assert!(m.matches(ip("127.0.0.12")));
        assert!(!m.matches(ip("127.0.0.2")));
        assert!(!m.matches(ip("127.0.1.4")), "unmasked octets must equal");
    }

    #[test]
    fn bad_filters_say_why() {
        for bad in [
            "",
            "127.0.0",
            "127.0.0.256",
            "127.0.0.[11..2]",
            "127.0.0.[2..",
            "127.0.0.2&0.0.0.0",
            "127.0.0.2&x",
            "127.0.0.2.5",
            "a.b.c.d",
        ] {
            let e = bad.parse::<ReturnFilter>().unwrap_err();
            assert!(e.contains("return-code filter"), "{bad}: {e}");
        }
    }

    #[test]
    fn filters_print_as_they_parse() {
        for s in [
            "127.0.0.2",
            "127.0.0.[2..11]",
            "127.0.[0..255].[1;3]",
            "127.0.0.2&0.0.0.4",
        ] {
            assert_eq!(f(s).to_string(), s);
            selfcheck(s.as_bytes());
        }
    }
}
