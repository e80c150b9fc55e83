//! Sender authentication end to end: a live gateway with `sender_auth:`
//! verifies SPF, DKIM, DMARC and ARC through a private unbound serving the
//! test's SPF, `_domainkey` and `_dmarc` records, and writes its
//! `Authentication-Results` header. Keys come from `opendkim-genkey`,
//! signatures from dkimpy's `dkimsign` and `arcsign`, made at test time;
//! SPF results are cross-checked with pyspf on the same records.

mod common;

use common::mailauth::{pyspf, txt_strings, Key};
use common::unbound::{free_port, Unbound};
use common::{audit_records, rules_dir, rules_line, Client, Gateway, MockOptions, MockUpstream};
use serde_json::Value;

/// The gateway's authserv-id (its hostname).
const ID: &str = "gate.test";

const RULES: &str = "rules:
  - { name: tag-dmarc-fail, stage: data, when: { fact: { name: dmarc, is: fail } }, action: add_header,
      header: { name: X-Dmarc, value: fail } }
";

/// Everything one test runs against; stopped on drop.
struct Setup {
    up: MockUpstream,
    gw: Gateway,
    audit: std::path::PathBuf,
    quarantine: tempfile::TempDir,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A gateway resolving through `dns_server`, relaying to a mock upstream,
/// with `sender_auth` set to `auth` and `extra` config lines.
fn setup(dns_server: &str, auth: &str, extra: &str) -> Setup {
    setup_rules(dns_server, &format!("sender_auth: {auth}\n{extra}"), RULES)
}

/// Like [`setup`], with `rules` as the one rule file and `extra` as the
/// rest of the configuration.
fn setup_rules(dns_server: &str, extra: &str, rules: &str) -> Setup {
    let up = MockUpstream::start(MockOptions::default());
    let rules = rules_dir(&[("r.yaml", rules)]);
    let adir = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let audit = adir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "hostname: {ID}\nupstream: {{ addr: \"{}\" }}\n{}audit: {{ path: \"{}\" }}\n\
         quarantine_dir: \"{}\"\n\
         listen:\n  - {{ addr: \"127.0.0.1:0\", proxy_protocol: true }}\n\
         proxy_protocol: {{ trusted_proxies: [127.0.0.1] }}\n\
         relay: {{ trusted_networks: [], local_domains: [dest.test] }}\n\
         dns: {{ servers: [\"{dns_server}\"], timeout_ms: 500, attempts: 1 }}\n{extra}",
        up.addr,
        rules_line(rules.path()),
        audit.display(),
        quarantine.path().display(),
    ));
    Setup {
        up,
        gw,
        audit,
        quarantine,
        _dirs: (rules, adir),
    }
}

/// The keys and records of the world the tests send from.
struct World {
    dns: Unbound,
    example: Key,
    fwd: Key,
    _keys: tempfile::TempDir,
}

/// example.com: SPF for 192.0.2.7, DMARC p=reject, a DKIM key `sel`;
/// unaligned.test: SPF for 192.0.2.7, no DMARC; quar.example: DMARC
/// p=quarantine; fwd.test: a forwarder with an ARC key and SPF.
fn world() -> World {
    let keys = tempfile::tempdir().unwrap();
    let example = Key::generate(keys.path(), "example.com", "sel");
    let fwd_dir = keys.path().join("fwd");
    std::fs::create_dir(&fwd_dir).unwrap();
    let fwd = Key::generate(&fwd_dir, "fwd.test", "arc");
    let txt =
        |name: &str, text: &str| format!("local-data: '{name}. 300 IN TXT {}'", txt_strings(text));
    let dns = Unbound::start(&[
        txt("example.com", "v=spf1 ip4:192.0.2.7 -all"),
        txt("_dmarc.example.com", "v=DMARC1; p=reject"),
        example.local_data(),
        txt("unaligned.test", "v=spf1 ip4:192.0.2.7 -all"),
        txt("nospf.test", "v=spf1 -all"),
        txt("_dmarc.quar.example", "v=DMARC1; p=quarantine"),
        txt("_dmarc.pct0.example", "v=DMARC1; p=reject; pct=0"),
        txt("_dmarc.pct100.example", "v=DMARC1; p=reject; pct=100"),
        txt("_dmarc.quarpct0.example", "v=DMARC1; p=quarantine; pct=0"),
        txt("fwd.test", "v=spf1 ip4:192.0.2.7 -all"),
        fwd.local_data(),
    ]);
    World {
        dns,
        example,
        fwd,
        _keys: keys,
    }
}

