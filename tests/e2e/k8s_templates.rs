//! Kernel-pod templates rendered by the gateway (MiniJinja, `gateway_core::k8s`) and by Jinja2
//! configured as upstream's `launch_kubernetes.py` configures it (`tests/k8s/render_jinja2.py`,
//! Debian's python3-jinja2 and python3-yaml): the bytes must be identical, for upstream's stock
//! `kernel-pod.yaml.j2` (from the unpacked 3.3.0 sources, `KIP_TEST_EG_SRC`) and for a
//! customised template written in the older style without `yaml_safe`
//! (`tests/fixtures/k8s/kernel-pod-custom.yaml.j2`). Values that try to inject YAML render
//! identically too; the gateway's structure check must refuse those that change the custom
//! template's structure and accept everything through the stock template.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use e2e::repo_root;
use gateway_core::k8s::{self, TemplateError, TemplateVars};
use serde_json::{Value, json};

const ID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

/// A component this test needs: missing is a skip, except under `CI=true`.
fn required(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is missing: run tests/scripts/install-deps.sh (CI=true forbids skipping)"
    );
    eprintln!("SKIP: {what} is missing; run tests/scripts/install-deps.sh");
    false
}

fn python() -> Option<PathBuf> {
    let python = PathBuf::from(
        std::env::var("KIP_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into()),
    );
    let ok = Command::new(&python)
        .args(["-c", "import jinja2, yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    required(
        "python3 with jinja2 and yaml (python3-jinja2, python3-yaml)",
        ok,
    )
    .then_some(python)
}

fn stock_template() -> Option<PathBuf> {
    let src = std::env::var("KIP_TEST_EG_SRC").unwrap_or_else(|_| "/opt/kip-test/eg-src".into());
    let path = Path::new(&src).join(
        "jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/kubernetes/scripts/kernel-pod.yaml.j2",
    );
    required(&format!("{}", path.display()), path.is_file()).then_some(path)
}

fn custom_template() -> PathBuf {
    repo_root().join("tests/fixtures/k8s/kernel-pod-custom.yaml.j2")
}

/// Renders every case with Jinja2 in one Python process.
fn jinja2(
    python: &Path,
    cases: &[(PathBuf, BTreeMap<String, String>)],
) -> Vec<Result<String, String>> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(t, env)| json!({"template": t, "env": env}))
        .collect();
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/k8s/render_jinja2.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&input).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "render_jinja2.py failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| match (r.get("ok"), r.get("error")) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (_, Some(Value::String(e))) => Err(e.clone()),
            _ => panic!("unexpected result {r}"),
        })
        .collect()
}

