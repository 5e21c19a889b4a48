//! The helper roles: this program re-executed with `PEERCHAT_BENCH_ROLE` set, as the
//! baselines' other end (`copy-send`, `copy-recv`: a plain TCP copy of a file; `echo`: a
//! TCP line echo).
//!
//! Owns what a role process does; it must not start the peerchat binaries.

use super::*;

pub(crate) fn run_role(role: &str) -> i32 {
    let result = match role {
        "copy-send" => role_copy_send(),
        "copy-recv" => role_copy_recv(),
        "echo" => role_echo(),
        other => Err(io::Error::other(format!("unknown role {other}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peerchat bench role {role}: {e}");
            1
        }
    }
}

pub(crate) fn env_path(name: &str) -> io::Result<PathBuf> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{name} is not set")))
}

/// Accepts one connection and copies it into a file with `std::io::copy` (which moves
/// 8 KiB per system call from a socket to a file), or, when `PEERCHAT_BENCH_BUF` is set,
/// with a plain read/write loop on a buffer of that many bytes.
pub(crate) fn role_copy_recv() -> io::Result<()> {
    let path = env_path(FILE_ENV)?;
    let buffer: Option<usize> = env::var(BUF_ENV).ok().and_then(|b| b.parse().ok());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    let (mut stream, _) = listener.accept()?;
    let mut file = File::create(path)?;
    let copied = match buffer {
        None => io::copy(&mut stream, &mut file)?,
        Some(size) => {
            let mut buf = vec![0u8; size];
            let mut copied = 0;
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => break copied,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                file.write_all(&buf[..n])?;
                copied += n as u64;
            }
        }
    };
    println!("done {copied} {:.3}", own_cpu_secs());
    Ok(())
}

/// Waits for `go` on stdin, then connects and copies a file into the socket with
/// `std::io::copy`.
pub(crate) fn role_copy_send() -> io::Result<()> {
    let path = env_path(FILE_ENV)?;
    let addr = env::var(ADDR_ENV).map_err(|_| io::Error::other("no address"))?;
    let mut file = File::open(path)?;
    println!("ready");
    let mut go = String::new();
    io::stdin().read_line(&mut go)?;
    let mut stream = TcpStream::connect(addr)?;
    io::copy(&mut file, &mut stream)?;
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    println!("sent cpu {:.3}", own_cpu_secs());
    Ok(())
}

/// User plus system CPU seconds this process has used.
pub(crate) fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// Echoes lines on one connection.
pub(crate) fn role_echo() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        writer.write_all(line.as_bytes())?;
    }
}