/// A client at 192.0.2.7 (announced by PROXY protocol), after EHLO.
fn client(gw: &Gateway) -> Client {
    let mut c = Client::connect(gw.addr);
    c.send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n");
    c.expect(220);
    c.cmd("EHLO client.example.com", 250);
    c
}

/// A message from `from` (a whole From header value).
fn message(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: b@dest.test\r\nSubject: {subject}\r\n\
         Date: Wed, 02 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\
         \r\nHello,\r\nthis is the body.\r\n"
    )
}

/// Sends `data` (dot-stuffing not needed: no line starts with a dot).
fn send(c: &mut Client, mail_from: &str, data: &str) -> common::WireReply {
    c.send_message(mail_from, &["b@dest.test"], data)
}

/// The header fields named `name` of a delivered message, unfolded.
fn headers(data: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

/// Our Authentication-Results header of the one delivered message.
fn our_header(s: &Setup) -> String {
    let got = s.up.wait_for(1);
    let ours: Vec<String> = headers(&got[0].data, "Authentication-Results")
        .into_iter()
        .filter(|h| h.starts_with(&format!("{ID};")))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    ours[0].clone()
}

/// The facts of the last transaction record.
fn last_facts(s: &Setup, n: usize) -> Value {
    let recs = audit_records(&s.audit, n);
    recs.iter()
        .rev()
        .find(|r| r["type"] == "transaction")
        .map(|r| r["facts"].clone())
        .unwrap_or_else(|| panic!("no transaction record: {recs:?}"))
}

#[test]
fn a_valid_signature_passes_dkim_and_dmarc_and_the_header_says_so() {
    let w = world();
    let s = setup(&w.dns.server(), "{}", "");
    let mut c = client(&s.gw);
    let signed = w.example.sign(&message("a@example.com", "signed"));
    let r = send(&mut c, "a@example.com", &signed);
    assert_eq!(r.code, 250, "{}", r.raw);
    let h = our_header(&s);
    assert!(h.contains("spf=pass smtp.mailfrom=a@example.com"), "{h}");
    assert!(
        h.contains("dkim=pass header.d=example.com header.s=sel header.a=rsa-sha256"),
        "{h}"
    );
    assert!(h.contains("dmarc=pass"), "{h}");
    assert!(
        h.contains("header.from=example.com policy.dmarc=reject"),
        "{h}"
    );
    let f = last_facts(&s, 1);
    assert_eq!(f["spf.mailfrom"], "pass", "{f}");
    assert_eq!(f["dkim"], "pass", "{f}");
    assert_eq!(
        f["dkim.signatures"][0], "pass d=example.com s=sel a=rsa-sha256 aligned",
        "{f}"
    );
    assert_eq!(f["dmarc"], "pass", "{f}");
    assert_eq!(f["dmarc.policy"], "reject", "{f}");
    assert_eq!(f["arc"], "none", "{f}");
}

/// The DKIM and DMARC checks of a message share one verification of its
/// signatures (each RSA verification is most of the data stage's cost).
#[test]
fn one_dkim_verification_serves_both_checks() {
    let w = world();
    let s = setup(&w.dns.server(), "{}", "");
    let mut c = client(&s.gw);
    for i in 0..3 {
        let signed = w
            .example
            .sign(&message("a@example.com", &format!("once{i}")));
        let r = send(&mut c, "a@example.com", &signed);
        assert_eq!(r.code, 250, "{}", r.raw);
    }
    s.up.wait_for(3);
    let f = last_facts(&s, 3);
    assert_eq!(f["dkim"], "pass", "{f}");
    assert_eq!(f["dmarc"], "pass", "{f}");
    let text = s.gw.shared.metrics().render();
    for check in ["dkim", "dmarc"] {
        let ran = format!("smtpgate_checks_total{{check=\"{check}\",outcome=\"ok\"}} 3\n");
        assert!(text.contains(&ran), "{text}");
    }
    assert!(
        text.contains("smtpgate_dkim_verifications_total 3\n"),
        "{text}"
    );
}

#[test]
fn an_altered_body_fails_dkim() {
    let w = world();
    let s = setup(&w.dns.server(), "{}", "");
    let mut c = client(&s.gw);
    let signed = w.example.sign(&message("a@example.com", "altered"));
    let altered = signed.replace("this is the body.", "this is another body.");
    assert_ne!(signed, altered);
    let r = send(&mut c, "a@example.com", &altered);
    assert_eq!(r.code, 250, "{}", r.raw);
    let h = our_header(&s);
    assert!(h.contains("dkim=fail header.d=example.com"), "{h}");
    // SPF still passes aligned: DMARC passes on SPF alone.
    assert!(h.contains("dmarc=pass (spf aligned)"), "{h}");
    let f = last_facts(&s, 1);
    assert_eq!(f["dkim"], "fail", "{f}");
}

#[test]
fn a_forged_header_with_our_id_is_removed_and_another_servers_kept() {
    let w = world();
    let s = setup(&w.dns.server(), "{}", "");
    let mut c = client(&s.gw);
    let forged = format!(
        "Authentication-Results: {ID}; dmarc=pass header.from=example.com\r\n\
         Authentication-Results: (forged)\r\n GATE.test; dkim=pass\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n{}",
        message("a@example.com", "forged")
    );
    let r = send(&mut c, "x@unaligned.test", &forged);
    assert_eq!(r.code, 250, "{}", r.raw);
    let got = s.up.wait_for(1);
    let all = headers(&got[0].data, "Authentication-Results");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|h| h.starts_with("other.example; spf=pass")),
        "{all:?}"
    );
    let h = our_header(&s);
    assert!(h.contains("dmarc=fail"), "{h}");
    assert!(!h.contains("dmarc=pass"), "{h}");
    assert!(!String::from_utf8_lossy(&got[0].data).contains("(forged)"));
}

