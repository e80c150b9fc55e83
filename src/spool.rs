//! Local spool: with no upstream configured, each accepted message is stored
//! as one `.eml` file. The file is written under a temporary name, synced,
//! renamed into place and the directory synced, all before the client is
//! told 250, so an acknowledged message survives a crash.

use crate::body::Body;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Stores `prepend` (headers added by the gateway) followed by `body` as
/// `<dir>/<id>.eml`, durably; returns the final path.
pub fn store(dir: &Path, id: &str, prepend: &[u8], body: &mut Body) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".incoming-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    {
        let file = tmp.as_file_mut();
        let mut out = io::BufWriter::with_capacity(64 * 1024, file);
        out.write_all(prepend)?;
        let mut chunks = body.chunks(64 * 1024)?;
        let mut buf = Vec::new();
        while chunks.next_into(&mut buf)? {
            out.write_all(&buf)?;
        }
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    let path = dir.join(format!("{id}.eml"));
    tmp.persist_noclobber(&path).map_err(|e| e.error)?;
    // The rename is only durable once the directory entry is on disk too.
    File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_prepend_then_body_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Body::new(4);
        body.append(b"Subject: x\r\n\r\nhello\r\n").unwrap();
        let path = store(dir.path(), "abc.1", b"Received: test\r\n", &mut body).unwrap();
        assert_eq!(path, dir.path().join("abc.1.eml"));
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Received: test\r\nSubject: x\r\n\r\nhello\r\n"
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn never_overwrites_an_existing_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Body::new(1024);
        body.append(b"a\r\n").unwrap();
        store(dir.path(), "same", b"", &mut body).unwrap();
        assert!(store(dir.path(), "same", b"", &mut body).is_err());
    }
}
