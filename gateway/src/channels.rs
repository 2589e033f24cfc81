//! `GET /api/kernels/{id}/channels`: a kernel's websocket. The legacy protocol by default,
//! `v1.kernel.websocket.jupyter.org` when the client offers it. Frames are translated, not
//! re-serialised; a malformed client frame is logged and dropped and the connection stays up.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        Path, Query, State,
        ws::{Message as WsMessage, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures_util::{SinkExt, StreamExt};
use gateway_core::ws::{self, Frame, Protocol, V1_PROTOCOL};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    api::{AppState, Client, json_error},
    bridge::ClientSink,
    kernels::Kernel,
};

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

fn offers_v1(headers: &HeaderMap) -> bool {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == V1_PROTOCOL)
}

/// The upgrade: the kernel must exist; the websocket opens once the kernel has answered the
/// nudge (or the kernel-info timeout has passed).
pub async fn channels(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Client(client): Client,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(kernel) = state.kernels.get(&id) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Kernel does not exist: {id}"),
        );
    };
    let session_id = match params.get("session_id").filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => {
            let s = uuid::Uuid::new_v4().to_string();
            warn!(kernel_id = %id, session = %s, "websocket without session_id; using a new one");
            s
        }
    };
    let info_timeout = state.kernels.settings().bridge.kernel_info_timeout;
    let _ = tokio::time::timeout(info_timeout, kernel.bridge.wait_ready()).await;
    let protocol = if offers_v1(&headers) {
        Protocol::V1
    } else {
        Protocol::Legacy
    };
    let upgrade = match protocol {
        Protocol::V1 => upgrade.protocols([V1_PROTOCOL]),
        Protocol::Legacy => upgrade,
    };
    let ping = state.ws_ping_interval;
    upgrade
        .max_message_size(256 << 20)
        // Client frames are small; each read zeroes this much of the buffer first.
        .read_buffer_size(16 << 10)
        .on_upgrade(move |socket| serve(socket, state, kernel, session_id, protocol, ping, client))
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    kernel: Arc<Kernel>,
    session_id: String,
    protocol: Protocol,
    ping_interval: Duration,
    client: Option<IpAddr>,
) {
    let client = client.map(tracing::field::display);
    let conn_id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let protocol_name = match protocol {
        Protocol::V1 => "v1",
        Protocol::Legacy => "legacy",
    };
    let _gauge = state.metrics.websocket(protocol_name);
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    kernel.connected(1);
    kernel.bridge.attach(
        &session_id,
        ClientSink {
            conn_id,
            tx,
            queued: queued.clone(),
        },
    );
    info!(kernel_id = %kernel.id, session = %session_id, protocol = protocol_name, conn_id, client, "websocket open");
    let (sink, stream) = socket.split();
    let last_pong = Arc::new(std::sync::Mutex::new(Instant::now()));
    // Two tasks: a message for the client wakes only the writer, never a read attempt.
    let mut writer = tokio::spawn(write_loop(
        sink,
        rx,
        queued,
        protocol,
        ping_interval,
        last_pong.clone(),
    ));
    let reader = read_loop(stream, &state, &kernel, &session_id, protocol, last_pong);
    tokio::select! {
        _ = &mut writer => {}
        () = reader => writer.abort(),
    }
    kernel.bridge.detach(&session_id, conn_id);
    kernel.connected(-1);
    info!(kernel_id = %kernel.id, session = %session_id, conn_id, client, "websocket closed");
}

fn to_ws(frame: Frame) -> WsMessage {
    match frame {
        Frame::Text(t) => WsMessage::Text(t.into()),
        Frame::Binary(b) => WsMessage::Binary(b),
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Arc<crate::bridge::Delivery>>,
    queued: Arc<AtomicUsize>,
    protocol: Protocol,
    ping_interval: Duration,
    last_pong: Arc<std::sync::Mutex<Instant>>,
) {
    let pings = !ping_interval.is_zero();
    let mut ping = tokio::time::interval(if pings {
        ping_interval
    } else {
        Duration::from_secs(3600)
    });
    ping.tick().await;
    let pong_deadline = (ping_interval * 3).max(Duration::from_secs(30));
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else {
                    // A newer websocket took the session, or the kernel is gone.
                    break;
                };
                let mut batch = vec![d];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
                let mut failed = false;
                for d in batch {
                    queued.fetch_sub(d.size(), Ordering::Relaxed);
                    let frame = ws::encode(protocol, d.channel, &d.msg, &d.info);
                    if sink.feed(to_ws(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || sink.flush().await.is_err() {
                    break;
                }
            }
            _ = ping.tick(), if pings => {
                let since = last_pong.lock().map(|t| t.elapsed()).unwrap_or_default();
                if since > pong_deadline {
                    info!(silent_s = since.as_secs(), "websocket peer stopped answering pings; closing");
                    break;
                }
                if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    state: &AppState,
    kernel: &Kernel,
    session_id: &str,
    protocol: Protocol,
    last_pong: Arc<std::sync::Mutex<Instant>>,
) {
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                debug!(kernel_id = %kernel.id, error = %e, "websocket read ended");
                break;
            }
        };
        let decoded = match (msg, protocol) {
            (WsMessage::Text(t), _) => ws::decode_legacy_text(t.as_str()),
            (WsMessage::Binary(b), Protocol::V1) => ws::decode_v1(&b),
            (WsMessage::Binary(b), Protocol::Legacy) => ws::decode_legacy_binary(&b),
            (WsMessage::Pong(_), _) => {
                if let Ok(mut t) = last_pong.lock() {
                    *t = Instant::now();
                }
                continue;
            }
            (WsMessage::Ping(_), _) => continue,
            (WsMessage::Close(_), _) => break,
        };
        match decoded {
            Ok(m) => {
                if m.channel_defaulted {
                    debug!(kernel_id = %kernel.id, "message without channel; sending on shell");
                }
                kernel.activity.touch_now();
                kernel.bridge.send(session_id, m.channel, m.msg);
            }
            Err(e) => {
                state.metrics.dropped("bad_client_frame");
                warn!(kernel_id = %kernel.id, session = %session_id, error = %e, "client frame dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_offer() {
        let mut h = HeaderMap::new();
        assert!(!offers_v1(&h));
        h.insert(
            "sec-websocket-protocol",
            "foo, v1.kernel.websocket.jupyter.org".parse().unwrap(),
        );
        assert!(offers_v1(&h));
    }
}