#[test]
fn p_reject_without_alignment_is_refused_when_enforced() {
    let w = world();
    let s = setup(&w.dns.server(), "{ dmarc: enforce }", "");
    let mut c = client(&s.gw);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("a@example.com", "spoof"),
    );
    assert_eq!(r.code, 550, "{}", r.raw);
    assert!(r.raw.starts_with("550 5.7.1 "), "{}", r.raw);
    assert!(s.up.delivered().is_empty());
    let recs = audit_records(&s.audit, 1);
    let tx = recs.iter().find(|r| r["type"] == "transaction").unwrap();
    assert_eq!(tx["decided_by"], "dmarc", "{tx}");
    assert_eq!(tx["facts"]["dmarc"], "fail", "{tx}");
    // A signed message from the same domain still gets through.
    let signed = w.example.sign(&message("a@example.com", "genuine"));
    let r = send(&mut c, "x@unaligned.test", &signed);
    assert_eq!(r.code, 250, "{}", r.raw);
}

#[test]
fn p_reject_without_alignment_is_relayed_untouched_when_not_enforced() {
    let w = world();
    let s = setup(&w.dns.server(), "{}", "");
    let mut c = client(&s.gw);
    let original = message("a@example.com", "monitored");
    let r = send(&mut c, "x@unaligned.test", &original);
    assert_eq!(r.code, 250, "{}", r.raw);
    let got = s.up.wait_for(1);
    let data = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(data.ends_with(&original), "{data}");
    assert!(data.contains("\r\nX-Dmarc: fail\r\n"), "{data}");
    let f = last_facts(&s, 1);
    assert_eq!(f["dmarc"], "fail", "{f}");
    assert_eq!(f["dmarc.policy"], "reject", "{f}");
    assert_eq!(f["dmarc.reason"], "not aligned", "{f}");
}

#[test]
fn p_quarantine_is_quarantined_when_enforced() {
    let w = world();
    let s = setup(&w.dns.server(), "{ dmarc: enforce }", "");
    let mut c = client(&s.gw);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("q@quar.example", "quar"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    let recs = audit_records(&s.audit, 1);
    let tx = recs.iter().find(|r| r["type"] == "transaction").unwrap();
    assert_eq!(tx["verdict"], "quarantined", "{tx}");
    assert_eq!(tx["decided_by"], "dmarc", "{tx}");
    assert!(s.up.delivered().is_empty());
    // The held message and its sidecar, which says DMARC held it.
    let files: Vec<_> = std::fs::read_dir(s.quarantine.path()).unwrap().collect();
    assert_eq!(files.len(), 2);
    let id = tx["transaction"].as_str().unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.quarantine.path().join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["held"]["by"], "dmarc", "{sidecar}");
    assert_eq!(sidecar["facts"]["dmarc"], "fail", "{sidecar}");
}

