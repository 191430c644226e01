//! A real server on a free port, and clients that keep a replica of a view.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use viewcast_coord::{CoordConfig, Coordinator};
use viewcast_gateway::GatewayConfig;

pub struct Server {
    pub addr: SocketAddr,
    pub coord: Arc<Coordinator>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(sql: &str, config: CoordConfig) -> Server {
        Server::start_with(sql, config, GatewayConfig::default()).await
    }

    pub async fn start_with(sql: &str, config: CoordConfig, gateway: GatewayConfig) -> Server {
        let coord = Arc::new(Coordinator::start(config).expect("coordinator starts"));
        for r in coord.execute(sql).await {
            if let viewcast_coord::ExecuteResult::Error(e) = r {
                panic!("setup SQL failed: {e}");
            }
        }
        let listener = viewcast_gateway::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = coord.clone();
        tokio::spawn(async move {
            viewcast_gateway::serve(listener, c, gateway, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server { addr, coord, shutdown: Some(tx) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST /api/sql and return the first result object.
    pub async fn sql(&self, query: &str) -> Value {
        let resp: Value = reqwest::Client::new()
            .post(self.url("/api/sql"))
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["results"][0].clone()
    }

    /// Rows of a SELECT as a multiset keyed by the row's JSON.
    pub async fn select_multiset(&self, query: &str) -> BTreeMap<String, i64> {
        let r = self.sql(query).await;
        let rows = r["rows"].as_array().unwrap_or_else(|| panic!("not rows: {r}"));
        let mut m = BTreeMap::new();
        for row in rows {
            *m.entry(row.to_string()).or_insert(0) += 1;
        }
        m
    }

    /// Polls `query`'s single value until `pred` holds or the deadline passes.
    pub async fn wait_value(&self, query: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.sql(query).await;
            let v = r["rows"][0][0].clone();
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {query}: last {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A client-side replica built from stream messages, checking the protocol's promises as it goes.
#[derive(Default, Debug)]
pub struct Replica {
    pub rows: BTreeMap<String, i64>,
    pub ts: Option<u64>,
    pub snapshots: usize,
    pub updates: usize,
}

impl Replica {
    pub fn apply(&mut self, msg: &Value) {
        let kind = msg["type"].as_str().expect("type");
        match kind {
            "snapshot" => {
                self.rows.clear();
                self.snapshots += 1;
            }
            "resync" => {
                self.rows.clear();
                self.ts = None;
                return;
            }
            "update" => self.updates += 1,
            "progress" => {}
            "error" => panic!("stream error: {msg}"),
            other => panic!("unknown message type {other}"),
        }
        let ts = msg["ts"].as_u64().expect("ts");
        if kind != "snapshot" {
            if let Some(prev) = self.ts {
                if kind == "update" {
                    assert!(ts > prev, "update at {ts} not after {prev}: duplicated or out of order");
                } else {
                    assert!(ts >= prev, "progress went back from {prev} to {ts}");
                }
            }
        }
        self.ts = Some(ts);
        for r in msg["rows"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let key = r["row"].to_string();
            let diff = r["diff"].as_i64().expect("diff");
            assert_ne!(diff, 0, "zero diff sent");
            let n = self.rows.entry(key.clone()).or_insert(0);
            *n += diff;
            assert!(*n >= 0, "row {key} went negative");
            if *n == 0 {
                self.rows.remove(&key);
            }
        }
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(addr: SocketAddr, view: &str) -> Ws {
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream/{view}")).await.expect("ws connects");
    ws
}

/// Serializes the heavy tests of one test binary: they measure behaviour under load they create
/// themselves, not under each other's.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads one JSON message from a WebSocket.
pub async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("a message in time");
        match msg.expect("stream open").expect("no ws error") {
            tokio_tungstenite::tungstenite::Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            _ => continue,
        }
    }
}

/// Reads messages into `replica` until it has data through `ts` or later.
pub async fn ws_follow_until(ws: &mut Ws, replica: &mut Replica, ts: u64) {
    while replica.ts.is_none_or(|t| t < ts) {
        let m = ws_next(ws).await;
        replica.apply(&m);
    }
}

/// Sends one JSON message on a WebSocket.
pub async fn ws_send(ws: &mut Ws, msg: serde_json::Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into())).await.expect("send");
}

pub async fn ws_connect_url(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");
    ws
}

/// The demo SQL with a load generator at `rate` events/s that stops after `total` events.
pub fn demo_sql(rate: u64, total: u64) -> String {
    include_str!("../../../viewcast/src/demo.sql")
        .replace("EVENTS PER SECOND 200, SEED 7", &format!("EVENTS PER SECOND {rate}, SEED 7, MAX EVENTS {total}"))
}
