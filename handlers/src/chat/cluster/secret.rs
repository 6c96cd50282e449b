//! A Redis URL whose password reaches no log line and no error message:
//! it is shown with the password as `***`, and what Redis or the client
//! says about it is scrubbed of the password before it is shown.

use std::fmt;

use redis::IntoConnectionInfo;

/// What stands for a password wherever the URL is shown.
const HIDDEN: &str = "***";

/// A Redis URL (`redis://[USER][:PASSWORD@]HOST[:PORT][/DB]`,
/// `rediss://...`, `redis+unix:///PATH?pass=PASSWORD`); `Display` and
/// `Debug` show it with the password hidden.
#[derive(Clone)]
pub(crate) struct RedisUrl {
    full: String,
    shown: String,
    /// The password as written in the URL and as sent to Redis (decoded).
    secrets: Vec<String>,
}

impl RedisUrl {
    pub(crate) fn new(full: &str) -> RedisUrl {
        let (shown, mut secrets) = redact(full);
        if let Ok(info) = full.into_connection_info() {
            secrets.extend(info.redis.password);
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first: a password that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        RedisUrl { full: full.to_owned(), shown, secrets }
    }

    /// The URL as given, password included: for the client only.
    pub(crate) fn full(&self) -> &str {
        &self.full
    }

    /// Whether the URL holds a password.
    pub(crate) fn has_password(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// `text` (an error from the client or from Redis) with the password
    /// hidden wherever it appears.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |t, s| t.replace(s.as_str(), HIDDEN))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.shown)
    }
}

/// `url` with the password of its user part and of its `pass=` or
/// `password=` query parameters as `***`, and the passwords hidden. What
/// is not a URL at all may be a password pasted by mistake: it is not shown.
fn redact(url: &str) -> (String, Vec<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return ("(not a URL, not shown)".to_owned(), vec![url.to_owned()]);
    };
    let mut secrets = Vec::new();
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut shown = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, pass)) => {
                    secrets.push(pass.to_owned());
                    shown.push_str(&format!("{user}:{HIDDEN}"));
                }
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            shown.push_str(host);
        }
        None => shown.push_str(authority),
    }
    shown.push_str(path);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((k, v)) if k == "pass" || k == "password" => {
                    secrets.push(v.to_owned());
                    format!("{k}={HIDDEN}")
                }
                _ => param.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(fragment);
    }
    (shown, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_hidden_wherever_the_url_is_shown() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:1/2", "redis://:***@h:1/2"),
            ("rediss://user:s3cret@h:1", "rediss://user:***@h:1"),
            ("rediss://user@h:1/0#insecure", "rediss://user@h:1/0#insecure"),
            ("redis+unix:///run/r.sock?db=1&pass=s3cret", "redis+unix:///run/r.sock?db=1&pass=***"),
            ("s3cret", "(not a URL, not shown)"),
        ];
        for (url, want) in cases {
            let u = RedisUrl::new(url);
            assert_eq!(u.to_string(), want);
            assert_eq!(format!("{u:?}"), format!("RedisUrl({want})"));
            assert_eq!(u.full(), url);
            assert_eq!(u.scrub("x s3cret y"), if url.contains("s3cret") { "x *** y" } else { "x s3cret y" });
        }
        // A password with '@' in it, and its decoded form (what Redis
        // is sent) hidden as well.
        let u = RedisUrl::new("redis://:p%40ss@w@h:1");
        assert_eq!(u.to_string(), "redis://:***@h:1");
        assert_eq!(u.scrub("sent p@ss@w, wrote p%40ss@w"), "sent ***, wrote ***");
    }
}
