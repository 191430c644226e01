//! `CREATE INDEX` / `SHOW INDEXES` / `DROP INDEX` through the coordinator: indexes are catalog
//! entries named like Postgres names them, listed per relation, dropped alone or with their
//! relation (never blocking its drop), and never readable as relations.

mod common;

use common::{err, ok, run, sorted_rows};
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

/// Waits until the engine's workers hold `n` shared arrangements (drops apply asynchronously).
async fn arrangements(coord: &Coordinator, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while coord.installed_arrangements() != n {
        assert!(std::time::Instant::now() < deadline, "{} arrangements, expected {n}", coord.installed_arrangements());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn explain(coord: &Coordinator, sql: &str) -> String {
    text_rows(&run(coord, &format!("EXPLAIN {sql}")).await).into_iter().map(|r| r[0].clone() + "\n").collect()
}

/// Views joining the same table by the same key share one arrangement, also with an index, and
/// EXPLAIN says which; their answers equal a one-shot evaluation from scratch under inserts and
/// deletes, also after another user of their arrangements is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_share_arrangements_and_explain_says_with_which_item() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap();
    ok(&coord, "CREATE TABLE t (a int, b text)").await;
    ok(&coord, "CREATE TABLE u (a int, c text)").await;
    ok(&coord, "CREATE INDEX t_a_idx ON t (a)").await;
    arrangements(&coord, 1).await;

    let q1 = "SELECT t.b, u.c FROM t JOIN u ON t.a = u.a";
    let q2 = "SELECT t.a, t.b, u.c FROM t JOIN u ON t.a = u.a WHERE u.c <> 'z'";
    let q3 = "SELECT a, min(b), max(b) FROM t GROUP BY a";
    let plan = explain(&coord, &format!("CREATE VIEW v1 AS {q1}")).await;
    assert!(plan.contains("ArrangeBy key=[#0] of t (shared with index t_a_idx)"), "{plan}");
    assert!(plan.contains("ArrangeBy key=[#0] of u (new)"), "{plan}");
    ok(&coord, &format!("CREATE VIEW v1 AS {q1}")).await;
    let plan = explain(&coord, &format!("CREATE VIEW v2 AS {q2}")).await;
    assert!(plan.contains("ArrangeBy key=[#0] of t (shared with index t_a_idx)"), "{plan}");
    assert!(plan.contains("ArrangeBy key=[#0] of u (shared with view v1)"), "{plan}");
    ok(&coord, &format!("CREATE VIEW v2 AS {q2}")).await;
    let plan = explain(&coord, &format!("CREATE VIEW v3 AS {q3}")).await;
    assert!(plan.contains("ArrangeBy key=[#0] of t (shared with index t_a_idx)"), "{plan}");
    ok(&coord, &format!("CREATE VIEW v3 AS {q3}")).await;
    arrangements(&coord, 2).await;
    // A plain EXPLAIN SELECT shows the plan without arrangements (a one-shot query builds none).
    assert!(!explain(&coord, q1).await.contains("ArrangeBy"));

    let mut views = vec![("v1", q1), ("v2", q2), ("v3", q3)];
    let mut seed: u64 = 7;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..30 {
        let a = next(4);
        let text = ["x", "y", "z"][next(3) as usize];
        let sql = match next(5) {
            0 => format!("DELETE FROM t WHERE a = {a}"),
            1 => format!("DELETE FROM u WHERE c = '{text}'"),
            2 => format!("INSERT INTO u VALUES ({a}, '{text}'), (NULL, '{text}')"),
            _ => format!("INSERT INTO t VALUES ({a}, '{text}{step}'), ({}, NULL)", next(4)),
        };
        run(&coord, &sql).await;
        if step == 15 {
            // v1 built u's arrangement; v2 keeps it.
            ok(&coord, "DROP VIEW v1").await;
            ok(&coord, "DROP INDEX t_a_idx").await;
            views.remove(0);
            arrangements(&coord, 2).await;
        }
        for (view, query) in &views {
            assert_eq!(
                sorted_rows(&coord, &format!("SELECT * FROM {view}")).await,
                sorted_rows(&coord, query).await,
                "{view} after step {step}: {sql}"
            );
        }
    }
    ok(&coord, "DROP VIEW v2").await;
    arrangements(&coord, 1).await;
    ok(&coord, "DROP VIEW v3").await;
    arrangements(&coord, 0).await;
}
