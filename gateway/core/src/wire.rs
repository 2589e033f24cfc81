//! Jupyter messages on ZeroMQ: `[identities…, "<IDS|MSG>", signature, header, parent_header,
//! metadata, content, buffers…]`. The four JSON parts travel verbatim: the gateway signs what it
//! sends and verifies what it receives, and parses only the header fields it needs.

use std::{
    collections::{HashSet, VecDeque},
    hash::{Hash, Hasher},
};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;

/// The frame separating routing identities from the message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// A kernel channel the websocket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Shell,
    Control,
    Stdin,
    Iopub,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Control => "control",
            Self::Stdin => "stdin",
            Self::Iopub => "iopub",
        }
    }

    /// A channel a client may send on (`iopub` is receive-only).
    pub fn from_client(name: &str) -> Option<Self> {
        match name {
            "shell" => Some(Self::Shell),
            "control" => Some(Self::Control),
            "stdin" => Some(Self::Stdin),
            _ => None,
        }
    }

    pub const ALL: [Channel; 4] = [Self::Shell, Self::Control, Self::Stdin, Self::Iopub];
}

/// One message: the four JSON parts exactly as they were received, and any binary buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Bytes,
    pub parent_header: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl Message {
    /// Bytes held by the message (what bounded queues count).
    pub fn size(&self) -> usize {
        self.header.len()
            + self.parent_header.len()
            + self.metadata.len()
            + self.content.len()
            + self.buffers.iter().map(Bytes::len).sum::<usize>()
    }

    fn signed_parts(&self) -> [&[u8]; 4] {
        [
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("signature_scheme {0:?} is not supported (hmac-sha256, hmac-sha384, hmac-sha512)")]
    Scheme(String),
    #[error("no <IDS|MSG> delimiter among {0} frames")]
    NoDelimiter(usize),
    #[error("{0} frames after the delimiter; a message needs a signature and four parts")]
    TooFewFrames(usize),
    #[error("signature does not match")]
    BadSignature,
    #[error("signature seen before: a replayed message")]
    Replayed,
}

#[derive(Clone)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

/// Signs and verifies with the connection's key and `signature_scheme`. An empty key signs with
/// an empty signature and accepts any (Jupyter's rule).
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    algorithm: Algorithm,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

macro_rules! with_mac {
    ($self:expr, $mac:ident => $body:expr) => {
        match $self.algorithm {
            Algorithm::Sha256 => {
                let mut $mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&$self.key)
                    .expect("HMAC takes a key of any length");
                $body
            }
            Algorithm::Sha384 => {
                let mut $mac = <Hmac<sha2::Sha384> as Mac>::new_from_slice(&$self.key)
                    .expect("HMAC takes a key of any length");
                $body
            }
            Algorithm::Sha512 => {
                let mut $mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(&$self.key)
                    .expect("HMAC takes a key of any length");
                $body
            }
        }
    };
}

impl Signer {
    /// `scheme` as in a connection file (`hmac-sha256`; empty means the default `hmac-sha256`);
    /// `key` is the key's UTF-8 bytes, as Jupyter uses it (not hex-decoded).
    pub fn new(scheme: &str, key: &[u8]) -> Result<Self, WireError> {
        let algorithm = match scheme {
            "" | "hmac-sha256" => Algorithm::Sha256,
            "hmac-sha384" => Algorithm::Sha384,
            "hmac-sha512" => Algorithm::Sha512,
            other => return Err(WireError::Scheme(other.to_owned())),
        };
        Ok(Self {
            key: key.to_vec(),
            algorithm,
        })
    }

    /// Lower-case hex HMAC over the four JSON parts.
    pub fn sign(&self, msg: &Message) -> String {
        if self.key.is_empty() {
            return String::new();
        }
        with_mac!(self, mac => {
            for part in msg.signed_parts() {
                mac.update(part);
            }
            hex::encode(mac.finalize().into_bytes())
        })
    }

    /// Checks a received signature in constant time.
    pub fn verify(&self, signature: &[u8], msg: &Message) -> bool {
        if self.key.is_empty() {
            return true;
        }
        let Ok(raw) = hex::decode(signature) else {
            return false;
        };
        with_mac!(self, mac => {
            for part in msg.signed_parts() {
                mac.update(part);
            }
            mac.verify_slice(&raw).is_ok()
        })
    }
}

