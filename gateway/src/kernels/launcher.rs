//! One trait for every way a kernel is started. A launcher turns a request into a running kernel
//! process with connection info; the kernel manager does everything else (bridge, restarts,
//! culling, shutdown) the same way for all of them.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use gateway_core::policy::PortRange;

use crate::{bridge::ConnectionInfo, kernelspecs::LoadedSpec};

/// What a launcher needs to start one kernel.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub kernel_id: String,
    /// The kernelspec's name as served (lower case).
    pub spec_name: String,
    pub spec: Arc<LoadedSpec>,
    /// The kernel's whole environment, already composed (spec env, inherited and client
    /// variables, the gateway's own).
    pub env: BTreeMap<String, String>,
    pub port_range: PortRange,
    pub launch_timeout: Duration,
}

/// Why a kernel could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Failed(String),
    #[error("launch timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unsupported(String),
    /// The request cannot be launched as it is (a value the client sent, a policy): answered
    /// with `status` (400, 403) and the message as is.
    #[error("{message}")]
    Rejected { status: u16, message: String },
}

/// Starts kernels.
#[async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, req: &LaunchRequest) -> Result<Box<dyn KernelProcess>, LaunchError>;
}

/// A started kernel, whatever runs it.
#[async_trait]
pub trait KernelProcess: Send + Sync {
    fn connection(&self) -> &ConnectionInfo;

    /// Where it runs, for logs (`pid 1234`, `pod ns/name`).
    fn describe(&self) -> String;

    /// A receiver that turns true once the kernel has ended, for whatever reason.
    fn exited(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Delivers a signal (an interrupt, or `EG_ALTERNATE_SIGINT`'s) to the kernel.
    async fn signal(&self, signum: i32) -> Result<(), LaunchError>;

    /// The next [`KernelProcess::terminate`] ends this run of a kernel that starts again at once
    /// (a restart): what outlives one run (a kernel's own namespace) is kept.
    fn keep_for_restart(&self) {}

    /// Ends the kernel: politely, then by force after `grace`; returns once it has ended.
    async fn terminate(&self, grace: Duration);

    /// Files and reservations to release once the kernel is gone.
    fn cleanup(&self) {}

    /// The connection file, where one was written.
    fn connection_file(&self) -> Option<PathBuf> {
        None
    }
}
