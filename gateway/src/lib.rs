//! An Enterprise-Gateway-compatible kernel gateway.
//!
//! - [`config`]: the `EG_*` variables, parsed once.
//! - [`kernelspecs`]: discovery and loading of kernelspecs, the listing body and its ETag.
//! - [`watch`]: filesystem notifications and periodic rescans publishing listing changes.
//! - [`api`]: the REST routes (`router(state)`), token check, the watch long-poll; [`cors`]: CORS
//!   headers, preflight answers and the origin check; [`tls`]: the HTTPS listener; [`peer`]: each
//!   connection's address and client certificate, and the `EG_AUTHORIZED_ORIGIN` check.
//! - [`kernels`]: running kernels (registry, launchers, restarts, culling); [`kernels_api`] and
//!   [`channels`]: their REST routes and websocket; [`bridge`]: each kernel's ZeroMQ sockets, which
//!   [`zmtp`] speaks on tokio's TCP streams.
//! - [`response`]: the response address remote kernel launchers send their encrypted connection
//!   info to; [`comm`]: requests to a remote launcher's comm port (signals, shutdown).
//! - [`admin`], [`metrics`]: `/livez`, `/readyz`, `/metrics` on a separate address.

pub mod admin;
pub mod api;
pub mod bridge;
pub mod channels;
pub mod comm;
pub mod config;
pub mod cors;
pub mod kernels;
pub mod kernels_api;
pub mod kernelspecs;
pub mod metrics;
pub mod peer;
pub mod response;
pub mod tls;
pub mod watch;
pub mod zmtp;
