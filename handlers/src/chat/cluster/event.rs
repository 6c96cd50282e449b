//! What the servers of a cluster tell each other over Redis pub/sub: one
//! JSON object per message on the channel `switchboard:room`, the sending
//! server's id in `s` and the kind of event in `k` (PROTOCOLS.md).

use serde::{Deserialize, Serialize};

/// One event of the shared room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub(crate) enum Event {
    /// A member joined (under its guest nick).
    Join { nick: String },
    /// A member left; `slow`: cut off as a slow consumer.
    Leave {
        nick: String,
        #[serde(default)]
        slow: bool,
    },
    /// A nick change.
    Nick { old: String, new: String },
    /// A text line.
    Text { nick: String, text: String },
    /// A private message for `to`, wherever it is.
    Msg { from: String, to: String, text: String },
    /// The owner of account `nick` logged in: whoever else holds the nick
    /// goes back to a guest nick.
    Evict { nick: String },
}

/// An event and the server it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The sending server's id.
    pub(crate) s: String,
    /// The event.
    #[serde(flatten)]
    pub(crate) e: Event,
}

impl Envelope {
    /// The JSON text sent over Redis.
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serialises")
    }

    /// Reads one; `None` for anything that is not a valid envelope.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let env =
            Envelope { s: "ab".into(), e: Event::Text { nick: "bob".into(), text: "hi \"there\"".into() } };
        let json = env.encode();
        assert_eq!(json, r#"{"s":"ab","k":"text","nick":"bob","text":"hi \"there\""}"#);
        assert_eq!(Envelope::decode(json.as_bytes()), Some(env));
        let leave = Envelope::decode(br#"{"s":"x","k":"leave","nick":"a"}"#).unwrap();
        assert_eq!(leave.e, Event::Leave { nick: "a".into(), slow: false });
        assert_eq!(Envelope::decode(b"not json"), None);
        assert_eq!(Envelope::decode(br#"{"s":"x","k":"boom"}"#), None);
        assert_eq!(Envelope::decode(br#"{"k":"join","nick":"a"}"#), None);
    }
}
