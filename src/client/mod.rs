//! The terminal client: settings, wiring, and the UI loop.
//!
//! Owns the order of the client's life: connect, log in, then one loop that waits on the
//! user's lines, the server link, the peer links, Ctrl+C and two timers, all through one
//! crossbeam `select!`. Only this loop prints (through `ui::Terminal`). It must not parse
//! wire lines (`protocol`), own a socket's threads (`server_link`, `peer_link`) or decide
//! session rules (`sessions`).

pub mod disk_space;
pub mod history;
pub mod login;
pub mod peer_dial;
pub mod peer_limits;
pub mod peer_link;
pub mod resume_check;
pub mod retry;
pub mod server_link;
pub mod sessions;
pub mod transfer;
pub mod transfer_index;
pub mod transfers;
pub mod ui;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, never, select, tick};

use crate::protocol::limits::{ACCEPT_TIMEOUT, ANSWER_WAIT, HEARTBEAT_INTERVAL, MAX_HELD_REPORTS};
use crate::protocol::server_msg::{AskField, Command, Event, Reply, ServerMsg};
use login::{Credentials, PortChoice, Prompter};
use peer_link::PeerEvent;
use server_link::{LinkEvent, ServerLink};
use sessions::Sessions;
use transfer::{Share, TransferEvent};
use transfers::{ServerOut, Transfers, XferNotice};
use ui::{Terminal, UserCommand};

/// How long `\quit` waits for the server's `OK BYE`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// How often waiting requests and tickets are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Transfer events that may wait for the UI loop (progress beyond it is dropped).
const XFER_EVENTS: usize = 1024;

/// How often the progress of active transfers is shown.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// Peer events that may wait for the UI loop before peer readers pause.
const PEER_EVENTS: usize = 1024;

/// Client settings; every flag of `peerchat-client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientConfig {
    /// The server's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub server: String,
    /// Port to listen on for peers (0-65535; 0 = any free port); without it the client asks.
    #[arg(long, allow_negative_numbers = true)]
    pub port: Option<u16>,
    /// Interface to listen on for peers.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,
    /// Seconds you have to accept or decline a chat request (1-30).
    #[arg(long, allow_negative_numbers = true, default_value_t = ACCEPT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=ACCEPT_TIMEOUT.as_secs()))]
    pub accept_timeout: u64,
    /// Seconds to wait for the peer to answer your chat request (1-40).
    #[arg(long, default_value_t = ANSWER_WAIT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=ANSWER_WAIT.as_secs()))]
    pub answer_wait: u64,
    /// Folder to share: its regular files (not subfolders) are listed on the server and
    /// can be fetched by other users. Without it, a terminal session asks; pipes share
    /// nothing.
    #[arg(long)]
    pub share: Option<PathBuf>,
    /// Where received files go (default: <data-dir>/<user>/downloads).
    #[arg(long)]
    pub downloads: Option<PathBuf>,
    /// Folder for local data; each user's chat history goes in <data-dir>/<user>/.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// After losing the server, log in again by itself (every 1 s to 30 s, with the
    /// server's token, so without bcrypt), as `\reconnect` does.
    #[arg(long)]
    pub auto_reconnect: bool,
}

impl Prompter for Terminal {
    fn ask(&mut self, field: AskField, prompt: &str) -> Option<String> {
        Terminal::ask(self, prompt, field == AskField::Password)
    }
    fn show(&mut self, text: &str) {
        Terminal::show(self, text)
    }
}

