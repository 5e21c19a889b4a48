//! `Lab`: a test's real clients in one temporary folder, a data dir (and a share dir)
//! per user, with a password per user and a helper to open a chat session between two.
//!
//! Owns the folders and who logs in how; the processes are `client::Client`s.

use super::*;

/// A test's clients: one temp dir holding a data dir (and a share dir) per user.
pub struct Lab {
    pub(super) dir: TempDir,
    pub(super) server: SocketAddr,
}

impl Lab {
    pub fn new(server: &Server) -> Lab {
        Lab {
            dir: TempDir::new().expect("temp dir"),
            server: server.addr,
        }
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-data"))
    }

    pub fn share_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("{name}-share"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The default downloads folder of `name` (inside its data dir).
    pub fn downloads(&self, name: &str) -> PathBuf {
        self.data_dir(name).join(name).join("downloads")
    }

    /// Registers `name` with a real client (own data dir, `extra` flags).
    pub fn register(&self, name: &str, extra: &[&str]) -> Client {
        self.start(name, true, extra)
    }

    /// Logs `name` in again with a real client on the same data dir.
    pub fn login(&self, name: &str, extra: &[&str]) -> Client {
        self.start(name, false, extra)
    }

    /// Registers `name` with a real client sharing its share dir.
    pub fn register_sharing(&self, name: &str) -> Client {
        let share = self.share_dir(name);
        let mut c = self.register(name, &["--share", share.to_str().unwrap()]);
        c.expect_line("the sharing line", |l| l.starts_with("* sharing "));
        c
    }

    pub(super) fn start(&self, name: &str, new: bool, extra: &[&str]) -> Client {
        let data = self.data_dir(name);
        let data = data.to_str().unwrap();
        let mut args = vec!["--data-dir", data];
        args.extend_from_slice(extra);
        Client::start_with(self.server, name, &password(name), new, &args)
    }
}

/// The password every test user gets.
pub fn password(name: &str) -> String {
    format!("{name} password")
}

/// `requester` asks `target` (both real clients) and `target` accepts; waits until both
/// print that the session is open.
pub fn open_session(requester: &mut Client, rname: &str, target: &mut Client, tname: &str) {
    requester.send(&format!("\\connect {tname}"));
    requester.expect(&format!("* asking {tname} to chat..."));
    target.expect(&format!(
        "* {rname} wants to chat: \\accept {rname} or \\decline {rname}"
    ));
    target.send(&format!("\\accept {rname}"));
    target.expect(&format!(
        "* session with {rname} open; what you type goes to {rname}\n"
    ));
    requester.expect(&format!(
        "* session with {tname} open; what you type goes to {tname}\n"
    ));
}
