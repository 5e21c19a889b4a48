//! Whose thread runs the engine: the core loop's `select!`, and the shortcuts that let
//! the thread holding a chat line run it through the engine itself.
//!
//! The engine sits behind one mutex. The core loop waits on the front end's commands,
//! the server link, the peer links, transfer progress and timers without it, and takes
//! it to handle what arrived. A plain chat line typed by the person (`Say`, `SayTo`)
//! and a chat message from a peer (`MSG`) are handled on the thread that has them when
//! the engine is idle and nothing queued before them waits (`lane`): one wake-up less
//! on each side of a chat line. It must not decide what any of it means (the engine's
//! handlers do), and nothing here waits with the lock held except the handlers
//! themselves, which never wait for this loop.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, never, select, tick};

use super::super::command::Command as UserCommand;
use super::super::lane::{Counts, Lane, LaneEnd};
use super::super::peer_link::PeerEvent;
use super::super::transfer::TransferEvent;
use super::Engine;
use crate::protocol::limits::HEARTBEAT_INTERVAL;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::Command;

/// How often waiting requests and tickets are checked for expiry.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// How often the progress of active transfers is reported.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// The engine, waiting for whichever thread holds the lock. A handler that panicked
/// leaves the engine as it was; the core goes on rather than take the client down.
fn lock(core: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The core loop: handles what arrives until the front end quits or goes away, then
/// closes the sessions and logs out.
pub(in super::super) fn run(
    core: &Mutex<Engine>,
    commands: &LaneEnd<UserCommand>,
    peers: &LaneEnd<PeerEvent>,
    xfers: &Receiver<TransferEvent>,
) {
    let heartbeat = tick(HEARTBEAT_INTERVAL);
    let expiry = tick(EXPIRY_TICK);
    let progress = tick(PROGRESS_TICK);
    loop {
        // The server link's receiver, cloned: the link may be replaced (reconnect)
        // while another thread holds the engine.
        let events = lock(core)
            .link
            .as_ref()
            .map_or_else(never, |l| l.events.clone());
        select! {
            recv(commands.rx) -> command => {
                let Ok(command) = command else { break };
                let mut engine = lock(core);
                let go_on = engine.on_command(command);
                commands.handled();
                if !go_on {
                    break;
                }
                engine.flush();
            }
            recv(events) -> event => {
                let mut engine = lock(core);
                engine.on_link_event(event.ok());
                engine.flush();
            }
            recv(peers.rx) -> event => {
                let mut engine = lock(core);
                if let Ok(event) = event {
                    engine.sessions.on_peer_event(event);
                    peers.handled();
                }
                engine.flush();
            }
            recv(xfers) -> event => {
                let mut engine = lock(core);
                if let Ok(event) = event {
                    engine.transfers.on_event(event);
                }
                engine.flush();
            }
            recv(progress) -> _ => {
                let mut engine = lock(core);
                engine.transfers.progress();
                engine.flush();
            }
            recv(expiry) -> _ => {
                let mut engine = lock(core);
                engine.sessions.tick();
                engine.transfers.tick();
                engine.auto_reconnect_if_due();
                engine.flush();
            }
            recv(heartbeat) -> _ => {
                if let Some(link) = &lock(core).link {
                    link.send_line(&Command::Ping.to_string());
                }
            }
        }
    }
    let mut engine = lock(core);
    engine.stopped = true;
    engine.sessions.close_all();
    engine.flush();
    engine.quit();
}

/// Gives the command and peer lanes their shortcuts into `core`: chat lines only.
pub(in super::super) fn shortcuts(
    core: &Arc<Mutex<Engine>>,
    commands: &Lane<UserCommand>,
    peers: &Lane<PeerEvent>,
) {
    let weak = Arc::downgrade(core);
    commands.set_shortcut(Box::new(move |command: UserCommand, counts: &Counts| {
        if !matches!(command, UserCommand::Say { .. } | UserCommand::SayTo { .. }) {
            return Err(command);
        }
        let Some(core) = weak.upgrade() else {
            return Err(command);
        };
        let Some(mut engine) = idle(&core, counts) else {
            return Err(command);
        };
        engine.on_command(command);
        engine.flush();
        Ok(())
    }));
    let weak = Arc::downgrade(core);
    peers.set_shortcut(Box::new(move |event: PeerEvent, counts: &Counts| {
        if !matches!(
            event,
            PeerEvent::Msg {
                msg: PeerMsg::Msg { .. },
                ..
            }
        ) {
            return Err(event);
        }
        let Some(core) = weak.upgrade() else {
            return Err(event);
        };
        let Some(mut engine) = idle(&core, counts) else {
            return Err(event);
        };
        engine.sessions.on_peer_event(event);
        engine.flush();
        Ok(())
    }));
}

/// The engine, if no thread holds it, it still runs, and everything queued on the lane
/// has been handled (so nothing is overtaken).
fn idle<'a>(core: &'a Mutex<Engine>, counts: &Counts) -> Option<MutexGuard<'a, Engine>> {
    let engine = core.try_lock().ok()?;
    (!engine.stopped && counts.drained()).then_some(engine)
}
