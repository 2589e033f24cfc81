//! Container image references, parsed and normalised with the Docker reference grammar.
//!
//! `python:3` becomes `docker.io/library/python:3`, `myreg:5000/x` keeps its registry, a reference
//! with neither tag nor digest gets `:latest`. A default registry (`KIP_DEFAULT_CONTAINER_REGISTRY`)
//! is applied only to references whose first path component does not name a registry.

use std::{fmt, str::FromStr};

/// The registry used when a reference names none and no default is configured.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference {0:?} contains whitespace or control characters")]
    Whitespace(String),
    #[error("repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("repository name {0:?} is invalid: {1}")]
    InvalidRepository(String, &'static str),
    #[error("registry {0:?} is invalid: {1}")]
    InvalidRegistry(String, &'static str),
    #[error("tag {0:?} is invalid: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    InvalidTag(String),
    #[error("digest {0:?} is invalid: expected sha256:<64 hex> or sha512:<128 hex>")]
    InvalidDigest(String),
    #[error("repository name is longer than 255 characters")]
    NameTooLong,
}

/// A normalised image reference: registry, repository path, optional tag, optional digest.
///
/// Always has a tag or a digest (or both): a bare name gets `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference, with Docker Hub as the registry for names that carry none.
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        Self::parse_with_default_registry(input, None)
    }

    /// Parses a reference; `default_registry` (if given and non-empty) is used for names without a
    /// registry instead of Docker Hub.
    pub fn parse_with_default_registry(
        input: &str,
        default_registry: Option<&str>,
    ) -> Result<Self, ImageRefError> {
        if input.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageRefError::Whitespace(input.to_owned()));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };

        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ImageRefError::InvalidRepository(
                input.to_owned(),
                "no repository name",
            ));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ImageRefError::NameTooLong);
        }

        let (explicit_registry, path) = split_registry(name);
        let registry = match explicit_registry {
            Some(registry) => {
                validate_registry(registry)?;
                registry.to_owned()
            }
            None => match default_registry.map(str::trim).filter(|r| !r.is_empty()) {
                Some(default) => {
                    validate_registry(default)?;
                    default.to_owned()
                }
                None => DOCKER_HUB.to_owned(),
            },
        };
        validate_path(path)?;

        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/python`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What identifies the image content: `name@digest` when pinned, else `name:tag`.
    /// Two references with the same key denote the same image.
    pub fn key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{}@{digest}", self.name()),
            (None, Some(tag)) => format!("{}:{tag}", self.name()),
            (None, None) => self.name(),
        }
    }

    /// The tag or digest to ask a registry or runtime for: the digest wins when both are present.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Splits `name` into (registry, path) the way Docker does: the first component is a registry when
/// it contains `.` or `:`, is `localhost`, or has an upper-case letter (which a path may not).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_registry(registry: &str) -> Result<(), ImageRefError> {
    let bad = |why| Err(ImageRefError::InvalidRegistry(registry.to_owned(), why));
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad("unclosed '[' in IPv6 address");
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad("invalid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("unexpected text after IPv6 address"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("empty host");
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad("host labels are letters, digits and inner hyphens");
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.len() > 5)
    {
        return bad("port must be a number");
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), ImageRefError> {
    let bad = |why| Err(ImageRefError::InvalidRepository(path.to_owned(), why));
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ImageRefError::Uppercase(path.to_owned()));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return bad("empty path component");
        }
        if !component_is_valid(component) {
            return bad("path components are [a-z0-9] separated by '.', '_', '__' or runs of '-'");
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn component_is_valid(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_tag(tag: &str) -> Result<(), ImageRefError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = tag.len() <= MAX_TAG_LEN
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::InvalidTag(tag.to_owned()))
    }
}

fn validate_digest(digest: &str) -> Result<(), ImageRefError> {
    let hex_len = |hex: &str| {
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            .then_some(hex.len())
    };
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex_len(hex) == Some(64),
        Some(("sha512", hex)) => hex_len(hex) == Some(128),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::InvalidDigest(digest.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_valid_references() {
        let check = |input: &str, default: Option<&str>, want: &str| {
            let input = input.replace("{D}", D);
            let got = ImageRef::parse_with_default_registry(&input, default)
                .unwrap_or_else(|e| panic!("{input:?} with default {default:?}: {e}"));
            let want = want.replace("{D}", D);
            assert_eq!(got.to_string(), want, "{input:?} / {default:?}");
            // The canonical form parses back to itself.
            assert_eq!(ImageRef::parse(&got.to_string()).unwrap(), got, "{input:?}");
        };
        let without_default = [
            ("python", "docker.io/library/python:latest"),
            ("python:3", "docker.io/library/python:3"),
            ("python:3.11-slim", "docker.io/library/python:3.11-slim"),
            ("elyra/kernel-py:3.2.3", "docker.io/elyra/kernel-py:3.2.3"),
            ("docker.io/python:3", "docker.io/library/python:3"),
            ("index.docker.io/python", "docker.io/library/python:latest"),
            ("docker.io/library/python:3", "docker.io/library/python:3"),
            ("quay.io/x", "quay.io/x:latest"),
            (
                "quay.io/jupyter/r-notebook:2024",
                "quay.io/jupyter/r-notebook:2024",
            ),
            ("myreg:5000/x", "myreg:5000/x:latest"),
            ("myreg:5000/x:1.0", "myreg:5000/x:1.0"),
            ("myreg:5000/team/x:1.0", "myreg:5000/team/x:1.0"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
            ("127.0.0.1:5000/test/a:1", "127.0.0.1:5000/test/a:1"),
            ("[::1]:5000/x:1", "[::1]:5000/x:1"),
            ("Registry/x", "Registry/x:latest"),
            ("a_b__c-d--e/g", "docker.io/a_b__c-d--e/g:latest"),
            ("foo/a_b__c-d---e.f:v", "docker.io/foo/a_b__c-d---e.f:v"),
            ("python@{D}", "docker.io/library/python@{D}"),
            ("python:3@{D}", "docker.io/library/python:3@{D}"),
            ("myreg:5000/x@{D}", "myreg:5000/x@{D}"),
        ];
        for (input, want) in without_default {
            check(input, None, want);
        }
        // A default registry applies only where the reference names none; `Some("")` is given
        // but empty, and so no default.
        let with_default = [
            ("python:3", Some("myreg:5000"), "myreg:5000/python:3"),
            (
                "elyra/kernel-py:1",
                Some("quay.io"),
                "quay.io/elyra/kernel-py:1",
            ),
            ("quay.io/x", Some("myreg:5000"), "quay.io/x:latest"),
            ("myreg:5000/x", Some("docker.io"), "myreg:5000/x:latest"),
            ("localhost/x", Some("quay.io"), "localhost/x:latest"),
            (
                "python",
                Some("docker.io"),
                "docker.io/library/python:latest",
            ),
            ("python", Some(""), "docker.io/library/python:latest"),
            (
                "python",
                Some("index.docker.io"),
                "docker.io/library/python:latest",
            ),
        ];
        for (input, default, want) in with_default {
            check(input, default, want);
        }
    }

    #[test]
    fn rejects_junk_with_a_reason() {
        use ImageRefError as E;
        type Check = fn(&ImageRefError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| *e == E::Empty),
            (" python", |e| matches!(e, E::Whitespace(_))),
            ("python:3 ", |e| matches!(e, E::Whitespace(_))),
            ("pyth on", |e| matches!(e, E::Whitespace(_))),
            ("Python:3", |e| matches!(e, E::Uppercase(_))),
            ("elyra/Kernel-py", |e| matches!(e, E::Uppercase(_))),
            ("quay.io/Foo/bar", |e| matches!(e, E::Uppercase(_))),
            ("python:", |e| matches!(e, E::InvalidTag(_))),
            ("python:-x", |e| matches!(e, E::InvalidTag(_))),
            ("python:.x", |e| matches!(e, E::InvalidTag(_))),
            ("python:a/b", |e| matches!(e, E::InvalidRegistry(..))),
            ("python@sha256:abc", |e| matches!(e, E::InvalidDigest(_))),
            ("python@md5:0123456789abcdef0123456789abcdef", |e| {
                matches!(e, E::InvalidDigest(_))
            }),
            ("python@", |e| matches!(e, E::InvalidDigest(_))),
            (":3", |e| matches!(e, E::InvalidRepository(..))),
            ("/python", |e| matches!(e, E::InvalidRepository(..))),
            ("a//b", |e| matches!(e, E::InvalidRepository(..))),
            ("a/b/", |e| matches!(e, E::InvalidRepository(..))),
            ("-a", |e| matches!(e, E::InvalidRepository(..))),
            ("a-", |e| matches!(e, E::InvalidRepository(..))),
            ("a...b", |e| matches!(e, E::InvalidRepository(..))),
            ("a___b", |e| matches!(e, E::InvalidRepository(..))),
            ("a$b", |e| matches!(e, E::InvalidRepository(..))),
            ("myreg:abc/x", |e| matches!(e, E::InvalidRegistry(..))),
            ("my_reg.io/x", |e| matches!(e, E::InvalidRegistry(..))),
            ("a_b.c/g", |e| matches!(e, E::InvalidRegistry(..))),
            ("-reg.io/x", |e| matches!(e, E::InvalidRegistry(..))),
            ("[::1/x", |e| matches!(e, E::InvalidRegistry(..))),
            ("quay.io/", |e| matches!(e, E::InvalidRepository(..))),
            ("https://quay.io/x", |e| matches!(e, E::InvalidRegistry(..))),
        ];
        for (input, check) in cases {
            let err = ImageRef::parse(input).expect_err(input);
            assert!(check(&err), "{input:?} gave unexpected error {err:?}");
        }
        let long = format!("a/{}", "b".repeat(300));
        assert_eq!(ImageRef::parse(&long), Err(ImageRefError::NameTooLong));
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(matches!(
            ImageRef::parse(&long_tag),
            Err(ImageRefError::InvalidTag(_))
        ));
    }

    #[test]
    fn bad_default_registry_is_reported() {
        let err = ImageRef::parse_with_default_registry("python", Some("bad host")).unwrap_err();
        assert!(matches!(err, ImageRefError::InvalidRegistry(..)), "{err:?}");
    }

    #[test]
    fn keys_identify_the_same_image() {
        let key = |s: &str| ImageRef::parse(&s.replace("{D}", D)).unwrap().key();
        assert_eq!(key("python"), key("docker.io/library/python:latest"));
        assert_eq!(key("python:3"), key("index.docker.io/library/python:3"));
        assert_eq!(key("python:3@{D}"), key("python@{D}"));
        assert_ne!(key("python:3"), key("python:3.11"));
        assert_ne!(key("quay.io/python"), key("python"));
    }

    #[test]
    fn accessors() {
        let r = ImageRef::parse(&format!("myreg:5000/team/x:1@{D}")).unwrap();
        assert_eq!(r.registry(), "myreg:5000");
        assert_eq!(r.repository(), "team/x");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.tag_or_digest(), D);
        assert_eq!(r.name(), "myreg:5000/team/x");
        let r = ImageRef::parse("x").unwrap();
        assert_eq!(r.tag_or_digest(), "latest");
    }
}
