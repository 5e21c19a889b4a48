//! The server's side of every command after login.
//!
//! Owns what each command does. Argument counts are checked once, by the command table
//! in `protocol::server_msg`, and login is checked structurally (commands are only parsed
//! after login), so handlers hold no precondition checks. It must not read or write
//! sockets: it returns the reply for `conn` to queue.

use super::Shared;
use super::login::LoggedIn;
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::{COMMANDS, Command, CommandSpec, Reply, ServerMsg};

/// What the connection does after replying.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
}

/// Runs one command for `me` and returns its reply.
pub fn dispatch(command: &Command, me: &LoggedIn, shared: &Shared) -> (ServerMsg, Flow) {
    let _ = me;
    let reply = match command {
        Command::Help => help(),
        Command::List => list(shared),
        Command::Info { user } => info(shared, user),
        Command::Ping => ServerMsg::Ok(Reply::Pong),
        Command::Quit => return (ServerMsg::Ok(Reply::Bye), Flow::Close),
    };
    (reply, Flow::Continue)
}

/// HELP
fn help() -> ServerMsg {
    ServerMsg::Ok(Reply::Help {
        lines: COMMANDS.iter().map(CommandSpec::help_line).collect(),
    })
}

/// LIST
fn list(shared: &Shared) -> ServerMsg {
    ServerMsg::Ok(Reply::List {
        users: shared.registry.online_names(),
    })
}

/// INFO <username>
fn info(shared: &Shared, user: &str) -> ServerMsg {
    match shared.registry.lookup(&user.to_ascii_lowercase()) {
        Some((name, addr)) => ServerMsg::Ok(Reply::Info { user: name, addr }),
        None => {
            let shown: String = user.chars().take(32).collect();
            ServerMsg::err(ErrorCode::NotOnline, format!("{shown} is not online"))
        }
    }
}
