//! What an idle client costs a gateway: resident memory per WebSocket connection (guarantee 2,
//! and issue #7's 10,000 clients per gateway). A regression here (a read buffer kept alive per
//! connection, a task per subscription) is invisible to every functional test.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens a client (every other one multiplexed, with one subscription) and waits for its snapshot.
async fn idle_client(http: SocketAddr, mux: bool) -> Ws {
    let url = if mux { format!("ws://{http}/api/v1/ws") } else { format!("ws://{http}/api/v1/stream/totals") };
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    if mux {
        let subscribe = json!({ "type": "subscribe", "id": "t", "view": "totals" }).to_string();
        ws.send(Message::Text(subscribe.into())).await.unwrap();
    }
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("a snapshot in time");
        if let Message::Text(t) = m.expect("open").expect("no error") {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "snapshot", "{v}");
            return ws;
        }
    }
}

async fn open(held: &mut Vec<Ws>, http: SocketAddr, n: usize) {
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        held.extend(futures::future::join_all(batch.iter().map(|i| idle_client(http, i % 2 == 1))).await);
    }
}

/// 1,000 single-view and 1,000 multiplexed clients, each holding its snapshot, cost the gateway
/// at most 8 KiB of resident memory each (6.0-6.4 KiB measured; a connection that kept hyper's read
/// buffer alive added 3.7 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_costs_the_gateway_a_few_kib() {
    const CLIENTS: usize = 2_000;
    const MAX_BYTES_PER_CLIENT: u64 = 8 << 10;
    let upstream = Proc::upstream(free_port(), "memory-upstream").await;
    let gateway = Proc::gateway(upstream.pg, "memory-gateway").await;
    let pid = gateway.child.id().expect("running");
    // The first connections bring up the runtime's, shards' and allocator's own structures.
    let mut held = Vec::new();
    open(&mut held, gateway.http, 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    open(&mut held, gateway.http, CLIENTS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per_client = after.saturating_sub(before) * 1024 / CLIENTS as u64;
    eprintln!("gateway RSS {before} -> {after} KiB: {per_client} bytes per idle client");
    assert!(
        per_client <= MAX_BYTES_PER_CLIENT,
        "{per_client} bytes of gateway memory per idle client (at most {MAX_BYTES_PER_CLIENT})"
    );
    // Still serving all of them: a change reaches a client opened first and one opened last.
    let mut first = held.swap_remove(0);
    let mut last = held.pop().unwrap();
    let client = pg(upstream.pg).await.unwrap();
    client.batch_execute("INSERT INTO t VALUES ('memory', 1)").await.unwrap();
    for ws in [&mut first, &mut last] {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("an update in time");
            if let Message::Text(t) = m.unwrap().unwrap() {
                if t.contains("\"update\"") && t.contains("memory") {
                    break;
                }
            }
        }
    }
}
