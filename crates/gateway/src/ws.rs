//! `GET /api/v1/ws`: one WebSocket carrying any number of subscriptions (see docs/protocol.md).
//!
//! Client messages: `subscribe` (a view or an ad-hoc `query`, with `since` and `key` options),
//! `unsubscribe`, and `auth` (first, when a token is required and not sent as a header or cookie).
//! Every server message carries its subscription's `id`; a bad message gets an `error` and the
//! connection keeps serving its other subscriptions.
//!
//! The connection's socket joins a writer shard (`fanout`) like a single-view stream's; this
//! module is its reader: it parses what the client sends, opens subscriptions (an ad-hoc query's
//! view first), and hands them, their ends and its replies to the shard.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use viewcast_coord::Coordinator;
use viewcast_hub::wire;
use viewcast_plan::GlobalId;
use viewcast_repr::Timestamp;

use crate::auth::Access;
use crate::fanout::{Link, Messages, NewSub, ReaderEvent};
use crate::feed::Encoding;
use crate::stream::{accept_websocket, check_origin, key_columns, upgraded_tcp};
use crate::{ApiError, AppState};

/// The unit of a multiplexed connection's budget for what its reader queues (replies and
/// subscription starts): a reply costs one, a start its size in units. Past the budget
/// (`client_buffer_bytes`, at least [`MIN_BUDGET_UNITS`] units) the reader stops reading the
/// client's messages until the client reads what is queued.
const BUDGET_UNIT: usize = 1 << 10;
const MIN_BUDGET_UNITS: usize = 64;

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

fn id_string(id: &Value) -> Option<Arc<str>> {
    match id {
        Value::String(s) if !s.is_empty() && s.len() <= 128 => Some(Arc::from(s.as_str())),
        Value::Number(n) => Some(Arc::from(n.to_string())),
        _ => None,
    }
}

fn error_msg(id: Option<&str>, message: &str) -> Bytes {
    let error = wire::error(None, message);
    match id {
        Some(id) => error.with_id(id, ""),
        None => error.bytes,
    }
}

/// An ad-hoc query's transient view: dropped with its subscription.
pub(crate) struct QueryView {
    coord: Arc<Coordinator>,
    id: GlobalId,
}

impl Drop for QueryView {
    fn drop(&mut self) {
        self.coord.drop_query_view(self.id);
    }
}

pub(crate) async fn ws(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    check_origin(request.headers(), &st.config.allowed_origins)?;
    let slot = st.limits.admit(peer.ip())?;
    let access = st.auth.from_headers(request.headers());
    let (response, on_upgrade) = accept_websocket(request)?;
    tokio::spawn(async move {
        if let Some((tcp, read_buf)) = upgraded_tcp(on_upgrade).await {
            let fanout = st.fanout.clone();
            fanout.serve_mux(tcp, read_buf, MuxReader::new(st, access), slot).await;
        }
    });
    Ok(response)
}

/// The reader of one multiplexed connection.
pub(crate) struct MuxReader {
    st: AppState,
    access: Access,
    /// Ids of the open subscriptions, shared with the shard (which removes those that end there).
    open: Arc<Mutex<HashSet<Arc<str>>>>,
    /// Units of unwritten replies and subscription starts this connection may have queued.
    budget: Arc<Semaphore>,
    budget_units: u32,
}

impl MuxReader {
    fn new(st: AppState, access: Access) -> MuxReader {
        let units = (st.config.client_buffer_bytes / BUDGET_UNIT).clamp(MIN_BUDGET_UNITS, u32::MAX as usize);
        MuxReader {
            st,
            access,
            open: Arc::default(),
            budget: Arc::new(Semaphore::new(units)),
            budget_units: units as u32,
        }
    }

