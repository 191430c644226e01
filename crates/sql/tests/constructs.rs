//! Each supported construct, planned and interpreted, against the same computation done in Rust
//! over random data (with NULLs and duplicates).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{float, int, text, Db};
use viewcast_repr::Datum;

type T = (Option<i64>, Option<i64>, Option<String>);
type U = (Option<i64>, Option<f64>);

fn d_int(x: Option<i64>) -> Datum {
    x.map(Datum::Int).unwrap_or(Datum::Null)
}
fn d_text(x: &Option<String>) -> Datum {
    x.as_deref().map(Datum::text).unwrap_or(Datum::Null)
}
fn d_float(x: Option<f64>) -> Datum {
    x.map(Datum::float).unwrap_or(Datum::Null)
}

struct Fixture {
    db: Db,
    t: Vec<T>,
    u: Vec<U>,
}

fn fixture(seed: u64) -> Fixture {
    let mut rng = StdRng::seed_from_u64(seed);
    let maybe = |rng: &mut StdRng, v: i64| if rng.gen_bool(0.15) { None } else { Some(v) };
    let words = ["apple", "Apricot", "banana", "cherry", "date", "app"];
    let t: Vec<T> = (0..rng.gen_range(0..40))
        .map(|_| {
            let a = rng.gen_range(0..8);
            let b = rng.gen_range(-5..10);
            let c = words[rng.gen_range(0..words.len())].to_string();
            (maybe(&mut rng, a), maybe(&mut rng, b), if rng.gen_bool(0.1) { None } else { Some(c) })
        })
        .collect();
    let u: Vec<U> = (0..rng.gen_range(0..25))
        .map(|_| {
            let a = rng.gen_range(0..10);
            let d = rng.gen_range(0..100) as f64 / 4.0;
            (maybe(&mut rng, a), if rng.gen_bool(0.1) { None } else { Some(d) })
        })
        .collect();
    let db = Db::new();
    db.run("CREATE TABLE t (a int, b bigint, c text); CREATE TABLE u (a int, d double precision)").unwrap();
    db.load("t", t.iter().map(|(a, b, c)| vec![d_int(*a), d_int(*b), d_text(c)]).collect());
    db.load("u", u.iter().map(|(a, d)| vec![d_int(*a), d_float(*d)]).collect());
    Fixture { db, t, u }
}

fn sorted(mut rows: Vec<Vec<Datum>>) -> Vec<Vec<Datum>> {
    rows.sort();
    rows
}

const SEEDS: u64 = 12;

