//! Kernelspec discovery and the listing served from it.
//!
//! A scan reads every `<dir>/<name>/kernel.json` of the search directories (first hit per
//! lower-cased name wins, as Jupyter does) into a [`Listing`]: the loaded specs plus the serialized
//! `GET /api/kernelspecs` body and its ETag, computed once per scan so that serving it costs no
//! serialization.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use eg_common::kernelspec::{KernelSpec, KernelSpecEntry, KernelSpecsResponse};
use serde_json::Value;

/// What shapes the listing besides the files: fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct ListingOptions {
    /// Starts and ends with `/`.
    pub base_url: String,
    pub default_kernel_name: String,
    /// `None`: every kernelspec is listed.
    pub allowed: Option<Vec<String>>,
    /// `EG_AUTHORIZED_USERS`, split on commas as upstream does (empty: no global list).
    pub authorized_users: Vec<String>,
    /// `EG_UNAUTHORIZED_USERS` (upstream's default: `root`).
    pub unauthorized_users: Vec<String>,
}

impl ListingOptions {
    /// Upstream's `?user=` rule: hidden when the user is in the spec's
    /// `metadata.process_proxy.config.unauthorized_users` or the global unauthorized list; or,
    /// when the spec has `authorized_users`, not in it; or, when it has none, not in a non-empty
    /// global authorized list. The per-spec lists are comma-separated strings tested with
    /// substring semantics (as upstream: `bob` matches `bobby`), or JSON arrays.
    pub fn user_allowed(&self, spec: &KernelSpec, user: &str) -> bool {
        let config = spec
            .metadata
            .get("process_proxy")
            .and_then(|p| p.get("config"));
        let contains = |list: &Value| match list {
            Value::String(s) => s.contains(user),
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(user)),
            Value::Object(map) => map.contains_key(user),
            _ => false,
        };
        if config
            .and_then(|c| c.get("unauthorized_users"))
            .is_some_and(contains)
        {
            return false;
        }
        if self.unauthorized_users.iter().any(|u| u == user) {
            return false;
        }
        match config.and_then(|c| c.get("authorized_users")) {
            None => {
                self.authorized_users.is_empty() || self.authorized_users.iter().any(|u| u == user)
            }
            Some(list) => !truthy(list) || contains(list),
        }
    }

    fn allowed(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == name))
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// One kernelspec read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    /// Its directory (the resource dir).
    pub dir: PathBuf,
    pub spec: KernelSpec,
    /// Resource files: (key, file name), e.g. `("logo-64x64", "logo-64x64.png")`.
    pub resources: Vec<(String, String)>,
}

impl LoadedSpec {
    /// The REST model of this spec under `name` (upstream uses the name as requested).
    pub fn entry(&self, name: &str, base_url: &str) -> KernelSpecEntry {
        KernelSpecEntry {
            name: name.to_owned(),
            spec: self.spec.clone(),
            resources: self
                .resources
                .iter()
                .map(|(key, file)| (key.clone(), format!("{base_url}kernelspecs/{name}/{file}")))
                .collect(),
        }
    }
}

/// A kernelspec directory that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct LoadError {
    /// The `kernel.json` file.
    pub file: PathBuf,
    pub reason: String,
}

/// The state of the kernelspec directories at one scan, and the listing body served from it.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Every loaded spec by lower-cased name (the allowed list does not apply: upstream's by-name
    /// lookups ignore it too).
    pub specs: BTreeMap<String, Arc<LoadedSpec>>,
    /// The `GET /api/kernelspecs` body.
    pub body: Bytes,
    /// Strong ETag of `body`, quoted.
    pub etag: String,
    /// Kernelspecs in the listing (after the allowed filter).
    pub listed: usize,
}

impl Listing {
    /// Builds the listing from loaded specs.
    pub fn build(specs: BTreeMap<String, Arc<LoadedSpec>>, options: &ListingOptions) -> Self {
        let (body, etag, listed) = render(&specs, options, None);
        Self {
            specs,
            body,
            etag,
            listed,
        }
    }

    /// The listing as `?user=USER` sees it (upstream's user filter), with its ETag; without a
    /// user, the prebuilt body.
    pub fn for_user(&self, options: &ListingOptions, user: Option<&str>) -> (Bytes, String) {
        match user.filter(|u| !u.is_empty()) {
            None => (self.body.clone(), self.etag.clone()),
            Some(user) => {
                let (body, etag, _) = render(&self.specs, options, Some(user));
                (body, etag)
            }
        }
    }

