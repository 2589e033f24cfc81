//! `kip --once` with the native containerd backend against a real registry and real containerd
//! 1.6 and 2.x, all started by `tests/scripts/env-up.sh`. Every test pushes its own images.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Output,
    thread,
};

use e2e::{
    component, output_text, push_images, push_images_with, registry_requests, run_kip, run_ok,
    write_docker_config,
};
use kip::{
    config::Endpoint,
    runtime::{CriRuntime, ImageRuntime},
};

#[derive(Clone, Copy, Debug)]
enum Cd {
    V1,
    V2,
}

impl Cd {
    fn tag(self) -> &'static str {
        match self {
            Cd::V1 => "cd1",
            Cd::V2 => "cd2",
        }
    }

    fn socket(self) -> Option<String> {
        component(match self {
            Cd::V1 => "KIP_TEST_CONTAINERD_SOCK",
            Cd::V2 => "KIP_TEST_CONTAINERD2_SOCK",
        })
    }

    /// The ctr that goes with this containerd.
    fn ctr_bin(self) -> String {
        match self {
            Cd::V1 => "ctr".to_owned(),
            Cd::V2 => component("KIP_TEST_CONTAINERD2_CTR").unwrap(),
        }
    }

    fn snapshotter(self) -> String {
        component(match self {
            Cd::V1 => "KIP_TEST_CONTAINERD_SNAPSHOTTER",
            Cd::V2 => "KIP_TEST_CONTAINERD2_SNAPSHOTTER",
        })
        .unwrap_or_else(|| "overlayfs".to_owned())
    }

    /// Runs `ctr --address SOCK -n NS ARGS…` and returns stdout.
    fn ctr(self, ns: &str, args: &[&str]) -> String {
        let sock = self.socket().unwrap();
        let mut all = vec!["--address", &sock, "-n", ns];
        all.extend_from_slice(args);
        run_ok(&self.ctr_bin(), &all)
    }

    /// The agent's settings: this containerd, namespace `ns`, a static list of images.
    fn env(self, ns: &str, images: &[String]) -> Vec<(String, String)> {
        vec![
            ("KIP_CONTAINERD_NAMESPACE".into(), ns.into()),
            (
                "KIP_CRI_ENDPOINT".into(),
                format!("unix://{}", self.socket().unwrap()),
            ),
            ("KIP_CONTAINER_RUNTIME".into(), "containerd".into()),
            ("KIP_CONTAINERD_SNAPSHOTTER".into(), self.snapshotter()),
            ("KIP_IMAGE_FETCHER".into(), "StaticListFetcher".into()),
            ("KIP_IMAGES".into(), images.join(",")),
            ("KIP_LOG_LEVEL".into(), "DEBUG".into()),
        ]
    }

    /// `ctr images check`: complete content and unpacked for the snapshotter.
    fn assert_complete(self, ns: &str, reference: &str) {
        let check = self.ctr(
            ns,
            &[
                "images",
                "check",
                "--snapshotter",
                &self.snapshotter(),
                &format!("name=={reference}"),
            ],
        );
        let line = check
            .lines()
            .find(|l| l.starts_with(reference))
            .unwrap_or_else(|| panic!("{reference} not in namespace {ns}:\n{check}"));
        assert!(line.contains("complete"), "{reference}: {line}");
        assert!(
            line.trim_end().ends_with("true"),
            "{reference} not unpacked: {line}"
        );
    }

    /// No lease and no ingest of kip's is left behind.
    fn assert_clean(self, ns: &str) {
        let leases = self.ctr(ns, &["leases", "ls", "-q"]);
        assert!(
            !leases.lines().any(|l| l.starts_with("kip-")),
            "leases left: {leases}"
        );
        let active = self.ctr(ns, &["content", "active"]);
        assert!(
            !active.lines().any(|l| l.starts_with("kip-")),
            "ingests left: {active}"
        );
    }

    fn has_image(self, ns: &str, reference: &str) -> bool {
        self.ctr(ns, &["images", "ls", "-q"])
            .lines()
            .any(|l| l == reference)
    }
}

