//! Tests of the client's lines as named through `server_msg`'s re-exports: commands
//! (`protocol::command`), `SHARE` body lines and login answers (`protocol::login_msg`).
//!
//! They test code that lives outside this module and came here with the file they were
//! written in; they must not test server messages (those are in `mod.rs`).

use super::*;

#[test]
fn files_takes_an_optional_user_and_offset() {
    let parse = |line: &str| Command::parse(line).unwrap().unwrap();
    assert_eq!(
        parse("FILES 1000"),
        Command::Files {
            user: None,
            offset: 1000
        }
    );
    assert_eq!(
        parse("files bob 2000"),
        Command::Files {
            user: Some("bob".into()),
            offset: 2000
        }
    );
    assert_eq!(
        Command::parse("FILES bob x").unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        Command::parse("SHARE 20001").unwrap_err().code,
        ErrorCode::TooManyFiles
    );
    assert!(Command::refusal_closes("share 20001"));
    assert!(!Command::refusal_closes("FILES"));
    assert!(SharedFile::parse("1 ..").is_err());
    assert!(SharedFile::parse("1 a/b").is_err());
    assert!(SharedFile::parse("1 C:evil").is_err());
    assert_eq!(
        SharedFile::parse("1  two  spaces").unwrap().name,
        " two  spaces"
    );
}

#[test]
fn commands_parse_with_aliases_and_any_case_and_format_back() {
    let cases = [
        ("HELP", Command::Help),
        ("list", Command::List { offset: 0 }),
        ("GET_CLIENT_LIST", Command::List { offset: 0 }),
        ("LIST 1000", Command::List { offset: 1000 }),
        ("token", Command::Token),
        (
            "KEY 0101010101010101010101010101010101010101010101010101010101010101",
            Command::Key { key: [1; 32] },
        ),
        (
            "whois 12",
            Command::Whois {
                user: crate::protocol::mail_msg::UserRef::Id(12),
            },
        ),
        (
            "SEND bob 00ff",
            Command::Send {
                to: crate::protocol::mail_msg::UserRef::Name("bob".into()),
                sealed: vec![0, 255],
            },
        ),
        ("info bob", Command::Info { user: "bob".into() }),
        ("GET_CLIENT_INFO  bob", Command::Info { user: "bob".into() }),
        ("Ping", Command::Ping),
        ("quit", Command::Quit),
        ("DISCONNECT_CLIENT", Command::Quit),
        ("connect bob", Command::Connect { user: "bob".into() }),
        ("SESSION_OPEN 12", Command::SessionOpen { id: 12 }),
        (
            "session_end 12 PEER_LOST",
            Command::SessionEnd {
                id: 12,
                reason: EndReason::PeerLost,
            },
        ),
    ];
    for (line, want) in cases {
        let got = Command::parse(line).unwrap().unwrap();
        assert_eq!(got, want, "{line}");
        assert_eq!(Command::parse(&got.to_string()).unwrap(), Some(got));
    }
    assert_eq!(Command::parse("").unwrap(), None);
    assert_eq!(Command::parse("   ").unwrap(), None);
}

#[test]
fn command_rejections_have_stable_codes() {
    let code = |line: &str| Command::parse(line).unwrap_err().code;
    assert_eq!(code("FROB"), ErrorCode::UnknownCommand);
    assert_eq!(code("\u{0}\u{1}"), ErrorCode::UnknownCommand);
    assert_eq!(code("INFO"), ErrorCode::BadRequest);
    assert_eq!(code("INFO a b"), ErrorCode::BadRequest);
    assert_eq!(code("LIST everyone"), ErrorCode::BadRequest);
    assert_eq!(code("QUIT now"), ErrorCode::BadRequest);
    assert_eq!(code("CONNECT"), ErrorCode::BadRequest);
    assert_eq!(code("SESSION_OPEN x"), ErrorCode::BadRequest);
    assert_eq!(code("SESSION_OPEN -1"), ErrorCode::BadRequest);
    assert_eq!(code("SESSION_END 1 exploded"), ErrorCode::BadRequest);
    assert_eq!(code("SESSION_END 1"), ErrorCode::BadRequest);
    assert_eq!(code("KEY"), ErrorCode::BadRequest);
    assert_eq!(code("SEND bob"), ErrorCode::BadRequest);
    assert_eq!(code("SEND bob xyz"), ErrorCode::BadRequest);
    assert_eq!(
        code(&format!("SEND bob {}", "00".repeat(5000))),
        ErrorCode::MessageTooLarge
    );
    assert_eq!(code("KEY xyz"), ErrorCode::BadRequest);
    assert_eq!(
        code(&format!("KEY {}", "g".repeat(64))),
        ErrorCode::BadRequest
    );
    assert!(
        Command::parse("KEY xyz")
            .unwrap_err()
            .message
            .contains("usage: KEY")
    );
    let long = "X".repeat(1000);
    assert!(Command::parse(&long).unwrap_err().message.len() < 100);
}

