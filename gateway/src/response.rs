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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first address `candidates` (interface name, address; in interface order) offers that is
/// IPv4, not loopback and not prohibited; when all are prohibited, the first non-loopback one (as
/// upstream).
pub fn choose_local_ip(
    candidates: &[(String, IpAddr)],
    prohibited: &ProhibitedIps,
) -> Option<Ipv4Addr> {
    let public: Vec<Ipv4Addr> = candidates
        .iter()
        .filter_map(|(name, ip)| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() && !name.starts_with("lo") => Some(*v4),
            _ => None,
        })
        .collect();
    public
        .iter()
        .copied()
        .find(|ip| !prohibited.matches(&ip.to_string()))
        .or_else(|| public.first().copied())
}

fn local_ipv4(prohibited: &ProhibitedIps) -> Result<Ipv4Addr, ResponseError> {
    let candidates: Vec<(String, IpAddr)> = if_addrs::get_if_addrs()
        .map_err(ResponseError::Interfaces)?
        .into_iter()
        .map(|i| {
            let ip = i.ip();
            (i.name, ip)
        })
        .collect();
    choose_local_ip(&candidates, prohibited).ok_or(ResponseError::NoAddress)
}

/// Binds `ip:port`, then `port+1`, … (`retries` more) while the port is taken or forbidden;
/// `SO_REUSEADDR`, backlog 128, as upstream.
fn bind_with_retries(ip: Ipv4Addr, port: u16, retries: u16) -> Result<TcpListener, ResponseError> {
    let attempts = if port == 0 { 1 } else { u32::from(retries) + 1 };
    let mut tried = 0;
    for candidate in
        (u32::from(port)..u32::from(port) + attempts).filter_map(|p| u16::try_from(p).ok())
    {
        tried += 1;
        let addr = SocketAddr::from((ip, candidate));
        let bind = || -> io::Result<TcpListener> {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(128)
        };
        match bind() {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                info!(port = candidate, "response port in use, trying the next");
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                warn!(
                    port = candidate,
                    "response port not permitted, trying the next"
                );
            }
            Err(source) => return Err(ResponseError::Bind { addr, source }),
        }
    }
    Err(ResponseError::NoPort {
        ip,
        first: port,
        attempts: tried,
    })
}

async fn accept_loop(listener: TcpListener, shared: Weak<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accepting a launcher connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let outcome = serve(&shared, stream, peer).await;
            shared.count(outcome);
        });
    }
}

enum ReadFailure {
    Oversize,
    Io(io::Error),
}

/// Reads until EOF, at most `max` bytes.
async fn read_capped(stream: &mut TcpStream, max: usize) -> Result<Vec<u8>, ReadFailure> {
    let mut buf = Vec::with_capacity(4096);
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    (&mut *stream)
        .take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(ReadFailure::Io)?;
    if buf.len() > max {
        return Err(ReadFailure::Oversize);
    }
    Ok(buf)
}

async fn serve(shared: &Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) -> Outcome {
    let bytes = match tokio::time::timeout(
        shared.read_timeout,
        read_capped(&mut stream, shared.max_payload),
    )
    .await
    {
        Err(_) => {
            warn!(%peer, timeout = ?shared.read_timeout, "launcher connection dropped: no complete payload in time");
            return Outcome::Timeout;
        }
        Ok(Err(ReadFailure::Oversize)) => {
            warn!(%peer, max_bytes = shared.max_payload, "launcher connection dropped: payload too large");
            return Outcome::Oversize;
        }
        Ok(Err(ReadFailure::Io(e))) => {
            warn!(%peer, error = %e, "launcher connection dropped: read failed");
            return Outcome::ReadError;
        }
        Ok(Ok(bytes)) => bytes,
    };
    drop(stream);
    let decoded = {
        let shared = shared.clone();
        // RSA is CPU-bound: off the async workers.
        tokio::task::spawn_blocking(move || decode(&shared, &bytes)).await
    };
    let payload = match decoded {
        Ok(Ok(payload)) => payload,
        Ok(Err(e)) => {
            error!(%peer, field = e.field(), reason = e.reason(), error = %e, "launcher payload rejected");
            return Outcome::Undecodable;
        }
        Err(e) => {
            error!(%peer, error = %e, "decoding a launcher payload failed");
            return Outcome::Undecodable;
        }
    };
    let kernel_id = payload.kernel_id.clone();
    let slot = lock(&shared.waiting).remove(&kernel_id);
    match slot {
        Some(slot) => match slot.tx.send(payload) {
            Ok(()) => {
                debug!(%peer, kernel_id, "connection info delivered");
                Outcome::Delivered
            }
            Err(_) => {
                warn!(%peer, kernel_id, "connection info arrived after its launch stopped waiting; dropped");
                Outcome::UnknownKernel
            }
        },
        None => {
            error!(%peer, kernel_id, "connection info for a kernel id no launch waits for; dropped");
            Outcome::UnknownKernel
        }
    }
}

