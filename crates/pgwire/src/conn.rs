//! One client connection: startup, the simple and extended query protocols, COPY out, cursors,
//! and streaming `SUBSCRIBE` with cancellation.
//!
//! Messages are decoded and encoded with the `pgwire` crate's message types; this module owns the
//! protocol state machine so it can flush after every timestamp of a live stream and notice a
//! cancel request or a vanished client while waiting for the next one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgwire::messages::data::{FieldDescription, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete, PortalSuspended};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ErrorResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::{DecodeContext, PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use viewcast_coord::{Coordinator, ExecuteResult, StatementError};
use viewcast_repr::{ColumnType, Datum, RelationDesc, Row, ScalarType};

use crate::encode::{self, Format};
use crate::pgcatalog::{self, Session};
use crate::subscribe::{output_desc, SubscribeStream};
use crate::tls::Transport;

/// Output is written to the socket once this much is buffered, even mid-timestamp.
const FLUSH_BYTES: usize = 256 * 1024;

/// Connections of one listener: what a cancel request (arriving on its own connection) needs.
#[derive(Default)]
pub struct Registry {
    next_pid: AtomicI32,
    cancels: Mutex<HashMap<i32, (i32, watch::Sender<u64>)>>,
}

impl Registry {
    fn register(&self) -> (i32, i32, watch::Sender<u64>) {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) + 1000;
        let secret: i32 = rand::random();
        let (tx, _) = watch::channel(0);
        self.cancels.lock().expect("registry lock").insert(pid, (secret, tx.clone()));
        (pid, secret, tx)
    }

    fn unregister(&self, pid: i32) {
        self.cancels.lock().expect("registry lock").remove(&pid);
    }

    fn cancel(&self, pid: i32, secret: &SecretKey) {
        let cancels = self.cancels.lock().expect("registry lock");
        if let Some((s, tx)) = cancels.get(&pid) {
            if SecretKey::I32(*s).to_bytes() == secret.to_bytes() {
                tx.send_modify(|g| *g += 1);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] pgwire::error::PgWireError),
    #[error("client disconnected")]
    Disconnected,
    #[error("connection refused: {0}")]
    Refused(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Txn {
    Idle,
    Block,
    Failed,
}

/// What one statement produced.
enum Outcome {
    Rows { desc: RelationDesc, rows: VecDeque<Row>, tag: String },
    Command(String),
    Stream(Box<SubscribeStream>),
    Copy(CopySource),
    Empty,
}

enum CopySource {
    Subscribe(Box<SubscribeStream>),
    Rows(VecDeque<Row>),
}

enum Cursor {
    Subscribe(Box<SubscribeStream>),
    Rows { desc: RelationDesc, rows: VecDeque<Row> },
}

struct Prepared {
    sql: String,
    param_types: Vec<u32>,
}

struct Portal {
    sql: String,
    formats: Vec<i16>,
    outcome: Option<Outcome>,
}

/// How waiting for a stream's next timestamp ended.
enum Step {
    Advanced(Result<(), StatementError>),
    Timeout,
    Cancelled,
}

pub struct Conn {
    coord: Arc<Coordinator>,
    registry: Arc<Registry>,
    reader: Box<dyn AsyncRead + Send + Sync + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    /// Whether the client negotiated TLS, and whether it must have.
    encrypted: bool,
    tls_required: bool,
    inbuf: BytesMut,
    out: BytesMut,
    ctx: DecodeContext,
    pid: i32,
    cancel: Option<watch::Sender<u64>>,
    user: String,
    database: String,
    vars: HashMap<String, String>,
    txn: Txn,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    cursors: HashMap<String, Cursor>,
    /// After an error in the extended protocol, messages are skipped until Sync.
    skip_to_sync: bool,
}

fn err(message: impl Into<String>, code: &str) -> StatementError {
    StatementError::new(message, code, None)
}

fn canceled() -> StatementError {
    err("canceling statement due to user request", "57014")
}

impl Conn {
    /// A connection past TLS negotiation ([`crate::tls::negotiate`]).
    pub fn new(coord: Arc<Coordinator>, registry: Arc<Registry>, transport: Transport, tls_required: bool) -> Conn {
        let Transport { reader, writer, inbuf, encrypted } = transport;
        let mut ctx = DecodeContext::default();
        ctx.awaiting_frontend_ssl = false;
        Conn {
            coord,
            registry,
            reader,
            writer,
            encrypted,
            tls_required,
            inbuf,
            out: BytesMut::with_capacity(64 * 1024),
            ctx,
            pid: 0,
            cancel: None,
            user: String::new(),
            database: String::new(),
            vars: HashMap::new(),
            txn: Txn::Idle,
            statements: HashMap::new(),
            portals: HashMap::new(),
            cursors: HashMap::new(),
            skip_to_sync: false,
        }
    }

    pub async fn run(mut self) -> Result<(), ConnError> {
        let r = self.serve().await;
        if self.pid != 0 {
            self.registry.unregister(self.pid);
        }
        // Cursors and portals (and their transient views) are dropped with `self`.
        match r {
            Err(ConnError::Disconnected) => Ok(()),
            other => other,
        }
    }

    async fn serve(&mut self) -> Result<(), ConnError> {
        if !self.startup().await? {
            return Ok(());
        }
        loop {
            let msg = self.read_message().await?;
            match msg {
                PgWireFrontendMessage::Terminate(_) => return Ok(()),
                PgWireFrontendMessage::Query(q) => {
                    self.simple_query(&q.query).await?;
                }
                PgWireFrontendMessage::Sync(_) => {
                    self.skip_to_sync = false;
                    self.portals.remove("");
                    self.ready_for_query();
                    self.flush().await?;
                }
                PgWireFrontendMessage::Flush(_) => self.flush().await?,
                m if self.skip_to_sync && m.is_extended_query() => {}
                PgWireFrontendMessage::Parse(p) => {
                    let name = p.name.unwrap_or_default();
                    self.statements.insert(name, Prepared { sql: p.query, param_types: p.type_oids });
                    self.send(PgWireBackendMessage::ParseComplete(ParseComplete::new()));
                }
                PgWireFrontendMessage::Bind(b) => {
                    if let Err(e) = self.bind(b) {
                        self.extended_error(&e, 0);
                    }
                }
                PgWireFrontendMessage::Describe(d) => {
                    let name = d.name.unwrap_or_default();
                    let r = if d.target_type == b'S' {
                        self.describe_statement(&name).await
                    } else {
                        self.describe_portal(&name).await
                    };
                    if let Err(e) = r {
                        self.extended_error(&e, 0);
                    }
                }
                PgWireFrontendMessage::Execute(e) => {
                    let name = e.name.unwrap_or_default();
                    if let Err(e) = self.execute_portal(&name, e.max_rows).await? {
                        self.extended_error(&e, 0);
                    }
                }
                PgWireFrontendMessage::Close(c) => {
                    let name = c.name.unwrap_or_default();
                    if c.target_type == b'S' {
                        self.statements.remove(&name);
                    } else {
                        self.portals.remove(&name);
                    }
                    self.send(PgWireBackendMessage::CloseComplete(CloseComplete::new()));
                }
                PgWireFrontendMessage::CopyData(_)
                | PgWireFrontendMessage::CopyDone(_)
                | PgWireFrontendMessage::CopyFail(_) => {}
                other => tracing::debug!(?other, "unexpected message ignored"),
            }
            if self.out.len() >= FLUSH_BYTES {
                self.flush().await?;
            }
        }
    }

    // ---- I/O -------------------------------------------------------------------------------

    fn send(&mut self, m: PgWireBackendMessage) {
        if let Err(e) = m.encode(&mut self.out) {
            tracing::warn!(error = %e, "could not encode a message");
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
            // TLS may hold written records back until flushed (plain TCP: a no-op).
            self.writer.flush().await?;
        }
        Ok(())
    }

    async fn read_message(&mut self) -> Result<PgWireFrontendMessage, ConnError> {
        loop {
            if let Some(m) = PgWireFrontendMessage::decode(&mut self.inbuf, &self.ctx)? {
                return Ok(m);
            }
            // Waiting for the client: everything produced so far must reach it first.
            self.flush().await?;
            if self.reader.read_buf(&mut self.inbuf).await? == 0 {
                return Err(ConnError::Disconnected);
            }
        }
    }

    /// Startup and (trust) authentication. Returns false for a cancel request's connection.
    async fn startup(&mut self) -> Result<bool, ConnError> {
        let startup = match self.read_message().await? {
            PgWireFrontendMessage::CancelRequest(c) => {
                self.registry.cancel(c.pid, &c.secret_key);
                return Ok(false);
            }
            PgWireFrontendMessage::Startup(s) => s,
            other => {
                tracing::debug!(?other, "unexpected message before startup");
                return Ok(false);
            }
        };
        if self.tls_required && !self.encrypted {
            let message = "this server requires TLS: connect with sslmode=require, verify-ca or verify-full";
            let fields =
                [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28000"), (b'M', message)].map(|(k, v)| (k, v.to_string()));
            self.send(PgWireBackendMessage::ErrorResponse(ErrorResponse::new(fields.to_vec())));
            self.flush().await?;
            return Ok(false);
        }
        self.ctx.awaiting_frontend_startup = false;
        self.ctx.protocol_version = ProtocolVersion::PROTOCOL3_0;
        let params = startup.parameters;
        self.user = params.get("user").cloned().unwrap_or_else(|| "materialize".into());
        self.database = params.get("database").cloned().unwrap_or_else(|| self.user.clone());
        if let Some(app) = params.get("application_name") {
            self.vars.insert("application_name".into(), app.clone());
        }
        let (pid, secret, cancel) = self.registry.register();
        self.pid = pid;
        self.cancel = Some(cancel);
        self.send(PgWireBackendMessage::Authentication(Authentication::Ok));
        for (k, v) in [
            ("server_version", pgcatalog::SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
        ] {
            self.send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(k.into(), v.into())));
        }
        let app = self.vars.get("application_name").cloned().unwrap_or_default();
        self.send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new("application_name".into(), app)));
        let user = self.user.clone();
        self.send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new("session_authorization".into(), user)));
        self.send(PgWireBackendMessage::BackendKeyData(BackendKeyData::new(pid, SecretKey::I32(secret))));
        self.ready_for_query();
        self.flush().await?;
        Ok(true)
    }

    fn ready_for_query(&mut self) {
        let status = match self.txn {
            Txn::Idle => TransactionStatus::Idle,
            Txn::Block => TransactionStatus::Transaction,
            Txn::Failed => TransactionStatus::Error,
        };
        self.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status)));
    }

    fn error(&mut self, e: &StatementError, offset: usize) {
        let mut fields = vec![
            (b'S', "ERROR".to_string()),
            (b'V', "ERROR".to_string()),
            (b'C', e.code.clone()),
            (b'M', e.message.clone()),
        ];
        if let Some(p) = e.position {
            fields.push((b'P', (p + offset).to_string()));
        }
        self.send(PgWireBackendMessage::ErrorResponse(ErrorResponse::new(fields)));
        if self.txn == Txn::Block {
            self.txn = Txn::Failed;
        }
    }

    fn extended_error(&mut self, e: &StatementError, offset: usize) {
        self.error(e, offset);
        self.skip_to_sync = true;
    }

    fn complete(&mut self, tag: &str) {
        self.send(PgWireBackendMessage::CommandComplete(CommandComplete::new(tag.to_string())));
    }

    fn row_description(&mut self, desc: &RelationDesc, formats: &[Format]) {
        let fields = desc
            .names
            .iter()
            .zip(&desc.types)
            .enumerate()
            .map(|(i, (name, ty))| {
                let size = match ty.scalar {
                    ScalarType::Bool => 1,
                    ScalarType::Int16 => 2,
                    ScalarType::Int32 | ScalarType::Float32 | ScalarType::Date => 4,
                    ScalarType::Int64 | ScalarType::Float64 | ScalarType::Timestamp | ScalarType::TimestampTz => 8,
                    ScalarType::Interval => 16,
                    _ => -1,
                };
                let format = formats.get(i).copied().unwrap_or(Format::Text).code();
                FieldDescription::new(name.clone(), 0, 0, ty.scalar.oid(), size, -1, format)
            })
            .collect();
        self.send(PgWireBackendMessage::RowDescription(RowDescription::new(fields)));
    }

    // ---- simple query ------------------------------------------------------------------------

    async fn simple_query(&mut self, sql: &str) -> Result<(), ConnError> {
        let statements = split_statements(sql);
        if statements.is_empty() {
            self.send(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new()));
        }
        for (offset, stmt) in statements {
            let outcome = self.run_statement(stmt).await;
            let r = match outcome {
                Ok(o) => self.send_outcome(o, &[], 0, true).await?.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                self.error(&e, offset);
                break;
            }
        }
        self.ready_for_query();
        self.flush().await
    }

    /// Sends a statement's result. `max_rows` (extended protocol) suspends a row result.
    /// Returns the statement error to report, if the result ended in one.
    async fn send_outcome(
        &mut self,
        outcome: Outcome,
        format_codes: &[i16],
        max_rows: i32,
        describe: bool,
    ) -> Result<Result<Option<Outcome>, StatementError>, ConnError> {
        match outcome {
            Outcome::Empty => self.send(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())),
            Outcome::Command(tag) => self.complete(&tag),
            Outcome::Rows { desc, mut rows, tag } => {
                let formats = Format::per_column(format_codes, desc.arity());
                if describe {
                    self.row_description(&desc, &formats);
                }
                let n = if max_rows > 0 { (max_rows as usize).min(rows.len()) } else { rows.len() };
                for row in rows.drain(..n) {
                    encode::data_row(&row, &desc, &formats, &mut self.out);
                    if self.out.len() >= FLUSH_BYTES {
                        self.flush().await?;
                    }
                }
                if max_rows > 0 && !rows.is_empty() {
                    self.send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()));
                    return Ok(Ok(Some(Outcome::Rows { desc, rows, tag })));
                }
                // A FETCH or SELECT tag counts the rows this message sent.
                let tag = if tag.starts_with("FETCH") { format!("FETCH {n}") } else { tag };
                self.complete(&tag);
            }
            Outcome::Stream(mut stream) => {
                let desc = stream.desc().clone();
                let formats = Format::per_column(format_codes, desc.arity());
                if describe {
                    self.row_description(&desc, &formats);
                }
                let r = self.stream_rows(&mut stream, |row, out| encode::data_row(row, &desc, &formats, out)).await?;
                match r {
                    Ok(_) => self.complete("SUBSCRIBE"),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Outcome::Copy(source) => {
                let columns = match &source {
                    CopySource::Subscribe(s) => s.desc().arity(),
                    CopySource::Rows(rows) => rows.front().map_or(0, |r| r.len()),
                };
                self.send(PgWireBackendMessage::CopyOutResponse(pgwire::messages::copy::CopyOutResponse::new(
                    0,
                    columns as i16,
                    vec![0; columns],
                )));
                let r = match source {
                    CopySource::Rows(rows) => {
                        for row in &rows {
                            encode::copy_row(row, &mut self.out);
                            if self.out.len() >= FLUSH_BYTES {
                                self.flush().await?;
                            }
                        }
                        Ok(rows.len() as u64)
                    }
                    CopySource::Subscribe(mut stream) => self.stream_rows(&mut stream, encode::copy_row).await?,
                };
                match r {
                    Ok(n) => {
                        self.send(PgWireBackendMessage::CopyDone(pgwire::messages::copy::CopyDone::new()));
                        self.complete(&format!("COPY {n}"));
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        Ok(Ok(None))
    }

    /// Streams a subscription's rows until `UP TO` is reached (Ok: rows sent), or the client
    /// cancels (Err 57014) or disconnects (ConnError). Flushes after every timestamp.
    async fn stream_rows(
        &mut self,
        stream: &mut SubscribeStream,
        mut write: impl FnMut(&Row, &mut BytesMut),
    ) -> Result<Result<u64, StatementError>, ConnError> {
        let mut cancel = self.cancel.as_ref().expect("registered").subscribe();
        let mut sent = 0u64;
        loop {
            while stream.ready_len() > 0 {
                for row in stream.take(4096) {
                    write(&row, &mut self.out);
                    sent += 1;
                }
                if self.out.len() >= FLUSH_BYTES {
                    self.flush().await?;
                }
            }
            self.flush().await?;
            if stream.is_finished() {
                return Ok(Ok(sent));
            }
            match self.wait_step(stream, &mut cancel, None).await? {
                Step::Advanced(Ok(())) => {}
                Step::Advanced(Err(e)) => return Ok(Err(e)),
                Step::Cancelled => return Ok(Err(canceled())),
                Step::Timeout => {}
            }
        }
    }

    /// Waits for the stream's next timestamp, a cancel request, the deadline, or the client going away.
    async fn wait_step(
        &mut self,
        stream: &mut SubscribeStream,
        cancel: &mut watch::Receiver<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Step, ConnError> {
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.changed() => return Ok(Step::Cancelled),
                r = self.reader.read_buf(&mut self.inbuf) => {
                    // The client spoke while we stream: only Terminate (or EOF) matters now; other
                    // messages stay buffered for later.
                    if r? == 0 || self.inbuf.first() == Some(&b'X') {
                        return Err(ConnError::Disconnected);
                    }
                }
                r = stream.advance() => return Ok(Step::Advanced(r)),
                _ = sleep => return Ok(Step::Timeout),
            }
        }
    }

    // ---- statements --------------------------------------------------------------------------

    async fn run_statement(&mut self, sql: &str) -> Result<Outcome, StatementError> {
        let words: Vec<String> = sql.split_whitespace().take(4).map(|w| w.to_lowercase()).collect();
        let first = words.first().map(String::as_str).unwrap_or("");
        let first = first.trim_end_matches(';');
        if self.txn == Txn::Failed && !matches!(first, "commit" | "rollback" | "abort" | "end") {
            return Err(err(
                "current transaction is aborted, commands ignored until end of transaction block",
                "25P02",
            ));
        }
        match first {
            "" => Ok(Outcome::Empty),
            "begin" | "start" => {
                self.txn = Txn::Block;
                Ok(Outcome::Command("BEGIN".into()))
            }
            "commit" | "end" | "rollback" | "abort" => {
                let tag = if self.txn == Txn::Failed || matches!(first, "rollback" | "abort") {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                self.txn = Txn::Idle;
                self.cursors.clear();
                Ok(Outcome::Command(tag.into()))
            }
            "set" => {
                self.set_var(sql);
                Ok(Outcome::Command("SET".into()))
            }
            "reset" | "discard" | "deallocate" | "listen" | "unlisten" => {
                Ok(Outcome::Command(first.to_uppercase().replace("DISCARD", "DISCARD ALL")))
            }
            "show" => self.show(sql, &words).await,
            "declare" => self.declare(sql).await,
            "fetch" => self.fetch(sql).await,
            "close" => {
                let name = words.get(1).map(|n| n.trim_end_matches(';').to_string()).unwrap_or_default();
                if name == "all" {
                    self.cursors.clear();
                } else if self.cursors.remove(&name).is_none() {
                    return Err(err(format!("cursor \"{name}\" does not exist"), "34000"));
                }
                Ok(Outcome::Command("CLOSE CURSOR".into()))
            }
            "copy" => self.copy(sql).await,
            "subscribe" | "tail" => {
                let sub = self.coord.plan_subscribe(sql)?;
                Ok(Outcome::Stream(Box::new(SubscribeStream::start(self.coord.clone(), sub).await?)))
            }
            _ => {
                let session = Session { user: &self.user, database: &self.database, pid: self.pid };
                if let Some(a) = pgcatalog::answer(sql, &self.coord, &session) {
                    return Ok(Outcome::Rows {
                        tag: format!("SELECT {}", a.rows.len()),
                        desc: a.desc,
                        rows: a.rows.into(),
                    });
                }
                self.execute(sql).await
            }
        }
    }

    async fn execute(&self, sql: &str) -> Result<Outcome, StatementError> {
        match self.coord.execute(sql).await.pop() {
            None => Ok(Outcome::Empty),
            Some(ExecuteResult::Error(e)) => Err(e),
            Some(ExecuteResult::Ok { tag }) => Ok(Outcome::Command(tag)),
            Some(ExecuteResult::Rows { tag, desc, rows }) => Ok(Outcome::Rows { desc, rows: rows.into(), tag }),
        }
    }

    fn set_var(&mut self, sql: &str) {
        // SET [SESSION | LOCAL] name { TO | = } value
        let body = sql.trim().trim_end_matches(';');
        let mut rest = body[3..].trim();
        for kw in ["session ", "local "] {
            if rest.to_lowercase().starts_with(kw) {
                rest = rest[kw.len()..].trim();
            }
        }
        let (name, value) = match rest.find('=') {
            Some(i) => (rest[..i].trim(), rest[i + 1..].trim()),
            None => match rest.to_lowercase().find(" to ") {
                Some(i) => (rest[..i].trim(), rest[i + 4..].trim()),
                None => (rest, ""),
            },
        };
        let value = value.trim_matches('\'').to_string();
        self.vars.insert(name.to_lowercase(), value);
    }

    async fn show(&mut self, sql: &str, words: &[String]) -> Result<Outcome, StatementError> {
        let name = words.get(1).map(|w| w.trim_end_matches(';')).unwrap_or("");
        let known = match name {
            "server_version" => Some(pgcatalog::SERVER_VERSION.to_string()),
            "server_version_num" => Some("90500".into()),
            "standard_conforming_strings" | "integer_datetimes" => Some("on".into()),
            "client_encoding" | "server_encoding" => Some("UTF8".into()),
            "datestyle" => Some("ISO, MDY".into()),
            "timezone" => Some("UTC".into()),
            "intervalstyle" => Some("postgres".into()),
            "search_path" => Some("public".into()),
            "transaction_isolation" | "transaction" => Some("strict serializable".into()),
            "max_identifier_length" => Some("63".into()),
            "application_name" => Some(String::new()),
            "cluster" => Some("default".into()),
            "database" => Some(self.database.clone()),
            _ => None,
        };
        let value = self.vars.get(name).cloned().or(known);
        match value {
            Some(v) if words.len() == 2 => {
                let desc = RelationDesc::new([(name.to_string(), ColumnType::new(ScalarType::Text, false))]);
                Ok(Outcome::Rows { desc, rows: vec![Row::new(vec![Datum::text(&v)])].into(), tag: "SHOW".into() })
            }
            _ => self.execute(sql).await,
        }
    }

    /// `DECLARE name CURSOR [WITHOUT HOLD] FOR query`.
    async fn declare(&mut self, sql: &str) -> Result<Outcome, StatementError> {
        if self.txn == Txn::Idle {
            return Err(err("DECLARE CURSOR can only be used in transaction blocks", "25P01"));
        }
        let lower = sql.to_lowercase();
        let name = sql.split_whitespace().nth(1).unwrap_or("").to_lowercase();
        let Some(i) = lower.find(" for ") else {
            return Err(err("syntax error: expected DECLARE name CURSOR FOR query", "42601"));
        };
        let query = sql[i + 5..].trim();
        let q = query.to_lowercase();
        let cursor = if q.starts_with("subscribe") || q.starts_with("tail") {
            let sub = self.coord.plan_subscribe(query)?;
            Cursor::Subscribe(Box::new(SubscribeStream::start(self.coord.clone(), sub).await?))
        } else {
            match Box::pin(self.run_statement(query)).await? {
                Outcome::Rows { desc, rows, .. } => Cursor::Rows { desc, rows },
                _ => return Err(err("DECLARE CURSOR needs a query that returns rows", "42601")),
            }
        };
        self.cursors.insert(name, cursor);
        Ok(Outcome::Command("DECLARE CURSOR".into()))
    }

    /// `FETCH [FORWARD] [n | ALL | NEXT] [FROM | IN] name [WITH (timeout = '1s')]`.
    async fn fetch(&mut self, sql: &str) -> Result<Outcome, StatementError> {
        let body = sql.trim().trim_end_matches(';');
        let lower = body.to_lowercase();
        let (head, timeout) = match lower.find(" with") {
            Some(i) => (&lower[..i], parse_timeout(&lower[i..])?),
            None => (lower.as_str(), None),
        };
        let mut words: Vec<&str> = head.split_whitespace().skip(1).collect();
        let name = words.pop().unwrap_or("").trim_matches('"').to_string();
        let mut count = 1usize;
        for w in words {
            match w {
                "forward" | "from" | "in" | "next" => {}
                "all" => count = usize::MAX,
                n => count = n.parse().map_err(|_| err(format!("syntax error at or near \"{n}\""), "42601"))?,
            }
        }
        let Some(cursor) = self.cursors.remove(&name) else {
            return Err(err(format!("cursor \"{name}\" does not exist"), "34000"));
        };
        match cursor {
            Cursor::Rows { desc, mut rows } => {
                let n = count.min(rows.len());
                let out: VecDeque<Row> = rows.drain(..n).collect();
                self.cursors.insert(name, Cursor::Rows { desc: desc.clone(), rows });
                Ok(Outcome::Rows { desc, rows: out, tag: format!("FETCH {n}") })
            }
            Cursor::Subscribe(mut stream) => {
                let r = self.fetch_stream(&mut stream, count, timeout).await;
                let desc = stream.desc().clone();
                self.cursors.insert(name, Cursor::Subscribe(stream));
                let rows = r?;
                Ok(Outcome::Rows { desc, tag: format!("FETCH {}", rows.len()), rows })
            }
        }
    }

    /// Waits (up to `timeout`, or forever) until at least one row is ready, then takes up to `count`.
    async fn fetch_stream(
        &mut self,
        stream: &mut SubscribeStream,
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<VecDeque<Row>, StatementError> {
        let mut cancel = self.cancel.as_ref().expect("registered").subscribe();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        while stream.ready_len() == 0 && !stream.is_finished() && count > 0 {
            match self.wait_step(stream, &mut cancel, deadline).await {
                Ok(Step::Advanced(r)) => r?,
                Ok(Step::Timeout) => break,
                Ok(Step::Cancelled) => return Err(canceled()),
                Err(_) => return Err(err("client disconnected", "08006")),
            }
        }
        // Rows are ready: add everything else already complete, without waiting.
        stream.advance_ready()?;
        Ok(stream.take(count).collect())
    }

    /// `COPY (query) TO STDOUT [WITH (FORMAT text)]`.
    async fn copy(&mut self, sql: &str) -> Result<Outcome, StatementError> {
        let body = sql.trim().trim_end_matches(';');
        let open = body.find('(').ok_or_else(|| err("only COPY (query) TO STDOUT is supported", "0A000"))?;
        let close = matching_paren(body, open).ok_or_else(|| err("unbalanced parentheses in COPY", "42601"))?;
        let inner = body[open + 1..close].trim();
        let tail = body[close + 1..].trim().to_lowercase();
        if !tail.starts_with("to stdout") {
            return Err(err("only COPY (query) TO STDOUT is supported", "0A000"));
        }
        if tail.contains("binary") || tail.contains("csv") {
            return Err(err("COPY TO STDOUT supports FORMAT text only", "0A000"));
        }
        let q = inner.to_lowercase();
        if q.starts_with("subscribe") || q.starts_with("tail") {
            let sub = self.coord.plan_subscribe(inner)?;
            let stream = SubscribeStream::start(self.coord.clone(), sub).await?;
            return Ok(Outcome::Copy(CopySource::Subscribe(Box::new(stream))));
        }
        match Box::pin(self.run_statement(inner)).await? {
            Outcome::Rows { rows, .. } => Ok(Outcome::Copy(CopySource::Rows(rows))),
            _ => Err(err("COPY needs a query that returns rows", "42601")),
        }
    }

    // ---- extended query ----------------------------------------------------------------------

    fn bind(&mut self, b: pgwire::messages::extendedquery::Bind) -> Result<(), StatementError> {
        let stmt_name = b.statement_name.clone().unwrap_or_default();
        let prepared = self
            .statements
            .get(&stmt_name)
            .ok_or_else(|| err(format!("prepared statement \"{stmt_name}\" does not exist"), "26000"))?;
        let mut literals = Vec::with_capacity(b.parameters.len());
        for (i, p) in b.parameters.iter().enumerate() {
            let format = match b.parameter_format_codes.as_slice() {
                [] => 0,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(0),
            };
            let ty = prepared.param_types.get(i).copied().unwrap_or(0);
            literals.push(param_literal(p.as_deref(), format, ty)?);
        }
        let sql = substitute_params(&prepared.sql, &literals);
        let portal = b.portal_name.unwrap_or_default();
        self.portals.insert(portal, Portal { sql, formats: b.result_column_format_codes, outcome: None });
        self.send(PgWireBackendMessage::BindComplete(BindComplete::new()));
        Ok(())
    }

    async fn describe_statement(&mut self, name: &str) -> Result<(), StatementError> {
        let prepared = self
            .statements
            .get(name)
            .ok_or_else(|| err(format!("prepared statement \"{name}\" does not exist"), "26000"))?;
        let sql = prepared.sql.clone();
        let n = count_params(&sql);
        let types: Vec<u32> =
            (0..n).map(|i| prepared.param_types.get(i).copied().filter(|t| *t != 0).unwrap_or(25)).collect();
        self.send(PgWireBackendMessage::ParameterDescription(ParameterDescription::new(types)));
        let nulls = vec!["NULL".to_string(); n];
        let desc = self.describe_sql(&substitute_params(&sql, &nulls)).await?;
        match desc {
            Some(d) => self.row_description(&d, &[]),
            None => self.send(PgWireBackendMessage::NoData(NoData::new())),
        }
        Ok(())
    }

    /// The columns a statement returns, without side effects (None: it returns no rows).
    async fn describe_sql(&mut self, sql: &str) -> Result<Option<RelationDesc>, StatementError> {
        let lower = sql.trim_start().to_lowercase();
        let first = lower.split_whitespace().next().unwrap_or("");
        match first {
            "subscribe" | "tail" => Ok(Some(output_desc(&self.coord.plan_subscribe(sql)?))),
            "select" | "with" | "values" | "table" | "show" | "explain" => match self.run_statement(sql).await? {
                Outcome::Rows { desc, .. } => Ok(Some(desc)),
                _ => Ok(None),
            },
            // FETCH's columns are its cursor's.
            "fetch" => {
                let name =
                    lower.split(" with").next().unwrap_or("").split_whitespace().last().unwrap_or("").to_string();
                Ok(self.cursors.get(&name).map(|c| match c {
                    Cursor::Subscribe(s) => s.desc().clone(),
                    Cursor::Rows { desc, .. } => desc.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    async fn describe_portal(&mut self, name: &str) -> Result<(), StatementError> {
        let mut portal =
            self.portals.remove(name).ok_or_else(|| err(format!("portal \"{name}\" does not exist"), "34000"))?;
        if portal.outcome.is_none() {
            match self.run_statement(&portal.sql).await {
                Ok(o) => portal.outcome = Some(o),
                Err(e) => return Err(e),
            }
        }
        let formats = portal.formats.clone();
        match portal.outcome.as_ref() {
            Some(Outcome::Rows { desc, .. }) => {
                let f = Format::per_column(&formats, desc.arity());
                self.row_description(&desc.clone(), &f)
            }
            Some(Outcome::Stream(s)) => {
                let desc = s.desc().clone();
                let f = Format::per_column(&formats, desc.arity());
                self.row_description(&desc, &f)
            }
            _ => self.send(PgWireBackendMessage::NoData(NoData::new())),
        }
        self.portals.insert(name.to_string(), portal);
        Ok(())
    }

    async fn execute_portal(&mut self, name: &str, max_rows: i32) -> Result<Result<(), StatementError>, ConnError> {
        let Some(mut portal) = self.portals.remove(name) else {
            return Ok(Err(err(format!("portal \"{name}\" does not exist"), "34000")));
        };
        let outcome = match portal.outcome.take() {
            Some(o) => o,
            None => match self.run_statement(&portal.sql).await {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            },
        };
        let r = self.send_outcome(outcome, &portal.formats, max_rows, false).await?;
        match r {
            Ok(rest) => {
                portal.outcome = rest;
                if portal.outcome.is_some() {
                    self.portals.insert(name.to_string(), portal);
                }
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

/// Splits a query string into statements at top-level semicolons, skipping quoted text and
/// comments. Returns each statement with its 0-based character offset in `sql`.
pub(crate) fn split_statements(sql: &str) -> Vec<(usize, &str)> {
    fn push<'a>(sql: &'a str, out: &mut Vec<(usize, &'a str)>, from: usize, to: usize) {
        let s = &sql[from..to];
        let trimmed = s.trim_start();
        if !trimmed.trim().is_empty() {
            let lead = s.len() - trimmed.len();
            out.push((sql[..from + lead].chars().count(), trimmed.trim_end()));
        }
    }
    let mut out = Vec::new();
    let bytes = sql.as_bytes();
    let (mut i, mut start, mut depth) = (0usize, 0usize, 0i32);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b';' if depth <= 0 => {
                push(sql, &mut out, start, i);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < sql.len() {
        push(sql, &mut out, start, sql.len());
    }
    out
}

fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_timeout(with: &str) -> Result<Option<Duration>, StatementError> {
    // " with (timeout = '1s')"
    let Some(i) = with.find("timeout") else { return Ok(None) };
    let rest = with[i + "timeout".len()..].trim_start().trim_start_matches('=').trim_start();
    let v = rest.trim_start_matches('\'');
    let v = &v[..v.find(['\'', ')']).unwrap_or(v.len())];
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let secs: f64 = num.trim().parse().map_err(|_| err(format!("invalid timeout '{v}'"), "22023"))?;
    Ok(Some(Duration::from_secs_f64((secs * scale).max(0.0))))
}

fn count_params(sql: &str) -> usize {
    let mut max = 0;
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c @ (b'\'' | b'"')) => quote = Some(c),
            (None, b'$') => {
                let j = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if let Ok(n) = sql[i + 1..i + 1 + j].parse::<usize>() {
                    max = max.max(n);
                }
                i += j;
            }
            _ => {}
        }
        i += 1;
    }
    max
}

/// Replaces `$n` outside quotes with `literals[n-1]`.
fn substitute_params(sql: &str, literals: &[String]) -> String {
    if literals.is_empty() {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len());
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let mut last = 0;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c @ (b'\'' | b'"')) => quote = Some(c),
            (None, b'$') => {
                let j = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if let Some(lit) =
                    sql[i + 1..i + 1 + j].parse::<usize>().ok().and_then(|n| literals.get(n.wrapping_sub(1)))
                {
                    out.push_str(&sql[last..i]);
                    out.push_str(lit);
                    last = i + 1 + j;
                }
                i += j;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&sql[last..]);
    out
}

/// A bound parameter as a SQL literal. Numeric and boolean types stay unquoted; everything else
/// is a quoted string literal, typed when the client named the type.
fn param_literal(value: Option<&[u8]>, format: i16, ty: u32) -> Result<String, StatementError> {
    let Some(v) = value else { return Ok("NULL".into()) };
    let text = if format == 1 {
        let mut b = v;
        match (ty, v.len()) {
            (16, 1) => (if v[0] != 0 { "true" } else { "false" }).to_string(),
            (21, 2) => b.get_i16().to_string(),
            (23, 4) => b.get_i32().to_string(),
            (20, 8) => b.get_i64().to_string(),
            (700, 4) => b.get_f32().to_string(),
            (701, 8) => b.get_f64().to_string(),
            (25 | 1043 | 0 | 705, _) => String::from_utf8_lossy(v).into_owned(),
            _ => return Err(err(format!("binary parameters of type {ty} are not supported; send text"), "0A000")),
        }
    } else {
        String::from_utf8_lossy(v).into_owned()
    };
    let quoted = format!("'{}'", text.replace('\'', "''"));
    Ok(match ty {
        20 | 21 | 23 | 700 | 701 | 1700 if text.parse::<f64>().is_ok() => text,
        16 => quoted + "::boolean",
        20 => quoted + "::bigint",
        21 => quoted + "::smallint",
        23 => quoted + "::integer",
        3802 => quoted + "::jsonb",
        1082 => quoted + "::date",
        1114 => quoted + "::timestamp",
        1184 => quoted + "::timestamptz",
        1186 => quoted + "::interval",
        _ => quoted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons() {
        let s = split_statements("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE t; SELECT ';' ; -- x;\n");
        let texts: Vec<&str> = s.iter().map(|(_, t)| *t).collect();
        assert_eq!(texts, vec!["BEGIN", "DECLARE c CURSOR FOR SUBSCRIBE t", "SELECT ';'", "-- x;"]);
        assert_eq!(s[1].0, 7);
    }

    #[test]
    fn params_are_substituted_outside_quotes() {
        let lits = vec!["1".to_string(), "'a''b'".to_string()];
        assert_eq!(substitute_params("SELECT $1, '$2', $2", &lits), "SELECT 1, '$2', 'a''b'");
        assert_eq!(count_params("SELECT $1, $12"), 12);
    }

    #[test]
    fn fetch_timeouts() {
        assert_eq!(parse_timeout(" with (timeout = '1s')").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout(" with (timeout='250ms')").unwrap(), Some(Duration::from_millis(250)));
    }
}
