//! One DNS list (a DNSBL, DNSWL, RHSBL or URIBL zone) and how its answers
//! read: a listing, no listing, or an error of the list itself.
//!
//! A list answers with A records in 127.0.0.0/8. Spamhaus answers
//! 127.255.255.0/24 when it refuses the query (a public resolver, over
//! quota), and a broken or expired list may answer anything: those are
//! errors of the list, never listings, so they cannot reject anyone. They
//! are counted in `smtpgate_dns_list_errors_total` and logged at most once
//! a minute per zone.

use crate::config::returns::ReturnFilter;
use crate::config::Zone;
use crate::dns::{DnsError, Resolver};
use crate::facts::{Value, TEMPERROR};
use log::warn;
use prometheus::IntCounterVec;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a zone's errors are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What a zone said about one name.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Listed, with the answers that matched the zone's filters.
    Listed(Vec<Ipv4Addr>),
    /// Not listed (no such name, or no answer matched the filters).
    NotListed,
    /// The list answered something that is no listing (see the module
    /// documentation).
    Error(String),
    /// No answer in time, or the DNS failed: nothing is known.
    Unknown(String),
}

impl Answer {
    /// The fact value of a zone that gave this answer.
    pub fn value(&self) -> Value {
        match self {
            Answer::Listed(codes) => Value::List(codes.iter().map(|c| c.to_string()).collect()),
            Answer::NotListed => Value::text("none"),
            Answer::Error(_) => Value::text("error"),
            Answer::Unknown(_) => Value::text(TEMPERROR),
        }
    }
}

/// One configured zone, ready to ask.
pub struct DnsList {
    /// Its configuration.
    pub zone: Zone,
    /// The fact it gives (`dnsbl.zen`).
    pub fact: String,
    /// The parsed return-code filters; empty means any 127/8 answer.
    filters: Vec<ReturnFilter>,
    /// When its errors were last logged.
    logged: Mutex<Option<Instant>>,
    /// Where its errors are counted.
    errors: IntCounterVec,
}

impl DnsList {
    /// The list of `zone`, giving the fact `fact`, counting errors in
    /// `errors` (its series exists from the start, at 0).
    pub fn new(zone: Zone, fact: String, errors: IntCounterVec) -> DnsList {
        errors.with_label_values(&[zone_name(&zone)]);
        DnsList {
            filters: zone.filters(),
            zone,
            fact,
            logged: Mutex::new(None),
            errors,
        }
    }

    /// The name asked about for `key` (a reversed IP or a domain).
    fn query(&self, key: &str) -> String {
        format!("{key}.{}", zone_name(&self.zone))
    }

    /// What the lookup of `name` in this zone gave.
    fn read(&self, name: &str, found: Result<Vec<Ipv4Addr>, DnsError>) -> Answer {
        let answer = match found {
            Ok(addrs) => self.classify(&addrs),
            Err(DnsError::NotFound) => Answer::NotListed,
            Err(DnsError::Temporary(why)) => Answer::Unknown(why),
        };
        if let Answer::Error(why) = &answer {
            self.errors
                .with_label_values(&[zone_name(&self.zone)])
                .inc();
            let _ = self.log_error(name, why);
        }
        answer
    }

    /// Reads the A records a zone answered.
    pub fn classify(&self, addrs: &[Ipv4Addr]) -> Answer {
        if let Some(bad) = addrs.iter().find(|a| is_error_code(**a)) {
            return Answer::Error(format!("answered {bad}, an error code, not a listing"));
        }
        let listed: Vec<Ipv4Addr> = addrs
            .iter()
            .copied()
            .filter(|a| self.filters.is_empty() || self.filters.iter().any(|f| f.matches(*a)))
            .collect();
        if listed.is_empty() {
            Answer::NotListed
        } else {
            Answer::Listed(listed)
        }
    }

    /// Logs an error of the zone, unless one was logged in the last
    /// minute; true when it did.
    fn log_error(&self, name: &str, why: &str) -> bool {
        let mut last = match self.logged.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        warn!(
            "DNS list {} ({}): {name} {why}; its fact says `error` (logged at most once a minute)",
            self.fact, self.zone.zone
        );
        true
    }
}

