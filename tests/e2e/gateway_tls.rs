//! The `gateway` binary over HTTPS: certificates made with `openssl`, a client trusting their CA,
//! plain HTTP refused, the TLS versions EG_SSL_VERSION offers, client certificates required with
//! EG_CLIENT_CA, and their names checked with EG_AUTHORIZED_ORIGIN. (Invalid TLS settings
//! are tested beside the crate, in `gateway/tests/cli.rs`.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{ChildGuard, free_port, gateway_command, output_ok};

fn openssl(dir: &Path, args: &[&str]) {
    output_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null()),
    );
}

/// A self-signed CA: `NAME.crt`, `NAME.key`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A certificate `NAME.crt` (key `NAME.key`) signed by the CA `issuer`, with `extensions`.
fn leaf(dir: &Path, name: &str, issuer: &str, extensions: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.crt"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
subjectAltName=IP:127.0.0.1,DNS:localhost\n";
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

struct Pki {
    dir: tempfile::TempDir,
    server_ca: reqwest::Certificate,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_crt = ca(dir.path(), "server-ca");
        let (server_cert, server_key) = leaf(dir.path(), "server", "server-ca", SERVER_EXT);
        let server_ca = reqwest::Certificate::from_pem(&std::fs::read(ca_crt).unwrap()).unwrap();
        Self {
            dir,
            server_ca,
            server_cert,
            server_key,
        }
    }

    /// A client identity (certificate and key in one PEM) signed by `issuer`.
    fn identity(&self, name: &str, issuer: &str) -> reqwest::Identity {
        self.identity_with(name, issuer, CLIENT_EXT)
    }

    /// A client identity signed by `issuer`, with `extensions`.
    fn identity_with(&self, name: &str, issuer: &str, extensions: &str) -> reqwest::Identity {
        let (crt, key) = leaf(self.dir.path(), name, issuer, extensions);
        let mut pem = std::fs::read(crt).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    }

    /// A client builder trusting the server's CA.
    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_certs_only([self.server_ca.clone()])
    }

    /// A client trusting the server's CA, presenting `identity` when given.
    fn client(&self, identity: Option<reqwest::Identity>) -> reqwest::Client {
        let mut builder = self.builder().timeout(Duration::from_secs(10));
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder.build().unwrap()
    }
}

/// The gateway on a free port with the server certificate and `env`; waits until a client
/// presenting `identity` gets an answer over HTTPS.
async fn start(
    pki: &Pki,
    env: &[(&str, &str)],
    identity: Option<reqwest::Identity>,
) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = gateway_command(pki.dir.path(), port);
    cmd.env("EG_ADMIN_ADDR", "off")
        .env("EG_CERTFILE", &pki.server_cert)
        .env("EG_KEYFILE", &pki.server_key);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = ChildGuard(cmd.spawn().unwrap());
    let client = pki.client(identity);
    let url = format!("https://127.0.0.1:{port}/api");
    let started = Instant::now();
    loop {
        if client.get(&url).send().await.is_ok() {
            return (child, port);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "gateway did not answer over HTTPS on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `url` with a client from `builder` (and a 10 s timeout).
async fn get_with(
    builder: reqwest::ClientBuilder,
    url: &str,
) -> reqwest::Result<reqwest::Response> {
    let client = builder.timeout(Duration::from_secs(10)).build().unwrap();
    client.get(url).send().await
}

#[tokio::test]
async fn https_with_the_ca_trusted_and_plain_http_refused() {
    let pki = Pki::new();
    let (_gateway, port) = start(&pki, &[], None).await;

    let r = pki
        .client(None)
        .get(format!("https://127.0.0.1:{port}/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["gateway_version"].is_string(), "{body}");

    let plain = get_with(
        reqwest::Client::builder(),
        &format!("http://127.0.0.1:{port}/api"),
    )
    .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A client that does not trust the CA refuses the server.
    let untrusting = get_with(
        reqwest::Client::builder().tls_certs_only([]),
        &format!("https://127.0.0.1:{port}/api"),
    )
    .await;
    assert!(untrusting.is_err(), "untrusted server accepted");

    // Without EG_SSL_VERSION both TLS 1.2 and TLS 1.3 are offered.
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let only = pki
            .builder()
            .min_tls_version(version)
            .max_tls_version(version);
        let r = get_with(only, &format!("https://127.0.0.1:{port}/api")).await;
        assert_eq!(r.unwrap().status(), 200, "{version:?}");
    }
}

#[tokio::test]
async fn ssl_version_5_offers_tls_1_2_only() {
    let pki = Pki::new();
    let (_gateway, port) = start(&pki, &[("EG_SSL_VERSION", "5")], None).await;
    let url = format!("https://127.0.0.1:{port}/api");

    let tls13 = pki
        .builder()
        .min_tls_version(reqwest::tls::Version::TLS_1_3);
    let r = get_with(tls13, &url).await;
    assert!(r.is_err(), "a TLS 1.3-only client was answered: {r:?}");

    let tls12 = pki
        .builder()
        .max_tls_version(reqwest::tls::Version::TLS_1_2);
    assert_eq!(get_with(tls12, &url).await.unwrap().status(), 200);
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let pki = Pki::new();
    let client_ca = ca(pki.dir.path(), "client-ca");
    let good = pki.identity("alice", "client-ca");
    let env = [("EG_CLIENT_CA", client_ca.to_str().unwrap())];
    let (_gateway, port) = start(&pki, &env, Some(good.clone())).await;
    let url = format!("https://127.0.0.1:{port}/api");

    let r = pki.client(Some(good)).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let anonymous = pki.client(None).get(&url).send().await;
    assert!(anonymous.is_err(), "answered without a client certificate");

    // Signed by another CA (the server's): refused too.
    let stranger = pki.identity("mallory", "server-ca");
    let r = pki.client(Some(stranger)).get(&url).send().await;
    assert!(
        r.is_err(),
        "answered a certificate the client CA did not sign"
    );
}

#[tokio::test]
async fn authorized_origin_needs_a_client_certificate_for_the_name() {
    let pki = Pki::new();
    let client_ca = ca(pki.dir.path(), "client-ca");
    let for_name = |name: &str, host: &str| {
        pki.identity_with(
            name,
            "client-ca",
            &format!("{CLIENT_EXT}subjectAltName=DNS:{host}\n"),
        )
    };
    let proxy = for_name("proxy", "proxy.example");
    let other = for_name("other", "other.example");
    let env = [
        ("EG_CLIENT_CA", client_ca.to_str().unwrap()),
        ("EG_AUTHORIZED_ORIGIN", "proxy.example"),
    ];
    let (_gateway, port) = start(&pki, &env, Some(proxy.clone())).await;
    let base = format!("https://127.0.0.1:{port}");

    let client = pki.client(Some(proxy));
    for path in ["/api", "/api/kernelspecs", "/api/kernels"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // Signed by the client CA, but for another name: the TLS handshake succeeds, the request is
    // refused with upstream's 403.
    let client = pki.client(Some(other));
    for path in ["/api", "/api/kernels", "/api/kernels/1-2-3-4-5/channels"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"reason": "Forbidden", "message": "Forbidden"})
        );
    }
    // The client CA's own name-less certificate (only a common name): 403 as well.
    let client = pki.client(Some(pki.identity("proxy.example", "client-ca")));
    let r = client.get(format!("{base}/api")).send().await.unwrap();
    assert_eq!(r.status(), 403);
}
