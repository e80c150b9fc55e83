//! Replays the fuzz seeds and every input a fuzzer ever crashed on
//! (`fuzz/seeds/<target>/`) through the same invariant checks the fuzz
//! targets run, so a fixed crash can never come back unnoticed.

use smtpgate::proto::selfcheck::{
    check_bdat, check_commands, check_data, check_proxy, check_reply,
};
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "invariant broken by {}", path.display());
        count += 1;
    }
    count
}

#[test]
fn command_seeds_hold() {
    assert!(replay("command", check_commands) >= 2);
}

#[test]
fn data_seeds_hold() {
    assert!(replay("data", check_data) >= 9);
}

#[test]
fn reply_seeds_hold() {
    assert!(replay("reply", check_reply) >= 4);
}

#[test]
fn proxy_seeds_hold() {
    assert!(replay("proxy", check_proxy) >= 11);
}

#[test]
fn triplet_seeds_hold() {
    assert!(replay("triplet", smtpgate::protection::check_triplet) >= 7);
}

#[test]
fn dkim_sign_seeds_hold() {
    assert!(replay("dkim_sign", smtpgate::dkim::selfcheck::check_signing) >= 6);
}

#[test]
fn dnslist_returns_seeds_hold() {
    assert!(replay("dnslist_returns", smtpgate::config::returns::selfcheck) >= 5);
}

#[test]
fn uribl_domains_seeds_hold() {
    assert!(replay("uribl_domains", smtpgate::checks::urls::selfcheck) >= 4);
}

#[test]
fn authres_seeds_hold() {
    assert!(replay("authres", smtpgate::authres::selfcheck) >= 8);
}

#[test]
fn bdat_seeds_hold() {
    assert!(replay("bdat", check_bdat) >= 6);
}

#[test]
fn dsn_seeds_hold() {
    assert!(replay("dsn", smtpgate::proto::dsn::selfcheck) >= 5);
}

#[test]
fn scanner_answers_seeds_hold() {
    assert!(replay("scanner_answers", smtpgate::checks::scanners::selfcheck) >= 11);
}

#[test]
fn milter_reply_seeds_hold() {
    assert!(replay("milter_reply", smtpgate::milter::selfcheck::check) >= 9);
}

#[test]
fn dovecot_auth_seeds_hold() {
    assert!(replay("dovecot_auth", smtpgate::auth::dovecot::codec::selfcheck) >= 6);
}

#[test]
fn dmarc_pct_seeds_hold() {
    assert!(replay("dmarc_pct", smtpgate::checks::dmarc_pct::selfcheck) >= 5);
}

#[test]
fn exposition_seeds_hold() {
    assert!(replay("exposition", smtpgate::metrics::exposition::selfcheck) >= 8);
}

#[test]
fn ticket_keys_seeds_hold() {
    assert!(replay("ticket_keys", smtpgate::tls::tickets::selfcheck) >= 8);
}

#[test]
fn rule_file_seeds_hold() {
    assert!(replay("rule_file", smtpgate::rules::selfcheck::check) >= 9);
}

#[test]
fn quarantine_sidecar_seeds_hold() {
    assert!(replay("quarantine_sidecar", smtpgate::quarantine::selfcheck) >= 6);
}
