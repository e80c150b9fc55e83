//! Stateless TLS session tickets whose keys several instances share.
//!
//! Behind a load balancer a client's next connection lands on another
//! instance; with rustls' default ticketer each instance has random keys
//! of its own and the client must make a full handshake again. Here the
//! keys come from a file every instance reads (`tls.session_tickets.key_file`):
//! one key per line, newest first, as 96 hex digits (a 16-byte key name,
//! then a 32-byte ChaCha20-Poly1305 key). Tickets are sealed with the first
//! key and opened with any key in the file, so a rotation
//! (`smtpgate ticket-keys rotate`, from a timer) keeps the tickets made
//! just before it valid until their key is dropped from the file.
//!
//! The file is checked for changes at most every [`RECHECK`], so a
//! rotation reaches every instance within that time without a reload. A
//! file that cannot be read keeps the keys in use (logged).
//!
//! A ticket is `name (16) || nonce (12) || sealed state || tag (16)`; the
//! name is the AEAD's associated data. The crypto is ring's.

use futures_rustls::rustls::server::ProducesTickets;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

/// Bytes of a key's name: tickets carry it to say which key sealed them.
pub const NAME_LEN: usize = 16;
/// Bytes of a ChaCha20-Poly1305 key.
pub const KEY_LEN: usize = 32;
/// Hex digits of one line of the key file.
pub const LINE_HEX: usize = 2 * (NAME_LEN + KEY_LEN);
/// Keys a file may hold: the newest seals, the others only open.
pub const MAX_KEYS: usize = 16;
/// How often the key file is looked at for a rotation.
pub const RECHECK: Duration = Duration::from_secs(10);
/// Bytes a ticket adds to the state it seals.
const OVERHEAD: usize = NAME_LEN + NONCE_LEN + 16;

/// One ticket key: its name and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    /// Public: sent in every ticket.
    pub name: [u8; NAME_LEN],
    /// Secret.
    pub key: [u8; KEY_LEN],
}

impl fmt::Debug for TicketKey {
    /// The name only: keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketKey({})", hex(&self.name))
    }
}

impl TicketKey {
    /// A new random key.
    pub fn generate() -> Result<TicketKey, String> {
        let rng = SystemRandom::new();
        let mut name = [0u8; NAME_LEN];
        let mut key = [0u8; KEY_LEN];
        rng.fill(&mut name)
            .and_then(|_| rng.fill(&mut key))
            .map_err(|_| "the system random generator failed".to_string())?;
        Ok(TicketKey { name, key })
    }

    /// The key as a line of the key file (without the newline).
    pub fn to_line(&self) -> String {
        format!("{}{}", hex(&self.name), hex(&self.key))
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of one hex digit.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reads a key file's text: one key per line, newest first; blank lines
/// and lines starting with `#` are skipped. Errors name the line.
pub fn parse_keys(text: &str) -> Result<Vec<TicketKey>, String> {
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        if line.len() != LINE_HEX {
            return Err(format!(
                "line {n}: a key is {LINE_HEX} hex digits (16-byte name, 32-byte key), \
                 this line has {} characters",
                line.chars().count()
            ));
        }
        let mut bytes = [0u8; NAME_LEN + KEY_LEN];
        for (j, pair) in line.as_bytes().chunks(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => bytes[j] = hi << 4 | lo,
                _ => {
                    return Err(format!(
                        "line {n}: not a hex digit near column {}",
                        2 * j + 1
                    ))
                }
            }
        }
        let mut key = TicketKey {
            name: [0; NAME_LEN],
            key: [0; KEY_LEN],
        };
        key.name.copy_from_slice(&bytes[..NAME_LEN]);
        key.key.copy_from_slice(&bytes[NAME_LEN..]);
        if keys.iter().any(|k: &TicketKey| k.name == key.name) {
            return Err(format!("line {n}: a second key with the same name"));
        }
        keys.push(key);
        if keys.len() > MAX_KEYS {
            return Err(format!("line {n}: more than {MAX_KEYS} keys"));
        }
    }
    if keys.is_empty() {
        return Err("no key in the file (make one with `smtpgate ticket-keys rotate`)".into());
    }
    Ok(keys)
}

