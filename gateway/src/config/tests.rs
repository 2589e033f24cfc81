//! Parsing of the whole configuration: defaults, the KG_ fallbacks, every bad variable listed.

use super::*;

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["gateway"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn defaults_are_upstreams_container_defaults() {
    let c = Config::from_args_env(args(&[]), &no_env).unwrap();
    assert_eq!(c.listen, "0.0.0.0:8888".parse().unwrap());
    assert_eq!(c.base_url, "/");
    assert!(c.auth_token.is_none());
    assert!(c.allowed_kernels.is_none());
    assert_eq!(c.default_kernel_name, "python_docker");
    assert_eq!(c.unauthorized_users, ["root"]);
    assert!(c.authorized_users.is_empty());
    assert_eq!(
        c.kernel_dirs,
        vec![
            PathBuf::from("/usr/local/share/jupyter/kernels"),
            PathBuf::from("/usr/share/jupyter/kernels")
        ]
    );
}

#[test]
fn every_bad_variable_is_listed() {
    let err = Config::from_args_env(
        args(&[
            "--ip",
            "nope",
            "--port",
            "70000",
            "--allowed-kernels",
            "[1,2",
            "--log-level",
            "loud",
            "--admin-addr",
            "x",
            "--rescan-interval",
            "0",
        ]),
        &no_env,
    )
    .unwrap_err();
    let vars: Vec<_> = err.0.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        [
            "EG_IP",
            "EG_PORT",
            "EG_ALLOWED_KERNELS",
            "EG_LOG_LEVEL",
            "EG_ADMIN_ADDR",
            "EG_KERNELSPEC_RESCAN_INTERVAL"
        ]
    );
    assert!(err.to_string().contains("EG_PORT=\"70000\""), "{err}");
}

#[test]
fn allowed_kernels_forms() {
    assert_eq!(parse_allowed("null").unwrap(), None);
    assert_eq!(parse_allowed("[]").unwrap(), None);
    assert_eq!(
        parse_allowed(r#"["r_kubernetes","python_kubernetes"]"#).unwrap(),
        Some(vec!["r_kubernetes".into(), "python_kubernetes".into()])
    );
    assert_eq!(
        parse_allowed(" a, 'b' ,\"c\",").unwrap(),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
}

#[test]
fn base_url_and_fallbacks() {
    let env = |k: &str| match k {
        "KG_BASE_URL" => Some("gw//".to_owned()),
        "KG_AUTH_TOKEN" => Some("t".to_owned()),
        "JUPYTER_PATH" => Some("/a:/b".to_owned()),
        "JUPYTER_DATA_DIR" => Some("/d".to_owned()),
        _ => None,
    };
    let c = Config::from_args_env(args(&[]), &env).unwrap();
    assert_eq!(c.base_url, "/gw/");
    assert_eq!(c.auth_token.unwrap().expose(), "t");
    assert_eq!(
        c.kernel_dirs[..3],
        [
            PathBuf::from("/a/kernels"),
            PathBuf::from("/b/kernels"),
            PathBuf::from("/d/kernels")
        ]
    );
    let c = Config::from_args_env(args(&["--base-url", "/x/y"]), &env).unwrap();
    assert_eq!(c.base_url, "/x/y/");
    assert!(format!("{:?}", Secret::new("hidden")).contains("***"));
}

#[test]
fn cors_settings_with_kg_fallbacks() {
    let c = Config::from_args_env(args(&[]), &no_env).unwrap();
    assert!(c.cors.headers().is_empty());
    let env = |k: &str| match k {
        "KG_ALLOW_ORIGIN" => Some("*".to_owned()),
        "KG_MAX_AGE" => Some("60".to_owned()),
        _ => None,
    };
    let c = Config::from_args_env(
        args(&[
            "--allow-origin",
            "https://app.example",
            "--allow-methods",
            "GET",
        ]),
        &env,
    )
    .unwrap();
    let headers: Vec<String> = c
        .cors
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [
            "access-control-allow-methods=GET",
            "access-control-allow-origin=https://app.example",
            "access-control-max-age=60"
        ]
    );
}

#[test]
fn tls_problems_are_listed_with_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let junk = junk.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let vars = |extra: &[&str]| -> Vec<&'static str> {
        match Config::from_args_env(args(extra), &no_env) {
            Ok(c) => {
                assert!(c.tls.is_none());
                vec![]
            }
            Err(e) => e.0.iter().map(|e| e.var).collect(),
        }
    };
    assert_eq!(vars(&[]), Vec::<&str>::new());
    assert_eq!(
        vars(&["--certfile", "", "--keyfile", ""]),
        Vec::<&str>::new()
    );
    assert_eq!(vars(&["--certfile", junk]), ["EG_CERTFILE"]);
    assert_eq!(vars(&["--keyfile", junk]), ["EG_KEYFILE"]);
    assert_eq!(vars(&["--client-ca", junk]), ["EG_CLIENT_CA"]);
    assert_eq!(
        vars(&[
            "--certfile",
            missing,
            "--keyfile",
            junk,
            "--client-ca",
            junk
        ]),
        ["EG_CERTFILE", "EG_KEYFILE", "EG_CLIENT_CA"]
    );
    assert_eq!(
        vars(&["--port", "x", "--certfile", junk, "--allow-origin", "a\nb"]),
        ["EG_PORT", "EG_ALLOW_ORIGIN", "EG_CERTFILE"]
    );
    let env = |k: &str| (k == "KG_CERTFILE").then(|| "/nonexistent".to_owned());
    let err = Config::from_args_env(args(&["--keyfile", junk]), &env).unwrap_err();
    assert_eq!(err.0[0].var, "EG_CERTFILE");
    assert!(err.0[0].problem.contains("cannot read"), "{err}");
    // The protocol is read only with HTTPS; a refused one is listed beside the files' problems.
    assert_eq!(vars(&["--ssl-version", "3"]), Vec::<&str>::new());
    let https = ["--certfile", junk, "--keyfile", junk];
    assert_eq!(
        vars(&[&https[..], &["--ssl-version", "3"]].concat()),
        ["EG_SSL_VERSION", "EG_CERTFILE", "EG_KEYFILE"]
    );
    assert_eq!(
        vars(&[&https[..], &["--ssl-version", ""]].concat()),
        ["EG_CERTFILE", "EG_KEYFILE"]
    );
    let env = |k: &str| (k == "KG_SSL_VERSION").then(|| "16".to_owned());
    let err = Config::from_args_env(args(&https), &env).unwrap_err();
    assert_eq!(err.0[0].var, "EG_SSL_VERSION");
    assert!(err.0[0].problem.contains("client protocol"), "{err}");
}

