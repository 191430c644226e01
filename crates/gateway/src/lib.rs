//! The HTTP face of viewcast: the SQL API, the view catalog, live streams (WebSocket and
//! Server-Sent Events) and the web assets.
//!
//! Owns: routes, request/response shapes, per-connection forwarding of hub frames, limits.
//! Never touches: dataflow, SQL planning, change-log state (it only reads frames from the hub).

pub mod assets;
pub mod auth;
mod error;
mod fanout;
mod feed;
mod sql_api;
mod stream;
mod webhook;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use viewcast_coord::Coordinator;

pub use error::ApiError;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits and policies of the HTTP server.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest accepted request body (SQL API) in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted WebSocket message from a client, in bytes.
    pub max_ws_message_bytes: usize,
    /// Origins allowed to open WebSockets besides the server's own host. Empty: same host only.
    pub allowed_origins: Vec<String>,
    /// Tokens and what they may read; empty means no authentication (local use).
    pub grants: Vec<auth::Grant>,
    /// Bytes queued for one client before its updates are consolidated (and, past that, resynced).
    pub client_buffer_bytes: usize,
    /// A client that cannot take a message for this long is closed with a resume point.
    pub stall_timeout: Duration,
    /// A multiplexed WebSocket with no message or pong for this long is closed.
    pub idle_timeout: Duration,
    /// Pings are sent this often (clients answer with pongs, which count as activity).
    pub ping_interval: Duration,
    /// Open streaming connections, in total and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_subscriptions_per_connection: usize,
    /// Whether the server's views are ready (`GET /api/v1/ready`); shared with whoever sets it.
    pub readiness: Readiness,
}

/// Whether a server is ready to serve its views. A gateway is not while it waits for its upstream
/// at start: it answers `GET /api/v1/health` (the process serves) and `GET /api/v1/ready` (503,
/// with the reason) meanwhile, so an orchestrator neither restarts it nor routes clients to it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<std::sync::RwLock<Option<String>>>);

impl Readiness {
    /// Not ready, and why (e.g. "waiting for the upstream").
    pub fn not_ready(&self, why: impl Into<String>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.into());
    }

    pub fn set_ready(&self) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// `None` when ready, else why not.
    pub fn reason(&self) -> Option<String> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 1 << 20,
            max_ws_message_bytes: 64 << 10,
            allowed_origins: Vec::new(),
            grants: Vec::new(),
            client_buffer_bytes: 1 << 20,
            stall_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            ping_interval: Duration::from_secs(20),
            max_connections: 60_000,
            max_connections_per_ip: 60_000,
            max_subscriptions_per_connection: 256,
            readiness: Readiness::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub coord: Arc<Coordinator>,
    pub config: Arc<GatewayConfig>,
    pub auth: Arc<auth::Auth>,
    pub limits: Arc<auth::ConnectionLimits>,
    pub metrics: Arc<feed::StreamMetrics>,
    pub fanout: Arc<fanout::Fanout>,
}

/// The router, for serving or for tests.
pub fn router(coord: Arc<Coordinator>, config: GatewayConfig) -> Router {
    let max_body = config.max_body_bytes;
    let auth = Arc::new(auth::Auth::new(config.grants.clone()));
    let limits = auth::ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
    let metrics = Arc::new(feed::StreamMetrics::default());
    let config = Arc::new(config);
    let fanout = Arc::new(fanout::Fanout::new(coord.hub().clone(), config.clone(), metrics.clone()));
    let state = AppState { coord, config, auth, limits, metrics, fanout };
    Router::new()
        .route("/api/sql", post(sql_api::sql))
        .route("/api/v1/views", get(sql_api::views))
        .route("/api/v1/ws", get(ws::ws))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/health", get(health))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/stream", get(stream::stream_many))
        .route("/api/v1/stream/{view}", get(stream::stream_one))
        .route("/api/webhook/{source}", post(webhook::ingest))
        .fallback(get(assets_handler))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .with_state(state)
}

/// Liveness: the process serves HTTP.
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

#[derive(serde::Deserialize)]
struct ReadyParams {
    /// Not ready while a view's last complete timestamp is further behind the wall clock than
    /// this (ms): an upstream that is gone, or an engine that stopped sealing.
    max_lag_ms: Option<u64>,
}

