//! The Kubernetes launcher: kernel pods created natively from the spec's `kernel-pod.yaml.j2`
//! (or the built-in template), watched by one shared pod watch, connected through the response
//! handshake, interrupted and stopped through the in-pod launcher's comm port.
//!
//! A launch fails within seconds with the pod's own reason when it cannot start (image pull,
//! scheduling, container configuration, a failed container); whatever it created is removed.

pub mod cluster;
pub mod pods;
mod script;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use gateway_core::k8s::{
    self, Document, ImageDefaults, Kind, LauncherArgs, NamespacePlan, Placement, PodEnvInputs,
    PodProgress, TemplateVars,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, watch};
use tracing::{debug, info, warn};

use self::{
    cluster::{ApiError, Cluster},
    pods::{PodState, PodWatch},
    script::{spawn_script, wait_script},
};
use super::launcher::{KernelProcess, LaunchError, LaunchRequest, Launcher};
use crate::{
    bridge::ConnectionInfo,
    comm::{self, CommSettings},
    config::kube::KubeSettings,
    metrics::Metrics,
    response::{ResponseKey, ResponseListener, ResponseSettings, into_connection_info},
};

mod kernel;
pub use kernel::*;

/// The response listener, bound (and its RSA key made) at the first remote launch.
pub struct Handshake {
    settings: ResponseSettings,
    listener: OnceCell<Arc<ResponseListener>>,
}

impl Handshake {
    pub fn new(settings: ResponseSettings) -> Self {
        Self {
            settings,
            listener: OnceCell::new(),
        }
    }

    pub async fn listener(&self) -> Result<Arc<ResponseListener>, LaunchError> {
        self.listener
            .get_or_try_init(|| async {
                let key = tokio::task::spawn_blocking(ResponseKey::generate)
                    .await
                    .map_err(|e| LaunchError::Failed(format!("response key: {e}")))?
                    .map_err(|e| LaunchError::Failed(format!("response key: {e}")))?;
                let listener = ResponseListener::bind(&self.settings, Arc::new(key))
                    .await
                    .map_err(|e| LaunchError::Failed(format!("response listener: {e}")))?;
                info!(
                    address = listener.response_address(),
                    "response listener ready"
                );
                Ok(Arc::new(listener))
            })
            .await
            .cloned()
    }
}

/// Everything the gateway knows of one kernel pod, in one serialisable record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelRecord {
    pub kernel_id: String,
    pub pod_name: String,
    pub namespace: String,
    /// The namespace was made for this kernel and goes with it.
    pub owns_namespace: bool,
    pub pod_uid: String,
    pub pod_ip: String,
    pub comm_port: Option<u16>,
    pub connection: ConnectionInfo,
}

/// The Kubernetes launcher when the gateway has a Kubernetes API configuration (in-cluster
/// service account, or `KUBECONFIG`), with its pod watch started; `None` otherwise.
pub async fn from_environment(
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) -> Option<Arc<dyn Launcher>> {
    let client = match cluster::client(metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            info!(reason = %e, "no Kubernetes API: Kubernetes kernelspecs answer 501");
            return None;
        }
    };
    let settings = &config.kube;
    let watched = settings
        .shared_namespace
        .then_some(settings.namespace.as_str());
    let pods = PodWatch::start(client.clone(), watched, cancel);
    info!(
        namespace = watched.unwrap_or("(all)"),
        native = !settings.run_argv,
        "Kubernetes launcher ready"
    );
    Some(Arc::new(KubeLauncher::new(
        Cluster::new(client),
        pods,
        config,
        metrics,
    )))
}

/// Starts kernel pods.
pub struct KubeLauncher {
    cluster: Cluster,
    pods: PodWatch,
    handshake: Arc<Handshake>,
    settings: KubeSettings,
    comm: CommSettings,
    min_port_range_size: u32,
    impersonation: bool,
    gateway_env: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
}

/// What a launch creates, decided before anything is created.
struct Plan {
    kernel_id: String,
    /// The pod's environment (also the launch script's, when the spec's argv runs).
    pod_env: BTreeMap<String, String>,
    pod_name: String,
    namespace: NamespacePlan,
    service_account: String,
    documents: Vec<Document>,
}

fn api_failure(what: String, e: &ApiError) -> LaunchError {
    LaunchError::Failed(format!("{what}: {e}"))
}

fn pod_json(pod: &PodState) -> Option<(Value, String)> {
    let pod = pod.as_ref()?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    Some((serde_json::to_value(&**pod).ok()?, uid))
}

