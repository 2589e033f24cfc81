//! HTTPS for the API listener: the rustls server configuration built from `EG_CERTFILE`,
//! `EG_KEYFILE` and `EG_CLIENT_CA`, and a [`Listener`] that completes TLS handshakes
//! concurrently (a slow or silent client never holds up the others) before handing connections
//! to the server.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::serve::Listener;
use rustls::{
    RootCertStore, ServerConfig,
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

/// A problem with one of the files: the variable naming it, and what is wrong.
pub type FileError = (&'static str, String);

/// Reads and checks the files and builds the server configuration (HTTP/1.1; TLS 1.2 and 1.3).
/// Every problem found is returned, each against its variable.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Vec<FileError>> {
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
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![("EG_CERTFILE", format!("TLS setup: {e}"))])?;
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
