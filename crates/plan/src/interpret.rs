//! Evaluates a [`RelExpr`] from scratch over given contents of the catalog items it reads.
//!
//! This is the meaning of a plan written as directly as possible: it answers one-shot `SELECT`s
//! and is the oracle the incremental engine is tested against. Every operator returns a
//! consolidated collection (sorted by row, no zero diffs). Equi-joins hash the smaller-effort side;
//! nothing is quadratic except the cross product a plan explicitly asks for.

use std::collections::{BTreeMap, HashMap};

use viewcast_repr::{consolidate_updates, Datum, Diff, Row};

use crate::expr::{AggregateExpr, EvalError, ScalarExpr};
use crate::relation::{compare_rows, ColumnOrder, GlobalId, JoinKind, RelExpr};

/// A consolidated collection: rows with non-zero multiplicities, sorted by row.
pub type Collection = Vec<(Row, Diff)>;

/// Evaluates `expr`, reading catalog items through `get`.
pub fn evaluate(
    expr: &RelExpr,
    get: &dyn Fn(GlobalId) -> Result<Vec<(Row, Diff)>, EvalError>,
) -> Result<Vec<(Row, Diff)>, EvalError> {
    let mut out = eval(expr, get)?;
    consolidate_updates(&mut out);
    Ok(out)
}

fn consolidated(mut v: Collection) -> Collection {
    consolidate_updates(&mut v);
    v
}

fn eval(expr: &RelExpr, get: &dyn Fn(GlobalId) -> Result<Collection, EvalError>) -> Result<Collection, EvalError> {
    Ok(match expr {
        RelExpr::Get { id, arity } => {
            let rows = get(*id)?;
            if let Some((row, _)) = rows.iter().find(|(r, _)| r.len() != *arity) {
                return Err(EvalError::Other(format!(
                    "item {id} has a row of arity {} where {arity} was expected",
                    row.len()
                )));
            }
            consolidated(rows)
        }
        RelExpr::Constant { rows, .. } => consolidated(rows.clone()),
        RelExpr::Map { input, scalars } => {
            let mut out = Vec::new();
            for (row, diff) in eval(input, get)? {
                let mut datums = row.0;
                for s in scalars {
                    let d = s.eval(&datums)?;
                    datums.push(d);
                }
                out.push((Row(datums), diff));
            }
            consolidated(out)
        }
        RelExpr::Filter { input, predicates } => {
            let mut out = Vec::new();
            for (row, diff) in eval(input, get)? {
                if passes(predicates, row.datums())? {
                    out.push((row, diff));
                }
            }
            out
        }
        RelExpr::Project { input, outputs } => consolidated(
            eval(input, get)?
                .into_iter()
                .map(|(row, diff)| (Row(outputs.iter().map(|&i| row.get(i).clone()).collect()), diff))
                .collect(),
        ),
        RelExpr::Reduce { input, group_key, aggregates } => reduce(eval(input, get)?, group_key, aggregates)?,
        RelExpr::TopK { input, group_key, order_key, limit, offset } => {
            top_k(eval(input, get)?, group_key, order_key, *limit, *offset)
        }
        RelExpr::Join { left, right, kind, equi, predicate } => {
            join(eval(left, get)?, eval(right, get)?, left.arity(), right.arity(), *kind, equi, predicate.as_ref())?
        }
        RelExpr::Union { inputs } => {
            let mut out = Vec::new();
            for i in inputs {
                out.extend(eval(i, get)?);
            }
            consolidated(out)
        }
        RelExpr::Negate { input } => eval(input, get)?.into_iter().map(|(r, d)| (r, -d)).collect(),
        RelExpr::Distinct { input } => eval(input, get)?.into_iter().filter(|(_, d)| *d > 0).map(|(r, _)| (r, 1)).collect(),
        RelExpr::Threshold { input } => eval(input, get)?.into_iter().filter(|(_, d)| *d > 0).collect(),
    })
}

