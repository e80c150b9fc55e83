//! `gateway.yaml`: the gateway's configuration — where to listen, the
//! upstream server (or the local spool), limits, timeouts, message handling
//! and logging.
//!
//! Loading is two steps: serde parses the YAML into [`Config`] (every struct
//! rejects unknown keys, every key has a default, so an empty file is a
//! complete configuration), then [`Config::validate`] runs the cross-field
//! checks. Every failure becomes a [`ConfigError`] that names the file, the
//! line and the reason, e.g. `gateway.yaml:12: limits.max_recipients: must be
//! at least 1`.
//!
//! With no file at all, [`Config::embedded`] is used: listen on
//! 127.0.0.1:2525, store accepted mail under `./spool/`, and load the rules
//! in `./rules/` when that directory exists.

mod auth_backends;
mod checks;
mod dkim;
mod dns;
mod edge;
mod error;
mod greylisting;
pub(crate) mod item_lines;
pub(crate) mod locate;
mod milter;
mod ops;
mod protection;
mod reputation;
pub mod returns;
mod scanners;
mod security;
mod sender_auth;
mod validate;

pub use checks::{CheckSettings, ChecksOptions, OnError};
pub use dkim::{is_dns_labels, DkimAlgorithm, DkimKey, DkimSigning};
pub use dns::DnsOptions;
pub use edge::{ForwardClient, ProxyProtocolOptions};
pub use error::{ConfigError, ValidationError};
pub use greylisting::GreylistOptions;
pub use milter::{MilterDefault, MilterOptions};
pub use ops::{MetricsOptions, PoolOptions, QuarantineApiOptions};
pub use protection::{redacted, Protection, RateLimitSet, RateLimits, StoreUrl};
pub use reputation::{
    AllowlistedSkip, DnsblOptions, DomainSource, ReputationOptions, RhsblOptions, RhsblZone,
    ThresholdAction, Zone,
};
pub use scanners::{
    split_http_url, ClamavOptions, HttpEndpoint, RspamdOptions, ScannersOptions, VirusAction,
};
pub use security::{
    AuthMode, AuthOptions, ListenerPolicy, Network, RelayOptions, SessionTickets, StartTls,
    TlsFiles, TlsMode, UpstreamAuth, UpstreamStartTls,
};
pub use sender_auth::{ArcOptions, DmarcMode, SenderAuthOptions};

