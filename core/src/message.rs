//! [`Message`]: shared immutable bytes, one allocation for many connections.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// An immutable, cheaply cloned byte message: one allocation shared by every
/// connection it is sent to (a chat broadcast copies nothing per member).
#[derive(Clone, PartialEq, Eq)]
pub struct Message(Arc<[u8]>);

impl Message {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Message {
        Message(v.into())
    }
}
impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Message {
        Message(v.into())
    }
}
impl From<String> for Message {
    fn from(v: String) -> Message {
        Message(v.into_bytes().into())
    }
}
impl From<&str> for Message {
    fn from(v: &str) -> Message {
        Message(v.as_bytes().into())
    }
}
impl From<Arc<[u8]>> for Message {
    fn from(v: Arc<[u8]>) -> Message {
        Message(v)
    }
}
impl<const N: usize> From<&[u8; N]> for Message {
    fn from(v: &[u8; N]) -> Message {
        Message(v.as_slice().into())
    }
}

/// What every `send` takes ([`Conn::send`](crate::Conn::send),
/// [`ConnHandle::send`](crate::ConnHandle::send),
/// [`Deferred::send`](crate::Deferred::send)): borrowed bytes (`&[u8]`, a
/// byte-string literal `b"…"`, `&str`, `&String`, `&Vec<u8>`) or owned ones
/// (`String`, `Vec<u8>`, a shared [`Message`]). Inside a callback borrowed
/// bytes are copied straight into the connection's queue (no allocation of
/// their own) and a `Message` is queued without copying; from another
/// thread borrowed bytes become one `Message`.
///
/// ```
/// use std::time::Duration;
/// use switchboard::{handler_fn, Flow, Framing, Harness, Message};
///
/// let each = handler_fn(Framing::lines(64), |_, conn| {
///     let shared = Message::from("message;");
///     let (s, v) = (String::from("&String;"), b"&Vec;".to_vec());
///     conn.send(&b"slice;"[..]);
///     conn.send(b"literal;");
///     conn.send("str;");
///     conn.send(&s);
///     conn.send(&v);
///     conn.send(String::from("String;"));
///     conn.send(b"Vec;".to_vec());
///     conn.send(shared.clone());
///     let handle = conn.handle();
///     let reply = conn.defer();
///     for to in [&handle, reply.handle()] {
///         to.send(&b"slice;"[..]).unwrap();
///         to.send(b"literal;").unwrap();
///         to.send("str;").unwrap();
///         to.send(&s).unwrap();
///         to.send(&v).unwrap();
///         to.send(String::from("String;")).unwrap();
///         to.send(b"Vec;".to_vec()).unwrap();
///         to.send(shared.clone()).unwrap();
///     }
///     reply.send(b"deferred\n").unwrap();
///     Flow::Continue
/// });
/// let mut h = Harness::new(each);
/// h.input(b"go\n");
/// assert!(h.wait_deferred(Duration::from_secs(10)));
/// let once = "slice;literal;str;&String;&Vec;String;Vec;message;";
/// assert_eq!(String::from_utf8(h.output()).unwrap(), format!("{once}{once}{once}deferred\n"));
/// ```
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// Bytes borrowed for the call: copied.
    Borrowed(&'a [u8]),
    /// A message owned (or shared): queued as it is.
    Shared(Message),
}

impl Payload<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Borrowed(b) => b.len(),
            Payload::Shared(m) => m.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As a [`Message`] (borrowed bytes are copied into one).
    pub fn into_message(self) -> Message {
        match self {
            Payload::Borrowed(b) => Message::from(b),
            Payload::Shared(m) => m,
        }
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(v: &'a [u8]) -> Payload<'a> {
        Payload::Borrowed(v)
    }
}
impl<'a, const N: usize> From<&'a [u8; N]> for Payload<'a> {
    fn from(v: &'a [u8; N]) -> Payload<'a> {
        Payload::Borrowed(v)
    }
}
impl<'a> From<&'a str> for Payload<'a> {
    fn from(v: &'a str) -> Payload<'a> {
        Payload::Borrowed(v.as_bytes())
    }
}
impl<'a> From<&'a String> for Payload<'a> {
    fn from(v: &'a String) -> Payload<'a> {
        Payload::Borrowed(v.as_bytes())
    }
}
impl<'a> From<&'a Vec<u8>> for Payload<'a> {
    fn from(v: &'a Vec<u8>) -> Payload<'a> {
        Payload::Borrowed(v)
    }
}
impl<'a> From<&'a Message> for Payload<'a> {
    fn from(v: &'a Message) -> Payload<'a> {
        Payload::Shared(v.clone())
    }
}
impl From<String> for Payload<'_> {
    fn from(v: String) -> Self {
        Payload::Shared(v.into())
    }
}
impl From<Vec<u8>> for Payload<'_> {
    fn from(v: Vec<u8>) -> Self {
        Payload::Shared(v.into())
    }
}
impl From<Message> for Payload<'_> {
    fn from(v: Message) -> Self {
        Payload::Shared(v)
    }
}
impl From<Arc<[u8]>> for Payload<'_> {
    fn from(v: Arc<[u8]>) -> Self {
        Payload::Shared(v.into())
    }
}
