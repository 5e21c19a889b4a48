//! The core loop: one `select!` over the front end's commands, the server link, the
//! peer links, transfer progress and timers.
//!
//! Owns the order of the client's life after login and moving work between the session
//! and transfer tables. It must not parse wire lines (`protocol`), own a socket's
//! threads (`server_link`, `peer_link`), decide session rules (`sessions`), or render
//! anything for a person: it emits [`Event`]s.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, never, select, tick};

use super::command::Command as UserCommand;
use super::event::{Event, FileRow};
use super::login::{self, Credentials, PortChoice, Prompter};
use super::peer_link::PeerEvent;
use super::server_link::{LinkEvent, ServerLink};
use super::sessions::Sessions;
use super::summary::transfer_summary;
use super::transfer::TransferEvent;
use super::transfers::{ServerOut, Transfers, XferNotice};
use crate::protocol::limits::{HEARTBEAT_INTERVAL, MAX_HELD_REPORTS};
use crate::protocol::server_msg::{AskField, Command, Event as ServerEvent, FileEntry};
use crate::protocol::server_msg::{Reply, ServerMsg};

/// How long `Quit` waits for the server's `OK BYE`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// How often waiting requests and tickets are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// How often the progress of active transfers is reported.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

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

/// Shows the login's messages during a reconnect as notes.
struct Notes<'a>(&'a Engine);

impl Prompter for Notes<'_> {
    fn ask(&mut self, _field: AskField, _prompt: &str) -> Option<String> {
        None
    }
    fn show(&mut self, text: &str) {
        self.0.emit(Event::Note {
            text: text.to_string(),
        });
    }
}

