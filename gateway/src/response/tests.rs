use super::*;
use gateway_core::response::encode_payload;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

const GATEWAY_PEM: &str = include_str!("../../core/testdata/response/gateway.pem");
const VECTORS: &str = include_str!("../../core/testdata/response/vectors.json");

fn key() -> Arc<ResponseKey> {
    Arc::new(ResponseKey::from_private(
        rsa::PrivateKey::from_pkcs8_pem(GATEWAY_PEM).unwrap(),
    ))
}

fn local(max_payload: usize, read_timeout: Duration) -> ResponseSettings {
    ResponseSettings {
        ip: Some(Ipv4Addr::LOCALHOST),
        port: 0,
        max_payload,
        read_timeout,
        ..ResponseSettings::default()
    }
}

async fn listener(settings: ResponseSettings) -> ResponseListener {
    ResponseListener::bind(&settings, key()).await.unwrap()
}

fn payload_for(l: &ResponseListener, kernel_id: &str) -> Vec<u8> {
    let conn = json!({
        "shell_port": 41001, "iopub_port": 41002, "stdin_port": 41003,
        "control_port": 41004, "hb_port": 41005, "ip": "0.0.0.0", "key": "hmac-key",
        "transport": "tcp", "signature_scheme": "hmac-sha256", "kernel_name": "",
        "pid": 7, "pgid": 7, "comm_port": 41006, "kernel_id": kernel_id
    });
    let public = rsa::PrivateKey::from_pkcs8_pem(GATEWAY_PEM)
        .unwrap()
        .to_public_key();
    assert_eq!(response::public_key_base64(&public), l.public_key());
    encode_payload(
        &public,
        conn.to_string().as_bytes(),
        &rand::random(),
        &mut rand::rng(),
    )
}

async fn send(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
}

/// Sends `bytes` to the listener and waits for what `waiter` receives.
async fn delivered(l: &ResponseListener, waiter: &mut Waiter, bytes: &[u8]) -> ConnectionPayload {
    send(l.local_addr(), bytes).await;
    waiter.recv(Duration::from_secs(10)).await.unwrap()
}

