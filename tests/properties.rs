//! Property tests of every parser: no input line makes one panic, and every message
//! formats and parses back to itself.

use proptest::prelude::*;

use peerchat::client::tui::ui::parse_input;
use peerchat::protocol::codes::ErrorCode;
use peerchat::protocol::file_name::safe_file_name;
use peerchat::protocol::peer_msg::PeerMsg;
use peerchat::protocol::server_msg::{
    Command, EndReason, Event, FileEntry, NewAnswer, Password, Reply, ServerMsg, SharedFile,
    TransferResult, TransferRole, Username, parse_port,
};
use peerchat::protocol::ticket::Ticket;
use peerchat::protocol::transfer_msg::XferLine;

/// Any line: arbitrary Unicode, control characters and all.
fn any_line() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        "[A-Z_]{1,16}( [^\n]{0,40}){0,7}",
        proptest::collection::vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect()),
    ]
}

/// A word as the wire carries it: no spaces, no control characters.
fn word() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_-]{2,20}"
}

/// Free text as formatting leaves it: no control characters, no edge spaces issue.
fn text() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,60}".prop_filter("no leading/trailing space", |t| {
        t.trim() == t && !t.is_empty()
    })
}

fn key() -> impl Strategy<Value = Option<[u8; 32]>> {
    proptest::option::of(any::<[u8; 32]>())
}

fn ticket() -> impl Strategy<Value = Ticket> {
    any::<[u8; 16]>().prop_map(|bytes| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ticket::parse(&hex).expect("32 hex digits")
    })
}

fn hash() -> impl Strategy<Value = blake3::Hash> {
    any::<[u8; 32]>().prop_map(blake3::Hash::from_bytes)
}

fn addr() -> impl Strategy<Value = std::net::SocketAddr> {
    (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| (std::net::Ipv4Addr::from(ip), port).into())
}

