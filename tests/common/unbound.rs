//! A private `unbound` for DNS tests: started on a free 127.0.0.1 port
//! (UDP and TCP) from a config the test writes into a temp dir, serving
//! only the `local-data` it is given. Recursion is off (`local-zone: "."
//! static` answers every other name NXDOMAIN itself, and the iterator may
//! not query localhost), so not one query leaves the machine. Stopped by
//! PID on drop; a test may stop and restart it (on the same port).
//!
//! `unbound` must be installed (`scripts/install-test-deps.sh` installs
//! it); a missing one fails the tests that need it, it does not skip them.

use smtpgate::config::DnsOptions;
use smtpgate::dns::Resolver;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the harness asks to see that the server answers.
const READY: &str = "ready.unbound.test";

/// A running (or stopped) private unbound.
pub struct Unbound {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// A port free on 127.0.0.1 for both UDP and TCP.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Unbound {
    /// Starts unbound serving `lines`, each one line of its `server:`
    /// section (`local-data: "a.test. 300 IN A 192.0.2.1"`,
    /// `local-data-ptr: "192.0.2.1 a.test"`, `local-zone: ...`, or a
    /// setting like `max-udp-size: 512`), and waits until it answers.
    pub fn start(lines: &[String]) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        write_config(dir.path(), port, lines);
        let mut u = Unbound {
            child: None,
            port,
            dir,
        };
        u.spawn();
        u
    }

    /// The server's address, as `dns.servers` takes it.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server().parse().unwrap()
    }

    /// Resolver options pointing at this server only, with `timeout_ms`
    /// short enough for tests and the default cache.
    pub fn options(&self) -> DnsOptions {
        DnsOptions {
            servers: vec![self.server()],
            timeout_ms: 1000,
            attempts: 2,
            ..DnsOptions::default()
        }
    }

    /// A resolver using [`options`](Self::options).
    pub fn resolver(&self) -> Resolver {
        Resolver::start(&self.options()).expect("resolver starts")
    }

    /// Kills the server (by its PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again, same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What unbound logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let bin = if Path::new("/usr/sbin/unbound").exists() {
            PathBuf::from("/usr/sbin/unbound")
        } else {
            PathBuf::from("unbound")
        };
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join("unbound.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}). These tests need it: install it with \
                     `apt-get install unbound` (scripts/install-test-deps.sh does this)",
                    bin.display()
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until TCP accepts and a UDP query is answered, through our
    /// own resolver with no cache, so each poll really asks.
    fn wait_ready(&mut self) {
        let probe = Resolver::start(&DnsOptions {
            servers: vec![self.server()],
            timeout_ms: 200,
            attempts: 1,
            cache_size: 0,
        })
        .expect("probe resolver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("unbound exited ({status}):\n{}", self.log());
            }
            let tcp = TcpStream::connect(self.addr()).is_ok();
            if tcp && async_std::task::block_on(probe.txt(READY)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "unbound did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `unbound.conf` into `dir`: foreground, no privileges dropped,
/// no chroot, no trust anchor or validator (iterator only), listening on
/// 127.0.0.1 only, recursion impossible, then the test's lines.
fn write_config(dir: &Path, port: u16, lines: &[String]) {
    let d = dir.display();
    let mut conf = format!(
        "server:\n\
         \x20   do-daemonize: no\n\
         \x20   username: \"\"\n\
         \x20   chroot: \"\"\n\
         \x20   directory: \"{d}\"\n\
         \x20   pidfile: \"{d}/unbound.pid\"\n\
         \x20   logfile: \"{d}/unbound.log\"\n\
         \x20   use-syslog: no\n\
         \x20   verbosity: 1\n\
         \x20   interface: 127.0.0.1\n\
         \x20   port: {port}\n\
         \x20   do-ip4: yes\n\
         \x20   do-ip6: no\n\
         \x20   do-udp: yes\n\
         \x20   do-tcp: yes\n\
         \x20   num-threads: 1\n\
         \x20   so-reuseport: no\n\
         \x20   access-control: 127.0.0.0/8 allow\n\
         \x20   module-config: \"iterator\"\n\
         \x20   do-not-query-localhost: yes\n\
         \x20   local-zone: \".\" static\n\
         \x20   local-data: \"{READY}. 0 IN TXT ready\"\n"
    );
    for line in lines {
        conf.push_str("    ");
        conf.push_str(line);
        conf.push('\n');
    }
    conf.push_str("remote-control:\n    control-enable: no\n");
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
}
