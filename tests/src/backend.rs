//! The backend matrix: every way the agent pulls (Docker Engine, CRI on containerd 1.6, the
//! native containerd backend on 1.6 and 2.x, natively or through the Transfer service), with the
//! checks each one's own tools make, and [`Kip`], a builder for running the agent.

use std::process::{Command, Output};

use crate::{component, kip_command, output_text, run_ok};

/// The containerd daemon a backend talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// containerd 1.6 (`KIP_TEST_CONTAINERD_SOCK`), CRI plugin on.
    V1,
    /// containerd 2.x (`KIP_TEST_CONTAINERD2_SOCK`).
    V2,
}

/// How a test sets `KIP_CONTAINERD_TRANSFER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPath {
    /// Not set: `auto`, whichever path it picks.
    Auto,
    /// `off`: the native path.
    Native,
    /// `on`: the Transfer service (containerd 2.x offers it); every pull is checked to have
    /// gone through it.
    Transfer,
}

impl PullPath {
    /// The path taken against `daemon`: `auto` uses the Transfer service where it is offered
    /// (containerd 2.x), as it is the faster path in the benchmark.
    pub fn on(self, daemon: Daemon) -> PullPath {
        match (self, daemon) {
            (PullPath::Auto, Daemon::V1) => PullPath::Native,
            (PullPath::Auto, Daemon::V2) => PullPath::Transfer,
            (path, _) => path,
        }
    }

    /// Every pull in the output went the way expected against `daemon`.
    pub fn assert_taken(self, daemon: Daemon, text: &str, images: &[String]) {
        let want = match self.on(daemon) {
            PullPath::Transfer => "path=\"transfer\"",
            _ => "path=\"native\"",
        };
        for image in images {
            let line = text
                .lines()
                .find(|l| l.contains("containerd pull done") && l.contains(image.as_str()))
                .unwrap_or_else(|| panic!("no 'containerd pull done' line for {image}:\n{text}"));
            assert!(
                line.contains(want),
                "{image} not pulled with {want}: {line}"
            );
        }
    }
}

/// One way the agent pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Docker Engine (`KIP_TEST_DOCKER_SOCK`).
    Docker,
    /// containerd through its CRI plugin, namespace k8s.io.
    Cri(Daemon),
    /// The native containerd backend (`KIP_CONTAINER_RUNTIME=containerd`).
    Containerd(Daemon, PullPath),
}

impl Backend {
    /// CRI on containerd 1.6, the CRI most nodes run.
    pub const CRI: Backend = Backend::Cri(Daemon::V1);

    /// Every backend, each once.
    pub const MATRIX: [Backend; 7] = [
        Backend::Docker,
        Backend::Cri(Daemon::V1),
        Backend::Cri(Daemon::V2),
        Backend::Containerd(Daemon::V1, PullPath::Auto),
        Backend::Containerd(Daemon::V2, PullPath::Auto),
        Backend::Containerd(Daemon::V2, PullPath::Native),
        Backend::Containerd(Daemon::V2, PullPath::Transfer),
    ];

    /// Docker and CRI.
    pub const RUNTIMES: [Backend; 2] = [Backend::Docker, Backend::CRI];

    /// One of each runtime: Docker, CRI, the native containerd backend (on 1.6).
    pub const ONE_OF_EACH: [Backend; 3] = [
        Backend::Docker,
        Backend::CRI,
        Backend::Containerd(Daemon::V1, PullPath::Auto),
    ];

    /// The native containerd backend's native path on 1.6 and 2.x.
    pub const CONTAINERD_NATIVE: [Backend; 2] = [
        Backend::Containerd(Daemon::V1, PullPath::Native),
        Backend::Containerd(Daemon::V2, PullPath::Native),
    ];

