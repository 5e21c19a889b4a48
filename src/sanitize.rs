//! The one place that makes text from others safe to show, log or store.
//!
//! Owns the rule for what a string that came from the network may contain once it
//! reaches a terminal, a log line or the database: no C0/C1 control character (ESC, BEL,
//! CR, LF, DEL, U+0080–U+009F) and no invisible Unicode format character that reorders
//! or hides text (bidi controls, zero-width characters, line/paragraph separators).
//! Each such character becomes U+FFFD (�): visible, one column wide, and never mistaken
//! for the character it replaced. It must not decide anything else (length, allowed
//! names): callers keep their own rules.
//!
//! Two strengths:
//! - [`clean`] / [`Untrusted`]: for people and logs. Controls and format characters.
//! - [`one_line`]: for the wire. Only control characters, so a formatted message stays
//!   one line and parses back to the same text (legitimate right-to-left text and emoji
//!   sequences with U+200D still travel intact; the receiver cleans them for display).
//!
//! The terminal printer (`client::ui::Terminal`) runs everything it prints through
//! [`clean_block`], so a renderer that forgets to clean a field still cannot reach the
//! terminal with an escape sequence.

use std::borrow::Cow;
use std::fmt;

/// What every unsafe character becomes.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for characters that must never reach a terminal or a log from the network:
/// C0 and C1 controls and DEL, and Unicode format characters that reorder or hide text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// Invisible Unicode format characters: bidi embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F, U+061C), zero-width
/// characters (U+200B–U+200D, U+2060–U+2064, U+FEFF), other invisible formatting
/// (U+206A–U+206F, U+FFF9–U+FFFB), and the line and paragraph separators U+2028/U+2029.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{061C}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

fn replace(text: &str, bad: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&bad) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if bad(c) { REPLACEMENT } else { c })
            .collect(),
    )
}

/// `text` safe for a terminal, a log line or the database: every control and format
/// character replaced by U+FFFD. Borrows when nothing needed replacing.
pub fn clean(text: &str) -> Cow<'_, str> {
    replace(text, is_unsafe)
}

/// Like [`clean`] but keeps line feeds: for text this program composed of several lines
/// (whose untrusted fields were cleaned already). Used by the terminal printer.
pub fn clean_block(text: &str) -> Cow<'_, str> {
    replace(text, |c| c != '\n' && is_unsafe(c))
}

/// Replaces control characters (not format characters) with U+FFFD, so that text from
/// anywhere stays one line on the wire. Not with a space: parsers trim spaces, and a
/// formatted message must parse back to the same text.
pub fn one_line(text: &str) -> String {
    replace(text, char::is_control).into_owned()
}

/// Untrusted text for `format!` and the `log` macros: displays as [`clean`] would.
/// `log::info!("{}", Untrusted(&name))` cannot forge a log line whatever `name` holds.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment (`{:<16}`), as a plain string would; the
        // text is copied only when something needed replacing.
        f.pad(&clean(self.0))
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", clean(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters_become_replacement() {
        let evil = "a\u{1b}]0;title\u{7}b\u{1b}[2Jc\r\nd\u{7f}e\u{9b}f";
        let cleaned = clean(evil);
        assert_eq!(cleaned, "a�]0;title�b�[2Jc��d�e�f");
        for c in [
            '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{200E}', '\u{200F}',
            '\u{061C}', '\u{FEFF}', '\u{2028}', '\u{2029}',
        ] {
            let text = format!("report{c}fdp.exe");
            assert_eq!(clean(&text), "report�fdp.exe", "{:?}", c);
            assert_eq!(Untrusted(&text).to_string(), "report�fdp.exe");
        }
        assert_eq!(format!("[{:<6}]", Untrusted("a\u{1b}b")), "[a�b   ]");
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for text in ["hello", "naïve café", "Привет", "שלום", "日本語", "🙂"] {
            assert!(matches!(clean(text), Cow::Borrowed(t) if t == text));
            assert_eq!(Untrusted(text).to_string(), text);
        }
    }

    #[test]
    fn blocks_keep_line_feeds_and_wire_keeps_format_characters() {
        assert_eq!(clean_block("a\nb\u{1b}c\r"), "a\nb�c�");
        assert_eq!(one_line("x\u{202E}y\nz"), "x\u{202E}y�z");
    }

    #[test]
    fn nothing_unsafe_survives_any_input() {
        for code in (0u32..0x3000).chain(0xFEF0..0x10000) {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let text = format!("<{c}>");
            let shown = Untrusted(&text).to_string();
            assert!(!shown.chars().any(is_unsafe), "{code:#x}");
            assert_eq!(shown, clean(&text), "{code:#x}");
        }
    }
}
