//! The quarantine directory: writing an entry durably, reading, listing
//! and removing entries.
//!
//! Write order (crash safety): the sidecar is written under a temporary
//! name, synced, renamed to `<id>.json` and the directory synced; only
//! then is the message written the same way and renamed to `<id>.eml`,
//! and the directory synced again. A crash therefore never leaves an
//! `.eml` without its sidecar; at worst a sidecar without its message,
//! which listing skips and `purge` removes. Removal goes the other way:
//! the `.eml` first, then the sidecar.

use super::model::{Sidecar, VERSION};
use crate::body::Body;
use serde::Serialize;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Longest id accepted.
const MAX_ID: usize = 128;

/// Largest sidecar read back; a bigger one is refused, not parsed.
pub const MAX_SIDECAR_BYTES: u64 = 1024 * 1024;

/// Why a quarantine id was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError(String);

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdError {}

/// Checks that `id` names an entry and nothing else: letters, digits,
/// `.`, `-` and `_`, not starting with a dot, so no path (`../x`, `/etc`)
/// gets through.
pub fn valid_id(id: &str) -> Result<(), IdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(IdError(format!(
            "invalid quarantine id {id:?}: an id is made of letters, digits, '.', '-' and '_' \
             and does not start with '.'"
        )))
    }
}

/// Reads a sidecar's bytes: JSON of [`Sidecar`], version [`VERSION`].
pub fn parse_sidecar(bytes: &[u8]) -> Result<Sidecar, String> {
    let sidecar: Sidecar = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if sidecar.version != VERSION {
        return Err(format!(
            "sidecar version {} is not supported (this build reads version {VERSION})",
            sidecar.version
        ));
    }
    valid_id(&sidecar.id).map_err(|e| e.to_string())?;
    Ok(sidecar)
}

/// Checks what [`parse_sidecar`] promises on any input (the fuzz target
/// and the seed replay call this): no panic; a sidecar it accepts has a
/// valid id and reads back the same once written.
pub fn selfcheck(data: &[u8]) {
    let Ok(sidecar) = parse_sidecar(data) else {
        return;
    };
    assert!(
        valid_id(&sidecar.id).is_ok(),
        "accepted id {:?}",
        sidecar.id
    );
    let written = serde_json::to_vec_pretty(&sidecar).expect("a sidecar serializes");
    let again = parse_sidecar(&written).expect("a sidecar written back reads again");
    assert_eq!(again, sidecar, "round trip");
}

/// One listed entry: a stored message and what its sidecar says.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The id (file stem).
    pub id: String,
    /// The sidecar, when it could be read.
    pub sidecar: Option<Sidecar>,
    /// Why the sidecar could not be read (missing, unreadable, bad JSON).
    pub problem: Option<String>,
    /// Size of the `.eml` file in bytes.
    pub file_size: u64,
    /// When the `.eml` was written (the received time when no sidecar).
    #[serde(skip)]
    pub modified: SystemTime,
}

/// A quarantine directory.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// The quarantine in `dir` (created when the first entry is stored).
    pub fn new(dir: impl Into<PathBuf>) -> Quarantine {
        Quarantine { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the message of `id`, after checking the id.
    pub fn message_path(&self, id: &str) -> Result<PathBuf, IdError> {
        valid_id(id)?;
        Ok(self.dir.join(format!("{id}.eml")))
    }

    /// The path of the sidecar of `id`, after checking the id.
    pub fn sidecar_path(&self, id: &str) -> Result<PathBuf, IdError> {
        valid_id(id)?;
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Stores `prepend` then `body` as `<id>.eml` with `sidecar` as
    /// `<id>.json`, durably and in the order the module comment gives;
    /// returns the message's path. Never overwrites an entry.
    pub fn store(&self, sidecar: &Sidecar, prepend: &[u8], body: &mut Body) -> io::Result<PathBuf> {
        let json = self.sidecar_path(&sidecar.id).map_err(invalid)?;
        let eml = self.message_path(&sidecar.id).map_err(invalid)?;
        fs::create_dir_all(&self.dir)?;
        if eml.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", eml.display()),
            ));
        }
        let mut text = serde_json::to_vec_pretty(sidecar).map_err(io::Error::other)?;
        text.push(b'\n');
        self.write_new(&json, |out| out.write_all(&text))?;
        self.write_new(&eml, |out| {
            out.write_all(prepend)?;
            let mut chunks = body.chunks(64 * 1024)?;
            let mut buf = Vec::new();
            while chunks.next_into(&mut buf)? {
                out.write_all(&buf)?;
            }
            Ok(())
        })?;
        Ok(eml)
    }

    /// Writes a new file at `path` through a synced temporary file, then
    /// syncs the directory so the rename is on disk before anything after it.
    fn write_new(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        {
            let mut out = io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
            fill(&mut out)?;
            out.flush()?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// The sidecar of `id`.
    pub fn load(&self, id: &str) -> Result<Sidecar, String> {
        let path = self.sidecar_path(id).map_err(|e| e.to_string())?;
        let sidecar = read_sidecar(&path)?;
        if sidecar.id != id {
            return Err(format!(
                "{}: names id {:?}, not {id:?}",
                path.display(),
                sidecar.id
            ));
        }
        Ok(sidecar)
    }

    /// True when the message of `id` is stored.
    pub fn exists(&self, id: &str) -> Result<bool, IdError> {
        Ok(self.message_path(id)?.is_file())
    }

    /// Every stored message (each `.eml`), oldest first; an unreadable
    /// sidecar is reported in its entry, not as an error. A missing
    /// directory is an empty quarantine.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item?;
            let name = item.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".eml")) else {
                continue;
            };
            if valid_id(id).is_err() {
                continue;
            }
            let meta = item.metadata()?;
            let (sidecar, problem) = match self.load(id) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            entries.push(Entry {
                id: id.to_string(),
                sidecar,
                problem,
                file_size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        entries.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.id.cmp(&b.id)));
        Ok(entries)
    }

    /// Sidecars whose message is gone (a crash between the two writes),
    /// with their modification time.
    pub fn orphans(&self) -> io::Result<Vec<(String, SystemTime)>> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for item in read {
            let item = item?;
            let name = item.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if valid_id(id).is_ok() && !self.dir.join(format!("{id}.eml")).exists() {
                let modified = item
                    .metadata()?
                    .modified()
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((id.to_string(), modified));
            }
        }
        Ok(out)
    }

    /// Removes the entry of `id`: the message, then its sidecar, then
    /// syncs the directory. A missing message is `NotFound`; a missing
    /// sidecar is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let eml = self.message_path(id).map_err(invalid)?;
        let json = self.sidecar_path(id).map_err(invalid)?;
        fs::remove_file(&eml)?;
        match fs::remove_file(&json) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sync_dir()
    }

    /// Removes a sidecar left without its message.
    pub fn remove_orphan(&self, id: &str) -> io::Result<()> {
        fs::remove_file(self.sidecar_path(id).map_err(invalid)?)?;
        self.sync_dir()
    }
}

