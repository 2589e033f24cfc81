use super::*;

const ID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn pod_names() {
    use PodNameFallback::*;
    let user = ("KERNEL_USERNAME", "Alice.Smith@corp");
    let default = format!("alice-smith-corp-{ID}");
    let cases: Vec<(Pairs<'_>, String, Option<PodNameFallback>)> = vec![
        (vec![user], default.clone(), None),
        (vec![], ID.to_owned(), None),
        (
            vec![user, ("KERNEL_POD_NAME", "My_Pod!!")],
            "my-pod".into(),
            None,
        ),
        (vec![user, ("KERNEL_POD_NAME", "--x--")], "x".into(), None),
        (
            vec![
                user,
                ("KERNEL_POD_NAME", "{{kernel_username}}-{{ kernel_id }}"),
            ],
            default.clone(),
            None,
        ),
        (
            vec![user, ("KERNEL_POD_NAME", "nb-{{\tkernel_username }}")],
            "nb-alice-smith-corp".into(),
            None,
        ),
        (
            vec![
                user,
                ("KERNEL_FOO", "bar"),
                ("KERNEL_POD_NAME", "{{ kernel_foo }}-1"),
            ],
            "bar-1".into(),
            None,
        ),
        (
            vec![user, ("KERNEL_POD_NAME", "{{ kernel_username | upper }}")],
            default.clone(),
            Some(UnsupportedExpression),
        ),
        (
            vec![user, ("KERNEL_POD_NAME", "{{ kernel_username.__class__ }}")],
            default.clone(),
            Some(UnsupportedExpression),
        ),
        (
            vec![
                user,
                ("KERNEL_POD_NAME", "{{ kernel_nope }}-{{ kernel_x }}"),
            ],
            default.clone(),
            Some(MissingVariables(vec![
                "kernel_nope".into(),
                "kernel_x".into(),
            ])),
        ),
        (
            vec![user, ("KERNEL_POD_NAME", "{{ _x }}")],
            default.clone(),
            Some(UnsupportedExpression),
        ),
        // A value bringing its own braces is not substituted again, and makes it fall back.
        (
            vec![
                ("KERNEL_USERNAME", "{{ kernel_id }}"),
                ("KERNEL_POD_NAME", "{{ kernel_username }}"),
            ],
            format!("kernel-id-{ID}"),
            Some(UnsupportedExpression),
        ),
        // Only `{{` without `}}`: verbatim.
        (
            vec![user, ("KERNEL_POD_NAME", "{{ kernel_username")],
            "kernel-username".into(),
            None,
        ),
        // Non-ASCII lower-cases first, then becomes '-'.
        (
            vec![user, ("KERNEL_POD_NAME", "ÉCOLE-\u{212a}")],
            "cole-k".into(),
            None,
        ),
    ];
    for (vars, expected, fallback) in cases {
        let e = env(&vars);
        assert_eq!(pod_name_decision(&e, ID), (expected, fallback), "{vars:?}");
    }
}

#[test]
fn long_pod_names_are_shortened_to_a_dns_label() {
    let long_user = "a".repeat(40);
    let e = env(&[("KERNEL_USERNAME", &long_user)]);
    let name = pod_name(&e, ID);
    let full = format!("{long_user}-{ID}");
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    assert_eq!(name.len(), 63);
    assert_eq!(name, format!("{}-{}", &full[..54], &digest[..8]));
    // A '-' at the cut is trimmed rather than doubled.
    let e = env(&[(
        "KERNEL_POD_NAME",
        &format!("{}-{}", "b".repeat(53), "c".repeat(20)),
    )]);
    let name = pod_name(&e, ID);
    assert!(name.starts_with(&format!("{}-", "b".repeat(53))), "{name}");
    assert!(!name.contains("--"));
    assert_eq!(name.len(), 62);
    // Exactly 63 stays as is.
    let e = env(&[("KERNEL_POD_NAME", &"d".repeat(63))]);
    assert_eq!(pod_name(&e, ID), "d".repeat(63));
}

#[test]
fn namespace_plans() {
    let pod = "alice-1";
    assert_eq!(
        NamespacePlan::decide(&env(&[("KERNEL_NAMESPACE", "Team_A")]), Some("eg"), pod),
        NamespacePlan::Client("Team_A".into())
    );
    assert_eq!(
        NamespacePlan::decide(&env(&[]), Some("eg"), pod),
        NamespacePlan::Shared("eg".into())
    );
    let own = NamespacePlan::decide(&env(&[]), None, pod);
    assert_eq!(own, NamespacePlan::PerKernel { name: pod.into() });
    assert!(own.owned());
    assert_eq!(own.name(), pod);
    assert!(!NamespacePlan::Shared("eg".into()).owned());
}

