//! Throughput of the demo pipeline (recentchanges → counter, useredits → top10) as the engine
//! renders the SQL plans, against a hand-written differential program doing the same extraction,
//! counting and top-10 with a dedicated top-k operator, over the same pre-built `jsonb` rows.
//!
//! `cargo run --release -p viewcast-engine --example pipeline_throughput [events] [events_per_tick] [sql|hand|gen|both] [workers, e.g. 1,2]`
//!
//! All four views are published (captured and sealed to a consumer), as in `viewcast demo`. With
//! `PUBLISH=outputs` only `counter` and `top10` are, the outputs the hand-written program probes.
//! After each SQL run, `counter` and `top10` are checked against their evaluation from scratch
//! (`CHECK=0` skips the `top10` check, for instruction counts of the pipeline alone).

#[path = "../tests/common/demo.rs"]
mod demo;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use viewcast_engine::{Engine, EngineConfig, EngineEvent};
use viewcast_repr::{Datum, Json, JsonView, Row};

// The allocator the `viewcast` binary uses, so both programs allocate as they would in production.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time (user + system) this process has used so far; wall-clock numbers mean little on a
/// shared machine, events per CPU-second a little more.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat(5), counted after the command name; clock ticks of 10 ms.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Ticks allowed in flight beyond the sealed frontier (admission control).
const WINDOW: u64 = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let per_tick: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    // `sql` or `hand` runs only one side (for profiling); `gen` only generates the events (to
    // subtract from an instruction count of a whole run).
    let only = args.next().unwrap_or_default();
    // Worker counts to run, e.g. `1` or `1,2` (the default).
    let worker_counts: Vec<usize> =
        args.next().unwrap_or_else(|| "1,2".into()).split(',').filter_map(|w| w.parse().ok()).collect();
    let users = 100_000;
    let t0 = Instant::now();
    let mut gen = demo::EventGen::new(42, users);
    let rows: Arc<Vec<Row>> = Arc::new((0..events).map(|_| gen.next_row()).collect());
    println!(
        "generated {events} events over {users} users in {:.1?}; {per_tick} events per tick, {WINDOW} ticks in flight",
        t0.elapsed()
    );

    if only == "gen" {
        return;
    }
    for workers in worker_counts {
        let mut top10 = None;
        let (sql, sql_cpu) =
            if only != "hand" { measure(|| run_engine(&rows, per_tick, workers, &mut top10)) } else { (0.0, 0.0) };
        // Outside the measured run; `CHECK=0` skips it (for instruction counts of the pipeline alone).
        if let Some(top10) = top10.filter(|_| std::env::var("CHECK").map_or(true, |v| v != "0")) {
            assert_eq!(top10, top10_from_scratch(&rows), "top10 equals its evaluation from scratch");
        }
        let (hand, hand_cpu) =
            if only != "sql" { measure(|| run_handwritten(&rows, per_tick, workers)) } else { (1.0, 1.0) };
        println!(
            "workers={workers}: SQL pipeline {sql:>9.0} events/s ({sql_cpu:>9.0}/CPU-s) | hand-written {hand:>9.0} events/s \
             ({hand_cpu:>9.0}/CPU-s) | ratio {:.2} (CPU {:.2})",
            sql / hand,
            sql_cpu / hand_cpu
        );
    }
}

/// Runs `f` (which returns the number of events processed), giving events per wall-clock second
/// and per CPU-second.
fn measure(f: impl FnOnce() -> usize) -> (f64, f64) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let n = f() as f64;
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    (n / wall.as_secs_f64(), n / cpu.as_secs_f64().max(0.01))
}

/// Drives the engine with the four demo views, all published, from its start to its shutdown (the
/// span [`measure`] times); returns the number of events, and leaves `top10`'s final rows in
/// `top10_out`.
fn run_engine(
    rows: &Arc<Vec<Row>>,
    per_tick: usize,
    workers: usize,
    top10_out: &mut Option<BTreeMap<Row, i64>>,
) -> usize {
    let (tx, rx) = crossbeam_channel::unbounded();
    let engine = Engine::start(EngineConfig { workers }, tx).expect("engine starts");
    engine.create_input(demo::WIKIRECENT, 1).unwrap();
    // `PUBLISH=outputs`: only the views the hand-written program also delivers.
    let all = std::env::var("PUBLISH").map_or(true, |v| v != "outputs");
    engine.create_view(demo::RECENTCHANGES, demo::recentchanges(), all).unwrap();
    engine.create_view(demo::COUNTER, demo::counter(), true).unwrap();
    engine.create_view(demo::USEREDITS, demo::useredits(), all).unwrap();
    engine.create_view(demo::TOP10, demo::top10(), true).unwrap();

    // Drain events on another thread, as a consumer would.
    let consumer = std::thread::spawn(move || {
        let (mut sealed, mut changes, mut counter) = (0u64, 0usize, 0i64);
        let mut top10: BTreeMap<Row, i64> = BTreeMap::new();
        for event in rx {
            if let EngineEvent::Sealed { changes: c, .. } = event {
                sealed += 1;
                for (id, updates) in &c {
                    changes += updates.len();
                    if *id == demo::COUNTER {
                        for (row, _, diff) in updates {
                            if *diff > 0 {
                                if let Datum::Int(n) = row.get(0) {
                                    counter = *n;
                                }
                            }
                        }
                    }
                    if *id == demo::TOP10 {
                        for (row, _, diff) in updates {
                            *top10.entry(row.clone()).or_default() += diff;
                        }
                    }
                }
            }
        }
        top10.retain(|_, n| *n != 0);
        (sealed, changes, counter, top10)
    });

    let start = Instant::now();
    let mut ts = 1u64;
    for chunk in rows.chunks(per_tick) {
        while engine.sealed_frontier() + WINDOW < ts {
            std::thread::sleep(Duration::from_micros(200));
        }
        let batch: Vec<(Row, i64)> = chunk.iter().map(|r| (r.clone(), 1)).collect();
        engine.tick(ts, vec![(demo::WIKIRECENT, batch)]).unwrap();
        ts += 1;
    }
    while engine.sealed_frontier() < ts {
        std::thread::sleep(Duration::from_micros(100));
    }
    let elapsed = start.elapsed();
    engine.shutdown();
    let (sealed, changes, counter, top10) = consumer.join().unwrap();
    assert_eq!(counter as usize, rows.len(), "the counter saw every event");
    *top10_out = Some(top10);
    println!(
        "  engine, {workers} worker(s): {} events in {elapsed:.2?}; {sealed} Sealed events carrying {changes} changes",
        rows.len()
    );
    rows.len()
}

