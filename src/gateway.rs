//! The gateway: every component built once from the configuration, and
//! shared by all sessions.
//!
//! This is the layer between the components (TLS, AUTH, relay control,
//! protection, the upstream pool, the audit trail, metrics, the filter
//! chain) and the sessions that use them. `smtpgate check` builds the same
//! object the server runs, so a file the configuration names that cannot
//! be used (a certificate, the users file, the upstream's CA or password
//! file) stops both alike, with the config line that names it.

use crate::audit::AuditLog;
use crate::auth::{Backend, Backends, UserStore};
use crate::checks::{Fixtures, Plan, Registry};
use crate::config::{Config, ConfigError, ValidationError};
use crate::dkim::Signer;
use crate::filter::FilterChain;
use crate::metrics::Metrics;
use crate::protection::{Greylist, Protection};
use crate::relay::RelayPolicy;
use crate::rules::RuleSet;
use crate::shutdown::ShutdownSignal;
use crate::tls::TlsServer;
use crate::upstream::UpstreamPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// What every session shares: the configuration, the components built
/// from it, the shutdown signal and the source of session ids.
///
/// A reload builds a whole new one ([`Gateway::rebuild`]) and the server
/// hands it to new sessions, while sessions in flight keep the one they
/// started with. Components whose settings did not change are shared
/// between the two (their state — open connections per client, rate
/// counters, greylisting triplets, idle upstream connections, the DNS
/// cache — goes on), and so are the metrics and the session counter.
pub struct Gateway {
    /// The validated configuration.
    pub config: Config,
    /// Fires when the gateway is shutting down.
    pub shutdown: ShutdownSignal,
    /// Prefix that makes ids unique across restarts (start time).
    id_prefix: String,
    /// Session counter, for ids (shared with the gateways reloads build).
    next_session: Arc<AtomicU64>,
    /// The filter chain and check plan new sessions start with; swapped
    /// on reload while sessions in flight keep the one they started with.
    pipeline: RwLock<Arc<Pipeline>>,
    /// Every check the gateway can run; the pipeline's plan picks the
    /// ones its rules read.
    registry: Registry,
    /// Facts given instead of looked up (the simulator's `--fact`).
    fixtures: OnceLock<Fixtures>,
    /// The listener certificate, when TLS is configured (reloadable).
    tls: Option<TlsServer>,
    /// The AUTH backends and users file, when AUTH is configured.
    auth: Option<Backends>,
    /// Local domains and trusted networks.
    relay: RelayPolicy,
    /// The upstream servers with failover, when there is an upstream.
    upstreams: Option<Arc<UpstreamPool>>,
    /// The audit trail writer, when `audit` is configured.
    audit: Option<Arc<AuditLog>>,
    /// Per-client protection: connections per IP, rate limits.
    protection: Arc<Protection>,
    /// Counters for `/metrics`.
    metrics: Arc<Metrics>,
    /// Greylisting state, asked when a `greylist` rule matches.
    greylist: Arc<Greylist>,
    /// The DKIM signer, when `dkim_signing` is configured (reloadable).
    dkim: Option<Signer>,
}

impl Gateway {
    /// Builds every component of `config`: loads the TLS certificate, the
    /// users file and the upstream's CA roots and password, and sets up
    /// protection. Sessions run `filters`; audit records go to `audit` when
    /// given. A file that cannot be used is an error at the config line
    /// that names it.
    pub fn build(
        config: Config,
        filters: FilterChain,
        shutdown: ShutdownSignal,
        audit: Option<AuditLog>,
    ) -> Result<Arc<Gateway>, ConfigError> {
        Gateway::assemble(config, filters, shutdown, audit.map(Arc::new), None)
    }

