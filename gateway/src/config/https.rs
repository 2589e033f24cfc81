//! HTTPS settings from the certificate, key, client-CA and protocol variables.

use super::*;

/// HTTPS when a certificate and its key are given (both or neither; a client CA needs them).
/// Files that cannot be read or parsed, or a key that does not fit the certificate, are errors
/// against their variable. Empty values count as unset. `ssl_version` (a Python `ssl` protocol
/// number; unset: TLS 1.2 and 1.3) is read only when HTTPS is asked for, as upstream uses it
/// only then.
pub(super) fn check_tls(
    c: &mut Checker,
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    ssl_version: Option<String>,
) -> Option<Arc<rustls::ServerConfig>> {
    let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let (cert, key, client_ca) = (non_empty(cert), non_empty(key), non_empty(client_ca));
    // A refused version is recorded and the files are still checked, so that every problem is
    // listed at once.
    let versions = match non_empty(ssl_version).filter(|_| cert.is_some() || key.is_some()) {
        Some(raw) => c
            .check(
                "EG_SSL_VERSION",
                &raw,
                TlsVersions::from_python_protocol(&raw),
            )
            .unwrap_or_default(),
        None => TlsVersions::default(),
    };
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if let Some(ca) = client_ca {
                c.check::<()>(
                    "EG_CLIENT_CA",
                    &ca,
                    Err("client certificates need HTTPS: set EG_CERTFILE and EG_KEYFILE".into()),
                );
            }
            return None;
        }
        (Some(cert), None) => {
            c.check::<()>(
                "EG_CERTFILE",
                &cert,
                Err("EG_KEYFILE must be set as well".into()),
            );
            return None;
        }
        (None, Some(key)) => {
            c.check::<()>(
                "EG_KEYFILE",
                &key,
                Err("EG_CERTFILE must be set as well".into()),
            );
            return None;
        }
    };
    let files = TlsFiles {
        cert: PathBuf::from(&cert),
        key: PathBuf::from(&key),
        client_ca: client_ca.as_deref().map(PathBuf::from),
    };
    match tls::server_config(&files, versions) {
        Ok(config) => Some(config),
        Err(errors) => {
            for (var, problem) in errors {
                let raw = match var {
                    "EG_CERTFILE" => &cert,
                    "EG_KEYFILE" => &key,
                    _ => client_ca.as_deref().unwrap_or_default(),
                };
                c.check::<()>(var, raw, Err(problem));
            }
            None
        }
    }
}

/// `EG_AUTHORIZED_ORIGIN`: empty is unset; a name needs client certificates (HTTPS with
/// `EG_CLIENT_CA`, `client_certs`) to check it against.
pub(super) fn parse_authorized_origin(
    raw: &str,
    client_certs: bool,
) -> Result<Option<rustls::pki_types::ServerName<'static>>, String> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let name = crate::peer::parse_origin_name(raw)?;
    if !client_certs {
        return Err(
            "the origin is checked on client certificates: set EG_CLIENT_CA (with \
            EG_CERTFILE and EG_KEYFILE)"
                .to_owned(),
        );
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw value, whether client certificates are requested, and the name or the problem.
    type Case = (
        &'static str,
        bool,
        Result<Option<&'static str>, &'static str>,
    );

    #[test]
    fn authorized_origin() {
        let cases: [Case; 6] = [
            ("", false, Ok(None)),
            ("  ", true, Ok(None)),
            ("proxy.example", true, Ok(Some("proxy.example"))),
            ("10.0.0.5", true, Ok(Some("10.0.0.5"))),
            ("proxy.example", false, Err("set EG_CLIENT_CA")),
            ("not a name", true, Err("expected a host name")),
        ];
        for (raw, client_certs, want) in cases {
            let got = parse_authorized_origin(raw, client_certs);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got.as_ref().map(|n| n.to_str()).as_deref(), want, "{raw:?}")
                }
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw:?}: {got}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
