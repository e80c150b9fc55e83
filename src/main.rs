//! The `smtpgate` command: run the gateway, check a configuration and its
//! rules, or simulate a transaction through the rules.

use clap::{Args, Parser, Subcommand};
use smtpgate::checks::Fixtures;
use smtpgate::config::Config;
use smtpgate::facts::Value;
use smtpgate::filter::FilterChain;
use smtpgate::gateway::Gateway;
use smtpgate::rule_tests;
use smtpgate::rules;
use smtpgate::server::Server;
use smtpgate::shutdown;
use smtpgate::simulate::{simulate, Simulation};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// SMTP proxy and filtering gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (gateway.yaml). Without it, the embedded default:
    /// listen on 127.0.0.1:2525, store mail under ./spool/, and use the
    /// rules in ./rules/ when that directory exists.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and the rules, print them, and run the
    /// rule files' tests (exit 1 when one fails).
    Check,
    /// Read a password from stdin (without echo on a terminal) and print
    /// its argon2id hash, for `password_hash` in the users file.
    HashPassword,
    /// Run one transaction through the rules offline and print, stage by
    /// stage, what matched and what the client would be told. Exit status:
    /// 0 accepted, 1 rejected or tempfailed, 2 error.
    TestRules(TestRules),
    /// Make a DKIM key pair: writes DOMAIN.SELECTOR.pem (the private key,
    /// mode 0600) and DOMAIN.SELECTOR.txt, and prints the DNS TXT record
    /// to publish.
    DkimKeygen(DkimKeygen),
    /// Look at the rules of a running gateway.
    Rules {
        #[command(subcommand)]
        command: RulesCmd,
    },
    /// Manage the TLS session-ticket keys instances share
    /// (tls.session_tickets.key_file).
    TicketKeys {
        #[command(subcommand)]
        command: TicketKeysCmd,
    },
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
    /// Look at and act on the quarantined messages: list, show, release
    /// (send on without the rules), delete, purge.
    Quarantine {
        #[command(subcommand)]
        command: smtpgate::quarantine_cli::QuarantineCmd,
    },
}

/// `smtpgate ticket-keys ...`.
#[derive(Subcommand)]
enum TicketKeysCmd {
    /// Put a new random key first in the key file (made when missing,
    /// mode 0600) and keep the newest --keep keys. Run it from a timer
    /// at least once per ticket lifetime; running gateways take the new
    /// key within 10 seconds.
    Rotate(RotateArgs),
}

/// Arguments of `smtpgate ticket-keys rotate`.
#[derive(Args)]
struct RotateArgs {
    /// The key file; default: the configuration's
    /// tls.session_tickets.key_file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// How many keys to keep: the new one seals tickets, the older ones
    /// still open the tickets they sealed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    keep: u8,
}

