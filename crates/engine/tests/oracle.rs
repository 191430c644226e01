//! Random insert/delete ticks over two tables; every view (every RelExpr variant, views over views,
//! a view created late, a view dropped) must equal a from-scratch evaluation at every sealed time.
//! Runs with 1 and 2 workers, which must also produce identical event logs.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::oracle::{evaluate, Contents};
use common::{Harness, SealedLog};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use viewcast_plan::{AggregateExpr, AggregateFunc, BinaryFunc, ColumnOrder, GlobalId, JoinKind, RelExpr, ScalarExpr};
use viewcast_repr::{Datum, Diff, Row, ScalarType, Timestamp};

const A: GlobalId = 1;
const B: GlobalId = 2;

fn col(i: usize) -> ScalarExpr {
    ScalarExpr::Column(i)
}
fn int(i: i64) -> ScalarExpr {
    ScalarExpr::literal(Datum::Int(i), ScalarType::Int64)
}
fn get_a() -> Box<RelExpr> {
    Box::new(RelExpr::Get { id: A, arity: 3 })
}
fn get_b() -> Box<RelExpr> {
    Box::new(RelExpr::Get { id: B, arity: 2 })
}
fn agg(func: AggregateFunc, expr: ScalarExpr, distinct: bool) -> AggregateExpr {
    AggregateExpr { func, expr, distinct }
}
fn star() -> AggregateExpr {
    agg(AggregateFunc::Count, ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool), false)
}
fn reduce(input: Box<RelExpr>, group_key: Vec<usize>, aggregates: Vec<AggregateExpr>) -> RelExpr {
    RelExpr::Reduce { input, group_key, aggregates }
}
fn join(kind: JoinKind, equi: Vec<(usize, usize)>, predicate: Option<ScalarExpr>) -> RelExpr {
    RelExpr::Join { left: get_a(), right: get_b(), kind, equi, predicate }
}
fn project(input: Box<RelExpr>, outputs: Vec<usize>) -> Box<RelExpr> {
    Box::new(RelExpr::Project { input, outputs })
}

fn views() -> Vec<(GlobalId, RelExpr)> {
    use AggregateFunc::*;
    let mfp = RelExpr::Project {
        input: Box::new(RelExpr::Filter {
            input: Box::new(RelExpr::Map {
                input: get_a(),
                scalars: vec![
                    col(0).call_binary(BinaryFunc::Add, col(1)),
                    col(2).call_binary(BinaryFunc::Concat, ScalarExpr::literal(Datum::text("q"), ScalarType::Text)),
                ],
            }),
            predicates: vec![col(0).call_binary(BinaryFunc::Gt, int(1))],
        }),
        outputs: vec![0, 3, 4],
    };
    vec![
        (10, mfp),
        (11, reduce(get_a(), vec![0], vec![star(), agg(SumInt, col(1), false), agg(Count, col(1), false)])),
        (12, reduce(get_a(), vec![2], vec![star()])),
        (13, reduce(get_a(), vec![], vec![star()])),
        (
            14,
            reduce(
                get_a(),
                vec![0],
                vec![
                    agg(Min, col(2), false),
                    agg(Max, col(1), false),
                    agg(Count, col(1), true),
                    agg(Avg, col(1), false),
                ],
            ),
        ),
        (15, reduce(get_a(), vec![], vec![agg(SumInt, col(1), false), agg(Max, col(2), false)])),
        (16, reduce(get_a(), vec![], vec![agg(SumInt, col(1), false), agg(Count, col(1), false)])),
        (
            17,
            RelExpr::TopK {
                input: get_a(),
                group_key: vec![],
                order_key: vec![ColumnOrder::desc(1)],
                limit: Some(3),
                offset: 1,
            },
        ),
        (
            18,
            RelExpr::TopK {
                input: get_a(),
                group_key: vec![0],
                order_key: vec![ColumnOrder::asc(2)],
                limit: Some(2),
                offset: 0,
            },
        ),
        (19, join(JoinKind::Inner, vec![(0, 0)], None)),
        (20, join(JoinKind::LeftOuter, vec![(0, 0)], Some(col(1).call_binary(BinaryFunc::Lt, int(3))))),
        (21, join(JoinKind::RightOuter, vec![(0, 0)], None)),
        (22, join(JoinKind::FullOuter, vec![(0, 0)], None)),
        (23, join(JoinKind::Inner, vec![], Some(col(1).call_binary(BinaryFunc::Eq, col(3))))),
        (24, join(JoinKind::FullOuter, vec![], Some(col(2).call_binary(BinaryFunc::Eq, col(4))))),
        (25, RelExpr::Union { inputs: vec![*project(get_a(), vec![0]), *project(get_b(), vec![0])] }),
        (26, RelExpr::Distinct { input: Box::new(RelExpr::Get { id: 25, arity: 1 }) }),
        (
            27,
            RelExpr::Threshold {
                input: Box::new(RelExpr::Union {
                    inputs: vec![*project(get_a(), vec![0]), RelExpr::Negate { input: project(get_b(), vec![0]) }],
                }),
            },
        ),
        // Views over views: an arranged reduce, a pure count, a linear view and a global aggregate.
        (28, reduce(Box::new(RelExpr::Get { id: 11, arity: 4 }), vec![1], vec![star()])),
        (
            29,
            RelExpr::TopK {
                input: Box::new(RelExpr::Get { id: 12, arity: 2 }),
                group_key: vec![],
                order_key: vec![ColumnOrder::desc(1)],
                limit: Some(2),
                offset: 0,
            },
        ),
        (
            30,
            RelExpr::Join {
                left: Box::new(RelExpr::Get { id: 10, arity: 3 }),
                right: Box::new(RelExpr::Get { id: 13, arity: 1 }),
                kind: JoinKind::Inner,
                equi: vec![],
                predicate: None,
            },
        ),
        (
            31,
            RelExpr::Union {
                inputs: vec![
                    RelExpr::Constant { rows: vec![(Row::new(vec![Datum::text("w")]), 2)], arity: 1 },
                    *project(get_a(), vec![2]),
                ],
            },
        ),
        (32, RelExpr::Negate { input: project(get_b(), vec![1]) }),
    ]
}

