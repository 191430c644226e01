//! Errors: SQLSTATE codes and positions, and no panics on arbitrary input.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::Db;
use viewcast_sql::{parse, plan};

fn db() -> Db {
    let db = Db::new();
    db.run("CREATE TABLE t (a int, b text); CREATE TABLE u (a int, c jsonb); CREATE SOURCE s FROM LOAD GENERATOR WIKIPEDIA")
        .unwrap();
    db
}

fn error(db: &Db, sql: &str) -> (String, &'static str, Option<usize>) {
    let parsed = match parse(sql) {
        Ok(p) => p,
        Err(e) => return (e.message, e.code, e.position),
    };
    for p in &parsed {
        if let Err(e) = plan(p, db) {
            return (e.message, e.code, e.position);
        }
    }
    panic!("{sql} planned without error")
}

#[test]
fn codes_and_positions() {
    let db = db();
    let cases: &[(&str, &str, Option<usize>, &str)] = &[
        ("SELECT foo FROM t", "42703", Some(8), "column \"foo\" does not exist"),
        ("SELECT a FROM nope", "42P01", Some(15), "relation \"nope\" does not exist"),
        ("SELECT a\nFROM t WHERE zz > 1", "42703", Some(23), "zz"),
        ("SELECT a FROM t, u", "42702", Some(8), "ambiguous"),
        ("SELECT x.a FROM t", "42P01", Some(8), "missing FROM-clause entry"),
        ("SELECT a, count(*) FROM t", "42803", Some(8), "must appear in the GROUP BY"),
        ("SELECT a + b FROM t", "42883", Some(8), "operator does not exist: integer + text"),
        ("SELECT a FROM t WHERE a", "42804", Some(23), "argument of WHERE must be type boolean"),
        ("SELECT 'x'::int", "22P02", Some(8), "invalid input syntax for type integer"),
        ("SELECT a::blob FROM t", "42704", Some(8), "type \"blob\" does not exist"),
        (
            "SELECT count(*) FROM t WHERE count(*) > 1",
            "42803",
            Some(30),
            "aggregate functions are not allowed in WHERE",
        ),
        ("SELECT nosuch(a) FROM t", "42883", Some(8), "function nosuch(integer) does not exist"),
        ("SELECT row_number() OVER () FROM t", "0A000", Some(8), "window functions"),
        ("SELECT a FROM t UNION SELECT a, b FROM t", "42601", None, "same number of columns"),
        ("SELECT a FROM t ORDER BY 3", "42P10", Some(26), "ORDER BY position 3"),
        ("SELEC a FROM t", "42601", Some(1), "Expected"),
        ("SELECT a FROM t WHERE", "42601", Some(22), ""),
        ("SELECT 'unterminated", "42601", Some(8), ""),
        ("INSERT INTO s VALUES ('{}')", "42809", Some(13), "cannot insert into source"),
        ("INSERT INTO t VALUES (1, 'a', 3)", "42601", Some(22), "more expressions than target columns"),
        ("SELECT a FROM t; SELECT b FROM nope", "42P01", Some(32), "nope"),
        ("CREATE VIEW v AS SELECT mz_now()", "0A000", Some(25), "cannot materialize call to mz_now() in SELECT"),
        ("SELECT * FROM t, LATERAL (SELECT 1) x", "0A000", None, "LATERAL"),
        ("CREATE INDEX i ON t (a + 1)", "0A000", None, "index keys other than columns"),
        ("CREATE INDEX i ON t (nope)", "42703", Some(22), "column \"nope\" does not exist"),
        ("SELECT (SELECT a, b FROM t)", "42601", Some(9), "only one column"),
        ("SELECT a FROM t WHERE a = ANY (SELECT a FROM u)", "0A000", Some(23), "ANY"),
        ("SELECT c->'x' < c FROM u", "0A000", None, "jsonb"),
        ("CREATE TABLE x (a int CHECK (a > 0))", "0A000", Some(17), "column option"),
    ];
    for (sql, code, pos, msg) in cases {
        let (m, c, p) = error(&db, sql);
        assert_eq!(c, *code, "{sql}: {m}");
        if pos.is_some() {
            assert_eq!(p, *pos, "{sql}: {m}");
        }
        assert!(m.contains(msg), "{sql}: {m}");
    }
}

