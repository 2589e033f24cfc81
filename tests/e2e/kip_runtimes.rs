//! `kip --once` against a real registry, a real Docker Engine and a real containerd 1.6 (through
//! its CRI plugin, and for some tests through the native containerd backend), all started by
//! `tests/scripts/env-up.sh`. Every test pushes its own images,
//! so tests share the daemons without sharing images.

use std::process::Command;

use e2e::{
    FakeGateway, component, kernelspec_entry, output_text, push_images, registry_requests, run_kip,
    run_ok,
};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Rt {
    Docker,
    Cri,
    /// The native backend (`KIP_CONTAINER_RUNTIME=containerd`) on the same containerd 1.6.
    Containerd,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Docker => "docker",
            Rt::Cri => "cri",
            Rt::Containerd => "containerd",
        }
    }

    fn socket(self) -> Option<String> {
        component(match self {
            Rt::Docker => "KIP_TEST_DOCKER_SOCK",
            Rt::Cri | Rt::Containerd => "KIP_TEST_CONTAINERD_SOCK",
        })
    }

    /// The agent's settings for this runtime, over a static list of images.
    fn kip_env(self, images: &[String]) -> Vec<(String, String)> {
        vec![
            (
                "KIP_CRI_ENDPOINT".into(),
                format!("unix://{}", self.socket().unwrap()),
            ),
            ("KIP_CONTAINER_RUNTIME".into(), self.name().into()),
            ("KIP_IMAGE_FETCHER".into(), "StaticListFetcher".into()),
            ("KIP_IMAGES".into(), images.join(",")),
            ("KIP_LOG_LEVEL".into(), "DEBUG".into()),
        ]
    }

    /// Checks, through the runtime's own API, that the image is there with all its layers.
    fn assert_complete(self, reference: &str) {
        let sock = self.socket().unwrap();
        match self {
            Rt::Docker => {
                let layers = run_ok(
                    "docker",
                    &[
                        "-H",
                        &format!("unix://{sock}"),
                        "image",
                        "inspect",
                        "-f",
                        "{{len .RootFS.Layers}}",
                        reference,
                    ],
                );
                assert_eq!(layers.trim(), "3", "{reference}: layers");
            }
            Rt::Cri | Rt::Containerd => {
                let check = run_ok(
                    "ctr",
                    &[
                        "--address",
                        &sock,
                        "-n",
                        "k8s.io",
                        "images",
                        "check",
                        &format!("name=={reference}"),
                    ],
                );
                let line = check
                    .lines()
                    .find(|l| l.starts_with(reference))
                    .unwrap_or_else(|| {
                        panic!("{reference} not in containerd's k8s.io namespace:\n{check}")
                    });
                assert!(line.contains("complete"), "{reference}: {line}");
                assert!(
                    line.trim_end().ends_with("true"),
                    "{reference} not unpacked: {line}"
                );
            }
        }
    }

    /// Digest of the node's image for a tag, as the runtime reports it.
    fn node_digest(self, reference: &str) -> String {
        let sock = self.socket().unwrap();
        match self {
            Rt::Docker => run_ok(
                "docker",
                &[
                    "-H",
                    &format!("unix://{sock}"),
                    "image",
                    "inspect",
                    "-f",
                    "{{index .RepoDigests 0}}",
                    reference,
                ],
            )
            .trim()
            .to_owned(),
            Rt::Cri | Rt::Containerd => run_ok(
                "ctr",
                &[
                    "--address",
                    &sock,
                    "-n",
                    "k8s.io",
                    "images",
                    "ls",
                    &format!("name=={reference}"),
                ],
            )
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_default()
            .to_owned(),
        }
    }

    fn has_image(self, reference: &str) -> bool {
        let sock = self.socket().unwrap();
        match self {
            Rt::Docker => Command::new("docker")
                .args([
                    "-H",
                    &format!("unix://{sock}"),
                    "image",
                    "inspect",
                    reference,
                ])
                .output()
                .unwrap()
                .status
                .success(),
            Rt::Cri | Rt::Containerd => run_ok(
                "ctr",
                &["--address", &sock, "-n", "k8s.io", "images", "ls", "-q"],
            )
            .lines()
            .any(|l| l == reference),
        }
    }
}

fn kip(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_kip(args, &env)
}

fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
    env
}

/// The repository path of a reference pushed to the test registry (`test/x-1`).
fn repo_of(reference: &str) -> &str {
    let path = reference.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0
}

