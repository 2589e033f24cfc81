//! A kernel's ZeroMQ sockets, spoken directly on tokio's TCP streams: a connecting DEALER or SUB
//! over ZMTP 3.0 ([`gateway_core::zmtp`] has the protocol). The bytes of a kernel's messages go
//! from the TCP stream to the bridge's task with nothing in between: no I/O thread of a ZeroMQ
//! library, no hand-off to one, no signalling descriptor.
//!
//! Like a libzmq socket it connects in the background and again after a lost connection (every
//! 100 ms, libzmq's `ZMQ_RECONNECT_IVL`), so it can be made before the kernel listens; messages
//! sent before the connection is up wait for it. The socket is driven by whoever polls it
//! ([`ZmtpSocket::poll_readable`]): the bridge's task for all of a kernel's sockets.

use std::{
    cell::RefCell,
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use gateway_core::zmtp::{self, Decoded, Decoder, SocketType, ZmtpError};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing::debug;

/// libzmq's `ZMQ_RECONNECT_IVL` default.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// libzmq's `ZMQ_HANDSHAKE_IVL` default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

type Connecting = Pin<Box<dyn Future<Output = (TcpStream, BytesMut)> + Send>>;

enum Conn {
    Connecting(Connecting),
    Up(TcpStream),
}

struct Inner {
    kind: SocketType,
    identity: Vec<u8>,
    host: String,
    port: u16,
    conn: Conn,
    rbuf: BytesMut,
    decoder: Decoder,
    incoming: VecDeque<Vec<Bytes>>,
    /// Encoded messages not yet written (all of them while connecting).
    wbuf: BytesMut,
}

/// One connecting ZeroMQ socket. Not `Sync`: one task owns it.
pub struct ZmtpSocket {
    inner: RefCell<Inner>,
}

impl ZmtpSocket {
    /// A DEALER with `identity` (the peer ROUTER routes replies by it).
    pub fn dealer(host: &str, port: u16, identity: &[u8]) -> Self {
        Self::new(SocketType::Dealer, host, port, identity)
    }

    /// A SUB subscribed to everything.
    pub fn sub(host: &str, port: u16) -> Self {
        Self::new(SocketType::Sub, host, port, b"")
    }

    fn new(kind: SocketType, host: &str, port: u16, identity: &[u8]) -> Self {
        let conn = Conn::Connecting(establish(
            kind,
            host.to_owned(),
            port,
            identity.to_vec(),
            Duration::ZERO,
        ));
        Self {
            inner: RefCell::new(Inner {
                kind,
                identity: identity.to_vec(),
                host: host.to_owned(),
                port,
                conn,
                rbuf: BytesMut::new(),
                decoder: Decoder::default(),
                incoming: VecDeque::new(),
                wbuf: BytesMut::new(),
            }),
        }
    }

    /// Queues a message and writes what the stream takes now; the rest is written as the
    /// socket is polled.
    pub fn send<F: AsRef<[u8]>>(&self, frames: &[F]) {
        let mut g = self.inner.borrow_mut();
        zmtp::encode_message(frames, &mut g.wbuf);
        g.write_now();
    }

    /// Drives the socket (connecting, writing, reading); ready once a whole message is here.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.inner.borrow_mut();
        g.poll_io(cx);
        if g.incoming.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// A whole message if one has arrived, without waiting.
    pub fn recv(&self) -> Option<Vec<Bytes>> {
        let mut g = self.inner.borrow_mut();
        if g.incoming.is_empty() {
            g.read_now();
        }
        g.incoming.pop_front()
    }

    /// Waits for the next message (for callers that own nothing else).
    pub async fn next(&self) -> Vec<Bytes> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await;
        self.recv().unwrap_or_default()
    }

    /// Whether bytes have arrived that were not received yet.
    pub fn has_pending(&self) -> bool {
        let g = self.inner.borrow();
        !g.incoming.is_empty() || !g.rbuf.is_empty()
    }

    /// Whether the connection is up (handshake done).
    pub fn is_connected(&self) -> bool {
        matches!(self.inner.borrow().conn, Conn::Up(_))
    }
}