impl KubeLauncher {
    /// A launcher with the gateway's Kubernetes, response-address, comm-port and kernel
    /// settings, and its own process environment as the gateway environment kernels see.
    pub fn new(
        cluster: Cluster,
        pods: PodWatch,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cluster,
            pods,
            handshake: Arc::new(Handshake::new(config.response.clone())),
            settings: config.kube.clone(),
            comm: config.comm,
            min_port_range_size: config.kernels.min_port_range_size,
            impersonation: config.kernels.impersonation,
            gateway_env: std::env::vars().collect(),
            metrics,
        }
    }

    fn reject(&self, status: u16, message: String) -> LaunchError {
        self.metrics.record_launch_failure("Rejected");
        LaunchError::Rejected { status, message }
    }

    /// The pod's name, namespace, environment and rendered documents: no API call yet.
    fn plan(&self, req: &LaunchRequest, listener: &ResponseListener) -> Result<Plan, LaunchError> {
        let env = req.env.clone();
        let (pod_name, fallback) = k8s::naming::pod_name_decision(&env, &req.kernel_id);
        if let Some(why) = fallback {
            warn!(kernel_id = %req.kernel_id, pod = %pod_name, reason = ?why, "KERNEL_POD_NAME not used");
        }
        let service_account = k8s::service_account(&env, &self.settings.default_service_account);
        let shared = self
            .settings
            .shared_namespace
            .then_some(self.settings.namespace.as_str());
        let namespace = NamespacePlan::decide(&env, shared, &pod_name);
        let placement = Placement {
            pod_name: pod_name.clone(),
            namespace: namespace.clone(),
            service_account: service_account.clone(),
        };
        let config = req
            .spec
            .spec
            .metadata
            .get("process_proxy")
            .and_then(|p| p.get("config"));
        let config_str = |key: &str| config.and_then(|c| c.get(key)).and_then(Value::as_str);
        let port_range = req.port_range.to_string();
        let spec_dir_name = req
            .spec
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| req.spec_name.clone());
        let inputs = PodEnvInputs {
            kernel_id: &req.kernel_id,
            language: &req.spec.spec.language,
            spec_dir_name: &spec_dir_name,
            launcher: LauncherArgs {
                kernel_id: Some(&req.kernel_id),
                port_range: Some(&port_range),
                response_address: Some(listener.response_address()),
                public_key: Some(listener.public_key()),
                spark_context_init_mode: None,
                kernel_class_name: None,
            },
            min_port_range_size: self.min_port_range_size,
            max_port_range_retries: self.settings.max_port_range_retries,
            impersonation: self.impersonation,
            mirror_working_dirs: self.settings.mirror_working_dirs,
            gateway_env: &self.gateway_env,
            images: ImageDefaults {
                spec_image: config_str("image_name"),
                spec_executor_image: config_str("executor_image_name"),
                default_image: self.settings.kernel_image.as_deref(),
                default_executor_image: self.settings.kernel_executor_image.as_deref(),
            },
            ids: &self.settings.ids,
            placement: &placement,
        };
        let pod_env =
            k8s::pod_env(env, &inputs).map_err(|e| self.reject(e.status(), e.to_string()))?;
        let vars =
            TemplateVars::from_env(&pod_env).map_err(|e| self.reject(e.status(), e.to_string()))?;
        // With EG_KUBERNETES_LAUNCHER=argv the spec's script renders its own template.
        let mut documents = if self.settings.run_argv {
            Vec::new()
        } else {
            let template = template_source(&req.spec.dir).map_err(LaunchError::Failed)?;
            k8s::render_manifest(&template, &vars)
                .map_err(|e| self.reject(e.status(), e.to_string()))?
                .documents
        };
        for doc in &mut documents {
            if doc.kind == Kind::Pod {
                k8s::extend_container_env(&mut doc.body, &pod_env)
                    .map_err(|e| LaunchError::Failed(e.to_string()))?;
                ensure_kernel_labels(&mut doc.body, &req.kernel_id);
            }
        }
        Ok(Plan {
            kernel_id: req.kernel_id.clone(),
            pod_env,
            pod_name,
            namespace,
            service_account,
            documents,
        })
    }

    /// The kernel's own namespace and its RoleBinding (reused when a restart finds them).
    async fn create_namespace(
        &self,
        plan: &Plan,
        cleanup: &mut Cleanup,
    ) -> Result<(), LaunchError> {
        let NamespacePlan::PerKernel { name } = &plan.namespace else {
            return Ok(());
        };
        match self
            .cluster
            .create_namespace(&k8s::namespace_body(name, &plan.kernel_id))
            .await
        {
            Ok(()) => cleanup.delete_namespace = true,
            // A restart keeps the namespace; its RoleBinding is still there.
            Err(e) if e.is_conflict() => {
                cleanup.delete_namespace = true;
                return Ok(());
            }
            Err(e) => {
                self.metrics.record_launch_failure("ApiError");
                return Err(api_failure(
                    format!("Error occurred creating namespace '{name}'"),
                    &e,
                ));
            }
        }
        let binding = k8s::role_binding_body(
            name,
            &plan.kernel_id,
            &self.settings.kernel_cluster_role,
            &plan.service_account,
        );
        match self.cluster.create_role_binding(name, &binding).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => {
                self.metrics.record_launch_failure("ApiError");
                Err(api_failure(
                    format!("Error occurred creating role binding for namespace '{name}'"),
                    &e,
                ))
            }
        }
    }

    /// The documents, in order; Service and ConfigMap are owned by the pod. A pod of the same
    /// name still terminating (a restart) is waited for.
    async fn create_documents(
        &self,
        plan: &Plan,
        cleanup: &mut Cleanup,
        pod_rx: &mut watch::Receiver<PodState>,
        deadline: Instant,
    ) -> Result<String, LaunchError> {
        let ns = plan.namespace.name();
        let mut pod_uid = String::new();
        for doc in &plan.documents {
            let mut body = doc.body.clone();
            if matches!(doc.kind, Kind::Service | Kind::ConfigMap) && !pod_uid.is_empty() {
                body["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Pod", "name": plan.pod_name, "uid": pod_uid,
                }]);
            }
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let created = loop {
                match self
                    .cluster
                    .create_document(ns, doc.kind.as_str(), &body)
                    .await
                {
                    Err(e)
                        if e.is_conflict()
                            && doc.kind == Kind::Pod
                            && Instant::now() < deadline =>
                    {
                        debug!(kernel_id = %plan.kernel_id, pod = %name, "previous pod still terminating; waiting");
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            pod_rx.wait_for(Option::is_none),
                        )
                        .await;
                    }
                    other => break other,
                }
            };
            match created {
                Ok(obj) => {
                    if doc.kind == Kind::Pod {
                        pod_uid = obj.metadata.uid.unwrap_or_default();
                    }
                    cleanup.created.push((doc.kind, name));
                }
                Err(e) => {
                    self.metrics.record_launch_failure("ApiError");
                    return Err(api_failure(
                        format!(
                            "Error creating {} '{name}' in namespace '{ns}'",
                            doc.kind.as_str()
                        ),
                        &e,
                    ));
                }
            }
        }
        Ok(pod_uid)
    }

    fn failed(&self, plan: &Plan, reason: &str, message: &str) -> LaunchError {
        self.metrics.record_launch_failure(reason);
        LaunchError::Failed(k8s::failure_message(
            plan.namespace.name(),
            &plan.pod_name,
            reason,
            message,
        ))
    }

    /// Records a launch phase the first time it is reached.
    fn phase(&self, seen: &mut bool, phase: &'static str, started: Instant) {
        if !std::mem::replace(seen, true) {
            self.metrics
                .record_launch_phase(phase, started.elapsed().as_secs_f64());
        }
    }

    /// What the pod's current state means for a launch still waiting: `Ok(Some(ip))` once it
    /// runs, `Ok(None)` while it may still get there.
    fn progress(
        &self,
        plan: &Plan,
        uid: &str,
        state: &PodState,
        started: Instant,
        seen: &mut [bool; 2],
    ) -> Result<Option<String>, LaunchError> {
        let Some((pod, pod_uid)) = pod_json(state) else {
            return Ok(None);
        };
        if pod_uid != uid {
            return Ok(None); // a pod of an earlier run
        }
        match k8s::classify(&pod) {
            PodProgress::Pending => Ok(None),
            PodProgress::Scheduled => {
                self.phase(&mut seen[0], "scheduled", started);
                Ok(None)
            }
            PodProgress::Running { pod_ip, .. } => {
                self.phase(&mut seen[0], "scheduled", started);
                self.phase(&mut seen[1], "running", started);
                Ok(Some(pod_ip))
            }
            PodProgress::Failed { reason, message } => Err(self.failed(plan, &reason, &message)),
            PodProgress::Ended { phase } => Err(self.failed(
                plan,
                "PodFailed",
                &format!("the pod ended ({phase}) before its kernel sent its connection info"),
            )),
        }
    }
}

