//! Open chat sessions: messages from peers and what we say (kept in history), which
//! session is active, the list, closing one or all, and showing history. It must not
//! print or own sockets; how a session is set up is `connect`'s.

use super::super::history::Line;
use super::super::peer_link::LinkId;
use super::{Closer, Notice, Open, Sessions, State, now_ms, same};
use crate::protocol::limits::MAX_CHAT_TEXT;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::EndReason;
use crate::sanitize::one_line;

impl Sessions {
    pub(super) fn take_open_by_link(&mut self, link: LinkId) -> Option<Open> {
        let at = self.open.iter().position(|o| o.link.id == link)?;
        let open = self.open.remove(at);
        if self.active.as_deref().is_some_and(|a| same(a, &open.peer)) {
            self.active = self.open.first().map(|o| o.peer.clone());
        }
        Some(open)
    }

    pub(super) fn on_message(&mut self, link: LinkId, msg: PeerMsg) {
        match msg {
            PeerMsg::Msg { at_ms, text } => {
                let Some(open) = self.open.iter().find(|o| o.link.id == link) else {
                    return;
                };
                let peer = open.peer.clone();
                self.remember(&peer, &peer, at_ms, &text);
                let active = self.active.as_deref().is_some_and(|a| same(a, &peer));
                self.notices.push(Notice::Chat {
                    peer: peer.clone(),
                    line: Line {
                        sender: peer,
                        at_ms,
                        text,
                    },
                    active,
                });
            }
            PeerMsg::Close { reason } => self.closed_by_peer(link, EndReason::Closed, reason),
            PeerMsg::Err { code, message } => self.closed_by_peer(
                link,
                EndReason::PeerLost,
                format!("{message} ({})", code.name()),
            ),
            msg @ (PeerMsg::Offer { .. }
            | PeerMsg::OfferFolder { .. }
            | PeerMsg::OfferIn { .. }
            | PeerMsg::OfferOk { .. }
            | PeerMsg::OfferNo { .. }
            | PeerMsg::Cancel { .. }) => {
                if let Some(open) = self.open.iter().find(|o| o.link.id == link) {
                    self.offer_msgs.push((open.peer.clone(), msg));
                }
            }
            other => log::debug!("ignored a peer message out of place: {other:?}"),
        }
    }

    pub(super) fn closed_by_peer(&mut self, link: LinkId, reason: EndReason, why: String) {
        if let Some(open) = self.take_open_by_link(link) {
            open.link.kill();
            self.report_end(open.session, reason);
            self.notices.push(Notice::Closed {
                peer: open.peer,
                by: Closer::Peer,
                why,
            });
        }
    }

    /// A plain line: to the active session.
    pub fn say(&mut self, text: &str) {
        match self.active.clone() {
            Some(peer) => self.say_to(&peer, text),
            None => self.error("no chat session is open; \\connect <user> to start one"),
        }
    }

    /// `@user text`: to that session, without switching.
    pub fn say_to(&mut self, peer: &str, text: &str) {
        // Measured as it will be written: a control character (a tab, say) goes out as
        // U+FFFD, three bytes, and the peer refuses a line over the limit.
        if one_line(text).len() > MAX_CHAT_TEXT {
            return self.error(format!("a message may hold at most {MAX_CHAT_TEXT} bytes"));
        }
        let Some(open) = self.open.iter().find(|o| same(&o.peer, peer)) else {
            return self.error(format!("no session with {peer}"));
        };
        let at_ms = now_ms();
        let sent = open.link.send(&PeerMsg::Msg {
            at_ms,
            text: text.to_string(),
        });
        let name = open.peer.clone();
        if sent {
            let me = self.me.clone();
            self.remember(&name, &me, at_ms, text);
            let active = self.active.as_deref().is_some_and(|a| same(a, &name));
            self.notices.push(Notice::Said {
                peer: name,
                line: Line {
                    sender: me,
                    at_ms,
                    text: text.to_string(),
                },
                active,
            });
        } else {
            self.error(format!("could not send to {name}: the link is down"));
        }
    }

    /// Records a line about a finished file transfer in the history with `peer`.
    pub fn note_transfer(&mut self, peer: &str, text: &str) {
        self.remember(peer, "*", now_ms(), text);
    }

    /// Keeps a message through the server (`\msg`) in the history with `peer`.
    pub fn note_via_server(&mut self, peer: &str, line: &crate::client::core::history::Line) {
        let text = format!("(via server) {}", line.text);
        self.remember(peer, &line.sender, line.at_ms, &text);
    }

    /// `\switch <user>`
    pub fn switch(&mut self, user: &str) {
        match self.open.iter().find(|o| same(&o.peer, user)) {
            Some(open) => {
                let peer = open.peer.clone();
                self.active = Some(peer.clone());
                self.notices.push(Notice::Switched { peer });
            }
            None => self.error(format!("no session with {user}")),
        }
    }

    /// `\sessions`
    pub fn list(&mut self) {
        let mut list: Vec<(String, State)> = self
            .open
            .iter()
            .map(|o| {
                let active = self.active.as_deref().is_some_and(|a| same(a, &o.peer));
                (
                    o.peer.clone(),
                    if active { State::Active } else { State::Open },
                )
            })
            .collect();
        let mut paths: Vec<String> = self.open.iter().map(|o| o.path.to_string()).collect();
        list.extend(
            self.outgoing
                .iter()
                .map(|(p, _)| (p.clone(), State::Asking)),
        );
        list.extend(self.requests.iter().map(|r| (r.from.clone(), State::Asked)));
        paths.resize(list.len(), String::new());
        self.notices.push(Notice::Sessions { list, paths });
    }

    /// `\close [user]`: the named or the active session.
    pub fn close(&mut self, user: Option<&str>) {
        let Some(peer) = user.map(str::to_string).or_else(|| self.active.clone()) else {
            return self.error("no chat session is open");
        };
        let Some(open) = self.open.iter().find(|o| same(&o.peer, &peer)) else {
            // `\sessions` lists a request of ours as "waiting for an answer": say what
            // happens to it rather than that there is no such session.
            if self.outgoing.iter().any(|(p, _)| same(p, &peer)) {
                return self.error(format!(
                    "{peer} has not answered your request yet; it cannot be withdrawn, and ends by itself if {peer} does not answer within {} s",
                    self.answer_wait.as_secs()
                ));
            }
            return self.error(format!("no session with {peer}"));
        };
        let link = open.link.id;
        if let Some(open) = self.take_open_by_link(link) {
            open.link.close("closed");
            self.report_end(open.session, EndReason::Closed);
            self.notices.push(Notice::Closed {
                peer: open.peer,
                by: Closer::Me,
                why: "closed".into(),
            });
        }
    }

    /// Closes every session and declines every request (before quitting).
    pub fn close_all(&mut self) {
        for open in std::mem::take(&mut self.open) {
            open.link.close("quit");
            self.report_end(open.session, EndReason::Closed);
        }
        for request in std::mem::take(&mut self.requests) {
            request.incoming.decline(EndReason::Declined);
            self.report_end(request.session, EndReason::Declined);
        }
        self.active = None;
    }

    /// `\history <user> [n]`
    pub fn history(&mut self, user: &str, n: usize) {
        let lines = self.last_lines(user, n);
        self.notices.push(Notice::History {
            peer: user.to_string(),
            lines,
        });
    }
}
