//! Tests of loading `gateway.yaml`: defaults, a full file, every validation
//! error with its line, unknown keys, wrong types, I/O errors and the
//! shipped example.

use super::*;
use std::net::SocketAddr;

/// Parses `text` as `test.yaml`.
fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, "test.yaml")
}

/// Parses `text`, which must fail; returns the error.
fn fail(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for:\n{text}\ngot {c:?}"),
        Err(e) => e,
    }
}

/// A listener address.
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every key, none at its default.
const FULL: &str = r#"
hostname: mx.example.com
listen:
  - addr: "0.0.0.0:25"
  - { addr: "[::]:587" }
upstream:
  addr: "10.0.0.5:2525"
  helo: gw.example.com
  pipelining: false
spool_dir: /var/spool/smtpgate
limits:
  max_command_line: 1024
  max_text_line: 2000
  max_recipients: 50
  max_message_bytes: 10485760
  max_connections: 200
  max_errors: 5
  spill_threshold_bytes: 65536
  max_mime_scan_bytes: 2097152
timeouts:
  command_s: 301
  data_block_s: 181
  upstream_connect_s: 31
  upstream_greeting_s: 302
  upstream_command_s: 303
  upstream_data_init_s: 121
  upstream_data_block_s: 182
  upstream_data_end_s: 601
message:
  bare_line_endings: normalize
  received_header: false
shutdown_grace_s: 5
log:
  level: "info,smtpgate=debug"
rules_dir: rules
audit: { path: /var/log/smtpgate/audit.jsonl }
"#;

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.hostname, default_hostname());
    assert!(super::validate::is_domain(&c.hostname));
    assert_eq!(c.listen, vec![Listener::at(sa("127.0.0.1:2525"))]);
    assert_eq!(c.upstream, None);
    assert_eq!(c.spool_dir, PathBuf::from("spool"));
    assert_eq!(
        c.limits,
        Limits {
            max_command_line: 512,
            max_text_line: 1000,
            max_recipients: 100,
            max_message_bytes: 26_214_400,
            max_connections: 1000,
            max_errors: 20,
            spill_threshold_bytes: 1_048_576,
            max_mime_scan_bytes: 10_485_760,
        }
    );
    assert_eq!(
        c.timeouts,
        Timeouts {
            command_s: 300,
            data_block_s: 180,
            upstream_connect_s: 10,
            upstream_greeting_s: 300,
            upstream_command_s: 300,
            upstream_data_init_s: 120,
            upstream_data_block_s: 180,
            upstream_data_end_s: 600,
        }
    );
    assert_eq!(c.message.bare_line_endings, BareLineEndings::Reject);
    assert!(c.message.received_header);
    assert_eq!(c.shutdown_grace_s, 30);
    assert_eq!(c.log.level, None);
    assert_eq!(c.log.filter(), "info");
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn bare_line_endings_map_to_the_codec_policy() {
    use crate::proto::BareLineEndings as Codec;
    assert_eq!(Codec::from(BareLineEndings::Reject), Codec::Reject);
    assert_eq!(Codec::from(BareLineEndings::Normalize), Codec::Normalize);
    assert_eq!(Codec::from(BareLineEndings::default()), Codec::default());
}

#[test]
fn embedded_default_listens_on_2525_and_spools() {
    let c = Config::embedded();
    // The only difference: the rules directory, when the working directory has one.
    let rules = Path::new("rules").is_dir().then(|| PathBuf::from("rules"));
    assert_eq!(
        c,
        Config {
            rules_dir: rules,
            ..Config::default()
        }
    );
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].addr, sa("127.0.0.1:2525"));
    assert!(c.upstream.is_none());
}

#[test]
fn empty_documents_are_all_defaults() {
    for text in ["", "\n\n", "# nothing here\n", "---\n", "~\n", "null", "{}"] {
        assert_eq!(parse(text), Ok(Config::default()), "{text:?}");
    }
}