fn pulls_multi_layer_images(rt: Rt) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-four", rt.name()), 4);
    assert_eq!(images.len(), 4);
    let out = kip(
        &["--once"],
        &with(rt.kip_env(&images), "KIP_NUM_PULLERS", "4"),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for image in &images {
        rt.assert_complete(image);
        // One log line per pull, with image, runtime, outcome and duration.
        let line = text
            .lines()
            .find(|l| l.contains("pull finished") && l.contains(image.as_str()))
            .unwrap_or_else(|| panic!("no pull line for {image}:\n{text}"));
        assert!(
            line.contains(&format!("runtime=\"{}\"", rt.name()))
                || line.contains(&format!("runtime={}", rt.name())),
            "{line}"
        );
        assert!(
            line.contains("outcome=\"pulled\"") || line.contains("outcome=pulled"),
            "{line}"
        );
        assert!(line.contains("duration_ms="), "{line}");
    }
}

#[test]
fn docker_pulls_multi_layer_images() {
    pulls_multi_layer_images(Rt::Docker);
}

#[test]
fn cri_pulls_multi_layer_images() {
    pulls_multi_layer_images(Rt::Cri);
}

fn policies(rt: Rt) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-policy", rt.name()), 1);
    let repo = repo_of(&images[0]).to_owned();
    let blob_gets = || registry_requests(&format!("GET /v2/{repo}/blobs/"));
    let manifest_requests = || registry_requests(&format!("/v2/{repo}/manifests/"));

    let out = kip(&["--once"], &rt.kip_env(&images));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(rt.has_image(&images[0]));
    let (blobs, manifests) = (blob_gets(), manifest_requests());
    // Config and the random-data layer are unique to this image; the base and id layers may
    // already be on the node from other tests' images.
    assert!(blobs >= 2, "first pull fetched {blobs} blobs of {repo}");

    // IfNotPresent: the image is on the node, so the registry hears nothing about it.
    let out = kip(&["--once"], &rt.kip_env(&images));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        blob_gets(),
        blobs,
        "IfNotPresent fetched blobs of a present image"
    );
    assert_eq!(
        manifest_requests(),
        manifests,
        "IfNotPresent asked the registry about a present image"
    );

    // Always on an unchanged tag: one manifest HEAD, no manifest GET, no blob GET, no pull.
    let heads = || registry_requests(&format!("\"HEAD /v2/{repo}/manifests/"));
    let manifest_gets = || registry_requests(&format!("\"GET /v2/{repo}/manifests/"));
    let (heads_before, gets_before) = (heads(), manifest_gets());
    let always = with(rt.kip_env(&images), "KIP_PULL_POLICY", "Always");
    let out = kip(&["--once"], &always);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(heads(), heads_before + 1, "no manifest HEAD:\n{text}");
    assert_eq!(
        manifest_gets(),
        gets_before,
        "manifest GET for an unchanged tag:\n{text}"
    );
    assert_eq!(blob_gets(), blobs, "blob GET for an unchanged tag:\n{text}");
    assert!(
        !text.contains("pull finished"),
        "pulled an unchanged tag:\n{text}"
    );

    // The tag moves to another image: Always pulls it, and the node's tag follows.
    let digest_before = rt.node_digest(&images[0]);
    assert!(digest_before.contains("sha256:"), "{digest_before}");
    let other = push_images(&registry, &format!("test/{}-policy-next", rt.name()), 1);
    let tag_of = |r: &str| r.split_once('/').unwrap().1.to_owned();
    let retag = Command::new("bash")
        .arg(e2e::repo_root().join("tests/scripts/build-images.sh"))
        .args([
            "--retag",
            &registry,
            &tag_of(&other[0]),
            &tag_of(&images[0]),
        ])
        .output()
        .unwrap();
    assert!(
        retag.status.success(),
        "{}",
        String::from_utf8_lossy(&retag.stderr)
    );
    let out = kip(&["--once"], &always);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("tag moved; pulling"), "{text}");
    assert!(
        text.contains("outcome=\"pulled\"") || text.contains("outcome=pulled"),
        "{text}"
    );
    assert!(
        manifest_gets() > gets_before,
        "the moved tag was not fetched:\n{text}"
    );
    let digest_after = rt.node_digest(&images[0]);
    assert_ne!(
        digest_after, digest_before,
        "the node's tag did not follow the move"
    );
}

#[test]
fn docker_if_not_present_and_always() {
    policies(Rt::Docker);
}

#[test]
fn cri_if_not_present_and_always() {
    policies(Rt::Cri);
}

#[test]
fn containerd_if_not_present_and_always() {
    policies(Rt::Containerd);
}

