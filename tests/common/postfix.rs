//! A private Postfix for the AUTH passthrough tests: smtpd on a loopback
//! port with STARTTLS (a certificate from [`super::certs`]), SASL through a
//! Dovecot auth socket (`smtpd_sasl_type = dovecot`) and AUTH only under
//! TLS (`smtpd_tls_auth_only = yes`); mail for `pf.test` lands in Maildirs.
//! Its config, queue, data, mailboxes and log live in a temp dir; nothing
//! leaves it (`default_transport = error`, no DNS). Started with
//! `postfix -c DIR start` and stopped by its master's PID.
//!
//! `postfix` must be installed (`scripts/install-test-deps.sh` installs
//! it); a missing one fails the tests, it does not skip them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running (or stopped) private Postfix.
pub struct Postfix {
    dir: tempfile::TempDir,
    /// The smtpd port on 127.0.0.1.
    pub port: u16,
    master: Option<u32>,
}

impl Postfix {
    /// Starts Postfix with its SASL at the Dovecot auth socket `sasl`,
    /// TLS from `cert`/`key` (PEM), and a mailbox for each of `mailboxes`
    /// (local parts in `pf.test`); waits until smtpd answers.
    pub fn start(sasl: &Path, cert: &Path, key: &Path, mailboxes: &[&str]) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "/usr/sbin/postfix is missing. These tests need it: install `postfix` \
             (scripts/install-test-deps.sh does this)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // Postfix's daemons and the delivery user must reach their parts.
        run("chmod", &["755", &d.display().to_string()]);
        run("chown", &["postfix", &d.join("data").display().to_string()]);
        run(
            "chown",
            &["nobody:nogroup", &d.join("mail").display().to_string()],
        );
        let boxes: String = mailboxes
            .iter()
            .map(|m| format!("{m}@pf.test {m}/\n"))
            .collect();
        std::fs::write(d.join("conf/mailboxes"), boxes).unwrap();
        let uid = output("id", &["-u", "nobody"]);
        let gid = output("getent", &["group", "nogroup"]);
        let gid = gid.split(':').nth(2).unwrap_or("65534").to_string();
        let p = d.display();
        std::fs::write(
            d.join("conf/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {p}/queue\n\
                 data_directory = {p}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = postfix.pf.test\n\
                 mydomain = pf.test\n\
                 mydestination =\n\
                 inet_interfaces = loopback-only\n\
                 inet_protocols = ipv4\n\
                 mynetworks =\n\
                 maillog_file = {p}/postfix.log\n\
                 maillog_file_prefixes = {p}\n\
                 smtpd_peername_lookup = no\n\
                 smtp_dns_support_level = disabled\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_transport = error:5.1.1 no local delivery in this test instance\n\
                 default_transport = error:5.7.1 no mail leaves this test instance\n\
                 virtual_mailbox_domains = pf.test\n\
                 virtual_mailbox_base = {p}/mail\n\
                 virtual_mailbox_maps = texthash:{p}/conf/mailboxes\n\
                 virtual_uid_maps = static:{uid}\n\
                 virtual_gid_maps = static:{gid}\n\
                 virtual_minimum_uid = 1\n\
                 biff = no\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {cert}\n\
                 smtpd_tls_key_file = {key}\n\
                 smtpd_tls_auth_only = yes\n\
                 smtpd_sasl_auth_enable = yes\n\
                 smtpd_sasl_type = dovecot\n\
                 smtpd_sasl_path = {sasl}\n\
                 smtpd_sasl_authenticated_header = yes\n\
                 smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination\n",
                cert = cert.display(),
                key = key.display(),
                sasl = sasl.display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("conf/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup    unix  n - n 60 1 pickup\n\
                 cleanup   unix  n - n - 0 cleanup\n\
                 qmgr      unix  n - n 300 1 qmgr\n\
                 tlsmgr    unix  - - n 1000? 1 tlsmgr\n\
                 rewrite   unix  - - n - - trivial-rewrite\n\
                 bounce    unix  - - n - 0 bounce\n\
                 defer     unix  - - n - 0 bounce\n\
                 trace     unix  - - n - 0 bounce\n\
                 verify    unix  - - n - 1 verify\n\
                 flush     unix  n - n 1000? 0 flush\n\
                 proxymap  unix  - - n - - proxymap\n\
                 showq     unix  n - n - - showq\n\
                 error     unix  - - n - - error\n\
                 retry     unix  - - n - - error\n\
                 discard   unix  - - n - - discard\n\
                 virtual   unix  - n n - - virtual\n\
                 anvil     unix  - - n - 1 anvil\n\
                 scache    unix  - - n - 1 scache\n\
                 postlog   unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .unwrap();
        let mut pf = Postfix {
            dir,
            port,
            master: None,
        };
        pf.spawn();
        pf
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What Postfix logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }

    /// Waits (up to 30 s) until the log has a line with every one of
    /// `words`, and returns that line.
    pub fn wait_log_line(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no Postfix log line with {words:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The messages delivered to `mailbox` (a local part) so far.
    pub fn delivered(&self, mailbox: &str) -> Vec<String> {
        let new = self.dir.path().join("mail").join(mailbox).join("new");
        let mut found: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        found.sort();
        found
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (up to 30 s) for a message in `mailbox` that contains `text`.
    pub fn wait_delivered(&self, mailbox: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self
                .delivered(mailbox)
                .into_iter()
                .find(|m| m.contains(text))
            {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "nothing with {text:?} in {mailbox}'s Maildir; Postfix log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops Postfix and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops Postfix: TERM to its master by PID, then waits until the
    /// master is gone and the port is closed.
    pub fn stop(&mut self) {
        let Some(pid) = self.master.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() || TcpStream::connect(self.addr()).is_ok()
        {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("conf");
        let out = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .output()
            .expect("postfix runs");
        assert!(
            out.status.success(),
            "postfix did not start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                self.master.get_or_insert(pid);
                if TcpStream::connect(self.addr()).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "postfix does not listen on {}: {}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a setup command; it must succeed.
fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().expect("runs");
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// A setup command's output, trimmed.
fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
