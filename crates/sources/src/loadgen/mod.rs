//! The synthetic Wikipedia `recentchange` stream: [`WikipediaGenerator`] makes events shaped like
//! Wikimedia EventStreams' (same fields, same nesting), [`LoadGenerator`] runs one on a thread
//! into a batch channel, as fast as the channel takes them or at a fixed rate.
//!
//! The traffic is skewed the way the real stream is: a few very active accounts (bots and humans)
//! above a long tail of about 100k editors (Zipf, s = 1.1), a few wikis (Wikidata, Commons,
//! English Wikipedia) above a tail of smaller ones, popular pages edited again and again.

mod data;
pub(crate) mod rng;
mod runner;
mod sampler;

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use viewcast_repr::{civil_from_days, Timestamp};
use viewcast_repr::{Jsonb, JsonbWriter};

use self::data::WikiKind;
use self::rng::{mix, Rng};
use self::sampler::{zipf_weights, AliasTable, PowerLaw};

pub use self::runner::{LoadGenConfig, LoadGenerator};

/// Number of distinct editors; their activity follows Zipf's law with exponent [`USER_ZIPF_S`].
pub const USER_COUNT: usize = 100_000;
pub const USER_ZIPF_S: f64 = 1.1;
/// Share of an editor's events made on their home wiki; the rest go anywhere, by wiki traffic.
const HOME_WIKI_SHARE: f64 = 0.75;
/// Share of the long tail (beyond the named top accounts) that are bots, and that are anonymous.
const TAIL_BOT_SHARE: f64 = 0.002;
const TAIL_ANON_SHARE: f64 = 0.08;

/// Where event timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventClock {
    /// Event `i` (from 0) is stamped `start + i * 1000 / events_per_second` milliseconds:
    /// the same seed gives byte-identical events.
    Virtual { start: Timestamp, events_per_second: f64 },
    /// Each event is stamped with the wall clock when it is generated.
    Wall,
}

impl EventClock {
    /// The instant of the fixture's events (2022-12-11T04:27:02Z), at 1000 events per second.
    pub const DEFAULT_VIRTUAL: EventClock = EventClock::Virtual { start: 1_670_732_822_000, events_per_second: 1000.0 };
}

/// The editor population and wiki table, the same for every seed, built once per process.
struct Population {
    users: Vec<String>,
    user_bot: Vec<bool>,
    user_home: Vec<u8>,
    user_sampler: AliasTable,
    wiki_sampler: AliasTable,
    wikis: Vec<WikiStatic>,
}

struct WikiStatic {
    kind: WikiKind,
    wiki: &'static str,
    server_name: &'static str,
    server_url: String,
    uri_prefix: String,
    pages: PowerLaw,
    /// Per event type (edit, new, log, categorize): cumulative probability.
    type_cdf: [f64; 4],
}

fn population() -> &'static Arc<Population> {
    static POPULATION: OnceLock<Arc<Population>> = OnceLock::new();
    POPULATION.get_or_init(|| Arc::new(Population::build()))
}

