//! ZMTP 3.0 (ZeroMQ's wire protocol, RFC 23 with the NULL mechanism of RFC 24 and the
//! subscription messages of RFC 29) as far as a connecting DEALER or SUB needs it: the greeting,
//! the READY handshake and framing. Kernels are libzmq ROUTER and PUB sockets; the gateway
//! speaks 3.0, which every libzmq since 4.0 accepts, so subscriptions travel as messages
//! (`0x01` + prefix) and no heartbeat commands are exchanged.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;

/// The largest frame accepted from a peer; a longer one ends the connection. Far beyond any
/// Jupyter message (upstream accepts any size, but a bad length must not exhaust memory).
pub const MAX_FRAME: u64 = 1 << 30;

const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZmtpError {
    #[error("peer greeting: not ZMTP (signature {0:02x?})")]
    Signature(Vec<u8>),
    #[error("peer greeting: ZMTP {0}.{1}; 3.0 or later is needed")]
    Version(u8, u8),
    #[error("peer greeting: security mechanism {0:?}; only NULL is spoken")]
    Mechanism(String),
    #[error("frame flags {0:#04x}: reserved bits set")]
    Flags(u8),
    #[error("frame of {0} bytes: more than {MAX_FRAME}")]
    TooLarge(u64),
    #[error("command frame with the MORE flag")]
    CommandMore,
    #[error("malformed {0} command")]
    Command(&'static str),
    #[error("peer refused the handshake: {0}")]
    Refused(String),
    #[error("peer is a {peer} socket; a {ours} needs a {wanted}")]
    SocketType {
        ours: &'static str,
        peer: String,
        wanted: &'static str,
    },
    #[error("peer sent a message before READY")]
    NotReady,
}

/// What the gateway's side of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    Dealer,
    Sub,
}

impl SocketType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dealer => "DEALER",
            Self::Sub => "SUB",
        }
    }

    /// Peer socket types this one may talk to (RFC 28, RFC 29).
    fn peers(self) -> &'static [&'static str] {
        match self {
            Self::Dealer => &["ROUTER", "DEALER", "REP"],
            Self::Sub => &["PUB", "XPUB"],
        }
    }
}

/// Our greeting: ZMTP 3.0, NULL mechanism, client.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Checks a peer's greeting.
pub fn check_greeting(g: &[u8; GREETING_LEN]) -> Result<(), ZmtpError> {
    if g[0] != 0xff || g[9] != 0x7f {
        return Err(ZmtpError::Signature(g[..10].to_vec()));
    }
    if g[10] < 3 {
        return Err(ZmtpError::Version(g[10], g[11]));
    }
    let mechanism = &g[12..32];
    let name_len = mechanism.iter().position(|b| *b == 0).unwrap_or(20);
    if &mechanism[..name_len] != b"NULL" || mechanism[name_len..].iter().any(|b| *b != 0) {
        return Err(ZmtpError::Mechanism(
            String::from_utf8_lossy(&mechanism[..name_len]).into_owned(),
        ));
    }
    Ok(())
}

/// Our READY command (a whole frame): `Socket-Type`, and `Identity` for a DEALER.
pub fn ready(socket_type: SocketType, identity: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u8(5);
    body.put_slice(b"READY");
    let mut property = |name: &str, value: &[u8]| {
        body.put_u8(name.len() as u8);
        body.put_slice(name.as_bytes());
        body.put_u32(value.len() as u32);
        body.put_slice(value);
    };
    property("Socket-Type", socket_type.name().as_bytes());
    if socket_type == SocketType::Dealer {
        property("Identity", identity);
    }
    let mut out = BytesMut::with_capacity(body.len() + 9);
    put_header(&mut out, COMMAND, body.len());
    out.put_slice(&body);
    out
}

/// A command from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// READY with its properties (names as sent, values raw).
    Ready(Vec<(String, Bytes)>),
    /// ERROR with its reason.
    Error(String),
    /// PING (a libzmq peer with `ZMQ_HEARTBEAT_IVL` sends it whatever the version): its
    /// context, which the PONG returns.
    Ping(Bytes),
    /// Any other command (ignored by the caller).
    Other(String),
}

