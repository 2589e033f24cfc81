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
//!
//! Kernels and sessions (`kernel_routes_match_upstream_enterprise_gateway`, both running Debian's
//! ipykernel through the same local kernelspec) answer with the same statuses and body shapes,
//! and the same messages for: the kernel model and `Location`, the listing, unknown kernels (404),
//! invalid JSON, a non-string `env` value, `KERNEL_USERNAME=root` (403, text in `reason`), the
//! `EG_MAX_KERNELS` limit (403 "Resource Limit", before the body is read), interrupt (204),
//! restart (200), delete (204), missing session fields, 401 without a token, the websocket's 404
//! and 401, and an execute's messages and channels. Differences, each side asserted on its own:
//! - an unknown kernel name is 500 on both with a traceback naming `NoSuchKernel`; upstream's
//!   `message` is "Unknown server error", ours names the kernel;
//! - `KERNEL_ID` not a UUID, `KERNEL_LAUNCH_TIMEOUT` not a number: upstream 500 (ValueError
//!   traceback), ours 400 naming the variable; a `KERNEL_ID` already running: upstream 500
//!   (DuplicateKernelError), ours 409; a kernelspec whose process proxy is not local (Kubernetes):
//!   upstream 500 (the Kubernetes client's ConfigException), ours 501 naming what is missing; a JSON
//!   array as the body: upstream 500 (AttributeError), ours 400 "Invalid JSON in body of request";
//!   none of ours carries a traceback;
//! - `env` not an object: 400 on both, upstream's `message` empty, ours "env must be a JSON object";
//! - `$`, backquote, CR, LF or NUL in a value: upstream 3.3.0 starts the kernel, ours 400 "…
//!   contains prohibited characters";
//! - restart of an unknown kernel: upstream 500 "Exception restarting kernel", ours 404;
//! - sessions: upstream's model is `{id, notebook: {path}, kernel}`, ours adds `path`, `name`,
//!   `type` and `notebook.name`; `GET /api/sessions/{id}` is upstream's 500 (a TypeError in
//!   jupyter_server 1.24), ours 200; deleting an unknown session is upstream's 410 "Kernel deleted
//!   before session", ours 404 "Session not found: ID";
//! - at the `EG_MAX_KERNELS` limit upstream answers 403 before reading the body, ours reads it
//!   first (invalid JSON: 400);
//! - `POST /api/kernels//interrupt` (empty id): upstream 404 with an empty message, ours 404
//!   "Kernel does not exist: ".

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{ChildGuard, binary, component, free_ports, http_request, processes_naming, wait_http};
use eg_common::kernelspec::WATCH_HEADER;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

const TOKEN: &str = "compat-token";
const PYTHON: &str = "/usr/bin/python3";
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
    // A kernel both gateways can run: Debian's ipykernel, launched locally. Upstream needs the
    // LocalProcessProxy class name to keep `config`.
    write(
        &k,
        "python3_local/kernel.json",
        json!({"display_name": "Python 3 (local)", "language": "python",
               "argv": [PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "interrupt_mode": "signal",
               "metadata": {"process_proxy": {
                   "class_name": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy",
                   "config": {"image_name": "docker.io/elyra/kernel-py:3.2.3"}}}})
        .to_string()
        .as_bytes(),
    );
    write(&k, "not_a_spec/README", b"no kernel.json here");
}

struct Pair {
    upstream: String,
    ours: String,
    _children: Vec<ChildGuard>,
}

