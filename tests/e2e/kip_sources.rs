//! Image sources against HTTP servers run inside the test: an upstream-shaped gateway listing,
//! and a fake of the Kubernetes API for the ConfigMap fetcher (no Kubernetes API server can be
//! installed on the test machines, so the fake checks the request the fetcher sends).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::Path, http::StatusCode, routing::get};
use e2e::{Backend, FakeGateway, kernelspec_entry};
use kip::{
    config::{ConfigMapRef, Secret},
    source::{ConfigMapSource, FetchError, Fetched, ImageSource, KernelSpecsSource},
};
use serde_json::{Value, json};

fn listing(specs: &[(&str, Value)]) -> Value {
    let specs: serde_json::Map<String, Value> = specs
        .iter()
        .map(|(name, config)| ((*name).to_owned(), kernelspec_entry(name, config.clone())))
        .collect();
    json!({"default": "python_kubernetes", "kernelspecs": specs})
}

fn source(gateway: &FakeGateway, token: Option<&str>) -> KernelSpecsSource {
    let token = token.map(Secret::new);
    KernelSpecsSource::new(
        &gateway.url.parse().unwrap(),
        token.map(|t: Secret| t),
        false,
        Duration::from_secs(5),
        None,
    )
    .unwrap()
}

fn images(f: Fetched) -> Vec<(String, String)> {
    match f {
        Fetched::Images(c) => c.into_iter().map(|c| (c.image, c.origin)).collect(),
        Fetched::NotModified => panic!("unexpected NotModified"),
    }
}

#[tokio::test]
async fn kernelspecs_token_in_header_only_and_etag_gives_304() {
    let gw = FakeGateway::start(
        listing(&[
            ("python_kubernetes", json!({"image_name": "elyra/kernel-py:3.2.3"})),
            (
                "spark_python_kubernetes",
                json!({"image_name": "elyra/kernel-spark-py:3.2.3", "executor_image_name": "elyra/kernel-spark-py:3.2.3"}),
            ),
        ]),
        Some("s3cr3t-token"),
    )
    .await;
    let src = source(&gw, Some("s3cr3t-token"));

    let first = images(src.fetch().await.unwrap());
    assert_eq!(
        first,
        vec![
            (
                "elyra/kernel-py:3.2.3".to_owned(),
                "kernelspec \"python_kubernetes\": metadata.process_proxy.config.image_name".to_owned()
            ),
            (
                "elyra/kernel-spark-py:3.2.3".to_owned(),
                "kernelspec \"spark_python_kubernetes\": metadata.process_proxy.config.image_name".to_owned()
            ),
            (
                "elyra/kernel-spark-py:3.2.3".to_owned(),
                "kernelspec \"spark_python_kubernetes\": metadata.process_proxy.config.executor_image_name"
                    .to_owned()
            ),
        ]
    );
    // Unchanged: a conditional request answered 304.
    assert_eq!(src.fetch().await.unwrap(), Fetched::NotModified);
    // Changed: the new list.
    gw.set_body(listing(&[(
        "r_kubernetes",
        json!({"image_name": "elyra/kernel-r:3.2.3"}),
    )]));
    assert_eq!(
        images(src.fetch().await.unwrap())[0].0,
        "elyra/kernel-r:3.2.3"
    );

    let seen = gw.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 304, 200]
    );
    for r in &seen {
        assert_eq!(
            r.uri, "/api/kernelspecs",
            "token or anything else in the URL"
        );
        assert_eq!(r.authorization.as_deref(), Some("token s3cr3t-token"));
    }
    assert_eq!(seen[0].if_none_match, None);
    assert!(seen[1].if_none_match.is_some());
}

#[tokio::test]
async fn kernelspecs_wrong_token_is_an_error_naming_the_status() {
    let gw = FakeGateway::start(listing(&[]), Some("right")).await;
    let err = source(&gw, Some("wrong")).fetch().await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 401, .. }),
        "{err}"
    );
    let err = source(&gw, None).fetch().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

