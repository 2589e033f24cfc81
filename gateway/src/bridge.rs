//! The websocket-to-ZeroMQ bridge of one kernel: one I/O thread owns every ZeroMQ socket of the
//! kernel (libzmq sockets are not thread-safe) and is driven by commands from async tasks.
//!
//! - IOPub is read by one SUB socket per kernel, continuously, whatever the clients do; each
//!   message is verified, parsed once (header; `status` content) and handed to every session as
//!   an `Arc`: a slow client costs the others nothing.
//! - Each websocket session has its shell, control and stdin DEALER sockets, all with the
//!   session id as ZeroMQ identity, so `input_request`s and replies reach the client that asked.
//!   A session outlives its websocket: while it is the kernel's last one, what arrives for it is
//!   kept (bounded) for a reconnect with the same `session_id`.
//! - The nudge: after each (re)connect, `kernel_info_request`s go out on the gateway's own shell
//!   and control sockets every half second until a reply and an IOPub message have arrived, so
//!   the IOPub subscription is live before clients are let in. Those messages are not relayed.
//! - Client queues are bounded in bytes; what does not fit is dropped and counted, never waited
//!   for.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{Read, Write},
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use gateway_core::{
    Channel, Message,
    wire::{self, HeaderInfo, Signer},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc as tmpsc, watch};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// A kernel's connection file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub ip: String,
    #[serde(default = "tcp")]
    pub transport: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    pub key: String,
    #[serde(default = "sha256")]
    pub signature_scheme: String,
    #[serde(default)]
    pub kernel_name: String,
}

fn tcp() -> String {
    "tcp".to_owned()
}

fn sha256() -> String {
    "hmac-sha256".to_owned()
}

impl ConnectionInfo {
    fn endpoint(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

/// A message on its way to a client, parsed once for all of them.
#[derive(Debug)]
pub struct Delivery {
    pub channel: Channel,
    pub msg: Message,
    pub info: HeaderInfo,
}

impl Delivery {
    pub fn size(&self) -> usize {
        self.msg.size()
    }
}

/// Where a websocket receives its messages. `queued` counts the bytes not yet written; the
/// writer subtracts what it sends.
#[derive(Debug, Clone)]
pub struct ClientSink {
    pub conn_id: u64,
    pub tx: tmpsc::UnboundedSender<Arc<Delivery>>,
    pub queued: Arc<AtomicUsize>,
}

/// Bounds on what waits for clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes one websocket may have queued before messages for it are dropped.
    pub client_queue_bytes: usize,
    /// Messages kept for a disconnected session (0 disables buffering).
    pub offline_messages: usize,
    /// Bytes kept for a disconnected session.
    pub offline_bytes: usize,
    /// How long the nudge may take before clients are let in anyway.
    pub kernel_info_timeout: Duration,
}

/// What the kernel was last seen doing (IOPub `status`) and when it last said anything.
#[derive(Debug)]
pub struct Activity {
    inner: Mutex<(String, SystemTime)>,
}

impl Activity {
    pub fn new(state: &str) -> Self {
        Self {
            inner: Mutex::new((state.to_owned(), SystemTime::now())),
        }
    }

    pub fn get(&self) -> (String, SystemTime) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_state(&self, state: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.clear();
        g.0.push_str(state);
        g.1 = SystemTime::now();
    }

    /// Something happened now (a client message).
    pub fn touch_now(&self) {
        self.touch(None);
    }

