//! The websocket protocols between clients and the gateway.
//!
//! - Legacy (no subprotocol; what Jupyter Server's gateway client speaks): a message is a JSON
//!   text frame `{"header", "parent_header", "metadata", "content", "buffers", "channel"}` (the
//!   gateway adds `msg_id` and `msg_type` going out). A message with buffers travels as a binary
//!   frame: `u32be n`, `n` u32be offsets, the JSON, then the buffers back to back.
//! - `v1.kernel.websocket.jupyter.org`: every frame binary: `u64le n`, `n` u64le offsets, the
//!   channel name, then header, parent_header, metadata, content and buffers, each verbatim.
//!
//! Going out, the kernel's JSON parts are spliced in as received: nothing is re-serialised.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire::{Channel, HeaderInfo, Message};

/// The binary subprotocol's name.
pub const V1_PROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Legacy,
    V1,
}

/// A frame to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
}

/// Why a client frame was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a JSON message: {0}")]
    Json(String),
    #[error("field `{0}` must be a JSON object")]
    NotObject(&'static str),
    #[error("channel {0:?} is not one a client may send on (shell, control, stdin)")]
    Channel(String),
    #[error("binary frame: {0}")]
    Binary(String),
}

/// A message from a client. `channel_defaulted` is set when a legacy message named no channel
/// (it goes to shell, as upstream does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub channel: Channel,
    pub channel_defaulted: bool,
    pub msg: Message,
}