    /// The runtime's name in the agent's logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Cri(_) => "cri",
            Backend::Containerd(..) => "containerd",
        }
    }

    /// A name of its own for repositories and namespaces, so that backends never share images.
    pub fn tag(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Cri(Daemon::V1) => "cri",
            Backend::Cri(Daemon::V2) => "cri2",
            Backend::Containerd(Daemon::V1, PullPath::Auto) => "cd1",
            Backend::Containerd(Daemon::V1, PullPath::Native) => "cd1-native",
            Backend::Containerd(Daemon::V1, PullPath::Transfer) => "cd1-xfer",
            Backend::Containerd(Daemon::V2, PullPath::Auto) => "cd2",
            Backend::Containerd(Daemon::V2, PullPath::Native) => "cd2-native",
            Backend::Containerd(Daemon::V2, PullPath::Transfer) => "cd2-xfer",
        }
    }

    pub fn daemon(self) -> Option<Daemon> {
        match self {
            Backend::Docker => None,
            Backend::Cri(daemon) | Backend::Containerd(daemon, _) => Some(daemon),
        }
    }

    pub fn is_containerd(self) -> bool {
        matches!(self, Backend::Containerd(..))
    }

    /// The registry component `var` (e.g. `KIP_TEST_REGISTRY`), when it and this backend's
    /// runtime both run; `None`: the test skips.
    pub fn with(self, var: &str) -> Option<String> {
        let registry = component(var)?;
        self.socket().map(|_| registry)
    }

    /// The test registry and `count` images of this backend's own pushed to it
    /// (`test/<tag>-<what>-<i>:1`, with a random-data layer of `data_mb` MiB if given), when the
    /// registry and this backend's runtime both run; `None`: the test skips.
    pub fn push(
        self,
        what: &str,
        count: usize,
        data_mb: Option<usize>,
    ) -> Option<(String, Vec<String>)> {
        let registry = self.with("KIP_TEST_REGISTRY")?;
        let prefix = format!("test/{}-{what}", self.tag());
        let images = crate::push_images_with(&registry, &prefix, count, data_mb, None);
        Some((registry, images))
    }

    /// The component `var` and this backend's socket, when both run; `None`: the test skips.
    pub fn with_socket(self, var: &str) -> Option<(String, String)> {
        let value = component(var)?;
        self.socket().map(|sock| (value, sock))
    }

    /// The runtime's socket, or `None` (the test skips) when the component is not running.
    pub fn socket(self) -> Option<String> {
        component(match self.daemon() {
            None => "KIP_TEST_DOCKER_SOCK",
            Some(Daemon::V1) => "KIP_TEST_CONTAINERD_SOCK",
            Some(Daemon::V2) => "KIP_TEST_CONTAINERD2_SOCK",
        })
    }

    /// The namespace the test's images land in: CRI's k8s.io, a fresh one for the native
    /// backend (named after `what`), none for Docker.
    pub fn namespace(self, what: &str) -> String {
        match self {
            Backend::Containerd(..) => unique(self, what),
            _ => "k8s.io".to_owned(),
        }
    }

    /// The snapshotter of this backend's containerd.
    pub fn snapshotter(self) -> String {
        component(match self.daemon() {
            Some(Daemon::V2) => "KIP_TEST_CONTAINERD2_SNAPSHOTTER",
            _ => "KIP_TEST_CONTAINERD_SNAPSHOTTER",
        })
        .unwrap_or_else(|| "overlayfs".to_owned())
    }

    /// `kip` as a daemon pulling through CRI on this backend's runtime (which must run), asking
    /// the gateway at `gateway`, its admin endpoint at `admin` (`off`: none), its log in `log`.
    pub fn cri_daemon(self, gateway: &str, admin: &str, log: std::fs::File) -> std::process::Child {
        kip_command()
            .env("KIP_GATEWAY_HOST", gateway)
            .env(
                "KIP_CRI_ENDPOINT",
                format!("unix://{}", self.socket().unwrap()),
            )
            .env("KIP_CONTAINER_RUNTIME", "cri")
            .env("KIP_ADMIN_ADDR", admin)
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// The agent set up for this backend, namespace `ns` (the native backend's), over a static
    /// list of images.
    pub fn kip(self, ns: &str, images: &[String]) -> Kip {
        let kip = Kip::new()
            .env(
                "KIP_CRI_ENDPOINT",
                &format!("unix://{}", self.socket().unwrap()),
            )
            .env("KIP_CONTAINER_RUNTIME", self.name())
            .env("KIP_IMAGE_FETCHER", "StaticListFetcher")
            .env("KIP_IMAGES", &images.join(","))
            .env("KIP_LOG_LEVEL", "DEBUG");
        match self {
            Backend::Containerd(_, path) => {
                let kip = kip
                    .env("KIP_CONTAINERD_NAMESPACE", ns)
                    .env("KIP_CONTAINERD_SNAPSHOTTER", &self.snapshotter());
                match path {
                    PullPath::Auto => kip,
                    PullPath::Native => kip.env("KIP_CONTAINERD_TRANSFER", "off"),
                    PullPath::Transfer => kip.env("KIP_CONTAINERD_TRANSFER", "on"),
                }
            }
            _ => kip,
        }
    }

    /// Runs `ctr --address SOCK -n NS ARGS…` (the ctr that goes with this containerd) and
    /// returns stdout.
    pub fn ctr(self, ns: &str, args: &[&str]) -> String {
        let sock = self.socket().unwrap();
        let ctr = match self.daemon() {
            Some(Daemon::V2) => component("KIP_TEST_CONTAINERD2_CTR").unwrap(),
            _ => "ctr".to_owned(),
        };
        let mut all = vec!["--address", &sock, "-n", ns];
        all.extend_from_slice(args);
        run_ok(&ctr, &all)
    }

    fn docker(self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["-H", &format!("unix://{}", self.socket().unwrap())])
            .args(args);
        cmd
    }

    /// Checks, through the runtime's own tools, that the image is there with all its layers
    /// (containerd: complete content, unpacked for the snapshotter).
    pub fn assert_complete(self, ns: &str, reference: &str) {
        if self == Backend::Docker {
            let layers = run_ok(
                "docker",
                &[
                    "-H",
                    &format!("unix://{}", self.socket().unwrap()),
                    "image",
                    "inspect",
                    "-f",
                    "{{len .RootFS.Layers}}",
                    reference,
                ],
            );
            assert_eq!(layers.trim(), "3", "{reference}: layers");
            return;
        }
        let snapshotter = self.snapshotter();
        let name = format!("name=={reference}");
        let check = self.ctr(
            ns,
            &["images", "check", "--snapshotter", &snapshotter, &name],
        );
        let line = check
            .lines()
            .find(|l| l.starts_with(reference))
            .unwrap_or_else(|| panic!("{reference} not in namespace {ns}:\n{check}"));
        assert!(line.contains("complete"), "{reference}: {line}");
        assert!(
            line.trim_end().ends_with("true"),
            "{reference} not unpacked: {line}"
        );
    }

    /// Whether the runtime has an image of that name.
    pub fn has_image(self, ns: &str, reference: &str) -> bool {
        match self {
            Backend::Docker => self
                .docker(&["image", "inspect", reference])
                .output()
                .unwrap()
                .status
                .success(),
            _ => self
                .ctr(ns, &["images", "ls", "-q"])
                .lines()
                .any(|l| l == reference),
        }
    }

    /// Digest of the node's image for a tag, as the runtime reports it.
    pub fn node_digest(self, ns: &str, reference: &str) -> String {
        match self {
            Backend::Docker => {
                let out = self
                    .docker(&[
                        "image",
                        "inspect",
                        "-f",
                        "{{index .RepoDigests 0}}",
                        reference,
                    ])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", output_text(&out));
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            _ => self
                .ctr(ns, &["images", "ls", &format!("name=={reference}")])
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(2))
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The native backend left no lease and no ingest of kip's behind (other backends: nothing
    /// to check).
    pub fn assert_clean(self, ns: &str) {
        if !self.is_containerd() {
            return;
        }
        let leases = self.ctr(ns, &["leases", "ls", "-q"]);
        assert!(
            !leases.lines().any(|l| l.starts_with("kip-")),
            "leases left: {leases}"
        );
        let active = self.ctr(ns, &["content", "active"]);
        assert!(
            !active.lines().any(|l| l.starts_with("kip-")),
            "ingests left: {active}"
        );
    }

    /// The native backend pulled every image the way its path says (other backends: nothing to
    /// check).
    pub fn assert_taken(self, text: &str, images: &[String]) {
        if let Backend::Containerd(daemon, path) = self {
            path.assert_taken(daemon, text, images);
        }
    }
}

/// `WHAT-<backend>-<nanoseconds>`: a name no other test run uses.
pub fn unique(backend: Backend, what: &str) -> String {
    format!(
        "{what}-{}-{}",
        backend.tag(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_007
    )
}

/// The repository path of a reference pushed to the test registry (`test/x-1`).
pub fn repo_of(reference: &str) -> &str {
    let path = reference.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0
}

/// A run of the `kip` binary: a clean environment (see [`kip_command`]) plus the variables set
/// here, a later one replacing an earlier one of the same name.
#[derive(Clone, Debug, Default)]
pub struct Kip {
    env: Vec<(String, String)>,
}

impl Kip {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a variable (replacing an earlier value).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command, ready to run or spawn.
    pub fn command(&self) -> Command {
        let mut cmd = kip_command();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `kip --once`, waited for.
    pub fn once(&self) -> Output {
        self.command().arg("--once").output().expect("run kip")
    }

    /// `kip --once`, which must exit with `code`; returns what it printed.
    pub fn expect(&self, code: i32) -> String {
        let out = self.once();
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(code), "{text}");
        text
    }
}