pub use auth_backends::{
    AuthBackend, DovecotBackend, LdapBackend, LdapScope, LdapSearch, LoginCacheOptions,
    UpstreamBackend,
};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole gateway configuration, as read from `gateway.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Our own name: in the greeting, the EHLO reply and Received headers.
    /// Default: the machine's host name, or `localhost` if that is not a
    /// valid domain name.
    pub hostname: String,
    /// Where to accept SMTP connections. Default: one listener on
    /// 127.0.0.1:2525. Must not be empty.
    pub listen: Vec<Listener>,
    /// The mail server accepted mail is relayed to. Default: none, which
    /// means local spool mode (each accepted message is written under
    /// [`spool_dir`](Self::spool_dir)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// Directory for the local spool (used when there is no upstream).
    /// Default: `spool` (relative to the working directory).
    pub spool_dir: PathBuf,
    /// Directory where messages a rule quarantines are stored, one `.eml`
    /// file each, instead of being forwarded. Default: `quarantine`.
    pub quarantine_dir: PathBuf,
    /// Size and count limits per session and in total.
    pub limits: Limits,
    /// Read/write timeouts towards the client and the upstream.
    pub timeouts: Timeouts,
    /// How message content is checked and changed.
    pub message: MessageOptions,
    /// Seconds in-flight transactions may still take after SIGTERM before
    /// their connections are closed. Default: 30. At most 86400.
    pub shutdown_grace_s: u64,
    /// Logging.
    pub log: LogOptions,
    /// Certificate and key for STARTTLS and implicit-TLS listeners.
    /// Default: none (no listener may use TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// SMTP AUTH users. Default: none (no listener offers AUTH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// Relay control: local domains and trusted networks (deny by default).
    pub relay: RelayOptions,
    /// Directory of rule files (every `*.yaml` in it, in file-name order).
    /// Default: none, so no rules; a path given here must exist. (The
    /// embedded default, with no configuration file at all, uses `rules`
    /// when that directory exists.) Relative to the working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_dir: Option<PathBuf>,
    /// The JSON audit trail, one record per transaction. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditOptions>,
    /// Per-client protection: connections per IP, messages per session,
    /// the error tarpit, pre-greeting talkers, rate limits.
    pub protection: Protection,
    /// Who may send PROXY protocol headers to listeners with
    /// `proxy_protocol: true`. Default: none (no listener may enable it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolOptions>,
    /// The HTTP listener for `/metrics` (Prometheus) and `/healthz`.
    /// Default: none (no listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsOptions>,
    /// The DNS resolver (iprev, and later DNS lists, SPF, DKIM, DMARC):
    /// name servers, timeout, attempts and cache size. Default: the
    /// system's name servers. Only read when something starts the
    /// resolver.
    pub dns: DnsOptions,
    /// The checks that run before the rules: timeouts and what a failure
    /// does. See `docs/checks.md`.
    pub checks: ChecksOptions,
    /// Greylisting: its delays, the auto-allowlist and where triplets
    /// live. Only used when a rule says `action: greylist`. See
    /// `docs/greylisting.md`.
    pub greylisting: GreylistOptions,
    /// DKIM signing of submitted mail: keys per domain and selector, whose
    /// mail is signed, the signed header fields. Default: none (nothing is
    /// signed). See `docs/dkim-signing.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim_signing: Option<DkimSigning>,
    /// DNS lists of client IPs and domains, weights and threshold. See
    /// `docs/reputation.md`. Default: none.
    pub reputation: ReputationOptions,
    /// Sender authentication on every message: SPF, DKIM, DMARC and ARC
    /// verified, an `Authentication-Results` header written, DMARC
    /// optionally enforced. Default: none. See `docs/sender-auth.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_auth: Option<SenderAuthOptions>,
    /// External scanners asked at the data stage (rspamd, clamd). See
    /// `docs/scanners.md`. Default: none.
    pub scanners: ScannersOptions,
    /// Milters every transaction goes through, in order (Postfix's
    /// `smtpd_milters`). See `docs/milters.md`. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub milters: Vec<MilterOptions>,
    /// The text this configuration was read from, so that errors found
    /// later, when the gateway opens the files it names, still get a line.
    #[serde(skip)]
    pub source: Source,
}

/// Where a configuration came from: its name in errors and its text.
/// Two configurations with the same values are equal wherever they came
/// from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The file's path as given, or `<inline>`; empty for built-in defaults.
    pub origin: String,
    /// The YAML text, to find the line of a key.
    pub text: std::sync::Arc<str>,
}

impl PartialEq for Source {
    fn eq(&self, _other: &Source) -> bool {
        true
    }
}

impl Eq for Source {}

/// Where the audit trail goes. YAML: `audit: { path: audit.jsonl }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    /// The file records are appended to (created if missing, reopened on
    /// SIGUSR1 for log rotation), or `-` for standard output. Required.
    pub path: PathBuf,
}

impl AuditOptions {
    /// True when the records go to standard output.
    pub fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: default_hostname(),
            listen: vec![Listener::default()],
            upstream: None,
            spool_dir: PathBuf::from("spool"),
            quarantine_dir: PathBuf::from("quarantine"),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            message: MessageOptions::default(),
            shutdown_grace_s: 30,
            log: LogOptions::default(),
            tls: None,
            auth: None,
            relay: RelayOptions::default(),
            rules_dir: None,
            audit: None,
            protection: Protection::default(),
            proxy_protocol: None,
            metrics: None,
            dns: DnsOptions::default(),
            checks: ChecksOptions::default(),
            greylisting: GreylistOptions::default(),
            dkim_signing: None,
            reputation: ReputationOptions::default(),
            sender_auth: None,
            scanners: ScannersOptions::default(),
            milters: Vec::new(),
            source: Source::default(),
        }
    }
}

