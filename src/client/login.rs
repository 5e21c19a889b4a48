//! The client's side of the login conversation: answer the server's questions.
//!
//! Owns the order of the exchange and picking the listening port (bound here, before the
//! server is told, so the port is known to be free). It asks the person through the
//! [`Prompter`] trait and must not print or read the terminal itself, so another front
//! end can drive the same login.

use std::net::{IpAddr, SocketAddr, TcpListener};

use super::server_link::{LinkEvent, ServerLink};
use crate::protocol::server_msg::{AskField, Reply, ServerMsg, VERSION};

/// How the login talks to the person.
pub trait Prompter {
    /// Shows `prompt` and returns the answer; `None` when the person is gone (end of
    /// input). `secret` answers must not be echoed.
    fn ask(&mut self, prompt: &str, secret: bool) -> Option<String>;
    /// Shows one line of information.
    fn show(&mut self, text: &str);
}

/// A finished login.
pub struct Login {
    /// The name as registered.
    pub name: String,
    /// What the server tells peers about us.
    pub addr: SocketAddr,
    /// Our open listener for peer connections.
    pub listener: TcpListener,
}

/// Where peers connect: the interface to bind, and the port if fixed by a flag.
pub struct PortChoice {
    /// Interface to listen on.
    pub ip: IpAddr,
    /// `Some(port)` from `--port` (0 = any free); `None` asks the person.
    pub port: Option<u16>,
}

/// Answers questions until the server says `OK WELCOME`.
pub fn run(
    link: &ServerLink,
    prompter: &mut dyn Prompter,
    choice: &PortChoice,
) -> Result<Login, String> {
    let mut listener = None;
    loop {
        let msg = match link.events.recv() {
            Ok(LinkEvent::Msg(msg)) => msg,
            Ok(LinkEvent::Closed(why)) => return Err(why),
            Err(_) => return Err("the connection to the server ended".into()),
        };
        match msg {
            ServerMsg::Hello { version } if version != VERSION => {
                log::warn!("server speaks protocol version {version}, this client {VERSION}");
            }
            ServerMsg::Ask {
                field: AskField::Port,
                prompt,
            } => {
                let bound = listen(prompter, &prompt, choice)?;
                let port = bound.local_addr().map_err(|e| e.to_string())?.port();
                listener = Some(bound);
                link.send_line(&port.to_string());
            }
            ServerMsg::Ask { field, prompt } => {
                let answer = prompter
                    .ask(&prompt, field == AskField::Password)
                    .ok_or("input ended before login finished")?;
                link.send_line(&answer);
            }
            ServerMsg::Err { message, .. } => prompter.show(&format!("error: {message}")),
            ServerMsg::Ok(Reply::Registered { user }) => {
                prompter.show(&format!("Registered as {user}."))
            }
            ServerMsg::Ok(Reply::LoggedIn { user }) => {
                prompter.show(&format!("Logged in as {user}."))
            }
            ServerMsg::Ok(Reply::Welcome { user, addr }) => {
                let listener = listener.ok_or("the server welcomed us before asking for a port")?;
                return Ok(Login {
                    name: user,
                    addr,
                    listener,
                });
            }
            other => log::debug!("ignored during login: {other:?}"),
        }
    }
}

/// Binds the listener on the chosen port, asking the person until a port is free.
fn listen(
    prompter: &mut dyn Prompter,
    prompt: &str,
    choice: &PortChoice,
) -> Result<TcpListener, String> {
    if let Some(port) = choice.port {
        return TcpListener::bind((choice.ip, port))
            .map_err(|e| format!("cannot listen on port {port}: {e}"));
    }
    loop {
        let answer = prompter
            .ask(&format!("{prompt} (Enter for any free port)"), false)
            .ok_or("input ended before login finished")?;
        let port = match answer.trim() {
            "" => 0,
            text => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    prompter.show("error: a port is a number from 1 to 65535");
                    continue;
                }
            },
        };
        match TcpListener::bind((choice.ip, port)) {
            Ok(listener) => return Ok(listener),
            Err(e) => prompter.show(&format!(
                "error: port {port} is not free ({e}); choose another"
            )),
        }
    }
}
