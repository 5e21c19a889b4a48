//! `Redis`: a real `redis-server` on a free loopback port for the cluster tests, and the
//! server option that joins it.
//!
//! Owns the Redis process; it must not start peerchat servers itself.

use super::*;

/// A real `redis-server` (Debian's package) on a free loopback port, in its own temporary
/// folder, with no persistence; stopped on Drop. For the cluster tests (tests/cluster.rs).
pub struct Redis {
    pub(super) child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its working folder (nothing is saved there).
    pub(super) _dir: TempDir,
}

impl Redis {
    /// Starts one, or returns `None` after printing why when `redis-server` is not
    /// installed (`.ci/run` installs it; a developer's machine may lack it).
    pub fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        // A free port can be taken between the check and the bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let dir = TempDir::new().expect("temp dir for redis");
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--daemonize", "no", "--loglevel", "warning"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    last = format!("redis-server exited ({status}): {err}");
                    break;
                }
                if redis_ping(port) {
                    return Some(Redis {
                        child: Some(child),
                        port,
                        _dir: dir,
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server: {last}");
    }

    /// The URL for `--cluster`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it now (SIGKILL), as a crash or an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True if a Redis on `port` answers `PING` with `+PONG`.
pub(super) fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl ServerBuilder {
    /// Starts the server on the folder (and so the database and TLS identity) of
    /// `other`: two servers of one cluster share one database.
    pub fn start_beside(self, other: &Server) -> Server {
        Server::spawn(other.dir.clone(), self)
    }
}
