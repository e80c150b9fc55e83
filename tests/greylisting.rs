//! Greylisting end to end: live gateways relaying to a mock upstream over
//! loopback, clients announced by a trusted PROXY-protocol hop (so a test
//! can be 192.0.2.7 or 2001:db8:1:2::7), rules that say when greylisting
//! applies, and for the shared state one real `redis-server` started once
//! per test binary on a free loopback port (no persistence, its own
//! directory), stopped by its PID when the last test using it is done.
//!
//! One case waits out a real two-second window; the others move the
//! greylister's clock forward instead of waiting minutes or days.
//! `redis-server` must be installed (`scripts/install-test-deps.sh`
//! installs it); a missing one fails these tests, it does not skip them.

mod common;

use common::unbound::free_port;
use common::{
    audit_records, message, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Greylists every sender but those of friend.test, at the rcpt stage.
const RCPT_RULES: &str = "rules:
  - name: greylist-strangers
    stage: rcpt
    when: { not: { sender: { domains: [friend.test] } } }
    action: greylist
";

/// The same at the data stage: one verdict for the whole message.
const DATA_RULES: &str = "rules:
  - name: greylist-message
    stage: data
    when: { not: { sender: { domains: [friend.test] } } }
    action: greylist
";

struct Setup {
    up: MockUpstream,
    gw: Gateway,
    audit: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A gateway behind a trusted proxy, relaying mail for example.com to a
/// mock upstream, with `rules` and the `greylisting:` lines in `greylisting`.
fn setup(rules: &str, greylisting: &str) -> Setup {
    setup_with(MockOptions::default(), rules, greylisting)
}

/// [`setup`] with an upstream that behaves as `options` say.
fn setup_with(options: MockOptions, rules: &str, greylisting: &str) -> Setup {
    let up = MockUpstream::start(options);
    let rules = rules_dir(&[("g.yaml", rules)]);
    let adir = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nupstream: {{ addr: \"{}\" }}\n{}audit: {{ path: \"{}\" }}\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", proxy_protocol: true }}\n\
         proxy_protocol: {{ trusted_proxies: [127.0.0.1] }}\n\
         relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
         greylisting:\n{greylisting}",
        up.addr,
        rules_line(rules.path()),
        audit.display()
    ));
    Setup {
        up,
        gw,
        audit,
        _dirs: (rules, adir),
    }
}

/// A client at `ip`, as the trusted proxy announces it, after EHLO.
fn client_at(gw: &Gateway, ip: &str) -> Client {
    let mut c = Client::connect(gw.addr);
    if ip.contains(':') {
        c.send(&format!("PROXY TCP6 {ip} ::1 40000 25\r\n"));
    } else {
        c.send(&format!("PROXY TCP4 {ip} 127.0.0.1 40000 25\r\n"));
    }
    c.expect(220);
    c.cmd("EHLO client.example.net", 250);
    c
}

/// MAIL from `from`, RCPT to `to`: the RCPT reply, whole.
fn rcpt(c: &mut Client, from: &str, to: &str) -> common::WireReply {
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.send(&format!("RCPT TO:<{to}>\r\n"));
    c.reply()
}

/// One attempt on a new connection from `ip`: MAIL, RCPT and, when the
/// RCPT is accepted, the message; the RCPT reply, or the final one.
fn attempt(gw: &Gateway, ip: &str, from: &str, to: &str) -> common::WireReply {
    let mut c = client_at(gw, ip);
    let r = rcpt(&mut c, from, to);
    let r = if r.code == 250 {
        c.cmd("DATA", 354);
        c.send(&message("m", "hello\r\n"));
        c.send(".\r\n");
        c.reply()
    } else {
        r
    };
    c.cmd("QUIT", 221);
    r
}

/// The value of `smtpgate_greylist_total{result}` in a metrics text.
fn greylist_count(text: &str, result: &str) -> u64 {
    let prefix = format!("smtpgate_greylist_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn count(gw: &Gateway, result: &str) -> u64 {
    greylist_count(&gw.shared.metrics().render(), result)
}

#[test]
fn first_attempt_451_then_250_after_a_real_window() {
    let s = setup(RCPT_RULES, "  delay_s: 2\n  retry_window_s: 600\n");
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("451 4.7.1 Greylisted, please try again in 2 seconds"),
        "{}",
        r.raw
    );
    // The upstream never saw the greylisted recipient.
    let seen = s.up.commands().concat();
    assert!(!seen.iter().any(|c| c.starts_with("RCPT")), "{seen:?}");
    // The audit record names the rule that asked for greylisting.
    let records = audit_records(&s.audit, 1);
    let rcpts = &records[0]["rcpts"];
    assert_eq!(rcpts[0]["by"], "greylist-strangers", "{records:?}");
    assert!(rcpts[0]["reply"].as_str().unwrap().starts_with("451 4.7.1"));

    std::thread::sleep(Duration::from_millis(2500));
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(s.up.wait_for(1).len(), 1);
    assert_eq!(count(&s.gw, "new"), 1);
    assert_eq!(count(&s.gw, "retried"), 1);
}

