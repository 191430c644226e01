//! The demo's Wikipedia pipeline as the plans SQL lowers to, and a synthetic event generator.
//! Shared by the demo test and the `pipeline_throughput` example.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use viewcast_plan::{AggregateExpr, AggregateFunc, BinaryFunc, ColumnOrder, GlobalId, RelExpr, ScalarExpr, UnaryFunc};
use viewcast_repr::{Datum, Jsonb, Row, ScalarType};

pub const WIKIRECENT: GlobalId = 1;
pub const RECENTCHANGES: GlobalId = 2;
pub const COUNTER: GlobalId = 3;
pub const USEREDITS: GlobalId = 4;
pub const TOP10: GlobalId = 5;

fn text(s: &str) -> ScalarExpr {
    ScalarExpr::literal(Datum::text(s), ScalarType::Text)
}

fn get(e: ScalarExpr, key: &str) -> ScalarExpr {
    e.call_binary(BinaryFunc::JsonGet, text(key))
}

fn cast(e: ScalarExpr, ty: ScalarType) -> ScalarExpr {
    e.call_unary(UnaryFunc::Cast(ty))
}

/// `SELECT val->>'user' AS user, (val->'bot')::bool AS bot, val->>'wiki' AS wiki, val->>'type' AS type,
/// val->>'title' AS title, (val->'timestamp')::float AS r_ts,
/// (val->'length'->'new')::float::int - (val->'length'->'old')::float::int AS delta
/// FROM (SELECT data::jsonb AS val FROM wikirecent)`
pub fn recentchanges() -> RelExpr {
    let val = ScalarExpr::Column(1);
    let int_of = |k: &str| cast(cast(get(get(val.clone(), "length"), k), ScalarType::Float64), ScalarType::Int32);
    let inner = RelExpr::Map {
        input: Box::new(RelExpr::Get { id: WIKIRECENT, arity: 1 }),
        scalars: vec![cast(ScalarExpr::Column(0), ScalarType::Jsonb)],
    };
    RelExpr::Project {
        input: Box::new(RelExpr::Map {
            input: Box::new(inner),
            scalars: vec![
                val.clone().call_binary(BinaryFunc::JsonGetText, text("user")),
                cast(get(val.clone(), "bot"), ScalarType::Bool),
                val.clone().call_binary(BinaryFunc::JsonGetText, text("wiki")),
                val.clone().call_binary(BinaryFunc::JsonGetText, text("type")),
                val.clone().call_binary(BinaryFunc::JsonGetText, text("title")),
                cast(get(val.clone(), "timestamp"), ScalarType::Float64),
                int_of("new").call_binary(BinaryFunc::Sub, int_of("old")),
            ],
        }),
        outputs: (2..9).collect(),
    }
}

pub fn count_star() -> AggregateExpr {
    AggregateExpr {
        func: AggregateFunc::Count,
        expr: ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool),
        distinct: false,
    }
}

/// `SELECT COUNT(*) FROM recentchanges`
pub fn counter() -> RelExpr {
    RelExpr::Reduce {
        input: Box::new(RelExpr::Get { id: RECENTCHANGES, arity: 7 }),
        group_key: vec![],
        aggregates: vec![count_star()],
    }
}

/// `SELECT user, count(*) FROM recentchanges GROUP BY user`
pub fn useredits() -> RelExpr {
    RelExpr::Reduce {
        input: Box::new(RelExpr::Get { id: RECENTCHANGES, arity: 7 }),
        group_key: vec![0],
        aggregates: vec![count_star()],
    }
}

/// `SELECT * FROM useredits ORDER BY count DESC LIMIT 10`
pub fn top10() -> RelExpr {
    RelExpr::TopK {
        input: Box::new(RelExpr::Get { id: USEREDITS, arity: 2 }),
        group_key: vec![],
        order_key: vec![ColumnOrder::desc(1)],
        limit: Some(10),
        offset: 0,
    }
}

/// Synthetic recent-change events: users drawn with a heavy skew over `users` names.
pub struct EventGen {
    rng: StdRng,
    users: Vec<String>,
    n: u64,
}

impl EventGen {
    pub fn new(seed: u64, users: usize) -> EventGen {
        EventGen { rng: StdRng::seed_from_u64(seed), users: (0..users).map(|i| format!("user{i}")).collect(), n: 0 }
    }

    /// One event as a `wikirecent` row (a single `jsonb` column).
    pub fn next_row(&mut self) -> Row {
        self.n += 1;
        let x: f64 = self.rng.gen();
        let user = &self.users[((self.users.len() as f64) * x.powi(4)) as usize % self.users.len()];
        let bot = self.rng.gen_bool(0.2);
        let wiki = ["enwiki", "dewiki", "frwiki", "commonswiki", "wikidatawiki"][self.rng.gen_range(0..5)];
        let kind = ["edit", "edit", "edit", "new", "log", "categorize"][self.rng.gen_range(0..6)];
        let title = format!("Page {}", self.rng.gen_range(0..1_000_000));
        let old: i64 = self.rng.gen_range(0..50_000);
        let new: i64 = (old + self.rng.gen_range(-2_000..2_000)).max(0);
        let mut v = serde_json::json!({
            "user": user,
            "bot": bot,
            "wiki": wiki,
            "type": kind,
            "title": title,
            "timestamp": 1_700_000_000 + self.n,
            "id": self.n,
            "namespace": 0,
            "comment": "copyedit",
        });
        if kind != "log" {
            v["length"] = serde_json::json!({ "old": old, "new": new });
        }
        Row::new(vec![Datum::Jsonb(Jsonb::from_value(&v))])
    }
}
