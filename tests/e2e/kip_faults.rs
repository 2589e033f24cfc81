//! The daemon under faults, against real containerd (CRI) and the test registry: a runtime that
//! is not there yet, a gateway that serves garbage, and SIGTERM in the middle of a pull.

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use e2e::{
    Backend, FakeGateway, PullPath, free_port, http_get, kernelspec_entry, push_images,
    push_images_with, run_kip, run_ok,
};
use serde_json::json;

/// Whether containerd (through CRI's k8s.io namespace) has the image.
fn has_image(reference: &str) -> bool {
    e2e::Backend::CRI.has_image("k8s.io", reference)
}

fn spawn_kip(env: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = e2e::kip_command();
    cmd.stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// SIGTERM, then the exit status within `limit`.
fn terminate(child: &mut Child, limit: Duration) -> Option<i32> {
    run_ok("kill", &["-TERM", &child.id().to_string()]);
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// The runtime socket does not exist at start: the agent stays live and not ready, retries, and
/// pulls once the socket appears, without a restart.
#[test]
fn runtime_socket_missing_at_start_then_present() {
    let Some((registry, sock)) = e2e::Backend::CRI.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let images = push_images(&registry, "test/fault-late-runtime", 1);
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late.sock");
    let admin = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("kip.log");
    let mut child = spawn_kip(
        &[
            ("KIP_CRI_ENDPOINT", &format!("unix://{}", late.display())),
            ("KIP_CONTAINER_RUNTIME", "cri"),
            ("KIP_IMAGE_FETCHER", "StaticListFetcher"),
            ("KIP_IMAGES", &images[0]),
            ("KIP_ADMIN_ADDR", &admin),
        ],
        &log,
    );
    std::thread::sleep(Duration::from_secs(2));
    let text = || std::fs::read_to_string(&log).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "kip exited without its runtime:\n{}",
        text()
    );
    assert_eq!(http_get(&admin, "/livez").0, 200);
    assert_eq!(
        http_get(&admin, "/readyz").0,
        503,
        "ready without a runtime"
    );

    std::os::unix::fs::symlink(&sock, &late).unwrap();
    let ready = wait_until(Duration::from_secs(40), || {
        http_get(&admin, "/readyz").0 == 200
    });
    assert!(ready, "not ready after the runtime appeared:\n{}", text());
    assert!(has_image(&images[0]), "{}", text());
    assert!(text().contains("cycle did not complete"), "{}", text());
    assert_eq!(
        terminate(&mut child, Duration::from_secs(12)),
        Some(0),
        "{}",
        text()
    );
}

/// A gateway that starts serving a body that is not a kernelspec listing: the error is logged,
/// the previous list is kept (no image is forgotten), and a later good body is picked up.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_listing_keeps_the_previous_list() {
    let Some((registry, sock)) = e2e::Backend::CRI.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let images = push_images(&registry, "test/fault-malformed", 2);
    let spec = |name: &str, image: &str| kernelspec_entry(name, json!({"image_name": image}));
    let gateway =
        FakeGateway::start(json!({"kernelspecs": {"a": spec("a", &images[0])}}), None).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kip.log");
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_kip(
        &[
            ("KIP_GATEWAY_HOST", &gateway.url),
            ("KIP_CRI_ENDPOINT", &format!("unix://{sock}")),
            ("KIP_CONTAINER_RUNTIME", "cri"),
            ("KIP_INTERVAL", "1"),
            ("KIP_ADMIN_ADDR", &admin),
        ],
        &log,
    );
    let text = || std::fs::read_to_string(&log).unwrap();
    let first = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || has_image(&images[0]))
    });
    assert!(first, "{}", text());

    gateway.set_body(json!({"oops": "<html>not a listing</html>"}));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kip died on a bad listing:\n{}",
        text()
    );
    assert!(
        text().contains("no \\\"kernelspecs\\\" object")
            || text().contains("no \"kernelspecs\" object"),
        "{}",
        text()
    );
    assert!(text().contains("kept_previous=true"), "{}", text());
    let (_, metrics) = http_get(&admin, "/metrics");
    assert!(
        metrics.contains("kip_images_desired 1"),
        "previous list forgotten:\n{metrics}"
    );
    assert!(
        metrics.contains("kip_fetch_total{result=\"error\"}"),
        "{metrics}"
    );

    gateway
        .set_body(json!({"kernelspecs": {"a": spec("a", &images[0]), "b": spec("b", &images[1])}}));
    let second = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || has_image(&images[1]))
    });
    assert!(second, "{}", text());
    assert_eq!(
        terminate(&mut child, Duration::from_secs(12)),
        Some(0),
        "{}",
        text()
    );
}

