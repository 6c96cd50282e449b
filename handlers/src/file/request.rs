//! Parsing one request line of the file protocol.

/// One request, as parsed from a line (without its line ending).
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `get NAME`: everything after `get ` is the name.
    Get(String),
    /// `list`.
    List,
    /// Anything else; carries the text to echo as the `filename`.
    Bad(String),
}

impl Request {
    /// Whether the answer may be a file region (`get`, and `list`, whose
    /// answer is kept in a file).
    pub(crate) fn may_send_file(&self) -> bool {
        matches!(self, Request::Get(_) | Request::List)
    }
}

/// Parses one request line. `get ` with an empty name, an unknown command
/// and a name that is not valid UTF-8 are all [`Request::Bad`].
pub fn parse(line: &[u8]) -> Request {
    if line == b"list" {
        return Request::List;
    }
    match line.strip_prefix(b"get ") {
        Some([]) => Request::Bad(String::new()),
        Some(name) => match std::str::from_utf8(name) {
            Ok(name) => Request::Get(name.to_owned()),
            Err(_) => Request::Bad(String::from_utf8_lossy(name).into_owned()),
        },
        None => Request::Bad(String::from_utf8_lossy(line).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse(b"list"), Request::List);
        assert_eq!(parse(b"get a b.txt"), Request::Get("a b.txt".into()));
        assert_eq!(parse("get 你好 x".as_bytes()), Request::Get("你好 x".into()));
        assert_eq!(parse(b"get  lead"), Request::Get(" lead".into()));
        assert_eq!(parse(b"get "), Request::Bad(String::new()));
        assert_eq!(parse(b"get"), Request::Bad("get".into()));
        assert_eq!(parse(b"put x"), Request::Bad("put x".into()));
        assert_eq!(parse(b"list "), Request::Bad("list ".into()));
        assert_eq!(parse(b"get a\xffb"), Request::Bad("a\u{fffd}b".into()));
    }
}
