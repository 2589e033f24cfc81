//! The response address: where remote kernel launchers (in kernel pods) send their encrypted
//! connection info (eg-behaviour.md §4.1, §4.2).
//!
//! One [`ResponseListener`] per gateway: it holds the RSA key pair ([`ResponseKey`]) whose public
//! half launchers get as `--public-key`, listens on [`ResponseListener::response_address`], and
//! hands each decoded payload to the launch that registered its kernel id. Usage by a launcher:
//!
//! 1. `let mut waiter = listener.register(&kernel_id);` **before** the pod is created (a payload
//!    for an id nobody registered is dropped; one that arrives before `recv` is kept);
//! 2. pass `listener.response_address()` and `listener.public_key()` to the launcher;
//! 3. `waiter.recv(timeout).await` (repeatable after [`WaitError::Timeout`]), then
//!    [`into_connection_info`] with the pod's IP.
//!
//! Unlike upstream (one connection at a time, no limits), every connection is served by its own
//! task, with a size cap and a deadline, so a stalled or hostile sender delays no launch.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use gateway_core::response::{self, ConnectionPayload, PayloadError};
use regex::Regex;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tracing::{debug, error, info, warn};

use crate::bridge::ConnectionInfo;

mod serve;
pub use serve::*;

/// Upstream's default response port.
pub const DEFAULT_PORT: u16 = 8877;
/// Upstream's default number of further ports tried when the port is taken.
pub const DEFAULT_PORT_RETRIES: u16 = 10;
/// Largest payload accepted. A real one is under 2 KiB (a 1024-bit key's 172 base64 characters,
/// a few hundred bytes of connection JSON, all base64 twice).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// How long one sender may take from connect to EOF.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// RSA modulus size of the gateway's key, as upstream (it only wraps a 16-byte AES key).
pub const KEY_BITS: usize = 1024;

/// `EG_PROHIBITED_LOCAL_IPS`: addresses not to advertise. Each comma-separated entry is a regular
/// expression matched at the start of the address, as upstream's `re.match` (so `10.0.` and
/// `172\.17\..*` are prefixes; dots match any character, as upstream). Empty entries are ignored
/// (upstream's empty pattern matches every address, which falls back to the first address:
/// the same choice as ignoring it, unless other entries are given too).
#[derive(Debug, Clone, Default)]
pub struct ProhibitedIps(Vec<Regex>);

