//! Rate limits with the Redis store, against a real `redis-server` that
//! each test starts on a free loopback port (no persistence, its own
//! directory) and kills at the end: two gateways sharing one Redis count
//! together; Redis killed mid-run fails open (mail flows, the log says so)
//! or, configured so, closed (451 4.3.0); a Redis that stops answering
//! does not stall mail; a Redis that comes back is used again.
//!
//! `redis-server` must be installed (`scripts/test.sh` installs it); a
//! missing one fails these tests, it does not skip them.

mod common;

use common::{Client, Gateway};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private redis-server on 127.0.0.1; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    /// Starts (again) on the same port.
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). These tests need it: install it with \
                     `apt-get install redis-server` (scripts/test.sh does this)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    /// Kills the server (by its PID) and waits for it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: its socket still
    /// accepts, but nothing answers.
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// One inline command; the first line of the answer.
    fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }

    /// The keys matching `pattern` (KEYS, fine for a test's few keys).
    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(format!("KEYS {pattern}\r\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let n: usize = line.trim_end()[1..].parse().unwrap();
        (0..n)
            .map(|_| {
                line.clear();
                r.read_line(&mut line).unwrap(); // $len
                line.clear();
                r.read_line(&mut line).unwrap();
                line.trim_end().to_string()
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A spool-mode gateway counting in `redis`; loopback is not exempt.
fn gateway(redis: &Redis, dir: &std::path::Path, rates: &str) -> Gateway {
    Gateway::start(&format!(
        "hostname: gate.test\nspool_dir: \"{}\"\n\
         protection:\n  exempt_networks: []\n  rate_limits:\n    store: \"{}\"\n{rates}",
        dir.join("spool").display(),
        redis.url(),
    ))
}

/// Sends one whole message on a client after EHLO; the final reply code.
fn deliver(c: &mut Client, i: usize) -> u16 {
    c.send_message(
        "a@x.test",
        &["b@y.test"],
        &common::message(&format!("m{i}"), "hi\r\n"),
    )
    .code
}

fn client(gw: &Gateway) -> Client {
    let mut c = gw.client();
    c.cmd("EHLO a.test", 250);
    c
}

#[test]
fn two_instances_sharing_one_redis_count_together() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rates = "    per_ip: { messages_per_hour: 3, recipients_per_hour: 100 }\n";
    let a = gateway(&redis, dir.path(), rates);
    let b = gateway(&redis, dir.path(), rates);
    let mut ca = client(&a);
    let mut cb = client(&b);
    assert_eq!(deliver(&mut ca, 1), 250);
    assert_eq!(deliver(&mut ca, 2), 250);
    assert_eq!(deliver(&mut cb, 3), 250);
    // The fourth message, on either instance, is over the shared limit.
    let raw = cb.cmd("MAIL FROM:<a@x.test>", 450);
    assert!(raw.starts_with("450 4.7.1 "), "{raw}");
    ca.cmd("MAIL FROM:<a@x.test>", 450);
    // The counters are Redis keys, with an expiry.
    let keys = redis.keys("smtpgate:rl:ip:msg:127.0.0.1:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis.command(&format!("TTL {}", keys[0])).unwrap()[1..]
        .parse()
        .unwrap();
    assert!(ttl > 3600 && ttl <= 7200, "ttl {ttl}");
    assert_eq!(redis.keys("smtpgate:rl:ip:rcpt:127.0.0.1:*").len(), 1);
}

#[test]
fn connections_per_minute_count_across_instances() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rates = "    per_ip: { connections_per_minute: 2 }\n";
    let a = gateway(&redis, dir.path(), rates);
    let b = gateway(&redis, dir.path(), rates);
    let _one = a.client();
    let _two = b.client();
    let mut three = Client::connect(a.addr);
    let r = three.reply();
    assert_eq!(r.code, 421, "{}", r.raw);
    assert!(r.raw.starts_with("421 4.7.0 "), "{}", r.raw);
}

#[test]
fn redis_down_fails_closed_with_451_and_recovers_when_it_is_back() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        &redis,
        dir.path(),
        "    fail_closed: true\n    timeout_ms: 300\n    \
         per_ip: { messages_per_hour: 100, connections_per_minute: 100 }\n",
    );
    let mut c = client(&gw);
    assert_eq!(deliver(&mut c, 1), 250);
    redis.kill();
    let raw = c.cmd("MAIL FROM:<a@x.test>", 451);
    assert!(
        raw.starts_with("451 4.3.0 Rate limit service unavailable"),
        "{raw}"
    );
    // New connections are refused too (a greeting cannot be 451).
    let mut refused = Client::connect(gw.addr);
    let r = refused.reply();
    assert_eq!(r.code, 421, "{}", r.raw);
    assert!(r.raw.starts_with("421 4.3.0 "), "{}", r.raw);
    // Redis back on the same port: after the reconnect pause, mail flows.
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send("MAIL FROM:<a@x.test>\r\n");
        let r = c.reply();
        if r.code == 250 {
            break;
        }
        assert_eq!(r.code, 451, "{}", r.raw);
        assert!(Instant::now() < deadline, "Redis never used again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_redis_that_stops_answering_does_not_stall_mail() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        &redis,
        dir.path(),
        "    timeout_ms: 200\n    per_ip: { messages_per_hour: 100, recipients_per_hour: 100 }\n",
    );
    let mut c = client(&gw);
    assert_eq!(deliver(&mut c, 1), 250);
    redis.signal("-STOP");
    let started = Instant::now();
    assert_eq!(deliver(&mut c, 2), 250);
    let took = started.elapsed();
    redis.signal("-CONT");
    // Two checks (MAIL, RCPT), each given up after 200 ms at most.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn redis_killed_mid_run_fails_open_and_the_log_says_so() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nlisten: [{{ addr: \"127.0.0.1:{port}\" }}]\nspool_dir: spool\n\
             protection:\n  exempt_networks: []\n  rate_limits:\n    store: \"{}\"\n    \
             per_ip: {{ messages_per_hour: 100 }}\n",
            redis.url()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start smtpgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtpgate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr);
    c.expect(220);
    c.cmd("EHLO a.test", 250);
    assert_eq!(deliver(&mut c, 1), 250);
    redis.kill();
    // Mail keeps flowing, uncounted.
    assert_eq!(deliver(&mut c, 2), 250);
    assert_eq!(deliver(&mut c, 3), 250);
    c.cmd("QUIT", 221);
    let mut text = String::new();
    for _ in 0..100 {
        text.clear();
        std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        if text.contains("failing OPEN") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = text
        .lines()
        .find(|l| l.contains("RATE LIMITS: store"))
        .unwrap_or_else(|| panic!("no outage line in the log:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&redis.url()), "{line}");
    assert!(line.contains("failing OPEN"), "{line}");
    // Rate-limited: one line for the outage, not one per message.
    assert_eq!(text.matches("RATE LIMITS: store").count(), 1, "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        3
    );
}
