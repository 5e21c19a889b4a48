//! `peerchat-server`: parse flags, set up logging, open the database, bind, wire Ctrl+C,
//! and hand over to `peerchat::server::run`. Nothing else lives here.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use peerchat::server::store::{DbLocation, Store};
use peerchat::server::{self, ServerConfig};

/// The peerchat server: accounts, presence and the directory of who listens where.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    config: ServerConfig,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Print the log of chat sessions and exit.
    Sessions {
        /// The server's database: a SQLite file or a postgres:// URL.
        #[arg(long, default_value = "data/server.db")]
        db: DbLocation,
        /// How many of the most recent sessions (and transfers) to print (1-1000000).
        #[arg(long, allow_negative_numbers = true, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=peerchat::protocol::limits::MAX_LOG_ROWS))]
        limit: usize,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Sub::Sessions { db, limit }) => print_sessions(&db, limit),
        None => serve(cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr: the log's own line would say the same thing twice.
            match e {
                peerchat::Error::Config(text) => eprintln!("peerchat-server: {text}"),
                e => eprintln!("peerchat-server: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn serve(mut config: ServerConfig) -> peerchat::Result<()> {
    if config.relay.relay_only {
        return relay_only(config);
    }
    // Bind first: a server that cannot listen must not leave a new database (or a new
    // TLS identity) behind.
    let listener = server::bind(config.addr).map_err(|e| {
        peerchat::Error::Config(format!("cannot listen on {}: {}", config.addr, plain(&e)))
    })?;
    // What can be checked without writing is checked before the database is opened (or
    // created): a missing --tls-cert or relay secret must not leave a new one behind
    // either (README: "it says why once and leaves nothing behind").
    let given = match config.tls_cert {
        Some(_) => Some(server::tls_identity(&config)?),
        None => None,
    };
    config.relay.secret()?;
    let store = Store::open_at(&config.db)?;
    let identity = match given {
        Some(identity) => identity,
        None => server::tls_identity(&config)?,
    };
    let fingerprint = identity.fingerprint();
    config.tls = Some(identity.server_config()?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| peerchat::Error::Config(format!("cannot handle Ctrl+C: {e}")))?;
    let bound = listener.local_addr()?;
    // Tests and scripts read this line to find a server started on port 0.
    println!("listening on {bound}");
    // Clients pin this; tests read it from this second line.
    println!("TLS certificate SHA-256 fingerprint: {fingerprint}");
    if let Some(relay) = server::relay::start(&mut config.relay, bound, Arc::clone(&stop))? {
        // Tests and scripts read this third line to find the in-process relay.
        println!("relay listening on {relay}");
    }
    std::io::stdout().flush()?;
    // The location's Display hides a password in a URL.
    log::info!("listening on {bound}, database {}", config.db);
    server::run(listener, store, config, stop)
}

/// `--relay-only`: a relay and nothing else, on --relay-listen (or --addr), pairing by
/// the tokens of a server with the same --relay-secret-file, until Ctrl+C.
fn relay_only(config: ServerConfig) -> peerchat::Result<()> {
    let relay_config = config.relay.clone();
    let secret = relay_config.secret()?;
    let want = relay_config.relay_listen.unwrap_or(config.addr);
    let listener = server::bind(want)
        .map_err(|e| peerchat::Error::Config(format!("cannot listen on {want}: {}", plain(&e))))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| peerchat::Error::Config(format!("cannot handle Ctrl+C: {e}")))?;
    println!("relay listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let relay = server::relay::Relay::new(relay_config, secret, stop);
    relay.serve(listener);
    Ok(())
}

fn print_sessions(db: &DbLocation, limit: usize) -> peerchat::Result<()> {
    if let DbLocation::File(path) = db
        && !path.exists()
    {
        return Err(peerchat::Error::Config(format!(
            "no database at {}",
            path.display()
        )));
    }
    let store = Store::open_at(db)?;
    println!("Chat sessions:");
    print!(
        "{}",
        server::session_log::render(&store.session_log(limit)?)
    );
    println!("\nFile transfers:");
    print!(
        "{}",
        server::session_log::render_transfers(&store.transfer_log(limit)?)
    );
    store.close()
}

/// An I/O error in plain words, without the `(os error 98)` tail.
fn plain(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "no such address on this machine".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}
