//! `PRIMARY KEY`, `UNIQUE` and `NOT NULL` on tables: a write that would break one fails with
//! Postgres' SQLSTATE and message and leaves nothing behind; the constraints show in
//! `SHOW CREATE TABLE` and `SHOW COLUMNS`.

use std::sync::Arc;

mod common;

use common::{err, ok, run, sorted_rows as rows};
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};

fn dup(constraint: &str) -> (String, String) {
    ("23505".into(), format!("duplicate key value violates unique constraint \"{constraint}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refuse_duplicates_and_failed_statements_leave_nothing() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap();
    ok(&coord, "CREATE TABLE t (id int PRIMARY KEY, email text UNIQUE, n int NOT NULL)").await;
    assert_eq!(ok(&coord, "INSERT INTO t VALUES (1, 'a', 10), (2, NULL, 20), (3, NULL, 30)").await, "INSERT 0 3");

    // Against existing rows, within one statement, and by UPDATE.
    assert_eq!(err(&coord, "INSERT INTO t VALUES (1, 'z', 0)").await, dup("t_pkey"));
    assert_eq!(err(&coord, "INSERT INTO t VALUES (4, 'a', 0)").await, dup("t_email_key"));
    assert_eq!(err(&coord, "INSERT INTO t VALUES (5, 'b', 0), (6, 'c', 0), (5, 'd', 0)").await, dup("t_pkey"));
    assert_eq!(err(&coord, "INSERT INTO t VALUES (7, 'e', 0), (7, 'e', 0)").await, dup("t_pkey"));
    assert_eq!(err(&coord, "UPDATE t SET id = 1 WHERE id = 2").await, dup("t_pkey"));
    assert_eq!(err(&coord, "UPDATE t SET email = 'a'").await, dup("t_email_key"));
    // NOT NULL names the column and the relation; a primary key's columns are NOT NULL.
    assert_eq!(
        err(&coord, "INSERT INTO t VALUES (8, 'f', NULL)").await,
        ("23502".into(), "null value in column \"n\" of relation \"t\" violates not-null constraint".into())
    );
    assert_eq!(err(&coord, "INSERT INTO t (email, n) VALUES ('g', 1)").await.0, "23502");
    assert_eq!(err(&coord, "UPDATE t SET n = NULL WHERE id = 1").await.0, "23502");
    // Nothing of a failed statement landed: not the rows before the duplicate, not (5, 'b').
    let before = vec!["1,\"a\",10".to_string(), "2,null,20".into(), "3,null,30".into()];
    assert_eq!(rows(&coord, "SELECT * FROM t").await, before);

    // NULLs never conflict in a UNIQUE column; keys freed by DELETE or UPDATE can be reused, also
    // by a statement that moves keys around.
    assert_eq!(ok(&coord, "INSERT INTO t VALUES (4, NULL, 40)").await, "INSERT 0 1");
    assert_eq!(ok(&coord, "DELETE FROM t WHERE id = 1").await, "DELETE 1");
    assert_eq!(ok(&coord, "INSERT INTO t VALUES (1, 'a', 11)").await, "INSERT 0 1");
    assert_eq!(ok(&coord, "UPDATE t SET id = id + 10").await, "UPDATE 4");
    assert_eq!(ok(&coord, "UPDATE t SET n = n + 1 WHERE id = 11").await, "UPDATE 1");
    assert_eq!(
        rows(&coord, "SELECT id, n FROM t").await,
        ["11,12", "12,20", "13,30", "14,40"].map(String::from).to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_constraints_are_named_like_postgres_and_shown() {
    let coord = Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap();
    ok(&coord, "CREATE TABLE pairs (a int, b text, c int, PRIMARY KEY (a, b), CONSTRAINT c_once UNIQUE (c))").await;
    ok(&coord, "INSERT INTO pairs VALUES (1, 'x', 1), (1, 'y', 2)").await;
    assert_eq!(err(&coord, "INSERT INTO pairs VALUES (1, 'x', 3)").await, dup("pairs_pkey"));
    assert_eq!(err(&coord, "INSERT INTO pairs VALUES (2, 'x', 2)").await, dup("c_once"));
    assert_eq!(err(&coord, "INSERT INTO pairs (b, c) VALUES ('x', 9)").await.0, "23502", "key columns are NOT NULL");

    let (_, create) = coord.query("SHOW CREATE TABLE pairs").await.unwrap();
    assert_eq!(
        create[0].get(1).to_json().as_str().unwrap(),
        "CREATE TABLE pairs (a integer NOT NULL, b text NOT NULL, c integer, \
         CONSTRAINT pairs_pkey PRIMARY KEY (a, b), CONSTRAINT c_once UNIQUE (c))"
    );
    assert_eq!(
        rows(&coord, "SHOW COLUMNS FROM pairs").await,
        [
            "\"a\",false,\"integer\",\"pairs_pkey\"",
            "\"b\",false,\"text\",\"pairs_pkey\"",
            "\"c\",true,\"integer\",\"c_once\"",
        ]
        .map(String::from)
        .to_vec()
    );

    assert_eq!(err(&coord, "CREATE TABLE two (a int PRIMARY KEY, b int PRIMARY KEY)").await.0, "42P16");
    assert_eq!(err(&coord, "CREATE TABLE bad (a int, PRIMARY KEY (nope))").await.0, "42703");
    assert_eq!(err(&coord, "CREATE TABLE fk (a int REFERENCES pairs (a))").await.0, "0A000");
}

/// Concurrent INSERTs of one key: the check sees every earlier write, so exactly one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_one_key_admit_exactly_one() {
    let coord = Arc::new(Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap());
    ok(&coord, "CREATE TABLE k (id int PRIMARY KEY, who int)").await;
    for round in 0..3 {
        let mut set = tokio::task::JoinSet::new();
        for who in 0..12 {
            let coord = coord.clone();
            set.spawn(async move { run(&coord, &format!("INSERT INTO k VALUES ({round}, {who})")).await });
        }
        let (mut wins, mut dups) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                ExecuteResult::Ok { .. } => wins += 1,
                ExecuteResult::Error(e) if e.code == "23505" => dups += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((wins, dups), (1, 11), "round {round}");
    }
    assert_eq!(rows(&coord, "SELECT id, count(*) FROM k GROUP BY id").await, ["0,1", "1,1", "2,1"]);
}