#[test]
fn namespace_and_role_binding_bodies() {
    let labels = json!({"app": "enterprise-gateway", "component": "kernel", "kernel_id": ID});
    let ns = namespace_body("alice-1", ID);
    assert_eq!(ns["metadata"], json!({"name": "alice-1", "labels": labels}));
    let rb = role_binding_body("alice-1", ID, "kernel-controller", "default");
    assert_eq!(rb["kind"], "RoleBinding");
    assert_eq!(
        rb["metadata"],
        json!({"name": "kernel-controller", "labels": labels})
    );
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "", "kind": "ClusterRole", "name": "kernel-controller"})
    );
    assert_eq!(
        rb["subjects"],
        json!([{"apiGroup": "", "kind": "ServiceAccount", "name": "default", "namespace": "alice-1"}])
    );
}

#[test]
fn service_accounts() {
    assert_eq!(service_account(&env(&[]), "default"), "default");
    assert_eq!(
        service_account(&env(&[("KERNEL_SERVICE_ACCOUNT_NAME", "spark")]), "default"),
        "spark"
    );
}

#[test]
fn uid_gid_table() {
    let policy = IdPolicy::default();
    let ok: Vec<(Pairs<'_>, (u32, u32))> = vec![
        (vec![], (1000, 100)),
        (
            vec![("KERNEL_UID", " +1_001 "), ("KERNEL_GID", "0100")],
            (1001, 100),
        ),
        (
            vec![("KERNEL_UID", "4294967295"), ("KERNEL_GID", "-0_0\t")],
            (4294967295, 0),
        ),
    ];
    // GID 0 is prohibited by default; the third case uses a policy allowing it.
    let open = IdPolicy::parse(Some("0"), Some("")).unwrap();
    for (vars, expected) in ok {
        assert_eq!(open.check(&env(&vars)), Ok(expected), "{vars:?}");
    }
    let cases: Vec<(Pairs<'_>, &str, &str)> = vec![
        (
            vec![("KERNEL_UID", "abc"), ("KERNEL_GID", "x")],
            "Invalid KERNEL_UID value 'abc': not a valid integer!",
            "KERNEL_UID",
        ),
        (
            vec![("KERNEL_UID", "1000"), ("KERNEL_GID", "1 0")],
            "Invalid KERNEL_GID value '1 0': not a valid integer!",
            "KERNEL_GID",
        ),
        (
            vec![("KERNEL_UID", "-1"), ("KERNEL_GID", "x")],
            "Invalid KERNEL_GID value 'x': not a valid integer!",
            "KERNEL_GID",
        ),
        (
            vec![("KERNEL_UID", "-1")],
            "Invalid KERNEL_UID value '-1': must be in range 0-4294967295!",
            "KERNEL_UID",
        ),
        (
            vec![("KERNEL_UID", "4294967296")],
            "Invalid KERNEL_UID value '4294967296': must be in range 0-4294967295!",
            "KERNEL_UID",
        ),
        (
            vec![("KERNEL_GID", "99999999999999999999999999999999999999999")],
            "Invalid KERNEL_GID value '99999999999999999999999999999999999999999': must be in range 0-4294967295!",
            "KERNEL_GID",
        ),
        (
            vec![("KERNEL_UID", "0"), ("KERNEL_GID", "-5")],
            "Invalid KERNEL_GID value '-5': must be in range 0-4294967295!",
            "KERNEL_GID",
        ),
        (
            vec![("KERNEL_UID", " 00 ")],
            "Kernel's UID value of ' 00 ' has been denied via EG_PROHIBITED_UIDS!",
            "KERNEL_UID",
        ),
        (
            vec![("KERNEL_GID", "0")],
            "Kernel's GID value of '0' has been denied via EG_PROHIBITED_GIDS!",
            "KERNEL_GID",
        ),
    ];
    for (vars, message, variable) in cases {
        let err = policy.check(&env(&vars)).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.variable(), variable);
        assert_eq!(err.status(), 403);
    }
    let strict = IdPolicy::parse(Some("0, 1000,,"), Some("0,5")).unwrap();
    assert!(matches!(
        strict.check(&env(&[])),
        Err(IdError::Prohibited {
            which: IdKind::Uid,
            ..
        })
    ));
    assert_eq!(
        IdPolicy::parse(Some("0,root"), None).unwrap_err(),
        "Invalid entry 'root' in EG_PROHIBITED_UIDS='0,root'. All entries must be numeric \
         IDs, not usernames or group names. Example: EG_PROHIBITED_UIDS=0,1000"
    );
}
