//! `peerchat-client`: parse flags, set up logging, and hand over to
//! `peerchat::client::run`. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use peerchat::client::{self, ClientConfig, web::GuiConfig};

/// The peerchat terminal client: log in, see who is online, talk to peers directly.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ClientConfig,
    #[command(flatten)]
    gui: GuiConfig,
}

fn main() -> ExitCode {
    // Warnings only by default: the terminal belongs to the conversation.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(why) = check_folders(&cli.config) {
        eprintln!("peerchat-client: {why}");
        return ExitCode::from(2);
    }
    ExitCode::from(client::run(cli.config, cli.gui))
}

/// Folder flags that cannot work are refused before the server is asked anything: a
/// `--share` that is not a folder (it used to log in and share nothing), a `--data-dir`
/// that cannot be made (it used to register the account, then fail on the key file).
fn check_folders(config: &ClientConfig) -> Result<(), String> {
    if let Some(share) = &config.share
        && !share.is_dir()
    {
        return Err(format!("--share {}: not a folder", share.display()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))
}