/// The machine's host name if it is a valid domain name, else `localhost`:
/// the default of [`Config::hostname`].
pub fn default_hostname() -> String {
    match gethostname::gethostname().into_string() {
        Ok(name) if validate::is_domain(&name) => name,
        _ => "localhost".to_string(),
    }
}

/// One listening socket. YAML: `{ addr: "127.0.0.1:2525" }`, or e.g.
/// `{ addr: "0.0.0.0:587", starttls: required, auth: required }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// IP address and port to bind, e.g. `0.0.0.0:25` or `[::]:587`.
    /// Required; port 0 picks a free port (useful in tests).
    #[serde(deserialize_with = "socket_addr")]
    pub addr: SocketAddr,
    /// STARTTLS: `none`, `optional` or `required`. Default: `optional`
    /// when top-level `tls` is configured, else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<StartTls>,
    /// `implicit` for TLS from the first byte (port 465). Default `none`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsMode,
    /// SMTP AUTH: `none`, `optional` or `required`. Default: `optional`
    /// when top-level `auth` is configured and the listener can do TLS
    /// (or allows plaintext AUTH), else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMode>,
    /// Offer AUTH without TLS. Passwords then cross the wire in clear: only
    /// for listeners on a loopback address. Default false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub plaintext_auth: bool,
    /// Every connection starts with a PROXY protocol header (HAProxy, v1 or
    /// v2) naming the real client, sent by one of
    /// `proxy_protocol.trusted_proxies`; others are closed. Default false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy_protocol: bool,
}

impl Default for Listener {
    /// 127.0.0.1:2525, the embedded default.
    fn default() -> Self {
        Listener {
            addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
            starttls: None,
            tls: TlsMode::None,
            auth: None,
            plaintext_auth: false,
            proxy_protocol: false,
        }
    }
}

/// Serde helper: an `IP:port` socket address; the error quotes the value.
/// (A visitor, so the error is raised where the value is and names its key.)
pub(crate) fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct Addr;
    impl serde::de::Visitor<'_> for Addr {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an IP address and port")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SocketAddr, E> {
            s.parse().map_err(|_| {
                E::custom(format!(
                    "invalid socket address syntax: {s:?} (want IP:port, e.g. \"0.0.0.0:25\" or \"[::]:25\")"
                ))
            })
        }
    }
    d.deserialize_str(Addr)
}

/// Serde helper: leaves default values out of serialized output.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The upstream mail server: accepted mail is relayed to it in lockstep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of the server (`10.0.0.5:25`, `mail.internal:25`,
    /// `[::1]:25`); the host is resolved at connect time. Required.
    pub addr: String,
    /// Further servers (`host:port`), tried in order when the ones before
    /// cannot be reached (like Postfix's `smtp_fallback_relay`). Failover,
    /// never fan-out: each message goes to exactly one server. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    /// Seconds a server that failed to connect or greet is skipped before it
    /// is tried again. Default 60.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// STARTTLS towards the upstream: `none` (default), `opportunistic` or
    /// `required`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub starttls: UpstreamStartTls,
    /// `implicit` for TLS from the first byte (a smarthost on port 465).
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsMode,
    /// Verify the upstream's certificate (chain and name). Default true;
    /// `false` is an explicit, logged opt-out.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// PEM file with the CA certificates to trust instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the certificate. Default: the
    /// host of each address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// AUTH at the upstream (PLAIN or LOGIN, under TLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<UpstreamAuth>,
    /// The name we give in our EHLO to the upstream. Default: none, which
    /// means [`Config::hostname`] (see [`Upstream::helo_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    /// Whether to pipeline MAIL/RCPT when the upstream offers PIPELINING.
    /// Default: true.
    #[serde(default = "default_true")]
    pub pipelining: bool,
    /// How the upstream learns the real client: `xforward` (default; when
    /// it offers XFORWARD), `xclient` (when it offers XCLIENT, else
    /// XFORWARD) or `none`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub forward_client: ForwardClient,
    /// Reuse of idle connections across client sessions (on by default).
    #[serde(default)]
    pub pool: PoolOptions,
}

