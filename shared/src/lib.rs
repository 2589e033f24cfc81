//! Types shared by the kernel image puller (`kip`) and the `gateway`.
//!
//! - [`image_ref`]: container image references with the Docker grammar and normalisation.
//! - [`kernelspec`]: `kernel.json`, the `/api/kernelspecs` response, and the images they name.
//! - [`config`]: settings validation that lists every invalid variable.
//! - [`admin`]: the `/livez`, `/readyz`, `/metrics` endpoint.

pub mod admin;
pub mod config;
pub mod image_ref;
pub mod kernelspec;

pub use image_ref::{ImageRef, ImageRefError};
