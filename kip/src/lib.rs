//! Kernel Image Puller: learns which kernel images a Jupyter Enterprise Gateway needs and pulls
//! them onto the node ahead of time.
//!
//! - [`config`]: `KIP_*` variables and flags, validated once.
//! - [`source`]: where image names come from (gateway kernelspecs, a static list, a ConfigMap).
//! - [`ports`]: what the loop and the adapters share: pull policy, [`ports::ImageRuntime`],
//!   [`ports::TagResolver`], runtime errors.
//! - [`plan`]: normalising, de-duplicating and presence checks (pure).
//! - [`credentials`]: registry credentials from pull secrets, matched like kubelet's keyring.
//! - [`runtime`]: container runtimes behind [`runtime::ImageRuntime`] (Docker, CRI).
//! - [`registry`]: the OCI distribution client (auth, manifests, digests) the containerd backend
//!   pulls with and `Always` checks digests with.
//! - [`puller`]: the pull scheduler (concurrency, retries, timeouts).
//! - [`agent`]: the loop, once or forever.
//! - [`admin`], [`metrics`]: `/livez`, `/readyz` and `/metrics` on the admin address.

pub mod admin;
pub mod agent;
pub mod config;
pub mod credentials;
#[cfg(test)]
mod fakes;
pub mod metrics;
pub mod plan;
pub mod ports;
pub mod puller;
pub mod registry;
pub mod runtime;
pub mod source;
