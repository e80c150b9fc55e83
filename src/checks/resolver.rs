//! The one DNS resolver of the gateway, started on first use.

use crate::config::DnsOptions;
use crate::dns::Resolver;
use std::sync::OnceLock;

/// The resolver every DNS check shares. Its thread starts with the first
/// lookup, not before: a gateway whose rules read no DNS fact never
/// starts it. Cloning checks share it through an `Arc`.
pub struct SharedResolver {
    /// The `dns:` settings it starts with.
    options: DnsOptions,
    /// The started resolver, or why it could not start.
    started: OnceLock<Result<Resolver, String>>,
}

impl SharedResolver {
    /// A resolver that will start with `options`.
    pub fn new(options: DnsOptions) -> SharedResolver {
        SharedResolver {
            options,
            started: OnceLock::new(),
        }
    }

    /// The resolver, started now if it was not yet.
    pub fn get(&self) -> Result<&Resolver, String> {
        self.started
            .get_or_init(|| Resolver::start(&self.options))
            .as_ref()
            .map_err(|e| format!("DNS resolver cannot start: {e}"))
    }
}
