//! The gateway running real kernels: Debian's `python3-ipykernel` started by the gateway binary
//! through a local kernelspec, driven over its REST API and websocket as clients do.

#[path = "support/kernels.rs"]
mod kernels;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use bytes::Bytes;
use e2e::processes_naming;
use futures_util::SinkExt;
use kernels::{Client, Gateway, TOKEN, have_ipykernel};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The flood test runs alone: a kernel publishes IOPub with a high-water mark of 1,000 messages
/// and drops beyond it when its reader is starved of CPU, which a dozen kernels starting at once
/// on a small machine can do whatever the gateway does. Every other test shares the machine.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A share of the machine, or `None` when the test cannot run (no ipykernel, outside CI).
async fn machine() -> Option<tokio::sync::RwLockReadGuard<'static, ()>> {
    if !have_ipykernel() {
        return None;
    }
    Some(MACHINE.read().await)
}

/// The common start: a share of the machine, a gateway with defaults and one kernel.
async fn one_kernel() -> Option<(tokio::sync::RwLockReadGuard<'static, ()>, Gateway, String)> {
    let machine = machine().await?;
    let gw = Gateway::start(&[]);
    let id = gw.start_kernel(json!({})).await;
    Some((machine, gw, id))
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_outputs_errors_and_the_filtered_environment() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[
        ("EG_CLIENT_ENVS", "ALLOWED_VAR"),
        ("EG_INHERITED_ENVS", "INHERITED_VAR"),
        ("INHERITED_VAR", "from-gateway"),
        ("NOT_INHERITED", "secret"),
    ]);
    let id = gw
        .start_kernel(json!({"KERNEL_USERNAME": "alice", "KERNEL_EXTRA": "k",
                             "ALLOWED_VAR": "a", "OTHER_VAR": "o"}))
        .await;
    let mut c = Client::connect(&gw, &id, "s1", false).await;
    let r = c.execute("print(6*7)\n6*7").await;
    assert_eq!(r.status, "ok");
    assert_eq!(r.stdout, "42\n");
    assert_eq!(r.results, vec![json!({"text/plain": "42"})]);

    let r = c.execute("1/0").await;
    assert_eq!(r.status, "error");
    assert_eq!(r.errors[0]["ename"], "ZeroDivisionError");

    let r = c
        .execute(
            "import os, json\nprint(json.dumps({k: os.environ.get(k) for k in \
             ['KERNEL_USERNAME','KERNEL_EXTRA','ALLOWED_VAR','OTHER_VAR','INHERITED_VAR',\
             'NOT_INHERITED','EG_AUTH_TOKEN','KERNEL_GATEWAY','KERNEL_ID']}))",
        )
        .await;
    let env: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {r:?}\n{}", gw.log()));
    assert_eq!(
        env,
        json!({"KERNEL_USERNAME": "alice", "KERNEL_EXTRA": "k", "ALLOWED_VAR": "a",
               "OTHER_VAR": null, "INHERITED_VAR": "from-gateway", "NOT_INHERITED": null,
               "EG_AUTH_TOKEN": null, "KERNEL_GATEWAY": "1", "KERNEL_ID": id})
    );

    let (status, list) = gw.request(Method::GET, "/api/kernels").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["connections"], 1);
    assert_eq!(list[0]["execution_state"], "idle");

    for line in [
        "gateway_kernel_starts_total{result=\"ok\"} 1",
        "gateway_websocket_connections{protocol=\"legacy\"} 1",
        "gateway_messages_relayed_total{channel=\"shell\",direction=\"to_kernel\"} 3",
    ] {
        gw.assert_metric(line).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_input_request_reaches_the_client_and_its_reply_the_kernel() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[]);
    let id = gw.start_kernel(json!({"KERNEL_USERNAME": "alice"})).await;
    let mut c = Client::connect(&gw, &id, "stdin-session", false).await;
    let exec = c
        .execute_request("name = input('who? ')\nprint('hello', name)", true)
        .await;
    loop {
        let m = c
            .recv(Duration::from_secs(30))
            .await
            .expect("input_request");
        if m.msg_type == "input_request" {
            assert_eq!(m.channel, "stdin");
            assert_eq!(m.content["prompt"], "who? ");
            break;
        }
    }
    c.send("stdin", "input_reply", json!({"value": "gateway"}), vec![])
        .await;
    let r = c.collect(&exec, Duration::from_secs(30)).await;
    assert_eq!(r.status, "ok");
    assert!(r.stdout.contains("hello gateway"), "{r:?}");
}

