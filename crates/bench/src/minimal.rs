//! The minimal Rust broadcaster: the fan-out ceiling viewcast is compared with.
//!
//! A timer builds one frame per tick, shaped like viewcast's `update` message (same size class),
//! serializes it once, and every client's task writes the same bytes to its socket (tokio-tungstenite,
//! one task per client, no per-client queue beyond the shared broadcast channel). A new client
//! first gets the latest frame (its "snapshot"). A client more than 1,024 frames behind skips ahead.
//! Same socket settings as viewcast's gateway: 8 KiB read and write buffers. With `big_bytes`,
//! clients whose path ends in `/big` get the same frames padded to that size (the slow-consumer
//! run's large frames), from a broadcast channel of their own.

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

/// `frame(seq, ts_ms)` with a `pad` field making it `bytes` long (at least the frame's own size).
pub fn big_frame(seq: u64, ts_ms: u64, bytes: usize) -> Bytes {
    let f = frame(seq, ts_ms);
    let head = "{\"pad\":\"\",";
    let pad = bytes.saturating_sub(f.len() + head.len() - 1);
    Bytes::from(format!("{{\"pad\":\"{}\",{}", "x".repeat(pad), &std::str::from_utf8(&f).expect("utf8")[1..]))
}

/// Serves on `port` (0 = any) of 127.0.0.1 until killed, printing `listening ADDR` once bound.
pub async fn run(port: u16, hz: f64, big_bytes: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Bytes>(1024);
    let (big_tx, _) = broadcast::channel::<Bytes>(1024);
    let (latest_tx, latest_rx) = watch::channel::<Option<Bytes>>(Some(frame(0, now_us() / 1000)));
    if hz > 0.0 {
        let (tx, big_tx) = (tx.clone(), big_tx.clone());
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
                if big_bytes > 0 && big_tx.receiver_count() > 0 {
                    let _ = big_tx.send(big_frame(seq, now_us() / 1000, big_bytes));
                }
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
        let (tx, big_tx) = (tx.clone(), big_tx.clone());
        let latest = latest_rx.borrow().clone();
        tokio::spawn(async move {
            let mut big = false;
            // The handshake callback's error type is tungstenite's (an HTTP response).
            #[allow(clippy::result_large_err)]
            let path = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                big = req.uri().path().ends_with("/big");
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, path, Some(config)).await else { return };
            let mut rx = if big && big_bytes > 0 { big_tx.subscribe() } else { tx.subscribe() };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_frames_are_the_asked_size_and_keep_the_frame() {
        for bytes in [0, 50, 40_000] {
            let f = big_frame(7, 1234, bytes);
            assert_eq!(f.len(), bytes.max(frame(7, 1234).len() + 9), "{bytes}");
            let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
            assert_eq!(v["ts"], 1234);
            assert_eq!(v["rows"][1]["row"][0], 7);
        }
    }
}
