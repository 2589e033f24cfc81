//! HTTPS for the API listener: the rustls server configuration built from `EG_CERTFILE`,
//! `EG_KEYFILE`, `EG_CLIENT_CA` and `EG_SSL_VERSION`, and a [`Listener`] that completes TLS
//! handshakes concurrently (a slow or silent client never holds up the others) before handing
//! connections to the server.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::serve::Listener;
use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::debug;

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS files as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// The TLS versions the server offers (`EG_SSL_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 only: Python's `PROTOCOL_TLSv1_2` (5), upstream's default.
    Tls12,
    /// TLS 1.2 and 1.3: Python's `PROTOCOL_TLS` (2) and `PROTOCOL_TLS_SERVER` (17); the default
    /// here when `EG_SSL_VERSION` is unset.
    #[default]
    Tls12And13,
}

/// The advice every refused `EG_SSL_VERSION` ends with.
const SSL_VERSION_ADVICE: &str = "use 5 (TLS 1.2) or 2 (TLS 1.2 and 1.3)";

impl TlsVersions {
    /// Reads an integer Python `ssl` protocol constant, as upstream's `EG_SSL_VERSION` is. TLS 1.0
    /// and 1.1 (3, 4) are refused, and so are client-side (16) and unknown protocols.
    pub fn from_python_protocol(raw: &str) -> Result<Self, String> {
        let Ok(n) = raw.trim().parse::<i64>() else {
            return Err(format!(
                "expected a Python ssl protocol number: {SSL_VERSION_ADVICE}"
            ));
        };
        match n {
            5 => Ok(Self::Tls12),
            2 | 17 => Ok(Self::Tls12And13),
            3 | 4 => Err(format!(
                "TLS 1.0 and 1.1 are not offered; {SSL_VERSION_ADVICE}"
            )),
            16 => Err(format!(
                "16 (PROTOCOL_TLS_CLIENT) is a client protocol; {SSL_VERSION_ADVICE}"
            )),
            n => Err(format!(
                "{n} is not a server protocol Python's ssl module defines; {SSL_VERSION_ADVICE}"
            )),
        }
    }

    fn protocol_versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
        match self {
            Self::Tls12 => TLS12,
            Self::Tls12And13 => rustls::ALL_VERSIONS,
        }
    }
}

/// A problem with one of the files: the variable naming it, and what is wrong.
pub type FileError = (&'static str, String);

/// Reads and checks the files and builds the server configuration (HTTP/1.1; the TLS versions
/// `versions` names). Every problem found is returned, each against its variable.
pub fn server_config(
    files: &TlsFiles,
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, Vec<FileError>> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut errors = Vec::new();
    let certs = read_pem("EG_CERTFILE", &files.cert, |pem| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate file: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in the file".to_owned());
        }
        Ok(certs)
    })
    .map_err(|e| errors.push(e))
    .ok();
    let key = read_pem("EG_KEYFILE", &files.key, |pem| {
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no PEM private key: {e}"))
    })
    .map_err(|e| errors.push(e))
    .ok();
    let verifier = files.client_ca.as_deref().and_then(|path| {
        read_pem("EG_CLIENT_CA", path, |pem| {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not a PEM certificate file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("no certificate in the file".to_owned());
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("unusable CA certificates: {e}"))
        })
        .map_err(|e| errors.push(e))
        .ok()
    });
    let (Some(certs), Some(key)) = (certs, key) else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.protocol_versions())
        .map_err(|e| vec![("EG_SSL_VERSION", format!("TLS setup: {e}"))])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| vec![("EG_KEYFILE", format!("does not fit EG_CERTFILE: {e}"))])?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem<T>(
    var: &'static str,
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, FileError> {
    let pem = std::fs::read(path).map_err(|e| (var, format!("cannot read: {e}")))?;
    parse(&pem).map_err(|problem| (var, problem))
}

/// Accepts TCP connections (with `TCP_NODELAY`), runs their TLS handshakes side by side and
/// yields those that complete. Dropping it abandons handshakes under way.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe (the server drops it at shutdown): accepting and joining both are, and
    // handshakes under way stay in the set.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    debug!(%addr, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    // Out of descriptors and the like: as axum's own listener does, pause and
                    // retry rather than spin.
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_protocol_numbers() {
        use TlsVersions::*;
        let cases: [(&str, Result<TlsVersions, &str>); 12] = [
            ("5", Ok(Tls12)),
            (" 5 ", Ok(Tls12)),
            ("2", Ok(Tls12And13)),
            ("17", Ok(Tls12And13)),
            ("3", Err("TLS 1.0 and 1.1 are not offered")),
            ("4", Err("TLS 1.0 and 1.1 are not offered")),
            ("16", Err("client protocol")),
            ("0", Err("not a server protocol")),
            ("1", Err("not a server protocol")),
            ("-5", Err("not a server protocol")),
            ("TLSv1_2", Err("expected a Python ssl protocol number")),
            ("", Err("expected a Python ssl protocol number")),
        ];
        for (raw, want) in cases {
            match (TlsVersions::from_python_protocol(raw), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw:?}"),
                (Err(got), Err(want)) => {
                    assert!(got.contains(want), "{raw:?}: {got}");
                    assert!(got.contains(SSL_VERSION_ADVICE), "{raw:?}: {got}");
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn versions_offered() {
        assert_eq!(TlsVersions::default(), TlsVersions::Tls12And13);
        let versions = |v: TlsVersions| -> Vec<rustls::ProtocolVersion> {
            v.protocol_versions().iter().map(|p| p.version).collect()
        };
        assert_eq!(
            versions(TlsVersions::Tls12),
            [rustls::ProtocolVersion::TLSv1_2]
        );
        assert_eq!(
            versions(TlsVersions::Tls12And13),
            [
                rustls::ProtocolVersion::TLSv1_3,
                rustls::ProtocolVersion::TLSv1_2
            ]
        );
    }
}
