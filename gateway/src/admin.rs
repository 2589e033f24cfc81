//! The admin endpoint (`eg_common::admin`) with the gateway's readiness and metrics.
//! Readiness is set once the first scan is loaded and the API listener is bound, and cleared at
//! shutdown so load balancers stop sending new requests.

use std::sync::Arc;

use axum::Router;
pub use eg_common::admin::{Readiness, serve};

use crate::metrics::Metrics;

/// The admin routes over the gateway's metrics.
pub fn router(ready: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    eg_common::admin::router(
        ready,
        "not ready: starting or stopping\n",
        Arc::new(move || metrics.encode()),
    )
}
