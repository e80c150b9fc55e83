//! The SASL exchanges of SMTP AUTH (RFC 4954) for PLAIN (RFC 4616) and
//! LOGIN, free of I/O: the session feeds the initial response and each
//! continuation line, and gets back a challenge to send, the credentials,
//! or why the exchange failed. The session chooses the reply codes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// A mechanism we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616): authzid NUL authcid NUL password, in one response.
    Plain,
    /// LOGIN: user name and password in two responses.
    Login,
}

/// Why a mechanism name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MechanismError {
    /// Not a mechanism we know → `504 5.5.4`.
    Unknown,
    /// A mechanism we know and refuse on purpose: it needs passwords stored
    /// in clear (CRAM-MD5, DIGEST-MD5) or proves nothing (ANONYMOUS)
    /// → `534 5.7.9`.
    TooWeak,
}

impl Mechanism {
    /// Every mechanism offered, in the order advertised.
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    /// The mechanism named `name` (any case).
    pub fn parse(name: &str) -> Result<Mechanism, MechanismError> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            "LOGIN" => Ok(Mechanism::Login),
            "ANONYMOUS" | "CRAM-MD5" | "DIGEST-MD5" => Err(MechanismError::TooWeak),
            _ => Err(MechanismError::Unknown),
        }
    }

    /// The name as advertised in EHLO.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// What the client proved it knows.
pub struct Credentials {
    /// The authorization identity (PLAIN only); empty when not given.
    pub authzid: String,
    /// The user name (authentication identity).
    pub user: String,
    /// The password; wiped from memory when dropped.
    pub password: Zeroizing<Vec<u8>>,
}

/// Why an exchange failed before any password was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` → `501 5.7.0`.
    Cancelled,
    /// A response was not valid base64 → `501 5.5.2`.
    BadBase64,
    /// The decoded response does not have the mechanism's shape → `501 5.5.2`.
    Malformed,
}

/// The next thing to do in an exchange.
pub enum Step {
    /// Send `334 <challenge>` (base64, may be empty) and wait for a line.
    Challenge(&'static str),
    /// The exchange is complete: check these credentials.
    Done(Credentials),
    /// The exchange failed.
    Failed(SaslError),
}

/// `Username:` in base64, the first LOGIN challenge.
const LOGIN_USER: &str = "VXNlcm5hbWU6";
/// `Password:` in base64, the second LOGIN challenge.
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

/// Where an exchange is.
enum State {
    /// PLAIN, waiting for the response after an empty challenge.
    Plain,
    /// LOGIN, waiting for the user name.
    LoginUser,
    /// LOGIN, waiting for the password of this user.
    LoginPassword(String),
    /// Over.
    Finished,
}

/// One AUTH exchange in progress.
pub struct Exchange {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// What comes next.
    state: State,
}

impl Exchange {
    /// Starts an exchange with the AUTH command's initial response, if any
    /// (`=` is an empty one, RFC 4954 §4).
    pub fn start(mechanism: Mechanism, initial: Option<&str>) -> (Exchange, Step) {
        let mut ex = Exchange {
            mechanism,
            state: match mechanism {
                Mechanism::Plain => State::Plain,
                Mechanism::Login => State::LoginUser,
            },
        };
        let step = match initial {
            Some(response) => ex.next(response),
            None => match mechanism {
                Mechanism::Plain => Step::Challenge(""),
                Mechanism::Login => Step::Challenge(LOGIN_USER),
            },
        };
        (ex, step)
    }

    /// Feeds one response line (without CRLF).
    pub fn next(&mut self, line: &str) -> Step {
        let line = line.trim_end_matches([' ', '\t']);
        if line == "*" {
            self.state = State::Finished;
            return Step::Failed(SaslError::Cancelled);
        }
        let decoded = if line == "=" {
            Zeroizing::new(Vec::new())
        } else {
            match STANDARD.decode(line) {
                Ok(d) => Zeroizing::new(d),
                Err(_) => {
                    self.state = State::Finished;
                    return Step::Failed(SaslError::BadBase64);
                }
            }
        };
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Plain => match split_plain(&decoded) {
                Some(creds) => Step::Done(creds),
                None => Step::Failed(SaslError::Malformed),
            },
            State::LoginUser => match String::from_utf8(decoded.to_vec()) {
                Ok(user) if valid_user(&user) => {
                    self.state = State::LoginPassword(user);
                    Step::Challenge(LOGIN_PASSWORD)
                }
                _ => Step::Failed(SaslError::Malformed),
            },
            State::LoginPassword(user) => Step::Done(Credentials {
                authzid: String::new(),
                user,
                password: decoded,
            }),
            State::Finished => Step::Failed(SaslError::Malformed),
        }
    }
}