/// Runs the client until the user leaves; returns the process exit code.
pub fn run(config: ClientConfig) -> u8 {
    let mut term = Terminal::new();
    let logged_in = Arc::new(AtomicBool::new(false));
    let interrupts = match watch_ctrl_c(Arc::clone(&logged_in)) {
        Ok(rx) => rx,
        Err(e) => {
            term.show(&format!("error: {e}"));
            return 1;
        }
    };
    let addr = match resolve(&config.server) {
        Ok(addr) => addr,
        Err(e) => {
            term.show(&format!("error: {e}"));
            return 1;
        }
    };
    let link = match ServerLink::connect(addr) {
        Ok(link) => link,
        Err(e) => {
            term.show(&format!("error: cannot reach the server at {addr}: {e}"));
            return 1;
        }
    };
    let choice = PortChoice::Bind {
        ip: config.listen_addr,
        port: config.port,
    };
    let me = match login::run(&link, &mut term, &choice, None) {
        Ok(me) => me,
        Err(why) => {
            term.show(&format!("error: {why}"));
            link.close();
            return 1;
        }
    };
    logged_in.store(true, Ordering::SeqCst);
    let Some(listener) = me.listener else {
        term.show("error: no listener was opened");
        return 1;
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (peer_tx, peer_events) = bounded(PEER_EVENTS);
    let refusals = peer_limits::Refusals::new();
    if let Err(e) = peer_link::spawn_listener(listener, peer_tx.clone(), refusals.clone()) {
        term.show(&format!("error: cannot accept peers: {e}"));
        return 1;
    }
    let history_path = history::path_for(&config.data_dir, &me.name);
    let history = match history::History::open(&history_path) {
        Ok(history) => Some(history),
        Err(e) => {
            term.show(&format!(
                "error: chat history unavailable ({}): {e}",
                history_path.display()
            ));
            None
        }
    };
    let share = choose_share(&mut term, config.share.as_deref());
    term.show(&format!(
        "Welcome, {}. Peers reach you at {}. Type \\help for commands.",
        me.name, me.addr
    ));
    let downloads = config.downloads.clone().unwrap_or_else(|| {
        config
            .data_dir
            .join(me.name.to_ascii_lowercase())
            .join("downloads")
    });
    let (xfer_tx, xfer_events) = bounded(XFER_EVENTS);
    let input = match term.spawn_reader() {
        Ok(rx) => rx,
        Err(e) => {
            term.show(&format!("error: cannot read input: {e}"));
            return 1;
        }
    };
    let mut ui = Ui {
        transfers: Transfers::new(&me.name, downloads, share, xfer_tx),
        term,
        sessions: Sessions::new(
            &me.name,
            peer_tx,
            history,
            Duration::from_secs(config.accept_timeout),
            Duration::from_secs(config.answer_wait),
            refusals,
        ),
        me: me.name,
        link: Some(link),
        held_reports: VecDeque::new(),
        server: addr,
        credentials: me.credentials,
        port,
        auto_reconnect: config.auto_reconnect.then(retry::Backoff::default),
    };
    // A resumable-login token for `\reconnect` (kept in memory only).
    if let Some(link) = &ui.link {
        link.send_line(&login::token_request());
    }
    if ui.transfers.share_dir().is_some() {
        ui.transfers.announce_share();
        ui.flush();
    }
    ui.run(&input, &peer_events, &xfer_events, &interrupts);
    0
}

/// The shared folder from `--share`, or asked for in a terminal (Enter for none).
fn choose_share(term: &mut Terminal, flag: Option<&std::path::Path>) -> Option<Share> {
    let dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None if term.is_interactive() => {
            let answer = Terminal::ask(term, "Folder to share (Enter for none)", false)?;
            if answer.trim().is_empty() {
                return None;
            }
            PathBuf::from(answer.trim())
        }
        None => return None,
    };
    match Share::open(&dir) {
        Ok(share) => Some(share),
        Err(e) => {
            term.show(&format!("error: cannot share {}: {e}", dir.display()));
            None
        }
    }
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    server
        .to_socket_addrs()
        .map_err(|e| format!("bad server address {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad server address {server}"))
}

/// Ctrl+C before login ends the process at once (there is nothing to tidy); after
/// login it arrives on the returned channel so the UI loop can log out cleanly.
fn watch_ctrl_c(logged_in: Arc<AtomicBool>) -> Result<Receiver<()>, String> {
    let (tx, rx) = bounded(1);
    ctrlc::set_handler(move || {
        if logged_in.load(Ordering::SeqCst) {
            let _ = tx.try_send(());
        } else {
            std::process::exit(130);
        }
    })
    .map_err(|e| format!("cannot handle Ctrl+C: {e}"))?;
    Ok(rx)
}

/// How a reconnect went.
enum Reconnected {
    /// Logged in again (or already connected).
    Yes,
    /// The server could not be reached or did not finish the login: try again later.
    TryLater,
    /// The saved login was refused: trying again would only add failures.
    GiveUp,
}

/// The state of the UI loop.
struct Ui {
    /// Where everything is shown.
    term: Terminal,
    /// The chat sessions.
    sessions: Sessions,
    /// File offers and transfers.
    transfers: Transfers,
    /// Our username.
    me: String,
    /// The server connection; `None` after it is lost.
    link: Option<ServerLink>,
    /// The server's address, to reconnect.
    server: SocketAddr,
    /// What to answer when logging in again.
    credentials: Credentials,
    /// Our peer port, declared again on reconnect.
    port: u16,
    /// With `--auto-reconnect`: when to log in again by itself after losing the server.
    auto_reconnect: Option<retry::Backoff>,
    /// `SESSION_END`/`TRANSFER_END` reports made while the server was away, sent after
    /// `\reconnect` so the server's log records the real ends (at most
    /// `MAX_HELD_REPORTS`).
    held_reports: VecDeque<Command>,
}

