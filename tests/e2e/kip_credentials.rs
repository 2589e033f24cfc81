//! Registry credentials and trust, on every backend of the matrix: pull secrets against a Basic
//! (htpasswd) registry and a Bearer-token registry, and registries whose CA only a file or the
//! containerd hosts directory names.

use e2e::{
    Backend, Daemon, PullPath, base64_encode, component, push_images, push_images_with,
    registry_log_lines, repo_of, unique, write_docker_config,
};
use serde_json::json;

/// The pull secret's entry for `user:password`: the `auth` form (base64; the test password's
/// base64 forms hold '+' and '/', so a client sending standard instead of URL-safe base64 to
/// Docker would fail) for Docker and CRI, the `username`/`password` form for the native backend.
/// Returns the entry and the encoded credential, when there is one.
fn pull_secret_entry(backend: Backend, user: &str, password: &str) -> (serde_json::Value, String) {
    if backend.is_containerd() {
        (
            json!({"username": user, "password": password}),
            String::new(),
        )
    } else {
        let auth = base64_encode(format!("{user}:{password}").as_bytes());
        (json!({"auth": auth}), auth)
    }
}

/// The test registries' user and password (`KIP_TEST_AUTH_USER`, `KIP_TEST_AUTH_PASSWORD`).
fn registry_user() -> Option<(String, String)> {
    let (user, password) = (
        component("KIP_TEST_AUTH_USER"),
        component("KIP_TEST_AUTH_PASSWORD"),
    );
    Some((user?, password?))
}

/// The HTTPS registry whose CA no system store holds, and the CA's file
/// (`KIP_TEST_TLS_REGISTRY`, `KIP_TEST_TLS_REGISTRY_CA`).
fn tls_registry() -> Option<(String, String)> {
    let (registry, ca) = (
        component("KIP_TEST_TLS_REGISTRY"),
        component("KIP_TEST_TLS_REGISTRY_CA"),
    );
    Some((registry?, ca?))
}

/// A pull secret for one registry, written where KIP_DOCKER_CONFIG can name it.
struct Secret {
    backend: Backend,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    /// The encoded credential the entry holds (empty when it holds none).
    auth: String,
}

impl Secret {
    /// The entry for `user:password` at `registry`, in a file named `file` (as Kubernetes mounts
    /// the secret).
    fn new(backend: Backend, registry: &str, user: &str, password: &str, file: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        let (entry, auth) = pull_secret_entry(backend, user, password);
        write_docker_config(&path, registry, entry);
        Self {
            backend,
            _dir: dir,
            path,
            auth,
        }
    }

    /// Pulls `image` with this secret: success, and the image taken; returns the output.
    fn pull(&self, ns: &str, image: &str) -> String {
        let images = [image.to_owned()];
        let text = self
            .backend
            .kip(ns, &images)
            .env("KIP_DOCKER_CONFIG", self.path.to_str().unwrap())
            .expect(0);
        self.backend.assert_taken(&text, &images);
        text
    }
}

/// Pulls `image` with no credentials: refused after one attempt (not retried), nothing pulled;
/// returns the output.
fn refused_without_credentials(backend: Backend, ns: &str, image: &str) -> String {
    let text = backend.kip(ns, &[image.to_owned()]).expect(1);
    assert!(text.contains("after 1 attempt(s)"), "{text}");
    assert!(!backend.has_image(ns, image));
    text
}

/// Lines of the log at `path` (none when it cannot be read) that `matches`.
fn log_lines(path: &str, matches: impl Fn(&str) -> bool) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| matches(l))
        .count()
}

