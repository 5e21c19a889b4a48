//! The core loop: one `select!` over the front end's commands, the server link, the
//! peer links, transfer progress and timers.
//!
//! Owns the order of the client's life after login and moving work between the session
//! and transfer tables. It must not parse wire lines (`protocol`), own a socket's
//! threads (`server_link`, `peer_link`), decide session rules (`sessions`), or render
//! anything for a person: it emits [`Event`]s.
//!
//! What each server message means for the engine, and losing, regaining and leaving
//! the server, live in `server`.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::command::Command as UserCommand;
use super::event::Event;
use super::login::Credentials;
use super::server_link::ServerLink;
use super::sessions::Sessions;
use super::summary::transfer_summary;
use super::transfers::{ServerOut, Transfers, XferNotice};
use crate::protocol::limits::MAX_HELD_REPORTS;
use crate::protocol::server_msg::Command;

mod server;
mod turns;

pub(super) use turns::{run, shortcuts};

/// How long `Quit` waits for the server's `OK BYE`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// The state of the core loop.
pub(super) struct Engine {
    /// The chat sessions.
    pub(super) sessions: Sessions,
    /// The front end's hook, which sees each event first (`start_with`).
    pub(super) hook: Option<super::EventHook>,
    /// Our name as registered, for the hook.
    pub(super) me: String,
    /// File offers and transfers.
    pub(super) transfers: Transfers,
    /// The server connection; `None` after it is lost.
    pub(super) link: Option<ServerLink>,
    /// The server's address, to reconnect.
    pub(super) server: SocketAddr,
    /// How the server's certificate is trusted (its pin is in the data folder by now).
    pub(super) trust: crate::crypto::trust::ServerTrust,
    /// What to answer when logging in again.
    pub(super) credentials: Credentials,
    /// Our peer port, declared again on reconnect.
    pub(super) port: u16,
    /// With `--auto-reconnect`: when to log in again by itself after losing the server.
    pub(super) auto_reconnect: Option<super::retry::Backoff>,
    /// The address our peer listener is bound to, for the `HINTS` we report.
    pub(super) listen_ip: Option<std::net::IpAddr>,
    /// `SESSION_END`/`TRANSFER_END` reports made while the server was away, sent after
    /// a reconnect so the server's log records the real ends (at most
    /// `MAX_HELD_REPORTS`).
    pub(super) held_reports: VecDeque<Command>,
    /// Where events go to the front end.
    pub(super) events: Sender<Event>,
    /// The active peer last announced, to announce only changes.
    pub(super) active: Option<String>,
    /// Our key and the pins (`\trust`, `\verify`, notes about keys).
    pub(super) security: std::sync::Arc<super::peer_secure::PeerSecurity>,
    /// Our long-term identity key (registered with `KEY` after every login; the peer
    /// links' handshakes use its secret half, through `security`).
    pub(super) identity: std::sync::Arc<crate::crypto::identity::Identity>,
    /// Messages through the server (`\msg`): sealing, opening, the replies awaited.
    pub(super) mail: super::mail::Mail,
    /// File offers without a chat session go through the server (`OFFER`).
    pub(super) offer_route: super::offer_route::OfferRoute,
    /// Set when the core loop has ended: the lanes' shortcuts then leave it alone.
    pub(super) stopped: bool,
}

impl Engine {
    fn emit(&self, event: Event) {
        // The front end may be gone (it dropped its receiver); nothing to tell then.
        if let Some(hook) = &self.hook
            && hook(&event, &self.me)
        {
            return;
        }
        let _ = self.events.send(event);
    }

    fn error(&self, text: impl Into<String>) {
        self.emit(Event::Error { text: text.into() });
    }

