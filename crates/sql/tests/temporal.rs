//! `mz_now()`: which forms a maintained view accepts (each checked against the same query with
//! `mz_now()` written as a literal, at times around its bounds), which it refuses (SQLSTATE,
//! position, message), and `mz_now()` in one-shot queries.

mod support;

use support::{int, Db};
use viewcast_sql::{parse, plan};

/// `rc(wiki text, ts_ms bigint, at timestamptz, n numeric)`: four edits around `Db::NOW`.
fn db() -> Db {
    let db = Db::new();
    db.run("CREATE TABLE rc (wiki text, ts_ms bigint, at timestamptz, n numeric)").unwrap();
    db.run(
        "INSERT INTO rc VALUES \
         ('en', 1700000000000, '2023-11-14 22:13:20+00', 1700000000000.5), \
         ('en', 1700000030000, '2023-11-14 22:13:50+00', 1700000030000), \
         ('de', 1700000059999, '2023-11-14 22:14:19.999+00', 1700000059999.25), \
         ('fr', NULL, NULL, NULL)",
    )
    .unwrap();
    db
}

fn error(db: &Db, sql: &str) -> (String, &'static str, Option<usize>) {
    for p in &parse(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}")) {
        if let Err(e) = plan(p, db) {
            return (e.message, e.code, e.position);
        }
    }
    panic!("{sql} planned without error")
}

/// Each view, read at time T, equals the one-shot query with `{T}` replaced by T's literal form.
#[test]
fn accepted_forms_match_the_literal_query_at_every_time() {
    let cases: &[(&str, &str)] = &[
        (
            "SELECT wiki, count(*) FROM rc WHERE mz_now() <= ts_ms + 60000 GROUP BY wiki",
            "SELECT wiki, count(*) FROM rc WHERE {T} <= ts_ms + 60000 GROUP BY wiki",
        ),
        ("SELECT wiki FROM rc WHERE ts_ms + 60000 > mz_now()", "SELECT wiki FROM rc WHERE ts_ms + 60000 > {T}"),
        (
            "SELECT wiki FROM rc WHERE mz_now() BETWEEN ts_ms + 10000 AND ts_ms + 40000",
            "SELECT wiki FROM rc WHERE {T} BETWEEN ts_ms + 10000 AND ts_ms + 40000",
        ),
        ("SELECT wiki FROM rc WHERE (mz_now() = ts_ms)", "SELECT wiki FROM rc WHERE {T} = ts_ms"),
        (
            "SELECT wiki FROM rc WHERE wiki <> 'de' AND (mz_now() >= ts_ms AND mz_now() < ts_ms + 45000)",
            "SELECT wiki FROM rc WHERE wiki <> 'de' AND {T} >= ts_ms AND {T} < ts_ms + 45000",
        ),
        ("SELECT wiki FROM rc WHERE mz_now() < n + 30000", "SELECT wiki FROM rc WHERE {T} < n + 30000"),
        (
            "SELECT wiki FROM rc WHERE mz_now() <= at + INTERVAL '1 minute'",
            "SELECT wiki FROM rc WHERE {TS} <= at + INTERVAL '1 minute'",
        ),
        (
            "SELECT wiki FROM rc WHERE mz_now() > '2023-11-14 22:13:35+00'",
            "SELECT wiki FROM rc WHERE {TS} > '2023-11-14 22:13:35+00'::timestamptz",
        ),
        ("SELECT wiki FROM rc WHERE mz_now() >= '1700000030000'", "SELECT wiki FROM rc WHERE {T} >= 1700000030000"),
        (
            "SELECT wiki, max(ts_ms) FROM rc GROUP BY wiki HAVING mz_now() < max(ts_ms) + 20000",
            "SELECT wiki, max(ts_ms) FROM rc GROUP BY wiki HAVING {T} < max(ts_ms) + 20000",
        ),
        (
            "SELECT count(*) FROM (SELECT wiki FROM rc WHERE mz_now() <= ts_ms + 30000) w",
            "SELECT count(*) FROM (SELECT wiki FROM rc WHERE {T} <= ts_ms + 30000) w",
        ),
    ];
    let times: Vec<u64> =
        [0, 1, 10_000, 29_999, 30_000, 30_001, 40_000, 45_000, 59_999, 60_000, 60_001, 90_000, 120_000]
            .iter()
            .flat_map(|d| [1_700_000_000_000 + d, 1_700_000_000_000 - 1 + d])
            .collect();
    for (i, (view, literal)) in cases.iter().enumerate() {
        let db = db();
        db.run(&format!("CREATE VIEW v{i} AS {view}")).unwrap_or_else(|e| panic!("{view}: {e:?}"));
        let mut seen = std::collections::BTreeSet::new();
        for &t in &times {
            db.time.set(t);
            let ts = format!("'{}'::timestamptz", timestamptz_text(t));
            let q = literal.replace("{TS}", &ts).replace("{T}", &t.to_string());
            let want = db.query_sorted(&q);
            let got = db.query_sorted(&format!("SELECT * FROM v{i}"));
            assert_eq!(got, want, "{view} at {t} (expected from {q})");
            seen.insert(got);
        }
        assert!(seen.len() > 1, "{view}: the contents change over time");
    }
}

