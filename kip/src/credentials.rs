//! Registry credentials from Kubernetes pull secrets (`.dockerconfigjson` or legacy `.dockercfg`
//! files), matched to image references the way kubelet's keyring matches them: host (with port),
//! `*.` wildcards per label, path prefixes, most specific entry first, Docker Hub aliases.

use std::{fmt, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use eg_common::ImageRef;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One set of credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth identity token (`identitytoken`), used instead of username/password when set.
    pub identity_token: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// A file that could not be read as Docker credentials.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CredentialsError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Host labels, possibly `*`, of the key (`["*", "example", "com"]`).
    host: Vec<String>,
    port: Option<String>,
    /// Path prefix (no leading or trailing `/`), possibly empty.
    path: String,
    credential: Credential,
}

/// Every credential of every configured file.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl Keyring {
    /// Reads the files in order; a file that is missing or malformed is an error naming it.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, CredentialsError> {
        Self::load_with(paths, |path| std::fs::read(path))
    }

    /// As [`Keyring::load`], reading each file with `read`.
    pub fn load_with(
        paths: &[impl AsRef<Path>],
        read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, CredentialsError> {
        let mut keyring = Self::default();
        for path in paths {
            let path = path.as_ref();
            let text = read(path).map_err(|e| CredentialsError {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            keyring.add_json(&text).map_err(|reason| CredentialsError {
                path: path.display().to_string(),
                reason,
            })?;
        }
        Ok(keyring)
    }

    /// Adds the entries of one `config.json` / `.dockerconfigjson` (`{"auths": {…}}`) or legacy
    /// `.dockercfg` (`{host: {…}}`) document.
    pub fn add_json(&mut self, text: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(top) = value else {
            return Err("expected a JSON object".to_owned());
        };
        let auths: Map<String, Value> = match top.get("auths") {
            Some(Value::Object(auths)) => auths.clone(),
            Some(_) => return Err("\"auths\" is not an object".to_owned()),
            // A config.json may hold only credHelpers etc.; the legacy form has hosts at the top.
            None if top.contains_key("credHelpers") || top.contains_key("credsStore") => Map::new(),
            // Settings only (psFormat, currentContext, detachKeys…): a config.json without
            // credentials, not a legacy file.
            None if top.values().any(|v| !v.is_object()) => Map::new(),
            None => top,
        };
        for (key, entry) in auths {
            let entry: AuthEntry =
                serde_json::from_value(entry).map_err(|e| format!("entry {key:?}: {e}"))?;
            let credential = credential_of(&entry).map_err(|e| format!("entry {key:?}: {e}"))?;
            let Some(credential) = credential else {
                continue;
            };
            let (host, port, path) = parse_key(&key);
            self.entries.push(Entry {
                host,
                port,
                path,
                credential,
            });
        }
        // Most specific first: longer host, then longer path (kubelet sorts keys likewise).
        self.entries.sort_by(|a, b| {
            (
                b.host.len(),
                b.path.len(),
                b.host.iter().filter(|l| *l != "*").count(),
            )
                .cmp(&(
                    a.host.len(),
                    a.path.len(),
                    a.host.iter().filter(|l| *l != "*").count(),
                ))
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for an image, if any entry matches its registry and repository.
    pub fn lookup(&self, image: &ImageRef) -> Option<&Credential> {
        let registry = canonical_host(image.registry());
        let (host, port) = split_port(&registry);
        let host: Vec<&str> = host.split('.').collect();
        self.entries
            .iter()
            .find(|e| {
                e.port.as_deref() == port
                    && e.host.len() == host.len()
                    && e.host.iter().zip(&host).all(|(pattern, label)| {
                        pattern == "*" || pattern.eq_ignore_ascii_case(label)
                    })
                    && path_has_prefix(image.repository(), &e.path)
            })
            .map(|e| &e.credential)
    }
}

fn credential_of(entry: &AuthEntry) -> Result<Option<Credential>, String> {
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| "\"auth\" is not base64".to_owned())?;
        let decoded = String::from_utf8(decoded).map_err(|_| "\"auth\" is not UTF-8".to_owned())?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| "\"auth\" is not base64 of user:password".to_owned())?;
        username = Some(u.to_owned());
        password = Some(p.to_owned());
    }
    let identity_token = entry.identitytoken.clone().filter(|t| !t.is_empty());
    if username.is_none() && password.is_none() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: username.unwrap_or_default(),
        password: password.unwrap_or_default(),
        identity_token,
    }))
}

