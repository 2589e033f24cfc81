//! The kernel and session routes: `/api/kernels`, `/api/kernels/{id}` (and `/interrupt`,
//! `/restart`), `/api/sessions`, `/api/sessions/{id}`, with upstream's bodies and errors.

use std::{collections::HashMap, sync::Mutex};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    api::{AppState, Client, json_error},
    kernels::{KernelError, KernelModel, StartRequest},
};

fn json_body(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "Unknown server error"),
    }
}

/// A kernel error as upstream writes it: `{"reason", "message"}` (+ `traceback`).
pub fn error_response(e: &KernelError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let phrase = status.canonical_reason().unwrap_or("");
    let mut body = if e.in_reason {
        json!({"reason": e.message, "message": ""})
    } else {
        json!({"reason": phrase, "message": e.message})
    };
    if let Some(tb) = &e.traceback {
        body["traceback"] = Value::String(tb.clone());
    }
    json_body(status, &body)
}

fn with_location(mut response: Response, location: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn listing_forbidden() -> Response {
    json_error(StatusCode::FORBIDDEN, "")
}

/// Parses a `POST /api/kernels` body: empty means the default kernel; `env`, when present, must
/// be an object.
fn start_request(body: &[u8]) -> Result<StartRequest, KernelError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StartRequest::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| KernelError::new(400, "Invalid JSON in body of request"))?;
    let Value::Object(mut map) = value else {
        return Err(KernelError::new(400, "Invalid JSON in body of request"));
    };
    let name = match map.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(KernelError::new(400, "name must be a string")),
    };
    let env = map.remove("env");
    if let Some(env) = &env
        && !env.is_object()
    {
        return Err(KernelError::new(400, "env must be a JSON object"));
    }
    Ok(StartRequest {
        name,
        env,
        client: None,
    })
}

/// `GET /api/kernels` (403 unless `EG_LIST_KERNELS`).
pub async fn list(State(state): State<AppState>) -> Response {
    if !state.list_kernels {
        return listing_forbidden();
    }
    let models: Vec<KernelModel> = state.kernels.list().iter().map(|k| k.model()).collect();
    json_body(StatusCode::OK, &models)
}

/// `POST /api/kernels`.
pub async fn start(State(state): State<AppState>, Client(client): Client, body: Bytes) -> Response {
    let req = match start_request(&body) {
        Ok(r) => StartRequest { client, ..r },
        Err(e) => return error_response(&e),
    };
    match state.kernels.start(req).await {
        Ok(kernel) => with_location(
            json_body(StatusCode::CREATED, &kernel.model()),
            format!("{}api/kernels/{}", state.base_url(), kernel.id),
        ),
        Err(e) => error_response(&e),
    }
}

fn missing(id: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!("Kernel does not exist: {id}"),
    )
}

/// `GET /api/kernels/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.kernels.get(&id) {
        Some(k) => json_body(StatusCode::OK, &k.model()),
        None => missing(&id),
    }
}