/// A registry behind htpasswd (Basic challenge): refused without credentials (not retried),
/// pulled with a pull secret given through KIP_DOCKER_CONFIG, which never shows in the output.
fn credentials_from_pull_secret(backend: Backend) {
    let (Some(registry), Some((user, password)), Some(_)) = (
        component("KIP_TEST_AUTH_REGISTRY"),
        registry_user(),
        backend.socket(),
    ) else {
        return;
    };
    let image = push_images_with(
        &registry,
        &format!("test/{}-private", backend.tag()),
        1,
        None,
        Some((&user, &password)),
    )
    .remove(0);
    let ns = backend.namespace("kipauth");

    // Without credentials: unauthorized, one attempt, named.
    let text = refused_without_credentials(backend, &ns, &image);
    assert!(text.contains(&format!("{image}: unauthorized")), "{text}");

    // With the pull secret, in the form Kubernetes mounts a kubernetes.io/dockerconfigjson.
    let secret = Secret::new(backend, &registry, &user, &password, ".dockerconfigjson");
    let text = secret.pull(&ns, &image);
    assert!(
        !text.contains("does not send registry credentials"),
        "{text}"
    );
    assert!(!text.contains(&password), "the password leaked: {text}");
    if !secret.auth.is_empty() {
        assert!(
            !text.contains(&secret.auth),
            "the encoded credential leaked into the output"
        );
    }
    backend.assert_complete(&ns, &image);
    backend.assert_clean(&ns);
}

#[test]
fn credentials_from_a_pull_secret() {
    Backend::MATRIX
        .into_iter()
        .for_each(credentials_from_pull_secret);
}

/// A registry with Bearer-token auth (the harness's token issuer, as Docker Hub works): a
/// `public/` image pulls anonymously through the issuer; a private one is refused without
/// credentials (not retried) and pulls with the pull secret's, which never show in the output.
fn token_registry(backend: Backend) {
    let (Some(registry), Some(issuer_log), Some((user, password)), Some(_)) = (
        component("KIP_TEST_TOKEN_REGISTRY"),
        component("KIP_TEST_TOKEN_ISSUER_LOG"),
        registry_user(),
        backend.socket(),
    ) else {
        return;
    };
    let push = |prefix: &str| {
        push_images_with(&registry, prefix, 1, None, Some((&user, &password))).remove(0)
    };
    let public = push(&format!("public/{}-tok", backend.tag()));
    let private = push(&format!("team/{}-tok", backend.tag()));
    let token_requests = || log_lines(&issuer_log, |l| l.contains("GET /token?"));
    let ns = backend.namespace("kiptoken");

    let before = token_requests();
    let text = backend.kip(&ns, std::slice::from_ref(&public)).expect(0);
    backend.assert_taken(&text, std::slice::from_ref(&public));
    backend.assert_complete(&ns, &public);
    assert!(
        token_requests() > before,
        "the pull did not go through the token issuer:\n{text}"
    );

    let text = refused_without_credentials(backend, &ns, &private);
    assert!(
        text.contains(&format!("{private}: unauthorized"))
            || text.contains(&format!("{private}: not_found")),
        "{text}"
    );

    let secret = Secret::new(backend, &registry, &user, &password, "config.json");
    let text = secret.pull(&ns, &private);
    assert!(!text.contains(&password), "the password leaked: {text}");
    backend.assert_complete(&ns, &private);
    backend.assert_clean(&ns);
}

#[test]
fn token_registry_with_and_without_credentials() {
    Backend::MATRIX.into_iter().for_each(token_registry);
}

/// A registry serving HTTPS with a certificate from a CA no system store holds: refused (a
/// certificate error, no fallback to plain HTTP) until `KIP_REGISTRY_CA_FILE` names the CA.
fn registry_ca_file(backend: Backend) {
    let (Some((registry, ca)), Some(log), Some(_)) = (
        tls_registry(),
        component("KIP_TEST_TLS_REGISTRY_LOG"),
        backend.socket(),
    ) else {
        return;
    };
    let images = push_images(&registry, &format!("test/{}-tls", backend.tag()), 1);
    let repo = repo_of(&images[0]).to_owned();
    let ns = unique(backend, "kiptls");
    // Manifest GETs and HEADs (skopeo's PUT is not counted).
    let served = || registry_log_lines(&log, &format!("/v2/{repo}/manifests/")).len();

    let before = served();
    // The native path's own TLS client (with KIP_REGISTRY_CA_FILE set, the backend always takes
    // it; the Transfer service trusts only containerd's configuration).
    let text = backend
        .kip(&ns, &images)
        .env("KIP_CONTAINERD_TRANSFER", "off")
        .expect(1);
    assert!(
        text.contains(&format!("{}: unavailable", images[0])) && text.contains("certificate"),
        "{text}"
    );
    assert_eq!(
        served(),
        before,
        "a manifest was served without trust:\n{text}"
    );
    assert!(!backend.has_image(&ns, &images[0]));

    let text = backend
        .kip(&ns, &images)
        .env("KIP_REGISTRY_CA_FILE", &ca)
        .expect(0);
    assert!(served() > before, "{text}");
    backend.assert_complete(&ns, &images[0]);
    backend.assert_clean(&ns);
}

