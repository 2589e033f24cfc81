//! The bridge's task: owns the kernel's ZeroMQ sockets and the sessions, relays in both
//! directions, nudges the kernel after each (re)connect and keeps what arrives for a detached
//! session.

use std::task::{Context, Poll};

use super::{zsock::ZSocket, *};
use crate::zmtp::ZmtpSocket;

pub(super) struct Sockets {
    iopub: ZSocket,
    /// The gateway's own shell and control sockets: open for the nudge, closed once it is over
    /// (an idle kernel costs two sockets less), opened again for a gateway message.
    gateway: Option<GatewaySockets>,
}

pub(super) struct GatewaySockets {
    shell: ZSocket,
    control: ZSocket,
}

pub(super) struct Nudge {
    deadline: Instant,
    next_send: Instant,
    reply_seen: bool,
    iopub_seen: bool,
}

pub(super) struct Io {
    pub(super) kernel_id: String,
    pub(super) gateway_session: String,
    pub(super) sockets: Option<Sockets>,
    pub(super) info: ConnectionInfo,
    pub(super) signer: Signer,
    /// Signatures seen from this kernel connection: a repeated one is a replayed message.
    pub(super) digests: DigestHistory,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) limits: Limits,
    pub(super) activity: Arc<Activity>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) nudge: Option<Nudge>,
    pub(super) nudge_ids: HashSet<String>,
    pub(super) nudge_ids_expire: Option<Instant>,
    /// Client messages that arrived during the nudge or a pause.
    pub(super) held: Vec<(String, Channel, Message)>,
    pub(super) paused: bool,
    pub(super) bad_frames: u64,
}

/// Where a readable socket belongs.
#[derive(Clone)]
pub(super) enum Source {
    Iopub,
    GatewayShell,
    GatewayControl,
    Session(String, Channel),
}

/// Messages read from one socket before the others get a turn.
pub(super) const BATCH: usize = 512;

enum Event {
    Command(Option<Command>),
    Ready(Vec<Source>),
    Tick,
}

