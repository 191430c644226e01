//! The Postgres wire endpoint: `psql`, drivers and BI tools speak to viewcast here.
//!
//! Owns: the wire protocol (TLS negotiation, startup without authentication, simple and extended
//! query, COPY out, cancel requests), session statements (`SET`, `SHOW`, `BEGIN`/`COMMIT`,
//! cursors), the few `pg_catalog` queries psql needs, and `SUBSCRIBE` streams fed from the hub's
//! shared change logs.
//! Statements themselves run through [`Coordinator::execute`].
//! Never touches: SQL planning, dataflow, HTTP. Supported surface: docs/pgwire.md.

mod conn;
mod encode;
mod pgcatalog;
mod subscribe;
mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::Instrument;
use viewcast_coord::Coordinator;

pub use subscribe::{output_desc, SubscribeStream};
pub use tls::{ServerTls, TlsConfigError};

/// Accepts Postgres connections on `listener` until `shutdown` resolves. Each connection runs on
/// its own task; a connection's resources (cursors, transient views) are freed when it ends.
/// With `tls`, clients may (or, if it is required, must) encrypt; without it they cannot.
pub async fn serve(
    listener: TcpListener,
    coord: Arc<Coordinator>,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let registry = Arc::new(conn::Registry::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "pgwire accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (coord, registry, tls) = (coord.clone(), registry.clone(), tls.clone());
                tokio::spawn(
                    async move {
                        let required = tls.as_ref().is_some_and(ServerTls::is_required);
                        let r = match tls::negotiate(stream, tls.as_ref()).await {
                            Ok(transport) => conn::Conn::new(coord, registry, transport, required).run().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "pgwire connection ended");
                        }
                    }
                    .instrument(tracing::info_span!("pgwire-conn", %peer)),
                );
            }
        }
    }
}
