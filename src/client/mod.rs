//! The terminal client: settings, wiring, and the UI loop.
//!
//! Owns the order of the client's life: connect, log in, then a loop that waits on the
//! user's lines, the server link's events, Ctrl+C and the heartbeat, all through one
//! crossbeam `select!`. Only this loop prints (through `ui::Terminal`). It must not parse
//! wire lines (`protocol`) nor own a socket's threads (`server_link`).

pub mod login;
pub mod server_link;
pub mod ui;

use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, never, select, tick};

use crate::protocol::limits::HEARTBEAT_INTERVAL;
use crate::protocol::server_msg::{Command, Reply, ServerMsg};
use server_link::{LinkEvent, ServerLink};
use ui::{Terminal, UserCommand};

/// How long `\quit` waits for the server's `OK BYE`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Client settings; every flag of `peerchat-client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientConfig {
    /// The server's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub server: String,
    /// Port to listen on for peers (0 = any free port); without it the client asks.
    #[arg(long)]
    pub port: Option<u16>,
    /// Interface to listen on for peers.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,
}

impl login::Prompter for Terminal {
    fn ask(&mut self, prompt: &str, secret: bool) -> Option<String> {
        Terminal::ask(self, prompt, secret)
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
    let choice = login::PortChoice {
        ip: config.listen_addr,
        port: config.port,
    };
    let me = match login::run(&link, &mut term, &choice) {
        Ok(me) => me,
        Err(why) => {
            term.show(&format!("error: {why}"));
            link.close();
            return 1;
        }
    };
    logged_in.store(true, Ordering::SeqCst);
    term.show(&format!(
        "Welcome, {}. Peers reach you at {}. Type \\help for commands.",
        me.name, me.addr
    ));
    let input = match term.spawn_reader() {
        Ok(rx) => rx,
        Err(e) => {
            term.show(&format!("error: cannot read input: {e}"));
            return 1;
        }
    };
    let mut ui = Ui {
        term,
        me: me.name,
        link: Some(link),
        _listener: me.listener,
    };
    ui.run(&input, &interrupts);
    0
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

/// The state of the UI loop.
struct Ui {
    /// Where everything is shown.
    term: Terminal,
    /// Our username.
    me: String,
    /// The server connection; `None` after it is lost.
    link: Option<ServerLink>,
    /// The peer listener, held open for peer connections.
    _listener: TcpListener,
}

impl Ui {
    fn run(&mut self, input: &Receiver<String>, interrupts: &Receiver<()>) {
        let heartbeat = tick(HEARTBEAT_INTERVAL);
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
                recv(interrupts) -> _ => break,
                recv(heartbeat) -> _ => {
                    if let Some(link) = &self.link {
                        link.send_line(&Command::Ping.to_string());
                    }
                }
            }
        }
        self.quit();
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
            UserCommand::List => self.send_command(&Command::List),
            UserCommand::Info { user } => self.send_command(&Command::Info { user }),
            UserCommand::Quit => return false,
            UserCommand::Text(_) => self
                .term
                .show("error: no chat session is open; type \\help for commands"),
        }
        true
    }

    fn send_command(&mut self, command: &Command) {
        match &self.link {
            Some(link) if link.send_line(&command.to_string()) => self.term.show_prompt(),
            _ => self.term.show("error: not connected to the server"),
        }
    }

    fn on_link_event(&mut self, event: Option<LinkEvent>) {
        match event {
            Some(LinkEvent::Msg(msg)) => {
                if let Some(text) = ui::render(&msg, &self.me) {
                    self.term.show(&text);
                }
            }
            Some(LinkEvent::Closed(why)) => {
                log::info!("server link closed: {why}");
                self.lose_link();
            }
            None => self.lose_link(),
        }
    }

    /// The server is gone; the client keeps running (peer sessions do not need it).
    fn lose_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.close();
            self.term.show("* lost the connection to the server");
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