impl Upstream {
    /// An upstream at `addr` with the other fields at their defaults.
    pub fn new(addr: impl Into<String>) -> Self {
        Upstream {
            addr: addr.into(),
            fallback: Vec::new(),
            retry_after_s: default_retry_after_s(),
            starttls: UpstreamStartTls::None,
            tls: TlsMode::None,
            tls_verify: true,
            ca_file: None,
            server_name: None,
            auth: None,
            helo: None,
            pipelining: true,
            forward_client: ForwardClient::Xforward,
            pool: PoolOptions::default(),
        }
    }

    /// The EHLO name to use: [`helo`](Self::helo) if set, else `hostname`
    /// (pass [`Config::hostname`]).
    pub fn helo_name<'a>(&'a self, hostname: &'a str) -> &'a str {
        self.helo.as_deref().unwrap_or(hostname)
    }
}

/// Serde default for booleans that default to true.
fn default_true() -> bool {
    true
}

/// Serde default of [`Upstream::retry_after_s`].
fn default_retry_after_s() -> u64 {
    60
}

/// Size and count limits (invariant 5: bounded resources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest command line accepted, in bytes including CRLF. Default 512
    /// (RFC 5321 §4.5.3.1.4); at least 512.
    pub max_command_line: usize,
    /// Longest line of message text, in bytes including CRLF. Default 1000
    /// (RFC 5321 §4.5.3.1.6); at least 1000.
    pub max_text_line: usize,
    /// Most recipients per message. Default 100; at least 1.
    pub max_recipients: usize,
    /// Largest message accepted, in bytes (also announced in EHLO SIZE).
    /// Default 26214400 (25 MiB); at least 1024.
    pub max_message_bytes: u64,
    /// Most client connections open at once. Default 1000; at least 1.
    pub max_connections: usize,
    /// Bad commands a session may send before it gets 421 and is closed.
    /// Default 20; at least 1.
    pub max_errors: u32,
    /// A message body larger than this many bytes is kept in a temporary
    /// file instead of memory. Default 1048576 (1 MiB); 0 spills every body.
    pub spill_threshold_bytes: usize,
    /// Largest message that rules looking at MIME structure (attachment
    /// names, decoded text parts) parse, in memory; larger messages do not
    /// match those rules (logged, and noted in the audit record). Default
    /// 10485760 (10 MiB).
    pub max_mime_scan_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_command_line: 512,
            max_text_line: 1000,
            max_recipients: 100,
            max_message_bytes: 25 * 1024 * 1024,
            max_connections: 1000,
            max_errors: 20,
            spill_threshold_bytes: 1024 * 1024,
            max_mime_scan_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Timeouts in seconds, after RFC 5321 §4.5.3.2. Each must be between 1 and
/// 86400; the accessors return them as [`Duration`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Waiting for the client's next command. Default 300.
    pub command_s: u64,
    /// Waiting for the next chunk of the client's DATA. Default 180.
    pub data_block_s: u64,
    /// Connecting to one upstream server. Default 10: short, so that
    /// failover to the next server (`upstream.fallback`) is quick.
    pub upstream_connect_s: u64,
    /// Waiting for the upstream's greeting. Default 300.
    pub upstream_greeting_s: u64,
    /// Waiting for the upstream's reply to EHLO, MAIL, RCPT or RSET.
    /// Default 300.
    pub upstream_command_s: u64,
    /// Waiting for the upstream's reply to DATA. Default 120.
    pub upstream_data_init_s: u64,
    /// Each write of the message body to the upstream. Default 180.
    pub upstream_data_block_s: u64,
    /// Waiting for the upstream's reply to the final dot. Default 600.
    pub upstream_data_end_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command_s: 300,
            data_block_s: 180,
            upstream_connect_s: 10,
            upstream_greeting_s: 300,
            upstream_command_s: 300,
            upstream_data_init_s: 120,
            upstream_data_block_s: 180,
            upstream_data_end_s: 600,
        }
    }
}