#[test]
fn partial_sections_keep_other_defaults() {
    let c = parse("limits:\n  max_recipients: 7\nupstream: { addr: \"mx:25\" }\n").unwrap();
    assert_eq!(c.limits.max_recipients, 7);
    assert_eq!(c.limits.max_text_line, 1000);
    let up = c.upstream.unwrap();
    assert_eq!(up, Upstream::new("mx:25"));
    assert!(up.pipelining);
    assert_eq!(up.helo_name("gw.example"), "gw.example");
    // An empty section is its defaults; an empty upstream is no upstream.
    let c = parse("limits:\nupstream:\ntimeouts: {}\n").unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn full_config_parses_and_round_trips() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.hostname, "mx.example.com");
    assert_eq!(
        c.listen,
        vec![Listener::at(sa("0.0.0.0:25")), Listener::at(sa("[::]:587"))]
    );
    assert_eq!(
        c.upstream,
        Some(Upstream {
            helo: Some("gw.example.com".into()),
            pipelining: false,
            ..Upstream::new("10.0.0.5:2525")
        })
    );
    assert_eq!(c.spool_dir, PathBuf::from("/var/spool/smtpgate"));
    assert_eq!(
        c.limits,
        Limits {
            max_command_line: 1024,
            max_text_line: 2000,
            max_recipients: 50,
            max_message_bytes: 10_485_760,
            max_connections: 200,
            max_errors: 5,
            spill_threshold_bytes: 65536,
            max_mime_scan_bytes: 2_097_152,
        }
    );
    let t = &c.timeouts;
    assert_eq!(t.command(), Duration::from_secs(301));
    assert_eq!(t.data_block(), Duration::from_secs(181));
    assert_eq!(t.upstream_connect(), Duration::from_secs(31));
    assert_eq!(t.upstream_greeting(), Duration::from_secs(302));
    assert_eq!(t.upstream_command(), Duration::from_secs(303));
    assert_eq!(t.upstream_data_init(), Duration::from_secs(121));
    assert_eq!(t.upstream_data_block(), Duration::from_secs(182));
    assert_eq!(t.upstream_data_end(), Duration::from_secs(601));
    assert_eq!(c.message.bare_line_endings, BareLineEndings::Normalize);
    assert!(!c.message.received_header);
    assert_eq!(c.shutdown_grace_s, 5);
    assert_eq!(c.log.filter(), "info,smtpgate=debug");

    // Nothing was left at its default.
    let d = Config::default();
    assert_ne!(c.limits, d.limits);
    assert_ne!(c.timeouts, d.timeouts);
    assert_ne!(c.message, d.message);

    let yaml = serde_yaml::to_string(&c).unwrap();
    assert_eq!(parse(&yaml), Ok(c), "{yaml}");
    let yaml = serde_yaml::to_string(&d).unwrap();
    assert_eq!(parse(&yaml), Ok(d), "{yaml}");
}

