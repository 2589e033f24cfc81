//! `kip --once` against a real registry, a real Docker Engine and a real containerd 1.6 (through
//! its CRI plugin), all started by `tests/scripts/env-up.sh`. Every test pushes its own images,
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
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Docker => "docker",
            Rt::Cri => "cri",
        }
    }

    fn socket(self) -> Option<String> {
        component(match self {
            Rt::Docker => "KIP_TEST_DOCKER_SOCK",
            Rt::Cri => "KIP_TEST_CONTAINERD_SOCK",
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
            Rt::Cri => {
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
            Rt::Cri => run_ok(
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
    // Config and the image's own data layer at least: the shared base layer may already be in
    // the runtime's content store from images other tests pulled.
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

    // Always: pulled again (the runtime asks the registry for the manifest again).
    let out = kip(
        &["--once"],
        &with(rt.kip_env(&images), "KIP_PULL_POLICY", "Always"),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        manifest_requests() > manifests,
        "Always did not re-pull:\n{text}"
    );
    assert!(
        text.contains("outcome=\"pulled\"") || text.contains("outcome=pulled"),
        "{text}"
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

/// The daemon: the gateway is down at start, the agent stays up and retries with backoff, pulls
/// once the gateway answers, and exits 0 promptly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn cri_daemon_waits_for_the_gateway_then_stops_on_sigterm() {
    let rt = Rt::Cri;
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), rt.socket()) else {
        return;
    };
    let images = push_images(&registry, "test/cri-daemon", 1);
    // Choose the gateway's port, but do not listen yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(e2e::binary("kip"))
        .env_clear()
        .env("KIP_GATEWAY_HOST", format!("http://127.0.0.1:{port}"))
        .env("KIP_CRI_ENDPOINT", format!("unix://{sock}"))
        .env("KIP_CONTAINER_RUNTIME", "cri")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "kip exited while the gateway was down"
    );

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let body = json!({"default": "k", "kernelspecs": {"k": kernelspec_entry("k", json!({"image_name": images[0]}))}});
    let _gateway = FakeGateway::start_on(listener, body, None);
    let mut present = false;
    for _ in 0..60 {
        if rt.has_image(&images[0]) {
            present = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        present,
        "image not pulled after the gateway came up:\n{text}"
    );
    assert!(
        text.contains("cycle did not complete"),
        "no retry logged:\n{text}"
    );

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