impl Engine {
    pub(super) fn run(
        &mut self,
        commands: &Receiver<UserCommand>,
        peers: &Receiver<PeerEvent>,
        xfers: &Receiver<TransferEvent>,
    ) {
        let heartbeat = tick(HEARTBEAT_INTERVAL);
        let expiry = tick(EXPIRY_TICK);
        let progress = tick(PROGRESS_TICK);
        loop {
            let no_link = never();
            let events = self.link.as_ref().map_or(&no_link, |l| &l.events);
            select! {
                recv(commands) -> command => match command {
                    Ok(command) => {
                        if !self.on_command(command) {
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
            ServerMsg::Event(ServerEvent::SessionRequest {
                id,
                from,
                ticket,
                key,
            }) => {
                self.sessions.on_ticket(id, &from, ticket, key);
            }
            ServerMsg::Ok(Reply::Session {
                id,
                user,
                addr,
                ticket,
                key,
                hints,
            }) => self
                .sessions
                .on_granted(id, &user, (addr, &hints.0), ticket, key),
            ServerMsg::Event(ServerEvent::Dial {
                transfer,
                id,
                hints,
            }) => {
                // If we cannot dial back, the requester hears it at once (through the
                // server) and goes to the relay without waiting out its timeout.
                let line = Command::DialFailed { transfer, id }.to_string();
                let send = self.link.as_ref().map(ServerLink::line_sender);
                self.sessions.on_dial(transfer, id, hints.0, move || {
                    if let Some(send) = send {
                        send(&line);
                    }
                });
            }
            ServerMsg::Event(ServerEvent::DialFailed { transfer, id }) => {
                self.sessions.reversals().give_up(transfer, id);
            }
            ServerMsg::Ok(Reply::Relay {
                transfer,
                id,
                addr,
                token,
            }) => {
                if transfer {
                    self.transfers.on_relay(id, addr, token);
                } else {
                    self.sessions.on_relay(id, addr, token);
                }
            }
            ServerMsg::Err {
                code: crate::protocol::codes::ErrorCode::RelayFull,
                message,
            } if self.sessions.on_relay_refused(&message) => {}
            ServerMsg::Event(ServerEvent::Relay { addr, token, .. }) => {
                self.sessions.on_relay_invite(addr, token);
            }
            ServerMsg::Event(ServerEvent::TransferRequest {
                id,
                from,
                ticket,
                key,
            }) => {
                self.sessions.on_transfer_ticket(id, &from, ticket, key);
            }
            ServerMsg::Ok(Reply::Transfer {
                id,
                user,
                addr,
                ticket,
                key,
                hints,
            }) => {
                let reversals = self.sessions.reversals();
                self.transfers
                    .on_granted(id, &user, (addr, &hints.0, reversals), ticket, key)
            }
            // A fetch asks `FILES <user>` for the size to expect; that answer is not shown.
            ServerMsg::Ok(Reply::Files { files, total })
                if self.transfers.on_files_reply(&files, total) => {}
            ServerMsg::Ok(Reply::Whois { id, user, key, .. }) => {
                if let Some(send) = self.mail.on_whois(id, &user, key) {
                    self.send_command(&send);
                }
            }
            ServerMsg::Ok(Reply::Sent { id, delivered }) => self.mail.on_sent(id, delivered),
            ServerMsg::Event(ServerEvent::Offer {
                from,
                offer,
                size,
                name,
            }) => {
                let away = self.offer_route.waited();
                let msg = self.offer_route.on_offer(&from, offer, size, name);
                self.transfers.on_server_offer(&from, msg, away);
            }
            ServerMsg::Event(ServerEvent::OfferAnswer {
                from,
                offer,
                accept,
            }) => {
                self.offer_route.waited();
                let msg = super::offer_route::OfferRoute::on_answer(offer, accept);
                self.transfers.on_peer_msg(&from, msg);
            }
            ServerMsg::Ok(Reply::Offered { offer, delivered }) => {
                if let Some(text) = self.transfers.on_offered(offer, delivered) {
                    self.emit(Event::Note { text });
                }
            }
            ServerMsg::Ok(Reply::OfferAnswered { .. }) => {}
            ServerMsg::Event(ServerEvent::Mailbox { count }) => self.mail.on_mailbox(count),
            ServerMsg::Event(ServerEvent::Held { count }) => self.offer_route.on_held(count),
            ServerMsg::Event(ServerEvent::Online { users }) => {
                // Accepted offers through the server start once their peer is here.
                self.transfers.peers_online(&users);
                self.emit(Event::Online { users });
            }
            ServerMsg::Event(ServerEvent::Message {
                id,
                from,
                at_ms,
                key,
                sealed,
            }) => self.mail.on_message(id, &from, at_ms, key, &sealed),
            ServerMsg::Err { code, message } if self.mail.on_error(code, &message) => {}
            ServerMsg::Err { code, message } if self.transfers.on_offer_refused(code, &message) => {
            }
            // Kept in memory only, for reconnects; never shown or logged.
            ServerMsg::Ok(Reply::Token { token, .. }) => self.credentials.token = Some(token),
            ServerMsg::Ok(
                Reply::KeySet
                | Reply::SessionOpened { .. }
                | Reply::SessionEnded { .. }
                | Reply::TransferEnded { .. }
                | Reply::Hints { .. }
                | Reply::Reverse { .. }
                | Reply::DialFailed { .. }
                | Reply::Shared { .. },
            ) => {}
            other => {
                if let Some(event) = server_event(other) {
                    self.emit(event);
                }
            }
        }
    }

    /// The server is gone; the client keeps running and open sessions go on.
    fn lose_link(&mut self) {
        if let Some(link) = self.link.take() {
            link.close();
            self.mail.on_link_lost();
            self.emit(Event::ServerLost);
            if let Some(backoff) = self.auto_reconnect.as_mut() {
                backoff.start();
                self.emit(Event::Note {
                    text: "* reconnecting by itself in a moment".into(),
                });
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
        let Some(backoff) = self.auto_reconnect.as_mut() else {
            return;
        };
        let text = match outcome {
            Reconnected::Yes => {
                backoff.stop();
                return;
            }
            Reconnected::TryLater => {
                backoff.failed();
                let secs = backoff.wait().map_or(0, |w| w.as_secs());
                format!("* trying again in {secs} s")
            }
            Reconnected::GiveUp => {
                backoff.stop();
                "* not reconnecting by itself; type \\reconnect to try".to_string()
            }
        };
        self.emit(Event::Note { text });
    }

    /// `Reconnect`: log in again with the same name and port, with the server's token
    /// first (no bcrypt for the server), else the saved password.
    fn reconnect(&mut self) -> Reconnected {
        if self.link.is_some() {
            self.error("already connected to the server");
            return Reconnected::Yes;
        }
        let link = match ServerLink::connect(self.server, &self.trust, None) {
            Ok(link) => link,
            Err(e) => {
                self.error(format!("cannot reach the server at {}: {e}", self.server));
                return Reconnected::TryLater;
            }
        };
        let credentials = self.credentials.clone();
        let mut notes = Notes(self);
        let mut replay = login::Replay {
            credentials: &credentials,
            out: &mut notes,
        };
        let resume = credentials
            .token
            .as_ref()
            .map(|token| (credentials.username.as_str(), token));
        match login::run(&link, &mut replay, &PortChoice::Existing(self.port), resume) {
            Ok(_) => {
                self.emit(Event::Reconnected);
                link.send_line(&login::key_announcement(&self.identity));
                link.send_line(&login::token_request());
                link.send_line(&super::ladder::hints_command(self.listen_ip));
                for report in std::mem::take(&mut self.held_reports) {
                    link.send_line(&report.to_string());
                }
                self.link = Some(link);
                if self.transfers.share_dir().is_some() {
                    self.transfers.announce_share();
                }
                self.transfers.ask_waiting_grants();
                if let Some(backoff) = self.auto_reconnect.as_mut() {
                    backoff.stop();
                }
                Reconnected::Yes
            }
            Err(why) => {
                link.close();
                self.error(format!("could not log in again: {why}"));
                match why.as_str() {
                    login::SAVED_LOGIN_FAILED => Reconnected::GiveUp,
                    _ => Reconnected::TryLater,
                }
            }
        }
    }

    /// Logs out: `QUIT`, a short wait for `OK BYE`, then close; `Event::Bye` last.
    fn quit(&mut self) {
        if let Some(link) = self.link.take() {
            if link.send_line(&Command::Quit.to_string()) {
                let deadline = crossbeam_channel::after(QUIT_WAIT);
                loop {
                    select! {
                        recv(link.events) -> event => match event {
                            Ok(LinkEvent::Msg(ServerMsg::Ok(Reply::Bye))) | Ok(LinkEvent::Closed(_)) | Err(_) => break,
                            // Replies to commands sent just before leaving still count.
                            Ok(LinkEvent::Msg(msg)) => {
                                if let Some(event) = server_event(msg) {
                                    self.emit(event);
                                }
                            }
                        },
                        recv(deadline) -> _ => break,
                    }
                }
            }
            link.close();
        }
        self.emit(Event::Bye);
    }
}

/// The event a front end sees for a server message, `None` for messages a person need
/// not see (heartbeat replies, the core's own bookkeeping).
fn server_event(msg: ServerMsg) -> Option<Event> {
    let rows = |files: Vec<FileEntry>| {
        files
            .into_iter()
            .map(|f| FileRow {
                user: f.user,
                size: f.size,
                name: f.name,
            })
            .collect()
    };
    Some(match msg {
        ServerMsg::Ok(Reply::List { users, total }) => Event::Users {
            ids: users.iter().map(|u| u.id).collect(),
            users: users.into_iter().map(|u| u.name).collect(),
            total,
        },
        ServerMsg::Ok(Reply::Info { user, addr, key }) => Event::UserInfo {
            user,
            addr: addr.to_string(),
            key,
        },
        ServerMsg::Ok(Reply::Help { lines }) => Event::ServerHelp { lines },
        ServerMsg::Ok(Reply::Files { files, total }) => Event::Files {
            files: rows(files),
            total,
        },
        ServerMsg::Ok(Reply::Search { files, total }) => Event::Search {
            files: rows(files),
            total,
        },
        ServerMsg::Err { code, message } => Event::ServerError {
            code: code.number(),
            message,
        },
        ServerMsg::Event(ServerEvent::Online { users }) => Event::Online { users },
        ServerMsg::Event(ServerEvent::Offline { users }) => Event::Offline { users },
        ServerMsg::Event(ServerEvent::Presence { came, went }) => Event::Presence { came, went },
        ServerMsg::Event(ServerEvent::Shutdown { message }) => Event::ServerNotice { message },
        _ => return None,
    })
}