impl Inner {
    fn poll_io(&mut self, cx: &mut Context<'_>) {
        loop {
            match &mut self.conn {
                Conn::Connecting(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready((stream, leftover)) => {
                        self.rbuf = leftover;
                        self.decoder = Decoder::default();
                        self.conn = Conn::Up(stream);
                        continue;
                    }
                },
                Conn::Up(_) => {}
            };
            // Messages already read (a PING among them adds its PONG to what waits).
            if let Err(e) = self.decode() {
                self.lost(&e.to_string());
                continue;
            }
            let Conn::Up(stream) = &mut self.conn else {
                continue;
            };
            // Write what waits.
            let mut failed = None;
            while !self.wbuf.is_empty() {
                match stream.poll_write_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Poll::Ready(Ok(())) => match stream.try_write(&self.wbuf) {
                        Ok(n) => self.wbuf.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    },
                }
            }
            if let Some(e) = failed {
                self.lost(&e.to_string());
                continue;
            }
            if !self.incoming.is_empty() {
                return;
            }
            // Read until a message is whole or the stream has nothing more.
            let Conn::Up(stream) = &mut self.conn else {
                continue;
            };
            match stream.poll_read_ready(cx) {
                Poll::Pending => return,
                Poll::Ready(Err(e)) => self.lost(&e.to_string()),
                Poll::Ready(Ok(())) => {
                    self.rbuf.reserve(READ_CHUNK);
                    match stream.try_read_buf(&mut self.rbuf) {
                        Ok(0) => self.lost("closed by the kernel"),
                        Ok(_) => {}
                        // Readiness cleared: the next poll registers for the next bytes.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => self.lost(&e.to_string()),
                    }
                }
            }
        }
    }

    /// Writes without waiting (a send between polls).
    fn write_now(&mut self) {
        let Conn::Up(stream) = &mut self.conn else {
            return;
        };
        while !self.wbuf.is_empty() {
            match stream.try_write(&self.wbuf) {
                Ok(n) => self.wbuf.advance(n),
                // The rest goes at the next poll (which also notices a failed stream).
                Err(_) => return,
            }
        }
    }

    /// Reads without waiting (a receive between polls).
    fn read_now(&mut self) {
        if self.decode().is_err() || !self.incoming.is_empty() {
            return;
        }
        let Conn::Up(stream) = &mut self.conn else {
            return;
        };
        self.rbuf.reserve(READ_CHUNK);
        if matches!(stream.try_read_buf(&mut self.rbuf), Ok(n) if n > 0) {
            let _ = self.decode();
        }
    }

    /// Moves whole messages from the read buffer to `incoming`; a PING is answered, an ERROR
    /// ends the connection, other commands are skipped.
    fn decode(&mut self) -> Result<(), ZmtpError> {
        while let Some(d) = self.decoder.decode(&mut self.rbuf)? {
            match d {
                Decoded::Message(frames) => self.incoming.push_back(frames),
                Decoded::Command(zmtp::Command::Ping(context)) => {
                    zmtp::pong(&context, &mut self.wbuf);
                    self.write_now();
                }
                Decoded::Command(zmtp::Command::Error(reason)) => {
                    return Err(ZmtpError::Refused(reason));
                }
                Decoded::Command(_) => {}
            }
        }
        Ok(())
    }

    /// The connection is gone: what was half-read or unwritten goes with it, and the socket
    /// connects again (a kernel that went away comes back as a restart with new sockets).
    fn lost(&mut self, reason: &str) {
        debug!(socket = self.kind.name(), host = %self.host, port = self.port, reason, "ZeroMQ connection lost; reconnecting");
        self.rbuf = BytesMut::new();
        self.wbuf.clear();
        self.decoder = Decoder::default();
        self.conn = Conn::Connecting(establish(
            self.kind,
            self.host.clone(),
            self.port,
            self.identity.clone(),
            RECONNECT_INTERVAL,
        ));
    }
}

/// Connects (again every [`RECONNECT_INTERVAL`] until it works) and shakes hands; yields the
/// stream and any bytes that came after the peer's READY.
fn establish(
    kind: SocketType,
    host: String,
    port: u16,
    identity: Vec<u8>,
    first_delay: Duration,
) -> Connecting {
    Box::pin(async move {
        let mut delay = first_delay;
        let mut attempts: u64 = 0;
        loop {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            delay = RECONNECT_INTERVAL;
            attempts += 1;
            let result = match TcpStream::connect((host.as_str(), port)).await {
                Ok(mut stream) => {
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        handshake(&mut stream, kind, &identity),
                    )
                    .await
                    {
                        Ok(Ok(leftover)) => return (stream, leftover),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "handshake timed out".to_owned(),
                    }
                }
                Err(e) => e.to_string(),
            };
            // A kernel not listening yet is the common case at start: say so once in a while.
            if attempts == 1 || attempts.is_power_of_two() {
                debug!(socket = kind.name(), %host, port, attempts, error = %result, "ZeroMQ connect failed; retrying");
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Zmtp(#[from] ZmtpError),
    #[error("connection closed during the handshake")]
    Closed,
}

async fn handshake(
    stream: &mut TcpStream,
    kind: SocketType,
    identity: &[u8],
) -> Result<BytesMut, HandshakeError> {
    // Greeting and READY in one write; libzmq reads the greeting first and keeps the rest.
    let mut out = BytesMut::with_capacity(zmtp::GREETING_LEN + 64);
    out.extend_from_slice(&zmtp::greeting());
    out.extend_from_slice(&zmtp::ready(kind, identity));
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    while buf.len() < zmtp::GREETING_LEN {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
    let mut greeting = [0u8; zmtp::GREETING_LEN];
    greeting.copy_from_slice(&buf[..zmtp::GREETING_LEN]);
    zmtp::check_greeting(&greeting)?;
    buf.advance(zmtp::GREETING_LEN);
    let mut decoder = Decoder::default();
    loop {
        match decoder.decode(&mut buf)? {
            Some(Decoded::Command(c)) => {
                c.accept_ready(kind)?;
                break;
            }
            Some(Decoded::Message(_)) => return Err(ZmtpError::NotReady.into()),
            None => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(HandshakeError::Closed);
                }
            }
        }
    }
    if kind == SocketType::Sub {
        let mut sub = BytesMut::new();
        zmtp::subscribe_all(&mut sub);
        stream.write_all(&sub).await?;
    }
    Ok(buf)
}