impl ProhibitedIps {
    /// Parses the comma list; an entry that is no valid regular expression is an error naming it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let re = Regex::new(&format!("^(?:{entry})"))
                .map_err(|e| format!("{entry:?} is not a regular expression: {e}"))?;
            patterns.push(re);
        }
        Ok(Self(patterns))
    }

    pub fn matches(&self, ip: &str) -> bool {
        self.0.iter().any(|re| re.is_match(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where and how the listener binds (`EG_RESPONSE_*`, `EG_PROHIBITED_LOCAL_IPS`).
#[derive(Debug, Clone)]
pub struct ResponseSettings {
    /// `EG_RESPONSE_IP`: bound and advertised; `None`: the first local non-loopback IPv4 address
    /// not prohibited.
    pub ip: Option<Ipv4Addr>,
    /// `EG_RESPONSE_ADDR_ANY`: bind all interfaces (the advertised address stays as above).
    pub addr_any: bool,
    /// `EG_RESPONSE_PORT`; 0 lets the system choose (no retries then).
    pub port: u16,
    /// `EG_RESPONSE_PORT_RETRIES`: further ports tried (port+1, port+2, …) when one is taken or
    /// forbidden.
    pub port_retries: u16,
    pub prohibited: ProhibitedIps,
    pub max_payload: usize,
    pub read_timeout: Duration,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        Self {
            ip: None,
            addr_any: false,
            port: DEFAULT_PORT,
            port_retries: DEFAULT_PORT_RETRIES,
            prohibited: ProhibitedIps::default(),
            max_payload: MAX_PAYLOAD_BYTES,
            read_timeout: READ_TIMEOUT,
        }
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("RSA key generation failed: {0}")]
    Key(String),
    #[error("cannot list the local network interfaces: {0}")]
    Interfaces(#[source] io::Error),
    #[error("no local non-loopback IPv4 address to advertise: set EG_RESPONSE_IP")]
    NoAddress,
    #[error(
        "no response port could be bound on {ip} after {attempts} attempt(s) from port {first} \
         (EG_RESPONSE_PORT, EG_RESPONSE_PORT_RETRIES)"
    )]
    NoPort {
        ip: Ipv4Addr,
        first: u16,
        attempts: u32,
    },
    #[error("cannot bind the response address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The gateway's RSA key pair for payloads: one per gateway process.
pub struct ResponseKey {
    private: rsa::PrivateKey,
    public_b64: String,
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseKey")
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl ResponseKey {
    /// A fresh 1024-bit key (exponent 65537) from the thread's CSPRNG. CPU-bound (tens of
    /// milliseconds optimised, longer in debug builds): call it from a blocking context.
    pub fn generate() -> Result<Self, ResponseError> {
        let private = rsa::PrivateKey::new(&mut rand::rng(), KEY_BITS)
            .map_err(|e| ResponseError::Key(e.to_string()))?;
        Ok(Self::from_private(private))
    }

    pub fn from_private(private: rsa::PrivateKey) -> Self {
        let public_b64 = response::public_key_base64(&private.to_public_key());
        Self {
            private,
            public_b64,
        }
    }

    /// The public key as launchers take it (SPKI DER, standard base64).
    pub fn public_key(&self) -> &str {
        &self.public_b64
    }

    /// Decodes a version-1 payload.
    pub fn decode(&self, bytes: &[u8]) -> Result<ConnectionPayload, PayloadError> {
        response::decode_payload(bytes, &self.private)
    }
}

/// What a connection's payload came to (the label of each counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to the launch that registered its kernel id.
    Delivered,
    /// Larger than the cap.
    Oversize,
    /// Not complete within the read timeout.
    Timeout,
    /// A socket error while reading.
    ReadError,
    /// Not decodable (base64, JSON, version, keys, fields).
    Undecodable,
    /// Decoded, but no launch waits for its kernel id.
    UnknownKernel,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::Delivered,
        Self::Oversize,
        Self::Timeout,
        Self::ReadError,
        Self::Undecodable,
        Self::UnknownKernel,
    ];

    /// A fixed label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Oversize => "oversize",
            Self::Timeout => "timeout",
            Self::ReadError => "read_error",
            Self::Undecodable => "undecodable",
            Self::UnknownKernel => "unknown_kernel",
        }
    }
}

/// Counters of the listener, readable at any time ([`ResponseListener::counts`]).
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
}

/// A snapshot of the counters: connections accepted, and what became of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseCounts {
    pub accepted: u64,
    /// Indexed like [`Outcome::ALL`]; see [`Self::get`].
    pub outcomes: [u64; Outcome::ALL.len()],
}

impl ResponseCounts {
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }
}

struct Slot {
    generation: u64,
    tx: oneshot::Sender<ConnectionPayload>,
}

struct Shared {
    key: Arc<ResponseKey>,
    waiting: Mutex<HashMap<String, Slot>>,
    next_generation: AtomicU64,
    counters: Counters,
    max_payload: usize,
    read_timeout: Duration,
}

