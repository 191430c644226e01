//! The Wikipedia load generator: its events look like the real stream's, it is deterministic and
//! skewed, and its runner stops when asked, when done, and when nobody listens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;
use viewcast_sources::{Datum, EventClock, LoadGenConfig, LoadGenerator, Row, SourceError, WikipediaGenerator};

const FIXTURE: &str = include_str!("fixtures/recentchange-sample.sse");

fn fixture_events() -> Vec<Value> {
    FIXTURE.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// The shape of a JSON value: object keys with their shapes, or the kind of a scalar.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(_) => "array".into(),
        Value::String(_) => "string".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "integer".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

fn data(row: &Row) -> Value {
    match row.get(0) {
        Datum::Jsonb(j) => j.to_value(),
        other => panic!("expected jsonb, got {other:?}"),
    }
}

#[test]
fn edit_events_have_the_fixture_shape() {
    let fixture = fixture_events();
    assert_eq!(fixture.len(), 3);
    let want = shape(&fixture[0]);
    for f in &fixture {
        assert_eq!(shape(f), want);
    }
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for e in WikipediaGenerator::new(9).take(5_000).map(|e| e.to_value()) {
        let ty = e["type"].as_str().unwrap().to_owned();
        *by_type.entry(ty.clone()).or_default() += 1;
        let mut got = shape(&e);
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        match ty.as_str() {
            "edit" => assert_eq!(got, want, "{e:#}"),
            "new" => {
                // A new page has no previous length or revision.
                assert!(e["length"].get("old").is_none() && e["revision"].get("old").is_none());
                got["length"]["old"] = "integer".into();
                got["revision"]["old"] = "integer".into();
                assert_eq!(got, want, "{e:#}");
            }
            "log" | "categorize" => {
                for absent in ["length", "revision", "minor", "patrolled"] {
                    assert!(!keys.contains(absent), "{ty} event has {absent}: {e:#}");
                }
                let common: BTreeSet<&str> =
                    want.as_object().unwrap().keys().map(|k| k.as_str()).filter(|k| keys.contains(k)).collect();
                assert_eq!(common.len(), want.as_object().unwrap().len() - 4);
                if ty == "log" {
                    for k in ["log_id", "log_type", "log_action", "log_params", "log_action_comment"] {
                        assert!(keys.contains(k), "{e:#}");
                    }
                } else {
                    assert_eq!(keys.len(), common.len());
                    assert_eq!(e["namespace"], 14);
                }
            }
            other => panic!("unexpected type {other}"),
        }
        assert_eq!(e["server_url"].as_str().unwrap(), format!("https://{}", e["server_name"].as_str().unwrap()));
        assert_eq!(e["meta"]["domain"], e["server_name"]);
        assert!(e["meta"]["uri"].as_str().unwrap().starts_with(e["server_url"].as_str().unwrap()));
        assert_eq!(e["meta"]["id"].as_str().unwrap().len(), 36);
    }
    let share = |t: &str| by_type.get(t).copied().unwrap_or(0) as f64 / 5_000.0;
    assert!((0.6..0.85).contains(&share("edit")), "{by_type:?}");
    for t in ["new", "log", "categorize"] {
        assert!((0.02..0.25).contains(&share(t)), "{by_type:?}");
    }
}

#[test]
fn same_seed_same_events() {
    let a: Vec<Value> = WikipediaGenerator::new(42).take(2_000).map(|e| e.to_value()).collect();
    let b: Vec<Value> = WikipediaGenerator::new(42).take(2_000).map(|e| e.to_value()).collect();
    assert_eq!(a, b);
    let c: Vec<Value> = WikipediaGenerator::new(43).take(2_000).map(|e| e.to_value()).collect();
    assert_ne!(a, c);
    // On the wall clock only the time fields differ.
    let strip = |mut e: Value| {
        e["timestamp"].take();
        e["meta"]["dt"].take();
        e
    };
    let d: Vec<Value> =
        WikipediaGenerator::new(42).with_clock(EventClock::Wall).take(2_000).map(|e| strip(e.to_value())).collect();
    assert_eq!(a.into_iter().map(strip).collect::<Vec<_>>(), d);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ts =
        WikipediaGenerator::new(1).with_clock(EventClock::Wall).next_event().to_value()["timestamp"].as_u64().unwrap();
    assert!(ts.abs_diff(now) < 60);
}

#[test]
fn traffic_is_skewed_like_the_real_stream() {
    let n = 100_000;
    let mut users: HashMap<String, u64> = HashMap::new();
    let mut wikis: HashMap<String, u64> = HashMap::new();
    let mut titles: HashMap<String, u64> = HashMap::new();
    let mut bots = 0u64;
    for e in WikipediaGenerator::new(7).take(n).map(|e| e.to_value()) {
        *users.entry(e["user"].as_str().unwrap().to_owned()).or_default() += 1;
        *wikis.entry(e["wiki"].as_str().unwrap().to_owned()).or_default() += 1;
        *titles.entry(format!("{}/{}", e["wiki"], e["title"])).or_default() += 1;
        bots += e["bot"].as_bool().unwrap() as u64;
    }
    let n = n as f64;
    let mut counts: Vec<u64> = users.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    // Zipf(1.1) over 100k editors: the top one makes 13.5% of events, the top ten 36%.
    assert!((counts[0] as f64 / n - 0.1347).abs() < 0.01, "{}", counts[0]);
    let top10: u64 = counts[..10].iter().sum();
    assert!((top10 as f64 / n - 0.361).abs() < 0.02, "{top10}");
    // Expected distinct editors among 100k draws: Σ 1 - (1 - p_k)^n ≈ 17.1k (82.6k for 2M draws).
    assert!((16_000..18_200).contains(&users.len()), "{}", users.len());
    let bot_share = bots as f64 / n;
    assert!((0.20..0.30).contains(&bot_share), "{bot_share}");
    assert!(wikis.len() >= 20, "{wikis:?}");
    let wd = wikis["wikidatawiki"] as f64 / n;
    let en = wikis["enwiki"] as f64 / n;
    assert!((0.25..0.50).contains(&wd) && (0.03..0.20).contains(&en), "{wikis:?}");
    // Popular pages are edited again and again.
    assert!(titles.values().copied().max().unwrap() > 100, "{:?}", titles.values().max());
}

fn drain(rx: crossbeam_channel::Receiver<Vec<Row>>) -> Vec<Row> {
    rx.iter().flatten().collect()
}

#[test]
fn max_events_is_exact_and_counted() {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let config = LoadGenConfig { seed: 3, max_events: Some(10_007), batch_size: 100, ..LoadGenConfig::default() };
    let handle = LoadGenerator::spawn(config, tx).unwrap();
    let rows = drain(rx);
    assert_eq!(rows.len(), 10_007);
    let stats = handle.stats().clone();
    handle.join().unwrap();
    let snap = stats.snapshot();
    assert_eq!(snap.events_in, 10_007);
    let bytes: usize = rows.iter().map(|r| serde_json::to_string(&data(r)).unwrap().len()).sum();
    assert_eq!(snap.bytes_in, bytes as u64);
    assert_eq!(snap.errors, 0);
    assert!(snap.last_event_time.is_some());
    // The runner's events are the generator's, in order.
    let direct: Vec<Value> =
        WikipediaGenerator::new(3).with_clock(EventClock::Wall).take(50).map(|e| e.to_value()).collect();
    for (r, d) in rows.iter().zip(&direct) {
        assert_eq!(data(r)["meta"]["id"], d["meta"]["id"]);
    }
}

#[test]
fn fixed_rate_is_roughly_respected_in_small_batches() {
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let config = LoadGenConfig { seed: 1, events_per_second: Some(400.0), ..LoadGenConfig::default() };
    let handle = LoadGenerator::spawn(config, tx).unwrap();
    let start = Instant::now();
    let mut received = 0;
    let mut biggest = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(50)) {
            received += batch.len();
            biggest = biggest.max(batch.len());
        }
    }
    handle.stop().unwrap();
    // 600 expected; generous bounds for a loaded machine.
    assert!((200..=900).contains(&received), "{received}");
    // 10 ms worth of events at most per batch.
    assert!(biggest <= 4, "{biggest}");
}

