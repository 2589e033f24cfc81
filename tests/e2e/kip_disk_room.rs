//! The containerd backend (native path on 1.6, Transfer path on 2.x) refuses a pull whose layers would take the image filesystem past
//! `KIP_MAX_DISK_USAGE_PERCENT`, before downloading any blob, against real containerd 1.6 and 2.x
//! and the real registry. A test binary of its own: no other test writes to the disk while the
//! limit is set just above the current usage.

use e2e::{component, output_text, push_images_with, registry_requests, run_kip, run_ok};

/// The two tests take turns: each sets its limit from the disk usage it reads.
static DISK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The compressed size of the test image's big layer.
const LAYER_MB: u64 = 128;

/// The snapshotter's root, as containerd exports it (`ctr plugins ls -d`).
fn snapshotter_root(ctr: &str, sock: &str, snapshotter: &str) -> String {
    let out = run_ok(
        ctr,
        &[
            "--address",
            sock,
            "plugins",
            "ls",
            "-d",
            &format!("type==io.containerd.snapshotter.v1,id=={snapshotter}"),
        ],
    );
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("root"))
        .map(|r| r.trim().to_owned())
        .next()
        .unwrap_or_else(|| panic!("no root exported by {snapshotter}:\n{out}"))
}

/// Used and available bytes of the filesystem holding `path`, as `df` (and the agent) count them.
fn usage(path: &str) -> (u64, u64) {
    let out = run_ok("df", &["-B1", "--output=used,avail", path]);
    let line = out.lines().nth(1).expect("df line");
    let mut n = line.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

fn refuses_pulls_without_room(
    sock_var: &str,
    ctr: &str,
    snapshotter_var: &str,
    tag: &str,
    transfer: &str,
) {
    let (Some(registry), Some(sock)) = (component("KIP_TEST_REGISTRY"), component(sock_var)) else {
        return;
    };
    let _turn = DISK.lock().unwrap_or_else(|e| e.into_inner());
    let snapshotter = component(snapshotter_var).unwrap_or_else(|| "overlayfs".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let image = push_images_with(
        &registry,
        &format!("test/room-{tag}-{nanos}"),
        1,
        Some(LAYER_MB as usize),
        None,
    )
    .remove(0);
    let repo = image.split_once('/').unwrap().1.rsplit_once(':').unwrap().0;
    let root = snapshotter_root(ctr, &sock, &snapshotter);
    let env = |limit: String| {
        vec![
            ("KIP_CRI_ENDPOINT", format!("unix://{sock}")),
            ("KIP_CONTAINER_RUNTIME", "containerd".into()),
            // 1.6: the native path; 2.x: the Transfer path, which reads the manifest first when
            // the disk is near the limit.
            ("KIP_CONTAINERD_TRANSFER", transfer.into()),
            ("KIP_CONTAINERD_SNAPSHOTTER", snapshotter.clone()),
            ("KIP_IMAGE_FETCHER", "StaticListFetcher".into()),
            ("KIP_IMAGES", image.clone()),
            ("KIP_NUM_RETRIES", "3".into()),
            ("KIP_MAX_DISK_USAGE_PERCENT", limit),
        ]
    };
    let run = |limit: String| {
        let env = env(limit);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_kip(&["--once"], &env)
    };

    // The limit lies above today's usage by half of what the layer needs (blob and unpacked:
    // three times its compressed size): room now, but not for this image.
    let (used, avail) = usage(&root);
    let need = 3 * (LAYER_MB << 20);
    let limit = (used + need / 2) as f64 * 100.0 / (used + avail) as f64;
    let out = run(format!("{limit:.6}"));
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{image}: skipped:"))
            && text.contains("past KIP_MAX_DISK_USAGE_PERCENT"),
        "{text}"
    );
    // Refused once, not retried, and before any blob was asked for.
    assert_eq!(
        text.matches("would take the image filesystem").count(),
        2,
        "(the warning and the summary line)\n{text}"
    );
    assert_eq!(
        registry_requests(&format!("GET /v2/{repo}/blobs/")),
        0,
        "blobs fetched for a refused pull:\n{text}"
    );

    // With room for it, the same image pulls.
    let (used, avail) = usage(&root);
    let limit = (used + 2 * need) as f64 * 100.0 / (used + avail) as f64;
    let out = run(format!("{:.6}", limit.min(100.0)));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(registry_requests(&format!("GET /v2/{repo}/blobs/")) >= 2);
}

#[test]
fn containerd16_refuses_pulls_without_room() {
    refuses_pulls_without_room(
        "KIP_TEST_CONTAINERD_SOCK",
        "ctr",
        "KIP_TEST_CONTAINERD_SNAPSHOTTER",
        "cd1",
        "off",
    );
}

#[test]
fn containerd2_refuses_pulls_without_room() {
    let Some(ctr) = component("KIP_TEST_CONTAINERD2_CTR") else {
        return;
    };
    refuses_pulls_without_room(
        "KIP_TEST_CONTAINERD2_SOCK",
        &ctr,
        "KIP_TEST_CONTAINERD2_SNAPSHOTTER",
        "cd2",
        "on",
    );
}
