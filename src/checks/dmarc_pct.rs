//! DMARC `pct=` (RFC 7489 §6.6.4): the share of failing messages the
//! policy is applied to. mail-auth follows DMARCbis, which dropped the
//! tag, so its record keeps no `pct`; the record's text is read again
//! here (from the resolver's cache) and the tag taken from it.

use crate::dns::TokioResolver;
use hickory_resolver::proto::rr::{Name, RData};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// What a record without a usable `pct=` means: every message.
pub const ALL: u8 = 100;

/// The `pct=` of a DMARC record's text: 0 to 100, [`ALL`] when it is
/// missing or not a number in that range (RFC 7489 §6.3 makes it
/// optional, default 100).
pub fn parse(record: &[u8]) -> u8 {
    let text = String::from_utf8_lossy(record);
    for tag in text.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("pct") {
            return match value.trim().parse::<u8>() {
                Ok(n) if n <= ALL => n,
                _ => ALL,
            };
        }
    }
    ALL
}

/// Checks what [`parse`] promises on any input (the fuzz target and the
/// seed replay call this).
pub fn selfcheck(data: &[u8]) {
    let n = parse(data);
    assert!(n <= ALL);
}

/// The `pct=` of the record mail-auth applied (`used`), found among the
/// names of its tree walk from the From domain `from` upwards: the first
/// `_dmarc` TXT record there that parses to the same record.
pub(super) async fn of_record(resolver: &TokioResolver, from: &str, used: &Dmarc) -> u8 {
    let labels: Vec<&str> = from.split('.').filter(|l| !l.is_empty()).collect();
    for start in 0..labels.len().saturating_sub(1) {
        let name = format!("_dmarc.{}.", labels[start..].join("."));
        let Ok(name) = Name::from_str_relaxed(name.as_str()) else {
            continue;
        };
        let Ok(found) = resolver.txt_lookup(name).await else {
            continue;
        };
        for record in found.answers() {
            let RData::TXT(txt) = &record.data else {
                continue;
            };
            let text: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            if Dmarc::parse(&text).is_ok_and(|d| d == *used) {
                return parse(&text);
            }
        }
    }
    ALL
}

/// Whether this failing message is one of the `pct` percent the policy
/// is applied to. 0 and 100 are certain; between, a fresh random draw
/// (`RandomState` is seeded from the OS, so no generator is kept).
pub fn applies(pct: u8) -> bool {
    match pct {
        0 => false,
        n if n >= ALL => true,
        n => RandomState::new().build_hasher().finish() % 100 < u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_is_read_from_the_tags() {
        assert_eq!(parse(b"v=DMARC1; p=reject; pct=0"), 0);
        assert_eq!(parse(b"v=DMARC1;p=reject;PCT = 25 ;rua=mailto:a@b"), 25);
        assert_eq!(parse(b"v=DMARC1; p=reject"), ALL);
        assert_eq!(parse(b"v=DMARC1; pct=101"), ALL);
        assert_eq!(parse(b"v=DMARC1; pct=-1"), ALL);
        assert_eq!(parse(b"v=DMARC1; pct="), ALL);
    }

    #[test]
    fn zero_and_all_are_certain() {
        assert!((0..50).all(|_| !applies(0)));
        assert!((0..50).all(|_| applies(100)));
    }
}
