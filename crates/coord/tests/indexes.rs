//! `CREATE INDEX` / `SHOW INDEXES` / `DROP INDEX` through the coordinator: indexes are catalog
//! entries named like Postgres names them, listed per relation, dropped alone or with their
//! relation (never blocking its drop), and never readable as relations.

use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};

fn text_rows(r: &ExecuteResult) -> Vec<Vec<String>> {
    match r {
        ExecuteResult::Rows { rows, .. } => rows
            .iter()
            .map(|row| (0..row.len()).map(|i| row.get(i).to_json().as_str().unwrap().to_string()).collect())
            .collect(),
        other => panic!("expected rows, got {other:?}"),
    }
}

async fn run(coord: &Coordinator, sql: &str) -> ExecuteResult {
    coord.execute(sql).await.pop().expect("one result")
}

async fn ok(coord: &Coordinator, sql: &str) -> String {
    match run(coord, sql).await {
        ExecuteResult::Ok { tag } => tag,
        other => panic!("{sql}: {other:?}"),
    }
}

async fn err(coord: &Coordinator, sql: &str) -> (String, String) {
    match run(coord, sql).await {
        ExecuteResult::Error(e) => (e.code.clone(), e.message.clone()),
        other => panic!("{sql}: expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_named_listed_and_dropped_with_their_relation() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap();
    ok(&coord, "CREATE TABLE t (a int, b text)").await;
    ok(&coord, "CREATE VIEW v AS SELECT b, count(*) FROM t GROUP BY b").await;
    assert_eq!(ok(&coord, "CREATE INDEX t_by_b ON t (b)").await, "CREATE INDEX");
    ok(&coord, "CREATE INDEX ON t (a, b)").await;
    ok(&coord, "CREATE INDEX ON t (a, b)").await;
    ok(&coord, "CREATE INDEX ON v (b)").await;
    assert_eq!(ok(&coord, "CREATE INDEX IF NOT EXISTS t_by_b ON t (a)").await, "CREATE INDEX");
    assert_eq!(
        err(&coord, "CREATE INDEX t_by_b ON t (a)").await.0,
        "42710",
        "as Materialize: catalog item already exists"
    );
    assert_eq!(err(&coord, "CREATE INDEX t (a)").await.0, "42601");
    assert_eq!(err(&coord, "CREATE INDEX x ON t (nope)").await.0, "42703");

    let all = text_rows(&run(&coord, "SHOW INDEXES").await);
    assert_eq!(
        all,
        [["t_a_b_idx", "t", "a, b"], ["t_a_b_idx1", "t", "a, b"], ["t_by_b", "t", "b"], ["v_b_idx", "v", "b"],]
            .map(|r| r.map(String::from).to_vec())
    );
    assert_eq!(text_rows(&run(&coord, "SHOW INDEXES ON v").await).len(), 1);
    assert_eq!(text_rows(&run(&coord, "SHOW INDEXES FROM t").await).len(), 3);
    let create = text_rows(&run(&coord, "SHOW CREATE INDEX t_by_b").await);
    assert_eq!(create[0][1], "CREATE INDEX t_by_b ON t (b)");

    // An index is not a relation: not readable, subscribable, sinkable or indexable.
    let (code, msg) = err(&coord, "SELECT * FROM t_by_b").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42809", "\"t_by_b\" is an index, not a relation"));
    assert_eq!(err(&coord, "CREATE INDEX ON t_by_b (b)").await.0, "42809");
    assert_eq!(err(&coord, "CREATE SINK s FROM t_by_b INTO WEBHOOK 'http://127.0.0.1:9/'").await.0, "42809");
    assert!(coord.relations().iter().all(|r| r.kind != "index"), "indexes are not listed as relations");

    // DROP INDEX; a wrong kind is refused; IF EXISTS tolerates a missing one.
    assert_eq!(ok(&coord, "DROP INDEX t_a_b_idx1").await, "DROP INDEX");
    assert_eq!(err(&coord, "DROP INDEX t").await.0, "42809");
    assert_eq!(err(&coord, "DROP TABLE t_by_b").await.0, "42809");
    assert_eq!(err(&coord, "DROP INDEX t_a_b_idx1").await.0, "42P01");
    ok(&coord, "DROP INDEX IF EXISTS t_a_b_idx1").await;

    // Indexes never block dropping their relation (a dependent view still does), and go with it.
    assert_eq!(err(&coord, "DROP TABLE t").await.0, "2BP01");
    ok(&coord, "DROP VIEW v").await;
    assert_eq!(text_rows(&run(&coord, "SHOW INDEXES").await).len(), 2);
    ok(&coord, "DROP TABLE t").await;
    assert!(text_rows(&run(&coord, "SHOW INDEXES").await).is_empty());
    // Their names are free again.
    ok(&coord, "CREATE TABLE t (a int, b text)").await;
    ok(&coord, "CREATE INDEX t_by_b ON t (b)").await;
    ok(&coord, "INSERT INTO t VALUES (1, 'x')").await;
    assert_eq!(text_rows(&run(&coord, "SELECT b FROM t").await), [["x".to_string()]]);
}
