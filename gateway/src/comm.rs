//! The comm port: the remote launcher's listener for signals and shutdown (eg-behaviour.md
//! §4.5). One TCP connection per request carrying one JSON object; the launcher reads to EOF.
//!
//! Unlike upstream, which logs most failures and reports success, every failure is returned
//! (with the address), so an interrupt that was not delivered can be told apart.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Upstream's `EG_SOCKET_TIMEOUT` default (5 ms): enough on one machine, tight across a cluster
/// network.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5);

/// SIGINT, the default interrupt.
pub const SIGINT: i32 = 2;

/// Comm-port settings (`EG_SOCKET_TIMEOUT`, `EG_ALTERNATE_SIGINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommSettings {
    /// How long connecting and sending one request may take.
    pub timeout: Duration,
    /// The gateway-wide interrupt signal; a kernelspec's own `EG_ALTERNATE_SIGINT` wins.
    pub alternate_sigint: Option<i32>,
}

impl Default for CommSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            alternate_sigint: None,
        }
    }
}

impl CommSettings {
    /// The signal an interrupt sends: the kernelspec env's `EG_ALTERNATE_SIGINT` when it names
    /// a signal (else a warning and SIGINT, as upstream), then the gateway's, then SIGINT.
    pub fn interrupt_signal(&self, spec_alternate: Option<&str>) -> i32 {
        match spec_alternate.map(str::trim).filter(|s| !s.is_empty()) {
            Some(name) => signal_number(name).unwrap_or_else(|| {
                tracing::warn!(
                    value = name,
                    "the kernelspec's EG_ALTERNATE_SIGINT names no signal; using SIGINT"
                );
                SIGINT
            }),
            None => self.alternate_sigint.unwrap_or(SIGINT),
        }
    }
}

/// Linux signal numbers by name (the numbering kernel pods use): `SIGUSR2` (as upstream's
/// `getattr(signal, name)`), also without `SIG` and in any case, or a number 1-64.
pub fn signal_number(name: &str) -> Option<i32> {
    const SIGNALS: [(&str, i32); 36] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("IOT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STKFLT", 16),
        ("CHLD", 17),
        ("CLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("POLL", 29),
        ("PWR", 30),
        ("SYS", 31),
        ("RTMIN", 34),
        ("RTMAX", 64),
    ];
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
}

/// Why a request did not reach the launcher.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// Nothing listens: the launcher (and likely its kernel) is gone.
    #[error("comm port {addr}: connection refused (the kernel launcher is not listening)")]
    Refused { addr: SocketAddr },
    #[error("comm port {addr}: {step} did not complete within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        step: &'static str,
        timeout: Duration,
    },
    #[error("comm port {addr}: {step} failed: {source}")]
    Io {
        addr: SocketAddr,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Asks the launcher at `addr` to send signal `signum` to its kernel: `{"signum": N}`.
pub async fn send_signal(
    addr: SocketAddr,
    signum: i32,
    timeout: Duration,
) -> Result<(), CommError> {
    request(
        addr,
        format!("{{\"signum\": {signum}}}").as_bytes(),
        false,
        timeout,
    )
    .await
}

/// Asks the launcher at `addr` to stop its listener: `{"shutdown": 1}`, half-closed (SHUT_WR)
/// before the close, as upstream.
pub async fn shutdown(addr: SocketAddr, timeout: Duration) -> Result<(), CommError> {
    request(addr, b"{\"shutdown\": 1}", true, timeout).await
}

/// One connection, one JSON object, then close (the close is the launcher's EOF). `timeout`
/// bounds the connect and, separately, the send.
async fn request(
    addr: SocketAddr,
    body: &[u8],
    half_close: bool,
    timeout: Duration,
) -> Result<(), CommError> {
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(CommError::Timeout {
                addr,
                step: "connect",
                timeout,
            });
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(CommError::Refused { addr });
        }
        Ok(Err(source)) => {
            return Err(CommError::Io {
                addr,
                step: "connect",
                source,
            });
        }
        Ok(Ok(stream)) => stream,
    };
    let send = async {
        stream.write_all(body).await?;
        if half_close {
            stream.shutdown().await?;
        }
        io::Result::Ok(())
    };
    match tokio::time::timeout(timeout, send).await {
        Err(_) => Err(CommError::Timeout {
            addr,
            step: "send",
            timeout,
        }),
        Ok(Err(source)) => Err(CommError::Io {
            addr,
            step: "send",
            source,
        }),
        Ok(Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{io::AsyncReadExt, net::TcpListener};

    #[test]
    fn signal_names() {
        let table: [(&str, Option<i32>); 12] = [
            ("SIGINT", Some(2)),
            ("SIGUSR2", Some(12)),
            ("sigusr1", Some(10)),
            ("TERM", Some(15)),
            (" SIGKILL ", Some(9)),
            ("SIGRTMIN", Some(34)),
            ("12", Some(12)),
            ("0", None),
            ("65", None),
            ("SIGFOO", None),
            ("", None),
            ("SIG", None),
        ];
        for (name, want) in table {
            assert_eq!(signal_number(name), want, "{name:?}");
        }
    }

    #[test]
    fn interrupt_signal_precedence() {
        let plain = CommSettings::default();
        let usr2 = CommSettings {
            alternate_sigint: Some(12),
            ..CommSettings::default()
        };
        assert_eq!(plain.interrupt_signal(None), SIGINT);
        assert_eq!(usr2.interrupt_signal(None), 12);
        assert_eq!(usr2.interrupt_signal(Some("")), 12);
        assert_eq!(plain.interrupt_signal(Some("SIGUSR1")), 10);
        assert_eq!(usr2.interrupt_signal(Some("SIGQUIT")), 3);
        // A spec value that names no signal: SIGINT, as upstream.
        assert_eq!(usr2.interrupt_signal(Some("SIGNOPE")), SIGINT);
    }

    /// A launcher's listener: one accepted connection read to EOF, per request.
    async fn launcher() -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = String::new();
                s.read_to_string(&mut buf).await.unwrap();
                got.push(buf);
            }
            got
        });
        (addr, task)
    }

    #[tokio::test]
    async fn signal_and_shutdown_reach_the_launcher() {
        let (addr, task) = launcher().await;
        let t = Duration::from_secs(5);
        send_signal(addr, 2, t).await.unwrap();
        shutdown(addr, t).await.unwrap();
        let got = task.await.unwrap();
        let parsed: Vec<serde_json::Value> = got
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(parsed[0], serde_json::json!({"signum": 2}));
        assert_eq!(parsed[1], serde_json::json!({"shutdown": 1}));
        assert_eq!(got[0], r#"{"signum": 2}"#);
    }

    #[tokio::test]
    async fn refused_is_reported_with_the_address() {
        // A port that was just free: nothing listens there.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let err = send_signal(addr, 2, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, CommError::Refused { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        let err = shutdown(addr, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, CommError::Refused { .. }), "{err}");
    }

    #[tokio::test]
    async fn connect_timeout_is_reported() {
        // A listener that never accepts, with its accept queue filled: further SYNs are dropped,
        // so a connect neither succeeds nor is refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let full = socket.listen(0).unwrap();
        let addr = full.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
            {
                fillers.push(s);
            }
        }
        let err = send_signal(addr, 2, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CommError::Timeout {
                    step: "connect",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        drop((full, fillers));
    }
}
