//! The command protocol: validation, late views, drops, publishing toggles, error reports, and one
//! strictly increasing `Sealed` per tick.

mod common;

use common::Harness;
use viewcast_engine::EngineError;
use viewcast_plan::{BinaryFunc, RelExpr, ScalarExpr};
use viewcast_repr::{Datum, Row, ScalarType};

fn row(i: i64) -> Row {
    Row::new(vec![Datum::Int(i)])
}

fn get(id: u64) -> Box<RelExpr> {
    Box::new(RelExpr::Get { id, arity: 1 })
}

#[test]
fn commands_are_validated() {
    let h = Harness::new(1);
    let e = &h.engine;
    e.create_input(1, 1).unwrap();
    assert_eq!(e.create_input(1, 1), Err(EngineError::AlreadyExists(1)));
    assert_eq!(e.create_view(2, *get(9), true), Err(EngineError::UnknownId(9)));
    assert!(matches!(
        e.create_view(2, RelExpr::Get { id: 1, arity: 2 }, true),
        Err(EngineError::PlanArity { id: 1, expected: 1, got: 2 })
    ));
    e.create_view(2, RelExpr::Distinct { input: get(1) }, true).unwrap();
    assert_eq!(e.tick(5, vec![(2, vec![(row(1), 1)])]), Err(EngineError::NotAnInput(2)));
    assert!(matches!(e.tick(5, vec![(1, vec![(Row::new(vec![]), 1)])]), Err(EngineError::ArityMismatch { .. })));
    e.tick(5, vec![]).unwrap();
    assert_eq!(e.tick(5, vec![]), Err(EngineError::TimeNotIncreasing { ts: 5, previous: 5 }));
    assert!(matches!(e.drop_item(1), Err(EngineError::HasDependents { id: 1, .. })));
    e.drop_item(2).unwrap();
    e.drop_item(1).unwrap();
    assert_eq!(e.drop_item(1), Err(EngineError::UnknownId(1)));
}

#[test]
fn sealed_once_per_tick_late_views_and_drops() {
    let mut h = Harness::new(2);
    h.engine.create_input(1, 1).unwrap();
    assert!(h.stray_events().is_empty(), "nothing is sealed before the first tick");
    h.engine.create_view(10, RelExpr::Distinct { input: get(1) }, true).unwrap();
    let mut ts = 1_700_000_000_000;
    for i in 0..20 {
        ts += 50;
        let updates = if i % 3 == 0 { vec![] } else { vec![(1, vec![(row(i % 5), 1)])] };
        h.tick(ts, updates);
    }
    assert_eq!(h.log.len(), 20, "one Sealed per tick");
    assert!(h.log.windows(2).all(|w| w[0].0 < w[1].0), "strictly increasing");
    assert!(h.log.iter().any(|(_, c)| c.is_empty()), "empty Sealed events are sent too");
    // The engine remembers each tick's stages, in order, and forgets the earlier ones when asked.
    let (second_last, last) = (h.log[18].0 - 1, h.log[19].0 - 1);
    let earlier = h.engine.tick_timeline(second_last).expect("the timeline of a recent tick");
    let t = h.engine.tick_timeline(last).expect("the last tick's timeline");
    assert_eq!((t.ts, t.rows), (last, usize::from(19 % 3 != 0)));
    assert!(t.sealed >= earlier.sealed && t.sent >= earlier.sent);
    for w in 0..2 {
        let (taken, passed) = (t.taken[w].expect("taken"), t.passed[w].expect("passed"));
        assert!(t.sent <= taken && taken <= passed && passed <= t.merged && t.merged <= t.sealed, "{t:?}");
    }
    assert!(h.engine.tick_timeline(second_last).is_none(), "earlier timelines are forgotten");

    // A view created after ticks starts with everything, at the time after the last tick.
    h.engine.create_view(11, RelExpr::Negate { input: get(10) }, true).unwrap();
    ts += 50;
    h.tick(ts, vec![]);
    let (_, changes) = h.log.last().unwrap();
    let late = &changes.iter().find(|(id, _)| *id == 11).expect("late view's initial contents").1;
    assert_eq!(late.len(), 5, "distinct values 0..=4");
    assert!(late.iter().all(|(_, t, d)| *t == ts - 50 + 1 && *d == -1));
    assert_eq!(h.contents(11).len(), 5);

    // After a drop the view publishes nothing more.
    h.engine.drop_item(11).unwrap();
    ts += 50;
    h.tick(ts, vec![(1, vec![(row(7), 1)])]);
    let (_, changes) = h.log.last().unwrap();
    assert!(changes.iter().all(|(id, _)| *id != 11));
    assert_eq!(changes, &vec![(10, vec![(row(7), ts, 1)])]);
    assert!(h.stray_events().is_empty(), "nothing is sealed between ticks");
    h.engine.shutdown();
}