impl Command {
    fn parse(mut body: Bytes) -> Result<Self, ZmtpError> {
        let name = take_short_string(&mut body).ok_or(ZmtpError::Command("unnamed"))?;
        match name.as_str() {
            "READY" => {
                let mut properties = Vec::new();
                while body.has_remaining() {
                    let name = take_short_string(&mut body).ok_or(ZmtpError::Command("READY"))?;
                    if body.remaining() < 4 {
                        return Err(ZmtpError::Command("READY"));
                    }
                    let len = body.get_u32() as usize;
                    if body.remaining() < len {
                        return Err(ZmtpError::Command("READY"));
                    }
                    properties.push((name, body.split_to(len)));
                }
                Ok(Self::Ready(properties))
            }
            "PING" => {
                // A 16-bit TTL, then the context (at most 16 bytes).
                if body.remaining() < 2 {
                    return Err(ZmtpError::Command("PING"));
                }
                body.advance(2);
                Ok(Self::Ping(body))
            }
            "ERROR" => {
                let reason = take_short_string(&mut body).unwrap_or_default();
                Ok(Self::Error(reason))
            }
            _ => Ok(Self::Other(name)),
        }
    }

    /// Whether the peer's READY fits our socket type; the peer's ERROR as a refusal.
    pub fn accept_ready(&self, ours: SocketType) -> Result<(), ZmtpError> {
        match self {
            Self::Ready(properties) => {
                let peer = properties
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("Socket-Type"))
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                if ours.peers().contains(&peer.as_str()) {
                    Ok(())
                } else {
                    Err(ZmtpError::SocketType {
                        ours: ours.name(),
                        peer,
                        wanted: ours.peers()[0],
                    })
                }
            }
            Self::Error(reason) => Err(ZmtpError::Refused(reason.clone())),
            Self::Ping(_) | Self::Other(_) => Err(ZmtpError::NotReady),
        }
    }
}

fn take_short_string(body: &mut Bytes) -> Option<String> {
    if !body.has_remaining() {
        return None;
    }
    let len = body.get_u8() as usize;
    if body.remaining() < len {
        return None;
    }
    Some(String::from_utf8_lossy(&body.split_to(len)).into_owned())
}

fn put_header(out: &mut BytesMut, flags: u8, len: usize) {
    if len > 255 {
        out.put_u8(flags | LONG);
        out.put_u64(len as u64);
    } else {
        out.put_u8(flags);
        out.put_u8(len as u8);
    }
}

/// Appends one message (its frames, MORE on all but the last) to `out`.
pub fn encode_message<F: AsRef<[u8]>>(frames: &[F], out: &mut BytesMut) {
    let total: usize = frames.iter().map(|f| f.as_ref().len() + 9).sum();
    out.reserve(total);
    for (i, f) in frames.iter().enumerate() {
        let f = f.as_ref();
        let flags = if i + 1 < frames.len() { MORE } else { 0 };
        put_header(out, flags, f.len());
        out.put_slice(f);
    }
}

/// The PONG command answering a PING with `context`.
pub fn pong(context: &[u8], out: &mut BytesMut) {
    put_header(out, COMMAND, 5 + context.len());
    out.put_u8(4);
    out.put_slice(b"PONG");
    out.put_slice(context);
}

/// The subscription message of a SUB that wants everything (ZMTP 3.0: `0x01` + empty prefix).
pub fn subscribe_all(out: &mut BytesMut) {
    encode_message(&[[1u8]], out);
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Message(Vec<Bytes>),
    Command(Command),
}

/// Frames arriving in pieces, assembled into messages. Frame bodies are handed out without
/// copying (they share the receive buffer), except small ones, which are copied so that a kept
/// message does not hold a whole receive buffer alive.
#[derive(Debug, Default)]
pub struct Decoder {
    parts: Vec<Bytes>,
}

impl Decoder {
    /// Frames this short are copied out of the receive buffer.
    pub const COPY_BELOW: usize = 64;

