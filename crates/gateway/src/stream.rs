//! Streams of one or several views to one client.
//!
//! `GET /api/v1/stream/{view}`: a WebSocket on upgrade, Server-Sent Events for
//! `Accept: text/event-stream`. `GET /api/v1/stream?views=a,b`: several views over one SSE stream.
//! Query options: `since=T` (resume after T), `key=c1,c2` (keyed upsert/delete messages).
//! SSE event ids record where each view is (`T` for one view, `a=T1,b=T2` for several), so a
//! reconnecting EventSource's `Last-Event-ID` resumes every view exactly where it stopped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::create_response_with_body;
use viewcast_hub::Hub;
use viewcast_repr::Timestamp;

use crate::auth::ConnectionSlot;
use crate::feed::{Encoding, Outbox, OutboxReceiver, Pump};
use crate::{ApiError, AppState};

#[derive(Deserialize, Default)]
pub(crate) struct StreamParams {
    since: Option<Timestamp>,
    key: Option<String>,
    views: Option<String>,
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

/// Browsers send `Origin` on WebSocket upgrades; only the server's own host and configured origins may connect.
pub(crate) fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(()); // Not a browser: nothing to protect against cross-site use.
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split("://").nth(1).unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) || allowed.iter().any(|a| a == origin || a == "*") {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("origin {origin} is not allowed")))
    }
}

/// Resolves key column names against a view's columns.
pub(crate) fn key_columns(hub: &Hub, view: &str, key: &[String]) -> Result<(Vec<usize>, Vec<String>), String> {
    let desc = hub
        .summaries()
        .into_iter()
        .find(|s| s.name == view)
        .map(|s| s.desc)
        .ok_or_else(|| format!("unknown view \"{view}\""))?;
    let cols = key
        .iter()
        .map(|k| desc.position(k).ok_or_else(|| format!("view \"{view}\" has no column \"{k}\"")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cols, key.to_vec()))
}

fn known_view(hub: &Hub, view: &str) -> Result<(), ApiError> {
    if hub.summaries().iter().any(|s| s.name == view) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("unknown view \"{view}\"")))
    }
}

/// Parses a `Last-Event-ID`: `T` (one view) or `a=T1,b=T2`.
fn parse_event_id(id: &str, views: &[String]) -> BTreeMap<String, Timestamp> {
    let mut out = BTreeMap::new();
    if let Ok(t) = id.trim().parse::<Timestamp>() {
        for v in views {
            out.insert(v.clone(), t);
        }
        return out;
    }
    for part in id.split(',') {
        if let Some((v, t)) = part.split_once('=') {
            if let Ok(t) = t.trim().parse() {
                out.insert(v.trim().to_string(), t);
            }
        }
    }
    out
}

pub(crate) async fn stream_one(
    State(st): State<AppState>,
    Path(view): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<StreamParams>,
    request: Request,
) -> Result<Response, ApiError> {
    open_stream(st, vec![view], peer, params, request).await
}

pub(crate) async fn stream_many(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<StreamParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let views: Vec<String> = params
        .views
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    if views.is_empty() {
        return Err(ApiError::BadRequest("name the views to stream: ?views=a,b".into()));
    }
    open_stream(st, views, peer, params, request).await
}

