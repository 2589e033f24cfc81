//! The Enterprise-Gateway-compatible REST surface under the base URL: `/api`, `/api/kernelspecs`
//! (with the watch), `/api/kernelspecs/{name}`, `/kernelspecs/{name}/{file}`, the kernel and
//! session routes ([`crate::kernels_api`]) and the kernel websocket ([`crate::channels`]), plus
//! upstream's JSON 404 for everything else.

use std::{
    convert::Infallible,
    net::IpAddr,
    path::{Component, Path as FsPath, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use eg_common::kernelspec::{MAX_WATCH_SECONDS, WATCH_HEADER};
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    channels,
    config::Secret,
    cors::{self, Cors},
    kernels::KernelManager,
    kernels_api::{self, Sessions},
    kernelspecs::Listing,
    metrics::Metrics,
    peer::{self, Peer},
    watch::Store,
};

/// The versions `GET /api` reports: the Jupyter Server REST API level and the Enterprise Gateway
/// release whose behaviour this gateway reproduces (clients read them as such).
pub const API_VERSION: &str = "1.24.0";
pub const GATEWAY_VERSION: &str = "3.3.0";

/// Everything the handlers need.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// `None`: no token check.
    pub token: Option<Arc<Secret>>,
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: held watches answer at once so the server can drain.
    pub shutdown: CancellationToken,
    pub kernels: Arc<KernelManager>,
    pub sessions: Arc<Sessions>,
    /// `EG_LIST_KERNELS`: whether `GET /api/kernels` and `GET /api/sessions` answer.
    pub list_kernels: bool,
    /// `EG_WS_PING_INTERVAL_SECS` (zero: no pings).
    pub ws_ping_interval: Duration,
    /// `EG_ALLOW_ORIGIN` and the other CORS headers.
    pub cors: Arc<Cors>,
    /// `EG_AUTHORIZED_ORIGIN`: the name every request's client certificate must be valid for.
    pub authorized_origin: Option<Arc<ServerName<'static>>>,
    /// `EG_TRUST_XHEADERS`: the client address logged is the one the proxy headers name.
    pub trust_xheaders: bool,
}

impl AppState {
    /// The base URL, starting and ending with `/`.
    pub fn base_url(&self) -> &str {
        &self.store.options().base_url
    }
}

/// The client's address as the logs name it ([`peer::client_ip`]): the connection's peer, or
/// with `EG_TRUST_XHEADERS` the address a proxy's `X-Real-Ip`/`X-Forwarded-For` names. `None`
/// without connect info or such a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub Option<IpAddr>);

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(peer)| peer.addr.ip());
        Ok(Self(peer::client_ip(
            peer,
            &parts.headers,
            state.trust_xheaders,
        )))
    }
}

const ROUTES: [&str; 11] = [
    "/api",
    "/api/kernelspecs",
    "/api/kernelspecs/{name}",
    "/kernelspecs/{name}/{*path}",
    "/api/kernels",
    "/api/kernels/{kernel_id}",
    "/api/kernels/{kernel_id}/interrupt",
    "/api/kernels/{kernel_id}/restart",
    "/api/kernels/{kernel_id}/channels",
    "/api/sessions",
    "/api/sessions/{session_id}",
];

/// The gateway's routes, mounted under the store's base URL. Every response carries the CORS
/// headers; on the routes, the client certificate is checked against `EG_AUTHORIZED_ORIGIN`,
/// then the token (except for `OPTIONS`), then `OPTIONS` is answered and the origin checked, as
/// upstream's handlers do in that order. Served with `ConnectInfo<Peer>`
/// (`into_make_service_with_connect_info::<Peer>()`).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(ROUTES[0], get(api_version))
        .route(ROUTES[1], get(list))
        .route(ROUTES[2], get(one))
        .route(ROUTES[3], get(resource))
        .route(ROUTES[4], get(kernels_api::list).post(kernels_api::start))
        .route(ROUTES[5], get(kernels_api::get).delete(kernels_api::delete))
        .route(ROUTES[6], post(kernels_api::interrupt))
        .route(ROUTES[7], post(kernels_api::restart))
        .route(ROUTES[8], get(channels::channels))
        .route(
            ROUTES[9],
            get(kernels_api::list_sessions).post(kernels_api::create_session),
        )
        .route(
            ROUTES[10],
            get(kernels_api::get_session)
                .patch(kernels_api::patch_session)
                .delete(kernels_api::delete_session),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), cors::check))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authorize_origin,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), track));
    let base = state
        .store
        .options()
        .base_url
        .trim_end_matches('/')
        .to_owned();
    let app = if base.is_empty() {
        api
    } else {
        Router::new().nest(&base, api)
    };
    app.fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cors::add_headers,
        ))
        .with_state(state)
}