#[test]
fn errors_in_the_middle_of_unicode_text_point_at_characters() {
    let db = db();
    let (_, code, pos) = error(&db, "SELECT 'héllo', zz FROM t");
    assert_eq!((code, pos), ("42703", Some(17)));
}

const VALID: &[&str] = &[
    "SELECT a, count(*) FROM t WHERE b LIKE 'x%' GROUP BY a HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3",
    "SELECT t.a, u.c->>'k' FROM t LEFT JOIN u ON t.a = u.a WHERE u.a IS NULL OR t.a IN (SELECT a FROM u)",
    "WITH x AS (SELECT a FROM t) SELECT * FROM x UNION ALL SELECT a FROM u EXCEPT SELECT 1",
    "SELECT CASE WHEN a > 1 THEN 'x' ELSE b END, COALESCE(a, 0), (SELECT max(a) FROM u WHERE u.a = t.a) FROM t",
    "CREATE MATERIALIZED VIEW v AS SELECT data->>'user' AS user, count(*) FROM s GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    "CREATE SOURCE w FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 10, SEED 1)",
    "SELECT EXISTS (SELECT 1 FROM u WHERE u.a = t.a), a BETWEEN 1 AND 2, substr(b, 1, 2) FROM t",
    "UPDATE t SET b = 'x' WHERE a > (SELECT min(a) FROM u); DELETE FROM t WHERE a = 1",
    "SUBSCRIBE TO (SELECT a FROM t) WITH (SNAPSHOT = false)",
];

const SOUP: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "(",
    ")",
    ",",
    "*",
    "a",
    "b",
    "t",
    "u",
    "s",
    "1",
    "'x'",
    "NULL",
    "AND",
    "OR",
    "NOT",
    "=",
    "<",
    "+",
    "-",
    "/",
    "::int",
    "::jsonb",
    "->",
    "->>",
    "JOIN",
    "ON",
    "USING",
    "IN",
    "EXISTS",
    "CASE",
    "WHEN",
    "THEN",
    "END",
    "UNION",
    "ALL",
    "DISTINCT",
    "count",
    "sum",
    "AS",
    "user",
    ";",
    "VALUES",
    "CREATE",
    "SOURCE",
    "VIEW",
    "MATERIALIZED",
    "LOAD",
    "GENERATOR",
    "WIKIPEDIA",
    "SUBSCRIBE",
    "TO",
    "WITH",
    "INSERT",
    "INTO",
    "DELETE",
    "UPDATE",
    "SET",
    "'é'",
    "1e400",
    "-9223372036854775808",
    "9999999999999999999",
    "HAVING",
    "OFFSET",
    "INTERVAL",
    "'1 day'",
    "EXPLAIN",
    "SHOW",
    "DROP",
    "TAIL",
    "SINK",
    "WEBHOOK",
    "\"Q\"",
    "$1",
    "[",
    "]",
    "||",
];

