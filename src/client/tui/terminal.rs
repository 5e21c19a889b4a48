//! The terminal itself: where output goes and where typed lines come from.
//!
//! Owns `Terminal`: plain lines in and out with pipes; in a terminal, the line editor
//! (`editor`) for input, output printed above the line being typed, the transfer status
//! line kept just above it, colours (none with `NO_COLOR`), and the login questions
//! (passwords without echo). Everything shown is cleaned first (`sanitize`). It must not
//! parse commands or render events (`ui` does).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, bounded};

use super::editor::{self, LineEditor, Names};
use super::ui::command_names;
use crate::sanitize::{self, Untrusted};

/// The terminal: reads the user's lines and prints without garbling the line being typed.
pub struct Terminal {
    /// True when both stdin and stdout are terminals: then a line editor reads input,
    /// output goes above the input line, and passwords are read without echo. With
    /// pipes, plain lines in and out, no prompt.
    interactive: bool,
    /// Colours for names, notices and errors: a terminal without `NO_COLOR` only.
    colour: bool,
    /// The prompt for the next line: the active session's peer, or `> `.
    prompt: String,
    /// A chat session is active (typed text goes to it).
    active: bool,
    /// The transfer status line kept just above the input line (terminals only); empty
    /// when nothing moves.
    status: String,
    /// True while `status` is on screen right above the input line.
    status_shown: bool,
    /// The line editor, once the UI loop reads lines (terminals only).
    editor: Option<LineEditor>,
    /// Online users and session peers, for Tab completion.
    names: Names,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal::new()
    }
}

impl Terminal {
    /// Looks at stdin and stdout to decide how to behave, and remembers the terminal's
    /// modes so every way out can restore them.
    pub fn new() -> Terminal {
        let interactive = io::stdin().is_terminal() && io::stdout().is_terminal();
        editor::save_terminal();
        Terminal {
            interactive,
            colour: interactive && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            prompt: "> ".into(),
            active: false,
            status: String::new(),
            status_shown: false,
            editor: None,
            names: Names::default(),
        }
    }

    /// Prints `text` as complete lines; in a terminal, above the line being typed, which
    /// stays as it was. Everything shown goes through `sanitize::clean_block` first:
    /// whatever a renderer forgot, no escape sequence or bidi control reaches the
    /// terminal (colours are added after, by us).
    pub fn show(&mut self, text: &str) {
        let text = sanitize::clean_block(text);
        match &mut self.editor {
            Some(editor) => {
                let painted = if self.colour {
                    paint(&text)
                } else {
                    text.into_owned()
                };
                if self.status_shown {
                    // Over the status line, which is drawn again below the new text.
                    editor.print(&format!("{UP_CLEAR}{painted}\n{}", self.status));
                } else {
                    editor.print(&painted);
                }
            }
            None => print_plain(&text),
        }
    }

    /// True when talking to a person at a terminal.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// True while no chat session is active (seed 001's menu letters work then).
    pub fn no_session(&self) -> bool {
        !self.active
    }

    /// Sets the prompt: the active session's peer, or none.
    pub fn set_prompt(&mut self, active: Option<&str>) {
        self.active = active.is_some();
        self.prompt = match active {
            Some(peer) => format!("{}> ", Untrusted(peer)),
            None => "> ".into(),
        };
    }

    /// Nothing to draw: the line editor draws its own prompt when it reads a line, and
    /// pipes get none. Kept so callers need not know which.
    pub fn show_prompt(&self) {}

    /// Lets the line editor read the next line (terminals only): called once the last
    /// line has been handled, so a prompt never appears before its answer, nor after
    /// the client decided to leave.
    pub fn read_next(&mut self) {
        if let Some(editor) = &self.editor {
            editor.read_next(&self.prompt);
        }
    }

    /// Notes a line the user just typed. A command's line stays on screen and pushes the
    /// status line up; the next status is drawn afresh below it.
    pub fn typed(&mut self, line: &str) {
        if !editor::is_chat_text(line) {
            self.status_shown = false;
        }
    }

