//! Every sealed tick's stages are recorded, in order: the timeline the tick-latency bench reads.

use std::time::Duration;

use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sealed_tick_has_ordered_stages() {
    let coord = Coordinator::start(CoordConfig { workers: 2, tick_ms: 10, ..CoordConfig::default() }).unwrap();
    for sql in ["CREATE TABLE t (a int)", "CREATE MATERIALIZED VIEW c AS SELECT count(*) FROM t"] {
        for r in coord.execute(sql).await {
            assert!(!matches!(r, ExecuteResult::Error(_)), "{sql}");
        }
    }
    coord.take_tick_stages();
    for i in 0..5 {
        for r in coord.execute(&format!("INSERT INTO t VALUES ({i}), ({})", i + 100)).await {
            assert!(!matches!(r, ExecuteResult::Error(_)));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ticks = coord.take_tick_stages();
    assert!(ticks.len() >= 10, "ticks run every 10 ms: {}", ticks.len());
    for w in ticks.windows(2) {
        assert!(w[0].ts < w[1].ts, "in order");
        assert!(w[1].interval_us > 0);
    }
    let mut rows = 0;
    for t in &ticks {
        rows += t.rows;
        let stages = [t.taken_us, t.passed_us, t.merged_us, t.sealed_us, t.received_us, t.applied_us];
        assert!(stages.windows(2).all(|w| w[0] <= w[1]), "stages in order: {t:?}");
    }
    // (System views may add rows of their own.)
    assert!(rows >= 10, "the inserted rows are in the recorded ticks: {rows}");
}
