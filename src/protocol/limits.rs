//! Every fixed limit and default timeout of the protocol, in one place.
//!
//! Owns numbers only; it must not hold logic. protocol.md §8 lists the same values:
//! change both together.

use std::time::Duration;

/// Longest line, in bytes before the terminator, that either side accepts.
/// 4 KiB holds any command with room to spare and caps what one slow client can pin.
pub const MAX_LINE: usize = 4096;

/// Shortest username, in characters.
pub const USERNAME_MIN: usize = 3;
/// Longest username, in characters.
pub const USERNAME_MAX: usize = 32;

/// Shortest password, in bytes.
pub const PASSWORD_MIN: usize = 4;
/// Longest password, in bytes: bcrypt ignores everything past 72 bytes, so longer
/// passwords are refused rather than silently cut.
pub const PASSWORD_MAX: usize = 72;

/// Consecutive failed logins for one (username, source IP) that trigger a block, and
/// failed logins on one connection that close it. Attempts are counted before bcrypt
/// runs, so no more than this many passwords per (username, source IP) are ever checked
/// in one block window, however many connections race.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// A (username, source IP) that fails fewer than [`MAX_LOGIN_FAILURES`] times forgets
/// its failures after this long without another, so the table of counts stays bounded.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Password checks for one username, from any addresses, allowed at full speed in one
/// [`NAME_ATTEMPT_WINDOW`]; past that each check waits an exponential delay.
pub const NAME_ATTEMPT_BURST: u32 = 20;

/// The window of [`NAME_ATTEMPT_BURST`]: the count starts again after it.
pub const NAME_ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The first delay once a username's burst is spent; it doubles with every further check.
pub const NAME_DELAY_BASE: Duration = Duration::from_secs(1);

/// The longest delay between checks of one username: never a lockout, only a slow-down.
pub const NAME_DELAY_MAX: Duration = Duration::from_secs(60);

/// Addresses remembered per account (the latest ones it logged in or registered from);
/// logins from them skip the per-username delay, so an attacker's guessing cannot lock
/// the owner out of their usual address.
pub const KNOWN_ADDRESSES: usize = 8;

/// Username checks ("is this name free?") one source address may make at once during
/// registration; a check that ends in a new account is given back.
pub const NAME_CHECK_BURST: u32 = 20;

/// One more username check per source address is allowed every this long.
pub const NAME_CHECK_REFILL: Duration = Duration::from_secs(3);

/// Default `CONNECT`/`TRANSFER` requests one user may make at once (`--request-burst`).
pub const DEFAULT_REQUEST_BURST: u32 = 32;

/// Default further `CONNECT`/`TRANSFER` requests per second per user (`--request-rate`).
pub const DEFAULT_REQUEST_RATE: u32 = 4;

/// Default connections from one source address (IPv6: one /64) that may be open without
/// having logged in (`--max-prelogin-per-ip`); more are refused at once.
pub const DEFAULT_MAX_PRELOGIN_PER_IP: usize = 64;

/// Logins and registrations from one source address (IPv6: one /64) that may wait for or
/// run bcrypt at once; more get `ERR 504 BUSY` at once.
pub const MAX_HASHING_PER_IP: usize = 8;

/// Most keys (users, addresses, usernames) one rate-limit table tracks; old entries are
/// swept first, and past this a new key is refused until room frees up.
pub const MAX_TRACKED_KEYS: usize = 65_536;

/// Default time a blocked (username, source IP) stays blocked.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(300);

/// Default time from connect to `OK WELCOME`.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a logged-in connection may stay silent before the server drops it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often `peerchat-client` sends `PING`: a third of the default idle timeout, so two
/// lost pings in a row still leave the client online.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Default cap on simultaneous connections to the server.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// Messages that may wait in one connection's outgoing queue. Pushes from other
/// connections (events) that find it full drop the client; its own replies wait.
pub const OUTGOING_QUEUE: usize = 1024;

/// Bytes that may wait in one connection's outgoing queue: an event that would pass this
/// drops the client, so a client that stops reading pins at most this much memory.
pub const OUTGOING_QUEUE_BYTES: usize = 4 << 20;

/// A connection's own reply waits (and the server stops reading that connection's lines)
/// while this many messages are queued for it: half the queue, so a client that pipelines
/// commands is slowed down, never dropped, and events still find room.
pub const REPLY_QUEUE: usize = OUTGOING_QUEUE / 2;