    /// Replaces the status line just above the input line (terminals only); an empty
    /// status removes the line.
    pub fn set_status(&mut self, status: &str) {
        // One row only, or the line could not be redrawn in place.
        let width = rustix::termios::tcgetwinsize(io::stdout())
            .map_or(80, |w| usize::from(w.ws_col))
            .max(2);
        let status: String = sanitize::clean(status).chars().take(width - 1).collect();
        let Some(editor) = &mut self.editor else {
            return;
        };
        if self.status_shown && self.status == status {
            return;
        }
        match (self.status_shown, status.is_empty()) {
            (false, true) => {}
            (false, false) => editor.print(&status),
            (true, false) => editor.print(&format!("{UP_CLEAR}{status}")),
            // Up to the status line, clear it, up once more: the newline the printer
            // adds brings the input line back onto the status line's row.
            (true, true) => editor.print(&format!("{UP_CLEAR}\x1b[1A")),
        }
        self.status_shown = !status.is_empty();
        self.status = status;
    }

    /// The names Tab completes after `\connect`, `@`...; the UI loop keeps them current.
    pub fn names_mut(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Prints `prompt: ` and reads one line; `None` at end of input. A secret is read
    /// without echo when stdin is a terminal.
    pub fn ask(&self, prompt: &str, secret: bool) -> Option<String> {
        let mut out = io::stdout().lock();
        // The prompt may be the server's `ASK` text: cleaned like everything shown.
        let _ = write!(out, "{}: ", Untrusted(prompt)).and_then(|()| out.flush());
        drop(out);
        if secret && self.interactive {
            return rpassword::read_password().ok();
        }
        read_stdin_line()
    }

    /// Starts reading the user's lines: each arrives on the channel, which closes at
    /// end of input (Ctrl+D, or Ctrl+C and `y`, in a terminal). A terminal gets the line
    /// editor, with `history` for Up/Down; pipes get plain lines, as they always did.
    pub fn spawn_reader(&mut self, history: Option<PathBuf>) -> io::Result<Receiver<String>> {
        if self.interactive {
            let (editor, lines) =
                LineEditor::spawn(history, command_names(), Arc::clone(&self.names))?;
            self.editor = Some(editor);
            return Ok(lines);
        }
        let (tx, rx) = bounded(16);
        thread::Builder::new().name("stdin".into()).spawn(move || {
            while let Some(line) = read_stdin_line() {
                if tx.send(line).is_err() {
                    return;
                }
            }
        })?;
        Ok(rx)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        editor::restore_terminal();
    }
}

/// Cursor up one row, then clear that row.
const UP_CLEAR: &str = "\x1b[1A\x1b[2K";

/// Colours a cleaned block for a terminal: errors red, notices dim cyan, the name in a
/// chat line bold.
fn paint(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("error:") {
                format!("\x1b[31m{line}\x1b[0m")
            } else if line.starts_with("* ") {
                format!("\x1b[36m{line}\x1b[0m")
            } else if let Some(close) = chat_name_span(line) {
                let (head, tail) = line.split_at(close.1);
                let (time, name) = head.split_at(close.0);
                format!("\x1b[2m{time}\x1b[0m\x1b[1;33m{name}\x1b[0m{tail}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// In `[12:03:04] bob: hi` (or `(bob) [...] bob: hi`), where the name starts and ends.
fn chat_name_span(line: &str) -> Option<(usize, usize)> {
    let open = line.find('[')?;
    let close = open + line[open..].find("] ")?;
    let start = close + 2;
    let end = start + line[start..].find(": ")?;
    (end > start && !line[start..end].contains(' ')).then_some((start, end))
}

/// Prints `text`, cleaned, as complete lines on stdout (pipes: no editor, no colour),
/// with one write under the stdout lock, so lines printed from two threads never mix.
pub fn print_plain(text: &str) {
    let text = sanitize::clean_block(text);
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// One line from stdin without its terminator; `None` at end of input.
pub fn read_stdin_line() -> Option<String> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let trimmed = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(trimmed);
            Some(line)
        }
    }
}