fn late_views() -> Vec<(GlobalId, RelExpr)> {
    vec![
        (
            40,
            RelExpr::TopK {
                input: Box::new(RelExpr::Get { id: 11, arity: 4 }),
                group_key: vec![],
                order_key: vec![ColumnOrder::desc(1)],
                limit: Some(2),
                offset: 1,
            },
        ),
        (
            41,
            reduce(
                Box::new(RelExpr::Get { id: 10, arity: 3 }),
                vec![1],
                vec![star(), agg(AggregateFunc::Max, col(2), false)],
            ),
        ),
        // Late readers of counting views, which serve them a snapshot of their counts: a top-k, a
        // count of counts, and a plan over the global count.
        (
            42,
            RelExpr::TopK {
                input: Box::new(RelExpr::Get { id: 12, arity: 2 }),
                group_key: vec![],
                order_key: vec![ColumnOrder::asc(1)],
                limit: Some(2),
                offset: 0,
            },
        ),
        (43, reduce(Box::new(RelExpr::Get { id: 12, arity: 2 }), vec![1], vec![star()])),
        (
            44,
            RelExpr::Map {
                input: Box::new(RelExpr::Get { id: 13, arity: 1 }),
                scalars: vec![col(0).call_binary(BinaryFunc::Add, int(1))],
            },
        ),
        // Late readers of a linear view (rendered inline over the inputs' history, then its
        // forwarded changes): a count by a column, and a linear view of it.
        (45, reduce(Box::new(RelExpr::Get { id: 10, arity: 3 }), vec![0], vec![star()])),
        (46, *project(Box::new(RelExpr::Get { id: 10, arity: 3 }), vec![2, 0])),
    ]
}

const DROPPED: GlobalId = 19;

fn random_a(rng: &mut StdRng) -> Row {
    let b = if rng.gen_bool(0.2) { Datum::Null } else { Datum::Int(rng.gen_range(0..6)) };
    let c = if rng.gen_bool(0.2) { Datum::Null } else { Datum::text(["x", "y", "z"][rng.gen_range(0..3)]) };
    Row::new(vec![Datum::Int(rng.gen_range(0..5)), b, c])
}

fn random_b(rng: &mut StdRng) -> Row {
    let a = if rng.gen_bool(0.15) { Datum::Null } else { Datum::Int(rng.gen_range(0..5)) };
    Row::new(vec![a, Datum::text(["x", "y"][rng.gen_range(0..2)])])
}

/// Inserts and deletes (only rows present) for one table.
fn churn(rng: &mut StdRng, table: &mut BTreeMap<Row, Diff>, gen: fn(&mut StdRng) -> Row) -> Vec<(Row, Diff)> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(0..6) {
        let row = gen(rng);
        *table.entry(row.clone()).or_insert(0) += 1;
        out.push((row, 1));
    }
    for _ in 0..rng.gen_range(0..4) {
        if table.is_empty() {
            break;
        }
        let i = rng.gen_range(0..table.len());
        let row = table.keys().nth(i).unwrap().clone();
        let n = table.get_mut(&row).unwrap();
        *n -= 1;
        if *n == 0 {
            table.remove(&row);
        }
        out.push((row, -1));
    }
    out
}