    fn touch(&self, state: Option<&str>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = state
            && g.0 != state
        {
            g.0.clear();
            g.0.push_str(state);
        }
        g.1 = SystemTime::now();
    }
}

enum Command {
    Attach {
        session: String,
        sink: ClientSink,
    },
    Detach {
        session: String,
        conn_id: u64,
    },
    Send {
        session: String,
        channel: Channel,
        msg: Message,
    },
    Gateway {
        channel: Channel,
        msg: Message,
    },
    Notify(Arc<Delivery>),
    Pause,
    Reconnect(Box<ConnectionInfo>),
    Stop,
}

/// The async side of a kernel's bridge. Dropping it stops the I/O thread.
pub struct Bridge {
    tx: mpsc::Sender<Command>,
    waker: UnixStream,
    ready: watch::Receiver<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bridge {
    /// Starts the I/O thread and connects to the kernel.
    pub fn start(
        ctx: &zmq::Context,
        kernel_id: &str,
        info: ConnectionInfo,
        limits: Limits,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (waker, wake_rx) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (ready_tx, ready) = watch::channel(false);
        let signer = Signer::new(&info.signature_scheme, info.key.as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let io = Io {
            ctx: ctx.clone(),
            kernel_id: kernel_id.to_owned(),
            gateway_session: uuid::Uuid::new_v4().to_string(),
            sockets: None,
            info,
            signer,
            sessions: HashMap::new(),
            limits,
            activity,
            metrics,
            ready: ready_tx,
            nudge: None,
            nudge_ids: HashSet::new(),
            nudge_ids_expire: None,
            held: Vec::new(),
            paused: false,
            wake_rx,
            rx,
            bad_frames: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("kernel-{}", &kernel_id[..kernel_id.len().min(8)]))
            .spawn(move || io.run())?;
        Ok(Self {
            tx,
            waker,
            ready,
            thread: Some(thread),
        })
    }

    fn command(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            // A full pipe already holds a wake-up.
            let _ = (&self.waker).write(&[1]);
        }
    }

    /// A websocket joins as `session` (replacing an older websocket of the same session, and
    /// receiving what was kept for it).
    pub fn attach(&self, session: &str, sink: ClientSink) {
        self.command(Command::Attach {
            session: session.to_owned(),
            sink,
        });
    }

    pub fn detach(&self, session: &str, conn_id: u64) {
        self.command(Command::Detach {
            session: session.to_owned(),
            conn_id,
        });
    }

    /// A client's message, signed and sent on the session's socket for `channel`.
    pub fn send(&self, session: &str, channel: Channel, msg: Message) {
        self.command(Command::Send {
            session: session.to_owned(),
            channel,
            msg,
        });
    }

    /// A message of the gateway's own (shutdown_request, interrupt_request) on shell or control.
    pub fn send_gateway(&self, channel: Channel, msg: Message) {
        self.command(Command::Gateway { channel, msg });
    }

    /// A gateway-originated IOPub message (restarting, dead) for every client.
    pub fn notify(&self, delivery: Delivery) {
        self.command(Command::Notify(Arc::new(delivery)));
    }

    /// The kernel was restarted with new connection info: every socket is made anew (sessions
    /// keep their identities and their websockets) and the nudge runs again.
    pub fn reconnect(&self, info: ConnectionInfo) {
        self.command(Command::Reconnect(Box::new(info)));
    }

    /// The kernel is going away (restart, death): client messages are held, and new websockets
    /// wait, until the next connection has answered the nudge. Without this a message sent in
    /// between would go to the old kernel's sockets and be lost.
    pub fn pause(&self) {
        self.command(Command::Pause);
    }

    /// Stops the I/O thread: sockets close and every attached websocket is let go.
    pub fn stop(&self) {
        self.command(Command::Stop);
    }

    /// Waits until the nudge has finished (or given up) for the current connection.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.command(Command::Stop);
        if let Some(t) = self.thread.take() {
            // The thread exits at once on Stop; joining keeps sockets from outliving the kernel.
            let _ = t.join();
        }
    }
}

struct Sockets {
    iopub: zmq::Socket,
    shell: zmq::Socket,
    control: zmq::Socket,
}

struct SessionSockets {
    shell: zmq::Socket,
    control: zmq::Socket,
    stdin: zmq::Socket,
}

struct Session {
    sockets: Option<SessionSockets>,
    sink: Option<ClientSink>,
    buffer: VecDeque<Arc<Delivery>>,
    buffered_bytes: usize,
}

struct Nudge {
    deadline: Instant,
    next_send: Instant,
    reply_seen: bool,
    iopub_seen: bool,
}

struct Io {
    ctx: zmq::Context,
    kernel_id: String,
    gateway_session: String,
    sockets: Option<Sockets>,
    info: ConnectionInfo,
    signer: Signer,
    sessions: HashMap<String, Session>,
    limits: Limits,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    ready: watch::Sender<bool>,
    nudge: Option<Nudge>,
    nudge_ids: HashSet<String>,
    nudge_ids_expire: Option<Instant>,
    /// Client messages that arrived during the nudge or a pause.
    held: Vec<(String, Channel, Message)>,
    paused: bool,
    wake_rx: UnixStream,
    rx: mpsc::Receiver<Command>,
    bad_frames: u64,
}

/// Where a readable socket belongs.
#[derive(Clone)]
enum Source {
    Iopub,
    GatewayShell,
    GatewayControl,
    Session(String, Channel),
}

/// Messages read from one socket before the others get a turn.
const BATCH: usize = 512;

impl Io {
    fn run(mut self) {
        if let Err(e) = self.connect() {
            warn!(kernel_id = %self.kernel_id, error = %e, "cannot open the kernel's sockets");
        }
        loop {
            let timeout = self.poll_timeout();
            let (wake, ready) = match self.poll(timeout) {
                Ok(r) => r,
                Err(e) => {
                    warn!(kernel_id = %self.kernel_id, error = %e, "zmq poll failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if wake && !self.drain_commands() {
                break;
            }
            for source in ready {
                self.drain(source);
            }
            self.tick_nudge();
        }
        debug!(kernel_id = %self.kernel_id, "bridge stopped");
    }

    fn poll_timeout(&self) -> i64 {
        let now = Instant::now();
        let mut next: Option<Instant> = self.nudge.as_ref().map(|n| n.next_send.min(n.deadline));
        if let Some(expire) = self.nudge_ids_expire {
            next = Some(next.map_or(expire, |n| n.min(expire)));
        }
        match next {
            Some(at) => at.saturating_duration_since(now).as_millis() as i64 + 1,
            None => -1,
        }
    }

    /// Polls the waker and every socket; returns whether commands arrived and which sockets are
    /// readable.
    fn poll(&self, timeout: i64) -> zmq::Result<(bool, Vec<Source>)> {
        let mut sources = Vec::with_capacity(3 + 3 * self.sessions.len());
        let mut items = vec![zmq::PollItem::from_fd(
            self.wake_rx.as_raw_fd(),
            zmq::POLLIN,
        )];
        if let Some(s) = &self.sockets {
            items.push(s.iopub.as_poll_item(zmq::POLLIN));
            sources.push(Source::Iopub);
            items.push(s.shell.as_poll_item(zmq::POLLIN));
            sources.push(Source::GatewayShell);
            items.push(s.control.as_poll_item(zmq::POLLIN));
            sources.push(Source::GatewayControl);
        }
        for (id, session) in &self.sessions {
            if let Some(s) = &session.sockets {
                for (socket, channel) in [
                    (&s.shell, Channel::Shell),
                    (&s.control, Channel::Control),
                    (&s.stdin, Channel::Stdin),
                ] {
                    items.push(socket.as_poll_item(zmq::POLLIN));
                    sources.push(Source::Session(id.clone(), channel));
                }
            }
        }
        zmq::poll(&mut items, timeout)?;
        let wake = items[0].is_readable();
        let ready = items[1..]
            .iter()
            .zip(sources)
            .filter(|(item, _)| item.is_readable())
            .map(|(_, s)| s)
            .collect();
        Ok((wake, ready))
    }

    fn dealer(&self, identity: Option<&[u8]>, port: u16) -> zmq::Result<zmq::Socket> {
        let s = self.ctx.socket(zmq::DEALER)?;
        s.set_linger(0)?;
        s.set_sndhwm(0)?;
        s.set_rcvhwm(0)?;
        if let Some(id) = identity {
            s.set_identity(id)?;
        }
        s.connect(&self.info.endpoint(port))?;
        Ok(s)
    }

    fn session_sockets(&self, session: &str) -> zmq::Result<SessionSockets> {
        let id = session.as_bytes();
        Ok(SessionSockets {
            shell: self.dealer(Some(id), self.info.shell_port)?,
            control: self.dealer(Some(id), self.info.control_port)?,
            stdin: self.dealer(Some(id), self.info.stdin_port)?,
        })
    }

    fn connect(&mut self) -> zmq::Result<()> {
        let iopub = self.ctx.socket(zmq::SUB)?;
        iopub.set_linger(0)?;
        // Never drop on our side: the kernel's own high-water mark is the only bound, and it is
        // never reached because this socket is read continuously.
        iopub.set_rcvhwm(0)?;
        iopub.set_subscribe(b"")?;
        iopub.connect(&self.info.endpoint(self.info.iopub_port))?;
        let shell = self.dealer(None, self.info.shell_port)?;
        let control = self.dealer(None, self.info.control_port)?;
        self.sockets = Some(Sockets {
            iopub,
            shell,
            control,
        });
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            let sockets = self.session_sockets(&id)?;
            if let Some(s) = self.sessions.get_mut(&id) {
                s.sockets = Some(sockets);
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

    fn tick_nudge(&mut self) {
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

    fn finish_nudge(&mut self) {
        self.nudge = None;
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

    /// Returns false on Stop.
    fn drain_commands(&mut self) -> bool {
        let mut buf = [0u8; 256];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        loop {
            match self.rx.try_recv() {
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
                Ok(cmd) => self.handle(cmd),
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
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
            } => {
                let frames = wire::encode(&msg, &self.signer);
                let socket = self
                    .sessions
                    .get(&session)
                    .and_then(|s| s.sockets.as_ref())
                    .map(|s| match channel {
                        Channel::Control => &s.control,
                        Channel::Stdin => &s.stdin,
                        _ => &s.shell,
                    });
                match socket.map(|s| s.send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT))
                {
                    Some(Ok(())) => self.metrics.relayed(channel, "to_kernel"),
                    Some(Err(e)) => {
                        self.metrics.dropped("send_failed");
                        warn!(kernel_id = %self.kernel_id, session = %session, channel = channel.as_str(), error = %e, "message to kernel dropped");
                    }
                    None => self.metrics.dropped("no_session"),
                }
            }
            Command::Gateway { channel, msg } => self.send_gateway(channel, &msg),
            Command::Pause => {
                self.paused = true;
                self.ready.send_replace(false);
            }
            Command::Notify(delivery) => self.broadcast(&delivery),
            Command::Reconnect(info) => {
                match Signer::new(&info.signature_scheme, info.key.as_bytes()) {
                    Ok(signer) => self.signer = signer,
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

    fn send_gateway(&self, channel: Channel, msg: &Message) {
        let Some(s) = &self.sockets else { return };
        let socket = if channel == Channel::Control {
            &s.control
        } else {
            &s.shell
        };
        let frames = wire::encode(msg, &self.signer);
        if let Err(e) = socket.send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT) {
            debug!(kernel_id = %self.kernel_id, error = %e, "gateway message not sent");
        }
    }

    fn attach(&mut self, id: String, sink: ClientSink) {
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
        if !self.sessions.contains_key(&id) {
            let sockets = match self.session_sockets(&id) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(kernel_id = %self.kernel_id, session = %id, error = %e, "cannot open session sockets");
                    None
                }
            };
            self.sessions.insert(
                id.clone(),
                Session {
                    sockets,
                    sink: None,
                    buffer: VecDeque::new(),
                    buffered_bytes: 0,
                },
            );
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
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

    fn detach(&mut self, id: &str, conn_id: u64) {
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
        }
    }

    fn deliver(&mut self, id: &str, d: Arc<Delivery>) {
        if let Some(session) = self.sessions.get_mut(id) {
            Self::deliver_to(session, d, &self.limits, &self.metrics);
        }
    }

    /// One message for every session (IOPub, gateway notices), without copying it.
    fn broadcast(&mut self, d: &Arc<Delivery>) {
        for session in self.sessions.values_mut() {
            Self::deliver_to(session, d.clone(), &self.limits, &self.metrics);
        }
    }

    /// Queues a message for a session's websocket, or keeps it (bounded) while none is attached.
    fn deliver_to(session: &mut Session, d: Arc<Delivery>, limits: &Limits, metrics: &Metrics) {
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

    fn socket(&self, source: &Source) -> Option<&zmq::Socket> {
        match source {
            Source::Iopub => self.sockets.as_ref().map(|s| &s.iopub),
            Source::GatewayShell => self.sockets.as_ref().map(|s| &s.shell),
            Source::GatewayControl => self.sockets.as_ref().map(|s| &s.control),
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

    fn drain(&mut self, source: Source) {
        for _ in 0..BATCH {
            let Some(socket) = self.socket(&source) else {
                return;
            };
            let frames = match socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    debug!(kernel_id = %self.kernel_id, error = %e, "recv failed");
                    return;
                }
            };
            let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
            let msg = match wire::decode(frames, &self.signer) {
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

    fn received(&mut self, source: &Source, msg: Message) {
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
                self.metrics.relayed(*channel, "to_client");
                let id = id.clone();
                let d = Arc::new(Delivery {
                    channel: *channel,
                    msg,
                    info,
                });
                self.deliver(&id, d);
            }
        }
    }
}

/// Now as Jupyter writes dates: ISO-8601 UTC with microseconds and `Z`.
pub fn now_iso() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// A gateway-originated IOPub `status` message (`restarting`, `dead`).
pub fn status_notice(session: &str, state: &str) -> Delivery {
    let msg_id = uuid::Uuid::new_v4().to_string();
    let msg = wire::new_message(
        "status",
        &msg_id,
        session,
        &now_iso(),
        serde_json::json!({ "execution_state": state }),
    );
    Delivery {
        channel: Channel::Iopub,
        msg,
        info: HeaderInfo {
            msg_id,
            msg_type: "status".to_owned(),
        },
    }
}