/// Encodes a kernel message for a client. `info` is the message's parsed header.
pub fn encode(protocol: Protocol, channel: Channel, msg: &Message, info: &HeaderInfo) -> Frame {
    match protocol {
        Protocol::Legacy => encode_legacy(channel, msg, info),
        Protocol::V1 => Frame::Binary(encode_v1(channel, msg)),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn encode_legacy(channel: Channel, msg: &Message, info: &HeaderInfo) -> Frame {
    let msg_id = json_str(&info.msg_id);
    let msg_type = json_str(&info.msg_type);
    let mut json = Vec::with_capacity(msg.size() + msg_id.len() + msg_type.len() + 128);
    json.extend_from_slice(b"{\"header\":");
    json.extend_from_slice(&msg.header);
    json.extend_from_slice(b",\"msg_id\":");
    json.extend_from_slice(msg_id.as_bytes());
    json.extend_from_slice(b",\"msg_type\":");
    json.extend_from_slice(msg_type.as_bytes());
    json.extend_from_slice(b",\"parent_header\":");
    json.extend_from_slice(&msg.parent_header);
    json.extend_from_slice(b",\"metadata\":");
    json.extend_from_slice(&msg.metadata);
    json.extend_from_slice(b",\"content\":");
    json.extend_from_slice(&msg.content);
    json.extend_from_slice(b",\"buffers\":[],\"channel\":\"");
    json.extend_from_slice(channel.as_str().as_bytes());
    json.extend_from_slice(b"\"}");
    if msg.buffers.is_empty() {
        // The kernel's parts are UTF-8 JSON; a part that is not is sent lossily rather than
        // breaking the text frame.
        return Frame::Text(match String::from_utf8(json) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        });
    }
    let n = 1 + msg.buffers.len();
    let mut out = BytesMut::with_capacity(4 * (n + 1) + json.len() + msg.size());
    out.put_u32(n as u32);
    let mut offset = 4 * (n + 1);
    out.put_u32(offset as u32);
    offset += json.len();
    for buffer in &msg.buffers[..msg.buffers.len() - 1] {
        out.put_u32(offset as u32);
        offset += buffer.len();
    }
    out.put_u32(offset as u32);
    out.extend_from_slice(&json);
    for buffer in &msg.buffers {
        out.extend_from_slice(buffer);
    }
    Frame::Binary(out.freeze())
}

fn encode_v1(channel: Channel, msg: &Message) -> Bytes {
    let parts: Vec<&[u8]> = [
        channel.as_str().as_bytes(),
        &msg.header,
        &msg.parent_header,
        &msg.metadata,
        &msg.content,
    ]
    .into_iter()
    .chain(msg.buffers.iter().map(|b| b.as_ref()))
    .collect();
    let n = parts.len() + 1;
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(8 * (n + 1) + body);
    out.put_u64_le(n as u64);
    let mut offset = 8 * (n + 1);
    out.put_u64_le(offset as u64);
    for part in &parts {
        offset += part.len();
        out.put_u64_le(offset as u64);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

#[derive(Deserialize)]
struct LegacyIn<'a> {
    #[serde(borrow)]
    header: &'a RawValue,
    #[serde(borrow, default)]
    parent_header: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
}

fn object(raw: Option<&RawValue>, field: &'static str) -> Result<Bytes, FrameError> {
    match raw {
        None => Ok(Bytes::from_static(b"{}")),
        Some(raw) if raw.get().trim_start().starts_with('{') => {
            Ok(Bytes::copy_from_slice(raw.get().as_bytes()))
        }
        Some(raw) if raw.get() == "null" && field != "header" => Ok(Bytes::from_static(b"{}")),
        Some(_) => Err(FrameError::NotObject(field)),
    }
}

/// A legacy text frame from a client. The header and the other parts are forwarded as written.
pub fn decode_legacy_text(text: &str) -> Result<ClientMessage, FrameError> {
    decode_legacy_json(text, Vec::new())
}

fn decode_legacy_json(text: &str, buffers: Vec<Bytes>) -> Result<ClientMessage, FrameError> {
    let parsed: LegacyIn<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let header = object(Some(parsed.header), "header")?;
    let (channel, channel_defaulted) = match parsed.channel.as_deref() {
        None => (Channel::Shell, true),
        Some(name) => (
            Channel::from_client(name).ok_or_else(|| FrameError::Channel(name.to_owned()))?,
            false,
        ),
    };
    Ok(ClientMessage {
        channel,
        channel_defaulted,
        msg: Message {
            header,
            parent_header: object(parsed.parent_header, "parent_header")?,
            metadata: object(parsed.metadata, "metadata")?,
            content: object(parsed.content, "content")?,
            buffers,
        },
    })
}

/// Reads `count` offsets of `width` bytes after the count itself and checks they are ordered
/// and inside the frame.
fn offsets(frame: &[u8], width: usize) -> Result<Vec<usize>, FrameError> {
    let read = |at: usize| -> Option<usize> {
        let bytes = frame.get(at..at + width)?;
        Some(match width {
            4 => u32::from_be_bytes(bytes.try_into().ok()?) as usize,
            _ => usize::try_from(u64::from_le_bytes(bytes.try_into().ok()?)).ok()?,
        })
    };
    let n = read(0).ok_or_else(|| FrameError::Binary("shorter than its header".into()))?;
    if n == 0 || n > frame.len() / width {
        return Err(FrameError::Binary(format!("{n} offsets cannot fit")));
    }
    let mut out = Vec::with_capacity(n + 1);
    for i in 0..n {
        out.push(read(width * (i + 1)).ok_or_else(|| FrameError::Binary("truncated".into()))?);
    }
    if out[0] != width * (n + 1) {
        return Err(FrameError::Binary(format!(
            "first offset {} should be {}",
            out[0],
            width * (n + 1)
        )));
    }
    if out.windows(2).any(|w| w[0] > w[1]) || out[n - 1] > frame.len() {
        return Err(FrameError::Binary(
            "offsets out of order or past the end".into(),
        ));
    }
    out.push(frame.len());
    Ok(out)
}

/// A legacy binary frame from a client: the JSON message followed by its buffers.
pub fn decode_legacy_binary(frame: &Bytes) -> Result<ClientMessage, FrameError> {
    let offs = offsets(frame, 4)?;
    let json = std::str::from_utf8(&frame[offs[0]..offs[1]])
        .map_err(|_| FrameError::Binary("message part is not UTF-8".into()))?;
    let buffers = offs[1..]
        .windows(2)
        .map(|w| frame.slice(w[0]..w[1]))
        .collect();
    decode_legacy_json(json, buffers)
}

/// A `v1.kernel.websocket.jupyter.org` frame from a client.
pub fn decode_v1(frame: &Bytes) -> Result<ClientMessage, FrameError> {
    let offs = offsets(frame, 8)?;
    // offs holds n offsets plus the frame's end; the last offset given is the end of the last
    // part, so parts are the windows of offs[..n].
    let n = offs.len() - 1;
    let parts: Vec<Bytes> = offs[..n]
        .windows(2)
        .map(|w| frame.slice(w[0]..w[1]))
        .collect();
    if parts.len() < 5 {
        return Err(FrameError::Binary(format!(
            "{} parts; a message needs the channel and four parts",
            parts.len()
        )));
    }
    let name = std::str::from_utf8(&parts[0])
        .map_err(|_| FrameError::Binary("channel is not UTF-8".into()))?;
    let channel = Channel::from_client(name).ok_or_else(|| FrameError::Channel(name.to_owned()))?;
    for (part, field) in parts[1..5]
        .iter()
        .zip(["header", "parent_header", "metadata", "content"])
    {
        if serde_json::from_slice::<&RawValue>(part)
            .map(|raw| !raw.get().starts_with('{'))
            .unwrap_or(true)
        {
            return Err(FrameError::NotObject(field));
        }
    }
    let mut parts = parts.into_iter().skip(1);
    let mut next = || parts.next().unwrap_or_default();
    let (header, parent_header, metadata, content) = (next(), next(), next(), next());
    Ok(ClientMessage {
        channel,
        channel_defaulted: false,
        msg: Message {
            header,
            parent_header,
            metadata,
            content,
            buffers: parts.collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(buffers: Vec<&'static [u8]>) -> Message {
        Message {
            header: Bytes::from_static(
                br#"{"msg_id":"m1","msg_type":"comm_msg","date":"2024-05-01T12:00:00.123Z"}"#,
            ),
            parent_header: Bytes::from_static(br#"{"msg_id":"p"}"#),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(br#"{"data":{"x":1}}"#),
            buffers: buffers.into_iter().map(Bytes::from_static).collect(),
        }
    }

    fn info() -> HeaderInfo {
        HeaderInfo {
            msg_id: "m1".into(),
            msg_type: "comm_msg".into(),
        }
    }

    #[test]
    fn legacy_text_out_is_valid_json_with_parts_verbatim() {
        let Frame::Text(text) = encode(Protocol::Legacy, Channel::Iopub, &msg(vec![]), &info())
        else {
            panic!("text expected")
        };
        assert!(text.contains(r#""date":"2024-05-01T12:00:00.123Z""#));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["msg_id"], "m1");
        assert_eq!(v["msg_type"], "comm_msg");
        assert_eq!(v["channel"], "iopub");
        assert_eq!(v["parent_header"]["msg_id"], "p");
        assert_eq!(v["content"]["data"]["x"], 1);
        assert_eq!(v["buffers"], serde_json::json!([]));
    }

    #[test]
    fn legacy_binary_out_layout() {
        let Frame::Binary(frame) = encode(
            Protocol::Legacy,
            Channel::Shell,
            &msg(vec![b"\x00\x01\x02", b"xy"]),
            &info(),
        ) else {
            panic!("binary expected")
        };
        let n = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(n, 3);
        let off: Vec<usize> = (0..n)
            .map(|i| u32::from_be_bytes(frame[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
            .collect();
        assert_eq!(off[0], 16);
        let json: serde_json::Value = serde_json::from_slice(&frame[off[0]..off[1]]).unwrap();
        assert_eq!(json["channel"], "shell");
        assert_eq!(&frame[off[1]..off[2]], b"\x00\x01\x02");
        assert_eq!(&frame[off[2]..], b"xy");
        // And a client may send the same layout back.
        let back = decode_legacy_binary(&frame).unwrap();
        assert_eq!(back.channel, Channel::Shell);
        assert_eq!(back.msg.buffers, vec![&b"\x00\x01\x02"[..], &b"xy"[..]]);
    }

    #[test]
    fn v1_round_trip() {
        let m = msg(vec![b"\xff\x00", b""]);
        let Frame::Binary(frame) = encode(Protocol::V1, Channel::Shell, &m, &info()) else {
            panic!("binary expected")
        };
        let n = u64::from_le_bytes(frame[0..8].try_into().unwrap()) as usize;
        assert_eq!(n, 2 + 4 + 2);
        let first = u64::from_le_bytes(frame[8..16].try_into().unwrap()) as usize;
        assert_eq!(first, 8 * (n + 1));
        assert_eq!(&frame[first..first + 5], b"shell");
        let back = decode_v1(&frame).unwrap();
        assert_eq!(back.channel, Channel::Shell);
        assert_eq!(back.msg, m);
        // IOPub frames go out but never come in.
        let Frame::Binary(iopub) = encode(Protocol::V1, Channel::Iopub, &m, &info()) else {
            panic!()
        };
        assert_eq!(
            decode_v1(&iopub).unwrap_err(),
            FrameError::Channel("iopub".into())
        );
    }

    #[test]
    fn legacy_text_in() {
        let m = decode_legacy_text(
            r#"{"header":{"msg_id":"x","msg_type":"execute_request","date":"2024-05-01T12:00:00.000Z"},
                "parent_header":{},"metadata":{},"content":{"code":"1+1"},"channel":"shell","buffers":[]}"#,
        )
        .unwrap();
        assert_eq!(m.channel, Channel::Shell);
        assert!(!m.channel_defaulted);
        assert_eq!(
            &m.msg.header[..],
            br#"{"msg_id":"x","msg_type":"execute_request","date":"2024-05-01T12:00:00.000Z"}"#
        );
        assert_eq!(&m.msg.content[..], br#"{"code":"1+1"}"#);
        let d = decode_legacy_text(r#"{"header":{},"content":{}}"#).unwrap();
        assert!(d.channel_defaulted);
        assert_eq!(&d.msg.metadata[..], b"{}");
    }

    #[test]
    fn malformed_client_frames_are_errors_not_panics() {
        for (text, expect) in [
            ("", "not a JSON"),
            ("{", "not a JSON"),
            ("[]", "not a JSON"),
            (r#"{"content":{}}"#, "not a JSON"),
            (r#"{"header":1}"#, "header"),
            (r#"{"header":{},"content":"x"}"#, "content"),
            (r#"{"header":{},"channel":"iopub"}"#, "iopub"),
            (r#"{"header":{},"channel":7}"#, "not a JSON"),
        ] {
            let err = decode_legacy_text(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
        for frame in [
            &b""[..],
            b"\x00\x00\x00\x00",
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x02\x00\x00\x00\x0c\x00\x00\x00\xff",
            b"\x00\x00\x00\x01\x00\x00\x00\x09{}",
        ] {
            assert!(decode_legacy_binary(&Bytes::copy_from_slice(frame)).is_err());
            assert!(decode_v1(&Bytes::copy_from_slice(frame)).is_err());
        }
        let mut short = BytesMut::new();
        short.put_u64_le(2);
        short.put_u64_le(24);
        short.put_u64_le(29);
        short.extend_from_slice(b"shell");
        assert!(
            decode_v1(&short.freeze())
                .unwrap_err()
                .to_string()
                .contains("parts")
        );
    }
}
