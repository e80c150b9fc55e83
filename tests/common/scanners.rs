//! Real scanners for the scanner tests: a `clamd` whose database holds
//! only the test's own signatures (one for the EICAR test string, one for
//! a string of the test's; no freshclam, no downloaded database), and an
//! `rspamd` normal worker on the system's rules (its GTUBE test patterns
//! for the other actions enabled) with every module that would ask the
//! network disabled and its resolver pointed at a closed loopback port.
//! rspamd runs in a network namespace of its own (`unshare --net`, only
//! its loopback up), so no query can leave the machine even if a module
//! tried: its one door is the Unix socket its worker listens on, in the
//! test's directory. [`Rspamd::tcp_url`] forwards a loopback TCP port to
//! that socket for the gateway's TCP client.
//!
//! Both run under the [`Guarded`] pipe guard (stopped by PID when dropped
//! or when the test binary ends); [`Clamd::shared`] and
//! [`Rspamd::shared`] start one per test binary.

use super::dnslists::Guarded;
use super::unbound::free_port;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The EICAR anti-virus test string.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The name clamd gives a message with [`EICAR`].
pub const EICAR_NAME: &str = "Smtpgate-Eicar-Test.UNOFFICIAL";
/// A string only the test's own signature matches.
pub const MARKER: &str = "SMTPGATE-TEST-VIRUS-7f3a";
/// The name clamd gives a message with [`MARKER`].
pub const MARKER_NAME: &str = "Smtpgate-Test-Signature.UNOFFICIAL";
/// GTUBE, which rspamd rejects.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for `rewrite subject` (a test pattern, enabled
/// in the test's rspamd only).
pub const GTUBE_REWRITE_SUBJECT: &str =
    "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, limit: Duration, what: &str, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} is not listening on {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private clamd on a TCP port and a Unix socket.
pub struct Clamd {
    /// The daemon, until stopped.
    daemon: Option<Guarded>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its config, database and log.
    _dir: tempfile::TempDir,
}

impl Clamd {
    /// Starts clamd with the test's signatures.
    pub fn start() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        std::fs::write(
            db.join("smtpgate.ndb"),
            format!(
                "Smtpgate-Eicar-Test:0:*:{}\nSmtpgate-Test-Signature:0:*:{}\n",
                hex(EICAR),
                hex(MARKER)
            ),
        )
        .unwrap();
        let port = free_port();
        let socket = dir.path().join("clamd.sock");
        let log = dir.path().join("clamd.log");
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n\
                 LocalSocket {}\nLogFile {}\nStreamMaxLength 10M\n",
                db.display(),
                socket.display(),
                dir.path().join("clamd-own.log").display()
            ),
        )
        .unwrap();
        let daemon = Guarded::spawn(
            "/usr/sbin/clamd",
            &["-c".to_string(), conf.display().to_string()],
            &log,
        );
        wait_listening(port, Duration::from_secs(60), "clamd", &log);
        Clamd {
            daemon: Some(daemon),
            port,
            socket,
            _dir: dir,
        }
    }

    /// The clamd of this test binary.
    pub fn shared() -> &'static Clamd {
        static CLAMD: OnceLock<Clamd> = OnceLock::new();
        CLAMD.get_or_init(Clamd::start)
    }

    /// `host:port` of its TCP socket.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (by PID, through its guard) and waits until it is gone.
    pub fn stop(&mut self) {
        drop(self.daemon.take());
    }
}

