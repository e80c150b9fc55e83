//! smtpgate: an SMTP proxy and filtering gateway.
//!
//! It terminates inbound SMTP, checks every envelope and message, and relays
//! what passes to an upstream mail server in lockstep (or, with no upstream,
//! stores it in a local spool). `docs/architecture.md` describes the layers,
//! the flow of a connection and the invariants, and where each is tested.
//!
//! Layers, from the wire up:
//! - [`proto`]: the sans-I/O codec (commands, replies, DATA).
//! - [`session`]: one inbound SMTP session over any `AsyncRead + AsyncWrite`.
//! - [`upstream`]: the lockstep SMTP client to the upstream server.
//! - [`server`]: listeners, connection limits and graceful shutdown;
//!   [`proxy_protocol`] reads the PROXY header of a load balancer in front.
//! - [`tls`], [`auth`], [`relay`]: TLS in both directions, SMTP AUTH and
//!   relay control.
//! - [`filter`]: the filter chain asked at each stage; [`rules`] is the
//!   YAML rule set, one filter of it; [`message`] the parsed message view
//!   data-stage filters share; [`audit`] the JSON audit trail.
//! - [`protection`]: per-client limits and rate limits (memory or Redis).
//! - [`metrics`]: counters for Prometheus, served with a health check.
//! - [`dns`]: the one DNS resolver (its own thread) and the iprev check.
//! - [`dkim`]: DKIM signing of submitted mail, and key generation.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod authres;
pub mod body;
pub mod checks;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod facts;
pub mod filter;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod protection;
pub mod proto;
pub mod proxy_protocol;
pub mod quarantine;
pub mod quarantine_api;
pub mod quarantine_cli;
pub mod relay;
pub mod reload;
pub mod rule_stats;
pub mod rule_tests;
pub mod rules;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod signals;
pub mod simulate;
pub mod spool;
pub mod stream;
pub mod tls;
pub mod upstream;