/// A connection's own reply waits while this many bytes are queued for it (see
/// `REPLY_QUEUE`); a quarter of `OUTGOING_QUEUE_BYTES`.
pub const REPLY_QUEUE_BYTES: usize = OUTGOING_QUEUE_BYTES / 4;

/// Default bcrypt cost for new password hashes.
pub const DEFAULT_BCRYPT_COST: u32 = 12;

/// Most lines a list reply may announce; a bound for readers so a hostile count cannot
/// make them wait for or allocate an unbounded amount.
pub const MAX_LIST_LINES: usize = 1_000_000;

/// How long the server waits for a writer to push bytes into a client's socket before it
/// considers the client dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most chat sessions (open or being asked) one client keeps at once; more are refused
/// with `ERR 431 TOO_MANY_SESSIONS`.
pub const MAX_SESSIONS: usize = 16;

/// Most incoming peer connections that may be in their handshake at once (from `accept`
/// until the ticket is checked, including `HELLO`s parked for `TICKET_GRACE`); more are
/// closed at once with `ERR 442 PEER_BUSY`, so a port scan or a flood of idle sockets
/// cannot pin threads or descriptors.
pub const MAX_HANDSHAKES: usize = 64;

/// Most incoming peer handshakes (as `MAX_HANDSHAKES`) from one source address at once:
/// one stranger's idle sockets or forged `HELLO`s cannot take every slot, so other
/// peers still get in.
pub const MAX_HANDSHAKES_PER_IP: usize = 8;

/// How long an incoming peer connection has to send its `HELLO`: short, since a real
/// peer sends it at once, and every idle socket holds a handshake slot until then.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refused peer connections are summed per source address and reason and shown to the
/// person at most once per this period (one line per burst, not one per connection).
pub const REFUSAL_SUMMARY_PERIOD: Duration = Duration::from_secs(5);

/// Most distinct (address, reason) pairs one refusal summary names; the rest are added
/// up in one "other addresses" line, so a spoofed-address flood cannot flood the screen.
pub const REFUSAL_SUMMARY_LINES: usize = 8;

/// How long a ticket from the server stays usable if nobody presents it.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// How long a `HELLO` with a ticket we have not heard of yet waits for the server's
/// `EVENT SESSION_REQUEST` (the two travel different roads and may cross).
pub const TICKET_GRACE: Duration = Duration::from_secs(3);

/// How long the person asked to chat has to accept before the request is declined (the
/// default and the most `--accept-timeout` allows: the requester waits `ANSWER_WAIT`).
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the requester waits for `ACCEPT` or `DECLINE`: the accept timeout plus slack.
/// It is a deadline from the moment `HELLO` is sent: nothing the peer sends meanwhile
/// (`PING`, a line dripped byte by byte) extends it. `--answer-wait` may shorten it.
pub const ANSWER_WAIT: Duration = Duration::from_secs(40);

/// Most lines of chat history kept per peer; older lines are deleted as new ones arrive,
/// so a peer cannot grow the history file without bound (at most this many lines of
/// up to `MAX_CHAT_TEXT` bytes, about 40 MiB, per peer).
pub const HISTORY_LINES_PER_PEER: usize = 10_000;

/// How long to wait for a peer to accept the TCP connection.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer link that has sent nothing else for this long gets a `PING`.
pub const PEER_PING_INTERVAL: Duration = Duration::from_secs(30);

/// A peer link that has received nothing (not even `PING`) for this long is dead.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Lines a peer may send in one burst before the flood limit applies.
pub const FLOOD_BURST: u32 = 5000;

/// Lines per second a peer may send once its burst is spent; past that the link is
/// closed with `ERR 429 FLOOD`.
pub const FLOOD_RATE: u32 = 2000;

/// Messages that may wait to be written to one peer; a peer that stops reading until
/// this fills is disconnected, so typing never blocks.
pub const PEER_QUEUE: usize = 1024;

/// Longest chat text, in bytes, that fits in one `MSG` line with its stamp: the line
/// limit minus `MSG ` (4 bytes), the longest stamp (20 digits of a `u64`) and its space.
pub const MAX_CHAT_TEXT: usize = MAX_LINE - 4 - 20 - 1;

/// Longest file name, in bytes, in offers, shares and fetches (most file systems' limit).
pub const MAX_FILE_NAME: usize = 255;

