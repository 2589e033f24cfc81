//! Parsing of the whole configuration: defaults, every bad variable listed, each concern.

use super::*;

/// An environment and filesystem with only what a test puts in them.
#[derive(Default)]
struct Fake {
    vars: Vec<(&'static str, &'static str)>,
    files: Vec<(&'static str, &'static [u8])>,
}

impl Lookup for Fake {
    fn var(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }

    fn is_file(&self, path: &Path) -> bool {
        self.files.iter().any(|(p, _)| Path::new(p) == path)
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, bytes)| bytes.to_vec())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
}

fn parse(args: Args) -> Result<Config, ConfigErrors> {
    Config::from_args_with(&args, &Fake::default())
}

fn args(pairs: &[(&str, &str)]) -> Args {
    let mut argv = vec!["kip".to_owned()];
    for (flag, value) in pairs {
        argv.push(format!("--{flag}={value}"));
    }
    Args::try_parse_from(argv).unwrap()
}

#[test]
fn defaults_match_upstream() {
    let c = parse(args(&[])).unwrap();
    assert_eq!(c.source.gateway_url.as_str(), "http://localhost:8888/");
    assert_eq!(c.source.auth_token, None);
    assert!(!c.source.validate_cert);
    assert_eq!(c.pull.interval, Duration::from_secs(300));
    assert_eq!(c.pull.num_pullers, 2);
    assert_eq!(c.pull.num_retries, 3);
    assert_eq!(c.pull.policy, PullPolicy::IfNotPresent);
    assert_eq!(
        c.runtime.endpoint,
        Endpoint::Unix("/run/containerd/containerd.sock".into())
    );
    assert_eq!(c.runtime.kind, RuntimeKind::Cri);
    assert_eq!(c.source.default_registry, None);
    assert_eq!(c.logging.level, LevelFilter::INFO);
    assert_eq!(c.source.fetcher, FetcherKind::KernelSpecs);
    assert_eq!(c.source.internal_fetchers, vec![FetcherKind::KernelSpecs]);
    assert!(c.source.images.is_empty());
    assert_eq!(
        c.source.configmap,
        ConfigMapRef {
            namespace: "enterprise-gateway".into(),
            name: "kernel-images".into(),
            key: "image-names".into()
        }
    );
    assert!(!c.once);
    assert_eq!(c.admin.addr, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(c.admin.shutdown_grace, Duration::from_secs(10));
    let c = parse(args(&[("admin-addr", "off")])).unwrap();
    assert_eq!(c.admin.addr, None);
    let err = parse(args(&[
        ("admin-addr", "localhost"),
        ("shutdown-grace", "x"),
    ]))
    .unwrap_err();
    let vars: Vec<&str> = err.0.iter().map(|e| e.var).collect();
    assert_eq!(vars, vec!["KIP_ADMIN_ADDR", "KIP_SHUTDOWN_GRACE"]);
    assert_eq!(
        c.runtime.containerd,
        ContainerdConfig {
            namespace: "k8s.io".into(),
            snapshotter: "overlayfs".into(),
            insecure_registries: vec![],
            max_concurrent_downloads: 8,
            registry_ca_pem: None,
            max_disk_percent: Some(85.0),
            transfer: TransferMode::Auto,
            hosts_dir: Some("/etc/containerd/certs.d".into()),
        }
    );
}

#[test]
fn containerd_settings() {
    let c = parse(args(&[
        ("containerd-namespace", "kip-test_1.a"),
        ("containerd-snapshotter", "native"),
        ("insecure-registries", " Reg.Local:5000, ,10.0.0.1,myreg "),
        ("max-concurrent-downloads", "3"),
        ("containerd-transfer", " On"),
        ("containerd-hosts-dir", " /etc/kip/certs.d/ "),
    ]))
    .unwrap();
    assert_eq!(c.runtime.containerd.transfer, TransferMode::On);
    assert_eq!(
        c.runtime.containerd.hosts_dir.as_deref(),
        Some("/etc/kip/certs.d/")
    );
    let none = parse(args(&[("containerd-hosts-dir", " ")])).unwrap();
    assert_eq!(none.runtime.containerd.hosts_dir, None);
    assert_eq!(c.runtime.containerd.namespace, "kip-test_1.a");
    assert_eq!(c.runtime.containerd.snapshotter, "native");
    assert_eq!(
        c.runtime.containerd.insecure_registries,
        vec!["reg.local:5000", "10.0.0.1", "myreg"]
    );
    assert_eq!(c.runtime.containerd.max_concurrent_downloads, 3);

    let not_pem = "/etc/kip/not-pem";
    let with_not_pem = Fake {
        files: vec![(not_pem, b"not a certificate\n")],
        ..Fake::default()
    };
    let table: [(&str, &str, &str); 14] = [
        ("containerd-transfer", "yes", "KIP_CONTAINERD_TRANSFER"),
        (
            "containerd-hosts-dir",
            "etc/containerd/certs.d",
            "KIP_CONTAINERD_HOSTS_DIR",
        ),
        (
            "containerd-hosts-dir",
            "/etc/containerd/certs.d,/etc/docker/certs.d",
            "KIP_CONTAINERD_HOSTS_DIR",
        ),
        ("containerd-namespace", "", "KIP_CONTAINERD_NAMESPACE"),
        (
            "registry-ca-file",
            "/nonexistent/ca.pem",
            "KIP_REGISTRY_CA_FILE",
        ),
        ("registry-ca-file", not_pem, "KIP_REGISTRY_CA_FILE"),
        (
            "containerd-namespace",
            "k8s..io",
            "KIP_CONTAINERD_NAMESPACE",
        ),
        ("containerd-namespace", "-k8s", "KIP_CONTAINERD_NAMESPACE"),
        ("containerd-namespace", "a/b", "KIP_CONTAINERD_NAMESPACE"),
        ("containerd-snapshotter", " ", "KIP_CONTAINERD_SNAPSHOTTER"),
        (
            "containerd-snapshotter",
            "over lay",
            "KIP_CONTAINERD_SNAPSHOTTER",
        ),
        (
            "insecure-registries",
            "ok:5000,bad host",
            "KIP_INSECURE_REGISTRIES",
        ),
        (
            "insecure-registries",
            "reg:99999",
            "KIP_INSECURE_REGISTRIES",
        ),
        (
            "max-concurrent-downloads",
            "0",
            "KIP_MAX_CONCURRENT_DOWNLOADS",
        ),
    ];
    for (flag, value, var) in table {
        let err = Config::from_args_with(&args(&[(flag, value)]), &with_not_pem).unwrap_err();
        assert_eq!(err.0.len(), 1, "{flag}={value:?}: {err}");
        assert_eq!(err.0[0].var, var, "{flag}={value:?}");
    }
}

#[test]
fn every_bad_variable_is_listed() {
    let err = parse(args(&[
        ("pull-policy", "Bogus"),
        ("num-pullers", "abc"),
        ("num-retries", "0"),
        ("interval", "-5"),
        ("validate-cert", "maybe"),
        ("gateway-host", "localhost:8888"),
        ("cri-endpoint", "npipe://x"),
        ("container-runtime", "podman"),
        ("log-level", "LOUD"),
        ("image-fetcher", "Nope"),
        ("internal-fetchers", "KernelSpecsFetcher,Other"),
        ("images", "ok:1, Bad:1,,"),
        ("default-container-registry", "bad host"),
        ("cm-name", " "),
        ("containerd-namespace", "a b"),
        ("max-concurrent-downloads", "-1"),
        ("containerd-transfer", "maybe"),
    ]))
    .unwrap_err();
    let vars: Vec<&str> = err.0.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        // By concern: source, pull, runtime (and containerd), admin, logging.
        vec![
            "KIP_GATEWAY_HOST",
            "KIP_VALIDATE_CERT",
            "KIP_DEFAULT_CONTAINER_REGISTRY",
            "KIP_IMAGE_FETCHER",
            "KIP_INTERNAL_FETCHERS",
            "KIP_IMAGES",
            "KIP_CM_NAME",
            "KIP_INTERVAL",
            "KIP_NUM_PULLERS",
            "KIP_NUM_RETRIES",
            "KIP_PULL_POLICY",
            "KIP_CRI_ENDPOINT",
            "KIP_CONTAINER_RUNTIME",
            "KIP_CONTAINERD_NAMESPACE",
            "KIP_MAX_CONCURRENT_DOWNLOADS",
            "KIP_CONTAINERD_TRANSFER",
            "KIP_LOG_LEVEL",
        ]
    );
    let text = err.to_string();
    assert!(text.contains("KIP_PULL_POLICY=\"Bogus\": expected IfNotPresent or Always"));
    assert!(text.contains("KIP_NUM_PULLERS=\"abc\""));
}