/// A user name we can look up: not empty, UTF-8, no control characters
/// (which would also be a way to forge log lines).
fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 255 && !user.chars().any(char::is_control)
}

/// Splits a PLAIN response `authzid NUL authcid NUL passwd`.
fn split_plain(decoded: &[u8]) -> Option<Credentials> {
    let mut parts = decoded.splitn(3, |&b| b == 0);
    let authzid = std::str::from_utf8(parts.next()?).ok()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = parts.next()?;
    if !valid_user(user) || authzid.chars().any(char::is_control) {
        return None;
    }
    Some(Credentials {
        authzid: authzid.to_string(),
        user: user.to_string(),
        password: Zeroizing::new(password.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn done(step: Step) -> Credentials {
        match step {
            Step::Done(c) => c,
            Step::Challenge(c) => panic!("challenge {c:?}"),
            Step::Failed(e) => panic!("failed {e:?}"),
        }
    }

    fn failed(step: Step) -> SaslError {
        match step {
            Step::Failed(e) => e,
            _ => panic!("expected a failure"),
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(b"\0alice\0pw")));
        let c = done(step);
        assert_eq!((c.authzid.as_str(), c.user.as_str()), ("", "alice"));
        assert_eq!(&c.password[..], b"pw");
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(b"alice\0alice\0p\0w")));
        let c = done(step);
        assert_eq!(c.authzid, "alice");
        assert_eq!(&c.password[..], b"p\0w");
    }

    #[test]
    fn plain_after_an_empty_challenge() {
        let (mut ex, step) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(step, Step::Challenge("")));
        let c = done(ex.next(&b64(b"\0bob\0secret")));
        assert_eq!(c.user, "bob");
        assert_eq!(&c.password[..], b"secret");
    }

    #[test]
    fn login_with_and_without_initial_response() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, None);
        assert!(matches!(step, Step::Challenge(LOGIN_USER)));
        assert!(matches!(
            ex.next(&b64(b"carol")),
            Step::Challenge(LOGIN_PASSWORD)
        ));
        let c = done(ex.next(&b64(b"pw")));
        assert_eq!((c.user.as_str(), &c.password[..]), ("carol", &b"pw"[..]));

        let (mut ex, step) = Exchange::start(Mechanism::Login, Some(&b64(b"dave")));
        assert!(matches!(step, Step::Challenge(LOGIN_PASSWORD)));
        assert_eq!(done(ex.next(&b64(b"x"))).user, "dave");
    }

    #[test]
    fn cancel_bad_base64_and_malformed() {
        let (mut ex, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(failed(ex.next("*")), SaslError::Cancelled);
        let (_, step) = Exchange::start(Mechanism::Plain, Some("*"));
        assert_eq!(failed(step), SaslError::Cancelled);
        let (_, step) = Exchange::start(Mechanism::Plain, Some("not base64!"));
        assert_eq!(failed(step), SaslError::BadBase64);
        let (_, step) = Exchange::start(Mechanism::Plain, Some("="));
        assert_eq!(failed(step), SaslError::Malformed);
        for bad in [&b"alice"[..], b"\0\0pw", b"\0al\nice\0pw", b"\0\xff\0pw"] {
            let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64(bad)));
            assert_eq!(failed(step), SaslError::Malformed, "{bad:?}");
        }
        let (mut ex, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(failed(ex.next("=")), SaslError::Malformed);
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::parse("plain"), Ok(Mechanism::Plain));
        assert_eq!(Mechanism::parse("LOGIN"), Ok(Mechanism::Login));
        assert_eq!(Mechanism::parse("CRAM-MD5"), Err(MechanismError::TooWeak));
        assert_eq!(Mechanism::parse("XOAUTH2"), Err(MechanismError::Unknown));
    }
}
