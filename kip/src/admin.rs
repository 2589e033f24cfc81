//! The admin endpoint (`eg_common::admin`) with the agent's readiness. Readiness is
//! a one-way latch, set once the runtime answered and a first cycle completed; `/livez` never
//! depends on the gateway, registry or runtime, so an outage never gets the agent restarted.

pub use eg_common::admin::{Readiness, router, serve};

/// What `/readyz` answers until the agent is ready.
pub const NOT_READY: &str = "not ready: runtime not answering or no cycle completed yet\n";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::metrics::Metrics;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn live_ready_metrics() {
        let ready = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::default());
        metrics.record_fetch("ok");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router(ready.clone(), NOT_READY, metrics),
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
            router(Arc::new(Readiness::default()), NOT_READY, metrics),
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