#[test]
fn publishing_toggles_at_tick_boundaries() {
    let mut h = Harness::new(1);
    h.engine.create_input(1, 1).unwrap();
    h.engine.create_view(10, RelExpr::Distinct { input: get(1) }, false).unwrap();
    h.tick(100, vec![(1, vec![(row(1), 1)])]);
    assert!(h.acc.is_empty(), "unpublished items send nothing");
    h.engine.set_publish(10, true).unwrap();
    h.engine.set_publish(1, true).unwrap();
    h.tick(200, vec![(1, vec![(row(2), 1), (row(2), 1)])]);
    assert_eq!(h.contents(10), vec![(row(2), 1)], "only changes from the toggle on");
    assert_eq!(h.contents(1), vec![(row(2), 2)], "a published input sends its rows");
    h.engine.set_publish(10, false).unwrap();
    h.tick(300, vec![(1, vec![(row(3), 1)])]);
    assert_eq!(h.contents(10), vec![(row(2), 1)]);
    assert_eq!(h.engine.sealed_frontier(), 301);
}

/// Publishing an input switched while a tick is open takes effect when it closes: the open
/// tick's rows (fed before and after the switch, and those of the close) are captured all or none.
#[test]
fn publishing_an_input_switched_mid_tick_starts_with_the_next_tick() {
    let mut h = Harness::new(2);
    h.engine.create_input(1, 1).unwrap();
    h.engine.feed(100, vec![(1, vec![(row(1), 1)])]).unwrap();
    h.engine.set_publish(1, true).unwrap();
    h.engine.feed(100, vec![(1, vec![(row(2), 1)])]).unwrap();
    h.tick(100, vec![(1, vec![(row(3), 1)])]);
    assert!(h.acc.get(&1).is_none_or(|rows| rows.is_empty()), "nothing of the tick open at the switch");
    h.engine.feed(200, vec![(1, vec![(row(4), 1)])]).unwrap();
    h.engine.set_publish(1, false).unwrap();
    h.tick(200, vec![(1, vec![(row(5), 1)])]);
    assert_eq!(h.contents(1), vec![(row(4), 1), (row(5), 1)], "all of the next tick, fed and closing rows");
    h.tick(300, vec![(1, vec![(row(6), 1)])]);
    assert_eq!(h.contents(1), vec![(row(4), 1), (row(5), 1)], "nothing after the switch off");
    assert!(matches!(h.engine.feed(250, vec![]), Err(viewcast_engine::EngineError::TimeNotIncreasing { .. })));
    h.engine.feed(400, vec![]).unwrap();
    assert!(
        matches!(h.engine.tick(401, vec![]), Err(viewcast_engine::EngineError::NotTheOpenTick { ts: 401, open: 400 })),
        "a tick closes the open tick's time only"
    );
}

#[test]
fn evaluation_errors_drop_rows_and_are_rate_limited() {
    let mut h = Harness::new(1);
    h.engine.create_input(1, 1).unwrap();
    let ten_div =
        ScalarExpr::literal(Datum::Int(10), ScalarType::Int64).call_binary(BinaryFunc::Div, ScalarExpr::Column(0));
    h.engine.create_view(10, RelExpr::Map { input: get(1), scalars: vec![ten_div] }, true).unwrap();
    h.tick(1, vec![(1, vec![(row(0), 1), (row(2), 1), (row(0), 1)])]);
    h.tick(2, vec![(1, vec![(row(0), 1), (row(5), 1)])]);
    assert_eq!(
        h.contents(10),
        vec![(Row::new(vec![Datum::Int(2), Datum::Int(5)]), 1), (Row::new(vec![Datum::Int(5), Datum::Int(2)]), 1)]
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    h.tick(3, vec![]);
    assert_eq!(h.errors.len(), 1, "three bad rows within a second give one report: {:?}", h.errors);
    assert_eq!(h.errors[0].0, 10);
    assert!(h.errors[0].1.contains("division by zero"));
}

/// Several writes to one input in one tick (concurrent webhook requests or INSERTs landing in the
/// same timestamp) all reach the views, with one and with two workers, and a view created later
/// reads all of them from the input's history.
#[test]
fn several_writes_to_one_input_in_one_tick_all_land() {
    for workers in [1, 2] {
        let mut h = Harness::new(workers);
        h.engine.create_input(1, 1).unwrap();
        h.engine.create_view(10, RelExpr::Distinct { input: get(1) }, true).unwrap();
        let writes = vec![(1, vec![(row(1), 1), (row(2), 1)]), (1, vec![(row(3), 1)]), (1, vec![(row(4), 1)])];
        h.tick(1, writes);
        let all: Vec<(Row, i64)> = (1..=4).map(|i| (row(i), 1)).collect();
        assert_eq!(h.contents(10), all, "{workers} worker(s)");
        h.engine.create_view(11, RelExpr::Distinct { input: get(1) }, true).unwrap();
        h.tick(2, vec![]);
        assert_eq!(h.contents(11), all, "{workers} worker(s), a later view");
    }
}