/// Waits until `outcome` has been counted `n` times.
async fn counted(l: &ResponseListener, outcome: Outcome, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.counts().get(outcome) < n {
        assert!(
            Instant::now() < deadline,
            "{} never reached {n}: {:?}",
            outcome.label(),
            l.counts()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn local_ip_choice() {
    let ifs = |list: &[(&str, &str)]| -> Vec<(String, IpAddr)> {
        list.iter()
            .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
            .collect()
    };
    let p = |raw: &str| ProhibitedIps::parse(raw).unwrap();
    let machine = ifs(&[
        ("lo", "127.0.0.1"),
        ("docker0", "172.17.0.1"),
        ("eth0", "fe80::1"),
        ("eth0", "10.0.0.5"),
        ("eth1", "192.168.1.9"),
    ]);
    for (prohibited, want) in [
        ("", "172.17.0.1"),
        ("172.17.", "10.0.0.5"),
        ("172\\.17\\..*,10.0.0.5", "192.168.1.9"),
        // Matched at the start only.
        ("0.0.5", "172.17.0.1"),
        // Everything prohibited: the first, as upstream.
        ("1,ethernet,.*", "172.17.0.1"),
        (" 172.17. , 10. ", "192.168.1.9"),
        ("172.17.,,10.", "192.168.1.9"),
    ] {
        let chosen = choose_local_ip(&machine, &p(prohibited));
        assert_eq!(chosen, Some(want.parse().unwrap()), "{prohibited:?}");
    }
    let only_loopback = ifs(&[("lo", "127.0.0.1"), ("lo", "::1"), ("lo:1", "10.9.9.9")]);
    assert_eq!(choose_local_ip(&only_loopback, &p("")), None);
    assert!(ProhibitedIps::parse("10.(").unwrap_err().contains("10.("));
}

#[tokio::test]
async fn payload_before_recv_is_kept_and_delivered() {
    let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
    assert!(l.response_address().starts_with("127.0.0.1:"));
    assert_eq!(
        l.response_address(),
        format!("127.0.0.1:{}", l.local_addr().port())
    );
    let mut waiter = l.register("kid-early");
    send(l.local_addr(), &payload_for(&l, "kid-early")).await;
    counted(&l, Outcome::Delivered, 1).await;
    // Arrived before anyone waited: a zero timeout finds it.
    let p = waiter.recv(Duration::ZERO).await.unwrap();
    assert_eq!(p.kernel_id, "kid-early");
    assert_eq!((p.shell_port, p.comm_port), (41001, Some(41006)));
    assert_eq!(waiter.recv(Duration::ZERO).await, Err(WaitError::Received));
    // The connection file, with the pod's address.
    let info = into_connection_info(p, "10.244.1.7".parse().unwrap());
    assert_eq!(
        serde_json::to_value(info).unwrap(),
        json!({
            "ip": "10.244.1.7", "transport": "tcp", "shell_port": 41001, "iopub_port": 41002,
            "stdin_port": 41003, "control_port": 41004, "hb_port": 41005, "key": "hmac-key",
            "signature_scheme": "hmac-sha256", "kernel_name": ""
        })
    );
    assert_eq!(l.counts().accepted, 1);
}

#[tokio::test]
async fn recv_times_out_and_can_wait_again() {
    let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
    let mut waiter = l.register("kid-late");
    assert_eq!(
        waiter.recv(Duration::from_millis(20)).await,
        Err(WaitError::Timeout(Duration::from_millis(20)))
    );
    let addr = l.local_addr();
    let payload = payload_for(&l, "kid-late");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(addr, &payload).await;
    });
    let p = waiter.recv(Duration::from_secs(10)).await.unwrap();
    assert_eq!(p.kernel_id, "kid-late");
}

#[tokio::test]
async fn a_stalled_sender_delays_no_one() {
    let l = listener(local(MAX_PAYLOAD_BYTES, Duration::from_millis(1500))).await;
    let mut waiter = l.register("kid-b");
    // A sends half a payload and then nothing, keeping the connection open.
    let mut stalled = TcpStream::connect(l.local_addr()).await.unwrap();
    let a = payload_for(&l, "kid-a");
    stalled.write_all(&a[..a.len() / 2]).await.unwrap();
    // Several more stalled connections, to be sure none is served in line.
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(TcpStream::connect(l.local_addr()).await.unwrap());
    }
    let start = Instant::now();
    let p = delivered(&l, &mut waiter, &payload_for(&l, "kid-b")).await;
    assert_eq!(p.kernel_id, "kid-b");
    assert!(start.elapsed() < Duration::from_secs(1));
    // The stalled ones end at the read timeout, counted.
    counted(&l, Outcome::Timeout, 6).await;
    assert_eq!(l.counts().get(Outcome::Delivered), 1);
    drop((stalled, others));
}

#[tokio::test]
async fn oversize_garbage_and_unknown_ids_are_dropped_and_counted() {
    let l = listener(local(4096, READ_TIMEOUT)).await;
    let mut waiter = l.register("kid-wanted");
    // Oversize: cut off after the cap, whatever it is.
    let mut big = payload_for(&l, "kid-wanted");
    big.resize(10_000, b'A');
    {
        // The listener may reset the connection once the cap is passed: errors are fine.
        let mut s = TcpStream::connect(l.local_addr()).await.unwrap();
        let _ = s.write_all(&big).await;
        let _ = s.shutdown().await;
    }
    counted(&l, Outcome::Oversize, 1).await;
    // Garbage of every layer.
    send(l.local_addr(), b"hello").await;
    send(l.local_addr(), b"").await;
    send(l.local_addr(), b"eyJ2ZXJzaW9uIjogMn0=").await; // {"version": 2}
    counted(&l, Outcome::Undecodable, 3).await;
    // A valid payload nobody registered.
    send(l.local_addr(), &payload_for(&l, "kid-unknown")).await;
    counted(&l, Outcome::UnknownKernel, 1).await;
    // None of it reached the waiter; its own payload still does.
    assert!(matches!(
        waiter.recv(Duration::ZERO).await,
        Err(WaitError::Timeout(_))
    ));
    let p = delivered(&l, &mut waiter, &payload_for(&l, "kid-wanted")).await;
    assert_eq!(p.kernel_id, "kid-wanted");
    let c = l.counts();
    assert_eq!(c.accepted, 6);
    assert_eq!(
        Outcome::ALL.map(|o| c.get(o)),
        [1, 1, 0, 0, 3, 1],
        "delivered, oversize, timeout, read_error, undecodable, unknown_kernel"
    );
}