/// `{"reason": <status phrase>, "message": ...}` with `Content-Type: application/json`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "reason": status.canonical_reason().unwrap_or(""),
        "message": message,
    });
    json_response(status, body.to_string().into_bytes())
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

/// A route without the method: upstream's JSON 405.
async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "")
}

/// Upstream's catch-all: 404 without a token check (but with the `EG_AUTHORIZED_ORIGIN` check);
/// JSON under the base URL, and outside it the plain HTML page upstream's web framework answers
/// with.
async fn not_found(State(state): State<AppState>, req: Request) -> Response {
    let uri = req.uri();
    let base = &state.store.options().base_url;
    if uri.path().starts_with(base.as_str()) || uri.path() == base.trim_end_matches('/') {
        if let Some(refused) = origin_refused(&state, &req) {
            state.metrics.record_request("other", 403, 0.0);
            return refused;
        }
        state.metrics.record_request("other", 404, 0.0);
        json_error(StatusCode::NOT_FOUND, "")
    } else {
        state.metrics.record_request("other", 404, 0.0);
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            "<html><title>404: Not Found</title><body>404: Not Found</body></html>",
        )
            .into_response()
    }
}

/// Counts requests by route pattern and status, and their latency.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| {
            ROUTES
                .iter()
                .filter(|r| m.as_str().ends_with(*r))
                .max_by_key(|r| r.len())
        })
        .copied()
        .unwrap_or("other");
    let start = Instant::now();
    let response = next.run(req).await;
    state.metrics.record_request(
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// `EG_AUTHORIZED_ORIGIN`: the connection's client certificate must be valid for the name, else
/// upstream's 403 `Forbidden`. Without connect info (no connection) nothing is valid.
async fn authorize_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match origin_refused(&state, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

fn origin_refused(state: &AppState, req: &Request) -> Option<Response> {
    let name = state.authorized_origin.as_deref()?;
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer);
    let cert = peer.and_then(|p| p.cert.as_deref());
    if cert.is_some_and(|cert| peer::cert_valid_for(cert, name)) {
        return None;
    }
    info!(
        peer = peer.map(|p| tracing::field::display(p.addr)),
        certificate = cert.is_some(),
        origin = name.to_str().as_ref(),
        path = %req.uri().path(),
        "client certificate not valid for EG_AUTHORIZED_ORIGIN; 403"
    );
    Some(json_error(StatusCode::FORBIDDEN, "Forbidden"))
}

/// Upstream's token check: the `token` query argument when present, otherwise an
/// `Authorization: token …` header; compared in constant time; 401 otherwise. `OPTIONS` is
/// exempt.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(req).await;
    };
    if req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let from_query = req.uri().query().and_then(|_| {
        Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .ok()
            .and_then(|Query(pairs)| pairs.into_iter().rfind(|(k, _)| k == "token"))
            .map(|(_, v)| v)
    });
    let presented = match from_query {
        Some(t) => Some(t),
        None => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("token "))
            .map(str::to_owned),
    };
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), expected.expose().as_bytes()) => {
            next.run(req).await
        }
        _ => json_error(StatusCode::UNAUTHORIZED, ""),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of the token
/// matched (only whether the lengths match).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn api_version() -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({"version": API_VERSION, "gateway_version": GATEWAY_VERSION})
            .to_string()
            .into_bytes(),
    )
}

/// `true` when an `If-None-Match` value names `etag` (or is `*`); weak tags match too.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The first `user` query argument (upstream's `?user=` filter), percent-decoded.
fn user_param(uri: &Uri) -> Option<String> {
    uri.query()?;
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn listing_response((body, etag): (Bytes, String), modified: bool) -> Response {
    let mut response = if modified {
        json_response(StatusCode::OK, body)
    } else {
        StatusCode::NOT_MODIFIED.into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(WATCH_HEADER, HeaderValue::from_static("1"));
    response
}

/// Reads `wait` from the query: `None` when absent; clamped to [`MAX_WATCH_SECONDS`].
fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    let Some(raw) = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("wait="))
        .next_back()
    else {
        return Ok(None);
    };
    match raw.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(Duration::from_secs_f64(
            secs.min(MAX_WATCH_SECONDS as f64),
        ))),
        _ => Err(format!(
            "wait: expected a number of seconds (0-{MAX_WATCH_SECONDS}), got {raw:?}"
        )),
    }
}

