//! The gateway's ZMTP sockets against libzmq peers (pyzmq, `fixtures/zmq_peer.py`), which is what
//! kernels are: connecting before the peer listens, identities, long frames, a 20,000-message
//! publication, reconnecting to a peer that came back, refusing a peer of the wrong type,
//! answering a peer's heartbeats.
//!
//! Needs Debian's `python3` with `python3-zmq` (installed with `python3-ipykernel` by
//! `tests/scripts/install-deps.sh`). A missing component skips the tests, except under `CI=true`,
//! where they fail.

use std::{path::PathBuf, process::Stdio, time::Duration};

use gateway::zmtp::ZmtpSocket;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(20);

fn python() -> Option<PathBuf> {
    let python =
        PathBuf::from(std::env::var("KIP_TEST_PYTHON").unwrap_or("/usr/bin/python3".into()));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import zmq"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} with zmq is missing (CI=true forbids skipping): run tests/scripts/install-deps.sh",
        python.display()
    );
    eprintln!("SKIP: {} with zmq is missing", python.display());
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the peer; with `wait_bound`, returns once it listens.
async fn peer(python: &PathBuf, args: &[&str], wait_bound: bool) -> Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zmq_peer.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start zmq_peer.py");
    if wait_bound {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(WAIT, lines.next_line()).await.unwrap().unwrap();
        assert_eq!(line.as_deref(), Some("bound"));
    }
    child
}

async fn next(socket: &ZmtpSocket) -> Vec<Vec<u8>> {
    let frames = timeout(WAIT, socket.next())
        .await
        .expect("a message in time");
    frames.into_iter().map(|f| f.to_vec()).collect()
}

#[tokio::test]
async fn a_dealer_connects_before_the_router_listens_and_talks_both_ways() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let socket = ZmtpSocket::dealer("127.0.0.1", port, b"session-1");
    // Queued until the connection is up; the ROUTER binds half a second later.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(&[&b"hello"[..], &big]);
    let _router = peer(&python, &["router", &port.to_string(), "0.5"], false).await;
    let reply = next(&socket).await;
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    assert_eq!(reply.len(), 3);
    assert_eq!(reply[0], b"seen");
    assert_eq!(
        reply[1], b"session-1",
        "the READY's Identity is the routing id"
    );
    assert!(reply[2] == reversed, "3 MB frame both ways");
    assert!(socket.is_connected());
    // Small messages keep flowing on the same connection.
    for i in 0..100u32 {
        socket.send(&[i.to_string()]);
        let reply = next(&socket).await;
        assert_eq!(
            reply[2],
            i.to_string().chars().rev().collect::<String>().as_bytes()
        );
    }
}

#[tokio::test]
async fn a_sub_receives_all_of_a_publication_in_order() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let _xpub = peer(&python, &["xpub", &port.to_string(), "20000"], true).await;
    let socket = ZmtpSocket::sub("127.0.0.1", port);
    for i in 0..20000u32 {
        let m = next(&socket).await;
        assert_eq!(
            m,
            vec![b"n".to_vec(), i.to_string().into_bytes()],
            "message {i}"
        );
    }
    assert_eq!(next(&socket).await, vec![b"end".to_vec()]);
}

#[tokio::test]
async fn a_dealer_reconnects_to_a_peer_that_came_back() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let first = peer(&python, &["router", &port.to_string(), "0"], true).await;
    let socket = ZmtpSocket::dealer("127.0.0.1", port, b"s");
    socket.send(&[b"one"]);
    assert_eq!(next(&socket).await[2], b"eno");
    drop(first);
    // The socket notices the closed connection when it is next driven.
    let _ = timeout(Duration::from_millis(500), socket.next()).await;
    assert!(!socket.is_connected());
    let _second = peer(&python, &["router", &port.to_string(), "0"], true).await;
    socket.send(&[b"two"]);
    assert_eq!(next(&socket).await[2], b"owt");
}

#[tokio::test]
async fn a_peer_of_the_wrong_type_is_not_talked_to() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let _pub = peer(&python, &["pub", &port.to_string()], true).await;
    let socket = ZmtpSocket::dealer("127.0.0.1", port, b"s");
    socket.send(&[b"hello"]);
    assert!(
        timeout(Duration::from_secs(1), socket.next())
            .await
            .is_err(),
        "nothing comes from a PUB"
    );
    assert!(!socket.is_connected(), "a DEALER does not talk to a PUB");
}

#[tokio::test]
async fn a_peer_that_sends_heartbeats_gets_its_pongs_and_keeps_the_connection() {
    let Some(python) = python() else {
        return;
    };
    let port = free_port();
    let _router = peer(&python, &["heartbeat", &port.to_string()], true).await;
    let socket = ZmtpSocket::dealer("127.0.0.1", port, b"s");
    socket.send(&[b"hello"]);
    assert_eq!(next(&socket).await[1], b"1");
    // Silent for 1.5 s but driven: the peer's PINGs (every 100 ms, 300 ms to answer) are answered.
    let _ = timeout(Duration::from_millis(1500), socket.next()).await;
    socket.send(&[b"again"]);
    assert_eq!(
        next(&socket).await[1],
        b"1",
        "still the first connection: none was dropped for a missing PONG"
    );
}
