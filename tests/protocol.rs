//! What only real sockets show: bytes arriving one at a time, SMTP
//! smuggling on the wire, timeouts, connection limits and graceful
//! shutdown. Dialogues that only check replies are in `dialogue.rs`.

mod common;

use common::{Client, Gateway, MockOptions, MockUpstream};
use std::io::Write;
use std::time::Duration;

fn gateway() -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "");
    (up, gw)
}

#[test]
fn a_command_sent_one_byte_at_a_time_works() {
    let (_up, gw) = gateway();
    let mut c = gw.client();
    for b in b"EHLO slow.client.test\r\n" {
        c.stream.write_all(&[*b]).unwrap();
        c.stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(c.expect(250).contains("greets slow.client.test"));
}

/// Each smuggling sequence, followed by a second transaction a naive
/// proxy would pass through as a separate message.
const SMUGGLING: &[&[u8]] = &[
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n", b"\r.\r\n",
];

fn smuggle(c: &mut Client, seq: &[u8]) -> common::WireReply {
    c.cmd("MAIL FROM:<a@example.com>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
    let mut body = b"Subject: hello\r\n\r\nhello".to_vec();
    body.extend_from_slice(seq);
    body.extend_from_slice(b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
    c.send_bytes(&body);
    c.reply()
}

#[test]
fn smuggling_sequences_are_rejected_and_never_start_a_second_transaction() {
    for seq in SMUGGLING {
        let (up, gw) = gateway();
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        let r = smuggle(&mut c, seq);
        assert!(r.raw.starts_with("554 5.6.0"), "{seq:?}: {}", r.raw);
        // The smuggled commands were message text, not commands: the next
        // thing the session reads is our NOOP.
        c.cmd("NOOP", 250);
        std::thread::sleep(Duration::from_millis(50));
        assert!(up.delivered().is_empty(), "{seq:?}");
        let mails: usize = up
            .commands()
            .iter()
            .flatten()
            .filter(|l| l.starts_with("MAIL"))
            .count();
        assert!(mails <= 1, "{seq:?}: upstream saw {mails} MAIL commands");
    }
}

#[test]
fn smuggling_sequences_normalised_make_exactly_one_upstream_transaction() {
    for seq in SMUGGLING {
        let up = MockUpstream::start(MockOptions::default());
        let gw = Gateway::with_upstream(&up, "message: { bare_line_endings: normalize }\n");
        let mut c = gw.client();
        c.cmd("EHLO client.test", 250);
        let r = smuggle(&mut c, seq);
        assert_eq!(r.code, 250, "{seq:?}: {}", r.raw);
        c.cmd("NOOP", 250);
        let d = up.wait_for(1);
        assert_eq!(d.len(), 1, "{seq:?}");
        assert_eq!(d[0].rcpts, vec!["b@example.com"]);
        let text = String::from_utf8_lossy(&d[0].data);
        assert!(
            text.contains("MAIL FROM:<admin@example.com>"),
            "smuggled text stays content"
        );
        // What went upstream is canonical: every CR is followed by LF and
        // every LF preceded by CR.
        let wire = &d[0].wire;
        for (i, b) in wire.iter().enumerate() {
            if *b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "{seq:?}");
            }
            if *b == b'\n' {
                assert_eq!(wire[i - 1], b'\r', "{seq:?}");
            }
        }
        let mails = up
            .commands()
            .iter()
            .flatten()
            .filter(|l| l.starts_with("MAIL"))
            .count();
        assert_eq!(mails, 1, "{seq:?}");
    }
}

#[test]
fn idle_client_times_out_with_421() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "timeouts: { command_s: 1 }\n");
    let mut c = gw.client();
    let r = c.reply();
    assert!(r.raw.starts_with("421 4.4.2"), "{}", r.raw);
    assert!(c.is_closed());
}

#[test]
fn connections_over_the_limit_get_421_at_once() {
    let up = MockUpstream::start(MockOptions::default());
    let gw = Gateway::with_upstream(&up, "limits: { max_connections: 2 }\n");
    let _a = gw.client();
    let _b = gw.client();
    let mut c = Client::connect(gw.addr);
    let r = c.reply();
    assert!(r.raw.starts_with("421 4.7.0"), "{}", r.raw);
    assert!(c.is_closed());
    drop(_a);
    // A slot frees up once a session ends.
    let mut ok = false;
    for _ in 0..100 {
        let mut d = Client::connect(gw.addr);
        if d.reply().code == 220 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok);
}

/// The accept queue the kernel keeps for a listener, as `ss` shows it
/// (for a listening socket its Send-Q column is the backlog).
fn listen_backlog(addr: std::net::SocketAddr) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", addr.port())])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(&addr.to_string()))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn the_listener_backlog_is_listen_backlog_within_somaxconn() {
    let (_up, gw) = gateway();
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let want = (smtpgate::server::LISTEN_BACKLOG as u64).min(somaxconn);
    assert_eq!(
        listen_backlog(gw.addr),
        Some(want),
        "ss -ltn for {}",
        gw.addr
    );
    // And the listener still serves.
    let mut c = gw.client();
    c.cmd("NOOP", 250);
}

#[test]
fn shutdown_tells_idle_sessions_421_and_lets_transactions_finish() {
    let (up, gw) = gateway();
    let mut idle = gw.client();
    idle.cmd("EHLO idle.test", 250);
    let mut busy = gw.client();
    busy.cmd("EHLO busy.test", 250);
    busy.cmd("MAIL FROM:<a@example.com>", 250);
    busy.cmd("RCPT TO:<b@example.com>", 250);
    gw.shutdown();
    let r = idle.reply();
    assert!(r.raw.starts_with("421 4.3.2"), "{}", r.raw);
    assert!(idle.is_closed());
    // New connections are no longer accepted once the listener is closed.
    busy.cmd("DATA", 354);
    busy.send("Subject: in flight\r\n\r\nfinish me\r\n.\r\n");
    busy.expect(250);
    let r = busy.reply();
    assert!(r.raw.starts_with("421 4.3.2"), "{}", r.raw);
    assert_eq!(up.wait_for(1).len(), 1);
    assert!(gw.wait_stopped(Duration::from_secs(10)));
}
