//! The terminal front end of the client core.
//!
//! Owns the terminal's side of the client's life: the login questions asked on the
//! terminal, then one loop that waits on typed lines, the core's events and Ctrl+C,
//! turning lines into core commands and events into text. Only this loop prints
//! (through `ui::Terminal`), except with pipes: there the thread reading stdin turns
//! lines into commands itself and sends them straight to the core (one thread hand-off
//! less per line), printing its own answers (help, errors in what was typed) as whole
//! lines under the stdout lock. It must not open sockets, hold protocol state or reach
//! into the core's tables: it talks to the core only through `Command` and `Event`.

pub mod editor;
pub mod menu;
pub mod send_paths;
pub mod terminal;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, bounded, select};

use super::core::login::Prompter;
use super::core::sessions::Notice;
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
    fn ask_trust(&mut self, server: &str, fingerprint: &str) -> bool {
        // Pipes decide with --server-fingerprint or --trust-first-use.
        if !self.is_interactive() {
            return false;
        }
        Terminal::show(
            self,
            &format!(
                "The server {server} is new to this client. Its certificate fingerprint is\n  \
                 {fingerprint}\nCompare it with the one the server printed at start."
            ),
        );
        let answer = Terminal::ask(self, "Trust this server and remember it? (yes/no)", false);
        matches!(
            answer.as_deref().map(str::trim),
            Some("yes" | "y" | "YES" | "Y")
        )
    }
}

/// The login's questions as a person at a terminal meets them: registering asks for the
/// password twice, an empty username is refused before the password is asked, and after
/// an `N` given by mistake an empty username goes back to registration. With pipes the
/// questions are asked exactly as the server puts them.
struct Asker<'a> {
    /// Where the questions are asked.
    term: &'a mut Terminal,
    /// The user answered `Y`: a new account.
    registering: bool,
    /// Answer `Y` without asking: the user chose to go back to registration.
    force_new: bool,
    /// The user asked to go back to registration; the core starts the login again.
    go_back: bool,
    /// The last text shown during the login: an `error: ...` from the server explains
    /// why the connection then closed, so that is not said again.
    last_shown: String,
}

/// True for the answers to `ASK NEW` that mean a new account (protocol.md §3: `Y` or
/// `YES`, any case).
fn says_yes(answer: &str) -> bool {
    let answer = answer.trim();
    answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes")
}

impl Prompter for Asker<'_> {
    fn ask(&mut self, field: AskField, prompt: &str) -> Option<String> {
        if field == AskField::New && self.force_new {
            self.registering = true;
            return Some("Y".into());
        }
        if !self.term.is_interactive() {
            // Pipes get the server's questions as they are, but an empty username after
            // `N` goes back to registration here too (README), instead of being sent
            // as a login that can only fail and spend one of the three attempts.
            let answer = Terminal::ask(self.term, prompt, field == AskField::Password)?;
            match field {
                AskField::New => self.registering = says_yes(&answer),
                AskField::Username if answer.trim().is_empty() && !self.registering => {
                    self.go_back = true;
                    return None;
                }
                _ => {}
            }
            return Some(answer);
        }
        loop {
            let answer = Terminal::ask(self.term, prompt, field == AskField::Password)?;
            match field {
                AskField::New => {
                    self.registering = says_yes(&answer);
                    if answer.trim().eq_ignore_ascii_case("n")
                        || answer.trim().eq_ignore_ascii_case("no")
                    {
                        self.term
                            .show("(no account yet? press Enter at the username to register)");
                    }
                }
                AskField::Username if answer.trim().is_empty() && !self.registering => {
                    self.go_back = true;
                    return None;
                }
                AskField::Username if answer.trim().is_empty() => {
                    self.term
                        .show("error: a username cannot be empty; type one");
                    continue;
                }
                AskField::Password if self.registering => {
                    let again = Terminal::ask(self.term, "Repeat the password", true)?;
                    if again != answer {
                        self.term
                            .show("error: the two passwords differ; choose the password again");
                        continue;
                    }
                }
                _ => {}
            }
            return Some(answer);
        }
    }
    fn show(&mut self, text: &str) {
        self.last_shown = text.to_string();
        Terminal::show(self.term, text)
    }
    fn ask_share(&mut self) -> Option<String> {
        Prompter::ask_share(self.term)
    }
    fn ask_trust(&mut self, server: &str, fingerprint: &str) -> bool {
        Prompter::ask_trust(self.term, server, fingerprint)
    }
    fn start_over(&mut self) -> bool {
        if !std::mem::take(&mut self.go_back) {
            return false;
        }
        self.term.show("Registering a new account.");
        self.force_new = true;
        true
    }
}