#[test]
fn end_reasons_round_trip() {
    for &reason in EndReason::ALL {
        assert_eq!(EndReason::from_word(reason.word()), Some(reason));
    }
    assert_eq!(EndReason::from_word("nope"), None);
}

#[test]
fn help_lines_come_from_the_command_table() {
    let lines: Vec<String> = COMMANDS.iter().map(CommandSpec::help_line).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("INFO <username> (also GET_CLIENT_INFO)"))
    );
    assert_eq!(lines.len(), COMMANDS.len());
}

#[test]
fn login_answers() {
    for yes in ["y", "Y", "yes", " YES "] {
        assert_eq!(NewAnswer::parse(yes).unwrap(), NewAnswer::Yes);
    }
    for no in ["n", "NO"] {
        assert_eq!(NewAnswer::parse(no).unwrap(), NewAnswer::No);
    }
    assert_eq!(NewAnswer::parse("quit").unwrap(), NewAnswer::Quit);
    assert_eq!(
        NewAnswer::parse("maybe").unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        NewAnswer::parse("LIST").unwrap_err().code,
        ErrorCode::LoginRequired
    );
    assert_eq!(
        NewAnswer::parse("info bob").unwrap_err().code,
        ErrorCode::LoginRequired
    );
}

#[test]
fn username_rules() {
    for good in ["abc", "Alice", "a_b-c", "z23456789012345678901234567890AB"] {
        assert!(Username::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "ab",
        "1abc",
        "_abc",
        "a b",
        "al:ce",
        "ålice",
        "a\u{0}bc",
        "z234567890123456789012345678901AB",
    ] {
        assert_eq!(
            Username::parse(bad).unwrap_err().code,
            ErrorCode::BadUsername,
            "{bad}"
        );
    }
    assert_eq!(Username::parse("AlIce").unwrap().key(), "alice");
}

#[test]
fn password_rules_and_hidden_debug() {
    assert!(Password::parse("four").is_ok());
    assert!(Password::parse("with spaces ok").is_ok());
    assert!(Password::parse(&"x".repeat(72)).is_ok());
    for bad in ["abc", "tab\there", "nul\u{0}x"] {
        assert_eq!(
            Password::parse(bad).unwrap_err().code,
            ErrorCode::BadPassword
        );
    }
    assert_eq!(
        Password::parse(&"x".repeat(73)).unwrap_err().code,
        ErrorCode::BadPassword
    );
    let secret = Password::parse("hunter22").unwrap();
    assert!(!format!("{secret:?}").contains("hunter22"));
    assert_eq!(secret.expose(), "hunter22");
}

#[test]
fn ports() {
    assert_eq!(parse_port("40001").unwrap(), 40001);
    assert_eq!(parse_port(" 1 ").unwrap(), 1);
    for bad in ["0", "65536", "-1", "x", ""] {
        assert_eq!(parse_port(bad).unwrap_err().code, ErrorCode::BadPort);
        assert_eq!(PortAnswer::parse(bad).unwrap_err().code, ErrorCode::BadPort);
    }
}

#[test]
fn a_port_answer_may_carry_the_identity_key() {
    let hex = "2B7C9D1E3F405162738495A6B7C8D9E0F1A2B3C4D5E6F708192A3B4C5D6E7F80";
    let plain = PortAnswer::parse(" 40001 ").unwrap();
    assert_eq!((plain.port, plain.key), (40001, None));
    assert_eq!(plain.to_string(), "40001");
    let keyed = PortAnswer::parse(&format!("40001  {hex}")).unwrap();
    assert_eq!(keyed.port, 40001);
    assert_eq!(
        keyed.to_string(),
        format!("40001 {}", hex.to_ascii_lowercase())
    );
    assert_eq!(PortAnswer::parse(&keyed.to_string()).unwrap(), keyed);
    for bad in [
        format!("40001 {}", &hex[1..]),
        "40001 xyz".to_string(),
        format!("40001 {hex} {hex}"),
    ] {
        assert_eq!(
            PortAnswer::parse(&bad).unwrap_err().code,
            ErrorCode::BadRequest,
            "{bad}"
        );
    }
    assert_eq!(
        PortAnswer::parse(&format!("0 {hex}")).unwrap_err().code,
        ErrorCode::BadPort
    );
}
