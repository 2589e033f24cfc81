//! Where a kernel pod goes and who it runs as: its name, its namespace (and the RoleBinding of a
//! per-kernel namespace), its service account, and the UID/GID rules.

use std::{collections::BTreeMap, sync::LazyLock};

use regex::Regex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::python::PyInt;

/// Longest DNS label: the pod name is also the container name and the per-kernel namespace.
pub const MAX_NAME_LEN: usize = 63;

static POD_NAME_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{\s*([a-zA-Z][a-zA-Z0-9_]*)\s*\}\}").expect("the pattern compiles")
});

/// Why a `KERNEL_POD_NAME` template was not used (upstream then falls back to
/// `<KERNEL_USERNAME>-<kernel id>` and logs a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNameFallback {
    /// `{{`…`}}` left after substitution: filters, expressions, attribute access.
    UnsupportedExpression,
    /// Names referenced that are neither a `KERNEL_*` variable nor `kernel_id`.
    MissingVariables(Vec<String>),
}

/// The kernel pod's name, as upstream's `KubernetesProcessProxy` decides it.
///
/// `env` is the kernel's environment as the gateway composed it (before the launcher's
/// additions). Without `KERNEL_POD_NAME` the name is `<KERNEL_USERNAME>-<kernel_id>`. A value
/// holding both `{{` and `}}` is a template: `{{ name }}` is replaced by the variable of that
/// lower-cased `KERNEL_*` name (or `kernel_id`); anything else makes it fall back. Any other
/// value is used verbatim. The result is lower-cased, every run of characters outside
/// `[0-9a-z]` becomes one `-`, and leading and trailing `-` go.
///
/// **Deliberate difference from upstream:** a name longer than [`MAX_NAME_LEN`] is shortened to
/// `<first 54 characters, trailing '-' trimmed>-<first 8 hex digits of sha256(full name)>`.
/// Upstream keeps the long name, so creating the per-kernel namespace (and the pod, whose
/// container carries the same name) fails and the start answers 500.
pub fn pod_name(env: &BTreeMap<String, String>, kernel_id: &str) -> String {
    pod_name_decision(env, kernel_id).0
}

/// [`pod_name`], plus why a `KERNEL_POD_NAME` template fell back (for the gateway's warning).
pub fn pod_name_decision(
    env: &BTreeMap<String, String>,
    kernel_id: &str,
) -> (String, Option<PodNameFallback>) {
    let default = || {
        format!(
            "{}-{kernel_id}",
            env.get("KERNEL_USERNAME").map(String::as_str).unwrap_or("")
        )
    };
    let (raw, fallback) = match env.get("KERNEL_POD_NAME") {
        None => (default(), None),
        Some(v) if v.contains("{{") && v.contains("}}") => match substitute(v, env, kernel_id) {
            Ok(name) => (name, None),
            Err(why) => (default(), Some(why)),
        },
        Some(v) => (v.clone(), None),
    };
    (shorten(&normalise(&raw)), fallback)
}

fn substitute(
    template: &str,
    env: &BTreeMap<String, String>,
    kernel_id: &str,
) -> Result<String, PodNameFallback> {
    let mut vars: BTreeMap<String, &str> = env
        .iter()
        .filter(|(k, _)| k.starts_with("KERNEL_"))
        .map(|(k, v)| (k.to_lowercase(), v.as_str()))
        .collect();
    vars.insert("kernel_id".into(), kernel_id);
    let mut missing = Vec::new();
    let result = POD_NAME_VAR.replace_all(template, |caps: &regex::Captures<'_>| {
        match vars.get(&caps[1]) {
            Some(v) => (*v).to_owned(),
            None => {
                missing.push(caps[1].to_owned());
                caps[0].to_owned()
            }
        }
    });
    // Upstream tests for leftover braces first, which unknown names also leave; naming them is
    // the more useful warning, and both fall back alike.
    if !missing.is_empty() {
        return Err(PodNameFallback::MissingVariables(missing));
    }
    if result.contains("{{") && result.contains("}}") {
        return Err(PodNameFallback::UnsupportedExpression);
    }
    Ok(result.into_owned())
}

fn normalise(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.to_lowercase().chars() {
        if c.is_ascii_digit() || c.is_ascii_lowercase() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name.to_owned();
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}-{}", name[..54].trim_end_matches('-'), &digest[..8])
}

/// Where the kernel's objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePlan {
    /// The client's `KERNEL_NAMESPACE`, verbatim: assumed to exist, never created or deleted.
    Client(String),
    /// `EG_SHARED_NAMESPACE`: the gateway's own namespace; never created or deleted.
    Shared(String),
    /// A namespace named like the pod, created for this kernel (with a RoleBinding) and deleted
    /// with it.
    PerKernel { name: String },
}

impl NamespacePlan {
    /// Upstream's order: the client's `KERNEL_NAMESPACE` if set (even empty), else the shared
    /// namespace when `EG_SHARED_NAMESPACE` is true (`shared_namespace` is then `EG_NAMESPACE`),
    /// else a namespace of the pod's name.
    pub fn decide(
        env: &BTreeMap<String, String>,
        shared_namespace: Option<&str>,
        pod_name: &str,
    ) -> Self {
        match (env.get("KERNEL_NAMESPACE"), shared_namespace) {
            (Some(ns), _) => Self::Client(ns.clone()),
            (None, Some(ns)) => Self::Shared(ns.to_owned()),
            (None, None) => Self::PerKernel {
                name: pod_name.to_owned(),
            },
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Client(ns) | Self::Shared(ns) => ns,
            Self::PerKernel { name } => name,
        }
    }

    /// Whether the gateway creates the namespace and deletes it with the kernel.
    pub fn owned(&self) -> bool {
        matches!(self, Self::PerKernel { .. })
    }
}

