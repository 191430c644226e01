//! Temporal filters through the coordinator and the hub: a row leaves a view, and a view over it,
//! at the time it expires, with no further input; a subscriber sees the retraction at that time.
//! `mz_now()` in one-shot queries is the query's timestamp; misuse is an error with a position.

use std::time::{Duration, Instant};

use serde_json::Value;
use viewcast_coord::{CoordConfig, Coordinator};
use viewcast_hub::Start;
use viewcast_repr::{Datum, Row};

async fn rows(coord: &Coordinator, sql: &str) -> Vec<Row> {
    coord.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).1
}

fn int(d: &Datum) -> i64 {
    match d {
        Datum::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_leaves_the_view_when_it_expires_with_no_input() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 20, ..CoordConfig::default() }).unwrap();
    for sql in [
        "CREATE TABLE t (k text, expires bigint)",
        "CREATE VIEW live AS SELECT k FROM t WHERE mz_now() < expires",
        "CREATE VIEW live_count AS SELECT count(*) FROM live",
    ] {
        rows(&coord, sql).await;
    }
    let mut sub = coord.hub().subscribe("live", None).unwrap();
    assert!(matches!(sub.start, Start::Snapshot(_)));

    let soon = coord.sealed_ts() + 700;
    rows(&coord, &format!("INSERT INTO t VALUES ('soon', {soon}), ('later', {})", soon + 3_600_000)).await;
    let inserted_at = coord.sealed_ts();
    assert!(inserted_at < soon, "the insert landed before the row expires ({inserted_at} < {soon})");
    let keys = |rs: Vec<Row>| {
        let mut k: Vec<String> = rs.iter().map(|r| r.get(0).to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(rows(&coord, "SELECT * FROM live").await), vec!["later", "soon"]);
    assert_eq!(int(rows(&coord, "SELECT * FROM live_count").await[0].get(0)), 2);

    // No more input: only the clock's ticks.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = coord.sealed_ts();
        let live = keys(rows(&coord, "SELECT * FROM live").await);
        let count = int(rows(&coord, "SELECT * FROM live_count").await[0].get(0));
        if live == vec!["later"] {
            assert!(coord.sealed_ts() >= soon, "gone only once time reached {soon}");
            assert_eq!(count, 1, "the view over the temporal view follows it");
            break;
        }
        assert!(now < soon + 5_000, "still {live:?} at {now}, past its expiry {soon}");
        assert!(Instant::now() < deadline, "the row never left");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // The subscriber saw the insert, then the retraction at exactly the expiry time.
    let mut events: Vec<(u64, Value)> = Vec::new();
    while let Ok(frame) = sub.updates.try_recv() {
        let msg: Value = serde_json::from_slice(&frame.bytes).unwrap();
        if msg["type"] == "update" {
            events.push((msg["ts"].as_u64().unwrap(), msg["rows"].clone()));
        }
    }
    let retraction =
        events.iter().find(|(_, rows)| rows.to_string().contains("soon") && rows.to_string().contains("-1"));
    assert_eq!(retraction.map(|(ts, _)| *ts), Some(soon), "retracted at its expiry: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_mz_now_and_errors() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 20, ..CoordConfig::default() }).unwrap();
    rows(&coord, "CREATE TABLE t (k text, at timestamptz)").await;
    rows(&coord, "INSERT INTO t VALUES ('x', '2020-01-01 00:00:00+00'), ('y', '2999-01-01 00:00:00+00')").await;
    let before = coord.sealed_ts();
    let now = int(rows(&coord, "SELECT mz_now()").await[0].get(0)) as u64;
    assert!(now >= before && now <= coord.sealed_ts(), "mz_now() {now} is a sealed timestamp (>= {before})");
    let passed = rows(&coord, "SELECT k FROM t WHERE mz_now() >= at").await;
    assert_eq!(passed.len(), 1, "only the past row passes");

    for sql in [
        "CREATE VIEW bad AS SELECT k, mz_now() FROM t",
        "CREATE VIEW bad AS SELECT k FROM t WHERE mz_now() <= at OR k = 'x'",
    ] {
        let err = coord.query(sql).await.unwrap_err();
        let at = sql.find("mz_now").map(|i| i + 1);
        assert_eq!((err.code.as_str(), err.position), ("0A000", at), "{sql}: {}", err.message);
    }
}
