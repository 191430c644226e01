//! `POST /api/webhook/{source}` against a real server: objects, arrays and NDJSON are ingested and
//! visible as soon as the answer arrives; bad bodies ingest nothing; errors have the right status.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::Value;
use viewcast_coord::CoordConfig;
use viewcast_gateway::auth::Grant;
use viewcast_gateway::GatewayConfig;

const SQL: &str = "CREATE SOURCE events FROM WEBHOOK BODY FORMAT JSON;
CREATE MATERIALIZED VIEW per_user AS SELECT data->>'user' AS user, count(*) FROM events GROUP BY 1;
CREATE MATERIALIZED VIEW total AS SELECT count(*) FROM events;
CREATE TABLE t (a int);";

async fn post(server: &Server, source: &str, body: impl Into<reqwest::Body>, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(&format!("/api/webhook/{source}"))).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn total(server: &Server) -> i64 {
    server.sql("SELECT * FROM total").await["rows"][0][0].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_arrays_and_ndjson_are_visible_once_answered() {
    let server = Server::start(SQL, CoordConfig { tick_ms: 20, ..CoordConfig::default() }).await;
    let (s, b) = post(&server, "events", r#"{"user":"ada"}"#, None).await;
    assert_eq!((s, b["rows"].as_i64()), (200, Some(1)), "{b}");
    // Read-your-writes: the answer came after the timestamp was sealed.
    assert_eq!(total(&server).await, 1);
    let (s, _) = post(&server, "events", r#"[{"user":"ada"},{"user":"bob"},{"user":"cy"}]"#, None).await;
    assert_eq!(s, 200);
    assert_eq!(total(&server).await, 4);
    let (s, b) = post(&server, "events", "{\"user\":\"bob\"}\n{\"user\":\"bob\"}\n", None).await;
    assert_eq!((s, b["rows"].as_i64()), (200, Some(2)));
    let m = server.select_multiset("SELECT * FROM per_user").await;
    assert_eq!(m.get(r#"["ada",2]"#), Some(&1), "{m:?}");
    assert_eq!(m.get(r#"["bob",3]"#), Some(&1), "{m:?}");

    // Malformed: nothing of the request is ingested, and the message says where.
    let (s, b) = post(&server, "events", "{\"user\":\"dee\"}\n{\"user\": oops}\n", None).await;
    assert_eq!(s, 400);
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("record 2") && msg.contains("JSON"), "{msg}");
    let (s, _) = post(&server, "events", b"{\"user\":\"\xFF\"}".to_vec(), None).await;
    assert_eq!(s, 400);
    assert_eq!(total(&server).await, 6);

    assert_eq!(post(&server, "nope", "{}", None).await.0, 404);
    assert_eq!(post(&server, "total", "{}", None).await.0, 400);
    assert_eq!(post(&server, "t", "{}", None).await.0, 400);

    // Over the body limit (1 MiB by default): 413, answered from the Content-Length before the body
    // is read, so the server may close the connection while the client is still writing it; a
    // client that sees the refusal as a broken pipe has been refused too.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    match reqwest::Client::new().post(server.url("/api/webhook/events")).body(big).send().await {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "an oversized body is refused, not lost: {e:?}"),
    }
    assert_eq!(total(&server).await, 6);

    // Counted in the source statistics.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.sql("SELECT events_in, errors FROM viewcast_source_stats WHERE name = 'events'").await;
        if r["rows"][0][0].as_i64() == Some(6) {
            assert_eq!(r["rows"][0][1].as_i64(), Some(2), "{r}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let grants = vec![
        Grant { token: "writer".into(), views: None },
        Grant { token: "reader".into(), views: Some(["total".to_string()].into()) },
    ];
    let server =
        Server::start_with(SQL, CoordConfig::default(), GatewayConfig { grants, ..GatewayConfig::default() }).await;
    assert_eq!(post(&server, "events", "{}", None).await.0, 401);
    assert_eq!(post(&server, "events", "{}", Some("wrong")).await.0, 401);
    assert_eq!(post(&server, "events", "{}", Some("reader")).await.0, 403);
    assert_eq!(post(&server, "events", "{}", Some("writer")).await.0, 200);
}

/// Concurrent requests answered with the same timestamp all land: every row of every request is
/// counted (the engine once kept only the last write to an input in a tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_in_one_timestamp_all_land() {
    // Long ticks, so requests sent together share one.
    let server = Server::start(SQL, CoordConfig { tick_ms: 500, ..CoordConfig::default() }).await;
    let bodies: Vec<String> =
        (0..8).map(|r| (0..100).map(|i| format!("{{\"user\":\"u{r}-{i}\"}}\n")).collect::<String>()).collect();
    let answers = futures::future::join_all(bodies.into_iter().map(|b| post(&server, "events", b, None))).await;
    let mut timestamps = std::collections::HashMap::new();
    for (s, b) in &answers {
        assert_eq!((*s, b["rows"].as_i64()), (200, Some(100)), "{b}");
        *timestamps.entry(b["timestamp"].as_i64().unwrap()).or_insert(0) += 1;
    }
    assert!(timestamps.values().any(|n| *n > 1), "some requests share a timestamp: {timestamps:?}");
    assert_eq!(total(&server).await, 800);
    assert_eq!(server.select_multiset("SELECT * FROM per_user").await.len(), 800);
}
