//! Unit tests of the rule set: every matcher, every action, scoring, and
//! the load errors with their file, line and reason.

use super::*;
use crate::body::Body;
use crate::filter::{Context, FilterChain, Message, Stage, TlsInfo, Verdict};
use crate::proto::{Mailbox, Recipient};

/// Compiles one file's text named `test.yaml`; panics with the error.
fn set(yaml: &str) -> RuleSet {
    RuleSet::from_yaml(yaml, Path::new("test.yaml"), RuleOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The error a file's text gives.
fn fail(yaml: &str) -> ConfigError {
    match RuleSet::from_yaml(yaml, Path::new("test.yaml"), RuleOptions::default()) {
        Ok(_) => panic!("expected an error for\n{yaml}"),
        Err(e) => e,
    }
}

fn chain(set: RuleSet) -> FilterChain {
    let mut c = FilterChain::new();
    c.push(Arc::new(set));
    c
}

fn ctx(ip: &str) -> Context {
    let addr = match ip.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(v4) => std::net::SocketAddr::from((v4, 4000)),
        std::net::IpAddr::V6(v6) => std::net::SocketAddr::from((v6, 4000)),
    };
    Context::new(addr)
}

fn mb(s: &str) -> Mailbox {
    let (local, domain) = s.split_once('@').unwrap();
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

fn rcpt(s: &str) -> Recipient {
    Recipient::Mailbox(mb(s))
}

/// A context past MAIL FROM `from` ("" for `<>`).
fn mail_ctx(from: &str) -> Context {
    let mut c = ctx("192.0.2.10");
    c.helo = Some("client.example".into());
    c.mail_from = Some(if from.is_empty() {
        None
    } else {
        Some(mb(from))
    });
    c
}

fn run(chain: &FilterChain, stage: Stage, c: &mut Context) -> Verdict {
    chain.run(stage, c, None, None)
}

fn run_data(chain: &FilterChain, c: &mut Context, msg: &[u8]) -> Verdict {
    let mut body = Body::new(1 << 20);
    body.append(msg).unwrap();
    let mut m = Message::new(&mut body);
    chain.run(Stage::Data, c, None, Some(&mut m))
}

fn rejected(v: &Verdict) -> bool {
    matches!(v, Verdict::Reject(_))
}

fn one(stage: &str, when: &str) -> FilterChain {
    chain(set(&format!(
        "rules:\n  - name: r\n    stage: {stage}\n    when: {when}\n    action: reject\n"
    )))
}

#[test]
fn client_ip_inline_file_v4_v6() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nets.txt"),
        "# bad\n198.51.100.0/24\n2001:db8::/32 # doc\n",
    )
    .unwrap();
    let path = dir.path().join("r.yaml");
    let yaml = "rules:\n  - name: r\n    stage: connect\n    when: { client_ip: { cidrs: [203.0.113.9], cidrs_file: nets.txt } }\n    action: reject\n";
    let rs = RuleSet::from_yaml(yaml, &path, RuleOptions::default()).unwrap();
    let c = chain(rs);
    for (ip, want) in [
        ("203.0.113.9", true),
        ("203.0.113.10", false),
        ("198.51.100.77", true),
        ("2001:db8::1", true),
        ("2001:db9::1", false),
        ("::ffff:198.51.100.1", true),
    ] {
        let v = run(&c, Stage::Connect, &mut ctx(ip));
        assert_eq!(rejected(&v), want, "{ip}");
        if want {
            assert_eq!(v, Verdict::Reject(Verdict::default_reject_connect()));
        }
    }
}

#[test]
fn helo_regex_names_and_ip_literal() {
    let c = one(
        "helo",
        "{ helo: { regex: '(?i)^localhost', names: [Bad.Example] } }",
    );
    for (helo, want) in [
        ("LOCALHOST.localdomain", true),
        ("bad.example", true),
        ("good.example", false),
    ] {
        let mut x = ctx("192.0.2.1");
        x.helo = Some(helo.into());
        assert_eq!(rejected(&run(&c, Stage::Helo, &mut x)), want, "{helo}");
    }
    let c = one("helo", "{ helo_ip_literal: true }");
    for (helo, want) in [
        ("[192.0.2.1]", true),
        ("[IPv6:2001:db8::1]", true),
        ("192.0.2.1", true),
        ("[300.1.1.1]", false),
        ("mx.example", false),
    ] {
        let mut x = ctx("192.0.2.1");
        x.helo = Some(helo.into());
        assert_eq!(rejected(&run(&c, Stage::Helo, &mut x)), want, "{helo}");
    }
}

#[test]
fn tls_authenticated_and_auth_user() {
    let c = one("mail", "{ tls: false, authenticated: false }");
    let mut x = mail_ctx("a@example.com");
    assert!(rejected(&run(&c, Stage::Mail, &mut x)));
    x.tls = Some(TlsInfo::default());
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)));
    let c = one("mail", "{ auth_user: { regex: '^svc-', names: [Alice] } }");
    for (user, want) in [
        (Some("alice"), true),
        (Some("svc-x"), true),
        (Some("bob"), false),
        (None, false),
    ] {
        let mut x = mail_ctx("a@example.com");
        x.auth_user = user.map(String::from);
        assert_eq!(rejected(&run(&c, Stage::Mail, &mut x)), want, "{user:?}");
    }
}