/// Every check of `validate`, with the line it must be reported on.
#[test]
fn validation_errors_name_key_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "hostname: mx_1.example.com\n",
            1,
            "hostname: \"mx_1.example.com\" is not a valid domain name (letters, digits, '-' and '.')",
        ),
        (
            "# comment\nhostname: \"192.0.2.1\"\n",
            2,
            "hostname: \"192.0.2.1\" is an IP address; a domain name is needed",
        ),
        ("hostname: \"\"\n", 1, "hostname: \"\" is not a valid domain name (letters, digits, '-' and '.')"),
        ("hostname: a\nlisten: []\n", 2, "listen: at least one listener is required"),
        (
            "listen:\n  - addr: \"127.0.0.1:25\"\n  - addr: \"127.0.0.1:26\"\n  - addr: \"127.0.0.1:25\"\n",
            4,
            "listen[2].addr: 127.0.0.1:25 is already listed at listen[0]",
        ),
        (
            "listen:\n- { addr: \"[::1]:25\" }\n-\n  addr: \"[::1]:25\"\n",
            4,
            "listen[1].addr: [::1]:25 is already listed at listen[0]",
        ),
        (
            "upstream:\n  helo: gw.example\n  addr: \"10.0.0.5\"\n",
            3,
            "upstream.addr: \"10.0.0.5\" has no port; write host:port, e.g. \"10.0.0.5:25\", \"mail.internal:25\" or \"[::1]:25\"",
        ),
        (
            "upstream: { addr: \"::1:25\" }\n",
            1,
            "upstream.addr: \"::1:25\": an IPv6 address needs brackets, e.g. \"[::1]:25\"",
        ),
        (
            "upstream:\n  addr: \"mx:0\"\n",
            2,
            "upstream.addr: \"0\" is not a valid port (1-65535); write host:port, e.g. \"10.0.0.5:25\", \"mail.internal:25\" or \"[::1]:25\"",
        ),
        (
            "upstream:\n  addr: \"mx:25\"\n  helo: \"bad name\"\n",
            3,
            "upstream.helo: \"bad name\" is not a valid domain name (letters, digits, '-' and '.'), or an address literal like [192.0.2.1]",
        ),
        ("spool_dir: \"\"\n", 1, "spool_dir: must not be empty"),
        (
            "spool_dir: ~/spool\n",
            1,
            "spool_dir: a leading '~' is not expanded; write the full path",
        ),
        (
            "hostname: 2525\n",
            1,
            "hostname: \"2525\" is not a valid domain name (letters, digits, '-' and '.')",
        ),
        (
            "limits:\n  max_command_line: 100\n",
            2,
            "limits.max_command_line: must be at least 512 (RFC 5321 4.5.3.1.4)",
        ),
        (
            "limits:\n  max_text_line: 999\n",
            2,
            "limits.max_text_line: must be at least 1000 (RFC 5321 4.5.3.1.6)",
        ),
        (
            "hostname: mx.example.com\n\nlimits:\n  max_errors: 3\n  # the next one is wrong\n  max_recipients: 0\n",
            6,
            "limits.max_recipients: must be at least 1",
        ),
        (
            "limits: { max_message_bytes: 1023 }\n",
            1,
            "limits.max_message_bytes: must be at least 1024",
        ),
        (
            "limits:\n  max_connections: 0\n",
            2,
            "limits.max_connections: must be at least 1",
        ),
        ("limits:\n  max_errors: 0\n", 2, "limits.max_errors: must be at least 1"),
        ("timeouts:\n  command_s: 0\n", 2, "timeouts.command_s: must be greater than 0"),
        ("timeouts:\n  data_block_s: 0\n", 2, "timeouts.data_block_s: must be greater than 0"),
        (
            "timeouts:\n  upstream_connect_s: 0\n",
            2,
            "timeouts.upstream_connect_s: must be greater than 0",
        ),
        (
            "timeouts:\n  upstream_greeting_s: 0\n",
            2,
            "timeouts.upstream_greeting_s: must be greater than 0",
        ),
        (
            "timeouts:\n  upstream_command_s: 0\n",
            2,
            "timeouts.upstream_command_s: must be greater than 0",
        ),
        (
            "timeouts:\n  upstream_data_init_s: 0\n",
            2,
            "timeouts.upstream_data_init_s: must be greater than 0",
        ),
        (
            "timeouts:\n  upstream_data_block_s: 0\n",
            2,
            "timeouts.upstream_data_block_s: must be greater than 0",
        ),
        (
            "timeouts:\n  command_s: 5\n  upstream_data_end_s: 86401\n",
            3,
            "timeouts.upstream_data_end_s: must be at most 86400 (one day)",
        ),
        (
            "shutdown_grace_s: 100000\n",
            1,
            "shutdown_grace_s: must be at most 86400 (one day)",
        ),
        (
            "log:\n  level: verbose\n",
            2,
            "log.level: \"verbose\" is not a log level (one of off, error, warn, info, debug, trace); for a module write e.g. \"smtpgate=debug\"",
        ),
        (
            "log: { level: \"smtpgate=loud\" }\n",
            1,
            "log.level: \"loud\" in \"smtpgate=loud\" is not a log level (one of off, error, warn, info, debug, trace)",
        ),
    ];
    for (text, line, reason) in cases {
        let e = fail(text);
        assert_eq!(e.file, "test.yaml", "{text}");
        assert_eq!(e.reason, *reason, "{text}");
        assert_eq!(e.line, Some(*line), "{text}\n{e}");
        assert_eq!(e.to_string(), format!("test.yaml:{line}: {reason}"));
    }
}

#[test]
fn values_at_the_minimum_are_accepted() {
    let c = parse(
        "limits: { max_command_line: 512, max_text_line: 1000, max_recipients: 1, \
         max_message_bytes: 1024, max_connections: 1, max_errors: 1, spill_threshold_bytes: 0 }\n\
         timeouts: { command_s: 1, upstream_data_end_s: 86400 }\nshutdown_grace_s: 0\n\
         listen: [ { addr: \"127.0.0.1:0\" }, { addr: \"127.0.0.1:0\" } ]\n\
         upstream: { addr: \"[::1]:25\", helo: \"[IPv6:::1]\" }\n",
    );
    assert!(c.is_ok(), "{c:?}");
}

