//! Group `cipher` (W2, issue 12): the peer links' Noise transport over loopback,
//! AES-GCM against ChaCha20-Poly1305, each against a plain `io::copy` in the same run.
//!
//! Owns the cipher runs; it must not start the peerchat binaries.

use super::*;

/// The Noise transport over loopback, AES-GCM against ChaCha20-Poly1305, each against a
/// plain `io::copy` of the same bytes over loopback in the same run: what the framing
/// (64 KiB records, one buffer each way, no other copy) and the cipher cost a stream.
pub(super) fn group_cipher(s: &Settings, report: &mut Report) {
    use peerchat::crypto::noise::{PATTERN, PATTERN_CHACHA};
    let size: u64 = s.sizes.iter().copied().max().unwrap_or(64 << 20);
    let mut plain = Vec::new();
    let mut aes = Vec::new();
    let mut chacha = Vec::new();
    for _ in 0..s.transfer_runs.max(1) {
        plain.push(loopback_stream(size, None));
        aes.push(loopback_stream(size, Some(PATTERN)));
        chacha.push(loopback_stream(size, Some(PATTERN_CHACHA)));
    }
    let mbs = |secs: &[f64]| size as f64 / 1e6 / median(secs);
    let base = mbs(&plain);
    for (name, runs) in [("AES-GCM", &aes), ("ChaCha20-Poly1305", &chacha)] {
        let got = mbs(runs);
        println!("noise {name}: {got:.0} MB/s, plain loopback {base:.0} MB/s");
        report.add(
            &format!("noise stream {name}, {} MiB", size >> 20),
            "MB/s",
            format!("{got:.0}"),
            format!("{base:.0} (io::copy)"),
            format!("{:.2}", got / base),
            "choose the faster",
        );
    }
}

/// Seconds to move `size` bytes over a loopback connection, plain or through Noise with
/// `pattern`.
fn loopback_stream(size: u64, pattern: Option<&'static str>) -> f64 {
    use peerchat::crypto::noise;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let deadline = Instant::now() + SHORT;
    let receiver = thread::spawn(move || -> u64 {
        let (sock, _) = listener.accept().expect("accept");
        let mut input: Box<dyn Read> = match pattern {
            None => Box::new(sock),
            Some(p) => {
                let (key, _) = noise::generate_keypair().expect("key");
                let (h, _) =
                    noise::respond_with(p, &sock, &key, deadline, |_| Some("bench ticket".into()))
                        .expect("respond");
                Box::new(h.reader)
            }
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match input.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got += n as u64,
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let sock = TcpStream::connect(addr).expect("connect");
    let t0 = Instant::now();
    let mut output: Box<dyn Write> = match pattern {
        None => Box::new(sock.try_clone().expect("clone")),
        Some(p) => {
            let (key, _) = noise::generate_keypair().expect("key");
            let h = noise::initiate_with(p, &sock, &key, "bench ticket", None, deadline)
                .expect("initiate");
            Box::new(h.writer)
        }
    };
    let block = vec![0x5au8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        output.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    drop(output);
    let _ = sock.shutdown(Shutdown::Write);
    let got = receiver.join().expect("receiver");
    assert_eq!(got, size, "every byte arrived");
    t0.elapsed().as_secs_f64()
}
