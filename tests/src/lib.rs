//! Helpers for the end-to-end tests: the components `tests/scripts/env-up.sh` started, the
//! binaries under test, test images, an upstream-shaped fake gateway, one HTTP client, and the
//! backend matrix with a builder for running the agent ([`backend`]).

pub mod backend;

pub use backend::{Backend, Daemon, Kip, PullPath, repo_of, unique};

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

/// A variable exported by `tests/scripts/env-up.sh`. When it is missing the test is skipped,
/// except under `CI=true`, where a missing component is a failure.
pub fn component(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{var} is not set: run the tests through tests/run.sh (CI=true forbids skipping)"
            )
        }
        _ => {
            eprintln!("SKIP: {var} is not set; run the tests through tests/run.sh");
            None
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A workspace binary (`kip`, `gateway`), built next to the test executables.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Runs `kip` with a clean environment plus `env`, and returns its output.
pub fn run_kip(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = kip_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kip")
}

/// The `kip` binary with a clean environment (only `PATH`), and the disk guard at 100 %: tests
/// other than the disk guard's own must not depend on how full the build machine's disk is
/// (the default 85 % is reached on some). Callers' variables override both.
pub fn kip_command() -> Command {
    let mut cmd = Command::new(binary("kip"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KIP_MAX_DISK_USAGE_PERCENT", "100");
    cmd
}

/// The `gateway` binary with a clean environment, its Jupyter data path under `root` and its
/// API on `127.0.0.1:PORT`, stdin closed. Callers add the rest.
pub fn gateway_command(root: &Path, port: u16) -> Command {
    gateway_command_for(&binary("gateway"), root, port)
}

/// As [`gateway_command`], running the gateway executable `program` (for a crate's own tests,
/// the one Cargo built for them).
pub fn gateway_command_for(program: &Path, root: &Path, port: u16) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("JUPYTER_PATH", root)
        .env("JUPYTER_DATA_DIR", root.join("data"))
        .env("EG_IP", "127.0.0.1")
        .env("EG_PORT", port.to_string())
        .stdin(std::process::Stdio::null());
    cmd
}

/// stdout and stderr together, for assertions on what the agent printed.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `count` multi-layer images `REGISTRY/PREFIX-<i>:1` (shared base layer) and pushes
/// them to the test registry; returns their references.
pub fn push_images(registry: &str, prefix: &str, count: usize) -> Vec<String> {
    push_images_with(registry, prefix, count, None, None)
}

/// [`push_images`] with a random-data layer of `data_mb` MiB (the script's default otherwise),
/// pushed with `user:password` to a registry that requires them.
pub fn push_images_with(
    registry: &str,
    prefix: &str,
    count: usize,
    data_mb: Option<usize>,
    creds: Option<(&str, &str)>,
) -> Vec<String> {
    let script = repo_root().join("tests/scripts/build-images.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .args([registry, prefix, &count.to_string()]);
    if let Some(mb) = data_mb {
        cmd.arg(mb.to_string());
    }
    if let Some((user, password)) = creds {
        cmd.env("KIP_TEST_PUSH_CREDS", format!("{user}:{password}"));
    }
    output_ok(&mut cmd)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Points tag `to` (`REPO:TAG` in the test registry) at the image `from` names.
pub fn retag(registry: &str, from: &str, to: &str) {
    output_ok(
        Command::new("bash")
            .arg(repo_root().join("tests/scripts/build-images.sh"))
            .args(["--retag", registry, from, to]),
    );
}

/// Writes a Docker config (`{"auths": {REGISTRY: ENTRY}}`, the form of a Kubernetes
/// `.dockerconfigjson` pull secret) to `path`.
pub fn write_docker_config(path: &Path, registry: &str, entry: Value) {
    let config = json!({ "auths": { registry: entry } });
    std::fs::write(path, config.to_string()).expect("write the Docker config");
}

/// Requests the test registry served whose access-log line contains `needle` (e.g.
/// `GET /v2/test/x/blobs/`), leaving out those of the tests' own image pusher (skopeo, which
/// also probes other repositories' blobs while tests run side by side).
pub fn registry_requests(needle: &str) -> usize {
    registry_lines(needle).len()
}

/// The access-log lines [`registry_requests`] counts.
pub fn registry_lines(needle: &str) -> Vec<String> {
    let log = component("KIP_TEST_REGISTRY_LOG").expect("registry log");
    registry_log_lines(&log, needle)
}

/// The access-log lines of the registry logging to `log` that contain `needle`, not sent by
/// skopeo. The registry writes a line once it has answered, so the log is read until two reads
/// 50 ms apart agree.
pub fn registry_log_lines(log: &str, needle: &str) -> Vec<String> {
    let read = || request_lines(&std::fs::read_to_string(log).unwrap_or_default(), needle);
    let mut lines = read();
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let again = read();
        if again.len() == lines.len() {
            break;
        }
        lines = again;
    }
    lines
}

/// Access-log lines (Apache combined format) of `log` that contain `needle` and were not sent
/// by skopeo.
fn request_lines(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|l| l.contains(needle) && !l.contains("\"skopeo/"))
        .map(str::to_owned)
        .collect()
}

/// Runs a command and returns stdout, failing the test with its stderr otherwise.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    output_ok(Command::new(program).args(args))
}

/// Runs `cmd` to its end and returns its stdout, failing the test with its stderr otherwise.
pub fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain HTTP GET on loopback: (status, body). Connection errors are status 0.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    match http_request(addr, path, &[]) {
        Some(reply) => (
            reply.status,
            String::from_utf8_lossy(&reply.body).into_owned(),
        ),
        None => (0, String::new()),
    }
}

