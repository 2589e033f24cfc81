//! Serving the response address: choosing the local address, binding it, and reading, decoding
//! and delivering each launcher's payload.

use super::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

pub(super) fn local_ipv4(prohibited: &ProhibitedIps) -> Result<Ipv4Addr, ResponseError> {
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
pub(super) fn bind_with_retries(
    ip: Ipv4Addr,
    port: u16,
    retries: u16,
) -> Result<TcpListener, ResponseError> {
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

pub(super) async fn accept_loop(listener: TcpListener, shared: Weak<Shared>) {
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

pub(super) enum ReadFailure {
    Oversize,
    Io(io::Error),
}

/// Reads until EOF, at most `max` bytes.
pub(super) async fn read_capped(
    stream: &mut TcpStream,
    max: usize,
) -> Result<Vec<u8>, ReadFailure> {
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

pub(super) async fn serve(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Outcome {
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
pub(super) fn decode(shared: &Shared, bytes: &[u8]) -> Result<ConnectionPayload, PayloadError> {
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
