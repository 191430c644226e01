//! Temporal filters: `WHERE mz_now() <= ts + 60000`, Materialize's sliding windows.
//!
//! A *temporal predicate* is `mz_now() op e` with `op` one of `=, <, <=, >, >=` and `e` free of
//! `mz_now()` (the planner puts `mz_now()` on the left). The temporal predicates of one `Filter`
//! give each row a validity interval `[lower, upper)` of logical times at which it passes; the
//! engine renders an update `(row, t, d)` as `(row, max(t, lower), d)` and, when `upper` is finite,
//! `(row, upper, -d)`, dropping empty intervals. The reference interpreter instead replaces
//! `mz_now()` by one time and filters ([`RelExpr::bind_mz_now`]); both agree at every time.

use viewcast_repr::{Datum, Timestamp};

use crate::expr::{BinaryFunc, EvalError, ScalarExpr};
use crate::relation::RelExpr;

/// The logical times `[lower, upper)` at which a row passes its temporal predicates.
/// `upper == None` is unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub lower: Timestamp,
    pub upper: Option<Timestamp>,
}

impl Validity {
    /// Where an update at time `t` of a row valid over `self` takes effect, as `(time, sign)`: it
    /// enters at `max(t, lower)` (sign 1) and leaves at `upper` (sign -1). Empty when the interval
    /// ends at or before `t`.
    pub fn updates(self, t: Timestamp) -> impl Iterator<Item = (Timestamp, i64)> {
        let start = t.max(self.lower);
        let live = self.upper.is_none_or(|u| start < u);
        let enter = live.then_some((start, 1));
        let leave = if live { self.upper.map(|u| (u, -1)) } else { None };
        enter.into_iter().chain(leave)
    }
}

impl ScalarExpr {
    /// Whether `mz_now()` occurs anywhere in this expression.
    pub fn contains_mz_now(&self) -> bool {
        match self {
            ScalarExpr::MzNow => true,
            ScalarExpr::Column(_) | ScalarExpr::Literal(..) => false,
            ScalarExpr::CallUnary { expr, .. } => expr.contains_mz_now(),
            ScalarExpr::CallBinary { left, right, .. } => left.contains_mz_now() || right.contains_mz_now(),
            ScalarExpr::CallVariadic { exprs, .. } => exprs.iter().any(ScalarExpr::contains_mz_now),
            ScalarExpr::If { cond, then, els } => {
                cond.contains_mz_now() || then.contains_mz_now() || els.contains_mz_now()
            }
        }
    }

    /// `(op, e)` if this is the temporal predicate `mz_now() op e`.
    pub fn as_temporal(&self) -> Option<(BinaryFunc, &ScalarExpr)> {
        match self {
            ScalarExpr::CallBinary { func, left, right }
                if matches!(**left, ScalarExpr::MzNow)
                    && matches!(
                        func,
                        BinaryFunc::Eq | BinaryFunc::Lt | BinaryFunc::Lte | BinaryFunc::Gt | BinaryFunc::Gte
                    )
                    && !right.contains_mz_now() =>
            {
                Some((*func, right))
            }
            _ => None,
        }
    }
}

/// The validity interval of `row` under `predicates` (each a temporal predicate, see
/// [`ScalarExpr::as_temporal`]); `None` when no time passes them all. A NULL comparand never passes.
pub fn validity(predicates: &[ScalarExpr], row: &[Datum]) -> Result<Option<Validity>, EvalError> {
    let (mut lower, mut upper) = (0i128, i128::MAX);
    for p in predicates {
        let (op, e) = p.as_temporal().ok_or_else(|| EvalError::Other(format!("not a temporal predicate: {p}")))?;
        let (lo, up) = match e.eval(row)? {
            Datum::Null => return Ok(None),
            Datum::Int(v) => int_bounds(op, v as i128),
            Datum::Float(f) => float_bounds(op, f.0),
            other => return Err(EvalError::Other(format!("cannot compare mz_now() with {other}"))),
        };
        lower = lower.max(lo);
        upper = upper.min(up);
    }
    let lower = lower.max(0);
    if lower >= upper || lower > Timestamp::MAX as i128 {
        return Ok(None);
    }
    let upper = (upper < Timestamp::MAX as i128).then_some(upper as Timestamp);
    Ok(Some(Validity { lower: lower as Timestamp, upper }))
}