#[test]
fn remote_launcher_variables() {
    let c = Config::from_args_env(args(&[]), &no_env).unwrap();
    assert_eq!(c.response.port, 8877);
    assert_eq!(c.response.port_retries, 10);
    assert_eq!(c.response.ip, None);
    assert!(!c.response.addr_any);
    assert!(c.response.prohibited.is_empty());
    assert_eq!(c.comm.timeout, Duration::from_millis(5));
    assert_eq!(c.comm.alternate_sigint, None);
    let c = Config::from_args_env(
        args(&[
            "--response-port",
            "9000",
            "--response-port-retries",
            "0",
            "--response-ip",
            "10.1.2.3",
            "--response-addr-any",
            "true",
            "--prohibited-local-ips",
            "172.17.,10\\.0\\.",
            "--socket-timeout",
            "0.5",
            "--alternate-sigint",
            "SIGUSR2",
        ]),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.response.port, 9000);
    assert_eq!(c.response.port_retries, 0);
    assert_eq!(c.response.ip, Some(Ipv4Addr::new(10, 1, 2, 3)));
    assert!(c.response.addr_any);
    assert!(c.response.prohibited.matches("172.17.0.2"));
    assert!(c.response.prohibited.matches("10.0.9.9"));
    assert!(!c.response.prohibited.matches("10.1.0.1"));
    assert_eq!(c.comm.timeout, Duration::from_millis(500));
    assert_eq!(c.comm.alternate_sigint, Some(12));
    let err = Config::from_args_env(
        args(&[
            "--response-port",
            "x",
            "--response-port-retries=-1",
            "--response-ip",
            "::1",
            "--response-addr-any",
            "maybe",
            "--prohibited-local-ips",
            "10.(",
            "--socket-timeout",
            "0",
            "--alternate-sigint",
            "SIGNOPE",
        ]),
        &no_env,
    )
    .unwrap_err();
    let vars: Vec<_> = err.0.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        [
            "EG_RESPONSE_PORT",
            "EG_RESPONSE_PORT_RETRIES",
            "EG_RESPONSE_IP",
            "EG_RESPONSE_ADDR_ANY",
            "EG_PROHIBITED_LOCAL_IPS",
            "EG_SOCKET_TIMEOUT",
            "EG_ALTERNATE_SIGINT"
        ]
    );
    assert!(err.to_string().contains("\"10.(\""), "{err}");
}

#[test]
fn trust_xheaders_with_its_kg_twin() {
    let c = Config::from_args_env(args(&[]), &no_env).unwrap();
    assert!(!c.trust_xheaders);
    let c = Config::from_args_env(args(&["--trust-xheaders", "True"]), &no_env).unwrap();
    assert!(c.trust_xheaders);
    let kg = |k: &str| (k == "KG_TRUST_XHEADERS").then(|| "yes".to_owned());
    assert!(
        Config::from_args_env(args(&[]), &kg)
            .unwrap()
            .trust_xheaders
    );
    let c = Config::from_args_env(args(&["--trust-xheaders", "0"]), &kg).unwrap();
    assert!(!c.trust_xheaders, "the EG_ variable wins over its KG_ twin");
    let err = Config::from_args_env(args(&["--trust-xheaders", "maybe"]), &no_env).unwrap_err();
    assert_eq!(err.0[0].var, "EG_TRUST_XHEADERS");
    let bad_kg = |k: &str| (k == "KG_TRUST_XHEADERS").then(|| "maybe".to_owned());
    let err = Config::from_args_env(args(&[]), &bad_kg).unwrap_err();
    assert_eq!(err.0[0].var, "KG_TRUST_XHEADERS");
}
