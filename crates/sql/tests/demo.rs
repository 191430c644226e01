//! The demo: a Wikipedia load generator source and views over it, planned and then evaluated.

mod support;

use serde_json::json;
use support::{float, int, text, Db};
use viewcast_repr::{ColumnType, Datum, ScalarType};
use viewcast_sql::{parse, plan, LoadGeneratorKind, SourceConnector, Statement};

const DEMO: &str = "
CREATE SOURCE wikirecent FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 200, SEED 7);
CREATE MATERIALIZED VIEW recentchanges AS
  SELECT val->>'user' AS user, (val->'bot')::bool AS bot, val->>'wiki' AS wiki,
         val->>'type' AS type, val->>'title' AS title, (val->'timestamp')::float AS r_ts,
         (val->'length'->'new')::float::int - (val->'length'->'old')::float::int AS delta
  FROM (SELECT data::jsonb AS val FROM wikirecent);
CREATE MATERIALIZED VIEW counter AS SELECT COUNT(*) FROM recentchanges;
CREATE MATERIALIZED VIEW useredits AS SELECT user, count(*) FROM recentchanges GROUP BY user;
CREATE MATERIALIZED VIEW top10 AS SELECT * FROM useredits ORDER BY count DESC LIMIT 10;
";

fn event(user: &str, bot: bool, old: i64, new: i64, ts: f64) -> serde_json::Value {
    json!({"user": user, "bot": bot, "wiki": "enwiki", "type": "edit", "title": format!("Page {user}"),
           "timestamp": ts, "length": {"old": old, "new": new}})
}

#[test]
fn demo_plans_and_evaluates() {
    let db = Db::new();
    db.run(DEMO).unwrap();

    let rc = db.desc("recentchanges");
    assert_eq!(rc.names, ["user", "bot", "wiki", "type", "title", "r_ts", "delta"]);
    assert_eq!(rc.types[0], ColumnType::new(ScalarType::Text, true));
    assert_eq!(rc.types[1].scalar, ScalarType::Bool);
    assert_eq!(rc.types[5].scalar, ScalarType::Float64);
    assert_eq!(rc.types[6].scalar, ScalarType::Int32);
    assert_eq!(db.desc("counter").names, ["count"]);
    assert_eq!(db.desc("counter").types[0], ColumnType::new(ScalarType::Int64, false));
    assert_eq!(db.desc("useredits").names, ["user", "count"]);
    assert_eq!(db.desc("top10").names, ["user", "count"]);

    // Empty source: the global count is still one row.
    assert_eq!(db.query("SELECT * FROM counter"), vec![vec![int(0)]]);

    let mut events = Vec::new();
    for i in 0..30 {
        let user = format!("u{}", i % 12);
        events.push(event(&user, i % 5 == 0, 100, 100 + i, 1_700_000_000.5 + i as f64));
    }
    events.push(json!({"user": null, "bot": null, "length": {"new": 7}}));
    db.push_json("wikirecent", &events);

    assert_eq!(db.query("SELECT * FROM counter"), vec![vec![int(31)]]);
    let first = db.query("SELECT user, bot, delta, r_ts FROM recentchanges WHERE title = 'Page u3' ORDER BY delta");
    assert_eq!(
        first,
        vec![
            vec![text("u3"), Datum::Bool(false), int(3), float(1_700_000_003.5)],
            vec![text("u3"), Datum::Bool(true), int(15), float(1_700_000_015.5)],
            vec![text("u3"), Datum::Bool(false), int(27), float(1_700_000_027.5)],
        ]
    );
    // The event without lengths: NULL delta, NULL user grouped as its own group.
    let nulls = db.query("SELECT user, bot, delta FROM recentchanges WHERE user IS NULL");
    assert_eq!(nulls, vec![vec![Datum::Null, Datum::Null, Datum::Null]]);

    // Users u0..u5 have 3 edits, u6..u11 have 2, NULL has 1. Top 10: six 3s, then four of the 2s
    // (ties broken by the whole row: smallest user names first).
    let top = db.query("SELECT * FROM top10 ORDER BY count DESC, user");
    let mut expected: Vec<Vec<Datum>> = (0..6).map(|i| vec![text(&format!("u{i}")), int(3)]).collect();
    let mut twos: Vec<String> = (6..12).map(|i| format!("u{i}")).collect();
    twos.sort();
    expected.extend(twos.iter().take(4).map(|u| vec![text(u), int(2)]));
    expected.sort_by(|a, b| b[1].cmp(&a[1]).then(a[0].cmp(&b[0])));
    assert_eq!(top, expected);
    assert_eq!(db.query("SELECT count(*) FROM useredits"), vec![vec![int(13)]]);
}

