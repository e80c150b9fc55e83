//! The greylisting triplet: (client network, sender, recipient), each part
//! normalised so that the retry of one message finds its first attempt.
//!
//! - The client is taken by its network (a /24 for IPv4, a /64 for IPv6 by
//!   default): big senders retry from another address of the same farm.
//!   An IPv4-mapped IPv6 address counts as IPv4.
//! - Addresses are lowercased whole. The local part is case-sensitive in
//!   principle (RFC 5321 §2.4), but no sender retries with another case
//!   on purpose, and a key that splits on case only delays mail twice.
//! - The sender's per-message tags are taken out, as Postgrey does, so a
//!   mailing list or a forwarder is greylisted once, not once per message:
//!   a BATV tag (`prvs=1234abcdef=user` becomes `user`), the hash and
//!   timestamp of an SRS address (`srs0=HHH=TT=domain=user` becomes
//!   `srs0=#=#=domain=user`), a `+extension`, and any number standing
//!   alone in the local part (VERP bounce addresses such as
//!   `bounce-12345-user=example.com` become `bounce-#-user=example.com`).
//! - The null sender `<>` is kept as the empty sender: bounces are
//!   greylisted like any mail (a real MTA retries them).
//! - The recipient is only lowercased: its `+extension` may be a distinct
//!   mailbox, and it is not a per-message tag.

use crate::proto::{Mailbox, Recipient};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::IpAddr;

/// One greylisting triplet, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Triplet {
    /// The client's network.
    pub network: IpNet,
    /// The normalised sender; empty for `<>`.
    pub sender: String,
    /// The lowercased recipient.
    pub recipient: String,
}

impl Triplet {
    /// The triplet of a client at `ip` sending from `sender` (`None`: `<>`)
    /// to `rcpt`, with IPv4 networks of `v4_prefix` bits and IPv6 ones of
    /// `v6_prefix`.
    pub fn new(
        ip: IpAddr,
        sender: Option<&Mailbox>,
        rcpt: &Recipient,
        v4_prefix: u8,
        v6_prefix: u8,
    ) -> Triplet {
        Triplet {
            network: client_network(ip, v4_prefix, v6_prefix),
            sender: sender.map(normalise_sender).unwrap_or_default(),
            recipient: rcpt.to_string().to_lowercase(),
        }
    }

    /// The triplet as one store key part: `network/sender/recipient`
    /// (`/` appears in no address the gateway accepts unquoted, and the
    /// network ends at its prefix length, so parts cannot run together).
    pub fn key(&self) -> String {
        format!("{}/<{}>/<{}>", self.network, self.sender, self.recipient)
    }
}

/// The network of `prefix` bits (`v4_prefix` or `v6_prefix`) that `ip`
/// belongs to; an IPv4-mapped address counts as IPv4.
pub fn client_network(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let net = Ipv4Net::new(v4, v4_prefix.min(32)).unwrap_or_else(|_| Ipv4Net::from(v4));
            IpNet::V4(net.trunc())
        }
        IpAddr::V6(v6) => {
            let net = Ipv6Net::new(v6, v6_prefix.min(128)).unwrap_or_else(|_| Ipv6Net::from(v6));
            IpNet::V6(net.trunc())
        }
    }
}

/// The sender as the triplet keeps it: lowercased, without its
/// per-message tags (see the module documentation).
pub fn normalise_sender(sender: &Mailbox) -> String {
    let local = normalise_local(&sender.local.to_lowercase());
    // Trailing dots all go: `example.com.` is `example.com`.
    let domain = sender.domain.trim_end_matches('.').to_lowercase();
    format!("{local}@{domain}")
}