fn file_entry() -> impl Strategy<Value = FileEntry> {
    (word(), any::<u64>(), text()).prop_map(|(user, size, name)| FileEntry { user, size, name })
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let code = proptest::sample::select(ErrorCode::ALL);
    prop_oneof![
        any::<u32>().prop_map(|version| ServerMsg::Hello { version }),
        (code, text()).prop_map(|(code, message)| ServerMsg::Err { code, message }),
        proptest::collection::vec(word(), 1..20)
            .prop_map(|users| ServerMsg::Event(Event::Online { users })),
        proptest::collection::vec(word(), 1..20)
            .prop_map(|users| ServerMsg::Event(Event::Offline { users })),
        (any::<usize>(), any::<usize>())
            .prop_map(|(came, went)| ServerMsg::Event(Event::Presence { came, went })),
        text().prop_map(|message| ServerMsg::Event(Event::Shutdown { message })),
        (any::<u64>(), word(), ticket(), key()).prop_map(|(id, from, ticket, key)| {
            ServerMsg::Event(Event::SessionRequest {
                id,
                from,
                ticket,
                key,
            })
        }),
        (any::<u64>(), word(), ticket(), key()).prop_map(|(id, from, ticket, key)| {
            ServerMsg::Event(Event::TransferRequest {
                id,
                from,
                ticket,
                key,
            })
        }),
        (
            proptest::collection::vec((word(), any::<u64>()), 0..20),
            any::<usize>()
        )
            .prop_map(|(users, total)| ServerMsg::Ok(Reply::List {
                users: users
                    .into_iter()
                    .map(|(name, id)| peerchat::protocol::server_msg::ListedUser { name, id })
                    .collect(),
                total
            })),
        (
            any::<u64>(),
            word(),
            any::<u64>(),
            key(),
            proptest::collection::vec(any::<u8>(), 1..1200)
        )
            .prop_map(
                |(id, from, at_ms, key, sealed)| ServerMsg::Event(Event::Message {
                    id,
                    from,
                    at_ms,
                    key,
                    sealed
                })
            ),
        proptest::collection::vec(text(), 0..20)
            .prop_map(|lines| ServerMsg::Ok(Reply::Help { lines })),
        (word(), addr(), key()).prop_map(|(user, addr, key)| ServerMsg::Ok(Reply::Info {
            user,
            addr,
            key
        })),
        (word(), addr()).prop_map(|(user, addr)| ServerMsg::Ok(Reply::Welcome { user, addr })),
        (
            any::<u64>(),
            (word(), addr()),
            ticket(),
            key(),
            proptest::collection::vec(addr(), 0..4)
        )
            .prop_map(|(id, (user, addr), ticket, key, hints)| ServerMsg::Ok(
                Reply::Session {
                    id,
                    user,
                    addr,
                    ticket,
                    key,
                    hints: Box::new(peerchat::protocol::hints::Hints(hints)),
                }
            )),
        (
            any::<u64>(),
            (word(), addr()),
            ticket(),
            key(),
            proptest::collection::vec(addr(), 0..4)
        )
            .prop_map(|(id, (user, addr), ticket, key, hints)| ServerMsg::Ok(
                Reply::Transfer {
                    id,
                    user,
                    addr,
                    ticket,
                    key,
                    hints: Box::new(peerchat::protocol::hints::Hints(hints)),
                }
            )),
        (
            proptest::collection::vec(file_entry(), 0..10),
            any::<usize>()
        )
            .prop_map(|(files, total)| ServerMsg::Ok(Reply::Files { files, total })),
        (
            proptest::collection::vec(file_entry(), 0..10),
            any::<usize>()
        )
            .prop_map(|(files, total)| ServerMsg::Ok(Reply::Search { files, total })),
        any::<usize>().prop_map(|count| ServerMsg::Ok(Reply::Shared { count })),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Help),
        any::<usize>().prop_map(|offset| Command::List { offset }),
        Just(Command::Token),
        Just(Command::Ping),
        Just(Command::Quit),
        word().prop_map(|user| Command::Info { user }),
        word().prop_map(|user| Command::Connect { user }),
        word().prop_map(|user| Command::Transfer { user }),
        any::<u64>().prop_map(|id| Command::SessionOpen { id }),
        (any::<u64>(), proptest::sample::select(EndReason::ALL))
            .prop_map(|(id, reason)| Command::SessionEnd { id, reason }),
        (0usize..=20_000).prop_map(|count| Command::Share { count }),
        (proptest::option::of(word()), any::<usize>())
            .prop_map(|(user, offset)| Command::Files { user, offset }),
        text().prop_map(|text| Command::Search { text }),
        (
            any::<u64>(),
            proptest::sample::select(TransferResult::ALL),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(hash()),
            (
                proptest::option::of(proptest::sample::select(TransferRole::ALL)),
                any::<u64>(),
                any::<u64>()
            ),
            text()
        )
            .prop_map(
                |(id, result, size, ms, hash, (role, moved, resumed_from), name)| {
                    Command::TransferEnd {
                        id,
                        result,
                        size,
                        ms,
                        hash: hash.map(|h| h.to_hex().to_string()),
                        role,
                        moved,
                        resumed_from,
                        name,
                    }
                }
            ),
    ]
}

fn peer_msg() -> impl Strategy<Value = PeerMsg> {
    prop_oneof![
        (any::<u32>(), word(), any::<u64>(), ticket()).prop_map(
            |(version, from, session, ticket)| PeerMsg::Hello {
                version,
                from,
                session,
                ticket
            }
        ),
        hash().prop_map(|h| PeerMsg::Accept {
            mac: h.to_hex().to_string()
        }),
        Just(PeerMsg::Ping),
        Just(PeerMsg::Pong),
        text().prop_map(|reason| PeerMsg::Decline { reason }),
        text().prop_map(|reason| PeerMsg::Close { reason }),
        (any::<u64>(), text()).prop_map(|(at_ms, text)| PeerMsg::Msg { at_ms, text }),
        (any::<u64>(), any::<u64>(), text()).prop_map(|(id, size, name)| PeerMsg::Offer {
            id,
            size,
            name
        }),
        any::<u64>().prop_map(|id| PeerMsg::OfferOk { id }),
        (any::<u64>(), text()).prop_map(|(id, reason)| PeerMsg::OfferNo { id, reason }),
        any::<u64>().prop_map(|id| PeerMsg::Cancel { id }),
        (any::<u32>(), word(), any::<u64>(), ticket(), any::<u64>()).prop_map(
            |(version, from, transfer, ticket, offer)| PeerMsg::Push {
                version,
                from,
                transfer,
                ticket,
                offer
            }
        ),
        (any::<u32>(), word(), any::<u64>(), ticket(), text()).prop_map(
            |(version, from, transfer, ticket, name)| PeerMsg::Fetch {
                version,
                from,
                transfer,
                ticket,
                name
            }
        ),
    ]
}

