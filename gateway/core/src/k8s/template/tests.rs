use std::path::PathBuf;

use minijinja::context;
use serde_json::json;

use super::*;
use crate::k8s::test_support::{Pairs, env_of};

fn vars(pairs: &[(&str, &str)]) -> TemplateVars {
    TemplateVars::from_env(&env_of(pairs)).unwrap()
}

fn volumes(yaml: &str) -> Value {
    Value::from(minijinja::value::Serde(
        serde_yaml_ng::from_str::<Yaml>(yaml).unwrap(),
    ))
}

#[test]
fn yaml_safe_table() {
    let env = environment();
    let cases: Vec<(Value, &str)> = vec![
        (Value::from("/home/jovyan"), r#""/home/jovyan""#),
        (Value::from("a\nb: c"), r#""a\nb: c""#),
        (Value::from("{{ x }}"), r#""{{ x }}""#),
        (Value::from(""), r#""""#),
        (
            volumes("[{name: data, mountPath: /data}]"),
            "[{mountPath: /data, name: data}]",
        ),
        (
            volumes(r#"{"b": [1, "1", true, null, 2.5, "on"], "a": {"z": "x y", "y": "a: b"}}"#),
            "{a: {y: 'a: b', z: x y}, b: [1, '1', true, null, 2.5, 'on']}",
        ),
        (Value::from(()), "null"),
        (Value::from(true), "true"),
        (Value::from(1000), "1000"),
        (Value::from(3.25), "3.25"),
        (Value::from(1e16), "1.0e+16"),
    ];
    for (value, expected) in cases {
        let got = env
            .render_str("{{ x | yaml_safe }}", context! { x => value.clone() })
            .unwrap();
        assert_eq!(got, expected, "{value:?}");
    }
    assert!(env.render_str("{{ nope | yaml_safe }}", ()).is_err());
}

#[test]
fn int_filter_like_jinja2() {
    let env = environment();
    let cases: Vec<(Value, &str)> = vec![
        (Value::from("1000"), "1000"),
        (Value::from(" +1_0 "), "10"),
        (Value::from("abc"), "0"),
        (Value::from(""), "0"),
        (Value::from("1e3"), "1000"),
        (Value::from("12.7"), "12"),
        (Value::from("-12.7"), "-12"),
        (Value::from("nan"), "0"),
        (Value::from("-0x10"), "0"),
        (Value::from("\u{663}"), "3"),
        (Value::from(()), "0"),
        (Value::from(true), "1"),
        (Value::from(7.9), "7"),
        (Value::from(vec![1, 2]), "0"),
        (
            Value::from("99999999999999999999999999999999999999999"),
            "99999999999999999999999999999999999999999",
        ),
    ];
    for (value, expected) in cases {
        let got = env
            .render_str("{{ x | int }}", context! { x => value.clone() })
            .unwrap();
        assert_eq!(got, expected, "{value:?}");
    }
    assert_eq!(env.render_str("{{ 'x' | int(5) }}", ()).unwrap(), "5");
    assert_eq!(
        env.render_str("{{ 'x' | int(default=6) }}", ()).unwrap(),
        "6"
    );
    assert_eq!(env.render_str("{{ ('1' | int) + 1 }}", ()).unwrap(), "2");
    for failing in [
        "{{ 'inf' | int }}",
        "{{ nope | int }}",
        "{{ '10' | int(base=16) }}",
    ] {
        assert!(env.render_str(failing, ()).is_err(), "{failing}");
    }
}

#[test]
fn values_print_as_python_prints_them() {
    let env = environment();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "{{ x }}",
            volumes(r#"{"a": true, "b": null, "c": [1.0, "it's", 2], "d": "x\ny"}"#),
            r#"{'a': True, 'b': None, 'c': [1.0, "it's", 2], 'd': 'x\ny'}"#,
        ),
        ("{{ x }}", Value::from(false), "False"),
        ("{{ x }}", Value::from(()), "None"),
        ("{{ x }}", Value::from(0.1), "0.1"),
        (
            "{{ x is defined }}{{ y is defined }}",
            Value::from(1),
            "TrueFalse",
        ),
        (
            "[{{ y }}]{% if y %}set{% endif %}{% for i in y %}{{ i }}{% endfor %}",
            Value::from(1),
            "[]",
        ),
        (
            "{{ x | default('d') }}/{{ y | default('d') }}",
            Value::from("v"),
            "v/d",
        ),
        ("{{ x }}", Value::from("<&>'\""), "<&>'\""),
    ];
    for (src, value, expected) in cases {
        assert_eq!(
            env.render_str(src, context! { x => value }).unwrap(),
            expected,
            "{src}"
        );
    }
    // Attribute access on an undefined value fails, as in Jinja2.
    assert!(env.render_str("{{ y.z }}", ()).is_err());
}

#[test]
fn whitespace_like_the_launchers_jinja2() {
    let src = "a\n  {% if true %}\n  b\n  {% endif %}\nc\n";
    assert_eq!(render(src, &TemplateVars::default()).unwrap(), "a\n  b\nc");
    let src = "x:\n{% for i in [1, 2] %}\n  - {{ i }}\n{% endfor %}\n\n";
    assert_eq!(
        render(src, &TemplateVars::default()).unwrap(),
        "x:\n  - 1\n  - 2\n"
    );
}

#[test]
fn template_variables() {
    let v = vars(&[
        ("KERNEL_USERNAME", "alice"),
        ("KERNEL_Mixed_Case", "m"),
        ("PATH", "/usr/bin"),
        (
            "KERNEL_VOLUMES",
            r#"[{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]"#,
        ),
        ("KERNEL_VOLUME_MOUNTS", "- name: v\n  mountPath: /v\n"),
    ]);
    assert_eq!(
        v.names().collect::<Vec<_>>(),
        [
            "kernel_mixed_case",
            "kernel_username",
            "kernel_volume_mounts",
            "kernel_volumes"
        ]
    );
    assert_eq!(v.get_str("kernel_username"), Some("alice"));
    assert_eq!(v.get_str("path"), None);
    assert!(v.get_yaml("kernel_volumes").unwrap().is_sequence());
    let rendered = render(
        "{{ kernel_volumes[0].persistentVolumeClaim.claimName }}",
        &v,
    )
    .unwrap();
    assert_eq!(rendered, "c");

    // Both YAML variables are held to the same shape.
    for (raw, detail) in [
        ("{}", "got a mapping"),
        ("", "got null"),
        ("[1]", "item 0 is a number"),
        ("[{a: 1}, x]", "item 1 is a string"),
        ("[{", ""),
        ("- !custom {a: 1}", "tagged values are not supported"),
    ] {
        for name in YAML_VARIABLES {
            let err = TemplateVars::from_env(&env_of(&[(name, raw)])).unwrap_err();
            assert_eq!(err.status(), 400);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{name} must be a YAML list of mappings")),
                "{text}"
            );
            assert!(text.contains(detail), "{text}");
        }
    }
}

#[test]
fn manifest_documents() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: k}]}\n";
    let docs = documents(pod).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].kind, Kind::Pod);
    assert_eq!(docs[0].body["spec"]["containers"][0]["name"], "k");

    let all = format!(
        "---\n{pod}---\n# only a comment\n---\nkind: Secret\n---\nkind: Service\nmetadata: {{}}\n...\n---\n{{}}\n---\nkind: ConfigMap\ndata: {{1: x, true: y}}\n"
    );
    let docs = documents(&all).unwrap();
    assert_eq!(
        docs.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [Kind::Pod, Kind::Secret, Kind::Service, Kind::ConfigMap]
    );
    assert_eq!(docs[3].body["data"], json!({"1": "x", "true": "y"}));

    let cases: Vec<(String, TemplateError)> = vec![
        (
            format!("{pod}---\nkind: Deployment\n"),
            TemplateError::UnexpectedKind("Deployment".into()),
        ),
        (
            format!("{pod}---\nmetadata: {{}}\n"),
            TemplateError::UnexpectedKind("None".into()),
        ),
        (
            format!("{pod}---\n{pod}"),
            TemplateError::TooMany {
                kind: "Pod".into(),
                count: 2,
            },
        ),
        ("kind: Secret\n".into(), TemplateError::NoPod),
        ("".into(), TemplateError::NoPod),
    ];
    for (text, expected) in cases {
        assert_eq!(documents(&text).unwrap_err(), expected, "{text}");
    }
    for broken in [
        format!("{pod}---\n- a list\n"),
        "kind: Pod\n  bad: indent\n".into(),
    ] {
        let err = documents(&broken).unwrap_err();
        assert!(matches!(err, TemplateError::Manifest(_)), "{err:?}");
        assert_eq!(err.status(), 500);
    }
}

