//! Per-client protection over real sockets: connections per IP, messages
//! per session, the error tarpit, pre-greeting talkers, the per-line
//! deadline for slow clients, the exemption of trusted networks, and what
//! the audit trail says about each refusal.

mod common;

use common::{audit_records, Client, Gateway};
use std::io::Write;
use std::time::{Duration, Instant};

/// A spool-mode gateway with an audit file; loopback is not exempt unless
/// `extra` says otherwise.
struct Setup {
    dir: tempfile::TempDir,
    gw: Gateway,
}

impl Setup {
    fn new(protection: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "hostname: gate.test\nspool_dir: \"{}\"\naudit: {{ path: \"{}\" }}\n{protection}",
            dir.path().join("spool").display(),
            dir.path().join("audit.jsonl").display(),
        );
        let gw = Gateway::start(&yaml);
        Setup { dir, gw }
    }

    /// The audit records, waiting for at least `n`.
    fn audit(&self, n: usize) -> Vec<serde_json::Value> {
        audit_records(&self.dir.path().join("audit.jsonl"), n)
    }

    /// The first audit record whose `decided_by` is `by`, waiting for it.
    fn record_by(&self, by: &str) -> serde_json::Value {
        for _ in 0..500 {
            if let Some(r) = self.audit(0).into_iter().find(|r| r["decided_by"] == by) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no audit record decided by {by}: {:?}", self.audit(0));
    }
}

