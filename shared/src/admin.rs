//! The admin endpoint both binaries serve on their own address: `/livez` (the process answers),
//! `/readyz` (a readiness latch), `/metrics` (Prometheus text).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Exposition;

/// Readiness, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Arc<Readiness>,
    not_ready: &'static str,
    metrics: Arc<dyn Exposition>,
}

/// The admin routes. `/livez` depends on nothing but this process answering; `/readyz` answers
/// 503 with `not_ready` until `ready` is set; `/metrics` serves `metrics`.
pub fn router(
    ready: Arc<Readiness>,
    not_ready: &'static str,
    metrics: Arc<dyn Exposition>,
) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            ready,
            not_ready,
            metrics,
        })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, state.not_ready)
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves the admin routes until `cancel`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

/// The admin endpoint being served, from [`start`].
pub struct Running(JoinHandle<std::io::Result<()>>);

impl Running {
    /// Waits (a second at most) for the server to finish after its cancellation.
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.0).await;
    }
}

/// Listens on `addr` (when set; `var` names its setting in the error) and serves `router` there
/// until `cancel`.
pub async fn start(
    addr: Option<SocketAddr>,
    var: &str,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<Option<Running>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{var}={addr}: cannot listen: {e}")))?;
    info!(addr = %addr, "admin endpoint listening (/livez, /readyz, /metrics)");
    Ok(Some(Running(tokio::spawn(serve(listener, router, cancel)))))
}
