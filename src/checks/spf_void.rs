//! The SPF void-lookup limit (RFC 7208 §4.6.4), which mail-auth does not
//! apply: more than two DNS lookups that return NXDOMAIN or no answer
//! make the result `permerror`.
//!
//! mail-auth asks a record cache (its `ResolverCache`) before every A,
//! AAAA and MX lookup and fills it after each one that found records. A
//! [`Tally`] given to one evaluation keeps nothing (so every lookup goes
//! to hickory, whose cache holds the answers) but notes the names asked
//! and answered. A name asked and never answered either had no records
//! or failed; asking hickory again (an answer from its cache, negative
//! answers included) tells which. mail-auth stops at the first lookup
//! that failed (`temperror`), so the lookups before it are all the
//! evaluation made, and the count does not depend on their order.

use crate::dns::TokioResolver;
use hickory_resolver::proto::rr::Name;
use mail_auth::{RecordSet, ResolverCache, SpfResult, MX};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// How many void lookups one evaluation may make (RFC 7208 §4.6.4).
pub(super) const VOID_LIMIT: usize = 2;

/// The record type a lookup asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A records (the `a` mechanism for an IPv4 client, MX hosts).
    V4,
    /// AAAA records.
    V6,
    /// A then AAAA for one name: `exists` asks both before its lookup.
    Ip,
    /// MX records.
    Mx,
}

/// One lookup mail-auth made, and whether it found records.
#[derive(Debug)]
struct Lookup {
    /// What was asked.
    kind: Kind,
    /// The name, as mail-auth spelled it.
    name: String,
    /// mail-auth stored an answer for it.
    answered: bool,
}

/// The lookups of one SPF evaluation, seen through mail-auth's record
/// caches: pass `&tally` as its A, AAAA and MX cache.
#[derive(Default)]
pub(super) struct Tally {
    /// In the order mail-auth made them.
    lookups: Mutex<Vec<Lookup>>,
}

/// Collects the bytes a key hashes: mail-auth's cache keys are `str`
/// (through `Borrow`), whose `Hash` writes its bytes, and the trait gives
/// the key no other way out.
#[derive(Default)]
struct Spelling(Vec<u8>);

impl Hasher for Spelling {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    // `str` ends its bytes with this marker; it is no part of the name.
    fn write_u8(&mut self, _: u8) {}
}

/// The name a cache key spells.
fn spelling<Q: Hash + ?Sized>(key: &Q) -> String {
    let mut s = Spelling::default();
    key.hash(&mut s);
    String::from_utf8_lossy(&s.0).into_owned()
}

impl Tally {
    /// Notes a lookup about to be made (a cache miss).
    fn asked(&self, kind: Kind, name: String) {
        let mut l = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        // `exists` asks the A then the AAAA cache for one name, then makes
        // one lookup for both and stores nothing.
        if kind == Kind::V6 {
            if let Some(last) = l.last_mut() {
                if last.kind == Kind::V4 && !last.answered && last.name == name {
                    last.kind = Kind::Ip;
                    return;
                }
            }
        }
        l.push(Lookup {
            kind,
            name,
            answered: false,
        });
    }

    /// Notes an answer stored for `name`.
    fn answered(&self, kind: Kind, name: &str) {
        let mut l = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = l
            .iter_mut()
            .rev()
            .find(|x| !x.answered && x.name == name && (x.kind == kind || x.kind == Kind::Ip))
        {
            x.answered = true;
        }
    }

    /// How many of the lookups found nothing (NXDOMAIN or no answer),
    /// asking `resolver` again about each one that stored no answer.
    pub(super) async fn voids(&self, resolver: &TokioResolver) -> usize {
        let open: Vec<(Kind, String)> = {
            let l = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
            l.iter()
                .filter(|x| !x.answered)
                .map(|x| (x.kind, x.name.clone()))
                .collect()
        };
        let mut voids = 0;
        for (kind, name) in open {
            if is_void(resolver, kind, &name).await {
                voids += 1;
            }
        }
        voids
    }
}

/// Whether `name` has no records of `kind` (a failed lookup is not void).
async fn is_void(resolver: &TokioResolver, kind: Kind, name: &str) -> bool {
    let Ok(name) = Name::from_str_relaxed(name) else {
        return false;
    };
    let nothing = |e: &hickory_resolver::net::NetError| e.is_no_records_found();
    match kind {
        Kind::V4 => resolver
            .ipv4_lookup(name)
            .await
            .err()
            .is_some_and(|e| nothing(&e)),
        Kind::V6 => resolver
            .ipv6_lookup(name)
            .await
            .err()
            .is_some_and(|e| nothing(&e)),
        Kind::Mx => resolver
            .mx_lookup(name)
            .await
            .err()
            .is_some_and(|e| nothing(&e)),
        Kind::Ip => match resolver.lookup_ip(name).await {
            Ok(found) => found.iter().next().is_none(),
            Err(e) => nothing(&e),
        },
    }
}

/// mail-auth's result, made `permerror` past the void-lookup limit. A
/// `temperror` stays: the lookups did not all answer.
pub(super) fn limited(result: SpfResult, voids: usize) -> SpfResult {
    if voids > VOID_LIMIT && result != SpfResult::TempError {
        SpfResult::PermError
    } else {
        result
    }
}

/// One cache impl per record type mail-auth asks through a cache; none
/// keeps anything.
macro_rules! tally_cache {
    ($value:ty, $kind:expr) => {
        impl ResolverCache<Box<str>, $value> for Tally {
            fn get<Q>(&self, name: &Q) -> Option<$value>
            where
                Box<str>: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                self.asked($kind, spelling(name));
                None
            }

            fn remove<Q>(&self, _: &Q) -> Option<$value>
            where
                Box<str>: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }

            fn insert(&self, key: Box<str>, _: $value, _: std::time::Instant) {
                self.answered($kind, &key);
            }
        }
    };
}

tally_cache!(RecordSet<Ipv4Addr>, Kind::V4);
tally_cache!(RecordSet<Ipv6Addr>, Kind::V6);
tally_cache!(RecordSet<MX>, Kind::Mx);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_spells_its_name() {
        let k: Box<str> = "nx1.spf.test.".into();
        assert_eq!(spelling::<str>(k.borrow()), "nx1.spf.test.");
    }

    #[test]
    fn exists_asks_both_caches_for_one_lookup() {
        let t = Tally::default();
        t.asked(Kind::V4, "a.test.".into());
        t.asked(Kind::V6, "a.test.".into());
        t.asked(Kind::V4, "b.test.".into());
        t.answered(Kind::V4, "b.test.");
        let l = t.lookups.lock().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].kind, Kind::Ip);
        assert!(!l[0].answered);
        assert!(l[1].answered);
    }

    #[test]
    fn the_limit_turns_results_into_permerror() {
        assert_eq!(limited(SpfResult::Pass, 2), SpfResult::Pass);
        assert_eq!(limited(SpfResult::Pass, 3), SpfResult::PermError);
        assert_eq!(limited(SpfResult::TempError, 3), SpfResult::TempError);
    }
}
