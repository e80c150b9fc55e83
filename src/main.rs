//! The `smtpgate` command: run the gateway, or check a configuration.

use clap::{Parser, Subcommand};
use smtpgate::config::Config;
use smtpgate::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

/// SMTP proxy and filtering gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (gateway.yaml). Without it, the embedded default:
    /// listen on 127.0.0.1:2525 and store mail under ./spool/.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and print a summary.
    Check,
    /// Read a password from stdin (without echo on a terminal) and print
    /// its argon2id hash, for `password_hash` in the users file.
    HashPassword,
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
    let config = match load(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpgate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Check => {
            print!("{}", config.summary());
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Cmd::Run => run(config),
        Cmd::HashPassword => hash_password(),
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

fn run(config: Config) -> ExitCode {
    let level = config
        .log
        .level
        .clone()
        .unwrap_or_else(|| "info".to_string());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    async_std::task::block_on(async {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("{e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = smtpgate::signals::install(server.shutdown_trigger()) {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
        if let Err(e) = smtpgate::reload::install_sighup(server.shared()) {
            log::error!("cannot install the SIGHUP handler: {e}");
            return ExitCode::from(1);
        }
        server.run().await;
        ExitCode::SUCCESS
    })
}