/// `https://index.docker.io/v1/` → (["docker","io"], None, ""); `*.r.io:5000/team` → (["*","r","io"], Some("5000"), "team").
fn parse_key(key: &str) -> (Vec<String>, Option<String>, String) {
    let key = key.trim();
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    let (hostport, path) = without_scheme
        .split_once('/')
        .unwrap_or((without_scheme, ""));
    let hostport = canonical_host(hostport);
    let (host, port) = split_port(&hostport);
    let mut path = path.trim_matches('/').to_owned();
    // Docker Hub's legacy key carries the API version as its path.
    if host == "docker.io" && path == "v1" {
        path.clear();
    }
    (
        host.split('.').map(str::to_ascii_lowercase).collect(),
        port.map(str::to_owned),
        path,
    )
}

fn split_port(hostport: &str) -> (&str, Option<&str>) {
    match hostport.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (hostport, None),
    }
}

/// Docker Hub has several names; credentials for any of them serve `docker.io` images.
fn canonical_host(host: &str) -> String {
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

fn path_has_prefix(repository: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || repository == prefix
        || repository
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn keyring(json: &str) -> Keyring {
        let mut k = Keyring::default();
        k.add_json(json.as_bytes()).unwrap();
        k
    }

    fn user_for(k: &Keyring, image: &str) -> Option<String> {
        k.lookup(&ImageRef::parse(image).unwrap())
            .map(|c| c.username.clone())
    }

    #[test]
    fn matching_like_kubelet() {
        let k = keyring(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                "quay.io": {{"username": "quay", "password": "p"}},
                "quay.io/team": {{"username": "quay-team", "password": "p"}},
                "*.corp.example": {{"username": "wild", "password": "p"}},
                "reg.corp.example:5000": {{"username": "port", "password": "p"}},
                "http://127.0.0.1:5001": {{"username": "local", "password": "p"}}
            }}}}"#,
            hub = b64("hubuser:hubpass")
        ));
        let table = [
            ("python:3", Some("hubuser")),
            ("docker.io/elyra/kernel-py:1", Some("hubuser")),
            ("quay.io/x/y:1", Some("quay")),
            ("quay.io/team/y:1", Some("quay-team")),
            ("quay.io/teamster/y:1", Some("quay")),
            ("a.corp.example/x:1", Some("wild")),
            ("a.b.corp.example/x:1", None),
            ("reg.corp.example:5000/x:1", Some("port")),
            ("reg.corp.example/x:1", Some("wild")),
            ("127.0.0.1:5001/test/x:1", Some("local")),
            ("127.0.0.1:5000/test/x:1", None),
            ("ghcr.io/x:1", None),
        ];
        for (image, want) in table {
            assert_eq!(user_for(&k, image).as_deref(), want, "{image}");
        }
        let c = k.lookup(&ImageRef::parse("python").unwrap()).unwrap();
        assert_eq!(c.password, "hubpass");
        assert!(!format!("{c:?}").contains("hubpass"));
    }

    #[test]
    fn legacy_dockercfg_and_identity_tokens() {
        let k = keyring(&format!(
            r#"{{"myreg:5000": {{"auth": "{a}", "email": "x@y"}},
                "token.io": {{"identitytoken": "tok"}}}}"#,
            a = b64("u:p:with:colons")
        ));
        let c = k.lookup(&ImageRef::parse("myreg:5000/x").unwrap()).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("u", "p:with:colons")
        );
        let c = k.lookup(&ImageRef::parse("token.io/x").unwrap()).unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("tok"));
    }

    #[test]
    fn docker_settings_without_credentials_are_no_legacy_file() {
        for text in [
            r#"{"psFormat": "table {{.ID}}"}"#,
            r#"{"currentContext": "default", "detachKeys": "ctrl-x"}"#,
        ] {
            let mut k = Keyring::default();
            k.add_json(text.as_bytes()).unwrap();
            assert!(
                k.lookup(&ImageRef::parse("myreg:5000/x").unwrap())
                    .is_none()
            );
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("[1]", "expected a JSON object"),
            ("nope", "not JSON"),
            (r#"{"auths": []}"#, "\"auths\" is not an object"),
            (
                r#"{"auths": {"r.io": {"auth": "***"}}}"#,
                "entry \"r.io\": \"auth\" is not base64",
            ),
        ];
        for (json, want) in cases {
            let err = Keyring::default().add_json(json.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
        let err = Keyring::load(&["/nonexistent/kip/config.json"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/kip/config.json: "),
            "{err}"
        );
        // Credential helpers only: nothing to use, not an error.
        assert!(keyring(r#"{"credHelpers": {"gcr.io": "gcloud"}}"#).is_empty());
    }
}