    /// An empty listing (before the first scan).
    pub fn empty(options: &ListingOptions) -> Self {
        Self::build(BTreeMap::new(), options)
    }
}

/// Serializes the listing (allowed list and optional user filter applied): body, ETag, count.
fn render(
    specs: &BTreeMap<String, Arc<LoadedSpec>>,
    options: &ListingOptions,
    user: Option<&str>,
) -> (Bytes, String, usize) {
    let kernelspecs: BTreeMap<String, KernelSpecEntry> = specs
        .iter()
        .filter(|(name, _)| options.allowed(name))
        .filter(|(_, spec)| user.is_none_or(|u| options.user_allowed(&spec.spec, u)))
        .map(|(name, spec)| (name.clone(), spec.entry(name, &options.base_url)))
        .collect();
    let listed = kernelspecs.len();
    let response = KernelSpecsResponse {
        default: Some(options.default_kernel_name.clone()),
        kernelspecs,
    };
    let body = serde_json::to_vec(&response).expect("the listing serializes");
    let etag = format!("\"{:016x}\"", fnv1a(&body));
    (Bytes::from(body), etag, listed)
}

/// FNV-1a, 64 bits: a stable fingerprint of the body for the ETag.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads every kernelspec in `dirs` (first hit per lower-cased name wins). Directories that do not
/// exist are skipped; specs that fail to load are returned as errors, the others are loaded.
pub fn scan(dirs: &[PathBuf]) -> (BTreeMap<String, Arc<LoadedSpec>>, Vec<LoadError>) {
    let mut specs = BTreeMap::new();
    let mut errors = Vec::new();
    // A name found earlier hides later ones even when it fails to load, as in Jupyter.
    let mut seen = std::collections::BTreeSet::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: BTreeMap<String, PathBuf> = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.join("kernel.json").is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_lowercase();
            here.insert(name, path);
        }
        for (name, path) in here {
            if !seen.insert(name.clone()) {
                continue;
            }
            match load(&path) {
                Ok(spec) => {
                    specs.insert(name, Arc::new(spec));
                }
                Err(e) => errors.push(e),
            }
        }
    }
    (specs, errors)
}

/// Loads one kernelspec directory: `kernel.json` as jupyter_client normalises it, and its
/// resource files.
pub fn load(dir: &Path) -> Result<LoadedSpec, LoadError> {
    let file = dir.join("kernel.json");
    let error = |reason: String| LoadError {
        file: file.clone(),
        reason,
    };
    let text = std::fs::read(&file).map_err(|e| error(format!("cannot read: {e}")))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| error(format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(error("not a JSON object".to_owned()));
    }
    let mut spec: KernelSpec =
        serde_json::from_value(value).map_err(|e| error(format!("invalid kernelspec: {e}")))?;
    // jupyter_client's interrupt_mode is a case-insensitive enum.
    spec.interrupt_mode = match spec.interrupt_mode.to_ascii_lowercase().as_str() {
        m @ ("signal" | "message") => m.to_owned(),
        other => {
            return Err(error(format!(
                "invalid kernelspec: interrupt_mode {other:?}: expected \"signal\" or \"message\""
            )));
        }
    };
    Ok(LoadedSpec {
        dir: dir.to_path_buf(),
        spec,
        resources: resources(dir),
    })
}

