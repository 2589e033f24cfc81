//! The Kubernetes launcher's variables: upstream's names and defaults, plus the choice between
//! the native launcher and the spec's own launch script.

use clap::Args as ClapArgs;
use eg_common::config::{Checker, parse_bool};
use gateway_core::k8s::IdPolicy;

/// `EG_*` variables of kernel pods.
#[derive(Debug, Clone, ClapArgs)]
pub struct KubeArgs {
    /// Namespace of the gateway; kernels start in it when EG_SHARED_NAMESPACE is true.
    #[arg(long = "namespace", env = "EG_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Start every kernel pod in EG_NAMESPACE instead of a namespace of its own.
    #[arg(long, env = "EG_SHARED_NAMESPACE", default_value = "False")]
    pub shared_namespace: String,

    /// ClusterRole bound (RoleBinding of the same name) in each kernel's own namespace.
    #[arg(long, env = "EG_KERNEL_CLUSTER_ROLE", default_value = "cluster-admin")]
    pub kernel_cluster_role: String,

    /// Service account of kernel pods whose request names none (KERNEL_SERVICE_ACCOUNT_NAME).
    #[arg(
        long,
        env = "EG_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME",
        default_value = "default"
    )]
    pub default_kernel_service_account_name: String,

    /// Comma list of user ids a kernel pod may not run as (KERNEL_UID).
    #[arg(long, env = "EG_PROHIBITED_UIDS", default_value = "0")]
    pub prohibited_uids: String,

    /// Comma list of group ids a kernel pod may not run as (KERNEL_GID).
    #[arg(long, env = "EG_PROHIBITED_GIDS", default_value = "0")]
    pub prohibited_gids: String,

    /// Keep the client's KERNEL_WORKING_DIR for kernel pods (dropped otherwise).
    #[arg(long, env = "EG_MIRROR_WORKING_DIRS", default_value = "False")]
    pub mirror_working_dirs: String,

    /// Binds an in-pod launcher tries per port within the kernel's port range.
    #[arg(long, env = "EG_MAX_PORT_RANGE_RETRIES", default_value = "5")]
    pub max_port_range_retries: String,

    /// Kernel image of specs whose process_proxy config names none.
    #[arg(long, env = "EG_KERNEL_IMAGE")]
    pub kernel_image: Option<String>,

    /// Executor image of specs whose process_proxy config names none.
    #[arg(long, env = "EG_KERNEL_EXECUTOR_IMAGE")]
    pub kernel_executor_image: Option<String>,

    /// How kernelspecs of KubernetesProcessProxy start their pods: `native` (the gateway creates
    /// them from the spec's kernel-pod.yaml.j2, watching all kernel pods at once) or `argv` (the
    /// spec's own launch script runs, e.g. upstream's launch_kubernetes.py).
    #[arg(long, env = "EG_KUBERNETES_LAUNCHER", default_value = "native")]
    pub kubernetes_launcher: String,
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

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Checks every variable of [`KubeArgs`], recording each bad one.
pub fn check_kube(c: &mut Checker, args: &KubeArgs) -> KubeSettings {
    let shared_namespace = c.parse("EG_SHARED_NAMESPACE", &args.shared_namespace, parse_bool);
    let mirror = c.parse(
        "EG_MIRROR_WORKING_DIRS",
        &args.mirror_working_dirs,
        parse_bool,
    );
    let retries = c.parse(
        "EG_MAX_PORT_RANGE_RETRIES",
        &args.max_port_range_retries,
        |raw| {
            raw.trim()
                .parse::<u32>()
                .map_err(|_| "expected a whole number".to_owned())
        },
    );
    let uids = c.parse("EG_PROHIBITED_UIDS", &args.prohibited_uids, |raw| {
        IdPolicy::parse(Some(raw), None)
    });
    let gids = c.parse("EG_PROHIBITED_GIDS", &args.prohibited_gids, |raw| {
        IdPolicy::parse(None, Some(raw))
    });
    let ids = match (uids, gids) {
        (Some(_), Some(_)) => {
            IdPolicy::parse(Some(&args.prohibited_uids), Some(&args.prohibited_gids))
                .unwrap_or_default()
        }
        _ => IdPolicy::default(),
    };
    let run_argv = c.parse(
        "EG_KUBERNETES_LAUNCHER",
        &args.kubernetes_launcher,
        |raw| match raw.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(false),
            "argv" => Ok(true),
            _ => Err("expected `native` or `argv`".to_owned()),
        },
    );
    let namespace = c.parse("EG_NAMESPACE", &args.namespace, |raw| {
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
        kernel_cluster_role: args.kernel_cluster_role.trim().to_owned(),
        default_service_account: args.default_kernel_service_account_name.trim().to_owned(),
        ids,
        mirror_working_dirs: mirror.unwrap_or(false),
        max_port_range_retries: retries.unwrap_or(5),
        kernel_image: non_empty(&args.kernel_image),
        kernel_executor_image: non_empty(&args.kernel_executor_image),
        run_argv: run_argv.unwrap_or(false),
    }
}
