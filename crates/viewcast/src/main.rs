//! The `viewcast` binary: parses flags, sets up tracing, starts the coordinator and the HTTP
//! server, and runs until Ctrl-C. Everything else lives in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult, HubConfig};
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
    /// Gateway mode: serves views of an upstream Materialize (or viewcast) to browsers, pgwire
    /// SUBSCRIBE clients and sinks, with one upstream SUBSCRIBE per view however many clients watch.
    Gateway {
        #[command(flatten)]
        server: ServerArgs,
        /// The upstream's connection string, e.g.
        /// postgres://USER:PASSWORD@HOST:6875/materialize?sslmode=require, with libpq's sslmode
        /// (disable, prefer: the default, require, verify-ca, verify-full) and sslrootcert=PEM
        /// (else the webpki roots). Prefer the VIEWCAST_UPSTREAM environment variable when it
        /// holds a password (kept out of `ps`).
        #[arg(long, env = "VIEWCAST_UPSTREAM", hide_env_values = true)]
        upstream: String,
        /// An upstream view to serve, as `NAME` or `LOCAL=UPSTREAM_NAME`. Repeatable.
        #[arg(long = "view", required = true)]
        views: Vec<String>,
        /// SQL run after the upstream views exist (e.g. local views over them).
        #[arg(long)]
        sql: Option<PathBuf>,
        /// How long to wait at start for the upstream to accept connections, retrying with
        /// backoff, before giving up (seconds). Without it the gateway waits as long as it takes:
        /// it may start before its upstream.
        #[arg(long, value_name = "SECONDS")]
        upstream_wait: Option<u64>,
    },
    /// Reads a file once through a source named `wikirecent` and the demo's views (or the views of
    /// --sql), printing progress to stderr and the final top10 to stdout.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The file to read (one record per line).
    file: PathBuf,
    /// How lines become rows: json (NDJSON: `data jsonb`), text, or regex (see --regex).
    #[arg(long, value_enum, default_value = "json")]
    format: ReplayFormat,
    /// The pattern of --format regex; its named groups are the columns.
    #[arg(long, default_value = "^data: (?P<data>.*)")]
    regex: String,
    /// Views to create over `wikirecent` instead of the demo's (SQL statements).
    #[arg(long)]
    sql: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayFormat {
    Json,
    Text,
    Regex,
}

#[derive(Args)]
struct ServerArgs {
    /// Address of the HTTP server (web page, SQL API, streams).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Share --listen with other viewcast processes started with this flag (SO_REUSEPORT): the
    /// kernel spreads new connections over them. Each process serves its own clients, so run
    /// processes with the same views (e.g. gateways following one upstream).
    #[arg(long)]
    reuse_port: bool,
    /// Address of the Postgres wire endpoint (psql, drivers, SUBSCRIBE).
    #[arg(long, default_value = "127.0.0.1:6875")]
    pgwire_listen: SocketAddr,
    /// PEM certificate (then intermediates) for TLS on the Postgres wire endpoint, with
    /// --pg-tls-key. Without them the endpoint refuses TLS (clients use plain text).
    #[arg(long, requires = "pg_tls_key")]
    pg_tls_cert: Option<PathBuf>,
    /// PEM private key of --pg-tls-cert.
    #[arg(long, requires = "pg_tls_cert")]
    pg_tls_key: Option<PathBuf>,
    /// Refuse Postgres sessions that are not encrypted (needs --pg-tls-cert).
    #[arg(long, requires = "pg_tls_cert")]
    pg_tls_required: bool,
    /// Length of a timestamp in milliseconds: rows ingested within one tick become visible together.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Dataflow worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Most milliseconds between two messages of an unchanging view's stream: a `progress`
    /// message is sent once this much time passed since the last one (0: at every tick).
    #[arg(long, default_value_t = 1000)]
    progress_ms: u64,
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

// glibc's allocator serializes on the frees that rows make when they cross from a source's
// thread to the engine's; mimalloc's per-thread heaps make ingestion about 3x faster. It is built
// without transparent huge pages (`no_thp` in Cargo.toml): they made the tick latency's tail worse.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let (server, startup) = match cli.command {
        Command::Replay(args) => return replay(args).await,
        Command::Demo { server, events_per_second } => {
            let sql = DEMO_SQL.replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {events_per_second}"));
            (server, Startup { sql, upstream: None })
        }
        Command::Serve { server, sql } => (server, Startup { sql: read_sql(sql.as_deref())?, upstream: None }),
        Command::Gateway { server, upstream, views, sql, upstream_wait } => {
            let views = views.iter().map(|v| view_spec(v)).collect::<anyhow::Result<Vec<_>>>()?;
            let first = views.first().map_or("", |(_, remote)| *remote);
            let config = viewcast_upstream::UpstreamConfig::new(&upstream, first);
            let mut text = gateway_sql(&upstream, &views);
            text.push_str(&read_sql(sql.as_deref())?);
            let wait = upstream_wait.map(std::time::Duration::from_secs);
            (server, Startup { sql: text, upstream: Some((config, wait)) })
        }
    };
    run(server, startup).await
}

