#![allow(dead_code)]

pub mod demo;
pub mod oracle;

use std::collections::HashMap;
use std::time::Duration;

use viewcast_engine::{Engine, EngineConfig, EngineEvent, GlobalId};
use viewcast_repr::{Diff, Row, Timestamp, Update};

/// Every `Sealed` event as `(upto, changes)`, in order.
pub type SealedLog = Vec<(Timestamp, Vec<(GlobalId, Vec<Update>)>)>;

/// Drives an engine tick by tick, checking the sealing protocol and accumulating published output.
pub struct Harness {
    pub engine: Engine,
    rx: crossbeam_channel::Receiver<EngineEvent>,
    /// Accumulated contents of every published item.
    pub acc: HashMap<GlobalId, HashMap<Row, Diff>>,
    pub last_upto: Option<Timestamp>,
    pub errors: Vec<(GlobalId, String)>,
    /// Every sealed batch's changes, in order, each time's sorted by row (for comparing runs).
    pub log: SealedLog,
}

impl Harness {
    pub fn new(workers: usize) -> Harness {
        let (tx, rx) = crossbeam_channel::unbounded();
        let engine = Engine::start(EngineConfig { workers }, tx).expect("engine starts");
        Harness { engine, rx, acc: HashMap::new(), last_upto: None, errors: Vec::new(), log: Vec::new() }
    }

    /// Ticks at `ts` and waits for its `Sealed` event, which must be the next one and cover exactly
    /// the times since the previous one.
    pub fn tick(&mut self, ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)>) {
        self.engine.tick(ts, updates).expect("tick accepted");
        loop {
            match self.rx.recv_timeout(Duration::from_secs(30)).expect("a Sealed event within 30 s") {
                EngineEvent::Error { id, message } => self.errors.push((id, message)),
                EngineEvent::Sealed { upto, changes } => {
                    assert_eq!(upto, ts + 1, "one Sealed per tick, in order");
                    let lower = self.last_upto.unwrap_or(0);
                    let mut changes = changes;
                    for (id, updates) in &mut changes {
                        let acc = self.acc.entry(*id).or_default();
                        let mut prev_time = 0;
                        let mut seen = std::collections::HashSet::new();
                        for (row, time, diff) in updates.iter() {
                            assert!(*time >= lower && *time < upto, "change at {time} outside [{lower}, {upto})");
                            assert!(*time >= prev_time, "changes sorted by time");
                            assert_ne!(*diff, 0, "consolidated");
                            assert!(seen.insert((row.clone(), *time)), "consolidated: {row:?} twice at {time}");
                            prev_time = *time;
                            let e = acc.entry(row.clone()).or_insert(0);
                            *e += diff;
                            if *e == 0 {
                                acc.remove(row);
                            }
                        }
                    }
                    // The frontier is published right after the event is sent.
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while self.engine.sealed_frontier() < upto {
                        assert!(std::time::Instant::now() < deadline, "sealed_frontier reaches {upto}");
                        std::thread::yield_now();
                    }
                    self.last_upto = Some(upto);
                    // The order within a time is unspecified (with several workers, views whose
                    // operators consolidate their own output keep the order the reports came in).
                    for (_, updates) in &mut changes {
                        updates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                    }
                    self.log.push((upto, changes));
                    return;
                }
            }
        }
    }

    /// The accumulated published contents of `id`, sorted.
    pub fn contents(&self, id: GlobalId) -> Vec<(Row, Diff)> {
        let mut v: Vec<(Row, Diff)> =
            self.acc.get(&id).map(|m| m.iter().map(|(r, d)| (r.clone(), *d)).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// Waits briefly and returns any events that arrived (there should be none between ticks).
    pub fn stray_events(&self) -> Vec<EngineEvent> {
        std::thread::sleep(Duration::from_millis(50));
        self.rx.try_iter().filter(|e| matches!(e, EngineEvent::Sealed { .. })).collect()
    }
}
