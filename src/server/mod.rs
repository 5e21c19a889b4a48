//! The peerchat server: settings, the accept loop, the connection caps and shutdown.
//!
//! Owns the listening socket and the life of the whole server. One OS thread serves each
//! accepted connection (plus a small writer thread); the accept loop never does
//! per-connection work beyond spawning, and refuses connections over the total cap or
//! over the per-address cap of connections not logged in yet. It must not parse messages
//! (`conn`, `login`, `commands` do) nor touch SQL (`store` does).

pub mod cluster;
pub mod commands;
pub mod conn;
pub mod file_index;
pub mod futex_hash;
pub mod hash_gate;
pub mod ladder;
pub mod login;
pub mod login_limits;
pub mod mailbox;
pub mod offers;
pub mod outbox;
pub mod presence;
pub mod rate_limit;
pub mod registry;
pub mod relay;
pub mod relay_token;
pub mod session_log;
pub mod store;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits;
use crate::protocol::server_msg::{Event, ServerMsg};
use outbox::Outbox;
use rate_limit::{AddressSlots, TokenBuckets, source_key};
use registry::Registry;
use store::Store;

/// Stack for connection threads. They parse short lines and call bcrypt and SQLite,
/// which need far less; a deliberate size keeps thousands of threads cheap.
const CONN_STACK: usize = 256 * 1024;

/// Stack for connection threads in a cluster: they also call the Redis client, whose
/// reply parser (combinator-based) takes deep frames, above all in debug builds. Only
/// address space: pages a thread never touches cost no memory.
const CLUSTER_CONN_STACK: usize = 1024 * 1024;

/// Pending connections the kernel queues for us. std's default of 128 drops SYNs in a
/// burst, and the client then waits a second to retry.
const BACKLOG: i32 = 1024;

/// How often the accept loop looks at the shutdown flag when no one is connecting. The
/// listener blocks in `accept` with this timeout (SO_RCVTIMEO), so a new connection is
/// taken at once, never after a sleep.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Pause after an accept error (running out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long shutdown waits for clients to close after `EVENT SHUTDOWN`, before cutting
/// the rest off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Server settings; every flag of `peerchat-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub addr: SocketAddr,
    /// The database: a SQLite file (created with its folder if missing), or a PostgreSQL
    /// URL `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` that several servers may
    /// share (the password is never logged).
    #[arg(long, default_value = "data/server.db")]
    pub db: store::DbLocation,
    /// bcrypt cost for new password hashes (4-31; each step doubles the work).
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_BCRYPT_COST, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// Seconds a (username, address) stays blocked after 3 failed logins (1-86400).
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_BLOCK.as_secs(), value_parser = clap::value_parser!(u64).range(1..=limits::MAX_BLOCK_SECS))]
    pub block_secs: u64,
    /// Seconds a client has to finish logging in (1-3600).
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_LOGIN_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=limits::MAX_LOGIN_TIMEOUT_SECS))]
    pub login_timeout: u64,
    /// Seconds a logged-in client may stay silent before it is dropped (1-86400).
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=limits::MAX_IDLE_TIMEOUT_SECS))]
    pub idle_timeout: u64,
    /// Most simultaneous connections (1-65536); more are refused with ERR 503 SERVER_FULL.
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_MAX_CLIENTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAX_CLIENTS))]
    pub max_clients: usize,
    /// Most connections from one address (IPv6: one /64) not logged in yet (1-65536);
    /// more are refused with ERR 435 TOO_MANY_CONNECTIONS.
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_MAX_PRELOGIN_PER_IP, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAX_CLIENTS))]
    pub max_prelogin_per_ip: usize,
    /// CONNECT and TRANSFER requests one user may make at once (1-10000); past it they
    /// get ERR 434 RATE_LIMITED.
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_REQUEST_BURST, value_parser = clap::value_parser!(u32).range(1..=limits::MAX_REQUEST_SETTING as i64))]
    pub request_burst: u32,
    /// Further CONNECT and TRANSFER requests per second per user (1-10000).
    #[arg(long, allow_negative_numbers = true, default_value_t = limits::DEFAULT_REQUEST_RATE, value_parser = clap::value_parser!(u32).range(1..=limits::MAX_REQUEST_SETTING as i64))]
    pub request_rate: u32,
    /// Messages (`SEND`) that may wait for one offline recipient (1-1000000); more get
    /// ERR 451 MAILBOX_FULL.
    #[arg(long, default_value_t = limits::MAILBOX_PER_USER, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAILBOX_SETTING))]
    pub mailbox_per_user: usize,
    /// Messages that may wait for all offline recipients together (1-1000000); more get
    /// ERR 452 MAILBOXES_FULL.
    #[arg(long, default_value_t = limits::MAILBOX_TOTAL, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAILBOX_SETTING))]
    pub mailbox_total: usize,
    /// TLS certificate chain (PEM) to use instead of the self-signed one made beside the
    /// database on first start; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The TLS configuration made from the certificate (set by the binary after it
    /// prints the fingerprint; `run` makes it when unset).
    #[arg(skip)]
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Join a cluster of servers sharing one database: presence and delivery between
    /// them through this Redis (`redis://HOST:PORT`). Without it the server stands alone.
    #[arg(long, value_name = "redis://HOST:PORT")]
    pub cluster: Option<String>,
    /// The relay for peers that cannot reach each other.
    #[command(flatten)]
    pub relay: relay::RelayConfig,
}