impl Population {
    fn build() -> Population {
        let wiki_weights: Vec<f64> = data::WIKIS.iter().map(|w| w.3).collect();
        let wiki_sampler = AliasTable::new(&wiki_weights);
        let wikis = data::WIKIS
            .iter()
            .map(|&(wiki, server_name, kind, _)| {
                let (pages, type_mix) = match kind {
                    WikiKind::Wikidata => (PowerLaw::new(50_000_000, 1.05), [0.90, 0.05, 0.04, 0.01]),
                    WikiKind::Commons => (PowerLaw::new(5_000_000, 1.05), [0.55, 0.08, 0.12, 0.25]),
                    _ => (PowerLaw::new(2_000_000, 1.1), [0.60, 0.04, 0.08, 0.28]),
                };
                let mut type_cdf = [0.0; 4];
                let mut acc = 0.0;
                for (c, p) in type_cdf.iter_mut().zip(type_mix) {
                    acc += p;
                    *c = acc;
                }
                WikiStatic {
                    kind,
                    wiki,
                    server_name,
                    server_url: format!("https://{server_name}"),
                    uri_prefix: format!("https://{server_name}/wiki/"),
                    pages,
                    type_cdf,
                }
            })
            .collect();

        let mut users = Vec::with_capacity(USER_COUNT);
        let mut user_bot = Vec::with_capacity(USER_COUNT);
        let mut user_home = Vec::with_capacity(USER_COUNT);
        let wiki_pick = AliasTable::new(&wiki_weights);
        for &(name, bot, home) in data::TOP_USERS {
            users.push(name.to_owned());
            user_bot.push(bot);
            user_home.push(home as u8);
        }
        let mut home_rng = Rng::new(0x5eed_0f05_e75e);
        for i in users.len()..USER_COUNT {
            let h = mix(i as u64);
            let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
            // (adjective, noun, i / 4096) is distinct for every i, so every name is unique.
            let adj = data::ADJECTIVES[i % 64];
            let noun = data::NOUNS[i / 64 % 64];
            let (name, bot) = if unit < TAIL_BOT_SHARE {
                (format!("{adj}{noun}Bot{}", i / 4096), true)
            } else if unit < TAIL_BOT_SHARE + TAIL_ANON_SHARE {
                (format!("{}.{}.{}.{}", 11 + h % 200, 100 + (i >> 16), (i >> 8) & 255, i & 255), false)
            } else if i < 4096 {
                (format!("{adj} {noun}"), false)
            } else {
                (format!("{adj} {noun} {}", i / 4096), false)
            };
            users.push(name);
            user_bot.push(bot);
            user_home.push(wiki_pick.sample(&mut home_rng) as u8);
        }
        let user_sampler = AliasTable::new(&zipf_weights(USER_COUNT, USER_ZIPF_S));
        Population { users, user_bot, user_home, user_sampler, wiki_sampler, wikis }
    }
}

/// Per-wiki counters that advance as events are made.
#[derive(Clone, Debug)]
struct WikiCounters {
    rc_id: u64,
    revision: u64,
    log_id: u64,
}

/// A deterministic, endless iterator of synthetic `recentchange` events.
///
/// Same seed and same [`EventClock::Virtual`] clock ⇒ the same sequence; with
/// [`EventClock::Wall`] only `timestamp` and `meta.dt` differ between runs.
pub struct WikipediaGenerator {
    rng: Rng,
    clock: EventClock,
    seq: u64,
    pop: Arc<Population>,
    counters: Vec<WikiCounters>,
    /// `meta.dt` for the second in `.0`, rebuilt only when the second changes.
    dt_cache: (u64, String),
    /// The title of the event being made.
    scratch: String,
    /// The `meta.uri` of the event being made.
    uri: String,
    writer: JsonbWriter,
}

const SCHEMA: &str = "/mediawiki/recentchange/1.0.0";
const STREAM: &str = "mediawiki.recentchange";
const TOPIC: &str = "eqiad.mediawiki.recentchange";
const FIRST_OFFSET: u64 = 4_369_496_612;
const TYPES: [&str; 4] = ["edit", "new", "log", "categorize"];

impl WikipediaGenerator {
    /// A generator with the [`EventClock::DEFAULT_VIRTUAL`] clock.
    pub fn new(seed: u64) -> WikipediaGenerator {
        let pop = Arc::clone(population());
        let counters = (0..pop.wikis.len() as u64)
            .map(|i| {
                let h = mix(i ^ 0xc0ffee);
                WikiCounters {
                    rc_id: 100_000_000 + h % 2_000_000_000,
                    revision: 50_000_000 + (h >> 8) % 1_800_000_000,
                    log_id: 1_000_000 + (h >> 16) % 300_000_000,
                }
            })
            .collect();
        WikipediaGenerator {
            rng: Rng::new(seed),
            clock: EventClock::DEFAULT_VIRTUAL,
            seq: 0,
            pop,
            counters,
            dt_cache: (u64::MAX, String::new()),
            scratch: String::with_capacity(128),
            uri: String::with_capacity(256),
            writer: JsonbWriter::new(),
        }
    }

    pub fn with_clock(mut self, clock: EventClock) -> WikipediaGenerator {
        self.clock = clock;
        self
    }