/// `[lower, upper)` of the integer times `t` with `t op v`.
fn int_bounds(op: BinaryFunc, v: i128) -> (i128, i128) {
    match op {
        BinaryFunc::Eq => (v, v + 1),
        BinaryFunc::Lt => (i128::MIN, v),
        BinaryFunc::Lte => (i128::MIN, v + 1),
        BinaryFunc::Gt => (v + 1, i128::MAX),
        BinaryFunc::Gte => (v, i128::MAX),
        _ => unreachable!("as_temporal admits comparisons only"),
    }
}

/// As [`int_bounds`] for a float comparand, under SQL's float order (NaN above everything).
fn float_bounds(op: BinaryFunc, v: f64) -> (i128, i128) {
    const EMPTY: (i128, i128) = (1, 0);
    if v.is_nan() || v == f64::INFINITY {
        return match op {
            BinaryFunc::Lt | BinaryFunc::Lte => (i128::MIN, i128::MAX),
            _ => EMPTY,
        };
    }
    if v == f64::NEG_INFINITY {
        return match op {
            BinaryFunc::Gt | BinaryFunc::Gte => (i128::MIN, i128::MAX),
            _ => EMPTY,
        };
    }
    // `as` saturates: magnitudes beyond i128 clamp to its ends, still outside every timestamp.
    let (floor, ceil) = (v.floor() as i128, v.ceil() as i128);
    match op {
        BinaryFunc::Eq if floor != ceil => EMPTY,
        BinaryFunc::Eq => (floor, floor.saturating_add(1)),
        BinaryFunc::Lt => (i128::MIN, ceil),
        BinaryFunc::Lte => (i128::MIN, floor.saturating_add(1)),
        BinaryFunc::Gt => (floor.saturating_add(1), i128::MAX),
        BinaryFunc::Gte => (ceil, i128::MAX),
        _ => unreachable!("as_temporal admits comparisons only"),
    }
}

/// Where a maintained plan holds `mz_now()` other than as a temporal predicate of a `Filter`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported temporal predicate: mz_now() must be directly compared (=, <, <=, >, >=) to an expression not containing mz_now(), in a conjunction of WHERE or HAVING; found: {found}")]
pub struct TemporalError {
    pub found: String,
}

impl RelExpr {
    /// Whether `mz_now()` occurs anywhere in this plan.
    pub fn contains_mz_now(&self) -> bool {
        let mut found = false;
        self.visit_scalars(&mut |e| found |= e.contains_mz_now());
        found
    }

    /// Checks that every `mz_now()` is in a temporal predicate of a `Filter`, as the engine
    /// requires of a maintained plan.
    pub fn check_temporal(&self) -> Result<(), TemporalError> {
        let mut bad = None;
        self.visit(&mut |node| {
            let filter_preds = match node {
                RelExpr::Filter { predicates, .. } => Some(predicates),
                _ => None,
            };
            node.visit_own_scalars(&mut |e| {
                let ok = !e.contains_mz_now() || filter_preds.is_some() && e.as_temporal().is_some();
                if !ok && bad.is_none() {
                    bad = Some(TemporalError { found: e.to_string() });
                }
            });
        });
        bad.map_or(Ok(()), Err)
    }

    /// Replaces every `mz_now()` by the literal `ts`: the plan's meaning at logical time `ts`.
    pub fn bind_mz_now(&mut self, ts: Timestamp) {
        let now = ScalarExpr::Literal(Datum::Int(ts as i64), viewcast_repr::ScalarType::Int64);
        self.visit_scalars_mut(&mut |e| {
            e.visit_mut(&mut |s| {
                if matches!(s, ScalarExpr::MzNow) {
                    *s = now.clone();
                }
            })
        });
    }

    /// Calls `f` on every top-level scalar expression of every node.
    pub fn visit_scalars(&self, f: &mut impl FnMut(&ScalarExpr)) {
        self.visit(&mut |node| node.visit_own_scalars(f));
    }

    /// The scalar expressions held by this node itself (not its inputs).
    fn visit_own_scalars(&self, f: &mut impl FnMut(&ScalarExpr)) {
        match self {
            RelExpr::Map { scalars: es, .. } | RelExpr::Filter { predicates: es, .. } => es.iter().for_each(f),
            RelExpr::Reduce { aggregates, .. } => aggregates.iter().for_each(|a| f(&a.expr)),
            RelExpr::Join { predicate: Some(p), .. } => f(p),
            _ => {}
        }
    }