/// Upstream's stock template, read from the unpacked 3.3.0 sources (`KIP_TEST_EG_SRC`).
fn stock_template() -> Option<String> {
    let src = std::env::var("KIP_TEST_EG_SRC").unwrap_or_else(|_| "/opt/kip-test/eg-src".into());
    let path = PathBuf::from(src).join(
        "jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/kubernetes/scripts/kernel-pod.yaml.j2",
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{} is missing (tests/scripts/install-deps.sh); CI=true forbids skipping",
                path.display()
            )
        }
        Err(_) => {
            eprintln!(
                "SKIP: {} is missing; run tests/scripts/install-deps.sh",
                path.display()
            );
            None
        }
    }
}

fn custom_template() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/k8s/kernel-pod-custom.yaml.j2");
    std::fs::read_to_string(path).unwrap()
}

fn pod_vars(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut base: Vec<(&'static str, String)> = vec![
        ("KERNEL_POD_NAME", "alice-6f1c2d3e".into()),
        ("KERNEL_NAMESPACE", "alice-6f1c2d3e".into()),
        ("KERNEL_ID", "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f".into()),
        ("KERNEL_SERVICE_ACCOUNT_NAME", "default".into()),
        ("KERNEL_IMAGE", "elyra/kernel-py:3.3.0".into()),
        ("KERNEL_EXECUTOR_IMAGE", "elyra/kernel-py:3.3.0".into()),
        ("KERNEL_USERNAME", "alice".into()),
        ("KERNEL_LANGUAGE", "python".into()),
        ("KERNEL_UID", "1000".into()),
        ("KERNEL_GID", "100".into()),
    ];
    for (k, v) in extra {
        let k: &'static str = Box::leak((*k).to_owned().into_boxed_str());
        base.retain(|(name, _)| *name != k);
        base.push((k, (*v).to_owned()));
    }
    base
}