    /// A complete new gateway for `config`, to take over from this one on
    /// reload; nothing of this one changes. Everything is loaded again (the
    /// certificate, the users file, the DKIM keys, the upstream's CA and
    /// password); the metrics, the session counter and every component
    /// whose settings are unchanged are shared with this gateway. The
    /// filter chain keeps this one's filters, with an empty rule set in
    /// place of the rules: load `config`'s rules into it before use (see
    /// `reload::reload_rules`). A changed audit path is opened here.
    pub fn rebuild(&self, config: Config) -> Result<Arc<Gateway>, ConfigError> {
        let audit = if config.audit == self.config.audit {
            self.audit.clone()
        } else {
            match &config.audit {
                Some(options) => Some(Arc::new(AuditLog::open(options).map_err(|e| {
                    config.locate(ValidationError::new("audit.path", e.to_string()))
                })?)),
                None => None,
            }
        };
        let filters = self
            .filters()
            .replacing(RuleSet::NAME, Arc::new(RuleSet::empty()));
        Gateway::assemble(config, filters, self.shutdown.clone(), audit, Some(self))
    }

    /// Builds the gateway of [`build`](Self::build) and
    /// [`rebuild`](Self::rebuild): from scratch, or sharing with `previous`
    /// what `config` leaves unchanged.
    fn assemble(
        config: Config,
        filters: FilterChain,
        shutdown: ShutdownSignal,
        audit: Option<Arc<AuditLog>>,
        previous: Option<&Gateway>,
    ) -> Result<Arc<Gateway>, ConfigError> {
        let at = |path: &str, reason: String| config.locate(ValidationError::new(path, reason));
        let tls = match &config.tls {
            Some(files) => Some(TlsServer::load(files).map_err(|e| at(e.setting, e.text))?),
            None => None,
        };
        let metrics = match previous {
            Some(p) => p.metrics.clone(),
            None => Arc::new(Metrics::new()),
        };
        let upstreams = match &config.upstream {
            Some(up) => {
                if let Some(a) = &up.auth {
                    // Read first, so a bad password file is named as such.
                    a.read_password()
                        .map_err(|e| at("upstream.auth.password_file", e))?;
                }
                match previous {
                    // Unchanged settings: the same servers, health and idle
                    // connections.
                    Some(p) if p.config.upstream == config.upstream => p.upstreams.clone(),
                    _ => {
                        let key = if up.ca_file.is_some() {
                            "upstream.ca_file"
                        } else {
                            "upstream"
                        };
                        Some(Arc::new(
                            UpstreamPool::new(up, metrics.clone()).map_err(|e| at(key, e))?,
                        ))
                    }
                }
            }
            None => None,
        };
        let registry = match previous {
            Some(p) if same_checks(&p.config, &config) => p.registry.clone(),
            _ => Registry::new(&config, &metrics),
        };
        let runtime = registry
            .resolver()
            .unwrap_or_else(|| Arc::new(crate::checks::SharedResolver::new(config.dns.clone())));
        let auth = match &config.auth {
            Some(a) => Some(auth_backends(a, &runtime).map_err(|(key, reason)| at(&key, reason))?),
            None => None,
        };
        for name in registry.names() {
            metrics.check_known(name);
        }
        let pipeline = Pipeline::new(filters, &registry)?;
        let dkim = match &config.dkim_signing {
            Some(d) => {
                let signer = Signer::load(d).map_err(|e| {
                    at(
                        &format!("dkim_signing.keys[{}].key_file", e.index),
                        e.reason,
                    )
                })?;
                for domain in signer.keys().domains() {
                    metrics.dkim.known(domain);
                }
                Some(signer)
            }
            None => None,
        };
        let protection = match previous {
            Some(p)
                if p.config.protection == config.protection
                    && p.config.relay.trusted_networks == config.relay.trusted_networks =>
            {
                p.protection.clone()
            }
            _ => {
                let mut protection =
                    Protection::new(&config.protection, &config.relay.trusted_networks)
                        .map_err(|e| at("protection", e))?;
                if let Some(p) = previous {
                    protection.share_open_counts(&p.protection);
                }
                Arc::new(protection)
            }
        };
        let greylist = match previous {
            Some(p) if p.config.greylisting == config.greylisting => p.greylist.clone(),
            _ => Arc::new(
                Greylist::new(&config.greylisting, &metrics)
                    .map_err(|e| at("greylisting.store", e))?,
            ),
        };
        // Rebuilt, the chain's rule set is a placeholder until the new rules
        // are loaded (which counts them); without a rules_dir it is final.
        if previous.is_none() || config.rules_dir.is_none() {
            count_rules(&pipeline.chain, &metrics);
        }
        let (id_prefix, next_session) = match previous {
            Some(p) => (p.id_prefix.clone(), p.next_session.clone()),
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                (
                    format!("{:x}{:05x}", now.as_secs(), now.subsec_micros()),
                    Arc::new(AtomicU64::new(1)),
                )
            }
        };
        Ok(Arc::new(Gateway {
            greylist,
            protection,
            relay: RelayPolicy::new(&config.relay),
            config,
            shutdown,
            id_prefix,
            next_session,
            pipeline: RwLock::new(Arc::new(pipeline)),
            registry,
            fixtures: OnceLock::new(),
            tls,
            auth,
            upstreams,
            audit,
            metrics,
            dkim,
        }))
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The gateway's metrics, to share with the metrics listener.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The listener certificate, when TLS is configured.
    pub fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    /// The AUTH users file, when one is configured.
    pub fn users(&self) -> Option<&UserStore> {
        self.auth.as_ref().and_then(Backends::users)
    }