fn missing_image_fails_alone(rt: Rt) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let mut images = push_images(&registry, &format!("test/{}-partial", rt.name()), 2);
    let missing = format!("{registry}/test/{}-never-pushed:1", rt.name());
    // A registry nobody listens on: unreachable, retried, then reported.
    let unreachable = "127.0.0.1:1/test/nowhere:1".to_owned();
    images.insert(1, missing.clone());
    images.push(unreachable.clone());
    let out = kip(
        &["--once"],
        &with(rt.kip_env(&images), "KIP_NUM_RETRIES", "2"),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let summary = text
        .split("image(s) not pulled:")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        summary.contains(&format!("{missing}: not_found")),
        "{summary}"
    );
    assert!(summary.contains(&unreachable), "{summary}");
    assert!(
        summary.contains("after 1 attempt(s)"),
        "not-found must not be retried: {summary}"
    );
    assert!(
        summary.contains("after 2 attempt(s)"),
        "unreachable registry must be retried: {summary}"
    );
    for good in [&images[0], &images[2]] {
        assert!(
            !summary.contains(good.as_str()),
            "{good} reported as failed"
        );
        rt.assert_complete(good);
    }
}

#[test]
fn docker_missing_image_fails_alone() {
    missing_image_fails_alone(Rt::Docker);
}

#[test]
fn cri_missing_image_fails_alone() {
    missing_image_fails_alone(Rt::Cri);
}

