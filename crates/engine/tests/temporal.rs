//! Temporal filters (`mz_now()`): random rows with random validity bounds, random inserts and
//! deletes, random gaps between ticks and ticks with no input. At every sealed tick, and at every
//! time between ticks at which a view changed, each view equals the reference interpreter's
//! evaluation from scratch with `mz_now()` = that time. Views over temporal views, a temporal view
//! created late, a temporal filter over a linear (inlined) view, and 1 and 2 workers (whose event
//! logs must be identical).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{Harness, SealedLog};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use viewcast_engine::EngineError;
use viewcast_plan::{AggregateExpr, AggregateFunc, BinaryFunc, ColumnOrder, GlobalId, RelExpr, ScalarExpr};
use viewcast_repr::{consolidate_updates, Datum, Diff, Row, ScalarType, Timestamp};

/// Input `(k int, lo int?, hi int|float)`.
const A: GlobalId = 1;

fn col(i: usize) -> ScalarExpr {
    ScalarExpr::Column(i)
}
fn int(i: i64) -> ScalarExpr {
    ScalarExpr::literal(Datum::Int(i), ScalarType::Int64)
}
fn now(op: BinaryFunc, e: ScalarExpr) -> ScalarExpr {
    ScalarExpr::MzNow.call_binary(op, e)
}
fn get(id: GlobalId, arity: usize) -> Box<RelExpr> {
    Box::new(RelExpr::Get { id, arity })
}
fn filter(input: Box<RelExpr>, predicates: Vec<ScalarExpr>) -> Box<RelExpr> {
    Box::new(RelExpr::Filter { input, predicates })
}
fn star() -> AggregateExpr {
    AggregateExpr {
        func: AggregateFunc::Count,
        expr: ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool),
        distinct: false,
    }
}

fn views() -> Vec<(GlobalId, RelExpr)> {
    vec![
        // A linear view (rendered inline into its readers), and a temporal filter over it (58).
        (45, RelExpr::Map { input: get(A, 3), scalars: vec![col(0).call_binary(BinaryFunc::Mul, int(2))] }),
        // Valid over [lo, hi): a row enters in the future and leaves later.
        (50, *filter(get(A, 3), vec![now(BinaryFunc::Gte, col(1)), now(BinaryFunc::Lt, col(2))])),
        // A window on a computed column, behind a Map and before a Project, with a plain predicate.
        (
            51,
            RelExpr::Project {
                input: filter(
                    Box::new(RelExpr::Map {
                        input: get(A, 3),
                        scalars: vec![col(2).call_binary(BinaryFunc::Add, int(25))],
                    }),
                    vec![now(BinaryFunc::Lte, col(3)), col(0).call_binary(BinaryFunc::NotEq, int(3))],
                ),
                outputs: vec![0, 3],
            },
        ),
        // Views over a temporal view: a pure count and a top-k.
        (52, RelExpr::Reduce { input: get(50, 3), group_key: vec![0], aggregates: vec![star()] }),
        (
            53,
            RelExpr::TopK {
                input: get(51, 2),
                group_key: vec![],
                order_key: vec![ColumnOrder::desc(1)],
                limit: Some(3),
                offset: 0,
            },
        ),
        // A temporal filter inside an aggregate's input, with a sum.
        (
            54,
            RelExpr::Reduce {
                input: filter(get(A, 3), vec![now(BinaryFunc::Gt, col(1))]),
                group_key: vec![0],
                aggregates: vec![star(), AggregateExpr { func: AggregateFunc::SumInt, expr: col(1), distinct: false }],
            },
        ),
        // HAVING-like: a temporal filter over an aggregate's output.
        (
            55,
            *filter(
                Box::new(RelExpr::Reduce {
                    input: get(A, 3),
                    group_key: vec![0],
                    aggregates: vec![AggregateExpr { func: AggregateFunc::Max, expr: col(1), distinct: false }],
                }),
                vec![now(BinaryFunc::Lte, col(1).call_binary(BinaryFunc::Add, int(40)))],
            ),
        ),
        // Equality: valid at exactly one time.
        (56, *filter(get(A, 3), vec![now(BinaryFunc::Eq, col(1))])),
        // A global count over a temporal filter (its default row while empty).
        (57, RelExpr::Reduce { input: get(51, 2), group_key: vec![], aggregates: vec![star()] }),
        (58, *filter(get(45, 4), vec![now(BinaryFunc::Gte, col(1)), now(BinaryFunc::Lte, col(2))])),
    ]
}

