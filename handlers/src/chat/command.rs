//! The chat's input lines: a pure parser, and the nick rule.

use unicode_normalization::char::is_combining_mark;

/// The longest nick, in characters.
pub(crate) const MAX_NICK: usize = 32;

/// What one input line asks for. Borrowed from the line; parsing never
/// fails and never panics: anything that is not a command is text, and a
/// malformed command is a [`Command::Unknown`] or [`Command::MsgUsage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// An empty line: ignored.
    Empty,
    /// Text for every other member.
    Text(&'a str),
    /// `/nick NAME`: the name as given (trimmed), not yet validated.
    Nick(&'a str),
    /// `/who`.
    Who,
    /// `/msg NAME text`.
    Msg {
        /// The addressee as given.
        to: &'a str,
        /// The text, never empty.
        text: &'a str,
    },
    /// `/msg` without a name or without text.
    MsgUsage,
    /// `/register NAME PASSWORD`: an account for NAME.
    Register {
        /// The name as given, not yet validated.
        name: &'a str,
        /// The password: the rest of the line after the name, trimmed.
        password: &'a str,
    },
    /// `/login NAME PASSWORD`: become NAME, an account's owner.
    Login {
        /// The name as given.
        name: &'a str,
        /// The password.
        password: &'a str,
    },
    /// `/register` or `/login` without a name or without a password: the
    /// command word.
    AccountUsage(&'a str),
    /// `/help`.
    Help,
    /// `/quit`, or exactly `quit`.
    Quit,
    /// Any other `/word`: the word, slash included.
    Unknown(&'a str),
}

/// Parses one line (without its line ending).
///
/// - An empty line is [`Command::Empty`]; exactly `quit` is [`Command::Quit`].
/// - A line starting with `/` is a command: the word up to the first
///   whitespace, matched exactly (commands are lower case). Arguments are
///   separated by whitespace; `/who`, `/help` and `/quit` ignore any.
/// - Anything else, leading or trailing spaces included, is text as is.
pub fn parse(line: &str) -> Command<'_> {
    if line.is_empty() {
        return Command::Empty;
    }
    if line == "quit" {
        return Command::Quit;
    }
    if !line.starts_with('/') {
        return Command::Text(line);
    }
    let (word, args) = match line.split_once(char::is_whitespace) {
        Some((word, args)) => (word, args.trim()),
        None => (line, ""),
    };
    match word {
        "/nick" => Command::Nick(args),
        "/who" => Command::Who,
        "/help" => Command::Help,
        "/quit" => Command::Quit,
        "/msg" => match args.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim_start().is_empty() => Command::Msg { to, text: text.trim_start() },
            _ => Command::MsgUsage,
        },
        "/register" | "/login" => match args.split_once(char::is_whitespace) {
            Some((name, password)) if !password.trim_start().is_empty() => {
                let password = password.trim_start();
                if word == "/register" {
                    Command::Register { name, password }
                } else {
                    Command::Login { name, password }
                }
            }
            _ => Command::AccountUsage(word),
        },
        _ => Command::Unknown(word),
    }
}

/// Whether `name` is a valid nick: 1 to 32 characters, each a letter or a
/// digit of any script, `_` or `-`. Not a combining mark, even one Unicode
/// counts as alphabetic (`alice` + U+0345 would show as `alice` with a
/// mark under it), nor a default-ignorable code point, even one that is a
/// letter (the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 show as
/// nothing). A name typed with combining marks is valid once composed
/// (the chat stores nicks in NFC: `e` + U+0301 is `é`).
pub fn valid_nick(name: &str) -> bool {
    let mut count = 0;
    for c in name.chars() {
        count += 1;
        if count > MAX_NICK || !nick_char(c) {
            return false;
        }
    }
    count > 0
}

/// A letter or digit that shows as itself, `_` or `-`.
fn nick_char(c: char) -> bool {
    c == '_' || c == '-' || (c.is_alphanumeric() && !is_combining_mark(c) && !is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt,
/// Unicode 15.1): code points a renderer shows as nothing when it does
/// not support them.
pub(crate) fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}'..='\u{1160}' | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}'
        | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_empty() {
        assert_eq!(parse(""), Command::Empty);
        assert_eq!(parse("hello world"), Command::Text("hello world"));
        assert_eq!(parse(" /nick x"), Command::Text(" /nick x"));
        assert_eq!(parse(" "), Command::Text(" "));
        assert_eq!(parse("quit "), Command::Text("quit "));
        assert_eq!(parse("Quit"), Command::Text("Quit"));
        assert_eq!(parse("a\0b"), Command::Text("a\0b"));
        assert_eq!(parse("\u{fffd}"), Command::Text("\u{fffd}"));
    }

    #[test]
    fn commands() {
        assert_eq!(parse("quit"), Command::Quit);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/quit now"), Command::Quit);
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/nick bob"), Command::Nick("bob"));
        assert_eq!(parse("/nick  bob \t"), Command::Nick("bob"));
        assert_eq!(parse("/nick"), Command::Nick(""));
        assert_eq!(parse("/nick a b"), Command::Nick("a b"));
        assert_eq!(parse("/msg bob hi there"), Command::Msg { to: "bob", text: "hi there" });
        assert_eq!(parse("/msg bob   hi  "), Command::Msg { to: "bob", text: "hi" });
        assert_eq!(parse("/msg"), Command::MsgUsage);
        assert_eq!(parse("/msg bob"), Command::MsgUsage);
        assert_eq!(parse("/msg bob   "), Command::MsgUsage);
        assert_eq!(
            parse("/register bob s3cret pw"),
            Command::Register { name: "bob", password: "s3cret pw" }
        );
        assert_eq!(parse("/login  bob  pw "), Command::Login { name: "bob", password: "pw" });
        assert_eq!(parse("/login bob"), Command::AccountUsage("/login"));
        assert_eq!(parse("/register"), Command::AccountUsage("/register"));
        assert_eq!(parse("/other"), Command::Unknown("/other"));
        assert_eq!(parse("/other x y"), Command::Unknown("/other"));
        assert_eq!(parse("/"), Command::Unknown("/"));
        assert_eq!(parse("/WHO"), Command::Unknown("/WHO"));
        assert_eq!(parse("//who"), Command::Unknown("//who"));
        assert_eq!(parse("/nick\u{3000}名前"), Command::Nick("名前"));
    }

    #[test]
    fn nicks() {
        for ok in ["a", "guest-1", "Bob_2", "名前", "Ünïcödé", "x".repeat(32).as_str(), "٣"] {
            assert!(valid_nick(ok), "{ok}");
        }
        for bad in ["", "a b", "a.b", "x".repeat(33).as_str(), "bob!", "\u{fffd}", "a\0", "😀"] {
            assert!(!valid_nick(bad), "{bad:?}");
        }
        // 32 characters of several bytes each are fine.
        assert!(valid_nick(&"é".repeat(32)));
        assert!(!valid_nick(&"é".repeat(33)));
        // Marks Unicode counts as alphabetic (U+0345 is Other_Alphabetic),
        // other combining marks, and letters that show as nothing.
        for bad in [
            "alice\u{345}",
            "alice\u{301}",
            "\u{301}",
            "\u{3164}",
            "\u{115f}\u{1160}",
            "a\u{ffa0}b",
            "bob\u{200b}",
            "bob\u{ad}",
            "x\u{e0061}",
        ] {
            assert!(!valid_nick(bad), "{bad:?}");
        }
        assert!('\u{345}'.is_alphanumeric() && '\u{3164}'.is_alphanumeric(), "why the rule is needed");
        // Precomposed letters, and the dotted capital I, are letters.
        assert!(valid_nick("İ") && valid_nick("Ǆ") && valid_nick("ŉ"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples =
            ["/", "/ ", "/msg ", "/msg  ", "/msg \u{3000}", "/\u{85}", "/msg a\u{2028}b", "\r", "/nick \r"];
        for s in samples {
            let _ = parse(s);
        }
        // Every prefix of a mixed string, at char boundaries.
        let s = "/msg 名前 héllo wörld\t/who";
        for (i, _) in s.char_indices() {
            let _ = parse(&s[..i]);
            let _ = parse(&s[i..]);
        }
    }
}
