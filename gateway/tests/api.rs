//! The gateway's routes, in process: through `router(state)` with `oneshot`, and over real
//! loopback TCP for the watch (held requests, hot reload, many concurrent watchers).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use e2e::{kubernetes_kernel_json, write_file};
use eg_common::kernelspec::WATCH_HEADER;
use gateway::{
    api::{self, AppState},
    config::Secret,
    cors::{Cors, CorsSettings},
    kernels::{KernelManager, KernelSettings, Launchers, local::LocalLauncher},
    kernelspecs::ListingOptions,
    metrics::Metrics,
    watch::{self, Store},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "s3cret";

fn spec_json(image: &str) -> String {
    kubernetes_kernel_json(
        "Python on Kubernetes",
        json!(["python", "launch.py", "{kernel_id}"]),
        json!({"image_name": image}),
    )
    .to_string()
}

struct Fixture {
    dir: tempfile::TempDir,
    state: AppState,
}

fn fixture(base_url: &str, token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "Python_K8s/kernel.json", &spec_json("py:1"));
    write_file(dir.path(), "Python_K8s/logo-64x64.png", "PNGDATA");
    write_file(dir.path(), "Python_K8s/scripts/launch.py", "print(1)");
    write_file(dir.path(), "r_k8s/kernel.json", &spec_json("r:1"));
    write_file(dir.path(), "secret.txt", "outside");
    let metrics = Arc::new(Metrics::default());
    let store = Store::new(
        vec![dir.path().to_path_buf()],
        ListingOptions {
            base_url: base_url.into(),
            default_kernel_name: "python_k8s".into(),
            allowed: None,
            authorized_users: vec![],
            unauthorized_users: vec!["root".into()],
        },
        metrics.clone(),
    );
    let store = Arc::new(store);
    let shutdown = CancellationToken::new();
    let kernels = KernelManager::new(
        Launchers {
            local: Arc::new(LocalLauncher::new(dir.path().join("runtime"))),
            kubernetes: None,
        },
        store.clone(),
        KernelSettings::default(),
        metrics.clone(),
        shutdown.clone(),
    );
    Fixture {
        dir,
        state: AppState {
            store,
            token: token.map(|t| Arc::new(Secret::new(t))),
            metrics,
            shutdown,
            kernels,
            sessions: Default::default(),
            list_kernels: true,
            ws_ping_interval: Duration::from_secs(30),
            cors: Default::default(),
            authorized_origin: None,
            trust_xheaders: false,
        },
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn call(state: &AppState, uri: &str, headers: &[(&str, &str)]) -> Reply {
    call_method(state, "GET", uri, headers).await
}

async fn call_method(state: &AppState, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = api::router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    reply(resp).await
}

/// The status, headers and whole body of a response.
async fn reply(resp: axum::response::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

const AUTH: (&str, &str) = ("authorization", "token s3cret");

#[tokio::test]
async fn listing_single_spec_and_resources() {
    let f = fixture("/", Some(TOKEN));
    let r = call(&f.state, "/api/kernelspecs", &[AUTH]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers[WATCH_HEADER], "1");
    let body = r.json();
    assert_eq!(body["default"], "python_k8s");
    assert_eq!(
        body["kernelspecs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["python_k8s", "r_k8s"]
    );
    assert_eq!(
        body["kernelspecs"]["python_k8s"]["resources"],
        json!({"logo-64x64": "/kernelspecs/python_k8s/logo-64x64.png"})
    );
    assert_eq!(
        body["kernelspecs"]["python_k8s"]["spec"]["interrupt_mode"],
        "signal"
    );

    // Single spec: case-insensitive lookup, named as requested.
    let r = call(&f.state, "/api/kernelspecs/Python_K8s", &[AUTH]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Python_K8s");
    assert_eq!(
        r.json()["resources"]["logo-64x64"],
        "/kernelspecs/Python_K8s/logo-64x64.png"
    );
    let r = call(&f.state, "/api/kernelspecs/nope", &[AUTH]).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"reason": "Not Found", "message": "Kernel spec nope not found"})
    );

    let r = call(&f.state, "/kernelspecs/python_k8s/logo-64x64.png", &[AUTH]).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, &b"PNGDATA"[..])
    );
    assert_eq!(r.headers["content-type"], "image/png");
    let r = call(
        &f.state,
        "/kernelspecs/python_k8s/scripts/launch.py",
        &[AUTH],
    )
    .await;
    assert_eq!(r.body, b"print(1)");
    let head = api::router(f.state.clone())
        .oneshot(
            Request::head("/kernelspecs/python_k8s/logo-64x64.png")
                .header("authorization", "token s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "image/png");
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    let r = call(&f.state, "/kernelspecs/nope/logo.png", &[AUTH]).await;
    assert_eq!(r.json()["message"], "Kernel spec nope not found");

    let r = call(&f.state, "/api", &[AUTH]).await;
    assert!(r.json()["version"].is_string());
}

#[tokio::test]
async fn path_traversal_and_non_files_are_404() {
    let f = fixture("/", Some(TOKEN));
    let outside = f.dir.path().join("secret.txt");
    std::os::unix::fs::symlink(&outside, f.dir.path().join("Python_K8s/link.txt")).unwrap();
    for uri in [
        "/kernelspecs/python_k8s/../secret.txt",
        "/kernelspecs/python_k8s/%2e%2e/secret.txt",
        "/kernelspecs/python_k8s/..%2fsecret.txt",
        "/kernelspecs/python_k8s/scripts/..%2f..%2fsecret.txt",
        "/kernelspecs/python_k8s/%2Fetc%2Fpasswd",
        "/kernelspecs/python_k8s/link.txt",
        "/kernelspecs/python_k8s/scripts",
        "/kernelspecs/python_k8s/",
        "/kernelspecs/python_k8s/missing.png",
    ] {
        let r = call(&f.state, uri, &[AUTH]).await;
        assert_eq!(r.status, 404, "{uri}");
        assert_ne!(r.body, b"outside", "{uri}");
    }
}

#[tokio::test]
async fn token_rules_match_upstream() {
    let f = fixture("/", Some(TOKEN));
    let unauthorized = json!({"reason": "Unauthorized", "message": ""});
    for (uri, headers) in [
        ("/api/kernelspecs", vec![]),
        ("/api/kernelspecs", vec![("authorization", "Bearer s3cret")]),
        ("/api/kernelspecs", vec![("authorization", "token wrong")]),
        // A wrong ?token is not rescued by a right header.
        ("/api/kernelspecs?token=wrong", vec![AUTH]),
        ("/api/kernelspecs/python_k8s", vec![]),
        ("/kernelspecs/python_k8s/logo-64x64.png", vec![]),
        ("/api", vec![]),
    ] {
        let r = call(&f.state, uri, &headers).await;
        assert_eq!(r.status, 401, "{uri} {headers:?}");
        assert_eq!(r.json(), unauthorized);
    }
    assert_eq!(
        call(&f.state, "/api/kernelspecs?token=s3cret", &[])
            .await
            .status,
        200
    );
    // The catch-all answers 404 without looking at the token.
    let r = call(&f.state, "/api/contents", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"reason": "Not Found", "message": ""}));
    // No token configured: no check.
    let open = fixture("/", None);
    assert_eq!(call(&open.state, "/api/kernelspecs", &[]).await.status, 200);
}

