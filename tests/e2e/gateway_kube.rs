//! The gateway launching kernel pods through its Kubernetes launcher, against a FAKE Kubernetes
//! API server (`tests/fake-k8s`: no real kube-apiserver can be installed here) whose node runs
//! each kernel pod as local processes: the project's in-pod launcher starts Debian's ipykernel,
//! sends the encrypted connection info to the gateway and serves the comm port.

#[path = "support/kernels.rs"]
mod kernels;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{ChildGuard, kubernetes_kernel_json, repo_root};
use kernels::{Client, Gateway, have_ipykernel};
use reqwest::Method;
use serde_json::{Value, json};

const KUBE_TOKEN: &str = "fake-cluster-token";
const IMAGE: &str = "docker.io/elyra/kernel-py:3.3.0";

/// The fake API server and node.
struct FakeCluster {
    url: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
}

impl FakeCluster {
    fn start() -> Option<Self> {
        let python = std::env::var("KIP_CHART_VENV")
            .map(|v| format!("{v}/bin/python"))
            .unwrap_or_else(|_| "/opt/kip-test/venv/bin/python".into());
        if !std::path::Path::new(&python).exists() || !have_ipykernel() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{python} missing: tests/scripts/install-deps.sh installs it"
            );
            eprintln!("SKIP: no fake cluster ({python} or ipykernel missing)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(&python)
            .arg(repo_root().join("tests/fake-k8s/apiserver.py"))
            .args(["--port", "0", "--token", KUBE_TOKEN, "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("apiserver.log")).unwrap())
            .spawn()
            .expect("start the fake API server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://"), "fake API server said {line:?}");
        Some(Self {
            url,
            kubeconfig,
            _dir: dir,
            _child: ChildGuard(child),
        })
    }

    async fn api(&self, method: Method, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(KUBE_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.api(Method::GET, path).await
    }

    /// Waits until `path` answers 404.
    async fn wait_gone(&self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path).await;
            if status == 404 {
                return;
            }
            assert!(Instant::now() < deadline, "{path} still there: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the list at `path` has no items.
    async fn wait_empty(&self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, list) = self.get(path).await;
            if list["items"].as_array().is_none_or(Vec::is_empty) {
                return;
            }
            assert!(Instant::now() < deadline, "left behind at {path}: {list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes kernel `id` through `gw` and waits until `gone` (its pod or namespace) answers 404.
    async fn delete_kernel(&self, gw: &Gateway, id: &str, gone: &str) {
        gw.delete_kernel(id).await;
        self.wait_gone(gone, Duration::from_secs(20)).await;
    }

    async fn stats(&self) -> Value {
        self.get("/fake/stats").await.1
    }
}

/// A Kubernetes kernelspec for `image` whose argv runs upstream's launch script as EG's does.
fn kube_spec(image: &str) -> Value {
    kube_spec_running(
        "python",
        "/usr/local/share/jupyter/kernels/python_kubernetes/scripts/launch_kubernetes.py",
        image,
    )
}

/// As [`kube_spec`], the launch script `script` run by `python`.
fn kube_spec_running(python: &str, script: &str, image: &str) -> Value {
    kubernetes_kernel_json(
        "Python on Kubernetes",
        json!([
            python,
            script,
            "--RemoteProcessProxy.kernel-id",
            "{kernel_id}",
            "--RemoteProcessProxy.port-range",
            "{port_range}",
            "--RemoteProcessProxy.response-address",
            "{response_address}",
            "--RemoteProcessProxy.public-key",
            "{public_key}"
        ]),
        json!({"image_name": image}),
    )
}

/// The stock template of upstream's kernelspecs, from its source distribution (read at run
/// time; see install-deps.sh).
fn stock_template() -> String {
    let src = std::env::var("KIP_TEST_EG_SRC").unwrap_or_else(|_| "/opt/kip-test/eg-src".into());
    let path = PathBuf::from(src)
        .join("jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/kubernetes/scripts/kernel-pod.yaml.j2");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gateway(cluster: &FakeCluster, env: &[(&str, &str)]) -> Gateway {
    let kubeconfig = cluster.kubeconfig.to_string_lossy().into_owned();
    let mut all = vec![
        ("KUBECONFIG", kubeconfig.as_str()),
        ("EG_RESPONSE_IP", "127.0.0.1"),
        ("EG_RESPONSE_PORT", "0"),
        ("EG_KERNEL_CLUSTER_ROLE", "kernel-controller"),
        ("EG_SOCKET_TIMEOUT", "2"),
        ("EG_KERNEL_LAUNCH_TIMEOUT", "60"),
    ];
    all.extend_from_slice(env);
    let template = stock_template();
    Gateway::start_with(
        &all,
        &[
            ("k8s_stock", kube_spec(IMAGE), Some(template.as_str())),
            ("k8s_builtin", kube_spec(IMAGE), None),
            (
                "k8s_unpullable",
                kube_spec("docker.io/nobody/no-such-image:1"),
                None,
            ),
        ],
    )
}

async fn start(gw: &Gateway, spec: &str, env: Value) -> (u16, Value) {
    gw.post("/api/kernels", json!({"name": spec, "env": env}))
        .await
}

/// The fake cluster, a gateway on it with the defaults, and a kernel of `spec` started for
/// `user`; `None` when the fake cluster cannot run.
async fn one_kernel(spec: &str, user: &str) -> Option<(FakeCluster, Gateway, String)> {
    let cluster = FakeCluster::start()?;
    let gw = gateway(&cluster, &[]);
    let (id, _) = gw.start_spec(spec, json!({"KERNEL_USERNAME": user})).await;
    Some((cluster, gw, id))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_pod_runs_code_is_interrupted_restarted_and_removed() {
    let Some((cluster, gw, id)) = one_kernel("k8s_stock", "Alice.Smith").await else {
        return;
    };
    let ns = format!("alice-smith-{id}");

    // Namespace, RoleBinding and pod as upstream makes them.
    let (status, namespace) = cluster.get(&format!("/api/v1/namespaces/{ns}")).await;
    assert_eq!(status, 200, "{namespace}");
    assert_eq!(namespace["metadata"]["labels"]["kernel_id"], id.as_str());
    assert_eq!(namespace["metadata"]["labels"]["component"], "kernel");
    let (status, rb) = cluster
        .get(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/kernel-controller"
        ))
        .await;
    assert_eq!(status, 200, "{rb}");
    assert_eq!(rb["roleRef"]["name"], "kernel-controller");
    assert_eq!(rb["subjects"][0]["name"], "default");
    let (status, pod) = cluster
        .get(&format!("/api/v1/namespaces/{ns}/pods/{ns}"))
        .await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(pod["spec"]["containers"][0]["image"], IMAGE);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 1000);
    let env: Vec<&str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "KERNEL_ID",
        "RESPONSE_ADDRESS",
        "PUBLIC_KEY",
        "PORT_RANGE",
        "KERNEL_LANGUAGE",
        "KERNEL_USERNAME",
        "KERNEL_NAMESPACE",
        "KERNEL_POD_NAME",
        "KERNEL_NAME",
        "KERNEL_SPARK_CONTEXT_INIT_MODE",
    ] {
        assert!(env.contains(&name), "{name} not in the pod's env {env:?}");
    }

    // Code over the websocket.
    let mut client = Client::connect(&gw, &id, "s1", false).await;
    let out = client
        .execute("import os; print(os.environ['KERNEL_NAMESPACE']); 6*7")
        .await;
    assert_eq!(out.stdout.trim(), ns);
    assert_eq!(out.results[0]["text/plain"], "42");

    // Interrupt through the comm port.
    let run = client
        .execute_request("import time; time.sleep(60)", false)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = gw
        .request(Method::POST, &format!("/api/kernels/{id}/interrupt"))
        .await;
    assert_eq!(status, 204, "{body}");
    let out = client.collect(&run, Duration::from_secs(20)).await;
    assert_eq!(out.status, "error");
    assert_eq!(out.errors[0]["ename"], "KeyboardInterrupt");

    // Restart: a new pod in the same namespace, state lost.
    client.execute("x = 1").await;
    let old_uid = pod["metadata"]["uid"].clone();
    let (status, body) = gw
        .request(Method::POST, &format!("/api/kernels/{id}/restart"))
        .await;
    assert_eq!(status, 200, "{body}\n{}", gw.log());
    let (status, pod) = cluster
        .get(&format!("/api/v1/namespaces/{ns}/pods/{ns}"))
        .await;
    assert_eq!(status, 200);
    assert_ne!(pod["metadata"]["uid"], old_uid, "restart made a new pod");
    let mut client = Client::connect(&gw, &id, "s2", false).await;
    let out = client.execute("'x' in globals()").await;
    assert_eq!(out.results[0]["text/plain"], "False");

    // Delete: pod and namespace go.
    cluster
        .delete_kernel(&gw, &id, &format!("/api/v1/namespaces/{ns}"))
        .await;
    // No per-kernel polling: pods were watched, never listed per kernel.
    let stats = cluster.stats().await;
    assert!(
        gw.metrics()
            .await
            .contains("gateway_kubernetes_api_requests_total{verb=\"watch\"}"),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_and_client_namespaces_are_used_and_never_deleted() {
    let Some(cluster) = FakeCluster::start() else {
        return;
    };
    // The client's own namespace.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces", cluster.url))
        .bearer_auth(KUBE_TOKEN)
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let gw = gateway(&cluster, &[]);
    let (id, _) = gw
        .start_spec(
            "k8s_builtin",
            json!({"KERNEL_USERNAME": "bob", "KERNEL_NAMESPACE": "team-a"}),
        )
        .await;
    let pod = format!("/api/v1/namespaces/team-a/pods/bob-{id}");
    let (status, _) = cluster.get(&pod).await;
    assert_eq!(status, 200);
    cluster.delete_kernel(&gw, &id, &pod).await;
    let (status, _) = cluster.get("/api/v1/namespaces/team-a").await;
    assert_eq!(status, 200, "a client's namespace is never deleted");
    drop(gw);

    // The gateway's shared namespace.
    let gw = gateway(
        &cluster,
        &[("EG_SHARED_NAMESPACE", "True"), ("EG_NAMESPACE", "team-a")],
    );
    let (id, _) = gw
        .start_spec("k8s_builtin", json!({"KERNEL_USERNAME": "carol"}))
        .await;
    let mut client = Client::connect(&gw, &id, "s", false).await;
    assert_eq!(client.execute("1+1").await.results[0]["text/plain"], "2");
    gw.delete_kernel(&id).await;
    let (status, _) = cluster.get("/api/v1/namespaces/team-a").await;
    assert_eq!(status, 200, "the shared namespace is never deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_launches_fail_fast_with_the_reason_and_leave_nothing() {
    let Some(cluster) = FakeCluster::start() else {
        return;
    };
    let gw = gateway(&cluster, &[]);

    // Each refusal: the kernelspec and variables, the status, the answer's fields that name the
    // reason, and the reason; always within seconds (not the launch timeout), leaving no
    // kernel namespace behind.
    for (spec, env, status, fields, reason) in [
        // An image that cannot be pulled.
        (
            "k8s_unpullable",
            json!({"KERNEL_USERNAME": "dave"}),
            500,
            &["message", "reason"][..],
            "ErrImagePull",
        ),
        // A pod no node can take.
        (
            "k8s_stock",
            json!({"KERNEL_USERNAME": "dave", "KERNEL_GPUS": "1"}),
            500,
            &["message"],
            "Unschedulable",
        ),
        // UID 0, with upstream's 403.
        (
            "k8s_stock",
            json!({"KERNEL_USERNAME": "eve", "KERNEL_UID": "0"}),
            403,
            &["message"],
            "EG_PROHIBITED_UIDS",
        ),
        // Values that would change the pod's structure never reach the cluster.
        (
            "k8s_stock",
            json!({"KERNEL_USERNAME": "eve", "KERNEL_VOLUMES": "not: [a, list"}),
            400,
            &["message"],
            "KERNEL_VOLUMES",
        ),
    ] {
        let t0 = Instant::now();
        let (got, body) = start(&gw, spec, env.clone()).await;
        let took = t0.elapsed();
        assert_eq!(got, status, "{spec} {env}: {body}");
        let named: String = fields
            .iter()
            .map(|f| body[f].as_str().unwrap_or_default())
            .collect();
        assert!(named.contains(reason), "{spec} {env}: {body}");
        assert!(
            took < Duration::from_secs(10),
            "{spec} {env}: took {took:?}"
        );
        cluster
            .wait_empty(
                "/api/v1/namespaces?labelSelector=component%3Dkernel",
                Duration::from_secs(20),
            )
            .await;
    }

    // Volumes and resources are rendered into the pod.
    let (id, _) = gw
        .start_spec(
            "k8s_stock",
            json!({"KERNEL_USERNAME": "frank", "KERNEL_CPUS": "500m", "KERNEL_MEMORY": "256Mi",
                   "KERNEL_VOLUMES": "[{\"name\": \"scratch\", \"emptyDir\": {}}]",
                   "KERNEL_VOLUME_MOUNTS": "[{\"name\": \"scratch\", \"mountPath\": \"/scratch\"}]"}),
        )
        .await;
    let ns = format!("frank-{id}");
    let (_, pod) = cluster
        .get(&format!("/api/v1/namespaces/{ns}/pods/{ns}"))
        .await;
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["resources"]["requests"]["cpu"], "500m", "{pod}");
    assert_eq!(c["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/scratch");
    assert_eq!(pod["spec"]["volumes"][0]["name"], "scratch");
    gw.delete_kernel(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_kernels_start_at_once_on_one_watch() {
    let Some(cluster) = FakeCluster::start() else {
        return;
    };
    let gw = gateway(
        &cluster,
        &[
            ("EG_SHARED_NAMESPACE", "True"),
            ("EG_KERNEL_LAUNCH_TIMEOUT", "300"),
        ],
    );
    let (status, _) = cluster.api(Method::DELETE, "/fake/stats").await;
    assert!(status < 300, "reset the fake's counters");
    let starts = (0..50).map(|i| {
        gw.start_spec(
            "k8s_builtin",
            json!({"KERNEL_USERNAME": format!("user{i}")}),
        )
    });
    let ids: Vec<String> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // One watch served all of them: pods were never listed or read one by one.
    let stats = cluster.stats().await;
    let text = stats.to_string();
    let metrics = gw.metrics().await;
    let count = |verb: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "gateway_kubernetes_api_requests_total{{verb=\"{verb}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(count("create"), 50.0, "one create per pod\n{text}");
    assert_eq!(count("get"), 0.0, "no per-kernel reads\n{text}");
    assert!(count("list") <= 1.0, "one listing at most\n{text}");
    assert!(count("watch") <= 2.0, "one watch\n{text}");
    futures_util::future::join_all(ids.iter().map(|id| gw.delete_kernel(id))).await;
    cluster
        .wait_empty(
            "/api/v1/pods?labelSelector=component%3Dkernel",
            Duration::from_secs(60),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_removes_every_kernel_pod_and_namespace() {
    let Some((cluster, mut gw, id)) = one_kernel("k8s_builtin", "gina").await else {
        return;
    };
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
    cluster
        .wait_gone(
            &format!("/api/v1/namespaces/gina-{id}"),
            Duration::from_secs(30),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_launch_script_runs_with_eg_kubernetes_launcher_argv() {
    let Some(cluster) = FakeCluster::start() else {
        return;
    };
    let eg_venv =
        std::env::var("KIP_TEST_EG_VENV").unwrap_or_else(|_| "/opt/kip-test/eg-venv".into());
    let python = format!("{eg_venv}/bin/python");
    let scripts = PathBuf::from(
        std::env::var("KIP_TEST_EG_SRC").unwrap_or_else(|_| "/opt/kip-test/eg-src".into()),
    )
    .join("jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/kubernetes/scripts");
    let spec = kube_spec_running(
        &python,
        "{resource_dir}/scripts/launch_kubernetes.py",
        IMAGE,
    );
    let kubeconfig = cluster.kubeconfig.to_string_lossy().into_owned();
    let gw = Gateway::start_with(
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("EG_RESPONSE_IP", "127.0.0.1"),
            ("EG_RESPONSE_PORT", "0"),
            ("EG_KERNEL_CLUSTER_ROLE", "kernel-controller"),
            ("EG_SOCKET_TIMEOUT", "2"),
            ("EG_KUBERNETES_LAUNCHER", "argv"),
        ],
        &[("k8s_script", spec, None)],
    );
    let spec_scripts = gw.dir.path().join("kernels/k8s_script/scripts");
    for file in ["launch_kubernetes.py", "kernel-pod.yaml.j2"] {
        std::fs::copy(scripts.join(file), spec_scripts.join(file)).unwrap();
    }
    let (id, _) = gw
        .start_spec("k8s_script", json!({"KERNEL_USERNAME": "hal"}))
        .await;
    let (status, pod) = cluster
        .get(&format!("/api/v1/namespaces/hal-{id}/pods/hal-{id}"))
        .await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(
        pod["metadata"]["labels"]["source"], "kernel-pod.yaml",
        "upstream's template made it"
    );
    let mut client = Client::connect(&gw, &id, "s", false).await;
    assert_eq!(
        client.execute("2**10").await.results[0]["text/plain"],
        "1024"
    );
    cluster
        .delete_kernel(&gw, &id, &format!("/api/v1/namespaces/hal-{id}"))
        .await;
}

/// Pids of the fake node's in-pod launcher of kernel `id` (its environment names the kernel).
fn launcher_pids(id: &str) -> Vec<u32> {
    let needle = format!("KERNEL_ID={id}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("kernel_launcher.py")
            && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_the_comm_port_cannot_take_is_an_error() {
    let Some((_cluster, gw, id)) = one_kernel("k8s_builtin", "ivy").await else {
        return;
    };
    let pids = launcher_pids(&id);
    assert_eq!(pids.len(), 1, "one in-pod launcher for {id}: {pids:?}");
    // The launcher's comm listener is told to stop (launcher and kernel keep running): nothing
    // takes the next interrupt.
    let ss = Command::new("ss").args(["-ltnpH"]).output().unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout).into_owned();
    let comm = listening
        .lines()
        .find(|l| l.contains(&format!("pid={},", pids[0])))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no comm listener of pid {} in:\n{listening}", pids[0]))
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&comm).unwrap();
    std::io::Write::write_all(&mut conn, b"{\"shutdown\": 1}").unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = gw
        .request(Method::POST, &format!("/api/kernels/{id}/interrupt"))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("comm port"),
        "{body}"
    );
    gw.delete_kernel(&id).await;
}