/// Unknown keys, wrong types, bad values and YAML syntax errors: the line
/// and a fragment of the reason.
#[test]
fn parse_errors_name_key_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        // Unknown keys, top level and nested (including inside Option<Upstream>).
        ("hostname: a\nlisten_on: x\n", 2, "unknown field `listen_on`"),
        ("limits:\n  max_recipients: 5\n  max_rcpt: 5\n", 3, "limits: unknown field `max_rcpt`"),
        ("upstream:\n  addr: \"mx:25\"\n  ssl: required\n", 3, "upstream: unknown field `ssl`"),
        ("upstream: { addr: \"mx:25\", port: 25 }\n", 1, "upstream: unknown field `port`"),
        ("listen:\n  - addr: \"0.0.0.0:25\"\n  - addr: \"0.0.0.0:26\"\n    ssl: implicit\n", 4, "listen[1]: unknown field `ssl`"),
        ("timeouts:\n  idle_s: 3\n", 2, "timeouts: unknown field `idle_s`"),
        ("message:\n  dkim: true\n", 2, "message: unknown field `dkim`"),
        ("log:\n  file: x.log\n", 2, "log: unknown field `file`"),
        // Wrong types.
        ("limits:\n  max_recipients: many\n", 2, "limits.max_recipients: invalid type: string \"many\""),
        ("limits:\n  max_recipients: -1\n", 2, "limits.max_recipients: invalid type: integer `-1`, expected usize"),
        ("\n\nshutdown_grace_s: 1.5\n", 3, "shutdown_grace_s: invalid type: floating point"),
        ("listen: \"0.0.0.0:25\"\n", 1, "listen: invalid type: string \"0.0.0.0:25\", expected a sequence"),
        ("listen:\n  - \"0.0.0.0:25\"\n", 2, "listen[0]: invalid type: string \"0.0.0.0:25\""),
        ("upstream: \"mx:25\"\n", 1, "upstream: invalid type: string \"mx:25\""),
        ("upstream:\n  addr: \"mx:25\"\n  pipelining: sometimes\n", 3, "upstream.pipelining: invalid type: string \"sometimes\", expected a boolean"),
        ("limits: 5\n", 1, "limits: invalid type: integer `5`"),
        ("message:\n  bare_line_endings: Normalize\n", 2, "message.bare_line_endings: unknown variant `Normalize`, expected `reject` or `normalize`"),
        ("- a\n- b\n", 1, "invalid type: sequence, expected struct Config"),
        // Missing required keys.
        ("upstream:\n  helo: gw.example\n", 2, "upstream: missing field `addr`"),
        ("listen:\n  - {}\n", 2, "listen[0]: missing field `addr`"),
        // Bad values.
        ("listen:\n  - addr: \"localhost:25\"\n", 2, "listen[0].addr: invalid socket address syntax: \"localhost:25\" (want IP:port"),
        ("listen:\n  - addr: \"127.0.0.1\"\n", 2, "listen[0].addr: invalid socket address syntax: \"127.0.0.1\""),
        ("listen:\n  - addr: \"127.0.0.1:70000\"\n", 2, "listen[0].addr: invalid socket address syntax: \"127.0.0.1:70000\""),
        ("metrics:\n  addr: \"9025\"\n", 2, "metrics.addr: invalid socket address syntax: \"9025\""),
        // Duplicate keys and YAML syntax.
        ("hostname: a\nlimits: {}\nhostname: b\n", 3, "duplicate field `hostname`"),
        ("limits:\n  max_errors: 3\n  max_recipients: 4\n  max_errors: 5\n", 4, "limits: duplicate field `max_errors`"),
        ("listen:\n  - { addr: \"[::1]:25\",\n      addr: \"[::1]:26\" }\n", 3, "listen[0]: duplicate field `addr`"),
        ("hostname: a\nlimits:\n  max_errors: 3\n max_recipients: 4\n", 4, "did not find expected key"),
        ("hostname: \"unterminated\nlimits: {}\n", 3, "while scanning a quoted scalar at line 1"),
    ];
    for (text, line, reason) in cases {
        let e = fail(text);
        assert_eq!(e.file, "test.yaml", "{text}");
        assert!(
            e.reason.contains(reason),
            "{text}\nwant {reason:?}\ngot  {e}"
        );
        assert_eq!(e.line, Some(*line), "{text}\n{e}");
        assert!(
            !e.reason.ends_with(&format!("at line {line} column 1")),
            "location left in reason: {e}"
        );
    }
}