/// The spec's `scripts/kernel-pod.yaml.j2`, or the built-in template.
fn template_source(spec_dir: &Path) -> Result<String, String> {
    let path = spec_dir.join("scripts").join("kernel-pod.yaml.j2");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(k8s::BUILTIN_POD_TEMPLATE.to_owned())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The labels the pod watch finds kernel pods by, added where a custom template left them out.
fn ensure_kernel_labels(pod: &mut Value, kernel_id: &str) {
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(labels) = labels.as_object_mut() {
        for (k, v) in [
            ("app", "enterprise-gateway"),
            ("component", "kernel"),
            ("kernel_id", kernel_id),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
}

#[async_trait]
impl Launcher for KubeLauncher {
    async fn launch(&self, req: &LaunchRequest) -> Result<Box<dyn KernelProcess>, LaunchError> {
        let started = Instant::now();
        let deadline = started + req.launch_timeout;
        let listener = self.handshake.listener().await?;
        let mut waiter = listener.register(&req.kernel_id);
        let plan = self.plan(req, &listener)?;
        let mut pod_rx = self.pods.subscribe(&req.kernel_id);
        let mut cleanup = Cleanup {
            cluster: self.cluster.clone(),
            namespace: plan.namespace.name().to_owned(),
            delete_namespace: false,
            created: Vec::new(),
            armed: true,
        };
        self.create_namespace(&plan, &mut cleanup).await?;
        let owns_namespace = cleanup.delete_namespace;
        let mut script = None;
        let mut pod_uid = if self.settings.run_argv {
            script = Some(spawn_script(req, &plan, &listener)?);
            String::new()
        } else {
            let uid = self
                .create_documents(&plan, &mut cleanup, &mut pod_rx, deadline)
                .await?;
            info!(kernel_id = %plan.kernel_id, namespace = plan.namespace.name(), pod = %plan.pod_name, "kernel pod created");
            uid
        };
        let mut pod_name = plan.pod_name.clone();

        // Running, with an IP.
        let mut seen = [false; 2];
        let pod_ip = loop {
            let state = pod_rx.borrow_and_update().clone();
            if pod_uid.is_empty()
                && let Some(pod) = state.as_ref()
            {
                // The launch script's pod, found by its kernel_id label.
                pod_uid = pod.metadata.uid.clone().unwrap_or_default();
                pod_name = pod.metadata.name.clone().unwrap_or_default();
                cleanup.created.push((Kind::Pod, pod_name.clone()));
                info!(kernel_id = %plan.kernel_id, pod = %pod_name, "the launch script's pod appeared");
            }
            if let Some(ip) = self.progress(&plan, &pod_uid, &state, started, &mut seen)? {
                break ip;
            }
            tokio::select! {
                r = pod_rx.changed() => if r.is_err() {
                    return Err(LaunchError::Failed("the kernel pod watch stopped".into()));
                },
                status = wait_script(&mut script) => {
                    if !status.is_some_and(|s| s.success()) && pod_uid.is_empty() {
                        self.metrics.record_launch_failure("PodFailed");
                        return Err(LaunchError::Failed(format!(
                            "the kernelspec's launch script exited with {status:?} before a pod \
                             appeared. Check the gateway log for more information."
                        )));
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.metrics.record_launch_failure("Timeout");
                    return Err(LaunchError::Timeout(req.launch_timeout));
                }
            }
        };
        // The connection info, unless the pod fails first.
        let payload = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                r = waiter.recv(remaining) => match r {
                    Ok(p) => break p,
                    Err(crate::response::WaitError::Timeout(_)) => {
                        self.metrics.record_launch_failure("Timeout");
                        return Err(LaunchError::Timeout(req.launch_timeout));
                    }
                    Err(e) => return Err(LaunchError::Failed(e.to_string())),
                },
                r = pod_rx.changed() => {
                    if r.is_err() {
                        return Err(LaunchError::Failed("the kernel pod watch stopped".into()));
                    }
                    let state = pod_rx.borrow_and_update().clone();
                    if state.is_none() {
                        return Err(self.failed(&plan, "PodFailed", "the pod was deleted while the kernel started"));
                    }
                    self.progress(&plan, &pod_uid, &state, started, &mut seen)?;
                }
            }
        };
        self.metrics
            .record_launch_phase("handshake", started.elapsed().as_secs_f64());
        let ip: IpAddr = pod_ip
            .parse()
            .map_err(|_| LaunchError::Failed(format!("pod IP {pod_ip:?} is not an address")))?;
        let comm_port = payload.comm_port;
        let connection = into_connection_info(payload, ip);
        cleanup.armed = false;
        if let Some(mut child) = script {
            // A launch script still running is left to finish, and reaped.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        let record = KernelRecord {
            kernel_id: plan.kernel_id.clone(),
            pod_name,
            namespace: plan.namespace.name().to_owned(),
            owns_namespace,
            pod_uid,
            pod_ip,
            comm_port,
            connection,
        };
        Ok(Box::new(KubeKernel::start(
            record,
            self.cluster.clone(),
            pod_rx,
            self.comm,
        )))
    }
}
