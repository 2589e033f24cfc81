//! Running kernels: the registry, starts (policy, limits, launch), restarts (asked for and
//! automatic), interrupts, shutdown, culling, and the drain at gateway shutdown.

pub mod kube;
pub mod launcher;
pub mod local;

mod lifecycle;
mod start;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use gateway_core::{
    Channel,
    policy::{self, ClientEnvs, PortRange, Refusal},
    wire,
};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::launcher::{KernelProcess, LaunchError, LaunchRequest, Launcher};
use crate::{
    bridge::{self, Activity, Bridge, Limits},
    kernelspecs::LoadedSpec,
    metrics::Metrics,
    watch::Store,
};

/// Settings of the kernel machinery (from `EG_*`).
#[derive(Debug, Clone)]
pub struct KernelSettings {
    pub default_kernel_name: String,
    pub client_envs: ClientEnvs,
    pub inherited_envs: Vec<String>,
    pub authorized_users: Vec<String>,
    pub unauthorized_users: Vec<String>,
    pub max_kernels: Option<usize>,
    pub max_kernels_per_user: Option<usize>,
    pub launch_timeout: Duration,
    pub port_range: PortRange,
    pub min_port_range_size: u32,
    pub impersonation: bool,
    pub cull_idle_timeout: Duration,
    pub cull_interval: Duration,
    pub cull_connected: bool,
    pub restart_limit: u32,
    /// Which signal an interrupt sends (`EG_ALTERNATE_SIGINT`, the spec's own first).
    pub comm: crate::comm::CommSettings,
    /// How long a kernel has after `shutdown_request` before it is terminated.
    pub shutdown_wait: Duration,
    pub bridge: Limits,
}

impl Default for KernelSettings {
    /// The configuration's defaults (`gateway --help`).
    fn default() -> Self {
        Self {
            default_kernel_name: "python_docker".into(),
            client_envs: ClientEnvs::None,
            inherited_envs: Vec::new(),
            authorized_users: Vec::new(),
            unauthorized_users: vec!["root".into()],
            max_kernels: None,
            max_kernels_per_user: None,
            launch_timeout: Duration::from_secs(30),
            port_range: PortRange::ANY,
            min_port_range_size: 1000,
            impersonation: false,
            cull_idle_timeout: Duration::from_secs(43200),
            cull_interval: Duration::from_secs(60),
            cull_connected: false,
            restart_limit: 5,
            comm: crate::comm::CommSettings::default(),
            shutdown_wait: Duration::from_secs(5),
            bridge: Limits {
                client_queue_bytes: 256 << 20,
                offline_messages: 10_000,
                offline_bytes: 64 << 20,
                kernel_info_timeout: Duration::from_secs(60),
            },
        }
    }
}

/// The kernel model clients see.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KernelModel {
    pub id: String,
    pub name: String,
    pub last_activity: String,
    pub execution_state: String,
    pub connections: usize,
}

/// Why a start (or another kernel operation) failed: the HTTP status and text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct KernelError {
    pub status: u16,
    pub message: String,
    /// Upstream puts some messages in `reason` (with an empty `message`).
    pub in_reason: bool,
    /// Upstream answers some failures with a Python traceback; kept for clients that look.
    pub traceback: Option<String>,
}

impl KernelError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            in_reason: false,
            traceback: None,
        }
    }
}

impl From<Refusal> for KernelError {
    fn from(r: Refusal) -> Self {
        Self {
            status: r.status,
            message: r.message,
            in_reason: r.in_reason,
            traceback: None,
        }
    }
}

/// A `POST /api/kernels` body.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub name: Option<String>,
    /// The body's `env` (`None`: the key was absent).
    pub env: Option<Value>,
    /// The client's address, for the log (`EG_TRUST_XHEADERS`).
    pub client: Option<std::net::IpAddr>,
}

/// One running kernel.
pub struct Kernel {
    pub id: String,
    pub name: String,
    pub user: String,
    spec: Arc<LoadedSpec>,
    request: LaunchRequest,
    pub activity: Arc<Activity>,
    connections: AtomicUsize,
    process: tokio::sync::Mutex<Box<dyn KernelProcess>>,
    pub bridge: Bridge,
    /// Bumped whenever the process is replaced on purpose, so the old process's monitor stands
    /// down.
    generation: AtomicU64,
    stopping: AtomicBool,
    /// Serialises restarts and shutdown of this kernel.
    op: tokio::sync::Mutex<()>,
    restarts: Mutex<(u32, Instant)>,
    /// The gateway's own session id for messages it originates.
    session: String,
}