/// RFC 7489 §6.6.4: outside the `pct=` share the next-lower policy
/// applies (reject → quarantine, quarantine → none); 0 and 100 are the
/// shares that do not depend on a draw.
#[test]
fn pct_lowers_the_policy_outside_its_share() {
    let w = world();
    let s = setup(&w.dns.server(), "{ dmarc: enforce }", "");
    let mut c = client(&s.gw);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("a@pct100.example", "all"),
    );
    assert_eq!(r.code, 550, "{}", r.raw);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("a@pct0.example", "none"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("a@quarpct0.example", "quar"),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    let recs = audit_records(&s.audit, 3);
    let txs: Vec<_> = recs.iter().filter(|r| r["type"] == "transaction").collect();
    assert_eq!(txs[0]["facts"]["dmarc.pct"], 100.0, "{}", txs[0]);
    assert_eq!(txs[1]["facts"]["dmarc"], "fail", "{}", txs[1]);
    assert_eq!(txs[1]["facts"]["dmarc.policy"], "reject", "{}", txs[1]);
    assert_eq!(txs[1]["facts"]["dmarc.pct"], 0.0, "{}", txs[1]);
    assert_eq!(txs[1]["verdict"], "quarantined", "{}", txs[1]);
    assert_eq!(txs[2]["facts"]["dmarc.pct"], 0.0, "{}", txs[2]);
    assert_ne!(txs[2]["verdict"], "quarantined", "{}", txs[2]);
    // The held message and its sidecar.
    let files: Vec<_> = std::fs::read_dir(s.quarantine.path()).unwrap().collect();
    assert_eq!(files.len(), 2);
    let got = s.up.wait_for(1);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: quar\r\n"));
}

#[test]
fn no_from_or_several_froms_are_permerror() {
    let w = world();
    let s = setup(&w.dns.server(), "{ dmarc: enforce }", "");
    let mut c = client(&s.gw);
    let body = "To: b@dest.test\r\nSubject: s\r\n\r\nbody\r\n";
    let cases = [
        (body.to_string(), "no From header"),
        (
            format!("From: a@example.com\r\nFrom: b@example.com\r\n{body}"),
            "several From headers",
        ),
        (
            format!("From: a@example.com, b@other.example\r\n{body}"),
            "several From addresses",
        ),
    ];
    for (i, (msg, why)) in cases.iter().enumerate() {
        let r = send(&mut c, "x@unaligned.test", msg);
        // permerror is not fail: enforcement leaves it to the rules.
        assert_eq!(r.code, 250, "{why}: {}", r.raw);
        let f = last_facts(&s, i + 1);
        assert_eq!(f["dmarc"], "permerror", "{why}: {f}");
        assert_eq!(f["dmarc.reason"], *why, "{f}");
    }
    let got = s.up.wait_for(3);
    for d in &got {
        let ours = headers(&d.data, "Authentication-Results");
        assert!(ours[0].contains("dmarc=permerror"), "{ours:?}");
    }
}

#[test]
fn dns_down_gives_temperror_never_a_pass() {
    let dead = format!("127.0.0.1:{}", free_port());
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate(keys.path(), "example.com", "sel");
    let s = setup(&dead, "{ dmarc: enforce }", "");
    let mut c = client(&s.gw);
    let r = send(
        &mut c,
        "a@example.com",
        &key.sign(&message("a@example.com", "t")),
    );
    assert_eq!(r.code, 250, "{}", r.raw);
    let f = last_facts(&s, 1);
    for fact in ["spf.mailfrom", "spf.helo", "dkim", "dmarc", "dmarc.policy"] {
        assert_eq!(f[fact], "temperror", "{fact}: {f}");
    }
    let h = our_header(&s);
    assert!(h.contains("spf=temperror"), "{h}");
    assert!(h.contains("dkim=temperror"), "{h}");
    assert!(h.contains("dmarc=temperror"), "{h}");
    assert!(!h.contains("=pass"), "{h}");
}