fn kernel_labels(kernel_id: &str) -> Value {
    json!({"app": "enterprise-gateway", "component": "kernel", "kernel_id": kernel_id})
}

/// The per-kernel `Namespace` body (labels `app`, `component`, `kernel_id`).
pub fn namespace_body(name: &str, kernel_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": kernel_labels(kernel_id)},
    })
}

/// The `RoleBinding` created in a per-kernel namespace: named like the cluster role
/// (`EG_KERNEL_CLUSTER_ROLE`), binding that `ClusterRole` to the kernel's service account.
/// `apiGroup` is empty as upstream sends it (the API server defaults it).
pub fn role_binding_body(
    namespace: &str,
    kernel_id: &str,
    cluster_role: &str,
    service_account: &str,
) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": cluster_role, "labels": kernel_labels(kernel_id)},
        "roleRef": {"apiGroup": "", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{
            "apiGroup": "",
            "kind": "ServiceAccount",
            "name": service_account,
            "namespace": namespace,
        }],
    })
}

/// The kernel's service account: `KERNEL_SERVICE_ACCOUNT_NAME` (even empty), else
/// `EG_DEFAULT_KERNEL_SERVICE_ACCOUNT_NAME` (`default`).
pub fn service_account(env: &BTreeMap<String, String>, default: &str) -> String {
    env.get("KERNEL_SERVICE_ACCOUNT_NAME")
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// Largest UID/GID (Linux `uid_t`).
pub const MAX_ID: u32 = u32::MAX;

/// A refused `KERNEL_UID`/`KERNEL_GID`. The display is upstream's message; all are 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("Invalid KERNEL_{which} value '{value}': not a valid integer!")]
    NotInteger { which: IdKind, value: String },
    #[error("Invalid KERNEL_{which} value '{value}': must be in range 0-4294967295!")]
    OutOfRange { which: IdKind, value: String },
    #[error("Kernel's {which} value of '{value}' has been denied via EG_PROHIBITED_{which}S!")]
    Prohibited { which: IdKind, value: String },
}

impl IdError {
    /// The HTTP status upstream answers with.
    pub fn status(&self) -> u16 {
        403
    }

    /// The variable at fault (`KERNEL_UID` or `KERNEL_GID`).
    pub fn variable(&self) -> &'static str {
        let (Self::NotInteger { which, .. }
        | Self::OutOfRange { which, .. }
        | Self::Prohibited { which, .. }) = self;
        match which {
            IdKind::Uid => "KERNEL_UID",
            IdKind::Gid => "KERNEL_GID",
        }
    }
}

/// User or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Uid,
    Gid,
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uid => "UID",
            Self::Gid => "GID",
        })
    }
}

/// `EG_PROHIBITED_UIDS` / `EG_PROHIBITED_GIDS` (default `0` each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPolicy {
    prohibited_uids: Vec<u32>,
    prohibited_gids: Vec<u32>,
}

impl Default for IdPolicy {
    fn default() -> Self {
        Self {
            prohibited_uids: vec![0],
            prohibited_gids: vec![0],
        }
    }
}

impl IdPolicy {
    /// Comma lists of integers (Python `int()` each, empties skipped); a non-integer entry is a
    /// configuration error with upstream's message (upstream refuses to start). Entries outside
    /// `0..=4294967295` can never match and are dropped.
    pub fn parse(uids: Option<&str>, gids: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            prohibited_uids: parse_ids("EG_PROHIBITED_UIDS", uids.unwrap_or("0"))?,
            prohibited_gids: parse_ids("EG_PROHIBITED_GIDS", gids.unwrap_or("0"))?,
        })
    }

    /// Checks `KERNEL_UID` and `KERNEL_GID` (defaults `1000` and `100`) in upstream's order (UID
    /// parse, GID parse, UID range, GID range, UID prohibited, GID prohibited) and returns their
    /// canonical decimal forms, which replace the values in the kernel's environment.
    pub fn check(&self, env: &BTreeMap<String, String>) -> Result<(u32, u32), IdError> {
        let uid_raw = env.get("KERNEL_UID").map(String::as_str).unwrap_or("1000");
        let gid_raw = env.get("KERNEL_GID").map(String::as_str).unwrap_or("100");
        let parse = |which, raw: &str| {
            PyInt::parse(raw).ok_or_else(|| IdError::NotInteger {
                which,
                value: raw.to_owned(),
            })
        };
        let uid = parse(IdKind::Uid, uid_raw)?;
        let gid = parse(IdKind::Gid, gid_raw)?;
        let in_range = |which, raw: &str, v: &PyInt| {
            v.to_i128()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| IdError::OutOfRange {
                    which,
                    value: raw.to_owned(),
                })
        };
        let uid = in_range(IdKind::Uid, uid_raw, &uid)?;
        let gid = in_range(IdKind::Gid, gid_raw, &gid)?;
        if self.prohibited_uids.contains(&uid) {
            return Err(IdError::Prohibited {
                which: IdKind::Uid,
                value: uid_raw.to_owned(),
            });
        }
        if self.prohibited_gids.contains(&gid) {
            return Err(IdError::Prohibited {
                which: IdKind::Gid,
                value: gid_raw.to_owned(),
            });
        }
        Ok((uid, gid))
    }
}

fn parse_ids(var: &str, raw: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for item in raw.split(',') {
        let item = item.trim_matches(super::python::is_space);
        if item.is_empty() {
            continue;
        }
        let id = PyInt::parse(item).ok_or_else(|| {
            format!(
                "Invalid entry '{item}' in {var}='{raw}'. All entries must be numeric IDs, not \
                 usernames or group names. Example: {var}=0,1000"
            )
        })?;
        if let Some(id) = id.to_i128().and_then(|v| u32::try_from(v).ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