    pub(crate) fn open_ids(&self) -> Arc<Mutex<HashSet<Arc<str>>>> {
        self.open.clone()
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `bytes` more fit the connection's budget (a start larger than all of it waits
    /// for all of it, then goes alone).
    async fn room_for(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(BUDGET_UNIT).clamp(1, self.budget_units as usize) as u32;
        self.budget.clone().acquire_many_owned(units).await.ok()
    }

    /// Queues `bytes` for the client, waiting while its budget is spent.
    async fn reply(&self, link: &Link, bytes: Bytes) {
        let Some(permit) = self.room_for(bytes.len()).await else { return };
        let _ = link.events.send(ReaderEvent::Reply(link.id, bytes, permit)).await;
    }

    async fn error(&self, link: &Link, id: Option<&str>, message: &str) {
        self.reply(link, error_msg(id, message)).await;
    }

    /// Opens a subscription: the view's, or an ad-hoc query's new view. `Err` is the reply.
    async fn start(
        &self,
        id: &Arc<str>,
        view: Option<String>,
        query: Option<String>,
        since: Option<Timestamp>,
        key: Option<Vec<String>>,
    ) -> Result<NewSub, Bytes> {
        let hub = self.st.coord.hub();
        let fail = |message: &str| error_msg(Some(id), message);
        match (view, query) {
            (Some(view), None) => {
                if !self.access.can_read(&view) {
                    return Err(fail(&format!("this token may not read \"{view}\"")));
                }
                let key = key.map(|k| key_columns(hub, &view, &k)).transpose().map_err(|m| fail(&m))?;
                let encoding = Encoding { id: Some(id.clone()), key };
                NewSub::open(hub, &view, since, encoding.clone(), &self.st.metrics)
                    .map_err(|e| encoding.error(&view, &e.to_string()))
            }
            (None, Some(query)) => {
                if !self.access.can_write() {
                    return Err(fail("ad-hoc queries need an unrestricted token"));
                }
                let (view_id, name) = self.st.coord.create_query_view(&query).await.map_err(|e| {
                    let mut v =
                        serde_json::json!({ "type": "error", "id": &**id, "message": e.message, "code": e.code });
                    if let Some(p) = e.position {
                        v["position"] = p.into();
                    }
                    Bytes::from(v.to_string())
                })?;
                let query = QueryView { coord: self.st.coord.clone(), id: view_id };
                let key = key.map(|k| key_columns(hub, &name, &k)).transpose().map_err(|m| fail(&m))?;
                let encoding = Encoding { id: Some(id.clone()), key };
                let new = NewSub::open(hub, &name, None, encoding.clone(), &self.st.metrics)
                    .map_err(|e| encoding.error(&name, &e.to_string()))?;
                Ok(new.owning(query))
            }
            _ => Err(fail("subscribe needs exactly one of \"view\" or \"query\"")),
        }
    }
}

impl Messages for MuxReader {
    async fn message(&mut self, link: &Link, message: Message) -> bool {
        let text = match message {
            Message::Text(t) => t,
            _ => {
                self.error(link, None, "binary messages are not understood; send JSON text").await;
                return true;
            }
        };
        let msg: ClientMsg = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                self.error(link, None, &format!("bad message: {e}")).await;
                return true;
            }
        };
        if let ClientMsg::Auth { token } = &msg {
            self.access = self.st.auth.check(Some(token));
            if matches!(self.access, Access::None) {
                self.error(link, None, "invalid token").await;
                return false;
            }
            return true;
        }
        if matches!(self.access, Access::None) {
            self.error(link, None, "authentication required: send {\"type\":\"auth\",\"token\":...} first").await;
            return false;
        }
        match msg {
            ClientMsg::Subscribe { id, view, query, since, key } => {
                let Some(id) = id_string(&id) else {
                    self.error(link, None, "subscribe needs an \"id\" (a string or number)").await;
                    return true;
                };
                let refused = {
                    let mut open = self.open();
                    if open.contains(&id) {
                        Some("a subscription with this id is already open")
                    } else if open.len() >= self.st.config.max_subscriptions_per_connection {
                        Some("too many subscriptions on this connection")
                    } else {
                        open.insert(id.clone());
                        None
                    }
                };
                if let Some(message) = refused {
                    self.error(link, Some(&id), message).await;
                    return true;
                }
                match self.start(&id, view, query, since, key).await {
                    Ok(new) => {
                        let Some(permit) = self.room_for(new.start_bytes()).await else { return false };
                        let _ = link.events.send(ReaderEvent::Subscribe(link.id, Box::new(new.holding(permit)))).await;
                    }
                    Err(reply) => {
                        self.open().remove(&id);
                        self.reply(link, reply).await;
                    }
                }
            }
            ClientMsg::Unsubscribe { id } => {
                if let Some(id) = id_string(&id) {
                    if self.open().remove(&id) {
                        let _ = link.events.send(ReaderEvent::Unsubscribe(link.id, id)).await;
                    }
                }
            }
            ClientMsg::Auth { .. } => unreachable!("handled above"),
        }
        true
    }

    fn idle_timeout(&self) -> Option<std::time::Duration> {
        Some(self.st.config.idle_timeout)
    }

    async fn idle(&mut self, link: &Link) {
        self.error(link, None, "idle timeout: no message or pong from the client").await;
    }
}