#[test]
fn random_input_never_panics() {
    let db = db();
    let mut rng = StdRng::seed_from_u64(42);
    let run = |sql: &str| {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Ok(stmts) = parse(sql) {
                for p in &stmts {
                    // Planned one-shot queries must also evaluate without panicking.
                    if let Ok(viewcast_sql::Statement::Select { plan, finishing, .. }) = plan(p, &db) {
                        if let Ok(rows) = viewcast_plan::interpret::evaluate(&plan, &|i| db.contents(i)) {
                            finishing.apply(rows);
                        }
                    }
                }
            }
        }));
        assert!(result.is_ok(), "panicked on: {sql}");
    };
    for _ in 0..3000 {
        let n = rng.gen_range(1..25);
        let words: Vec<&str> = (0..n).map(|_| SOUP[rng.gen_range(0..SOUP.len())]).collect();
        run(&words.join(" "));
    }
    for _ in 0..3000 {
        let base = VALID[rng.gen_range(0..VALID.len())];
        let mut chars: Vec<char> = base.chars().collect();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..=chars.len());
            match rng.gen_range(0..3) {
                0 if i < chars.len() => {
                    chars.remove(i);
                }
                1 => {
                    let word = SOUP[rng.gen_range(0..SOUP.len())];
                    for (k, c) in format!(" {word} ").chars().enumerate() {
                        chars.insert(i + k, c);
                    }
                }
                _ if i < chars.len() => {
                    let j = rng.gen_range(0..chars.len());
                    chars.swap(i, j);
                }
                _ => {}
            }
        }
        run(&chars.into_iter().collect::<String>());
    }
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(parse(&deep).is_err());
}

/// Mutates one of `VALID` or strings words of `SOUP` together.
fn random_statement(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.5) {
        let n = rng.gen_range(1..25);
        let words: Vec<&str> = (0..n).map(|_| SOUP[rng.gen_range(0..SOUP.len())]).collect();
        return words.join(" ");
    }
    let base = VALID[rng.gen_range(0..VALID.len())];
    let mut words: Vec<&str> = base.split(' ').collect();
    for _ in 0..rng.gen_range(1..3) {
        let i = rng.gen_range(0..=words.len());
        match rng.gen_range(0..3) {
            0 if i < words.len() => {
                words.remove(i);
            }
            1 => words.insert(i, SOUP[rng.gen_range(0..SOUP.len())]),
            _ if i < words.len() => {
                let j = rng.gen_range(0..words.len());
                words.swap(i, j);
            }
            _ => {}
        }
    }
    words.join(" ")
}

/// Parse, plan *and execute* through a running coordinator (engine included) for a few seconds:
/// nothing panics, the coordinator keeps answering, and every error carries a SQLSTATE.
#[test]
fn random_statements_execute_without_panics() {
    use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let coord = Coordinator::start(CoordConfig { tick_ms: 5, ..CoordConfig::default() }).unwrap();
        let setup = "CREATE TABLE t (a int, b text); CREATE TABLE u (a int, c jsonb); \
                     INSERT INTO t VALUES (1, 'x'), (NULL, NULL), (-3, 'é'); INSERT INTO u VALUES (1, '{\"x\": 1}')";
        for r in coord.execute(setup).await {
            assert!(!matches!(r, ExecuteResult::Error(_)), "setup: {r:?}");
        }
        let mut rng = StdRng::seed_from_u64(4242);
        let started = std::time::Instant::now();
        let mut statements = 0;
        while started.elapsed() < std::time::Duration::from_secs(5) {
            let sql = random_statement(&mut rng);
            // A statement that would start a load generator or block on a stream is not this
            // test's subject; everything else runs for real.
            if sql.contains("SOURCE") || sql.contains("SUBSCRIBE") || sql.contains("TAIL") {
                continue;
            }
            let results = tokio::time::timeout(std::time::Duration::from_secs(10), coord.execute(&sql))
                .await
                .unwrap_or_else(|_| panic!("no answer within 10 s: {sql}"));
            for r in results {
                if let ExecuteResult::Error(e) = r {
                    assert!(
                        e.code.len() == 5 && e.code.chars().all(|c| c.is_ascii_alphanumeric()),
                        "bad SQLSTATE {:?} for {sql}: {}",
                        e.code,
                        e.message
                    );
                }
            }
            statements += 1;
        }
        // Still alive and consistent after all that.
        assert!(coord.query("SELECT count(*) FROM t").await.is_ok() || coord.query("SELECT 1").await.is_ok());
        assert!(statements > 50, "only {statements} statements ran");
    });
}