impl Kernel {
    pub fn model(&self) -> KernelModel {
        let (state, last) = self.activity.get();
        KernelModel {
            id: self.id.clone(),
            name: self.name.clone(),
            last_activity: humantime::format_rfc3339_micros(last).to_string(),
            execution_state: state,
            connections: self.connections.load(Ordering::Relaxed),
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a websocket in (`+1`) or out (`-1`).
    pub fn connected(&self, delta: isize) {
        if delta >= 0 {
            self.connections
                .fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.connections
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    fn gateway_message(&self, msg_type: &str, content: Value) -> gateway_core::Message {
        wire::new_message(
            msg_type,
            &uuid::Uuid::new_v4().to_string(),
            &self.session,
            &bridge::now_iso(),
            content,
        )
    }

    pub fn interrupt_mode_message(&self) -> bool {
        self.spec
            .spec
            .interrupt_mode
            .eq_ignore_ascii_case("message")
    }
}

#[derive(Default)]
struct Registry {
    kernels: HashMap<String, Arc<Kernel>>,
    /// Starts in flight: (kernel id, user).
    pending: Vec<(String, String)>,
}

/// Every kernel of the gateway.
pub struct KernelManager {
    registry: Mutex<Registry>,
    launchers: Launchers,
    store: Arc<Store>,
    settings: KernelSettings,
    metrics: Arc<Metrics>,
    gateway_env: BTreeMap<String, String>,
    gateway_user: String,
    /// Cancelled at shutdown: no new starts; monitors stand down.
    cancel: CancellationToken,
}

/// The gateway's launchers, by the kind of kernelspec they start.
#[derive(Clone)]
pub struct Launchers {
    pub local: Arc<dyn Launcher>,
    /// `None` when the gateway has no Kubernetes API configuration (in-cluster service account
    /// or `KUBECONFIG`).
    pub kubernetes: Option<Arc<dyn Launcher>>,
}

/// Which launcher a spec asks for, from `metadata.process_proxy.class_name` or
/// `metadata.kernel_provisioner.provisioner_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LauncherKind {
    Local,
    Kubernetes,
}

fn launcher_kind(spec: &LoadedSpec) -> Result<LauncherKind, String> {
    let md = &spec.spec.metadata;
    let class = md
        .get("process_proxy")
        .and_then(|p| p.get("class_name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let provisioner = md
        .get("kernel_provisioner")
        .and_then(|p| p.get("provisioner_name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if class.ends_with(".KubernetesProcessProxy") || provisioner == "kubernetes-provisioner" {
        return Ok(LauncherKind::Kubernetes);
    }
    let local_class = class.is_empty() || class.ends_with(".LocalProcessProxy");
    let local_provisioner = provisioner.is_empty() || provisioner == "local-provisioner";
    if local_class && local_provisioner {
        Ok(LauncherKind::Local)
    } else {
        let what = if local_class { provisioner } else { class };
        Err(format!(
            "kernelspec needs {what:?}, which this gateway does not launch: local kernels (no \
             process_proxy class_name, or LocalProcessProxy) and Kubernetes pods \
             (KubernetesProcessProxy, kubernetes-provisioner) are supported"
        ))
    }
}

impl KernelManager {
    pub fn new(
        launchers: Launchers,
        store: Arc<Store>,
        settings: KernelSettings,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let gateway_env: BTreeMap<String, String> = std::env::vars().collect();
        let gateway_user = process_user(&gateway_env);
        Arc::new(Self {
            registry: Mutex::default(),
            launchers,
            store,
            settings,
            metrics,
            gateway_env,
            gateway_user,
            cancel,
        })
    }

    pub fn settings(&self) -> &KernelSettings {
        &self.settings
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Kernel>> {
        self.registry().kernels.get(id).cloned()
    }

    fn existing(&self, id: &str) -> Result<Arc<Kernel>, KernelError> {
        self.get(id)
            .ok_or_else(|| KernelError::new(404, format!("Kernel does not exist: {id}")))
    }

    pub fn list(&self) -> Vec<Arc<Kernel>> {
        let mut all: Vec<Arc<Kernel>> = self.registry().kernels.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn publish_counts(&self) {
        let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
        for k in self.registry().kernels.values() {
            *by_state.entry(k.activity.get().0).or_default() += 1;
        }
        self.metrics.set_kernels(&by_state);
    }
}

/// The gateway's own user, as Python's `getpass.getuser()` finds it (upstream's default for a
/// request without `KERNEL_USERNAME`): `LOGNAME`, `USER`, `LNAME`, `USERNAME`, then the password
/// database's name for the process's uid, then the uid itself.
fn process_user(env: &BTreeMap<String, String>) -> String {
    if let Some(name) = ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .filter_map(|k| env.get(*k))
        .find(|v| !v.is_empty())
    {
        return name.clone();
    }
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| passwd_name(&passwd, uid))
        .unwrap_or_else(|| uid.to_string())
}

fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests;