#[test]
fn sender_regex_addresses_domains_and_null() {
    let c = one(
        "mail",
        "{ sender: { regex: '^(bulk|promo)@', addresses: [Boss@Example.com], domains: [spam.test, .bad.test] } }",
    );
    for (from, want) in [
        ("bulk@anything.test", true),
        ("boss@EXAMPLE.com", true),
        ("x@spam.test", true),
        ("x@sub.spam.test", false),
        ("x@deep.bad.test", true),
        ("x@bad.test", false),
        ("alice@example.com", false),
        ("", false),
    ] {
        assert_eq!(
            rejected(&run(&c, Stage::Mail, &mut mail_ctx(from))),
            want,
            "{from}"
        );
    }
    let c = one("mail", "{ null_sender: true }");
    assert!(rejected(&run(&c, Stage::Mail, &mut mail_ctx(""))));
    assert!(!rejected(&run(&c, Stage::Mail, &mut mail_ctx("a@b.c"))));
    let c = one("mail", "{ null_sender: false }");
    assert!(!rejected(&run(&c, Stage::Mail, &mut mail_ctx(""))));
}

#[test]
fn recipient_per_recipient_at_rcpt_any_at_data_and_count() {
    let c = one("rcpt", "{ recipient: { domains: [blocked.test] } }");
    let mut x = mail_ctx("a@example.com");
    assert!(rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&rcpt("u@blocked.test")),
        None
    )));
    assert!(!rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&rcpt("u@ok.test")),
        None
    )));
    let c = one("rcpt", "{ recipient: { addresses: [postmaster] } }");
    assert!(rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&Recipient::Postmaster),
        None
    )));

    let c = one("data", "{ recipient: { regex: '^vip@' } }");
    let mut x = mail_ctx("a@example.com");
    x.rcpts = vec![rcpt("a@x.test"), rcpt("vip@x.test")];
    assert!(rejected(&run_data(&c, &mut x, b"Subject: x\r\n\r\nhi\r\n")));
    x.rcpts.pop();
    assert!(!rejected(&run_data(
        &c,
        &mut x,
        b"Subject: x\r\n\r\nhi\r\n"
    )));

    let c = one("rcpt", "{ recipient_count: { min: 3 } }");
    let mut x = mail_ctx("a@example.com");
    x.rcpts = vec![rcpt("a@x.test")];
    assert!(!rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&rcpt("b@x.test")),
        None
    )));
    x.rcpts.push(rcpt("b@x.test"));
    assert!(rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&rcpt("c@x.test")),
        None
    )));
}

#[test]
fn declared_and_actual_size() {
    let c = one("mail", "{ declared_size: { min: 10K } }");
    let mut x = mail_ctx("a@example.com");
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)), "no SIZE given");
    x.declared_size = Some(10 * 1024);
    assert!(rejected(&run(&c, Stage::Mail, &mut x)));
    x.declared_size = Some(10 * 1024 - 1);
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)));
    let c = one("data", "{ size: { min: 20, max: 30 } }");
    assert!(rejected(&run_data(&c, &mut mail_ctx("a@b.c"), &[b'x'; 25])));
    assert!(!rejected(&run_data(
        &c,
        &mut mail_ctx("a@b.c"),
        &[b'x'; 31]
    )));
    assert_eq!(model::parse_byte_size("1.5M"), None);
    assert_eq!(model::parse_byte_size("2 MiB"), Some(2 << 20));
    assert_eq!(model::parse_byte_size("1g"), Some(1 << 30));
}

#[test]
fn header_present_absent_regex_decoded_and_raw() {
    let msg = b"Subject: =?UTF-8?B?WW91IGhhdmUgd29u?= big\r\nX-Mailer: Bulk\r\n  Mailer 3\r\n\r\nbody\r\n";
    let cases = [
        ("{ header: { name: x-mailer, present: true } }", true),
        ("{ header: { name: Message-ID, present: false } }", true),
        ("{ header: { name: Message-ID, present: true } }", false),
        (
            "{ header: { name: SUBJECT, regex: '(?i)you have won' } }",
            true,
        ),
        (
            "{ header: { name: Subject, regex: 'You have won', raw: true } }",
            false,
        ),
        (
            "{ header: { name: Subject, regex: '^=\\?UTF-8\\?B\\?', raw: true } }",
            true,
        ),
        (
            "{ header: { name: X-Mailer, regex: 'Bulk Mailer 3$' } }",
            true,
        ),
    ];
    for (when, want) in cases {
        let c = one("data", when);
        assert_eq!(
            rejected(&run_data(&c, &mut mail_ctx("a@b.c"), msg)),
            want,
            "{when}"
        );
    }
}

