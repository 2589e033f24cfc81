//! Running kernels: the registry, starts (policy, limits, launch), restarts (asked for and
//! automatic), interrupts, shutdown, culling, and the drain at gateway shutdown.

pub mod kube;
pub mod launcher;
pub mod local;

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
    zmq: zmq::Context,
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
            zmq: zmq::Context::new(),
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

    /// `POST /api/kernels`.
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<Arc<Kernel>, KernelError> {
        if self.cancel.is_cancelled() {
            return Err(KernelError::new(503, "The gateway is shutting down"));
        }
        let s = &self.settings;
        if let Some(max) = s.max_kernels
            && self.registry().kernels.len() >= max
        {
            return Err(KernelError::new(403, "Resource Limit"));
        }
        let mut env = policy::kernel_env(
            req.env.as_ref(),
            &s.client_envs,
            &s.inherited_envs,
            &self.gateway_env,
        )?;
        let user = policy::username(&env, &self.gateway_user);
        let env_given = req.env.is_some();
        if env_given {
            env.insert("KERNEL_USERNAME".into(), user.clone());
        }
        let name = req
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| s.default_kernel_name.clone())
            .to_lowercase();
        let launch_timeout = match env.get("KERNEL_LAUNCH_TIMEOUT") {
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
                _ => {
                    return Err(KernelError::new(
                        400,
                        format!("KERNEL_LAUNCH_TIMEOUT {raw:?}: expected a number of seconds"),
                    ));
                }
            },
            None => s.launch_timeout,
        };
        let kernel_id = match env.get("KERNEL_ID") {
            Some(id) if !policy::valid_kernel_id(id) => {
                return Err(KernelError::new(
                    400,
                    format!("KERNEL_ID {id:?} is not a lower-case UUID version 4"),
                ));
            }
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let Some(spec) = self.store.current().specs.get(&name).cloned() else {
            let mut e = KernelError::new(500, format!("No such kernel named {name}"));
            e.traceback = Some(format!(
                "Traceback (most recent call last):\njupyter_client.kernelspec.NoSuchKernel: {name}\n"
            ));
            return Err(e);
        };
        self.launcher_for(&spec, &name)?;
        let spec_config = spec
            .spec
            .metadata
            .get("process_proxy")
            .and_then(|p| p.get("config"))
            .and_then(Value::as_object);
        policy::authorize(
            &user,
            &spec.spec.display_name,
            spec_config,
            &s.authorized_users,
            &s.unauthorized_users,
        )?;
        let port_range = match spec_config
            .and_then(|c| c.get("port_range"))
            .and_then(Value::as_str)
        {
            Some(raw) => PortRange::parse(raw, s.min_port_range_size)
                .map_err(|m| KernelError::new(500, format!("{name}: {m}")))?,
            None => s.port_range,
        };
        {
            let mut reg = self.registry();
            let active = reg.kernels.len() + reg.pending.len();
            let users = reg.kernels.values().filter(|k| k.user == user).count()
                + reg.pending.iter().filter(|(_, u)| *u == user).count();
            policy::check_limits(s.max_kernels, s.max_kernels_per_user, active, &user, users)?;
            if reg.kernels.contains_key(&kernel_id)
                || reg.pending.iter().any(|(id, _)| *id == kernel_id)
            {
                return Err(KernelError::new(
                    409,
                    format!("Kernel already exists: {kernel_id}"),
                ));
            }
            reg.pending.push((kernel_id.clone(), user.clone()));
        }
        let started = Instant::now();
        let result = self
            .launch_new(
                &kernel_id,
                &name,
                &user,
                spec,
                env,
                port_range,
                launch_timeout,
            )
            .await;
        self.registry().pending.retain(|(id, _)| *id != kernel_id);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(kernel) => {
                self.metrics.record_start("ok", seconds);
                self.registry()
                    .kernels
                    .insert(kernel_id.clone(), kernel.clone());
                self.publish_counts();
                Ok(kernel)
            }
            Err(e) => {
                self.metrics.record_start("error", seconds);
                Err(e)
            }
        }
    }

    /// The kernel's environment: the spec's `env` (with `${VAR}` filled from the request) under
    /// the request's, under the gateway's own values.
    fn compose_env(
        &self,
        spec: &LoadedSpec,
        request_env: BTreeMap<String, String>,
        kernel_id: &str,
        user: &str,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = spec
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), policy::fill_template(v, &request_env)))
            .collect();
        env.extend(request_env);
        env.insert("KERNEL_GATEWAY".into(), "1".into());
        env.insert("KERNEL_ID".into(), kernel_id.to_owned());
        env.insert("KERNEL_USERNAME".into(), user.to_owned());
        env.insert(
            "EG_IMPERSONATION_ENABLED".into(),
            if self.settings.impersonation {
                "True"
            } else {
                "False"
            }
            .into(),
        );
        for name in policy::WITHHELD {
            env.remove(name);
        }
        env
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch_new(
        self: &Arc<Self>,
        kernel_id: &str,
        name: &str,
        user: &str,
        spec: Arc<LoadedSpec>,
        request_env: BTreeMap<String, String>,
        port_range: PortRange,
        launch_timeout: Duration,
    ) -> Result<Arc<Kernel>, KernelError> {
        let env = self.compose_env(&spec, request_env, kernel_id, user);
        let request = LaunchRequest {
            kernel_id: kernel_id.to_owned(),
            spec_name: name.to_owned(),
            spec: spec.clone(),
            env,
            port_range,
            launch_timeout,
        };
        let process = self.launch(&request).await?;
        let activity = Arc::new(Activity::new("starting"));
        let bridge = match Bridge::start(
            &self.zmq,
            kernel_id,
            process.connection().clone(),
            self.settings.bridge,
            activity.clone(),
            self.metrics.clone(),
        ) {
            Ok(b) => b,
            Err(e) => {
                process.terminate(Duration::from_secs(1)).await;
                process.cleanup();
                return Err(KernelError::new(500, format!("kernel bridge: {e}")));
            }
        };
        info!(kernel_id, kernelspec = name, user, process = %process.describe(), "kernel started");
        let exited = process.exited();
        let kernel = Arc::new(Kernel {
            id: kernel_id.to_owned(),
            name: name.to_owned(),
            user: user.to_owned(),
            spec,
            request,
            activity,
            connections: AtomicUsize::new(0),
            process: tokio::sync::Mutex::new(process),
            bridge,
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            op: tokio::sync::Mutex::new(()),
            restarts: Mutex::new((0, Instant::now())),
            session: uuid::Uuid::new_v4().to_string(),
        });
        self.spawn_monitor(&kernel, exited);
        Ok(kernel)
    }

    /// The launcher of a spec's kind; 501 for kinds this gateway cannot start here.
    fn launcher_for(
        &self,
        spec: &LoadedSpec,
        name: &str,
    ) -> Result<Arc<dyn Launcher>, KernelError> {
        match launcher_kind(spec).map_err(|m| KernelError::new(501, format!("{name}: {m}")))? {
            LauncherKind::Local => Ok(self.launchers.local.clone()),
            LauncherKind::Kubernetes => self.launchers.kubernetes.clone().ok_or_else(|| {
                KernelError::new(
                    501,
                    format!(
                        "{name}: kernelspec starts Kubernetes pods, but the gateway has no \
                         Kubernetes API configuration (in-cluster service account or KUBECONFIG)"
                    ),
                )
            }),
        }
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Box<dyn KernelProcess>, KernelError> {
        let launcher = self.launcher_for(&request.spec, &request.spec_name)?;
        let timed_out = || {
            KernelError::new(
                500,
                format!(
                    "KernelID: '{}' launch timeout due to: Waited too long ({:.1}s) to get connection file",
                    request.kernel_id,
                    request.launch_timeout.as_secs_f64()
                ),
            )
        };
        // Launchers keep their own deadline (and clean up after it); this one is the backstop.
        let backstop = request.launch_timeout + Duration::from_secs(5);
        match tokio::time::timeout(backstop, launcher.launch(request)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(LaunchError::Unsupported(m))) => Err(KernelError::new(501, m)),
            Ok(Err(LaunchError::Rejected { status, message })) => {
                Err(KernelError::new(status, message))
            }
            Ok(Err(LaunchError::Timeout(_))) | Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(KernelError::new(
                500,
                format!(
                    "Error occurred during launch of KernelID: {}: {e}",
                    request.kernel_id
                ),
            )),
        }
    }

    /// Watches the current process; an unexpected end restarts the kernel (upstream's limits),
    /// or shuts it down when no websocket is connected.
    fn spawn_monitor(
        self: &Arc<Self>,
        kernel: &Arc<Kernel>,
        mut exited: tokio::sync::watch::Receiver<bool>,
    ) {
        let generation = kernel.generation.load(Ordering::SeqCst);
        let manager = self.clone();
        let kernel = kernel.clone();
        let monitor: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                tokio::select! {
                    _ = exited.wait_for(|e| *e) => {}
                    () = manager.cancel.cancelled() => return,
                }
                if kernel.stopping.load(Ordering::SeqCst)
                    || kernel.generation.load(Ordering::SeqCst) != generation
                    || manager.cancel.is_cancelled()
                {
                    return;
                }
                manager.kernel_died(&kernel).await;
            });
        tokio::spawn(monitor);
    }

    async fn kernel_died(self: &Arc<Self>, kernel: &Arc<Kernel>) {
        if kernel.connections() == 0 {
            info!(kernel_id = %kernel.id, "kernel ended with no client connected; removing it");
            self.metrics.record_auto_restart("shutdown");
            let _ = self.shutdown(&kernel.id).await;
            return;
        }
        let attempt = {
            let mut r = kernel.restarts.lock().unwrap_or_else(|e| e.into_inner());
            // A kernel that ran for a while before dying starts a fresh count.
            if r.1.elapsed() > Duration::from_secs(30) {
                r.0 = 0;
            }
            r.0 += 1;
            r.1 = Instant::now();
            r.0
        };
        if attempt > self.settings.restart_limit {
            warn!(kernel_id = %kernel.id, restarts = attempt - 1, "kernel keeps dying; giving up");
            self.mark_dead(kernel);
            self.publish_counts();
            return;
        }
        warn!(kernel_id = %kernel.id, attempt, "kernel died; restarting it");
        kernel.bridge.pause();
        kernel
            .bridge
            .notify(bridge::status_notice(&kernel.session, "restarting"));
        kernel.activity.set_state("restarting");
        match self.relaunch(kernel).await {
            Ok(()) => self.metrics.record_auto_restart("restarted"),
            Err(e) => {
                warn!(kernel_id = %kernel.id, error = %e, "automatic restart failed");
                self.mark_dead(kernel);
            }
        }
        self.publish_counts();
    }

    /// Gives up on a kernel that keeps dying: clients are told `dead`, and the culler removes it.
    fn mark_dead(&self, kernel: &Kernel) {
        kernel.activity.set_state("dead");
        kernel
            .bridge
            .notify(bridge::status_notice(&kernel.session, "dead"));
        self.metrics.record_auto_restart("dead");
    }

    /// Replaces the kernel's process with a new one (new ports, new key) and points the bridge at
    /// it. The old process is ended first.
    async fn relaunch(self: &Arc<Self>, kernel: &Arc<Kernel>) -> Result<(), KernelError> {
        let _op = kernel.op.lock().await;
        if kernel.stopping.load(Ordering::SeqCst) {
            return Err(KernelError::new(404, "kernel is shutting down"));
        }
        kernel.generation.fetch_add(1, Ordering::SeqCst);
        let mut process = kernel.process.lock().await;
        process.keep_for_restart();
        process.terminate(Duration::from_secs(2)).await;
        process.cleanup();
        let new = self.launch(&kernel.request).await?;
        kernel.bridge.reconnect(new.connection().clone());
        info!(kernel_id = %kernel.id, process = %new.describe(), "kernel restarted");
        let exited = new.exited();
        *process = new;
        drop(process);
        kernel.activity.set_state("starting");
        self.spawn_monitor(kernel, exited);
        Ok(())
    }

    /// `POST /api/kernels/{id}/restart`: `shutdown_request` with `restart: true`, then a new
    /// process; returns once the new kernel answers (bounded by the kernel-info timeout).
    pub async fn restart(self: &Arc<Self>, id: &str) -> Result<Arc<Kernel>, KernelError> {
        let kernel = self.existing(id)?;
        kernel.bridge.pause();
        // The process is about to end on purpose: its monitor must not take that for a death.
        kernel.generation.fetch_add(1, Ordering::SeqCst);
        kernel.bridge.send_gateway(
            Channel::Control,
            kernel.gateway_message("shutdown_request", serde_json::json!({"restart": true})),
        );
        {
            let mut exited = kernel.process.lock().await.exited();
            let _ =
                tokio::time::timeout(self.settings.shutdown_wait, exited.wait_for(|e| *e)).await;
        }
        self.relaunch(&kernel).await.map_err(|e| {
            let mut err = KernelError::new(500, "Exception restarting kernel");
            err.traceback = Some(e.message);
            err
        })?;
        let _ = tokio::time::timeout(
            self.settings.bridge.kernel_info_timeout,
            kernel.bridge.wait_ready(),
        )
        .await;
        self.publish_counts();
        Ok(kernel)
    }

    /// `POST /api/kernels/{id}/interrupt`: `interrupt_request` on control for
    /// `interrupt_mode: message`, otherwise SIGINT (or the spec's `EG_ALTERNATE_SIGINT`) to the
    /// kernel's process group.
    pub async fn interrupt(&self, id: &str) -> Result<(), KernelError> {
        let kernel = self.existing(id)?;
        if kernel.interrupt_mode_message() {
            kernel.bridge.send_gateway(
                Channel::Control,
                kernel.gateway_message("interrupt_request", serde_json::json!({})),
            );
            return Ok(());
        }
        let signum = kernel
            .spec
            .spec
            .env
            .get("EG_ALTERNATE_SIGINT")
            .and_then(|name| signal_number(name))
            .unwrap_or(2);
        kernel
            .process
            .lock()
            .await
            .signal(signum)
            .await
            .map_err(|e| KernelError::new(500, format!("Interrupting kernel {id}: {e}")))
    }

    /// `DELETE /api/kernels/{id}`, culling and gateway shutdown: `shutdown_request`, a wait, then
    /// termination; the kernel is forgotten.
    pub async fn shutdown(&self, id: &str) -> Result<(), KernelError> {
        let kernel = self.existing(id)?;
        if kernel.stopping.swap(true, Ordering::SeqCst) {
            // Someone else is already ending it; wait for them.
            let _op = kernel.op.lock().await;
            return Ok(());
        }
        let _op = kernel.op.lock().await;
        kernel.bridge.send_gateway(
            Channel::Control,
            kernel.gateway_message("shutdown_request", serde_json::json!({"restart": false})),
        );
        let process = kernel.process.lock().await;
        let mut exited = process.exited();
        if tokio::time::timeout(self.settings.shutdown_wait, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            info!(kernel_id = %id, "kernel did not exit after shutdown_request; terminating it");
        }
        process.terminate(Duration::from_secs(2)).await;
        process.cleanup();
        drop(process);
        self.registry().kernels.remove(id);
        kernel.activity.set_state("dead");
        kernel.bridge.stop();
        info!(kernel_id = %id, "kernel shut down");
        self.publish_counts();
        Ok(())
    }

    /// Ends every kernel (gateway shutdown), all at once.
    pub async fn shutdown_all(&self) {
        let ids: Vec<String> = self.registry().kernels.keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        info!(kernels = ids.len(), "shutting down every kernel");
        let all = ids.iter().map(|id| self.shutdown(id));
        futures_util::future::join_all(all).await;
    }

    /// One pass of the culler: kernels idle past the timeout (not busy; not connected unless
    /// `EG_CULL_CONNECTED`), and dead ones.
    pub async fn cull_once(&self) {
        let timeout = self.settings.cull_idle_timeout;
        let now = SystemTime::now();
        let victims: Vec<(String, &'static str)> = self
            .list()
            .into_iter()
            .filter_map(|k| {
                let (state, last) = k.activity.get();
                if state == "dead" {
                    return Some((k.id.clone(), "dead"));
                }
                let idle = now.duration_since(last).unwrap_or_default();
                (!timeout.is_zero()
                    && idle > timeout
                    && state != "busy"
                    && (self.settings.cull_connected || k.connections() == 0))
                    .then(|| (k.id.clone(), "idle"))
            })
            .collect();
        for (id, why) in victims {
            info!(kernel_id = %id, reason = why, "culling kernel");
            self.metrics.record_cull(why);
            let _ = self.shutdown(&id).await;
        }
    }

    /// Runs the culler until shutdown.
    pub async fn run_culler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.cull_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.cull_once().await,
                () = self.cancel.cancelled() => return,
            }
        }
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

/// A signal name as `EG_ALTERNATE_SIGINT` gives it (`SIGUSR2`, `USR2`) -> its number here.
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "INT" => 2,
        "HUP" => 1,
        "QUIT" => 3,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        _ => return name.parse().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_as_getpass_finds_them() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(process_user(&env(&[("USER", "u"), ("LOGNAME", "l")])), "l");
        assert_eq!(process_user(&env(&[("LOGNAME", ""), ("USER", "u")])), "u");
        let passwd = "root:x:0:0:root:/root:/bin/sh\njovyan:x:1000:100::/home/jovyan:/bin/bash\n";
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("jovyan"));
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 7), None);
    }

    #[test]
    fn alternate_sigint_names() {
        assert_eq!(signal_number("SIGUSR2"), Some(12));
        assert_eq!(signal_number("usr1"), Some(10));
        assert_eq!(signal_number("2"), Some(2));
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
