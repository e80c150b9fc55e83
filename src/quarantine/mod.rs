//! The quarantine: messages a rule, a milter, a scanner or DMARC held
//! instead of relaying, each stored as `<id>.eml` with a JSON sidecar
//! `<id>.json` that says what the admin needs to act on it (envelope,
//! client, facts, the rules that fired and why it was held).
//!
//! The session writes entries; `smtpgate quarantine ...` and the metrics
//! listener's quarantine API read, list and remove them.

pub mod filter;
pub mod model;
pub mod store;

pub use filter::ListFilter;
pub use model::{Client, Envelope, Held, RcptEntry, RuleFired, Sidecar, TlsEntry, VERSION};
pub use store::{parse_sidecar, selfcheck, valid_id, Entry, IdError, Quarantine};