/// `kernel.js` and `kernel.css` under their file names; every `logo-*` under its name without the
/// extension.
fn resources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for fixed in ["kernel.js", "kernel.css"] {
        if dir.join(fixed).exists() {
            out.push((fixed.to_owned(), fixed.to_owned()));
        }
    }
    let mut logos: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("logo-"))
        .collect();
    logos.sort();
    for file in logos {
        let key = match file.rfind('.') {
            Some(dot) => file[..dot].to_owned(),
            None => file.clone(),
        };
        out.push((key, file));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn options() -> ListingOptions {
        ListingOptions {
            base_url: "/".into(),
            default_kernel_name: "python_docker".into(),
            allowed: None,
            authorized_users: vec![],
            unauthorized_users: vec!["root".into()],
        }
    }

    #[test]
    fn user_filter_follows_upstream() {
        let spec = |config: Value| -> KernelSpec {
            serde_json::from_value(json!({"metadata": {"process_proxy": {"config": config}}}))
                .unwrap()
        };
        let o = options();
        let open = spec(json!({}));
        assert!(o.user_allowed(&open, "alice"));
        assert!(
            !o.user_allowed(&open, "root"),
            "global unauthorized default"
        );
        let deny = spec(json!({"unauthorized_users": "bobby,carol"}));
        assert!(!o.user_allowed(&deny, "bob"), "substring semantics");
        assert!(o.user_allowed(&deny, "alice"));
        let only = spec(json!({"authorized_users": "alice"}));
        assert!(o.user_allowed(&only, "alice"));
        assert!(!o.user_allowed(&only, "dave"));
        assert!(o.user_allowed(&spec(json!({"authorized_users": ""})), "dave"));
        let global = ListingOptions {
            authorized_users: vec!["alice".into()],
            ..options()
        };
        assert!(!global.user_allowed(&open, "dave"));
        assert!(global.user_allowed(&open, "alice"));
        // A spec list takes precedence over the global authorized list.
        assert!(global.user_allowed(&spec(json!({"authorized_users": "dave"})), "dave"));
    }

    #[test]
    fn scan_normalises_like_jupyter_client() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(
            a.path(),
            "Python_K8s/kernel.json",
            r#"{"argv":["python"],"display_name":"P","language":"python",
               "metadata":{"process_proxy":{"config":{"image_name":"x:1"}}},"extra":1}"#,
        );
        write(a.path(), "Python_K8s/logo-64x64.png", "png");
        write(a.path(), "Python_K8s/logo-svg", "svg");
        write(a.path(), "Python_K8s/kernel.css", "css");
        write(a.path(), "bad/kernel.json", "{nope");
        write(a.path(), "notaspec/readme", "x");
        write(
            b.path(),
            "python_k8s/kernel.json",
            r#"{"argv":["shadowed"],"display_name":"S"}"#,
        );
        write(
            b.path(),
            "r/kernel.json",
            r#"{"argv":["R"],"interrupt_mode":"Message"}"#,
        );
        let (specs, errors) = scan(&[
            a.path().to_path_buf(),
            PathBuf::from("/nonexistent/kernels"),
            b.path().to_path_buf(),
        ]);
        assert_eq!(specs.keys().collect::<Vec<_>>(), ["python_k8s", "r"]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("bad/kernel.json"),
            "{}",
            errors[0]
        );
        let listing = Listing::build(specs, &options());
        let body: Value = serde_json::from_slice(&listing.body).unwrap();
        assert_eq!(
            body,
            json!({"default": "python_docker", "kernelspecs": {
                "python_k8s": {"name": "python_k8s", "spec": {"argv": ["python"], "env": {},
                    "display_name": "P", "language": "python", "interrupt_mode": "signal",
                    "metadata": {"process_proxy": {"config": {"image_name": "x:1"}}}},
                    "resources": {"kernel.css": "/kernelspecs/python_k8s/kernel.css",
                        "logo-64x64": "/kernelspecs/python_k8s/logo-64x64.png",
                        "logo-svg": "/kernelspecs/python_k8s/logo-svg"}},
                "r": {"name": "r", "spec": {"argv": ["R"], "env": {}, "display_name": "",
                    "language": "", "interrupt_mode": "message", "metadata": {}},
                    "resources": {}}
            }})
        );
        assert_eq!(listing.listed, 2);
    }

    #[test]
    fn allowed_filters_the_listing_and_etag_follows_the_body() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "one/kernel.json", r#"{"argv":[]}"#);
        write(a.path(), "two/kernel.json", r#"{"argv":[]}"#);
        let (specs, _) = scan(&[a.path().to_path_buf()]);
        let all = Listing::build(specs.clone(), &options());
        let again = Listing::build(specs.clone(), &options());
        assert_eq!(all.etag, again.etag);
        let some = Listing::build(
            specs,
            &ListingOptions {
                allowed: Some(vec!["two".into()]),
                ..options()
            },
        );
        assert_ne!(all.etag, some.etag);
        assert_eq!(some.listed, 1);
        assert_eq!(some.specs.len(), 2, "by-name lookups still see every spec");
    }

    #[test]
    fn invalid_fields_name_the_file() {
        let a = tempfile::tempdir().unwrap();
        write(
            a.path(),
            "m/kernel.json",
            r#"{"argv":[],"interrupt_mode":"x"}"#,
        );
        write(a.path(), "n/kernel.json", r#"{"argv":"python"}"#);
        write(a.path(), "o/kernel.json", r#"[1]"#);
        let (specs, errors) = scan(&[a.path().to_path_buf()]);
        assert!(specs.is_empty());
        assert_eq!(errors.len(), 3);
        assert!(
            errors[0]
                .to_string()
                .contains("m/kernel.json: invalid kernelspec: interrupt_mode")
        );
        assert!(errors[1].to_string().contains("n/kernel.json"));
        assert!(errors[2].to_string().contains("not a JSON object"));
    }
}