    /// The AUTH backends, when AUTH is configured.
    pub fn auth_backends(&self) -> Option<&Backends> {
        self.auth.as_ref()
    }

    /// The DKIM signer, when `dkim_signing` is configured.
    pub fn dkim(&self) -> Option<&Signer> {
        self.dkim.as_ref()
    }

    /// The relay policy.
    pub fn relay(&self) -> &RelayPolicy {
        &self.relay
    }

    /// The upstream servers, when there is an upstream.
    pub fn upstreams(&self) -> Option<&UpstreamPool> {
        self.upstreams.as_deref()
    }

    /// The upstream servers, to keep their idle connections in shape (a
    /// reload that keeps the upstream settings keeps the same pool).
    pub fn upstreams_handle(&self) -> Option<Arc<UpstreamPool>> {
        self.upstreams.clone()
    }

    /// The audit trail writer, when one is configured.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_deref()
    }

    /// Per-client protection and rate limits.
    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// The greylisting state.
    pub fn greylist(&self) -> &Greylist {
        &self.greylist
    }

    /// The current filter chain and check plan (a snapshot: later swaps
    /// do not affect it).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        match self.pipeline.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current filter chain as given (without the policy filters the
    /// checks append: a rebuilt gateway appends its own).
    pub fn filters(&self) -> FilterChain {
        self.pipeline().given.clone()
    }

    /// Replaces the filter chain for sessions that start from now on, with
    /// the checks its filters read. On error (a fact no check gives) the
    /// current chain stays.
    pub fn set_filters(&self, filters: FilterChain) -> Result<(), ConfigError> {
        let new = Arc::new(Pipeline::new(filters, &self.registry)?);
        count_rules(&new.chain, &self.metrics);
        match self.pipeline.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    /// Facts sessions take instead of looking them up: how the simulator
    /// tries rules that read facts offline. Set once, before any session.
    pub fn set_fixtures(&self, fixtures: Fixtures) {
        let _ = self.fixtures.set(fixtures);
    }

    /// The facts given instead of looked up (none outside the simulator).
    pub fn fixtures(&self) -> &Fixtures {
        static NONE: OnceLock<Fixtures> = OnceLock::new();
        self.fixtures
            .get()
            .unwrap_or_else(|| NONE.get_or_init(Fixtures::default))
    }

    /// A new session id, unique across restarts.
    pub fn session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{}{:x}", self.id_prefix, n)
    }
}

/// What a session runs at each stage: the checks its filters read, then
/// the filters.
pub struct Pipeline {
    /// The filters, asked in order.
    pub chain: FilterChain,
    /// The chain as given, before the registry's policy filters.
    given: FilterChain,
    /// The checks that run before them, stage by stage.
    pub plan: Plan,
}