/// `DELETE /api/kernels/{id}`.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if state.kernels.get(&id).is_none() {
        return missing(&id);
    }
    match state.kernels.shutdown(&id).await {
        Ok(()) => {
            state.sessions.forget_kernel(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// `POST /api/kernels/{id}/interrupt`.
pub async fn interrupt(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.kernels.interrupt(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.status == 404 => missing(&id),
        Err(e) => error_response(&e),
    }
}

/// `POST /api/kernels/{id}/restart`.
pub async fn restart(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.kernels.restart(&id).await {
        Ok(kernel) => json_body(StatusCode::OK, &kernel.model()),
        Err(e) if e.status == 404 => missing(&id),
        Err(e) => error_response(&e),
    }
}

/// One `/api/sessions` entry.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub path: String,
    pub name: String,
    pub kind: String,
    pub kernel_id: String,
}

/// The in-memory session table (upstream keeps it in memory too).
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, SessionRecord>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRecord>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the sessions of a kernel that has gone.
    pub fn forget_kernel(&self, kernel_id: &str) {
        self.lock().retain(|_, s| s.kernel_id != kernel_id);
    }
}

fn session_model(state: &AppState, s: &SessionRecord) -> Option<Value> {
    let kernel = state.kernels.get(&s.kernel_id)?;
    Some(json!({
        "id": s.id,
        "path": s.path,
        "name": s.name,
        "type": s.kind,
        "kernel": kernel.model(),
        "notebook": {"path": s.path, "name": s.name},
    }))
}

/// `GET /api/sessions` (403 unless `EG_LIST_KERNELS`).
pub async fn list_sessions(State(state): State<AppState>) -> Response {
    if !state.list_kernels {
        return listing_forbidden();
    }
    let records: Vec<SessionRecord> = state.sessions.lock().values().cloned().collect();
    let models: Vec<Value> = records
        .iter()
        .filter_map(|s| session_model(&state, s))
        .collect();
    json_body(StatusCode::OK, &models)
}

/// Jupyter Server's session errors: `reason` is the status phrase, null for a missing session.
fn session_error(status: StatusCode, message: &str) -> Response {
    let reason = match status {
        StatusCode::NOT_FOUND => Value::Null,
        s => Value::from(s.canonical_reason().unwrap_or("")),
    };
    json_body(status, &json!({"message": message, "reason": reason}))
}

/// `POST /api/sessions`: `path` and `type` (or a legacy `notebook.path`) and a kernel name.
pub async fn create_session(
    State(state): State<AppState>,
    Client(client): Client,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(model)) = serde_json::from_slice::<Value>(&body) else {
        return session_error(StatusCode::BAD_REQUEST, "Invalid JSON in body of request");
    };
    let path = model
        .get("path")
        .and_then(Value::as_str)
        .or_else(|| {
            model
                .get("notebook")
                .and_then(|n| n.get("path"))
                .and_then(Value::as_str)
        })
        .map(str::to_owned);
    let Some(path) = path else {
        return session_error(StatusCode::BAD_REQUEST, "Missing field in JSON data: path");
    };
    let kind = match model.get("type").and_then(Value::as_str) {
        Some(t) => t.to_owned(),
        None if model.contains_key("notebook") => "notebook".to_owned(),
        None => {
            return session_error(StatusCode::BAD_REQUEST, "Missing field in JSON data: type");
        }
    };
    let name = model
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kernel = model.get("kernel");
    let existing = kernel
        .and_then(|k| k.get("id"))
        .and_then(Value::as_str)
        .and_then(|id| state.kernels.get(id));
    let kernel = match existing {
        Some(k) => k,
        None => {
            let req = StartRequest {
                name: kernel
                    .and_then(|k| k.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                env: None,
                client,
            };
            match state.kernels.start(req).await {
                Ok(k) => k,
                Err(e) => return error_response(&e),
            }
        }
    };
    let record = SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        path,
        name,
        kind,
        kernel_id: kernel.id.clone(),
    };
    state
        .sessions
        .lock()
        .insert(record.id.clone(), record.clone());
    match session_model(&state, &record) {
        Some(model) => with_location(
            json_body(StatusCode::CREATED, &model),
            format!("{}api/sessions/{}", state.base_url(), record.id),
        ),
        None => session_error(StatusCode::INTERNAL_SERVER_ERROR, "kernel ended at once"),
    }
}

fn session_missing(id: &str) -> Response {
    session_error(StatusCode::NOT_FOUND, &format!("Session not found: {id}"))
}

/// `GET /api/sessions/{id}`.
pub async fn get_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = state.sessions.lock().get(&id).cloned();
    match record.and_then(|r| session_model(&state, &r)) {
        Some(model) => json_body(StatusCode::OK, &model),
        None => session_missing(&id),
    }
}

/// `PATCH /api/sessions/{id}`: path, name, type; a `kernel.id` of a running kernel re-points it.
pub async fn patch_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
        return session_error(StatusCode::BAD_REQUEST, "Invalid JSON in body of request");
    };
    let record = {
        let mut sessions = state.sessions.lock();
        let Some(record) = sessions.get_mut(&id) else {
            return session_missing(&id);
        };
        if let Some(p) = changes.get("path").and_then(Value::as_str) {
            record.path = p.to_owned();
        }
        if let Some(n) = changes.get("name").and_then(Value::as_str) {
            record.name = n.to_owned();
        }
        if let Some(t) = changes.get("type").and_then(Value::as_str) {
            record.kind = t.to_owned();
        }
        if let Some(k) = changes
            .get("kernel")
            .and_then(|k| k.get("id"))
            .and_then(Value::as_str)
            && state.kernels.get(k).is_some()
        {
            record.kernel_id = k.to_owned();
        }
        record.clone()
    };
    match session_model(&state, &record) {
        Some(model) => json_body(StatusCode::OK, &model),
        None => session_missing(&id),
    }
}

/// `DELETE /api/sessions/{id}`: the session and its kernel.
pub async fn delete_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(record) = state.sessions.lock().remove(&id) else {
        return session_missing(&id);
    };
    if state.kernels.get(&record.kernel_id).is_some() {
        let _ = state.kernels.shutdown(&record.kernel_id).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bodies() {
        assert!(start_request(b"").unwrap().name.is_none());
        assert!(start_request(b"  \n").unwrap().env.is_none());
        let r = start_request(br#"{"name":"python3","env":{"KERNEL_USERNAME":"a"}}"#).unwrap();
        assert_eq!(r.name.as_deref(), Some("python3"));
        assert!(r.env.unwrap().is_object());
        for (body, message) in [
            (&b"{"[..], "Invalid JSON in body of request"),
            (b"[1]", "Invalid JSON in body of request"),
            (br#"{"env":[1]}"#, "env must be a JSON object"),
            (br#"{"name":5}"#, "name must be a string"),
        ] {
            let e = start_request(body).unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (400, message));
        }
    }
}
