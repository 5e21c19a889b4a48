//! The login asked through the page: the core's `Prompter` answered by `POST
//! /api/login`.
//!
//! Owns turning each login question into a `login_question` event, waiting for the
//! page's answer, offering another try after a failed login, and then handing the
//! running core to the pump. It must not speak the login protocol itself (the core's
//! `login` module does) nor print anything.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use serde_json::json;

use super::Shared;
use super::state::Question;
use crate::client::core::{self, login::Prompter};
use crate::protocol::server_msg::AskField;

/// A `Prompter` whose person is the page.
pub struct WebPrompter<'a> {
    /// Where questions are published.
    shared: &'a Shared,
    /// The page's answers.
    answers: &'a Receiver<String>,
}

impl WebPrompter<'_> {
    fn question(&mut self, kind: &str, prompt: &str) -> Option<String> {
        let question = Question {
            kind: kind.to_string(),
            prompt: prompt.to_string(),
        };
        self.shared.publish(
            "login_question",
            json!({"kind": kind, "prompt": prompt}),
            |s| s.question = Some(question),
        );
        let answer = self.answers.recv().ok();
        self.shared
            .publish("login_answered", json!({"kind": kind}), |s| {
                s.question = None
            });
        answer
    }
}

impl Prompter for WebPrompter<'_> {
    fn ask(&mut self, field: AskField, prompt: &str) -> Option<String> {
        let kind = match field {
            AskField::New => "new",
            AskField::Username => "username",
            AskField::Password => "password",
            AskField::Port => "port",
        };
        self.question(kind, prompt)
    }

    fn show(&mut self, text: &str) {
        let text = text.to_string();
        self.shared
            .publish("login_message", json!({"text": text}), |s| {
                s.login_message(&text)
            });
    }

    fn ask_share(&mut self) -> Option<String> {
        self.question("share", "Folder to share (leave empty for none)")
    }

    fn ask_trust(&mut self, server: &str, fingerprint: &str) -> bool {
        let prompt = format!(
            "The server {server} is new to this client. Its certificate fingerprint is {fingerprint}. \
             Compare it with the one the server printed at start. Trust this server and remember it?"
        );
        matches!(
            self.question("trust", &prompt).as_deref().map(str::trim),
            Some("Y" | "y" | "yes")
        )
    }
}

/// Logs in through the page (again after each failure, when the page asks), then pumps
/// the core's events until it stops.
pub fn log_in_and_pump(shared: &Arc<Shared>, answers: Receiver<String>) {
    loop {
        let mut prompter = WebPrompter {
            shared,
            answers: &answers,
        };
        match core::start(&shared.config, &mut prompter) {
            Ok(handle) => return super::attach(shared, handle),
            Err(why) => {
                let text = format!("error: {why}");
                shared.publish("login_failed", json!({"text": text}), |s| {
                    s.login_message(&text)
                });
                if prompter.question("retry", "Log in again?").is_none() {
                    return;
                }
            }
        }
    }
}
