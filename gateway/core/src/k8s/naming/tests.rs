use super::*;
use crate::k8s::test_support::{Pairs, env_of};

const ID: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

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
        let e = env_of(&vars);
        assert_eq!(pod_name_decision(&e, ID), (expected, fallback), "{vars:?}");
    }
}

#[test]
fn long_pod_names_are_shortened_to_a_dns_label() {
    let long_user = "a".repeat(40);
    let e = env_of(&[("KERNEL_USERNAME", &long_user)]);
    let name = pod_name(&e, ID);
    let full = format!("{long_user}-{ID}");
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    assert_eq!(name.len(), 63);
    assert_eq!(name, format!("{}-{}", &full[..54], &digest[..8]));
    // A '-' at the cut is trimmed rather than doubled.
    let e = env_of(&[(
        "KERNEL_POD_NAME",
        &format!("{}-{}", "b".repeat(53), "c".repeat(20)),
    )]);
    let name = pod_name(&e, ID);
    assert!(name.starts_with(&format!("{}-", "b".repeat(53))), "{name}");
    assert!(!name.contains("--"));
    assert_eq!(name.len(), 62);
    // Exactly 63 stays as is.
    let e = env_of(&[("KERNEL_POD_NAME", &"d".repeat(63))]);
    assert_eq!(pod_name(&e, ID), "d".repeat(63));
}

#[test]
fn namespace_plans() {
    let pod = "alice-1";
    assert_eq!(
        NamespacePlan::decide(&env_of(&[("KERNEL_NAMESPACE", "Team_A")]), Some("eg"), pod),
        NamespacePlan::Client("Team_A".into())
    );
    assert_eq!(
        NamespacePlan::decide(&env_of(&[]), Some("eg"), pod),
        NamespacePlan::Shared("eg".into())
    );
    let own = NamespacePlan::decide(&env_of(&[]), None, pod);
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
    assert_eq!(service_account(&env_of(&[]), "default"), "default");
    assert_eq!(
        service_account(
            &env_of(&[("KERNEL_SERVICE_ACCOUNT_NAME", "spark")]),
            "default"
        ),
        "spark"
    );
}

#[test]
fn uid_gid_table() {
    // KERNEL_UID and KERNEL_GID as the request sets them (None: unset).
    let ids = |uid: Option<&str>, gid: Option<&str>| {
        let set: Pairs<'_> = [("KERNEL_UID", uid), ("KERNEL_GID", gid)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        env_of(&set)
    };
    // GID 0 is prohibited by default; the third case uses a policy allowing it.
    let open = IdPolicy::parse(Some("0"), Some("")).unwrap();
    for (uid, gid, expected) in [
        (None, None, (1000, 100)),
        (Some(" +1_001 "), Some("0100"), (1001, 100)),
        (Some("4294967295"), Some("-0_0\t"), (4294967295, 0)),
    ] {
        assert_eq!(open.check(&ids(uid, gid)), Ok(expected), "{uid:?} {gid:?}");
    }
    // Refusals under the default policy: the ID at fault and what upstream says of its value.
    let policy = IdPolicy::default();
    const NOT_INT: &str = "not a valid integer!";
    const RANGE: &str = "must be in range 0-4294967295!";
    const DENIED: &str = "denied";
    let huge = "9".repeat(41);
    for (uid, gid, which, complaint) in [
        (Some("abc"), Some("x"), "UID", NOT_INT),
        (Some("1000"), Some("1 0"), "GID", NOT_INT),
        (Some("-1"), Some("x"), "GID", NOT_INT),
        (Some("-1"), None, "UID", RANGE),
        (Some("4294967296"), None, "UID", RANGE),
        (None, Some(huge.as_str()), "GID", RANGE),
        (Some("0"), Some("-5"), "GID", RANGE),
        (Some(" 00 "), None, "UID", DENIED),
        (None, Some("0"), "GID", DENIED),
    ] {
        let variable = format!("KERNEL_{which}");
        let value = if which == "UID" { uid } else { gid }.unwrap();
        let message = match complaint {
            DENIED => format!(
                "Kernel's {which} value of '{value}' has been denied via EG_PROHIBITED_{which}S!"
            ),
            _ => format!("Invalid {variable} value '{value}': {complaint}"),
        };
        let err = policy.check(&ids(uid, gid)).unwrap_err();
        assert_eq!(err.to_string(), message, "{uid:?} {gid:?}");
        assert_eq!(err.variable(), variable, "{uid:?} {gid:?}");
        assert_eq!(err.status(), 403, "{uid:?} {gid:?}");
    }
    let strict = IdPolicy::parse(Some("0, 1000,,"), Some("0,5")).unwrap();
    assert!(matches!(
        strict.check(&env_of(&[])),
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
