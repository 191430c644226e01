//! `GET /api/v1/ws`: one WebSocket carrying any number of subscriptions (see docs/protocol.md).
//!
//! Client messages: `subscribe` (a view or an ad-hoc `query`, with `since` and `key` options),
//! `unsubscribe`, and `auth` (first, when a token is required and not sent as a header or cookie).
//! Every server message carries its subscription's `id`; a bad message gets an `error` and the
//! connection keeps serving its other subscriptions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::stream::SplitStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use viewcast_plan::GlobalId;
use viewcast_repr::Timestamp;

use crate::auth::{Access, ConnectionSlot};
use crate::feed::{Encoding, OutMsg, Outbox, Pump};
use crate::stream::{check_origin, configure, key_columns, write_ws};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMsg {
    Subscribe {
        id: Value,
        view: Option<String>,
        query: Option<String>,
        since: Option<Timestamp>,
        key: Option<Vec<String>>,
    },
    Unsubscribe {
        id: Value,
    },
    Auth {
        token: String,
    },
}

fn id_string(id: &Value) -> Option<String> {
    match id {
        Value::String(s) if !s.is_empty() && s.len() <= 128 => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct Sub {
    task: JoinHandle<()>,
    /// The transient view of a `query` subscription, dropped with it.
    query_view: Arc<Mutex<Option<GlobalId>>>,
}

pub(crate) async fn ws(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&headers, &st.config.allowed_origins)?;
    let slot = st.limits.admit(peer.ip())?;
    let access = st.auth.from_headers(&headers);
    let config = st.config.clone();
    Ok(configure(ws, &config).on_upgrade(move |socket| run(socket, st, access, slot)))
}

fn control(bytes: Value) -> OutMsg {
    OutMsg { bytes: bytes.to_string().into(), view: Arc::from(""), ts: None, made: None }
}

fn error_msg(id: Option<&str>, message: &str) -> OutMsg {
    let mut v = serde_json::json!({ "type": "error", "message": message });
    if let Some(id) = id {
        v["id"] = Value::String(id.to_string());
    }
    control(v)
}

/// Serves one multiplexed connection in one task: the reader of client messages and the socket
/// writer run side by side here; each subscription is a pump task feeding the shared outbox.
async fn run(socket: WebSocket, st: AppState, access: Access, slot: ConnectionSlot) {
    let (sink, incoming) = socket.split();
    let (outbox, rx) = Outbox::new(st.config.client_buffer_bytes, st.metrics.clone());
    let config = st.config.clone();
    let metrics = st.metrics.clone();
    let writer = write_ws(sink, rx, &config, &metrics, slot);
    tokio::pin!(writer);
    let mut subs: HashMap<String, Sub> = HashMap::new();
    let writer_done = {
        let reader = read_messages(incoming, &st, access, &outbox, &mut subs);
        tokio::pin!(reader);
        tokio::select! {
            _ = &mut reader => false,
            // The writer ends when the client stalled or the socket broke: close everything.
            _ = &mut writer => true,
        }
    };
    for (_, sub) in subs.drain() {
        stop(&st, sub);
    }
    drop(outbox);
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
    }
}

