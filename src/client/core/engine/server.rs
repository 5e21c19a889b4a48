//! The engine's side of the server link: each server message turned into work and
//! events, losing the link, reconnecting (by hand or automatically), and logging out.
//! It must not parse wire lines (`protocol`) or own the link's threads (`server_link`).

use super::super::event::{Event, FileRow};
use super::super::login::{self, PortChoice, Prompter};
use super::super::server_link::{LinkEvent, ServerLink};
use super::{Engine, QUIT_WAIT};
use crate::protocol::server_msg::{AskField, Command, Event as ServerEvent, FileEntry};
use crate::protocol::server_msg::{Reply, ServerMsg};

use crossbeam_channel::select;

/// How a reconnect went.
pub(super) enum Reconnected {
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
    pub(super) fn on_link_event(&mut self, event: Option<LinkEvent>) {
        match event {
            Some(LinkEvent::Msg(msg)) => self.on_server_msg(msg),
            Some(LinkEvent::Closed(why)) => {
                log::info!("server link closed: {why}");
                self.lose_link();
            }
            None => self.lose_link(),
        }
    }

    pub(super) fn on_server_msg(&mut self, msg: ServerMsg) {
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
                let msg = crate::client::core::offer_route::OfferRoute::on_answer(offer, accept);
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
            // An offer through the server sent before the oldest message request gets
            // the error first (replies come in order).
            ServerMsg::Err { code, message }
                if self.offer_first(code) && self.transfers.on_offer_refused(code, &message) => {}
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

    /// True when an `ERR` with `code` answers an offer through the server rather than a
    /// message: that request was sent before any message request it could answer.
    fn offer_first(&self, code: crate::protocol::codes::ErrorCode) -> bool {
        match (
            self.transfers.oldest_offer_stamp(),
            self.mail.oldest_stamp(code),
        ) {
            (Some(offer), Some(mail)) => offer < mail,
            _ => false,
        }
    }

    /// The server is gone; the client keeps running and open sessions go on.
    pub(super) fn lose_link(&mut self) {
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
    pub(super) fn auto_reconnect_if_due(&mut self) {
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
    pub(super) fn reconnect(&mut self) -> Reconnected {
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
        let key = login::KeySource::Known(&self.identity);
        match login::run(
            &link,
            &mut replay,
            &PortChoice::Existing(self.port),
            resume,
            &key,
        ) {
            Ok(_) => {
                self.emit(Event::Reconnected);
                link.send_line(&login::token_request());
                link.send_line(&crate::client::core::ladder::hints_command(self.listen_ip));
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
    pub(super) fn quit(&mut self) {
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
