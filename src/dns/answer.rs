//! From hickory's answers to ours: names made absolute for queries, answer
//! records picked by type, and hickory's errors sorted into the two kinds
//! a caller acts on (a real negative answer, or try again later).

use super::DnsError;
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use std::net::{Ipv4Addr, Ipv6Addr};

/// `name` as an absolute DNS name, so no search domain is ever appended.
/// `None` when it cannot be a DNS name at all (a label over 63 bytes, say):
/// such a name has no records.
pub(super) fn query_name(name: &str) -> Option<Name> {
    // IDNA first (what mail domains use); raw ASCII for what IDNA refuses
    // but DNS allows, like the underscore labels of `_dmarc.example.com`.
    let mut n = Name::from_utf8(name)
        .or_else(|_| Name::from_ascii(name))
        .ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// A name from an answer as we hand it out: ASCII (A-labels), lower case,
/// without the root's trailing dot.
pub(super) fn name_text(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// Sorts a hickory error: NXDOMAIN and NOERROR with no answer (NODATA) are
/// the name's real state, [`DnsError::NotFound`]; anything else (timeout,
/// SERVFAIL, REFUSED, a reply that did not parse, sockets failing) says
/// nothing about the name, [`DnsError::Temporary`].
pub(super) fn error(e: NetError) -> DnsError {
    match &e {
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr))
            if matches!(
                nr.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            DnsError::NotFound
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            DnsError::Temporary(format!("server answered {}", rcode(*code)))
        }
        NetError::Timeout => DnsError::Temporary("no answer in time".to_string()),
        _ => DnsError::Temporary(e.to_string()),
    }
}

/// The usual mnemonic of a response code (what `dig` shows), for logs.
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        other => format!("rcode {}", u16::from(other)),
    }
}

/// The answer's records that are `pick`-able, in answer order (CNAMEs
/// followed to get here are skipped); none left is a negative answer.
fn pick<T>(
    result: Result<Lookup, NetError>,
    pick: impl FnMut(&RData) -> Option<T>,
) -> Result<Vec<T>, DnsError> {
    let lookup = result.map_err(error)?;
    let out: Vec<T> = lookup
        .answers()
        .iter()
        .map(|r| &r.data)
        .filter_map(pick)
        .collect();
    if out.is_empty() {
        Err(DnsError::NotFound)
    } else {
        Ok(out)
    }
}

/// PTR names, deduplicated, in answer order.
pub(super) fn ptr_names(result: Result<Lookup, NetError>) -> Result<Vec<String>, DnsError> {
    let mut names = pick(result, |d| match d {
        RData::PTR(p) => Some(name_text(&p.0)),
        _ => None,
    })?;
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// A record addresses.
pub(super) fn ipv4s(result: Result<Lookup, NetError>) -> Result<Vec<Ipv4Addr>, DnsError> {
    pick(result, |d| match d {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// AAAA record addresses.
pub(super) fn ipv6s(result: Result<Lookup, NetError>) -> Result<Vec<Ipv6Addr>, DnsError> {
    pick(result, |d| match d {
        RData::AAAA(a) => Some(a.0),
        _ => None,
    })
}

/// TXT records, each record's character-strings joined without a separator
/// (how SPF, DKIM and DMARC read a record split into 255-byte strings);
/// bytes that are not UTF-8 are replaced, as those records are ASCII.
pub(super) fn txts(result: Result<Lookup, NetError>) -> Result<Vec<String>, DnsError> {
    pick(result, |d| match d {
        RData::TXT(t) => {
            let bytes: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    })
}

/// MX records as (preference, exchange), lowest preference first (ties in
/// answer order). A null MX (RFC 7505, `0 .`) has an empty exchange.
pub(super) fn mxs(result: Result<Lookup, NetError>) -> Result<Vec<(u16, String)>, DnsError> {
    let mut mx = pick(result, |d| match d {
        RData::MX(m) => Some((m.preference, name_text(&m.exchange))),
        _ => None,
    })?;
    mx.sort_by_key(|(pref, _)| *pref);
    Ok(mx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::RecordType;

    fn no_records(code: ResponseCode) -> NetError {
        let q = Query::query(Name::from_ascii("a.test.").unwrap(), RecordType::A);
        NetError::from(NoRecords::new(q, code))
    }

    #[test]
    fn negative_answers_are_not_found_and_the_rest_temporary() {
        assert_eq!(
            error(no_records(ResponseCode::NXDomain)),
            DnsError::NotFound
        );
        assert_eq!(error(no_records(ResponseCode::NoError)), DnsError::NotFound);
        for e in [
            NetError::Timeout,
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail)),
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::Refused)),
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::FormErr)),
            NetError::Truncated,
            NetError::NoConnections,
            NetError::Busy,
            no_records(ResponseCode::ServFail),
        ] {
            assert!(matches!(error(e.clone()), DnsError::Temporary(_)), "{e:?}");
        }
        let DnsError::Temporary(why) = error(NetError::Dns(HickoryDnsError::ResponseCode(
            ResponseCode::ServFail,
        ))) else {
            panic!()
        };
        assert_eq!(why, "server answered SERVFAIL");
    }

    #[test]
    fn names_are_absolute_and_handed_out_plain() {
        for (input, want) in [
            ("Example.COM", "example.com."),
            ("example.com.", "example.com."),
            ("_dmarc.example.com", "_dmarc.example.com."),
            ("bücher.example", "xn--bcher-kva.example."),
        ] {
            let n = query_name(input).unwrap_or_else(|| panic!("{input}"));
            assert!(n.is_fqdn(), "{input}");
            assert_eq!(n.to_lowercase().to_ascii(), want, "{input}");
        }
        assert!(query_name(&format!("{}.example", "a".repeat(64))).is_none());
        let n = Name::from_ascii("MX1.Example.NET.").unwrap();
        assert_eq!(name_text(&n), "mx1.example.net");
        assert_eq!(name_text(&Name::root()), "");
    }
}