impl Ui {
    fn run(
        &mut self,
        input: &Receiver<String>,
        peers: &Receiver<PeerEvent>,
        xfers: &Receiver<TransferEvent>,
        interrupts: &Receiver<()>,
    ) {
        let heartbeat = tick(HEARTBEAT_INTERVAL);
        let expiry = tick(EXPIRY_TICK);
        let progress = tick(PROGRESS_TICK);
        self.term.show_prompt();
        loop {
            let no_link = never();
            let events = self.link.as_ref().map_or(&no_link, |l| &l.events);
            select! {
                recv(input) -> line => match line {
                    Ok(line) => {
                        if !self.on_input(&line) {
                            break;
                        }
                    }
                    Err(_) => break,
                },
                recv(events) -> event => self.on_link_event(event.ok()),
                recv(peers) -> event => {
                    if let Ok(event) = event {
                        self.sessions.on_peer_event(event);
                    }
                }
                recv(xfers) -> event => {
                    if let Ok(event) = event {
                        self.transfers.on_event(event);
                    }
                }
                recv(progress) -> _ => self.transfers.progress(),
                recv(interrupts) -> _ => break,
                recv(expiry) -> _ => {
                    self.sessions.tick();
                    self.transfers.tick();
                    self.auto_reconnect_if_due();
                }
                recv(heartbeat) -> _ => {
                    if let Some(link) = &self.link {
                        link.send_line(&Command::Ping.to_string());
                    }
                }
            }
            self.flush();
        }
        self.sessions.close_all();
        self.flush();
        self.quit();
    }

    /// Moves work between the session and transfer cores, shows their notices and sends
    /// what they queued for the server and for peers.
    fn flush(&mut self) {
        let (conns, offers) = self.sessions.take_transfer_work();
        for incoming in conns {
            self.transfers.on_incoming(incoming);
        }
        for (peer, msg) in offers {
            self.transfers.on_peer_msg(&peer, msg);
        }
        for (peer, msg) in self.transfers.take_peer_out() {
            if !self.sessions.send_to_peer(&peer, &msg) {
                self.term
                    .show(&format!("error: no open session with {peer} to send that"));
            }
        }
        for notice in self.transfers.take_notices() {
            match &notice {
                // A terminal gets a status line redrawn in place; pipes get plain lines.
                XferNotice::Progress { rows } if self.term.is_interactive() => {
                    self.term.set_status(&ui::progress_status(rows));
                    continue;
                }
                XferNotice::Progress { rows } if rows.is_empty() => continue,
                XferNotice::Finished { row } => {
                    self.sessions
                        .note_transfer(&row.peer, &ui::transfer_summary(row));
                }
                _ => {}
            }
            self.term.show(&ui::render_xfer(&notice));
        }
        for out in self.transfers.take_server_out() {
            let Some(link) = &self.link else {
                match out {
                    ServerOut::Command(report @ Command::TransferEnd { .. }) => {
                        self.hold_report(report)
                    }
                    _ => log::info!("server away; a transfer message was not sent"),
                }
                continue;
            };
            match out {
                ServerOut::Command(command) => {
                    link.send_line(&command.to_string());
                }
                ServerOut::Share(mut files) => {
                    // The server refuses (and hangs up on) a longer list: share the first
                    // ones and say so.
                    let most = crate::protocol::limits::MAX_SHARED_FILES;
                    if files.len() > most {
                        self.term.show(&format!(
                            "* only the first {most} of {} files are shared (the server's limit)",
                            files.len()
                        ));
                        files.truncate(most);
                    }
                    let mut lines = vec![Command::Share { count: files.len() }.to_string()];
                    lines.extend(files.iter().map(ToString::to_string));
                    link.send_block(&lines);
                }
            }
        }
        self.flush_sessions();
    }