#[test]
fn body_raw_and_decoded_share_one_pass() {
    let msg = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\r\nQ2hlYXAgcGlsbHMgaGVyZQ==\r\n";
    let rs = set("rules:
  - { name: raw-b64, stage: data, when: { body: { regex: 'Q2hlYXA' } }, action: score, score: 1 }
  - { name: raw-plain, stage: data, when: { body: { regex: 'Cheap pills' } }, action: score, score: 10 }
  - { name: decoded, stage: data, when: { body: { regex: ['(?i)cheap\\s+pills', 'never'], decoded: true } }, action: score, score: 100 }
  - { name: header-line-not-body, stage: data, when: { body: { regex: '^Subject' } }, action: score, score: 1000 }
");
    assert_eq!(rs.stage(Stage::Data).raw_body.as_ref().unwrap().len(), 3);
    let c = chain(rs);
    let mut x = mail_ctx("a@b.c");
    assert_eq!(run_data(&c, &mut x, msg), Verdict::Continue);
    assert_eq!(x.score, 101.0);
    let names: Vec<_> = x.hits.iter().map(|h| h.rule.as_str()).collect();
    assert_eq!(names, ["raw-b64", "decoded"]);
}

#[test]
fn body_only_rules_after_the_scan_match_as_before_and_others_still_run() {
    use super::BodyOnly;
    let msg = b"Subject: x\r\n\r\nfirst line\r\nbuy cheap pills\r\n";
    let rs = set("rules:
  - { name: b0, stage: data, when: { body: { regex: 'nothing0' } }, action: score, score: 1 }
  - { name: b1, stage: data, when: { body: { regex: 'cheap' } }, action: score, score: 2 }
  - { name: b2, stage: data, when: { body: { regex: 'nothing2' } }, action: score, score: 4 }
  - { name: two, stage: data, when: { body: { regex: ['nothing3', 'pills'] } }, action: score, score: 8 }
  - { name: both, stage: data, when: { all: [ { body: { regex: 'first' } }, { sender: { domains: [b.c] } } ] }, action: score, score: 16 }
  - { name: b5, stage: data, when: { body: { regex: 'first line' } }, action: score, score: 32 }
  - { name: dec, stage: data, when: { body: { regex: 'nothing6', decoded: true } }, action: score, score: 64 }
  - { name: dec2, stage: data, when: { body: { regex: 'pills', decoded: true } }, action: score, score: 128 }
");
    let st = rs.stage(Stage::Data);
    assert!(matches!(st.body_only[0], BodyOnly::Raw(_)));
    assert_eq!(st.body_only[3], BodyOnly::No, "two patterns");
    assert_eq!(st.body_only[4], BodyOnly::No, "not the body alone");
    assert!(matches!(st.body_only[7], BodyOnly::Decoded(_)));
    let c = chain(rs);
    let mut x = mail_ctx("a@b.c");
    assert_eq!(run_data(&c, &mut x, msg), Verdict::Continue);
    assert_eq!(x.score, (2 + 8 + 16 + 32 + 128) as f64);
    let names: Vec<_> = x.hits.iter().map(|h| h.rule.as_str()).collect();
    assert_eq!(names, ["b1", "two", "both", "b5", "dec2"]);
}

#[test]
fn plain_text_shares_one_pass_for_raw_and_decoded_and_anchors_still_work() {
    let rs = set("rules:
  - { name: raw, stage: data, when: { body: { regex: '^second line$' } }, action: score, score: 1 }
  - { name: dec, stage: data, when: { body: { regex: 'first', decoded: true } }, action: score, score: 10 }
  - { name: start, stage: data, when: { body: { regex: '\\Asecond' } }, action: score, score: 100 }
  - { name: across, stage: data, when: { body: { regex: 'line\\s+second' } }, action: score, score: 1000 }
");
    let st = rs.stage(Stage::Data);
    assert!(st.combined_body.is_some());
    assert!(
        !st.raw_body.as_ref().unwrap().blocks_prechecked(),
        "\\A disables the block pre-check"
    );
    let c = chain(rs);
    let mut x = mail_ctx("a@b.c");
    run_data(
        &c,
        &mut x,
        b"Subject: x\r\n\r\nfirst line\r\nsecond line\r\n",
    );
    // \A is the start of each line; nothing matches across lines.
    assert_eq!(x.score, 111.0);
}

#[test]
fn body_on_a_spilled_message_and_many_rules() {
    let mut yaml = String::from("rules:\n");
    for i in 0..300 {
        yaml.push_str(&format!(
            "  - {{ name: b{i}, stage: data, when: {{ body: {{ regex: 'token{i}\\b' }} }}, action: score, score: 1 }}\n"
        ));
    }
    let c = chain(set(&yaml));
    let mut msg = b"Subject: x\r\n\r\n".to_vec();
    for i in 0..5000 {
        msg.extend_from_slice(format!("line {i} filler text\r\n").as_bytes());
    }
    msg.extend_from_slice(b"here is token7 and token299\r\n");
    let mut body = Body::new(64);
    body.append(&msg).unwrap();
    assert!(body.is_spilled());
    let mut m = Message::new(&mut body);
    let mut x = mail_ctx("a@b.c");
    c.run(Stage::Data, &mut x, None, Some(&mut m));
    assert_eq!(x.score, 2.0);
}

#[test]
fn attachments_by_extension_and_regex() {
    let msg = b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Invoice.PDF.exe\"\r\n\r\nxx\r\n--b--\r\n";
    for (when, want) in [
        ("{ attachment: { extensions: [.EXE, js] } }", true),
        ("{ attachment: { extensions: [pdf] } }", false),
        ("{ attachment: { regex: '(?i)invoice' } }", true),
    ] {
        let c = one("data", when);
        assert_eq!(
            rejected(&run_data(&c, &mut mail_ctx("a@b.c"), msg)),
            want,
            "{when}"
        );
    }
    let c = one("data", "{ attachment: { extensions: [exe] } }");
    assert!(!rejected(&run_data(
        &c,
        &mut mail_ctx("a@b.c"),
        b"Subject: x\r\n\r\nplain.exe\r\n"
    )));
}

#[test]
fn mime_limit_skips_and_notes_it() {
    let rs = RuleSet::from_yaml(
        "rules:\n  - { name: att, stage: data, when: { attachment: { extensions: [exe] } }, action: reject }\n",
        Path::new("t.yaml"),
        RuleOptions { max_mime_bytes: 10 },
    )
    .unwrap();
    let c = chain(rs);
    let mut x = mail_ctx("a@b.c");
    let multipart = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n";
    assert_eq!(run_data(&c, &mut x, multipart), Verdict::Continue);
    assert_eq!(x.hits[0].action, "not_evaluated");
    // A plain text message needs no MIME parsing: nothing is skipped.
    let mut x = mail_ctx("a@b.c");
    let plain = b"Subject: x\r\n\r\nbig enough\r\n";
    assert_eq!(run_data(&c, &mut x, plain), Verdict::Continue);
    assert!(x.hits.is_empty());
}

#[test]
fn all_any_not_and_score_matcher() {
    let c = one(
        "mail",
        "{ all: [ { any: [ { tls: true }, { authenticated: true } ] }, { not: { sender: { domains: [example.com] } } } ] }",
    );
    let mut x = mail_ctx("a@other.test");
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)));
    x.tls = Some(TlsInfo::default());
    assert!(rejected(&run(&c, Stage::Mail, &mut x)));
    let mut x = mail_ctx("a@example.com");
    x.tls = Some(TlsInfo::default());
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)));

    let c = one("mail", "{ score: { min: 5 } }");
    let mut x = mail_ctx("a@b.c");
    x.score = 4.5;
    assert!(!rejected(&run(&c, Stage::Mail, &mut x)));
    x.score = 5.0;
    assert!(rejected(&run(&c, Stage::Mail, &mut x)));
}