const ECHO_COMM: &str = "def _target(comm, open_msg):\n    \
    @comm.on_msg\n    \
    def _echo(msg):\n        \
        comm.send({'echo': msg['content']['data']}, buffers=[bytes(b)[::-1] for b in msg['buffers']])\n\
get_ipython().kernel.comm_manager.register_target('echo', _target)";

#[tokio::test(flavor = "multi_thread")]
async fn comm_messages_with_binary_buffers_in_both_protocols() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    for v1 in [false, true] {
        let mut c = Client::connect(&gw, &id, &format!("comm-{v1}"), v1).await;
        let r = c.execute(ECHO_COMM).await;
        assert_eq!(r.status, "ok", "{r:?}");
        let comm_id = uuid::Uuid::new_v4().to_string();
        c.send(
            "shell",
            "comm_open",
            json!({"comm_id": comm_id, "target_name": "echo", "data": {}}),
            vec![],
        )
        .await;
        c.send(
            "shell",
            "comm_msg",
            json!({"comm_id": comm_id, "data": {"x": 1}}),
            vec![vec![0, 1, 2, 255], b"abc".to_vec()],
        )
        .await;
        let echoed = loop {
            let m = c.recv(Duration::from_secs(20)).await.expect("comm echo");
            if m.msg_type == "comm_msg" && m.content["comm_id"] == comm_id.as_str() {
                break m;
            }
        };
        assert_eq!(echoed.channel, "iopub");
        assert_eq!(echoed.content["data"]["echo"], json!({"x": 1}));
        assert_eq!(
            echoed.buffers,
            vec![
                Bytes::from_static(&[255, 2, 1, 0]),
                Bytes::from_static(b"cba")
            ],
            "v1={v1}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_stops_a_running_sleep_in_both_modes() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[]);
    for spec in ["python3_local", "python3_message"] {
        let (id, _) = gw.start_spec(spec, json!({})).await;
        let mut c = Client::connect(&gw, &id, "int", false).await;
        let exec = c
            .execute_request("import time\ntime.sleep(60)", false)
            .await;
        // Wait until the cell runs (busy), then interrupt.
        loop {
            let m = c.recv(Duration::from_secs(20)).await.expect("busy");
            if m.msg_type == "execute_input" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let (status, _) = gw
            .request(Method::POST, &format!("/api/kernels/{id}/interrupt"))
            .await;
        assert_eq!(status, 204);
        let r = c.collect(&exec, Duration::from_secs(20)).await;
        assert_eq!(r.status, "error", "{spec}");
        assert_eq!(r.reply["ename"], "KeyboardInterrupt", "{spec}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // Still usable.
        let r = c.execute("6*7").await;
        assert_eq!(
            (r.status.as_str(), &r.results),
            ("ok", &vec![json!({"text/plain": "42"})]),
            "{spec}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_loses_state_and_the_open_websocket_keeps_working() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    let mut c = Client::connect(&gw, &id, "restart", true).await;
    assert_eq!(c.execute("x = 41\nprint(x + 1)").await.stdout, "42\n");
    let pid_before = c.execute("import os; print(os.getpid())").await.stdout;
    let (status, model) = gw
        .request(Method::POST, &format!("/api/kernels/{id}/restart"))
        .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], id.as_str());
    let r = c.execute("print(x)").await;
    assert_eq!(r.status, "error");
    assert_eq!(r.errors[0]["ename"], "NameError");
    let pid_after = c.execute("import os; print(os.getpid())").await.stdout;
    assert_ne!(pid_before, pid_after);
    assert_eq!(c.execute("print(1+1)").await.stdout, "2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_kernel_is_restarted_and_says_so_on_iopub() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    let mut c = Client::connect(&gw, &id, "killed", false).await;
    let pid = c.execute("import os; print(os.getpid())").await.stdout;
    let pid = pid.trim().to_owned();
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    loop {
        let m = c
            .recv(Duration::from_secs(20))
            .await
            .expect("restarting notice");
        if m.msg_type == "status" && m.content["execution_state"] == "restarting" {
            assert_eq!(m.channel, "iopub");
            break;
        }
    }
    let r = c.execute("import os; print(os.getpid())").await;
    assert_eq!(r.status, "ok");
    assert_ne!(r.stdout.trim(), pid);
    gw.assert_metric("gateway_kernel_auto_restarts_total{result=\"restarted\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_websockets_share_iopub_and_replies_go_to_the_requester() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    let mut a = Client::connect(&gw, &id, "session-a", false).await;
    let mut b = Client::connect(&gw, &id, "session-b", true).await;
    let (_, model) = gw.request(Method::GET, &format!("/api/kernels/{id}")).await;
    assert_eq!(model["connections"], 2);
    let exec = a.execute_request("print('shared')", false).await;
    let r = a.collect(&exec, Duration::from_secs(20)).await;
    assert_eq!(r.stdout, "shared\n");
    // B sees the output on IOPub, never A's reply.
    let mut saw_stream = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(m) = b
        .recv(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if m.parent_id == exec {
            assert_ne!(
                m.msg_type, "execute_reply",
                "reply leaked to another client"
            );
            saw_stream |= m.msg_type == "stream";
        }
    }
    assert!(saw_stream);
}

/// Waits until `gateway_kernel_sockets` reads `n`; panics with the last value after 10 s.
async fn wait_for_sockets(gw: &Gateway, n: u32, why: &str) {
    let want = format!("gateway_kernel_sockets {n}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gw.metrics().await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("gateway_kernel_sockets "))
            .unwrap_or("(none)")
            .to_owned();
        if line == want {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: want {want}, have {line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_with_the_same_session_gets_what_was_kept() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    // IOPub only: the gateway's own sockets closed after the nudge.
    wait_for_sockets(&gw, 1, "kernel without websocket").await;
    let mut c = Client::connect(&gw, &id, "comeback", false).await;
    wait_for_sockets(&gw, 4, "one websocket").await;
    let exec = c
        .execute_request(
            "import time\ntime.sleep(1.5)\nprint('while you were away')",
            false,
        )
        .await;
    c.ws.close(None).await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Owed the execute_reply: the session's sockets stay open for it...
    wait_for_sockets(&gw, 4, "disconnected session owed a reply").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...and close once it has been kept.
    wait_for_sockets(&gw, 1, "disconnected session owed nothing").await;
    let mut c = Client::connect(&gw, &id, "comeback", false).await;
    let r = c.collect(&exec, Duration::from_secs(10)).await;
    assert_eq!(r.stdout, "while you were away\n");
    assert_eq!(r.status, "ok");
    // The reopened sockets carry the session on as before (stdin included).
    wait_for_sockets(&gw, 4, "session back").await;
    let exec = c
        .execute_request("print('hello', input('name? '))", true)
        .await;
    while let Some(m) = c.recv(Duration::from_secs(30)).await {
        if m.msg_type == "input_request" {
            break;
        }
    }
    c.send("stdin", "input_reply", json!({"value": "again"}), vec![])
        .await;
    let r = c.collect(&exec, Duration::from_secs(30)).await;
    assert_eq!(r.stdout, "hello again\n");
    c.ws.close(None).await.unwrap();
    drop(c);
    wait_for_sockets(&gw, 1, "session away again, owed nothing").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_20000_outputs_arrives_complete_and_in_order() {
    if !have_ipykernel() {
        return;
    }
    let _machine = MACHINE.write().await;
    let gw = Gateway::start(&[]);
    let id = gw.start_kernel(json!({})).await;
    for v1 in [false, true] {
        let mut c = Client::connect(&gw, &id, &format!("flood-{v1}"), v1).await;
        // One IOPub message per line, straight from the kernel's session, as fast as the kernel
        // can send them. The kernel's own IOPub high-water mark (1,000 messages) is the one place
        // outside the gateway where messages can be lost: bursts of 200 with a 5 ms pause keep each
        // burst well under it when a busy machine starves the reader for a moment; the gateway's
        // own drops are checked below.
        let exec = c
            .execute_request(
                "import time\nk = get_ipython().kernel\nparent = k.get_parent('shell')\n\
                 for i in range(20000):\n    \
                 k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': '%d\\n' % i}, parent=parent)\n    \
                 if i % 200 == 199: time.sleep(0.005)",
                false,
            )
            .await;
        let r = c.collect(&exec, Duration::from_secs(120)).await;
        assert_eq!(r.status, "ok", "{:?}", r.reply);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            20000,
            "v1={v1}\n{}",
            gw.metrics()
                .await
                .lines()
                .filter(|l| l.contains("dropped"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, i.to_string(), "out of order at {i}");
        }
    }
    let metrics = gw.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("gateway_messages_dropped_total"))
    {
        assert!(line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_kernels_are_culled() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[("EG_CULL_IDLE_TIMEOUT", "2"), ("EG_CULL_INTERVAL", "1")]);
    let id = gw.start_kernel(json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = gw.request(Method::GET, &format!("/api/kernels/{id}")).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "kernel was not culled");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(processes_naming(&gw.runtime_dir()).is_empty());
    assert!(
        gw.metrics()
            .await
            .contains("gateway_kernels_culled_total{reason=\"idle\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_users_and_bad_requests_answer_as_upstream() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[("EG_MAX_KERNELS", "2"), ("EG_MAX_KERNELS_PER_USER", "1")]);
    gw.start_kernel(json!({"KERNEL_USERNAME": "alice"})).await;
    let (status, body) = gw
        .post("/api/kernels", json!({"env": {"KERNEL_USERNAME": "alice"}}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "A max kernels per user limit has been set to 1 and user 'alice' currently has 1 active and pending kernel(s)."
    );
    gw.start_kernel(json!({"KERNEL_USERNAME": "bob"})).await;
    let (status, body) = gw
        .post("/api/kernels", json!({"env": {"KERNEL_USERNAME": "carol"}}))
        .await;
    assert_eq!((status, &body["message"]), (403, &json!("Resource Limit")));

    // No KERNEL_USERNAME and no user in the environment: the process's own user, as
    // upstream; root is refused by the default EG_UNAUTHORIZED_USERS.
    if Command::new("id").arg("-u").output().unwrap().stdout == b"0\n" {
        let gw = Gateway::start(&[("LOGNAME", "")]);
        let (status, body) = gw.post("/api/kernels", json!({"env": {}})).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["reason"].as_str().unwrap().contains("User 'root'"));
    }
    let gw = Gateway::start(&[]);
    // Refused requests, grouped by the answer: its status, the field that names the reason, and
    // per request body the text it must hold.
    let refusals = [
        (
            400,
            "message",
            vec![
                (json!({"env": {"KERNEL_X": 1}}), "KERNEL_X"),
                (json!({"env": {"KERNEL_X": "a$b"}}), "prohibited characters"),
                (json!({"env": {"KERNEL_ID": "not-a-uuid"}}), "KERNEL_ID"),
                (
                    json!({"env": {"KERNEL_LAUNCH_TIMEOUT": "soon"}}),
                    "KERNEL_LAUNCH_TIMEOUT",
                ),
                (json!({"env": []}), "env"),
            ],
        ),
        (
            403,
            "reason",
            vec![
                (
                    json!({"env": {"KERNEL_USERNAME": "root"}}),
                    "User 'root' is not authorized",
                ),
                (
                    json!({"name": "restricted", "env": {"KERNEL_USERNAME": "bob"}}),
                    "not authorized",
                ),
            ],
        ),
        (
            500,
            "traceback",
            vec![(json!({"name": "nope", "env": {}}), "NoSuchKernel")],
        ),
        (
            501,
            "message",
            vec![(
                json!({"name": "python_kubernetes", "env": {}}),
                "no Kubernetes API configuration",
            )],
        ),
    ];
    for (status, field, cases) in refusals {
        for (body, text) in cases {
            let (got, answer) = gw.post("/api/kernels", body.clone()).await;
            assert_eq!(got, status, "{body}: {answer}");
            assert!(
                answer[field].as_str().unwrap_or("").contains(text),
                "{body}: {answer}"
            );
        }
    }
    let id = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    let (status, body) = gw
        .post("/api/kernels", json!({"env": {"KERNEL_ID": id}}))
        .await;
    assert_eq!((status, body["id"].as_str()), (201, Some(id)));
    let (status, _) = gw
        .post("/api/kernels", json!({"env": {"KERNEL_ID": id}}))
        .await;
    assert_eq!(status, 409);
    for (method, path, status) in [
        (Method::GET, "/api/kernels/1-2-3-4-5", 404),
        (Method::DELETE, "/api/kernels/1-2-3-4-5", 404),
        (Method::POST, "/api/kernels/1-2-3-4-5/interrupt", 404),
        (Method::POST, "/api/kernels/1-2-3-4-5/restart", 404),
    ] {
        let (got, body) = gw.request(method.clone(), path).await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(body["message"], "Kernel does not exist: 1-2-3-4-5");
    }
    // No token: 401 on every kernel route.
    let r = reqwest::get(gw.url("/api/kernels")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    gw.delete_kernel(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_client_frame_is_dropped_and_the_connection_stays_up() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    let mut c = Client::connect(&gw, &id, "garbage", false).await;
    for junk in [
        WsMessage::Text("not json".into()),
        WsMessage::Text(r#"{"header": 5}"#.into()),
        WsMessage::Text(r#"{"header": {}, "channel": "iopub"}"#.into()),
        WsMessage::Binary(vec![0, 0, 0, 9, 1].into()),
    ] {
        c.ws.send(junk).await.unwrap();
    }
    assert_eq!(
        c.execute("print('still here')").await.stdout,
        "still here\n"
    );
    gw.assert_metric("gateway_messages_dropped_total{reason=\"bad_client_frame\"} 4")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_api_starts_and_ends_kernels() {
    let Some(_machine) = machine().await else {
        return;
    };
    let gw = Gateway::start(&[]);
    let (status, s) = gw
        .post(
            "/api/sessions",
            json!({"path": "nb.ipynb", "type": "notebook", "name": "nb", "kernel": {"name": "python3_local"}}),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["path"], "nb.ipynb");
    assert_eq!(s["kernel"]["name"], "python3_local");
    let sid = s["id"].as_str().unwrap().to_owned();
    let kid = s["kernel"]["id"].as_str().unwrap().to_owned();
    let (status, list) = gw.request(Method::GET, "/api/sessions").await;
    assert_eq!((status, list[0]["id"].as_str()), (200, Some(sid.as_str())));
    let (status, _) = gw.post("/api/sessions", json!({"type": "notebook"})).await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .request(Method::DELETE, &format!("/api/sessions/{sid}"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = gw
        .request(Method::GET, &format!("/api/kernels/{kid}"))
        .await;
    assert_eq!(status, 404);
}

/// The log line of `message` that names `kernel_id`.
fn log_line(log: &str, message: &str, kernel_id: &str) -> String {
    log.lines()
        .find(|l| l.contains(message) && l.contains(kernel_id))
        .unwrap_or_else(|| panic!("no {message:?} for {kernel_id} in:\n{log}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_address_logged_follows_eg_trust_xheaders() {
    let Some(_machine) = machine().await else {
        return;
    };
    for trust in [false, true] {
        let gw = Gateway::start(&[("EG_TRUST_XHEADERS", if trust { "True" } else { "False" })]);
        let r = reqwest::Client::new()
            .post(gw.url("/api/kernels"))
            .header("Authorization", format!("token {TOKEN}"))
            .header("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
            .body(json!({"name": "python3_local"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", gw.log());
        let model: Value = r.json().await.unwrap();
        let id = model["id"].as_str().unwrap().to_owned();
        // The websocket comes without proxy headers: its peer's address either way.
        let mut c = Client::connect(&gw, &id, "s1", false).await;
        assert_eq!(c.execute("1").await.status, "ok");
        drop(c);
        gw.delete_kernel(&id).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.log().contains("websocket closed") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = gw.log();
        let started = log_line(&log, "kernel started", &id);
        let want = if trust {
            "client=203.0.113.7"
        } else {
            "client=127.0.0.1"
        };
        assert!(started.contains(want), "trust {trust}: {started}");
        for message in ["websocket open", "websocket closed"] {
            let line = log_line(&log, message, &id);
            assert!(line.contains("client=127.0.0.1"), "trust {trust}: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_every_kernel_down_and_leaves_no_process() {
    let Some(_machine) = machine().await else {
        return;
    };
    let mut gw = Gateway::start(&[]);
    let a = gw.start_kernel(json!({})).await;
    let _b = gw.start_kernel(json!({})).await;
    let mut c = Client::connect(&gw, &a, "bye", false).await;
    assert_eq!(c.execute("print('up')").await.stdout, "up\n");
    assert_eq!(processes_naming(&gw.runtime_dir()).len(), 2);
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(
        processes_naming(&gw.runtime_dir()).is_empty(),
        "kernels outlived the gateway"
    );
    let files: Vec<_> = std::fs::read_dir(gw.runtime_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "connection files left: {files:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_without_a_websocket_keeps_the_kernel() {
    let Some((_machine, gw, id)) = one_kernel().await else {
        return;
    };
    for _ in 0..2 {
        let (status, model) = gw
            .request(Method::POST, &format!("/api/kernels/{id}/restart"))
            .await;
        assert_eq!(status, 200, "{model}\n{}", gw.log());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = gw.request(Method::GET, &format!("/api/kernels/{id}")).await;
    assert_eq!(status, 200);
    let mut c = Client::connect(&gw, &id, "after-restarts", false).await;
    assert_eq!(c.execute("print('alive')").await.stdout, "alive\n");
    assert_eq!(processes_naming(&gw.runtime_dir()).len(), 1);
}
