//! The gateway's pure core: no sockets, no clocks, no tasks. Everything here is tested by tables.
//!
//! - [`wire`]: Jupyter messages as ZeroMQ frames (`<IDS|MSG>`, HMAC signatures per
//!   `signature_scheme`), and the few header fields the gateway reads.
//! - [`ws`]: the two websocket protocols: legacy JSON (text frames; binary frames with u32
//!   big-endian offsets when buffers travel) and `v1.kernel.websocket.jupyter.org` (u64
//!   little-endian offsets, parts verbatim).
//! - [`policy`]: `POST /api/kernels` rules: the kernel's environment (`EG_CLIENT_ENVS`,
//!   `EG_INHERITED_ENVS`, value checks), `${VAR}` filling of the spec's env, users, limits,
//!   `KERNEL_ID`, port ranges.
//! - [`zmtp`]: ZeroMQ's wire protocol (ZMTP 3.0, NULL mechanism) as a connecting DEALER or SUB
//!   speaks it: greeting, READY handshake, framing.
//! - [`outstanding`]: the requests a websocket session is still owed replies to (a disconnected
//!   session's sockets close once there are none).
//! - [`argv`]: Jupyter's `{name}` substitution in a kernelspec's `argv`.
//! - [`response`]: the connection-info payload remote launchers send to the response address
//!   (RSA + AES-128-ECB, version 1; legacy version 0), and the public key's exported form.
//! - [`k8s`]: the Kubernetes launcher's decisions: pod name and namespace, the pod's
//!   environment, the kernel-pod template (as Jinja2 renders it) and manifest, pod progress.

pub mod argv;
pub mod k8s;
pub mod outstanding;
pub mod policy;
pub mod response;
pub mod wire;
pub mod ws;
pub mod zmtp;

pub use wire::{Channel, Message};
