//! `POST /api/sql` (answers like Materialize's HTTP API) and `GET /api/v1/views`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use viewcast_coord::ExecuteResult;

use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub(crate) struct SqlRequest {
    query: String,
}

/// Runs every statement of `query` in order, stopping at the first error; one result per statement run.
pub(crate) async fn sql(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    st.auth.require_write(&headers)?;
    // Any content type is accepted (curl -d sends a form type); the body must be the JSON object.
    let req: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected a JSON body {{\"query\": \"...\"}}: {e}")))?;
    let results: Vec<Value> = st.coord.execute(&req.query).await.into_iter().map(result_json).collect();
    Ok(Json(json!({ "results": results })))
}

fn result_json(r: ExecuteResult) -> Value {
    match r {
        ExecuteResult::Rows { tag, desc, rows } => json!({
            "tag": tag,
            "col_names": desc.names,
            "desc": { "columns": desc.names.iter().zip(&desc.types).map(|(n, t)| json!({
                "name": n, "type": t.scalar.name(), "type_oid": t.scalar.oid(), "nullable": t.nullable,
            })).collect::<Vec<_>>() },
            "rows": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        }),
        ExecuteResult::Ok { tag } => json!({ "ok": tag, "tag": tag }),
        ExecuteResult::Error(e) => {
            let mut err = json!({ "message": e.message, "code": e.code });
            if let Some(p) = e.position {
                err["position"] = json!(p);
            }
            json!({ "error": err })
        }
    }
}

/// Every relation in the catalog with its kind, columns and, for published ones, live size and freshness.
pub(crate) async fn views(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Result<Json<Value>, ApiError> {
    let access = st.auth.from_headers(&headers);
    if st.auth.required() && matches!(access, crate::auth::Access::None) {
        return Err(ApiError::Unauthorized("a valid token is required".into()));
    }
    let items: Vec<Value> = st
        .coord
        .relations()
        .into_iter()
        .filter(|r| access.can_read(&r.name))
        .map(|r| {
            json!({
                "name": r.name,
                "kind": r.kind,
                "columns": r.desc.names.iter().zip(&r.desc.types).map(|(n, t)| json!({
                    "name": n, "type": t.scalar.name(), "nullable": t.nullable,
                })).collect::<Vec<_>>(),
                "streamable": r.streamable,
                "rows": r.rows,
                "ts": r.sealed_ts,
                "errors": r.errors,
                "source": r.source_stats.map(|s| json!({
                    "events_in": s.events_in, "bytes_in": s.bytes_in, "errors": s.errors,
                    "last_error": s.last_error, "last_event_time": s.last_event_time,
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "views": items })))
}