#[test]
fn bad_image_in_static_list_names_the_entry() {
    let err = parse(args(&[("images", "a:1, Bad:1 ,b:2,c@sha256:12")])).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].var, "KIP_IMAGES");
    assert!(
        err.0[0].problem.contains("\"Bad:1\""),
        "{}",
        err.0[0].problem
    );
    assert!(
        err.0[0].problem.contains("\"c@sha256:12\""),
        "{}",
        err.0[0].problem
    );
}

#[test]
fn static_list_is_trimmed_and_empties_dropped() {
    let c = parse(args(&[("images", " a:1 ,,b:2, ")])).unwrap();
    assert_eq!(c.source.images, vec!["a:1", "b:2"]);
    let c = parse(args(&[("images", "")])).unwrap();
    assert!(c.source.images.is_empty());
}

#[test]
fn log_levels_accept_upstream_names_in_any_case() {
    // The grammar is eg-common's (one for both binaries); this checks KIP_LOG_LEVEL takes it.
    let levels = [
        LevelFilter::DEBUG,
        LevelFilter::INFO,
        LevelFilter::WARN,
        LevelFilter::ERROR,
    ];
    let names = [
        &["DEBUG", "debug", "10"][..],
        &["Info"],
        &["WARNING", "warning", "30"],
    ];
    let errors = ["ERROR", "critical", "50"];
    for (inputs, want) in names.into_iter().chain([&errors[..]]).zip(levels) {
        for input in inputs {
            let c = parse(args(&[("log-level", input)])).unwrap();
            assert_eq!(c.logging.level, want, "{input}");
        }
    }
}