impl Pipeline {
    /// `chain` with the registry's policy filters (the DNSBL threshold,
    /// the scanners' actions) appended, and the checks of `registry` its filters read.
    pub fn new(chain: FilterChain, registry: &Registry) -> Result<Pipeline, ConfigError> {
        let given = chain.clone();
        let mut chain = chain;
        for policy in registry.policies() {
            let name = policy.name().to_string();
            chain = chain.replacing(&name, policy);
        }
        let mut used = chain.facts_used();
        used.extend(registry.always().iter().cloned());
        let plan = Plan::new(registry, &used)?;
        Ok(Pipeline { chain, given, plan })
    }
}

/// True when the checks of `b` are those of `a`: the settings the check
/// registry is built from are unchanged, so a reload keeps the checks (and
/// the DNS resolver with its cache).
fn same_checks(a: &Config, b: &Config) -> bool {
    let ips = |c: &Config| c.listen.iter().map(|l| l.addr.ip()).collect::<Vec<_>>();
    a.hostname == b.hostname
        && a.dns == b.dns
        && a.checks == b.checks
        && a.reputation == b.reputation
        && a.scanners == b.scanners
        && a.milters == b.milters
        && a.sender_auth == b.sender_auth
        && ips(a) == ips(b)
}

/// Gives the rules of the chain's rule set their per-rule series (and
/// drops those of rules no longer loaded), before sessions use the chain.
fn count_rules(chain: &FilterChain, metrics: &Metrics) {
    let set = chain
        .get(RuleSet::NAME)
        .and_then(|f| f.as_any())
        .and_then(|a| a.downcast_ref::<RuleSet>());
    match set {
        Some(set) => set.count_into(&metrics.rules),
        None => {
            metrics.rules.loaded(&[]);
        }
    }
}

