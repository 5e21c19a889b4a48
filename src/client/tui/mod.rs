//! The terminal front end of the client core.
//!
//! Owns the terminal's side of the client's life: the login questions asked on the
//! terminal, then one loop that waits on typed lines, the core's events and Ctrl+C,
//! turning lines into core commands and events into text. Only this loop prints
//! (through `ui::Terminal`). It must not open sockets, hold protocol state or reach
//! into the core's tables: it talks to the core only through `Command` and `Event`.

pub mod ui;

use crossbeam_channel::{Receiver, select};

use super::core::login::Prompter;
use super::core::{self, ClientConfig, Command, Event, Handle};
use crate::protocol::server_msg::AskField;
use ui::{Terminal, UserCommand};

impl Prompter for Terminal {
    fn ask(&mut self, field: AskField, prompt: &str) -> Option<String> {
        Terminal::ask(self, prompt, field == AskField::Password)
    }
    fn show(&mut self, text: &str) {
        Terminal::show(self, text)
    }
    fn ask_share(&mut self) -> Option<String> {
        // Pipes share nothing unless `--share` says so.
        if !self.is_interactive() {
            return None;
        }
        Terminal::ask(self, "Folder to share (Enter for none)", false)
    }
}

/// Runs the terminal client until the user leaves; returns the process exit code.
/// `interrupts` delivers Ctrl+C after login.
pub fn run(config: &ClientConfig, interrupts: &Receiver<()>, logged_in: impl FnOnce()) -> u8 {
    let mut term = Terminal::new();
    let core = match core::start(config, &mut term) {
        Ok(core) => core,
        Err(why) => {
            term.show(&format!("error: {why}"));
            return 1;
        }
    };
    logged_in();
    let input = match term.spawn_reader() {
        Ok(rx) => rx,
        Err(e) => {
            term.show(&format!("error: cannot read input: {e}"));
            let _ = core.commands.send(Command::Quit);
            drain(&mut term, &core);
            return 1;
        }
    };
    term.show_prompt();
    loop {
        select! {
            recv(input) -> line => match line {
                Ok(line) => {
                    if !on_input(&mut term, &core, &line) {
                        break;
                    }
                }
                Err(_) => break,
            },
            recv(core.events) -> event => match event {
                Ok(event) => show(&mut term, &core.name, &event),
                Err(_) => break,
            },
            recv(interrupts) -> _ => break,
        }
    }
    // Leaving (`\quit`, end of input, Ctrl+C): the core logs out and reports the
    // replies that were still coming, then `Bye`.
    let _ = core.commands.send(Command::Quit);
    drain(&mut term, &core);
    let _ = core.thread.join();
    0
}

/// Shows the core's remaining events until it stops.
fn drain(term: &mut Terminal, core: &Handle) {
    for event in core.events.iter() {
        show(term, &core.name, &event);
    }
}

/// Shows one event: the active peer sets the prompt, progress goes to the status line
/// in a terminal, everything else is a line of text.
fn show(term: &mut Terminal, me: &str, event: &Event) {
    match event {
        Event::Active { peer } => term.set_prompt(peer.as_deref()),
        // The terminal already shows what the person typed.
        Event::Session(core::event::Notice::Said { .. }) => {}
        Event::Transfer(core::event::XferNotice::Progress { rows }) if term.is_interactive() => {
            term.set_status(&ui::progress_status(rows));
        }
        _ => {
            if let Some(text) = ui::render(event, me) {
                term.show(&text);
            }
        }
    }
}

/// Handles one typed line; false when the user leaves.
fn on_input(term: &mut Terminal, core: &Handle, line: &str) -> bool {
    let command = match ui::parse_input(line) {
        Ok(command) => command,
        Err(e) => {
            term.show(&format!("error: {e}"));
            return true;
        }
    };
    let command = match command {
        UserCommand::Empty => {
            term.show_prompt();
            return true;
        }
        UserCommand::Help => {
            term.show(&ui::help_text());
            return true;
        }
        UserCommand::Quit => return false,
        UserCommand::List => Command::List,
        UserCommand::Info { user } => Command::Info { user },
        UserCommand::Connect { user } => Command::Connect { user },
        UserCommand::Accept { user } => Command::Accept { user },
        UserCommand::Decline { user } => Command::Decline { user },
        UserCommand::Sessions => Command::Sessions,
        UserCommand::Switch { user } => Command::Switch { user },
        UserCommand::Close { user } => Command::Close { user },
        UserCommand::History { user, n } => Command::History { user, n },
        UserCommand::Reconnect => Command::Reconnect,
        UserCommand::SendTo { user, text } => Command::SayTo { user, text },
        UserCommand::AcceptFile { id } => Command::AcceptFile { id },
        UserCommand::DeclineFile { id } => Command::DeclineFile { id },
        UserCommand::SendFile { path } => Command::SendFile {
            path: path.into(),
            to: None,
        },
        UserCommand::Files { user } => Command::Files { user },
        UserCommand::Search { text } => Command::Search { text },
        UserCommand::Fetch { user, name } => Command::Fetch { user, name },
        UserCommand::Transfers => Command::Transfers,
        UserCommand::Cancel { id } => Command::Cancel { id },
        UserCommand::Rescan => Command::Rescan,
        UserCommand::Text(text) => Command::Say { text },
    };
    let prompt = matches!(
        command,
        Command::Say { .. }
            | Command::List
            | Command::Info { .. }
            | Command::Files { .. }
            | Command::Search { .. }
    );
    if core.commands.send(command).is_err() {
        return false;
    }
    if prompt {
        term.show_prompt();
    }
    true
}