/// Starts upstream and ours on the same tree. `allowed` is given to upstream the way its container
/// entrypoint passes `EG_ALLOWED_KERNELS`, and to ours as `EG_ALLOWED_KERNELS`; `env` to both.
fn start_pair(
    eg_bin: &str,
    root: &Path,
    base_url: &str,
    allowed: Option<&[&str]>,
    (up_port, our_port): (u16, u16),
    env: &[(&str, &str)],
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
        for (k, v) in env {
            cmd.env(k, v);
        }
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
/// The names of a kernelspec listing, sorted.
fn spec_names(listing: &Value) -> Vec<String> {
    let mut names: Vec<_> = listing["kernelspecs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

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
    let pair = start_pair(&eg_bin, plain.path(), "/", None, (ports[0], ports[1]), &[]);
    let gw = start_pair(
        &eg_bin,
        filtered.path(),
        "/gw",
        Some(&["python_kubernetes", "minimal", "not_installed"]),
        (ports[2], ports[3]),
        &[],
    );
    wait_both(&pair);
    wait_both(&gw);

    let listing = assert_same(&pair, "/api/kernelspecs", &[AUTH]);
    let names = spec_names(&listing);
    // No native python3 (no ipykernel in the venv), but both list the system-wide kernelspecs
    // (Debian's python3 from python3-ipykernel); the broken spec is skipped by both.
    let mut expected: Vec<String> = [
        "minimal",
        "python3_local",
        "python_kubernetes",
        "r_kubernetes",
    ]
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
        "/api/kernelspecs/python3_local",
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
    let names = spec_names(&listing);
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

/// Kills whatever kernel a failed test left behind (declared before the gateways, so it runs after
/// they are killed, and orphans are caught too).
struct NoLeftovers(std::path::PathBuf);

impl Drop for NoLeftovers {
    fn drop(&mut self) {
        for pid in processes_naming(&self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// One answer, as a client sees it.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: Option<String>,
    content_type: Option<String>,
    /// Parsed JSON, `Null` when the body is not JSON (or empty).
    json: Value,
    text: String,
}

async fn call(addr: &str, method: &str, path: &str, body: Option<&str>, auth: bool) -> Reply {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{path}"));
    if auth {
        req = req.header("Authorization", format!("token {TOKEN}"));
    }
    if let Some(body) = body {
        req = req.body(body.to_owned());
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"));
    let header = |name| {
        r.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let location = header("location");
    let content_type = header("content-type");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    Reply {
        status,
        location,
        content_type,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// The same request to both, at once: (upstream, ours).
async fn both(pair: &Pair, method: &str, path: &str, body: Option<&str>) -> (Reply, Reply) {
    each(pair, (method, path, body, true), (method, path, body, true)).await
}

type Request<'a> = (&'a str, &'a str, Option<&'a str>, bool);

/// A request to each (method, path, body, with the token): (upstream, ours), at once.
async fn each(pair: &Pair, up: Request<'_>, ours: Request<'_>) -> (Reply, Reply) {
    tokio::join!(
        call(&pair.upstream, up.0, up.1, up.2, up.3),
        call(&pair.ours, ours.0, ours.1, ours.2, ours.3)
    )
}

/// `method` with the token and no body on `path` at upstream, and at ours on `path` with
/// upstream's id replaced by ours (`ids`: upstream's, ours).
async fn on_each(pair: &Pair, method: &str, path: &str, ids: (&str, &str)) -> (Reply, Reply) {
    let our_path = path.replace(ids.0, ids.1);
    each(
        pair,
        (method, path, None, true),
        (method, &our_path, None, true),
    )
    .await
}

/// The body with every value replaced by its type name (keys and nesting kept).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// Same status, same JSON shape (keys and value types), both JSON when either is.
fn same_shape(what: &str, up: &Reply, ours: &Reply) {
    assert_eq!(
        up.status, ours.status,
        "{what}: status upstream {} ours {}; bodies {} / {}",
        up.status, ours.status, up.text, ours.text
    );
    assert_eq!(
        shape(&up.json),
        shape(&ours.json),
        "{what}: shapes differ; bodies {} / {}",
        up.text,
        ours.text
    );
    if up.content_type.as_deref() == Some("application/json") {
        assert_eq!(
            ours.content_type.as_deref(),
            Some("application/json"),
            "{what}"
        );
    }
}

/// Same status and equal JSON bodies.
fn same_body(what: &str, up: &Reply, ours: &Reply) {
    same_shape(what, up, ours);
    assert_eq!(up.json, ours.json, "{what}");
}

/// A kernel model as upstream writes it: exactly these keys, a UUID, a microsecond UTC timestamp.
fn assert_kernel_model(what: &str, v: &Value, name: &str) {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "connections",
            "execution_state",
            "id",
            "last_activity",
            "name"
        ],
        "{what}: {v}"
    );
    assert!(
        uuid::Uuid::parse_str(v["id"].as_str().unwrap()).is_ok(),
        "{what}: {v}"
    );
    assert_eq!(v["name"], name, "{what}");
    // 2026-12-02T11:23:04.111542Z
    let ts = v["last_activity"].as_str().unwrap();
    let digits = |r: std::ops::Range<usize>| ts[r].bytes().all(|b| b.is_ascii_digit());
    assert!(
        ts.len() == 27
            && digits(0..4)
            && &ts[4..5] == "-"
            && &ts[10..11] == "T"
            && &ts[19..20] == "."
            && digits(20..26)
            && ts.ends_with('Z'),
        "{what}: last_activity {ts}"
    );
    assert!(v["connections"].is_u64(), "{what}: {v}");
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a kernel's channels (legacy protocol): the socket, or the refusal's status and body.
async fn channels(addr: &str, kernel: &str, auth: bool) -> Result<WsStream, (u16, Value)> {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};
    let mut req = format!("ws://{addr}/api/kernels/{kernel}/channels?session_id=compat")
        .into_client_request()
        .unwrap();
    if auth {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("token {TOKEN}")).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("websocket to {addr}: {e}"),
    }
}

/// What one execute produced, as a client sees it.
#[derive(Debug, PartialEq)]
struct Execution {
    /// (channel, msg_type, execution_state for status) of every message answering the request.
    seen: std::collections::BTreeSet<(String, String, String)>,
    /// Top-level keys of every message frame.
    frame_keys: std::collections::BTreeSet<Vec<String>>,
    result: Value,
    reply_status: Value,
}

/// Runs `code` over a legacy-protocol websocket until its `execute_reply` and `idle` status.
async fn execute(addr: &str, kernel: &str, code: &str) -> Execution {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let mut ws = channels(addr, kernel, true)
        .await
        .unwrap_or_else(|e| panic!("websocket to {addr}: {e:?}"));
    let msg_id = uuid::Uuid::new_v4().to_string();
    let request = json!({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": "compat", "date": "2026-01-01T00:00:00.000000Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": false, "store_history": true, "user_expressions": {},
                    "allow_stdin": false, "stop_on_error": true}
    });
    ws.send(WsMessage::Text(request.to_string().into()))
        .await
        .unwrap();
    let mut out = Execution {
        seen: Default::default(),
        frame_keys: Default::default(),
        result: Value::Null,
        reply_status: Value::Null,
    };
    let (mut replied, mut idle) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(replied && idle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{addr}: no reply to the execute; so far {out:?}"))
            .expect("websocket open")
            .expect("websocket frame");
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let m: Value = serde_json::from_str(text.as_str()).unwrap();
        if m["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        let mut keys: Vec<String> = m.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        out.frame_keys.insert(keys);
        let msg_type = m["header"]["msg_type"].as_str().unwrap().to_owned();
        let state = m["content"]["execution_state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match msg_type.as_str() {
            "execute_result" => out.result = m["content"]["data"].clone(),
            "execute_reply" => {
                out.reply_status = m["content"]["status"].clone();
                replied = true;
            }
            "status" if state == "idle" => idle = true,
            _ => {}
        }
        out.seen.insert((
            m["channel"].as_str().unwrap_or_default().to_owned(),
            msg_type,
            state,
        ));
    }
    let _ = ws.close(None).await;
    out
}

/// The kernel and session routes against upstream, on the same local kernelspec: same statuses,
/// same body shapes, equal messages where the gateway matches upstream's, and each side's own
/// answer where they differ on purpose (see the header comment).
#[tokio::test(flavor = "multi_thread")]
async fn kernel_routes_match_upstream_enterprise_gateway() {
    let Some(eg_bin) = component("KIP_TEST_EG_BIN") else {
        return;
    };
    let have_ipykernel = Command::new(PYTHON)
        .args(["-c", "import ipykernel"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have_ipykernel,
        "python3-ipykernel is missing: tests/scripts/install-deps.sh installs it"
    );
    let root = tempfile::tempdir().unwrap();
    kernelspec_tree(root.path());
    let _leftovers = NoLeftovers(root.path().to_path_buf());
    let ports = free_ports(2);
    // The gateways' own user (upstream: getpass.getuser(), LOGNAME first; ours: USER first) is
    // alice, so that session kernels (which cannot carry KERNEL_USERNAME) are not root's.
    let pair = start_pair(
        &eg_bin,
        root.path(),
        "/",
        None,
        (ports[0], ports[1]),
        &[
            ("EG_LIST_KERNELS", "True"),
            ("EG_MAX_KERNELS", "2"),
            ("USER", "alice"),
            ("LOGNAME", "alice"),
        ],
    );
    let wait = {
        let (up, ours) = (pair.upstream.clone(), pair.ours.clone());
        tokio::task::spawn_blocking(move || {
            wait_http(&up, "/", Duration::from_secs(60), "upstream EG");
            wait_http(&ours, "/", Duration::from_secs(10), "gateway");
        })
    };
    wait.await.unwrap();
    let local = r#"{"name": "python3_local", "env": {"KERNEL_USERNAME": "alice"}}"#;

    // Start: 201, the model, Location naming the new kernel.
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(local)).await;
    same_shape("start", &up, &ours);
    assert_eq!(up.status, 201, "{}", up.text);
    for r in [&up, &ours] {
        assert_kernel_model("start", &r.json, "python3_local");
        assert_eq!(r.json["execution_state"], "starting");
        assert_eq!(r.json["connections"], 0);
        let id = r.json["id"].as_str().unwrap();
        assert_eq!(r.location.as_deref(), Some(&*format!("/api/kernels/{id}")));
    }
    let up_id = up.json["id"].as_str().unwrap().to_owned();
    let our_id = ours.json["id"].as_str().unwrap().to_owned();
    let kernel = (up_id.as_str(), our_id.as_str());
    let up_path = format!("/api/kernels/{up_id}");

    // Listing and the single kernel.
    let (up, ours) = both(&pair, "GET", "/api/kernels", None).await;
    same_shape("list", &up, &ours);
    assert_eq!(up.json.as_array().unwrap().len(), 1);
    assert_kernel_model("list upstream", &up.json[0], "python3_local");
    assert_kernel_model("list ours", &ours.json[0], "python3_local");
    assert_eq!(
        (&up.json[0]["id"], &ours.json[0]["id"]),
        (&json!(up_id), &json!(our_id))
    );
    let (up, ours) = on_each(&pair, "GET", &up_path, kernel).await;
    same_shape("get", &up, &ours);
    assert_eq!(up.status, 200);
    assert_kernel_model("get upstream", &up.json, "python3_local");
    assert_kernel_model("get ours", &ours.json, "python3_local");

    // Unknown kernels: 404 with the same message for get, delete, interrupt.
    let unknown = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    for (method, path) in [
        ("GET", format!("/api/kernels/{unknown}")),
        ("DELETE", format!("/api/kernels/{unknown}")),
        ("POST", format!("/api/kernels/{unknown}/interrupt")),
        ("GET", "/api/kernels/1-2-3-4-5".to_owned()),
    ] {
        let (up, ours) = both(&pair, method, &path, None).await;
        same_body(&format!("{method} {path}"), &up, &ours);
        assert_eq!(up.status, 404);
        let id = path.split('/').nth(3).unwrap();
        assert_eq!(up.json["message"], format!("Kernel does not exist: {id}"));
    }
    // difference: restarting an unknown kernel is upstream's 500 "Exception restarting kernel"
    // (its traceback ends in the 404), ours the 404 itself.
    let path = format!("/api/kernels/{unknown}/restart");
    let (up, ours) = both(&pair, "POST", &path, None).await;
    assert_eq!(up.status, 500, "{}", up.text);
    assert_eq!(up.json["message"], "Exception restarting kernel");
    assert!(up.text.contains("Kernel does not exist"), "{}", up.text);
    assert_eq!(ours.status, 404, "{}", ours.text);
    assert_eq!(
        ours.json,
        json!({"reason": "Not Found", "message": format!("Kernel does not exist: {unknown}")})
    );
    // Not a route.
    let (up, ours) = both(&pair, "GET", "/api/kernels/", None).await;
    same_body("GET /api/kernels/", &up, &ours);
    assert_eq!(up.status, 404);
    // A method a kernel route does not have: upstream's JSON 405 on both.
    for (method, path) in [("PUT", "/api/kernels"), ("PATCH", &*up_path)] {
        let (up, ours) = on_each(&pair, method, path, kernel).await;
        assert_eq!(
            (up.status, &up.json),
            (405, &json!({"reason": "Method Not Allowed", "message": ""})),
            "{method} {path}"
        );
        assert_eq!(
            (ours.status, &ours.json),
            (up.status, &up.json),
            "{method} {path}"
        );
    }
    // difference: an empty kernel id before `/interrupt` or `/restart` matches no route upstream
    // (404, empty message); ours takes it for an unknown kernel named "".
    for action in ["interrupt", "restart"] {
        let path = format!("/api/kernels//{action}");
        let (up, ours) = both(&pair, "POST", &path, None).await;
        assert_eq!(
            (up.status, &up.json),
            (404, &json!({"reason": "Not Found", "message": ""}))
        );
        assert_eq!(
            (ours.status, &ours.json),
            (
                404,
                &json!({"reason": "Not Found", "message": "Kernel does not exist: "})
            )
        );
    }
    // No token: 401 on every kernel route.
    for (method, path) in [
        ("GET", "/api/kernels"),
        ("POST", "/api/kernels"),
        ("GET", &*up_path),
        ("DELETE", &*up_path),
        ("POST", &*format!("{up_path}/interrupt")),
        ("GET", "/api/sessions"),
    ] {
        let (up, ours) = each(
            &pair,
            (method, path, Some("{}"), false),
            (method, &path.replace(&up_id, &our_id), Some("{}"), false),
        )
        .await;
        same_body(&format!("{method} {path} without a token"), &up, &ours);
        assert_eq!(up.status, 401);
    }

    // Refused starts: the same status and body.
    let long = "x".repeat(5000);
    let root_refused = "User 'root' is not authorized to start kernel 'Python 3 (local)'. \
                        Ensure KERNEL_USERNAME is set to an appropriate value and retry the request.";
    for (body, status, expected) in [
        (
            r#"{"name":"#,
            400,
            json!({"reason": "Bad Request", "message": "Invalid JSON in body of request"}),
        ),
        (
            r#"{"name": "python3_local", "env": {"KERNEL_USERNAME": "alice", "KERNEL_X": 1}}"#,
            400,
            json!({"reason": "Bad Request",
                   "message": "Environment variable 'KERNEL_X' value must be a string"}),
        ),
        // Upstream puts the text in `reason` (and in the HTTP status line), `message` empty.
        (
            r#"{"name": "python3_local", "env": {"KERNEL_USERNAME": "root"}}"#,
            403,
            json!({"reason": root_refused, "message": ""}),
        ),
    ] {
        let (up, ours) = both(&pair, "POST", "/api/kernels", Some(body)).await;
        same_body(body, &up, &ours);
        assert_eq!((up.status, &up.json), (status, &expected), "{body}");
    }
    // A variable neither KERNEL_ nor in EG_CLIENT_ENVS is dropped unchecked by both.
    let body = format!(r#"{{"name": "nope", "env": {{"OTHER": 1, "LONG": "{long}"}}}}"#);
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(&body)).await;
    same_shape("unchecked variables", &up, &ours);
    assert_eq!(up.status, 500);
    assert!(up.text.contains("NoSuchKernel"), "{}", up.text);

    // env not an object: 400 with the same keys; upstream's message is empty, ours says why.
    for env in ["[]", r#""x""#] {
        let body = format!(r#"{{"name": "python3_local", "env": {env}}}"#);
        let (up, ours) = both(&pair, "POST", "/api/kernels", Some(&body)).await;
        same_shape(&body, &up, &ours);
        assert_eq!(up.json, json!({"reason": "Bad Request", "message": ""}));
        // difference: upstream's message is empty.
        assert_eq!(
            ours.json,
            json!({"reason": "Bad Request", "message": "env must be a JSON object"})
        );
    }

    // Unknown kernel name: 500 on both with a traceback naming NoSuchKernel; ours also says it
    // in `message` (upstream: "Unknown server error").
    let (up, ours) = both(
        &pair,
        "POST",
        "/api/kernels",
        Some(r#"{"name": "nope", "env": {"KERNEL_USERNAME": "alice"}}"#),
    )
    .await;
    same_shape("unknown kernel name", &up, &ours);
    assert_eq!(up.status, 500);
    for r in [&up, &ours] {
        assert_eq!(r.json["reason"], "Internal Server Error");
        assert!(
            r.json["traceback"]
                .as_str()
                .unwrap()
                .contains("NoSuchKernel"),
            "{}",
            r.text
        );
    }
    assert_eq!(up.json["message"], "Unknown server error");
    assert!(
        ours.json["message"].as_str().unwrap().contains("nope"),
        "{}",
        ours.text
    );

    // A value over 4096 characters: 400, the same words.
    let body = format!(r#"{{"env": {{"KERNEL_USERNAME": "alice", "KERNEL_X": "{long}"}}}}"#);
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(&body)).await;
    same_shape("value too long", &up, &ours);
    assert_eq!(
        up.json,
        json!({"reason": "Bad Request",
               "message": "Environment variable 'KERNEL_X' exceeds maximum length"})
    );
    assert_eq!(ours.json, up.json);

    // Deliberate differences: upstream's 500 with a Python traceback, ours a 4xx/501 that says why.
    let start_error = |env: &str| {
        format!(r#"{{"name": "python3_local", "env": {{"KERNEL_USERNAME": "alice", {env}}}}}"#)
    };
    for (what, body, up_error, our_status, our_text) in [
        (
            "KERNEL_ID not a UUID",
            start_error(r#""KERNEL_ID": "not-a-uuid""#),
            "ValueError: badly formed hexadecimal UUID string",
            400,
            "KERNEL_ID",
        ),
        (
            "KERNEL_LAUNCH_TIMEOUT not a number",
            start_error(r#""KERNEL_LAUNCH_TIMEOUT": "soon""#),
            "ValueError: could not convert string to float: 'soon'",
            400,
            "KERNEL_LAUNCH_TIMEOUT",
        ),
        (
            "a running KERNEL_ID",
            start_error(&format!(r#""KERNEL_ID": "{up_id}""#)),
            "DuplicateKernelError",
            409,
            "",
        ),
        (
            "a Kubernetes kernelspec",
            r#"{"name": "python_kubernetes", "env": {"KERNEL_USERNAME": "alice"}}"#.to_owned(),
            "ConfigException",
            501,
            "no Kubernetes API configuration",
        ),
        (
            "a JSON array",
            "[]".to_owned(),
            "AttributeError: 'list' object has no attribute 'setdefault'",
            400,
            "Invalid JSON in body of request",
        ),
    ] {
        // Ours is asked about its own running kernel for the duplicate.
        let (up, ours) = each(
            &pair,
            ("POST", "/api/kernels", Some(&body), true),
            (
                "POST",
                "/api/kernels",
                Some(&body.replace(&up_id, &our_id)),
                true,
            ),
        )
        .await;
        assert_eq!(up.status, 500, "{what}: {}", up.text);
        assert_eq!(up.json["message"], "Unknown server error", "{what}");
        assert!(
            up.json["traceback"].as_str().unwrap().contains(up_error),
            "{what}: {}",
            up.text
        );
        assert_eq!(ours.status, our_status, "{what}: {}", ours.text);
        assert!(
            ours.json["message"].as_str().unwrap().contains(our_text),
            "{what}: {}",
            ours.text
        );
        assert_eq!(ours.json.get("traceback"), None, "{what}");
    }

    // difference: prohibited characters in a value. Upstream 3.3.0 does not check them (it
    // starts the kernel); ours refuses with 400.
    let body =
        r#"{"name": "python3_local", "env": {"KERNEL_USERNAME": "alice", "KERNEL_X": "a$b"}}"#;
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(body)).await;
    assert_eq!(up.status, 201, "{}", up.text);
    assert_eq!(ours.status, 400, "{}", ours.text);
    assert_eq!(
        ours.json,
        json!({"reason": "Bad Request",
               "message": "Environment variable 'KERNEL_X' contains prohibited characters"})
    );
    let extra = format!("/api/kernels/{}", up.json["id"].as_str().unwrap());
    let gone = call(&pair.upstream, "DELETE", &extra, None, true).await;
    assert_eq!(gone.status, 204, "{}", gone.text);

    // Interrupt and restart.
    let (up, ours) = on_each(&pair, "POST", &format!("{up_path}/interrupt"), kernel).await;
    same_body("interrupt", &up, &ours);
    assert_eq!((up.status, up.text.as_str()), (204, ""));
    let (up, ours) = on_each(&pair, "POST", &format!("{up_path}/restart"), kernel).await;
    same_shape("restart", &up, &ours);
    assert_eq!(up.status, 200, "{}", up.text);
    assert_kernel_model("restart upstream", &up.json, "python3_local");
    assert_kernel_model("restart ours", &ours.json, "python3_local");
    assert_eq!(
        (&up.json["id"], &ours.json["id"]),
        (&json!(up_id), &json!(our_id))
    );

    // An execute through each: the same messages on the same channels.
    let (up, ours) = tokio::join!(
        execute(&pair.upstream, &up_id, "1+1"),
        execute(&pair.ours, &our_id, "1+1")
    );
    let expected: std::collections::BTreeSet<(String, String, String)> = [
        ("iopub", "status", "busy"),
        ("iopub", "execute_input", ""),
        ("iopub", "execute_result", ""),
        ("iopub", "status", "idle"),
        ("shell", "execute_reply", ""),
    ]
    .iter()
    .map(|(c, t, s)| (c.to_string(), t.to_string(), s.to_string()))
    .collect();
    assert_eq!(up.seen, expected, "upstream: {up:?}");
    assert_eq!(up, ours);
    assert_eq!(up.result, json!({"text/plain": "2"}));
    assert_eq!(up.reply_status, "ok");

    // Websocket refusals: unknown kernel 404, no token 401, same bodies.
    let (up, ours) = tokio::join!(
        channels(&pair.upstream, unknown, true),
        channels(&pair.ours, unknown, true)
    );
    let (up, ours) = (up.err().unwrap(), ours.err().unwrap());
    assert_eq!(up, ours);
    assert_eq!(
        up,
        (
            404,
            json!({"reason": "Not Found", "message": format!("Kernel does not exist: {unknown}")})
        )
    );
    let (up, ours) = tokio::join!(
        channels(&pair.upstream, &up_id, false),
        channels(&pair.ours, &our_id, false)
    );
    let (up, ours) = (up.err().unwrap(), ours.err().unwrap());
    assert_eq!(up, ours);
    assert_eq!(up, (401, json!({"reason": "Unauthorized", "message": ""})));

    // Sessions: the second kernel of each.
    let session = r#"{"path": "nb.ipynb", "type": "notebook", "name": "nb", "kernel": {"name": "python3_local"}}"#;
    let (up, ours) = both(&pair, "POST", "/api/sessions", Some(session)).await;
    assert_eq!(
        (up.status, ours.status),
        (201, 201),
        "{} / {}",
        up.text,
        ours.text
    );
    for r in [&up, &ours] {
        let id = r.json["id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok());
        assert_eq!(r.location.as_deref(), Some(&*format!("/api/sessions/{id}")));
        assert_eq!(r.json["notebook"]["path"], "nb.ipynb");
        assert_kernel_model("session kernel", &r.json["kernel"], "python3_local");
    }
    let mut up_keys: Vec<_> = up.json.as_object().unwrap().keys().cloned().collect();
    up_keys.sort();
    assert_eq!(up_keys, ["id", "kernel", "notebook"]);
    // difference: ours is a superset (Jupyter Server 2's model and the legacy `notebook`).
    let mut our_keys: Vec<_> = ours.json.as_object().unwrap().keys().cloned().collect();
    our_keys.sort();
    assert_eq!(
        our_keys,
        ["id", "kernel", "name", "notebook", "path", "type"]
    );
    assert_eq!(
        ours.json["notebook"],
        json!({"path": "nb.ipynb", "name": "nb"})
    );
    let (up_session, our_session) = (
        up.json["id"].as_str().unwrap().to_owned(),
        ours.json["id"].as_str().unwrap().to_owned(),
    );
    let (up_session_kernel, our_session_kernel) = (
        up.json["kernel"]["id"].as_str().unwrap().to_owned(),
        ours.json["kernel"]["id"].as_str().unwrap().to_owned(),
    );
    let session = (up_session.as_str(), our_session.as_str());
    let up_session_path = format!("/api/sessions/{up_session}");
    let session_kernel = (up_session_kernel.as_str(), our_session_kernel.as_str());
    let (up, ours) = both(&pair, "GET", "/api/sessions", None).await;
    assert_eq!((up.status, ours.status), (200, 200));
    assert_eq!(up.json.as_array().unwrap().len(), 1);
    assert_eq!(ours.json.as_array().unwrap().len(), 1);
    assert_eq!(up.json[0]["id"], up_session.as_str());
    assert_eq!(ours.json[0]["id"], our_session.as_str());
    // difference: upstream cannot answer a single session (500, TypeError in jupyter_server
    // 1.24 awaiting EG's synchronous session manager); ours answers the model.
    let (up, ours) = on_each(&pair, "GET", &up_session_path, session).await;
    assert_eq!(up.status, 500, "{}", up.text);
    assert!(up.text.contains("TypeError"), "{}", up.text);
    assert_eq!(ours.status, 200, "{}", ours.text);
    assert_eq!(ours.json["id"], our_session.as_str());
    // Bad session requests.
    for (body, message) in [
        (
            r#"{"type": "notebook"}"#,
            "Missing field in JSON data: path",
        ),
        (r#"{"path": "b.ipynb"}"#, "Missing field in JSON data: type"),
        (r#"{"path": "x""#, "Invalid JSON in body of request"),
    ] {
        let (up, ours) = both(&pair, "POST", "/api/sessions", Some(body)).await;
        assert_eq!((up.status, ours.status), (400, 400), "{body}");
        assert_eq!(
            up.json,
            json!({"reason": "Bad Request", "message": message})
        );
        assert_eq!(ours.json, up.json);
    }

    // The limit (EG_MAX_KERNELS=2, two running): 403 "Resource Limit".
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(local)).await;
    same_body("at the limit", &up, &ours);
    assert_eq!(
        (up.status, &up.json),
        (
            403,
            &json!({"reason": "Forbidden", "message": "Resource Limit"})
        )
    );
    // difference: upstream checks the limit before reading the body, ours after.
    let (up, ours) = both(&pair, "POST", "/api/kernels", Some(r#"{"name":"#)).await;
    assert_eq!(
        (up.status, &up.json),
        (
            403,
            &json!({"reason": "Forbidden", "message": "Resource Limit"})
        )
    );
    assert_eq!(
        (ours.status, &ours.json),
        (
            400,
            &json!({"reason": "Bad Request", "message": "Invalid JSON in body of request"})
        )
    );

    // Ending the session ends its kernel.
    let (up, ours) = on_each(&pair, "DELETE", &up_session_path, session).await;
    same_body("delete session", &up, &ours);
    assert_eq!(up.status, 204);
    let path = format!("/api/kernels/{up_session_kernel}");
    let (up, ours) = on_each(&pair, "GET", &path, session_kernel).await;
    same_shape("the session's kernel", &up, &ours);
    assert_eq!(up.status, 404);
    let (up, ours) = both(&pair, "GET", "/api/sessions", None).await;
    same_body("no sessions", &up, &ours);
    assert_eq!(up.json, json!([]));
    // difference: an unknown session is upstream's 410 "Kernel deleted before session", ours 404.
    let path = format!("/api/sessions/{unknown}");
    let (up, ours) = both(&pair, "DELETE", &path, None).await;
    assert_eq!(
        (up.status, &up.json),
        (
            410,
            &json!({"message": "Kernel deleted before session", "reason": null})
        )
    );
    assert_eq!(
        (ours.status, &ours.json),
        (
            404,
            &json!({"message": format!("Session not found: {unknown}"), "reason": null})
        )
    );

    // Delete: 204, then gone from the listing.
    let (up, ours) = on_each(&pair, "DELETE", &up_path, kernel).await;
    same_body("delete", &up, &ours);
    assert_eq!((up.status, up.text.as_str()), (204, ""));
    let (up, ours) = both(&pair, "GET", "/api/kernels", None).await;
    same_body("empty list", &up, &ours);
    assert_eq!(up.json, json!([]));

    // No kernel process is left by either.
    let runtime = root.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_naming(&runtime).is_empty() {
        assert!(
            Instant::now() < deadline,
            "kernel processes left: {:?}",
            processes_naming(&runtime)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
