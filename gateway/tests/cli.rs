//! The `gateway` binary as a process: configuration errors (TLS settings included), the admin
//! endpoint, the token kept out of the logs, and SIGTERM with a watch held. Needs no component:
//! it runs the binary Cargo builds for these tests.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use e2e::{ChildGuard, free_ports, gateway_command_for, http_get, http_request, run_ok, wait_http};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

/// Runs the gateway with only `env` and checks that it exits 2 naming each of `vars`.
fn assert_rejected(env: &[(&str, &str)], vars: &[&str]) {
    let out = Command::new(GATEWAY)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    for var in vars {
        assert!(text.contains(var), "{var} not named in:\n{text}");
    }
}

#[test]
fn invalid_configuration_lists_every_bad_variable_and_exits_2() {
    assert_rejected(
        &[
            ("EG_PORT", "99999"),
            ("EG_IP", "not-an-ip"),
            ("EG_ALLOWED_KERNELS", "[\"a\","),
            ("EG_LOG_LEVEL", "chatty"),
            ("EG_TRUST_XHEADERS", "maybe"),
        ],
        &[
            "EG_PORT",
            "EG_IP",
            "EG_ALLOWED_KERNELS",
            "EG_LOG_LEVEL",
            "EG_TRUST_XHEADERS",
        ],
    );
}

#[test]
fn tls_configuration_errors_exit_2_naming_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "no PEM here").unwrap();
    let (junk, missing) = (junk.to_str().unwrap(), dir.path().join("missing.key"));
    assert_rejected(
        &[("EG_CERTFILE", junk), ("EG_ALLOW_ORIGIN", "bad\u{1}value")],
        &["EG_CERTFILE", "EG_ALLOW_ORIGIN"],
    );
    assert_rejected(
        &[
            ("EG_CERTFILE", junk),
            ("EG_KEYFILE", missing.to_str().unwrap()),
            ("EG_ADMIN_ADDR", "off"),
        ],
        &["EG_CERTFILE", "EG_KEYFILE"],
    );
    assert_rejected(
        &[
            ("EG_CERTFILE", junk),
            ("EG_KEYFILE", junk),
            ("EG_SSL_VERSION", "4"),
            ("EG_ADMIN_ADDR", "off"),
        ],
        &[
            "EG_SSL_VERSION",
            "TLS 1.0 and 1.1 are not offered",
            "EG_KEYFILE",
        ],
    );
    assert_rejected(
        &[
            ("EG_CERTFILE", junk),
            ("EG_KEYFILE", junk),
            ("KG_SSL_VERSION", "TLSv1_2"),
            ("EG_ADMIN_ADDR", "off"),
        ],
        &["EG_SSL_VERSION", "EG_CERTFILE"],
    );
    // The origin is checked on client certificates: without EG_CLIENT_CA there are none.
    assert_rejected(
        &[
            ("EG_AUTHORIZED_ORIGIN", "proxy.example"),
            ("EG_ADMIN_ADDR", "off"),
        ],
        &["EG_AUTHORIZED_ORIGIN", "set EG_CLIENT_CA"],
    );
    assert_rejected(
        &[
            ("EG_CERTFILE", junk),
            ("EG_KEYFILE", junk),
            ("EG_CLIENT_CA", junk),
            ("EG_AUTHORIZED_ORIGIN", "not a host"),
            ("EG_ADMIN_ADDR", "off"),
        ],
        &["EG_AUTHORIZED_ORIGIN", "host name", "EG_CLIENT_CA"],
    );
}

#[test]
fn admin_endpoint_token_hygiene_and_sigterm_with_a_held_watch() {
    let token = "cli-token-0b7e41d2";
    let root = tempfile::tempdir().unwrap();
    let spec = root.path().join("kernels/python_kubernetes");
    std::fs::create_dir_all(&spec).unwrap();
    std::fs::write(spec.join("kernel.json"), r#"{"argv": ["python"]}"#).unwrap();
    std::fs::create_dir_all(root.path().join("kernels/broken")).unwrap();
    std::fs::write(root.path().join("kernels/broken/kernel.json"), "{").unwrap();
    let ports = free_ports(2);
    let addr = format!("127.0.0.1:{}", ports[0]);
    let admin = format!("127.0.0.1:{}", ports[1]);
    let log = root.path().join("gateway.log");
    let mut child = ChildGuard(
        gateway_command_for(Path::new(GATEWAY), root.path(), ports[0])
            .env("EG_ADMIN_ADDR", &admin)
            .env("EG_AUTH_TOKEN", token)
            .env("EG_LOG_LEVEL", "DEBUG")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_http(&admin, "/livez", Duration::from_secs(10), "gateway admin");
    assert_eq!(http_get(&admin, "/livez").0, 200);
    assert_eq!(http_get(&admin, "/readyz").0, 200);

    let auth = format!("token {token}");
    let first = http_request(&addr, "/api/kernelspecs", &[("Authorization", &auth)]).unwrap();
    assert_eq!(first.status, 200);
    let bad = http_request(&addr, "/api/kernelspecs?token=wrong", &[]).unwrap();
    assert_eq!(bad.status, 401);
    let good = http_request(&addr, &format!("/api/kernelspecs?token={token}"), &[]).unwrap();
    assert_eq!(good.status, 200);

    let (_, metrics) = http_get(&admin, "/metrics");
    let specs = format!(
        "gateway_kernelspecs {}",
        1 + e2e::system_kernelspecs().len()
    );
    for needle in [
        "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"200\"} 2",
        "gateway_http_requests_total{route=\"/api/kernelspecs\",status=\"401\"} 1",
        "gateway_http_request_duration_seconds_count{route=\"/api/kernelspecs\"} 3",
        specs.as_str(),
        "gateway_watchers 0",
    ] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }

    // A watch held, then SIGTERM: the watch is answered (304) and the process exits 0 promptly.
    let etag = first.header("etag").unwrap().to_owned();
    let held_addr = addr.clone();
    let held = std::thread::spawn(move || {
        http_request(
            &held_addr,
            "/api/kernelspecs?wait=120",
            &[("Authorization", &auth), ("If-None-Match", &etag)],
        )
    });
    let started = Instant::now();
    while !http_get(&admin, "/metrics")
        .1
        .lines()
        .any(|l| l == "gateway_watchers 1")
    {
        assert!(started.elapsed() < Duration::from_secs(5), "watch not held");
        std::thread::sleep(Duration::from_millis(50));
    }
    run_ok("kill", &["-TERM", &child.0.id().to_string()]);
    let stopping = Instant::now();
    let answer = held.join().unwrap().expect("the held watch got no answer");
    assert_eq!(answer.status, 304);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "gateway did not stop within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("broken/kernel.json"),
        "the malformed kernel.json is not named in the log:\n{text}"
    );
    assert!(
        !text.contains(token),
        "the token leaked into the log:\n{text}"
    );
}
