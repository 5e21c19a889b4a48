//! Seed 003's numbered menu (`\menu`): view users, select a user, view all files, exit;
//! for a selected user, view IP/port, view files, chat, fetch a file.
//!
//! Owns only the menu's state between typed lines and turning a choice into the
//! [`UserCommand`] a typed command would give. It must not print (it returns the text to
//! show) nor act on anything itself: the UI loop runs the command.

use super::ui::UserCommand;
use crate::sanitize::Untrusted;

/// Where the menu stands, waiting for the next typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Menu {
    /// The main choices.
    Main,
    /// Waiting for a user name to select.
    PickUser,
    /// The choices for one user.
    User(String),
    /// Waiting for the name of a file to fetch from this user.
    FetchName(String),
}

/// What a typed line did to the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The menu after this line; `None` when it is left.
    pub next: Option<Menu>,
    /// Text to show (the next choices, or why the line was not understood).
    pub show: Option<String>,
    /// The command chosen, if any.
    pub run: Option<UserCommand>,
    /// The line was not a menu answer: it left the menu and is then taken as if typed
    /// at the prompt (a command runs, text is chat), rather than lost.
    pub pass_on: bool,
}

/// The main menu's text.
pub fn main_text() -> String {
    "Menu (type a number; anything else leaves it):\n  1) view online users\n  2) select a user\n  3) view all shared files\n  4) exit".into()
}

fn user_text(user: &str) -> String {
    format!(
        "{} (type a number; anything else leaves the menu):\n  1) view IP and port\n  2) view files\n  3) chat\n  4) fetch a file",
        Untrusted(user)
    )
}

fn leave() -> Step {
    Step {
        next: None,
        show: Some("(left the menu)".into()),
        run: None,
        pass_on: false,
    }
}

/// Leaves the menu and hands the line on: it was a command or text, not an answer.
fn leave_with_line() -> Step {
    Step {
        pass_on: true,
        ..leave()
    }
}

/// Takes one typed line while `menu` waits for it.
pub fn step(menu: &Menu, line: &str) -> Step {
    let line = line.trim();
    if line.starts_with('\\') || line.starts_with('/') {
        return leave_with_line();
    }
    let stay = |next: Menu, show: String, run: Option<UserCommand>| Step {
        next: Some(next),
        show: Some(show),
        run,
        pass_on: false,
    };
    let run = |command: UserCommand| Step {
        next: None,
        show: None,
        run: Some(command),
        pass_on: false,
    };
    match menu {
        Menu::Main => match line {
            "1" => stay(
                Menu::Main,
                main_text(),
                Some(UserCommand::List { offset: 0 }),
            ),
            "2" => stay(Menu::PickUser, "Which user?".into(), None),
            "3" => stay(
                Menu::Main,
                main_text(),
                Some(UserCommand::Files { user: None }),
            ),
            "4" => run(UserCommand::Quit),
            "" => leave(),
            _ => leave_with_line(),
        },
        Menu::PickUser if line.is_empty() => leave(),
        Menu::PickUser if line.contains(char::is_whitespace) => leave_with_line(),
        Menu::PickUser => stay(Menu::User(line.to_string()), user_text(line), None),
        Menu::User(user) => {
            let user = user.clone();
            match line {
                "1" => stay(
                    Menu::User(user.clone()),
                    user_text(&user),
                    Some(UserCommand::Info { user }),
                ),
                "2" => stay(
                    Menu::User(user.clone()),
                    user_text(&user),
                    Some(UserCommand::Files { user: Some(user) }),
                ),
                "3" => run(UserCommand::Connect { user }),
                "4" => stay(Menu::FetchName(user), "Which file?".into(), None),
                "" => leave(),
                _ => leave_with_line(),
            }
        }
        Menu::FetchName(_) if line.is_empty() => leave(),
        Menu::FetchName(user) => run(UserCommand::Fetch {
            user: user.clone(),
            name: line.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_become_commands() {
        assert_eq!(
            step(&Menu::Main, "1").run,
            Some(UserCommand::List { offset: 0 })
        );
        assert_eq!(step(&Menu::Main, "4").run, Some(UserCommand::Quit));
        let picked = step(&Menu::Main, "2");
        assert_eq!(picked.next, Some(Menu::PickUser));
        let bob = step(&Menu::PickUser, "bob");
        assert_eq!(bob.next, Some(Menu::User("bob".into())));
        assert_eq!(
            step(&Menu::User("bob".into()), "3").run,
            Some(UserCommand::Connect { user: "bob".into() })
        );
        let fetch = step(&Menu::User("bob".into()), "4");
        assert_eq!(
            step(fetch.next.as_ref().unwrap(), "a b.txt").run,
            Some(UserCommand::Fetch {
                user: "bob".into(),
                name: "a b.txt".into()
            })
        );
        assert_eq!(step(&Menu::Main, "hello").next, None);
        assert!(step(&Menu::Main, "hello").pass_on);
        let typed = step(&Menu::PickUser, "\\list");
        assert!(typed.next.is_none() && typed.pass_on);
        assert!(!step(&Menu::Main, "").pass_on);
    }
}