    /// How many events this generator has made.
    pub fn events_generated(&self) -> u64 {
        self.seq
    }

    fn now_millis(&self) -> Timestamp {
        match self.clock {
            EventClock::Virtual { start, events_per_second } => {
                start + (self.seq as f64 * 1000.0 / events_per_second) as Timestamp
            }
            EventClock::Wall => crate::stats::now_millis(),
        }
    }

    fn dt(&mut self, secs: u64) -> String {
        if self.dt_cache.0 != secs {
            let days = (secs / 86_400) as i64;
            let rem = secs % 86_400;
            let (y, m, d) = civil_from_days(days);
            let text = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60);
            self.dt_cache = (secs, text);
        }
        self.dt_cache.1.clone()
    }

    fn uuid(&mut self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        // Version 4, variant 1, as real request ids are.
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        let mut s = String::with_capacity(36);
        for (i, nibble) in
            (0..32).map(|i| if i < 16 { (a >> (60 - 4 * i)) & 15 } else { (b >> (124 - 4 * i)) & 15 }).enumerate()
        {
            if matches!(i, 8 | 12 | 16 | 20) {
                s.push('-');
            }
            s.push(HEX[nibble as usize] as char);
        }
        s
    }

    /// Writes the title of page `rank` (0 the most popular) of a wiki of `kind` in namespace `ns`.
    fn write_title(&mut self, kind: WikiKind, ns: i64, rank: u64) {
        let t = &mut self.scratch;
        t.clear();
        let adj = data::ADJECTIVES[(rank % 64) as usize];
        let noun = data::NOUNS[(rank / 64 % 64) as usize];
        let rest = rank / 4096;
        match (kind, ns) {
            (WikiKind::Wikidata, 0) => {
                let _ = write!(t, "Q{}", 1 + mix(rank) % 120_000_000);
                return;
            }
            (WikiKind::Wikidata, 120) => {
                let _ = write!(t, "Property:P{}", 1 + rank % 12_000);
                return;
            }
            (WikiKind::Wikidata, 146) => {
                let _ = write!(t, "Lexeme:L{}", 1 + mix(rank) % 1_300_000);
                return;
            }
            (_, 2) | (_, 3) => {
                t.push_str(if ns == 2 { "User:" } else { "User talk:" });
                let user = &self.pop.users[(rank % USER_COUNT as u64) as usize];
                t.push_str(user);
                return;
            }
            (WikiKind::Commons, 6) => {
                let _ = write!(t, "File:{adj} {noun} {rank}.jpg");
                return;
            }
            (_, 1) => t.push_str("Talk:"),
            (WikiKind::Wikipedia, 4) => t.push_str("Wikipedia:"),
            (_, 4) => t.push_str("Project:"),
            (_, 10) => t.push_str("Template:"),
            (_, 14) => t.push_str("Category:"),
            _ => {}
        }
        if kind == WikiKind::Wiktionary && ns == 0 {
            let _ = write!(t, "{} {}", adj.to_ascii_lowercase(), noun.to_ascii_lowercase());
        } else {
            let _ = write!(t, "{adj} {noun}");
        }
        if rest > 0 {
            let _ = write!(t, " ({rest})");
        }
    }

    fn pick_namespace(&mut self, kind: WikiKind, type_idx: usize) -> i64 {
        let u = self.rng.unit();
        match (type_idx, kind) {
            (3, _) => 14,
            (2, _) => [2, 6, 0, 2][(u * 4.0) as usize],
            (_, WikiKind::Wikidata) => {
                if u < 0.92 {
                    0
                } else if u < 0.95 {
                    120
                } else if u < 0.98 {
                    146
                } else {
                    2
                }
            }
            (_, WikiKind::Commons) => {
                if u < 0.75 {
                    6
                } else if u < 0.90 {
                    14
                } else if u < 0.93 {
                    0
                } else {
                    2
                }
            }
            _ => {
                const NS: [(f64, i64); 7] =
                    [(0.70, 0), (0.78, 1), (0.85, 2), (0.91, 3), (0.95, 4), (0.98, 10), (1.0, 14)];
                NS.iter().find(|(c, _)| u < *c).map_or(0, |&(_, ns)| ns)
            }
        }
    }

    /// The next event, written straight into its `jsonb` encoding (no `serde_json::Value` tree:
    /// the generator is on the hot path of every demo and benchmark).
    pub fn next_event(&mut self) -> Jsonb {
        let now = self.now_millis();
        self.seq += 1;
        let secs = now / 1000;
        let pop = Arc::clone(&self.pop);

        let user = pop.user_sampler.sample(&mut self.rng);
        let bot = pop.user_bot[user];
        let wiki_idx = if self.rng.chance(HOME_WIKI_SHARE) {
            pop.user_home[user] as usize
        } else {
            pop.wiki_sampler.sample(&mut self.rng)
        };
        let wiki = &pop.wikis[wiki_idx];
        let u = self.rng.unit();
        let type_idx = wiki.type_cdf.iter().position(|&c| u < c).unwrap_or(0);
        let ns = self.pick_namespace(wiki.kind, type_idx);
        let page = wiki.pages.sample(&mut self.rng);
        self.write_title(wiki.kind, ns, page);
        let dt = self.dt(secs);
        let meta_id = self.uuid();
        let request_id = self.uuid();

        let (comment, parsed, log) = match (type_idx, wiki.kind) {
            (2, _) => {
                let l = data::LOG_ACTIONS[self.rng.below(data::LOG_ACTIONS.len() as u64) as usize];
                (l.2, l.3, Some(l))
            }
            (3, _) => pick(&mut self.rng, data::CATEGORIZE_COMMENTS),
            (_, WikiKind::Wikidata) => pick(&mut self.rng, data::WIKIDATA_COMMENTS),
            (_, WikiKind::Commons) => pick(&mut self.rng, data::COMMONS_COMMENTS),
            _ => pick(&mut self.rng, data::ARTICLE_COMMENTS),
        };
        let counters = &mut self.counters[wiki_idx];
        counters.rc_id += 1;

        // Members go in key order, so no object needs sorting when it ends.
        let w = &mut self.writer;
        w.begin_object();
        w.key("$schema").str(SCHEMA);
        w.key("bot").bool(bot);
        w.key("comment").str(comment);
        w.key("id").u64(counters.rc_id);
        let mut revision = None;
        if type_idx <= 1 {
            counters.revision += 1;
            w.key("length").begin_object();
            if type_idx == 0 {
                let old = 200 + mix(page ^ (wiki_idx as u64) << 40) % 60_000;
                let delta = if self.rng.chance(0.9) {
                    self.rng.below(600) as i64 - 200
                } else {
                    self.rng.below(20_000) as i64 - 8_000
                };
                let back = 1 + self.rng.below(counters.revision.min(50_000_000));
                w.key("new").i64((old as i64 + delta).max(0));
                w.key("old").u64(old);
                revision = Some((counters.revision, Some(counters.revision - back)));
            } else {
                w.key("new").u64(100 + self.rng.below(8_000));
                revision = Some((counters.revision, None));
            }
            w.end_object();
        }
        if let Some(l) = log {
            counters.log_id += 1;
            w.key("log_action").str(l.1);
            w.key("log_action_comment").str(l.4);
            w.key("log_id").u64(counters.log_id);
            w.key("log_params").begin_array().end_array();
            w.key("log_type").str(l.0);
        }
        w.key("meta").begin_object();
        w.key("domain").str(wiki.server_name);
        w.key("dt").str(&dt);
        w.key("id").str(&meta_id);
        w.key("offset").u64(FIRST_OFFSET + self.seq - 1);
        w.key("partition").u64(0);
        w.key("request_id").str(&request_id);
        w.key("stream").str(STREAM);
        w.key("topic").str(TOPIC);
        self.uri.clear();
        self.uri.push_str(&wiki.uri_prefix);
        self.uri.extend(self.scratch.chars().map(|c| if c == ' ' { '_' } else { c }));
        w.key("uri").str(&self.uri);
        w.end_object();
        if type_idx <= 1 {
            let minor = type_idx == 0 && self.rng.chance(if bot { 0.5 } else { 0.2 });
            w.key("minor").bool(minor);
        }
        w.key("namespace").i64(ns);
        w.key("parsedcomment").str(parsed);
        if let Some((new, old)) = revision {
            let patrolled = bot || self.rng.chance(0.7);
            w.key("patrolled").bool(patrolled);
            w.key("revision").begin_object();
            w.key("new").u64(new);
            if let Some(old) = old {
                w.key("old").u64(old);
            }
            w.end_object();
        }
        w.key("server_name").str(wiki.server_name);
        w.key("server_script_path").str("/w");
        w.key("server_url").str(&wiki.server_url);
        w.key("timestamp").u64(secs);
        w.key("title").str(&self.scratch);
        w.key("type").str(TYPES[type_idx]);
        w.key("user").str(&pop.users[user]);
        w.key("wiki").str(wiki.wiki);
        w.end_object();
        w.finish()
    }
}

