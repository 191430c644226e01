//! The demo pipeline (wikirecent → recentchanges → counter, useredits → top10) checked against a
//! from-scratch recomputation at every tick, with 1 and 2 workers.

mod common;

use std::collections::HashMap;

use common::demo::*;
use common::oracle::{evaluate, Contents};
use common::Harness;
use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{Datum, Row};

const LATE_USEREDITS: GlobalId = 6;
const LATE_TOP10: GlobalId = 7;

fn expected(rows: &Contents, views: &[(GlobalId, RelExpr)]) -> HashMap<GlobalId, Contents> {
    let mut db: HashMap<GlobalId, Contents> = HashMap::new();
    db.insert(WIKIRECENT, rows.clone());
    for (id, plan) in views {
        let c = evaluate(plan, &db);
        db.insert(*id, c);
    }
    db
}

fn run(workers: usize) {
    let mut h = Harness::new(workers);
    h.engine.create_input(WIKIRECENT, 1).unwrap();
    let mut views =
        vec![(RECENTCHANGES, recentchanges()), (COUNTER, counter()), (USEREDITS, useredits()), (TOP10, top10())];
    for (id, plan) in &views {
        h.engine.create_view(*id, plan.clone(), true).unwrap();
    }
    let mut ts = 1_700_000_000_000u64;
    // Before any event the counter has one row: 0.
    h.tick(ts, vec![]);
    assert_eq!(h.contents(COUNTER), vec![(Row::new(vec![Datum::Int(0)]), 1)]);
    assert!(h.contents(TOP10).is_empty());

    let mut gen = EventGen::new(7, 300);
    let mut all: Contents = Vec::new();
    for tick in 0..40 {
        ts += 50;
        let n = if tick % 7 == 3 { 0 } else { 1 + (tick * 37) % 150 };
        let rows: Vec<(Row, i64)> = (0..n).map(|_| (gen.next_row(), 1)).collect();
        all.extend(rows.iter().cloned());
        if tick == 25 {
            // Created after many ticks: must start with the full contents.
            h.engine.create_view(LATE_USEREDITS, useredits(), true).unwrap();
            let mut late_top = top10();
            if let RelExpr::TopK { input, .. } = &mut late_top {
                **input = RelExpr::Get { id: LATE_USEREDITS, arity: 2 };
            }
            h.engine.create_view(LATE_TOP10, late_top.clone(), true).unwrap();
            views.push((LATE_USEREDITS, useredits()));
            views.push((LATE_TOP10, late_top));
        }
        h.tick(ts, vec![(WIKIRECENT, rows)]);
        let want = expected(&all, &views);
        for (id, _) in &views {
            assert_eq!(h.contents(*id), want[id], "view {id} at tick {tick} with {workers} worker(s)");
        }
    }
    assert_eq!(h.contents(COUNTER), vec![(Row::new(vec![Datum::Int(all.len() as i64)]), 1)]);
    assert_eq!(h.contents(TOP10).len(), 10);
    assert!(h.errors.is_empty(), "no evaluation errors: {:?}", h.errors);
}

#[test]
fn demo_pipeline_one_worker() {
    run(1);
}

#[test]
fn demo_pipeline_two_workers() {
    run(2);
}
