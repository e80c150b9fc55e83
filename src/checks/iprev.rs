//! The iprev check (RFC 8601 §3, forward-confirmed reverse DNS): the PTR
//! name of the client's IP, and whether that name resolves back to it.
//!
//! Facts: `iprev` is `pass`, `fail`, `temperror` or `permerror`;
//! `client.ptr` is the confirmed name, or the first PTR name when none
//! is confirmed, or `none` when the IP has no PTR record.
//!
//! A result is kept per client IP for as long as the DNS answers it rests
//! on are valid (at most an hour), so a client that connects again soon
//! costs no trip to the DNS thread at all: MTAs reconnect for every
//! message or every few.

use super::{Check, CheckFuture, SharedResolver};
use crate::dns::iprev::{Iprev as Found, IprevResult};
use crate::facts::Value;
use crate::filter::{Context, Stage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Results kept at most this long, whatever the TTLs say.
const LONGEST: Duration = Duration::from_secs(3600);

/// Client IPs whose result is kept; past it, expired ones go first, then
/// all (a burst of new clients must not grow memory).
const MOST: usize = 10_000;

/// The iprev check over the gateway's resolver.
pub struct Iprev {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// `iprev` and `client.ptr`.
    facts: Vec<String>,
    /// Recent results by client IP, with when they expire.
    recent: Mutex<HashMap<IpAddr, (Found, Instant)>>,
}

impl Iprev {
    /// The check, looking up through `resolver`.
    pub fn new(resolver: Arc<SharedResolver>) -> Iprev {
        Iprev {
            resolver,
            facts: vec!["iprev".to_string(), "client.ptr".to_string()],
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The result for `ip`: a kept one still valid, or a fresh lookup.
    async fn result(&self, resolver: &crate::dns::Resolver, ip: IpAddr) -> Found {
        let now = Instant::now();
        if let Some((found, until)) = self.lock().get(&ip) {
            if *until > now {
                return found.clone();
            }
        }
        let (found, until) = crate::dns::iprev::iprev_until(resolver, ip).await;
        if let Some(until) = until {
            let until = until.min(Instant::now() + LONGEST);
            let mut recent = self.lock();
            if recent.len() >= MOST {
                recent.retain(|_, (_, u)| *u > now);
                if recent.len() >= MOST {
                    recent.clear();
                }
            }
            recent.insert(ip, (found.clone(), until));
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Found, Instant)>> {
        // A panic while holding it cannot leave a half-written entry.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Check for Iprev {
    fn name(&self) -> &'static str {
        "iprev"
    }

    fn facts(&self) -> &[String] {
        &self.facts
    }

    fn earliest(&self) -> Stage {
        Stage::Connect
    }

    fn run<'a>(&'a self, ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        Box::pin(async move {
            let resolver = self.resolver.get()?;
            let found = self.result(resolver, ctx.client.ip()).await;
            if found.result == IprevResult::TempError {
                // A failure of the check, not an answer: its policy decides.
                return Err(format!(
                    "DNS lookup failed temporarily for {}",
                    ctx.client.ip()
                ));
            }
            let ptr = found.ptr.unwrap_or_else(|| "none".to_string());
            Ok(vec![
                ("iprev".to_string(), Value::text(found.result.name())),
                ("client.ptr".to_string(), Value::Text(ptr)),
            ])
        })
    }
}