/// Readiness: 200 once the server's views exist (a gateway's upstream answered), else 503 and why.
/// The body gives how far each view's last complete timestamp is behind the wall clock (`lag_ms`,
/// for the views the caller's token may read; `max_lag_ms` over all of them). A gateway that lost
/// its upstream stays ready by default (it serves what it has, and every gateway of that upstream
/// lost it alike); `?max_lag_ms=N` makes it not ready while a view lags more than N ms.
async fn ready(
    axum::extract::State(st): axum::extract::State<AppState>,
    axum::extract::Query(params): axum::extract::Query<ReadyParams>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if let Some(reason) = st.config.readiness.reason() {
        let body = serde_json::json!({ "ready": false, "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let now = viewcast_coord::now_ms();
    let access = st.auth.from_headers(&headers);
    let (mut lag, mut max_lag) = (serde_json::Map::new(), 0);
    for view in st.coord.relations() {
        let Some(sealed) = view.sealed_ts else { continue };
        let ms = now.saturating_sub(sealed);
        max_lag = max_lag.max(ms);
        if access.can_read(&view.name) {
            lag.insert(view.name, ms.into());
        }
    }
    match params.max_lag_ms {
        Some(limit) if max_lag > limit => {
            let reason = format!("a view is {max_lag} ms behind the clock (more than {limit})");
            let body = serde_json::json!({ "ready": false, "reason": reason, "max_lag_ms": max_lag, "lag_ms": lag });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
        _ => axum::Json(serde_json::json!({ "ready": true, "max_lag_ms": max_lag, "lag_ms": lag })).into_response(),
    }
}

/// Live counters of the streaming layer.
async fn stats(axum::extract::State(st): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &st.metrics;
    axum::Json(serde_json::json!({
        "connections": st.limits.open(),
        "queued_bytes": m.queued_bytes.load(Relaxed),
        "backlog_bytes": m.backlog_bytes.load(Relaxed),
        "max_backlog_bytes": m.max_backlog_bytes.load(Relaxed),
        "consolidated": m.consolidated.load(Relaxed),
        "resyncs": m.resyncs.load(Relaxed),
        "stalled_closes": m.stalled_closes.load(Relaxed),
        "sealed_ts": st.coord.sealed_ts(),
        // Where a live frame's time goes (µs; see viewcast_hub::timeline): the hub's stages, then
        // the gateway's, each from the hub's serialization of the frame.
        "timeline": {
            "hub": st.coord.hub().timeline().to_json(),
            "frame_to_pump": m.frame_to_pump.snapshot().to_json(),
            "frame_to_written": m.frame_to_written.snapshot().to_json(),
        },
    }))
}

async fn assets_handler(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    match assets::asset(uri.path()) {
        Some(a) => ([(axum::http::header::CONTENT_TYPE, a.content_type)], a.bytes).into_response(),
        None => ApiError::NotFound(format!("no such page: {}", uri.path())).into_response(),
    }
}

/// Accept backlog of the HTTP listener: a burst of connections beyond it costs clients whole
/// seconds of SYN retries. The kernel caps it at `net.core.somaxconn` (4,096 on the bench host).
pub const LISTEN_BACKLOG: u32 = 8192;

/// How the HTTP listener is bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListenOptions {
    /// `SO_REUSEPORT`: several processes (each binding with it, as the same user) share the
    /// address, and the kernel spreads incoming connections over them by a hash of the
    /// connection's addresses. Each listener keeps its own backlog of [`LISTEN_BACKLOG`].
    /// Without it, binding an address another listener holds fails with `AddrInUse`.
    pub reuse_port: bool,
}

/// Binds the HTTP listener with a deep accept backlog ([`LISTEN_BACKLOG`]).
pub fn bind(addr: SocketAddr, options: ListenOptions) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if options.reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` resolves, then lets the requests in progress finish.
///
/// Each accepted connection is served by hyper's HTTP/1 connection directly over its TCP socket
/// (not axum's `serve`, whose connections sit behind a protocol-sniffing wrapper), so that a
/// single-view WebSocket's upgrade hands the gateway the socket itself: the writer shards write
/// each frame to it with one `send` (`fanout`).
pub async fn serve(
    listener: TcpListener,
    coord: Arc<Coordinator>,
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(coord, config);
    // Dropped to tell every connection to finish; each holds a receiver of `closed` until it has.
    let (stop, stopping) = tokio::sync::watch::channel(());
    let (closed_tx, closed) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Too many open files and the like: back off instead of spinning.
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Streams send small frames: with Nagle's algorithm a frame sent while the previous one is
        // unacknowledged waits for the client's delayed ACK (up to 40 ms on Linux loopback).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        let (mut stopping, closed) = (stopping.clone(), closed.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended");
            }
            drop(closed);
        });
    }
    drop(listener);
    drop(stop);
    drop(closed);
    closed_tx.closed().await;
    Ok(())
}