#[test]
fn serde_reason_loses_only_the_location_suffix() {
    let e = fail("limits:\n  max_rcpt: 5\n");
    assert!(
        e.reason
            .starts_with("limits: unknown field `max_rcpt`, expected one of"),
        "{e}"
    );
    assert!(!e.reason.contains(" at line "), "{e}");
    assert!(e
        .to_string()
        .starts_with("test.yaml:2: limits: unknown field `max_rcpt`"));
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "hostname: mx.example.com\nlimits:\n  max_recipients: 0\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    let name = path.display().to_string();
    assert_eq!(e.file, name);
    assert_eq!(e.line, Some(3));
    assert_eq!(
        e.to_string(),
        format!("{name}:3: limits.max_recipients: must be at least 1")
    );

    std::fs::write(&path, "").unwrap();
    assert_eq!(Config::load(&path), Ok(Config::default()));
    std::fs::write(&path, FULL).unwrap();
    assert_eq!(Config::load(&path), parse(FULL));
}

#[test]
fn missing_file_has_no_line_and_the_os_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let e = Config::load(&path).unwrap_err();
    let os = std::fs::read_to_string(&path).unwrap_err().to_string();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, None);
    assert_eq!(e.reason, format!("cannot read: {os}"));
    assert_eq!(
        e.to_string(),
        format!("{}: cannot read: {os}", path.display())
    );
    // A directory is not a file either.
    let e = Config::load(dir.path()).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.reason.starts_with("cannot read: "), "{e}");
}

#[test]
fn missing_rules_dir_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let rules = dir.path().join("no-such-rules");
    std::fs::write(
        &path,
        format!("hostname: mx.example.com\nrules_dir: {}\n", rules.display()),
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.reason.starts_with(&format!(
            "rules_dir: cannot read the rules directory {}: ",
            rules.display()
        )),
        "{e}"
    );
    std::fs::create_dir(&rules).unwrap();
    assert!(Config::load(&path).is_ok());
}

