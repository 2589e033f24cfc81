//! How far a kernel pod got, read from its JSON (`GET`/`LIST`/watch objects): still waiting, on
//! a node, running with an IP, failed for a reason a user can act on, or ended.
//!
//! Upstream only looks at `status.phase` and so waits out the whole launch timeout for a pod
//! whose image cannot be pulled or that cannot be scheduled; these states are reported here as
//! failures so the start can answer at once with the reason.
//!
//! The kernel's connection payload may arrive before the pod is seen `Running` (the in-pod
//! launcher sends it before the kernel starts): it waits until [`classify`] reports
//! [`PodProgress::Running`], whose pod IP replaces the payload's `ip`.

use serde_json::Value;

/// Container waiting reasons that will not resolve without a change (image name, pull access,
/// missing Secret/ConfigMap, container configuration).
pub const FATAL_WAITING_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// A kernel pod's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodProgress {
    /// Not yet on a node (or no status yet, or phase `Unknown`).
    Pending,
    /// On a node, containers not running yet.
    Scheduled,
    /// Phase `Running` with a pod IP.
    Running {
        pod_ip: String,
        host_ip: Option<String>,
    },
    /// It will not start: `reason` is Kubernetes' (`ErrImagePull`, `Unschedulable`, ...),
    /// `message` its explanation (naming the container when it came from one).
    Failed { reason: String, message: String },
    /// Phase `Succeeded`: the kernel exited.
    Ended { phase: String },
}