#[test]
fn a_dns_server_that_never_answers_gives_temperror_and_tempfail_a_451() {
    // Bound on both transports, never read: every query times out.
    let port = free_port();
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let silent = format!("127.0.0.1:{port}");
    let s = setup(&silent, "{}", "");
    let mut c = client(&s.gw);
    let r = send(&mut c, "a@example.com", &message("a@example.com", "silent"));
    assert_eq!(r.code, 250, "{}", r.raw);
    let f = last_facts(&s, 1);
    for fact in ["spf.mailfrom", "spf.helo", "dmarc", "dmarc.policy"] {
        assert_eq!(f[fact], "temperror", "{fact}: {f}");
    }
    // Unsigned: no key to look up, so that answer needs no DNS.
    assert_eq!(f["dkim"], "none", "{f}");
    assert!(!our_header(&s).contains("=pass"));
    let s = setup(&silent, "{}", "checks: { spf: { on_error: tempfail } }\n");
    let mut c = client(&s.gw);
    c.cmd("MAIL FROM:<a@example.com>", 451);
}

#[test]
fn dns_down_with_tempfail_answers_451() {
    let dead = format!("127.0.0.1:{}", free_port());
    let s = setup(
        &dead,
        "{}",
        "checks: { spf: { on_error: tempfail }, dmarc: { on_error: tempfail } }\n",
    );
    let mut c = client(&s.gw);
    let r = c.cmd("MAIL FROM:<a@example.com>", 451);
    assert_eq!(
        r,
        "451 4.7.1 Temporary failure of the spf check, try again later\r\n"
    );
    // The null sender's SPF identity is HELO: the same failure.
    c.cmd("MAIL FROM:<>", 451);
}

#[test]
fn dkim_failure_with_tempfail_answers_451_at_the_end_of_data() {
    let dead = format!("127.0.0.1:{}", free_port());
    let s = setup(
        &dead,
        "{}",
        "checks: { spf: { timeout_ms: 3000 }, dkim: { on_error: tempfail } }\n",
    );
    let mut c = client(&s.gw);
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate(keys.path(), "example.com", "sel");
    let r = send(
        &mut c,
        "a@example.com",
        &key.sign(&message("a@example.com", "t")),
    );
    assert_eq!(r.code, 451, "{}", r.raw);
    assert!(r.raw.contains("dkim check"), "{}", r.raw);
    assert!(s.up.delivered().is_empty());
}

#[test]
fn the_example_rules_refuse_spf_and_dmarc_failures_without_sender_auth() {
    let w = world();
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/sender-auth.yaml"),
    )
    .unwrap();
    let s = setup_rules(&w.dns.server(), "", &rules);
    let mut c = client(&s.gw);
    c.cmd("MAIL FROM:<x@nospf.test>", 250);
    assert_eq!(
        c.cmd("RCPT TO:<b@dest.test>", 550),
        "550 5.7.23 SPF validation failed\r\n"
    );
    c.cmd("RSET", 250);
    let r = send(
        &mut c,
        "x@unaligned.test",
        &message("a@example.com", "spoof"),
    );
    assert_eq!(
        r.raw,
        "550 5.7.1 Rejected by the sender domain's DMARC policy\r\n"
    );
    let signed = w.example.sign(&message("a@example.com", "genuine"));
    let r = send(&mut c, "x@unaligned.test", &signed);
    assert_eq!(r.code, 250, "{}", r.raw);
    // Without `sender_auth:` no header is written.
    let got = s.up.wait_for(1);
    assert!(headers(&got[0].data, "Authentication-Results").is_empty());
}

/// A message from example.com (p=reject) through the fwd.test list: its
/// footer breaks the DKIM signature; the list seals what it checked.
fn forwarded(w: &World) -> String {
    let signed = w.example.sign(&message("a@example.com", "list"));
    let altered = format!("{signed}-- \r\nThe list footer\r\n");
    let with_results = format!(
        "Authentication-Results: fwd.test; dkim=pass header.d=example.com; dmarc=pass\r\n{altered}"
    );
    w.fwd.arc_seal(&with_results, "fwd.test")
}