#[test]
fn summary_mentions_everything() {
    let c = parse(FULL).unwrap();
    let s = c.summary();
    for want in [
        "hostname:  mx.example.com",
        "listen:    0.0.0.0:25, [::]:587",
        "upstream:  10.0.0.5:2525 (EHLO as gw.example.com, pipelining off)",
        "message 10485760 B (10 MiB), 50 recipients, command line 1024 B, text line 2000 B, \
         200 connections, 5 errors, spill to disk above 65536 B (64 KiB)",
        "client command 301s, data block 181s; upstream connect 31s, greeting 302s, \
         command 303s, data init 121s, data block 182s, data end 601s",
        "bare CR/LF normalize, Received header off",
        "shutdown:  5s grace",
        "log:       info,smtpgate=debug",
        "rules:     from rules; MIME scanned up to 2097152 B (2 MiB)",
        "audit:     /var/log/smtpgate/audit.jsonl",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    let s = Config::embedded().summary();
    assert!(s.contains("listen:    127.0.0.1:2525\n"), "{s}");
    assert!(
        s.contains("upstream:  none; accepted mail is stored in spool\n"),
        "{s}"
    );
    assert!(s.contains("message 26214400 B (25 MiB)"), "{s}");
    assert!(s.contains("log:       info "), "{s}");
    assert_eq!(bytes(1536), "1536 B (1.5 KiB)");
    assert_eq!(bytes(1023), "1023 B");
}

#[test]
fn example_file_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gateway.yaml"
    ));
    let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    // The example documents the defaults, with upstream commented out.
    let want = Config {
        hostname: c.hostname.clone(),
        log: LogOptions {
            level: Some("info".to_string()),
        },
        rules_dir: Some(PathBuf::from("rules")),
        ..Config::default()
    };
    assert_eq!(c, want);
    assert_eq!(c.log.filter(), Config::default().log.filter());

    // Uncommenting the upstream example gives a working upstream.
    let text = std::fs::read_to_string(path).unwrap();
    let uncommented = text
        .lines()
        .map(|l| match l.strip_prefix("#upstream:") {
            Some(rest) => format!("upstream:{rest}"),
            None => match l.strip_prefix("#  ") {
                Some(rest) if !rest.starts_with(' ') && !rest.starts_with('#') => {
                    format!("  {rest}")
                }
                _ => l.to_string(),
            },
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(c.upstream.map(|u| u.addr), Some("127.0.0.1:25".to_string()));
}

#[test]
fn dns_defaults_use_the_system_servers() {
    let c = parse("").unwrap();
    assert_eq!(c.dns, DnsOptions::default());
    assert!(c.dns.servers.is_empty());
    assert_eq!(
        (c.dns.timeout_ms, c.dns.attempts, c.dns.cache_size),
        (2000, 2, 10_000)
    );
    assert_eq!(c.dns.timeout(), Duration::from_millis(2000));
    assert_eq!(c.dns.server_addrs(), Ok(vec![]));
}

#[test]
fn dns_keys_are_read() {
    let c = parse(
        "dns:\n  servers: [\"127.0.0.1:5353\", \"[::1]:53\"]\n  timeout_ms: 500\n  \
         attempts: 3\n  cache_size: 0\n",
    )
    .unwrap();
    assert_eq!(
        c.dns.server_addrs().unwrap(),
        vec![sa("127.0.0.1:5353"), sa("[::1]:53")]
    );
    assert_eq!(
        (c.dns.timeout_ms, c.dns.attempts, c.dns.cache_size),
        (500, 3, 0)
    );
}

#[test]
fn dns_bad_server_names_file_line_and_value() {
    let e = fail("hostname: gw.test\ndns:\n  servers:\n    - \"x\"\n");
    assert_eq!(
        e.to_string(),
        "test.yaml:4: dns.servers[0]: \"x\" is not an ip:port address \
         (e.g. \"127.0.0.1:53\" or \"[::1]:53\")"
    );
    for bad in [
        "127.0.0.1",
        "::1:53",
        "dns.example:53",
        "127.0.0.1:0",
        "1.2.3.4:99999",
    ] {
        let e = fail(&format!(
            "dns: {{ servers: [\"127.0.0.1:53\", \"{bad}\"] }}\n"
        ));
        assert_eq!(e.line, Some(1), "{bad}");
        assert!(
            e.reason.starts_with(&format!(
                "dns.servers[1]: {bad:?} is not an ip:port address"
            )),
            "{bad}: {e}"
        );
    }
    let e = fail("dns:\n  servers:\n    - \"127.0.0.1:53\"\n    - \"127.0.0.1:53\"\n");
    assert_eq!(
        e.to_string(),
        "test.yaml:4: dns.servers[1]: \"127.0.0.1:53\" is already listed at dns.servers[0]"
    );
}

#[test]
fn dns_numbers_out_of_range_are_refused() {
    let cases = [
        (
            "dns:\n  timeout_ms: 0\n",
            "test.yaml:2: dns.timeout_ms: must be between 1 and 60000",
        ),
        (
            "dns:\n  timeout_ms: 60001\n",
            "test.yaml:2: dns.timeout_ms: must be between 1 and 60000",
        ),
        (
            "dns:\n  attempts: 0\n",
            "test.yaml:2: dns.attempts: must be between 1 and 10",
        ),
        (
            "dns:\n\n  attempts: 11\n",
            "test.yaml:3: dns.attempts: must be between 1 and 10",
        ),
        (
            "dns: { cache_size: 10000001 }\n",
            "test.yaml:1: dns.cache_size: must be at most 10000000",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(fail(yaml).to_string(), want, "{yaml}");
    }
    let e = fail("dns:\n  server: [\"127.0.0.1:53\"]\n");
    assert!(
        e.to_string().starts_with("test.yaml:2: ") && e.reason.contains("unknown field `server`"),
        "{e}"
    );
    let e = fail("dns:\n  attempts: two\n");
    assert_eq!(e.line, Some(2), "{e}");
}