/// `t` ms since the epoch as timestamptz text with milliseconds, UTC.
fn timestamptz_text(t: u64) -> String {
    let secs = (t / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}+00", rem / 3600, rem / 60 % 60, rem % 60, t % 1000)
}

#[test]
fn refused_forms_say_what_and_where() {
    let db = db();
    // (statement, SQLSTATE, the text the position must point at (its last occurrence), message)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "CREATE VIEW v AS SELECT mz_now() FROM rc",
            "0A000",
            "mz_now",
            "cannot materialize call to mz_now() in SELECT",
        ),
        (
            "CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() <= ts_ms OR wiki = 'en'",
            "0A000",
            "mz_now",
            "unsupported temporal predicate in WHERE",
        ),
        ("CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() - 5 <= ts_ms", "0A000", "mz_now", "unsupported temporal"),
        ("CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() <> ts_ms", "0A000", "mz_now", "unsupported temporal"),
        (
            "CREATE VIEW v AS SELECT wiki FROM rc WHERE NOT (mz_now() <= ts_ms)",
            "0A000",
            "mz_now",
            "unsupported temporal",
        ),
        (
            "CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() NOT BETWEEN ts_ms AND ts_ms + 1",
            "0A000",
            "mz_now",
            "unsupported temporal",
        ),
        (
            "CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() <= ts_ms + extract(epoch FROM mz_now())",
            "0A000",
            "mz_now",
            "unsupported temporal",
        ),
        ("CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() <= wiki", "42883", "wiki", "mz_timestamp and text"),
        (
            "CREATE VIEW v AS SELECT r.wiki FROM rc r JOIN rc s ON mz_now() <= r.ts_ms",
            "0A000",
            "mz_now",
            "cannot materialize call to mz_now() in JOIN/ON",
        ),
        (
            "CREATE VIEW v AS SELECT wiki, count(*) FROM rc GROUP BY wiki HAVING mz_now() < count(*) OR true",
            "0A000",
            "mz_now",
            "unsupported temporal predicate in HAVING",
        ),
        ("SUBSCRIBE (SELECT mz_now() FROM rc)", "0A000", "mz_now", "cannot materialize call to mz_now()"),
    ];
    for (sql, code, at, msg) in cases {
        let (m, c, p) = error(&db, sql);
        let want = sql.rfind(at).map(|i| sql[..i].chars().count() + 1);
        assert_eq!((c, p), (*code, want), "{sql}: {m}");
        assert!(m.contains(msg), "{sql}: {m}");
    }
}

#[test]
fn one_shot_mz_now_is_the_query_time() {
    let db = db();
    db.time.set(1_700_000_030_000);
    assert_eq!(db.query("SELECT mz_now()"), vec![vec![int(1_700_000_030_000)]]);
    assert_eq!(db.query("SELECT mz_now() - 30000"), vec![vec![int(1_700_000_000_000)]]);
    assert_eq!(db.query_sorted("SELECT wiki FROM rc WHERE mz_now() - 10000 < ts_ms OR wiki = 'fr'").len(), 3);
    assert_eq!(db.query("SELECT count(*) FROM rc WHERE mz_now() >= ts_ms"), vec![vec![int(2)]]);
}

#[test]
fn explain_shows_the_temporal_filter() {
    let db = db();
    let parsed = parse("CREATE VIEW v AS SELECT wiki FROM rc WHERE mz_now() <= ts_ms + 60000").unwrap();
    let stmt = plan(&parsed[0], &db).unwrap();
    let viewcast_sql::Statement::CreateView { plan, .. } = stmt else { panic!("a view") };
    assert!(plan.explain().contains("mz_now() <= (#1 + 60000)"), "{}", plan.explain());
}