#[test]
fn create_source_options() {
    let db = Db::new();
    let p = parse("CREATE SOURCE IF NOT EXISTS w FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 200, SEED 7, MAX EVENTS 1000, TICK INTERVAL '250ms')").unwrap();
    let Statement::CreateSource { name, if_not_exists, connector: SourceConnector::LoadGenerator(g), desc } =
        plan(&p[0], &db).unwrap()
    else {
        panic!("not a source")
    };
    assert_eq!(name, "w");
    assert!(if_not_exists);
    assert_eq!(g.kind, LoadGeneratorKind::Wikipedia);
    assert_eq!(g.events_per_second, Some(200.0));
    assert_eq!(g.seed, Some(7));
    assert_eq!(g.max_events, Some(1000));
    assert_eq!(g.tick_ms, Some(250));
    assert_eq!(desc.names, ["data"]);
    assert_eq!(desc.types[0], ColumnType::new(ScalarType::Jsonb, false));

    for (sql, rate) in [
        ("CREATE SOURCE w FROM LOAD GENERATOR WIKIPEDIA", None),
        ("CREATE SOURCE w FROM LOAD GENERATOR WIKIPEDIA (AS FAST AS POSSIBLE)", Some(0.0)),
        ("create source w from load generator wikipedia (max speed, total events 5)", Some(0.0)),
    ] {
        let p = parse(sql).unwrap();
        let Statement::CreateSource { connector: SourceConnector::LoadGenerator(g), .. } = plan(&p[0], &db).unwrap()
        else {
            panic!("not a source")
        };
        assert_eq!(g.events_per_second, rate, "{sql}");
    }
    let err = parse("CREATE SOURCE w FROM LOAD GENERATOR COUNTER").unwrap_err();
    assert_eq!(err.code, "0A000");
    assert_eq!(err.position, Some(37));
    let err = parse("CREATE SOURCE w FROM LOAD GENERATOR WIKIPEDIA (SPEED 3)").unwrap_err();
    assert_eq!(err.code, "42601");
    assert_eq!(err.position, Some(48));
}

#[test]
fn other_connectors_sinks_and_subscribe() {
    let db = Db::new();
    db.run(
        "CREATE SOURCE s FROM SSE 'https://example.com/stream'; CREATE SOURCE h FROM WEBHOOK BODY FORMAT JSON;
            CREATE SOURCE f FROM FILE '/var/log/x' WITH (TAIL = true) FORMAT REGEX '(?P<ip>\\S+) (?<path>\\S+)';
            CREATE SOURCE t FROM FILE '/tmp/t' FORMAT TEXT;
            CREATE VIEW v AS SELECT data->>'a' AS a FROM s",
    )
    .unwrap();
    assert_eq!(db.desc("f").names, ["ip", "path"]);
    assert_eq!(db.desc("t").names, ["text"]);
    assert_eq!(db.desc("h").names, ["data"]);
    let p = parse("CREATE SINK k FROM v INTO WEBHOOK 'http://x'").unwrap();
    assert!(matches!(plan(&p[0], &db).unwrap(), Statement::CreateSink { from, .. } if from == db.id("v")));
    let p = parse("SUBSCRIBE TO v ENVELOPE UPSERT (KEY (a)) WITH (SNAPSHOT = false, PROGRESS) AS OF 5 UP TO 10; TAIL (SELECT 1 AS one)").unwrap();
    let Statement::Subscribe(s) = plan(&p[0], &db).unwrap() else { panic!() };
    assert_eq!(
        (s.upsert_key, s.snapshot, s.progress, s.as_of, s.up_to),
        (Some(vec![0]), false, true, Some(5), Some(10))
    );
    let Statement::Subscribe(s) = plan(&p[1], &db).unwrap() else { panic!() };
    assert_eq!(s.desc.names, ["one"]);
    assert_eq!(p[1].sql(), "TAIL (SELECT 1 AS one)");
    let p = parse(
        "SHOW SOURCES; SHOW MATERIALIZED VIEWS; SHOW COLUMNS FROM v; DROP SOURCE IF EXISTS s, h CASCADE; DROP VIEW v",
    )
    .unwrap();
    assert!(
        matches!(plan(&p[3], &db).unwrap(), Statement::Drop { names, if_exists: true, cascade: true, .. } if names == ["s", "h"])
    );
    assert!(matches!(plan(&p[2], &db).unwrap(), Statement::Show(viewcast_sql::Show::Columns { .. })));
}

#[test]
fn explain_prints_the_plan() {
    let db = Db::new();
    db.run(DEMO).unwrap();
    let p = parse("EXPLAIN SELECT user, count(*) FROM recentchanges WHERE bot GROUP BY user ORDER BY 2 DESC LIMIT 3")
        .unwrap();
    let Statement::Explain { text, .. } = plan(&p[0], &db).unwrap() else { panic!() };
    assert!(text.contains("Reduce group_by=[#0] aggregates=[count(true)]"), "{text}");
    assert!(text.contains("Filter"), "{text}");
    assert!(text.contains("Finish order_by=[#1 desc] limit=3"), "{text}");
    let p =
        parse("EXPLAIN CREATE MATERIALIZED VIEW t AS SELECT * FROM useredits ORDER BY count DESC LIMIT 10").unwrap();
    let Statement::Explain { text, .. } = plan(&p[0], &db).unwrap() else { panic!() };
    assert!(text.starts_with("TopK group_by=[] order_by=[#1 desc] limit=10"), "{text}");
}