    /// Shows the session core's notices and forwards its reports to the server.
    fn flush_sessions(&mut self) {
        let notices = self.sessions.take_notices();
        self.term.set_prompt(self.sessions.active_peer());
        for notice in notices {
            self.term.show(&ui::render_notice(&notice));
        }
        for command in self.sessions.take_server_commands() {
            match &self.link {
                Some(link) => {
                    link.send_line(&command.to_string());
                }
                None => match command {
                    Command::SessionEnd { .. } => self.hold_report(command),
                    _ => log::info!("server away; not reported: {command}"),
                },
            }
        }
    }

    /// Keeps an end report for the next server connection, dropping the oldest past
    /// `MAX_HELD_REPORTS`.
    fn hold_report(&mut self, report: Command) {
        if self.held_reports.len() >= MAX_HELD_REPORTS {
            self.held_reports.pop_front();
        }
        self.held_reports.push_back(report);
    }

    /// Handles one typed line; false when the user leaves.
    fn on_input(&mut self, line: &str) -> bool {
        let command = match ui::parse_input(line) {
            Ok(command) => command,
            Err(e) => {
                self.term.show(&format!("error: {e}"));
                return true;
            }
        };
        match command {
            UserCommand::Empty => self.term.show_prompt(),
            UserCommand::Help => self.term.show(&ui::help_text()),
            UserCommand::List { offset } => self.send_command(&Command::List { offset }),
            UserCommand::Info { user } => self.send_command(&Command::Info { user }),
            UserCommand::Quit => return false,
            UserCommand::Connect { user } => {
                if self.link.is_none() {
                    self.term
                        .show("error: not connected to the server; \\reconnect first");
                } else {
                    self.sessions.connect(&user);
                }
            }
            UserCommand::Accept { user } => self.sessions.accept(user.as_deref()),
            UserCommand::Decline { user } => self.sessions.decline(user.as_deref()),
            UserCommand::Sessions => self.sessions.list(),
            UserCommand::Switch { user } => self.sessions.switch(&user),
            UserCommand::Close { user } => self.sessions.close(user.as_deref()),
            UserCommand::History { user, n } => self.sessions.history(&user, n),
            UserCommand::Reconnect => {
                self.reconnect();
            }
            UserCommand::SendTo { user, text } => self.sessions.say_to(&user, &text),
            UserCommand::AcceptFile { id } => self.transfers.accept(id),
            UserCommand::DeclineFile { id } => self.transfers.decline(id),
            UserCommand::SendFile { path } => {
                let active = self.sessions.active_peer().map(str::to_string);
                self.transfers
                    .offer(active.as_deref(), std::path::Path::new(&path));
            }
            UserCommand::Files { user } => self.send_command(&Command::Files { user, offset: 0 }),
            UserCommand::Search { text } => self.send_command(&Command::Search { text }),
            UserCommand::Fetch { user, name } => {
                if self.link.is_none() {
                    self.term
                        .show("error: not connected to the server; \\reconnect first");
                } else {
                    self.transfers.fetch(&user, &name);
                }
            }
            UserCommand::Transfers => self.transfers.list(),
            UserCommand::Cancel { id } => self.transfers.cancel(id),
            UserCommand::Rescan => self.transfers.announce_share(),
            UserCommand::Text(text) => {
                self.sessions.say(&text);
                self.term.show_prompt();
            }
        }
        true
    }

    fn send_command(&mut self, command: &Command) {
        match &self.link {
            Some(link) if link.send_line(&command.to_string()) => self.term.show_prompt(),
            _ => self
                .term
                .show("error: not connected to the server; \\reconnect first"),
        }
    }

    fn on_link_event(&mut self, event: Option<LinkEvent>) {
        match event {
            Some(LinkEvent::Msg(msg)) => self.on_server_msg(msg),
            Some(LinkEvent::Closed(why)) => {
                log::info!("server link closed: {why}");
                self.lose_link();
            }
            None => self.lose_link(),
        }
    }

