//! Statement helpers shared by the coordinator's tests.
#![allow(dead_code)]

use viewcast_coord::{Coordinator, ExecuteResult};

/// The last statement's result.
pub async fn run(coord: &Coordinator, sql: &str) -> ExecuteResult {
    coord.execute(sql).await.pop().expect("one result")
}

/// The tag of a statement that must succeed without rows.
pub async fn ok(coord: &Coordinator, sql: &str) -> String {
    match run(coord, sql).await {
        ExecuteResult::Ok { tag } => tag,
        other => panic!("{sql}: {other:?}"),
    }
}

/// The SQLSTATE and message of a statement that must fail.
pub async fn err(coord: &Coordinator, sql: &str) -> (String, String) {
    match run(coord, sql).await {
        ExecuteResult::Error(e) => (e.code.clone(), e.message.clone()),
        other => panic!("{sql}: expected an error, got {other:?}"),
    }
}

/// The rows of a query, each as its values' JSON joined by commas, sorted (a multiset).
pub async fn sorted_rows(coord: &Coordinator, sql: &str) -> Vec<String> {
    let (_, rows) = coord.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get(i).to_json().to_string()).collect::<Vec<_>>().join(","))
        .collect();
    out.sort();
    out
}