/// The default fetcher against an upstream-shaped gateway with token auth: every `image_name`
/// and `executor_image_name` lands on the node, and the token never shows in the output.
async fn kernelspecs_images_land(rt: Rt) {
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-spec", rt.name()), 3);
    // The third one is named without its registry: KIP_DEFAULT_CONTAINER_REGISTRY supplies it.
    let bare = images[2].split_once('/').unwrap().1.to_owned();
    let token = "tok-5f2b9c1e-very-secret";
    let body = json!({"default": "python_kubernetes", "kernelspecs": {
        "python_kubernetes": kernelspec_entry("python_kubernetes", json!({"image_name": images[0]})),
        "spark_python_kubernetes": kernelspec_entry("spark_python_kubernetes",
            json!({"image_name": images[0], "executor_image_name": images[1]})),
        "r_kubernetes": kernelspec_entry("r_kubernetes", json!({"image_name": bare})),
        "python3": {"name": "python3", "spec": {"argv": ["python3"], "display_name": "Python 3 (local)",
            "language": "python", "metadata": {}}, "resources": {}},
    }});
    let gateway = FakeGateway::start(body, Some(token)).await;
    let env = vec![
        ("KIP_GATEWAY_HOST".to_owned(), gateway.url.clone()),
        ("KIP_AUTH_TOKEN".to_owned(), token.to_owned()),
        (
            "KIP_DEFAULT_CONTAINER_REGISTRY".to_owned(),
            registry.clone(),
        ),
        ("KIP_CRI_ENDPOINT".to_owned(), format!("unix://{sock}")),
        ("KIP_CONTAINER_RUNTIME".to_owned(), rt.name().to_owned()),
        ("KIP_LOG_LEVEL".to_owned(), "DEBUG".to_owned()),
    ];
    let out = tokio::task::spawn_blocking(move || kip(&["--once"], &env))
        .await
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for image in &images {
        rt.assert_complete(image);
    }
    assert!(
        !text.contains(token),
        "the token leaked into the output:\n{text}"
    );
    let seen = gateway.requests();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|r| r.uri == "/api/kernelspecs"
        && r.authorization.as_deref() == Some(&format!("token {token}"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_kernelspec_images_land_on_the_node() {
    kernelspecs_images_land(Rt::Docker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cri_kernelspec_images_land_on_the_node() {
    kernelspecs_images_land(Rt::Cri).await;
}

/// The daemon: the gateway is down at start, the agent stays up (live, not ready) and retries with
/// backoff, pulls once the gateway answers (then ready, with metrics), and exits 0 promptly on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn cri_daemon_waits_for_the_gateway_then_stops_on_sigterm() {
    let rt = Rt::Cri;
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, "test/cri-daemon", 1);
    // Choose the gateway's port, but do not listen yet.
    let port = e2e::free_port();
    let admin = format!("127.0.0.1:{}", e2e::free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = e2e::kip_command()
        .env("KIP_GATEWAY_HOST", format!("http://127.0.0.1:{port}"))
        .env("KIP_CRI_ENDPOINT", format!("unix://{sock}"))
        .env("KIP_CONTAINER_RUNTIME", "cri")
        .env("KIP_ADMIN_ADDR", &admin)
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
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
        rt.has_image(&images[0]),
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

/// Pulls from a registry with htpasswd auth: refused without credentials (not retried), pulled
/// with a pull secret given through KIP_DOCKER_CONFIG. The password's base64 forms hold '+' and
/// '/', so a client sending standard instead of URL-safe base64 to Docker would fail here.
fn credentials_from_pull_secret(rt: Rt) {
    let (Some(registry), Some(user), Some(password), Some(_)) = (
        component("KIP_TEST_AUTH_REGISTRY"),
        component("KIP_TEST_AUTH_USER"),
        component("KIP_TEST_AUTH_PASSWORD"),
        rt.socket(),
    ) else {
        return;
    };
    let image = e2e::push_images_with(
        &registry,
        &format!("test/{}-private", rt.name()),
        1,
        None,
        Some((&user, &password)),
    )
    .remove(0);

    // Without credentials: unauthorized, one attempt, named.
    let out = kip(&["--once"], &rt.kip_env(std::slice::from_ref(&image)));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{image}: unauthorized")), "{text}");
    assert!(text.contains("after 1 attempt(s)"), "{text}");

    // With the pull secret, in the form Kubernetes mounts a kubernetes.io/dockerconfigjson.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join(".dockerconfigjson");
    let auth = base64_encode(format!("{user}:{password}").as_bytes());
    e2e::write_docker_config(&secret, &registry, json!({"auth": auth}));
    let out = kip(
        &["--once"],
        &with(
            rt.kip_env(std::slice::from_ref(&image)),
            "KIP_DOCKER_CONFIG",
            secret.to_str().unwrap(),
        ),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    rt.assert_complete(&image);
    assert!(
        !text.contains(&password),
        "the password leaked into the output"
    );
    assert!(
        !text.contains(&auth),
        "the encoded credential leaked into the output"
    );
}

#[test]
fn docker_credentials_from_pull_secret() {
    credentials_from_pull_secret(Rt::Docker);
}

#[test]
fn cri_credentials_from_pull_secret() {
    credentials_from_pull_secret(Rt::Cri);
}

#[test]
fn unreadable_pull_secret_is_a_configuration_error() {
    let out = run_kip(
        &["--once"],
        &[("KIP_DOCKER_CONFIG", "/nonexistent/kip/.dockerconfigjson")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("KIP_DOCKER_CONFIG"),
        "{}",
        output_text(&out)
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// With the default KIP_INTERVAL (300 s), a gateway that offers watches gets a new kernelspec's
/// image onto the node within seconds: the agent holds a watch instead of waiting the interval.
#[tokio::test(flavor = "multi_thread")]
async fn cri_daemon_reacts_to_a_new_kernelspec_through_the_watch() {
    let rt = Rt::Cri;
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, "test/cri-watch", 2);
    let spec = |name: &str, image: &str| kernelspec_entry(name, json!({"image_name": image}));
    let gateway = FakeGateway::start_watching(
        json!({"default": "a", "kernelspecs": {"a": spec("a", &images[0])}}),
        None,
    )
    .await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = e2e::kip_command()
        .env("KIP_GATEWAY_HOST", &gateway.url)
        .env("KIP_CRI_ENDPOINT", format!("unix://{sock}"))
        .env("KIP_CONTAINER_RUNTIME", "cri")
        .env("KIP_ADMIN_ADDR", "off")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let wait_for = |image: &str, limit: std::time::Duration| {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if rt.has_image(image) {
                return Some(started.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    };
    let first =
        tokio::task::block_in_place(|| wait_for(&images[0], std::time::Duration::from_secs(30)));
    assert!(
        first.is_some(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );

    gateway.set_body(json!({"default": "a", "kernelspecs": {"a": spec("a", &images[0]), "b": spec("b", &images[1])}}));
    let second =
        tokio::task::block_in_place(|| wait_for(&images[1], std::time::Duration::from_secs(10)));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(log.path()).unwrap();
    let second = second.unwrap_or_else(|| panic!("new image not pulled within 10 s:\n{text}"));
    assert!(
        second < std::time::Duration::from_secs(3),
        "took {second:?}:\n{text}"
    );
    assert!(
        gateway.requests().iter().any(|r| r.uri.contains("wait=")),
        "no watch was held"
    );
}

/// The registry goes away in the middle of a download and comes back: the agent neither crashes
/// nor gives up, retries, and the image ends up complete.
fn registry_down_mid_pull_then_back(rt: Rt) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let out = Command::new("bash")
        .arg(e2e::repo_root().join("tests/scripts/build-images.sh"))
        .args([
            registry.as_str(),
            &format!("test/{}-flaky", rt.name()),
            "1",
            "16",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let proxy = e2e::CuttingProxy::start(&registry, 512 * 1024);
    let via_proxy = format!("{}/{}", proxy.addr, image.split_once('/').unwrap().1);
    let env = with(
        rt.kip_env(std::slice::from_ref(&via_proxy)),
        "KIP_NUM_RETRIES",
        "6",
    );
    let healer = std::thread::spawn(move || {
        // Back once the first downloads have been cut.
        let started = std::time::Instant::now();
        while proxy.cuts() == 0 && started.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let cuts = proxy.cuts();
        proxy.heal();
        (cuts, proxy)
    });
    let out = kip(&["--once"], &env);
    let (cuts, _proxy) = healer.join().unwrap();
    let text = output_text(&out);
    assert!(cuts > 0, "the proxy never cut a download:\n{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    rt.assert_complete(&via_proxy);
}

#[test]
fn docker_registry_down_mid_pull_then_back() {
    registry_down_mid_pull_then_back(Rt::Docker);
}

#[test]
fn cri_registry_down_mid_pull_then_back() {
    registry_down_mid_pull_then_back(Rt::Cri);
}

/// With the image filesystem fuller than KIP_MAX_DISK_USAGE_PERCENT, nothing is pulled and each
/// image is reported as skipped, naming the variable; with room, the same list pulls.
fn disk_pressure_skips_pulls(rt: Rt) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-disk", rt.name()), 1);
    // The test filesystem is more than 0.001 % used, so this limit is always reached.
    let out = kip(
        &["--once"],
        &with(rt.kip_env(&images), "KIP_MAX_DISK_USAGE_PERCENT", "0.001"),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}: skipped: image filesystem", images[0])),
        "{text}"
    );
    assert!(text.contains("KIP_MAX_DISK_USAGE_PERCENT=0.001"), "{text}");
    assert!(!rt.has_image(&images[0]), "pulled despite the limit");

    let out = kip(
        &["--once"],
        &with(rt.kip_env(&images), "KIP_MAX_DISK_USAGE_PERCENT", "100"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    rt.assert_complete(&images[0]);
}

#[test]
fn docker_disk_pressure_skips_pulls() {
    disk_pressure_skips_pulls(Rt::Docker);
}

#[test]
fn cri_disk_pressure_skips_pulls() {
    disk_pressure_skips_pulls(Rt::Cri);
}

#[test]
fn containerd_disk_pressure_skips_pulls() {
    disk_pressure_skips_pulls(Rt::Containerd);
}

/// A registry with Bearer-token auth, as Docker Hub works: the runtime follows the challenge to
/// the test token issuer. A `public/` image pulls anonymously; a private one is refused without
/// credentials (not retried) and pulls with the pull secret.
fn token_registry(rt: Rt) {
    let (Some(registry), Some(issuer_log), Some(user), Some(password), Some(_)) = (
        component("KIP_TEST_TOKEN_REGISTRY"),
        component("KIP_TEST_TOKEN_ISSUER_LOG"),
        component("KIP_TEST_AUTH_USER"),
        component("KIP_TEST_AUTH_PASSWORD"),
        rt.socket(),
    ) else {
        return;
    };
    let push = |prefix: &str| {
        e2e::push_images_with(&registry, prefix, 1, None, Some((&user, &password))).remove(0)
    };
    let public = push(&format!("public/{}-tok", rt.name()));
    let private = push(&format!("team/{}-tok", rt.name()));
    let token_requests = || {
        std::fs::read_to_string(&issuer_log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("GET /token?"))
            .count()
    };

    let before = token_requests();
    let out = kip(&["--once"], &rt.kip_env(std::slice::from_ref(&public)));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    rt.assert_complete(&public);
    assert!(
        token_requests() > before,
        "the pull did not go through the token issuer"
    );

    let out = kip(&["--once"], &rt.kip_env(std::slice::from_ref(&private)));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{private}: unauthorized"))
            || text.contains(&format!("{private}: not_found")),
        "{text}"
    );
    assert!(text.contains("after 1 attempt(s)"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("config.json");
    let auth = base64_encode(format!("{user}:{password}").as_bytes());
    e2e::write_docker_config(&secret, &registry, json!({"auth": auth}));
    let out = kip(
        &["--once"],
        &with(
            rt.kip_env(std::slice::from_ref(&private)),
            "KIP_DOCKER_CONFIG",
            secret.to_str().unwrap(),
        ),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    rt.assert_complete(&private);
    assert!(
        !text.contains(&password),
        "the password leaked into the output"
    );
}

#[test]
fn docker_token_registry() {
    token_registry(Rt::Docker);
}

#[test]
fn cri_token_registry() {
    token_registry(Rt::Cri);
}
