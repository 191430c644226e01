//! `POST /api/webhook/{source}`: the body's records become rows of a `FROM WEBHOOK` source.
//!
//! The answer is 200 only once the rows are in a sealed timestamp (so a client that reads a view
//! right after sees them); a bad record rejects the whole request and ingests nothing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::{ApiError, AppState};

/// Ingests a JSON object, a JSON array (one row per element) or NDJSON (one row per line) into
/// `source`. 400: malformed body or not a webhook source; 404: no such source; 413: body over
/// the server's limit; 401/403: token; 503: ingestion backlog full or shutting down.
pub(crate) async fn ingest(
    State(st): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = st.auth.require_write(&headers) {
        return e.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("request body over the limit of {} bytes", st.config.max_body_bytes);
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "error": { "message": message } }))).into_response();
        }
        Err(rejection) => return ApiError::BadRequest(rejection.body_text()).into_response(),
    };
    match st.coord.ingest_body(&source, &body).await {
        Ok((rows, ts)) => Json(json!({ "rows": rows, "timestamp": ts })).into_response(),
        Err(e) => match e.code.as_str() {
            "42P01" => ApiError::NotFound(e.message),
            "53400" | "57P01" => ApiError::Unavailable(e.message),
            _ => ApiError::BadRequest(e.message),
        }
        .into_response(),
    }
}