/// Asks each list about its key, all in one job on the DNS thread (so
/// through its cache), each within its zone's own timeout.
pub async fn ask_all(resolver: &Resolver, asks: &[(&DnsList, &str)]) -> Vec<Answer> {
    if asks.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = asks.iter().map(|(l, key)| l.query(key)).collect();
    let jobs = names
        .iter()
        .zip(asks)
        .map(|(n, (l, _))| (n.clone(), l.zone.timeout()))
        .collect();
    let found = resolver.ipv4_each(jobs).await;
    asks.iter()
        .zip(names.iter().zip(found))
        .map(|((l, _), (name, f))| l.read(name, f))
        .collect()
}

/// The zone's name without a trailing dot.
fn zone_name(zone: &Zone) -> &str {
    zone.zone.trim_end_matches('.')
}

/// True for answers that are errors, not listings: outside 127.0.0.0/8, or
/// in 127.255.255.0/24.
pub fn is_error_code(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] != 127 || (o[1] == 255 && o[2] == 255)
}

/// The name a DNSBL is asked about for `ip`: IPv4 octets reversed
/// (`2.0.0.127`), IPv6 nibbles reversed (32 labels); an IPv4-mapped IPv6
/// address as the IPv4 address it carries.
pub fn reversed(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels = Vec::with_capacity(32);
            for byte in v6.octets().iter().rev() {
                labels.push(format!("{:x}", byte & 0x0f));
                labels.push(format!("{:x}", byte >> 4));
            }
            labels.join(".")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(returns: &[&str]) -> Zone {
        serde_yaml::from_str(&format!(
            "{{ name: t, zone: bl.test, returns: [{}] }}",
            returns.join(", ")
        ))
        .unwrap()
    }

    fn list(returns: &[&str]) -> DnsList {
        let errors = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["zone"]).unwrap();
        DnsList::new(zone(returns), "dnsbl.t".into(), errors)
    }

    fn ips(s: &[&str]) -> Vec<Ipv4Addr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn names_are_reversed() {
        assert_eq!(reversed("192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(reversed("::ffff:192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(
            reversed("2001:db8::7".parse().unwrap()),
            "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    #[test]
    fn error_codes_are_never_listings() {
        let l = list(&[]);
        assert!(matches!(
            l.classify(&ips(&["127.255.255.254"])),
            Answer::Error(_)
        ));
        assert!(matches!(l.classify(&ips(&["192.0.2.1"])), Answer::Error(_)));
        assert!(matches!(
            l.classify(&ips(&["127.0.0.2", "127.255.255.252"])),
            Answer::Error(_)
        ));
        assert_eq!(
            l.classify(&ips(&["127.0.0.2"])),
            Answer::Listed(ips(&["127.0.0.2"]))
        );
        // A filter cannot make an error code a listing either.
        let any = list(&["\"127.[0..255].[0..255].[0..255]\""]);
        assert!(matches!(
            any.classify(&ips(&["127.255.255.254"])),
            Answer::Error(_)
        ));
    }

    #[test]
    fn errors_are_counted_each_and_logged_once_a_minute() {
        let l = list(&[]);
        let answer = l.read("x.bl.test", Ok(ips(&["127.255.255.254"])));
        assert!(matches!(answer, Answer::Error(_)));
        let _ = l.read("x.bl.test", Ok(ips(&["10.0.0.1"])));
        assert_eq!(l.errors.with_label_values(&["bl.test"]).get(), 2);
        // The two reads above logged once; the next minute logs nothing.
        assert!(!l.log_error("x.bl.test", "again"));
        *l.logged.lock().unwrap() = Some(Instant::now() - LOG_EVERY);
        assert!(l.log_error("x.bl.test", "a minute later"));
    }

    #[test]
    fn filters_pick_the_listings() {
        let l = list(&["\"127.0.0.[2..3]\"", "\"127.0.0.0&0.0.0.8\""]);
        assert_eq!(l.classify(&ips(&["127.0.0.4"])), Answer::NotListed);
        assert_eq!(
            l.classify(&ips(&["127.0.0.3", "127.0.0.10"])),
            Answer::Listed(ips(&["127.0.0.3", "127.0.0.10"]))
        );
        assert_eq!(Answer::NotListed.value(), Value::text("none"));
        assert_eq!(
            Answer::Unknown("x".into()).value(),
            Value::text("temperror")
        );
    }
}
