//! The websocket-to-ZeroMQ bridge of one kernel: one task owns every ZeroMQ socket of the kernel
//! ([`crate::zmtp`]: ZMTP on tokio's TCP streams) and is driven by commands from the websocket
//! tasks. No thread of its own and none of a ZeroMQ library: a message from the kernel goes
//! from its TCP stream through this task to the websocket writer.
//!
//! - IOPub is read by one SUB socket per kernel, continuously, whatever the clients do; each
//!   message is verified, parsed once (header; `status` content) and handed to every session as
//!   an `Arc`: a slow client costs the others nothing.
//! - Each websocket session has its shell, control and stdin DEALER sockets, all with the
//!   session id as ZeroMQ identity, so `input_request`s and replies reach the client that asked.
//!   A session outlives its websocket: while it is the kernel's last one, what arrives for it is
//!   kept (bounded) for a reconnect with the same `session_id`; its sockets stay open while it
//!   is owed replies and close after the last one (they open again when it returns).
//! - The nudge: after each (re)connect, `kernel_info_request`s go out on the gateway's own shell
//!   and control sockets every half second until a reply and an IOPub message have arrived, so
//!   the IOPub subscription is live before clients are let in. Those messages are not relayed.
//! - Client queues are bounded in bytes; what does not fit is dropped and counted, never waited
//!   for.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use gateway_core::{
    Channel, Message,
    wire::{self, DigestHistory, HeaderInfo, Signer},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc as tmpsc, watch};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

mod io;
mod session;
mod zsock;
use io::*;
use session::*;

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

/// The handle of a kernel's bridge. Dropping it stops the bridge's task.
pub struct Bridge {
    tx: tmpsc::UnboundedSender<Command>,
    ready: watch::Receiver<bool>,
}

impl Bridge {
    /// Starts the bridge's task (on the current tokio runtime) and connects to the kernel.
    pub fn start(
        kernel_id: &str,
        info: ConnectionInfo,
        limits: Limits,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = tmpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let signer = Signer::new(&info.signature_scheme, info.key.as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let io = Io {
            kernel_id: kernel_id.to_owned(),
            gateway_session: uuid::Uuid::new_v4().to_string(),
            sockets: None,
            info,
            signer,
            digests: DigestHistory::new(DigestHistory::UPSTREAM_SIZE),
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
            bad_frames: 0,
        };
        tokio::spawn(io.run(rx));
        Ok(Self { tx, ready })
    }

    fn command(&self, cmd: Command) {
        // A closed channel means the task has stopped: nothing is listening any more.
        let _ = self.tx.send(cmd);
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

    /// Stops the bridge: sockets close and every attached websocket is let go.
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
        // The task closes every socket as soon as it reads this (or sees the channel closed).
        self.command(Command::Stop);
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
