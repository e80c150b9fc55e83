//! The gateway under abuse, over real loopback sockets: 2,000 idle and
//! slow connections from 100 source addresses (127.0.0.2 and up) while a
//! well-behaved client still gets a whole transaction through; the per-IP
//! and the global connection limits both refusing; slow and idle clients
//! cut off by their timeouts; and a client that pipelines megabytes of
//! commands without reading a reply, which must neither grow the gateway's
//! memory nor keep its connection.
//!
//! The test process holds both ends of every connection, so it raises its
//! own open-file limit first.

mod common;

use common::{Client, Gateway};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Held by each test for its whole run: the memory test measures this
/// process's RSS, which the other test's thousands of sessions would move.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`ALONE`], also after another test failed holding it.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raises this process's open-file soft limit (to the hard limit) so the
/// test can hold both ends of thousands of connections.
fn raise_fd_limit(need: u64) {
    let got = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        got >= need,
        "this test needs {need} open files; the hard limit allows {got}"
    );
}

/// A connection from `source` (a 127.0.0.x address) to `to`.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(source), 0)))
        .unwrap();
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(10))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one single-line reply (up to CRLF); `None` at the end of the stream.
fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(0) => return None,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// The `n`-th abusing source address: 127.0.0.2, 127.0.0.3, ...
fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (2 + n) as u8 / 255, (2 + n) as u8)
}

#[test]
fn two_thousand_idle_and_slow_connections_do_not_starve_a_well_behaved_client() {
    const SOURCES: usize = 100;
    const PER_IP: usize = 20;
    const ABUSERS: usize = SOURCES * PER_IP;
    let _alone = alone();
    raise_fd_limit(3 * ABUSERS as u64);
    let dir = tempfile::tempdir().unwrap();
    let command_s = 6;
    let gw = Gateway::start(&format!(
        "hostname: gate.test\nspool_dir: \"{}\"\n\
         limits: {{ max_connections: {} }}\n\
         timeouts: {{ command_s: {command_s} }}\n\
         protection: {{ exempt_networks: [], max_connections_per_ip: {PER_IP} }}\n",
        dir.path().join("spool").display(),
        ABUSERS + 5,
    ));

    // 2,000 connections, 20 from each of 100 addresses: every one admitted.
    let started = Instant::now();
    let mut abusers = Vec::with_capacity(ABUSERS);
    for i in 0..ABUSERS {
        let mut s = connect_from(source(i / PER_IP), gw.addr);
        let greeting = read_line(&mut s).expect("a greeting");
        assert!(greeting.starts_with("220 "), "connection {i}: {greeting}");
        abusers.push(s);
    }
    let opened = started.elapsed();

    // One more from an address that has its 20: refused by the per-IP limit.
    let mut extra = connect_from(source(0), gw.addr);
    let r = read_line(&mut extra).unwrap();
    assert!(
        r.starts_with("421 4.7.0 gate.test Error: too many connections from 127.0.0.2"),
        "{r}"
    );

    // The first 100 turn slow: one byte of a command every half second.
    let slow: Vec<TcpStream> = abusers.drain(..100).collect();
    let trickler = {
        let slow: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(command_s + 3);
            while Instant::now() < end {
                for mut s in &slow {
                    let _ = s.write_all(b"N");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // Meanwhile a well-behaved client gets a whole transaction through.
    let t = Instant::now();
    let mut good = Client::connect(gw.addr);
    good.expect(220);
    good.cmd("EHLO good.test", 250);
    let r = good.send_message(
        "a@x.test",
        &["b@y.test"],
        &common::message("served", "still served\r\n"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    good.cmd("QUIT", 221);
    assert!(good.is_closed());
    let served_in = t.elapsed();
    assert!(served_in < Duration::from_secs(5), "{served_in:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        1
    );

    // The global limit: a few more from fresh addresses fill it, then the
    // next one is refused with the global 421 (not the per-IP one).
    let mut filled = Vec::new();
    let mut global = None;
    for n in 0..20 {
        let mut s = connect_from(source(SOURCES + 1 + n), gw.addr);
        let r = read_line(&mut s).unwrap_or_default();
        if r.starts_with("220 ") {
            filled.push(s);
        } else {
            global = Some(r);
            break;
        }
    }
    let global = global.expect("the global limit refuses at some point");
    assert!(
        global.starts_with("421 4.7.0 gate.test Too many connections"),
        "{global}"
    );
    assert!(filled.len() <= 6, "{} admitted past 2,000", filled.len());

    // Slow clients are cut off by the per-line deadline, idle ones by the
    // command timeout: each gets 421 4.4.2 and is closed.
    let mut cut = 0;
    for mut s in slow.into_iter().chain(abusers.drain(..100)) {
        s.set_read_timeout(Some(Duration::from_secs(command_s + 10)))
            .unwrap();
        if let Some(line) = read_line(&mut s) {
            assert!(line.starts_with("421 4.4.2 "), "{line}");
            cut += 1;
        }
    }
    assert_eq!(cut, 200);
    trickler.join().unwrap();
    eprintln!(
        "opened {ABUSERS} connections in {opened:?}; well-behaved client served in {served_in:?}"
    );
}

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_never_reads_replies_cannot_grow_memory_and_is_cut_off() {
    let _alone = alone();
    let gw = Gateway::start("hostname: gate.test\ntimeouts: { command_s: 3 }\n");
    let mut c = Client::connect(gw.addr);
    c.expect(220);
    let before = rss_kib();
    let t0 = Instant::now();
    // Pipelined NOOPs, 64 KiB a write, never reading a reply.
    let chunk = b"NOOP\r\n".repeat(64 * 1024 / 6);
    const MAX: usize = 256 << 20;
    c.stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut written = 0;
    let blocked = loop {
        match c.stream.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(
            written < MAX,
            "the gateway read {written} bytes of commands whose replies nobody reads"
        );
    };
    let grew = rss_kib().saturating_sub(before);
    eprintln!("blocked after {:?}", t0.elapsed());
    // The gateway stopped reading once its replies could not be written:
    // what was written sits in socket buffers, not in the gateway.
    assert!(
        matches!(
            blocked.kind(),
            ErrorKind::WouldBlock
                | ErrorKind::TimedOut
                | ErrorKind::ConnectionReset
                | ErrorKind::BrokenPipe
        ),
        "{blocked}"
    );
    assert!(written < 64 << 20, "{written} bytes accepted");
    assert!(grew < 8 * 1024, "RSS grew by {grew} KiB");
    // Its write timeout ends the session: the connection is reset.
    let deadline = Instant::now() + Duration::from_secs(15);
    let gone = loop {
        match c.stream.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => break e,
        }
        assert!(Instant::now() < deadline, "the session was never closed");
    };
    assert!(
        matches!(
            gone.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{gone}"
    );
    eprintln!(
        "{written} bytes written before the gateway stopped reading; RSS grew {grew} KiB; \
         closed after {:?}",
        t0.elapsed()
    );
    // The gateway still serves others.
    let mut other = gw.client();
    other.cmd("NOOP", 250);
}
