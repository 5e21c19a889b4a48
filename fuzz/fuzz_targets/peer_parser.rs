//! Feeds arbitrary bytes to everything that parses peer and transfer lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerchat::client::ui::parse_input;
use peerchat::protocol::line::LineReader;
use peerchat::protocol::limits::MAX_LINE;
use peerchat::protocol::peer_msg::PeerMsg;
use peerchat::protocol::transfer_msg::XferLine;

fuzz_target!(|data: &[u8]| {
    let mut reader = LineReader::new(data, MAX_LINE);
    while let Ok(Some(line)) = reader.read_line() {
        // Formatting is canonical: what we write parses back to the same text.
        if let Ok(msg) = PeerMsg::parse(&line) {
            let wire = msg.to_wire();
            let reparsed = PeerMsg::parse(wire.trim_end_matches('\n')).expect("our own output parses");
            assert_eq!(reparsed.to_wire(), wire);
        }
        if let Ok(x) = XferLine::parse(&line) {
            let wire = x.to_wire();
            let reparsed = XferLine::parse(wire.trim_end_matches('\n')).expect("our own output parses");
            assert_eq!(reparsed.to_wire(), wire);
        }
        let _ = parse_input(&line);
    }
});