    fn on_server_msg(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Event(Event::SessionRequest { id, from, ticket }) => {
                self.sessions.on_ticket(id, &from, ticket);
            }
            ServerMsg::Ok(Reply::Session {
                id,
                user,
                addr,
                ticket,
            }) => self.sessions.on_granted(id, &user, addr, ticket),
            ServerMsg::Event(Event::TransferRequest { id, from, ticket }) => {
                self.sessions.on_transfer_ticket(id, &from, ticket);
            }
            ServerMsg::Ok(Reply::Transfer {
                id,
                user,
                addr,
                ticket,
            }) => self.transfers.on_granted(id, &user, addr, ticket),
            // A fetch asks `FILES <user>` for the size to expect; that answer is not shown.
            ServerMsg::Ok(Reply::Files { files, total })
                if self.transfers.on_files_reply(&files, total) => {}
            // Kept in memory only, for `\reconnect`; never shown or logged.
            ServerMsg::Ok(Reply::Token { token, .. }) => self.credentials.token = Some(token),
            ServerMsg::Ok(
                Reply::SessionOpened { .. }
                | Reply::SessionEnded { .. }
                | Reply::TransferEnded { .. }
                | Reply::Shared { .. },
            ) => {}
            other => {
                if let Some(text) = ui::render(&other, &self.me) {
                    self.term.show(&text);
                }
            }
        }
    }

    /// The server is gone; the client keeps running and open sessions go on.
    fn lose_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.close();
            self.term.show("* lost the connection to the server; open sessions go on. Type \\reconnect to log in again.");
            if let Some(backoff) = self.auto_reconnect.as_mut() {
                backoff.start();
                self.term.show("* reconnecting by itself in a moment");
            }
        }
    }

    /// With `--auto-reconnect`: logs in again when an attempt is due; tries later after
    /// a failure, and gives up when the saved login itself was refused (retrying would
    /// only count failures towards a block).
    fn auto_reconnect_if_due(&mut self) {
        let due = self
            .auto_reconnect
            .as_mut()
            .is_some_and(|b| b.due(std::time::Instant::now()));
        if !due || self.link.is_some() {
            return;
        }
        let outcome = self.reconnect();
        if let Some(backoff) = self.auto_reconnect.as_mut() {
            match outcome {
                Reconnected::Yes => backoff.stop(),
                Reconnected::TryLater => {
                    backoff.failed();
                    let secs = backoff.wait().map_or(0, |w| w.as_secs());
                    self.term.show(&format!("* trying again in {secs} s"));
                }
                Reconnected::GiveUp => {
                    backoff.stop();
                    self.term
                        .show("* not reconnecting by itself; type \\reconnect to try");
                }
            }
        }
    }

    /// `\reconnect`: log in again with the same name, password and port.
    fn reconnect(&mut self) -> Reconnected {
        if self.link.is_some() {
            self.term.show("error: already connected to the server");
            return Reconnected::Yes;
        }
        let link = match ServerLink::connect(self.server) {
            Ok(link) => link,
            Err(e) => {
                self.term.show(&format!(
                    "error: cannot reach the server at {}: {e}",
                    self.server
                ));
                return Reconnected::TryLater;
            }
        };
        let credentials = self.credentials.clone();
        let mut replay = login::Replay {
            credentials: &credentials,
            out: &mut self.term,
        };
        // The server's token first: no bcrypt for the server, no password replayed.
        let resume = credentials
            .token
            .as_ref()
            .map(|token| (credentials.username.as_str(), token));
        match login::run(&link, &mut replay, &PortChoice::Existing(self.port), resume) {
            Ok(_) => {
                self.term.show("* reconnected to the server");
                link.send_line(&login::token_request());
                for report in std::mem::take(&mut self.held_reports) {
                    link.send_line(&report.to_string());
                }
                self.link = Some(link);
                if self.transfers.share_dir().is_some() {
                    self.transfers.announce_share();
                }
                if let Some(backoff) = self.auto_reconnect.as_mut() {
                    backoff.stop();
                }
                Reconnected::Yes
            }
            Err(why) => {
                link.close();
                self.term
                    .show(&format!("error: could not log in again: {why}"));
                match why.as_str() {
                    login::SAVED_LOGIN_FAILED => Reconnected::GiveUp,
                    _ => Reconnected::TryLater,
                }
            }
        }
    }

    /// Logs out: `QUIT`, a short wait for `OK BYE`, then close.
    fn quit(&mut self) {
        if let Some(link) = self.link.take() {
            if link.send_line(&Command::Quit.to_string()) {
                let deadline = crossbeam_channel::after(QUIT_WAIT);
                loop {
                    select! {
                        recv(link.events) -> event => match event {
                            Ok(LinkEvent::Msg(ServerMsg::Ok(Reply::Bye))) | Ok(LinkEvent::Closed(_)) | Err(_) => break,
                            // Replies to commands typed just before leaving still count.
                            Ok(LinkEvent::Msg(msg)) => {
                                if let Some(text) = ui::render(&msg, &self.me) {
                                    self.term.show(&text);
                                }
                            }
                        },
                        recv(deadline) -> _ => break,
                    }
                }
            }
            link.close();
        }
        self.term.show("Bye.");
    }
}
