//! The iprev check (RFC 8601 §3, forward-confirmed reverse DNS): the PTR
//! name of the client's IP, and whether that name resolves back to it.
//!
//! Facts: `iprev` is `pass`, `fail`, `temperror` or `permerror`;
//! `client.ptr` is the confirmed name, or the first PTR name when none
//! is confirmed, or `none` when the IP has no PTR record.

use super::{Check, CheckFuture, SharedResolver};
use crate::dns::iprev::IprevResult;
use crate::facts::Value;
use crate::filter::{Context, Stage};
use std::sync::Arc;

/// The iprev check over the gateway's resolver.
pub struct Iprev {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// `iprev` and `client.ptr`.
    facts: Vec<String>,
}

impl Iprev {
    /// The check, looking up through `resolver`.
    pub fn new(resolver: Arc<SharedResolver>) -> Iprev {
        Iprev {
            resolver,
            facts: vec!["iprev".to_string(), "client.ptr".to_string()],
        }
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
            let found = crate::dns::iprev::iprev(resolver, ctx.client.ip()).await;
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