#[test]
fn a_trusted_sealers_arc_chain_makes_a_dmarc_failure_pass() {
    let w = world();
    let s = setup(
        &w.dns.server(),
        "{ dmarc: enforce, arc: { trusted_sealers: [fwd.test] } }",
        "",
    );
    let mut c = client(&s.gw);
    let r = send(&mut c, "bounce@fwd.test", &forwarded(&w));
    assert_eq!(r.code, 250, "{}", r.raw);
    let h = our_header(&s);
    assert!(h.contains("dkim=fail header.d=example.com"), "{h}");
    assert!(h.contains("arc=pass (sealer fwd.test)"), "{h}");
    assert!(
        h.contains("dmarc=pass (trusted ARC sealer fwd.test)"),
        "{h}"
    );
    let f = last_facts(&s, 1);
    assert_eq!(f["arc"], "pass", "{f}");
    assert_eq!(f["arc.sealer"], "fwd.test", "{f}");
    assert_eq!(f["dmarc.reason"], "trusted ARC sealer fwd.test", "{f}");
}

#[test]
fn an_untrusted_sealer_does_not_help() {
    let w = world();
    let s = setup(
        &w.dns.server(),
        "{ dmarc: enforce, arc: { trusted_sealers: [other.test] } }",
        "",
    );
    let mut c = client(&s.gw);
    let r = send(&mut c, "bounce@fwd.test", &forwarded(&w));
    assert_eq!(r.code, 550, "{}", r.raw);
}

/// One SPF case: the MAIL FROM domain and the client address.
struct Case {
    domain: &'static str,
    ip: &'static str,
}