/// Most files one client may list in `SHARE`.
pub const MAX_SHARED_FILES: usize = 20_000;

/// Most results `SEARCH` returns; the reply still says how many matched in all.
pub const MAX_SEARCH_RESULTS: usize = 100;

/// Most `FILE` lines in one `FILES` reply; the reply says how many there are in all, and
/// `FILES [<user>] <offset>` asks for the next page.
pub const MAX_FILES_PAGE: usize = 1000;

/// Most `USER` lines in one `LIST` reply; the total is always given, and `LIST <offset>`
/// asks for the next page. Keeps one `LIST` at 10,000 online a bounded amount of work.
pub const MAX_LIST_PAGE: usize = 1000;

/// Presence changes (logins, logouts) are gathered for this long and then sent to every
/// online user at once, so a login costs the server O(1) instead of one event per
/// online user; a burst of 1,000 logins costs one or two lines per user.
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);

/// Most presence lines per second the server queues, all recipients together: waking
/// thousands of writer threads is what an announcement costs, so past
/// `PRESENCE_FANOUT × PRESENCE_INTERVAL` online (1,000) the interval grows with the
/// number online (5 s at 10,000), keeping presence under a tenth of a core.
pub const PRESENCE_FANOUT: usize = 2_000;

/// Most names in one `EVENT ONLINE` or `EVENT OFFLINE` line (100 names of 32 characters
/// fit a line). When more users came or went in one interval, the server sends
/// `EVENT PRESENCE <came> <went>` (counts only) instead, and `LIST` tells who.
pub const MAX_PRESENCE_NAMES: usize = 100;

/// How long a resumable-login token (`OK TOKEN`) is valid after it was issued or last
/// used to log in: a week.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Tokens kept per account; issuing one more forgets the oldest.
pub const MAX_TOKENS_PER_USER: usize = 8;

/// Most files in the server's index, all users together: bounds the index's memory
/// (a file costs its name three times, as given, in lower case and in the search
/// buffer, plus about 80 bytes: at most about 170 MB at the cap) whatever many accounts
/// share.
pub const MAX_INDEX_FILES: usize = 200_000;

/// Most files in the index shared by accounts logged in from one IP address: one source
/// cannot fill the index for everyone by opening many accounts.
pub const MAX_INDEX_FILES_PER_ADDRESS: usize = 50_000;

/// How long a file offer waits for `\accept` before it expires.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a transfer ticket (`EVENT TRANSFER_REQUEST`) stays usable if nobody
/// presents it: a push is numbered (and its ticket issued) before it is offered, so the
/// ticket must outlive the offer (`OFFER_TIMEOUT`), plus a minute to connect (the relay
/// included).
pub const TRANSFER_TICKET_TTL: Duration = Duration::from_secs(180);

/// `SESSION_END` and `TRANSFER_END` reports a client holds while the server is away, to
/// send after `\reconnect` (so the session log learns real ends); the oldest go first.
pub const MAX_HELD_REPORTS: usize = 256;
/// Most fetches one client serves from its shared folder at once, to all peers together;
/// more are refused with `ERR 424 SERVE_BUSY`. Each serve holds a thread and a 1 MiB
/// chunk buffer, so this bounds what fetchers who never read can pin.
pub const MAX_SERVES: usize = 16;

/// Most fetches one client serves to one peer at once; more from that peer are refused
/// with `ERR 424 SERVE_BUSY`, so one account cannot take every serving slot.
pub const MAX_SERVES_PER_PEER: usize = 4;

/// Most file offers from one peer that may wait for `\accept` (or for their push) at
/// once; more are answered `OFFER_NO <id> 425 TOO_MANY_OFFERS ...`.
pub const MAX_PENDING_OFFERS_PER_PEER: usize = 16;

/// Most files one folder offer (`OFFER_FOLDER`) may announce; a larger folder is refused
/// by its sender before anything is offered, and by the receiver if announced.
pub const MAX_FOLDER_FILES: u64 = 10_000;

/// Most names in a path inside an offered folder (`OFFER_IN`), the file's own included;
/// deeper files are not sent, and a deeper path is refused by the receiver.
pub const MAX_FOLDER_DEPTH: usize = 16;

/// Files of one accepted folder a sender keeps offered and not yet finished at once; the
/// next is offered as one ends, so a folder never fills the receiver's
/// `MAX_PENDING_OFFERS_PER_PEER`.
pub const FOLDER_FILES_IN_FLIGHT: usize = 4;

