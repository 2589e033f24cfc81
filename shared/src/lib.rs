//! Types shared by the kernel image puller (`kip`) and the `gateway`.
//!
//! - [`image_ref`]: container image references with the Docker grammar and normalisation.
//! - [`kernelspec`]: `kernel.json`, the `/api/kernelspecs` response, and the images they name.

pub mod image_ref;
pub mod kernelspec;

pub use image_ref::{ImageRef, ImageRefError};