    /// Moves work between the session and transfer tables, emits their notices and
    /// sends what they queued for the server and for peers.
    pub(super) fn flush(&mut self) {
        for note in self.security.take_notes() {
            self.emit(match note.warning {
                true => Event::Error { text: note.text },
                false => Event::Note { text: note.text },
            });
        }
        let (conns, offers) = self.sessions.take_transfer_work();
        for incoming in conns {
            self.transfers.on_incoming(incoming);
        }
        for (peer, msg) in offers {
            self.transfers.on_peer_msg(&peer, msg);
        }
        for (peer, msg) in self.transfers.take_peer_out() {
            if !self.offer_route.answers_through_server(&peer, &msg)
                && self.sessions.send_to_peer(&peer, &msg)
            {
                continue;
            }
            // No session: an offer (or an answer to one that came through the server)
            // goes through the server, which holds it for an offline user.
            match self.offer_route.instead(&peer, &msg) {
                Some(command) if self.link.is_some() => self.send_command(&command),
                Some(_) => self.emit(Event::NotConnected),
                None => self.error(format!("no open session with {peer} to send that")),
            }
        }
        for text in self.transfers.take_away_notes() {
            self.emit(Event::Note { text });
        }
        for notice in self.transfers.take_notices() {
            if let XferNotice::Finished { row } = &notice {
                self.sessions
                    .note_transfer(&row.peer, &transfer_summary(row));
            }
            self.emit(Event::Transfer(notice));
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
                        self.emit(Event::Note {
                            text: format!(
                                "* only the first {most} of {} files are shared (the server's limit)",
                                files.len()
                            ),
                        });
                        files.truncate(most);
                    }
                    let mut lines = vec![Command::Share { count: files.len() }.to_string()];
                    lines.extend(files.iter().map(ToString::to_string));
                    link.send_block(&lines);
                }
            }
        }
        self.flush_sessions();
        for (peer, line) in self.mail.take_history() {
            self.sessions.note_via_server(&peer, &line);
        }
        for notice in self.mail.take_notices() {
            self.emit(Event::Mail(notice));
        }
    }

    /// Emits the session table's notices and forwards its reports to the server.
    fn flush_sessions(&mut self) {
        let notices = self.sessions.take_notices();
        let active = self.sessions.active_peer().map(str::to_string);
        if active != self.active {
            self.active = active.clone();
            self.emit(Event::Active { peer: active });
        }
        for notice in notices {
            if let super::sessions::Notice::Closed { peer, .. } = &notice {
                // Offers over that chat link can no longer be answered: end them now.
                self.transfers.peer_gone(peer);
            }
            self.emit(Event::Session(notice));
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

    /// Handles one command from the front end; false when it asks to quit.
    fn on_command(&mut self, command: UserCommand) -> bool {
        match command {
            UserCommand::List { offset } => self.send_command(&Command::List { offset }),
            UserCommand::Info { user } => self.send_command(&Command::Info { user }),
            UserCommand::ServerHelp => self.send_command(&Command::Help),
            UserCommand::Quit => return false,
            UserCommand::Connect { user } => {
                if self.link.is_none() {
                    self.emit(Event::NotConnected);
                } else {
                    self.sessions.connect(&user);
                }
            }
            UserCommand::Accept { user: None } => self.answer_the_only_one(true),
            UserCommand::Decline { user: None } => self.answer_the_only_one(false),
            UserCommand::Accept { user } => self.sessions.accept(user.as_deref()),
            UserCommand::Decline { user } => self.sessions.decline(user.as_deref()),
            UserCommand::Sessions => self.sessions.list(),
            UserCommand::Switch { user } => self.sessions.switch(&user),
            UserCommand::Close { user } => self.sessions.close(user.as_deref()),
            UserCommand::History { user, n } => self.sessions.history(&user, n),
            UserCommand::Reconnect => {
                self.reconnect();
            }
            UserCommand::SayTo { user, text } => self.sessions.say_to(&user, &text),
            UserCommand::Say { text } => self.sessions.say(&text),
            UserCommand::AcceptFile { id } => self.transfers.accept(id),
            UserCommand::DeclineFile { id } => self.transfers.decline(id),
            UserCommand::SendFile { path, to } => {
                let to = to.or_else(|| self.sessions.active_peer().map(str::to_string));
                match to {
                    // No chat session: through the server, which holds it for an
                    // offline user (protocol.md §4d).
                    Some(peer) if !self.sessions.is_open(&peer) => {
                        if self.link.is_none() {
                            self.emit(Event::NotConnected);
                        } else {
                            self.transfers.offer_through_server(&peer, &path);
                        }
                    }
                    to => self.transfers.offer(to.as_deref(), &path),
                }
            }
            UserCommand::Files { user } => self.send_command(&Command::Files { user, offset: 0 }),
            UserCommand::Search { text } => self.send_command(&Command::Search { text }),
            UserCommand::Fetch { user, name } => {
                if self.link.is_none() {
                    self.emit(Event::NotConnected);
                } else {
                    self.transfers.fetch(&user, &name);
                }
            }
            UserCommand::Transfers => self.transfers.list(),
            UserCommand::Cancel { id } => self.transfers.cancel(id),
            UserCommand::Rescan => self.transfers.announce_share(),
            UserCommand::Trust { user } => match self.security.trust(&user) {
                Ok(text) => self.emit(Event::Note { text }),
                Err(text) => self.error(text),
            },
            UserCommand::Verify { user } => match self.security.verify(&user) {
                Ok(text) => self.emit(Event::Note { text }),
                Err(text) => self.error(text),
            },
            UserCommand::Msg { to, text } => {
                if self.link.is_none() {
                    self.emit(Event::NotConnected);
                } else if let Some(whois) = self.mail.request(&to, &text) {
                    self.send_command(&whois);
                }
            }
        }
        true
    }

    /// `Accept`/`Decline` without a user: acts on the only chat request or file offer
    /// waiting, or says which to name.
    fn answer_the_only_one(&mut self, yes: bool) {
        let offers = self.transfers.waiting_offers();
        let verb = if yes { "accept" } else { "decline" };
        match (self.sessions.waiting_requests(), offers.as_slice()) {
            (0, [id]) if yes => self.transfers.accept(*id),
            (0, [id]) => self.transfers.decline(*id),
            (_, []) if yes => self.sessions.accept(None),
            (_, []) => self.sessions.decline(None),
            (0, _) => self.error(format!(
                "several file offers are waiting: \\{verb} <offer number>"
            )),
            _ => self.error(format!(
                "chat requests and file offers are waiting: \\{verb} <user> or \\{verb} <offer number>"
            )),
        }
    }

    fn send_command(&mut self, command: &Command) {
        match &self.link {
            Some(link) if link.send_line(&command.to_string()) => {}
            _ => self.emit(Event::NotConnected),
        }
    }
}