const CORS_HEADERS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

fn with_cors(f: &mut Fixture, allow_origin: &str) {
    f.state.cors = Arc::new(
        Cors::from_settings(&CorsSettings {
            allow_origin: allow_origin.into(),
            allow_credentials: "true".into(),
            allow_methods: "GET, POST, DELETE".into(),
            allow_headers: "Authorization, Content-Type".into(),
            expose_headers: "ETag".into(),
            max_age: "600".into(),
        })
        .unwrap(),
    );
}

#[tokio::test]
async fn options_is_answered_without_the_token_and_with_the_cors_headers() {
    let mut f = fixture("/gw/", Some(TOKEN));
    with_cors(&mut f, "https://app.example");
    let kernel = "/gw/api/kernels/1-2-3-4-5";
    for uri in [
        "/gw/api",
        "/gw/api/kernelspecs",
        "/gw/api/kernelspecs/python_k8s",
        "/gw/kernelspecs/python_k8s/logo-64x64.png",
        "/gw/api/kernels",
        kernel,
        "/gw/api/kernels/1-2-3-4-5/restart",
        "/gw/api/kernels/1-2-3-4-5/channels",
        "/gw/api/sessions",
    ] {
        // A preflight from a foreign origin is answered too: it is how browsers ask.
        let r = call_method(
            &f.state,
            "OPTIONS",
            uri,
            &[("origin", "https://app.example"), ("host", "gw:8888")],
        )
        .await;
        assert_eq!(r.status, 200, "{uri}");
        assert!(r.body.is_empty(), "{uri}");
        assert_eq!(
            r.headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            r.headers["access-control-allow-methods"],
            "GET, POST, DELETE"
        );
        assert_eq!(r.headers["access-control-max-age"], "600");
    }
    // Other methods still need the token; the catch-all stays 404 (with the headers).
    assert_eq!(call(&f.state, "/gw/api", &[]).await.status, 401);
    let r = call_method(&f.state, "OPTIONS", "/gw/api/contents", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
}

#[tokio::test]
async fn cors_headers_only_when_set() {
    let plain = fixture("/", None);
    let r = call(&plain.state, "/api/kernelspecs", &[]).await;
    assert_eq!(r.status, 200);
    for name in CORS_HEADERS {
        assert!(!r.headers.contains_key(name), "{name} without a setting");
    }
    let mut f = fixture("/", None);
    with_cors(&mut f, "*");
    for uri in ["/api/kernelspecs", "/api", "/api/kernels", "/nowhere"] {
        let r = call(&f.state, uri, &[]).await;
        for name in CORS_HEADERS {
            assert!(r.headers.contains_key(name), "{name} missing on {uri}");
        }
        assert!(!r.headers.contains_key("content-security-policy"));
    }
    assert_eq!(
        call(&f.state, "/api", &[]).await.headers["access-control-expose-headers"],
        "ETag"
    );
    // Only the non-empty ones.
    let mut one = fixture("/", None);
    one.state.cors = Arc::new(
        Cors::from_settings(&CorsSettings {
            max_age: "60".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let r = call(&one.state, "/api", &[]).await;
    let present: Vec<_> = CORS_HEADERS
        .into_iter()
        .filter(|h| r.headers.contains_key(*h))
        .collect();
    assert_eq!(present, ["access-control-max-age"]);
}

#[tokio::test]
async fn foreign_origins_are_refused_unless_allowed() {
    let not_found = json!({"reason": "Not Found", "message": ""});
    let foreign = [("origin", "https://evil.example"), ("host", "gw:8888")];
    let same = [("origin", "http://gw:8888"), ("host", "gw:8888")];
    let channels = "/api/kernels/1-2-3-4-5/channels";

    let f = fixture("/", Some(TOKEN));
    for uri in ["/api", "/api/kernelspecs", "/api/kernels", "/api/sessions"] {
        let r = call(&f.state, uri, &[foreign[0], foreign[1], AUTH]).await;
        assert_eq!(r.status, 404, "{uri}");
        assert_eq!(r.json(), not_found, "{uri}");
        assert_eq!(
            call(&f.state, uri, &[same[0], same[1], AUTH]).await.status,
            200,
            "{uri}"
        );
        // No Origin: passes.
        assert_eq!(
            call(&f.state, uri, &[("host", "gw:8888"), AUTH])
                .await
                .status,
            200
        );
    }
    // The websocket handshake is refused with 403, before the upgrade.
    let r = call(&f.state, channels, &[foreign[0], foreign[1], AUTH]).await;
    assert_eq!(r.status, 403);
    // The token is checked first, as upstream's handlers do.
    assert_eq!(call(&f.state, "/api", &foreign).await.status, 401);

    // `*`, or that very origin, lets it through.
    let mut any = fixture("/", None);
    with_cors(&mut any, "*");
    assert_eq!(call(&any.state, "/api", &foreign).await.status, 200);
    let mut exact = fixture("/", None);
    with_cors(&mut exact, "https://evil.example");
    let r = call(&exact.state, "/api", &foreign).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://evil.example"
    );
    let other = [("origin", "https://other.example"), ("host", "gw:8888")];
    assert_eq!(call(&exact.state, "/api", &other).await.status, 404);
    // Past the origin check, the websocket route answers as it would for anyone (here: not a
    // websocket handshake).
    assert_ne!(call(&exact.state, channels, &foreign).await.status, 403);
}

#[tokio::test]
async fn base_url_prefixes_routes_and_resources() {
    let f = fixture("/gw/", None);
    let r = call(&f.state, "/gw/api/kernelspecs", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["kernelspecs"]["python_k8s"]["resources"]["logo-64x64"],
        "/gw/kernelspecs/python_k8s/logo-64x64.png"
    );
    let r = call(&f.state, "/gw/kernelspecs/python_k8s/logo-64x64.png", &[]).await;
    assert_eq!(r.body, b"PNGDATA");
    assert_eq!(call(&f.state, "/api/kernelspecs", &[]).await.status, 404);
}

#[tokio::test]
async fn etag_and_304() {
    let f = fixture("/", None);
    let first = call(&f.state, "/api/kernelspecs", &[]).await;
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let r = call(&f.state, "/api/kernelspecs", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["etag"], etag.as_str());
    assert_eq!(r.headers[WATCH_HEADER], "1");
    let r = call(
        &f.state,
        "/api/kernelspecs",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    // wait=0 is a plain conditional request; a bad wait names the parameter.
    let r = call(
        &f.state,
        "/api/kernelspecs?wait=0",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    let r = call(&f.state, "/api/kernelspecs?wait=soon", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().starts_with("wait:"));

    // The ETag changes exactly when the listing does.
    write_file(f.dir.path(), "Python_K8s/notes.txt", "not a resource");
    assert!(!f.state.store.rescan());
    assert_eq!(f.state.store.current().etag, etag);
    write_file(f.dir.path(), "Python_K8s/kernel.json", &spec_json("py:2"));
    assert!(f.state.store.rescan());
    assert_ne!(f.state.store.current().etag, etag);
}

/// A served gateway with its reloader, on a loopback port.
struct Served {
    addr: std::net::SocketAddr,
    fixture: Fixture,
    cancel: CancellationToken,
}

async fn serve(rescan: Duration) -> Served {
    let fixture = fixture("/", None);
    let cancel = fixture.state.shutdown.clone();
    tokio::spawn(watch::run_reloader(
        fixture.state.store.clone(),
        rescan,
        cancel.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api::router(fixture.state.clone());
    let c = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(c.cancelled_owned())
            .await
            .unwrap()
    });
    // Let the reloader set its watches up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Served {
        addr,
        fixture,
        cancel,
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, etag, body).
async fn raw_get(
    addr: std::net::SocketAddr,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let inm = if_none_match
        .map(|e| format!("If-None-Match: {e}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{inm}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_default()
        .to_owned();
    (status, etag, body.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_returns_within_a_second_of_a_change_and_304_when_the_wait_ends() {
    // A long rescan interval: the change must be seen through filesystem notification.
    let s = serve(Duration::from_secs(3600)).await;
    let (_, etag, _) = raw_get(s.addr, "/api/kernelspecs", None).await;

    let started = Instant::now();
    let (status, same, body) = raw_get(s.addr, "/api/kernelspecs?wait=0.5", Some(&etag)).await;
    assert_eq!((status, same.as_str()), (304, etag.as_str()));
    assert!(body.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(450));

    let addr = s.addr;
    let held_etag = etag.clone();
    let held = tokio::spawn(async move {
        let r = raw_get(addr, "/api/kernelspecs?wait=30", Some(&held_etag)).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the watch must be held until a change");
    assert_eq!(s.fixture.state.metrics.watchers(), 1);
    let changed_at = Instant::now();
    write_file(
        s.fixture.dir.path(),
        "new_spec/kernel.json",
        &spec_json("new:1"),
    );
    let ((status, new_etag, body), answered_at) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(new_etag, etag);
    let latency = answered_at - changed_at;
    assert!(
        latency < Duration::from_secs(1),
        "answered after {latency:?}"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["kernelspecs"]["new_spec"].is_object());
    assert_eq!(s.fixture.state.metrics.watchers(), 0);
    s.cancel.cancel();
}

async fn wait_for(addr: std::net::SocketAddr, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, _, body) = raw_get(addr, "/api/kernelspecs", None).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        if pred(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in 3 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_add_edit_remove_and_malformed() {
    let s = serve(Duration::from_secs(3600)).await;
    let dir = s.fixture.dir.path().to_path_buf();
    write_file(&dir, "added/kernel.json", &spec_json("added:1"));
    wait_for(s.addr, "added", |b| b["kernelspecs"]["added"].is_object()).await;
    write_file(&dir, "added/kernel.json", &spec_json("added:2"));
    wait_for(s.addr, "edited", |b| {
        b["kernelspecs"]["added"]["spec"]["metadata"]["process_proxy"]["config"]["image_name"]
            == "added:2"
    })
    .await;
    write_file(&dir, "added/logo-32x32.png", "png");
    wait_for(s.addr, "new logo", |b| {
        b["kernelspecs"]["added"]["resources"]["logo-32x32"] == "/kernelspecs/added/logo-32x32.png"
    })
    .await;
    // A malformed kernel.json drops that spec only; the others stay served.
    write_file(&dir, "added/kernel.json", "{\"argv\": [");
    let body = wait_for(s.addr, "malformed", |b| b["kernelspecs"]["added"].is_null()).await;
    assert!(body["kernelspecs"]["python_k8s"].is_object());
    assert!(body["kernelspecs"]["r_k8s"].is_object());
    std::fs::remove_dir_all(dir.join("r_k8s")).unwrap();
    wait_for(s.addr, "removed", |b| b["kernelspecs"]["r_k8s"].is_null()).await;
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_rescan_sees_a_directory_created_after_start() {
    let fixture = fixture("/", None);
    // Not under any watched directory: only the periodic rescan can find it.
    let root = tempfile::tempdir().unwrap();
    let late = root.path().join("kernels");
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(Store::new(
        vec![late.clone(), fixture.dir.path().to_path_buf()],
        fixture.state.store.options().clone(),
        metrics,
    ));
    let cancel = CancellationToken::new();
    tokio::spawn(watch::run_reloader(
        store.clone(),
        Duration::from_millis(200),
        cancel.clone(),
    ));
    write_file(&late, "python_k8s/kernel.json", &spec_json("late:1"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.current().specs["python_k8s"].dir != late.join("python_k8s") {
        assert!(Instant::now() < deadline, "late dir not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_are_held_and_all_answered_on_one_change() {
    const N: usize = 1000;
    let s = serve(Duration::from_secs(3600)).await;
    let (_, etag, _) = raw_get(s.addr, "/api/kernelspecs", None).await;
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let etag = etag.clone();
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            raw_get(addr, "/api/kernelspecs?wait=60", Some(&etag)).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.fixture.state.metrics.watchers() < N as i64 {
        assert!(
            Instant::now() < deadline,
            "only {} watchers held",
            s.fixture.state.metrics.watchers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changed_at = Instant::now();
    write_file(
        s.fixture.dir.path(),
        "burst/kernel.json",
        &spec_json("burst:1"),
    );
    for t in tasks {
        let (status, new_etag, _) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_ne!(new_etag, etag);
    }
    let all_answered = changed_at.elapsed();
    assert!(
        all_answered < Duration::from_secs(5),
        "{N} watchers answered after {all_answered:?}"
    );
    assert_eq!(s.fixture.state.metrics.watchers(), 0);
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_held_watches_at_once() {
    let s = serve(Duration::from_secs(3600)).await;
    let (_, etag, _) = raw_get(s.addr, "/api/kernelspecs", None).await;
    let addr = s.addr;
    let held =
        tokio::spawn(async move { raw_get(addr, "/api/kernelspecs?wait=60", Some(&etag)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    s.cancel.cancel();
    let (status, _, _) = held.await.unwrap();
    assert_eq!(status, 304);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// GET `uri` as a request of a connection from 127.0.0.1 that presented `cert` (`None`: no
/// connect info at all).
async fn call_from(state: &AppState, uri: &str, cert: Option<Option<&[u8]>>) -> Reply {
    use axum::extract::ConnectInfo;
    use gateway::peer::Peer;
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut req = Request::builder()
        .uri(uri)
        .header(AUTH.0, AUTH.1)
        .body(Body::empty())
        .unwrap();
    if let Some(cert) = cert {
        let cert = cert.map(|pem| Arc::new(CertificateDer::from_pem_slice(pem).unwrap()));
        req.extensions_mut().insert(ConnectInfo(Peer {
            addr: "127.0.0.1:40000".parse().unwrap(),
            cert,
        }));
    }
    let resp = api::router(state.clone()).oneshot(req).await.unwrap();
    reply(resp).await
}

#[tokio::test]
async fn authorized_origin_checks_the_connections_client_certificate() {
    // subjectAltName DNS:proxy.example, DNS:*.wild.example, IP:10.0.0.5.
    let pem: &[u8] = include_bytes!("fixtures/client-san.pem");
    let mut f = fixture("/gw", Some(TOKEN));
    let allowed = |f: &mut Fixture, name: &str| {
        f.state.authorized_origin = Some(Arc::new(gateway::peer::parse_origin_name(name).unwrap()));
    };
    allowed(&mut f, "proxy.example");
    for uri in ["/gw/api", "/gw/api/kernelspecs", "/gw/api/kernels"] {
        assert_eq!(
            call_from(&f.state, uri, Some(Some(pem))).await.status,
            200,
            "{uri}"
        );
    }
    // Not the name, no certificate, no connection: upstream's 403, on every route (the
    // websocket's and the catch-all's too).
    for cert in [None, Some(None)] {
        for uri in [
            "/gw/api",
            "/gw/api/kernels/1-2-3-4-5/channels",
            "/gw/nowhere",
        ] {
            let r = call_from(&f.state, uri, cert).await;
            assert_eq!(r.status, 403, "{uri} {cert:?}");
            assert_eq!(
                r.json(),
                json!({"reason": "Forbidden", "message": "Forbidden"}),
                "{uri}"
            );
        }
    }
    allowed(&mut f, "a.wild.example");
    assert_eq!(
        call_from(&f.state, "/gw/api", Some(Some(pem))).await.status,
        200
    );
    allowed(&mut f, "other.example");
    let r = call_from(&f.state, "/gw/api", Some(Some(pem))).await;
    assert_eq!(r.status, 403);
    // Before the token check, as upstream: a request without the token is still 403.
    let r = call(&f.state, "/gw/api", &[]).await;
    assert_eq!(r.status, 403);
    // Outside the base URL the HTML 404 stays.
    allowed(&mut f, "proxy.example");
    assert_eq!(call_from(&f.state, "/elsewhere", None).await.status, 404);
}
