//! What the server knows of each connection ([`Peer`]: its address and, over TLS, the client's
//! certificate), given to every request as connect info; the `EG_AUTHORIZED_ORIGIN` check made on
//! that certificate; and the client address logged ([`client_ip`], `EG_TRUST_XHEADERS`).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::connect_info::Connected,
    http::HeaderMap,
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

/// The client's address as upstream's web server (tornado) records it: the peer's, or with
/// `trust_xheaders` (`EG_TRUST_XHEADERS`, for a gateway behind a proxy) `X-Real-Ip`, else the last
/// entry of `X-Forwarded-For` (the one the nearest proxy added). Repeated headers count as one
/// comma list; a header value that is not an IP address is ignored.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trust_xheaders: bool,
) -> Option<IpAddr> {
    if !trust_xheaders {
        return peer;
    }
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let named = match joined("x-real-ip") {
        Some(real) => Some(real),
        None => joined("x-forwarded-for")
            .map(|list| list.rsplit(',').next().unwrap_or_default().to_owned()),
    };
    named
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the headers are trusted, the request's headers, and the address expected.
    type Case = (
        bool,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
    );

    #[test]
    fn client_addresses() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let cases: [Case; 12] = [
            (false, &[], Some("10.1.1.1")),
            (false, &[("x-real-ip", "1.2.3.4")], Some("10.1.1.1")),
            (true, &[], Some("10.1.1.1")),
            (true, &[("x-real-ip", "1.2.3.4")], Some("1.2.3.4")),
            (true, &[("X-Real-Ip", " 2001:db8::1 ")], Some("2001:db8::1")),
            (
                true,
                &[("x-forwarded-for", "1.1.1.1, 2.2.2.2")],
                Some("2.2.2.2"),
            ),
            (
                true,
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "3.3.3.3"),
                ],
                Some("3.3.3.3"),
            ),
            (
                true,
                &[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "4.4.4.4")],
                Some("4.4.4.4"),
            ),
            (
                true,
                &[("x-forwarded-for", "1.1.1.1, unknown")],
                Some("10.1.1.1"),
            ),
            (true, &[("x-real-ip", "proxy.example")], Some("10.1.1.1")),
            // X-Real-Ip wins even when it is not an address (tornado's order).
            (
                true,
                &[("x-real-ip", "bad"), ("x-forwarded-for", "5.5.5.5")],
                Some("10.1.1.1"),
            ),
            (true, &[("x-forwarded-for", "")], Some("10.1.1.1")),
        ];
        for (trust, headers, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let want = want.map(|w| w.parse::<IpAddr>().unwrap());
            assert_eq!(
                client_ip(Some(peer), &map, trust),
                want,
                "{trust} {headers:?}"
            );
        }
        let mut map = HeaderMap::new();
        map.insert("x-real-ip", "1.2.3.4".parse().unwrap());
        assert_eq!(client_ip(None, &map, false), None);
        assert_eq!(client_ip(None, &map, true), "1.2.3.4".parse().ok());
    }

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
