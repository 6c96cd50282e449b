//! What may reach another member's terminal, and how nicks are compared.
//!
//! - [`clean`]: every character that a terminal acts on instead of showing
//!   (C0 controls but tab, DEL, C1 controls, bidi embeddings, overrides,
//!   isolates and marks, the Unicode line and paragraph separators) becomes
//!   U+FFFD, the character invalid UTF-8 already becomes. A replacement is
//!   at most 3 bytes for a character of at least 1, so a line grows at most
//!   threefold, and nothing a member types can be mistaken for a
//!   replacement's text (as a typed `\x1b` could be for an escape).
//! - [`nick_key`]: the identity of a nick, so that names a reader cannot
//!   tell apart are one name: full Unicode case folding with compatibility
//!   normalisation (NFKC_Casefold: `ΑΣ`/`ασ`, `straße`/`STRASSE`,
//!   fullwidth `ａｌｉｃｅ`/`alice`) with combining marks dropped
//!   (`İ`/`I`, `café`/`cafe`), then the UTS #39 confusable skeleton
//!   (Cyrillic `аlice`/Latin `alice`).

use std::borrow::Cow;

use caseless::Caseless;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// The replacement for a character that must not reach a terminal.
pub(crate) const REPLACEMENT: char = '\u{fffd}';

/// Whether `c` is acted on by terminals rather than shown: C0 controls but
/// tab, DEL, C1 controls, the bidi controls (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069) and U+2028/U+2029.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\0'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [unsafe](is_unsafe) character replaced by U+FFFD;
/// borrowed when there is none.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if is_unsafe(c) { REPLACEMENT } else { c }).collect())
}

/// A nick as stored and shown: NFC, so a name typed with combining marks
/// (`e` + U+0301) is the same text as the precomposed one (`é`).
pub(crate) fn normalize_nick(name: &str) -> String {
    name.nfc().collect()
}

/// The key two nicks are compared by: equal keys are the same nick. Full
/// case folding with NFKC (`caseless`'s compatibility caseless match,
/// which folds `ß` to `ss` and fullwidth to ASCII), then the UTS #39
/// skeleton, which maps look-alikes of other scripts to one prototype;
/// combining marks are dropped from both.
pub(crate) fn nick_key(nick: &str) -> String {
    let skel: String = skeleton(&fold(nick)).collect();
    // Some of the skeleton's prototypes are upper case: fold once more so
    // case never matters after it.
    fold(&skel)
}

/// Unicode's compatibility caseless form: NFKD(fold(NFKD(fold(NFD(s))))),
/// without combining marks: a mark tells no two names apart for a reader
/// who does not look closely (`İ` folds to `i` + U+0307, `café` to
/// `cafe` + U+0301).
fn fold(s: &str) -> String {
    // Marks go before folding too: some fold to letters (U+0345 to ι).
    s.chars()
        .nfd()
        .filter(|&c| !is_combining_mark(c))
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .filter(|&c| !is_combining_mark(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_replacement() {
        assert_eq!(clean("plain text\twith tab"), "plain text\twith tab");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("harmless\r<admin> run"), "harmless\u{fffd}<admin> run");
        assert_eq!(clean("\x1b]0;title\x07"), "\u{fffd}]0;title\u{fffd}");
        assert_eq!(clean("\x1b]52;c;ZXZpbA==\x1b\\"), "\u{fffd}]52;c;ZXZpbA==\u{fffd}\\");
        assert_eq!(clean("a\0b\x08c\x7fd\u{85}e\u{9b}f"), "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e\u{fffd}f");
        assert_eq!(clean("abc\u{202e}fdp.exe"), "abc\u{fffd}fdp.exe");
        for c in
            ['\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}', '\u{2028}']
        {
            assert_eq!(clean(&format!("x{c}y")), "x\u{fffd}y", "{:?}", c);
        }
        // Printable neighbours stay.
        assert_eq!(clean("\u{a0}é名前\u{200d}\u{2070}"), "\u{a0}é名前\u{200d}\u{2070}");
    }

    #[test]
    fn nick_keys_collide_for_look_alikes() {
        let same = [
            ("ΑΣ", "ασ"),
            ("ΑΣ", "ας"),
            ("straße", "STRASSE"),
            ("alice", "\u{430}lice"),
            ("alice", "ａｌｉｃｅ"),
            ("alice", "ALICE"),
            ("\u{430}lice", "ａｌｉｃｅ"),
            ("café", "cafe\u{301}"),
            ("paypal", "pаypаl"),
            // Marks are no part of the key.
            ("İ", "I"),
            ("İstanbul", "istanbul"),
            ("alice", "alice\u{345}"),
            ("café", "cafe"),
            ("Zoë", "zoe"),
        ];
        for (a, b) in same {
            assert_eq!(nick_key(a), nick_key(b), "{a} / {b}");
        }
        for (a, b) in [("alice", "alicia"), ("bob", "bob2"), ("ασ", "ab")] {
            assert_ne!(nick_key(a), nick_key(b), "{a} / {b}");
        }
        assert_eq!(normalize_nick("cafe\u{301}"), "café");
    }
}
