//! Downloads cut off mid-layer, per backend: the native containerd backend resumes the partial
//! ingest with an HTTP Range request; Docker and CRI retry until the registry is back.

use e2e::{Backend, CuttingProxy, output_text, registry_lines, repo_of, unique};

/// A pull cut off mid-layer fails clearly and leaves its partial ingest; the next pull resumes
/// it with an HTTP Range request (206) and succeeds, leaving nothing behind. (The native path.)
fn interrupted_pull_resumes(backend: Backend) {
    let Some((registry, images)) = backend.push("resume", 1, Some(24)) else {
        return;
    };
    let path = images[0].split_once('/').unwrap().1.to_owned();
    // Every connection is closed after 6 MiB from the registry.
    let proxy = CuttingProxy::start(&registry, 6 * 1024 * 1024);
    let via_proxy = format!("{}/{path}", proxy.addr);
    let ns = unique(backend, "kipresume");
    let text = backend
        .kip(&ns, std::slice::from_ref(&via_proxy))
        .env("KIP_NUM_RETRIES", "1")
        .expect(1);
    assert!(
        text.contains(&format!("{via_proxy}: unavailable")),
        "{text}"
    );
    let active = backend.ctr(&ns, &["content", "active"]);
    assert!(
        active.lines().any(|l| l.starts_with("kip-sha256:")),
        "no partial ingest left to resume:\n{active}\n{text}"
    );

    // What the failed attempt committed (config, small layers, their snapshots) is kept under
    // the image's resume lease, through a garbage collection run forced here.
    let leases = backend.ctr(&ns, &["leases", "ls", "-q"]);
    assert!(
        leases.lines().any(|l| l.starts_with("kip-resume-image-")),
        "no resume lease for the failed pull:\n{leases}\n{text}"
    );
    let gc = unique(backend, "gc");
    backend.ctr(&ns, &["leases", "create", "--id", &gc]);
    backend.ctr(&ns, &["leases", "rm", "--sync", &gc]);

    let repo = repo_of(&images[0]).to_owned();
    let blob_gets = |status: &str| -> Vec<String> {
        registry_lines(&format!("GET /v2/{repo}/blobs/"))
            .into_iter()
            .filter(|l| l.contains(status))
            .collect()
    };
    let (ranged_before, full_before) = (blob_gets("\" 206 ").len(), blob_gets("\" 200 ").len());
    let text = backend.kip(&ns, &images).expect(0);
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
    backend.assert_complete(&ns, &images[0]);
    // The proxy's name for the image is pulled too now (its blobs are all in): its resume lease
    // goes with that success.
    backend.kip(&ns, std::slice::from_ref(&via_proxy)).expect(0);
    backend.assert_clean(&ns);
}

#[test]
fn interrupted_pull_resumes_natively() {
    Backend::CONTAINERD_NATIVE
        .into_iter()
        .for_each(interrupted_pull_resumes);
}

/// The registry goes away in the middle of a download and comes back: the agent neither crashes
/// nor gives up, retries, and the image ends up complete.
fn registry_down_mid_pull_then_back(backend: Backend) {
    let Some((registry, mut images)) = backend.push("flaky", 1, Some(16)) else {
        return;
    };
    let image = images.remove(0);
    let proxy = CuttingProxy::start(&registry, 512 * 1024);
    let via_proxy = format!("{}/{}", proxy.addr, image.split_once('/').unwrap().1);
    let ns = backend.namespace("kipflaky");
    let kip = backend
        .kip(&ns, std::slice::from_ref(&via_proxy))
        .env("KIP_NUM_RETRIES", "6");
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
    let out = kip.once();
    let (cuts, _proxy) = healer.join().unwrap();
    let text = output_text(&out);
    assert!(cuts > 0, "the proxy never cut a download:\n{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    backend.assert_complete(&ns, &via_proxy);
}

#[test]
fn registry_down_mid_pull_then_back_retried() {
    Backend::RUNTIMES
        .into_iter()
        .for_each(registry_down_mid_pull_then_back);
}