/// Bytes a receiver keeps free beyond the file itself when it checks the downloads
/// folder's free space, so a transfer never fills the disk to the last byte.
pub const DISK_SPACE_MARGIN: u64 = 1024 * 1024;

/// Most partial files (of failed or interrupted transfers) kept for a resume; beyond
/// it, the oldest are deleted when a new transfer starts.
pub const MAX_PARTIAL_FILES: usize = 32;

/// Most bytes of partial files kept for a resume; beyond it, the oldest are deleted
/// when a new transfer starts.
pub const MAX_PARTIAL_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Largest `--login-timeout`, in seconds (an hour).
pub const MAX_LOGIN_TIMEOUT_SECS: u64 = 3600;

/// Largest `--idle-timeout`, in seconds (a day).
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 86_400;

/// Largest `--block-secs` (a day).
pub const MAX_BLOCK_SECS: u64 = 86_400;

/// Largest `--max-clients` and `--max-prelogin-per-ip`.
pub const MAX_MAX_CLIENTS: u64 = 65_536;

/// Largest `--request-burst` and `--request-rate`.
pub const MAX_REQUEST_SETTING: u64 = 10_000;

/// Largest `--limit` of `peerchat-server sessions`.
pub const MAX_LOG_ROWS: u64 = 1_000_000;

// ---- web front end (client --gui) ----

/// Largest JSON body the web front end accepts (commands, login answers): a chat line
/// at most `MAX_CHAT_TEXT` bytes plus room for the JSON around it.
pub const GUI_MAX_BODY: usize = 64 * 1024;

/// Largest file the page may upload to offer it (streamed to the staging folder).
pub const GUI_MAX_UPLOAD: u64 = 64 * 1024 * 1024 * 1024;

/// HTTP requests the web front end serves at once; more get `503`.
pub const GUI_MAX_REQUESTS: usize = 32;

/// Event long polls waiting at once; more get `429`.
pub const GUI_MAX_LONG_POLLS: usize = 8;

/// Longest a long poll waits for an event before answering with none.
pub const GUI_LONG_POLL_WAIT: Duration = Duration::from_secs(25);

/// Events the web front end keeps for long polls; older ones are dropped (a page that
/// sees a gap in the ids reloads `GET /api/state`).
pub const GUI_EVENT_LOG: usize = 4096;

/// Events one long poll returns at most.
pub const GUI_EVENTS_PER_POLL: usize = 512;

/// Chat lines per session the web front end keeps for `GET /api/state`.
pub const GUI_LINES_PER_SESSION: usize = 500;
// ---- W2: encrypted links ----

/// Connections the server refuses (full, or too many from one address) that it answers
/// with their `ERR` over TLS at once, each on a short thread; past it a refused
/// connection is closed without a word, so a flood costs no threads.
pub const MAX_TLS_REFUSALS: usize = 32;

/// How long a refused connection has to finish the TLS handshake and read its `ERR`.
pub const TLS_REFUSAL_DEADLINE: Duration = Duration::from_secs(2);

/// How long the client gives connecting to the server plus the TLS handshake.
pub const TLS_CONNECT_DEADLINE: Duration = Duration::from_secs(15);

// ---- W5: the relay ----

/// Default `--relay-max-circuits`: relayed circuits one relay carries at once (seed 004's
/// "restriction on the number of simultaneous connections"); more get `520 RELAY_FULL`.
pub const DEFAULT_RELAY_CIRCUITS: usize = 256;

/// Default `--relay-max-per-user`: relayed circuits one user may have asked for at once
/// (a circuit is charged to its requester, never its target), so one account cannot take
/// the whole relay nor someone else's share; more get `521 RELAY_USER_FULL`.
pub const DEFAULT_RELAY_CIRCUITS_PER_USER: usize = 8;

/// Default `--relay-rate`: bytes per second each direction of a circuit may carry
/// (64 MiB/s).
pub const DEFAULT_RELAY_RATE: u64 = 64 * 1024 * 1024;

/// Default `--relay-idle-secs`: a circuit carrying nothing either way this long is closed.
pub const DEFAULT_RELAY_IDLE: Duration = Duration::from_secs(120);

