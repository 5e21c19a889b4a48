//! Feeds arbitrary bytes to everything that parses client↔server lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerchat::protocol::line::LineReader;
use peerchat::protocol::limits::MAX_LINE;
use peerchat::protocol::server_msg::{Command, NewAnswer, ServerMsg, SharedFile, parse_port};

fuzz_target!(|data: &[u8]| {
    let mut reader = LineReader::new(data, MAX_LINE);
    let mut lines = Vec::new();
    while let Ok(Some(line)) = reader.read_line() {
        lines.push(line);
    }
    for (i, line) in lines.iter().enumerate() {
        let _ = Command::parse(line);
        let _ = NewAnswer::parse(line);
        let _ = SharedFile::parse(line);
        let _ = parse_port(line);
        if let Ok(n) = ServerMsg::body_len(line) {
            let body: Vec<String> = lines.iter().skip(i + 1).take(n).cloned().collect();
            if let Ok(msg) = ServerMsg::parse(line, &body) {
                // Formatting is canonical: what we write parses back to the same text.
                let wire = msg.to_wire();
                let mut again = wire.trim_end_matches('\n').split('\n').map(String::from);
                let first = again.next().unwrap_or_default();
                let rest: Vec<String> = again.collect();
                let reparsed = ServerMsg::parse(&first, &rest).expect("our own output parses");
                assert_eq!(reparsed.to_wire(), wire);
            }
        }
    }
});
