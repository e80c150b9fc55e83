//! DKIM helpers for tests: keys made by tools we did not write
//! (`opendkim-genkey`, `openssl`), and verification by implementations we
//! did not write: dkimpy (`python3-dkim`, answering its key lookups from
//! the test's records, so it asks no DNS server) and `opendkim-testmsg`
//! (in a network namespace of its own whose only name server is a
//! private unbound holding the test's records, so no query can leave).
//!
//! `scripts/install-test-deps.sh` installs all of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python that has the Debian `dkim` module (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";

/// A key pair on disk: the private key file and the TXT record text.
#[derive(Clone, Debug)]
pub struct TestKey {
    /// The private key (PEM).
    pub path: PathBuf,
    /// `v=DKIM1; k=...; p=...`.
    pub record: String,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); run scripts/install-test-deps.sh"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The base64 of the DER public key of the private key at `path`, as
/// OpenSSL computes it.
fn openssl_public_der(path: &Path) -> Vec<u8> {
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(path))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A 2048-bit RSA key from `opendkim-genkey` in `dir` (selector `sel`),
/// with the record text it wrote (quotes and zone syntax stripped).
pub fn opendkim_genkey(dir: &Path, domain: &str, sel: &str) -> TestKey {
    run(Command::new("opendkim-genkey")
        .args(["-b", "2048", "-h", "sha256", "-d", domain, "-s", sel, "-D"])
        .arg(dir));
    let txt = std::fs::read_to_string(dir.join(format!("{sel}.txt"))).unwrap();
    // `sel._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." )  ; comment`
    let inner = &txt[txt.find('(').unwrap() + 1..txt.find(')').unwrap()];
    let record: String = inner
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    TestKey {
        path: dir.join(format!("{sel}.private")),
        record,
    }
}

/// An Ed25519 key from `openssl genpkey` (PKCS#8 v1) in `dir`, with its
/// record (`p=` the raw 32-byte public key, RFC 8463 §4.2).
pub fn openssl_ed25519(dir: &Path, name: &str) -> TestKey {
    let path = dir.join(format!("{name}.pem"));
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path));
    let der = openssl_public_der(&path);
    TestKey {
        path,
        record: format!("v=DKIM1; k=ed25519; p={}", b64(&der[der.len() - 32..])),
    }
}

/// What dkimpy makes of each DKIM-Signature of `message`, in order:
/// `pass` or `fail: why`. `records` maps `selector._domainkey.domain` to
/// the TXT text dkimpy is given for it (anything else: no record).
pub fn dkimpy_verify(message: &[u8], records: &[(String, String)]) -> Vec<String> {
    const SCRIPT: &str = r#"
import json, logging, re, sys
import dkim
records = {k.lower(): v for k, v in json.loads(sys.argv[1]).items()}
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    text = records.get(name.rstrip('.').lower())
    return text.encode() if text is not None else None
class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []
    def emit(self, record):
        self.seen.append(record.getMessage())
msg = sys.stdin.buffer.read()
head = msg.split(b'\r\n\r\n', 1)[0]
count = len(re.findall(rb'(?im)^dkim-signature:', head))
for i in range(count):
    keep = Keep()
    log = logging.getLogger('dkim%d' % i)
    log.addHandler(keep)
    log.setLevel(logging.DEBUG)
    try:
        ok = dkim.DKIM(msg, logger=log).verify(idx=i, dnsfunc=dnsfunc)
    except Exception as e:
        ok = False
        keep.seen.append(repr(e))
    print('pass' if ok else 'fail: ' + ' | '.join(keep.seen[-3:]).replace('\n', ' '))
"#;
    let map: serde_json::Map<String, serde_json::Value> = records
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .arg(serde_json::Value::Object(map).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/install-test-deps.sh installs python3-dkim)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The value of tag `tag` of the first DKIM-Signature field of `message`
/// (whitespace removed).
pub fn signature_tag(message: &[u8], tag: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let start = head.to_ascii_lowercase().find("dkim-signature:")?;
    let mut field = String::new();
    for (i, line) in head[start..].split("\r\n").enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        field.push_str(line);
    }
    let value = &field["dkim-signature:".len()..];
    value.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == tag).then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// How many DKIM-Signature fields `message` has.
pub fn signature_count(message: &[u8]) -> usize {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .count()
}

/// Verifies the DKIM-Signature(s) of `message` with `opendkim-testmsg`.
/// It looks keys up in DNS through the system resolver, so it runs in a
/// network and mount namespace of its own (`unshare`): loopback only, and
/// `/etc/resolv.conf` pointing at a private unbound on 127.0.0.1:53 in
/// that namespace, serving `records` (name, TXT text) and nothing else.
/// Ok when every signature verifies; else what opendkim said.
pub fn opendkim_verify(message: &[u8], records: &[(String, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut conf = format!(
        "server:\n    do-daemonize: no\n    username: \"\"\n    chroot: \"\"\n\
         \x20   directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n\
         \x20   logfile: \"{d}/unbound.log\"\n    use-syslog: no\n\
         \x20   interface: 127.0.0.1\n    port: 53\n    do-ip6: no\n\
         \x20   access-control: 127.0.0.0/8 allow\n    module-config: \"iterator\"\n\
         \x20   do-not-query-localhost: yes\n    local-zone: \".\" static\n"
    );
    for (name, text) in records {
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        conf.push_str(&format!(
            "    local-data: '{name}. 300 IN TXT {}'\n",
            strings.join(" ")
        ));
    }
    conf.push_str("remote-control:\n    control-enable: no\n");
    std::fs::write(dir.path().join("unbound.conf"), conf).unwrap();
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    // opendkim-testmsg reads a text file: LF line ends.
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    std::fs::write(dir.path().join("message.eml"), text).unwrap();
    let script = format!(
        "ip link set lo up || exit 90\n\
         mount --bind {d}/resolv.conf /etc/resolv.conf || exit 91\n\
         /usr/sbin/unbound -c {d}/unbound.conf &\n\
         U=$!\n\
         for i in $(seq 1 400); do (exec 3<>/dev/tcp/127.0.0.1/53) 2>/dev/null && break; sleep 0.05; done\n\
         opendkim-testmsg < {d}/message.eml; rc=$?\n\
         kill $U; wait $U\n\
         exit $rc\n"
    );
    let out = Command::new("unshare")
        .args(["--net", "--mount", "bash", "-c", &script])
        .output()
        .expect("unshare runs");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(90 | 91) => panic!(
            "cannot set up the namespace for opendkim-testmsg: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        _ => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