    /// Calls `f` on every top-level scalar expression of every node, mutably.
    pub fn visit_scalars_mut(&mut self, f: &mut impl FnMut(&mut ScalarExpr)) {
        match self {
            RelExpr::Get { .. } | RelExpr::Constant { .. } => {}
            RelExpr::Map { input, scalars: es } | RelExpr::Filter { input, predicates: es } => {
                es.iter_mut().for_each(&mut *f);
                input.visit_scalars_mut(f);
            }
            RelExpr::Reduce { input, aggregates, .. } => {
                aggregates.iter_mut().for_each(|a| f(&mut a.expr));
                input.visit_scalars_mut(f);
            }
            RelExpr::Join { left, right, predicate, .. } => {
                if let Some(p) = predicate {
                    f(p);
                }
                left.visit_scalars_mut(f);
                right.visit_scalars_mut(f);
            }
            RelExpr::Project { input, .. }
            | RelExpr::TopK { input, .. }
            | RelExpr::Negate { input }
            | RelExpr::Distinct { input }
            | RelExpr::Threshold { input } => input.visit_scalars_mut(f),
            RelExpr::Union { inputs } => inputs.iter_mut().for_each(|i| i.visit_scalars_mut(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_repr::ScalarType;

    fn pred(op: BinaryFunc, v: Datum) -> ScalarExpr {
        let ty = if matches!(v, Datum::Float(_)) { ScalarType::Float64 } else { ScalarType::Int64 };
        ScalarExpr::MzNow.call_binary(op, ScalarExpr::literal(v, ty))
    }

    /// The interval agrees with evaluating the predicates at every time near the bounds.
    #[test]
    fn validity_matches_pointwise_evaluation() {
        let ops = [BinaryFunc::Eq, BinaryFunc::Lt, BinaryFunc::Lte, BinaryFunc::Gt, BinaryFunc::Gte];
        let values = [
            Datum::Int(5),
            Datum::Int(0),
            Datum::Int(-3),
            Datum::float(5.5),
            Datum::float(7.0),
            Datum::float(-0.5),
            Datum::float(f64::NAN),
            Datum::float(f64::INFINITY),
            Datum::float(f64::NEG_INFINITY),
            Datum::Null,
        ];
        for &o1 in &ops {
            for v1 in &values {
                for &o2 in &ops {
                    for v2 in &values {
                        let preds = vec![pred(o1, v1.clone()), pred(o2, v2.clone())];
                        let v = validity(&preds, &[]).unwrap();
                        for t in 0u64..12 {
                            let mut bound = RelExpr::Filter {
                                input: Box::new(RelExpr::Constant { rows: vec![], arity: 0 }),
                                predicates: preds.clone(),
                            };
                            bound.bind_mz_now(t);
                            let RelExpr::Filter { predicates, .. } = &bound else { unreachable!() };
                            let expected = predicates.iter().all(|p| p.is_true(&[]).unwrap());
                            let got = v.is_some_and(|v| v.lower <= t && v.upper.is_none_or(|u| t < u));
                            assert_eq!(got, expected, "{o1:?} {v1} and {o2:?} {v2} at {t}: {v:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn updates_start_at_the_later_of_time_and_lower() {
        let v = Validity { lower: 10, upper: Some(20) };
        assert_eq!(v.updates(5).collect::<Vec<_>>(), vec![(10, 1), (20, -1)]);
        assert_eq!(v.updates(15).collect::<Vec<_>>(), vec![(15, 1), (20, -1)]);
        assert!(v.updates(20).next().is_none());
        assert_eq!(Validity { lower: 0, upper: None }.updates(3).collect::<Vec<_>>(), vec![(3, 1)]);
    }

    #[test]
    fn check_temporal_rejects_mz_now_outside_filters() {
        let get = RelExpr::Get { id: 1, arity: 1 };
        let ok =
            RelExpr::Filter { input: Box::new(get.clone()), predicates: vec![pred(BinaryFunc::Lte, Datum::Int(3))] };
        assert!(ok.check_temporal().is_ok());
        let in_map = RelExpr::Map { input: Box::new(get.clone()), scalars: vec![ScalarExpr::MzNow] };
        assert!(in_map.check_temporal().is_err());
        let or = RelExpr::Filter {
            input: Box::new(get),
            predicates: vec![ScalarExpr::CallVariadic {
                func: crate::VariadicFunc::Or,
                exprs: vec![
                    pred(BinaryFunc::Lte, Datum::Int(3)),
                    ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool),
                ],
            }],
        };
        assert!(or.check_temporal().is_err());
    }
}
