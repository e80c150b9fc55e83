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
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::embedded()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        server.run().await;
        ExitCode::SUCCESS
    })
}