impl ServerConfig {
    /// How long a block lasts.
    pub fn block(&self) -> Duration {
        Duration::from_secs(self.block_secs)
    }
    /// How long a login may take.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }
    /// How long a logged-in client may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }
}

/// State shared by every connection thread.
pub struct Shared {
    /// Who is connected and online.
    pub registry: Registry,
    /// Accounts and blocks.
    pub store: Store,
    /// What online users share.
    pub files: file_index::FileIndex,
    /// Settings.
    pub config: ServerConfig,
    /// A bcrypt hash of nothing anyone knows, at the configured cost, checked against
    /// when a name does not exist so that timing does not reveal which names do.
    pub dummy_hash: String,
    /// Limits how many bcrypt computations run at once, so logins never take every core
    /// from the users already online, and how long and from where logins queue for them.
    pub hash_gate: hash_gate::HashGate,
    /// Password checks reserved per (username, address) and per username.
    pub login_limits: login_limits::LoginLimits,
    /// Username checks during registration, per source address.
    pub name_checks: TokenBuckets<std::net::IpAddr>,
    /// CONNECT and TRANSFER requests, per user key.
    pub requests: TokenBuckets<String>,
    /// `SEND`s, per user key (`MESSAGE_BURST`, `MESSAGE_RATE`).
    pub messages: TokenBuckets<String>,
    /// Connections not logged in yet, per source address.
    pub prelogin: AddressSlots,
    /// TLS for every connection (there is no plaintext port).
    pub tls: Arc<rustls::ServerConfig>,
    /// Refusals being answered over TLS right now (each on a short thread).
    pub refusing: std::sync::atomic::AtomicUsize,
    /// Presence and delivery across servers (`--cluster`); `None` when alone.
    pub cluster: Option<cluster::Cluster>,
}

/// The server's TLS identity as configured: the operator's certificate, or the
/// self-signed one beside the database (made on first start).
pub fn tls_identity(config: &ServerConfig) -> Result<crate::crypto::tls::ServerIdentity> {
    crate::crypto::tls::ServerIdentity::load_or_create(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        &config.db.file_anchor(),
    )
}

/// Binds the listening socket with address reuse and a large backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Seed 001: a restarted server must not wait for old sockets in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_read_timeout(Some(ACCEPT_POLL))?;
    Ok(socket.into())
}

