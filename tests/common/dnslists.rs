//! DNS lists for the reputation tests: a real `rbldnsd` serving the
//! test's ip4set, ip6trie and dnset zones, behind a private `unbound` that
//! forwards those zones to it, serves the HELO and sender-domain records
//! itself, and forwards one zone (`slow.test`) to a socket that never
//! answers. Everything listens on 127.0.0.1 high ports; unbound may only
//! query the two loopback servers (every other name is answered NXDOMAIN
//! by `local-zone: "." static`), so no query leaves the machine.
//!
//! Both daemons run under a small `sh` guard holding a pipe from the test
//! process: when the test binary exits, even without dropping a static,
//! the pipe closes and the guard kills its daemon by PID. [`Lists::shared`]
//! starts them once per test binary.

use super::unbound::free_port;
use smtpgate::config::DnsOptions;
use smtpgate::dns::Resolver;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A daemon under its guard: dropping it, or the process ending, stops it.
pub struct Guarded {
    child: Child,
    /// The guard's stdin: closing it tells the guard to kill the daemon.
    pipe: Option<ChildStdin>,
}

impl Guarded {
    /// Runs `bin args...` under the guard, its output into `log`.
    pub fn spawn(bin: &str, args: &[String], log: &Path) -> Guarded {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: scripts/install-test-deps.sh installs it"
        );
        let script = format!(
            "\"$@\" >{} 2>&1 </dev/null & pid=$!; read _ignored; kill $pid; wait $pid",
            log.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("guard")
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        let pipe = child.stdin.take();
        Guarded { child, pipe }
    }

    /// The PID of the daemon: the guard's one child (for a daemon that
    /// `exec`s through wrappers, the PID the program ends up with).
    pub fn daemon_pid(&self) -> Option<u32> {
        let guard = self.child.id();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parens.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == guard).then_some(pid)
        })
    }

    /// Panics when the daemon's guard already ended (the daemon died).
    fn alive(&mut self, what: &str, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{what} exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

/// The zones rbldnsd serves, as `(zone, dataset type, file text)`.
const ZONES: &[(&str, &str, &str)] = &[
    (
        "bl.test",
        "ip4set",
        ":127.0.0.2:Listed in bl.test\n192.0.2.1\n192.0.2.10\n192.0.2.11\n",
    ),
    ("bl.test", "ip6trie", ":127.0.0.2:Listed in bl.test\n2001:db8::7\n"),
    (
        "two.test",
        "ip4set",
        "192.0.2.10 :127.0.0.3:Listed in two.test\n192.0.2.20 :127.0.0.4:Other list\n",
    ),
    ("wl.test", "ip4set", ":127.0.10.2:Allowed\n192.0.2.11\n"),
    ("err.test", "ip4set", ":127.255.255.254:Query refused\n192.0.2.1\n"),
    (
        "dbl.test",
        "dnset",
        ":127.0.1.2:Listed domain\nspammy-helo.test\nspam-sender.test\nb64-spam.test\nqp-spam.test\nfrom-spam.test\n",
    ),
];

/// The records unbound serves itself: HELO names and sender domains.
const RECORDS: &[&str] = &[
    "good-helo.test. 300 IN A 192.0.2.50",
    "spammy-helo.test. 300 IN A 192.0.2.51",
    "mx.test. 300 IN MX 10 mail.mx.test.",
    "mail.mx.test. 300 IN A 192.0.2.60",
    "nullmx.test. 300 IN MX 0 .",
    "aonly.test. 300 IN A 192.0.2.61",
    "spam-sender.test. 300 IN A 192.0.2.62",
];

/// The running lists.
pub struct Lists {
    _rbldnsd: Guarded,
    _unbound: Guarded,
    /// Where the gateway's resolver asks: unbound.
    pub server: String,
    /// The socket `slow.test` is forwarded to; it never answers.
    _black_hole: UdpSocket,
    _dir: tempfile::TempDir,
}

impl Lists {
    /// The lists of this test binary, started on first use.
    pub fn shared() -> &'static Lists {
        static LISTS: OnceLock<Lists> = OnceLock::new();
        LISTS.get_or_init(Lists::start)
    }

    fn start() -> Lists {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rbl_port = free_port();
        let mut args = vec![
            "-n".to_string(),
            "-b".to_string(),
            format!("127.0.0.1/{rbl_port}"),
            "-w".to_string(),
            d.display().to_string(),
            "-t".to_string(),
            "60".to_string(),
            "-a".to_string(),
        ];
        if is_root() {
            args.extend(["-u".to_string(), "nobody".to_string()]);
        }
        for (i, (zone, kind, text)) in ZONES.iter().enumerate() {
            let file = format!("zone{i}");
            std::fs::write(d.join(&file), text).unwrap();
            args.push(format!("{zone}:{kind}:{file}"));
        }
        let rbl_log = d.join("rbldnsd.log");
        let mut rbldnsd = Guarded::spawn("/usr/sbin/rbldnsd", &args, &rbl_log);
        let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
        let hole_port = black_hole.local_addr().unwrap().port();
        let port = free_port();
        write_unbound_config(d, port, rbl_port, hole_port);
        let ub_log = d.join("unbound.log");
        let mut unbound = Guarded::spawn(
            "/usr/sbin/unbound",
            &[
                "-c".to_string(),
                d.join("unbound.conf").display().to_string(),
            ],
            &ub_log,
        );
        let server = format!("127.0.0.1:{port}");
        wait_ready(&server, || {
            rbldnsd.alive("rbldnsd", &rbl_log);
            unbound.alive("unbound", &d.join("unbound.file.log"));
        });
        Lists {
            _rbldnsd: rbldnsd,
            _unbound: unbound,
            server,
            _black_hole: black_hole,
            _dir: dir,
        }
    }
}

