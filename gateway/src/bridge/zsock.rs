//! A kernel's ZeroMQ sockets on tokio's reactor, and frames received without copying.

use std::{
    cell::Cell,
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::io::{Interest, unix::AsyncFd};

use crate::metrics::{GaugeGuard, Metrics};

/// A ZeroMQ socket watched by tokio's reactor through libzmq's notification descriptor
/// (`ZMQ_FD`), which turns readable when the socket has commands to process; whether messages
/// wait is then asked with `ZMQ_EVENTS`. The registration owns the socket, so the descriptor
/// stays open for as long as it is registered.
///
/// Sending processes the socket's pending commands too, and so can consume the signal of a
/// message that arrived meanwhile: epoll then never reports it (it re-checks the descriptor).
/// A socket that was sent on is therefore asked once without waiting for a signal.
pub(super) struct ZSocket {
    notify: AsyncFd<zmq::Socket>,
    sent: Cell<bool>,
    /// Counts the socket in `gateway_kernel_sockets` while it is open.
    _open: GaugeGuard,
}

impl ZSocket {
    pub(super) fn new(socket: zmq::Socket, metrics: &Metrics) -> std::io::Result<Self> {
        // `with_interest` is deprecated only for inner types that may close their descriptor
        // early; a zmq::Socket holds `ZMQ_FD` open until it is dropped, after deregistration.
        #[allow(deprecated)]
        let notify = AsyncFd::with_interest(socket, Interest::READABLE)?;
        Ok(Self {
            notify,
            sent: Cell::new(false),
            _open: metrics.kernel_socket(),
        })
    }

    pub(super) fn socket(&self) -> &zmq::Socket {
        self.notify.get_ref()
    }

    /// Sends a message's frames without blocking.
    pub(super) fn send(&self, frames: &[Bytes]) -> zmq::Result<()> {
        self.sent.set(true);
        self.socket()
            .send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT)
    }

    /// Ready while messages wait. The descriptor's readiness is cleared only once `ZMQ_EVENTS`
    /// says none do: libzmq signals again only after the socket has been read empty, so a
    /// socket left with messages (a batch cut short) stays ready instead of going silent.
    pub(super) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.sent.replace(false)
            && self
                .socket()
                .get_events()
                .is_ok_and(|e| e.contains(zmq::POLLIN))
        {
            return Poll::Ready(());
        }
        loop {
            let Poll::Ready(Ok(mut guard)) = self.notify.poll_read_ready(cx) else {
                return Poll::Pending;
            };
            match self.socket().get_events() {
                Ok(events) if events.contains(zmq::POLLIN) => return Poll::Ready(()),
                // Not readable (or closing): wait for the next signal.
                _ => guard.clear_ready(),
            }
        }
    }
}

/// One received frame, handed on without copying: the bytes stay in libzmq's message.
struct Frame(zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads one multipart message (all its parts are there once the first is) without blocking.
pub(super) fn recv_frames(socket: &zmq::Socket) -> zmq::Result<Vec<Bytes>> {
    let mut frames = Vec::with_capacity(8);
    loop {
        let msg = socket.recv_msg(zmq::DONTWAIT)?;
        let more = msg.get_more();
        frames.push(if msg.len() <= 64 {
            // Small frames (delimiter, signature) live inside the message itself: a copy is
            // cheaper than keeping the message.
            Bytes::copy_from_slice(&msg)
        } else {
            Bytes::from_owner(Frame(msg))
        });
        if !more {
            return Ok(frames);
        }
    }
}
