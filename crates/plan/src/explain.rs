//! EXPLAIN text: a [`RelExpr`] as an indented tree, one operator per line, inputs indented below.
//! Columns print as `#i`; literals in their SQL text form.

use std::fmt;

use viewcast_repr::{Datum, ScalarType};

use crate::expr::{AggregateExpr, BinaryFunc, ScalarExpr, UnaryFunc};
use crate::relation::{ArrangedInput, ColumnOrder, RelExpr};

/// What EXPLAIN says of one arranged input (see [`RelExpr::explain_with`]).
type ArrangementNote<'a> = dyn Fn(&ArrangedInput) -> Option<String> + 'a;

impl RelExpr {
    /// The plan as indented text, as `EXPLAIN` prints it.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        self.explain_into(0, &mut out, None);
        out
    }

    /// The plan as [`RelExpr::explain`] prints it, with a line `ArrangeBy key=[..] <note>` above
    /// each input an operator arranges (see [`RelExpr::arranged_inputs`]), `note` being what
    /// `arrangement` says of it (`None`: no note).
    pub fn explain_with(&self, arrangement: &ArrangementNote<'_>) -> String {
        let mut out = String::new();
        self.explain_into(0, &mut out, Some(arrangement));
        out
    }

    fn explain_into(&self, depth: usize, out: &mut String, note: Option<&ArrangementNote<'_>>) {
        let pad = "  ".repeat(depth);
        let line = match self {
            RelExpr::Get { id, .. } => format!("Get u{id}"),
            RelExpr::Constant { rows, .. } => {
                let shown: Vec<String> = rows
                    .iter()
                    .take(8)
                    .map(|(r, d)| {
                        let vals: Vec<String> = r.datums().iter().map(literal_text).collect();
                        if *d == 1 {
                            format!("({})", vals.join(", "))
                        } else {
                            format!("({}) x {d}", vals.join(", "))
                        }
                    })
                    .collect();
                let more = if rows.len() > 8 { format!(" ... {} rows", rows.len()) } else { String::new() };
                format!("Constant {}{more}", shown.join(" "))
            }
            RelExpr::Map { scalars, .. } => format!("Map ({})", list(scalars)),
            RelExpr::Filter { predicates, .. } => format!("Filter {}", join_with(predicates, " AND ")),
            RelExpr::Project { outputs, .. } => {
                format!("Project ({})", outputs.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", "))
            }
            RelExpr::Reduce { group_key, aggregates, .. } => {
                let keys: Vec<String> = group_key.iter().map(|i| format!("#{i}")).collect();
                let aggs: Vec<String> = aggregates.iter().map(AggregateExpr::to_string).collect();
                format!("Reduce group_by=[{}] aggregates=[{}]", keys.join(", "), aggs.join(", "))
            }
            RelExpr::TopK { group_key, order_key, limit, offset, .. } => {
                let keys: Vec<String> = group_key.iter().map(|i| format!("#{i}")).collect();
                let order: Vec<String> = order_key.iter().map(ColumnOrder::to_string).collect();
                let limit = limit.map(|l| format!(" limit={l}")).unwrap_or_default();
                let offset = if *offset > 0 { format!(" offset={offset}") } else { String::new() };
                format!("TopK group_by=[{}] order_by=[{}]{limit}{offset}", keys.join(", "), order.join(", "))
            }
            RelExpr::Join { kind, equi, predicate, .. } => {
                let eq: Vec<String> = equi.iter().map(|(l, r)| format!("l#{l} = r#{r}")).collect();
                let pred = predicate.as_ref().map(|p| format!(" predicate={p}")).unwrap_or_default();
                format!("Join {kind:?} on=[{}]{pred}", eq.join(", "))
            }
            RelExpr::Union { .. } => "Union".to_string(),
            RelExpr::Negate { .. } => "Negate".to_string(),
            RelExpr::Distinct { .. } => "Distinct".to_string(),
            RelExpr::Threshold { .. } => "Threshold".to_string(),
        };
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
        let arranged = if note.is_some() { self.arranged_inputs() } else { Vec::new() };
        for (i, child) in self.children().into_iter().enumerate() {
            match (arranged.iter().find(|a| a.child == i), note) {
                (Some(a), Some(note)) => {
                    let keys: Vec<String> = a.key.iter().map(|k| format!("#{k}")).collect();
                    let text = note(a).map(|n| format!(" {n}")).unwrap_or_default();
                    out.push_str(&format!("{pad}  ArrangeBy key=[{}]{text}\n", keys.join(", ")));
                    child.explain_into(depth + 2, out, Some(note));
                }
                _ => child.explain_into(depth + 1, out, note),
            }
        }
    }
}