#[test]
fn runtime_detection_from_endpoint() {
    let cases = [
        ("unix:///var/run/docker.sock", RuntimeKind::Docker),
        ("/var/run/docker.sock", RuntimeKind::Docker),
        // containerd through its CRI plugin; the native backend is opt-in.
        ("unix:///run/containerd/containerd.sock", RuntimeKind::Cri),
        (
            "unix:///run/k3s/containerd/containerd.sock",
            RuntimeKind::Cri,
        ),
        ("unix:///var/run/crio/crio.sock", RuntimeKind::Cri),
        ("unix:///var/run/cri-dockerd.sock", RuntimeKind::Cri),
        ("tcp://127.0.0.1:2375", RuntimeKind::Cri),
    ];
    for (endpoint, want) in cases {
        let c = parse(args(&[("cri-endpoint", endpoint)])).unwrap();
        assert_eq!(c.runtime.kind, want, "{endpoint}");
    }
    let c = parse(args(&[("container-runtime", "containerd")])).unwrap();
    assert_eq!(c.runtime.kind, RuntimeKind::Containerd);
    let c = parse(args(&[
        ("cri-endpoint", "unix:///var/run/docker.sock"),
        ("container-runtime", "cri"),
    ]))
    .unwrap();
    assert_eq!(c.runtime.kind, RuntimeKind::Cri);
}

#[test]
fn combined_fetchers_and_token() {
    let c = parse(args(&[
        ("image-fetcher", "CombinedImagesFetcher"),
        (
            "internal-fetchers",
            "KernelSpecsFetcher, StaticListFetcher,KernelSpecsFetcher",
        ),
        ("auth-token", "s3cret"),
    ]))
    .unwrap();
    assert_eq!(
        c.source.fetchers_in_use(),
        vec![FetcherKind::KernelSpecs, FetcherKind::StaticList]
    );
    assert_eq!(
        c.source.auth_token.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    let err = parse(args(&[("internal-fetchers", "CombinedImagesFetcher")])).unwrap_err();
    assert_eq!(err.0[0].var, "KIP_INTERNAL_FETCHERS");
}

#[test]
fn files_and_environment_are_read_through_the_lookup() {
    let auths: &[u8] = br#"{"auths": {"reg.example": {"auth": "a2lwOnMzY3JldA=="}}}"#;
    let image = "reg.example/kernel:1".parse().unwrap();
    // Default credential files: $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
    let lookup = Fake {
        vars: vec![("DOCKER_CONFIG", "/cfg"), ("HOME", "/home/kip")],
        files: vec![("/cfg/config.json", auths)],
    };
    let c = Config::from_args_with(&args(&[]), &lookup).unwrap();
    assert!(c.pull.keyring.lookup(&image).is_some());
    let lookup = Fake {
        vars: vec![("HOME", "/home/kip")],
        files: vec![("/home/kip/.docker/config.json", auths)],
    };
    let c = Config::from_args_with(&args(&[]), &lookup).unwrap();
    assert!(c.pull.keyring.lookup(&image).is_some());
    // Nothing in the environment: no credentials, and no error.
    let c = parse(args(&[])).unwrap();
    assert!(c.pull.keyring.is_empty());
    // Named files must exist.
    let err = parse(args(&[("docker-config", "/nonexistent/config.json")])).unwrap_err();
    assert_eq!(err.0[0].var, "KIP_DOCKER_CONFIG");
}