#[test]
fn connections_per_ip_over_the_limit_get_421_and_a_freed_slot_is_reused() {
    let s = Setup::new("protection: { exempt_networks: [], max_connections_per_ip: 3 }\n");
    let mut open: Vec<Client> = (0..3).map(|_| s.gw.client()).collect();
    let mut fourth = Client::connect(s.gw.addr);
    let r = fourth.reply();
    assert_eq!(r.code, 421, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("421 4.7.0 gate.test Error: too many connections from 127.0.0.1"),
        "{}",
        r.raw
    );
    assert!(fourth.is_closed());
    // The three admitted sessions work.
    open[0].cmd("EHLO a.test", 250);
    // A session that ends gives its place back.
    let mut first = open.remove(0);
    first.cmd("QUIT", 221);
    assert!(first.is_closed());
    let mut again = None;
    for _ in 0..100 {
        let mut c = Client::connect(s.gw.addr);
        if c.reply().code == 220 {
            again = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    again.expect("a slot is free again").cmd("EHLO b.test", 250);

    let rec = s.record_by("protection:max_connections_per_ip");
    assert_eq!(rec["type"], "session");
    assert_eq!(rec["end"], "too many connections from this IP");
    assert!(rec["reply"].as_str().unwrap().starts_with("421 4.7.0"));
}

#[test]
fn trusted_networks_are_exempt_by_default() {
    // Loopback is a trusted network by default, and so exempt.
    let s = Setup::new("protection: { max_connections_per_ip: 2, max_messages_per_session: 1 }\n");
    let mut clients: Vec<Client> = (0..5).map(|_| s.gw.client()).collect();
    let c = &mut clients[4];
    c.cmd("EHLO a.test", 250);
    for i in 0..3 {
        let r = c.send_message(
            "a@x.test",
            &["b@y.test"],
            &common::message(&format!("m{i}"), "hi\r\n"),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
    }
}

#[test]
fn too_many_messages_in_one_session_get_421_and_close() {
    let s = Setup::new("protection: { exempt_networks: [], max_messages_per_session: 2 }\n");
    let mut c = s.gw.client();
    c.cmd("EHLO a.test", 250);
    for i in 0..2 {
        let r = c.send_message(
            "a@x.test",
            &["b@y.test"],
            &common::message(&format!("m{i}"), "hi\r\n"),
        );
        assert_eq!(r.code, 250, "{}", r.raw);
    }
    let raw = c.cmd("MAIL FROM:<a@x.test>", 421);
    assert!(
        raw.starts_with("421 4.7.0 gate.test Error: too many messages"),
        "{raw}"
    );
    assert!(c.is_closed());
    // A new session may send again.
    let mut c = s.gw.client();
    c.cmd("EHLO a.test", 250);
    c.cmd("MAIL FROM:<a@x.test>", 250);

    let rec = s.record_by("protection:max_messages_per_session");
    assert_eq!(rec["type"], "transaction");
    assert_eq!(rec["verdict"], "disconnected");
    assert_eq!(rec["stage"], "mail");
    assert!(rec["reply"].as_str().unwrap().starts_with("421 4.7.0"));
}

#[test]
fn the_tarpit_delays_error_replies_after_the_soft_limit() {
    let s = Setup::new(
        "protection: { exempt_networks: [], soft_error_limit: 2, error_delay_ms: 400 }\n",
    );
    let mut c = s.gw.client();
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        c.cmd("BOGUS", 500);
        took.push(started.elapsed());
    }
    // The first two errors are answered at once, every later one waits.
    let delay = Duration::from_millis(400);
    for (i, t) in took.iter().enumerate().skip(2) {
        assert!(*t >= delay, "error {} answered after {t:?}", i + 1);
    }
    assert!(took[0] < took[2] && took[1] < took[2], "{took:?}");
    // Good commands are not delayed.
    let started = Instant::now();
    c.cmd("NOOP", 250);
    assert!(started.elapsed() < took[2], "{took:?}");
    c.cmd("QUIT", 221);
    let rec = s
        .audit(1)
        .into_iter()
        .find(|r| r["type"] == "session")
        .expect("a session record");
    assert!(rec["tarpit_ms"].as_f64().unwrap() >= 1200.0, "{rec}");
}

#[test]
fn a_client_talking_before_the_greeting_gets_554_and_is_closed() {
    let s = Setup::new("protection: { exempt_networks: [], greeting_delay_ms: 300 }\n");
    // The bot: writes at once.
    let mut bot = Client::connect(s.gw.addr);
    bot.send("EHLO bot.test\r\n");
    let r = bot.reply();
    assert_eq!(r.code, 554, "{}", r.raw);
    assert!(
        r.raw
            .starts_with("554 5.5.0 gate.test Protocol error: talked before greeting"),
        "{}",
        r.raw
    );
    assert!(bot.is_closed());
    // A real MTA waits for the banner and gets it after the delay.
    let started = Instant::now();
    let mut mta = Client::connect(s.gw.addr);
    mta.expect(220);
    assert!(started.elapsed() >= Duration::from_millis(300));
    mta.cmd("EHLO mta.test", 250);
    mta.cmd("QUIT", 221);

    let rec = s.record_by("protection:greeting_delay_ms");
    assert_eq!(rec["end"], "talked before greeting");
    assert!(rec["reply"].as_str().unwrap().starts_with("554 5.5.0"));
}

#[test]
fn exempt_clients_skip_the_greeting_delay() {
    let s = Setup::new("protection: { greeting_delay_ms: 5000 }\n");
    let started = Instant::now();
    let mut c = Client::connect(s.gw.addr);
    c.send("EHLO eager.test\r\n");
    c.expect(220);
    c.expect(250);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Sends `line` one byte every `pace` until the server closes the
/// connection or `limit` passes; returns the reply read at the end, if any,
/// and how long it took.
fn trickle(
    c: &mut Client,
    line: &[u8],
    pace: Duration,
    limit: Duration,
) -> (Option<u16>, Duration) {
    let started = Instant::now();
    c.stream.set_nonblocking(false).unwrap();
    for b in line.iter().cycle() {
        if started.elapsed() > limit {
            return (None, started.elapsed());
        }
        if c.stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(pace);
        // Anything to read (the 421, or the end) means the server gave up.
        c.stream.set_nonblocking(true).unwrap();
        let mut peek = [0u8; 1];
        let gave_up = !matches!(
            c.stream.peek(&mut peek),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        c.stream.set_nonblocking(false).unwrap();
        if gave_up {
            break;
        }
    }
    (c.try_reply().map(|r| r.code), started.elapsed())
}

#[test]
fn a_client_trickling_a_command_is_cut_off_by_the_per_line_deadline() {
    let s = Setup::new("timeouts: { command_s: 2 }\n");
    let mut c = s.gw.client();
    // One byte every 300 ms never leaves a read waiting 2 s, but the line
    // is never complete.
    let (code, took) = trickle(
        &mut c,
        b"NOOP NOOP NOOP",
        Duration::from_millis(300),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(421), "after {took:?}");
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn without_the_per_line_deadline_only_silence_times_out() {
    let s = Setup::new("timeouts: { command_s: 2 }\nprotection: { per_line_deadline: false }\n");
    let mut c = s.gw.client();
    let (code, took) = trickle(
        &mut c,
        b"HELP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    assert_eq!(code, None, "cut off after {took:?}");
    c.send("\r\n");
    c.expect(214);
}

#[test]
fn a_message_trickled_line_by_line_within_the_deadline_is_accepted_and_a_stalled_line_is_not() {
    let s = Setup::new("timeouts: { data_block_s: 2 }\n");
    let mut c = s.gw.client();
    c.cmd("EHLO a.test", 250);
    c.cmd("MAIL FROM:<a@x.test>", 250);
    c.cmd("RCPT TO:<b@y.test>", 250);
    c.cmd("DATA", 354);
    // Whole lines, one every 700 ms for 3 s: each line is in time.
    c.send("Subject: slow\r\n\r\n");
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        c.send(&format!("line {i}\r\n"));
    }
    c.send(".\r\n");
    c.expect(250);
    // A line trickled byte by byte past the deadline ends the session.
    c.cmd("MAIL FROM:<a@x.test>", 250);
    c.cmd("RCPT TO:<b@y.test>", 250);
    c.cmd("DATA", 354);
    let (code, took) = trickle(
        &mut c,
        b"xxxxxxxx",
        Duration::from_millis(300),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(421), "after {took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn bad_protection_config_names_file_line_and_reason() {
    let err = smtpgate::config::Config::from_yaml(
        "hostname: gate.test\nprotection:\n  rate_limits:\n    store: \"memcached://x\"\n",
        "gateway.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gateway.yaml:4: protection.rate_limits.store: \"memcached://x\" is not a store: \
         write `memory` or `redis://host:port[/db]`"
    );
}

#[test]
fn each_pipelined_line_gets_its_own_deadline() {
    let s = Setup::new("timeouts: { command_s: 2 }\n");
    let mut c = s.gw.client();
    // Idle most of the allowed time, then a whole line and the start of
    // the next: the next line's time starts when the first one is done.
    std::thread::sleep(Duration::from_millis(1500));
    c.send("NOOP\r\nHE");
    c.expect(250);
    std::thread::sleep(Duration::from_millis(1200));
    c.send("LP\r\n");
    c.expect(214);
}

#[test]
fn over_the_limit_on_an_implicit_tls_listener_is_closed_without_a_handshake() {
    let pki = common::certs::Pki::new("gate");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "hostname: gate.test\n{}listen: [{{ addr: \"127.0.0.1:0\", tls: implicit }}]\n\
         audit: {{ path: \"{}\" }}\n\
         protection: {{ exempt_networks: [], max_connections_per_ip: 1 }}\n",
        pki.tls_yaml(),
        audit.display()
    ));
    let mut first = common::tls_client::TlsClient::implicit(gw.addr, pki.client_config());
    // The second client sends its TLS hello and gets no answer but the end:
    // no plaintext 421 where TLS is expected, and no handshake paid for.
    let mut second = std::net::TcpStream::connect(gw.addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = second.write_all(b"\x16\x03\x01\x00\x05hello");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut second, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "got {:?}", &buf[..n]);
    first.send("QUIT\r\n");
    first.expect(221);
    let rec = audit_records(&audit, 2)
        .into_iter()
        .find(|r| r["decided_by"] == "protection:max_connections_per_ip")
        .expect("the refusal is audited");
    assert_eq!(rec["end"], "too many connections from this IP");
}