/// Serves `listener` until `stop` is set, then tells every client, closes the store and
/// returns.
pub fn run(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    // Before the connection threads: with the kernel's default of 16 buckets for this
    // process, every wake-up cost O(online users) (see `futex_hash`).
    let buckets = futex_hash::ensure(futex_hash::slots_for(config.max_clients));
    log::info!("futex hash: {buckets:?} buckets");
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| Error::Config(format!("no randomness: {e}")))?;
    // What one hash costs here, to tell when the bcrypt queue is longer than a login's
    // deadline can wait: measured on a hashing thread, at the low priority logins get
    // (on a busy machine that is far slower than this thread would hash).
    let hash_gate = hash_gate::HashGate::for_this_machine(Duration::ZERO);
    let cost = config.bcrypt_cost;
    let dummy_hash = hash_gate
        .calibrate(move || bcrypt::hash(random, cost))
        .map_err(|r| Error::Config(format!("the bcrypt queue refused its first hash: {r:?}")))??;
    let login_limits = login_limits::LoginLimits::new();
    match store.login_failures() {
        Ok(rows) => {
            for (name, ip, failures, blocked_for) in &rows {
                match ip.parse() {
                    Ok(ip) => login_limits.restore(name, ip, *failures, *blocked_for),
                    Err(_) => log::warn!("ignoring a stored failure with a bad address"),
                }
            }
            if !rows.is_empty() {
                log::info!("{} login failure record(s) still in force", rows.len());
            }
        }
        Err(e) => log::error!("reading login failures: {e}"),
    }
    // A session open when the last run stopped may well go on (peers talk directly): it
    // is marked unknown, not ended, and its clients report the real end later.
    mark_sessions_unknown(&store, "left open by the last run");
    let tls = match &config.tls {
        Some(tls) => Arc::clone(tls),
        None => tls_identity(&config)?.server_config()?,
    };
    let cluster = match &config.cluster {
        Some(url) => {
            let cluster = cluster::Cluster::connect(url)?;
            log::info!("cluster: joined as server {} through {url}", cluster.id);
            Some(cluster)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        cluster,
        tls,
        refusing: std::sync::atomic::AtomicUsize::new(0),
        registry: Registry::default(),
        store,
        files: file_index::FileIndex::default(),
        dummy_hash,
        hash_gate,
        login_limits,
        name_checks: TokenBuckets::new(limits::NAME_CHECK_BURST, limits::NAME_CHECK_REFILL),
        requests: TokenBuckets::per_second(config.request_burst, config.request_rate),
        messages: TokenBuckets::per_second(limits::MESSAGE_BURST, limits::MESSAGE_RATE),
        prelogin: AddressSlots::new(config.max_prelogin_per_ip),
        config,
    });
    let presence = presence::spawn(Arc::clone(&shared), Arc::clone(&stop))?;
    let cluster_threads = match shared.cluster {
        Some(_) => cluster::Cluster::spawn(&shared, &stop)?,
        None => Vec::new(),
    };
    let next_id = AtomicU64::new(1);
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => admit(
                stream,
                peer,
                next_id.fetch_add(1, Ordering::Relaxed),
                &shared,
            ),
            // The accept timeout: go round and look at the flag.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Running out of file descriptors, for one: back off and keep serving.
                log::warn!("accept failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
    drop(listener);
    if presence.join().is_err() {
        log::error!("the presence thread panicked");
    }
    shut_down(&shared);
    for thread in cluster_threads {
        if thread.join().is_err() {
            log::error!("a cluster thread panicked");
        }
    }
    shared.store.close()?;
    log::info!("database closed; server stopped");
    Ok(())
}

/// Starts serving one accepted connection, or refuses it when the server is full or its
/// address has too many connections that have not logged in yet.
fn admit(stream: TcpStream, peer: SocketAddr, id: u64, shared: &Arc<Shared>) {
    let max = shared.config.max_clients;
    if shared.registry.connection_count() >= max {
        log::warn!("{peer}: refused, {max} connections already");
        refuse(
            shared,
            stream,
            ErrorCode::ServerFull,
            format!("the server is full ({max} connections); try again later"),
        );
        return;
    }
    if !shared.prelogin.acquire(id, source_key(peer.ip())) {
        let most = shared.prelogin.max();
        log::debug!("{peer}: refused, {most} connections from there not logged in");
        refuse(
            shared,
            stream,
            ErrorCode::TooManyConnections,
            format!(
                "too many connections from your address ({most}) have not logged in; \
                 finish or close them first"
            ),
        );
        return;
    }
    if let Err(e) = start_connection(stream, peer, id, shared) {
        shared.prelogin.release(id);
        log::warn!("{peer}: could not start serving: {e}");
    }
}

