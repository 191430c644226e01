//! The 2020 bug, fixed: a browser that connects late sees the full current view, then stays equal
//! to the engine's view by applying updates.

mod common;

use std::time::Duration;

use common::{ws_connect, ws_follow_until, ws_next, Replica, Server};
use futures::StreamExt;
use viewcast_coord::CoordConfig;

const TOTAL: u64 = 20_000;

fn demo_sql(total: u64) -> String {
    common::demo_sql(10_000, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_see_the_whole_view_and_stay_equal() {
    let server = Server::start(&demo_sql(TOTAL), CoordConfig::default()).await;

    // Mid-stream: after 10,000 events, one WebSocket and one SSE client join.
    server.wait_value("SELECT * FROM counter", Duration::from_secs(60), |v| v.as_i64().unwrap_or(0) >= 10_000).await;
    let mut ws = ws_connect(server.addr, "top10").await;
    let mut ws_replica = Replica::default();
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "snapshot", "first message is the snapshot: {first}");
    let names: Vec<&str> = first["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["user", "count"]);
    assert_eq!(first["rows"].as_array().unwrap().len(), 10, "a mid-stream snapshot of top10 has 10 rows");
    ws_replica.apply(&first);

    let sse = reqwest::Client::new()
        .get(server.url("/api/v1/stream/top10"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse_body = sse.bytes_stream();
    let mut sse_buf = String::new();
    let mut sse_replica = Replica::default();

    // Quiet end state: every event counted.
    server.wait_value("SELECT * FROM counter", Duration::from_secs(60), |v| v.as_i64() == Some(TOTAL as i64)).await;
    let final_ts = server.coord.sealed_ts();
    let expected = server.select_multiset("SELECT * FROM top10").await;
    assert_eq!(expected.values().sum::<i64>(), 10, "SELECT * FROM top10 has exactly 10 rows");

    ws_follow_until(&mut ws, &mut ws_replica, final_ts).await;
    assert_eq!(ws_replica.rows, expected, "the WebSocket replica equals the engine's view");
    assert!(ws_replica.updates > 0, "the mid-stream client received updates");

    while sse_replica.ts.is_none_or(|t| t < final_ts) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), sse_body.next()).await.unwrap().unwrap().unwrap();
        sse_buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = sse_buf.find("\n\n") {
            let event: String = sse_buf.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    sse_replica.apply(&serde_json::from_str(data).unwrap());
                }
            }
        }
    }
    assert_eq!(sse_replica.snapshots, 1);
    assert_eq!(sse_replica.rows, expected, "the SSE replica equals the engine's view");

    // A client joining at the quiet state: its snapshot alone equals the SQL answer.
    let mut late = ws_connect(server.addr, "top10").await;
    let snap = ws_next(&mut late).await;
    let mut late_replica = Replica::default();
    late_replica.apply(&snap);
    assert_eq!(late_replica.rows, expected);

    // The counter view streams a single row equal to the total.
    let mut counter = ws_connect(server.addr, "counter").await;
    let snap = ws_next(&mut counter).await;
    assert_eq!(snap["rows"][0]["row"][0], TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let server = Server::start(&demo_sql(500), CoordConfig::default()).await;
    let client = reqwest::Client::new();

    let r = client.get(server.url("/api/v1/stream/nope")).header("Accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"), "{body}");
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/api/v1/stream/nope", server.addr)).await.is_err());

    let bad = server.sql("SELECT user, cnt FROM useredits").await;
    assert_eq!(bad["error"]["code"], "42703", "{bad}");
    assert_eq!(bad["error"]["position"], 14, "points at `cnt`: {bad}");
    let bad = server.sql("SELEC 1").await;
    assert_eq!(bad["error"]["code"], "42601", "{bad}");
    let r = client.post(server.url("/api/sql")).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 400);

    let r = client.get(server.url("/api/v1/stream/top10")).send().await.unwrap();
    assert_eq!(r.status(), 400, "a plain GET of a stream is refused with a reason");

    let views: serde_json::Value = client.get(server.url("/api/v1/views")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = views["views"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    for v in ["counter", "recentchanges", "top10", "useredits", "wikirecent"] {
        assert!(names.contains(&v), "{v} listed in {names:?}");
    }
    // Still serving.
    let ok = server.sql("SELECT count(*) FROM top10").await;
    assert!(ok["rows"][0][0].as_i64().unwrap() <= 10, "{ok}");
}