#[test]
fn accept_ends_the_stage_and_accept_transaction_the_transaction() {
    let c = chain(set("rules:
  - { name: ok, stage: mail, when: { sender: { domains: [good.test] } }, action: accept }
  - { name: no, stage: mail, action: reject }
  - { name: ok-tx, stage: mail, when: { sender: { domains: [vip.test] } }, action: accept_transaction }
  - { name: no-rcpt, stage: rcpt, action: reject }
"));
    let mut x = mail_ctx("a@good.test");
    assert_eq!(run(&c, Stage::Mail, &mut x), Verdict::Continue);
    assert!(rejected(&c.run(
        Stage::Rcpt,
        &mut x,
        Some(&rcpt("b@x.test")),
        None
    )));
    assert_eq!(x.decided_by.as_deref(), Some("no-rcpt"));

    let c = chain(set("rules:
  - { name: ok-tx, stage: mail, when: { sender: { domains: [vip.test] } }, action: accept_transaction }
  - { name: no-rcpt, stage: rcpt, action: reject }
"));
    let mut x = mail_ctx("a@vip.test");
    assert_eq!(run(&c, Stage::Mail, &mut x), Verdict::Continue);
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("b@x.test")), None),
        Verdict::Continue
    );
    assert_eq!(x.hits[0].action, "accept_transaction");
}

#[test]
fn reject_tempfail_disconnect_replies_default_and_overridden() {
    let c = chain(set("rules:
  - { name: a, stage: mail, when: { sender: { domains: [a.test] } }, action: reject }
  - { name: b, stage: mail, when: { sender: { domains: [b.test] } }, action: tempfail }
  - { name: c, stage: mail, when: { sender: { domains: [c.test] } }, action: disconnect }
  - name: d
    stage: mail
    when: { sender: { domains: [d.test] } }
    action: reject
    reply: { code: 554, enhanced: 5.7.0, text: 'Go away' }
  - { name: e, stage: mail, when: { sender: { domains: [e.test] } }, action: tempfail, reply: { code: 450 } }
"));
    let cases = [
        ("x@a.test", "550 5.7.1 Rejected by policy"),
        (
            "x@b.test",
            "451 4.7.1 Temporarily rejected by policy, try again later",
        ),
        ("x@c.test", "421 4.7.0 Closing connection by policy"),
        ("x@d.test", "554 5.7.0 Go away"),
        (
            "x@e.test",
            "450 4.7.1 Temporarily rejected by policy, try again later",
        ),
    ];
    for (from, want) in cases {
        let v = run(&c, Stage::Mail, &mut mail_ctx(from));
        let r = match &v {
            Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => r.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(r, want, "{from}");
    }
    assert!(matches!(
        run(&c, Stage::Mail, &mut mail_ctx("x@c.test")),
        Verdict::Disconnect(_)
    ));
}

#[test]
fn discard_quarantine_warn_add_header_and_score() {
    let c = chain(set("rules:
  - { name: w, stage: rcpt, action: warn }
  - { name: s, stage: rcpt, action: score, score: 2.5 }
  - name: h
    stage: rcpt
    action: add_header
    header: { name: X-Policy, value: '{rule}@{stage} score={score} ip={client_ip} from={sender} to={recipient} {{x}}' }
  - { name: q, stage: rcpt, when: { recipient: { regex: '^review@' } }, action: quarantine }
  - { name: d, stage: rcpt, when: { recipient: { regex: '^null@' } }, action: discard }
"));
    let mut x = mail_ctx("a@b.c");
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("u@x.test")), None),
        Verdict::Continue
    );
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("v@x.test")), None),
        Verdict::Continue
    );
    assert_eq!(x.score, 2.5, "a score rule counts once per transaction");
    assert_eq!(
        x.add_headers,
        vec![(
            "X-Policy".to_string(),
            "h@rcpt score=2.5 ip=192.0.2.10 from=a@b.c to=u@x.test {x}".to_string()
        )]
    );
    let warns = x.hits.iter().filter(|h| h.action == "warn").count();
    assert_eq!(warns, 2, "warn is noted for every match");
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("review@x.test")), None),
        Verdict::Quarantine
    );
    assert_eq!(x.decided_by.as_deref(), Some("q"));
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("null@x.test")), None),
        Verdict::Discard
    );
}