/// Default `--relay-token-secs`: how long a relay token is valid after issue; an end
/// that arrived first waits for its partner until then (`523 RELAY_NO_PARTNER`).
pub const DEFAULT_RELAY_TOKEN_TTL: Duration = Duration::from_secs(60);

/// How long a relay waits for the `RELAY <token>` line after a connection opens.
pub const RELAY_FIRST_LINE: Duration = Duration::from_secs(5);

/// Spent relay tokens a relay remembers (until they expire) so each opens one end once;
/// when all are live, new ends get `520 RELAY_FULL`.
pub const RELAY_SPENT_TOKENS: usize = 65_536;

// ---- x4: address hints and the reverse rung ----

/// Local interface addresses a client may report with `HINTS`; a longer list gets
/// `524 BAD_HINTS`. The requester dials at most this many hints plus the address the
/// server sees, in parallel.
pub const MAX_HINTS: usize = 8;

/// How long the requester's parallel attempts at the target's hints (and the target's
/// reverse attempts at the requester's) wait for a TCP connection: past it that rung
/// has failed and the next one is tried.
pub const HINT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a requester waits for the target to dial back after `REVERSE` (the target's
/// own attempts take up to `HINT_CONNECT_TIMEOUT`); then it goes on to the relay.
pub const REVERSE_WAIT: Duration = Duration::from_secs(6);

/// Reverse dials (`EVENT DIAL`) a client runs at once; more are ignored until one ends
/// (the requester then goes on to the relay).
pub const MAX_REVERSE_DIALS: usize = 8;
// ---- x3: messages through the server (issue 13) ----

/// Longest text of one `\msg`, in bytes of UTF-8, before it is sealed.
pub const MAX_MESSAGE_TEXT: usize = 1024;

/// Largest sealed message (`SEND`'s ciphertext), in bytes before hex: the longest text
/// plus the one-way Noise message's overhead (ephemeral key, encrypted static key, two
/// tags: 96 bytes) and room to spare. Larger gets `453 MESSAGE_TOO_LARGE`.
pub const MAX_SEALED_MESSAGE: usize = 1200;

/// Default `--mailbox-per-user`: messages that may wait at the server for one offline
/// recipient; more get `451 MAILBOX_FULL`.
pub const MAILBOX_PER_USER: usize = 100;

/// Default `--mailbox-total`: messages that may wait at the server for all recipients
/// together; more get `452 MAILBOXES_FULL`.
pub const MAILBOX_TOTAL: usize = 100_000;

/// Messages from one sender that may wait for one recipient: a quarter of the default
/// mailbox, so one account cannot fill someone's mailbox and shut everyone else out of
/// it for a week; more get `465 TOO_MANY_WAITING`.
pub const MAILBOX_PER_SENDER_TO_ONE: usize = 25;

/// Messages from one sender that may wait, all recipients together: a hundredth of the
/// default total, so one account cannot fill the server's mailboxes for everyone
/// (at 5 `SEND`s a second it took 6 hours); more get `465 TOO_MANY_WAITING`.
pub const MAILBOX_PER_SENDER: usize = 1000;

/// Largest `--mailbox-per-user` and `--mailbox-total`.
pub const MAX_MAILBOX_SETTING: u64 = 1_000_000;

/// How long a queued message waits for its recipient before the server drops it.
pub const MAILBOX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `SEND`s one user may make at once before the rate below applies; past it they get
/// `454 TOO_MANY_MESSAGES` (so nobody can flood a recipient's connection until the server
/// drops it as a slow reader).
pub const MESSAGE_BURST: u32 = 30;

/// `SEND`s per second one user may make once the burst is spent.
pub const MESSAGE_RATE: u32 = 5;

/// File offers (and answers to them) that may wait at the server for one offline user;
/// more get `455 OFFERS_FULL`.
pub const OFFERS_PER_USER: usize = 32;

/// File offers and answers that may wait at the server for all users together; more
/// get `455 OFFERS_FULL`.
pub const OFFERS_TOTAL: usize = 10_000;

/// Offers through the server one user may have open (made and not yet answered, or
/// accepted and not yet started) at once; more: `ERR 455 OFFERS_FULL`.
pub const OPEN_OFFERS_PER_USER: usize = 64;

/// Offers one user may have open to one recipient at once: a quarter of what may be
/// held for a user, so one account cannot fill someone's held offers; more:
/// `ERR 465 TOO_MANY_WAITING`.
pub const OPEN_OFFERS_PER_PAIR: usize = 8;