/// Created a third of the way in: its first contents come from the input's history.
fn late_view() -> (GlobalId, RelExpr) {
    (60, RelExpr::Reduce { input: get(50, 3), group_key: vec![], aggregates: vec![star()] })
}

fn random_row(rng: &mut StdRng, ts: Timestamp) -> Row {
    let lo = ts as i64 + rng.gen_range(-60..120);
    let hi_offset = rng.gen_range(0..160);
    let hi =
        if rng.gen_bool(0.3) { Datum::float(lo as f64 + hi_offset as f64 + 0.5) } else { Datum::Int(lo + hi_offset) };
    let lo = if rng.gen_bool(0.1) { Datum::Null } else { Datum::Int(lo) };
    Row::new(vec![Datum::Int(rng.gen_range(0..5)), lo, hi])
}

fn churn(rng: &mut StdRng, table: &mut BTreeMap<Row, Diff>, ts: Timestamp) -> Vec<(Row, Diff)> {
    let mut out = Vec::new();
    if rng.gen_bool(0.3) {
        return out; // A tick with no input: only time passes.
    }
    for _ in 0..rng.gen_range(0..5) {
        let row = random_row(rng, ts);
        *table.entry(row.clone()).or_insert(0) += 1;
        out.push((row, 1));
    }
    for _ in 0..rng.gen_range(0..3) {
        if table.is_empty() {
            break;
        }
        let row = table.keys().nth(rng.gen_range(0..table.len())).unwrap().clone();
        let n = table.get_mut(&row).unwrap();
        *n -= 1;
        if *n == 0 {
            table.remove(&row);
        }
        out.push((row, -1));
    }
    out
}

/// The reference interpreter's contents of every view at time `t`, given the input's contents.
fn expected_at(
    t: Timestamp,
    live: &[(GlobalId, RelExpr)],
    input: &BTreeMap<Row, Diff>,
) -> BTreeMap<GlobalId, Vec<(Row, Diff)>> {
    let mut db: HashMap<GlobalId, Vec<(Row, Diff)>> = HashMap::new();
    db.insert(A, input.iter().map(|(r, d)| (r.clone(), *d)).collect());
    let mut out = BTreeMap::new();
    for (id, plan) in live {
        let want = viewcast_plan::interpret::evaluate_at(plan, t, &|id| Ok(db.get(&id).cloned().unwrap_or_default()))
            .unwrap_or_else(|e| panic!("view {id} evaluates at {t}: {e}"));
        db.insert(*id, want.clone());
        out.insert(*id, want);
    }
    out
}