/// Runs the terminal client until the user leaves; returns the process exit code.
/// `interrupts` delivers Ctrl+C after login.
pub fn run(config: &ClientConfig, interrupts: &Receiver<()>, logged_in: impl FnOnce()) -> u8 {
    let mut term = Terminal::new();
    let mut asker = Asker {
        term: &mut term,
        registering: false,
        force_new: false,
        go_back: false,
        last_shown: String::new(),
    };
    // With pipes nothing but text is shown: the core prints its events itself
    // (`pipe_hook`) instead of waking this loop for each, and typed lines go to the core
    // from the reading thread (`pipe_reader`).
    let active = Arc::new(AtomicBool::new(false));
    let piped = !asker.term.is_interactive();
    let hook = piped.then(|| pipe_hook(Arc::clone(&active)));
    let core = match core::start_with(config, &mut asker, hook) {
        Ok(core) => core,
        Err(why) => {
            // After "error: too many failed logins: ..." the server closes the
            // connection: that is the reason already said, not a second error.
            let explained = asker.last_shown.starts_with("error: ")
                && why == "the server closed the connection";
            if !explained {
                term.show(&format!("error: {why}"));
            }
            return 1;
        }
    };
    logged_in();
    let history = editor::history_path(&config.data_dir, &core.name);
    let reader = if piped {
        pipe_reader(core.commands.clone(), Arc::clone(&active))
    } else {
        term.spawn_reader(Some(history))
    };
    let commands = Commands {
        commands: core.commands.clone(),
    };
    let input = match reader {
        Ok(rx) => rx,
        Err(e) => {
            term.show(&format!("error: cannot read input: {e}"));
            let _ = core.commands.send(Command::Quit);
            drain(&mut term, &core);
            return 1;
        }
    };
    let mut front = Front { menu: None };
    term.read_next();
    loop {
        select! {
            recv(input) -> line => match line {
                Ok(line) => {
                    term.typed(&line);
                    if !front.on_input(&mut term, &commands, &line) {
                        break;
                    }
                    term.read_next();
                }
                Err(_) => break,
            },
            recv(core.events) -> event => match event {
                Ok(event) => {
                    if let Event::Active { peer } = &event {
                        active.store(peer.is_some(), Ordering::Relaxed);
                    }
                    show(&mut term, &core.name, &event);
                }
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
/// in a terminal, names feed Tab completion, everything else is a line of text.
fn show(term: &mut Terminal, me: &str, event: &Event) {
    match event {
        Event::Active { peer } => return term.set_prompt(peer.as_deref()),
        Event::Transfer(core::transfers::XferNotice::Progress { rows })
            if term.is_interactive() =>
        {
            return term.set_status(&ui::progress_status(rows));
        }
        // Pipes never echoed what was typed; scripts read only what others say.
        Event::Session(Notice::Said { .. }) if !term.is_interactive() => return,
        Event::Users { users, .. } => term.names_mut().extend(users.iter().cloned()),
        Event::Online { users } => term.names_mut().extend(users.iter().cloned()),
        Event::Offline { users } => {
            for user in users {
                term.names_mut().remove(user);
            }
        }
        Event::Session(Notice::Opened { peer, .. } | Notice::Request { from: peer, .. }) => {
            term.names_mut().insert(peer.clone());
        }
        _ => {}
    }
    if let Some(text) = ui::render(event, me) {
        term.show(&text);
    }
}

/// Where `Front` shows its own answers (help, menus, errors in what was typed), and
/// whether a chat session is active: the terminal in a terminal; with pipes, stdout
/// from the thread that reads the lines (`pipe_reader`).
trait Screen {
    fn show(&mut self, text: &str);
    fn no_session(&self) -> bool;
}

impl Screen for Terminal {
    fn show(&mut self, text: &str) {
        Terminal::show(self, text)
    }
    fn no_session(&self) -> bool {
        Terminal::no_session(self)
    }
}

/// The pipe reader's screen: plain cleaned lines on stdout (each written under the
/// stdout lock, so they never interleave with the UI loop's), and the session flag the
/// UI loop keeps.
struct PipeScreen {
    /// Set by the UI loop from `Event::Active`.
    active: Arc<AtomicBool>,
}

impl Screen for PipeScreen {
    fn show(&mut self, text: &str) {
        terminal::print_plain(text);
    }
    fn no_session(&self) -> bool {
        !self.active.load(Ordering::Relaxed)
    }
}

/// With pipes: shows each event from the core's thread, as `show` would with pipes
/// (own lines are not shown; the active session only matters to `PipeScreen`).
fn pipe_hook(active: Arc<AtomicBool>) -> core::EventHook {
    Box::new(move |event: &Event, me: &str| {
        match event {
            Event::Active { peer } => active.store(peer.is_some(), Ordering::Relaxed),
            Event::Session(Notice::Said { .. }) => {}
            _ => {
                if let Some(text) = ui::render(event, me) {
                    terminal::print_plain(&text);
                }
            }
        }
        true
    })
}

/// With pipes: reads lines and hands each one's command straight to the core, on this
/// thread. The UI loop is not woken for a typed line (a chat line costs one hand-off,
/// this thread to the core, instead of two); it only learns that input ended, when the
/// returned channel closes (end of input or `\quit`).
fn pipe_reader(
    commands: core::lane::Lane<Command>,
    active: Arc<AtomicBool>,
) -> std::io::Result<Receiver<String>> {
    let (done, ended) = bounded(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let core = Commands { commands };
            let mut screen = PipeScreen { active };
            let mut front = Front { menu: None };
            while let Some(line) = terminal::read_stdin_line() {
                if !front.on_input(&mut screen, &core, &line) {
                    break;
                }
            }
            drop(done);
        })?;
    Ok(ended)
}

/// `\list` shows ids as `#7 bob`, so `\msg #7 hi` means id 7: the `#` is dropped
/// before a number (a username never starts with one).
fn without_hash(to: &str) -> String {
    match to.strip_prefix('#') {
        Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => id.to_string(),
        _ => to.to_string(),
    }
}

/// Where `Front` sends the core its commands (the UI loop's and the pipe reader's copy).
struct Commands {
    commands: core::lane::Lane<Command>,
}

/// What the front end remembers between typed lines.
struct Front {
    /// `\menu`'s state while it waits for a choice.
    menu: Option<menu::Menu>,
}

impl Front {
    /// Handles one typed line; false when the user leaves.
    fn on_input(&mut self, term: &mut impl Screen, core: &Commands, line: &str) -> bool {
        if let Some(menu) = self.menu.take() {
            let step = menu::step(&menu, line);
            self.menu = step.next;
            if let Some(text) = step.show {
                term.show(&text);
            }
            if !step.pass_on {
                return match step.run {
                    Some(command) => self.run(term, core, command),
                    None => true,
                };
            }
        }
        let command = match ui::parse_typed(line, term.no_session()) {
            Ok(command) => command,
            Err(e) => {
                term.show(&format!("error: {e}"));
                return true;
            }
        };
        self.run(term, core, command)
    }

    /// Does what the user asked; false when the user leaves.
    fn run(&mut self, term: &mut impl Screen, core: &Commands, command: UserCommand) -> bool {
        let command = match command {
            UserCommand::Empty => return true,
            UserCommand::Help => {
                term.show(&ui::help_text());
                return true;
            }
            UserCommand::Menu => {
                self.menu = Some(menu::Menu::Main);
                term.show(&menu::main_text());
                return true;
            }
            UserCommand::SendFile { path } => {
                return match send_paths::expand(&path, send_paths::home().as_deref()) {
                    Ok(paths) => paths.into_iter().all(|path| {
                        core.commands
                            .send(Command::SendFile { path, to: None })
                            .is_ok()
                    }),
                    Err(e) => {
                        term.show(&format!("error: {e}"));
                        true
                    }
                };
            }
            UserCommand::Quit => return false,
            UserCommand::Action { text } => Command::Say {
                text: ui::action_text(&text),
            },
            UserCommand::List { offset } => {
                ui::asked_list_from(offset);
                Command::List { offset }
            }
            UserCommand::Info { user } => Command::Info { user },
            UserCommand::Connect { user } => Command::Connect { user },
            UserCommand::Accept { user } => Command::Accept { user },
            UserCommand::Decline { user } => Command::Decline { user },
            UserCommand::Sessions => Command::Sessions,
            UserCommand::Switch { user } => Command::Switch { user },
            UserCommand::Close { user } => Command::Close { user },
            UserCommand::History { user, n } => Command::History { user, n },
            UserCommand::Reconnect => Command::Reconnect,
            UserCommand::Trust { user } => Command::Trust { user },
            UserCommand::Verify { user } => Command::Verify { user },
            UserCommand::SendTo { user, text } => Command::SayTo { user, text },
            UserCommand::Msg { to, text } => Command::Msg {
                to: without_hash(&to),
                text,
            },
            UserCommand::OfferTo { user, path } => Command::SendFile {
                path: std::path::PathBuf::from(path),
                to: Some(user),
            },
            UserCommand::AcceptFile { id } => Command::AcceptFile { id },
            UserCommand::DeclineFile { id } => Command::DeclineFile { id },
            UserCommand::Files { user } => Command::Files { user },
            UserCommand::Search { text } => Command::Search { text },
            UserCommand::Fetch { user, name } => Command::Fetch { user, name },
            UserCommand::Transfers => Command::Transfers,
            UserCommand::Cancel { id } => Command::Cancel { id },
            UserCommand::Rescan => Command::Rescan,
            UserCommand::Text(text) => Command::Say { text },
        };
        core.commands.send(command).is_ok()
    }
}