/// Reads and parses a key file; errors name the file and line.
pub fn read_keys(path: &Path) -> Result<Vec<TicketKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Puts a new key first in the file at `path` (created when missing) and
/// keeps at most `keep` keys, writing the file atomically with mode 0600.
/// Returns the keys now in the file.
pub fn rotate(path: &Path, keep: usize) -> Result<Vec<TicketKey>, String> {
    let keep = keep.clamp(1, MAX_KEYS);
    let mut keys = match std::fs::metadata(path) {
        Ok(_) => read_keys(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    keys.insert(0, TicketKey::generate()?);
    keys.truncate(keep);
    let mut text = String::from("# smtpgate TLS ticket keys, newest first; secret.\n");
    for k in &keys {
        text.push_str(&k.to_line());
        text.push('\n');
    }
    write_private(path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(keys)
}

/// Writes `bytes` to `path` through a temporary file in the same
/// directory (mode 0600), so readers see the old or the new file whole.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ticket-keys-")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Keys in use and what the file looked like when they were read.
struct State {
    /// Newest first.
    keys: Vec<(TicketKey, LessSafeKey)>,
    /// The file's modification time and length when read.
    stamp: Option<(SystemTime, u64)>,
    /// When the file was last looked at.
    checked: Instant,
}

/// A rustls ticketer over a shared key file.
pub struct SharedTickets {
    /// The key file.
    path: PathBuf,
    /// Ticket lifetime told to clients, in seconds.
    lifetime: u32,
    /// The keys.
    state: RwLock<State>,
    /// Nonces.
    rng: SystemRandom,
}

impl fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedTickets({})", self.path.display())
    }
}

/// The file's modification time and length, to notice a rotation.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// ring keys for `keys`.
fn sealing_keys(keys: Vec<TicketKey>) -> Result<Vec<(TicketKey, LessSafeKey)>, String> {
    keys.into_iter()
        .map(|k| {
            let aead = UnboundKey::new(&CHACHA20_POLY1305, &k.key)
                .map_err(|_| "a ticket key of the wrong length".to_string())?;
            Ok((k, LessSafeKey::new(aead)))
        })
        .collect()
}

impl SharedTickets {
    /// The ticketer for the key file at `path`; fails when it cannot be
    /// read or holds no valid key. `lifetime` is in seconds.
    pub fn load(path: &Path, lifetime: u32) -> Result<SharedTickets, String> {
        let stamp = stamp(path);
        let keys = sealing_keys(read_keys(path)?)?;
        Ok(SharedTickets {
            path: path.to_path_buf(),
            lifetime,
            state: RwLock::new(State {
                keys,
                stamp,
                checked: Instant::now(),
            }),
            rng: SystemRandom::new(),
        })
    }

    /// The names of the keys in use, newest first (for logs and tests).
    pub fn key_names(&self) -> Vec<String> {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.keys.iter().map(|(k, _)| hex(&k.name)).collect()
    }

    /// Re-reads the key file when it changed and [`RECHECK`] has passed.
    fn refresh(&self) {
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.checked.elapsed() < RECHECK {
                return;
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < RECHECK {
            return;
        }
        state.checked = Instant::now();
        let now = stamp(&self.path);
        if now.is_some() && now == state.stamp {
            return;
        }
        match read_keys(&self.path).and_then(sealing_keys) {
            Ok(keys) => {
                log::info!(
                    "TLS ticket keys re-read from {}: {} keys, newest {}",
                    self.path.display(),
                    keys.len(),
                    hex(&keys[0].0.name)
                );
                state.keys = keys;
                state.stamp = now;
            }
            Err(e) => {
                log::warn!("TLS ticket keys not re-read, the ones in use stay: {e}");
                state.stamp = now;
            }
        }
    }
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let (key, sealing) = state.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < OVERHEAD {
            return None;
        }
        self.refresh();
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let (key, opening) = state.keys.iter().find(|(k, _)| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = opening
            .open_in_place(nonce, Aad::from(key.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Invariants of the key-file reader, for the fuzz target and the seed
/// replay: it never panics; what it accepts is 1 to [`MAX_KEYS`] keys of
/// distinct names that read back the same from their lines.
pub fn selfcheck(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(keys) = parse_keys(text) else {
        return;
    };
    assert!(!keys.is_empty() && keys.len() <= MAX_KEYS);
    let lines: String = keys.iter().map(|k| k.to_line() + "\n").collect();
    assert_eq!(parse_keys(&lines).expect("written keys read again"), keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, keys: &[TicketKey]) -> PathBuf {
        let path = dir.join("keys");
        let text: String = keys.iter().map(|k| k.to_line() + "\n").collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn lines_parse_with_their_errors_named() {
        let k = TicketKey::generate().unwrap();
        let text = format!("# comment\n\n{}\n", k.to_line().to_uppercase());
        assert_eq!(parse_keys(&text).unwrap(), vec![k.clone()]);
        let e = parse_keys("abc\n").unwrap_err();
        assert!(e.starts_with("line 1: a key is 96 hex digits"), "{e}");
        let bad = format!("{}\n{}zz\n", k.to_line(), &k.to_line()[..94]);
        let e = parse_keys(&bad).unwrap_err();
        assert!(e.starts_with("line 2: not a hex digit"), "{e}");
        let e = parse_keys(&format!("{0}\n{0}\n", k.to_line())).unwrap_err();
        assert!(e.contains("same name"), "{e}");
        assert!(parse_keys("# only a comment\n").is_err());
    }

    #[test]
    fn two_ticketers_on_one_file_open_each_others_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), &[TicketKey::generate().unwrap()]);
        let a = SharedTickets::load(&path, 3600).unwrap();
        let b = SharedTickets::load(&path, 3600).unwrap();
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(ticket.len(), b"session state".len() + OVERHEAD);
        assert_eq!(b.decrypt(&ticket).unwrap(), b"session state");
        // Altered anywhere, it does not open.
        for i in [0, NAME_LEN, NAME_LEN + NONCE_LEN, ticket.len() - 1] {
            let mut bad = ticket.clone();
            bad[i] ^= 1;
            assert_eq!(b.decrypt(&bad), None, "byte {i}");
        }
        assert_eq!(b.decrypt(&ticket[..OVERHEAD - 1]), None);
        // Another file's ticketer cannot open it.
        let other_dir = tempfile::tempdir().unwrap();
        let other = key_file(other_dir.path(), &[TicketKey::generate().unwrap()]);
        let c = SharedTickets::load(&other, 3600).unwrap();
        assert_eq!(c.decrypt(&ticket), None);
    }

    #[test]
    fn after_a_rotation_old_tickets_open_and_new_ones_use_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let first = rotate(&path, 2).unwrap();
        assert_eq!(first.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let old = SharedTickets::load(&path, 3600).unwrap();
        let ticket = old.encrypt(b"x").unwrap();
        let second = rotate(&path, 2).unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(second[1], first[0]);
        let new = SharedTickets::load(&path, 3600).unwrap();
        assert_eq!(new.decrypt(&ticket).unwrap(), b"x");
        assert_eq!(new.encrypt(b"y").unwrap()[..NAME_LEN], second[0].name);
        // A third rotation with keep 2 drops the first key.
        rotate(&path, 2).unwrap();
        let newest = SharedTickets::load(&path, 3600).unwrap();
        assert_eq!(newest.decrypt(&ticket), None);
    }
}
