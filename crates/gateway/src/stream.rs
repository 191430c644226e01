//! `GET /api/v1/stream/{view}`: a WebSocket on upgrade, Server-Sent Events for
//! `Accept: text/event-stream`. Both forward the same hub frames: a snapshot, then every complete
//! timestamp in order. A client that falls behind the hub's bounded queue gets `resync` and a fresh
//! snapshot instead of an ever-growing backlog.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use viewcast_hub::{wire, Frame, Hub, HubError, Subscription};

use crate::{ApiError, AppState};

/// Frames of one view for one client, in order, resubscribing after an overflow.
pub(crate) struct Feed {
    hub: Arc<Hub>,
    view: String,
    sub: Subscription,
    pending: Vec<Frame>,
    done: bool,
}

impl Feed {
    pub(crate) fn new(hub: Arc<Hub>, sub: Subscription) -> Feed {
        let view = sub.view.clone();
        let pending = vec![sub.snapshot.clone()];
        Feed { hub, view, sub, pending, done: false }
    }

    /// The next frame to send, or `None` once the view is gone.
    pub(crate) async fn next(&mut self) -> Option<Frame> {
        if let Some(f) = self.pending.pop() {
            return Some(f);
        }
        if self.done {
            return None;
        }
        match self.sub.updates.recv().await {
            Ok(f) => Some(f),
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(view = %self.view, missed, "subscriber fell behind; resyncing");
                match self.hub.subscribe(&self.view) {
                    Ok(sub) => {
                        self.pending = vec![sub.snapshot.clone()];
                        self.sub = sub;
                        Some(wire::resync(&self.view))
                    }
                    Err(e) => {
                        self.done = true;
                        Some(wire::error(Some(&self.view), &e.to_string()))
                    }
                }
            }
            Err(RecvError::Closed) => {
                self.done = true;
                None
            }
        }
    }
}

fn subscribe(hub: &Hub, view: &str) -> Result<Subscription, ApiError> {
    hub.subscribe(view).map_err(|e| match e {
        HubError::UnknownView(_) => ApiError::NotFound(e.to_string()),
        HubError::NotReady(_) => ApiError::Unavailable(e.to_string()),
    })
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

pub(crate) async fn stream(
    State(st): State<AppState>,
    Path(view): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let hub = st.coord.hub().clone();
    if wants_websocket(&headers) {
        check_origin(&headers, &st.config.allowed_origins)?;
        let sub = subscribe(&hub, &view)?;
        let (mut parts, _) = request.into_parts();
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &st)
            .await
            .map_err(|e| ApiError::BadRequest(format!("bad WebSocket upgrade: {e}")))?;
        let max = st.config.max_ws_message_bytes;
        return Ok(ws
            .max_message_size(max)
            .max_frame_size(max)
            .read_buffer_size(16 << 10)
            .write_buffer_size(16 << 10)
            .max_write_buffer_size(4 << 20)
            .on_upgrade(move |socket| forward_ws(socket, Feed::new(hub, sub))));
    }
    if wants_sse(&headers) {
        let sub = subscribe(&hub, &view)?;
        let feed = Feed::new(hub, sub);
        let events = futures::stream::unfold(feed, |mut feed| async move {
            let frame = feed.next().await?;
            Some((Ok::<_, Infallible>(sse_event(&frame)), feed))
        });
        return Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response());
    }
    Err(ApiError::BadRequest("a stream needs a WebSocket upgrade or the header Accept: text/event-stream".to_string()))
}

pub(crate) fn sse_event(frame: &Frame) -> Event {
    let text = std::str::from_utf8(&frame.bytes).unwrap_or("{}");
    let event = Event::default().data(text);
    match frame.ts {
        Some(ts) => event.id(ts.to_string()),
        None => event,
    }
}

async fn forward_ws(socket: WebSocket, mut feed: Feed) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            frame = feed.next() => {
                let Some(frame) = frame else { break };
                let Ok(text) = Utf8Bytes::try_from(frame.bytes) else { break };
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}
