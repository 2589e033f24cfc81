//! What the kernel image puller (`kip`) and the `gateway` share, once.
//!
//! - [`image_ref`]: container image references with the Docker grammar and normalisation.
//! - [`kernelspec`]: `kernel.json`, the `/api/kernelspecs` response, and the images they name.
//! - [`config`]: settings validation that lists every invalid variable, the parsers of the
//!   settings both binaries take (log level, admin address, seconds) and [`config::Secret`].
//! - [`admin`]: the `/livez`, `/readyz`, `/metrics` endpoint.
//! - [`binary`]: the `main` both binaries share (settings, logging, runtime, exit codes).
//! - [`metrics`]: registration of Prometheus metrics under a binary's prefix.
//! - [`shutdown`]: the cancellation root (SIGTERM/SIGINT; a second signal exits 130).
//! - [`telemetry`]: logging to stderr, plain or JSON.

pub mod admin;
pub mod binary;
pub mod config;
pub mod image_ref;
pub mod kernelspec;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use image_ref::{ImageRef, ImageRefError};