/// A free port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct free ports on 127.0.0.1 (all held at once while chosen, so a process that has not
/// bound its port yet cannot be handed the same one twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A Kubernetes kernelspec's `kernel.json`: a python kernel started by `argv` through upstream's
/// KubernetesProcessProxy with `config` (e.g. `{"image_name": ...}`).
pub fn kubernetes_kernel_json(display_name: &str, argv: Value, config: Value) -> Value {
    json!({
        "argv": argv,
        "display_name": display_name,
        "language": "python",
        "metadata": {
            "process_proxy": {
                "class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
                "config": config
            }
        }
    })
}

/// A kernelspec entry as upstream's `GET /api/kernelspecs` serves it.
pub fn kernelspec_entry(name: &str, config: Value) -> Value {
    let mut spec = kubernetes_kernel_json(
        &format!("{name} on Kubernetes"),
        json!([
            "python",
            "/usr/local/share/jupyter/kernels/{name}/scripts/launch_kubernetes.py",
            "--RemoteProcessProxy.kernel-id",
            "{kernel_id}"
        ]),
        config,
    );
    spec["env"] = json!({});
    spec["interrupt_mode"] = json!("signal");
    spec["metadata"]["debugger"] = json!(true);
    json!({
        "name": name,
        "spec": spec,
        "resources": {"logo-64x64": format!("/kernelspecs/{name}/logo-64x64.png")}
    })
}