impl PodProgress {
    /// Whether the pod still counts as alive for the kernel's liveness (upstream: phase
    /// `Pending` or `Running`).
    pub fn alive(&self) -> bool {
        matches!(self, Self::Pending | Self::Scheduled | Self::Running { .. })
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn container_statuses(status: &Value) -> impl Iterator<Item = &Value> {
    ["initContainerStatuses", "containerStatuses"]
        .into_iter()
        .filter_map(|k| status.get(k).and_then(Value::as_array))
        .flatten()
}

fn container_context(c: &Value, message: Option<&str>) -> String {
    let name = text(c, "name").unwrap_or("?");
    match message {
        Some(m) => format!("container '{name}': {m}"),
        None => format!("container '{name}'"),
    }
}

/// Classifies a Pod object.
pub fn classify(pod: &Value) -> PodProgress {
    let Some(status) = pod.get("status").filter(|s| s.is_object()) else {
        return PodProgress::Pending;
    };
    let phase = text(status, "phase").unwrap_or("");
    match phase {
        "Failed" => {
            let terminated = container_statuses(status).find_map(|c| {
                let t = c.get("state")?.get("terminated")?;
                Some((c, t))
            });
            let reason = text(status, "reason")
                .or_else(|| terminated.and_then(|(_, t)| text(t, "reason")))
                .unwrap_or("Failed")
                .to_owned();
            let message = match (text(status, "message"), terminated) {
                (Some(m), _) => m.to_owned(),
                (None, Some((c, t))) => {
                    let detail = match (
                        text(t, "message"),
                        t.get("exitCode").and_then(Value::as_i64),
                    ) {
                        (Some(m), _) => m.to_owned(),
                        (None, Some(code)) => format!("exited with code {code}"),
                        (None, None) => "terminated".to_owned(),
                    };
                    container_context(c, Some(&detail))
                }
                (None, None) => "the pod failed".to_owned(),
            };
            return PodProgress::Failed { reason, message };
        }
        "Succeeded" => {
            return PodProgress::Ended {
                phase: phase.to_owned(),
            };
        }
        _ => {}
    }
    for c in container_statuses(status) {
        let Some(waiting) = c.get("state").and_then(|s| s.get("waiting")) else {
            continue;
        };
        if let Some(reason) = text(waiting, "reason")
            && FATAL_WAITING_REASONS.contains(&reason)
        {
            return PodProgress::Failed {
                reason: reason.to_owned(),
                message: container_context(c, text(waiting, "message")),
            };
        }
    }
    let conditions = status.get("conditions").and_then(Value::as_array);
    let scheduled = conditions
        .into_iter()
        .flatten()
        .find(|c| text(c, "type") == Some("PodScheduled"));
    if let Some(c) = scheduled
        && text(c, "status") == Some("False")
        && text(c, "reason") == Some("Unschedulable")
    {
        return PodProgress::Failed {
            reason: "Unschedulable".into(),
            message: text(c, "message")
                .unwrap_or("no node fits the pod")
                .to_owned(),
        };
    }
    if phase == "Running"
        && let Some(ip) = text(status, "podIP")
    {
        return PodProgress::Running {
            pod_ip: ip.to_owned(),
            host_ip: text(status, "hostIP").map(str::to_owned),
        };
    }
    let on_node = phase == "Running"
        || scheduled.is_some_and(|c| text(c, "status") == Some("True"))
        || pod.get("spec").and_then(|s| text(s, "nodeName")).is_some();
    if on_node {
        PodProgress::Scheduled
    } else {
        PodProgress::Pending
    }
}

/// The text of a failed start, as a user reads it in the 500 answer.
pub fn failure_message(namespace: &str, pod: &str, reason: &str, message: &str) -> String {
    format!("Kernel pod '{pod}' in namespace '{namespace}' failed to start: {reason}: {message}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn running(ip: &str) -> PodProgress {
        PodProgress::Running {
            pod_ip: ip.into(),
            host_ip: Some("192.168.1.4".into()),
        }
    }

    fn failed(reason: &str, message: &str) -> PodProgress {
        PodProgress::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn classification_table() {
        let waiting = |reason: &str| {
            json!({"status": {"phase": "Pending", "containerStatuses": [{"name": "alice-1",
                "state": {"waiting": {"reason": reason, "message": "back-off pulling image \"nope:1\""}}}]}})
        };
        let cases = vec![
            (json!({}), PodProgress::Pending),
            (json!({"status": {}}), PodProgress::Pending),
            (
                json!({"status": {"phase": "Pending"}}),
                PodProgress::Pending,
            ),
            (
                json!({"status": {"phase": "Unknown"}}),
                PodProgress::Pending,
            ),
            (
                json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}),
                PodProgress::Scheduled,
            ),
            (
                json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}),
                PodProgress::Scheduled,
            ),
            (
                json!({"status": {"phase": "Pending", "containerStatuses": [{"name": "k",
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
                PodProgress::Pending,
            ),
            (
                json!({"status": {"phase": "Running"}}),
                PodProgress::Scheduled,
            ),
            (
                json!({"status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "192.168.1.4"}}),
                running("10.1.2.3"),
            ),
            (
                json!({"status": {"phase": "Running", "podIP": "10.1.2.3"}}),
                PodProgress::Running {
                    pod_ip: "10.1.2.3".into(),
                    host_ip: None,
                },
            ),
            (
                waiting("ErrImagePull"),
                failed(
                    "ErrImagePull",
                    "container 'alice-1': back-off pulling image \"nope:1\"",
                ),
            ),
            (
                waiting("ImagePullBackOff"),
                failed(
                    "ImagePullBackOff",
                    "container 'alice-1': back-off pulling image \"nope:1\"",
                ),
            ),
            (
                waiting("InvalidImageName"),
                failed(
                    "InvalidImageName",
                    "container 'alice-1': back-off pulling image \"nope:1\"",
                ),
            ),
            (
                waiting("CreateContainerConfigError"),
                failed(
                    "CreateContainerConfigError",
                    "container 'alice-1': back-off pulling image \"nope:1\"",
                ),
            ),
            (
                waiting("CreateContainerError"),
                failed(
                    "CreateContainerError",
                    "container 'alice-1': back-off pulling image \"nope:1\"",
                ),
            ),
            (
                json!({"status": {"phase": "Pending", "initContainerStatuses": [{"name": "init",
                    "state": {"waiting": {"reason": "ErrImagePull"}}}]}}),
                failed("ErrImagePull", "container 'init'"),
            ),
            (
                json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}}),
                failed(
                    "Unschedulable",
                    "0/3 nodes are available: 3 Insufficient memory.",
                ),
            ),
            (
                json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "SchedulerError"}]}}),
                PodProgress::Pending,
            ),
            (
                json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}}),
                failed("Evicted", "The node was low on resource: memory."),
            ),
            (
                json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "k",
                    "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}),
                failed("Error", "container 'k': exited with code 1"),
            ),
            (
                json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "k",
                    "state": {"terminated": {"reason": "OOMKilled", "message": "killed", "exitCode": 137}}}]}}),
                failed("OOMKilled", "container 'k': killed"),
            ),
            (
                json!({"status": {"phase": "Failed"}}),
                failed("Failed", "the pod failed"),
            ),
            (
                json!({"status": {"phase": "Succeeded"}}),
                PodProgress::Ended {
                    phase: "Succeeded".into(),
                },
            ),
        ];
        for (pod, expected) in cases {
            assert_eq!(classify(&pod), expected, "{pod}");
        }
    }

    #[test]
    fn liveness_and_message() {
        assert!(PodProgress::Pending.alive());
        assert!(running("1.2.3.4").alive());
        assert!(!failed("x", "y").alive());
        assert!(
            !PodProgress::Ended {
                phase: "Succeeded".into()
            }
            .alive()
        );
        assert_eq!(
            failure_message(
                "alice-1",
                "alice-1",
                "ErrImagePull",
                "container 'alice-1': no such image"
            ),
            "Kernel pod 'alice-1' in namespace 'alice-1' failed to start: ErrImagePull: container \
             'alice-1': no such image"
        );
    }
}