impl fmt::Display for RelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

fn literal_text(d: &Datum) -> String {
    match d {
        Datum::Null => "null".into(),
        Datum::Bool(b) => b.to_string(),
        Datum::Int(_) | Datum::Float(_) => d.to_string(),
        other => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

fn list(exprs: &[ScalarExpr]) -> String {
    join_with(exprs, ", ")
}

fn join_with(exprs: &[ScalarExpr], sep: &str) -> String {
    exprs.iter().map(ScalarExpr::to_string).collect::<Vec<_>>().join(sep)
}

impl fmt::Display for ColumnOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.column, if self.desc { "desc" } else { "asc" })?;
        let default_nulls_last = !self.desc;
        if self.nulls_last != default_nulls_last {
            write!(f, " nulls_{}", if self.nulls_last { "last" } else { "first" })?;
        }
        Ok(())
    }
}

impl fmt::Display for AggregateExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = format!("{:?}", self.func).to_lowercase();
        write!(f, "{name}({}{})", if self.distinct { "distinct " } else { "" }, self.expr)
    }
}

fn binary_op(func: BinaryFunc) -> Option<&'static str> {
    Some(match func {
        BinaryFunc::Add => "+",
        BinaryFunc::Sub => "-",
        BinaryFunc::Mul => "*",
        BinaryFunc::Div => "/",
        BinaryFunc::Mod => "%",
        BinaryFunc::Eq => "=",
        BinaryFunc::NotEq => "!=",
        BinaryFunc::Lt => "<",
        BinaryFunc::Lte => "<=",
        BinaryFunc::Gt => ">",
        BinaryFunc::Gte => ">=",
        BinaryFunc::JsonGet => "->",
        BinaryFunc::JsonGetText => "->>",
        BinaryFunc::Concat => "||",
        BinaryFunc::Like => "LIKE",
        BinaryFunc::ILike => "ILIKE",
        BinaryFunc::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
        _ => return None,
    })
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Column(i) => write!(f, "#{i}"),
            ScalarExpr::Literal(d, ty) => match (d, ty) {
                (Datum::Null, _) | (Datum::Bool(_), _) | (Datum::Int(_), _) => write!(f, "{}", literal_text(d)),
                (Datum::Float(_), ScalarType::Float64) => write!(f, "{}", literal_text(d)),
                _ => write!(f, "{}::{}", literal_text(d), ty.name()),
            },
            ScalarExpr::CallUnary { func, expr } => match func {
                UnaryFunc::Not => write!(f, "NOT({expr})"),
                UnaryFunc::IsNull => write!(f, "({expr}) IS NULL"),
                UnaryFunc::IsTrue => write!(f, "({expr}) IS TRUE"),
                UnaryFunc::IsFalse => write!(f, "({expr}) IS FALSE"),
                UnaryFunc::Neg => write!(f, "-({expr})"),
                UnaryFunc::Cast(ty) => write!(f, "({expr})::{}", ty.name()),
                other => write!(f, "{}({expr})", format!("{other:?}").to_lowercase()),
            },
            ScalarExpr::CallBinary { func, left, right } => match binary_op(*func) {
                Some(op) => write!(f, "({left} {op} {right})"),
                None => write!(f, "{}({left}, {right})", format!("{func:?}").to_lowercase()),
            },
            ScalarExpr::CallVariadic { func, exprs } => {
                write!(f, "{}({})", format!("{func:?}").to_lowercase(), list(exprs))
            }
            ScalarExpr::If { cond, then, els } => write!(f, "CASE WHEN {cond} THEN {then} ELSE {els} END"),
            ScalarExpr::MzNow => write!(f, "mz_now()"),
        }
    }
}