/// The signatures of a connection's recent messages (upstream's `digest_history`): a message
/// whose signature was seen before is a replay and is refused. Bounded: past `capacity` the
/// oldest are forgotten. Only signatures that verified are recorded, so a forged message cannot
/// make a real one look replayed; unsigned messages (empty key) are not tracked.
#[derive(Debug)]
pub struct DigestHistory {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl DigestHistory {
    /// Upstream's `Session.digest_history_size`.
    pub const UPSTREAM_SIZE: usize = 1 << 16;

    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a signature; false if it was recorded before (and is still remembered).
    pub fn record(&mut self, signature: &[u8]) -> bool {
        if signature.is_empty() {
            return true;
        }
        // Signatures are HMACs: 64 bits of their hash tell them apart, in an eighth of the room.
        let mut h = std::hash::DefaultHasher::new();
        signature.hash(&mut h);
        let key = h.finish();
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Frames received from a kernel socket -> the message, its signature checked against the key
/// and against `history` (replays refused). Routing identities (and IOPub topics) before the
/// delimiter are dropped.
pub fn decode(
    frames: Vec<Bytes>,
    signer: &Signer,
    history: &mut DigestHistory,
) -> Result<Message, WireError> {
    let total = frames.len();
    let Some(delim) = frames.iter().position(|f| f.as_ref() == DELIMITER) else {
        return Err(WireError::NoDelimiter(total));
    };
    let mut rest = frames.into_iter().skip(delim + 1);
    let (Some(signature), Some(header), Some(parent_header), Some(metadata), Some(content)) = (
        rest.next(),
        rest.next(),
        rest.next(),
        rest.next(),
        rest.next(),
    ) else {
        return Err(WireError::TooFewFrames(total - delim - 1));
    };
    let msg = Message {
        header,
        parent_header,
        metadata,
        content,
        buffers: rest.collect(),
    };
    if !signer.verify(&signature, &msg) {
        return Err(WireError::BadSignature);
    }
    if !signer.key.is_empty() && !history.record(&signature) {
        return Err(WireError::Replayed);
    }
    Ok(msg)
}

/// The frames to send to a kernel socket: delimiter, signature, the four parts, the buffers.
pub fn encode(msg: &Message, signer: &Signer) -> Vec<Bytes> {
    let mut frames = Vec::with_capacity(6 + msg.buffers.len());
    frames.push(Bytes::from_static(DELIMITER));
    frames.push(Bytes::from(signer.sign(msg)));
    frames.push(msg.header.clone());
    frames.push(msg.parent_header.clone());
    frames.push(msg.metadata.clone());
    frames.push(msg.content.clone());
    frames.extend(msg.buffers.iter().cloned());
    frames
}

/// The header fields the gateway reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeaderInfo {
    #[serde(default)]
    pub msg_id: String,
    #[serde(default)]
    pub msg_type: String,
}

impl HeaderInfo {
    /// Reads `msg_id` and `msg_type` (missing ones are empty); `None` if the header is not a JSON
    /// object.
    pub fn parse(header: &[u8]) -> Option<Self> {
        serde_json::from_slice(header).ok()
    }
}

/// `msg_id` of a parent header (`None` when empty or absent).
pub fn parent_msg_id(parent_header: &[u8]) -> Option<String> {
    HeaderInfo::parse(parent_header)
        .map(|h| h.msg_id)
        .filter(|id| !id.is_empty())
}

/// `execution_state` of a `status` message's content.
pub fn execution_state(content: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Status {
        execution_state: String,
    }
    serde_json::from_slice::<Status>(content)
        .ok()
        .map(|s| s.execution_state)
}

/// A message the gateway itself originates (status notices, `kernel_info_request`,
/// `shutdown_request`, `interrupt_request`). `date` is an ISO-8601 UTC timestamp.
pub fn new_message(
    msg_type: &str,
    msg_id: &str,
    session: &str,
    date: &str,
    content: serde_json::Value,
) -> Message {
    let header = serde_json::json!({
        "msg_id": msg_id,
        "msg_type": msg_type,
        "username": "gateway",
        "session": session,
        "date": date,
        "version": "5.3",
    });
    Message {
        header: Bytes::from(header.to_string()),
        parent_header: Bytes::from_static(b"{}"),
        metadata: Bytes::from_static(b"{}"),
        content: Bytes::from(content.to_string()),
        buffers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message {
            header: Bytes::from_static(br#"{"msg_id":"a","msg_type":"execute_request"}"#),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(br#"{"code":"1+1"}"#),
            buffers: vec![Bytes::from_static(b"\x00\x01")],
        }
    }

    #[test]
    fn hmac_vectors() {
        // Python: hmac.new(b"key", b"".join(four parts), hashlib.sha256).hexdigest()
        let s = Signer::new("hmac-sha256", b"key").unwrap();
        assert_eq!(
            s.sign(&msg()),
            "aea981bc0c65740604f530cfcf85740514af31348c3266f5483b56510644e874"
        );
        // A fixed vector from RFC 4231 test case 2 (key "Jefe").
        let jefe = Signer::new("hmac-sha256", b"Jefe").unwrap();
        let m = Message {
            header: Bytes::from_static(b"what do ya want "),
            parent_header: Bytes::from_static(b"for nothing?"),
            metadata: Bytes::new(),
            content: Bytes::new(),
            buffers: vec![],
        };
        assert_eq!(
            jefe.sign(&m),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let jefe512 = Signer::new("hmac-sha512", b"Jefe").unwrap();
        assert_eq!(
            jefe512.sign(&m),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert!(jefe.verify(jefe.sign(&m).as_bytes(), &m));
        assert!(!jefe.verify(b"00", &m));
        assert!(!jefe.verify(b"not hex", &m));
        assert_eq!(
            Signer::new("hmac-md5", b"k").unwrap_err(),
            WireError::Scheme("hmac-md5".into())
        );
        let none = Signer::new("hmac-sha256", b"").unwrap();
        assert_eq!(none.sign(&m), "");
        assert!(none.verify(b"anything", &m));
    }

    #[test]
    fn round_trip_and_errors() {
        let s = Signer::new("hmac-sha256", b"secret").unwrap();
        let mut frames = vec![Bytes::from_static(b"kernel.x.status")];
        frames.extend(encode(&msg(), &s));
        let h = &mut DigestHistory::new(16);
        let other = Signer::new("hmac-sha256", b"other").unwrap();
        assert_eq!(
            decode(frames.clone(), &other, h).unwrap_err(),
            WireError::BadSignature
        );
        // The forged copy above left no trace: the real message still passes, once.
        assert_eq!(decode(frames.clone(), &s, h).unwrap(), msg());
        assert_eq!(
            decode(frames.clone(), &s, h).unwrap_err(),
            WireError::Replayed
        );
        let mut tampered = frames.clone();
        tampered[6] = Bytes::from_static(br#"{"code":"2+2"}"#);
        assert_eq!(
            decode(tampered, &s, h).unwrap_err(),
            WireError::BadSignature
        );
        assert_eq!(
            decode(vec![Bytes::from_static(b"x")], &s, h).unwrap_err(),
            WireError::NoDelimiter(1)
        );
        assert_eq!(
            decode(frames[..4].to_vec(), &s, h).unwrap_err(),
            WireError::TooFewFrames(2)
        );
        // Without a key nothing is signed and nothing is tracked: repeats pass.
        let none = Signer::new("hmac-sha256", b"").unwrap();
        let mut unsigned = vec![];
        unsigned.extend(encode(&msg(), &none));
        for _ in 0..2 {
            assert_eq!(decode(unsigned.clone(), &none, h).unwrap(), msg());
        }
    }

    #[test]
    fn digest_history_forgets_the_oldest() {
        let mut h = DigestHistory::new(3);
        for sig in ["a1", "b2", "c3"] {
            assert!(h.record(sig.as_bytes()), "{sig} is new");
        }
        assert!(!h.record(b"a1"), "a1 is remembered");
        assert!(h.record(b"d4"), "d4 is new and pushes a1 out");
        assert_eq!(h.len(), 3);
        assert!(h.record(b"a1"), "a1 was forgotten");
        assert!(!h.record(b"c3"), "c3 is still remembered");
        assert!(h.record(b""), "an empty signature is never tracked");
        assert!(h.record(b""));
    }

    #[test]
    fn header_fields() {
        assert_eq!(
            HeaderInfo::parse(br#"{"msg_id":"i","msg_type":"status","date":"x"}"#).unwrap(),
            HeaderInfo {
                msg_id: "i".into(),
                msg_type: "status".into()
            }
        );
        assert_eq!(HeaderInfo::parse(b"[1]"), None);
        assert_eq!(parent_msg_id(b"{}"), None);
        assert_eq!(parent_msg_id(br#"{"msg_id":"p"}"#).as_deref(), Some("p"));
        assert_eq!(
            execution_state(br#"{"execution_state":"busy"}"#).as_deref(),
            Some("busy")
        );
        assert_eq!(execution_state(b"{}"), None);
    }
}
