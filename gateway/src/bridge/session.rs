//! The bridge's websocket sessions: each has its shell, control and stdin sockets (the session id
//! as ZeroMQ identity), at most one websocket, what is kept for it while it is away, and the
//! requests it is still owed replies to. A disconnected session's sockets close once it is owed
//! nothing (nothing more can arrive on them for it) and open again when it returns: an idle
//! kernel whose notebook was closed costs one socket, not four.

use gateway_core::outstanding::Outstanding;

use super::{io::Io, zsock::ZSocket, *};

pub(super) struct SessionSockets {
    pub(super) shell: ZSocket,
    pub(super) control: ZSocket,
    pub(super) stdin: ZSocket,
}

impl SessionSockets {
    fn all(&self) -> [&ZSocket; 3] {
        [&self.shell, &self.control, &self.stdin]
    }
}

pub(super) struct Session {
    pub(super) sockets: Option<SessionSockets>,
    pub(super) sink: Option<ClientSink>,
    pub(super) buffer: VecDeque<Arc<Delivery>>,
    pub(super) buffered_bytes: usize,
    /// Requests sent on shell and control that the kernel has not answered yet.
    pub(super) owed: Outstanding,
    /// Times the sockets were opened again for the same kernel process.
    pub(super) reopened: u32,
}

impl Io {
    /// A session's sockets, with the session id as ZeroMQ identity the first time. Sockets made
    /// again for the same kernel process (a session back after its sockets were released) get
    /// `<session>/<n>`: a kernel without ROUTER_HANDOVER still holds the old connection's
    /// identity until its loop runs, and would take a new connection under it for a stranger.
    pub(super) fn session_sockets(
        &self,
        session: &str,
        reopened: u32,
    ) -> std::io::Result<SessionSockets> {
        let identity = match reopened {
            0 => session.to_owned(),
            n => format!("{session}/{n}"),
        };
        let id = identity.as_bytes();
        Ok(SessionSockets {
            shell: self.dealer(Some(id), self.info.shell_port)?,
            control: self.dealer(Some(id), self.info.control_port)?,
            stdin: self.dealer(Some(id), self.info.stdin_port)?,
        })
    }

