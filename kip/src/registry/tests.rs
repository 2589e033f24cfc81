//! The client against in-test registries: token flow, schemes, loopback detection.

use super::*;

/// A registry that challenges with Bearer and a token endpoint that wants Basic auth, on one
/// loopback port; records the request heads it receives.
async fn token_registry() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (realm, log) = (format!("http://{addr}/token"), seen.clone());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // A TLS ClientHello (record type 22): answered as Go's HTTP servers do.
            if conn.peek(&mut byte).await.unwrap() == 1 && byte[0] == 0x16 {
                let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
                continue;
            }
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).await.unwrap() == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            log.lock().unwrap().push(head.clone());
            // "u:p" in base64
            let (status, extra, body) = if head.starts_with("get /token?") {
                if head.contains("authorization: basic dtpw\r\n") {
                    ("200 OK", String::new(), r#"{"token":"tok1"}"#)
                } else {
                    ("401 Unauthorized", String::new(), "")
                }
            } else if head.contains("authorization: bearer tok1\r\n") {
                ("200 OK", String::new(), "blob")
            } else {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"svc\"\r\n"),
                    "",
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn bearer_token_is_asked_with_the_credential() {
    let (addr, seen) = token_registry().await;
    let mut keyring = Keyring::default();
    keyring
        .add_json(
            format!(r#"{{"auths":{{"{addr}":{{"username":"u","password":"p"}}}}}}"#).as_bytes(),
        )
        .unwrap();
    let r = Registry::new(vec![], None, Arc::new(keyring)).unwrap();
    let image = ImageRef::parse(&format!("{addr}/a/b:1")).unwrap();
    let resp = r.blob(&image, "sha256:00", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The TLS handshake was answered in plain HTTP: the loopback host is now reached so.
    assert!(r.plain.lock().unwrap().contains(&addr), "no fallback");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(!seen[0].contains("authorization"), "{}", seen[0]);
    assert!(seen[1].starts_with("get /token?"), "{}", seen[1]);
    assert!(
        seen[1].contains("scope=repository%3aa%2fb%3apull"),
        "{}",
        seen[1]
    );
    assert!(seen[1].contains("service=svc"), "{}", seen[1]);
    assert!(
        seen[2].contains("authorization: bearer tok1"),
        "{}",
        seen[2]
    );

    // Without a credential the token endpoint is asked anonymously (and refuses here).
    let anonymous = Registry::new(vec![], None, Arc::default()).unwrap();
    let err = anonymous.blob(&image, "sha256:00", None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err:?}");
}

#[test]
fn loopback_registries() {
    for (host, want) in [
        ("127.0.0.1:5000", true),
        ("127.0.0.1", true),
        ("127.3.4.5:80", true),
        ("localhost:5000", true),
        ("localhost", true),
        ("[::1]:5000", true),
        ("::1", true),
        ("10.0.0.1:5000", false),
        ("docker.io", false),
        ("localhost.example.com", false),
    ] {
        assert_eq!(is_loopback(host), want, "{host}");
    }
}

#[test]
fn schemes_and_api_hosts() {
    let r = Registry::new(vec!["reg.internal:5000".into()], None, Arc::default()).unwrap();
    let url = |s: &str| r.base_url(&ImageRef::parse(s).unwrap());
    // Loopback: HTTPS until the registry is seen to answer plain HTTP.
    assert_eq!(url("127.0.0.1:5000/a/b:1"), "https://127.0.0.1:5000/v2/a/b");
    r.plain.lock().unwrap().insert("127.0.0.1:5000".into());
    assert_eq!(url("127.0.0.1:5000/a/b:1"), "http://127.0.0.1:5000/v2/a/b");
    assert_eq!(url("127.0.0.1:5001/a/b:1"), "https://127.0.0.1:5001/v2/a/b");
    assert_eq!(
        url("reg.internal:5000/a:1"),
        "http://reg.internal:5000/v2/a"
    );
    assert_eq!(url("reg.internal/a:1"), "https://reg.internal/v2/a");
    assert_eq!(
        url("python:3"),
        "https://registry-1.docker.io/v2/library/python"
    );
    assert_eq!(url("ghcr.io/o/r:1"), "https://ghcr.io/v2/o/r");
}
