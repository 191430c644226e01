//! The minimal Rust broadcaster: the fan-out ceiling viewcast is compared with.
//!
//! A timer builds one frame per tick, shaped like viewcast's `update` message (same size class),
//! serializes it once, and every client's task writes the same bytes to its socket (tokio-tungstenite,
//! one task per client, no per-client queue beyond the shared broadcast channel). A new client
//! first gets the latest frame (its "snapshot"). A client more than 1,024 frames behind skips ahead.
//! Same socket settings as viewcast's gateway: 8 KiB read and write buffers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client::now_us;

pub fn frame(seq: u64, ts_ms: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"update\",\"view\":\"bench_seq\",\"ts\":{ts_ms},\"rows\":[{{\"row\":[{}],\"diff\":-1}},{{\"row\":[{seq}],\"diff\":1}}]}}",
        seq.saturating_sub(1)
    ))
}

/// Serves on `port` (0 = any) of 127.0.0.1 until killed, printing `listening ADDR` once bound.
pub async fn run(port: u16, hz: f64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Bytes>(1024);
    let (latest_tx, latest_rx) = watch::channel::<Option<Bytes>>(Some(frame(0, now_us() / 1000)));
    if hz > 0.0 {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tick.tick().await;
                seq += 1;
                let f = frame(seq, now_us() / 1000);
                latest_tx.send_replace(Some(f.clone()));
                let _ = tx.send(f);
            }
        });
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .write_buffer_size(8 << 10)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut rx = tx.subscribe();
        let latest = latest_rx.borrow().clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
            let (mut sink, mut incoming) = ws.split();
            tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });
            if let Some(f) = latest {
                if sink.send(Message::Text(Utf8Bytes::try_from(f).expect("utf8"))).await.is_err() {
                    return;
                }
            }
            loop {
                match rx.recv().await {
                    Ok(f) => {
                        if sink.send(Message::Text(Utf8Bytes::try_from(f).expect("utf8"))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}