fn to_vars(pairs: &[(&'static str, String)]) -> TemplateVars {
    let env: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    TemplateVars::from_env(&env).unwrap()
}

#[test]
fn builtin_template_renders_the_stock_templates_objects() {
    let Some(stock) = stock_template() else {
        return;
    };
    // Every combination of the resource variables: (resource, request, limit).
    let quantities = [
        ("CPUS", "500m", "2"),
        ("MEMORY", "1Gi", "4Gi"),
        ("GPUS", "1", "1"),
    ];
    let resources: Vec<(String, &str)> = quantities
        .iter()
        .flat_map(|(r, request, limit)| {
            [
                (format!("KERNEL_{r}"), *request),
                (format!("KERNEL_{r}_LIMIT"), *limit),
            ]
        })
        .collect();
    let mut sets: Vec<Vec<(&'static str, String)>> = (0..1 << resources.len())
        .map(|combination: u32| {
            let chosen: Vec<(&str, &str)> = resources
                .iter()
                .enumerate()
                .filter(|(i, _)| combination & (1 << i) != 0)
                .map(|(_, (name, quantity))| (name.as_str(), *quantity))
                .collect();
            pod_vars(&chosen)
        })
        .collect();
    sets.extend([
        pod_vars(&[("KERNEL_MEMORY", "1Gi"), ("KERNEL_GPUS_LIMIT", "")]),
        pod_vars(&[
            ("KERNEL_WORKING_DIR", "/home/alice/a b"),
            (
                "KERNEL_VOLUMES",
                r#"[{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "e", "emptyDir": {}}]"#,
            ),
            (
                "KERNEL_VOLUME_MOUNTS",
                "- {name: d, mountPath: /d, readOnly: true}\n- {name: e, mountPath: /e}\n",
            ),
        ]),
        pod_vars(&[
            ("KERNEL_WORKING_DIR", ""),
            ("KERNEL_VOLUMES", "[]"),
            ("KERNEL_VOLUME_MOUNTS", "[]"),
        ]),
        pod_vars(&[
            ("KERNEL_UID", "0"),
            ("KERNEL_GID", "x"),
            ("KERNEL_IMAGE", "a\n---\nb: \"c\""),
        ]),
        {
            let mut no_ids = pod_vars(&[]);
            no_ids.retain(|(k, _)| !matches!(*k, "KERNEL_UID" | "KERNEL_GID"));
            no_ids
        },
        {
            let mut uid_only = pod_vars(&[]);
            uid_only.retain(|(k, _)| *k != "KERNEL_GID");
            uid_only
        },
    ]);
    for set in sets {
        let v = to_vars(&set);
        let ours = documents(&render(BUILTIN_POD_TEMPLATE, &v).unwrap()).unwrap();
        let theirs = documents(&render(&stock, &v).unwrap()).unwrap();
        assert_eq!(ours, theirs, "{set:?}");
        assert!(render_manifest(BUILTIN_POD_TEMPLATE, &v).is_ok(), "{set:?}");
    }
}

#[test]
fn values_through_yaml_safe_never_change_the_structure() {
    let Some(stock) = stock_template() else {
        return;
    };
    let nasty = [
        "x\nextra: injected",
        "\"quoted\" 'single'",
        "{{ 7*7 }}",
        "{% raw %}",
        "x\n---\nkind: Secret",
        "x\n...",
        "a: b",
        "x # c",
        "- item",
        "",
        "\u{2028}é\u{0}",
    ];
    for var in [
        "KERNEL_POD_NAME",
        "KERNEL_NAMESPACE",
        "KERNEL_ID",
        "KERNEL_SERVICE_ACCOUNT_NAME",
        "KERNEL_IMAGE",
        "KERNEL_CPUS",
        "KERNEL_MEMORY",
        "KERNEL_GPUS",
        "KERNEL_CPUS_LIMIT",
        "KERNEL_MEMORY_LIMIT",
        "KERNEL_GPUS_LIMIT",
        "KERNEL_WORKING_DIR",
        "KERNEL_UID",
    ] {
        for value in nasty {
            let v = to_vars(&pod_vars(&[(var, value)]));
            for template in [stock.as_str(), BUILTIN_POD_TEMPLATE] {
                let m = render_manifest(template, &v);
                assert!(m.is_ok(), "{var}={value:?}: {m:?}");
                let docs = m.unwrap().documents;
                assert_eq!(docs.len(), 1);
            }
        }
    }
    let v = to_vars(&pod_vars(&[(
        "KERNEL_VOLUMES",
        r#"[{"name": "x\n---\nkind: Secret", "emptyDir": {"medium": "a: b # c"}, "k: v": [1, "- x"]}]"#,
    )]));
    let m = render_manifest(&stock, &v).unwrap();
    assert_eq!(
        m.documents[0].body["spec"]["volumes"][0]["name"],
        "x\n---\nkind: Secret"
    );
}

#[test]
fn raw_values_that_change_the_structure_are_named() {
    let custom = custom_template();
    let cases: Vec<(Pairs<'_>, Option<Vec<&str>>)> = vec![
        (vec![], None),
        (vec![("KERNEL_USERNAME", "Alice Smith")], None),
        (vec![("KERNEL_TEAM", "x # comment")], None),
        (
            vec![("KERNEL_USERNAME", "x\nextra: 1")],
            Some(vec!["KERNEL_USERNAME"]),
        ),
        (vec![("KERNEL_TEAM", "{a: b}")], Some(vec!["KERNEL_TEAM"])),
        (vec![("KERNEL_TEAM", "[1, 2]")], Some(vec!["KERNEL_TEAM"])),
        (vec![("KERNEL_TEAM", "a: b")], Some(vec!["KERNEL_TEAM"])),
        (
            vec![("KERNEL_NAMESPACE", "x\n---\nkind: Secret")],
            Some(vec!["KERNEL_NAMESPACE"]),
        ),
        (
            vec![("KERNEL_CPUS", "1\n      extra: 2")],
            Some(vec!["KERNEL_CPUS"]),
        ),
        (
            vec![("KERNEL_IMAGE", "a\", \"b")],
            Some(vec!["KERNEL_IMAGE"]),
        ),
        (
            vec![("KERNEL_TEAM", "{x: y}"), ("KERNEL_NODE_POOL", "a\nb: c")],
            Some(vec!["KERNEL_NODE_POOL", "KERNEL_TEAM"]),
        ),
    ];
    for (extra, culprits) in cases {
        let v = to_vars(&pod_vars(&extra));
        let result = render_manifest(&custom, &v);
        match (&result, &culprits) {
            (Ok(_), None) => {}
            (Err(TemplateError::Injection { variables, detail }), Some(expected)) => {
                assert_eq!(variables, expected, "{extra:?}: {detail}");
                assert_eq!(result.as_ref().unwrap_err().status(), 400);
            }
            _ => panic!("{extra:?}: expected {culprits:?}, got {result:?}"),
        }
    }
}

#[test]
fn structure_check_details() {
    // Only together do these two break the line: both are named.
    let template =
        "kind: Pod\nspec:\n  a: {{ kernel_x }}{{ kernel_y }}\n  containers: [{name: k}]\n";
    let v = vars(&[("KERNEL_X", "b:"), ("KERNEL_Y", " c")]);
    let err = render_manifest(template, &v).unwrap_err();
    let TemplateError::Injection { variables, detail } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(variables, &["KERNEL_X", "KERNEL_Y"]);
    assert!(detail.contains("no longer valid YAML"), "{detail}");
    assert!(
        err.to_string()
            .starts_with("KERNEL_X, KERNEL_Y would change the structure"),
        "{err}"
    );

    // A key made from a live value compares through its placeholder.
    let template = "kind: Pod\nmetadata:\n  labels:\n    {{ kernel_x }}: \"1\"\n    {{ kernel_y | yaml_safe }}: \"2\"\nspec:\n  containers: [{name: k}]\n";
    let v = vars(&[("KERNEL_X", "team a"), ("KERNEL_Y", "b: c")]);
    let m = render_manifest(template, &v).unwrap();
    assert_eq!(
        m.documents[0].body["metadata"]["labels"],
        json!({"team a": "1", "b: c": "2"})
    );

    // An extra document, a longer list and a new key are each described.
    let template = "kind: Pod\nspec:\n  containers:\n  - name: {{ kernel_x }}\n";
    for (value, expected) in [
        ("k\n---\nkind: Secret", "2 documents instead of 1"),
        ("k\n  - name: j", "a list of 2 items at '/spec/containers'"),
        (
            "k\n    image: evil",
            "a mapping of 2 keys at '/spec/containers/0'",
        ),
    ] {
        let err = render_manifest(template, &vars(&[("KERNEL_X", value)])).unwrap_err();
        let TemplateError::Injection { variables, detail } = err else {
            panic!("{value:?}");
        };
        assert_eq!(variables, ["KERNEL_X"]);
        assert!(detail.contains(expected), "{value:?}: {detail}");
    }

    // Inert values are not checked at all; the check then costs nothing.
    let v = vars(&[("KERNEL_X", "k8s-1.2_x@y=z+/w")]);
    assert!(check_structure(template, &v, &render(template, &v).unwrap()).is_ok());
}