/// Handles client messages until the client closes, goes idle or fails to authenticate.
async fn read_messages(
    mut incoming: SplitStream<WebSocket>,
    st: &AppState,
    mut access: Access,
    outbox: &Outbox,
    subs: &mut HashMap<String, Sub>,
) {
    loop {
        let next = match tokio::time::timeout(st.config.idle_timeout, incoming.next()).await {
            Ok(n) => n,
            Err(_) => {
                outbox.send(error_msg(None, "idle timeout: no message or pong from the client")).await;
                return;
            }
        };
        let text = match next {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                outbox.send(error_msg(None, "binary messages are not understood; send JSON text")).await;
                continue;
            }
            Some(Ok(_)) => continue, // ping/pong: liveness only
        };
        let msg: ClientMsg = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                outbox.send(error_msg(None, &format!("bad message: {e}"))).await;
                continue;
            }
        };
        if let ClientMsg::Auth { token } = &msg {
            access = st.auth.check(Some(token));
            if matches!(access, Access::None) {
                outbox.send(error_msg(None, "invalid token")).await;
                return;
            }
            continue;
        }
        if matches!(access, Access::None) {
            outbox.send(error_msg(None, "authentication required: send {\"type\":\"auth\",\"token\":...} first")).await;
            return;
        }
        match msg {
            ClientMsg::Subscribe { id, view, query, since, key } => {
                let Some(id) = id_string(&id) else {
                    outbox.send(error_msg(None, "subscribe needs an \"id\" (a string or number)")).await;
                    continue;
                };
                if subs.contains_key(&id) {
                    outbox.send(error_msg(Some(&id), "a subscription with this id is already open")).await;
                    continue;
                }
                if subs.len() >= st.config.max_subscriptions_per_connection {
                    outbox.send(error_msg(Some(&id), "too many subscriptions on this connection")).await;
                    continue;
                }
                match start(st, &access, outbox, &id, view, query, since, key) {
                    Ok(sub) => {
                        subs.insert(id, sub);
                    }
                    Err(message) => {
                        outbox.send(error_msg(Some(&id), &message)).await;
                    }
                }
            }
            ClientMsg::Unsubscribe { id } => {
                if let Some(sub) = id_string(&id).and_then(|id| subs.remove(&id)) {
                    stop(st, sub);
                }
            }
            ClientMsg::Auth { .. } => unreachable!("handled above"),
        }
    }
}

fn stop(st: &AppState, sub: Sub) {
    sub.task.abort();
    if let Some(id) = sub.query_view.lock().expect("query view lock").take() {
        st.coord.drop_query_view(id);
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    st: &AppState,
    access: &Access,
    outbox: &Outbox,
    id: &str,
    view: Option<String>,
    query: Option<String>,
    since: Option<Timestamp>,
    key: Option<Vec<String>>,
) -> Result<Sub, String> {
    let hub = st.coord.hub().clone();
    let query_view = Arc::new(Mutex::new(None));
    let max_backlog_bytes = st.config.client_buffer_bytes;
    let task = match (view, query) {
        (Some(view), None) => {
            if !access.can_read(&view) {
                return Err(format!("this token may not read \"{view}\""));
            }
            let key = key.map(|k| key_columns(&hub, &view, &k)).transpose()?;
            let pump = Pump {
                hub,
                view: Arc::from(view.as_str()),
                encoding: Encoding { id: Some(id.to_string()), key },
                outbox: outbox.clone(),
                max_backlog_bytes,
            };
            tokio::spawn(pump.run(since))
        }
        (None, Some(query)) => {
            if !access.can_write() {
                return Err("ad-hoc queries need an unrestricted token".into());
            }
            let coord = st.coord.clone();
            let outbox = outbox.clone();
            let slot = query_view.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let (view_id, name) = match coord.create_query_view(&query).await {
                    Ok(v) => v,
                    Err(e) => {
                        let mut v =
                            serde_json::json!({ "type": "error", "id": id, "message": e.message, "code": e.code });
                        if let Some(p) = e.position {
                            v["position"] = p.into();
                        }
                        outbox.send(control(v)).await;
                        return;
                    }
                };
                *slot.lock().expect("query view lock") = Some(view_id);
                let key = match key.map(|k| key_columns(&hub, &name, &k)).transpose() {
                    Ok(k) => k,
                    Err(message) => {
                        outbox.send(error_msg(Some(&id), &message)).await;
                        return;
                    }
                };
                let pump = Pump {
                    hub,
                    view: Arc::from(name.as_str()),
                    encoding: Encoding { id: Some(id), key },
                    outbox,
                    max_backlog_bytes,
                };
                pump.run(None).await;
            })
        }
        _ => return Err("subscribe needs exactly one of \"view\" or \"query\"".into()),
    };
    Ok(Sub { task, query_view })
}
