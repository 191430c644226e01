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

/// Evaluates `expr` as of logical time `ts`: `mz_now()` is `ts`.
pub fn evaluate_at(
    expr: &RelExpr,
    ts: viewcast_repr::Timestamp,
    get: &dyn Fn(GlobalId) -> Result<Vec<(Row, Diff)>, EvalError>,
) -> Result<Vec<(Row, Diff)>, EvalError> {
    if !expr.contains_mz_now() {
        return evaluate(expr, get);
    }
    let mut bound = expr.clone();
    bound.bind_mz_now(ts);
    evaluate(&bound, get)
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
        RelExpr::Distinct { input } => {
            eval(input, get)?.into_iter().filter(|(_, d)| *d > 0).map(|(r, _)| (r, 1)).collect()
        }
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

#[cfg(test)]
mod tests {
    use viewcast_repr::ScalarType;

    use super::*;
    use crate::expr::{AggregateFunc, BinaryFunc};

    fn row(v: &[i64]) -> Row {
        Row::new(v.iter().map(|&i| Datum::Int(i)).collect())
    }

    fn constant(rows: &[(&[i64], Diff)], arity: usize) -> RelExpr {
        RelExpr::Constant { rows: rows.iter().map(|(r, d)| (row(r), *d)).collect(), arity }
    }

    fn eval(e: &RelExpr) -> Collection {
        evaluate(e, &|id| Err(EvalError::Other(format!("no item {id}")))).unwrap()
    }

    #[test]
    fn reduce_global_on_empty_input_has_one_row() {
        let empty = constant(&[], 1);
        let e = RelExpr::Reduce {
            input: Box::new(empty),
            group_key: vec![],
            aggregates: vec![
                AggregateExpr { func: AggregateFunc::Count, expr: ScalarExpr::Column(0), distinct: false },
                AggregateExpr { func: AggregateFunc::SumInt, expr: ScalarExpr::Column(0), distinct: false },
            ],
        };
        assert_eq!(eval(&e), vec![(Row::new(vec![Datum::Int(0), Datum::Null]), 1)]);
    }

    #[test]
    fn reduce_groups_with_distinct_and_multiplicity() {
        let input = constant(&[(&[1, 5], 2), (&[1, 5], 1), (&[1, 6], 1), (&[2, 7], 1)], 2);
        let agg = |func, distinct| AggregateExpr { func, expr: ScalarExpr::Column(1), distinct };
        let e = RelExpr::Reduce {
            input: Box::new(input),
            group_key: vec![0],
            aggregates: vec![
                agg(AggregateFunc::Count, false),
                agg(AggregateFunc::Count, true),
                agg(AggregateFunc::SumInt, false),
            ],
        };
        assert_eq!(eval(&e), vec![(row(&[1, 4, 2, 21]), 1), (row(&[2, 1, 1, 7]), 1)]);
    }

    #[test]
    fn top_k_per_group_with_ties_and_copies() {
        let input = constant(&[(&[1, 3], 2), (&[1, 9], 1), (&[1, 5], 1), (&[2, 1], 1)], 2);
        let e = RelExpr::TopK {
            input: Box::new(input),
            group_key: vec![0],
            order_key: vec![ColumnOrder::desc(1)],
            limit: Some(2),
            offset: 1,
        };
        // Group 1 ranked: 9, 5, 3, 3 -> skip 9, take 5 and one 3. Group 2: only one row, skipped.
        assert_eq!(eval(&e), vec![(row(&[1, 3]), 1), (row(&[1, 5]), 1)]);
    }

    #[test]
    fn outer_joins_pad_and_null_keys_never_match() {
        let l = RelExpr::Constant {
            rows: vec![(row(&[1]), 1), (row(&[2]), 1), (Row::new(vec![Datum::Null]), 1)],
            arity: 1,
        };
        let r = RelExpr::Constant {
            rows: vec![(row(&[1, 10]), 2), (row(&[3, 30]), 1), (Row::new(vec![Datum::Null, Datum::Int(0)]), 1)],
            arity: 2,
        };
        let join = |kind| RelExpr::Join {
            left: Box::new(l.clone()),
            right: Box::new(r.clone()),
            kind,
            equi: vec![(0, 0)],
            predicate: None,
        };
        let n = Datum::Null;
        let i = Datum::Int;
        let full = eval(&join(JoinKind::FullOuter));
        let want = vec![
            (Row::new(vec![n.clone(), n.clone(), i(0)]), 1),
            (Row::new(vec![n.clone(), i(3), i(30)]), 1),
            (Row::new(vec![n.clone(), n.clone(), n.clone()]), 1),
            (Row::new(vec![i(1), i(1), i(10)]), 2),
            (Row::new(vec![i(2), n.clone(), n.clone()]), 1),
        ];
        let mut want = want;
        consolidate_updates(&mut want);
        assert_eq!(full, want);
        let inner = eval(&join(JoinKind::Inner));
        assert_eq!(inner, vec![(Row::new(vec![i(1), i(1), i(10)]), 2)]);
        // A predicate that rejects every match turns matches into padded rows for outer joins.
        let never =
            ScalarExpr::Column(0).call_binary(BinaryFunc::Gt, ScalarExpr::literal(Datum::Int(100), ScalarType::Int64));
        let left = RelExpr::Join {
            left: Box::new(l.clone()),
            right: Box::new(r.clone()),
            kind: JoinKind::LeftOuter,
            equi: vec![(0, 0)],
            predicate: Some(never),
        };
        assert_eq!(eval(&left).len(), 3);
    }

    #[test]
    fn set_operators_follow_multiset_semantics() {
        let a = constant(&[(&[1], 3), (&[2], 1)], 1);
        let b = constant(&[(&[1], 1), (&[3], 2)], 1);
        let except_all = RelExpr::Threshold {
            input: Box::new(RelExpr::Union { inputs: vec![a.clone(), RelExpr::Negate { input: Box::new(b.clone()) }] }),
        };
        assert_eq!(eval(&except_all), vec![(row(&[1]), 2), (row(&[2]), 1)]);
        assert_eq!(eval(&RelExpr::Distinct { input: Box::new(a) }), vec![(row(&[1]), 1), (row(&[2]), 1)]);
    }

    #[test]
    fn map_filter_project() {
        let input = constant(&[(&[1, 2], 1), (&[3, 4], 1)], 2);
        let sum = ScalarExpr::Column(0).call_binary(BinaryFunc::Add, ScalarExpr::Column(1));
        let doubled =
            ScalarExpr::Column(2).call_binary(BinaryFunc::Mul, ScalarExpr::literal(Datum::Int(2), ScalarType::Int32));
        let e = RelExpr::Project {
            input: Box::new(RelExpr::Filter {
                input: Box::new(RelExpr::Map { input: Box::new(input), scalars: vec![sum, doubled] }),
                predicates: vec![ScalarExpr::Column(2)
                    .call_binary(BinaryFunc::Gt, ScalarExpr::literal(Datum::Int(3), ScalarType::Int32))],
            }),
            outputs: vec![3, 3],
        };
        assert_eq!(eval(&e), vec![(row(&[14, 14]), 1)]);
    }
}
