//! A private OpenLDAP `slapd` for the LDAP AUTH backend tests: a
//! `slapd.conf` written by the test (mdb database in the temp dir), two
//! users loaded with `slapadd` before start, LDAPS and plain LDAP (for
//! StartTLS) on loopback high ports, with a test CA's certificate. Run in
//! the foreground as root; stopped by PID through a watcher shell, as
//! Dovecot is (see `dovecot.rs`).
//!
//! `mailAlternateAddress` is defined here in a test-only schema (a private
//! OID arc): Debian's schemas do not have it.
//!
//! Users under `ou=people`: `carol` / `sesame-carol` (mail
//! carol@example.com, alternate sales@example.com and carol@example.org)
//! and `dave` / `sesame-dave` (mail dave@example.com). Under `ou=staff`,
//! found only by a search: `erin` / `sesame-erin` (mail erin@example.com,
//! alternate help@example.com). `twin` is in both (`sesame-twin`), so a
//! search from the top finds two. The service account
//! [`SERVICE_DN`] / [`SERVICE_PASSWORD`] may read every entry.

use super::certs::Pki;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private slapd.
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The CA that signed slapd's certificate.
    pub pki: Pki,
    /// The LDAPS port.
    pub ldaps_port: u16,
    /// The plain LDAP port (StartTLS).
    pub ldap_port: u16,
}

const SCHEMA: &str = concat!(
    "attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'mailAlternateAddress'\n",
    "  EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )\n",
    "objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'mailUser' SUP top AUXILIARY\n",
    "  MAY ( mailAlternateAddress ) )\n",
);

/// The service account a DN search binds as.
pub const SERVICE_DN: &str = "cn=svc,dc=example,dc=com";

/// Its password.
pub const SERVICE_PASSWORD: &str = "svc-secret";

const LDIF: &str = "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\
dn: uid=carol,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nobjectClass: mailUser\nuid: carol\ncn: Carol\nsn: C\n\
mail: carol@example.com\nmailAlternateAddress: sales@example.com\nmailAlternateAddress: carol@example.org\nuserPassword: sesame-carol\n\n\
dn: uid=dave,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: D\n\
mail: dave@example.com\nuserPassword: sesame-dave\n\n\
dn: uid=twin,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: twin\ncn: Twin\nsn: T\nuserPassword: sesame-twin\n\n\
dn: ou=staff,dc=example,dc=com\nobjectClass: organizationalUnit\nou: staff\n\n\
dn: uid=erin,ou=staff,dc=example,dc=com\nobjectClass: inetOrgPerson\nobjectClass: mailUser\nuid: erin\ncn: Erin\nsn: E\n\
mail: erin@example.com\nmailAlternateAddress: help@example.com\nuserPassword: sesame-erin\n\n\
dn: uid=twin,ou=staff,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: twin\ncn: Twin\nsn: T\nuserPassword: sesame-twin\n\n\
dn: cn=svc,dc=example,dc=com\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: svc\n\
userPassword: svc-secret\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Slapd {
    /// Writes the config and data, loads the users, starts slapd and
    /// waits until both ports accept.
    pub fn start() -> Slapd {
        for bin in ["/usr/sbin/slapd", "/usr/sbin/slapadd"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install `slapd` (scripts/install-test-deps.sh does this)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("ldap");
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("mail.schema"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("users.ldif"), LDIF).unwrap();
        std::fs::write(
            dir.path().join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include {d}/mail.schema\n\
                 pidfile {d}/slapd.pid\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 TLSCACertificateFile {}\n\
                 TLSCertificateFile {}\n\
                 TLSCertificateKeyFile {}\n\
                 database mdb\n\
                 maxsize 16777216\n\
                 suffix \"dc=example,dc=com\"\n\
                 rootdn \"cn=admin,dc=example,dc=com\"\n\
                 directory {d}/data\n\
                 access to attrs=userPassword by anonymous auth by * none\n\
                 access to * by dn.exact=\"cn=svc,dc=example,dc=com\" read by self read by * none\n",
                pki.ca_path().display(),
                pki.cert_path().display(),
                pki.key_path().display()
            ),
        )
        .unwrap();
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(dir.path().join("users.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Slapd {
            child: None,
            dir,
            pki,
            ldaps_port: free_port(),
            ldap_port: free_port(),
        };
        s.spawn();
        s
    }

    /// What slapd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let urls = format!(
            "ldaps://127.0.0.1:{}/ ldap://127.0.0.1:{}/",
            self.ldaps_port, self.ldap_port
        );
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        // `-d` keeps slapd in the foreground; the watcher kills it by PID
        // when its stdin closes (stop(), or the test binary's exit).
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "/usr/sbin/slapd -f \"$1\" -h \"$2\" -d 256 </dev/null & pid=$!; \
                 read _ignored; kill \"$pid\"; wait \"$pid\"",
            )
            .arg("sh")
            .arg(self.dir.path().join("slapd.conf"))
            .arg(&urls)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sh runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.ldaps_port, self.ldap_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("slapd exited with {status}: {}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "slapd did not start: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops slapd and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
