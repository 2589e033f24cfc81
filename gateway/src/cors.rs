//! CORS headers, preflight `OPTIONS` answers and the origin check, as upstream's API handlers
//! apply them.
//!
//! - Each `Access-Control-*` header is added to every response when its setting is non-empty
//!   ([`Cors::from_settings`] selects them; [`add_headers`] adds them).
//! - `OPTIONS` on a route answers 200 with an empty body, without the token check (the API's
//!   token check lets it through) or the origin check ([`check`]).
//! - A request whose `Origin` names another host than its `Host` header is rejected unless
//!   `EG_ALLOW_ORIGIN` is `*` or that very origin: 404 on REST routes, 403 on the kernel
//!   websocket ([`origin_allowed`]).

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::api::{AppState, json_error};

/// The CORS settings, as configured (every one empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// `EG_ALLOW_ORIGIN`: also decides the origin check (`*`: any origin).
    pub allow_origin: String,
    pub allow_credentials: String,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: String,
}

/// An invalid setting: its variable, its value, the problem.
pub type SettingError = (&'static str, String, String);

/// What the middleware applies: the origin check's allowed origin and the headers every response
/// carries.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    allow_origin: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Cors {
    /// The headers of the non-empty settings; otherwise every value that cannot be sent in a
    /// header, as `(variable, value, problem)`.
    pub fn from_settings(s: &CorsSettings) -> Result<Self, Vec<SettingError>> {
        let mut headers = Vec::new();
        let mut errors = Vec::new();
        for (name, var, value) in [
            (
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                "EG_ALLOW_CREDENTIALS",
                &s.allow_credentials,
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "EG_ALLOW_HEADERS",
                &s.allow_headers,
            ),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "EG_ALLOW_METHODS",
                &s.allow_methods,
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                "EG_ALLOW_ORIGIN",
                &s.allow_origin,
            ),
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "EG_EXPOSE_HEADERS",
                &s.expose_headers,
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "EG_MAX_AGE", &s.max_age),
        ] {
            if value.is_empty() {
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(value) => headers.push((name, value)),
                Err(_) => errors.push((
                    var,
                    value.clone(),
                    "not a valid HTTP header value".to_owned(),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            allow_origin: s.allow_origin.clone(),
            headers,
        })
    }

    /// The headers every response carries.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

/// Upstream's origin check: passes when `Origin` or `Host` is missing, when the origin's
/// `host[:port]` (after lower-casing the origin) is `host`, or when `allow_origin` is `*` or the
/// (lower-cased) origin itself.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allow_origin: &str) -> bool {
    if allow_origin == "*" {
        return true;
    }
    let (Some(origin), Some(host)) = (origin, host) else {
        return true;
    };
    let origin = origin.to_lowercase();
    netloc(&origin) == host || (!allow_origin.is_empty() && allow_origin == origin)
}

/// The `netloc` of a URL as Python's `urlparse` splits it: what follows `//` up to the path,
/// query or fragment; empty when there is no `//`.
fn netloc(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("//") else {
        return "";
    };
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// Outermost layer: the CORS headers on every response.
pub async fn add_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in state.cors.headers() {
        headers.insert(name.clone(), value.clone());
    }
    response
}

/// On the routes, after the token check: `OPTIONS` answers 200 with an empty body; any other
/// method from a foreign origin is rejected (403 on the kernel websocket, 404 elsewhere).
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return (StatusCode::OK, Body::empty()).into_response();
    }
    let headers = req.headers();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let allowed = origin_allowed(
        header(header::ORIGIN),
        header(header::HOST),
        &state.cors.allow_origin,
    );
    if allowed {
        return next.run(req).await;
    }
    let websocket = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str().ends_with("/channels"));
    if websocket {
        StatusCode::FORBIDDEN.into_response()
    } else {
        json_error(StatusCode::NOT_FOUND, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_decision() {
        let cases: &[(Option<&str>, Option<&str>, &str, bool)] = &[
            // No Origin or no Host: passes.
            (None, Some("gw:8888"), "", true),
            (Some("http://evil.example"), None, "", true),
            (None, None, "", true),
            // Same host[:port]: passes, whatever the scheme and path.
            (Some("http://gw:8888"), Some("gw:8888"), "", true),
            (Some("https://gw:8888/x?y"), Some("gw:8888"), "", true),
            (Some("HTTP://GW:8888"), Some("gw:8888"), "", true),
            // Port differs: foreign.
            (Some("http://gw"), Some("gw:8888"), "", false),
            (Some("http://evil.example"), Some("gw:8888"), "", false),
            // Allowed by the setting.
            (Some("http://evil.example"), Some("gw:8888"), "*", true),
            (
                Some("http://app.example"),
                Some("gw:8888"),
                "http://app.example",
                true,
            ),
            (
                Some("http://App.Example"),
                Some("gw:8888"),
                "http://app.example",
                true,
            ),
            (
                Some("http://other.example"),
                Some("gw:8888"),
                "http://app.example",
                false,
            ),
            // Not a URL (`null` from sandboxed frames): no netloc, foreign.
            (Some("null"), Some("gw:8888"), "", false),
            (Some("null"), Some("gw:8888"), "null", true),
        ];
        for &(origin, host, allow, expected) in cases {
            assert_eq!(
                origin_allowed(origin, host, allow),
                expected,
                "origin {origin:?}, host {host:?}, allow_origin {allow:?}"
            );
        }
    }

    #[test]
    fn only_non_empty_settings_become_headers() {
        let names = |s: &CorsSettings| -> Vec<String> {
            Cors::from_settings(s)
                .unwrap()
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect()
        };
        let cases: Vec<(CorsSettings, Vec<&str>)> = vec![
            (CorsSettings::default(), vec![]),
            (
                CorsSettings {
                    allow_origin: "*".into(),
                    ..Default::default()
                },
                vec!["access-control-allow-origin: *"],
            ),
            (
                CorsSettings {
                    allow_origin: "https://app.example".into(),
                    allow_credentials: "true".into(),
                    allow_methods: "GET, POST".into(),
                    allow_headers: "Authorization".into(),
                    expose_headers: "ETag".into(),
                    max_age: "600".into(),
                },
                vec![
                    "access-control-allow-credentials: true",
                    "access-control-allow-headers: Authorization",
                    "access-control-allow-methods: GET, POST",
                    "access-control-allow-origin: https://app.example",
                    "access-control-expose-headers: ETag",
                    "access-control-max-age: 600",
                ],
            ),
            (
                CorsSettings {
                    max_age: "60".into(),
                    allow_methods: String::new(),
                    ..Default::default()
                },
                vec!["access-control-max-age: 60"],
            ),
        ];
        for (settings, expected) in cases {
            assert_eq!(names(&settings), expected, "{settings:?}");
        }
        let bad = CorsSettings {
            expose_headers: "a\nb".into(),
            max_age: "1\r".into(),
            ..Default::default()
        };
        let vars: Vec<_> = Cors::from_settings(&bad)
            .unwrap_err()
            .into_iter()
            .map(|(var, _, _)| var)
            .collect();
        assert_eq!(vars, ["EG_EXPOSE_HEADERS", "EG_MAX_AGE"]);
    }
}
