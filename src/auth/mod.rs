//! SMTP AUTH (RFC 4954): the SASL exchanges ([`sasl`]), password hashes
//! ([`hash`]) and the users file ([`users`]).
//!
//! AUTH is offered only under TLS (unless a loopback listener explicitly
//! allows plaintext AUTH), passwords are only ever compared as hashes, and
//! an unknown user costs the same time as a wrong password.

pub mod backends;
pub mod cache;
pub mod dovecot;
pub mod hash;
pub mod ldap;
pub mod sasl;
pub mod upstream;
pub mod users;

pub use backends::{Backend, Backends, Outcome};
pub use hash::{hash_password, StoredHash};
pub use sasl::{Credentials, Exchange, Mechanism, MechanismError, SaslError, Step};
pub use upstream::UpstreamLogin;
pub use users::{User, UserStore, Users};