#[test]
fn stop_joins_a_generator_blocked_on_a_full_channel() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = LoadGenerator::spawn(LoadGenConfig { batch_size: 10, ..LoadGenConfig::default() }, tx).unwrap();
    while handle.stats().events_in() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    handle.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    // The thread is gone, and with it the sender.
    let rest = drain(rx);
    assert!(rest.len() <= 20);
}

#[test]
fn dropping_the_handle_stops_the_thread() {
    let (tx, rx) = crossbeam_channel::bounded(2);
    let handle =
        LoadGenerator::spawn(LoadGenConfig { events_per_second: Some(50.0), ..LoadGenConfig::default() }, tx).unwrap();
    drop(handle);
    // Disconnected only once the thread has ended and dropped its sender.
    let _ = drain(rx);
}

#[test]
fn dropping_the_receiver_ends_the_generator() {
    let (tx, rx) = crossbeam_channel::bounded(2);
    let handle = LoadGenerator::spawn(LoadGenConfig::default(), tx).unwrap();
    rx.recv().unwrap();
    drop(rx);
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(10), "generator did not notice the receiver is gone");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().unwrap();
}

#[test]
fn bad_configs_are_rejected() {
    let (tx, _rx) = crossbeam_channel::bounded(2);
    let bad = [
        LoadGenConfig { batch_size: 0, ..LoadGenConfig::default() },
        LoadGenConfig { events_per_second: Some(0.0), ..LoadGenConfig::default() },
        LoadGenConfig { events_per_second: Some(f64::NAN), ..LoadGenConfig::default() },
    ];
    for config in bad {
        assert!(matches!(LoadGenerator::spawn(config, tx.clone()), Err(SourceError::Config(_))));
    }
}