#[test]
fn spf_results_match_pyspf_on_the_same_records() {
    let txt =
        |name: &str, text: &str| format!("local-data: '{name}. 300 IN TXT {}'", txt_strings(text));
    let mut lines = vec![
        txt("pass.spf.test", "v=spf1 ip4:192.0.2.0/24 -all"),
        txt("fail.spf.test", "v=spf1 ip4:198.51.100.1 -all"),
        txt("soft.spf.test", "v=spf1 ~all"),
        txt("neutral.spf.test", "v=spf1 ?all"),
        "local-data: 'none.spf.test. 300 IN A 192.0.2.1'".to_string(),
        txt("syntax.spf.test", "v=spf1 ip4:not-an-address -all"),
        txt("inc.spf.test", "v=spf1 include:inc2.spf.test -all"),
        txt("inc2.spf.test", "v=spf1 include:inc3.spf.test ~all"),
        txt("inc3.spf.test", "v=spf1 a:host.spf.test -all"),
        "local-data: 'host.spf.test. 300 IN A 192.0.2.7'".to_string(),
        txt(
            "incmissing.spf.test",
            "v=spf1 include:nothing.spf.test -all",
        ),
        txt("redir.spf.test", "v=spf1 redirect=pass.spf.test"),
        txt("redirfail.spf.test", "v=spf1 redirect=fail.spf.test"),
        txt(
            "macro.spf.test",
            "v=spf1 exists:%{i}.%{l}.%{d}.ok.spf.test -all",
        ),
        "local-data: '192.0.2.7.user.macro.spf.test.ok.spf.test. 300 IN A 127.0.0.2'".to_string(),
        txt("macrorev.spf.test", "v=spf1 exists:%{ir}.rev.spf.test -all"),
        "local-data: '7.2.0.192.rev.spf.test. 300 IN A 127.0.0.2'".to_string(),
        txt("mx.spf.test", "v=spf1 mx -all"),
        "local-data: 'mx.spf.test. 300 IN MX 10 mail.mx.spf.test.'".to_string(),
        "local-data: 'mail.mx.spf.test. 300 IN A 192.0.2.7'".to_string(),
        "local-data: 'mail.mx.spf.test. 300 IN AAAA 2001:db8::7'".to_string(),
        txt("v6.spf.test", "v=spf1 ip6:2001:db8::/32 -all"),
        txt("v6a.spf.test", "v=spf1 a:host6.spf.test//64 -all"),
        "local-data: 'host6.spf.test. 300 IN AAAA 2001:db8::1'".to_string(),
        // Eleven DNS-querying mechanisms: over the limit of ten.
        txt(
            "limit.spf.test",
            "v=spf1 a:h1.spf.test a:h2.spf.test a:h3.spf.test a:h4.spf.test \
             a:h5.spf.test a:h6.spf.test a:h7.spf.test a:h8.spf.test a:h9.spf.test \
             a:h10.spf.test a:h11.spf.test ip4:192.0.2.7 -all",
        ),
        txt(
            "under.spf.test",
            "v=spf1 a:h1.spf.test a:h2.spf.test a:h3.spf.test a:h4.spf.test \
             a:h5.spf.test a:h6.spf.test a:h7.spf.test a:h8.spf.test a:h9.spf.test \
             ip4:192.0.2.7 -all",
        ),
        // Three names that do not exist: over the void-lookup limit of two.
        txt(
            "void.spf.test",
            "v=spf1 a:nx1.spf.test a:nx2.spf.test a:nx3.spf.test ip4:192.0.2.7 -all",
        ),
        txt(
            "void2.spf.test",
            "v=spf1 a:nx1.spf.test a:nx2.spf.test ip4:192.0.2.7 -all",
        ),
        // Void lookups of other mechanisms count too: MX, exists.
        txt(
            "voidmx.spf.test",
            "v=spf1 mx:nx1.spf.test a:nx2.spf.test mx:nx3.spf.test ip4:192.0.2.7 -all",
        ),
        txt(
            "voidexists.spf.test",
            "v=spf1 exists:nx1.spf.test exists:nx2.spf.test exists:nx3.spf.test \
             ip4:192.0.2.7 -all",
        ),
        // A match before the third void lookup ends the evaluation first.
        txt(
            "voidfirst.spf.test",
            "v=spf1 a:nx1.spf.test a:nx2.spf.test ip4:192.0.2.7 a:nx3.spf.test -all",
        ),
    ];
    for i in 1..=11 {
        lines.push(format!(
            "local-data: 'h{i}.spf.test. 300 IN A 198.51.100.{i}'"
        ));
    }
    let dns = Unbound::start(&lines);
    let s = setup(&dns.server(), "{}", "");
    let v4 = "192.0.2.7";
    let v6 = "2001:db8::7";
    let case = |domain, ip| Case { domain, ip };
    let cases = [
        case("pass.spf.test", v4),
        case("fail.spf.test", v4),
        case("soft.spf.test", v4),
        case("neutral.spf.test", v4),
        case("none.spf.test", v4),
        case("missing.spf.test", v4),
        case("syntax.spf.test", v4),
        case("inc.spf.test", v4),
        case("inc.spf.test", "192.0.2.8"),
        case("incmissing.spf.test", v4),
        case("redir.spf.test", v4),
        case("redirfail.spf.test", v4),
        case("macro.spf.test", v4),
        case("macro.spf.test", "192.0.2.8"),
        case("macrorev.spf.test", v4),
        case("mx.spf.test", v4),
        case("mx.spf.test", v6),
        case("v6.spf.test", v6),
        case("v6.spf.test", v4),
        case("v6a.spf.test", v6),
        case("limit.spf.test", v4),
        case("under.spf.test", v4),
        case("void.spf.test", v4),
        case("void2.spf.test", v4),
        case("voidmx.spf.test", v4),
        case("voidexists.spf.test", v4),
        case("voidfirst.spf.test", v4),
    ];
    let mut table = Vec::new();
    for (i, k) in cases.iter().enumerate() {
        let mut c = Client::connect(s.gw.addr);
        let proxy = if k.ip.contains(':') {
            format!("PROXY TCP6 {} ::1 40000 25\r\n", k.ip)
        } else {
            format!("PROXY TCP4 {} 127.0.0.1 40000 25\r\n", k.ip)
        };
        c.send(&proxy);
        c.expect(220);
        c.cmd("EHLO helo.spf.test", 250);
        c.cmd(&format!("MAIL FROM:<user@{}>", k.domain), 250);
        c.cmd("RSET", 250);
        c.cmd("QUIT", 221);
        let recs = audit_records(&s.audit, i + 1);
        let ours = recs
            .iter()
            .filter(|r| r["type"] == "transaction")
            .nth(i)
            .map(|r| {
                r["facts"]["spf.mailfrom"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let theirs = pyspf(
            dns.addr().port(),
            k.ip,
            &format!("user@{}", k.domain),
            "helo.spf.test",
        );
        table.push(format!(
            "{:<22} {:<12} ours={ours:<10} pyspf={theirs}",
            k.domain, k.ip
        ));
        assert_eq!(
            ours,
            theirs,
            "{} from {}:\n{}",
            k.domain,
            k.ip,
            table.join("\n")
        );
    }
    println!("{}", table.join("\n"));
}
