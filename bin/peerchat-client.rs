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
    ExitCode::from(client::run(cli.config, cli.gui))
}
