//! A from-scratch evaluator of plans, following `crates/plan`'s documented semantics. Rows whose
//! scalar evaluation fails are dropped, as the engine does.

use std::collections::{BTreeMap, HashMap};

use viewcast_plan::relation::compare_rows;
use viewcast_plan::{GlobalId, JoinKind, RelExpr};
use viewcast_repr::{consolidate_updates, Datum, Diff, Row};

pub type Contents = Vec<(Row, Diff)>;

pub fn evaluate(plan: &RelExpr, db: &HashMap<GlobalId, Contents>) -> Contents {
    let mut out = eval(plan, db);
    consolidate_updates(&mut out);
    out
}

fn cons(mut v: Contents) -> Contents {
    consolidate_updates(&mut v);
    v
}

fn concat(a: &Row, b: &Row) -> Row {
    let mut d = a.0.clone();
    d.extend(b.0.iter().cloned());
    Row::new(d)
}

fn eval(plan: &RelExpr, db: &HashMap<GlobalId, Contents>) -> Contents {
    match plan {
        RelExpr::Get { id, .. } => db.get(id).cloned().unwrap_or_default(),
        RelExpr::Constant { rows, .. } => rows.clone(),
        RelExpr::Map { input, scalars } => eval(input, db)
            .into_iter()
            .filter_map(|(row, d)| {
                let mut datums = row.0;
                for s in scalars {
                    let v = s.eval(&datums).ok()?;
                    datums.push(v);
                }
                Some((Row::new(datums), d))
            })
            .collect(),
        RelExpr::Filter { input, predicates } => eval(input, db)
            .into_iter()
            .filter(|(row, _)| predicates.iter().all(|p| matches!(p.eval(row.datums()), Ok(Datum::Bool(true)))))
            .collect(),
        RelExpr::Project { input, outputs } => eval(input, db)
            .into_iter()
            .map(|(row, d)| (Row::new(outputs.iter().map(|&i| row.get(i).clone()).collect()), d))
            .collect(),
        RelExpr::Reduce { input, group_key, aggregates } => {
            let rows = cons(eval(input, db));
            let mut groups: BTreeMap<Row, Vec<(Vec<Datum>, Diff)>> = BTreeMap::new();
            for (row, d) in rows {
                if d <= 0 {
                    continue;
                }
                let Ok(vals) = aggregates.iter().map(|a| a.expr.eval(row.datums())).collect::<Result<Vec<_>, _>>()
                else {
                    continue;
                };
                let key = Row::new(group_key.iter().map(|&i| row.get(i).clone()).collect());
                groups.entry(key).or_default().push((vals, d));
            }
            if group_key.is_empty() && groups.is_empty() {
                return vec![(Row::new(aggregates.iter().map(|a| a.func.default_value()).collect()), 1)];
            }
            let mut out = Vec::new();
            'group: for (key, members) in groups {
                let mut datums = key.0;
                for (i, a) in aggregates.iter().enumerate() {
                    let r = if a.distinct {
                        let mut vals: Vec<&Datum> = members.iter().map(|(v, _)| &v[i]).collect();
                        vals.sort();
                        vals.dedup();
                        a.func.eval(vals.into_iter().map(|d| (d, 1)))
                    } else {
                        a.func.eval(members.iter().map(|(v, n)| (&v[i], *n)))
                    };
                    match r {
                        Ok(d) => datums.push(d),
                        Err(_) => continue 'group,
                    }
                }
                out.push((Row::new(datums), 1));
            }
            out
        }
        RelExpr::TopK { input, group_key, order_key, limit, offset } => {
            let rows = cons(eval(input, db));
            let mut groups: BTreeMap<Row, Vec<Row>> = BTreeMap::new();
            for (row, d) in rows {
                let key = Row::new(group_key.iter().map(|&i| row.get(i).clone()).collect());
                for _ in 0..d.max(0) {
                    groups.entry(key.clone()).or_default().push(row.clone());
                }
            }
            let mut out = Vec::new();
            for (_, mut members) in groups {
                members.sort_by(|a, b| compare_rows(order_key, a, b));
                let end = limit.map(|l| offset + l).unwrap_or(usize::MAX);
                for row in members.into_iter().skip(*offset).take(end - offset) {
                    out.push((row, 1));
                }
            }
            out
        }
        RelExpr::Join { left, right, kind, equi, predicate } => {
            let (la, ra) = (left.arity(), right.arity());
            let l = cons(eval(left, db));
            let r = cons(eval(right, db));
            let matches = |x: &Row, y: &Row| -> bool {
                for (a, b) in equi {
                    let (p, q) = (x.get(*a), y.get(*b));
                    if p.is_null() || q.is_null() || p != q {
                        return false;
                    }
                }
                match predicate {
                    None => true,
                    Some(p) => matches!(p.eval(concat(x, y).datums()), Ok(Datum::Bool(true))),
                }
            };
            let mut out = Vec::new();
            let mut lmatched = vec![false; l.len()];
            let mut rmatched = vec![false; r.len()];
            for (i, (x, dx)) in l.iter().enumerate() {
                for (j, (y, dy)) in r.iter().enumerate() {
                    if matches(x, y) {
                        out.push((concat(x, y), dx * dy));
                        lmatched[i] = true;
                        rmatched[j] = true;
                    }
                }
            }
            if matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
                for (i, (x, dx)) in l.iter().enumerate() {
                    if !lmatched[i] {
                        out.push((concat(x, &RelExpr::null_row(ra)), *dx));
                    }
                }
            }
            if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
                for (j, (y, dy)) in r.iter().enumerate() {
                    if !rmatched[j] {
                        out.push((concat(&RelExpr::null_row(la), y), *dy));
                    }
                }
            }
            out
        }
        RelExpr::Union { inputs } => inputs.iter().flat_map(|i| eval(i, db)).collect(),
        RelExpr::Negate { input } => eval(input, db).into_iter().map(|(r, d)| (r, -d)).collect(),
        RelExpr::Distinct { input } => {
            cons(eval(input, db)).into_iter().filter(|(_, d)| *d > 0).map(|(r, _)| (r, 1)).collect()
        }
        RelExpr::Threshold { input } => cons(eval(input, db)).into_iter().filter(|(_, d)| *d > 0).collect(),
    }
}