/// `smtpgate generate ...`: what scripts/build-deb.sh packages.
#[derive(Subcommand)]
enum Generate {
    /// smtpgate.1 and one page per subcommand (smtpgate-check.1, ...).
    Man {
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// The completion script for SHELL (smtpgate.bash, _smtpgate,
    /// smtpgate.fish, ...).
    Completions {
        shell: clap_complete::Shell,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `smtpgate rules ...`.
#[derive(Subcommand)]
enum RulesCmd {
    /// Which rules fire: per loaded rule, evaluations, hits and the age of
    /// the last hit, read from the running gateway's /metrics.
    Stats(RuleStatsArgs),
}

/// Arguments of `smtpgate rules stats`.
#[derive(Args)]
struct RuleStatsArgs {
    /// The metrics endpoint (http://HOST:PORT[/metrics]); default: the
    /// configuration's metrics listener.
    #[arg(long, value_name = "URL")]
    metrics: Option<String>,
    /// Only the rules that never hit (since they were loaded, or within
    /// --since).
    #[arg(long)]
    never: bool,
    /// With --never: the rules with no hit in this long (e.g. 7d, 12h),
    /// rather than since they were loaded.
    #[arg(long, value_name = "AGE", requires = "never", value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `smtpgate dkim-keygen`.
#[derive(Args)]
struct DkimKeygen {
    /// The signing domain (d=).
    #[arg(long)]
    domain: String,
    /// The selector (s=): the record goes at SELECTOR._domainkey.DOMAIN.
    #[arg(long)]
    selector: String,
    /// rsa (2048 bits, rsa-sha256) or ed25519 (ed25519-sha256).
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: KeygenAlgorithm,
    /// Directory to write the files to.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Key types `dkim-keygen` makes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum KeygenAlgorithm {
    Rsa,
    Ed25519,
}

/// Arguments of `smtpgate test-rules`.
#[derive(Args)]
struct TestRules {
    /// Run the `tests:` of the rule files instead of one transaction:
    /// every case, a line per failure, and the count. Exit status: 0 all
    /// passed, 1 some failed, 2 error.
    #[arg(long, conflicts_with_all = ["from", "to", "client_ip", "helo", "auth_user", "tls", "facts", "greylist_passed", "message"])]
    run_tests: bool,
    /// Envelope sender (empty for the null sender <>).
    #[arg(
        long,
        allow_hyphen_values = true,
        required_unless_present = "run_tests"
    )]
    from: Option<String>,
    /// Envelope recipient; repeat for several.
    #[arg(long, required_unless_present = "run_tests")]
    to: Vec<String>,
    /// The client's IP address.
    #[arg(long, required_unless_present = "run_tests")]
    client_ip: Option<IpAddr>,
    /// The HELO/EHLO name (default: the client IP as an address literal).
    #[arg(long)]
    helo: Option<String>,
    /// Simulate a client authenticated as this user.
    #[arg(long)]
    auth_user: Option<String>,
    /// Simulate a session under TLS.
    #[arg(long)]
    tls: bool,
    /// A fact a check would look up, given instead (NAME=VALUE, e.g.
    /// iprev=fail; a comma makes a list); repeat for several. A check
    /// whose facts are given is not run, so rules that read facts can be
    /// tried offline.
    #[arg(long = "fact", value_name = "NAME=VALUE")]
    facts: Vec<String>,
    /// When a greylist rule matches, take the greylisting store to know
    /// the triplet as passed (the mail goes on); without it, a first
    /// attempt (greylisted). The store itself is not asked.
    #[arg(long)]
    greylist_passed: bool,
    /// The message (an .eml file; "-" reads standard input).
    #[arg(required_unless_present = "run_tests")]
    message: Option<PathBuf>,
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::embedded()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Cmd::HashPassword)) {
        return hash_password();
    }
    if let Some(Cmd::DkimKeygen(args)) = &cli.command {
        return dkim_keygen(args);
    }
    if let Some(Cmd::Generate { what }) = &cli.command {
        return generate(what);
    }
    let config = match load(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Check => check(&config),
        Cmd::Run => run(config),
        Cmd::TestRules(args) => test_rules(&config, args),
        Cmd::HashPassword => hash_password(),
        Cmd::DkimKeygen(args) => dkim_keygen(&args),
        Cmd::Generate { what } => generate(&what),
        Cmd::Rules {
            command: RulesCmd::Stats(args),
        } => rule_stats(&config, &args),
        Cmd::TicketKeys {
            command: TicketKeysCmd::Rotate(args),
        } => rotate_ticket_keys(&config, &args),
        Cmd::Quarantine { command } => smtpgate::quarantine_cli::run(&config, command),
    }
}