    fn open_session_sockets(&self, id: &str, reopened: u32) -> Option<SessionSockets> {
        match self.session_sockets(id, reopened) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(kernel_id = %self.kernel_id, session = %id, error = %e, "cannot open session sockets");
                None
            }
        }
    }

    pub(super) fn attach(&mut self, id: String, sink: ClientSink) {
        // Only one disconnected session's messages are kept: another session joining ends it.
        let stale: Vec<String> = self
            .sessions
            .iter()
            .filter(|(k, s)| **k != id && s.sink.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(s) = self.sessions.remove(&k)
                && !s.buffer.is_empty()
            {
                self.metrics
                    .dropped_n("offline_discarded", s.buffer.len() as u64);
            }
        }
        let (reopen, reopened) = match self.sessions.get(&id) {
            None => (true, 0),
            Some(s) if s.sockets.is_none() => (true, s.reopened + 1),
            Some(_) => (false, 0),
        };
        let sockets = if reopen {
            self.open_session_sockets(&id, reopened)
        } else {
            None
        };
        let session = self.sessions.entry(id.clone()).or_insert_with(|| Session {
            sockets: None,
            sink: None,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            owed: Outstanding::default(),
            reopened: 0,
        });
        if reopen {
            session.sockets = sockets;
            session.reopened = reopened;
        }
        if session.sink.replace(sink).is_some() {
            info!(kernel_id = %self.kernel_id, session = %id, "newer websocket for the same session replaces the older");
        }
        let replay: Vec<Arc<Delivery>> = session.buffer.drain(..).collect();
        session.buffered_bytes = 0;
        if !replay.is_empty() {
            info!(kernel_id = %self.kernel_id, session = %id, messages = replay.len(), "replaying messages kept while disconnected");
        }
        for d in replay {
            self.deliver(&id, d);
        }
    }

    pub(super) fn detach(&mut self, id: &str, conn_id: u64) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if session.sink.as_ref().map(|s| s.conn_id) != Some(conn_id) {
            return; // already replaced by a newer websocket
        }
        session.sink = None;
        let others = self
            .sessions
            .iter()
            .any(|(k, s)| k != id && s.sink.is_some());
        if others || self.limits.offline_messages == 0 {
            self.sessions.remove(id);
        } else {
            self.release_if_done(id);
        }
    }

    /// Closes a disconnected session's sockets once it is owed no reply and nothing waits on
    /// them.
    pub(super) fn release_if_done(&mut self, id: &str) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if session.sink.is_some() || !session.owed.is_empty() {
            return;
        }
        let Some(sockets) = &session.sockets else {
            return;
        };
        let waiting = sockets.all().iter().any(|s| s.has_pending());
        if !waiting {
            session.sockets = None;
            debug!(kernel_id = %self.kernel_id, session = %id, "disconnected session owed nothing: its sockets closed");
        }
    }

    /// A client's message, signed and sent on its session's socket for `channel`.
    pub(super) fn send_to_kernel(&mut self, id: &str, channel: Channel, msg: &Message) {
        let Some(session) = self.sessions.get_mut(id) else {
            self.metrics.dropped("no_session");
            return;
        };
        let Some(sockets) = &session.sockets else {
            self.metrics.dropped("no_session");
            return;
        };
        let socket = match channel {
            Channel::Control => &sockets.control,
            Channel::Stdin => &sockets.stdin,
            _ => &sockets.shell,
        };
        socket.send(&wire::encode(msg, &self.signer));
        self.metrics.relayed(channel, "to_kernel");
        if channel != Channel::Stdin
            && let Some(h) = HeaderInfo::parse(&msg.header)
        {
            session.owed.sent(&h.msg_type, &h.msg_id);
        }
    }

    /// A message from the kernel on one of a session's sockets.
    pub(super) fn session_message(
        &mut self,
        id: &str,
        channel: Channel,
        msg: Message,
        info: HeaderInfo,
    ) {
        self.metrics.relayed(channel, "to_client");
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if !session.owed.is_empty() && channel != Channel::Stdin {
            let parent = wire::parent_msg_id(&msg.parent_header);
            session.owed.received(&info.msg_type, parent.as_deref());
        }
        let d = Arc::new(Delivery { channel, msg, info });
        Self::deliver_to(session, d, &self.limits, &self.metrics);
    }

    pub(super) fn deliver(&mut self, id: &str, d: Arc<Delivery>) {
        if let Some(session) = self.sessions.get_mut(id) {
            Self::deliver_to(session, d, &self.limits, &self.metrics);
        }
    }

    /// One message for every session (IOPub, gateway notices), without copying it.
    pub(super) fn broadcast(&mut self, d: &Arc<Delivery>) {
        for session in self.sessions.values_mut() {
            Self::deliver_to(session, d.clone(), &self.limits, &self.metrics);
        }
    }

    /// Queues a message for a session's websocket, or keeps it (bounded) while none is attached.
    pub(super) fn deliver_to(
        session: &mut Session,
        d: Arc<Delivery>,
        limits: &Limits,
        metrics: &Metrics,
    ) {
        let size = d.size();
        match &session.sink {
            Some(sink) => {
                if sink.queued.load(Ordering::Relaxed) + size > limits.client_queue_bytes {
                    metrics.dropped("client_queue_full");
                    return;
                }
                sink.queued.fetch_add(size, Ordering::Relaxed);
                if sink.tx.send(d).is_err() {
                    sink.queued.fetch_sub(size, Ordering::Relaxed);
                }
            }
            None => {
                session.buffered_bytes += size;
                session.buffer.push_back(d);
                while session.buffer.len() > limits.offline_messages
                    || (session.buffered_bytes > limits.offline_bytes && !session.buffer.is_empty())
                {
                    if let Some(old) = session.buffer.pop_front() {
                        session.buffered_bytes -= old.size();
                        metrics.dropped("offline_buffer_full");
                    }
                }
            }
        }
    }
}
