//! The DNS resolver and iprev over real sockets, against a private
//! `unbound` each test starts with its own local data (see
//! `common/unbound.rs`): every record type we ask for, negative answers,
//! the cache once the server is gone, TCP when an answer does not fit in
//! UDP, and servers that are dead, silent or answer garbage, which must
//! end as temporary failures by themselves. Time is only bounded from
//! above, generously, to show that calls end.

mod common;

use common::unbound::{free_port, Unbound};
use smtpgate::config::DnsOptions;
use smtpgate::dns::{iprev, DnsError, IprevResult, Resolver};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous bound for "ends by itself" on a loaded 2-core machine.
const ENDS_WITHIN: Duration = Duration::from_secs(15);

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    async_std::task::block_on(f)
}

fn s(line: &str) -> String {
    line.to_string()
}

/// The zone most tests use: `example.test` with an SOA (so negative
/// answers carry a negative TTL and may be cached), hosts, reverse
/// entries, TXT and MX records.
fn zone() -> Vec<String> {
    vec![
        s(r#"local-zone: "example.test." static"#),
        s(
            r#"local-data: "example.test. 3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300""#,
        ),
        s(r#"local-data: "mail.example.test. 300 IN A 192.0.2.10""#),
        s(r#"local-data: "mail.example.test. 300 IN AAAA 2001:db8::25""#),
        s(r#"local-data: "v4only.example.test. 300 IN A 192.0.2.11""#),
        s(r#"local-data: "Multi.Example.test. 300 IN A 192.0.2.12""#),
        s(r#"local-data: "multi.example.test. 300 IN A 192.0.2.13""#),
        s(r#"local-data: "example.test. 300 IN MX 20 MX2.Example.Test.""#),
        s(r#"local-data: "example.test. 300 IN MX 10 mx1.example.test.""#),
        s(r#"local-data: "nullmx.example.test. 300 IN MX 0 .""#),
        s(r#"local-data: 'example.test. 300 IN TXT "v=spf1 " "-all"'"#),
        s(r#"local-data: '_dmarc.example.test. 300 IN TXT "v=DMARC1; p=reject"'"#),
        s(r#"local-data: "short.example.test. 1 IN A 192.0.2.99""#),
        // PTR: one forward-confirmed, one pointing at a name with other
        // addresses, one with two names of which only one resolves back.
        s(r#"local-data-ptr: "192.0.2.10 mail.example.test""#),
        s(r#"local-data-ptr: "192.0.2.20 v4only.example.test""#),
        s(r#"local-data: "30.2.0.192.in-addr.arpa. 300 IN PTR elsewhere.example.test.""#),
        s(r#"local-data: "30.2.0.192.in-addr.arpa. 300 IN PTR TWO.example.test.""#),
        s(r#"local-data: "elsewhere.example.test. 300 IN A 192.0.2.31""#),
        s(r#"local-data: "two.example.test. 300 IN A 192.0.2.30""#),
        s(r#"local-data-ptr: "2001:db8::25 mail.example.test""#),
        s(r#"local-data-ptr: "192.0.2.40 gone.refused.test""#),
        // A zone whose server refuses to answer: a temporary failure.
        s(r#"local-zone: "refused.test." refuse"#),
    ]
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn is_temporary<T: std::fmt::Debug>(r: &Result<T, DnsError>) -> bool {
    matches!(r, Err(DnsError::Temporary(_)))
}

#[test]
fn a_and_aaaa_records() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    assert_eq!(
        block(r.ips("mail.example.test")),
        Ok(vec![ip("192.0.2.10"), ip("2001:db8::25")])
    );
    assert_eq!(
        block(r.ipv4("mail.example.test")),
        Ok(vec![v4("192.0.2.10")])
    );
    assert_eq!(
        block(r.ipv6("mail.example.test")),
        Ok(vec![v6("2001:db8::25")])
    );
    // One family is enough for ips; the other is NODATA.
    assert_eq!(
        block(r.ips("v4only.example.test")),
        Ok(vec![ip("192.0.2.11")])
    );
    // Case does not matter, and a trailing dot is the same name.
    let mut multi = block(r.ipv4("MULTI.example.test.")).unwrap();
    multi.sort();
    assert_eq!(multi, vec![v4("192.0.2.12"), v4("192.0.2.13")]);
}

#[test]
fn ptr_records_ipv4_and_ipv6() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    assert_eq!(
        block(r.reverse(ip("192.0.2.10"))),
        Ok(vec!["mail.example.test".to_string()])
    );
    assert_eq!(
        block(r.reverse(ip("2001:db8::25"))),
        Ok(vec!["mail.example.test".to_string()])
    );
    // Lower case, no trailing dot, every name.
    let mut names = block(r.reverse(ip("192.0.2.30"))).unwrap();
    names.sort();
    assert_eq!(names, vec!["elsewhere.example.test", "two.example.test"]);
    // An IPv4-mapped IPv6 address is asked as the IPv4 address.
    assert_eq!(
        block(r.reverse(ip("::ffff:192.0.2.10"))),
        Ok(vec!["mail.example.test".to_string()])
    );
    assert_eq!(block(r.reverse(ip("192.0.2.77"))), Err(DnsError::NotFound));
}

#[test]
fn txt_and_mx_records() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    // A record's strings are joined, as SPF reads them.
    assert_eq!(
        block(r.txt("example.test")),
        Ok(vec!["v=spf1 -all".to_string()])
    );
    assert_eq!(
        block(r.txt("_dmarc.example.test")),
        Ok(vec!["v=DMARC1; p=reject".to_string()])
    );
    assert_eq!(
        block(r.mx("example.test")),
        Ok(vec![
            (10, "mx1.example.test".to_string()),
            (20, "mx2.example.test".to_string())
        ])
    );
    assert_eq!(
        block(r.mx("nullmx.example.test")),
        Ok(vec![(0, String::new())])
    );
}

#[test]
fn nxdomain_and_nodata_are_not_found() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    // NXDOMAIN, in our zone and outside any zone.
    assert_eq!(
        block(r.ips("nothing.example.test")),
        Err(DnsError::NotFound)
    );
    assert_eq!(block(r.ipv4("no.such.tld")), Err(DnsError::NotFound));
    assert_eq!(
        block(r.txt("nothing.example.test")),
        Err(DnsError::NotFound)
    );
    assert_eq!(block(r.mx("nothing.example.test")), Err(DnsError::NotFound));
    // NODATA: the name exists, the type does not.
    assert_eq!(
        block(r.ipv6("v4only.example.test")),
        Err(DnsError::NotFound)
    );
    assert_eq!(block(r.txt("mail.example.test")), Err(DnsError::NotFound));
    assert_eq!(block(r.mx("mail.example.test")), Err(DnsError::NotFound));
    assert_eq!(block(r.ipv4("example.test")), Err(DnsError::NotFound));
    // A name that cannot exist in the DNS at all.
    let long = format!("{}.example.test", "a".repeat(64));
    assert_eq!(block(r.ipv4(&long)), Err(DnsError::NotFound));
}

#[test]
fn refused_is_temporary() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(r.ipv4("x.refused.test"));
    assert_eq!(
        got,
        Err(DnsError::Temporary("server answered REFUSED".to_string()))
    );
    assert!(is_temporary(&block(r.txt("refused.test"))));
}

#[test]
fn answers_come_from_the_cache_once_the_server_is_gone() {
    let mut ub = Unbound::start(&zone());
    let r = ub.resolver();
    let a = block(r.ipv4("mail.example.test"));
    assert_eq!(a, Ok(vec![v4("192.0.2.10")]));
    let nx = block(r.txt("nothing.example.test"));
    assert_eq!(nx, Err(DnsError::NotFound));
    let nodata = block(r.mx("mail.example.test"));
    assert_eq!(nodata, Err(DnsError::NotFound));
    ub.stop();
    // Within their TTLs, positive and negative answers are still known...
    assert_eq!(block(r.ipv4("mail.example.test")), a);
    assert_eq!(block(r.txt("nothing.example.test")), nx);
    assert_eq!(block(r.mx("mail.example.test")), nodata);
    // ...while anything not asked before finds no server.
    assert!(is_temporary(&block(r.ipv4("v4only.example.test"))));
    assert!(is_temporary(&block(r.txt("other.example.test"))));
    // The server back: new names resolve again.
    ub.restart();
    assert_eq!(
        block(r.ipv4("v4only.example.test")),
        Ok(vec![v4("192.0.2.11")])
    );
}

#[test]
fn cached_answers_expire_with_their_ttl() {
    let mut ub = Unbound::start(&zone());
    let r = ub.resolver();
    assert_eq!(
        block(r.ipv4("short.example.test")),
        Ok(vec![v4("192.0.2.99")])
    );
    ub.stop();
    // TTL 1 s: gone from the cache after it, and no server to ask.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(is_temporary(&block(r.ipv4("short.example.test"))));
}

#[test]
fn cache_size_zero_keeps_nothing() {
    let mut ub = Unbound::start(&zone());
    let r = Resolver::start(&DnsOptions {
        cache_size: 0,
        ..ub.options()
    })
    .unwrap();
    assert_eq!(
        block(r.ipv4("mail.example.test")),
        Ok(vec![v4("192.0.2.10")])
    );
    ub.stop();
    assert!(is_temporary(&block(r.ipv4("mail.example.test"))));
}

#[test]
fn big_answers_fall_back_to_tcp() {
    // UDP answers capped at 512 bytes; 12 TXT records of 200 bytes each
    // cannot come over UDP, so they must arrive over TCP, complete.
    let mut lines = zone();
    lines.push(s("max-udp-size: 512"));
    let want: Vec<String> = (0..12)
        .map(|i| format!("{i:02}{}", "x".repeat(198)))
        .collect();
    for t in &want {
        lines.push(format!(
            r#"local-data: 'big.example.test. 300 IN TXT "{t}"'"#
        ));
    }
    let ub = Unbound::start(&lines);
    let r = ub.resolver();
    let mut got = block(r.txt("big.example.test")).expect("the big answer arrives");
    got.sort();
    assert_eq!(got, want);

    // The same through a relay that forwards UDP only: small answers
    // pass, the big one is truncated and finds no TCP, a temporary
    // failure, not a partial answer.
    let relay = Responder::start(Reply::Relay(ub.addr()));
    let r = Resolver::start(&DnsOptions {
        servers: vec![relay.addr.to_string()],
        timeout_ms: 500,
        attempts: 1,
        ..DnsOptions::default()
    })
    .unwrap();
    assert_eq!(
        block(r.ipv4("mail.example.test")),
        Ok(vec![v4("192.0.2.10")])
    );
    assert!(is_temporary(&block(r.txt("big.example.test"))));
}

/// Options for a server that will not answer well: short timeout so the
/// test is quick; the bound checked is far above it.
fn quick(server: SocketAddr) -> DnsOptions {
    DnsOptions {
        servers: vec![server.to_string()],
        timeout_ms: 200,
        attempts: 2,
        ..DnsOptions::default()
    }
}

/// Runs every kind of lookup against `r`; each must fail as temporary
/// and the whole must end by itself.
fn all_temporary(r: &Resolver) {
    let started = Instant::now();
    assert!(is_temporary(&block(r.ipv4("mail.example.test"))));
    assert!(is_temporary(&block(r.ips("mail.example.test"))));
    assert!(is_temporary(&block(r.txt("example.test"))));
    assert!(is_temporary(&block(r.mx("example.test"))));
    assert!(is_temporary(&block(r.reverse(ip("192.0.2.10")))));
    assert!(started.elapsed() < ENDS_WITHIN, "{:?}", started.elapsed());
}

#[test]
fn a_port_nothing_listens_on_is_temporary() {
    let port = free_port();
    let r = Resolver::start(&quick(SocketAddr::from(([127, 0, 0, 1], port)))).unwrap();
    all_temporary(&r);
}

#[test]
fn a_server_that_never_answers_is_temporary() {
    let silent = Responder::start(Reply::Nothing);
    let r = Resolver::start(&quick(silent.addr)).unwrap();
    all_temporary(&r);
    assert!(silent.queries() > 0, "the resolver did ask");
}

#[test]
fn garbage_answers_are_temporary() {
    for reply in [Reply::Garbage, Reply::WrongId, Reply::CutShort] {
        let bad = Responder::start(reply);
        let r = Resolver::start(&quick(bad.addr)).unwrap();
        all_temporary(&r);
        assert!(bad.queries() > 0, "{reply:?}: the resolver did ask");
    }
}

#[test]
fn with_resolver_shares_the_resolver() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(r.with_resolver(|hickory| {
        Box::pin(async move {
            hickory
                .txt_lookup("_dmarc.example.test.")
                .await
                .map(|l| l.answers().len())
                .map_err(|e| e.to_string())
        })
    }));
    assert_eq!(got, Ok(Ok(1)));
}

#[test]
fn many_lookups_at_once_all_end() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let started = Instant::now();
    let results = block(futures::future::join_all((0..200).map(|i| {
        let r = r.clone();
        async move {
            if i % 2 == 0 {
                r.ipv4("mail.example.test").await.map(|_| ())
            } else {
                r.txt(&format!("n{i}.example.test")).await.map(|_| ())
            }
        }
    })));
    for (i, got) in results.iter().enumerate() {
        let want = if i % 2 == 0 {
            Ok(())
        } else {
            Err(DnsError::NotFound)
        };
        assert_eq!(got, &want, "lookup {i}");
    }
    assert!(started.elapsed() < ENDS_WITHIN);
}

#[test]
fn iprev_pass() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(iprev(&r, ip("192.0.2.10")));
    assert_eq!(got.result, IprevResult::Pass);
    assert_eq!(got.ptr.as_deref(), Some("mail.example.test"));
    // Of two PTR names, the one that resolves back.
    let got = block(iprev(&r, ip("192.0.2.30")));
    assert_eq!(got.result, IprevResult::Pass);
    assert_eq!(got.ptr.as_deref(), Some("two.example.test"));
}

#[test]
fn iprev_pass_ipv6_and_ipv4_mapped() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(iprev(&r, ip("2001:db8::25")));
    assert_eq!(got.result, IprevResult::Pass);
    assert_eq!(got.ptr.as_deref(), Some("mail.example.test"));
    let got = block(iprev(&r, ip("::ffff:192.0.2.10")));
    assert_eq!(got.result, IprevResult::Pass);
    assert_eq!(got.ptr.as_deref(), Some("mail.example.test"));
}

#[test]
fn iprev_fail_without_ptr() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(iprev(&r, ip("192.0.2.77")));
    assert_eq!(got.result, IprevResult::Fail);
    assert_eq!(got.ptr, None);
    assert_eq!(got.result.name(), "fail");
}

#[test]
fn iprev_fail_when_the_name_resolves_elsewhere() {
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    // 192.0.2.20 -> v4only.example.test -> 192.0.2.11.
    let got = block(iprev(&r, ip("192.0.2.20")));
    assert_eq!(got.result, IprevResult::Fail);
    assert_eq!(got.ptr.as_deref(), Some("v4only.example.test"));
}

#[test]
fn iprev_temperror() {
    // No server at all.
    let r = Resolver::start(&quick(SocketAddr::from(([127, 0, 0, 1], free_port())))).unwrap();
    let started = Instant::now();
    let got = block(iprev(&r, ip("192.0.2.10")));
    assert_eq!(got.result, IprevResult::TempError);
    assert_eq!(got.ptr, None);
    assert!(started.elapsed() < ENDS_WITHIN);
    // A PTR whose name's forward lookup is refused: no pass, not a fail.
    let ub = Unbound::start(&zone());
    let r = ub.resolver();
    let got = block(iprev(&r, ip("192.0.2.40")));
    assert_eq!(got.result, IprevResult::TempError);
    assert_eq!(got.ptr.as_deref(), Some("gone.refused.test"));
    assert_eq!(got.result.name(), "temperror");
}

/// How a [`Responder`] answers each query.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Never.
    Nothing,
    /// Random-looking bytes that are no DNS message.
    Garbage,
    /// The query sent back as a response, with another ID.
    WrongId,
    /// The right ID and a header promising an answer, then nothing.
    CutShort,
    /// Forwards to a real server over UDP and relays its reply.
    Relay(SocketAddr),
}

/// A UDP "name server" on 127.0.0.1 that answers as its [`Reply`] says;
/// nothing listens on its TCP port. Stops on drop.
struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(reply: Reply) -> Responder {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut n = 0u8;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                seen2.fetch_add(1, Ordering::Relaxed);
                let query = &buf[..len];
                let answer: Option<Vec<u8>> = match reply {
                    Reply::Nothing => None,
                    Reply::Garbage => {
                        n = n.wrapping_add(1);
                        Some((0..64u8).map(|i| i.wrapping_mul(37) ^ n).collect())
                    }
                    Reply::WrongId if len >= 12 => {
                        let mut a = query.to_vec();
                        a[0] ^= 0x5a;
                        a[2] |= 0x80; // QR: a response
                        Some(a)
                    }
                    Reply::CutShort if len >= 12 => {
                        let mut a = query[..12].to_vec();
                        a[2] |= 0x80;
                        a[7] = 1; // ANCOUNT 1, and no question nor answer follow
                        Some(a)
                    }
                    Reply::Relay(server) => relay(query, server),
                    _ => None,
                };
                if let Some(a) = answer {
                    let _ = socket.send_to(&a, from);
                }
            }
        });
        Responder {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Queries received so far.
    fn queries(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

/// One UDP exchange with `server`.
fn relay(query: &[u8], server: SocketAddr) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send_to(query, server).ok()?;
    let mut buf = [0u8; 65535];
    let (len, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..len].to_vec())
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
