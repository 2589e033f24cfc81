//! The response handshake and the comm port against Python launchers: a stand-in that encrypts
//! with PyCryptodome as Enterprise Gateway's launchers do (`fixtures/fake_launcher.py`), and
//! upstream's own `launch_ipykernel.py` functions imported from its source tree
//! (`fixtures/upstream_launcher.py`). Each run gets a fresh gateway key.
//!
//! Needs Debian's `python3` with `python3-pycryptodome` (and, for the upstream run,
//! `python3-ipykernel` and upstream's sources, see `tests/scripts/install-deps.sh`). Missing
//! components skip the tests, except under `CI=true`, where they fail.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use gateway::{
    comm,
    response::{ResponseKey, ResponseListener, ResponseSettings, Waiter, into_connection_info},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const WAIT: Duration = Duration::from_secs(30);

/// `Some(value)` when the component is there; otherwise `None` (skip), or a failure under
/// `CI=true`.
fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is missing (CI=true forbids skipping): run tests/scripts/install-deps.sh");
    }
    eprintln!("SKIP: {what} is missing; run tests/scripts/install-deps.sh");
    None
}

/// Debian's python3 (not whatever is first on PATH) when it imports every module named.
fn python(modules: &str) -> Option<PathBuf> {
    let python =
        PathBuf::from(std::env::var("KIP_TEST_PYTHON").unwrap_or("/usr/bin/python3".into()));
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        &format!("{} with {modules}", python.display()),
        ok.then_some(python),
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture launcher running against a fresh listener that waits for its kernel.
struct Launcher {
    /// Kept: without it the waiter ends.
    _listener: ResponseListener,
    waiter: Waiter,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Runs the fixture `script` with `args`, then the response address, the public key and
/// `kernel_id`.
async fn start(python: &Path, script: &str, args: &[&str], kernel_id: &str) -> Launcher {
    let key = tokio::task::spawn_blocking(ResponseKey::generate)
        .await
        .unwrap()
        .unwrap();
    let settings = ResponseSettings {
        ip: Some(Ipv4Addr::LOCALHOST),
        port: 0,
        ..ResponseSettings::default()
    };
    let l = ResponseListener::bind(&settings, Arc::new(key))
        .await
        .unwrap();
    let waiter = l.register(kernel_id);
    let mut child = Command::new(python)
        .arg(fixture(script))
        .args(args)
        .args([l.response_address(), l.public_key(), kernel_id])
        // Upstream's launcher logs every payload at DEBUG by default.
        .env("LOG_LEVEL", "WARNING")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Launcher {
        _listener: l,
        waiter,
        child,
        lines,
    }
}

impl Launcher {
    /// The launcher's next line on stdout.
    async fn next_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the launcher said nothing in time")
            .unwrap()
            .expect("the launcher ended early")
    }
}

#[tokio::test]
async fn handshake_and_comm_port_with_a_pycryptodome_launcher() {
    let Some(python) = python("Cryptodome") else {
        return;
    };
    let kernel_id = "5f0e6f7a-2b1c-4d3e-8f9a-0b1c2d3e4f5a";
    let mut launcher = start(&python, "fake_launcher.py", &[], kernel_id).await;
    let payload = launcher.waiter.recv(WAIT).await.unwrap();
    assert_eq!(payload.kernel_id, kernel_id);
    assert_eq!(payload.pid, launcher.child.id().map(i64::from));
    assert_eq!(payload.ip.as_deref(), Some("0.0.0.0"));
    let comm_port = payload.comm_port.expect("comm_port");
    assert_eq!(launcher.next_line().await, format!("comm {comm_port}"));
    // The connection file, with the pod's address.
    let info = into_connection_info(payload, Ipv4Addr::LOCALHOST.into());
    assert_eq!(info.key.len(), 36, "a UUID string");
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        serde_json::json!({
            "ip": "127.0.0.1", "transport": "tcp", "shell_port": 52001, "iopub_port": 52002,
            "stdin_port": 52003, "control_port": 52004, "hb_port": 52005, "key": info.key,
            "signature_scheme": "hmac-sha256", "kernel_name": ""
        })
    );

    let comm_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, comm_port));
    comm::send_signal(comm_addr, 2, WAIT).await.unwrap();
    assert_eq!(launcher.next_line().await, r#"{"signum": 2}"#);
    comm::shutdown(comm_addr, WAIT).await.unwrap();
    assert_eq!(launcher.next_line().await, r#"{"shutdown": 1}"#);
    assert_eq!(launcher.next_line().await, "done");
    assert!(launcher.child.wait().await.unwrap().success());
    // The listener is gone now: the next request is refused, and says so.
    let err = comm::send_signal(comm_addr, 2, WAIT).await.unwrap_err();
    assert!(matches!(err, comm::CommError::Refused { .. }), "{err}");
}

/// Upstream's `return_connection_info` (its encoder) and `server_listener` (its comm port).
#[tokio::test]
async fn handshake_and_comm_port_with_upstreams_launcher_functions() {
    let Some(python) = python("Cryptodome, jupyter_client") else {
        return;
    };
    let src = std::env::var("KIP_TEST_EG_SRC").unwrap_or("/opt/kip-test/eg-src".into());
    let scripts = Path::new(&src)
        .join("jupyter_enterprise_gateway-3.3.0/etc/kernel-launchers/python/scripts");
    let Some(scripts) = require(
        &format!("{}/launch_ipykernel.py", scripts.display()),
        scripts
            .join("launch_ipykernel.py")
            .exists()
            .then_some(scripts),
    ) else {
        return;
    };
    let kernel_id = "a1b2c3d4-0000-4000-8000-00000000beef";
    let scripts = scripts.to_str().unwrap();
    let mut launcher = start(&python, "upstream_launcher.py", &[scripts], kernel_id).await;
    let payload = launcher.waiter.recv(WAIT).await.unwrap();
    let ports = launcher.next_line().await;
    assert_eq!(
        ports,
        format!(
            "ports {} {} {} {} {}",
            payload.shell_port,
            payload.iopub_port,
            payload.stdin_port,
            payload.hb_port,
            payload.control_port
        )
    );
    assert_eq!(payload.kernel_id, kernel_id);
    assert_eq!(payload.pid, launcher.child.id().map(i64::from));
    assert!(payload.pgid.is_some());
    assert_eq!(payload.signature_scheme, "hmac-sha256");
    let comm_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, payload.comm_port.expect("comm_port")));

    // SIGUSR1 (10) as an alternate interrupt, then SIGINT: upstream's listener signals its
    // kernel process, which here is the script itself.
    comm::send_signal(comm_addr, 10, WAIT).await.unwrap();
    assert_eq!(launcher.next_line().await, "signal 10");
    comm::send_signal(comm_addr, 2, WAIT).await.unwrap();
    assert_eq!(launcher.next_line().await, "signal 2");
    comm::shutdown(comm_addr, WAIT).await.unwrap();
    assert_eq!(launcher.next_line().await, "done");
    assert!(launcher.child.wait().await.unwrap().success());
}