impl Timeouts {
    /// [`command_s`](Self::command_s) as a duration.
    pub fn command(&self) -> Duration {
        Duration::from_secs(self.command_s)
    }
    /// [`data_block_s`](Self::data_block_s) as a duration.
    pub fn data_block(&self) -> Duration {
        Duration::from_secs(self.data_block_s)
    }
    /// [`upstream_connect_s`](Self::upstream_connect_s) as a duration.
    pub fn upstream_connect(&self) -> Duration {
        Duration::from_secs(self.upstream_connect_s)
    }
    /// [`upstream_greeting_s`](Self::upstream_greeting_s) as a duration.
    pub fn upstream_greeting(&self) -> Duration {
        Duration::from_secs(self.upstream_greeting_s)
    }
    /// [`upstream_command_s`](Self::upstream_command_s) as a duration.
    pub fn upstream_command(&self) -> Duration {
        Duration::from_secs(self.upstream_command_s)
    }
    /// [`upstream_data_init_s`](Self::upstream_data_init_s) as a duration.
    pub fn upstream_data_init(&self) -> Duration {
        Duration::from_secs(self.upstream_data_init_s)
    }
    /// [`upstream_data_block_s`](Self::upstream_data_block_s) as a duration.
    pub fn upstream_data_block(&self) -> Duration {
        Duration::from_secs(self.upstream_data_block_s)
    }
    /// [`upstream_data_end_s`](Self::upstream_data_end_s) as a duration.
    pub fn upstream_data_end(&self) -> Duration {
        Duration::from_secs(self.upstream_data_end_s)
    }
}

/// What to do with a bare CR or bare LF in message text (invariant 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Refuse the message (554). The default.
    #[default]
    Reject,
    /// Turn each bare CR or LF into CRLF and accept the message.
    Normalize,
}

impl From<BareLineEndings> for crate::proto::BareLineEndings {
    /// The codec's policy for the configured mode.
    fn from(mode: BareLineEndings) -> Self {
        match mode {
            BareLineEndings::Reject => crate::proto::BareLineEndings::Reject,
            BareLineEndings::Normalize => crate::proto::BareLineEndings::Normalize,
        }
    }
}

/// How message content is checked and changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageOptions {
    /// Bare CR/LF in message text: `reject` (default) or `normalize`.
    pub bare_line_endings: BareLineEndings,
    /// Whether to prepend a `Received:` header to each message. Default true.
    pub received_header: bool,
}

impl Default for MessageOptions {
    fn default() -> Self {
        MessageOptions {
            bare_line_endings: BareLineEndings::Reject,
            received_header: true,
        }
    }
}

/// Logging options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogOptions {
    /// Log filter used when `RUST_LOG` is unset: a level (`off`, `error`,
    /// `warn`, `info`, `debug`, `trace`) or env_logger directives such as
    /// `info,smtpgate=debug` (each directive `level` or `target=level`, an
    /// optional `/regex` after them). Default: none, which means `info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl LogOptions {
    /// The filter to use when `RUST_LOG` is unset: [`level`](Self::level)
    /// or `info`.
    pub fn filter(&self) -> &str {
        self.level.as_deref().unwrap_or("info")
    }
}

impl Config {
    /// The embedded default (no file): what `smtpgate` with no arguments
    /// runs. [`Config::default`], plus `rules_dir: rules` when a `rules`
    /// directory exists in the working directory, so the example rules of a
    /// checkout are live at once. (Only here: a configuration file names its
    /// rules directory explicitly, and tests built from YAML never pick up
    /// the repository's examples by accident.)
    pub fn embedded() -> Config {
        let rules = PathBuf::from("rules");
        Config {
            rules_dir: rules.is_dir().then_some(rules),
            ..Config::default()
        }
    }