fn kip(args: &[&str], env: &[(String, String)]) -> Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_kip(args, &env)
}

fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
    env
}

fn repo_of(reference: &str) -> &str {
    let path = reference.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0
}

fn unique(cd: Cd, what: &str) -> String {
    format!(
        "{what}-{}-{}",
        cd.tag(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_007
    )
}

/// How a test sets `KIP_CONTAINERD_TRANSFER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Not set: `auto`, whichever path it picks.
    Auto,
    /// `off`: the native path.
    Native,
    /// `on`: the Transfer service (containerd 2.x offers it); every pull is checked to have
    /// gone through it.
    Transfer,
}

impl Path {
    /// A suffix for repository names, so that each variant pulls images of its own.
    fn tag(self) -> &'static str {
        match self {
            Path::Auto => "",
            Path::Native => "-native",
            Path::Transfer => "-xfer",
        }
    }

    fn apply(self, env: Vec<(String, String)>) -> Vec<(String, String)> {
        match self {
            Path::Auto => env,
            Path::Native => with(env, "KIP_CONTAINERD_TRANSFER", "off"),
            Path::Transfer => with(env, "KIP_CONTAINERD_TRANSFER", "on"),
        }
    }

    /// The path taken against `cd`: `auto` uses the Transfer service where it is offered
    /// (containerd 2.x), as it is the faster path in the benchmark.
    fn on(self, cd: Cd) -> Path {
        match (self, cd) {
            (Path::Auto, Cd::V1) => Path::Native,
            (Path::Auto, Cd::V2) => Path::Transfer,
            (path, _) => path,
        }
    }

    /// Every pull in the output went the way expected against `cd`.
    fn assert_taken(self, cd: Cd, text: &str, images: &[String]) {
        let want = match self.on(cd) {
            Path::Transfer => "path=\"transfer\"",
            _ => "path=\"native\"",
        };
        for image in images {
            let line = text
                .lines()
                .find(|l| l.contains("containerd pull done") && l.contains(image.as_str()))
                .unwrap_or_else(|| panic!("no 'containerd pull done' line for {image}:\n{text}"));
            assert!(
                line.contains(want),
                "{image} not pulled with {want}: {line}"
            );
        }
    }
}

