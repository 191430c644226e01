//! `mz_now()`: temporal filters in maintained queries, the query's timestamp in one-shot ones.
//!
//! In a maintained query (a view, a subscription) `mz_now()` may appear only as one side of a
//! comparison (`=, <, <=, >, >=`, or `mz_now() BETWEEN a AND b`) whose other side does not contain
//! it, as a top-level conjunct of a WHERE or HAVING clause, as Materialize requires of materialized
//! views. Such conjuncts are marked before the clause is bound ([`Planner::mark_temporal`]); every
//! other `mz_now()` is an error at its position. The comparand is an integer or numeric (ms since
//! the epoch), or a timestamp, timestamptz or date converted to ms; the bound predicate is always
//! `mz_now() op e` ([`viewcast_plan::temporal`]). In a one-shot query `mz_now()` is a bigint that the
//! coordinator replaces by the query's timestamp.

use sqlparser::ast::{self, BinaryOperator, Expr};
use viewcast_plan::{BinaryFunc, ScalarExpr, UnaryFunc, VariadicFunc};
use viewcast_repr::{Datum, ScalarType};

use super::query::Rel;
use super::scalar::{Ecx, Lit, Typed};
use super::Planner;
use crate::error::{code, SqlError};
use crate::parser::normalize_ident;

/// Whether `e` is a call of `mz_now()` (through parentheses).
pub(crate) fn is_mz_now(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_mz_now(inner),
        Expr::Function(f) => {
            f.name.0.len() == 1
                && matches!(&f.name.0[0], ast::ObjectNamePart::Identifier(i) if normalize_ident(i) == "mz_now")
        }
        _ => false,
    }
}

/// The comparison `mz_now() op x` means, written `x op' mz_now()`.
fn flip(op: BinaryFunc) -> BinaryFunc {
    match op {
        BinaryFunc::Lt => BinaryFunc::Gt,
        BinaryFunc::Lte => BinaryFunc::Gte,
        BinaryFunc::Gt => BinaryFunc::Lt,
        BinaryFunc::Gte => BinaryFunc::Lte,
        other => other,
    }
}

fn comparison(op: &BinaryOperator) -> Option<BinaryFunc> {
    Some(match op {
        BinaryOperator::Eq => BinaryFunc::Eq,
        BinaryOperator::Lt => BinaryFunc::Lt,
        BinaryOperator::LtEq => BinaryFunc::Lte,
        BinaryOperator::Gt => BinaryFunc::Gt,
        BinaryOperator::GtEq => BinaryFunc::Gte,
        _ => return None,
    })
}

