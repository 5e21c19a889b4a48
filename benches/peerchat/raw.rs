//! Raw server connections shared by the `scale`, `login`, `burst` and `cluster` groups:
//! accounts written straight into the database, TLS connections the bench trusts, and
//! whole login conversations written at once and read until a reply; a small
//! deterministic generator for picking users.
//!
//! Owns the raw socket conversations; it must not start servers (`harness` does).

use super::*;

/// Creates the server's schema in `dir/server.db` (through the server's own store) and
/// inserts accounts directly, so no login has to register or hash at start.
pub(crate) fn make_accounts(dir: &Path, accounts: &[(String, &str)]) {
    let db = dir.join("server.db");
    let store = peerchat::server::store::Store::open(&db).expect("creating the database");
    store.close().expect("closing the database");
    let mut conn = rusqlite::Connection::open(&db).expect("opening the database");
    let tx = conn.transaction().expect("a transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO users (username, pw_hash, created_at) VALUES (?1, ?2, ?3)")
            .expect("an insert");
        for (name, hash) in accounts {
            insert
                .execute(rusqlite::params![name, hash, 1_700_000_000i64])
                .expect("inserting an account");
        }
    }
    tx.commit().expect("committing the accounts");
}

/// Connects to the server over TLS. The bench trusts the server it started itself (the
/// fingerprint check is the client's job and has its own tests).
pub(crate) fn tls_connect(addr: SocketAddr, read_timeout: Duration) -> Result<BlockingTls, String> {
    let stream = TcpStream::connect_timeout(&addr, SHORT).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    blocking_client(stream, Trust::FirstUse).map_err(|e| format!("tls: {e}"))
}

/// Reads from `stream` (after the bytes in `buf`, read before) until a line satisfies
/// `done`; fails on a line starting with `ERR`. Returns the bytes read after that line.
pub(crate) fn read_until(
    stream: &mut impl Read,
    mut buf: Vec<u8>,
    done: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, String> {
    let mut scanned = 0;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(nl) = buf[scanned..].iter().position(|&c| c == b'\n') {
            let line = String::from_utf8_lossy(&buf[scanned..scanned + nl]).to_string();
            scanned += nl + 1;
            if line.starts_with("ERR") {
                return Err(line);
            }
            if done(&line) {
                return Ok(buf[scanned..].to_vec());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Logs `user` in over a raw socket with every answer written at once (then `extra`,
/// e.g. a `SHARE`). Returns the socket, the bytes read past `OK WELCOME`, and the time
/// from connecting to `OK WELCOME`.
pub(crate) fn raw_login(
    addr: SocketAddr,
    user: &str,
    extra: &str,
) -> Result<(BlockingTls, Vec<u8>, Duration), String> {
    raw_login_from(addr, None, user, extra)
}

/// Like [`raw_login`] from the source address `from` (a loopback address other than
/// 127.0.0.1: the server queues at most 8 logins per address for bcrypt).
pub(crate) fn raw_login_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    user: &str,
    extra: &str,
) -> Result<(BlockingTls, Vec<u8>, Duration), String> {
    let t0 = Instant::now();
    let mut stream = match from {
        None => tls_connect(addr, Duration::from_secs(120))?,
        // The cost-12 logins: the last of 50 waits for 49 hashes on one low-priority
        // core, which on a machine shared with builds took more than 120 s.
        Some(ip) => {
            use socket2::{Domain, Protocol, Socket, Type};
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect_timeout(&addr.into(), SHORT)
                .map_err(|e| format!("connect: {e}"))?;
            let stream: TcpStream = socket.into();
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(1200)))
                .map_err(|e| e.to_string())?;
            blocking_client(stream, Trust::FirstUse).map_err(|e| format!("tls: {e}"))?
        }
    };
    stream
        .write_all(format!("n\n{user}\n{PASSWORD}\n{RAW_PORT}\n{extra}").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let rest = read_until(&mut stream, Vec::new(), |l| l.starts_with("OK WELCOME"))
        .map_err(|e| format!("{user}: {e}"))?;
    Ok((stream, rest, t0.elapsed()))
}

/// A whole conversation on a fresh connection: `script` written at once, then read
/// until `OK WELCOME` and `OK BYE` have both come (an `ERR` fails it).
pub(crate) fn raw_login_and_quit(addr: SocketAddr, script: &str) -> Result<(), String> {
    let mut stream = tls_connect(addr, Duration::from_secs(120))?;
    stream
        .write_all(script.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let rest = read_until(&mut stream, Vec::new(), |l| l.starts_with("OK WELCOME"))?;
    read_until(&mut stream, rest, |l| l.starts_with("OK BYE"))?;
    Ok(())
}

/// A small deterministic generator for picking users.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}
