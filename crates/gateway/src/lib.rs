//! The HTTP face of viewcast: the SQL API, the view catalog, live streams (WebSocket and
//! Server-Sent Events) and the web assets.
//!
//! Owns: routes, request/response shapes, per-connection forwarding of hub frames, limits.
//! Never touches: dataflow, SQL planning, change-log state (it only reads frames from the hub).

pub mod assets;
mod error;
mod sql_api;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use viewcast_coord::Coordinator;

pub use error::ApiError;

/// Limits and policies of the HTTP server.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest accepted request body (SQL API) in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted WebSocket message from a client, in bytes.
    pub max_ws_message_bytes: usize,
    /// Origins allowed to open WebSockets besides the server's own host. Empty: same host only.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig { max_body_bytes: 1 << 20, max_ws_message_bytes: 64 << 10, allowed_origins: Vec::new() }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub coord: Arc<Coordinator>,
    pub config: Arc<GatewayConfig>,
}

/// The router, for serving or for tests.
pub fn router(coord: Arc<Coordinator>, config: GatewayConfig) -> Router {
    let max_body = config.max_body_bytes;
    let state = AppState { coord, config: Arc::new(config) };
    Router::new()
        .route("/api/sql", post(sql_api::sql))
        .route("/api/v1/views", get(sql_api::views))
        .route("/api/v1/stream/{view}", get(stream::stream))
        .fallback(get(assets_handler))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .with_state(state)
}

async fn assets_handler(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    match assets::asset(uri.path()) {
        Some(a) => ([(axum::http::header::CONTENT_TYPE, a.content_type)], a.bytes).into_response(),
        None => ApiError::NotFound(format!("no such page: {}", uri.path())).into_response(),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    coord: Arc<Coordinator>,
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(coord, config);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
