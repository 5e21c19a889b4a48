//! The client: one core and its front ends.
//!
//! `core` is the engine (server link, peer links, sessions, transfers, shares,
//! history) driven by typed commands and reporting typed events; `tui` is the terminal
//! front end; `web` serves a local page as the second front end. This module only picks the front end and handles Ctrl+C; it must not
//! hold client state or print.

pub mod core;
pub mod tui;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, bounded};

pub use self::core::ClientConfig;

/// Runs the client until the user leaves; returns the process exit code.
pub fn run(config: ClientConfig, gui: web::GuiConfig) -> u8 {
    let logged_in = Arc::new(AtomicBool::new(false));
    let interrupts = match watch_ctrl_c(Arc::clone(&logged_in)) {
        Ok(rx) => rx,
        Err(e) => {
            tui::ui::Terminal::new().show(&format!("error: {e}"));
            return 1;
        }
    };
    if gui.gui {
        // The page logs in; Ctrl+C at any time logs out and stops the server.
        logged_in.store(true, Ordering::SeqCst);
        return web::run(&config, &gui, &interrupts);
    }
    tui::run(&config, &interrupts, || {
        logged_in.store(true, Ordering::SeqCst)
    })
}

/// Ctrl+C before login ends the process at once (there is nothing to tidy); after
/// login it arrives on the returned channel so the front end can log out cleanly.
fn watch_ctrl_c(logged_in: Arc<AtomicBool>) -> Result<Receiver<()>, String> {
    let (tx, rx) = bounded(1);
    ctrlc::set_handler(move || {
        if logged_in.load(Ordering::SeqCst) {
            let _ = tx.try_send(());
        } else {
            // At the password prompt echo is off: put the terminal back first, and end
            // the half-written prompt line so the shell's prompt starts on its own.
            // A Ctrl+C typed in the instant between the prompt being shown and the
            // password reader turning echo off would see that reader turn it off after
            // us: restore once more a moment later, just before leaving.
            tui::editor::restore_terminal();
            println!();
            std::thread::sleep(std::time::Duration::from_millis(50));
            tui::editor::restore_terminal();
            std::process::exit(130);
        }
    })
    .map_err(|e| format!("cannot handle Ctrl+C: {e}"))?;
    Ok(rx)
}