impl Io {
    pub(super) async fn run(mut self, mut rx: tmpsc::UnboundedReceiver<Command>) {
        if let Err(e) = self.connect() {
            warn!(kernel_id = %self.kernel_id, error = %e, "cannot open the kernel's sockets");
        }
        'run: loop {
            let deadline = self.next_deadline();
            // A unique borrow keeps the future `Send` (the sockets are not `Sync`).
            let this = &mut self;
            let event = tokio::select! {
                cmd = rx.recv() => Event::Command(cmd),
                ready = std::future::poll_fn(move |cx| this.poll_sources(cx)) => Event::Ready(ready),
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()),
                    if deadline.is_some() => Event::Tick,
            };
            match event {
                Event::Command(None | Some(Command::Stop)) => break,
                Event::Command(Some(cmd)) => {
                    self.handle(cmd);
                    loop {
                        match rx.try_recv() {
                            Ok(Command::Stop) | Err(tmpsc::error::TryRecvError::Disconnected) => {
                                break 'run;
                            }
                            Ok(cmd) => self.handle(cmd),
                            Err(tmpsc::error::TryRecvError::Empty) => break,
                        }
                    }
                }
                Event::Ready(sources) => {
                    for source in sources {
                        self.drain(source);
                    }
                }
                Event::Tick => {}
            }
            self.tick_nudge();
            // A flood keeps some socket ready at every turn: let the websocket writers run.
            tokio::task::consume_budget().await;
        }
        debug!(kernel_id = %self.kernel_id, "bridge stopped");
    }

    /// When the nudge next needs a turn, if it does.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let next = self.nudge.as_ref().map(|n| n.next_send.min(n.deadline));
        match (next, self.nudge_ids_expire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every socket with messages waiting, or pending (with wake-ups registered) if none.
    pub(super) fn poll_sources(&self, cx: &mut Context<'_>) -> Poll<Vec<Source>> {
        let mut ready = Vec::new();
        if let Some(s) = &self.sockets {
            if s.iopub.poll_readable(cx).is_ready() {
                ready.push(Source::Iopub);
            }
            if let Some(g) = &s.gateway {
                for (socket, source) in [
                    (&g.shell, Source::GatewayShell),
                    (&g.control, Source::GatewayControl),
                ] {
                    if socket.poll_readable(cx).is_ready() {
                        ready.push(source);
                    }
                }
            }
        }
        for (id, session) in &self.sessions {
            if let Some(s) = &session.sockets {
                for (socket, channel) in [
                    (&s.shell, Channel::Shell),
                    (&s.control, Channel::Control),
                    (&s.stdin, Channel::Stdin),
                ] {
                    if socket.poll_readable(cx).is_ready() {
                        ready.push(Source::Session(id.clone(), channel));
                    }
                }
            }
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(ready)
        }
    }

    /// The kernel's address, if its transport is one the bridge speaks.
    fn host(&self) -> std::io::Result<&str> {
        if self.info.transport == "tcp" {
            Ok(&self.info.ip)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("transport {:?}: only tcp is spoken", self.info.transport),
            ))
        }
    }

    /// A DEALER to `port`; without an identity the kernel's ROUTER makes one up.
    pub(super) fn dealer(&self, identity: Option<&[u8]>, port: u16) -> std::io::Result<ZSocket> {
        let socket = ZmtpSocket::dealer(self.host()?, port, identity.unwrap_or_default());
        Ok(ZSocket::new(socket, &self.metrics))
    }

    pub(super) fn gateway_sockets(&self) -> std::io::Result<GatewaySockets> {
        Ok(GatewaySockets {
            shell: self.dealer(None, self.info.shell_port)?,
            control: self.dealer(None, self.info.control_port)?,
        })
    }

    pub(super) fn connect(&mut self) -> std::io::Result<()> {
        // Read continuously and never bounded on our side: the kernel's own high-water mark is
        // the only bound, and it is not reached.
        let iopub = ZmtpSocket::sub(self.host()?, self.info.iopub_port);
        let iopub = ZSocket::new(iopub, &self.metrics);
        self.sockets = Some(Sockets {
            iopub,
            gateway: Some(self.gateway_sockets()?),
        });
        // A restarted kernel owes nothing; a disconnected session's sockets open when it returns.
        for s in self.sessions.values_mut() {
            s.owed.clear();
        }
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.sink.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let reopened = self.sessions.get(&id).map_or(0, |s| s.reopened + 1);
            let sockets = self.session_sockets(&id, reopened)?;
            if let Some(s) = self.sessions.get_mut(&id) {
                s.sockets = Some(sockets);
                s.reopened = reopened;
            }
        }
        let now = Instant::now();
        self.ready.send_replace(false);
        self.nudge = Some(Nudge {
            deadline: now + self.limits.kernel_info_timeout,
            next_send: now,
            reply_seen: false,
            iopub_seen: false,
        });
        Ok(())
    }

    pub(super) fn tick_nudge(&mut self) {
        let now = Instant::now();
        if let Some(expire) = self.nudge_ids_expire
            && now >= expire
        {
            self.nudge_ids.clear();
            self.nudge_ids_expire = None;
        }
        let Some(nudge) = &mut self.nudge else {
            return;
        };
        if nudge.reply_seen && nudge.iopub_seen {
            debug!(kernel_id = %self.kernel_id, "kernel answered the nudge");
            self.finish_nudge();
            return;
        }
        if now >= nudge.deadline {
            warn!(
                kernel_id = %self.kernel_id,
                timeout_s = self.limits.kernel_info_timeout.as_secs_f64(),
                "kernel did not answer kernel_info_request in time; relaying anyway"
            );
            self.finish_nudge();
            return;
        }
        if now >= nudge.next_send {
            nudge.next_send = now + Duration::from_millis(500);
            for channel in [Channel::Shell, Channel::Control] {
                let id = uuid::Uuid::new_v4().to_string();
                let msg = wire::new_message(
                    "kernel_info_request",
                    &id,
                    &self.gateway_session,
                    &now_iso(),
                    serde_json::json!({}),
                );
                self.nudge_ids.insert(id);
                self.send_gateway(channel, &msg);
            }
        }
    }

    pub(super) fn finish_nudge(&mut self) {
        self.nudge = None;
        // A late reply to the nudge is dropped by the kernel's ROUTER once these are gone; late
        // IOPub messages of it are still recognised by their parent below.
        if let Some(s) = &mut self.sockets {
            s.gateway = None;
        }
        self.paused = false;
        for (session, channel, msg) in std::mem::take(&mut self.held) {
            self.handle(Command::Send {
                session,
                channel,
                msg,
            });
        }
        // Late replies to the nudge are still recognised for a while.
        self.nudge_ids_expire = Some(Instant::now() + Duration::from_secs(5));
        self.ready.send_replace(true);
    }

    pub(super) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Attach { session, sink } => self.attach(session, sink),
            Command::Detach { session, conn_id } => self.detach(&session, conn_id),
            Command::Send {
                session,
                channel,
                msg,
            } if self.nudge.is_some() || self.paused => {
                // Held until the IOPub subscription is live, so no output of it is missed.
                if self.held.len() >= self.limits.offline_messages.max(1000) {
                    self.held.remove(0);
                    self.metrics.dropped("offline_buffer_full");
                }
                self.held.push((session, channel, msg));
            }
            Command::Send {
                session,
                channel,
                msg,
            } => self.send_to_kernel(&session, channel, &msg),
            Command::Gateway { channel, msg } => self.send_gateway(channel, &msg),
            Command::Pause => {
                self.paused = true;
                self.ready.send_replace(false);
            }
            Command::Notify(delivery) => self.broadcast(&delivery),
            Command::Reconnect(info) => {
                match Signer::new(&info.signature_scheme, info.key.as_bytes()) {
                    Ok(signer) => {
                        self.signer = signer;
                        self.digests = DigestHistory::new(DigestHistory::UPSTREAM_SIZE);
                    }
                    Err(e) => {
                        warn!(kernel_id = %self.kernel_id, error = %e, "new connection info unusable")
                    }
                }
                self.info = *info;
                self.sockets = None;
                for s in self.sessions.values_mut() {
                    s.sockets = None;
                }
                if let Err(e) = self.connect() {
                    warn!(kernel_id = %self.kernel_id, error = %e, "cannot reconnect to the restarted kernel");
                }
            }
            Command::Stop => {}
        }
    }

    pub(super) fn send_gateway(&mut self, channel: Channel, msg: &Message) {
        if self.sockets.as_ref().is_some_and(|s| s.gateway.is_none()) {
            match self.gateway_sockets() {
                Ok(g) => {
                    if let Some(s) = &mut self.sockets {
                        s.gateway = Some(g);
                    }
                }
                Err(e) => {
                    warn!(kernel_id = %self.kernel_id, error = %e, "cannot open the gateway's sockets");
                    return;
                }
            }
        }
        let Some(g) = self.sockets.as_ref().and_then(|s| s.gateway.as_ref()) else {
            return;
        };
        let socket = if channel == Channel::Control {
            &g.control
        } else {
            &g.shell
        };
        socket.send(&wire::encode(msg, &self.signer));
    }

    pub(super) fn socket(&self, source: &Source) -> Option<&ZSocket> {
        match source {
            Source::Iopub => self.sockets.as_ref().map(|s| &s.iopub),
            Source::GatewayShell => self.gateway().map(|g| &g.shell),
            Source::GatewayControl => self.gateway().map(|g| &g.control),
            Source::Session(id, channel) => {
                let s = self.sessions.get(id)?.sockets.as_ref()?;
                Some(match channel {
                    Channel::Control => &s.control,
                    Channel::Stdin => &s.stdin,
                    _ => &s.shell,
                })
            }
        }
    }

    fn gateway(&self) -> Option<&GatewaySockets> {
        self.sockets.as_ref()?.gateway.as_ref()
    }

    pub(super) fn drain(&mut self, source: Source) {
        for _ in 0..BATCH {
            let Some(socket) = self.socket(&source) else {
                return;
            };
            let Some(frames) = socket.recv() else {
                if let Source::Session(id, _) = &source {
                    let id = id.clone();
                    self.release_if_done(&id);
                }
                return;
            };
            let msg = match wire::decode(frames, &self.signer, &mut self.digests) {
                Ok(msg) => msg,
                Err(e) => {
                    self.bad_frames += 1;
                    self.metrics.dropped("bad_kernel_message");
                    if self.bad_frames.is_power_of_two() {
                        warn!(kernel_id = %self.kernel_id, error = %e, count = self.bad_frames, "message from kernel dropped");
                    }
                    continue;
                }
            };
            self.received(&source, msg);
        }
    }

    pub(super) fn received(&mut self, source: &Source, msg: Message) {
        let info = HeaderInfo::parse(&msg.header).unwrap_or_default();
        match source {
            Source::Iopub => {
                let state = (info.msg_type == "status")
                    .then(|| wire::execution_state(&msg.content))
                    .flatten();
                self.activity.touch(state.as_deref());
                if let Some(n) = &mut self.nudge {
                    n.iopub_seen = true;
                }
                if !self.nudge_ids.is_empty()
                    && wire::parent_msg_id(&msg.parent_header)
                        .is_some_and(|p| self.nudge_ids.contains(&p))
                {
                    return;
                }
                self.metrics.relayed(Channel::Iopub, "to_client");
                let d = Arc::new(Delivery {
                    channel: Channel::Iopub,
                    msg,
                    info,
                });
                self.broadcast(&d);
            }
            Source::GatewayShell | Source::GatewayControl => {
                if info.msg_type == "kernel_info_reply"
                    && let Some(n) = &mut self.nudge
                {
                    n.reply_seen = true;
                }
            }
            Source::Session(id, channel) => {
                let id = id.clone();
                self.session_message(&id, *channel, msg, info);
            }
        }
    }
}
