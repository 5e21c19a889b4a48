//! One connection's outgoing side: a queue bounded in messages and in bytes, and the
//! writer thread that drains it.
//!
//! Owns writing to one client's socket. Two kinds of senders, two policies:
//! - the connection's own replies (`reply`) wait for room, so a client that pipelines
//!   commands is served at the pace it reads: its reader thread simply stops reading
//!   its lines until the writer catches up (bounded by the write timeout);
//! - pushes from other connections (`send`: events) never wait: a client whose queue is
//!   full is disconnected (DESIGN.md rule 3), so no other thread ever waits on it.
//!
//! Replies wait at half the queue, so events still find room while a pipelining client
//! reads. It must not read from the socket.
//!
//! Every byte it writes is TLS: the writer thread is the only one that takes records out
//! of the connection's rustls state (`TlsSealer`), so records reach the socket in the
//! order rustls made them; the reader asks it to (`flush`) when reading made records.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::crypto::tls::TlsSealer;

use crate::protocol::limits::{
    OUTGOING_QUEUE, OUTGOING_QUEUE_BYTES, REPLY_QUEUE, REPLY_QUEUE_BYTES, WRITE_TIMEOUT,
};
use crate::protocol::server_msg::ServerMsg;

/// Most bytes gathered from the queue into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Stack for writer threads: they only copy bytes, so a small one keeps thousands cheap.
const WRITER_STACK: usize = 64 * 1024;

/// Longest single wait for room; the condition is re-checked after it, so a lost
/// wake-up costs at most this.
const ROOM_POLL: Duration = Duration::from_millis(200);

enum Outgoing {
    /// Complete lines to write.
    Text(String),
    /// Write the records rustls has ready (made by the reader: handshake, alerts).
    Flush,
    /// Write nothing more: send FIN and stop.
    Close,
}

/// What the queue holds, shared by the senders and the writer.
#[derive(Default)]
struct Room {
    /// Bytes queued or being written.
    bytes: AtomicUsize,
    /// The connection is cut or the writer stopped: nothing more will be written.
    dead: AtomicBool,
    /// Guards nothing but the wait below (held only to check and to notify).
    lock: Mutex<()>,
    /// Signalled when the writer frees room or the connection dies.
    freed: Condvar,
    /// Replies waiting for room now. The writer signals only when one waits: a
    /// `notify_all` is a system call even with nobody waiting, and it was one per write
    /// of every writer thread (issue 14).
    waiters: AtomicUsize,
}

impl Room {
    /// Wakes the replies waiting for room, if any. The caller changed `bytes` or `dead`
    /// first; a waiter counts itself in `waiters` before it looks at them (both SeqCst),
    /// so either it sees the change or this sees it waiting.
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.freed.notify_all();
    }
}

/// A cheap, cloneable handle to queue lines for one client.
#[derive(Clone)]
pub struct Outbox {
    /// The queue the writer thread drains.
    tx: Sender<Outgoing>,
    /// The socket, kept so an overflowing or shutting-down client can be cut off from
    /// any thread.
    stream: Arc<TcpStream>,
    /// The client's address, for logs.
    peer: SocketAddr,
    /// Bytes queued, and the wait for room.
    room: Arc<Room>,
}

