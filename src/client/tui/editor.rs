//! The line editor for a person at a terminal, and putting the terminal back as it was.
//!
//! Owns the rustyline editor: one thread reads a line at a time (arrows, Home/End,
//! Ctrl+A/E/W/U/K/L, Up/Down history kept per user in the data folder, Tab completion of
//! commands, online names and paths), while everything the client shows goes through
//! rustyline's external printer, so incoming lines appear above the input line and the
//! half-typed line and its cursor stay as they were. It also saves the terminal's modes
//! at start and restores them on every way out (Ctrl+C at the password prompt included).
//! It must not parse commands (`ui` does) nor hold any protocol state.

use std::collections::BTreeSet;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{DefaultHistory, History};
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ConditionalEventHandler, Context, Editor, Event, EventContext, EventHandler,
    ExternalPrinter, Helper, KeyEvent, Movement, RepeatCount,
};

/// Lines of input history kept per user.
const HISTORY_LINES: usize = 1000;

/// The terminal's modes when the client started, to put back on the way out.
static SAVED_MODES: OnceLock<rustix::termios::Termios> = OnceLock::new();

/// Remembers the terminal's modes (stdin a terminal only). Call once, before anything
/// changes them (a password prompt turns echo off; the editor turns on raw mode).
pub fn save_terminal() {
    if io::stdin().is_terminal()
        && let Ok(modes) = rustix::termios::tcgetattr(io::stdin())
    {
        let _ = SAVED_MODES.set(modes);
    }
}

/// Puts the terminal's modes back as `save_terminal` found them. Safe from a signal
/// handler's thread and safe to call more than once.
pub fn restore_terminal() {
    if let Some(modes) = SAVED_MODES.get() {
        let _ =
            rustix::termios::tcsetattr(io::stdin(), rustix::termios::OptionalActions::Now, modes);
    }
}

/// Names the completer offers after `\connect`, `\info`, `@`, `\files`, `\fetch`...:
/// the users online and the peers of open sessions, kept up to date by the UI loop.
pub type Names = Arc<Mutex<BTreeSet<String>>>;

/// Commands after which the next word is a user name.
const NAME_COMMANDS: &[&str] = &[
    "connect",
    "c",
    "info",
    "get_client_info",
    "files",
    "get_uf",
    "get_af",
    "fetch",
    "switch",
    "s",
    "close",
    "close_session",
    "history",
    "accept",
    "decline",
    "trust",
    "verify",
    "msg",
    "m",
    "offer",
];

/// Commands after which the words are paths.
const PATH_COMMANDS: &[&str] = &["send", "send_file"];

/// Tab completion: command names, user names, paths.
struct Complete {
    /// Every command name the user may type, without the backslash.
    commands: Vec<&'static str>,
    /// Online users and session peers.
    names: Names,
    /// Paths after `\send`.
    files: FilenameCompleter,
}

impl Complete {
    fn names_from(&self, prefix: &str, before: &str, after: &str) -> Vec<Pair> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        names
            .into_iter()
            .filter(|n| n.to_lowercase().starts_with(&prefix.to_lowercase()))
            .map(|n| Pair {
                display: n.clone(),
                replacement: format!("{before}{n}{after}"),
            })
            .collect()
    }
}

impl Completer for Complete {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let lead = head.len() - head.trim_start().len();
        let typed = &head[lead..];
        let Some((first, rest)) = typed.split_once(char::is_whitespace) else {
            // The first word: a command, or `@name`.
            if let Some(word) = typed.strip_prefix(['\\', '/']) {
                let shouting = word.chars().any(|c| c.is_ascii_uppercase());
                let slash = &typed[..1];
                let mut out: Vec<Pair> = self
                    .commands
                    .iter()
                    .filter(|c| {
                        // Legacy upper-case names only when the user types upper case.
                        (shouting || !c.chars().any(|ch| ch.is_ascii_uppercase()))
                            && c.to_lowercase().starts_with(&word.to_lowercase())
                            && c.len() > 1
                    })
                    .map(|c| Pair {
                        display: format!("{slash}{c}"),
                        replacement: format!("{slash}{c} "),
                    })
                    .collect();
                out.sort_by(|a, b| a.display.cmp(&b.display));
                out.dedup_by(|a, b| a.display == b.display);
                return Ok((lead, out));
            }
            if let Some(word) = typed.strip_prefix('@') {
                return Ok((lead, self.names_from(word, "@", " ")));
            }
            return Ok((pos, Vec::new()));
        };
        let Some(command) = first.strip_prefix(['\\', '/']) else {
            return Ok((pos, Vec::new()));
        };
        let command = command.to_lowercase();
        if PATH_COMMANDS.contains(&command.as_str()) {
            return self.files.complete(line, pos, ctx);
        }
        let rest = rest.trim_start();
        if NAME_COMMANDS.contains(&command.as_str()) && !rest.contains(char::is_whitespace) {
            return Ok((pos - rest.len(), self.names_from(rest, "", " ")));
        }
        Ok((pos, Vec::new()))
    }
}

impl Hinter for Complete {
    type Hint = String;
}
impl Highlighter for Complete {}
impl Validator for Complete {}
impl Helper for Complete {}

