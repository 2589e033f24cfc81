//! The kernel pod's container environment, as upstream builds it in two steps: the gateway's
//! process proxy prepares the kernel's environment (`KUBE*` copies, pod name, namespace,
//! service account, images, UID/GID, port-range settings, `KERNEL_ID`, `KERNEL_LANGUAGE`, ...),
//! then `launch_kubernetes.py` adds its own arguments (`RESPONSE_ADDRESS`, `PUBLIC_KEY`,
//! `PORT_RANGE`, `KERNEL_NAME`, ...) and copies its whole environment into the pod's first
//! container.
//!
//! Two things of the Python launcher's process environment are not reproduced: the
//! `JPY_PARENT_PID` jupyter_client adds (the gateway's pid, meaningless in another pod) and the
//! `LC_CTYPE=C.UTF-8` Python's C-locale coercion adds when the kernel's environment names no
//! locale. Entries the launcher appends come in name order (Python's follow the environment's
//! insertion order).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::naming::{IdError, IdPolicy, NamespacePlan};

/// The kernel images a spec and the gateway offer; the client's `KERNEL_IMAGE` and
/// `KERNEL_EXECUTOR_IMAGE` override them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageDefaults<'a> {
    /// The spec's `process_proxy.config.image_name`.
    pub spec_image: Option<&'a str>,
    /// The spec's `process_proxy.config.executor_image_name`.
    pub spec_executor_image: Option<&'a str>,
    /// `EG_KERNEL_IMAGE`.
    pub default_image: Option<&'a str>,
    /// `EG_KERNEL_EXECUTOR_IMAGE` (empty counts as unset).
    pub default_executor_image: Option<&'a str>,
}

/// What `launch_kubernetes.py` receives on its command line (after `{…}` substitution); `None`
/// for an option the spec's `argv` does not pass (or passes without a value).
#[derive(Debug, Clone, Copy, Default)]
pub struct LauncherArgs<'a> {
    pub kernel_id: Option<&'a str>,
    pub port_range: Option<&'a str>,
    pub response_address: Option<&'a str>,
    pub public_key: Option<&'a str>,
    /// `--spark-context-initialization-mode` (default `none`).
    pub spark_context_init_mode: Option<&'a str>,
    pub kernel_class_name: Option<&'a str>,
}

/// Where the pod goes, decided by [`super::naming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pod_name: String,
    pub namespace: NamespacePlan,
    pub service_account: String,
}

/// Everything besides the kernel's environment that goes into the pod's environment.
#[derive(Debug, Clone, Copy)]
pub struct PodEnvInputs<'a> {
    pub kernel_id: &'a str,
    /// The spec's `language` (lower-cased into `KERNEL_LANGUAGE` unless the env sets it).
    pub language: &'a str,
    /// The spec's directory name, case preserved (`KERNEL_NAME`).
    pub spec_dir_name: &'a str,
    pub launcher: LauncherArgs<'a>,
    /// `EG_MIN_PORT_RANGE_SIZE`.
    pub min_port_range_size: u32,
    /// `EG_MAX_PORT_RANGE_RETRIES`.
    pub max_port_range_retries: u32,
    /// `EG_IMPERSONATION_ENABLED`.
    pub impersonation: bool,
    /// `EG_MIRROR_WORKING_DIRS`: keep the client's `KERNEL_WORKING_DIR`.
    pub mirror_working_dirs: bool,
    /// The gateway's own environment: its `KUBECONFIG*` and `KUBERNETES_SERVICE*` variables are
    /// copied (and win over the request's).
    pub gateway_env: &'a BTreeMap<String, String>,
    pub images: ImageDefaults<'a>,
    pub ids: &'a IdPolicy,
    pub placement: &'a Placement,
}

/// Why the pod's environment could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodEnvError {
    #[error(
        "No kernel image could be determined! Set the `image_name` in the process_proxy.config \
         stanza of the corresponding kernel.json file."
    )]
    NoImage,
    #[error(transparent)]
    Id(#[from] IdError),
}

impl PodEnvError {
    /// The HTTP status upstream answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoImage => 500,
            Self::Id(e) => e.status(),
        }
    }
}

/// Variables never passed on to a kernel pod.
pub const REMOVED: [&str; 5] = [
    "EG_AUTH_TOKEN",
    "KG_AUTH_TOKEN",
    "EG_REMOTE_PWD",
    "LS_COLORS",
    "PYTHONEXECUTABLE",
];