impl Planner<'_> {
    /// Marks the temporal predicates among the top-level conjuncts of a WHERE or HAVING clause:
    /// there, and only there, a maintained query may compare `mz_now()`.
    pub(crate) fn mark_temporal(&self, clause: &Expr) {
        match clause {
            Expr::Nested(inner) => self.mark_temporal(inner),
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                self.mark_temporal(left);
                self.mark_temporal(right);
            }
            Expr::BinaryOp { left, op, right } if comparison(op).is_some() && (is_mz_now(left) || is_mz_now(right)) => {
                self.temporal_sites.borrow_mut().insert(clause as *const Expr);
            }
            Expr::Between { expr, negated: false, .. } if is_mz_now(expr) => {
                self.temporal_sites.borrow_mut().insert(clause as *const Expr);
            }
            _ => {}
        }
    }

    /// Whether `e` (a comparison with `mz_now()`) may be bound as a temporal predicate here.
    /// (A nested `mz_now()` in its comparand is refused when that is bound.)
    fn temporal_allowed(&self, e: &Expr) -> bool {
        *self.one_shot.borrow() || self.temporal_sites.borrow().contains(&(e as *const Expr))
    }

    /// `mz_now()` where it is not one side of an admitted comparison.
    pub(crate) fn bind_mz_now_call(&self, ecx: &Ecx, pos: Option<usize>) -> Result<Typed, SqlError> {
        if *self.one_shot.borrow() {
            return Ok(Typed::new(ScalarExpr::MzNow, ScalarType::Int64, false));
        }
        let message = match ecx.clause {
            "WHERE" | "HAVING" => format!(
                "unsupported temporal predicate in {}: mz_now() must be directly compared (=, <, <=, >, >=, \
                 BETWEEN) to an expression not containing mz_now(), and combined with other conditions only \
                 by AND",
                ecx.clause
            ),
            clause => format!(
                "cannot materialize call to mz_now() in {clause}: a maintained view may use mz_now() only in \
                 temporal filters (WHERE or HAVING)"
            ),
        };
        Err(SqlError::new(code::FEATURE_NOT_SUPPORTED, message).at(pos))
    }

    /// Binds `left op right` when one side is `mz_now()`; `None` when neither is.
    pub(crate) fn bind_temporal_comparison(
        &self,
        ecx: &Ecx,
        rel: &mut Rel,
        whole: &Expr,
        left: &Expr,
        op: &BinaryOperator,
        right: &Expr,
    ) -> Option<Result<Typed, SqlError>> {
        let (now_side, other, op) = match (is_mz_now(left), is_mz_now(right)) {
            (true, false) => (left, right, comparison(op).map(|f| (f, op))),
            (false, true) => (right, left, comparison(op).map(|f| (flip(f), op))),
            _ => return None,
        };
        let pos = self.pos_of(now_side);
        let Some((func, _)) = op else {
            if *self.one_shot.borrow() {
                return None; // `mz_now() <> x` and arithmetic are ordinary bigint operations once.
            }
            return Some(self.bind_mz_now_call(ecx, pos));
        };
        if !self.temporal_allowed(whole) {
            return Some(self.bind_mz_now_call(ecx, pos));
        }
        Some(
            self.temporal_comparand(ecx, rel, other)
                .map(|(e, nullable)| Typed::new(ScalarExpr::MzNow.call_binary(func, e), ScalarType::Bool, nullable)),
        )
    }

    /// Binds `whole`, a `BETWEEN`, as two temporal predicates if it is `mz_now() BETWEEN low AND
    /// high`; `None` if its operand is not `mz_now()`.
    pub(crate) fn bind_temporal_between(
        &self,
        ecx: &Ecx,
        rel: &mut Rel,
        whole: &Expr,
    ) -> Option<Result<Typed, SqlError>> {
        let Expr::Between { expr, negated, low, high } = whole else {
            return None;
        };
        if !is_mz_now(expr) {
            return None;
        }
        if *negated || !self.temporal_allowed(whole) {
            if *self.one_shot.borrow() {
                return None;
            }
            return Some(self.bind_mz_now_call(ecx, self.pos_of(&**expr)));
        }
        let bound = (|| {
            let (lo, lo_null) = self.temporal_comparand(ecx, rel, low)?;
            let (hi, hi_null) = self.temporal_comparand(ecx, rel, high)?;
            let exprs = vec![
                ScalarExpr::MzNow.call_binary(BinaryFunc::Gte, lo),
                ScalarExpr::MzNow.call_binary(BinaryFunc::Lte, hi),
            ];
            Ok(Typed::new(
                ScalarExpr::CallVariadic { func: VariadicFunc::And, exprs },
                ScalarType::Bool,
                lo_null || hi_null,
            ))
        })();
        Some(bound)
    }

    /// The other side of a comparison with `mz_now()`, in milliseconds since the epoch, and
    /// whether it may be NULL.
    fn temporal_comparand(&self, ecx: &Ecx, rel: &mut Rel, e: &Expr) -> Result<(ScalarExpr, bool), SqlError> {
        let pos = self.pos_of(e);
        let t = self.bind(ecx, rel, e)?;
        let nullable = t.ty.nullable;
        match t.lit {
            Lit::Null => return Ok((ScalarExpr::literal(Datum::Null, ScalarType::Int64), true)),
            Lit::String => {
                // An untyped literal is read as mz_timestamp is: a number of ms, or a timestamp.
                let text = match t.expr.eval(&[]) {
                    Ok(Datum::Text(s)) => s.to_string(),
                    _ => String::new(),
                };
                if let Ok(ms) = text.trim().parse::<i64>() {
                    return Ok((ScalarExpr::literal(Datum::Int(ms), ScalarType::Int64), false));
                }
                let ts = self.coerce(t, ScalarType::TimestampTz, pos)?;
                let ms = ts
                    .call_unary(UnaryFunc::EpochMillis)
                    .eval(&[])
                    .map_err(|e| SqlError::new(code::INVALID_TEXT_REPRESENTATION, e.to_string()).at(pos))?;
                return Ok((ScalarExpr::literal(ms, ScalarType::Int64), false));
            }
            Lit::Typed => {}
        }
        let ty = t.ty.scalar;
        if ty.is_numeric() {
            Ok((t.expr, nullable))
        } else if matches!(ty, ScalarType::Timestamp | ScalarType::TimestampTz | ScalarType::Date) {
            Ok((t.expr.call_unary(UnaryFunc::EpochMillis), nullable))
        } else {
            Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!(
                    "operator does not exist: mz_timestamp and {}: mz_now() compares with numbers (ms) and timestamps",
                    ty.name()
                ),
            )
            .at(pos))
        }
    }
}

/// The backstop for maintained plans: a temporal predicate the rewrites moved out of a filter.
pub(crate) fn check_maintained(plan: &viewcast_plan::RelExpr) -> Result<(), SqlError> {
    plan.check_temporal().map_err(|e| SqlError::new(code::FEATURE_NOT_SUPPORTED, e.to_string()))
}
