//! Just enough `pg_catalog` for psql and drivers: recognizes the catalog queries psql sends for
//! `\d`, `\dt`, `\dv`, `\dm`, `\d NAME` and a few session functions, and answers them from the
//! coordinator's relation list. Any other query over `pg_catalog`/`information_schema` answers
//! with no rows. See docs/pgwire.md for the exact list.

use viewcast_coord::{Coordinator, RelationInfo};
use viewcast_repr::{ColumnType, Datum, RelationDesc, Row, ScalarType};

/// Relation OIDs handed to clients: catalog id plus this, so they never look like system OIDs.
const OID_BASE: u64 = 20_000;

pub struct Answer {
    pub desc: RelationDesc,
    pub rows: Vec<Row>,
}

fn desc(cols: &[(&str, ScalarType)]) -> RelationDesc {
    RelationDesc::new(cols.iter().map(|(n, t)| (n.to_string(), ColumnType::new(*t, true))))
}

fn t(s: &str) -> Datum {
    Datum::text(s)
}

/// Session facts the answers need.
pub struct Session<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub pid: i32,
}

/// Collapses whitespace and lower-cases, for matching.
fn normalize(sql: &str) -> String {
    let lower = sql.trim().trim_end_matches(';').trim().to_lowercase();
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub const SERVER_VERSION: &str = "9.5.0";

/// Answers the query if it is one of the recognized session or catalog queries.
pub fn answer(sql: &str, coord: &Coordinator, session: &Session<'_>) -> Option<Answer> {
    let n = normalize(sql);
    let single =
        |name: &str, ty: ScalarType, v: Datum| Answer { desc: desc(&[(name, ty)]), rows: vec![Row::new(vec![v])] };
    match n.as_str() {
        "select version()" => {
            let v = format!(
                "PostgreSQL {SERVER_VERSION} on x86_64-unknown-linux-gnu (viewcast {})",
                env!("CARGO_PKG_VERSION")
            );
            return Some(single("version", ScalarType::Text, t(&v)));
        }
        "select current_schema()" | "select current_schema" | "select pg_catalog.current_schema()" => {
            return Some(single("current_schema", ScalarType::Text, t("public")))
        }
        "select current_database()" | "select pg_catalog.current_database()" => {
            return Some(single("current_database", ScalarType::Text, t(session.database)))
        }
        "select current_user" | "select session_user" | "select user" | "select current_user()" => {
            return Some(single("current_user", ScalarType::Text, t(session.user)))
        }
        "select pg_backend_pid()" | "select pg_catalog.pg_backend_pid()" => {
            return Some(single("pg_backend_pid", ScalarType::Int32, Datum::Int(session.pid as i64)))
        }
        _ => {}
    }
    if !(n.contains("pg_catalog") || n.contains("information_schema") || n.contains("pg_class")) {
        return None;
    }
    let relations = coord.relations();
    // psql's listing (\d, \dt, \dv, \dm): Schema, Name, Type, Owner.
    if n.contains("from pg_catalog.pg_class c") && n.contains("c.relkind in (") && n.contains("\"owner\"") {
        let kinds = relkinds(&n);
        let pattern = name_pattern(&n);
        let rows = relations
            .iter()
            .filter(|r| kinds.contains(&relkind(r)))
            .filter(|r| pattern.as_deref().is_none_or(|p| matches_pattern(p, &r.name)))
            .map(|r| Row::new(vec![t("public"), t(&r.name), t(r.kind), t(session.user)]))
            .collect();
        let desc = desc(&[
            ("Schema", ScalarType::Text),
            ("Name", ScalarType::Text),
            ("Type", ScalarType::Text),
            ("Owner", ScalarType::Text),
        ]);
        return Some(Answer { desc, rows });
    }
    // \d NAME, step 1: oid, schema and name of the relations matching the pattern.
    if n.starts_with("select c.oid, n.nspname, c.relname from pg_catalog.pg_class c") {
        let pattern = name_pattern(&n);
        let rows = relations
            .iter()
            .filter(|r| pattern.as_deref().is_none_or(|p| matches_pattern(p, &r.name)))
            .map(|r| Row::new(vec![t(&oid(r).to_string()), t("public"), t(&r.name)]))
            .collect();
        let desc = desc(&[("oid", ScalarType::Text), ("nspname", ScalarType::Text), ("relname", ScalarType::Text)]);
        return Some(Answer { desc, rows });
    }
    let by_oid = |n: &str| -> Option<&RelationInfo> {
        let oid = quoted_number_after(n, &["c.oid = '", "a.attrelid = '", "pg_get_viewdef('"])?;
        relations.iter().find(|r| self::oid(r) == oid)
    };
    // \d NAME, step 2: the relation's flags (psql reads them by position).
    if n.starts_with("select c.relchecks, c.relkind") {
        let rows = by_oid(&n)
            .map(|r| {
                let kind = relkind(r).to_string();
                let mut row = vec![t("0"), t(&kind)];
                row.extend(["f", "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d", ""].map(t));
                Row::new(row)
            })
            .into_iter()
            .collect();
        let names: Vec<String> = (0..15).map(|i| format!("c{i}")).collect();
        let cols: Vec<(&str, ScalarType)> = names.iter().map(|n| (n.as_str(), ScalarType::Text)).collect();
        return Some(Answer { desc: desc(&cols), rows });
    }
    // \d NAME, step 3: columns.
    if n.starts_with("select a.attname") && n.contains("from pg_catalog.pg_attribute a") {
        let rows = by_oid(&n)
            .map(|r| {
                r.desc
                    .names
                    .iter()
                    .zip(&r.desc.types)
                    .map(|(name, ty)| {
                        let notnull = if ty.nullable { "f" } else { "t" };
                        let mut row = vec![t(name), t(ty.scalar.name()), Datum::Null, t(notnull), Datum::Null];
                        row.extend(["", "", "", "", ""].map(t));
                        Row::new(row)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let cols: Vec<(&str, ScalarType)> = names.iter().map(|n| (n.as_str(), ScalarType::Text)).collect();
        return Some(Answer { desc: desc(&cols), rows });
    }
    if n.contains("pg_get_viewdef(") {
        let rows = by_oid(&n).map(|_| Row::new(vec![Datum::Null])).into_iter().collect();
        return Some(Answer { desc: desc(&[("pg_get_viewdef", ScalarType::Text)]), rows });
    }
    // Anything else over the catalog: recognized as a catalog query, answered with no rows.
    Some(Answer { desc: desc(&[("?column?", ScalarType::Text)]), rows: vec![] })
}

fn oid(r: &RelationInfo) -> u64 {
    r.id + OID_BASE
}

fn relkind(r: &RelationInfo) -> char {
    match r.kind {
        "table" => 'r',
        "view" => 'v',
        "materialized view" => 'm',
        "source" => 'f',
        _ => 'r',
    }
}

/// The characters of `c.relkind IN ('r','p','')`.
fn relkinds(n: &str) -> Vec<char> {
    let Some(i) = n.find("c.relkind in (") else { return vec![] };
    let rest = &n[i + "c.relkind in (".len()..];
    let list = &rest[..rest.find(')').unwrap_or(rest.len())];
    // Lower-cased by `normalize`; psql's upper-case kinds (S, I) are not ones viewcast has.
    list.split(',').filter_map(|s| s.trim().trim_matches('\'').chars().next()).collect()
}

/// psql's name filter: `c.relname operator(pg_catalog.~) '^(name)$'`.
fn name_pattern(n: &str) -> Option<String> {
    let i = n.find("c.relname operator(pg_catalog.~) '^(")?;
    let rest = &n[i + "c.relname operator(pg_catalog.~) '^(".len()..];
    let end = rest.find(")$'")?;
    Some(rest[..end].to_string())
}

/// psql turns `*` into `.*` and `?` into `.`; anything else matches literally.
fn matches_pattern(p: &str, name: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        if p.is_empty() {
            return s.is_empty();
        }
        if p.starts_with(b".*") {
            return (0..=s.len()).any(|k| go(&p[2..], &s[k..]));
        }
        if p[0] == b'.' {
            return !s.is_empty() && go(&p[1..], &s[1..]);
        }
        !s.is_empty() && p[0] == s[0].to_ascii_lowercase() && go(&p[1..], &s[1..])
    }
    go(p.as_bytes(), name.as_bytes())
}

fn quoted_number_after(n: &str, prefixes: &[&str]) -> Option<u64> {
    prefixes.iter().find_map(|p| {
        let i = n.find(p)?;
        let rest = &n[i + p.len()..];
        rest[..rest.find('\'')?].parse().ok()
    })
}