#[test]
fn a_retry_before_the_window_is_still_451_and_the_delay_does_not_start_over() {
    let s = setup(RCPT_RULES, "  delay_s: 3600\n  retry_window_s: 86400\n");
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    s.gw.shared
        .greylist()
        .advance_clock(Duration::from_secs(1800));
    // Same sender, other case: the same triplet, still too early.
    let r = attempt(&s.gw, "192.0.2.7", "Alice@Sender.TEST", "BOB@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    let left: u64 = r
        .raw
        .split("try again in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.raw));
    assert!(left <= 1800 && left > 1000, "{}", r.raw);
    s.gw.shared
        .greylist()
        .advance_clock(Duration::from_secs(1801));
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(count(&s.gw, "early"), 1);
    assert_eq!(s.up.wait_for(1).len(), 1);
}

#[test]
fn an_allowlisted_network_is_not_greylisted_again_until_its_days_are_over() {
    let s = setup(RCPT_RULES, "  auto_allowlist_days: 7\n");
    let gl = s.gw.shared.greylist();
    assert_eq!(
        attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com").code,
        451
    );
    gl.advance_clock(Duration::from_secs(301));
    assert_eq!(
        attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com").code,
        250
    );
    // Another host of the same /24, another sender and recipient.
    let r = attempt(&s.gw, "192.0.2.99", "news@other.test", "carol@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(count(&s.gw, "allowlisted"), 1);
    // Another /24 is greylisted.
    let r = attempt(&s.gw, "192.0.3.7", "news@other.test", "carol@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    // Eight days later the allowlisting is over (and the passed triplet,
    // 35 days, is still known).
    gl.advance_clock(Duration::from_secs(8 * 86_400));
    let r = attempt(&s.gw, "192.0.2.99", "other@other.test", "dave@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(count(&s.gw, "known"), 1);
}

#[test]
fn a_retry_the_upstream_refuses_does_not_allowlist_the_network() {
    let mut options = MockOptions::default();
    options
        .rcpt_replies
        .insert("ghost@example.com".into(), "550 5.1.1 No such user".into());
    let s = setup_with(options, RCPT_RULES, "");
    let gl = s.gw.shared.greylist();
    assert_eq!(
        attempt(&s.gw, "192.0.2.7", "spam@sender.test", "ghost@example.com").code,
        451
    );
    gl.advance_clock(Duration::from_secs(301));
    // Greylisting lets the retry through; the upstream refuses it.
    let r = attempt(&s.gw, "192.0.2.7", "spam@sender.test", "ghost@example.com");
    assert_eq!(r.code, 550, "{}", r.raw);
    assert_eq!(count(&s.gw, "retried"), 1);
    // Nothing was delivered, so the network is not allowlisted.
    let r = attempt(&s.gw, "192.0.2.8", "spam@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    assert_eq!(count(&s.gw, "allowlisted"), 0);
}

#[test]
fn ipv6_clients_are_one_triplet_per_64() {
    let s = setup(RCPT_RULES, "  auto_allowlist_days: 0\n");
    let r = attempt(
        &s.gw,
        "2001:db8:1:2::7",
        "alice@sender.test",
        "bob@example.com",
    );
    assert_eq!(r.code, 451, "{}", r.raw);
    s.gw.shared
        .greylist()
        .advance_clock(Duration::from_secs(301));
    // Another /64 is another triplet.
    let r = attempt(
        &s.gw,
        "2001:db8:1:3::7",
        "alice@sender.test",
        "bob@example.com",
    );
    assert_eq!(r.code, 451, "{}", r.raw);
    // Another address of the same /64 is the retry.
    let r = attempt(
        &s.gw,
        "2001:db8:1:2:ffff:eeee:dddd:1",
        "alice@sender.test",
        "bob@example.com",
    );
    assert_eq!(r.code, 250, "{}", r.raw);
}

#[test]
fn a_rule_condition_exempts_a_sender() {
    let s = setup(RCPT_RULES, "  delay_s: 3600\n");
    let r = attempt(&s.gw, "192.0.2.7", "alice@friend.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(s.up.wait_for(1).len(), 1);
    // The store was not even asked.
    for result in ["new", "early", "retried", "known", "allowlisted", "error"] {
        assert_eq!(count(&s.gw, result), 0, "{result}");
    }
    // The same client with another sender is greylisted.
    let r = attempt(&s.gw, "192.0.2.7", "alice@stranger.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
}

#[test]
fn at_the_data_stage_one_verdict_covers_every_recipient() {
    let s = setup(DATA_RULES, "  auto_allowlist_days: 0\n");
    let send = |s: &Setup| {
        let mut c = client_at(&s.gw, "198.51.100.20");
        let r = c.send_message(
            "",
            &["bob@example.com", "carol@example.com"],
            &message("d", "hi\r\n"),
        );
        c.cmd("QUIT", 221);
        r
    };
    // The null sender is greylisted like any other.
    let r = send(&s);
    assert_eq!(r.code, 451, "{}", r.raw);
    assert!(r.raw.starts_with("451 4.7.1 Greylisted"), "{}", r.raw);
    assert_eq!(count(&s.gw, "new"), 2);
    assert!(s.up.delivered().is_empty());
    s.gw.shared
        .greylist()
        .advance_clock(Duration::from_secs(301));
    let r = send(&s);
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(s.up.wait_for(1).len(), 1);
    assert_eq!(count(&s.gw, "retried"), 2);
}

#[test]
fn a_store_that_is_down_can_tempfail_instead() {
    let port = free_port();
    let s = setup(
        RCPT_RULES,
        &format!(
            "  store: \"redis://127.0.0.1:{port}/0\"\n  timeout_ms: 300\n  on_error: tempfail\n"
        ),
    );
    let r = attempt(&s.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("451 4.3.0 Greylisting service unavailable"),
        "{}",
        r.raw
    );
    assert_eq!(count(&s.gw, "error"), 1);
    // An exempt sender does not need the store.
    let r = attempt(&s.gw, "192.0.2.7", "alice@friend.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
}

/// The redis-server the tests of this binary share.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The shared server and how many tests use it now.
static REDIS: Mutex<(Option<Redis>, usize)> = Mutex::new((None, 0));

/// A test's hold on the shared redis-server: started by the first test
/// that needs it, stopped (by its PID) when the last one lets go.
struct RedisHold {
    port: u16,
}

impl RedisHold {
    fn take() -> RedisHold {
        let mut shared = REDIS.lock().unwrap_or_else(|p| p.into_inner());
        if shared.0.is_none() {
            shared.0 = Some(start_redis());
        }
        shared.1 += 1;
        RedisHold {
            port: shared.0.as_ref().unwrap().port,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One inline command; the whole first line of the answer.
    fn command(&self, cmd: &str) -> String {
        redis_command(self.port, cmd).unwrap_or_default()
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        let mut shared = REDIS.lock().unwrap_or_else(|p| p.into_inner());
        shared.1 -= 1;
        if shared.1 == 0 {
            if let Some(mut r) = shared.0.take() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

fn start_redis() -> Redis {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}). These tests need it: install it with \
                 `apt-get install redis-server` (scripts/install-test-deps.sh does this)"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_command(port, "PING").as_deref() != Some("+PONG") {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis {
        child,
        port,
        _dir: dir,
    }
}

fn redis_command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if let Some(len) = line.strip_prefix('$') {
        // A bulk string: its value is on the next line.
        if len.trim() == "-1" {
            return Some(String::new());
        }
        line.clear();
        r.read_line(&mut line).ok()?;
    }
    Some(line.trim_end().to_string())
}

#[test]
fn two_instances_share_one_redis_and_the_retry_through_the_second_passes() {
    let redis = RedisHold::take();
    let lines = format!(
        "  delay_s: 3600\n  retry_window_s: 86400\n  store: \"{}\"\n  key_prefix: \"two:gl:\"\n",
        redis.url()
    );
    let a = setup(RCPT_RULES, &lines);
    let b = setup(RCPT_RULES, &lines);
    let r = attempt(&a.gw, "192.0.2.7", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    // The first attempt is a Redis key with the retry window as its expiry.
    let key = "two:gl:t:192.0.2.0/24/<alice@sender.test>/<bob@example.com>";
    let ttl: i64 = redis.command(&format!("TTL {key}"))[1..].parse().unwrap();
    assert!(ttl > 86_000 && ttl <= 86_400, "ttl {ttl}");
    // Through the other instance, before the delay: still greylisted.
    let r = attempt(&b.gw, "192.0.2.8", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 451, "{}", r.raw);
    // An hour later on b's clock (the first attempt's time is a's, in
    // Redis): the retry through b passes.
    b.gw.shared
        .greylist()
        .advance_clock(Duration::from_secs(3601));
    let r = attempt(&b.gw, "192.0.2.8", "alice@sender.test", "bob@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(b.up.wait_for(1).len(), 1);
    assert_eq!(redis.command(&format!("GET {key}")), "passed");
    // The network passed through b; a knows it is allowlisted.
    let r = attempt(&a.gw, "192.0.2.50", "news@other.test", "carol@example.com");
    assert_eq!(r.code, 250, "{}", r.raw);
    assert_eq!(count(&a.gw, "allowlisted"), 1);
    assert_eq!(redis.command("GET two:gl:n:192.0.2.0/24"), "1");
}

#[test]
fn redis_down_fails_open_and_the_log_and_the_metric_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let dead = free_port();
    let up = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[("g.yaml", RCPT_RULES)]);
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "hostname: gate.test\nlisten: [{{ addr: \"127.0.0.1:{port}\" }}]\n\
             upstream: {{ addr: \"{}\" }}\n{}\
             relay: {{ trusted_networks: [], local_domains: [example.com] }}\n\
             metrics: {{ addr: \"127.0.0.1:{metrics_port}\" }}\n\
             greylisting:\n  store: \"redis://127.0.0.1:{dead}/0\"\n  timeout_ms: 300\n",
            up.addr,
            rules_line(rules.path()),
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
    c.cmd("EHLO client.example.net", 250);
    for i in 0..3 {
        let r = c.send_message(
            "alice@sender.test",
            &[&format!("user{i}@example.com")],
            &message(&format!("m{i}"), "hi\r\n"),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
    }
    c.cmd("QUIT", 221);
    assert_eq!(up.wait_for(3).len(), 3);
    let metrics = http_get(metrics_port, "/metrics");
    let text = read_log(&log, "failing OPEN");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(greylist_count(&metrics, "error"), 3, "{metrics}");
    assert_eq!(greylist_count(&metrics, "new"), 0, "{metrics}");
    let line = text
        .lines()
        .find(|l| l.contains("GREYLISTING: store"))
        .unwrap_or_else(|| panic!("no outage line in the log:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("redis://127.0.0.1:{dead}/0")),
        "{line}"
    );
    assert!(line.contains("failing OPEN"), "{line}");
    // Once in a while, not once per message.
    assert_eq!(text.matches("GREYLISTING: store").count(), 1, "{text}");
}

/// The log once it holds `want` (or after a few seconds, as it is).
fn read_log(path: &std::path::Path, want: &str) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text.clear();
        if let Ok(mut f) = std::fs::File::open(path) {
            let _ = f.read_to_string(&mut text);
        }
        if text.contains(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    text
}

/// The body of a GET on the metrics listener.
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

#[test]
fn the_simulator_says_would_be_greylisted_or_lets_a_passed_triplet_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(&[("g.yaml", DATA_RULES)]);
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}relay: {{ local_domains: [example.com] }}\nspool_dir: \"{}\"\n\
             greylisting: {{ delay_s: 90 }}\n",
            rules_line(rules.path()),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(&eml, message("s", "hi\n")).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_smtpgate"))
            .arg("test-rules")
            .arg("--config")
            .arg(&cfg)
            .args(["--from", "a@stranger.test", "--to", "b@example.com"])
            .args(["--client-ip", "203.0.113.9"])
            .args(extra)
            .arg(&eml)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, out) = run(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("matched greylist-message (greylist)"), "{out}");
    assert!(
        out.contains("would be greylisted by greylist-message"),
        "{out}"
    );
    assert!(
        out.contains("verdict: tempfailed at data")
            && out.contains("451 4.7.1 Greylisted, please try again in 90 seconds"),
        "{out}"
    );
    let (code, out) = run(&["--greylist-passed"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the triplet passed before"), "{out}");
}
