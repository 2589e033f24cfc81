//! The Kubernetes launcher's variables: upstream's names and defaults, plus the choice between
//! the native launcher and the spec's own launch script.

use clap::Args as ClapArgs;
use eg_common::config::{Checker, Setting, parse_bool, parse_whole};
use gateway_core::k8s::IdPolicy;

eg_common::settings! {
    /// `EG_*` variables of kernel pods.
    #[derive(Debug, Clone, ClapArgs)]
    pub struct KubeArgs {
        /// Namespace of the gateway; kernels start in it when EG_SHARED_NAMESPACE is true.
        namespace: "EG_NAMESPACE" default "default",

        /// Start every kernel pod in EG_NAMESPACE instead of a namespace of its own.
        shared_namespace: "EG_SHARED_NAMESPACE" default "False",

        /// ClusterRole bound (RoleBinding of the same name) in each kernel's own namespace.
        kernel_cluster_role: "EG_KERNEL_CLUSTER_ROLE" default "cluster-admin",

        /// Service account of kernel pods whose request names none (KERNEL_SERVICE_ACCOUNT_NAME).
        default_kernel_service_account_name:
            "EG_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME" default "default",

        /// Comma list of user ids a kernel pod may not run as (KERNEL_UID).
        prohibited_uids: "EG_PROHIBITED_UIDS" default "0",

        /// Comma list of group ids a kernel pod may not run as (KERNEL_GID).
        prohibited_gids: "EG_PROHIBITED_GIDS" default "0",

        /// Keep the client's KERNEL_WORKING_DIR for kernel pods (dropped otherwise).
        mirror_working_dirs: "EG_MIRROR_WORKING_DIRS" default "False",

        /// Binds an in-pod launcher tries per port within the kernel's port range.
        max_port_range_retries: "EG_MAX_PORT_RANGE_RETRIES" default "5",

        /// Kernel image of specs whose process_proxy config names none.
        kernel_image: "EG_KERNEL_IMAGE",

        /// Executor image of specs whose process_proxy config names none.
        kernel_executor_image: "EG_KERNEL_EXECUTOR_IMAGE",

        /// How kernelspecs of KubernetesProcessProxy start their pods: `native` (the gateway
        /// creates them from the spec's kernel-pod.yaml.j2, watching all kernel pods at once) or
        /// `argv` (the spec's own launch script runs, e.g. upstream's launch_kubernetes.py).
        kubernetes_launcher: "EG_KUBERNETES_LAUNCHER" default "native",
    }
}

/// Validated [`KubeArgs`].
#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub namespace: String,
    pub shared_namespace: bool,
    pub kernel_cluster_role: String,
    pub default_service_account: String,
    pub ids: IdPolicy,
    pub mirror_working_dirs: bool,
    pub max_port_range_retries: u32,
    pub kernel_image: Option<String>,
    pub kernel_executor_image: Option<String>,
    /// Run the spec's argv instead of creating pods natively.
    pub run_argv: bool,
}

fn non_empty(v: Option<&Setting>) -> Option<String> {
    v.map(|v| v.raw.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Checks every variable of [`KubeArgs`], recording each bad one.
pub fn check_kube(c: &mut Checker, args: &KubeArgs) -> KubeSettings {
    let shared_namespace = c.read(&args.shared_namespace, parse_bool);
    let mirror = c.read(&args.mirror_working_dirs, parse_bool);
    let retries = c.read(&args.max_port_range_retries, parse_whole::<u32>);
    let uids = c.read(&args.prohibited_uids, |raw| {
        IdPolicy::parse(Some(raw), None)
    });
    let gids = c.read(&args.prohibited_gids, |raw| {
        IdPolicy::parse(None, Some(raw))
    });
    let ids = match (uids, gids) {
        (Some(_), Some(_)) => IdPolicy::parse(
            Some(&args.prohibited_uids.raw),
            Some(&args.prohibited_gids.raw),
        )
        .unwrap_or_default(),
        _ => IdPolicy::default(),
    };
    let run_argv = c.read(&args.kubernetes_launcher, |raw| {
        match raw.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(false),
            "argv" => Ok(true),
            _ => Err("expected `native` or `argv`".to_owned()),
        }
    });
    let namespace = c.read(&args.namespace, |raw| {
        let raw = raw.trim();
        if raw.is_empty() {
            Err("expected a namespace name".to_owned())
        } else {
            Ok(raw.to_owned())
        }
    });
    KubeSettings {
        namespace: namespace.unwrap_or_else(|| "default".into()),
        shared_namespace: shared_namespace.unwrap_or(false),
        kernel_cluster_role: args.kernel_cluster_role.raw.trim().to_owned(),
        default_service_account: args
            .default_kernel_service_account_name
            .raw
            .trim()
            .to_owned(),
        ids,
        mirror_working_dirs: mirror.unwrap_or(false),
        max_port_range_retries: retries.unwrap_or(5),
        kernel_image: non_empty(args.kernel_image.as_ref()),
        kernel_executor_image: non_empty(args.kernel_executor_image.as_ref()),
        run_argv: run_argv.unwrap_or(false),
    }
}