fn run(workers: usize, seed: u64, ticks: usize) -> SealedLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new(workers);
    h.engine.create_input(A, 3).unwrap();
    let mut live = views();
    for (id, plan) in &live {
        h.engine.create_view(*id, plan.clone(), true).unwrap();
    }
    let mut table: BTreeMap<Row, Diff> = BTreeMap::new();
    // Published contents replayed time by time from the sealed log.
    let mut acc: HashMap<GlobalId, Vec<(Row, Diff)>> = HashMap::new();
    let mut ts: Timestamp = 1_000;
    let mut changes_between_ticks = 0;
    for tick in 0..ticks {
        if tick == ticks / 3 {
            let (id, plan) = late_view();
            h.engine.create_view(id, plan.clone(), true).unwrap();
            live.push((id, plan));
        }
        let before = table.clone();
        ts += rng.gen_range(1..40);
        let updates = churn(&mut rng, &mut table, ts);
        h.tick(ts, vec![(A, updates)]);

        let (_, changes) = h.log.last().unwrap().clone();
        let mut times: BTreeMap<Timestamp, Vec<(GlobalId, Row, Diff)>> = BTreeMap::new();
        for (id, updates) in changes {
            for (row, t, d) in updates {
                times.entry(t).or_default().push((id, row, d));
            }
        }
        times.entry(ts).or_default();
        for (t, updates) in times {
            for (id, row, d) in updates {
                acc.entry(id).or_default().push((row, d));
            }
            // Between ticks the input holds the previous tick's contents.
            let input = if t < ts { &before } else { &table };
            changes_between_ticks += usize::from(t < ts);
            for (id, want) in expected_at(t, &live, input) {
                let got = acc.entry(id).or_default();
                consolidate_updates(got);
                assert_eq!(*got, want, "view {id} at time {t} (tick {tick} at {ts}, seed {seed}, {workers} worker(s))");
            }
        }
    }
    assert!(h.errors.is_empty(), "no evaluation errors: {:?}", h.errors);
    assert!(changes_between_ticks > 0, "some rows entered or left between ticks");
    let ids: BTreeSet<GlobalId> = h.log.iter().flat_map(|(_, c)| c.iter().map(|(id, _)| *id)).collect();
    assert!(ids.contains(&56) && ids.contains(&58) && ids.contains(&60), "every kind of view produced output: {ids:?}");
    std::mem::take(&mut h.log)
}

#[test]
fn temporal_filters_match_the_interpreter_at_every_time() {
    for seed in 0..4 {
        run(1, seed, 60);
    }
}

#[test]
fn temporal_filters_with_two_workers_match_one_worker() {
    for seed in 20..22 {
        let one = run(1, seed, 40);
        let two = run(2, seed, 40);
        assert_eq!(one, two, "identical sealed event logs with 1 and 2 workers (seed {seed})");
    }
}

/// Rows leave with no new input: only empty ticks follow the insert.
#[test]
fn rows_leave_as_time_passes_with_no_input() {
    let mut h = Harness::new(1);
    h.engine.create_input(A, 3).unwrap();
    h.engine.create_view(70, *filter(get(A, 3), vec![now(BinaryFunc::Lt, col(2))]), true).unwrap();
    let row = Row::new(vec![Datum::Int(1), Datum::Int(0), Datum::Int(130)]);
    h.tick(100, vec![(A, vec![(row.clone(), 1)])]);
    assert_eq!(h.contents(70), vec![(row.clone(), 1)]);
    h.tick(120, vec![]);
    assert_eq!(h.contents(70), vec![(row.clone(), 1)], "still inside the window at 120");
    h.tick(140, vec![]);
    assert!(h.contents(70).is_empty(), "gone by 140");
    let (_, changes) = h.log.last().unwrap();
    assert_eq!(changes, &vec![(70, vec![(row, 130, -1)])], "retracted at the time it left, sealed by the next tick");
}

#[test]
fn mz_now_outside_a_temporal_predicate_is_refused() {
    let h = Harness::new(1);
    h.engine.create_input(A, 3).unwrap();
    let in_map = RelExpr::Map { input: get(A, 3), scalars: vec![ScalarExpr::MzNow] };
    assert!(matches!(h.engine.create_view(80, in_map, true), Err(EngineError::Temporal(_))));
    let arithmetic = *filter(
        get(A, 3),
        vec![ScalarExpr::MzNow.call_binary(BinaryFunc::Add, int(1)).call_binary(BinaryFunc::Lt, col(1))],
    );
    assert!(matches!(h.engine.create_view(81, arithmetic, true), Err(EngineError::Temporal(_))));
}