/// Loads the users file and sets up the other backends of `auth`; errors
/// name the config key.
fn auth_backends(
    a: &crate::config::AuthOptions,
    runtime: &Arc<crate::checks::SharedResolver>,
) -> Result<Backends, (String, String)> {
    use crate::auth::dovecot::{DovecotClient, Target};
    use crate::config::AuthBackend;
    let users = match &a.users_file {
        Some(f) => {
            Some(UserStore::load(f).map_err(|e| ("auth.users_file".to_string(), e.to_string()))?)
        }
        None => None,
    };
    let mut list = Vec::new();
    for (i, b) in a.backends().iter().enumerate() {
        list.push(match b {
            AuthBackend::UsersFile => Backend::UsersFile,
            AuthBackend::Ldap(l) => {
                let tls = crate::tls::verified_client_config(l.ca_file.as_deref())
                    .map_err(|e| (format!("auth.backends[{i}].ldap.ca_file"), e))?;
                Backend::Ldap(
                    crate::auth::ldap::LdapClient::new(l, tls, runtime.clone()).map_err(|e| {
                        (
                            format!("auth.backends[{i}].ldap.search.bind_password_file"),
                            e,
                        )
                    })?,
                )
            }
            AuthBackend::Dovecot(d) => {
                let mut senders = Vec::new();
                for (j, s) in d.senders.iter().enumerate() {
                    senders
                        .push(crate::relay::SenderRule::parse(s).map_err(|r| {
                            (format!("auth.backends[{i}].dovecot.senders[{j}]"), r)
                        })?);
                }
                let target = match (&d.socket, &d.addr) {
                    (Some(path), _) => Target::Unix(path.clone()),
                    (None, Some(addr)) => Target::Tcp(addr.clone()),
                    (None, None) => {
                        return Err((
                            format!("auth.backends[{i}].dovecot"),
                            "needs `socket` or `addr`".into(),
                        ))
                    }
                };
                let timeout = std::time::Duration::from_millis(d.timeout_ms);
                Backend::Dovecot {
                    client: DovecotClient::new(target, timeout),
                    senders,
                }
            }
            AuthBackend::Upstream(u) => {
                let mut senders = Vec::new();
                for (j, s) in u.senders.iter().enumerate() {
                    senders.push(
                        crate::relay::SenderRule::parse(s).map_err(|r| {
                            (format!("auth.backends[{i}].upstream.senders[{j}]"), r)
                        })?,
                    );
                }
                Backend::Upstream(crate::auth::upstream::UpstreamBackend {
                    timeout: std::time::Duration::from_millis(u.timeout_ms),
                    senders,
                })
            }
        });
    }
    let cache = a.cache.as_ref().map(|c| {
        crate::auth::cache::LoginCache::new(std::time::Duration::from_secs(c.ttl_s), c.max_entries)
    });
    Ok(Backends::new(users, list, cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_stop_the_build_at_the_key_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let cases = [
            (
                format!("hostname: a.test\ntls:\n  cert: \"{0}\"\n  key: \"{0}\"\n", missing.display()),
                3,
                "tls.cert: cannot read certificates from",
            ),
            (
                format!("auth:\n  users_file: \"{}\"\n", missing.display()),
                2,
                "auth.users_file: ",
            ),
            (
                format!(
                    "upstream:\n  addr: \"mx:465\"\n  tls: implicit\n  tls_verify: false\n  auth:\n    user: u\n    password_file: \"{}\"\n",
                    missing.display()
                ),
                7,
                "upstream.auth.password_file: cannot read",
            ),
            (
                format!(
                    "upstream:\n  addr: \"mx:25\"\n  starttls: required\n  ca_file: \"{}\"\n",
                    missing.display()
                ),
                4,
                "upstream.ca_file: cannot read certificates",
            ),
        ];
        for (text, line, want) in cases {
            let config = Config::from_yaml(&text, "gateway.yaml").unwrap();
            let (_trigger, signal) = crate::shutdown::channel();
            let e = Gateway::build(config, FilterChain::new(), signal, None)
                .err()
                .expect(&text);
            assert!(e.reason.contains(want), "{text}\nwant {want:?}\ngot  {e}");
            assert_eq!(e.line, Some(line), "{text}\n{e}");
        }
    }

    #[test]
    fn a_rebuild_shares_what_did_not_change_and_counts_on() {
        let yaml = |up: &str, max: u32| {
            format!(
                "hostname: a.test\nupstream: {{ addr: \"{up}\" }}\nprotection: {{ max_connections_per_ip: {max} }}\n"
            )
        };
        let load = |text: &str| Config::from_yaml(text, "gateway.yaml").unwrap();
        let (_trigger, signal) = crate::shutdown::channel();
        let first =
            Gateway::build(load(&yaml("mx1:25", 3)), FilterChain::new(), signal, None).unwrap();
        let id = first.session_id();

        let same = first.rebuild(load(&yaml("mx1:25", 3))).unwrap();
        let pool = |g: &Gateway| g.upstreams_handle().unwrap();
        assert!(Arc::ptr_eq(&pool(&first), &pool(&same)));
        assert!(std::ptr::eq(first.protection(), same.protection()));
        assert!(std::ptr::eq(first.greylist(), same.greylist()));
        assert!(Arc::ptr_eq(&first.metrics_handle(), &same.metrics_handle()));
        let next = same.session_id();
        assert_ne!(next, id);
        assert_eq!(next.len(), id.len(), "{id} then {next}: one counter");

        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let _open = same.protection().open_connection(ip).unwrap();
        let changed = same.rebuild(load(&yaml("mx2:25", 1))).unwrap();
        assert!(!Arc::ptr_eq(&pool(&same), &pool(&changed)));
        assert_eq!(changed.protection().options.max_connections_per_ip, 1);
        assert_eq!(same.protection().options.max_connections_per_ip, 3);
        // The connection open from before the reload counts against the new limit.
        assert_eq!(changed.protection().open_from(ip), 1);
        assert!(changed.protection().open_connection(ip).is_none());
        assert!(Arc::ptr_eq(
            &same.metrics_handle(),
            &changed.metrics_handle()
        ));
    }
}
