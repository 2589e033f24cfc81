//! An Enterprise-Gateway-compatible kernelspec service.
//!
//! - [`config`]: the `EG_*` variables, parsed once.
//! - [`kernelspecs`]: discovery and loading of kernelspecs, the listing body and its ETag.
//! - [`watch`]: filesystem notifications and periodic rescans publishing listing changes.
//! - [`api`]: the REST routes (`router(state)`), token check, the watch long-poll.
//! - [`admin`], [`metrics`]: `/livez`, `/readyz`, `/metrics` on a separate address.

pub mod admin;
pub mod api;
pub mod config;
pub mod kernelspecs;
pub mod metrics;
pub mod watch;