#[tokio::test]
async fn kernelspecs_malformed_body_fails_and_is_fetched_again() {
    let gw = FakeGateway::start(json!({"not": "a listing"}), None).await;
    let src = source(&gw, None);
    let err = src.fetch().await.unwrap_err();
    assert!(
        err.to_string().contains("no \"kernelspecs\" object"),
        "{err}"
    );
    // The ETag of a bad body is not remembered: the next fetch is unconditional.
    let _ = src.fetch().await;
    assert!(gw.requests().iter().all(|r| r.if_none_match.is_none()));
    // A malformed entry is skipped; the others are read.
    gw.set_body(json!({"kernelspecs": {
        "bad": {"name": "bad"},
        "good": kernelspec_entry("good", json!({"image_name": "a:1"}))
    }}));
    assert_eq!(images(src.fetch().await.unwrap()).len(), 1);
}

#[tokio::test]
async fn kernelspecs_unreachable_gateway_is_a_request_error() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let src = KernelSpecsSource::new(
        &url.parse().unwrap(),
        None,
        false,
        Duration::from_secs(2),
        None,
    )
    .unwrap();
    let err = src.fetch().await.unwrap_err();
    assert!(matches!(err, FetchError::Request { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

/// A fake Kubernetes API: serves one ConfigMap and records the paths requested.
async fn fake_kube(data: Option<Value>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let app = Router::new().route(
        "/api/v1/namespaces/{ns}/configmaps/{name}",
        get(move |Path((ns, name)): Path<(String, String)>| {
            let seen = seen2.clone();
            let data = data.clone();
            async move {
                seen.lock().unwrap().push(format!("{ns}/{name}"));
                if ns != "enterprise-gateway" || name != "kernel-images" {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("configmaps \"{name}\" not found"), "reason": "NotFound", "code": 404});
                    return (StatusCode::NOT_FOUND, axum::Json(status));
                }
                let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns}});
                if let Some(data) = data {
                    cm["data"] = data;
                }
                (StatusCode::OK, axum::Json(cm))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn cm_source(url: &str, name: &str, key: &str) -> ConfigMapSource {
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    ConfigMapSource::with_client(
        ConfigMapRef {
            namespace: "enterprise-gateway".into(),
            name: name.into(),
            key: key.into(),
        },
        client,
    )
}

#[tokio::test]
async fn configmap_yaml_list_under_key() {
    let (url, seen) = fake_kube(Some(
        json!({"image-names": "- elyra/kernel-py:3.2.3\n- quay.io/x/y:1\n"}),
    ))
    .await;
    let got = images(
        cm_source(&url, "kernel-images", "image-names")
            .fetch()
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        vec![
            (
                "elyra/kernel-py:3.2.3".into(),
                "ConfigMap enterprise-gateway/kernel-images key image-names".into()
            ),
            (
                "quay.io/x/y:1".into(),
                "ConfigMap enterprise-gateway/kernel-images key image-names".into()
            ),
        ]
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["enterprise-gateway/kernel-images"]
    );
}

/// The error the ConfigMap source for `name` and `key` at `url` fails with.
async fn cm_error(url: &str, name: &str, key: &str) -> String {
    cm_source(url, name, key)
        .fetch()
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn configmap_errors_name_what_is_wrong() {
    let (url, _) = fake_kube(Some(json!({"image-names": "just-a-string:1"}))).await;
    let err = cm_error(&url, "kernel-images", "image-names").await;
    assert!(
        err.contains("enterprise-gateway/kernel-images") && err.contains("list"),
        "{err}"
    );

    let err = cm_error(&url, "kernel-images", "other-key").await;
    assert!(
        err.contains("no key \"other-key\" (KIP_CM_KEY_NAME)"),
        "{err}"
    );

    let err = cm_error(&url, "missing", "image-names").await;
    assert!(err.contains("HTTP 404"), "{err}");

    let (url, _) = fake_kube(None).await;
    let err = cm_error(&url, "kernel-images", "image-names").await;
    assert!(err.contains("no key"), "{err}");
}

fn watching_source(gateway: &FakeGateway, wait_s: u64) -> KernelSpecsSource {
    KernelSpecsSource::new(
        &gateway.url.parse().unwrap(),
        None,
        false,
        Duration::from_secs(5),
        Some(Duration::from_secs(wait_s)),
    )
    .unwrap()
}

#[tokio::test]
async fn watch_is_held_until_the_listing_changes() {
    let gw =
        FakeGateway::start_watching(listing(&[("a", json!({"image_name": "a:1"}))]), None).await;
    let src = watching_source(&gw, 10);
    assert!(!src.watches(), "watching before the gateway said it can");
    images(src.fetch().await.unwrap());
    assert!(src.watches());

    let changed_at = std::sync::Arc::new(Mutex::new(None));
    let marker = changed_at.clone();
    let body = listing(&[
        ("a", json!({"image_name": "a:1"})),
        ("b", json!({"image_name": "b:1"})),
    ]);
    let gw_body = gw.requests().len();
    assert_eq!(gw_body, 1);
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        *marker.lock().unwrap() = Some(std::time::Instant::now());
        gw.set_body(body);
    };
    let (fetched, ()) = tokio::join!(src.fetch(), change);
    let answered = std::time::Instant::now();
    let got = images(fetched.unwrap());
    assert_eq!(got.len(), 2);
    let waited = answered - changed_at.lock().unwrap().unwrap();
    assert!(
        waited < Duration::from_secs(1),
        "answered {waited:?} after the change"
    );
    let seen = gw.requests();
    assert_eq!(seen[1].uri, "/api/kernelspecs?wait=10");
    assert!(seen[1].if_none_match.is_some());

    // Unchanged until the wait ends: 304.
    let src = watching_source(&gw, 1);
    images(src.fetch().await.unwrap());
    assert_eq!(src.fetch().await.unwrap(), Fetched::NotModified);
}

#[tokio::test]
async fn no_watch_against_a_gateway_that_does_not_offer_it() {
    // Upstream ignores ?wait and answers at once; the source must then poll plainly.
    let gw = FakeGateway::start(listing(&[("a", json!({"image_name": "a:1"}))]), None).await;
    let src = watching_source(&gw, 10);
    images(src.fetch().await.unwrap());
    assert_eq!(src.fetch().await.unwrap(), Fetched::NotModified);
    assert!(!src.watches());
    assert!(gw.requests().iter().all(|r| r.uri == "/api/kernelspecs"));
}

/// With the default KIP_INTERVAL (300 s), a gateway that offers watches gets a new kernelspec's
/// image onto the node within seconds: the agent holds a watch instead of waiting the interval.
#[tokio::test(flavor = "multi_thread")]
async fn cri_daemon_reacts_to_a_new_kernelspec_through_the_watch() {
    let backend = Backend::CRI;
    let Some((_, images)) = backend.push("watch", 2, None) else {
        return;
    };
    let spec = |name: &str, image: &str| kernelspec_entry(name, json!({"image_name": image}));
    let gateway = FakeGateway::start_watching(
        json!({"default": "a", "kernelspecs": {"a": spec("a", &images[0])}}),
        None,
    )
    .await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = backend.cri_daemon(&gateway.url, "off", log.reopen().unwrap());
    let wait_for = |image: &str, limit: std::time::Duration| {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if backend.has_image("k8s.io", image) {
                return Some(started.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    };
    let first =
        tokio::task::block_in_place(|| wait_for(&images[0], std::time::Duration::from_secs(30)));
    assert!(
        first.is_some(),
        "{}",
        std::fs::read_to_string(log.path()).unwrap()
    );

    gateway.set_body(json!({"default": "a", "kernelspecs": {"a": spec("a", &images[0]), "b": spec("b", &images[1])}}));
    let second =
        tokio::task::block_in_place(|| wait_for(&images[1], std::time::Duration::from_secs(10)));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(log.path()).unwrap();
    let second = second.unwrap_or_else(|| panic!("new image not pulled within 10 s:\n{text}"));
    assert!(
        second < std::time::Duration::from_secs(3),
        "took {second:?}:\n{text}"
    );
    assert!(
        gateway.requests().iter().any(|r| r.uri.contains("wait=")),
        "no watch was held"
    );
}