impl Shared {
    fn count(&self, outcome: Outcome) {
        self.counters.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The response listener. Dropping it stops accepting; waiters then end with
/// [`WaitError::Closed`] once their registration goes.
pub struct ResponseListener {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    address: String,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for ResponseListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseListener")
            .field("address", &self.address)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ResponseListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ResponseListener {
    /// Binds per `settings` (see [`ResponseSettings`]) and starts accepting.
    pub async fn bind(
        settings: &ResponseSettings,
        key: Arc<ResponseKey>,
    ) -> Result<Self, ResponseError> {
        let advertised = match settings.ip {
            Some(ip) => ip,
            None => local_ipv4(&settings.prohibited)?,
        };
        let bind_ip = if settings.addr_any {
            Ipv4Addr::UNSPECIFIED
        } else {
            advertised
        };
        let listener = bind_with_retries(bind_ip, settings.port, settings.port_retries)?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ResponseError::Bind {
                addr: SocketAddr::from((bind_ip, settings.port)),
                source,
            })?;
        let address = format!("{advertised}:{}", local_addr.port());
        info!(
            response_address = %address,
            bound = %local_addr,
            "listening for kernel launchers' connection info"
        );
        let shared = Arc::new(Shared {
            key,
            waiting: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            counters: Counters::default(),
            max_payload: settings.max_payload,
            read_timeout: settings.read_timeout,
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::downgrade(&shared)));
        Ok(Self {
            shared,
            local_addr,
            address,
            accept,
        })
    }

    /// `ip:port` for launchers (`--response-address`, `{response_address}`).
    pub fn response_address(&self) -> &str {
        &self.address
    }

    /// The public key for launchers (`--public-key`, `{public_key}`).
    pub fn public_key(&self) -> &str {
        self.shared.key.public_key()
    }

    /// The address actually bound (all interfaces with `EG_RESPONSE_ADDR_ANY`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers a launch waiting for `kernel_id`'s payload; call it before the launcher can
    /// send. Registering an id again replaces the earlier waiter (which then ends with
    /// [`WaitError::Closed`]). The registration ends with the waiter.
    pub fn register(&self, kernel_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let previous =
            lock(&self.shared.waiting).insert(kernel_id.to_owned(), Slot { generation, tx });
        if previous.is_some() {
            warn!(
                kernel_id,
                "kernel id registered again; the earlier launch stops waiting"
            );
        }
        Waiter {
            kernel_id: kernel_id.to_owned(),
            generation,
            rx: Some(rx),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Connections accepted and what became of them.
    pub fn counts(&self) -> ResponseCounts {
        let c = &self.shared.counters;
        ResponseCounts {
            accepted: c.accepted.load(Ordering::Relaxed),
            outcomes: std::array::from_fn(|i| c.outcomes[i].load(Ordering::Relaxed)),
        }
    }
}

/// Why [`Waiter::recv`] returned without a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// Nothing yet; `recv` may be called again.
    #[error("no connection info from the launcher within {0:?}")]
    Timeout(Duration),
    /// The listener is gone, or the kernel id was registered again.
    #[error("the response listener stopped waiting for this kernel")]
    Closed,
    /// The payload was already returned by an earlier `recv`.
    #[error("the connection info was already received")]
    Received,
}

/// One launch's wait for its payload (see [`ResponseListener::register`]).
#[derive(Debug)]
pub struct Waiter {
    kernel_id: String,
    generation: u64,
    rx: Option<oneshot::Receiver<ConnectionPayload>>,
    shared: Weak<Shared>,
}

impl Waiter {
    pub fn kernel_id(&self) -> &str {
        &self.kernel_id
    }

    /// The payload, once it has arrived (at once if it already has), or [`WaitError::Timeout`]
    /// after `timeout` (zero: just look).
    pub async fn recv(&mut self, timeout: Duration) -> Result<ConnectionPayload, WaitError> {
        let rx = self.rx.as_mut().ok_or(WaitError::Received)?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(WaitError::Timeout(timeout)),
            Ok(Err(_)) => {
                self.rx = None;
                Err(WaitError::Closed)
            }
            Ok(Ok(payload)) => {
                self.rx = None;
                Ok(payload)
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut waiting = lock(&shared.waiting);
            if waiting
                .get(&self.kernel_id)
                .is_some_and(|s| s.generation == self.generation)
            {
                waiting.remove(&self.kernel_id);
            }
        }
    }
}

/// The gateway's connection info for a payload: the kernel's ports, key and scheme at
/// `pod_ip` (the payload's own `ip` is what the kernel bound, usually `0.0.0.0`). The address is
/// written as is: an IPv6 pod address would need brackets in the bridge's ZeroMQ endpoints.
pub fn into_connection_info(payload: ConnectionPayload, pod_ip: IpAddr) -> ConnectionInfo {
    ConnectionInfo {
        ip: pod_ip.to_string(),
        transport: payload.transport,
        shell_port: payload.shell_port,
        iopub_port: payload.iopub_port,
        stdin_port: payload.stdin_port,
        control_port: payload.control_port,
        hb_port: payload.hb_port,
        key: payload.key,
        signature_scheme: payload.signature_scheme,
        kernel_name: payload.kernel_name,
    }
}

#[cfg(test)]
mod tests;