impl Outbox {
    /// Starts the writer thread for `stream` (the connection's socket), sealing with
    /// `sealer`.
    /// The socket is shared with the connection's TLS reader (one descriptor).
    pub fn spawn(
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        sealer: TlsSealer,
    ) -> io::Result<Outbox> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let (tx, rx) = bounded(OUTGOING_QUEUE);
        let room = Arc::new(Room::default());
        let writer_stream = Arc::clone(&stream);
        let writer_room = Arc::clone(&room);
        thread::Builder::new()
            .name(format!("write-{peer}"))
            .stack_size(WRITER_STACK)
            .spawn(move || write_loop(&writer_stream, &sealer, &rx, peer, &writer_room))?;
        Ok(Outbox {
            tx,
            stream,
            peer,
            room,
        })
    }

    /// Queues a message pushed by someone else (an event); never waits. False if the
    /// client is gone, or was just dropped because its queue is full (in messages or
    /// bytes): a client that does not read must not hold up anyone.
    pub fn send(&self, msg: &ServerMsg) -> bool {
        self.send_wire(msg.to_wire())
    }

    /// Like [`Outbox::send`] for lines already formatted (complete, each ending in
    /// `\n`): one text formatted once can go to thousands of clients.
    pub fn send_wire(&self, text: String) -> bool {
        if self.room.dead.load(Ordering::SeqCst) {
            return false;
        }
        let queued = self.room.bytes.load(Ordering::SeqCst);
        if queued + text.len() > OUTGOING_QUEUE_BYTES {
            log::warn!(
                "{}: {queued} bytes wait unread; disconnecting a client that does not read",
                self.peer
            );
            self.kill();
            return false;
        }
        self.push(Outgoing::Text(text))
    }

    /// Queues this connection's own reply, waiting while the client has more than
    /// `REPLY_QUEUE` messages or `REPLY_QUEUE_BYTES` bytes unread (a reply alone in the
    /// queue always goes, whatever its size). A client that reads nothing for the write
    /// timeout is disconnected. False if the client is gone.
    pub fn reply(&self, msg: &ServerMsg) -> bool {
        let text = msg.to_wire();
        if !self.wait_for_room(text.len()) {
            return false;
        }
        self.push(Outgoing::Text(text))
    }

    /// Waits until a reply of `len` bytes fits; false if the client died or the wait
    /// passed the write timeout (then the client is cut off).
    fn wait_for_room(&self, len: usize) -> bool {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let room = &self.room;
        let mut guard = room.lock.lock().unwrap_or_else(|p| p.into_inner());
        room.waiters.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&room.waiters);
        loop {
            if room.dead.load(Ordering::SeqCst) {
                return false;
            }
            let queued = room.bytes.load(Ordering::SeqCst);
            if self.tx.len() < REPLY_QUEUE && (queued == 0 || queued + len <= REPLY_QUEUE_BYTES) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(guard);
                log::warn!(
                    "{}: nothing read for {} s; disconnecting",
                    self.peer,
                    WRITE_TIMEOUT.as_secs()
                );
                self.kill();
                return false;
            }
            guard = match room.freed.wait_timeout(guard, left.min(ROOM_POLL)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Asks the writer to send the records rustls has ready. Never waits: when the
    /// queue is full the writer drains them with the next line anyway.
    pub fn flush(&self) {
        let _ = self.tx.try_send(Outgoing::Flush);
    }

    /// Queues a FIN after everything already queued.
    pub fn close(&self) {
        self.push(Outgoing::Close);
    }

    /// Cuts the connection now, in both directions; the reader sees end of stream and
    /// anyone waiting for room stops waiting.
    pub fn kill(&self) {
        self.room.dead.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
        self.room.notify();
    }

    fn push(&self, item: Outgoing) -> bool {
        let len = match &item {
            Outgoing::Text(text) => text.len(),
            Outgoing::Flush | Outgoing::Close => 0,
        };
        self.room.bytes.fetch_add(len, Ordering::SeqCst);
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(e) => {
                self.room.bytes.fetch_sub(len, Ordering::SeqCst);
                if let TrySendError::Full(_) = e {
                    log::warn!(
                        "{}: outgoing queue full; disconnecting a client that does not read",
                        self.peer
                    );
                    self.kill();
                }
                false
            }
        }
    }
}

/// Takes a waiter off the count when the wait ends, however it ends.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn write_loop(
    stream: &TcpStream,
    sealer: &TlsSealer,
    rx: &Receiver<Outgoing>,
    peer: SocketAddr,
    room: &Room,
) {
    let mut batch = String::new();
    let mut sealed = Vec::with_capacity(WRITE_BATCH + 1024);
    let mut closing = false;
    while let Ok(first) = rx.recv() {
        // Everything already queued goes out in one write: a burst of presence events
        // to thousands of clients costs one system call per client, not one per line.
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Outgoing::Text(text) => batch.push_str(&text),
                Outgoing::Flush => {}
                Outgoing::Close => {
                    closing = true;
                    break;
                }
            }
            if batch.len() < WRITE_BATCH {
                item = rx.try_recv().ok();
            }
        }
        sealed.clear();
        let made = if closing {
            sealer
                .seal(batch.as_bytes(), &mut sealed)
                .and_then(|()| sealer.close(&mut sealed))
        } else {
            sealer.seal(batch.as_bytes(), &mut sealed)
        };
        if !sealed.is_empty() || made.is_err() {
            let mut out = stream;
            if let Err(e) = made.and_then(|()| out.write_all(&sealed)) {
                log::debug!("{peer}: write failed: {e}");
                room.dead.store(true, Ordering::SeqCst);
                let _ = stream.shutdown(Shutdown::Both);
                room.notify();
                return;
            }
        }
        if !batch.is_empty() {
            room.bytes.fetch_sub(batch.len(), Ordering::SeqCst);
            room.notify();
            batch.clear();
        }
        if closing {
            break;
        }
    }
    room.dead.store(true, Ordering::SeqCst);
    room.notify();
    // Only the write half: the reader may still be draining what the client sent, so
    // the client gets a FIN after our last line instead of a reset that could lose it.
    let _ = stream.shutdown(Shutdown::Write);
}
