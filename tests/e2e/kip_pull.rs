//! `kip --once` pulls images onto the node, on every backend of the matrix (Docker Engine, CRI on
//! containerd 1.6, the native containerd backend on 1.6 and 2.x, natively and through the
//! Transfer service), against a real registry; all started by `tests/scripts/env-up.sh`. Every
//! test pushes its own images, so tests share the daemons without sharing images.

use std::thread;

use e2e::{
    Backend, Daemon, FakeGateway, PullPath, kernelspec_entry, output_text, push_images,
    registry_requests, repo_of, unique,
};
use kip::{
    config::Endpoint,
    runtime::{CriRuntime, ImageRuntime},
};
use serde_json::json;

/// 4 multi-layer images sharing a base layer land complete (containerd: unpacked), each with one
/// log line naming image, runtime, outcome and duration. On the native containerd backend, also:
/// a container runs from one and sees its rootfs; CRI lists them; nothing is left behind; a
/// second run finds them present and asks the registry nothing.
async fn images_land(backend: Backend) {
    let Some((registry, sock)) = backend.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-four", backend.tag()), 4);
    assert_eq!(images.len(), 4);
    let ns = "k8s.io";
    let kip = backend.kip(ns, &images).env("KIP_NUM_PULLERS", "4");
    let first = kip.clone();
    let out = tokio::task::spawn_blocking(move || first.once())
        .await
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    backend.assert_taken(&text, &images);
    for image in &images {
        backend.assert_complete(ns, image);
        // One log line per pull, with image, runtime, outcome and duration.
        let line = text
            .lines()
            .find(|l| l.contains("pull finished") && l.contains(image.as_str()))
            .unwrap_or_else(|| panic!("no pull line for {image}:\n{text}"));
        assert!(
            line.contains(&format!("runtime=\"{}\"", backend.name()))
                || line.contains(&format!("runtime={}", backend.name())),
            "{line}"
        );
        assert!(
            line.contains("outcome=\"pulled\"") || line.contains("outcome=pulled"),
            "{line}"
        );
        assert!(line.contains("duration_ms="), "{line}");
    }
    if !backend.is_containerd() {
        return;
    }
    backend.assert_clean(ns);

    // A container starts from the image and sees its rootfs.
    let id = unique(backend, "run");
    let printed = backend.ctr(
        ns,
        &[
            "run",
            "--rm",
            "--snapshotter",
            &backend.snapshotter(),
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
    let out = tokio::task::spawn_blocking(move || kip.once())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(registry_requests(&format!("/v2/{repo}/")), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn images_land_complete() {
    for backend in Backend::MATRIX {
        images_land(backend).await;
    }
}

/// An image whose blobs are already in containerd's store (through another namespace) is
/// committed into a second namespace without any download: the STAT reports every byte present
/// and the COMMIT must carry offset == size and no data. (The native path's write protocol.)
fn shared_blobs_commit_without_download(backend: Backend) {
    let Some((_, images)) = backend.push("shared", 1, None) else {
        return;
    };
    let repo = repo_of(&images[0]).to_owned();
    let other = unique(backend, "kipother");
    let ns = unique(backend, "kipshared");
    backend.kip(&other, &images).expect(0);
    backend.assert_complete(&other, &images[0]);
    let blob_gets = || registry_requests(&format!("GET /v2/{repo}/blobs/"));
    let before = blob_gets();

    let text = backend.kip(&ns, &images).expect(0);
    backend.assert_complete(&ns, &images[0]);
    assert_eq!(blob_gets(), before, "blobs downloaded again:\n{text}");
    assert!(text.contains("CommitOnly"), "{text}");
    backend.assert_clean(&ns);
    backend.assert_clean(&other);
}

#[test]
fn shared_blobs_commit_without_download_natively() {
    Backend::CONTAINERD_NATIVE
        .into_iter()
        .for_each(shared_blobs_commit_without_download);
}

/// Two agents pulling the same images at the same time both succeed.
fn two_agents(backend: Backend) {
    let Some((_, images)) = backend.push("twin", 2, Some(16)) else {
        return;
    };
    let ns = unique(backend, "kiptwin");
    let kip = backend.kip(&ns, &images).env("KIP_NUM_PULLERS", "2");
    let spawn = |kip: e2e::Kip| thread::spawn(move || kip.once());
    let (a, b) = (spawn(kip.clone()), spawn(kip));
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    }
    for image in &images {
        backend.assert_complete(&ns, image);
        assert!(backend.has_image(&ns, image));
    }
    backend.assert_clean(&ns);
}

#[test]
fn two_agents_pull_the_same_images() {
    for daemon in [Daemon::V1, Daemon::V2] {
        two_agents(Backend::Containerd(daemon, PullPath::Auto));
    }
}

/// The default fetcher against an upstream-shaped gateway with token auth: every `image_name`
/// and `executor_image_name` lands on the node, and the token never shows in the output.
async fn kernelspecs_images_land(backend: Backend) {
    let Some((registry, sock)) = backend.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-spec", backend.tag()), 3);
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
    let kip = e2e::Kip::new()
        .env("KIP_GATEWAY_HOST", &gateway.url)
        .env("KIP_AUTH_TOKEN", token)
        .env("KIP_DEFAULT_CONTAINER_REGISTRY", &registry)
        .env("KIP_CRI_ENDPOINT", &format!("unix://{sock}"))
        .env("KIP_CONTAINER_RUNTIME", backend.name())
        .env("KIP_LOG_LEVEL", "DEBUG");
    let out = tokio::task::spawn_blocking(move || kip.once())
        .await
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for image in &images {
        backend.assert_complete("k8s.io", image);
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
async fn kernelspec_images_land_on_the_node() {
    for backend in Backend::RUNTIMES {
        kernelspecs_images_land(backend).await;
    }
}

/// `KIP_CONTAINERD_TRANSFER=on` against containerd 1.6, which has no Transfer service: the agent
/// says so once and pulls natively.
#[test]
fn containerd16_transfer_on_falls_back_to_native() {
    let backend = Backend::Containerd(Daemon::V1, PullPath::Transfer);
    let Some((_, images)) = backend.push("fallback", 2, None) else {
        return;
    };
    let ns = unique(backend, "kipfallback");
    let text = backend.kip(&ns, &images).expect(0);
    let warnings = text
        .lines()
        .filter(|l| l.contains("offers no Transfer service"))
        .count();
    assert_eq!(warnings, 1, "{text}");
    PullPath::Native.assert_taken(Daemon::V1, &text, &images);
    for image in &images {
        backend.assert_complete(&ns, image);
    }
    backend.assert_clean(&ns);
}