    /// Reads, parses and validates a file; errors name the file and line.
    /// A file that cannot be read gives an error with no line and the OS
    /// reason.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: origin.clone(),
            line: None,
            reason: format!("cannot read: {err}"),
        })?;
        Config::from_yaml(&text, &origin)
    }

    /// Parses and validates YAML text; `origin` names it in errors (a path
    /// or `<inline>`). Empty text (or only comments, or `~`) means all
    /// defaults.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // `Option` turns an empty document into `None` rather than an error.
        let parsed: Option<Config> =
            serde_yaml::from_str(text).map_err(|err| serde_error(err, text, origin))?;
        let mut config = parsed.unwrap_or_default();
        config.source = Source {
            origin: origin.to_string(),
            text: text.into(),
        };
        config.validate().map_err(|e| config.locate(e))?;
        config.check_rules_dir().map_err(|e| config.locate(e))?;
        Ok(config)
    }

    /// The error at `err`'s key path, with the file and line it is on in
    /// the text this configuration was read from. For errors found after
    /// loading (a file the configuration names cannot be used).
    pub fn locate(&self, err: ValidationError) -> ConfigError {
        let file = if self.source.origin.is_empty() {
            "<built-in configuration>".to_string()
        } else {
            self.source.origin.clone()
        };
        ConfigError {
            file,
            line: locate::line_of(&self.source.text, &err.path),
            reason: err.to_string(),
        }
    }

    /// Cross-field checks: limits and timeouts in range, `listen` not empty
    /// and without duplicates, upstream `addr` is `host:port`, `hostname`
    /// and upstream `helo` are valid names, `spool_dir` not empty, the log
    /// filter parses. The error names the key path of the first bad value.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::config(self)?;
        checks::check(&self.checks)?;
        if let Some(s) = &self.sender_auth {
            sender_auth::check(s)?;
        }
        if let Some(up) = &self.upstream {
            ops::check_pool(&up.pool)?;
        }
        if let Some(m) = &self.metrics {
            ops::check_metrics(m, &self.listen)?;
        }
        security::check(self)?;
        protection::check(&self.protection)?;
        edge::check(self)?;
        dns::check(&self.dns)?;
        if let Some(d) = &self.dkim_signing {
            dkim::check(d)?;
        }
        reputation::check(&self.reputation)?;
        scanners::check(&self.scanners)?;
        greylisting::check(&self.greylisting)?;
        milter::check(&self.milters)
    }

    /// The rules directory can be read. The gateway reads the rule files
    /// themselves; this names the config line when the directory is gone.
    pub fn check_rules_dir(&self) -> Result<(), ValidationError> {
        if let Some(dir) = &self.rules_dir {
            if let Err(e) = std::fs::read_dir(dir) {
                return Err(ValidationError::new(
                    "rules_dir",
                    format!("cannot read the rules directory {}: {e}", dir.display()),
                ));
            }
        }
        Ok(())
    }

    /// Human summary printed by `smtpgate check`: hostname, listeners,
    /// upstream or spool directory, limits, timeouts, message options,
    /// shutdown grace and log filter, one topic per line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.limits;
        let t = &self.timeouts;
        let listen: Vec<String> = self
            .listen
            .iter()
            .map(|l| self.listener_summary(l))
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "hostname:  {}", self.hostname);
        let _ = writeln!(s, "listen:    {}", listen.join(", "));
        match &self.upstream {
            Some(up) => {
                let _ = writeln!(
                    s,
                    "upstream:  {} (EHLO as {}, pipelining {})",
                    up.addr,
                    up.helo_name(&self.hostname),
                    on_off(up.pipelining)
                );
                let p = &up.pool;
                let _ = writeln!(
                    s,
                    "pool:      {}",
                    if p.enabled {
                        format!(
                            "up to {} idle connections per server, idle {}s, lifetime {}s",
                            p.max_idle, p.max_idle_age_s, p.max_lifetime_s
                        )
                    } else {
                        "off".to_string()
                    }
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "upstream:  none; accepted mail is stored in {}",
                    self.spool_dir.display()
                );
            }
        }
        self.security_summary(&mut s);
        self.edge_summary(&mut s);
        let _ = writeln!(
            s,
            "limits:    message {}, {} recipients, command line {} B, text line {} B, \
             {} connections, {} errors, spill to disk above {}",
            bytes(l.max_message_bytes),
            l.max_recipients,
            l.max_command_line,
            l.max_text_line,
            l.max_connections,
            l.max_errors,
            bytes(l.spill_threshold_bytes as u64)
        );
        let _ = writeln!(
            s,
            "timeouts:  client command {}s, data block {}s; upstream connect {}s, \
             greeting {}s, command {}s, data init {}s, data block {}s, data end {}s",
            t.command_s,
            t.data_block_s,
            t.upstream_connect_s,
            t.upstream_greeting_s,
            t.upstream_command_s,
            t.upstream_data_init_s,
            t.upstream_data_block_s,
            t.upstream_data_end_s
        );
        let bare = match self.message.bare_line_endings {
            BareLineEndings::Reject => "reject",
            BareLineEndings::Normalize => "normalize",
        };
        let _ = writeln!(
            s,
            "message:   bare CR/LF {}, Received header {}",
            bare,
            on_off(self.message.received_header)
        );
        let _ = writeln!(
            s,
            "rules:     {}; MIME scanned up to {}",
            match &self.rules_dir {
                Some(d) => format!("from {}", d.display()),
                None => "none".to_string(),
            },
            bytes(l.max_mime_scan_bytes)
        );
        protection::summary(&self.protection, &self.relay.trusted_networks, &mut s);
        greylisting::summary(&self.greylisting, &mut s);
        let _ = writeln!(
            s,
            "audit:     {}",
            match &self.audit {
                Some(a) if a.is_stdout() => "standard output".to_string(),
                Some(a) => a.path.display().to_string(),
                None => "off".to_string(),
            }
        );
        let _ = writeln!(
            s,
            "metrics:   {}",
            match &self.metrics {
                Some(m) => format!("http://{}/metrics and /healthz", m.addr),
                None => "off".to_string(),
            }
        );
        if let Some(d) = &self.dkim_signing {
            dkim::summary(d, &mut s);
        }
        scanners::summary(&self.scanners, &mut s);
        let _ = writeln!(s, "shutdown:  {}s grace", self.shutdown_grace_s);
        let _ = writeln!(
            s,
            "log:       {} (unless RUST_LOG is set)",
            self.log.filter()
        );
        s
    }
}

