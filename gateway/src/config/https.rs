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