#[test]
fn scoring_tags_and_rejects() {
    let rules = "rules:
  - { name: lottery, stage: data, when: { header: { name: Subject, regex: '(?i)lottery' } }, action: score, score: 6 }
  - { name: pills, stage: data, when: { body: { regex: '(?i)pills' } }, action: score, score: 5 }
  - { name: bad-sender, stage: mail, when: { sender: { domains: [bad.test] } }, action: score, score: 3.5 }
scoring: { tag_at: 5, reject_at: 10 }
";
    let c = chain(set(rules));
    let mut x = mail_ctx("a@b.c");
    run(&c, Stage::Mail, &mut x);
    assert_eq!(
        run_data(&c, &mut x, b"Subject: Lottery\r\n\r\nhello\r\n"),
        Verdict::Continue
    );
    assert_eq!(
        x.add_headers,
        vec![
            ("X-Spam-Flag".to_string(), "YES".to_string()),
            ("X-Spam-Score".to_string(), "6".to_string())
        ]
    );
    let mut x = mail_ctx("a@bad.test");
    run(&c, Stage::Mail, &mut x);
    let v = run_data(&c, &mut x, b"Subject: Lottery\r\n\r\ncheap pills\r\n");
    assert_eq!(v, Verdict::Reject(Scoring::default_reply()));
    assert!(!Scoring::default_reply().text().contains("lottery"));
    assert_eq!(x.decided_by.as_deref(), Some(SCORING_REJECT));
    let names: Vec<_> = x.hits.iter().map(|h| h.rule.as_str()).collect();
    assert_eq!(names, ["bad-sender", "lottery", "pills", SCORING_REJECT]);
    assert_eq!(x.score, 14.5);

    // A session-stage score counts in every transaction, and reject_at applies from MAIL on.
    let c = chain(set("rules:
  - { name: bad-net, stage: connect, when: { client_ip: { cidrs: [192.0.2.0/24] } }, action: score, score: 20 }
scoring: { reject_at: 10, reply: { code: 554, text: 'Spam' } }
"));
    let mut x = ctx("192.0.2.10");
    assert_eq!(run(&c, Stage::Connect, &mut x), Verdict::Continue);
    x.reset_transaction();
    x.mail_from = Some(Some(mb("a@b.c")));
    let v = run(&c, Stage::Mail, &mut x);
    assert_eq!(
        v.outcome(),
        crate::filter::Outcome::Refuse(Reply::new(554, EnhancedCode::new(5, 7, 1), "Spam"))
    );
}

#[test]
fn rules_run_in_file_name_order_and_disabled_rules_are_skipped() {
    let files = vec![
        (PathBuf::from("b.yaml"), "rules:\n  - { name: second, stage: mail, action: warn }\n".to_string()),
        (PathBuf::from("a.yaml"), "rules:\n  - { name: first, stage: mail, action: warn }\n  - { name: off, stage: mail, action: reject, enabled: false }\n".to_string()),
    ];
    let rs = RuleSet::from_texts(&files, RuleOptions::default()).unwrap();
    // from_texts keeps the order given; load_dir sorts by name.
    assert_eq!(rs.rule_names(Stage::Mail), ["second", "first"]);
    let dir = tempfile::tempdir().unwrap();
    for (p, t) in &files {
        std::fs::write(dir.path().join(p), t).unwrap();
    }
    std::fs::write(dir.path().join("c.yml"), "not: [valid").unwrap();
    let rs = RuleSet::load_dir(dir.path(), RuleOptions::default()).unwrap();
    assert_eq!(rs.rule_names(Stage::Mail), ["first", "second"]);
    assert!(rs.summary().contains("first"), "{}", rs.summary());
}

/// (yaml, expected line, text the reason must contain)
#[test]
fn load_errors_name_file_line_and_reason() {
    let cases: &[(&str, Option<usize>, &str)] = &[
        (
            "rules:\n  - name: a\n    stage: mail\n    action: reject\n    colour: red\n",
            Some(5),
            "unknown field `colour`",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    when: { sender: { regex: 42 } }\n    action: reject\n",
            Some(4),
            "a string or a list of strings",
        ),
        (
            "rules:\n  - name: a\n    stage: lunch\n    action: reject\n",
            Some(3),
            "unknown variant `lunch`",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    when:\n      sender:\n        regex: '(unclosed'\n    action: reject\n",
            Some(6),
            "rule \"a\": when.sender.regex: bad regex \"(unclosed\"",
        ),
        (
            "rules:\n  - name: a\n    stage: connect\n    when:\n      client_ip:\n        cidrs:\n          - 10.0.0.0/8\n          - 10.0.0/8\n    action: reject\n",
            Some(8),
            "\"10.0.0/8\" is not a CIDR network",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    action: reject\n    reply: { code: 451 }\n",
            Some(5),
            "451 does not fit this action, which needs a 5xx reply",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    action: tempfail\n    reply:\n      code: 451\n      enhanced: 5.7.1\n",
            Some(7),
            "has class 5 but the reply code 451 has class 4",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    action: discard\n    reply: { code: 250 }\n",
            Some(5),
            "a reply is only for reject, tempfail and disconnect",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    when: { body: { regex: x } }\n    action: reject\n",
            Some(4),
            "the message is only known at the data stage",
        ),
        (
            "rules:\n  - name: a\n    stage: helo\n    when: { sender: { domains: [x.test] } }\n    action: reject\n",
            Some(4),
            "the sender is not known before the mail stage",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    action: score\n",
            Some(4),
            "needs `score: N`",
        ),
        (
            "rules:\n  - name: a\n    stage: data\n    action: add_header\n    header: { name: X-A, value: '{nope}' }\n",
            Some(5),
            "unknown placeholder {nope}",
        ),
        (
            "rules:\n  - name: a\n    stage: data\n    action: add_header\n    header: { name: 'X A', value: v }\n",
            Some(5),
            "is not a header field name",
        ),
        (
            "rules:\n  - name: a\n    stage: mail\n    when: {}\n    action: reject\n",
            Some(4),
            "an empty condition",
        ),
        (
            "rules:\n  - name: a b\n    stage: mail\n    action: reject\n",
            Some(2),
            "may only use letters",
        ),
        (
            "rules:\n  - { name: a, stage: mail, action: warn }\n  - { name: a, stage: rcpt, action: warn }\n",
            Some(3),
            "the name is already used at test.yaml:2",
        ),
        (
            "rules: []\nscoring: { tag_at: 10, reject_at: 5 }\n",
            Some(2),
            "is above reject_at",
        ),
        (
            "rules: []\nscoring:\n  reject_at: 5\n  reply: { code: 451 }\n",
            Some(4),
            "needs a 5xx reply",
        ),
        (
            "rules:\n  - name: a\n    stage: data\n    when: { header: { name: Subject, regex: x, present: true } }\n    action: reject\n",
            Some(4),
            "either present or regex",
        ),
    ];
    for (yaml, line, want) in cases {
        let e = fail(yaml);
        assert_eq!(e.file, "test.yaml", "{yaml}");
        assert_eq!(e.line, *line, "{e}\n{yaml}");
        assert!(e.reason.contains(want), "{e}\nwanted {want:?}\n{yaml}");
    }
}

#[test]
fn list_file_errors_name_the_list_line_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nets.txt"),
        "10.0.0.0/8\n\n# x\nnot-a-net\n",
    )
    .unwrap();
    let path = dir.path().join("r.yaml");
    let yaml = "rules:\n  - name: nets\n    stage: connect\n    when: { client_ip: { cidrs_file: nets.txt } }\n    action: reject\n";
    let e = RuleSet::from_yaml(yaml, &path, RuleOptions::default())
        .err()
        .unwrap();
    assert!(e.file.ends_with("nets.txt"), "{e}");
    assert_eq!(e.line, Some(4));
    assert!(e.reason.contains("rule \"nets\" at"), "{e}");
    let yaml = yaml.replace("nets.txt", "missing.txt");
    let e = RuleSet::from_yaml(&yaml, &path, RuleOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.line, Some(4));
    assert!(e.reason.contains("cannot read list file"), "{e}");
}