#[tokio::test]
async fn registrations_end_with_their_waiter() {
    let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
    let gone = l.register("kid-gone");
    drop(gone);
    send(l.local_addr(), &payload_for(&l, "kid-gone")).await;
    counted(&l, Outcome::UnknownKernel, 1).await;
    // Registering again replaces the earlier waiter; dropping the old one keeps the new.
    let mut first = l.register("kid-twice");
    let mut second = l.register("kid-twice");
    assert_eq!(first.recv(Duration::ZERO).await, Err(WaitError::Closed));
    drop(first);
    let p = delivered(&l, &mut second, &payload_for(&l, "kid-twice")).await;
    assert_eq!(p.kernel_id, "kid-twice");
    // Once the listener is gone, waiting ends.
    let mut orphan = l.register("kid-orphan");
    drop(l);
    assert_eq!(
        orphan.recv(Duration::from_secs(10)).await,
        Err(WaitError::Closed)
    );
}

/// Payloads PyCryptodome wrote (gateway-core's testdata): version 1 and legacy version 0,
/// which is tried over the waiting kernel ids.
#[tokio::test]
async fn python_written_payloads_are_routed() {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let kernel_id = vectors["kernel_id"].as_str().unwrap();
    let payload = |name: &str| {
        vectors["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["payload"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let l = listener(local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)).await;
    for name in [
        "python-launcher",
        "toree-launcher",
        "oaep-sha1",
        "legacy-v0",
    ] {
        let _other = l.register("ffffffff-0000-4000-8000-000000000000");
        let mut waiter = l.register(kernel_id);
        let p = delivered(&l, &mut waiter, &payload(name)).await;
        assert_eq!(p.kernel_id, kernel_id, "{name}");
    }
    // Encrypted for another gateway: rejected, and the waiter gets nothing.
    let mut waiter = l.register(kernel_id);
    send(l.local_addr(), &payload("other-gateway-key")).await;
    counted(&l, Outcome::Undecodable, 1).await;
    assert!(matches!(
        waiter.recv(Duration::ZERO).await,
        Err(WaitError::Timeout(_))
    ));
}

#[tokio::test]
async fn the_port_moves_on_when_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let settings = ResponseSettings {
        port,
        port_retries: 20,
        ..local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)
    };
    let l = listener(settings.clone()).await;
    let bound = l.local_addr().port();
    assert!(bound > port && bound <= port.saturating_add(20), "{bound}");
    assert!(l.response_address().ends_with(&format!(":{bound}")));
    let err = ResponseListener::bind(
        &ResponseSettings {
            port_retries: 0,
            ..settings
        },
        key(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ResponseError::NoPort { attempts: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("EG_RESPONSE_PORT"), "{err}");
}

#[tokio::test]
async fn addr_any_binds_everywhere_and_advertises_one_address() {
    let l = listener(ResponseSettings {
        addr_any: true,
        ..local(MAX_PAYLOAD_BYTES, READ_TIMEOUT)
    })
    .await;
    assert_eq!(l.local_addr().ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert!(l.response_address().starts_with("127.0.0.1:"));
}

#[test]
fn generated_keys_export_like_upstream() {
    let k = ResponseKey::generate().unwrap();
    assert_eq!(k.public_key().len(), 216);
    assert!(
        k.public_key()
            .starts_with("MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ")
    );
    assert!(!format!("{k:?}").contains("PrivateKey {"));
}