type LogAction = (&'static str, &'static str, &'static str, &'static str, &'static str);

fn pick(rng: &mut Rng, table: &[(&'static str, &'static str)]) -> (&'static str, &'static str, Option<LogAction>) {
    let (comment, parsed) = table[rng.below(table.len() as u64) as usize];
    (comment, parsed, None)
}

impl Iterator for WikipediaGenerator {
    type Item = Jsonb;

    fn next(&mut self) -> Option<Jsonb> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn user_names_are_unique_and_bots_are_flagged() {
        let pop = population();
        assert_eq!(pop.users.len(), USER_COUNT);
        let distinct: HashSet<&str> = pop.users.iter().map(|s| s.as_str()).collect();
        assert_eq!(distinct.len(), USER_COUNT);
        for (name, bot) in pop.users.iter().zip(&pop.user_bot) {
            assert_eq!(name.ends_with("Bot") || name.contains("Bot"), *bot, "{name}");
        }
    }

    #[test]
    fn editor_distribution_has_a_long_tail_of_about_100k() {
        let pop = population();
        let mut rng = Rng::new(3);
        let draws = 2_000_000;
        let mut seen = vec![false; USER_COUNT];
        let mut top = 0u64;
        for _ in 0..draws {
            let u = pop.user_sampler.sample(&mut rng);
            seen[u] = true;
            top += (u == 0) as u64;
        }
        let distinct = seen.iter().filter(|&&s| s).count() as f64;
        // Expected distinct ranks among n Zipf(1.1) draws: Σ 1 - (1 - p_k)^n ≈ 82.6k for 2M draws.
        let expected: f64 =
            zipf_weights(USER_COUNT, USER_ZIPF_S).iter().map(|p| 1.0 - (1.0 - p).powf(draws as f64)).sum();
        assert!((distinct - expected).abs() < 0.02 * expected, "{distinct} distinct, expected {expected}");
        assert!(distinct > 75_000.0);
        let top_share = top as f64 / draws as f64;
        assert!((top_share - 0.1347).abs() < 0.003, "{top_share}");
    }

    #[test]
    fn text_len_is_the_printed_length() {
        let mut g = WikipediaGenerator::new(5);
        for _ in 0..2_000 {
            let e = g.next_event();
            assert_eq!(e.json().text_len(), e.to_string().len());
        }
    }

    #[test]
    fn virtual_clock_spaces_events_evenly() {
        let clock = EventClock::Virtual { start: 1_700_000_000_000, events_per_second: 10.0 };
        let mut g = WikipediaGenerator::new(1).with_clock(clock);
        let ts: Vec<u64> = (0..30).map(|_| g.next_event().to_value()["timestamp"].as_u64().unwrap()).collect();
        assert_eq!(ts[0], 1_700_000_000);
        assert_eq!(ts[9], 1_700_000_000);
        assert_eq!(ts[10], 1_700_000_001);
        assert_eq!(ts[29], 1_700_000_002);
        let mut g = WikipediaGenerator::new(1).with_clock(clock);
        assert_eq!(g.next_event().to_value()["meta"]["dt"], "2023-11-14T22:13:20Z");
    }
}