#[test]
fn scoring_may_be_set_in_one_file_only() {
    let files = vec![
        (
            PathBuf::from("a.yaml"),
            "scoring: { tag_at: 1 }\n".to_string(),
        ),
        (
            PathBuf::from("b.yaml"),
            "rules: []\nscoring: { tag_at: 2 }\n".to_string(),
        ),
    ];
    let e = RuleSet::from_texts(&files, RuleOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.file, "b.yaml");
    assert_eq!(e.line, Some(2));
    assert!(e.reason.contains("already set in a.yaml"), "{e}");
}

#[test]
fn empty_files_and_an_empty_dir_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    assert!(RuleSet::load_dir(dir.path(), RuleOptions::default())
        .unwrap()
        .is_empty());
    std::fs::write(dir.path().join("x.yaml"), "# nothing yet\n").unwrap();
    assert!(RuleSet::load_dir(dir.path(), RuleOptions::default())
        .unwrap()
        .is_empty());
    let e = RuleSet::load_dir(&dir.path().join("nope"), RuleOptions::default())
        .err()
        .unwrap();
    assert!(e.reason.contains("cannot read the rules directory"), "{e}");
}

#[test]
fn scores_format_for_people() {
    assert_eq!(fmt_score(6.0), "6");
    assert_eq!(fmt_score(0.1 + 0.2), "0.3");
    assert_eq!(fmt_score(-1.25), "-1.25");
    assert_eq!(fmt_score(-0.001), "0");
}

#[test]
fn fact_matchers_test_the_value_a_check_gave() {
    use crate::facts::{Scope, Value};
    let s = set(r#"
rules:
  - { name: no-iprev, stage: connect, when: { fact: { name: iprev, is: [FAIL, temperror] } }, action: score, score: 1 }
  - { name: dynamic, stage: connect, when: { fact: { name: client.ptr, regex: '(?i)\.dyn\.' } }, action: score, score: 2 }
  - { name: high, stage: connect, when: { fact: { name: scanner.score, min: 5 } }, action: score, score: 4 }
  - { name: unknown, stage: connect, when: { fact: { name: iprev, present: false } }, action: score, score: 8 }
"#);
    let c = chain(s);
    let score = |facts: &[(&str, Value)]| {
        let mut x = ctx("192.0.2.10");
        for (n, v) in facts {
            x.facts.set(*n, v.clone(), Scope::Connection);
        }
        c.run(Stage::Connect, &mut x, None, None);
        x.score
    };
    assert_eq!(score(&[]), 8.0);
    assert_eq!(score(&[("iprev", Value::text("pass"))]), 0.0);
    assert_eq!(score(&[("iprev", Value::text("fail"))]), 1.0);
    assert_eq!(score(&[("iprev", Value::text("temperror"))]), 1.0);
    assert_eq!(
        score(&[
            ("iprev", Value::text("pass")),
            ("client.ptr", Value::text("host-1.DYN.example.net")),
            ("scanner.score", Value::Number(7.5)),
        ]),
        6.0
    );
    assert_eq!(
        score(&[
            ("iprev", Value::text("pass")),
            ("scanner.score", Value::Number(4.9))
        ]),
        0.0
    );
}

#[test]
fn the_facts_a_rule_set_reads_are_listed_with_stage_and_place() {
    let s = set(r#"
rules:
  - name: late
    stage: mail
    when: { any: [ { fact: { name: iprev, is: fail } }, { not: { fact: { name: client.ptr, present: true } } } ] }
    action: reject
"#);
    let used = s.facts_used();
    let names: Vec<(&str, Stage)> = used.iter().map(|u| (u.fact.as_str(), u.stage)).collect();
    assert_eq!(
        names,
        vec![("iprev", Stage::Mail), ("client.ptr", Stage::Mail)]
    );
    assert_eq!(used[0].file, "test.yaml");
    assert_eq!(used[0].line, Some(3));
}

#[test]
fn a_fact_matcher_needs_a_name_and_exactly_one_test() {
    let e = fail("rules:\n  - { name: a, stage: connect, when: { fact: { name: iprev } }, action: reject }\n");
    assert!(
        e.reason
            .contains("give exactly one of is, regex, min/max or present"),
        "{e}"
    );
    assert_eq!(e.line, Some(2));
    let e = fail("rules:\n  - { name: a, stage: connect, when: { fact: { name: 'a b', is: x } }, action: reject }\n");
    assert!(e.reason.contains("\"a b\" is not a fact name"), "{e}");
    let e = fail("rules:\n  - { name: a, stage: connect, when: { fact: { name: x, is: y, present: true } }, action: reject }\n");
    assert!(e.reason.contains("exactly one"), "{e}");
}

#[test]
fn greylist_marks_the_stage_and_a_later_reject_still_wins() {
    let s = set("rules:\n\
         \x20 - { name: gl, stage: rcpt, when: { not: { sender: { domains: [friend.test] } } }, action: greylist }\n\
         \x20 - { name: no-bob, stage: rcpt, when: { recipient: { regex: '^bob@' } }, action: reject }\n");
    let c = chain(s);
    let mut x = mail_ctx("a@stranger.test");
    assert_eq!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("carol@x.test")), None),
        Verdict::Continue
    );
    assert_eq!(x.greylist.as_deref(), Some("gl"));
    assert!(x
        .hits
        .iter()
        .any(|h| h.rule == "gl" && h.action == "greylist"));
    assert!(matches!(
        c.run(Stage::Rcpt, &mut x, Some(&rcpt("bob@x.test")), None),
        Verdict::Reject(_)
    ));
    // Each stage starts unmarked; the exempt sender is never marked.
    let mut y = mail_ctx("a@friend.test");
    y.greylist = Some("stale".into());
    c.run(Stage::Rcpt, &mut y, Some(&rcpt("carol@x.test")), None);
    assert_eq!(y.greylist, None);
}