/// A pod environment as the gateway builds it for a request with these client variables.
fn pod_env(client: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [("KERNEL_USERNAME", "alice"), ("PATH", "/usr/bin")]
        .iter()
        .chain(client)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let pod = k8s::pod_name(&env, ID);
    let namespace = k8s::NamespacePlan::decide(&env, None, &pod);
    let placement = k8s::Placement {
        service_account: k8s::service_account(&env, "default"),
        pod_name: pod,
        namespace,
    };
    let gateway_env =
        BTreeMap::from([("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned())]);
    let ids = k8s::IdPolicy::default();
    let inputs = k8s::PodEnvInputs {
        kernel_id: ID,
        language: "python",
        spec_dir_name: "python_kubernetes",
        launcher: k8s::LauncherArgs {
            kernel_id: Some(ID),
            port_range: Some("0..0"),
            response_address: Some("10.0.0.5:8877"),
            public_key: Some("MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"),
            ..k8s::LauncherArgs::default()
        },
        min_port_range_size: 1000,
        max_port_range_retries: 5,
        impersonation: false,
        mirror_working_dirs: true,
        gateway_env: &gateway_env,
        images: k8s::ImageDefaults {
            spec_image: Some("elyra/kernel-py:3.3.0"),
            ..k8s::ImageDefaults::default()
        },
        ids: &ids,
        placement: &placement,
    };
    env.remove("KERNEL_ID");
    k8s::pod_env(std::mem::take(&mut env), &inputs).expect("the pod environment builds")
}

/// Values with every character that can change YAML, for the variables both templates use.
const INJECTIONS: [&str; 9] = [
    "x\nextra: injected",
    "a\" , \"b",
    "{{ 7 * 7 }}",
    "{% if true %}yes{% endif %}",
    "x\n---\nkind: Secret",
    "x\n...\n",
    "a: b",
    "x # comment",
    "- item",
];

/// What the structure check must decide for the custom template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Custom {
    Accepted,
    /// Refused, naming exactly the injected variable.
    Refused,
    /// Either, depending on how YAML folds a multi-line quoted scalar; refused only for the
    /// injected variable.
    Either,
}

struct Case {
    name: String,
    env: BTreeMap<String, String>,
    /// The injected variable, if any.
    injected: Option<&'static str>,
    custom: Custom,
}

fn cases() -> Vec<Case> {
    use Custom::{Accepted as A, Either as E, Refused as R};
    let plain = |name: &str, client: &[(&str, &str)]| Case {
        name: name.to_owned(),
        env: pod_env(client),
        injected: None,
        custom: A,
    };
    let mut cases = vec![
        plain("minimal", &[]),
        plain(
            "all resources",
            &[
                ("KERNEL_CPUS", "500m"),
                ("KERNEL_MEMORY", "1Gi"),
                ("KERNEL_GPUS", "1"),
                ("KERNEL_CPUS_LIMIT", "2"),
                ("KERNEL_MEMORY_LIMIT", "4Gi"),
                ("KERNEL_GPUS_LIMIT", "1"),
                ("KERNEL_TEAM", "data"),
                ("KERNEL_NODE_POOL", "gpu"),
                ("KERNEL_NOTEBOOK", "analysis.ipynb"),
            ],
        ),
        plain(
            "volumes and mounts as JSON",
            &[
                (
                    "KERNEL_VOLUMES",
                    r#"[{"name": "data", "persistentVolumeClaim": {"claimName": "alice-data", "readOnly": true}},
                        {"name": "nfs", "nfs": {"server": "10.0.0.9", "path": "/exports/alice"}}]"#,
                ),
                (
                    "KERNEL_VOLUME_MOUNTS",
                    r#"[{"name": "data", "mountPath": "/home/jovyan/data"}, {"name": "nfs", "mountPath": "/mnt/nfs", "readOnly": false}]"#,
                ),
            ],
        ),
        plain(
            "volumes and mounts as YAML",
            &[
                (
                    "KERNEL_VOLUMES",
                    "- name: scratch\n  emptyDir:\n    sizeLimit: 1Gi\n    medium: ''\n- name: cfg\n  configMap:\n    name: site\n    defaultMode: 420\n    items: [{key: a.txt, path: 'it''s a.txt'}]\n",
                ),
                (
                    "KERNEL_VOLUME_MOUNTS",
                    "- {name: scratch, mountPath: /scratch, subPath: 'x y', weight: 1.5}\n- {name: cfg, mountPath: /etc/site, readOnly: true, note: null}\n",
                ),
            ],
        ),
        plain(
            "uid and gid at the edges",
            &[("KERNEL_UID", " +4_294_967_295 "), ("KERNEL_GID", "00001")],
        ),
        plain(
            "uid and gid one",
            &[("KERNEL_UID", "1"), ("KERNEL_GID", "1")],
        ),
        plain(
            "working dir and unusual names",
            &[
                ("KERNEL_WORKING_DIR", "/home/alice/work space/\u{e9}"),
                ("KERNEL_USERNAME", "Alice.Smith@corp"),
                ("KERNEL_POD_NAME", "nb-{{ kernel_username }}"),
                ("KERNEL_SERVICE_ACCOUNT_NAME", "kernels"),
                ("KERNEL_NAMESPACE", "team-a"),
            ],
        ),
        plain(
            "empty values",
            &[
                ("KERNEL_WORKING_DIR", ""),
                ("KERNEL_CPUS", ""),
                ("KERNEL_MEMORY", ""),
            ],
        ),
        // The custom template prints volume dicts raw, as Python writes them: strings stay
        // quoted scalars whatever they hold.
        plain(
            "volume strings",
            &[(
                "KERNEL_VOLUMES",
                r#"[{"name": "x\n---\nkind: Secret", "emptyDir": {"medium": "a: b # c", "q": "it's"}}]"#,
            )],
        ),
        // Long enough for PyYAML to fold lines at 10000 columns (escapes count), a key too long
        // to be simple, and strings PyYAML writes single-quoted over several lines.
        {
            let long_key = "k".repeat(130);
            let volumes = json!([{
                "name": "long",
                "emptyDir": {"medium": "a b ".repeat(2600), "note": "line one\nline two ", "tab": "a\tb"},
                (long_key.as_str()): "x",
            }]);
            Case {
                name: "long values".into(),
                env: pod_env(&[
                    (
                        "KERNEL_WORKING_DIR",
                        &format!("/w/{}", "\u{e9} ".repeat(2000)),
                    ),
                    ("KERNEL_NOTEBOOK", &"\u{1F600}".repeat(1100)),
                    ("KERNEL_VOLUMES", &volumes.to_string()),
                ]),
                injected: None,
                custom: A,
            }
        },
    ];
    // Injection attempts into every variable the stock template prints, and the custom one's
    // extras; per variable, the custom template's expected decision for each of INJECTIONS.
    let raw = [R, A, R, R, R, R, R, A, R];
    let table: [(&str, [Custom; 9]); 12] = [
        // Printed raw, unquoted.
        ("KERNEL_NAMESPACE", raw),
        ("KERNEL_TEAM", raw),
        ("KERNEL_CPUS", raw),
        ("KERNEL_MEMORY", raw),
        ("KERNEL_MEMORY_LIMIT", raw),
        // Raw, and inside single and double quotes.
        ("KERNEL_USERNAME", [R, R, R, R, R, R, R, A, R]),
        // Only inside double quotes.
        ("KERNEL_WORKING_DIR", [E, R, A, A, E, E, A, A, A]),
        ("KERNEL_SERVICE_ACCOUNT_NAME", [E, R, A, A, E, E, A, A, A]),
        ("KERNEL_IMAGE", [E, R, A, A, E, E, A, A, A]),
        // Not used by the custom template.
        ("KERNEL_GPUS", [A; 9]),
        ("KERNEL_CPUS_LIMIT", [A; 9]),
        ("KERNEL_GPUS_LIMIT", [A; 9]),
    ];
    for (var, expected) in table {
        for (i, (value, custom)) in INJECTIONS.iter().zip(expected).enumerate() {
            // With a memory request, so that the custom template prints its resources.
            let mut env = pod_env(&[("KERNEL_MEMORY", "1Gi")]);
            env.insert(var.to_owned(), (*value).to_owned());
            cases.push(Case {
                name: format!("{var} injection {i} {value:?}"),
                env,
                injected: Some(var),
                custom,
            });
        }
    }
    cases
}

#[test]
fn minijinja_renders_like_jinja2() {
    let (Some(python), Some(stock)) = (python(), stock_template()) else {
        return;
    };
    let custom = custom_template();
    let cases = cases();
    let mut jobs = Vec::new();
    for case in &cases {
        for template in [&stock, &custom] {
            jobs.push((template.clone(), case.env.clone()));
        }
    }
    let expected = jinja2(&python, &jobs);
    let mut failures = Vec::new();
    for ((template, env), jinja) in jobs.iter().zip(&expected) {
        let source = std::fs::read_to_string(template).unwrap();
        let ours = TemplateVars::from_env(env)
            .map_err(|e| e.to_string())
            .and_then(|vars| k8s::render(&source, &vars).map_err(|e| e.to_string()));
        match (&ours, jinja) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            _ => failures.push(format!(
                "{} with {env:?}:\n--- minijinja\n{ours:?}\n--- jinja2\n{jinja:?}",
                template.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let rendered_by_both = expected.iter().filter(|r| r.is_ok()).count();
    assert!(
        rendered_by_both >= 16,
        "only {rendered_by_both} renderings to compare"
    );
}

#[test]
fn structure_check_refuses_injections_and_accepts_the_rest() {
    let Some(stock) = stock_template() else {
        return;
    };
    let stock = std::fs::read_to_string(stock).unwrap();
    let custom = std::fs::read_to_string(custom_template()).unwrap();
    for case in cases() {
        let vars = TemplateVars::from_env(&case.env).unwrap();
        let manifest = k8s::render_manifest(&stock, &vars);
        assert!(manifest.is_ok(), "stock, {}: {manifest:?}", case.name);
        let manifest = k8s::render_manifest(&custom, &vars);
        match (&manifest, case.custom) {
            (Ok(m), Custom::Accepted | Custom::Either) => {
                assert_eq!(m.documents.len(), 1, "custom, {}", case.name)
            }
            (Err(TemplateError::Injection { variables, .. }), Custom::Refused | Custom::Either) => {
                assert_eq!(
                    variables,
                    &[case.injected.expect("only injections are refused")],
                    "custom, {}",
                    case.name
                );
            }
            _ => panic!(
                "custom, {}: expected {:?}, got {manifest:?}",
                case.name, case.custom
            ),
        }
    }
}