/// `top10`'s rows computed from scratch over every event: users by count, descending, ties broken
/// by the whole row as the engine's `ORDER BY` does.
fn top10_from_scratch(rows: &[Row]) -> BTreeMap<Row, i64> {
    let mut counts: std::collections::HashMap<Option<String>, i64> = std::collections::HashMap::new();
    for row in rows {
        *counts.entry(extract(row).0).or_default() += 1;
    }
    let mut ranked: Vec<Row> = counts
        .into_iter()
        .map(|(user, n)| Row::new(vec![user.map_or(Datum::Null, |u| Datum::text(&u)), Datum::Int(n)]))
        .collect();
    ranked.sort_by(|a, b| b.get(1).cmp(a.get(1)).then_with(|| a.cmp(b)));
    ranked.into_iter().take(10).map(|row| (row, 1)).collect()
}

/// The extracted columns of one event, as the hand-written program keeps them.
type Extracted =
    (Option<String>, Option<bool>, Option<String>, Option<String>, Option<String>, Option<f64>, Option<i64>);

fn extract(row: &Row) -> Extracted {
    let Datum::Jsonb(j) = row.get(0) else { unreachable!("wikirecent rows are jsonb") };
    let v = j.json();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let number = |x: Json<'_>| match x.view() {
        JsonView::Number(n) => Some(n.as_f64()),
        _ => None,
    };
    let len = |k: &str| v.get("length").and_then(|l| l.get(k)).and_then(number).map(|f| f.round_ties_even() as i64);
    (
        text("user"),
        v.get("bot").and_then(|b| match b.view() {
            JsonView::Bool(b) => Some(b),
            _ => None,
        }),
        text("wiki"),
        text("type"),
        text("title"),
        v.get("timestamp").and_then(number),
        len("new").zip(len("old")).map(|(n, o)| n - o),
    )
}

/// The same computation written directly against differential dataflow.
fn run_handwritten(rows: &Arc<Vec<Row>>, per_tick: usize, workers: usize) -> usize {
    let n = rows.len();
    let rows = rows.clone();
    let start = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Row, isize>();
            let extracted = events.map(|row| extract(&row));
            let counter = extracted.clone().map(|_| ()).count_total();
            let useredits = extracted.map(|e| e.0).count_total();
            let top = top10(useredits.map(|(user, count)| (user, count as i64)));
            let (probe, _) = top.concat(counter.map(|((), c)| (None, c as i64))).probe();
            (input, probe)
        });
        let mut round = 0u64;
        for chunk in rows.chunks(per_tick) {
            for (i, row) in chunk.iter().enumerate() {
                if i % peers == index {
                    input.insert(row.clone());
                }
            }
            round += 1;
            input.advance_to(round);
            input.flush();
            while probe.less_than(&round.saturating_sub(WINDOW)) {
                worker.step();
            }
        }
        while probe.less_than(input.time()) {
            worker.step();
        }
    })
    .expect("timely starts");
    drop(guards.join());
    let elapsed = start.elapsed();
    println!("  hand-written, {workers} worker(s): {n} events in {elapsed:.2?}");
    n
}

type Collection<'s, D> = differential_dataflow::VecCollection<'s, u64, D, isize>;

/// A dedicated top-10 by count: all updates to worker 0, applied per time to an ordered set.
fn top10<'s>(counts: Collection<'s, (Option<String>, i64)>) -> Collection<'s, (Option<String>, i64)> {
    type Stash = BTreeMap<u64, (Capability<u64>, Vec<((Option<String>, i64), isize)>)>;
    counts
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<((Option<String>, i64), u64, isize)>>, _, _, _>(
            Exchange::new(|_: &((Option<String>, i64), u64, isize)| 0),
            "Top10",
            |_, _| {
                let mut stash: Stash = BTreeMap::new();
                let mut set: BTreeSet<(Reverse<i64>, Option<String>)> = BTreeSet::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (d, t, r) in data.drain(..) {
                            stash.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new())).1.push((d, r));
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        let t = *entry.key();
                        if frontier.less_equal(&t) {
                            break;
                        }
                        let (cap, updates) = entry.remove();
                        let before: Vec<_> = set.iter().take(10).cloned().collect();
                        for ((user, count), r) in updates {
                            if r > 0 {
                                set.insert((Reverse(count), user));
                            } else {
                                set.remove(&(Reverse(count), user));
                            }
                        }
                        let after: Vec<_> = set.iter().take(10).cloned().collect();
                        if before != after {
                            let mut session = output.session(&cap);
                            for (Reverse(c), u) in before {
                                session.give(((u, c), t, -1));
                            }
                            for (Reverse(c), u) in after {
                                session.give(((u, c), t, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}