fn xfer_line() -> impl Strategy<Value = XferLine> {
    prop_oneof![
        (any::<u64>(), text()).prop_map(|(size, name)| XferLine::File { size, name }),
        (any::<u64>(), proptest::option::of(hash()))
            .prop_map(|(offset, prefix)| XferLine::Resume { offset, prefix }),
        any::<u64>().prop_map(|offset| XferLine::Start { offset }),
        (1usize..=1 << 20, hash()).prop_map(|(len, hash)| XferLine::Chunk { len, hash }),
        hash().prop_map(|hash| XferLine::End { hash }),
        hash().prop_map(|hash| XferLine::Done { hash }),
        Just(XferLine::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_line_makes_a_parser_panic(line in any_line(), body in proptest::collection::vec(any_line(), 0..4)) {
        let _ = ServerMsg::body_len(&line);
        let _ = ServerMsg::parse(&line, &body);
        let _ = Command::parse(&line);
        let _ = Command::looks_like_command(&line);
        let _ = NewAnswer::parse(&line);
        let _ = Username::parse(&line);
        let _ = Password::parse(&line);
        let _ = parse_port(&line);
        let _ = SharedFile::parse(&line);
        let _ = PeerMsg::parse(&line);
        let _ = XferLine::parse(&line);
        let _ = Ticket::parse(&line);
        let _ = parse_input(&line);
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        let wire = msg.to_wire();
        let mut lines = wire.trim_end_matches('\n').split('\n').map(String::from);
        let first = lines.next().unwrap_or_default();
        let body: Vec<String> = lines.collect();
        prop_assert_eq!(ServerMsg::body_len(&first).unwrap(), body.len());
        prop_assert_eq!(ServerMsg::parse(&first, &body).unwrap(), msg);
    }

    #[test]
    fn commands_round_trip(command in command()) {
        let line = command.to_string();
        prop_assert!(!line.contains('\n'));
        prop_assert_eq!(Command::parse(&line).unwrap(), Some(command));
    }

    #[test]
    fn peer_messages_round_trip(msg in peer_msg()) {
        let wire = msg.to_wire();
        prop_assert_eq!(wire.matches('\n').count(), 1);
        prop_assert_eq!(PeerMsg::parse(wire.trim_end_matches('\n')).unwrap(), msg);
    }

    #[test]
    fn transfer_lines_round_trip(line in xfer_line()) {
        let wire = line.to_wire();
        prop_assert_eq!(XferLine::parse(wire.trim_end_matches('\n')).unwrap(), line);
    }

    #[test]
    fn shared_file_lines_round_trip(
        size in any::<u64>(),
        // SHARE names obey the file name rule (protocol.md §4b); others are refused.
        name in text().prop_filter("a safe file name", |n| safe_file_name(n).is_ok()),
    ) {
        let file = SharedFile { size, name };
        prop_assert_eq!(SharedFile::parse(&file.to_string()).unwrap(), file);
    }

    #[test]
    fn formatting_never_lets_text_break_a_line(text in any_line()) {
        let msg = ServerMsg::err(ErrorCode::BadRequest, text.clone());
        prop_assert_eq!(msg.to_wire().matches('\n').count(), 1);
        let chat = PeerMsg::Msg { at_ms: 1, text };
        prop_assert_eq!(chat.to_wire().matches('\n').count(), 1);
    }
}