/// A lowercased local part without BATV, SRS, `+extension` and VERP tags.
pub fn normalise_local(local: &str) -> String {
    if let Some(rest) = local
        .strip_prefix("prvs=")
        .or_else(|| local.strip_prefix("btv1="))
    {
        // BATV: prvs=<tag>=<local> (the draft), or prvs=<local>=<tag> as
        // some senders write it; the tag is ten hex digits.
        if let Some((a, b)) = rest.split_once('=') {
            let inner = if is_batv_tag(a) {
                b
            } else if is_batv_tag(b) {
                a
            } else {
                rest
            };
            return normalise_local(inner);
        }
    }
    if local.starts_with("srs0=") || local.starts_with("srs1=") {
        return srs(local);
    }
    let base = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    numbers_out(base)
}

/// True for a BATV tag: a key digit, three digits of day, six hex digits.
fn is_batv_tag(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An SRS local part with its hashes and timestamps replaced by `#`:
/// `srs0=HHH=TT=domain=local` and `srs1=HHH=forwarder==HHH=TT=domain=local`
/// keep only what names the original sender (and the first forwarder).
fn srs(local: &str) -> String {
    let (head, rest) = local.split_at(4);
    let fields: Vec<&str> = rest[1..].split('=').collect();
    let kept: Vec<&str> = match head {
        // hash, timestamp, domain, local (which may hold '=')
        "srs0" if fields.len() >= 4 => {
            let mut v = vec!["#", "#"];
            v.extend(&fields[2..]);
            v
        }
        // hash, forwarder, "", hash, timestamp, domain, local
        "srs1" if fields.len() >= 7 => {
            let mut v = vec!["#", fields[1], "", "#", "#"];
            v.extend(&fields[5..]);
            v
        }
        _ => fields,
    };
    format!("{head}={}", kept.join("="))
}

/// Every run of digits standing alone (between non-alphanumerics) made `#`.
fn numbers_out(local: &str) -> String {
    let mut out = String::with_capacity(local.len());
    let chars: Vec<char> = local.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_alphanumeric()) {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j == chars.len() || !chars[j].is_alphanumeric() {
                out.push('#');
                i = j;
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The invariants the `triplet` fuzz target and `tests/fuzz_replay.rs`
/// check on any input (an address, a NUL, then up to 16 bytes of client
/// IP): no panic; the normalised sender is lowercase, not much longer
/// than what it came from, and a fixed point (normalising it again
/// changes nothing, so a retry keyed by it finds the same triplet); the
/// client network holds the client.
pub fn check_triplet(data: &[u8]) {
    let (address, ip) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(address);
    let (local, domain) = text.rsplit_once('@').unwrap_or((&text, "example.test"));
    let sender = Mailbox {
        local: local.to_string(),
        domain: domain.to_string(),
    };
    let key = normalise_sender(&sender);
    assert!(
        !key.chars().any(|c| c.is_uppercase() && c.is_ascii()),
        "{key:?}"
    );
    assert!(key.len() <= text.len() * 3 + 16, "{text:?} -> {key:?}");
    let (nl, nd) = key.rsplit_once('@').unwrap_or((&key, ""));
    let again = normalise_sender(&Mailbox {
        local: nl.to_string(),
        domain: nd.to_string(),
    });
    assert_eq!(again, key, "not a fixed point: {text:?}");
    let client = if ip.len() >= 16 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&ip[..16]);
        IpAddr::from(b)
    } else {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(ip) {
            *d = *s;
        }
        IpAddr::from(b)
    };
    let bits = ip.first().copied().unwrap_or(24);
    let t = Triplet::new(
        client,
        Some(&sender),
        &Recipient::Postmaster,
        bits % 33,
        bits % 129,
    );
    assert!(
        t.network.contains(&client.to_canonical()),
        "{client} {}",
        t.network
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Mailbox;

    fn mb(s: &str) -> Mailbox {
        let (local, domain) = s.rsplit_once('@').unwrap();
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn rcpt(s: &str) -> Recipient {
        Recipient::Mailbox(mb(s))
    }

    #[test]
    fn ipv4_by_24_and_ipv6_by_64() {
        let n = |ip: &str| client_network(ip.parse().unwrap(), 24, 64).to_string();
        assert_eq!(n("192.0.2.7"), "192.0.2.0/24");
        assert_eq!(n("192.0.2.250"), "192.0.2.0/24");
        assert_eq!(n("192.0.3.7"), "192.0.3.0/24");
        assert_eq!(n("::ffff:192.0.2.9"), "192.0.2.0/24");
        assert_eq!(n("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(n("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
        assert_eq!(n("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        let other = client_network("2001:db8:1:2::1".parse().unwrap(), 32, 48);
        assert_eq!(other.to_string(), "2001:db8:1::/48");
        let v4 = client_network("198.51.100.77".parse().unwrap(), 32, 64);
        assert_eq!(v4.to_string(), "198.51.100.77/32");
    }

    #[test]
    fn one_triplet_for_one_message_retried() {
        let a = Triplet::new(
            "2001:db8::1".parse().unwrap(),
            Some(&mb("Alice@Example.NET")),
            &rcpt("Bob@X.test"),
            24,
            64,
        );
        let b = Triplet::new(
            "2001:db8::ffff:2".parse().unwrap(),
            Some(&mb("alice@example.net")),
            &rcpt("bob@x.test"),
            24,
            64,
        );
        assert_eq!(a, b);
        assert_eq!(a.key(), "2001:db8::/64/<alice@example.net>/<bob@x.test>");
        let other_rcpt = Triplet::new(
            "2001:db8::1".parse().unwrap(),
            Some(&mb("alice@example.net")),
            &rcpt("carol@x.test"),
            24,
            64,
        );
        assert_ne!(a.key(), other_rcpt.key());
        let bounce = Triplet::new(
            "192.0.2.7".parse().unwrap(),
            None,
            &Recipient::Postmaster,
            24,
            64,
        );
        assert_eq!(bounce.key(), "192.0.2.0/24/<>/<postmaster>");
    }

    #[test]
    fn per_message_sender_tags_are_taken_out() {
        for (given, want) in [
            ("User@Example.com", "user@example.com"),
            ("prvs=1234abcdef=user@example.com", "user@example.com"),
            ("prvs=user=1234abcdef@example.com", "user@example.com"),
            ("btv1=0123456789=a.b@example.com", "a.b@example.com"),
            (
                "SRS0=HaSh=TT=orig.example=alice@fwd.example",
                "srs0=#=#=orig.example=alice@fwd.example",
            ),
            (
                "SRS1=HHH=fwd1.example==HHH=TT=orig.example=alice@fwd2.example",
                "srs1=#=fwd1.example==#=#=orig.example=alice@fwd2.example",
            ),
            ("user+tag-42@example.com", "user@example.com"),
            (
                "bounce-12345-user=example.com@lists.example",
                "bounce-#-user=example.com@lists.example",
            ),
            ("news2024@example.com", "news2024@example.com"),
            ("123@example.com", "#@example.com"),
            ("+only@example.com", "+only@example.com"),
            ("prvs=@example.com", "prvs=@example.com"),
            ("srs0=x@example.com", "srs0=x@example.com"),
            ("a@Example.COM..", "a@example.com"),
        ] {
            assert_eq!(normalise_sender(&mb(given)), want, "{given}");
        }
    }

    #[test]
    fn recipients_are_only_lowercased() {
        let t = Triplet::new(
            "192.0.2.1".parse().unwrap(),
            Some(&mb("a@b.test")),
            &rcpt("Bob+Lists@X.Test"),
            24,
            64,
        );
        assert_eq!(t.recipient, "bob+lists@x.test");
    }
}

#[cfg(test)]
mod props {
    use super::check_triplet;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Addresses made of the characters the normalisation cares about.
        #[test]
        fn normalisation_holds_its_invariants(
            local in "[a-zA-Z0-9=+#.\\-]{0,40}",
            ip in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut data = format!("{local}@Example.TEST").into_bytes();
            data.push(0);
            data.extend(ip);
            check_triplet(&data);
        }

        #[test]
        fn any_bytes_hold_its_invariants(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            check_triplet(&data);
        }
    }
}
