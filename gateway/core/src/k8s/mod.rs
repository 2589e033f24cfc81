//! The pure core of the Kubernetes launcher: everything upstream's `KubernetesProcessProxy` and
//! `launch_kubernetes.py` decide before and after talking to the API server, without the
//! talking.
//!
//! - [`naming`]: the pod's name (shortened to a DNS label), its namespace plan, the per-kernel
//!   `Namespace` and `RoleBinding` bodies, the service account, UID/GID checks.
//! - [`env`](mod@env): the pod's container environment, and its addition to the Pod document.
//! - [`template`]: the kernel-pod template rendered as Jinja2 renders it, the built-in
//!   template, the manifest's documents, and the structure check that keeps values from
//!   injecting YAML.
//! - [`status`]: a pod's progress (pending, scheduled, running with its IP, failed with a
//!   reason, ended) from its JSON.
//!
//! A launch goes: [`pod_name`] and [`NamespacePlan::decide`] on the gateway's kernel env,
//! [`pod_env`], [`TemplateVars::from_env`] on its result, [`render_manifest`] with the spec's
//! template (or [`BUILTIN_POD_TEMPLATE`]), then [`extend_container_env`] on the Pod document.

pub mod env;
pub mod naming;
mod python;
mod pyyaml;
pub mod status;
pub mod template;
#[cfg(test)]
mod test_support;

pub use env::{
    ContainerEnvError, ImageDefaults, LauncherArgs, Placement, PodEnvError, PodEnvInputs,
    extend_container_env, pod_env,
};
pub use naming::{
    IdError, IdKind, IdPolicy, NamespacePlan, PodNameFallback, namespace_body, pod_name,
    pod_name_decision, role_binding_body, service_account,
};
pub use status::{PodProgress, classify, failure_message};
pub use template::{
    BUILTIN_POD_TEMPLATE, Document, Kind, Manifest, TemplateError, TemplateVars, check_structure,
    documents, render, render_manifest,
};
