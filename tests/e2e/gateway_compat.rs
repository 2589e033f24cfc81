//! The gateway against upstream Enterprise Gateway itself (`jupyter_enterprise_gateway` 3.3.0 from
//! PyPI, installed by `tests/scripts/install-deps.sh`; `KIP_TEST_EG_BIN` names its launcher).
//! Both serve the same kernelspec directory with the same token; every answer is compared as
//! parsed JSON (key order is not significant to clients), resources byte for byte.
//!
//! Upstream also lists a native `python3` kernelspec when ipykernel is importable in its Python.
//! The test venv does not install ipykernel, so upstream lists exactly the specs on disk; the test
//! asserts that, rather than excluding `python3` silently.
//!
//! Known, deliberate differences (not compared here, covered by the gateway's own tests):
//! a malformed `kernel.json` requested by name is a 500 with a Python traceback upstream and a
//! 404 here; a path escaping the spec directory, or naming a directory, is 403 upstream and 404
//! here.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{ChildGuard, binary, component, free_ports, http_request, wait_http};
use eg_common::kernelspec::WATCH_HEADER;
use serde_json::{Value, json};

const TOKEN: &str = "compat-token";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn write(dir: &Path, rel: &str, content: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A kernelspec tree shaped like upstream's Kubernetes specs, plus the edge cases.
fn kernelspec_tree(root: &Path) {
    let k = root.join("kernels");
    let k8s = |image: &str, display: &str| {
        json!({
            "display_name": display,
            "language": "python",
            "metadata": {
                "process_proxy": {
                    "class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
                    "config": {"image_name": image, "executor_image_name": image, "port_range": "0..0",
                               "unauthorized_users": "bobby,eve",
                               "nested": {"list": [1, 2.5, null, true, "x"], "empty": {}}}
                },
                "debugger": true
            },
            "argv": ["python", "/usr/local/share/jupyter/kernels/python_kubernetes/scripts/launch_kubernetes.py",
                     "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                     "--RemoteProcessProxy.response-address", "{response_address}"]
        })
        .to_string()
    };
    write(
        &k,
        "python_kubernetes/kernel.json",
        k8s("elyra/kernel-py:3.2.3", "Python on Kubernetes").as_bytes(),
    );
    write(&k, "python_kubernetes/logo-64x64.png", PNG);
    write(&k, "python_kubernetes/logo-svg.svg", b"<svg/>");
    write(
        &k,
        "python_kubernetes/kernel.js",
        b"define([], function() {});\n",
    );
    write(&k, "python_kubernetes/kernel.css", b"body {}\n");
    write(
        &k,
        "python_kubernetes/scripts/launch_kubernetes.py",
        b"print('launch')\n",
    );
    write(
        &k,
        "R_Kubernetes/kernel.json",
        json!({"display_name": "R on Kubernetes \u{e9}\u{4e2d}", "language": "R",
               "argv": ["R"], "env": {"R_LIBS": "/x", "EMPTY": ""}, "interrupt_mode": "Message",
               "metadata": {"process_proxy": {"config": {"image_name": "elyra/kernel-r:3.2.3",
                                                         "authorized_users": "alice,carol"}}},
               "unknown_key": [1]})
        .to_string()
        .as_bytes(),
    );
    write(&k, "R_Kubernetes/logo-64x64.png", PNG);
    write(&k, "minimal/kernel.json", br#"{"argv": ["run"]}"#);
    write(&k, "broken/kernel.json", b"{\"argv\": [");
    write(&k, "not_a_spec/README", b"no kernel.json here");
}

struct Pair {
    upstream: String,
    ours: String,
    _children: Vec<ChildGuard>,
}

/// Starts upstream and ours on the same tree. `allowed` is given to upstream the way its container
/// entrypoint passes `EG_ALLOWED_KERNELS`, and to ours as `EG_ALLOWED_KERNELS`.
fn start_pair(
    eg_bin: &str,
    root: &Path,
    base_url: &str,
    allowed: Option<&[&str]>,
    (up_port, our_port): (u16, u16),
) -> Pair {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let common = |cmd: &mut Command| {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", root)
            .env("JUPYTER_PATH", root)
            .env("JUPYTER_DATA_DIR", &data)
            .env("JUPYTER_CONFIG_DIR", root.join("config"))
            .env("JUPYTER_RUNTIME_DIR", root.join("runtime"))
            .env("EG_AUTH_TOKEN", TOKEN)
            .env("EG_BASE_URL", base_url)
            .env("EG_DEFAULT_KERNEL_NAME", "python_kubernetes")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
    };
    let mut up = Command::new(eg_bin);
    common(&mut up);
    up.args([
        "--ip=127.0.0.1",
        &format!("--port={up_port}"),
        "--port_retries=0",
    ])
    .stderr(std::fs::File::create(root.join("upstream.log")).unwrap());
    if let Some(allowed) = allowed {
        up.arg(format!(
            "--KernelSpecManager.whitelist={}",
            serde_json::to_string(allowed).unwrap()
        ));
    }
    let mut ours = Command::new(binary("gateway"));
    common(&mut ours);
    ours.env("EG_IP", "127.0.0.1")
        .env("EG_PORT", our_port.to_string())
        .env("EG_ADMIN_ADDR", "off")
        .stderr(std::fs::File::create(root.join("gateway.log")).unwrap());
    if let Some(allowed) = allowed {
        ours.env(
            "EG_ALLOWED_KERNELS",
            serde_json::to_string(allowed).unwrap(),
        );
    }
    let children = vec![
        ChildGuard(up.spawn().expect("start upstream Enterprise Gateway")),
        ChildGuard(ours.spawn().expect("start gateway")),
    ];
    Pair {
        upstream: format!("127.0.0.1:{up_port}"),
        ours: format!("127.0.0.1:{our_port}"),
        _children: children,
    }
}

fn wait_both(pair: &Pair) {
    wait_http(&pair.upstream, "/", Duration::from_secs(60), "upstream EG");
    wait_http(&pair.ours, "/", Duration::from_secs(10), "gateway");
}

fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> e2e::HttpReply {
    http_request(addr, path, headers).unwrap_or_else(|| panic!("no answer from {addr}{path}"))
}

const AUTH: (&str, &str) = ("Authorization", "token compat-token");

/// Same status, and same body: parsed JSON when upstream answered JSON, else the same bytes and
/// Content-Type.
fn assert_same(pair: &Pair, path: &str, headers: &[(&str, &str)]) -> Value {
    let up = get(&pair.upstream, path, headers);
    let ours = get(&pair.ours, path, headers);
    assert_eq!(
        up.status,
        ours.status,
        "{path} {headers:?}: status upstream {} ours {}; bodies {:?} / {:?}",
        up.status,
        ours.status,
        String::from_utf8_lossy(&up.body),
        String::from_utf8_lossy(&ours.body)
    );
    let up_type = up.header("content-type").unwrap_or_default();
    if up_type.starts_with("application/json") {
        assert_eq!(
            ours.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(up.json(), ours.json(), "{path} {headers:?}");
        up.json()
    } else {
        assert_eq!(up.body, ours.body, "{path}: bytes differ");
        assert_eq!(Some(up_type), ours.header("content-type"), "{path}");
        Value::Null
    }
}

#[test]
fn answers_match_upstream_enterprise_gateway() {
    let Some(eg_bin) = component("KIP_TEST_EG_BIN") else {
        return;
    };
    let plain = tempfile::tempdir().unwrap();
    kernelspec_tree(plain.path());
    let filtered = tempfile::tempdir().unwrap();
    kernelspec_tree(filtered.path());
    // Start both pairs before waiting (upstream takes seconds to start), on four distinct ports.
    let ports = free_ports(4);
    let pair = start_pair(&eg_bin, plain.path(), "/", None, (ports[0], ports[1]));
    let gw = start_pair(
        &eg_bin,
        filtered.path(),
        "/gw",
        Some(&["python_kubernetes", "minimal", "not_installed"]),
        (ports[2], ports[3]),
    );
    wait_both(&pair);
    wait_both(&gw);

    let listing = assert_same(&pair, "/api/kernelspecs", &[AUTH]);
    let mut names: Vec<_> = listing["kernelspecs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    // No native python3 (no ipykernel in the venv), but both list the system-wide kernelspecs
    // (Debian's python3 from python3-ipykernel); the broken spec is skipped by both.
    let mut expected: Vec<String> = ["minimal", "python_kubernetes", "r_kubernetes"]
        .map(String::from)
        .into();
    expected.extend(e2e::system_kernelspecs());
    expected.sort();
    expected.dedup();
    assert_eq!(names, expected);
    assert_eq!(
        listing["kernelspecs"]["r_kubernetes"]["spec"]["interrupt_mode"],
        "message"
    );
    for path in [
        "/api",
        "/api/kernelspecs/python_kubernetes",
        "/api/kernelspecs/R_Kubernetes",
        "/api/kernelspecs/r_kubernetes",
        "/api/kernelspecs/minimal",
        "/api/kernelspecs/python%5Fkubernetes",
        "/api/kernelspecs/nope",
        "/api/kernelspecs/not_a_spec",
        "/kernelspecs/python_kubernetes/logo-64x64.png",
        "/kernelspecs/python_kubernetes/logo-svg.svg",
        "/kernelspecs/python_kubernetes/kernel.js",
        "/kernelspecs/python_kubernetes/kernel.css",
        "/kernelspecs/python_kubernetes/scripts/launch_kubernetes.py",
        "/kernelspecs/R_Kubernetes/logo-64x64.png",
        "/kernelspecs/python_kubernetes/missing.png",
        "/kernelspecs/nope/logo-64x64.png",
        "/api/kernelspecs/",
        "/api/contents",
        "/",
        "/api/kernelspecs?token=compat-token",
        // The user filter: global unauthorized `root` by default, per-spec lists with substring
        // semantics, 403 for a single spec.
        "/api/kernelspecs?user=root",
        "/api/kernelspecs?user=bob",
        "/api/kernelspecs?user=alice",
        "/api/kernelspecs?user=dave",
        "/api/kernelspecs?user=",
        "/api/kernelspecs/r_kubernetes?user=dave",
        "/api/kernelspecs/python_kubernetes?user=bob",
        "/api/kernelspecs/python_kubernetes?user=alice",
    ] {
        assert_same(&pair, path, &[AUTH]);
    }
    // 401: no token, wrong header, Bearer, a wrong ?token not rescued by a right header.
    for (path, headers) in [
        ("/api/kernelspecs", vec![]),
        ("/api/kernelspecs", vec![("Authorization", "token wrong")]),
        (
            "/api/kernelspecs",
            vec![("Authorization", "Bearer compat-token")],
        ),
        ("/api/kernelspecs?token=wrong", vec![AUTH]),
        ("/api/kernelspecs/python_kubernetes", vec![]),
        ("/kernelspecs/python_kubernetes/logo-64x64.png", vec![]),
        ("/api", vec![]),
        // The catch-all 404 does not check the token.
        ("/api/contents", vec![]),
    ] {
        assert_same(&pair, path, &headers);
    }

    // Base URL and the allowed list: the listing is filtered, by-name lookups are not.
    let listing = assert_same(&gw, "/gw/api/kernelspecs", &[AUTH]);
    let mut names: Vec<_> = listing["kernelspecs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    assert_eq!(names, ["minimal", "python_kubernetes"]);
    for path in [
        "/gw/api/kernelspecs/r_kubernetes",
        "/gw/kernelspecs/python_kubernetes/logo-64x64.png",
        "/gw/api",
        "/gw/nothing",
        // Outside the base URL upstream's web framework answers its own HTML 404.
        "/api/kernelspecs",
    ] {
        assert_same(&gw, path, &[AUTH]);
    }

    // Conditional requests: both answer 304 to their own ETag. Only ours advertises the watch,
    // and upstream answers a `wait` at once, which is why clients must look for the header.
    for addr in [&pair.upstream, &pair.ours] {
        let first = get(addr, "/api/kernelspecs", &[AUTH]);
        let etag = first.header("etag").expect("ETag").to_owned();
        let started = Instant::now();
        let again = get(
            addr,
            "/api/kernelspecs?wait=5",
            &[AUTH, ("If-None-Match", &etag)],
        );
        assert_eq!(again.status, 304, "{addr}");
        let waited = started.elapsed();
        if addr == &pair.upstream {
            assert!(first.header(WATCH_HEADER).is_none());
            assert!(waited < Duration::from_secs(2), "upstream held {waited:?}");
        } else {
            assert_eq!(first.header(WATCH_HEADER), Some("1"));
            assert_eq!(again.header(WATCH_HEADER), Some("1"));
            assert!(
                waited >= Duration::from_secs(4),
                "ours answered after {waited:?}"
            );
        }
    }
}

/// Jupyter Server 1.24 (installed with upstream, in the same venv) with `--gateway-url` pointing
/// at the gateway: its kernelspec listing, single spec and logo come through the gateway unchanged.
#[test]
fn jupyter_server_uses_the_gateway() {
    let Some(eg_bin) = component("KIP_TEST_EG_BIN") else {
        return;
    };
    let server_bin = Path::new(&eg_bin).with_file_name("jupyter-server");
    let root = tempfile::tempdir().unwrap();
    kernelspec_tree(root.path());
    let ports = free_ports(2);
    let gateway = format!("127.0.0.1:{}", ports[0]);
    let server = format!("127.0.0.1:{}", ports[1]);
    let mut ours = Command::new(binary("gateway"));
    ours.env_clear()
        .env("JUPYTER_PATH", root.path())
        .env("JUPYTER_DATA_DIR", root.path().join("data"))
        .env("EG_IP", "127.0.0.1")
        .env("EG_PORT", ports[0].to_string())
        .env("EG_ADMIN_ADDR", "off")
        .env("EG_AUTH_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let _gateway = ChildGuard(ours.spawn().unwrap());
    // Its own kernelspec dirs are empty: everything it lists comes from the gateway.
    let empty = tempfile::tempdir().unwrap();
    let mut js = Command::new(server_bin);
    js.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", empty.path())
        .env("JUPYTER_PATH", empty.path())
        .env("JUPYTER_CONFIG_DIR", empty.path().join("config"))
        .env("JUPYTER_RUNTIME_DIR", empty.path().join("runtime"))
        .env("JUPYTER_DATA_DIR", empty.path().join("data"))
        .args([
            "--allow-root",
            "--no-browser",
            "--ip=127.0.0.1",
            &format!("--port={}", ports[1]),
            "--port-retries=0",
            &format!("--gateway-url=http://{gateway}"),
            &format!("--GatewayClient.auth_token={TOKEN}"),
            "--ServerApp.token=js-token",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(empty.path().join("server.log")).unwrap());
    let _server = ChildGuard(js.spawn().expect("start jupyter-server"));
    wait_http(&gateway, "/", Duration::from_secs(10), "gateway");
    wait_http(&server, "/api", Duration::from_secs(60), "jupyter-server");

    let js_auth = ("Authorization", "token js-token");
    let direct = get(&gateway, "/api/kernelspecs", &[AUTH]).json();
    let through = get(&server, "/api/kernelspecs", &[js_auth]);
    assert_eq!(through.status, 200);
    assert_eq!(
        through.json()["kernelspecs"],
        direct["kernelspecs"],
        "jupyter-server's listing differs from the gateway's"
    );
    let one = get(&server, "/api/kernelspecs/python_kubernetes", &[js_auth]);
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), direct["kernelspecs"]["python_kubernetes"]);
    let logo = get(
        &server,
        "/kernelspecs/python_kubernetes/logo-64x64.png",
        &[js_auth],
    );
    assert_eq!((logo.status, logo.body.as_slice()), (200, PNG));
}