/// What a server does before it is ready: in gateway mode, wait for the upstream; then run its SQL.
struct Startup {
    sql: String,
    /// The upstream to wait for, and for how long at most (`None`: as long as it takes).
    upstream: Option<(viewcast_upstream::UpstreamConfig, Option<std::time::Duration>)>,
}

impl Startup {
    async fn run(self, coord: &Coordinator, readiness: &viewcast_gateway::Readiness) -> anyhow::Result<()> {
        if let Some((config, wait)) = &self.upstream {
            readiness.not_ready("waiting for the upstream to accept connections");
            viewcast_upstream::wait_until_reachable(config, *wait).await.context("the upstream is not reachable")?;
            readiness.not_ready("creating the upstream views");
        }
        for result in coord.execute(&self.sql).await {
            match result {
                ExecuteResult::Error(e) => anyhow::bail!("startup SQL failed: {e} (SQLSTATE {})", e.code),
                ExecuteResult::Ok { tag } | ExecuteResult::Rows { tag, .. } => tracing::info!(%tag, "startup SQL"),
            }
        }
        readiness.set_ready();
        Ok(())
    }
}

fn read_sql(path: Option<&std::path::Path>) -> anyhow::Result<String> {
    match path {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display())),
        None => Ok(String::new()),
    }
}

/// A `--view` argument, `NAME` or `LOCAL=UPSTREAM`, as (local name, upstream view).
fn view_spec(v: &str) -> anyhow::Result<(&str, &str)> {
    let (local, remote) = v.split_once('=').unwrap_or((v, v));
    let (local, remote) = (local.rsplit('.').next().unwrap_or(local).trim(), remote.trim());
    anyhow::ensure!(!local.is_empty() && !remote.is_empty(), "--view {v:?}: expected NAME or LOCAL=UPSTREAM");
    Ok((local, remote))
}

/// The statements that make each `--view` an upstream view: `CREATE SOURCE local FROM UPSTREAM
/// 'url' SUBSCRIBE upstream_name;`.
fn gateway_sql(upstream: &str, views: &[(&str, &str)]) -> String {
    let url = upstream.replace('\'', "''");
    let mut sql = String::new();
    for (local, remote) in views {
        sql.push_str(&format!("CREATE SOURCE {local} FROM UPSTREAM '{url}' SUBSCRIBE {remote};\n"));
    }
    sql
}

