//! A private Dovecot running only its auth service, for the AUTH backend
//! tests: `protocols =` (no IMAP/POP3 listener), a `passwd-file` the test
//! writes, and the auth socket in the test's temp directory. Run in the
//! foreground as root (`dovecot -F`) with its base_dir in the temp dir;
//! stopped by PID. `auth_failure_delay = 0` keeps wrong-password tests
//! fast. Dovecot still delays answers to an IP that failed before (its
//! auth penalty, up to 15 s), so tests log in from distinct 127.0.0.x
//! addresses.
//!
//! `dovecot` must be installed (`scripts/install-test-deps.sh` installs
//! `dovecot-core`); a missing one fails the tests, it does not skip them.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) private Dovecot auth service.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

/// How a private Dovecot differs from the usual one.
pub struct Options<'a> {
    /// Its `auth_mechanisms`.
    pub mechanisms: &'a str,
    /// The passwd-file's name in the temp dir; Dovecot variables expand
    /// at each login (`passwd-%{lip}`: one file per local address).
    pub passwd: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            mechanisms: "plain login",
            passwd: "passwd",
        }
    }
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` pairs in its
    /// passwd-file, and waits until its auth socket answers.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, &Options::default())
    }

    /// Like [`start`](Self::start), configured by `options`; `users` go
    /// to the file named `passwd` (see [`write_passwd`](Self::write_passwd)).
    /// Its log has `auth_debug` lines (each request, passwords hidden).
    pub fn start_with(users: &[(&str, &str)], options: &Options<'_>) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        // Dovecot's unprivileged processes must reach the socket and files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        write_users(&dir.path().join("passwd"), users);
        let (mechanisms, passwd) = (options.mechanisms, options.passwd);
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "protocols =\n\
                 base_dir = {d}/run\n\
                 state_dir = {d}/state\n\
                 log_path = {d}/dovecot.log\n\
                 ssl = no\n\
                 auth_failure_delay = 0\n\
                 auth_verbose = yes\n\
                 auth_debug = yes\n\
                 auth_mechanisms = {mechanisms}\n\
                 disable_plaintext_auth = no\n\
                 service auth {{\n\
                 \x20 unix_listener auth-client {{\n\
                 \x20   path = {d}/auth-client\n\
                 \x20   mode = 0666\n\
                 \x20 }}\n\
                 \x20 inet_listener {{\n\
                 \x20   address = 127.0.0.1\n\
                 \x20   port = {port}\n\
                 \x20 }}\n\
                 }}\n\
                 passdb {{\n\
                 \x20 driver = passwd-file\n\
                 \x20 args = scheme=PLAIN username_format=%u {d}/{passwd}\n\
                 }}\n\
                 userdb {{\n\
                 \x20 driver = static\n\
                 \x20 args = uid=nobody gid=nogroup home=/nonexistent\n\
                 }}\n"
            ),
        )
        .unwrap();
        let mut dv = Dovecot {
            child: None,
            dir,
            port,
        };
        dv.spawn();
        dv
    }

    /// Writes a passwd-file named `name` in Dovecot's temp dir.
    pub fn write_passwd(&self, name: &str, users: &[(&str, &str)]) {
        write_users(&self.dir.path().join(name), users);
    }

    /// The auth service's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("auth-client")
    }

    /// The auth service's TCP listener, `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What Dovecot logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Stops Dovecot (by its PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Closing the watcher's stdin makes it kill Dovecot by PID.
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }

    /// Starts it again, same socket and users.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let bin = PathBuf::from("/usr/sbin/dovecot");
        assert!(
            bin.exists(),
            "{} is missing. These tests need it: install `dovecot-core` \
             (scripts/install-test-deps.sh does this)",
            bin.display()
        );
        // A small watcher shell runs Dovecot and kills it by PID when its
        // stdin closes: on stop(), and also when the test binary exits
        // without dropping a shared instance.
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "\"$1\" -F -c \"$2\" </dev/null & pid=$!; read _ignored; \
                 kids=$(pgrep -P \"$pid\"); kill \"$pid\"; wait \"$pid\"; \
                 for k in $kids; do kill \"$k\" 2>/dev/null; done; \
                 for k in $kids; do while kill -0 \"$k\" 2>/dev/null; do sleep 0.05; done; done",
            )
            .arg("sh")
            .arg(&bin)
            .arg(self.dir.path().join("dovecot.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("dovecot exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A passwd-file with these `(user, password)` pairs, in clear.
fn write_users(path: &std::path::Path, users: &[(&str, &str)]) {
    let passwd: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
        .collect();
    std::fs::write(path, passwd).unwrap();
}