fn passes(predicates: &[ScalarExpr], row: &[Datum]) -> Result<bool, EvalError> {
    for p in predicates {
        if !p.is_true(row)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn key_of(row: &Row, cols: &[usize]) -> Vec<Datum> {
    cols.iter().map(|&c| row.get(c).clone()).collect()
}

/// Groups a consolidated input by key. A group containing rows with negative multiplicity is not a
/// multiset, so aggregating it is an error rather than a guess.
fn groups(input: Collection, group_key: &[usize]) -> Result<BTreeMap<Vec<Datum>, Collection>, EvalError> {
    let mut groups: BTreeMap<Vec<Datum>, Collection> = BTreeMap::new();
    for (row, diff) in input {
        if diff < 0 {
            return Err(EvalError::Other(format!("negative multiplicity {diff} for row {row:?} in a grouped input")));
        }
        groups.entry(key_of(&row, group_key)).or_default().push((row, diff));
    }
    Ok(groups)
}

fn reduce(input: Collection, group_key: &[usize], aggregates: &[AggregateExpr]) -> Result<Collection, EvalError> {
    let mut groups = groups(input, group_key)?;
    if group_key.is_empty() && groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, rows) in groups {
        let mut datums = key;
        for agg in aggregates {
            let mut values: Collection = Vec::with_capacity(rows.len());
            for (row, diff) in &rows {
                values.push((Row(vec![agg.expr.eval(row.datums())?]), *diff));
            }
            consolidate_updates(&mut values);
            if agg.distinct {
                values.iter_mut().for_each(|(_, d)| *d = 1);
            }
            datums.push(agg.func.eval(values.iter().map(|(r, d)| (r.get(0), *d)))?);
        }
        out.push((Row(datums), 1));
    }
    Ok(consolidated(out))
}

fn top_k(
    input: Collection,
    group_key: &[usize],
    order_key: &[ColumnOrder],
    limit: Option<usize>,
    offset: usize,
) -> Collection {
    let mut groups: BTreeMap<Vec<Datum>, Collection> = BTreeMap::new();
    for (row, diff) in input {
        if diff > 0 {
            groups.entry(key_of(&row, group_key)).or_default().push((row, diff));
        }
    }
    let mut out = Vec::new();
    for (_, mut rows) in groups {
        rows.sort_by(|a, b| compare_rows(order_key, &a.0, &b.0));
        // Each copy of a row holds its own rank; take copies `offset .. offset + limit`.
        let (mut skip, mut take) = (offset as i64, limit.map(|l| l as i64).unwrap_or(i64::MAX));
        for (row, diff) in rows {
            if take == 0 {
                break;
            }
            let skipped = diff.min(skip);
            skip -= skipped;
            let kept = (diff - skipped).min(take);
            take -= kept;
            if kept > 0 {
                out.push((row, kept));
            }
        }
    }
    consolidated(out)
}

fn concat(a: &Row, b: &Row) -> Row {
    Row(a.datums().iter().chain(b.datums()).cloned().collect())
}

fn join(
    left: Collection,
    right: Collection,
    left_arity: usize,
    right_arity: usize,
    kind: JoinKind,
    equi: &[(usize, usize)],
    predicate: Option<&ScalarExpr>,
) -> Result<Collection, EvalError> {
    let (lcols, rcols): (Vec<usize>, Vec<usize>) = equi.iter().copied().unzip();
    // Rows whose key has a NULL never match; they still count as unmatched for outer joins.
    let mut index: HashMap<Vec<Datum>, Vec<usize>> = HashMap::new();
    for (i, (row, _)) in right.iter().enumerate() {
        let key = key_of(row, &rcols);
        if !key.iter().any(Datum::is_null) {
            index.entry(key).or_default().push(i);
        }
    }
    let mut right_matched = vec![false; right.len()];
    let mut out = Vec::new();
    for (lrow, ldiff) in &left {
        let key = key_of(lrow, &lcols);
        let mut matched = false;
        if !key.iter().any(Datum::is_null) {
            for &ri in index.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
                let (rrow, rdiff) = &right[ri];
                let row = concat(lrow, rrow);
                if let Some(p) = predicate {
                    if !p.is_true(row.datums())? {
                        continue;
                    }
                }
                matched = true;
                right_matched[ri] = true;
                out.push((row, ldiff * rdiff));
            }
        }
        if !matched && matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
            out.push((concat(lrow, &RelExpr::null_row(right_arity)), *ldiff));
        }
    }
    if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
        for ((rrow, rdiff), matched) in right.iter().zip(right_matched) {
            if !matched {
                out.push((concat(&RelExpr::null_row(left_arity), rrow), *rdiff));
            }
        }
    }
    Ok(consolidated(out))
}
