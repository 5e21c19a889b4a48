//! One connection's outgoing side: a bounded queue and the writer thread that drains it.
//!
//! Owns writing to one client's socket. Anyone may queue a message without blocking; a
//! client that stops reading until its queue is full is disconnected (DESIGN.md rule 3),
//! so no other thread ever waits on it. It must not read from the socket.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::protocol::limits::{OUTGOING_QUEUE, WRITE_TIMEOUT};
use crate::protocol::line::write_lines;
use crate::protocol::server_msg::ServerMsg;

/// Most bytes gathered from the queue into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Stack for writer threads: they only copy bytes, so a small one keeps thousands cheap.
const WRITER_STACK: usize = 64 * 1024;

enum Outgoing {
    /// Complete lines to write.
    Text(String),
    /// Write nothing more: send FIN and stop.
    Close,
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
}

impl Outbox {
    /// Starts the writer thread for `stream` (a clone of the connection's socket).
    pub fn spawn(stream: TcpStream, peer: SocketAddr) -> io::Result<Outbox> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let stream = Arc::new(stream);
        let (tx, rx) = bounded(OUTGOING_QUEUE);
        let writer_stream = Arc::clone(&stream);
        thread::Builder::new()
            .name(format!("write-{peer}"))
            .stack_size(WRITER_STACK)
            .spawn(move || write_loop(&writer_stream, &rx, peer))?;
        Ok(Outbox { tx, stream, peer })
    }

    /// Queues a message; false if the client is gone or was just dropped for being slow.
    pub fn send(&self, msg: &ServerMsg) -> bool {
        self.push(Outgoing::Text(msg.to_wire()))
    }

    /// Queues a FIN after everything already queued.
    pub fn close(&self) {
        self.push(Outgoing::Close);
    }

    /// Cuts the connection now, in both directions; the reader sees end of stream.
    pub fn kill(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn push(&self, item: Outgoing) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                log::warn!(
                    "{}: outgoing queue full; disconnecting a client that does not read",
                    self.peer
                );
                self.kill();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn write_loop(stream: &TcpStream, rx: &Receiver<Outgoing>, peer: SocketAddr) {
    let mut batch = String::new();
    let mut closing = false;
    while let Ok(first) = rx.recv() {
        // Everything already queued goes out in one write: a burst of presence events
        // to thousands of clients costs one system call per client, not one per line.
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Outgoing::Text(text) => batch.push_str(&text),
                Outgoing::Close => {
                    closing = true;
                    break;
                }
            }
            if batch.len() < WRITE_BATCH {
                item = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let mut out = stream;
            if let Err(e) = write_lines(&mut out, &batch) {
                log::debug!("{peer}: write failed: {e}");
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            batch.clear();
        }
        if closing {
            break;
        }
    }
    // Only the write half: the reader may still be draining what the client sent, so
    // the client gets a FIN after our last line instead of a reset that could lose it.
    let _ = stream.shutdown(Shutdown::Write);
}
