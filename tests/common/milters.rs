//! Milters the tests start themselves: OpenDKIM as a signing milter on a
//! Unix socket in a temporary directory (in a network namespace of its
//! own, so that it cannot send one DNS query), and a small milter built
//! on pymilter (libmilter, the reference milter library, through
//! Debian's python3-milter) that rejects, tempfails, discards or changes
//! what its input asks for. Each runs under the guard of
//! [`super::dnslists::Guarded`], which kills it by PID when the test
//! binary ends, even from a static.

use super::dkim::TestKey;
use super::dnslists::Guarded;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running milter daemon.
pub struct Milter {
    _guard: Guarded,
    /// Its socket in the gateway's `milters:` syntax.
    pub socket: String,
    _dir: tempfile::TempDir,
}

fn wait_until(mut ready: impl FnMut() -> bool, what: &str, log: &Path) {
    for _ in 0..800 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// OpenDKIM signing mail from `domain` with `key` (selector `selector`),
/// for clients on loopback (its default InternalHosts).
pub fn opendkim(domain: &str, selector: &str, key: &TestKey) -> Milter {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("opendkim.sock");
    let conf = d.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode s\nDomain {domain}\nSelector {selector}\nKeyFile {key}\n\
             Socket local:{sock}\nPidFile {pid}\nBackground no\nSyslog no\n\
             Canonicalization relaxed/simple\nInternalHosts 127.0.0.1\n\
             RequireSafeKeys false\nUMask 000\n",
            key = key.path.display(),
            sock = sock.display(),
            pid = d.join("opendkim.pid").display(),
        ),
    )
    .unwrap();
    // No network but loopback: signing needs no DNS, and none can leak.
    let script = format!(
        "ip link set lo up || exit 90\nexec /usr/sbin/opendkim -f -x {}",
        conf.display()
    );
    let log = d.join("opendkim.log");
    let guard = Guarded::spawn(
        "/usr/bin/unshare",
        &["--net".into(), "bash".into(), "-c".into(), script],
        &log,
    );
    let probe = sock.clone();
    wait_until(
        || std::os::unix::net::UnixStream::connect(&probe).is_ok(),
        "opendkim (scripts/install-test-deps.sh installs it)",
        &log,
    );
    Milter {
        _guard: guard,
        socket: format!("unix:{}", sock.display()),
        _dir: dir,
    }
}

/// The pymilter program: named `tag`, it adds `X-Milter-<tag>: saw [...]`
/// listing the X-Milter-* fields it was given (so a test sees the order
/// of several), rejects recipients containing `blocked`, and by Subject:
/// `reject-me` (554 5.7.1), `tempfail-me`, `discard-me`, `quarantine-me`,
/// `change-me` (Subject changed, X-Remove deleted, X-Top inserted at the
/// top), `redirect-me` (b@ replaced by c@, sender changed); a body with
/// `REPLACE-ME` is replaced.
const SCRIPT: &str = r#"
import sys
import Milter
tag, sock = sys.argv[1], sys.argv[2]

class TestMilter(Milter.Base):
    def __init__(self):
        self.id = Milter.uniqueID()
    def envfrom(self, mailfrom, *args):
        self.fields = []
        self.text = b''
        return Milter.CONTINUE
    def envrcpt(self, to, *args):
        if 'blocked' in to:
            self.setreply('550', '5.7.1', 'Recipient refused by ' + tag)
            return Milter.REJECT
        return Milter.CONTINUE
    def header(self, name, value):
        self.fields.append((name, value))
        return Milter.CONTINUE
    def body(self, chunk):
        self.text += chunk
        return Milter.CONTINUE
    def eom(self):
        subject = ''.join(v for n, v in self.fields if n.lower() == 'subject')
        if 'reject-me' in subject:
            self.setreply('554', '5.7.1', 'Message refused by ' + tag)
            return Milter.REJECT
        if 'tempfail-me' in subject:
            return Milter.TEMPFAIL
        if 'discard-me' in subject:
            return Milter.DISCARD
        if 'quarantine-me' in subject:
            self.quarantine('held by ' + tag)
            return Milter.ACCEPT
        seen = ','.join(n for n, v in self.fields if n.lower().startswith('x-milter-'))
        self.addheader('X-Milter-' + tag, 'saw [' + seen + ']')
        if 'change-me' in subject:
            self.chgheader('Subject', 1, 'changed by ' + tag)
            self.chgheader('X-Remove', 1, '')
            self.addheader('X-Top', 'inserted', 0)
        if b'REPLACE-ME' in self.text:
            self.replacebody(self.text.replace(b'REPLACE-ME', b'replaced by ' + tag.encode()))
        if 'redirect-me' in subject:
            self.delrcpt('<b@example.org>')
            self.addrcpt('<c@example.org>')
            self.chgfrom('<bounce@example.org>')
        return Milter.ACCEPT

Milter.factory = TestMilter
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT
                 | Milter.DELRCPT | Milter.CHGFROM | Milter.QUARANTINE)
Milter.runmilter('test-' + tag, sock, 60)
"#;

/// The pymilter test milter named `tag` on a loopback port.
pub fn pymilter(tag: &str) -> Milter {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("testmilter.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let port = super::unbound::free_port();
    let log = dir.path().join("milter.log");
    let guard = Guarded::spawn(
        "/usr/bin/python3",
        &[
            script.display().to_string(),
            tag.to_string(),
            format!("inet:{port}@127.0.0.1"),
        ],
        &log,
    );
    wait_until(
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "pymilter (scripts/install-test-deps.sh installs python3-milter)",
        &log,
    );
    Milter {
        _guard: guard,
        socket: format!("inet:127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A socket nothing listens on.
pub fn dead_socket() -> String {
    format!("inet:127.0.0.1:{}", super::unbound::free_port())
}

/// A path under `dir` for a socket that does not exist.
pub fn missing_unix(dir: &Path) -> PathBuf {
    dir.join("none.sock")
}
