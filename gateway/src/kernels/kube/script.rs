//! `EG_KUBERNETES_LAUNCHER=argv`: the kernelspec's own launch script (upstream's
//! `launch_kubernetes.py`, Spark's `run.sh`, a custom one) as a subprocess.

use tracing::info;

use super::Plan;
use crate::{
    kernels::launcher::{LaunchError, LaunchRequest},
    response::ResponseListener,
};

/// Runs the spec's `argv` (e.g. upstream's `launch_kubernetes.py`) with the launch's values
/// filled in and the pod's environment, its output going to the gateway's.
pub(super) fn spawn_script(
    req: &LaunchRequest,
    plan: &Plan,
    listener: &ResponseListener,
) -> Result<tokio::process::Child, LaunchError> {
    let port_range = req.port_range.to_string();
    let resource_dir = req.spec.dir.to_string_lossy().into_owned();
    let value_of = |name: &str| -> Option<String> {
        Some(match name {
            "kernel_id" => req.kernel_id.clone(),
            "response_address" => listener.response_address().to_owned(),
            "public_key" => listener.public_key().to_owned(),
            "port_range" => port_range.clone(),
            "spark_context_initialization_mode" => plan
                .pod_env
                .get("KERNEL_SPARK_CONTEXT_INIT_MODE")
                .cloned()
                .unwrap_or_else(|| "none".into()),
            "resource_dir" => resource_dir.clone(),
            _ => return None,
        })
    };
    let argv: Vec<String> = req
        .spec
        .spec
        .argv
        .iter()
        .map(|a| gateway_core::argv::substitute(a, &value_of))
        .collect();
    let (program, args) = argv.split_first().ok_or_else(|| {
        LaunchError::Failed(format!("kernelspec {} has an empty argv", req.spec_name))
    })?;
    info!(kernel_id = %req.kernel_id, program = %program, "running the kernelspec's launch script");
    tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(&plan.pod_env)
        .current_dir(&req.spec.dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LaunchError::Failed(format!("{program}: {e}")))
}

/// The launch script's exit, once; never for a launch without one (or after it was seen).
pub(super) async fn wait_script(
    script: &mut Option<tokio::process::Child>,
) -> Option<std::process::ExitStatus> {
    let Some(child) = script.as_mut() else {
        return std::future::pending().await;
    };
    let status = child.wait().await.ok();
    *script = None;
    status
}
