//! The web front end: the client core driven by a page in the person's browser, as
//! Syncthing and Transmission do it.
//!
//! Owns starting the HTTP server on loopback, the token, the `GUI:` line, the login
//! thread (the core's login asks the page through [`prompter::WebPrompter`]) and the
//! pump that turns core events into the event log and the state snapshot. Routes live
//! in `routes`, the Host/Origin/token checks in `guard` (one place), the event log in
//! `log`, the snapshot in `state`, the page in `assets/`. It must not reach into the
//! core's tables: it sends `Command`s and reads `Event`s like the terminal does.
//!
//! Lock order: `Shared::state` before the event log's own lock (the log is a leaf);
//! `Shared::core` is taken alone, only to clone the command sender.

pub mod guard;
pub mod log;
pub mod prompter;
pub mod routes;
pub mod staging;
pub mod state;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde_json::Value;

use super::core::{self, ClientConfig, Command, Event};
use crate::protocol::limits::GUI_MAX_REQUESTS;
use guard::Guard;
use state::Snapshot;

/// How long quitting waits for the core to log out.
const QUIT_WAIT: Duration = Duration::from_secs(4);

/// How long the page is still served after the core stopped, so waiting long polls get
/// the last events (`bye`, `ended`).
const LINGER: Duration = Duration::from_millis(500);

/// The web front end's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GuiConfig {
    /// Serve the graphical interface: a local web page instead of the terminal.
    #[arg(long)]
    pub gui: bool,
    /// Where the page is served (loopback only unless --gui-allow-remote; port 0 = any).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub gui_addr: SocketAddr,
    /// Allow --gui-addr to be a non-loopback address (anyone who can reach it and
    /// learns the token controls this client).
    #[arg(long)]
    pub gui_allow_remote: bool,
    /// Do not open the page in a browser; only print its address.
    #[arg(long)]
    pub no_browser: bool,
}

/// What the HTTP threads, the login thread and the pump share.
pub struct Shared {
    /// The page's snapshot (taken before the log's lock).
    state: Mutex<Snapshot>,
    /// Every event, with rising ids, for long polls.
    log: log::EventLog,
    /// Where commands go once logged in.
    core: Mutex<Option<core::lane::Lane<Command>>>,
    /// The page's answer to the pending login question.
    answers: Sender<String>,
    /// The client's settings (for the staging folder).
    config: ClientConfig,
    /// Uploads staged to be offered, deleted when their offer ends.
    staging: staging::Staging,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds and logs one event, under the state lock so `GET /api/state` and the
    /// event ids always agree.
    fn publish(&self, kind: &str, data: Value, fold: impl FnOnce(&mut Snapshot)) {
        let mut state = self.state();
        fold(&mut state);
        state.last_id = self.log.push(kind, data);
    }

    /// Publishes one event of the core.
    fn publish_core(&self, event: &Event) {
        let (kind, data) = match serde_json::to_value(event) {
            Ok(Value::Object(mut map)) => {
                let kind = map
                    .remove("type")
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default();
                (kind, map.remove("data").unwrap_or(Value::Null))
            }
            _ => return,
        };
        self.publish(&kind, data, |s| s.apply(event));
    }

    /// The core's command sender, once logged in.
    fn commands(&self) -> Option<core::lane::Lane<Command>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The folder uploads are staged in.
    fn staging_dir(&self) -> Option<PathBuf> {
        let me = self.state().me.clone()?;
        Some(
            self.config
                .data_dir
                .join(me.to_ascii_lowercase())
                .join("staging"),
        )
    }
}

