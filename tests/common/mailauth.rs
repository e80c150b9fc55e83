//! Sender-authentication material made by tools we did not write, at test
//! time: DKIM keys from `opendkim-genkey`, DKIM signatures from dkimpy's
//! `dkimsign`, ARC sets from dkimpy's `arcsign`, and SPF results from
//! pyspf asked against the test's own unbound (never the system
//! resolver). `scripts/install-test-deps.sh` installs them; a missing one
//! fails the test, it does not skip it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A DKIM key pair: the private key file and the TXT record to publish.
pub struct Key {
    /// `<selector>.private`, PEM.
    pub private: PathBuf,
    /// The `_domainkey` TXT record, `v=DKIM1; ... p=...`.
    pub txt: String,
    /// The selector.
    pub selector: String,
    /// The signing domain.
    pub domain: String,
}

impl Key {
    /// Makes a 2048-bit RSA key with `opendkim-genkey` in `dir`.
    pub fn generate(dir: &Path, domain: &str, selector: &str) -> Key {
        let out = Command::new(tool("opendkim-genkey"))
            .args(["--bits=2048", "--domain", domain, "--selector", selector])
            .arg(format!("--directory={}", dir.display()))
            .output()
            .expect("opendkim-genkey runs (scripts/install-test-deps.sh installs it)");
        assert!(out.status.success(), "{out:?}");
        let zone = std::fs::read_to_string(dir.join(format!("{selector}.txt"))).unwrap();
        // The zone stub holds the record as quoted strings inside ( ).
        let txt: String = zone
            .split('"')
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .concat();
        assert!(txt.contains("p="), "{zone}");
        Key {
            private: dir.join(format!("{selector}.private")),
            txt,
            selector: selector.to_string(),
            domain: domain.to_string(),
        }
    }

    /// The unbound `local-data` line publishing the key, split into
    /// character-strings of at most 255 bytes.
    pub fn local_data(&self) -> String {
        format!(
            "local-data: '{}._domainkey.{}. 300 IN TXT {}'",
            self.selector,
            self.domain,
            txt_strings(&self.txt)
        )
    }

    /// `message` signed with this key by dkimpy's `dkimsign`
    /// (relaxed/relaxed, rsa-sha256): the signature header, then the message.
    pub fn sign(&self, message: &str) -> String {
        run_stdin(
            Command::new(tool("dkimsign")).args([
                "--hcanon",
                "relaxed",
                "--bcanon",
                "relaxed",
                self.selector.as_str(),
                self.domain.as_str(),
                self.private.to_str().unwrap(),
            ]),
            message,
        )
    }

    /// `message` with an ARC set added by dkimpy's `arcsign`, sealing as
    /// this key's domain; `srv_id` is the authserv-id of the
    /// Authentication-Results header the sealer bases its AAR on.
    pub fn arc_seal(&self, message: &str, srv_id: &str) -> String {
        run_stdin(
            Command::new(tool("arcsign")).args([
                self.selector.as_str(),
                self.domain.as_str(),
                self.private.to_str().unwrap(),
                srv_id,
            ]),
            message,
        )
    }
}

/// `text` as quoted DNS character-strings of at most 255 bytes each.
pub fn txt_strings(text: &str) -> String {
    text.as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with `input` on stdin; its stdout, CRLF line ends.
fn run_stdin(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the signing tool runs (scripts/install-test-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The tools keep the input's line ends but may write LF in what they add.
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A Debian tool: `/usr/bin` or `/usr/sbin`, else the PATH.
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// pyspf's result (`pass`, `fail`, ...) for `ip` sending as `sender` with
/// HELO `helo`, asking only the DNS server at `127.0.0.1:port`.
pub fn pyspf(port: u16, ip: &str, sender: &str, helo: &str) -> String {
    const SCRIPT: &str = r#"
import sys, dns.resolver, spf
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
r.lifetime = 5
dns.resolver.default_resolver = r
res = spf.check2(i=sys.argv[2], s=sys.argv[3], h=sys.argv[4])
print(res[0])
"#;
    // Debian's python3, where python3-spf and python3-dnspython live.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = Command::new(python)
        .args(["-c", SCRIPT, &port.to_string(), ip, sender, helo])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyspf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