fn contents(table: &BTreeMap<Row, Diff>) -> Contents {
    table.iter().map(|(r, d)| (r.clone(), *d)).collect()
}

/// Random ticks over both tables, every view checked against the oracle after every tick. With
/// `feed`, each tick's rows go in over [`viewcast_engine::Engine::feed`] (in up to three parts)
/// before the tick closes, and the late views are created and a view dropped while a tick is
/// open (such views start after that tick, so they are checked from the next one).
fn run(workers: usize, seed: u64, ticks: usize, feed: bool) -> SealedLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new(workers);
    h.engine.create_input(A, 3).unwrap();
    h.engine.create_input(B, 2).unwrap();
    let mut live = views();
    for (id, plan) in &live {
        h.engine.create_view(*id, plan.clone(), true).unwrap();
    }
    let (mut ta, mut tb) = (BTreeMap::new(), BTreeMap::new());
    let mut ts: Timestamp = 1_000 + seed;
    for tick in 0..ticks {
        ts += rng.gen_range(1..40);
        let mut ua = churn(&mut rng, &mut ta, random_a);
        let mut ub = churn(&mut rng, &mut tb, random_b);
        let mut starting: Vec<GlobalId> = Vec::new();
        let feeds = if feed { rng.gen_range(1..4) } else { 0 };
        // The late views are created, and a view dropped, after the tick's first part is fed
        // (while it is open) or, without feeding, before the tick.
        let mut items_change = |h: &mut Harness, live: &mut Vec<(GlobalId, RelExpr)>, open: bool| {
            if tick == ticks / 3 {
                for (id, plan) in late_views() {
                    h.engine.create_view(id, plan.clone(), true).unwrap();
                    live.push((id, plan));
                    if open {
                        starting.push(id);
                    }
                }
            }
            if tick == ticks / 2 {
                h.engine.drop_item(DROPPED).unwrap();
                live.retain(|(id, _)| *id != DROPPED);
                h.acc.remove(&DROPPED);
            }
        };
        for part in 0..feeds {
            let (a, b) = (ua.split_off(rng.gen_range(0..=ua.len())), ub.split_off(rng.gen_range(0..=ub.len())));
            h.engine.feed(ts, vec![(A, std::mem::replace(&mut ua, a)), (B, std::mem::replace(&mut ub, b))]).unwrap();
            if part == 0 {
                items_change(&mut h, &mut live, true);
            }
        }
        if !feed {
            items_change(&mut h, &mut live, false);
        }
        h.tick(ts, vec![(A, ua), (B, ub)]);

        let mut db: HashMap<GlobalId, Contents> = HashMap::new();
        db.insert(A, contents(&ta));
        db.insert(B, contents(&tb));
        let mut ordered = live.clone();
        ordered.sort_by_key(|(id, _)| *id);
        for (id, plan) in &ordered {
            let want = evaluate(plan, &db);
            if !starting.contains(id) {
                assert_eq!(
                    h.contents(*id),
                    want,
                    "view {id} at tick {tick} (seed {seed}, {workers} worker(s), feed {feed}): {plan:?}"
                );
            }
            db.insert(*id, want);
        }
        if tick > ticks / 2 {
            assert!(!h.acc.contains_key(&DROPPED), "a dropped view publishes nothing");
        }
    }
    assert!(h.errors.is_empty(), "no evaluation errors: {:?}", h.errors);
    std::mem::take(&mut h.log)
}

#[test]
fn every_variant_matches_the_oracle_one_worker() {
    for seed in 0..3 {
        run(1, seed, 40, false);
    }
}

/// Runs each seed with 1 and 2 workers (each checked against the oracle at every tick) and
/// requires identical sealed event logs.
fn one_and_two_workers_agree(seeds: std::ops::Range<u64>, feed: bool) {
    for seed in seeds {
        let one = run(1, seed, 30, feed);
        let two = run(2, seed, 30, feed);
        assert_eq!(one, two, "identical sealed event logs with 1 and 2 workers (seed {seed}, feed {feed})");
    }
}

#[test]
fn two_workers_match_the_oracle_and_one_worker() {
    one_and_two_workers_agree(10..12, false);
}

/// Ticks fed in parts while open, with views created and dropped mid-tick: the same contents as
/// the oracle at every tick, and with 2 workers the same sealed log as with 1.
#[test]
fn ticks_fed_while_open_match_the_oracle() {
    one_and_two_workers_agree(20..23, true);
}