/// Reads and parses the sidecar at `path`, refusing one larger than
/// [`MAX_SIDECAR_BYTES`].
fn read_sidecar(path: &Path) -> Result<Sidecar, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_SIDECAR_BYTES + 1), &mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SIDECAR_BYTES {
        return Err(format!(
            "{}: larger than {MAX_SIDECAR_BYTES} bytes",
            path.display()
        ));
    }
    parse_sidecar(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn invalid(e: IdError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::model::sample;
    use super::*;

    fn body(text: &[u8]) -> Body {
        let mut b = Body::new(1024);
        b.append(text).unwrap();
        b
    }

    #[test]
    fn sidecar_round_trips_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("q"));
        let sidecar = sample("abc.1");
        let path = q
            .store(
                &sidecar,
                b"Received: x\r\n",
                &mut body(b"Subject: s\r\n\r\nhi\r\n"),
            )
            .unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Received: x\r\nSubject: s\r\n\r\nhi\r\n"
        );
        assert_eq!(q.load("abc.1").unwrap(), sidecar);
        let listed = q.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].sidecar.as_ref(), Some(&sidecar));
        let names: Vec<_> = fs::read_dir(q.dir()).unwrap().collect();
        assert_eq!(
            names.len(),
            2,
            "the .eml and its sidecar, no temporary file"
        );
        q.remove("abc.1").unwrap();
        assert!(q.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(q.dir()).unwrap().count(), 0);
    }

    #[test]
    fn never_overwrites_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path());
        q.store(&sample("same"), b"", &mut body(b"a\r\n")).unwrap();
        assert!(q.store(&sample("same"), b"", &mut body(b"b\r\n")).is_err());
        assert_eq!(fs::read(dir.path().join("same.eml")).unwrap(), b"a\r\n");
    }

    #[test]
    fn ids_that_are_paths_are_refused() {
        for bad in [
            "../x",
            "..",
            ".hidden",
            "a/b",
            "/etc/passwd",
            "",
            "a b",
            "x\0",
        ] {
            assert!(valid_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc.1", "A-b_c.12"] {
            assert!(valid_id(good).is_ok(), "{good:?}");
        }
        let q = Quarantine::new("/tmp");
        let e = q.message_path("../x").unwrap_err().to_string();
        assert!(e.contains("invalid quarantine id \"../x\""), "{e}");
    }

    #[test]
    fn other_versions_and_bad_json_are_refused_with_a_reason() {
        let mut s = serde_json::to_value(sample("a.1")).unwrap();
        s["version"] = 2.into();
        let e = parse_sidecar(s.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("version 2 is not supported"), "{e}");
        assert!(parse_sidecar(b"{").is_err());
        s["version"] = 1.into();
        s["id"] = "../x".into();
        assert!(parse_sidecar(s.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_message_without_sidecar_is_listed_with_the_problem_and_orphans_are_found() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old.1.eml"), b"x\r\n").unwrap();
        fs::write(
            dir.path().join("lost.2.json"),
            serde_json::to_vec(&sample("lost.2")).unwrap(),
        )
        .unwrap();
        let q = Quarantine::new(dir.path());
        let listed = q.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "old.1");
        assert!(listed[0].sidecar.is_none());
        assert!(listed[0].problem.is_some());
        let orphans = q.orphans().unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, "lost.2");
    }
}