#[test]
fn greylist_is_for_the_rcpt_and_data_stages_only() {
    let e = fail("rules:\n  - name: gl\n    stage: mail\n    action: greylist\n");
    assert!(
        e.reason
            .contains("greylist is for the rcpt and data stages"),
        "{e}"
    );
    assert_eq!(e.line, Some(4), "{e}");
    let e = fail(
        "rules:\n  - name: gl\n    stage: rcpt\n    action: greylist\n    reply: { code: 450 }\n",
    );
    assert!(e.reason.contains("a reply is only for"), "{e}");
    set("rules:\n  - { name: gl, stage: data, when: { score: { min: 3 } }, action: greylist }\n");
}

/// A rule file with one rule and the given `tests:` text (each line
/// already indented under `tests:`).
fn with_tests(tests: &str) -> String {
    format!(
        "rules:\n  - {{ name: no-bulk, stage: mail, when: {{ sender: {{ regex: '^bulk@' }} }}, action: reject }}\ntests:\n{tests}"
    )
}

#[test]
fn test_cases_are_read_with_their_lines_and_defaults() {
    let s = set(&with_tests(
        "  - name: bulk is refused\n    from: bulk@example.org\n    to: [b@example.com]\n    client_ip: 192.0.2.1\n    expect: { verdict: reject, code: 550, enhanced: 5.7.1, stage: mail, matched: [no-bulk] }\n\
         \x20 - name: others pass\n    from: ''\n    to: [b@example.com, c@example.com]\n    client_ip: '2001:db8::1'\n    helo: mx.example.org\n    auth_user: alice\n    tls: true\n    message: \"Subject: x\\n\\nhi\\n\"\n    facts: { iprev: fail, dnsbl.zones: 'a, b', rspamd.symbols: [X, Y], rspamd.score: 4.5 }\n    greylist_passed: true\n    declared_size: 1M\n    expect: { verdict: accepted, score: 0, not_matched: [no-bulk] }\n",
    ));
    let t = s.tests();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].name.as_str(), t[0].line),
        ("bulk is refused", Some(4))
    );
    assert_eq!(t[0].helo_name(), "[192.0.2.1]");
    assert_eq!(t[0].message, DEFAULT_MESSAGE.as_bytes());
    assert_eq!(
        t[0].expect.to_string(),
        "reject 550 5.7.1 at mail, matching no-bulk"
    );
    assert_eq!(t[1].line, Some(9));
    assert_eq!(t[1].helo_name(), "mx.example.org");
    assert_eq!(t[1].from, "");
    assert!(t[1].tls && t[1].greylist_passed);
    assert_eq!(t[1].declared_size, Some(1 << 20));
    assert_eq!(t[1].message, b"Subject: x\n\nhi\n");
    assert_eq!(t[1].expect.verdict, ExpectedVerdict::Accept);
    let facts: HashMap<&str, &crate::facts::Value> =
        t[1].facts.iter().map(|(n, v)| (n.as_str(), v)).collect();
    use crate::facts::Value;
    assert_eq!(facts["iprev"], &Value::text("fail"));
    assert_eq!(
        facts["dnsbl.zones"],
        &Value::List(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        facts["rspamd.symbols"],
        &Value::List(vec!["X".into(), "Y".into()])
    );
    assert_eq!(facts["rspamd.score"], &Value::text("4.5"));
}

#[test]
fn a_message_file_is_read_relative_to_the_rule_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("msgs")).unwrap();
    std::fs::write(dir.path().join("msgs/spam.eml"), "Subject: win\n\nx\n").unwrap();
    let text = with_tests(
        "  - { name: f, from: a@b.example, to: [c@d.example], client_ip: 192.0.2.1, message_file: msgs/spam.eml, expect: { verdict: accept } }\n",
    );
    std::fs::write(dir.path().join("r.yaml"), &text).unwrap();
    let s = RuleSet::load_dir(dir.path(), RuleOptions::default()).unwrap();
    assert_eq!(s.tests()[0].message, b"Subject: win\n\nx\n");
    assert_eq!(s.tests()[0].file, dir.path().join("r.yaml"));
    std::fs::remove_file(dir.path().join("msgs/spam.eml")).unwrap();
    let Err(e) = RuleSet::load_dir(dir.path(), RuleOptions::default()) else {
        panic!("loaded without its message file");
    };
    assert_eq!(e.line, Some(4), "{e}");
    assert!(
        e.reason.contains("test \"f\": message_file: cannot read") && e.reason.contains("spam.eml"),
        "{e}"
    );
}