#[test]
fn where_three_valued_logic_case_coalesce_between_in_like() {
    for seed in 0..SEEDS {
        let f = fixture(seed);
        let t = &f.t;
        let got = f.db.query_sorted("SELECT a, b FROM t WHERE NOT (a > b) OR b IS NULL AND a = 3");
        let want = sorted(
            t.iter()
                .filter(|(a, b, _)| matches!((a, b), (Some(a), Some(b)) if a <= b) || (b.is_none() && *a == Some(3)))
                .map(|(a, b, _)| vec![d_int(*a), d_int(*b)])
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");

        let got = f.db.query_sorted(
            "SELECT CASE WHEN a < 3 THEN 'low' WHEN a < 6 THEN 'mid' ELSE 'high' END, COALESCE(b, a, -1), NULLIF(a, 2) FROM t",
        );
        let want = sorted(
            t.iter()
                .map(|(a, b, _)| {
                    let class = match a {
                        Some(a) if *a < 3 => "low",
                        Some(a) if *a < 6 => "mid",
                        _ => "high",
                    };
                    vec![text(class), int(b.or(*a).unwrap_or(-1)), if *a == Some(2) { Datum::Null } else { d_int(*a) }]
                })
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");

        let got = f.db.query_sorted("SELECT a FROM t WHERE a BETWEEN 2 AND 5 AND a NOT IN (3, 4)");
        let want = sorted(
            t.iter()
                .filter_map(|(a, _, _)| a.filter(|a| (2..=5).contains(a) && *a != 3 && *a != 4))
                .map(|a| vec![int(a)])
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");
        // x NOT IN (list with NULL) is never true.
        assert!(f.db.query("SELECT a FROM t WHERE a NOT IN (1, NULL)").is_empty());

        let got = f.db.query_sorted("SELECT c FROM t WHERE c LIKE 'ap%' OR c ILIKE '_PRICOT'");
        let want = sorted(
            t.iter()
                .filter_map(|(_, _, c)| c.clone())
                .filter(|c| c.starts_with("ap") || c.to_lowercase().len() == 7 && c.to_lowercase().ends_with("pricot"))
                .map(|c| vec![text(&c)])
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn aggregates_group_by_having() {
    for seed in 0..SEEDS {
        let f = fixture(seed);
        let got = f.db.query_sorted(
            "SELECT a, count(*), count(b), count(DISTINCT b), sum(b), min(c), max(b), avg(b), bool_and(b > 0), string_agg(c, ',')
             FROM t GROUP BY a HAVING count(*) > 1",
        );
        let mut groups: BTreeMap<Option<i64>, Vec<&T>> = BTreeMap::new();
        for row in &f.t {
            groups.entry(row.0).or_default().push(row);
        }
        let mut want = Vec::new();
        for (a, rows) in groups {
            if rows.len() <= 1 {
                continue;
            }
            let bs: Vec<i64> = rows.iter().filter_map(|r| r.1).collect();
            let distinct: BTreeSet<i64> = bs.iter().copied().collect();
            let mut cs: Vec<String> = rows.iter().filter_map(|r| r.2.clone()).collect();
            cs.sort();
            let opt = |v: Option<Datum>| v.unwrap_or(Datum::Null);
            want.push(vec![
                d_int(a),
                int(rows.len() as i64),
                int(bs.len() as i64),
                int(distinct.len() as i64),
                opt((!bs.is_empty()).then(|| int(bs.iter().sum()))),
                opt(cs.first().map(|c| text(c))),
                opt(bs.iter().max().map(|m| int(*m))),
                opt((!bs.is_empty()).then(|| float(bs.iter().sum::<i64>() as f64 / bs.len() as f64))),
                opt((!bs.is_empty()).then(|| Datum::Bool(bs.iter().all(|b| *b > 0)))),
                opt((!cs.is_empty()).then(|| text(&cs.join(",")))),
            ]);
        }
        assert_eq!(got, sorted(want), "seed {seed}");

        // Global aggregate over an empty filter: one row.
        let got = f.db.query("SELECT count(*), sum(a), max(c) FROM t WHERE a > 100");
        assert_eq!(got, vec![vec![int(0), Datum::Null, Datum::Null]]);
        // Grouped expression and ordinal.
        let got = f.db.query_sorted("SELECT a % 3 AS m, count(*) FROM t WHERE a IS NOT NULL GROUP BY 1");
        let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
        for a in f.t.iter().filter_map(|r| r.0) {
            *counts.entry(a % 3).or_default() += 1;
        }
        assert_eq!(got, sorted(counts.into_iter().map(|(m, c)| vec![int(m), int(c)]).collect()), "seed {seed}");
    }
}

#[test]
fn joins() {
    for seed in 0..SEEDS {
        let f = fixture(seed);
        let (t, u) = (&f.t, &f.u);
        let inner: Vec<Vec<Datum>> = t
            .iter()
            .flat_map(|(a, b, _)| {
                u.iter()
                    .filter(move |(ua, _)| a.is_some() && a == ua)
                    .map(move |(_, d)| vec![d_int(*a), d_int(*b), d_float(*d)])
            })
            .collect();
        let got = f.db.query_sorted("SELECT t.a, b, d FROM t JOIN u ON t.a = u.a");
        assert_eq!(got, sorted(inner.clone()), "seed {seed}");
        let got = f.db.query_sorted("SELECT t.a, b, d FROM t, u WHERE u.a = t.a");
        assert_eq!(got, sorted(inner.clone()), "seed {seed}");
        let got = f.db.query_sorted("SELECT a, b, d FROM t INNER JOIN u USING (a)");
        assert_eq!(got, sorted(inner.clone()), "seed {seed}");

        let mut left = inner.clone();
        for (a, b, _) in t {
            if !u.iter().any(|(ua, _)| a.is_some() && a == ua) {
                left.push(vec![d_int(*a), d_int(*b), Datum::Null]);
            }
        }
        let got = f.db.query_sorted("SELECT t.a, t.b, u.d FROM t LEFT JOIN u ON t.a = u.a");
        assert_eq!(got, sorted(left.clone()), "seed {seed}");

        let mut full = left.clone();
        for (ua, d) in u {
            if !t.iter().any(|(a, _, _)| ua.is_some() && a == ua) {
                full.push(vec![Datum::Null, Datum::Null, d_float(*d)]);
            }
        }
        let got = f.db.query_sorted("SELECT t.a, t.b, u.d FROM t FULL OUTER JOIN u ON t.a = u.a");
        assert_eq!(got, sorted(full), "seed {seed}");

        let mut right: Vec<Vec<Datum>> = inner.iter().map(|r| vec![r[2].clone(), r[0].clone()]).collect();
        for (ua, d) in u {
            if !t.iter().any(|(a, _, _)| ua.is_some() && a == ua) {
                right.push(vec![d_float(*d), Datum::Null]);
            }
        }
        let got = f.db.query_sorted("SELECT u.d, t.a FROM t RIGHT JOIN u ON t.a = u.a");
        assert_eq!(got, sorted(right), "seed {seed}");

        // Non-equi ON predicate.
        let got = f.db.query_sorted("SELECT t.a, u.a FROM t JOIN u ON t.a < u.a AND u.d > 10");
        let want: Vec<Vec<Datum>> = t
            .iter()
            .flat_map(|(a, _, _)| {
                u.iter()
                    .filter(move |(ua, d)| {
                        matches!((a, ua), (Some(x), Some(y)) if x < y) && d.is_some_and(|d| d > 10.0)
                    })
                    .map(move |(ua, _)| vec![d_int(*a), d_int(*ua)])
            })
            .collect();
        assert_eq!(got, sorted(want), "seed {seed}");
    }
}

#[test]
fn set_operations_distinct_order_limit_cte_values() {
    for seed in 0..SEEDS {
        let f = fixture(seed);
        let ta: Vec<Option<i64>> = f.t.iter().map(|r| r.0).collect();
        let ua: Vec<Option<i64>> = f.u.iter().map(|r| r.0).collect();
        let count = |v: &[Option<i64>]| {
            let mut m: BTreeMap<Option<i64>, i64> = BTreeMap::new();
            for x in v {
                *m.entry(*x).or_default() += 1;
            }
            m
        };
        let (ct, cu) = (count(&ta), count(&ua));
        let keys: BTreeSet<Option<i64>> = ct.keys().chain(cu.keys()).copied().collect();
        let expand = |f: &dyn Fn(i64, i64) -> i64| -> Vec<Vec<Datum>> {
            let mut out = Vec::new();
            for k in &keys {
                let n = f(*ct.get(k).unwrap_or(&0), *cu.get(k).unwrap_or(&0));
                for _ in 0..n {
                    out.push(vec![d_int(*k)]);
                }
            }
            out
        };
        type Multiplicity<'a> = &'a dyn Fn(i64, i64) -> i64;
        let cases: [(&str, Multiplicity); 6] = [
            ("SELECT a FROM t UNION ALL SELECT a FROM u", &|x, y| x + y),
            ("SELECT a FROM t UNION SELECT a FROM u", &|x, y| (x + y > 0) as i64),
            ("SELECT a FROM t EXCEPT ALL SELECT a FROM u", &|x, y| (x - y).max(0)),
            ("SELECT a FROM t EXCEPT SELECT a FROM u", &|x, y| (x > 0 && y == 0) as i64),
            ("SELECT a FROM t INTERSECT ALL SELECT a FROM u", &|x, y| x.min(y)),
            ("SELECT a FROM t INTERSECT SELECT a FROM u", &|x, y| (x > 0 && y > 0) as i64),
        ];
        for (sql, f2) in cases {
            assert_eq!(f.db.query_sorted(sql), sorted(expand(f2)), "{sql} seed {seed}");
        }
        assert_eq!(
            f.db.query_sorted("SELECT DISTINCT a FROM t"),
            sorted(expand(&|x, _| (x > 0) as i64)),
            "seed {seed}"
        );

        // ORDER BY with NULLS, LIMIT/OFFSET, by a column not selected.
        let got = f.db.query("SELECT c FROM t ORDER BY b DESC NULLS LAST, c LIMIT 5 OFFSET 2");
        let mut rows: Vec<&T> = f.t.iter().collect();
        rows.sort_by(|x, y| {
            let kb = |r: &T| (r.1.is_none(), std::cmp::Reverse(r.1));
            let kc = |r: &T| (r.2.is_none(), r.2.clone());
            kb(x).cmp(&kb(y)).then(kc(x).cmp(&kc(y)))
        });
        let want: Vec<Vec<Datum>> = rows.iter().skip(2).take(5).map(|r| vec![d_text(&r.2)]).collect();
        assert_eq!(got, want, "seed {seed}");

        // A view-like subquery with LIMIT is a TopK.
        let got = f.db.query_sorted(
            "WITH top AS (SELECT a, b FROM t WHERE b IS NOT NULL ORDER BY b DESC, a LIMIT 3) SELECT b FROM top",
        );
        let mut bs: Vec<(i64, Option<i64>)> = f.t.iter().filter_map(|r| r.1.map(|b| (b, r.0))).collect();
        bs.sort_by(|x, y| y.0.cmp(&x.0).then((x.1.is_none(), x.1).cmp(&(y.1.is_none(), y.1))));
        let want = sorted(bs.iter().take(3).map(|(b, _)| vec![int(*b)]).collect());
        assert_eq!(got, want, "seed {seed}");
    }
    let db = Db::new();
    assert_eq!(
        db.query("SELECT column1 + 1, column2 FROM (VALUES (1, 'a'), (2, NULL), (3.5, 'c')) ORDER BY 1"),
        vec![vec![float(2.0), text("a")], vec![float(3.0), Datum::Null], vec![float(4.5), text("c")]]
    );
    assert_eq!(
        db.query("SELECT 1 + 2 * 3, 7 / 2, 7 % 3, 7.0 / 2, -(2)"),
        vec![vec![int(7), int(3), int(1), float(3.5), int(-2)]]
    );
}

#[test]
fn subqueries_in_exists_scalar() {
    for seed in 0..SEEDS {
        let f = fixture(seed);
        let (t, u) = (&f.t, &f.u);
        // Uncorrelated IN with three-valued NOT IN.
        let got = f.db.query_sorted("SELECT a, a IN (SELECT a FROM u), a NOT IN (SELECT a FROM u WHERE d > 5) FROM t");
        let in_set = |x: Option<i64>, set: &[Option<i64>]| -> Datum {
            match x {
                _ if set.is_empty() => Datum::Bool(false),
                Some(x) if set.contains(&Some(x)) => Datum::Bool(true),
                None => Datum::Null,
                _ if set.contains(&None) => Datum::Null,
                _ => Datum::Bool(false),
            }
        };
        let not = |d: Datum| match d {
            Datum::Bool(b) => Datum::Bool(!b),
            other => other,
        };
        let all: Vec<Option<i64>> = u.iter().map(|r| r.0).collect();
        let big: Vec<Option<i64>> = u.iter().filter(|r| r.1.is_some_and(|d| d > 5.0)).map(|r| r.0).collect();
        let want = sorted(t.iter().map(|r| vec![d_int(r.0), in_set(r.0, &all), not(in_set(r.0, &big))]).collect());
        assert_eq!(got, want, "seed {seed}");

        // Correlated EXISTS / NOT EXISTS.
        let got = f.db.query_sorted("SELECT a, b FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a AND u.d > t.b)");
        let matches = |r: &T| {
            u.iter()
                .any(|(ua, d)| r.0.is_some() && *ua == r.0 && matches!((d, r.1), (Some(d), Some(b)) if *d > b as f64))
        };
        let want = sorted(t.iter().filter(|r| matches(r)).map(|r| vec![d_int(r.0), d_int(r.1)]).collect());
        assert_eq!(got, want, "seed {seed}");
        let got =
            f.db.query_sorted("SELECT a, b FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.a = t.a AND u.d > t.b)");
        let want = sorted(t.iter().filter(|r| !matches(r)).map(|r| vec![d_int(r.0), d_int(r.1)]).collect());
        assert_eq!(got, want, "seed {seed}");

        // Correlated scalar subqueries, including COUNT over an empty match (0, not NULL) and a
        // NULL correlation value.
        let got = f.db.query_sorted(
            "SELECT a, (SELECT count(*) FROM u WHERE u.a = t.a), (SELECT max(d) FROM u WHERE u.a = t.a) FROM t",
        );
        let want = sorted(
            t.iter()
                .map(|r| {
                    let ds: Vec<Option<f64>> = u.iter().filter(|x| r.0.is_some() && x.0 == r.0).map(|x| x.1).collect();
                    let max =
                        ds.iter().flatten().copied().fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
                    vec![d_int(r.0), int(ds.len() as i64), d_float(max)]
                })
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");

        // Uncorrelated scalar subquery in WHERE, and IN subquery in a grouped query's HAVING.
        let got = f.db.query_sorted("SELECT a FROM t WHERE a > (SELECT avg(a) FROM u)");
        let avg = {
            let v: Vec<i64> = u.iter().filter_map(|r| r.0).collect();
            (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64)
        };
        let want = sorted(
            t.iter()
                .filter(|r| matches!((r.0, avg), (Some(a), Some(m)) if a as f64 > m))
                .map(|r| vec![d_int(r.0)])
                .collect(),
        );
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn functions() {
    let db = Db::new();
    let row = db.query(
        "SELECT lower('AbC'), upper('x'), length('héllo'), substr('abcdef', 2, 3), substring('abcdef' FROM 3), 'a' || 1 || NULL,
                concat('a', NULL, 2), replace('aXbX', 'X', '-'), trim('  x '), position('c' IN 'abc'), abs(-3), round(2.5),
                round(2.71828, 2), ceil(1.2), floor(-1.2), greatest(1, 5, 3), least(2.5, 1)",
    );
    assert_eq!(
        row,
        vec![vec![
            text("abc"),
            text("X"),
            int(5),
            text("bcd"),
            text("cdef"),
            Datum::Null,
            text("a2"),
            text("a-b-"),
            text("x"),
            int(3),
            int(3),
            float(3.0),
            float(2.72),
            float(2.0),
            float(-2.0),
            int(5),
            float(1.0),
        ]]
    );
    let row = db.query(
        "SELECT date_trunc('hour', TIMESTAMP '2024-03-15 13:45:30'), extract(year FROM DATE '2024-03-15'),
                date_part('minute', '2024-03-15 13:45:30'::timestamp), TIMESTAMP '2024-01-31 00:00:00' + INTERVAL '1 month',
                '2024-03-15'::date - '2024-03-01'::date, '{\"a\": [1, 2]}'::jsonb -> 'a' ->> 1, jsonb_typeof('{}'::jsonb)",
    );
    assert_eq!(row[0][0].to_string(), "2024-03-15 13:00:00");
    assert_eq!(row[0][1], float(2024.0));
    assert_eq!(row[0][2], float(45.0));
    assert_eq!(row[0][3].to_string(), "2024-02-29 00:00:00");
    assert_eq!(row[0][4], int(14));
    assert_eq!(row[0][5], text("2"));
    assert_eq!(row[0][6], text("object"));
    assert_eq!(db.query("SELECT now() > TIMESTAMP '2020-01-01'"), vec![vec![Datum::Bool(true)]]);
    // Column names as Postgres gives them.
    let p =
        viewcast_sql::parse("SELECT 1, (SELECT count(*) FROM t), 1::int, x.y, y + 1 FROM (SELECT 1 AS y) x").unwrap();
    db.run("CREATE TABLE t (a int)").unwrap();
    let viewcast_sql::Statement::Select { desc, .. } = viewcast_sql::plan(&p[0], &db).unwrap() else { panic!() };
    assert_eq!(desc.names, ["?column?", "count", "int4", "y", "?column?"]);
}

#[test]
fn dml() {
    for seed in 0..4 {
        let f = fixture(seed);
        let db = &f.db;
        db.run("CREATE TABLE k (id int NOT NULL, v text)").unwrap();
        db.run("INSERT INTO k VALUES (1, 'one'), (2, 'two'), (3, NULL); INSERT INTO k (v, id) SELECT c, a FROM t WHERE a IS NOT NULL").unwrap();
        let n_t = f.t.iter().filter(|r| r.0.is_some()).count();
        assert_eq!(db.query("SELECT count(*) FROM k"), vec![vec![int(3 + n_t as i64)]]);
        db.run("UPDATE k SET v = upper(v) || '!' WHERE id <= 2").unwrap();
        let want_upd = f.t.iter().filter(|r| r.0.is_some_and(|a| a <= 2)).count() + 2;
        assert_eq!(db.query("SELECT count(*) FROM k WHERE v LIKE '%!'").len(), 1);
        let got = db.query("SELECT count(*) FROM k WHERE v LIKE '%!'");
        let with_text = f.t.iter().filter(|r| r.0.is_some_and(|a| a <= 2) && r.2.is_some()).count() + 2;
        assert_eq!(got, vec![vec![int(with_text as i64)]], "updated {want_upd}");
        db.run("DELETE FROM k WHERE id IN (SELECT a FROM u)").unwrap();
        let ua: BTreeSet<i64> = f.u.iter().filter_map(|r| r.0).collect();
        let left = [1, 2, 3].iter().filter(|i| !ua.contains(i)).count()
            + f.t.iter().filter_map(|r| r.0).filter(|a| !ua.contains(a)).count();
        assert_eq!(db.query("SELECT count(*) FROM k"), vec![vec![int(left as i64)]], "seed {seed}");
        match db.run("INSERT INTO k VALUES (NULL, 'x')") {
            Err(support::Error::Eval(e)) => assert_eq!(e.sqlstate(), "23502"),
            other => panic!("{other:?}"),
        }
    }
}