/// True when the tests run as root (rbldnsd then needs a user to become).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

/// unbound: foreground, loopback only, iterator only; the list zones
/// forwarded to rbldnsd, `slow.test` to the black hole, the test records
/// served locally, every other name NXDOMAIN.
fn write_unbound_config(dir: &Path, port: u16, rbl_port: u16, hole_port: u16) {
    let d = dir.display();
    let mut conf = format!(
        "server:\n    do-daemonize: no\n    username: \"\"\n    chroot: \"\"\n\
         \x20   directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n\
         \x20   logfile: \"{d}/unbound.file.log\"\n    use-syslog: no\n    verbosity: 1\n\
         \x20   interface: 127.0.0.1\n    port: {port}\n    do-ip4: yes\n    do-ip6: no\n\
         \x20   do-udp: yes\n    do-tcp: yes\n    num-threads: 1\n    so-reuseport: no\n\
         \x20   access-control: 127.0.0.0/8 allow\n    module-config: \"iterator\"\n\
         \x20   do-not-query-localhost: no\n    local-zone: \".\" static\n\
         \x20   local-data: \"ready.lists.test. 0 IN TXT ready\"\n"
    );
    for zone in [
        "bl.test",
        "two.test",
        "wl.test",
        "err.test",
        "dbl.test",
        "slow.test",
    ] {
        conf.push_str(&format!("    local-zone: \"{zone}.\" transparent\n"));
    }
    for r in RECORDS {
        conf.push_str(&format!("    local-data: \"{r}\"\n"));
    }
    for zone in ["bl.test", "two.test", "wl.test", "err.test", "dbl.test"] {
        conf.push_str(&format!(
            "forward-zone:\n    name: \"{zone}.\"\n    forward-addr: 127.0.0.1@{rbl_port}\n"
        ));
    }
    conf.push_str(&format!(
        "forward-zone:\n    name: \"slow.test.\"\n    forward-addr: 127.0.0.1@{hole_port}\n"
    ));
    conf.push_str("remote-control:\n    control-enable: no\n");
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
}

/// Waits until unbound answers locally and a list name through rbldnsd,
/// polling with an uncached resolver; `alive` panics if a daemon died.
fn wait_ready(server: &str, mut alive: impl FnMut()) {
    let probe = Resolver::start(&DnsOptions {
        servers: vec![server.to_string()],
        timeout_ms: 300,
        attempts: 1,
        cache_size: 0,
    })
    .expect("probe resolver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        alive();
        let tcp = TcpStream::connect(server).is_ok();
        if tcp
            && async_std::task::block_on(probe.txt("ready.lists.test")).is_ok()
            && async_std::task::block_on(probe.ipv4("1.2.0.192.bl.test")).is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the DNS lists did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}