/// Views that join, group and deduplicate the same input by the same key read one shared
/// arrangement (counted by the engine), still match the oracle under inserts and deletes, keep
/// working when another user of their arrangement is dropped, and the arrangement goes with its
/// last user. An index keeps its arrangement alive for views created later.
fn shared_arrangements(workers: usize, seed: u64, ticks: usize) {
    use AggregateFunc::Max;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new(workers);
    h.engine.create_input(A, 3).unwrap();
    h.engine.create_input(B, 2).unwrap();
    let same_key = |id| (id, join(JoinKind::Inner, vec![(0, 0)], None));
    let mut live: Vec<(GlobalId, RelExpr)> = vec![
        same_key(50),
        (51, join(JoinKind::Inner, vec![(0, 0)], Some(col(1).call_binary(BinaryFunc::Gt, int(1))))),
        (52, reduce(get_a(), vec![0], vec![agg(Max, col(2), false)])),
    ];
    for (id, plan) in &live {
        h.engine.create_view(*id, plan.clone(), true).unwrap();
    }
    const INDEX: GlobalId = 60;
    h.engine.create_index(INDEX, A, vec![2]).unwrap();
    let users = |h: &Harness, on, key: &[usize]| h.engine.arrangement(on, key).map(|a| a.users).unwrap_or_default();
    assert_eq!(users(&h, A, &[0]), [50, 51, 52]);
    assert_eq!(users(&h, B, &[0]), [50, 51]);
    assert_eq!(users(&h, A, &[2]), [INDEX]);

    let (mut ta, mut tb) = (BTreeMap::new(), BTreeMap::new());
    let mut ts: Timestamp = 1_000;
    for tick in 0..ticks {
        if tick == ticks / 3 {
            // Created late: one reads the index's arrangement, one deduplicates A (a new one).
            let late = vec![
                (
                    53,
                    RelExpr::Join {
                        left: get_a(),
                        right: get_b(),
                        kind: JoinKind::Inner,
                        equi: vec![(2, 1)],
                        predicate: None,
                    },
                ),
                (54, RelExpr::Distinct { input: get_a() }),
                same_key(55),
            ];
            for (id, plan) in late {
                h.engine.create_view(id, plan.clone(), true).unwrap();
                live.push((id, plan));
            }
            assert_eq!(users(&h, A, &[2]), [INDEX, 53]);
            assert_eq!(users(&h, A, &[0]), [50, 51, 52, 55]);
        }
        if tick == ticks / 2 {
            // The first user of both join arrangements goes; the other users keep them.
            h.engine.drop_item(50).unwrap();
            live.retain(|(id, _)| *id != 50);
            h.acc.remove(&50);
            assert_eq!(users(&h, A, &[0]), [51, 52, 55]);
        }
        ts += rng.gen_range(1..40);
        let ua = churn(&mut rng, &mut ta, random_a);
        let ub = churn(&mut rng, &mut tb, random_b);
        h.tick(ts, vec![(A, ua), (B, ub)]);
        // Per worker: (A,[0]), (B,[0]), (A,[2]), then (B,[1]) and (A,[0,1,2]) for the late views.
        let expected = if tick >= ticks / 3 { 5 } else { 3 };
        assert_eq!(h.engine.installed_arrangements(), expected * workers, "tick {tick}");
        assert_eq!(h.engine.arrangements().len(), expected);

        let mut db: HashMap<GlobalId, Contents> = HashMap::new();
        db.insert(A, contents(&ta));
        db.insert(B, contents(&tb));
        for (id, plan) in &live {
            assert_eq!(h.contents(*id), evaluate(plan, &db), "view {id} at tick {tick} (seed {seed}): {plan:?}");
        }
    }
    for (id, _) in &live {
        h.engine.drop_item(*id).unwrap();
    }
    h.tick(ts + 1, vec![]);
    assert_eq!(users(&h, A, &[2]), [INDEX], "the index keeps its arrangement");
    assert_eq!(h.engine.installed_arrangements(), workers);
    h.engine.drop_item(INDEX).unwrap();
    h.tick(ts + 2, vec![]);
    assert_eq!(h.engine.installed_arrangements(), 0, "every arrangement went with its last user");
    assert!(h.engine.arrangements().is_empty());
    assert!(h.errors.is_empty(), "no evaluation errors: {:?}", h.errors);
}

#[test]
fn shared_arrangements_match_the_oracle_and_are_dropped_with_their_last_user() {
    shared_arrangements(1, 20, 30);
    shared_arrangements(2, 21, 30);
}
