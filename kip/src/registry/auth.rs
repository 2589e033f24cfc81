//! How a registry asks to be authenticated: its `WWW-Authenticate` challenges.

use std::collections::HashMap;

/// A `WWW-Authenticate: Bearer …` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a Bearer challenge (`Bearer realm="…",service="…",scope="…"`); other schemes give
/// `None`. Quoted values may hold commas and escaped quotes.
pub(crate) fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        params.insert(key, value);
    }
    Some(Challenge {
        realm: params.remove("realm").filter(|r| !r.is_empty())?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// Whether a `WWW-Authenticate` header challenges with the Basic scheme.
pub(crate) fn is_basic_challenge(header: &str) -> bool {
    let scheme = header
        .trim()
        .split(char::is_whitespace)
        .next()
        .unwrap_or("");
    scheme.eq_ignore_ascii_case("basic")
}

/// How requests to one repository authenticate, once a challenge said so.
#[derive(Debug, Clone)]
pub(super) enum Auth {
    Bearer(String),
    /// Basic with the keyring's credential for the image.
    Basic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let table = [
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull""#,
                Some((
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/python:pull"),
                )),
            ),
            (
                r#"bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:a/b:pull,push""#,
                Some((
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:a/b:pull,push"),
                )),
            ),
            (
                r#"Bearer realm=http://127.0.0.1:9/auth,service=kip-test"#,
                Some(("http://127.0.0.1:9/auth", Some("kip-test"), None)),
            ),
            (r#"Bearer realm="a\"b""#, Some((r#"a"b"#, None, None))),
            (r#"Basic realm="Registry Realm""#, None),
            ("Bearer service=x", None),
            ("Bearer", None),
            ("", None),
        ];
        for (header, want) in table {
            let got = parse_bearer_challenge(header);
            let want = want.map(|(realm, service, scope)| Challenge {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            });
            assert_eq!(got, want, "{header}");
        }
    }

    #[test]
    fn basic_challenges() {
        for (header, want) in [
            (r#"Basic realm="Registry Realm""#, true),
            ("basic realm=x", true),
            ("Basic", true),
            (r#"Bearer realm="https://a/token""#, false),
            ("Basically", false),
            ("", false),
        ] {
            assert_eq!(is_basic_challenge(header), want, "{header}");
        }
    }
}
