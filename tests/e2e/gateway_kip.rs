//! End to end: the `gateway` serving a kernelspec directory, the `kip` daemon with its default
//! settings (the gateway address, its token and the test containerd's socket aside; interval
//! 300 s) and a real containerd 1.6 (CRI) and registry from `tests/scripts/env-up.sh`.
//!
//! Adding a kernelspec directory on disk must put its image on the node within 3 s: the gateway
//! sees the change through filesystem notification and answers the agent's held watch
//! (`GET /api/kernelspecs?wait=N` with `If-None-Match`, used because the gateway sends
//! `X-Kernelspecs-Watch: 1`); polling every 300 s could not do it.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use e2e::{
    ChildGuard, free_ports, gateway_command, kubernetes_kernel_json, push_images, wait_http,
};
use serde_json::json;

const TOKEN: &str = "e2e-gw-token-7d1c";

fn write_spec(kernels: &Path, name: &str, image: &str) {
    let dir = kernels.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = kubernetes_kernel_json(
        &format!("{name} on Kubernetes"),
        json!([
            "python",
            "launch_kubernetes.py",
            "--RemoteProcessProxy.kernel-id",
            "{kernel_id}"
        ]),
        json!({"image_name": image}),
    );
    // Written to a temporary name and renamed, as a kernelspec installer would.
    let tmp = dir.join(".kernel.json.tmp");
    std::fs::write(&tmp, spec.to_string()).unwrap();
    std::fs::rename(tmp, dir.join("kernel.json")).unwrap();
}

/// Whether containerd (through CRI's k8s.io namespace) has the image.
fn has_image(reference: &str) -> bool {
    e2e::Backend::CRI.has_image("k8s.io", reference)
}

fn wait_image(reference: &str, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if has_image(reference) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_new_kernelspec_puts_its_image_on_the_node_within_3_s() {
    let Some((registry, sock)) = e2e::Backend::CRI.with_socket("KIP_TEST_REGISTRY") else {
        return;
    };
    // A prefix of its own per run, so an image left in a reused containerd cannot pass the test.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let images = push_images(&registry, &format!("test/gw-kip-{run}"), 2);
    let root = tempfile::tempdir().unwrap();
    let kernels = root.path().join("kernels");
    write_spec(&kernels, "python_kubernetes", &images[0]);

    let ports = free_ports(3);
    let gateway_admin = format!("127.0.0.1:{}", ports[2]);
    let gateway_addr = format!("127.0.0.1:{}", ports[0]);
    let gateway_log = root.path().join("gateway.log");
    let kip_log = root.path().join("kip.log");
    let _gateway = ChildGuard(
        gateway_command(root.path(), ports[0])
            .env("EG_AUTH_TOKEN", TOKEN)
            .env("EG_ADMIN_ADDR", &gateway_admin)
            .stderr(std::fs::File::create(&gateway_log).unwrap())
            .spawn()
            .expect("start gateway"),
    );
    wait_http(&gateway_addr, "/", Duration::from_secs(10), "gateway");
    let mut kip = ChildGuard(
        e2e::kip_command()
            .env("KIP_GATEWAY_HOST", format!("http://{gateway_addr}"))
            .env("KIP_AUTH_TOKEN", TOKEN)
            .env("KIP_CRI_ENDPOINT", format!("unix://{sock}"))
            .env("KIP_ADMIN_ADDR", format!("127.0.0.1:{}", ports[1]))
            .env("KIP_LOG_LEVEL", "DEBUG")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&kip_log).unwrap())
            .spawn()
            .expect("start kip"),
    );
    let logs = || {
        format!(
            "--- gateway ---\n{}\n--- kip ---\n{}",
            std::fs::read_to_string(&gateway_log).unwrap_or_default(),
            std::fs::read_to_string(&kip_log).unwrap_or_default()
        )
    };

    // The first cycle pulls the image the listing names at start.
    assert!(
        wait_image(&images[0], Duration::from_secs(60)).is_some(),
        "first image not pulled:\n{}",
        logs()
    );
    // The agent holds a watch on the gateway (it long-polls, it does not poll).
    let started = Instant::now();
    loop {
        let (_, metrics) = e2e::http_get(&gateway_admin, "/metrics");
        if metrics.lines().any(|l| l == "gateway_watchers 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "kip holds no watch on the gateway:\n{metrics}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        kip.0.try_wait().unwrap().is_none(),
        "kip exited:\n{}",
        logs()
    );

    assert!(!has_image(&images[1]));
    write_spec(&kernels, "r_kubernetes", &images[1]);
    let took = wait_image(&images[1], Duration::from_secs(3));
    assert!(
        took.is_some(),
        "the new kernelspec's image was not on the node within 3 s:\n{}",
        logs()
    );
    eprintln!("new kernelspec -> image on the node in {:?}", took.unwrap());
    let text = logs();
    assert!(
        !text.contains(TOKEN),
        "the token leaked into a log:\n{text}"
    );
}
