//! What the server knows of each connection ([`Peer`]: its address and, over TLS, the client's
//! certificate), given to every request as connect info, and the `EG_AUTHORIZED_ORIGIN` check
//! made on that certificate.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::TlsListener;

/// One connection's peer, as each of its requests sees it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Over TLS, the end-entity certificate the client presented (only requested, and checked
    /// against the CA, with `EG_CLIENT_CA`).
    pub cert: Option<Arc<CertificateDer<'static>>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, tls) = stream.io().get_ref();
        Self {
            addr: *stream.remote_addr(),
            cert: tls
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| Arc::new(cert.clone().into_owned())),
        }
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            cert: None,
        }
    }
}

/// The plain HTTP listener: accepted sockets get `TCP_NODELAY` (every kernel message crosses
/// them: no Nagle delay on any of them).
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    // Cancel-safe as the TCP listener's accept is (it retries failed accepts itself).
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

/// Reads `EG_AUTHORIZED_ORIGIN`: a host name (or an IP address) a client certificate must be
/// valid for.
pub fn parse_origin_name(raw: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(raw.trim().to_owned())
        .map_err(|_| "expected a host name (e.g. reverse.proxy.net) or an IP address".to_owned())
}

/// Whether `cert` (a client's end-entity certificate) is valid for `name`: as a server
/// certificate is checked, by its subjectAltName entries (wildcards included; the subject's
/// common name is not consulted).
pub fn cert_valid_for(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(name))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_names() {
        let cases: [(&str, Option<&str>); 7] = [
            ("localhost", Some("localhost")),
            (" reverse.proxy.net ", Some("reverse.proxy.net")),
            ("10.0.0.5", Some("10.0.0.5")),
            ("::1", Some("::1")),
            ("", None),
            ("bad name", None),
            ("https://proxy.net", None),
        ];
        for (raw, want) in cases {
            match (parse_origin_name(raw), want) {
                (Ok(got), Some(want)) => assert_eq!(got.to_str(), want, "{raw:?}"),
                (Err(e), None) => assert!(e.contains("host name"), "{raw:?}: {e}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A self-signed client certificate: CN cn-only.example; subjectAltName DNS:proxy.example,
    /// DNS:*.wild.example, IP:10.0.0.5.
    const CLIENT_SAN: &[u8] = include_bytes!("../tests/fixtures/client-san.pem");

    #[test]
    fn certificate_names() {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(CLIENT_SAN).unwrap();
        let cases = [
            ("proxy.example", true),
            ("PROXY.example", true),
            ("a.wild.example", true),
            ("10.0.0.5", true),
            ("wild.example", false),
            ("a.b.wild.example", false),
            ("other.example", false),
            ("cn-only.example", false),
            ("10.0.0.6", false),
        ];
        for (name, valid) in cases {
            let server_name = parse_origin_name(name).unwrap();
            assert_eq!(cert_valid_for(&cert, &server_name), valid, "{name}");
        }
    }

    #[test]
    fn what_is_not_a_certificate_is_valid_for_nothing() {
        let name = parse_origin_name("localhost").unwrap();
        assert!(!cert_valid_for(
            &CertificateDer::from(vec![0x30, 0x00]),
            &name
        ));
        assert!(!cert_valid_for(&CertificateDer::from(Vec::new()), &name));
    }
}