#[test]
fn registry_ca_file_is_trusted() {
    for daemon in [Daemon::V1, Daemon::V2] {
        registry_ca_file(Backend::Containerd(daemon, PullPath::Auto));
    }
}

/// A hosts directory (`DIR/<host>/hosts.toml` per entry) of its own under the temp dir.
fn hosts_dir(backend: Backend, what: &str, entries: &[(&str, String)]) -> String {
    let root = std::env::temp_dir().join(unique(backend, what));
    for (host, toml) in entries {
        let dir = root.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), toml).unwrap();
    }
    root.to_str().unwrap().to_owned()
}

/// containerd 2.x's Transfer service reads the hosts directory `KIP_CONTAINERD_HOSTS_DIR` names:
/// a registry name no resolver knows is pulled from the server its hosts.toml names, and fails
/// naming the server when that one is down.
#[test]
fn containerd2_transfer_pulls_through_hosts_dir_mirror() {
    let backend = Backend::Containerd(Daemon::V2, PullPath::Auto);
    let Some((registry, pushed)) = backend.push("hostsdir", 1, None) else {
        return;
    };
    let name = format!("mirror.kip.invalid/{}:1", repo_of(&pushed[0]));
    let live = hosts_dir(
        backend,
        "hosts-live",
        &[(
            "mirror.kip.invalid",
            format!("server = \"http://{registry}\"\n"),
        )],
    );
    let dead = hosts_dir(
        backend,
        "hosts-dead",
        &[(
            "mirror.kip.invalid",
            "server = \"http://127.0.0.1:1\"\n".to_owned(),
        )],
    );
    let ns = unique(backend, "kiphostsdir");
    let kip = |dir: &str| {
        backend
            .kip(&ns, std::slice::from_ref(&name))
            .env("KIP_CONTAINERD_HOSTS_DIR", dir)
            .env("KIP_NUM_RETRIES", "1")
    };

    let text = kip(&dead).expect(1);
    let summary = text
        .split("image(s) not pulled:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        summary.contains(&name) && summary.contains("127.0.0.1:1"),
        "{text}"
    );
    assert!(!backend.has_image(&ns, &name));

    let text = kip(&live).expect(0);
    PullPath::Transfer.assert_taken(Daemon::V2, &text, std::slice::from_ref(&name));
    backend.assert_complete(&ns, &name);
    backend.assert_clean(&ns);
    for dir in [live, dead] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// An HTTPS registry whose CA only the hosts directory's hosts.toml names is trusted by the
/// Transfer service; without that directory the pull fails.
#[test]
fn containerd2_transfer_trusts_hosts_dir_ca() {
    let backend = Backend::Containerd(Daemon::V2, PullPath::Auto);
    let (Some((registry, ca)), Some(_)) = (tls_registry(), backend.socket()) else {
        return;
    };
    let images = push_images(&registry, "test/cd2-hostsdir-tls", 1);
    let dir = hosts_dir(
        backend,
        "hosts-ca",
        &[(
            registry.as_str(),
            format!("server = \"https://{registry}\"\nca = \"{ca}\"\n"),
        )],
    );
    let ns = unique(backend, "kiphostsca");
    let kip = |dir: &str| {
        backend
            .kip(&ns, &images)
            .env("KIP_CONTAINERD_HOSTS_DIR", dir)
            .env("KIP_NUM_RETRIES", "1")
    };

    kip("").expect(1);
    assert!(!backend.has_image(&ns, &images[0]));

    let text = kip(&dir).expect(0);
    PullPath::Transfer.assert_taken(Daemon::V2, &text, &images);
    backend.assert_complete(&ns, &images[0]);
    backend.assert_clean(&ns);
    std::fs::remove_dir_all(dir).unwrap();
}