#[test]
fn malformed_test_cases_are_load_errors_with_file_line_and_reason() {
    let case =
        "  - name: a\n    from: a@b.example\n    to: [c@d.example]\n    client_ip: 192.0.2.1\n";
    let cases: Vec<(String, Option<usize>, &str)> = vec![
        (
            format!("{case}    colour: red\n    expect: {{ verdict: accept }}\n"),
            Some(8),
            "unknown field `colour`",
        ),
        (
            "  - name: a\n    from: a@b.example\n    to: [c@d.example]\n    client_ip: 192.0.2.300\n    expect: { verdict: accept }\n".into(),
            Some(7),
            "test \"a\": client_ip: \"192.0.2.300\" is not an IP address",
        ),
        (case.to_string(), Some(4), "missing field `expect`"),
        (
            format!("{case}    expect: {{ verdict: accept }}\n{case}    expect: {{ verdict: reject }}\n"),
            Some(9),
            "test \"a\": the name is already used at line 4",
        ),
        (
            format!("{case}    message: hi\n    message_file: m.eml\n    expect: {{ verdict: accept }}\n"),
            Some(9),
            "test \"a\": give message or message_file, not both",
        ),
        (
            format!("{case}    expect: {{ verdict: maybe }}\n"),
            Some(8),
            "unknown variant `maybe`",
        ),
        (
            format!("{case}    expect: {{ verdict: reject, enhanced: 5.71 }}\n"),
            Some(8),
            "expect.enhanced: \"5.71\" is not an enhanced status code",
        ),
        (
            format!("{case}    expect:\n      verdict: reject\n      matched: [no-bulk, no-bluk]\n"),
            Some(10),
            "test \"a\": expect.matched: no enabled rule is named \"no-bluk\"",
        ),
        (
            "  - name: a\n    from: not an address\n    to: [c@d.example]\n    client_ip: 192.0.2.1\n    expect: { verdict: accept }\n".into(),
            Some(5),
            "test \"a\": from: \"not an address\" is not an address",
        ),
        (
            "  - name: a\n    from: a@b.example\n    to: []\n    client_ip: 192.0.2.1\n    expect: { verdict: accept }\n".into(),
            Some(6),
            "to: give at least one recipient",
        ),
        (
            format!("{case}    facts: {{ iprev: {{ a: 1 }} }}\n    expect: {{ verdict: accept }}\n"),
            Some(8),
            "test \"a\": facts: iprev: give a word, a number or a list",
        ),
    ];
    for (tests, line, reason) in cases {
        let e = fail(&with_tests(&tests));
        assert_eq!(e.file, "test.yaml");
        assert!(e.reason.contains(reason), "{reason:?} not in {e}\n{tests}");
        assert_eq!(e.line, line, "{e}\n{tests}");
    }
}

#[test]
fn a_case_is_judged_on_every_part_it_expects() {
    let s = set(&with_tests(
        "  - { name: t, from: a@b.example, to: [c@d.example], client_ip: 192.0.2.1, expect: { verdict: reject, code: 550, enhanced: 5.7.1, score: 2, stage: mail, matched: [no-bulk], not_matched: ['scoring:reject_at'] } }\n",
    ));
    let t = &s.tests()[0];
    let good = Actual {
        verdict: "rejected".into(),
        greylisted: false,
        reply: Some((550, Some(EnhancedCode::new(5, 7, 1)))),
        score: 2.001,
        stage: Stage::Mail,
        matched: vec!["no-bulk".into()],
    };
    assert!(t.judge(&good));
    let bad: Vec<Actual> = vec![
        Actual {
            verdict: "tempfailed".into(),
            ..good.clone()
        },
        Actual {
            reply: Some((554, Some(EnhancedCode::new(5, 7, 1)))),
            ..good.clone()
        },
        Actual {
            reply: Some((550, Some(EnhancedCode::new(5, 1, 1)))),
            ..good.clone()
        },
        Actual {
            reply: None,
            ..good.clone()
        },
        Actual {
            score: 3.0,
            ..good.clone()
        },
        Actual {
            stage: Stage::Rcpt,
            ..good.clone()
        },
        Actual {
            matched: vec![],
            ..good.clone()
        },
        Actual {
            matched: vec!["no-bulk".into(), SCORING_REJECT.into()],
            ..good.clone()
        },
    ];
    for a in bad {
        assert!(!t.judge(&a), "{a}");
    }
    assert_eq!(
        good.to_string(),
        "rejected 550 5.7.1 score 2 at mail, matched no-bulk"
    );
    // accept is relayed or delivered; greylist is a greylisted tempfail.
    for (want, actual, greylisted, ok) in [
        (ExpectedVerdict::Accept, "relayed", false, true),
        (ExpectedVerdict::Accept, "delivered", false, true),
        (ExpectedVerdict::Accept, "quarantined", false, false),
        (ExpectedVerdict::Tempfail, "tempfailed", true, true),
        (ExpectedVerdict::Greylist, "tempfailed", true, true),
        (ExpectedVerdict::Greylist, "tempfailed", false, false),
        (ExpectedVerdict::Discard, "discarded", false, true),
        (ExpectedVerdict::Disconnect, "disconnected", false, true),
    ] {
        assert_eq!(want.matches(actual, greylisted), ok, "{want:?} {actual}");
    }
}