/// `on` or `off`.
fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A byte count for people: `26214400 B (25 MiB)`, `512 B`.
fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{n} B ({} {unit})", n / size)
            } else {
                format!("{n} B ({:.1} {unit})", n as f64 / size as f64)
            };
        }
    }
    format!("{n} B")
}

/// A serde error as a [`ConfigError`]: the line from the error's location,
/// the reason without serde_yaml's own " at line L column C" suffix. A
/// duplicate key is reported where it is repeated, not where its mapping
/// starts.
fn serde_error(err: serde_yaml::Error, text: &str, origin: &str) -> ConfigError {
    let mut reason = err.to_string();
    let mut line = err.location().map(|loc| {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = reason.strip_suffix(&suffix) {
            reason = stripped.to_string();
        }
        loc.line()
    });
    if let Some(path) = duplicate_key_path(&reason) {
        line = locate::line_of_duplicate(text, &path).or(line);
    }
    ConfigError {
        file: origin.to_string(),
        line,
        reason,
    }
}

/// For serde's "duplicate field" error (`limits: duplicate field
/// `max_errors``), the dotted path of the repeated key
/// (`limits.max_errors`).
fn duplicate_key_path(reason: &str) -> Option<String> {
    const MARK: &str = "duplicate field `";
    let at = reason.find(MARK)?;
    let name = reason[at + MARK.len()..].split('`').next()?;
    Some(match reason[..at].strip_suffix(": ") {
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_string(),
    })
}

#[cfg(test)]
mod tests;