/// Runs the client with the web front end until it is told to quit; returns the exit
/// code.
pub fn run(config: &ClientConfig, gui: &GuiConfig, interrupts: &Receiver<()>) -> u8 {
    let ip = gui.gui_addr.ip();
    if !ip.is_loopback() {
        if !gui.gui_allow_remote {
            eprintln!(
                "error: --gui-addr {ip} is not a loopback address; add --gui-allow-remote to serve the page to other machines"
            );
            return 2;
        }
        eprintln!(
            "warning: serving the GUI on {ip}: anyone who reaches it and learns the token controls this client"
        );
    }
    let server = match tiny_http::Server::http(gui.gui_addr) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!("error: cannot serve the GUI on {}: {e}", gui.gui_addr);
            return 1;
        }
    };
    let Some(port) = server.server_addr().to_ip().map(|a| a.port()) else {
        eprintln!("error: the GUI server has no IP address");
        return 1;
    };
    let token = match new_token() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: no random token: {e}");
            return 1;
        }
    };
    let extra = (!ip.is_loopback() || !is_default_loopback(ip)).then(|| match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    });
    let guard = Arc::new(Guard::new(port, extra, token.clone()));
    let (answer_tx, answers) = bounded(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(Snapshot::default()),
        log: log::EventLog::new(),
        core: Mutex::new(None),
        answers: answer_tx,
        config: config.clone(),
        staging: staging::Staging::default(),
    });
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let url = format!("http://{host}:{port}/#token={token}");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "GUI: {url}").and_then(|()| out.flush());
    }
    if !gui.no_browser {
        open_browser(&url);
    }
    let serving = Arc::clone(&server);
    let serve_shared = Arc::clone(&shared);
    if let Err(e) = thread::Builder::new()
        .name("gui-accept".into())
        .spawn(move || serve(&serving, &serve_shared, &guard))
    {
        eprintln!("error: cannot serve the GUI: {e}");
        return 1;
    }
    let (done_tx, done) = bounded::<()>(1);
    let login_shared = Arc::clone(&shared);
    if let Err(e) = thread::Builder::new()
        .name("gui-core".into())
        .spawn(move || {
            prompter::log_in_and_pump(&login_shared, answers);
            let _ = done_tx.send(());
        })
    {
        eprintln!("error: cannot start the client core: {e}");
        return 1;
    }
    select! {
        recv(done) -> _ => {}
        recv(interrupts) -> _ => {
            if let Some(commands) = shared.commands() {
                let _ = commands.send(Command::Quit);
                let _ = done.recv_timeout(QUIT_WAIT);
            }
        }
    }
    thread::sleep(LINGER);
    server.unblock();
    0
}

fn is_default_loopback(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

/// 128 random bits from the OS, as hex.
fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens `url` in the default browser when the desktop has one; silent otherwise.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        ::log::info!("no browser opened ({opener}: {e}); open the GUI line's address yourself");
    }
}

/// The accept loop: one thread per request, at most `GUI_MAX_REQUESTS` at once.
fn serve(server: &tiny_http::Server, shared: &Arc<Shared>, guard: &Arc<Guard>) {
    let active = Arc::new(AtomicUsize::new(0));
    for request in server.incoming_requests() {
        if active.fetch_add(1, Ordering::SeqCst) >= GUI_MAX_REQUESTS {
            active.fetch_sub(1, Ordering::SeqCst);
            routes::busy(request);
            continue;
        }
        let shared = Arc::clone(shared);
        let guard = Arc::clone(guard);
        let done = Arc::clone(&active);
        let spawned = thread::Builder::new()
            .name("gui-request".into())
            .spawn(move || {
                routes::handle(&shared, &guard, request);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Forwards the core's events to the log and the snapshot until the core stops.
fn pump(shared: &Shared, events: &Receiver<Event>) {
    for event in events.iter() {
        // The core ticks progress every second even with nothing moving (a terminal
        // clears its status line with it); the page needs no event for that.
        if let Event::Transfer(core::event::XferNotice::Progress { rows }) = &event
            && rows.is_empty()
        {
            continue;
        }
        // When too many came and went to name them, only a fresh list tells who is
        // online now.
        if let Event::Presence { .. } = &event
            && let Some(commands) = shared.commands()
        {
            let offset = shared.state().users_offset;
            let _ = commands.send(Command::List { offset });
        }
        shared.staging.on_event(&event);
        if let Event::Welcome { .. } = &event {
            // Uploads left by an earlier run were never offered in this one.
            if let Some(dir) = shared.staging_dir() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        shared.publish_core(&event);
    }
    shared.publish("ended", Value::Null, |s| s.phase = state::Phase::Ended);
    *shared.core.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Starts the core (blocking through the login) and keeps `shared` informed.
fn attach(shared: &Shared, handle: core::Handle) {
    *shared.core.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.commands.clone());
    pump(shared, &handle.events);
    let _ = handle.thread.join();
}