/// Waits until something accepts connections on the Unix socket `path`.
fn wait_socket(path: &Path, limit: Duration, what: &str, log: &Path) {
    let started = Instant::now();
    while UnixStream::connect(path).is_err() {
        assert!(
            started.elapsed() < limit,
            "{what} is not listening on {}:\n{}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private rspamd normal worker in its own network namespace.
pub struct Rspamd {
    /// The daemon.
    _daemon: Guarded,
    /// The worker's Unix socket.
    pub socket: PathBuf,
    /// The loopback port forwarded to [`Rspamd::socket`], once asked for.
    forward: OnceLock<u16>,
    /// Its config, state and log.
    _dir: tempfile::TempDir,
}

/// The rspamd modules that would look something up on the network.
const NETWORK_MODULES: &[&str] = &[
    "fuzzy_check",
    "rbl",
    "asn",
    "dcc",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "mx_check",
    "phishing",
    "rspamd_update",
    "hfilter",
    "emails",
    "multimap",
    "reputation",
    "greylist",
    "ratelimit",
    "neural",
    "replies",
    "url_redirector",
    "history_redis",
    "dkim_signing",
];

impl Rspamd {
    /// Starts rspamd with the test's local configuration.
    pub fn start() -> Rspamd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let local = d.join("local.d");
        std::fs::create_dir(&local).unwrap();
        for m in NETWORK_MODULES {
            std::fs::write(local.join(format!("{m}.conf")), "enabled = false;\n").unwrap();
        }
        // rspamd's own headers on every answer, for the relayed message.
        std::fs::write(
            local.join("milter_headers.conf"),
            "use = [\"x-spamd-result\", \"x-spam-status\"];\nskip_local = false;\nskip_authenticated = false;\n",
        )
        .unwrap();
        let socket = d.join("rspamd.sock");
        // Nothing listens here (in rspamd's namespace, where only its own
        // loopback is): every DNS query fails.
        let dead_dns = free_port();
        let conf = d.join("rspamd.conf");
        std::fs::write(
            &conf,
            format!(
                ".include \"$CONFDIR/common.conf\"\n\
                 options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n\
                 \x20 dns {{ nameserver = [\"127.0.0.1:{dead_dns}\"]; timeout = 1s; retransmits = 1; }}\n\
                 \x20 disable_monitoring = true;\n  enable_test_patterns = true;\n}}\n\
                 logging {{ type = \"file\"; filename = \"$LOGDIR/rspamd.log\"; level = \"info\"; }}\n\
                 worker \"normal\" {{\n  bind_socket = \"{} mode=0666\";\n  .include \"$CONFDIR/worker-normal.inc\"\n  count = 1;\n}}\n",
                socket.display()
            ),
        )
        .unwrap();
        let var = |k: &str, v: &Path| vec!["--var".to_string(), format!("{k}={}", v.display())];
        // rspamd drops privileges to -u/-g: the test's own user and group.
        let id = |flag: &str| {
            let out = std::process::Command::new("id").arg(flag).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let mut args: Vec<String> = vec!["-f".into(), "-i".into(), "-u".into(), id("-un")];
        args.extend(["-g".into(), id("-gn"), "-c".into()]);
        args.push(conf.display().to_string());
        args.extend(var("CONFDIR", Path::new("/etc/rspamd")));
        for k in ["LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"] {
            args.extend(var(k, d));
        }
        // A new network namespace has its loopback down: up it, then
        // become rspamd (unshare and sh exec, so the guard's PID is
        // rspamd's and it is stopped by it).
        let mut netns: Vec<String> = vec![
            "--net".into(),
            "sh".into(),
            "-c".into(),
            "ip link set lo up && exec \"$0\" \"$@\"".into(),
            "/usr/bin/rspamd".into(),
        ];
        netns.extend(args);
        let log = d.join("stdout.log");
        assert!(
            Path::new("/usr/bin/rspamd").exists(),
            "/usr/bin/rspamd is missing: scripts/install-test-deps.sh installs it"
        );
        let daemon = Guarded::spawn("/usr/bin/unshare", &netns, &log);
        // Compiling its TLD list and rules takes rspamd a while.
        wait_socket(&socket, Duration::from_secs(180), "rspamd", &log);
        Rspamd {
            _daemon: daemon,
            socket,
            forward: OnceLock::new(),
            _dir: dir,
        }
    }

    /// The PID of its main process, the one the guard stops (rspamd
    /// writes no pidfile in the foreground).
    pub fn pid(&self) -> u32 {
        self._daemon
            .daemon_pid()
            .expect("rspamd runs under its guard")
    }

    /// The rspamd of this test binary.
    pub fn shared() -> &'static Rspamd {
        static RSPAMD: OnceLock<Rspamd> = OnceLock::new();
        RSPAMD.get_or_init(Rspamd::start)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("rspamd.log")).unwrap_or_default()
    }

    /// Its URL: the Unix socket.
    pub fn url(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// An `http://127.0.0.1:PORT` URL whose connections are forwarded to
    /// the worker's socket, byte for byte, each in both directions until
    /// each side closed (rspamd cannot be reached over TCP from outside
    /// its namespace).
    pub fn tcp_url(&self) -> String {
        let port = *self.forward.get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let socket = self.socket.clone();
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let socket = socket.clone();
                    std::thread::spawn(move || forward(client, &socket));
                }
            });
            port
        });
        format!("http://127.0.0.1:{port}")
    }
}

/// Copies `client` to a new connection to `socket` and back.
fn forward(client: TcpStream, socket: &Path) {
    let Ok(server) = UnixStream::connect(socket) else {
        return;
    };
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let _ = std::io::copy(&mut s_in, &mut c_out);
    let _ = c_out.shutdown(Shutdown::Write);
    let _ = up.join();
}