/// The kernel pod's container environment (and the launcher's template variables, via
/// [`super::TemplateVars::from_env`]) from the kernel's environment as the gateway composed it
/// (request, spec and inherited variables, `KERNEL_USERNAME` set).
pub fn pod_env(
    mut env: BTreeMap<String, String>,
    inputs: &PodEnvInputs<'_>,
) -> Result<BTreeMap<String, String>, PodEnvError> {
    // The process proxy.
    for (name, value) in inputs.gateway_env {
        if name.starts_with("KUBECONFIG") || name.starts_with("KUBERNETES_SERVICE") {
            env.insert(name.clone(), value.clone());
        }
    }
    let placement = inputs.placement;
    env.insert("KERNEL_POD_NAME".into(), placement.pod_name.clone());
    env.insert(
        "KERNEL_SERVICE_ACCOUNT_NAME".into(),
        placement.service_account.clone(),
    );
    if !matches!(placement.namespace, NamespacePlan::Client(_)) {
        env.insert(
            "KERNEL_NAMESPACE".into(),
            placement.namespace.name().to_owned(),
        );
    }
    let images = inputs.images;
    let image = match env.get("KERNEL_IMAGE") {
        Some(image) => image.clone(),
        None => images
            .spec_image
            .or(images.default_image)
            .ok_or(PodEnvError::NoImage)?
            .to_owned(),
    };
    let executor_image = match env.get("KERNEL_EXECUTOR_IMAGE") {
        Some(image) => image.clone(),
        None => images
            .spec_executor_image
            .or(images.default_executor_image.filter(|i| !i.is_empty()))
            .unwrap_or(&image)
            .to_owned(),
    };
    env.insert("KERNEL_IMAGE".into(), image);
    env.insert("KERNEL_EXECUTOR_IMAGE".into(), executor_image);
    if !inputs.mirror_working_dirs {
        env.remove("KERNEL_WORKING_DIR");
    }
    let (uid, gid) = inputs.ids.check(&env)?;
    env.insert("KERNEL_UID".into(), uid.to_string());
    env.insert("KERNEL_GID".into(), gid.to_string());
    env.insert(
        "EG_MIN_PORT_RANGE_SIZE".into(),
        inputs.min_port_range_size.to_string(),
    );
    env.insert(
        "EG_MAX_PORT_RANGE_RETRIES".into(),
        inputs.max_port_range_retries.to_string(),
    );
    env.insert("KERNEL_GATEWAY".into(), "1".into());
    env.insert("KERNEL_ID".into(), inputs.kernel_id.to_owned());
    if !env.contains_key("KERNEL_LANGUAGE") {
        let language = if inputs.language.is_empty() {
            "unknown-kernel-language".to_owned()
        } else {
            inputs.language.to_lowercase()
        };
        env.insert("KERNEL_LANGUAGE".into(), language);
    }
    for name in REMOVED {
        env.remove(name);
    }
    env.insert(
        "EG_IMPERSONATION_ENABLED".into(),
        if inputs.impersonation {
            "True"
        } else {
            "False"
        }
        .into(),
    );

    // The launcher.
    let args = inputs.launcher;
    let given = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
    for (name, value) in [
        ("PORT_RANGE", args.port_range),
        ("PUBLIC_KEY", args.public_key),
        ("RESPONSE_ADDRESS", args.response_address),
        ("KERNEL_ID", args.kernel_id),
        ("KERNEL_CLASS_NAME", args.kernel_class_name),
    ] {
        if let Some(value) = given(value) {
            env.insert(name.into(), value);
        }
    }
    env.insert(
        "KERNEL_SPARK_CONTEXT_INIT_MODE".into(),
        given(args.spark_context_init_mode).unwrap_or_else(|| "none".into()),
    );
    env.insert("KERNEL_NAME".into(), inputs.spec_dir_name.to_owned());
    Ok(env)
}