/// Writes `content` to `dir/rel`, creating the directories on the way.
pub fn write_file(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// What the fake gateway saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub uri: String,
    pub authorization: Option<String>,
    pub if_none_match: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
struct GatewayState {
    body: Arc<Mutex<Value>>,
    token: Option<String>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    /// Advertise and hold `?wait=` watches, as this project's gateway does.
    watch: bool,
}

/// A stand-in for Enterprise Gateway's kernelspec listing: token check as upstream
/// (`Authorization: token …`, 401 body), a strong ETag, and 304 on `If-None-Match`.
pub struct FakeGateway {
    pub url: String,
    body: Arc<Mutex<Value>>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl FakeGateway {
    pub async fn start(body: Value, token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, body, token)
    }

    /// Like [`start`](Self::start), but advertising watches and holding `?wait=` requests until
    /// the body changes.
    pub async fn start_watching(body: Value, token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, body, token, true)
    }

    /// Serves on a listener the caller bound (e.g. on a port chosen before the gateway is up).
    pub fn start_on(listener: tokio::net::TcpListener, body: Value, token: Option<&str>) -> Self {
        Self::serve(listener, body, token, false)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        body: Value,
        token: Option<&str>,
        watch: bool,
    ) -> Self {
        let state = GatewayState {
            body: Arc::new(Mutex::new(body)),
            token: token.map(str::to_owned),
            seen: Arc::default(),
            watch,
        };
        let app = Router::new()
            .route("/api/kernelspecs", get(kernelspecs))
            .with_state(state.clone());
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            body: state.body,
            seen: state.seen,
        }
    }

    pub fn set_body(&self, body: Value) {
        *self.body.lock().unwrap() = body;
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

async fn kernelspecs(State(state): State<GatewayState>, uri: Uri, headers: HeaderMap) -> Response {
    let header_str = |h| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header_str(header::AUTHORIZATION);
    let if_none_match = header_str(header::IF_NONE_MATCH);
    let authorized = match &state.token {
        None => true,
        Some(token) => authorization.as_deref() == Some(&format!("token {token}")),
    };
    let current = || {
        let body = serde_json::to_vec(&*state.body.lock().unwrap()).unwrap();
        let etag = format!("\"{:016x}\"", fnv1a(&body));
        (body, etag)
    };
    let (mut body, mut etag) = current();
    let wait = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait=")))
        .and_then(|w| w.parse::<u64>().ok());
    if let (true, true, Some(wait)) = (state.watch, authorized, wait) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
        while if_none_match.as_deref() == Some(etag.as_str())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            (body, etag) = current();
        }
    }
    let mut response = if !authorized {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"reason": "Unauthorized", "message": ""}"#.to_owned().into_bytes(),
        )
            .into_response()
    } else if if_none_match.as_deref() == Some(etag.as_str()) {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
    } else {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::ETAG, etag),
            ],
            body,
        )
            .into_response()
    };
    if state.watch {
        response.headers_mut().insert(
            "x-kernelspecs-watch",
            axum::http::HeaderValue::from_static("1"),
        );
    }
    state.seen.lock().unwrap().push(SeenRequest {
        uri: uri.to_string(),
        authorization,
        if_none_match,
        status: response.status().as_u16(),
    });
    response
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A plain HTTP/1.1 GET on loopback with extra headers, reading the whole response (the server
/// must send Content-Length or close). `None` when the connection fails.
pub fn http_request(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<HttpReply> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(HttpReply {
        status,
        headers,
        body,
    })
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `addr` answers `path` with any HTTP status, or panics after `timeout`.
pub fn wait_http(addr: &str, path: &str, timeout: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + timeout;
    while http_request(addr, path, &[]).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not answer on {addr} within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A TCP proxy to a registry that, while cutting, closes every connection after `limit` bytes
/// from upstream (downloads break mid-layer, as when a registry goes away); once healed it passes
/// everything through.
pub struct CuttingProxy {
    /// `127.0.0.1:PORT`, to use as the registry host in references.
    pub addr: String,
    cutting: Arc<std::sync::atomic::AtomicBool>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(upstream: &str, limit: usize) -> Self {
        use std::{
            io::{Read, Write},
            net::{Shutdown, TcpListener, TcpStream},
            sync::atomic::Ordering,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cutting = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cuts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (upstream, c, n) = (upstream.to_owned(), cutting.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut client_r, mut up_w) =
                    (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_r, &mut up_w);
                });
                let (c, n) = (c.clone(), n.clone());
                std::thread::spawn(move || {
                    let mut sent = 0usize;
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        let cut_now = c.load(Ordering::SeqCst) && sent >= limit;
                        if cut_now {
                            n.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        let room = if c.load(Ordering::SeqCst) {
                            limit - sent
                        } else {
                            buf.len()
                        };
                        let read = match up.read(&mut buf[..room.clamp(1, 64 * 1024)]) {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        if client.write_all(&buf[..read]).is_err() {
                            break;
                        }
                        sent += read;
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = up.shutdown(Shutdown::Both);
                });
            }
        });
        Self {
            addr,
            cutting,
            cuts,
        }
    }

    /// The registry is back: stop cutting.
    pub fn heal(&self) {
        self.cutting
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Standard base64 (with `+`, `/` and padding), as Docker config files hold credentials.
pub fn base64_encode(bytes: &[u8]) -> String {
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

/// Kernelspecs installed system-wide (`/usr/local/share/jupyter/kernels`,
/// `/usr/share/jupyter/kernels`, e.g. Debian's `python3` from python3-ipykernel): every gateway
/// searches there after `JUPYTER_PATH`, as Jupyter does, so listings include them.
pub fn system_kernelspecs() -> Vec<String> {
    let mut names: Vec<String> = [
        "/usr/local/share/jupyter/kernels",
        "/usr/share/jupyter/kernels",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flatten()
    .filter_map(Result::ok)
    .filter(|e| e.path().join("kernel.json").is_file())
    .filter_map(|e| Some(e.file_name().to_str()?.to_lowercase()))
    .collect();
    names.sort();
    names.dedup();
    names
}

/// Processes whose command line names `needle`: kernels name their connection file, under a
/// test's runtime directory, so this finds every kernel a test's gateway started.
pub fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::request_lines;

    #[test]
    fn registry_requests_count_access_lines_of_others_than_skopeo() {
        let log = r#"time="t" level=info msg="response completed" http.request.uri="/v2/test/a-1/manifests/1"
127.0.0.1 - - [03/Dec/2026:06:32:53 +0000] "GET /v2/test/a-1/manifests/1 HTTP/1.1" 200 661 "" "kip/0.1.0"
127.0.0.1 - - [03/Dec/2026:06:32:56 +0000] "HEAD /v2/test/a-1/blobs/sha256:90 HTTP/1.1" 200 0 "" "skopeo/1.9.3"
127.0.0.1 - - [03/Dec/2026:06:32:57 +0000] "GET /v2/test/a-1/blobs/sha256:90 HTTP/1.1" 200 9 "" "containerd/v2.1.4"
127.0.0.1 - - [03/Dec/2026:06:32:57 +0000] "GET /v2/test/a-10/blobs/sha256:90 HTTP/1.1" 200 9 "" "kip/0.1.0"
"#;
        for (needle, expected) in [
            ("/v2/test/a-1/", 2),
            ("GET /v2/test/a-1/blobs/", 1),
            ("HEAD /v2/test/a-1/", 0),
            ("/v2/test/a-10/", 1),
            ("/v2/test/b-1/", 0),
        ] {
            assert_eq!(request_lines(log, needle).len(), expected, "{needle}");
        }
    }
}