/// SIGTERM while a large image is being pulled: exit 0 within the grace period, and the next
/// run pulls the image completely.
#[test]
fn sigterm_during_a_pull_then_the_next_run_pulls() {
    let Some((registry, sock)) = e2e::Backend::CRI.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let image = push_images_with(&registry, "test/fault-sigterm", 1, Some(96), None).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kip.log");
    let env = [
        ("KIP_CRI_ENDPOINT", format!("unix://{sock}")),
        ("KIP_CONTAINER_RUNTIME", "cri".to_owned()),
        ("KIP_IMAGE_FETCHER", "StaticListFetcher".to_owned()),
        ("KIP_IMAGES", image.clone()),
        ("KIP_ADMIN_ADDR", "off".to_owned()),
        ("KIP_SHUTDOWN_GRACE", "5".to_owned()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = spawn_kip(&env_refs, &log);
    let text = || std::fs::read_to_string(&log).unwrap();
    // The cycle starts right after the runtime answers.
    assert!(
        wait_until(Duration::from_secs(20), || text()
            .contains("runtime answered")),
        "{}",
        text()
    );
    std::thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(
        terminate(&mut child, Duration::from_secs(8)),
        Some(0),
        "{}",
        text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "took {:?}",
        started.elapsed()
    );

    let once = run_kip(&["--once"], &env_refs);
    assert_eq!(once.status.code(), Some(0), "{}", e2e::output_text(&once));
    let check = run_ok(
        "ctr",
        &[
            "--address",
            &sock,
            "-n",
            "k8s.io",
            "images",
            "check",
            &format!("name=={image}"),
        ],
    );
    assert!(
        check.contains("complete") && check.trim_end().ends_with("true"),
        "{check}"
    );
}

/// While the first SIGTERM's shutdown is still draining (an admin client holds a half-sent
/// request, which the agent waits up to a second for), a second signal ends the process at once
/// with 130; with one signal the same shutdown ends with 0.
#[test]
fn second_signal_exits_at_once() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let run = |second: bool| {
        let admin = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join(format!("kip-{second}.log"));
        let mut child = spawn_kip(
            &[
                // No runtime: the agent idles, retrying; the test is about shutdown only.
                (
                    "KIP_CRI_ENDPOINT",
                    &format!("unix://{}/none.sock", dir.path().display()),
                ),
                ("KIP_CONTAINER_RUNTIME", "cri"),
                ("KIP_IMAGE_FETCHER", "StaticListFetcher"),
                ("KIP_IMAGES", "example.com/x:1"),
                ("KIP_ADMIN_ADDR", &admin),
                ("KIP_SHUTDOWN_GRACE", "30"),
            ],
            &log,
        );
        assert!(wait_until(Duration::from_secs(10), || http_get(
            &admin, "/livez"
        )
        .0 == 200));
        let mut held = std::net::TcpStream::connect(&admin).unwrap();
        held.write_all(b"GET /livez HTTP/1.1\r\nHost: kip\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        run_ok("kill", &["-TERM", &child.id().to_string()]);
        if second {
            std::thread::sleep(Duration::from_millis(150));
            run_ok("kill", &["-TERM", &child.id().to_string()]);
        }
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(held);
        (
            code,
            started.elapsed(),
            std::fs::read_to_string(&log).unwrap(),
        )
    };

    let (code, took, text) = run(false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        took >= Duration::from_millis(800),
        "no drain to interrupt ({took:?}):\n{text}"
    );

    let (code, took, text) = run(true);
    assert_eq!(code, Some(130), "{text}");
    assert!(took < Duration::from_millis(700), "took {took:?}:\n{text}");
    assert!(text.contains("second signal: exiting at once"), "{text}");
}

/// An unknown image fails once as not_found; an unknown registry is retried as unavailable;
/// the good images still land.
fn unknown_image_and_registry(backend: Backend) {
    let Some((registry, mut images)) = backend.push("unknown", 2, None) else {
        return;
    };
    let missing = format!("{registry}/test/{}-never-pushed:1", backend.tag());
    // A registry nobody listens on: unreachable, retried, then reported.
    let unreachable = "127.0.0.1:1/test/nowhere:1".to_owned();
    images.insert(1, missing.clone());
    images.push(unreachable.clone());
    let good = [images[0].clone(), images[2].clone()];
    let ns = backend.namespace("kipunknown");
    let text = backend
        .kip(&ns, &images)
        .env("KIP_NUM_RETRIES", "2")
        .expect(1);
    backend.assert_taken(&text, &good);
    let summary = text
        .split("image(s) not pulled:")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    let line = |needle: &str| {
        summary
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in summary: {summary}"))
            .to_owned()
    };
    let m = line(&missing);
    assert!(m.contains(&format!("{missing}: not_found")), "{m}");
    assert!(
        m.contains("after 1 attempt(s)"),
        "not-found must not be retried: {m}"
    );
    if let Backend::Containerd(daemon, path) = backend {
        if path.on(daemon) == PullPath::Transfer {
            assert!(m.contains("containerd: transfer"), "{m}");
        } else {
            assert!(m.contains("manifest"), "{m}");
        }
    }
    let u = line(&unreachable);
    assert!(
        u.contains("after 2 attempt(s)"),
        "unreachable registry must be retried: {u}"
    );
    assert!(u.contains("127.0.0.1:1"), "{u}");
    if backend.is_containerd() {
        assert!(u.contains("unavailable"), "{u}");
    }
    for good in &good {
        assert!(
            !summary.contains(good.as_str()),
            "{good} reported as failed"
        );
        backend.assert_complete(&ns, good);
    }
    backend.assert_clean(&ns);
}

#[test]
fn unknown_image_and_registry_fail_alone() {
    Backend::MATRIX
        .into_iter()
        .for_each(unknown_image_and_registry);
}

/// The daemon: the gateway is down at start, the agent stays up (live, not ready) and retries with
/// backoff, pulls once the gateway answers (then ready, with metrics), and exits 0 promptly on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn cri_daemon_waits_for_the_gateway_then_stops_on_sigterm() {
    let backend = Backend::CRI;
    let Some((_, images)) = backend.push("daemon", 1, None) else {
        return;
    };
    // Choose the gateway's port, but do not listen yet.
    let port = e2e::free_port();
    let admin = format!("127.0.0.1:{}", e2e::free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let gateway = format!("http://127.0.0.1:{port}");
    let mut child = backend.cri_daemon(&gateway, &admin, log.reopen().unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kip exited while the gateway was down"
    );
    assert_eq!(
        e2e::http_get(&admin, "/livez").0,
        200,
        "not live while the gateway is down"
    );
    assert_eq!(
        e2e::http_get(&admin, "/readyz").0,
        503,
        "ready before any cycle completed"
    );
    // Before any pull, every pull series is there at zero, so alerts have something to read.
    let (status, metrics) = e2e::http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    let results = [
        "pulled",
        "not_found",
        "unauthorized",
        "unavailable",
        "timeout",
        "error",
    ];
    let zeros = results.map(|r| format!("kip_pulls_total{{runtime=\"cri\",result=\"{r}\"}} 0"));
    let missing: Vec<&String> = zeros
        .iter()
        .filter(|z| !metrics.contains(z.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not in /metrics:\n{metrics}"
    );
    let histogram = "kip_pull_duration_seconds_count{runtime=\"cri\"} 0";
    assert!(
        metrics.contains(histogram),
        "{histogram} not in /metrics:\n{metrics}"
    );

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let body = json!({"default": "k", "kernelspecs": {"k": kernelspec_entry("k", json!({"image_name": images[0]}))}});
    let _gateway = FakeGateway::start_on(listener, body, None);
    let mut ready = false;
    for _ in 0..60 {
        if e2e::http_get(&admin, "/readyz").0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(ready, "not ready after the gateway came up:\n{text}");
    assert!(
        backend.has_image("k8s.io", &images[0]),
        "ready but the image is missing:\n{text}"
    );
    assert!(
        text.contains("image list unavailable"),
        "no retry logged:\n{text}"
    );
    let (status, metrics) = e2e::http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    for needle in [
        "kip_pulls_total{runtime=\"cri\",result=\"pulled\"} 1",
        "kip_fetch_total{result=\"error\"}",
        "kip_fetch_total{result=\"ok\"} 1",
        "kip_images_desired 1",
        "kip_images_present 1",
        "kip_pull_duration_seconds_count{runtime=\"cri\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} not in /metrics:\n{metrics}"
        );
    }

    run_ok("kill", &["-TERM", &child.id().to_string()]);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "kip did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );
}