fn refuse(shared: &Arc<Shared>, stream: TcpStream, code: ErrorCode, message: String) {
    // The ERR goes over TLS, which takes a handshake: on a short thread of its own, so
    // the accept loop never waits on one client; bounded, so a flood costs no threads.
    if shared.refusing.fetch_add(1, Ordering::SeqCst) >= limits::MAX_TLS_REFUSALS {
        shared.refusing.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let thread_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("refuse".into())
        .stack_size(CONN_STACK)
        .spawn(move || {
            let msg = ServerMsg::err(code, message);
            let deadline = Instant::now() + limits::TLS_REFUSAL_DEADLINE;
            let tls = Arc::clone(&thread_shared.tls);
            let _ = stream.set_write_timeout(Some(limits::TLS_REFUSAL_DEADLINE));
            if let Err(e) =
                crate::crypto::tls::send_and_close(&stream, tls, msg.to_wire().as_bytes(), deadline)
            {
                log::debug!("refusal not delivered: {e}");
            }
            thread_shared.refusing.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        shared.refusing.fetch_sub(1, Ordering::SeqCst);
    }
}

fn start_connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // One descriptor per connection: the reader and the writer share the socket.
    let stream = Arc::new(stream);
    let (mut reader, sealer) =
        crate::crypto::tls::server_shared(Arc::clone(&stream), Arc::clone(&shared.tls))?;
    let outbox = Outbox::spawn(stream, peer, sealer)?;
    // Records rustls makes while reading (the handshake's answers) leave through the
    // writer thread too, so every record reaches the socket in order.
    let nudged = outbox.clone();
    reader.set_nudge(Box::new(move || nudged.flush()));
    shared.registry.add_connection(id, outbox.clone());
    let thread_shared = Arc::clone(shared);
    let thread_outbox = outbox.clone();
    let stack = match shared.cluster {
        Some(_) => CLUSTER_CONN_STACK,
        None => CONN_STACK,
    };
    let spawned = thread::Builder::new()
        .name(format!("conn-{id}"))
        .stack_size(stack)
        .spawn(move || {
            conn::serve(reader, peer, id, thread_outbox, Arc::clone(&thread_shared));
            // Logged in or not, the connection no longer holds a pre-login slot.
            thread_shared.prelogin.release(id);
        });
    if let Err(e) = spawned {
        shared.registry.remove_connection(id);
        outbox.kill();
        return Err(e);
    }
    log::info!("{peer}: connected (id {id})");
    Ok(())
}

/// Tells every connection the server is going down, gives them a moment to close, then
/// cuts off the rest and waits for their threads to finish.
fn shut_down(shared: &Shared) {
    // Before any connection closes: sessions outlive the server, so they become unknown
    // rather than "offline" as their users leave.
    mark_sessions_unknown(&shared.store, "open at shutdown");
    let outboxes = shared.registry.all_outboxes();
    log::info!("shutting down; telling {} connection(s)", outboxes.len());
    let event = ServerMsg::Event(Event::Shutdown {
        message: "the server is shutting down".into(),
    });
    for outbox in &outboxes {
        outbox.send(&event);
        outbox.close();
    }
    wait_for_connections(shared, SHUTDOWN_GRACE);
    for outbox in shared.registry.all_outboxes() {
        outbox.kill();
    }
    wait_for_connections(shared, SHUTDOWN_GRACE);
}

/// Marks the open sessions "unknown since now" and says how many in the log.
fn mark_sessions_unknown(store: &Store, why: &str) {
    match store.mark_open_sessions_unknown() {
        Ok(0) => {}
        Ok(n) => log::info!("{n} session(s) {why} marked unknown until a client reports"),
        Err(e) => log::error!("marking open sessions unknown: {e}"),
    }
}

fn wait_for_connections(shared: &Shared, grace: Duration) {
    let until = Instant::now() + grace;
    while shared.registry.connection_count() > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
}