/// 4 multi-layer images sharing a base layer land in k8s.io complete and unpacked; a container
/// runs from one and sees its rootfs; CRI lists them; nothing is left behind; a second run
/// finds them present and asks the registry nothing.
async fn four_images(cd: Cd, path: Path) {
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let images = push_images(
        &registry,
        &format!("test/{}{}-four", cd.tag(), path.tag()),
        4,
    );
    let env = path.apply(with(cd.env("k8s.io", &images), "KIP_NUM_PULLERS", "4"));
    let env2 = env.clone();
    let out = tokio::task::spawn_blocking(move || kip(&["--once"], &env2))
        .await
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    path.assert_taken(cd, &text, &images);
    for image in &images {
        cd.assert_complete("k8s.io", image);
        let line = text
            .lines()
            .find(|l| l.contains("pull finished") && l.contains(image.as_str()))
            .unwrap_or_else(|| panic!("no pull line for {image}:\n{text}"));
        assert!(line.contains("runtime=\"containerd\""), "{line}");
        assert!(line.contains("outcome=\"pulled\""), "{line}");
    }
    cd.assert_clean("k8s.io");

    // A container starts from the image and sees its rootfs.
    let id = unique(cd, "run");
    let printed = cd.ctr(
        "k8s.io",
        &[
            "run",
            "--rm",
            "--snapshotter",
            &cd.snapshotter(),
            &images[2],
            &id,
            "/bin/sh",
            "-c",
            "cat /kernel-id",
        ],
    );
    assert_eq!(printed.trim(), "3", "container output");

    // CRI (kubelet's view) lists them.
    let cri = CriRuntime::connect(&Endpoint::Unix(sock.into()), Default::default()).unwrap();
    let listed = cri.list_images().await.unwrap();
    for image in &images {
        assert!(
            listed.contains(image),
            "CRI does not list {image}: {listed:?}"
        );
    }

    // IfNotPresent: present and unpacked, so the registry hears nothing.
    let repo = repo_of(&images[0]).to_owned();
    let before = registry_requests(&format!("/v2/{repo}/"));
    let out = tokio::task::spawn_blocking(move || kip(&["--once"], &env))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(registry_requests(&format!("/v2/{repo}/")), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd16_pulls_four_images_that_run() {
    four_images(Cd::V1, Path::Auto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd2_pulls_four_images_that_run() {
    four_images(Cd::V2, Path::Auto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd2_native_pulls_four_images_that_run() {
    four_images(Cd::V2, Path::Native).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd2_transfer_pulls_four_images_that_run() {
    four_images(Cd::V2, Path::Transfer).await;
}

/// An image whose blobs are already in containerd's store (through another namespace) is
/// committed into k8s.io without any download: the STAT reports every byte present and the
/// COMMIT must carry offset == size and no data. (The native path's write protocol.)
fn shared_blobs_commit_without_download(cd: Cd) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-shared", cd.tag()), 1);
    let repo = repo_of(&images[0]).to_owned();
    let other = unique(cd, "kipother");
    let ns = unique(cd, "kipshared");
    let out = kip(&["--once"], &Path::Native.apply(cd.env(&other, &images)));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    cd.assert_complete(&other, &images[0]);
    let blob_gets = || registry_requests(&format!("GET /v2/{repo}/blobs/"));
    let before = blob_gets();

    let out = kip(&["--once"], &Path::Native.apply(cd.env(&ns, &images)));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    cd.assert_complete(&ns, &images[0]);
    assert_eq!(blob_gets(), before, "blobs downloaded again:\n{text}");
    assert!(text.contains("CommitOnly"), "{text}");
    cd.assert_clean(&ns);
    cd.assert_clean(&other);
}

#[test]
fn containerd16_shared_blobs_commit_without_download() {
    shared_blobs_commit_without_download(Cd::V1);
}

#[test]
fn containerd2_shared_blobs_commit_without_download() {
    shared_blobs_commit_without_download(Cd::V2);
}

/// A TCP proxy to the registry that closes each connection after `limit` bytes from upstream:
/// a download interrupted mid-layer.
fn cutting_proxy(upstream: String, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut up) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_r, mut up_w) = (client.try_clone().unwrap(), up.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut client_r, &mut up_w);
            });
            thread::spawn(move || {
                let mut sent = 0usize;
                let mut buf = [0u8; 64 * 1024];
                while sent < limit {
                    let n = match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// A pull cut off mid-layer fails clearly and leaves its partial ingest; the next pull resumes
/// it with an HTTP Range request (206) and succeeds, leaving nothing behind. (The native path.)
fn interrupted_pull_resumes(cd: Cd) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let images = push_images_with(
        &registry,
        &format!("test/{}-resume", cd.tag()),
        1,
        Some(24),
        None,
    );
    let path = images[0].split_once('/').unwrap().1.to_owned();
    let proxy = cutting_proxy(registry.clone(), 6 * 1024 * 1024);
    let via_proxy = format!("{proxy}/{path}");
    let ns = unique(cd, "kipresume");
    let out = kip(
        &["--once"],
        &Path::Native.apply(with(
            cd.env(&ns, std::slice::from_ref(&via_proxy)),
            "KIP_NUM_RETRIES",
            "1",
        )),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{via_proxy}: unavailable")),
        "{text}"
    );
    let active = cd.ctr(&ns, &["content", "active"]);
    assert!(
        active.lines().any(|l| l.starts_with("kip-sha256:")),
        "no partial ingest left to resume:\n{active}\n{text}"
    );

    // What the failed attempt committed (config, small layers, their snapshots) is kept under
    // the image's resume lease, through a garbage collection run forced here.
    let leases = cd.ctr(&ns, &["leases", "ls", "-q"]);
    assert!(
        leases.lines().any(|l| l.starts_with("kip-resume-image-")),
        "no resume lease for the failed pull:\n{leases}\n{text}"
    );
    let gc = unique(cd, "gc");
    cd.ctr(&ns, &["leases", "create", "--id", &gc]);
    cd.ctr(&ns, &["leases", "rm", "--sync", &gc]);

    let repo = repo_of(&images[0]).to_owned();
    let log = component("KIP_TEST_REGISTRY_LOG").unwrap();
    let blob_gets = |status: &str| -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("GET /v2/{repo}/blobs/")) && l.contains(status))
            .map(str::to_owned)
            .collect()
    };
    let (ranged_before, full_before) = (blob_gets("\" 206 ").len(), blob_gets("\" 200 ").len());
    let out = kip(&["--once"], &Path::Native.apply(cd.env(&ns, &images)));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        blob_gets("\" 206 ").len() > ranged_before,
        "the second pull did not resume with a Range request:\n{text}"
    );
    assert_eq!(
        blob_gets("\" 200 ")[full_before..],
        [] as [String; 0],
        "the second pull downloaded whole blobs again:\n{text}"
    );
    assert!(text.contains("From("), "{text}");
    cd.assert_complete(&ns, &images[0]);
    // The proxy's name for the image is pulled too now (its blobs are all in): its resume lease
    // goes with that success.
    let out = kip(
        &["--once"],
        &Path::Native.apply(cd.env(&ns, std::slice::from_ref(&via_proxy))),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_interrupted_pull_resumes() {
    interrupted_pull_resumes(Cd::V1);
}

#[test]
fn containerd2_interrupted_pull_resumes() {
    interrupted_pull_resumes(Cd::V2);
}

/// An unknown image fails once as not_found; an unknown registry is retried as unavailable;
/// the good image still lands.
fn unknown_image_and_registry(cd: Cd, path: Path) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let tag = format!("{}{}", cd.tag(), path.tag());
    let mut images = push_images(&registry, &format!("test/{tag}-unknown"), 1);
    let missing = format!("{registry}/test/{tag}-never-pushed:1");
    let unreachable = "127.0.0.1:1/test/nowhere:1".to_owned();
    images.push(missing.clone());
    images.push(unreachable.clone());
    let ns = unique(cd, "kipunknown");
    let out = kip(
        &["--once"],
        &path.apply(with(cd.env(&ns, &images), "KIP_NUM_RETRIES", "2")),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    path.assert_taken(cd, &text, &images[..1]);
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
    assert!(
        m.contains("not_found") && m.contains("after 1 attempt(s)"),
        "{m}"
    );
    if path.on(cd) == Path::Transfer {
        assert!(m.contains("containerd: transfer"), "{m}");
    } else {
        assert!(m.contains("manifest"), "{m}");
    }
    let u = line(&unreachable);
    assert!(
        u.contains("unavailable") && u.contains("after 2 attempt(s)"),
        "{u}"
    );
    assert!(u.contains("127.0.0.1:1"), "{u}");
    cd.assert_complete(&ns, &images[0]);
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_unknown_image_and_registry_fail_clearly() {
    unknown_image_and_registry(Cd::V1, Path::Auto);
}

#[test]
fn containerd2_unknown_image_and_registry_fail_clearly() {
    unknown_image_and_registry(Cd::V2, Path::Auto);
}

#[test]
fn containerd2_transfer_unknown_image_and_registry_fail_clearly() {
    unknown_image_and_registry(Cd::V2, Path::Transfer);
}

/// Two agents pulling the same images at the same time both succeed.
fn two_agents(cd: Cd) {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let images = push_images_with(
        &registry,
        &format!("test/{}-twin", cd.tag()),
        2,
        Some(16),
        None,
    );
    let ns = unique(cd, "kiptwin");
    let env = with(cd.env(&ns, &images), "KIP_NUM_PULLERS", "2");
    let spawn = |env: Vec<(String, String)>| thread::spawn(move || kip(&["--once"], &env));
    let (a, b) = (spawn(env.clone()), spawn(env));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    }
    for image in &images {
        cd.assert_complete(&ns, image);
        assert!(cd.has_image(&ns, image));
    }
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_two_agents_pull_the_same_images() {
    two_agents(Cd::V1);
}

#[test]
fn containerd2_two_agents_pull_the_same_images() {
    two_agents(Cd::V2);
}

#[test]
fn containerd_config_is_reported_with_the_variable() {
    let out = run_kip(
        &["--once"],
        &[
            ("KIP_CONTAINER_RUNTIME", "containerd"),
            ("KIP_CONTAINERD_NAMESPACE", "bad ns"),
            ("KIP_MAX_CONCURRENT_DOWNLOADS", "0"),
            ("KIP_CONTAINERD_TRANSFER", "sometimes"),
        ],
    );
    let text = output_text(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("KIP_CONTAINERD_NAMESPACE"), "{text}");
    assert!(text.contains("KIP_MAX_CONCURRENT_DOWNLOADS"), "{text}");
    assert!(
        text.contains("KIP_CONTAINERD_TRANSFER=\"sometimes\": expected auto, on or off"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
}

/// A registry behind htpasswd (Basic challenge): refused without credentials, pulled with the
/// pull secret's, which never show in the output.
fn credentials_from_pull_secret(cd: Cd, path: Path) {
    let (Some(registry), Some(user), Some(password), Some(_)) = (
        component("KIP_TEST_AUTH_REGISTRY"),
        component("KIP_TEST_AUTH_USER"),
        component("KIP_TEST_AUTH_PASSWORD"),
        cd.socket(),
    ) else {
        return;
    };
    let image = push_images_with(
        &registry,
        &format!("test/{}{}-private", cd.tag(), path.tag()),
        1,
        None,
        Some((&user, &password)),
    )
    .remove(0);
    let ns = unique(cd, "kipauth");

    let out = kip(
        &["--once"],
        &path.apply(cd.env(&ns, std::slice::from_ref(&image))),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{image}: unauthorized")), "{text}");
    assert!(text.contains("after 1 attempt(s)"), "{text}");
    assert!(!cd.has_image(&ns, &image));

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join(".dockerconfigjson");
    write_docker_config(
        &secret,
        &registry,
        serde_json::json!({"username": user, "password": password}),
    );
    let out = kip(
        &["--once"],
        &path.apply(with(
            cd.env(&ns, std::slice::from_ref(&image)),
            "KIP_DOCKER_CONFIG",
            secret.to_str().unwrap(),
        )),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    path.assert_taken(cd, &text, std::slice::from_ref(&image));
    assert!(
        !text.contains("does not send registry credentials"),
        "{text}"
    );
    assert!(!text.contains(&password), "the password leaked: {text}");
    cd.assert_complete(&ns, &image);
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_credentials_from_pull_secret() {
    credentials_from_pull_secret(Cd::V1, Path::Auto);
}

#[test]
fn containerd2_credentials_from_pull_secret() {
    credentials_from_pull_secret(Cd::V2, Path::Auto);
}

#[test]
fn containerd2_transfer_credentials_from_pull_secret() {
    credentials_from_pull_secret(Cd::V2, Path::Transfer);
}

/// A registry with Bearer-token auth (the harness's token issuer, as Docker Hub works): a
/// `public/` image pulls anonymously through the issuer; a private one is refused without
/// credentials (not retried) and pulls with the pull secret's, which never show in the output.
fn token_registry(cd: Cd, path: Path) {
    let (Some(registry), Some(issuer_log), Some(user), Some(password), Some(_)) = (
        component("KIP_TEST_TOKEN_REGISTRY"),
        component("KIP_TEST_TOKEN_ISSUER_LOG"),
        component("KIP_TEST_AUTH_USER"),
        component("KIP_TEST_AUTH_PASSWORD"),
        cd.socket(),
    ) else {
        return;
    };
    let push = |prefix: &str| {
        push_images_with(&registry, prefix, 1, None, Some((&user, &password))).remove(0)
    };
    let tag = format!("{}{}", cd.tag(), path.tag());
    let public = push(&format!("public/{tag}-tok"));
    let private = push(&format!("team/{tag}-tok"));
    let token_requests = || {
        std::fs::read_to_string(&issuer_log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("GET /token?"))
            .count()
    };
    let ns = unique(cd, "kiptoken");

    let before = token_requests();
    let out = kip(
        &["--once"],
        &path.apply(cd.env(&ns, std::slice::from_ref(&public))),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    path.assert_taken(cd, &text, std::slice::from_ref(&public));
    cd.assert_complete(&ns, &public);
    assert!(
        token_requests() > before,
        "the pull did not go through the token issuer:\n{text}"
    );

    let out = kip(
        &["--once"],
        &path.apply(cd.env(&ns, std::slice::from_ref(&private))),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{private}: unauthorized"))
            || text.contains(&format!("{private}: not_found")),
        "{text}"
    );
    assert!(text.contains("after 1 attempt(s)"), "{text}");
    assert!(!cd.has_image(&ns, &private));

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("config.json");
    write_docker_config(
        &secret,
        &registry,
        serde_json::json!({"username": user, "password": password}),
    );
    let out = kip(
        &["--once"],
        &path.apply(with(
            cd.env(&ns, std::slice::from_ref(&private)),
            "KIP_DOCKER_CONFIG",
            secret.to_str().unwrap(),
        )),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    path.assert_taken(cd, &text, std::slice::from_ref(&private));
    assert!(!text.contains(&password), "the password leaked: {text}");
    cd.assert_complete(&ns, &private);
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_token_registry() {
    token_registry(Cd::V1, Path::Auto);
}

#[test]
fn containerd2_native_token_registry() {
    token_registry(Cd::V2, Path::Native);
}

#[test]
fn containerd2_transfer_token_registry() {
    token_registry(Cd::V2, Path::Transfer);
}

/// `KIP_CONTAINERD_TRANSFER=on` against containerd 1.6, which has no Transfer service: the agent
/// says so once and pulls natively.
#[test]
fn containerd16_transfer_on_falls_back_to_native() {
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), Cd::V1.socket()) else {
        return;
    };
    let images = push_images(&registry, "test/cd1-xfer-fallback", 2);
    let ns = unique(Cd::V1, "kipfallback");
    let out = kip(&["--once"], &Path::Transfer.apply(Cd::V1.env(&ns, &images)));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let warnings = text
        .lines()
        .filter(|l| l.contains("offers no Transfer service"))
        .count();
    assert_eq!(warnings, 1, "{text}");
    Path::Native.assert_taken(Cd::V1, &text, &images);
    for image in &images {
        Cd::V1.assert_complete(&ns, image);
    }
    Cd::V1.assert_clean(&ns);
}

/// A registry serving HTTPS with a certificate from a CA no system store holds: refused (a
/// certificate error, no fallback to plain HTTP) until `KIP_REGISTRY_CA_FILE` names the CA.
fn registry_ca_file(cd: Cd) {
    let (Some(registry), Some(ca), Some(log), Some(_)) = (
        component("KIP_TEST_TLS_REGISTRY"),
        component("KIP_TEST_TLS_REGISTRY_CA"),
        component("KIP_TEST_TLS_REGISTRY_LOG"),
        cd.socket(),
    ) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-tls", cd.tag()), 1);
    let repo = repo_of(&images[0]).to_owned();
    let ns = unique(cd, "kiptls");
    let served = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(&format!("\"GET /v2/{repo}/manifests/"))
                    || l.contains(&format!("\"HEAD /v2/{repo}/manifests/"))
            })
            .count()
    };

    let before = served();
    // The native path's own TLS client (with KIP_REGISTRY_CA_FILE set, the backend always takes
    // it; the Transfer service trusts only containerd's configuration).
    let out = kip(
        &["--once"],
        &with(cd.env(&ns, &images), "KIP_CONTAINERD_TRANSFER", "off"),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}: unavailable", images[0])) && text.contains("certificate"),
        "{text}"
    );
    assert_eq!(
        served(),
        before,
        "a manifest was served without trust:\n{text}"
    );
    assert!(!cd.has_image(&ns, &images[0]));

    let out = kip(
        &["--once"],
        &with(cd.env(&ns, &images), "KIP_REGISTRY_CA_FILE", &ca),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(served() > before, "{text}");
    cd.assert_complete(&ns, &images[0]);
    cd.assert_clean(&ns);
}

#[test]
fn containerd16_registry_ca_file() {
    registry_ca_file(Cd::V1);
}

#[test]
fn containerd2_registry_ca_file() {
    registry_ca_file(Cd::V2);
}

/// A hosts directory (`DIR/<host>/hosts.toml` per entry) of its own under the temp dir.
fn hosts_dir(what: &str, entries: &[(&str, String)]) -> String {
    let root = std::env::temp_dir().join(unique(Cd::V2, what));
    for (host, toml) in entries {
        let dir = root.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), toml).unwrap();
    }
    root.to_str().unwrap().to_owned()
}

/// containerd 2.x's Transfer service reads the hosts directory `KIP_CONTAINERD_HOSTS_DIR` names:
/// a registry name no resolver knows is pulled from the server its hosts.toml names, and fails
/// naming the server when that one is down.
#[test]
fn containerd2_transfer_pulls_through_hosts_dir_mirror() {
    let cd = Cd::V2;
    let (Some(registry), Some(_)) = (component("KIP_TEST_REGISTRY"), cd.socket()) else {
        return;
    };
    let pushed = push_images(&registry, "test/cd2-hostsdir", 1);
    let name = format!("mirror.kip.invalid/{}:1", repo_of(&pushed[0]));
    let live = hosts_dir(
        "hosts-live",
        &[(
            "mirror.kip.invalid",
            format!("server = \"http://{registry}\"\n"),
        )],
    );
    let dead = hosts_dir(
        "hosts-dead",
        &[(
            "mirror.kip.invalid",
            "server = \"http://127.0.0.1:1\"\n".to_owned(),
        )],
    );
    let ns = unique(cd, "kiphostsdir");
    let env = |dir: &str| {
        with(
            with(
                cd.env(&ns, std::slice::from_ref(&name)),
                "KIP_CONTAINERD_HOSTS_DIR",
                dir,
            ),
            "KIP_NUM_RETRIES",
            "1",
        )
    };

    let out = kip(&["--once"], &env(&dead));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let summary = text
        .split("image(s) not pulled:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        summary.contains(&name) && summary.contains("127.0.0.1:1"),
        "{text}"
    );
    assert!(!cd.has_image(&ns, &name));

    let out = kip(&["--once"], &env(&live));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    Path::Transfer.assert_taken(cd, &text, std::slice::from_ref(&name));
    cd.assert_complete(&ns, &name);
    cd.assert_clean(&ns);
    for dir in [live, dead] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// An HTTPS registry whose CA only the hosts directory's hosts.toml names is trusted by the
/// Transfer service; without that directory the pull fails.
#[test]
fn containerd2_transfer_trusts_hosts_dir_ca() {
    let cd = Cd::V2;
    let (Some(registry), Some(ca), Some(_)) = (
        component("KIP_TEST_TLS_REGISTRY"),
        component("KIP_TEST_TLS_REGISTRY_CA"),
        cd.socket(),
    ) else {
        return;
    };
    let images = push_images(&registry, "test/cd2-hostsdir-tls", 1);
    let dir = hosts_dir(
        "hosts-ca",
        &[(
            registry.as_str(),
            format!("server = \"https://{registry}\"\nca = \"{ca}\"\n"),
        )],
    );
    let ns = unique(cd, "kiphostsca");
    let env = |dir: &str| {
        with(
            with(cd.env(&ns, &images), "KIP_CONTAINERD_HOSTS_DIR", dir),
            "KIP_NUM_RETRIES",
            "1",
        )
    };

    let out = kip(&["--once"], &env(""));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!cd.has_image(&ns, &images[0]));

    let out = kip(&["--once"], &env(&dir));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    Path::Transfer.assert_taken(cd, &text, &images);
    cd.assert_complete(&ns, &images[0]);
    cd.assert_clean(&ns);
    std::fs::remove_dir_all(dir).unwrap();
}