/// Version 1; failing that, legacy version 0 by trial over the waiting kernel ids; failing that
/// too, the version-1 error (as upstream).
fn decode(shared: &Shared, bytes: &[u8]) -> Result<ConnectionPayload, PayloadError> {
    let v1 = match shared.key.decode(bytes) {
        Ok(payload) => return Ok(payload),
        Err(e) => e,
    };
    let ids: Vec<String> = lock(&shared.waiting).keys().cloned().collect();
    match response::decode_legacy(bytes, ids.iter().map(String::as_str)) {
        Some(payload) => {
            warn!(
                kernel_id = payload.kernel_id,
                "legacy (version 0) connection info received: update the kernel launcher"
            );
            Ok(payload)
        }
        None => {
            debug!(
                candidates = ids.len(),
                "not a legacy payload under any waiting kernel id either"
            );
            Err(v1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::response::encode_payload;
    use rsa::pkcs8::DecodePrivateKey;
    use serde_json::{Value, json};
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;

    const GATEWAY_PEM: &str = include_str!("../core/testdata/response/gateway.pem");
    const VECTORS: &str = include_str!("../core/testdata/response/vectors.json");

    fn key() -> Arc<ResponseKey> {
        Arc::new(ResponseKey::from_private(
            rsa::PrivateKey::from_pkcs8_pem(GATEWAY_PEM).unwrap(),
        ))
    }

    fn local(max_payload: usize, read_timeout: Duration) -> ResponseSettings {
        ResponseSettings {
            ip: Some(Ipv4Addr::LOCALHOST),
            port: 0,
            max_payload,
            read_timeout,
            ..ResponseSettings::default()
        }
    }

    async fn listener(settings: ResponseSettings) -> ResponseListener {
        ResponseListener::bind(&settings, key()).await.unwrap()
    }

    fn payload_for(l: &ResponseListener, kernel_id: &str) -> Vec<u8> {
        let conn = json!({
            "shell_port": 41001, "iopub_port": 41002, "stdin_port": 41003,
            "control_port": 41004, "hb_port": 41005, "ip": "0.0.0.0", "key": "hmac-key",
            "transport": "tcp", "signature_scheme": "hmac-sha256", "kernel_name": "",
            "pid": 7, "pgid": 7, "comm_port": 41006, "kernel_id": kernel_id
        });
        let public = rsa::PrivateKey::from_pkcs8_pem(GATEWAY_PEM)
            .unwrap()
            .to_public_key();
        assert_eq!(response::public_key_base64(&public), l.public_key());
        encode_payload(
            &public,
            conn.to_string().as_bytes(),
            &rand::random(),
            &mut rand::rng(),
        )
    }

    async fn send(addr: SocketAddr, bytes: &[u8]) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
    }

    /// Waits until `outcome` has been counted `n` times.
    async fn counted(l: &ResponseListener, outcome: Outcome, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.counts().get(outcome) < n {
            assert!(
                Instant::now() < deadline,
                "{} never reached {n}: {:?}",
                outcome.label(),
                l.counts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn local_ip_choice() {
        let ifs = |list: &[(&str, &str)]| -> Vec<(String, IpAddr)> {
            list.iter()
                .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
                .collect()
        };
        let p = |raw: &str| ProhibitedIps::parse(raw).unwrap();
        let machine = ifs(&[
            ("lo", "127.0.0.1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "fe80::1"),
            ("eth0", "10.0.0.5"),
            ("eth1", "192.168.1.9"),
        ]);
        let table: [(&str, Option<&str>); 7] = [
            ("", Some("172.17.0.1")),
            ("172.17.", Some("10.0.0.5")),
            ("172\\.17\\..*,10.0.0.5", Some("192.168.1.9")),
            // Matched at the start only.
            ("0.0.5", Some("172.17.0.1")),
            // Everything prohibited: the first, as upstream.
            ("1,ethernet,.*", Some("172.17.0.1")),
            (" 172.17. , 10. ", Some("192.168.1.9")),
            ("172.17.,,10.", Some("192.168.1.9")),
        ];
        for (prohibited, want) in table {
            assert_eq!(
                choose_local_ip(&machine, &p(prohibited)),
                want.map(|w| w.parse().unwrap()),
                "{prohibited:?}"
            );
        }
        let only_loopback = ifs(&[("lo", "127.0.0.1"), ("lo", "::1"), ("lo:1", "10.9.9.9")]);
        assert_eq!(choose_local_ip(&only_loopback, &p("")), None);
        assert!(ProhibitedIps::parse("10.(").unwrap_err().contains("10.("));
    }

    #[tokio::test]
    async fn payload_before_recv_is_kept_and_delivered() {
        let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
        assert!(l.response_address().starts_with("127.0.0.1:"));
        assert_eq!(
            l.response_address(),
            format!("127.0.0.1:{}", l.local_addr().port())
        );
        let mut waiter = l.register("kid-early");
        send(l.local_addr(), &payload_for(&l, "kid-early")).await;
        counted(&l, Outcome::Delivered, 1).await;
        // Arrived before anyone waited: a zero timeout finds it.
        let p = waiter.recv(Duration::ZERO).await.unwrap();
        assert_eq!(p.kernel_id, "kid-early");
        assert_eq!((p.shell_port, p.comm_port), (41001, Some(41006)));
        assert_eq!(waiter.recv(Duration::ZERO).await, Err(WaitError::Received));
        let info = into_connection_info(p, "10.244.1.7".parse().unwrap());
        assert_eq!(info.ip, "10.244.1.7");
        assert_eq!(
            (
                info.shell_port,
                info.iopub_port,
                info.stdin_port,
                info.control_port,
                info.hb_port
            ),
            (41001, 41002, 41003, 41004, 41005)
        );
        assert_eq!(info.key, "hmac-key");
        assert_eq!(l.counts().accepted, 1);
    }

    #[tokio::test]
    async fn recv_times_out_and_can_wait_again() {
        let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
        let mut waiter = l.register("kid-late");
        assert_eq!(
            waiter.recv(Duration::from_millis(20)).await,
            Err(WaitError::Timeout(Duration::from_millis(20)))
        );
        let addr = l.local_addr();
        let payload = payload_for(&l, "kid-late");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(addr, &payload).await;
        });
        let p = waiter.recv(Duration::from_secs(10)).await.unwrap();
        assert_eq!(p.kernel_id, "kid-late");
    }

    #[tokio::test]
    async fn a_stalled_sender_delays_no_one() {
        let l = listener(local(MAX_PAYLOAD_BYTES, Duration::from_millis(1500))).await;
        let mut waiter = l.register("kid-b");
        // A sends half a payload and then nothing, keeping the connection open.
        let mut stalled = TcpStream::connect(l.local_addr()).await.unwrap();
        let a = payload_for(&l, "kid-a");
        stalled.write_all(&a[..a.len() / 2]).await.unwrap();
        // Several more stalled connections, to be sure none is served in line.
        let mut others = Vec::new();
        for _ in 0..5 {
            others.push(TcpStream::connect(l.local_addr()).await.unwrap());
        }
        let start = Instant::now();
        send(l.local_addr(), &payload_for(&l, "kid-b")).await;
        let p = waiter.recv(Duration::from_secs(1)).await.unwrap();
        assert_eq!(p.kernel_id, "kid-b");
        assert!(start.elapsed() < Duration::from_secs(1));
        // The stalled ones end at the read timeout, counted.
        counted(&l, Outcome::Timeout, 6).await;
        assert_eq!(l.counts().get(Outcome::Delivered), 1);
        drop((stalled, others));
    }

    #[tokio::test]
    async fn oversize_garbage_and_unknown_ids_are_dropped_and_counted() {
        let l = listener(local(4096, READ_TIMEOUT)).await;
        let mut waiter = l.register("kid-wanted");
        // Oversize: cut off after the cap, whatever it is.
        let mut big = payload_for(&l, "kid-wanted");
        big.resize(10_000, b'A');
        {
            // The listener may reset the connection once the cap is passed: errors are fine.
            let mut s = TcpStream::connect(l.local_addr()).await.unwrap();
            let _ = s.write_all(&big).await;
            let _ = s.shutdown().await;
        }
        counted(&l, Outcome::Oversize, 1).await;
        // Garbage of every layer.
        send(l.local_addr(), b"hello").await;
        send(l.local_addr(), b"").await;
        send(l.local_addr(), b"eyJ2ZXJzaW9uIjogMn0=").await; // {"version": 2}
        counted(&l, Outcome::Undecodable, 3).await;
        // A valid payload nobody registered.
        send(l.local_addr(), &payload_for(&l, "kid-unknown")).await;
        counted(&l, Outcome::UnknownKernel, 1).await;
        // None of it reached the waiter; its own payload still does.
        assert!(matches!(
            waiter.recv(Duration::ZERO).await,
            Err(WaitError::Timeout(_))
        ));
        send(l.local_addr(), &payload_for(&l, "kid-wanted")).await;
        assert_eq!(
            waiter
                .recv(Duration::from_secs(10))
                .await
                .unwrap()
                .kernel_id,
            "kid-wanted"
        );
        let c = l.counts();
        assert_eq!(c.accepted, 6);
        assert_eq!(
            Outcome::ALL.map(|o| c.get(o)),
            [1, 1, 0, 0, 3, 1],
            "delivered, oversize, timeout, read_error, undecodable, unknown_kernel"
        );
    }

    #[tokio::test]
    async fn registrations_end_with_their_waiter() {
        let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
        let gone = l.register("kid-gone");
        drop(gone);
        send(l.local_addr(), &payload_for(&l, "kid-gone")).await;
        counted(&l, Outcome::UnknownKernel, 1).await;
        // Registering again replaces the earlier waiter; dropping the old one keeps the new.
        let mut first = l.register("kid-twice");
        let mut second = l.register("kid-twice");
        assert_eq!(first.recv(Duration::ZERO).await, Err(WaitError::Closed));
        drop(first);
        send(l.local_addr(), &payload_for(&l, "kid-twice")).await;
        assert_eq!(
            second
                .recv(Duration::from_secs(10))
                .await
                .unwrap()
                .kernel_id,
            "kid-twice"
        );
        // Once the listener is gone, waiting ends.
        let mut orphan = l.register("kid-orphan");
        drop(l);
        assert_eq!(
            orphan.recv(Duration::from_secs(10)).await,
            Err(WaitError::Closed)
        );
    }

    /// Payloads PyCryptodome wrote (gateway-core's testdata): version 1 and legacy version 0,
    /// which is tried over the waiting kernel ids.
    #[tokio::test]
    async fn python_written_payloads_are_routed() {
        let vectors: Value = serde_json::from_str(VECTORS).unwrap();
        let kernel_id = vectors["kernel_id"].as_str().unwrap();
        let payload = |name: &str| {
            vectors["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()["payload"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
        for name in [
            "python-launcher",
            "toree-launcher",
            "oaep-sha1",
            "legacy-v0",
        ] {
            let _other = l.register("ffffffff-0000-4000-8000-000000000000");
            let mut waiter = l.register(kernel_id);
            send(l.local_addr(), &payload(name)).await;
            let p = waiter.recv(Duration::from_secs(10)).await.unwrap();
            assert_eq!(p.kernel_id, kernel_id, "{name}");
        }
        // Encrypted for another gateway: rejected, and the waiter gets nothing.
        let mut waiter = l.register(kernel_id);
        send(l.local_addr(), &payload("other-gateway-key")).await;
        counted(&l, Outcome::Undecodable, 1).await;
        assert!(matches!(
            waiter.recv(Duration::ZERO).await,
            Err(WaitError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn the_port_moves_on_when_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let settings = ResponseSettings {
            port,
            port_retries: 20,
            ..local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)
        };
        let l = listener(settings.clone()).await;
        let bound = l.local_addr().port();
        assert!(bound > port && bound <= port.saturating_add(20), "{bound}");
        assert!(l.response_address().ends_with(&format!(":{bound}")));
        let err = ResponseListener::bind(
            &ResponseSettings {
                port_retries: 0,
                ..settings
            },
            key(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, ResponseError::NoPort { attempts: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("EG_RESPONSE_PORT"), "{err}");
    }

    #[tokio::test]
    async fn addr_any_binds_everywhere_and_advertises_one_address() {
        let l = listener(ResponseSettings {
            addr_any: true,
            ..local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)
        })
        .await;
        assert_eq!(l.local_addr().ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(l.response_address().starts_with("127.0.0.1:"));
    }

    #[test]
    fn generated_keys_export_like_upstream() {
        let k = ResponseKey::generate().unwrap();
        assert_eq!(k.public_key().len(), 216);
        assert!(
            k.public_key()
                .starts_with("MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ")
        );
        assert!(!format!("{k:?}").contains("PrivateKey {"));
    }
}
