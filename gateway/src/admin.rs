//! The admin endpoint (`eg_common::admin`) with the gateway's readiness. Readiness is set once
//! the first scan is loaded and the API listener is bound, and cleared at shutdown so load
//! balancers stop sending new requests.

pub use eg_common::admin::{Readiness, router, serve};

/// What `/readyz` answers while the gateway is not ready.
pub const NOT_READY: &str = "not ready: starting or stopping\n";