/// A Pod document the environment cannot be added to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Pod document's {0}")]
pub struct ContainerEnvError(&'static str);

/// `launch_kubernetes.py`'s `extend_pod_env`: in `spec.containers[0].env`, entries whose name is
/// in `env` get that value; every other variable of `env` is appended as `{name, value}`.
pub fn extend_container_env(
    pod: &mut Value,
    env: &BTreeMap<String, String>,
) -> Result<(), ContainerEnvError> {
    let container = pod
        .get_mut("spec")
        .and_then(|s| s.get_mut("containers"))
        .and_then(|c| c.get_mut(0))
        .and_then(Value::as_object_mut)
        .ok_or(ContainerEnvError("spec.containers[0] is not a mapping"))?;
    let mut stanza = match container.remove("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ContainerEnvError("spec.containers[0].env is not a list")),
    };
    let mut listed = Vec::new();
    for item in &mut stanza {
        let item = item.as_object_mut().ok_or(ContainerEnvError(
            "spec.containers[0].env has an entry that is not a mapping",
        ))?;
        if let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_owned)
            && let Some(value) = env.get(&name)
        {
            item.insert("value".into(), Value::String(value.clone()));
            listed.push(name);
        }
    }
    for (name, value) in env {
        if !listed.contains(name) {
            stanza.push(json!({"name": name, "value": value}));
        }
    }
    container.insert("env".into(), Value::Array(stanza));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::test_support::env_of;

    const ID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

    fn placement(namespace: NamespacePlan) -> Placement {
        Placement {
            pod_name: "alice-6f1c".into(),
            namespace,
            service_account: "default".into(),
        }
    }

    fn inputs<'a>(
        gateway: &'a BTreeMap<String, String>,
        ids: &'a IdPolicy,
        placement: &'a Placement,
    ) -> PodEnvInputs<'a> {
        PodEnvInputs {
            kernel_id: ID,
            language: "Python",
            spec_dir_name: "Python_Kubernetes",
            launcher: LauncherArgs {
                kernel_id: Some(ID),
                port_range: Some("0..0"),
                response_address: Some("10.0.0.5:8877"),
                public_key: Some("MIGf"),
                spark_context_init_mode: None,
                kernel_class_name: None,
            },
            min_port_range_size: 1000,
            max_port_range_retries: 5,
            impersonation: false,
            mirror_working_dirs: false,
            gateway_env: gateway,
            images: ImageDefaults {
                spec_image: Some("elyra/kernel-py:3.3.0"),
                ..ImageDefaults::default()
            },
            ids,
            placement,
        }
    }

    #[test]
    fn the_whole_pod_environment() {
        let gateway = env_of(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBECONFIG", "/k"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("HOME", "/home/gw"),
        ]);
        let ids = IdPolicy::default();
        let place = placement(NamespacePlan::PerKernel {
            name: "alice-6f1c".into(),
        });
        let env = env_of(&[
            ("KERNEL_USERNAME", "alice"),
            ("KERNEL_WORKING_DIR", "/home/alice"),
            ("KERNEL_UID", " 1_001"),
            ("KUBERNETES_SERVICE_HOST", "client-value"),
            ("EG_AUTH_TOKEN", "t"),
            ("LS_COLORS", "x"),
            ("EG_REMOTE_PWD", "x"),
            ("PYTHONEXECUTABLE", "x"),
            ("PATH", "/usr/bin"),
        ]);
        let got = pod_env(env, &inputs(&gateway, &ids, &place)).unwrap();
        let expected = env_of(&[
            ("EG_IMPERSONATION_ENABLED", "False"),
            ("EG_MAX_PORT_RANGE_RETRIES", "5"),
            ("EG_MIN_PORT_RANGE_SIZE", "1000"),
            ("KERNEL_EXECUTOR_IMAGE", "elyra/kernel-py:3.3.0"),
            ("KERNEL_GATEWAY", "1"),
            ("KERNEL_GID", "100"),
            ("KERNEL_ID", ID),
            ("KERNEL_IMAGE", "elyra/kernel-py:3.3.0"),
            ("KERNEL_LANGUAGE", "python"),
            ("KERNEL_NAME", "Python_Kubernetes"),
            ("KERNEL_NAMESPACE", "alice-6f1c"),
            ("KERNEL_POD_NAME", "alice-6f1c"),
            ("KERNEL_SERVICE_ACCOUNT_NAME", "default"),
            ("KERNEL_SPARK_CONTEXT_INIT_MODE", "none"),
            ("KERNEL_UID", "1001"),
            ("KERNEL_USERNAME", "alice"),
            ("KUBECONFIG", "/k"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("PATH", "/usr/bin"),
            ("PORT_RANGE", "0..0"),
            ("PUBLIC_KEY", "MIGf"),
            ("RESPONSE_ADDRESS", "10.0.0.5:8877"),
        ]);
        assert_eq!(got, expected);
    }

    #[test]
    fn variations() {
        let gateway = BTreeMap::new();
        let ids = IdPolicy::default();
        let client_ns = placement(NamespacePlan::Client("team".into()));
        let shared = placement(NamespacePlan::Shared("eg".into()));
        type Check = fn(&BTreeMap<String, String>);
        type Adjust = fn(&mut PodEnvInputs<'_>);
        type Case<'a> = (&'a Placement, Vec<(&'a str, &'a str)>, Adjust, Check);
        let cases: Vec<Case<'_>> = vec![
            (
                &client_ns,
                vec![("KERNEL_NAMESPACE", "team")],
                |_| {},
                |e| assert_eq!(e["KERNEL_NAMESPACE"], "team"),
            ),
            (
                &shared,
                vec![],
                |_| {},
                |e| assert_eq!(e["KERNEL_NAMESPACE"], "eg"),
            ),
            (
                &shared,
                vec![("KERNEL_WORKING_DIR", "/w")],
                |i| i.mirror_working_dirs = true,
                |e| assert_eq!(e["KERNEL_WORKING_DIR"], "/w"),
            ),
            (
                &shared,
                vec![("KERNEL_LANGUAGE", "Scala")],
                |i| i.language = "",
                |e| assert_eq!(e["KERNEL_LANGUAGE"], "Scala"),
            ),
            (
                &shared,
                vec![],
                |i| i.language = "",
                |e| assert_eq!(e["KERNEL_LANGUAGE"], "unknown-kernel-language"),
            ),
            (
                &shared,
                vec![("KERNEL_IMAGE", "mine:1")],
                |i| i.images.spec_executor_image = Some("exec:1"),
                |e| {
                    assert_eq!(e["KERNEL_IMAGE"], "mine:1");
                    assert_eq!(e["KERNEL_EXECUTOR_IMAGE"], "exec:1");
                },
            ),
            (
                &shared,
                vec![("KERNEL_IMAGE", "mine:1")],
                |i| i.images.default_executor_image = Some(""),
                |e| assert_eq!(e["KERNEL_EXECUTOR_IMAGE"], "mine:1"),
            ),
            (
                &shared,
                vec![],
                |i| {
                    i.images = ImageDefaults {
                        default_image: Some("gw:1"),
                        default_executor_image: Some("gwx:1"),
                        ..ImageDefaults::default()
                    }
                },
                |e| {
                    assert_eq!(e["KERNEL_IMAGE"], "gw:1");
                    assert_eq!(e["KERNEL_EXECUTOR_IMAGE"], "gwx:1");
                },
            ),
            (
                &shared,
                vec![],
                |i| {
                    i.impersonation = true;
                    i.launcher = LauncherArgs {
                        spark_context_init_mode: Some("lazy"),
                        kernel_class_name: Some("my.Kernel"),
                        port_range: Some(""),
                        ..LauncherArgs::default()
                    };
                },
                |e| {
                    assert_eq!(e["EG_IMPERSONATION_ENABLED"], "True");
                    assert_eq!(e["KERNEL_SPARK_CONTEXT_INIT_MODE"], "lazy");
                    assert_eq!(e["KERNEL_CLASS_NAME"], "my.Kernel");
                    assert!(!e.contains_key("PORT_RANGE"));
                    assert!(!e.contains_key("PUBLIC_KEY"));
                    assert_eq!(e["KERNEL_ID"], ID);
                },
            ),
        ];
        for (place, vars, adjust, check) in cases {
            let mut i = inputs(&gateway, &ids, place);
            adjust(&mut i);
            check(&pod_env(env_of(&vars), &i).unwrap());
        }
    }

    #[test]
    fn refusals() {
        let gateway = BTreeMap::new();
        let ids = IdPolicy::default();
        let place = placement(NamespacePlan::Shared("eg".into()));
        let mut i = inputs(&gateway, &ids, &place);
        i.images = ImageDefaults::default();
        let err = pod_env(BTreeMap::new(), &i).unwrap_err();
        assert_eq!(err, PodEnvError::NoImage);
        assert_eq!(err.status(), 500);
        let i = inputs(&gateway, &ids, &place);
        let err = pod_env(env_of(&[("KERNEL_UID", "0")]), &i).unwrap_err();
        assert_eq!(err.status(), 403);
        assert_eq!(
            err.to_string(),
            "Kernel's UID value of '0' has been denied via EG_PROHIBITED_UIDS!"
        );
    }

    #[test]
    fn container_env_extension() {
        let env = env_of(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let cases = [
            (
                json!(null),
                json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]),
            ),
            (
                json!([{"name": "B", "value": "template"}, {"name": "X", "value": "kept"}]),
                json!([{"name": "B", "value": "2"}, {"name": "X", "value": "kept"},
                       {"name": "A", "value": "1"}, {"name": "C", "value": "3"}]),
            ),
            (
                json!([{"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]),
                json!([{"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "x"}}, "value": "3"},
                       {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
            ),
        ];
        for (stanza, expected) in cases {
            let mut pod = json!({"spec": {"containers": [{"name": "k", "env": stanza}]}});
            extend_container_env(&mut pod, &env).unwrap();
            assert_eq!(pod["spec"]["containers"][0]["env"], expected);
        }
        let mut no_env = json!({"spec": {"containers": [{"name": "k"}]}});
        extend_container_env(&mut no_env, &env).unwrap();
        assert_eq!(
            no_env["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        for bad in [
            json!({"spec": {}}),
            json!({"spec": {"containers": []}}),
            json!({"spec": {"containers": [{"env": {"A": "1"}}]}}),
            json!({"spec": {"containers": [{"env": ["A"]}]}}),
        ] {
            let mut pod = bad.clone();
            assert!(extend_container_env(&mut pod, &env).is_err(), "{bad}");
        }
    }
}