/// Ctrl+C on a line with text clears it; on an empty line it falls through to the
/// default (an interrupt), which asks whether to quit.
struct ClearOrInterrupt;

impl ConditionalEventHandler for ClearOrInterrupt {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        (!ctx.line().is_empty()).then_some(Cmd::Kill(Movement::WholeLine))
    }
}

/// What the UI loop holds of a running editor.
pub struct LineEditor {
    /// Prints above the input line while the user types.
    printer: Box<dyn ExternalPrinter + Send>,
    /// The prompt for the next line; the reader waits for it, so no prompt is drawn
    /// after the client decided to leave, nor two at once.
    next: Sender<String>,
}

impl LineEditor {
    /// Starts the editor thread. `history` is the file for Up/Down (kept across runs);
    /// `commands` the names Tab completes. Each typed line arrives on the returned
    /// channel, which closes when the user quits (Ctrl+D, or Ctrl+C then `y`).
    pub fn spawn(
        history: Option<PathBuf>,
        commands: Vec<&'static str>,
        names: Names,
    ) -> io::Result<(LineEditor, Receiver<String>)> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY_LINES)
            .map_err(io::Error::other)?
            .auto_add_history(false)
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: Editor<Complete, DefaultHistory> =
            Editor::with_config(config).map_err(io::Error::other)?;
        editor.set_helper(Some(Complete {
            commands,
            names,
            files: FilenameCompleter::new(),
        }));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(ClearOrInterrupt)),
        );
        if let Some(path) = &history
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            log::warn!("input history {}: {e}", path.display());
        }
        let printer = editor.create_external_printer().map_err(io::Error::other)?;
        let (lines_tx, lines) = bounded(16);
        let (next, prompts) = bounded::<String>(4);
        thread::Builder::new()
            .name("editor".into())
            .spawn(move || read_lines(editor, history, &prompts, &lines_tx))?;
        Ok((
            LineEditor {
                printer: Box::new(printer),
                next,
            },
            lines,
        ))
    }

    /// Shows `text` above the input line, which stays as the user left it.
    pub fn print(&mut self, text: &str) {
        let mut text = text.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if self.printer.print(text.clone()).is_err() {
            let _ = io::stdout().lock().write_all(text.as_bytes());
        }
    }

    /// Lets the editor read the next line, with `prompt` in front of it.
    pub fn read_next(&self, prompt: &str) {
        let _ = self.next.try_send(prompt.to_string());
    }
}

/// The editor thread: waits for a prompt, reads a line, hands it over, again.
fn read_lines(
    mut editor: Editor<Complete, DefaultHistory>,
    history: Option<PathBuf>,
    prompts: &Receiver<String>,
    lines: &Sender<String>,
) {
    while let Ok(prompt) = prompts.recv() {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                // Ctrl+C on an empty line.
                match editor.readline("quit? (y/N) ") {
                    Ok(answer) if answer.trim().eq_ignore_ascii_case("y") => return,
                    Ok(_) => {
                        // Ask for the same line again, at once.
                        if lines.send(String::new()).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                }
            }
            // Ctrl+D on an empty line, or the terminal went away.
            Err(_) => return,
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &history {
                save_history(&mut editor, path);
            }
        }
        if is_chat_text(&line) {
            // The line stays on screen as typed; it is shown again as `[time] me: text`,
            // like everyone else's, so the typed copy goes.
            erase_typed(&prompt, &line);
        }
        if lines.send(line).is_err() {
            return;
        }
    }
}

/// Writes the input history so Up finds it next time, readable by its owner only.
fn save_history(editor: &mut Editor<Complete, DefaultHistory>, path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.history_mut().save(path) {
        log::warn!("input history {}: {e}", path.display());
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// True for a line that goes to a peer as chat (it is echoed as a chat line instead).
pub fn is_chat_text(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty()
        && (t.starts_with("//") || !(t.starts_with('\\') || t.starts_with('/')))
        && !t.starts_with('@')
}

/// Removes the line just typed (prompt and text, over as many rows as it took).
fn erase_typed(prompt: &str, line: &str) {
    let columns = rustix::termios::tcgetwinsize(io::stdout())
        .map(|w| usize::from(w.ws_col))
        .unwrap_or(80)
        .max(1);
    let width = prompt.chars().count() + line.chars().count();
    let rows = width.div_ceil(columns).max(1);
    let mut out = io::stdout().lock();
    let _ = write!(out, "{}", "\x1b[1A\x1b[2K".repeat(rows)).and_then(|()| out.flush());
}

/// Where `user`'s input history lives: `<data-dir>/<user>/input_history`.
pub fn history_path(data_dir: &std::path::Path, user: &str) -> PathBuf {
    data_dir
        .join(user.to_ascii_lowercase())
        .join("input_history")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_text_is_told_from_commands() {
        assert!(is_chat_text("hello"));
        assert!(is_chat_text("//etc"));
        assert!(!is_chat_text("\\list"));
        assert!(!is_chat_text("/list"));
        assert!(!is_chat_text("@bob hi"));
        assert!(!is_chat_text("   "));
    }
}
