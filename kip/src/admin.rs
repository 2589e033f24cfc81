//! The admin endpoint (`eg_common::admin`) with the agent's readiness and metrics. Readiness is
//! a one-way latch, set once the runtime answered and a first cycle completed; `/livez` never
//! depends on the gateway, registry or runtime, so an outage never gets the agent restarted.

use std::sync::Arc;

use axum::Router;
pub use eg_common::admin::{Readiness, serve};

use crate::metrics::Metrics;

/// The admin routes over the agent's metrics.
pub fn router(ready: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    eg_common::admin::router(
        ready,
        "not ready: runtime not answering or no cycle completed yet\n",
        Arc::new(move || metrics.encode()),
    )
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn live_ready_metrics() {
        let ready = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::new());
        metrics.record_fetch("ok");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router(ready.clone(), metrics),
            cancel.clone(),
        ));

        assert_eq!(get_text(addr, "/livez").await.0, 200);
        assert_eq!(get_text(addr, "/readyz").await.0, 503);
        ready.set(true);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (status, body) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("kip_fetch_total{result=\"ok\"} 1"), "{body}");
        assert_eq!(get_text(addr, "/nope").await.0, 404);

        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_are_there_before_any_pull() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let metrics = Arc::new(Metrics::for_runtime("cri"));
        let server = tokio::spawn(serve(
            listener,
            router(Arc::new(Readiness::default()), metrics),
            cancel.clone(),
        ));
        let (status, body) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        for needle in [
            "kip_pulls_total{runtime=\"cri\",result=\"pulled\"} 0",
            "kip_pulls_total{runtime=\"cri\",result=\"unavailable\"} 0",
            "kip_pull_duration_seconds_count{runtime=\"cri\"} 0",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
        }
        cancel.cancel();
        server.await.unwrap().unwrap();
    }
}