async fn open_stream(
    st: AppState,
    views: Vec<String>,
    peer: SocketAddr,
    params: StreamParams,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let hub = st.coord.hub().clone();
    for v in &views {
        known_view(&hub, v)?;
        st.auth.require_read(&headers, v)?;
    }
    let key = params.key.as_deref().map(|k| k.split(',').map(|c| c.trim().to_string()).collect::<Vec<_>>());
    let key = match (&key, views.as_slice()) {
        (None, _) => None,
        (Some(k), [v]) => Some(key_columns(&hub, v, k).map_err(ApiError::BadRequest)?),
        (Some(_), _) => return Err(ApiError::BadRequest("key= needs a single view".into())),
    };
    let slot = st.limits.admit(peer.ip())?;
    if wants_websocket(&headers) && views.len() == 1 {
        check_origin(&headers, &st.config.allowed_origins)?;
        let (response, on_upgrade) = accept_websocket(request)?;
        let fanout = st.fanout.clone();
        let view: Arc<str> = Arc::from(views[0].as_str());
        let encoding = Encoding { id: None, key };
        // The socket joins a writer shard (`fanout`): no task of its own per frame.
        tokio::spawn(async move {
            if let Some((tcp, read_buf)) = upgraded_tcp(on_upgrade).await {
                fanout.serve(tcp, read_buf, view, encoding, params.since, slot).await;
            }
        });
        return Ok(response);
    }
    if wants_sse(&headers) {
        let last_event_id =
            headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|s| parse_event_id(s, &views));
        let (outbox, rx) = Outbox::new(st.config.client_buffer_bytes, st.metrics.clone());
        let mut positions = BTreeMap::new();
        for v in &views {
            let since = last_event_id.as_ref().and_then(|m| m.get(v).copied()).or(params.since);
            positions.insert(v.clone(), since);
            let pump = Pump {
                hub: hub.clone(),
                view: Arc::from(v.as_str()),
                encoding: Encoding { id: None, key: key.clone() },
                outbox: outbox.clone(),
                max_backlog_bytes: st.config.client_buffer_bytes,
            };
            tokio::spawn(pump.run(since));
        }
        drop(outbox);
        return Ok(sse_response(rx, positions, slot));
    }
    Err(ApiError::BadRequest("a stream needs a WebSocket upgrade or the header Accept: text/event-stream".to_string()))
}

/// Answers a WebSocket opening handshake for a socket the gateway writes itself: the `101
/// Switching Protocols` response (the request checked and the accept key derived by tungstenite),
/// and the upgrade to await for the socket. axum's `WebSocketUpgrade` would hand over a protocol
/// stream instead of the TCP socket.
pub(crate) fn accept_websocket(request: Request) -> Result<(Response, OnUpgrade), ApiError> {
    let response = create_response_with_body(&request, axum::body::Body::empty)
        .map_err(|e| ApiError::BadRequest(format!("bad WebSocket upgrade: {e}")))?;
    let (mut parts, _) = request.into_parts();
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::BadRequest("bad WebSocket upgrade: the connection cannot be upgraded".into()))?;
    Ok((response, on_upgrade))
}

/// The TCP socket of an upgraded connection, and what the client sent after its upgrade request.
pub(crate) async fn upgraded_tcp(on_upgrade: OnUpgrade) -> Option<(TcpStream, Vec<u8>)> {
    match on_upgrade.await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
        Ok(Ok(upgraded)) => {
            // Copied out (usually nothing): the `Bytes` would keep hyper's whole read buffer alive
            // for the connection's life.
            let read_buf = upgraded.read_buf.to_vec();
            drop(upgraded.read_buf);
            Some((upgraded.io.into_inner(), read_buf))
        }
        Ok(Err(_)) => {
            tracing::warn!("a WebSocket upgrade on a connection that is not TCP (not `serve`'s)");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            None
        }
    }
}

/// The read buffer of a streaming WebSocket: clients send little (subscribe messages, pongs).
pub(crate) const WS_READ_BUFFER_BYTES: usize = 1 << 10;

fn sse_response(rx: OutboxReceiver, positions: BTreeMap<String, Option<Timestamp>>, slot: ConnectionSlot) -> Response {
    let single = positions.len() == 1;
    let state = (rx, positions, slot);
    let events = futures::stream::unfold(state, move |(mut rx, mut positions, slot)| async move {
        let (msg, guard) = rx.recv().await?;
        if let Some(made) = msg.made {
            rx.metrics().frame_to_written.record(made.elapsed());
        }
        let text = std::str::from_utf8(&msg.bytes).unwrap_or("{}");
        let mut event = Event::default().data(text);
        if let Some(ts) = msg.ts {
            positions.insert(msg.view.to_string(), Some(ts));
            let id = if single {
                ts.to_string()
            } else {
                positions.iter().filter_map(|(v, t)| t.map(|t| format!("{v}={t}"))).collect::<Vec<_>>().join(",")
            };
            event = event.id(id);
        }
        drop(guard);
        Some((Ok::<_, Infallible>(event), (rx, positions, slot)))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