/// Serves HTTP and pgwire from the start (health and readiness answer while a gateway waits for
/// its upstream), runs `startup`, and prints `viewcast is running: open URL` once it is ready.
async fn run(args: ServerArgs, startup: Startup) -> anyhow::Result<()> {
    let pg_tls = match (&args.pg_tls_cert, &args.pg_tls_key) {
        (Some(cert), Some(key)) => Some(
            viewcast_pgwire::ServerTls::from_pem_files(cert, key)
                .context("loading --pg-tls-cert/--pg-tls-key")?
                .required(args.pg_tls_required),
        ),
        _ => None,
    };
    let defaults = CoordConfig::default();
    let hub = HubConfig { progress_interval_ms: args.progress_ms, ..defaults.hub };
    let coord = Arc::new(
        Coordinator::start(CoordConfig { workers: args.workers, tick_ms: args.tick_ms, hub, ..defaults })
            .context("starting the engine")?,
    );
    let options = viewcast_gateway::ListenOptions { reuse_port: args.reuse_port };
    let listener = viewcast_gateway::bind(args.listen, options).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse && !args.reuse_port {
            " (another process listens there; to share the address, start every process with --reuse-port)"
        } else {
            ""
        };
        anyhow::anyhow!("binding {}: {e}{hint}", args.listen)
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
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
    let readiness = config.readiness.clone();
    readiness.not_ready("running the startup SQL");
    let pg_listener = tokio::net::TcpListener::bind(args.pgwire_listen)
        .await
        .with_context(|| format!("binding {}", args.pgwire_listen))?;
    let pg_addr = pg_listener.local_addr()?;
    tracing::info!(%pg_addr, tls = pg_tls.is_some(), tls_required = args.pg_tls_required, "pgwire serving");
    println!("pgwire listening on {pg_addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pg = tokio::spawn(viewcast_pgwire::serve(pg_listener, coord.clone(), pg_tls, {
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
    let mut http = tokio::spawn(viewcast_gateway::serve(listener, coord.clone(), config, shutdown));
    // A startup that fails (bad SQL, an upstream that never answers) ends the process; so does a
    // shutdown (Ctrl-C) before it is done.
    tokio::select! {
        started = startup.run(&coord, &readiness) => started?,
        served = &mut http => {
            served.context("HTTP task")??;
            return Ok(());
        }
    }
    println!("viewcast is running: open http://{addr}/");
    http.await.context("HTTP task")??;
    pg.await.context("pgwire task")??;
    Ok(())
}

/// Reads `args.file` once through the views and reports events per second, end to end (from the
/// first byte read to the last event counted by the views).
async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let size = std::fs::metadata(&args.file).with_context(|| format!("reading {}", args.file.display()))?.len();
    let path = args.file.display().to_string().replace('\'', "''");
    let format = match args.format {
        ReplayFormat::Json => "JSON".to_string(),
        ReplayFormat::Text => "TEXT".to_string(),
        ReplayFormat::Regex => format!("REGEX '{}'", args.regex.replace('\'', "''")),
    };
    let views = match &args.sql {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => DEMO_SQL.lines().filter(|l| !l.starts_with("CREATE SOURCE")).collect::<Vec<_>>().join("\n"),
    };
    let coord =
        Coordinator::start(CoordConfig { workers: args.workers, tick_ms: args.tick_ms, ..CoordConfig::default() })
            .context("starting the engine")?;
    let started = std::time::Instant::now();
    let sql = format!("CREATE SOURCE wikirecent FROM FILE '{path}' FORMAT {format}; {views}");
    for result in coord.execute(&sql).await {
        if let ExecuteResult::Error(e) = result {
            anyhow::bail!("{e} (SQLSTATE {})", e.code);
        }
    }
    let has_counter = coord.relations().iter().any(|r| r.name == "counter");
    let count_sql = if has_counter { "SELECT * FROM counter" } else { "SELECT count(*) FROM wikirecent" };
    let mut stderr = std::io::stderr();
    loop {
        let stats = coord
            .relations()
            .into_iter()
            .find(|r| r.name == "wikirecent")
            .and_then(|r| r.source_stats)
            .context("the source is gone")?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let frac = if size == 0 { 1.0 } else { (stats.bytes_in as f64 / size as f64).min(1.0) };
        let bar: String = (0..30).map(|i| if (i as f64) < frac * 30.0 { '#' } else { '-' }).collect();
        let _ = write!(
            stderr,
            "\r[{bar}] {:5.1}%  {} events  {:.0} events/s  {} errors  {} skipped ",
            frac * 100.0,
            stats.events_in,
            stats.events_in as f64 / secs,
            stats.errors,
            stats.skipped
        );
        if stats.finished {
            let counted = match coord.query(count_sql).await {
                Ok((_, rows)) => rows.first().map(|r| r.get(0).to_json().as_i64().unwrap_or(0)).unwrap_or(0),
                Err(e) => anyhow::bail!("{count_sql}: {e}"),
            };
            if counted as u64 >= stats.events_in {
                let secs = started.elapsed().as_secs_f64();
                let _ = writeln!(
                    stderr,
                    "\ndone: {} events through the views in {secs:.2} s: {:.0} events/s ({:.1} MB/s)",
                    stats.events_in,
                    stats.events_in as f64 / secs,
                    stats.bytes_in as f64 / secs / 1e6
                );
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(if stats.finished { 20 } else { 250 })).await;
    }
    if coord.relations().iter().any(|r| r.name == "top10") {
        if let Ok((_, rows)) = coord.query("SELECT * FROM top10 ORDER BY count DESC").await {
            for row in rows {
                println!("{}", row.to_json());
            }
        }
    }
    Ok(())
}
