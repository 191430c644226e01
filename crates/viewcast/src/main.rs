//! The `viewcast` binary: parses flags, sets up tracing, starts the coordinator and the HTTP
//! server, and runs until Ctrl-C. Everything else lives in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};
use viewcast_gateway::auth::Grant;
use viewcast_gateway::GatewayConfig;

/// SQL views over live event streams, served as live web pages and feeds.
#[derive(Parser)]
#[command(name = "viewcast", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the Wikipedia dashboard: a synthetic edit stream, its views, and the live page.
    Demo {
        #[command(flatten)]
        server: ServerArgs,
        /// Edits per second from the load generator.
        #[arg(long, default_value_t = 200)]
        events_per_second: u64,
    },
    /// Runs the statements of a SQL file at start, then serves its views.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// A file of SQL statements separated by semicolons.
        #[arg(long)]
        sql: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// Address of the HTTP server (web page, SQL API, streams).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the Postgres wire endpoint (psql, drivers, SUBSCRIBE).
    #[arg(long, default_value = "127.0.0.1:6875")]
    pgwire_listen: SocketAddr,
    /// Length of a timestamp in milliseconds: rows ingested within one tick become visible together.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Dataflow worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// An Origin (e.g. http://localhost:3000) allowed to open WebSockets besides the server's own. Repeatable.
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// A token that may read every view and write (SQL API, ad-hoc queries). With any token set,
    /// every request needs one. Prefer the VIEWCAST_TOKEN environment variable (kept out of `ps`).
    #[arg(long, env = "VIEWCAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A token that may only read the listed views: `TOKEN=view1,view2`. Repeatable.
    #[arg(long = "read-token", value_parser = parse_read_token)]
    read_tokens: Vec<Grant>,
    /// Bytes queued per client before its updates are consolidated (then resynced).
    #[arg(long, default_value_t = 1 << 20)]
    client_buffer_bytes: usize,
    /// Most open streaming connections, and most per client address.
    #[arg(long, default_value_t = 60_000)]
    max_connections: usize,
    #[arg(long, default_value_t = 60_000)]
    max_connections_per_ip: usize,
}

fn parse_read_token(s: &str) -> Result<Grant, String> {
    let (token, views) = s.split_once('=').ok_or("expected TOKEN=view1,view2")?;
    if token.is_empty() {
        return Err("empty token".into());
    }
    let views = views.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect();
    Ok(Grant { token: token.to_string(), views: Some(views) })
}

/// The demo's SQL: the 2020 dashboard's views, unchanged.
pub const DEMO_SQL: &str = include_str!("demo.sql");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,viewcast=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let (server, sql) = match cli.command {
        Command::Demo { server, events_per_second } => {
            (server, DEMO_SQL.replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {events_per_second}")))
        }
        Command::Serve { server, sql } => {
            let text = match sql {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            (server, text)
        }
    };
    run(server, &sql).await
}

async fn run(args: ServerArgs, sql: &str) -> anyhow::Result<()> {
    let coord = Arc::new(
        Coordinator::start(CoordConfig { workers: args.workers, tick_ms: args.tick_ms, ..CoordConfig::default() })
            .context("starting the engine")?,
    );
    if !sql.trim().is_empty() {
        for result in coord.execute(sql).await {
            match result {
                ExecuteResult::Error(e) => anyhow::bail!("startup SQL failed: {e} (SQLSTATE {})", e.code),
                ExecuteResult::Ok { tag } | ExecuteResult::Rows { tag, .. } => tracing::info!(%tag, "startup SQL"),
            }
        }
    }
    let listener = viewcast_gateway::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    println!("viewcast is running: open http://{addr}/");
    let mut grants = args.read_tokens;
    if let Some(token) = args.token {
        grants.push(Grant { token, views: None });
    }
    let config = GatewayConfig {
        allowed_origins: args.allow_origins,
        grants,
        client_buffer_bytes: args.client_buffer_bytes,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        ..GatewayConfig::default()
    };
    let pg_listener = tokio::net::TcpListener::bind(args.pgwire_listen)
        .await
        .with_context(|| format!("binding {}", args.pgwire_listen))?;
    let pg_addr = pg_listener.local_addr()?;
    tracing::info!(%pg_addr, "pgwire serving");
    println!("pgwire listening on {pg_addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pg = tokio::spawn(viewcast_pgwire::serve(pg_listener, coord.clone(), {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }));
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    viewcast_gateway::serve(listener, coord, config, shutdown).await?;
    pg.await.context("pgwire task")??;
    Ok(())
}