/// `smtpgate ticket-keys rotate`: exit 0 with the file's keys listed, 2
/// when the file cannot be read or written.
fn rotate_ticket_keys(config: &Config, args: &RotateArgs) -> ExitCode {
    use smtpgate::tls::tickets;
    let configured = config
        .tls
        .as_ref()
        .and_then(|t| t.session_tickets.as_ref())
        .map(|t| t.key_file.clone());
    let Some(path) = args.file.clone().or(configured) else {
        eprintln!("smtpgate: no --file and no tls.session_tickets.key_file in the configuration");
        return ExitCode::from(2);
    };
    match tickets::rotate(&path, usize::from(args.keep)) {
        Ok(keys) => {
            println!(
                "{}: {} key(s); new tickets are sealed with the first",
                path.display(),
                keys.len()
            );
            for k in keys {
                println!("  {k:?}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `smtpgate generate`: writes the files, prints their directory.
fn generate(what: &Generate) -> ExitCode {
    use clap::CommandFactory;
    let out = match what {
        Generate::Man { out } | Generate::Completions { out, .. } => out,
    };
    let written = std::fs::create_dir_all(out).and_then(|()| match what {
        Generate::Man { .. } => clap_mangen::generate_to(Cli::command(), out),
        Generate::Completions { shell, .. } => {
            clap_complete::generate_to(*shell, &mut Cli::command(), "smtpgate", out).map(|_| ())
        }
    });
    match written {
        Ok(()) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpgate: cannot write to {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}

/// `smtpgate rules stats`: exit 0 with the table (or JSON), 2 when the
/// counters cannot be read.
fn rule_stats(config: &Config, args: &RuleStatsArgs) -> ExitCode {
    use smtpgate::rule_stats;
    let stats = rule_stats::target(config, args.metrics.as_deref())
        .and_then(|(authority, path)| rule_stats::fetch(&authority, &path));
    let mut stats = match stats {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if args.never {
        let since = args.since.map(|age| now - age.as_secs() as i64);
        stats = rule_stats::not_hit_since(stats, since);
    }
    if args.json {
        print!("{}", rule_stats::json(&stats, now));
    } else {
        print!("{}", rule_stats::table(&stats, now));
    }
    ExitCode::SUCCESS
}

/// `smtpgate check`: builds the gateway exactly as `run` does (rules, TLS,
/// users, upstream settings), then prints the configuration summary and
/// the rules per stage.
fn check(config: &Config) -> ExitCode {
    let set = match rules::load_for(config) {
        Ok(set) => set.map(std::sync::Arc::new),
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    let mut chain = FilterChain::new();
    if let Some(set) = &set {
        chain.push(set.clone());
    }
    let Some((gateway, _trigger)) = offline_gateway(config, chain) else {
        return ExitCode::from(2);
    };
    print!("{}", config.summary());
    match set {
        Some(set) => print!("{}", set.summary()),
        None => println!("rules:     none (no rules_dir)"),
    }
    let results = rule_tests::run(&gateway, &gateway.filters());
    print_failures(&results);
    println!("tests:     {}", results.summary());
    if !results.ok() {
        eprintln!("smtpgate: {}", results.summary());
        return ExitCode::from(1);
    }
    println!("configuration OK");
    ExitCode::SUCCESS
}

/// `smtpgate test-rules --run-tests`: every case of the rule files, on
/// the gateway `run` would build.
fn run_rule_tests(config: &Config, chain: FilterChain) -> ExitCode {
    let Some((gateway, _trigger)) = offline_gateway(config, chain) else {
        return ExitCode::from(2);
    };
    match rules::rules_dir(config) {
        Some(dir) => println!("rules from {}", dir.display()),
        None => println!("no rules (no rules_dir)"),
    }
    let results = rule_tests::run(&gateway, &gateway.filters());
    print_failures(&results);
    println!("{}", results.summary());
    if results.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The gateway `run` would build from `config` with `chain`, without its
/// listeners and audit file, with the trigger of its shutdown (dropping it
/// shuts the gateway down, so keep it while the gateway is used); `None`
/// (the reason printed) when it cannot be built.
fn offline_gateway(
    config: &Config,
    chain: FilterChain,
) -> Option<(std::sync::Arc<Gateway>, shutdown::ShutdownTrigger)> {
    let (trigger, signal) = shutdown::channel();
    Gateway::build(config.clone(), chain, signal, None)
        .map(|g| (g, trigger))
        .map_err(|e| eprintln!("smtpgate: {e}"))
        .ok()
}

/// One `FAILED file:line: ...` line per failed rule-file case.
fn print_failures(results: &rule_tests::Results) {
    for failure in &results.failures {
        println!("FAILED {failure}");
    }
}

/// `smtpgate test-rules`.
fn test_rules(config: &Config, args: TestRules) -> ExitCode {
    let chain = match rules::chain_for(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    if args.run_tests {
        return run_rule_tests(config, chain);
    }
    // Present unless --run-tests, which clap makes sure of.
    let (Some(path), Some(from), Some(client_ip)) = (args.message, args.from, args.client_ip)
    else {
        eprintln!("smtpgate: give --from, --to, --client-ip and a message, or --run-tests");
        return ExitCode::from(2);
    };
    let read = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(&path)
    };
    let message = match read {
        Ok(m) => m,
        Err(e) => {
            eprintln!("smtpgate: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let helo = args.helo.unwrap_or_else(|| match client_ip {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    });
    let sim = Simulation {
        client_ip,
        helo,
        auth_user: args.auth_user,
        tls: args.tls,
        from,
        to: args.to,
        message,
        greylist_passed: args.greylist_passed,
        declared_size: None,
    };
    match rules::rules_dir(config) {
        Some(dir) => println!("rules from {}", dir.display()),
        None => println!("no rules (no rules_dir)"),
    }
    let mut fixtures = Vec::new();
    for f in &args.facts {
        let Some((name, value)) = f.split_once('=').filter(|(n, _)| !n.trim().is_empty()) else {
            eprintln!("smtpgate: --fact {f:?}: give NAME=VALUE, e.g. iprev=fail");
            return ExitCode::from(2);
        };
        let value = if value.contains(',') {
            Value::List(value.split(',').map(|v| v.trim().to_string()).collect())
        } else {
            Value::text(value.trim())
        };
        fixtures.push((name.trim().to_string(), value));
    }
    let (_trigger, signal) = shutdown::channel();
    let gateway = match Gateway::build(config.clone(), chain, signal, None) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    gateway.set_fixtures(Fixtures(fixtures));
    match simulate(&gateway, &sim) {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("smtpgate: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(config: Config) -> ExitCode {
    let level = config
        .log
        .level
        .clone()
        .unwrap_or_else(|| "info".to_string());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let chain = match rules::chain_for(&config) {
        Ok(c) => c,
        Err(e) => {
            // Once, on stderr, as `check` says it (not also as a log line).
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    raise_open_file_limit(&config);
    async_std::task::block_on(async {
        let server = match Server::bind_with_filters(config, chain).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("{e}");
                return ExitCode::from(1);
            }
        };
        let for_reload = server.live();
        let for_reopen = server.live();
        let installed = smtpgate::signals::install(
            server.shutdown_trigger(),
            move || {
                let _ = smtpgate::reload::reload_server(&for_reload);
            },
            move || {
                if let Some(audit) = for_reopen.current().audit() {
                    audit.reopen();
                }
            },
        );
        if let Err(e) = installed {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
        server.run().await;
        ExitCode::SUCCESS
    })
}

/// Raises the soft open-file limit to the hard limit: every client
/// connection takes a descriptor, and so may its upstream connection, and
/// the usual soft limit of 1024 would cap the gateway far below
/// `limits.max_connections`.
fn raise_open_file_limit(config: &Config) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            log::info!("open-file limit: {limit}");
            let needed = config.limits.max_connections as u64 * 2 + 64;
            if limit < needed {
                log::warn!(
                    "open-file limit {limit} is below what limits.max_connections {} may need \
                     ({needed}: a client and an upstream connection each); raise it \
                     (LimitNOFILE= in the systemd unit, ulimit -n)",
                    config.limits.max_connections
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// `smtpgate hash-password`: on a terminal, asks twice without echo;
/// otherwise reads the first line of stdin. Prints the hash on stdout.
fn hash_password() -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    use zeroize::Zeroizing;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map(Zeroizing::new);
        let again = rpassword::prompt_password("Again: ").map(Zeroizing::new);
        match (first, again) {
            (Ok(a), Ok(b)) if *a == *b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("smtpgate: the passwords differ");
                return ExitCode::from(1);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("smtpgate: cannot read the password: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        let mut line = Zeroizing::new(String::new());
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("smtpgate: cannot read the password: {e}");
            return ExitCode::from(1);
        }
        let trimmed = line.trim_end_matches(['\r', '\n']).len();
        line.truncate(trimmed);
        line
    };
    if password.is_empty() {
        eprintln!("smtpgate: the password is empty");
        return ExitCode::from(1);
    }
    match smtpgate::auth::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpgate: {e}");
            ExitCode::from(1)
        }
    }
}

/// `smtpgate dkim-keygen`: writes the key pair and prints the record, and
/// the `dkim_signing.keys` entry that uses it.
fn dkim_keygen(args: &DkimKeygen) -> ExitCode {
    use smtpgate::dkim::keygen::{generate, KeyKind};
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    for (what, value) in [("--domain", &domain), ("--selector", &args.selector)] {
        if !smtpgate::config::is_dns_labels(value) {
            eprintln!("smtpgate: {what} {value:?}: letters, digits, hyphens and dots only");
            return ExitCode::from(2);
        }
    }
    let kind = match args.algorithm {
        KeygenAlgorithm::Rsa => KeyKind::Rsa,
        KeygenAlgorithm::Ed25519 => KeyKind::Ed25519,
    };
    let pair = match generate(kind) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(1);
        }
    };
    match pair.write(&args.out, &domain, &args.selector) {
        Ok((key, txt)) => {
            eprintln!(
                "wrote {} (private key) and {}",
                key.display(),
                txt.display()
            );
            eprintln!("publish this record, then add to gateway.yaml:");
            eprintln!(
                "  dkim_signing: {{ keys: [ {{ domain: {domain}, selector: {}, algorithm: {}, key_file: \"{}\" }} ] }}",
                args.selector,
                kind.algorithm(),
                key.display()
            );
            println!("{}", pair.zone_record(&domain, &args.selector));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpgate: {e}");
            ExitCode::from(1)
        }
    }
}
