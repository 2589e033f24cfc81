//! Shared by the kernel tests: a gateway binary with kernelspecs of its own, and a websocket
//! client written independently of the gateway's code (both protocols).
#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use e2e::{ChildGuard, binary, free_port, processes_naming, wait_http};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message as WsMessage, client::IntoClientRequest, http::HeaderValue,
};

pub const TOKEN: &str = "kernels-token";
pub const PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's ipykernel is importable; under CI=true its absence is a failure.
pub fn have_ipykernel() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import ipykernel"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3-ipykernel is missing: tests/scripts/install-deps.sh installs it"
        );
        eprintln!("SKIP: python3-ipykernel is not installed");
    }
    ok
}

pub struct Gateway {
    pub addr: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub child: Option<ChildGuard>,
}

impl Gateway {
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, &[])
    }

    /// A gateway with the default kernelspecs and `specs` besides: (name, kernel.json, the
    /// content of its `scripts/kernel-pod.yaml.j2` if any).
    pub fn start_with(env: &[(&str, &str)], specs: &[(&str, Value, Option<&str>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, spec, template) in specs {
            let d = dir.path().join("kernels").join(name);
            std::fs::create_dir_all(d.join("scripts")).unwrap();
            std::fs::write(d.join("kernel.json"), spec.to_string()).unwrap();
            if let Some(t) = template {
                std::fs::write(d.join("scripts").join("kernel-pod.yaml.j2"), t).unwrap();
            }
        }
        let spec = |argv: Value, extra: Value| {
            let mut v = json!({
                "argv": argv,
                "display_name": "Python 3 (local)",
                "language": "python",
                "metadata": {"process_proxy": {"config": {"image_name": "docker.io/elyra/kernel-py:3.2.3"}}},
            });
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            v.to_string()
        };
        let write = |name: &str, body: String| {
            let d = dir.path().join("kernels").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("kernel.json"), body).unwrap();
        };
        let argv = json!([
            PYTHON,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}"
        ]);
        write("python3_local", spec(argv.clone(), json!({})));
        write(
            "python3_message",
            spec(argv.clone(), json!({"interrupt_mode": "message"})),
        );
        write(
            "python_kubernetes",
            spec(
                json!(["python", "launch_kubernetes.py", "{kernel_id}"]),
                json!({"metadata": {"process_proxy": {
                    "class_name": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
                    "config": {"image_name": "elyra/kernel-py:3.2.3"}}}}),
            ),
        );
        write(
            "restricted",
            spec(
                argv,
                json!({"metadata": {"process_proxy": {"config": {"authorized_users": "alice"}}}}),
            ),
        );
        let port = free_port();
        let admin_port = free_port();
        let mut cmd = Command::new(binary("gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            // The container's user: requests without KERNEL_USERNAME run as this user.
            .env("LOGNAME", "jovyan")
            .env("JUPYTER_PATH", dir.path())
            .env("JUPYTER_RUNTIME_DIR", dir.path().join("runtime"))
            .env("EG_IP", "127.0.0.1")
            .env("EG_PORT", port.to_string())
            .env("EG_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("EG_AUTH_TOKEN", TOKEN)
            .env("EG_DEFAULT_KERNEL_NAME", "python3_local")
            .env("EG_LOG_LEVEL", "DEBUG")
            .env("RUST_LOG", "gateway=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gateway.log")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard(cmd.spawn().expect("start the gateway"));
        let addr = format!("127.0.0.1:{port}");
        wait_http(&addr, "/api", Duration::from_secs(20), "gateway");
        Self {
            addr,
            admin: format!("127.0.0.1:{admin_port}"),
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn request(&self, method: Method, path: &str) -> (u16, Value) {
        self.send(method, path, None).await
    }

    /// The status and JSON body (`null` when it is none) of `method` on `path` with the token.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .header("Authorization", format!("token {TOKEN}"));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Starts a `python3_local` kernel: 201, starting, no connections; returns its id.
    pub async fn start_kernel(&self, env: Value) -> String {
        let (id, model) = self.start_spec("python3_local", env).await;
        assert_eq!(model["execution_state"], "starting");
        assert_eq!(model["connections"], 0);
        id
    }

    /// Starts a kernel of kernelspec `spec` with `env`: asserts 201; returns its id and model.
    pub async fn start_spec(&self, spec: &str, env: Value) -> (String, Value) {
        let (status, model) = self
            .post("/api/kernels", json!({"name": spec, "env": env}))
            .await;
        assert_eq!(status, 201, "{model}\n{}", self.log());
        (model["id"].as_str().unwrap().to_owned(), model)
    }

    /// Deletes kernel `id`: asserts 204.
    pub async fn delete_kernel(&self, id: &str) {
        let (status, body) = self
            .request(Method::DELETE, &format!("/api/kernels/{id}"))
            .await;
        assert_eq!(status, 204, "DELETE kernel {id}: {body}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Asserts that `/metrics` holds `line`.
    pub async fn assert_metric(&self, line: &str) {
        let metrics = self.metrics().await;
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut guard = self.child.take().unwrap();
        let pid = guard.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- gateway log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if self.child.is_some() {
            let _ = self.terminate();
        }
        // Whatever a failed test left behind.
        for pid in processes_naming(&self.runtime_dir()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A kernel message as a client sees it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub channel: String,
    pub msg_type: String,
    pub parent_id: String,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

pub fn parse_json_msg(v: Value, buffers: Vec<Bytes>) -> Msg {
    Msg {
        channel: v["channel"].as_str().unwrap_or_default().to_owned(),
        msg_type: v["header"]["msg_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        parent_id: v["parent_header"]["msg_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        content: v["content"].clone(),
        buffers,
    }
}

/// Decodes a frame from the gateway, written independently of the gateway's own code.
pub fn decode(frame: WsMessage, v1: bool) -> Option<Msg> {
    match frame {
        WsMessage::Text(t) => {
            assert!(!v1, "v1 frames are binary");
            let v: Value = serde_json::from_str(t.as_str()).expect("legacy text frame is JSON");
            assert_eq!(v["msg_id"], v["header"]["msg_id"]);
            assert_eq!(v["msg_type"], v["header"]["msg_type"]);
            Some(parse_json_msg(v, vec![]))
        }
        WsMessage::Binary(b) if v1 => {
            let word =
                |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()) as usize;
            let n = word(0);
            let offs: Vec<usize> = (1..=n).map(word).collect();
            let part = |i: usize| b.slice(offs[i]..offs[i + 1]);
            let json = |i: usize| serde_json::from_slice::<Value>(&part(i)).unwrap();
            let channel = String::from_utf8(part(0).to_vec()).unwrap();
            let v = json!({"channel": channel, "header": json(1), "parent_header": json(2),
                           "metadata": json(3), "content": json(4)});
            Some(parse_json_msg(v, (5..n - 1).map(part).collect()))
        }
        WsMessage::Binary(b) => {
            let word =
                |i: usize| u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as usize;
            let n = word(0);
            let mut offs: Vec<usize> = (1..=n).map(word).collect();
            offs.push(b.len());
            let v: Value = serde_json::from_slice(&b[offs[0]..offs[1]]).unwrap();
            let buffers = offs[1..].windows(2).map(|w| b.slice(w[0]..w[1])).collect();
            Some(parse_json_msg(v, buffers))
        }
        _ => None,
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: WsStream,
    pub session: String,
    v1: bool,
}

#[derive(Debug, Default)]
pub struct Executed {
    pub stdout: String,
    pub results: Vec<Value>,
    pub errors: Vec<Value>,
    pub status: String,
    pub reply: Value,
}

impl Client {
    pub async fn connect(gw: &Gateway, kernel: &str, session: &str, v1: bool) -> Self {
        let mut req = format!(
            "ws://{}/api/kernels/{kernel}/channels?session_id={session}",
            gw.addr
        )
        .into_client_request()
        .unwrap();
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("token {TOKEN}")).unwrap(),
        );
        if v1 {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("v1.kernel.websocket.jupyter.org"),
            );
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("websocket: {e}\n{}", gw.log()));
        let selected = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            selected.as_deref(),
            v1.then_some("v1.kernel.websocket.jupyter.org")
        );
        Self {
            ws,
            session: session.to_owned(),
            v1,
        }
    }

    pub async fn send(
        &mut self,
        channel: &str,
        msg_type: &str,
        content: Value,
        buffers: Vec<Vec<u8>>,
    ) -> String {
        let msg_id = uuid::Uuid::new_v4().to_string();
        let header = json!({"msg_id": msg_id, "msg_type": msg_type, "username": "test",
                            "session": self.session, "date": "2026-01-01T00:00:00.000000Z",
                            "version": "5.3"});
        let frame = if self.v1 {
            let parts: Vec<Vec<u8>> = [
                channel.as_bytes().to_vec(),
                header.to_string().into_bytes(),
                b"{}".to_vec(),
                b"{}".to_vec(),
                content.to_string().into_bytes(),
            ]
            .into_iter()
            .chain(buffers)
            .collect();
            let n = parts.len() + 1;
            let mut out = Vec::new();
            out.extend_from_slice(&(n as u64).to_le_bytes());
            let mut off = 8 * (n + 1);
            out.extend_from_slice(&(off as u64).to_le_bytes());
            for p in &parts {
                off += p.len();
                out.extend_from_slice(&(off as u64).to_le_bytes());
            }
            for p in parts {
                out.extend_from_slice(&p);
            }
            WsMessage::Binary(out.into())
        } else {
            let json = json!({"header": header, "parent_header": {}, "metadata": {},
                              "content": content, "channel": channel, "buffers": []})
            .to_string();
            if buffers.is_empty() {
                WsMessage::Text(json.into())
            } else {
                let n = 1 + buffers.len();
                let mut out = Vec::new();
                out.extend_from_slice(&(n as u32).to_be_bytes());
                let mut off = 4 * (n + 1);
                out.extend_from_slice(&(off as u32).to_be_bytes());
                off += json.len();
                for b in &buffers[..buffers.len() - 1] {
                    out.extend_from_slice(&(off as u32).to_be_bytes());
                    off += b.len();
                }
                out.extend_from_slice(&(off as u32).to_be_bytes());
                out.extend_from_slice(json.as_bytes());
                for b in buffers {
                    out.extend_from_slice(&b);
                }
                WsMessage::Binary(out.into())
            }
        };
        self.ws.send(frame).await.unwrap();
        msg_id
    }

    pub async fn recv(&mut self, timeout: Duration) -> Option<Msg> {
        loop {
            let frame = tokio::time::timeout(timeout, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let Some(m) = decode(frame, self.v1) {
                return Some(m);
            }
        }
    }

    pub async fn execute_request(&mut self, code: &str, allow_stdin: bool) -> String {
        self.send(
            "shell",
            "execute_request",
            json!({"code": code, "silent": false, "store_history": true,
                   "user_expressions": {}, "allow_stdin": allow_stdin, "stop_on_error": false}),
            vec![],
        )
        .await
    }

    /// Runs `code` and collects what it produced until its reply and its `idle` status.
    pub async fn execute(&mut self, code: &str) -> Executed {
        let id = self.execute_request(code, false).await;
        self.collect(&id, Duration::from_secs(30)).await
    }

    pub async fn collect(&mut self, id: &str, timeout: Duration) -> Executed {
        let mut out = Executed::default();
        let (mut replied, mut idle) = (false, false);
        let deadline = Instant::now() + timeout;
        while !(replied && idle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left).await else {
                panic!("no reply to {id} in {timeout:?}; so far {out:?}");
            };
            if m.parent_id != id {
                continue;
            }
            match m.msg_type.as_str() {
                "stream" => out
                    .stdout
                    .push_str(m.content["text"].as_str().unwrap_or("")),
                "execute_result" => out.results.push(m.content["data"].clone()),
                "error" => out.errors.push(m.content.clone()),
                "execute_reply" => {
                    assert_eq!(m.channel, "shell");
                    out.status = m.content["status"].as_str().unwrap_or("").to_owned();
                    out.reply = m.content.clone();
                    replied = true;
                }
                "status" if m.content["execution_state"] == "idle" => idle = true,
                _ => {}
            }
        }
        if std::env::var("DEBUG_LATE").is_ok() {
            while let Some(m) = self.recv(Duration::from_millis(500)).await {
                eprintln!(
                    "LATE after idle: {} parent_match={} {}",
                    m.msg_type,
                    m.parent_id == id,
                    m.content
                );
            }
        }
        out
    }
}