/// `GET /api/kernelspecs`: the listing, with its ETag; 304 on a matching `If-None-Match`. With
/// `wait=SECONDS` and a matching `If-None-Match`, the request is held until the listing changes
/// (200 with the new listing) or the wait ends (304).
async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let wait = match parse_wait(uri.query()) {
        Ok(wait) => wait,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    let user = user_param(&uri);
    let options = state.store.options();
    let view = |listing: &Listing| listing.for_user(options, user.as_deref());
    let mut rx = state.store.subscribe();
    let current = view(&rx.borrow_and_update().clone());
    let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return listing_response(current, true);
    };
    if !etag_matches(inm, &current.1) {
        return listing_response(current, true);
    }
    let Some(wait) = wait.filter(|w| !w.is_zero()) else {
        return listing_response(current, false);
    };
    let _held = state.metrics.watcher();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let listing = view(&rx.borrow_and_update().clone());
                if !etag_matches(inm, &listing.1) {
                    return listing_response(listing, true);
                }
            }
            () = &mut deadline => break,
            () = state.shutdown.cancelled() => break,
        }
    }
    listing_response(view(&state.store.current()), false)
}

/// `GET /api/kernelspecs/{name}`: one spec, looked up case-insensitively and named as requested.
async fn one(State(state): State<AppState>, Path(name): Path<String>, uri: Uri) -> Response {
    let listing = state.store.current();
    match listing.specs.get(&name.to_lowercase()) {
        Some(spec) => {
            if let Some(user) = user_param(&uri)
                && !state.store.options().user_allowed(&spec.spec, &user)
            {
                return json_error(
                    StatusCode::FORBIDDEN,
                    &format!("User {user} is not authorized to use kernel spec {name}"),
                );
            }
            let entry = spec.entry(&name, &state.store.options().base_url);
            match serde_json::to_vec(&entry) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "Unknown server error"),
            }
        }
        None => json_error(
            StatusCode::NOT_FOUND,
            &format!("Kernel spec {name} not found"),
        ),
    }
}

/// `GET`/`HEAD /kernelspecs/{name}/{path}`: a file of the spec's directory. Anything that is not a
/// regular file inside that directory (missing, a directory, `..`, a symlink out) is 404.
async fn resource(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
) -> Response {
    let listing = state.store.current();
    let Some(spec) = listing.specs.get(&name.to_lowercase()) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("Kernel spec {name} not found"),
        );
    };
    let Some(file) = resolve_inside(&spec.dir, &path).await else {
        return json_error(StatusCode::NOT_FOUND, "");
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type(&file))],
            bytes,
        )
            .into_response(),
        Err(_) => json_error(StatusCode::NOT_FOUND, ""),
    }
}

/// The regular file `rel` names inside `root`, or `None` when it does not exist or escapes it.
async fn resolve_inside(root: &FsPath, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains(['\0', '\\']) {
        return None;
    }
    let rel = FsPath::new(rel);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(rel)).await.ok()?;
    if !file.starts_with(&root) {
        return None;
    }
    let meta = tokio::fs::metadata(&file).await.ok()?;
    meta.is_file().then_some(file)
}

/// MIME type by extension, as a static file server reports it.
fn content_type(file: &FsPath) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/vnd.microsoft.icon",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html",
        Some("txt") => "text/plain",
        Some("py") => "text/x-python",
        Some("sh") => "application/x-sh",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }

    #[test]
    fn wait_parsing() {
        assert_eq!(parse_wait(None), Ok(None));
        assert_eq!(parse_wait(Some("user=x")), Ok(None));
        assert_eq!(
            parse_wait(Some("wait=2.5")),
            Ok(Some(Duration::from_millis(2500)))
        );
        assert_eq!(
            parse_wait(Some("token=t&wait=100000")),
            Ok(Some(Duration::from_secs(MAX_WATCH_SECONDS)))
        );
        assert!(parse_wait(Some("wait=soon")).unwrap_err().contains("wait"));
        assert!(parse_wait(Some("wait=-1")).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