    /// The next complete message or command in `buf` (consumed from it), `None` until one is
    /// complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ZmtpError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let flags = buf[0];
            if flags & !(MORE | LONG | COMMAND) != 0 {
                return Err(ZmtpError::Flags(flags));
            }
            let (header, len) = if flags & LONG != 0 {
                if buf.len() < 9 {
                    return Ok(None);
                }
                let mut size = [0u8; 8];
                size.copy_from_slice(&buf[1..9]);
                (9, u64::from_be_bytes(size))
            } else {
                (2, u64::from(buf[1]))
            };
            if len > MAX_FRAME {
                return Err(ZmtpError::TooLarge(len));
            }
            let len = len as usize;
            if buf.len() < header + len {
                buf.reserve(header + len - buf.len());
                return Ok(None);
            }
            buf.advance(header);
            let body = if len < Self::COPY_BELOW {
                let b = Bytes::copy_from_slice(&buf[..len]);
                buf.advance(len);
                b
            } else {
                buf.split_to(len).freeze()
            };
            if flags & COMMAND != 0 {
                if flags & MORE != 0 {
                    return Err(ZmtpError::CommandMore);
                }
                return Command::parse(body).map(|c| Some(Decoded::Command(c)));
            }
            self.parts.push(body);
            if flags & MORE == 0 {
                return Ok(Some(Decoded::Message(std::mem::take(&mut self.parts))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Decoded>, ZmtpError> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(x) = d.decode(&mut buf)? {
            out.push(x);
        }
        Ok(out)
    }

    fn msg(frames: &[&[u8]]) -> Decoded {
        Decoded::Message(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect())
    }

    #[test]
    fn greeting_is_zmtp_3_0_null_client() {
        let g = greeting();
        assert_eq!(&g[..12], &[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0]);
        assert_eq!(&g[12..32], b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert!(g[32..].iter().all(|b| *b == 0), "as-server 0 and filler");
        assert_eq!(check_greeting(&g), Ok(()));
    }

    #[test]
    fn peer_greetings() {
        // (edit of a valid greeting, expected)
        type Edit = fn(&mut [u8; GREETING_LEN]);
        let table: &[(Edit, Result<(), ZmtpError>)] = &[
            (|_| {}, Ok(())),
            // libzmq 4.3 answers 3.1 and as-server 1: both fine.
            (
                |g| {
                    g[11] = 1;
                    g[32] = 1;
                },
                Ok(()),
            ),
            (
                |g| g[0] = 0x00,
                Err(ZmtpError::Signature(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f])),
            ),
            (|g| g[10] = 2, Err(ZmtpError::Version(2, 0))),
            (
                |g| g[12..17].copy_from_slice(b"CURVE"),
                Err(ZmtpError::Mechanism("CURVE".into())),
            ),
            (
                |g| g[12..16].copy_from_slice(b"PLAI"),
                Err(ZmtpError::Mechanism("PLAI".into())),
            ),
            (|g| g[20] = b'X', Err(ZmtpError::Mechanism("NULL".into()))),
        ];
        for (n, (edit, want)) in table.iter().enumerate() {
            let mut g = greeting();
            edit(&mut g);
            assert_eq!(&check_greeting(&g), want, "row {n}");
        }
    }

    #[test]
    fn ready_command_bytes() {
        let r = ready(SocketType::Dealer, b"abc");
        let mut want = vec![0x04, 0x00];
        want.extend_from_slice(
            b"\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity\x00\x00\x00\x03abc",
        );
        want[1] = (want.len() - 2) as u8;
        assert_eq!(&r[..], &want[..]);
        let s = ready(SocketType::Sub, b"ignored");
        assert_eq!(
            &s[..],
            b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB"
        );
        // Our READY parses back as the peer would read it.
        let got = decode_all(&r).unwrap();
        assert_eq!(
            got,
            vec![Decoded::Command(Command::Ready(vec![
                ("Socket-Type".into(), Bytes::from_static(b"DEALER")),
                ("Identity".into(), Bytes::from_static(b"abc")),
            ]))]
        );
    }

    #[test]
    fn pong_returns_the_ping_context() {
        let mut out = BytesMut::new();
        pong(b"ctx", &mut out);
        assert_eq!(&out[..], b"\x04\x08\x04PONGctx");
    }

    #[test]
    fn peer_ready_and_socket_types() {
        let ready_of =
            |t: &'static str| Command::Ready(vec![("Socket-Type".into(), Bytes::from(t))]);
        let table: &[(SocketType, Command, Result<(), ZmtpError>)] = &[
            (SocketType::Dealer, ready_of("ROUTER"), Ok(())),
            (SocketType::Sub, ready_of("PUB"), Ok(())),
            (SocketType::Sub, ready_of("XPUB"), Ok(())),
            (
                SocketType::Sub,
                ready_of("ROUTER"),
                Err(ZmtpError::SocketType {
                    ours: "SUB",
                    peer: "ROUTER".into(),
                    wanted: "PUB",
                }),
            ),
            (
                SocketType::Dealer,
                Command::Ready(vec![]),
                Err(ZmtpError::SocketType {
                    ours: "DEALER",
                    peer: String::new(),
                    wanted: "ROUTER",
                }),
            ),
            (
                SocketType::Dealer,
                Command::Error("no".into()),
                Err(ZmtpError::Refused("no".into())),
            ),
            (
                SocketType::Dealer,
                Command::Other("PING".into()),
                Err(ZmtpError::NotReady),
            ),
        ];
        for (n, (ours, cmd, want)) in table.iter().enumerate() {
            assert_eq!(&cmd.accept_ready(*ours), want, "row {n}");
        }
    }

    #[test]
    fn frames_decode() {
        let long = vec![7u8; 300];
        let mut long_frame = vec![0x02];
        long_frame.extend_from_slice(&300u64.to_be_bytes());
        long_frame.extend_from_slice(&long);
        type Row = (Vec<u8>, Result<Vec<Decoded>, ZmtpError>);
        let table: &[Row] = &[
            (vec![], Ok(vec![])),
            (vec![0x00], Ok(vec![])),
            (vec![0x00, 0x00], Ok(vec![msg(&[b""])])),
            (b"\x00\x02hi".to_vec(), Ok(vec![msg(&[b"hi"])])),
            (
                b"\x01\x01a\x01\x00\x00\x01b\x00\x01c".to_vec(),
                Ok(vec![msg(&[b"a", b"", b"b"]), msg(&[b"c"])]),
            ),
            // A message whose last frame is incomplete is not handed out.
            (b"\x01\x01a\x00\x05abc".to_vec(), Ok(vec![])),
            (long_frame.clone(), Ok(vec![msg(&[&long])])),
            (
                b"\x04\x06\x05ERROR".to_vec(),
                Ok(vec![Decoded::Command(Command::Error(String::new()))]),
            ),
            (
                b"\x04\x0a\x04PING\x00\x64ctx".to_vec(),
                Ok(vec![Decoded::Command(Command::Ping(Bytes::from_static(
                    b"ctx",
                )))]),
            ),
            (
                b"\x04\x05\x04PING".to_vec(),
                Err(ZmtpError::Command("PING")),
            ),
            (
                b"\x04\x05\x04PONG".to_vec(),
                Ok(vec![Decoded::Command(Command::Other("PONG".into()))]),
            ),
            (b"\x08\x00".to_vec(), Err(ZmtpError::Flags(0x08))),
            (b"\x05\x00".to_vec(), Err(ZmtpError::CommandMore)),
            (b"\x04\x00".to_vec(), Err(ZmtpError::Command("unnamed"))),
            (
                b"\x04\x08\x05READY\x01X".to_vec(),
                Err(ZmtpError::Command("READY")),
            ),
            (
                [&[0x02][..], &(MAX_FRAME + 1).to_be_bytes()].concat(),
                Err(ZmtpError::TooLarge(MAX_FRAME + 1)),
            ),
        ];
        for (n, (input, want)) in table.iter().enumerate() {
            assert_eq!(&decode_all(input), want, "row {n}");
        }
    }

    #[test]
    fn encoding_round_trips_whatever_the_pieces() {
        let frames: Vec<Vec<u8>> = vec![
            b"<IDS|MSG>".to_vec(),
            vec![],
            vec![b'x'; 255],
            vec![b'y'; 256],
            vec![b'z'; 70_000],
        ];
        let mut wire = BytesMut::new();
        encode_message(&frames, &mut wire);
        subscribe_all(&mut wire);
        assert_eq!(&wire[..2], &[0x01, 9]);
        assert_eq!(
            &wire[9 + 2 + 2 + 257..][..9],
            &[0x03, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        let want = vec![
            Decoded::Message(frames.iter().map(|f| Bytes::from(f.clone())).collect()),
            msg(&[&[1]]),
        ];
        // Whole, then byte by byte, then in odd-sized pieces.
        assert_eq!(decode_all(&wire).unwrap(), want);
        for piece in [1, 7, 4096] {
            let mut d = Decoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                buf.extend_from_slice(chunk);
                while let Some(x) = d.decode(&mut buf).unwrap() {
                    got.push(x);
                }
            }
            assert_eq!(got, want, "pieces of {piece}");
            assert!(buf.is_empty());
        }
    }
}
