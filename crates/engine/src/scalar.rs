//! Scalar evaluation with borrowing fast paths for JSON extraction.
//!
//! Semantics are exactly [`ScalarExpr::eval`]'s; this module only avoids building intermediate
//! `jsonb` values when a chain of `->` with literal keys is read (`data->'length'->'new'`), the
//! shape every JSON source's view has. Anything else is delegated to the reference evaluator.

use viewcast_plan::expr::cast;
use viewcast_plan::{BinaryFunc, EvalError, ScalarExpr, UnaryFunc};
use viewcast_repr::{Datum, Json, JsonView, Jsonb, ScalarType};

/// A borrowed step along a JSON path.
enum JsonRef<'a> {
    /// Not a JSON path this module understands; use the reference evaluator.
    NotPath,
    /// SQL NULL (a missing key, a NULL document or key).
    Null,
    Value(Json<'a>),
}

fn json_ref<'a>(expr: &ScalarExpr, row: &'a [Datum]) -> JsonRef<'a> {
    match expr {
        ScalarExpr::Column(i) => match &row[*i] {
            Datum::Jsonb(j) => JsonRef::Value(j.json()),
            Datum::Null => JsonRef::Null,
            _ => JsonRef::NotPath,
        },
        ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, left, right } => {
            let ScalarExpr::Literal(key, _) = &**right else {
                return JsonRef::NotPath;
            };
            match json_ref(left, row) {
                JsonRef::Value(v) => lookup(v, key).map_or(JsonRef::Null, JsonRef::Value),
                other => other,
            }
        }
        // `jsonb::jsonb` is the identity.
        ScalarExpr::CallUnary { func: UnaryFunc::Cast(ScalarType::Jsonb), expr } => json_ref(expr, row),
        _ => JsonRef::NotPath,
    }
}

/// `v -> key` as the reference's `json_get`, in place. A NULL key yields NULL.
fn lookup<'a>(v: Json<'a>, key: &Datum) -> Option<Json<'a>> {
    match key {
        Datum::Text(k) => v.get(k),
        Datum::Int(i) => v.index(*i),
        _ => None,
    }
}

/// Evaluates `expr` over `row`, with the same result as `expr.eval(row)`.
pub(crate) fn eval(expr: &ScalarExpr, row: &[Datum]) -> Result<Datum, EvalError> {
    match expr {
        ScalarExpr::Column(i) => Ok(row[*i].clone()),
        ScalarExpr::Literal(d, _) => Ok(d.clone()),
        ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, .. } => match json_ref(expr, row) {
            JsonRef::Value(v) => Ok(Datum::Jsonb(Jsonb::from(v))),
            JsonRef::Null => Ok(Datum::Null),
            JsonRef::NotPath => expr.eval(row),
        },
        ScalarExpr::CallBinary { func: BinaryFunc::JsonGetText, left, right } => {
            let ScalarExpr::Literal(key, _) = &**right else {
                return expr.eval(row);
            };
            match json_ref(left, row) {
                JsonRef::Value(v) => Ok(match lookup(v, key).and_then(Json::text) {
                    None => Datum::Null,
                    Some(text) => Datum::text(&text),
                }),
                JsonRef::Null => Ok(Datum::Null),
                JsonRef::NotPath => expr.eval(row),
            }
        }
        ScalarExpr::CallBinary { func: func @ (BinaryFunc::Add | BinaryFunc::Sub), left, right } => {
            let (l, r) = (eval(left, row)?, eval(right, row)?);
            match (&l, &r) {
                (Datum::Null, _) | (_, Datum::Null) => Ok(Datum::Null),
                (Datum::Int(x), Datum::Int(y)) => {
                    let v = if *func == BinaryFunc::Add { x.checked_add(*y) } else { x.checked_sub(*y) };
                    v.map(Datum::Int).ok_or_else(|| EvalError::OutOfRange("bigint".into()))
                }
                _ => ScalarExpr::CallBinary {
                    func: *func,
                    left: Box::new(ScalarExpr::Literal(l, ScalarType::Int64)),
                    right: Box::new(ScalarExpr::Literal(r, ScalarType::Int64)),
                }
                .eval(&[]),
            }
        }
        ScalarExpr::CallUnary { func: UnaryFunc::Cast(to), expr: inner } => {
            if let ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, .. } = &**inner {
                match json_ref(inner, row) {
                    JsonRef::Null => return Ok(Datum::Null),
                    JsonRef::Value(v) => {
                        if let Some(d) = cast_json_leaf(v, *to) {
                            return d;
                        }
                        return cast(Datum::Jsonb(Jsonb::from(v)), *to);
                    }
                    JsonRef::NotPath => return expr.eval(row),
                }
            }
            let d = eval(inner, row)?;
            if d.is_null() {
                Ok(Datum::Null)
            } else {
                cast(d, *to)
            }
        }
        _ => expr.eval(row),
    }
}

/// The common casts of a JSON leaf, exactly as the reference `cast_json` computes them; `None`
/// for the cases left to the reference.
fn cast_json_leaf(v: Json<'_>, to: ScalarType) -> Option<Result<Datum, EvalError>> {
    match (v.view(), to) {
        (JsonView::Null, ScalarType::Text) => None,
        (JsonView::Null, _) => Some(Ok(Datum::Null)),
        (JsonView::Bool(b), ScalarType::Bool) => Some(Ok(Datum::Bool(b))),
        (JsonView::Number(n), ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric) => {
            Some(cast(Datum::float(n.as_f64()), to))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_repr::ScalarType;

    fn lit(s: &str) -> ScalarExpr {
        ScalarExpr::literal(Datum::text(s), ScalarType::Text)
    }

    #[test]
    fn fast_paths_agree_with_reference() {
        let docs = [
            r#"{"user":"Ann","bot":true,"length":{"old":10,"new":25},"timestamp":1.5e9,"n":null,"a":[1,"x"]}"#,
            r#"{"user":7,"bot":"yes","length":{"old":10.5},"timestamp":"x"}"#,
            r#"[1,2,3]"#,
            r#"null"#,
        ];
        let get = |e: ScalarExpr, k: &str| e.call_binary(BinaryFunc::JsonGet, lit(k));
        let c = ScalarExpr::Column(0);
        let mut exprs = vec![
            c.clone().call_binary(BinaryFunc::JsonGetText, lit("user")),
            get(c.clone(), "bot").call_unary(UnaryFunc::Cast(ScalarType::Bool)),
            get(c.clone(), "timestamp").call_unary(UnaryFunc::Cast(ScalarType::Float64)),
            get(c.clone(), "n").call_unary(UnaryFunc::Cast(ScalarType::Text)),
            get(c.clone(), "n").call_unary(UnaryFunc::Cast(ScalarType::Int32)),
            get(c.clone(), "user").call_unary(UnaryFunc::Cast(ScalarType::Text)),
            get(get(c.clone(), "length"), "new"),
            get(c.clone(), "a")
                .call_binary(BinaryFunc::JsonGetText, ScalarExpr::literal(Datum::Int(-1), ScalarType::Int64)),
            c.clone().call_binary(BinaryFunc::JsonGet, ScalarExpr::literal(Datum::Int(1), ScalarType::Int64)),
            c.clone().call_binary(BinaryFunc::JsonGet, ScalarExpr::literal(Datum::Null, ScalarType::Text)),
        ];
        let int_of = |k: &str| {
            get(get(c.clone(), "length"), k)
                .call_unary(UnaryFunc::Cast(ScalarType::Float64))
                .call_unary(UnaryFunc::Cast(ScalarType::Int32))
        };
        exprs.push(int_of("new").call_binary(BinaryFunc::Sub, int_of("old")));
        for doc in docs {
            for row in [vec![Datum::Jsonb(Jsonb::parse(doc).unwrap())], vec![Datum::Null], vec![Datum::text(doc)]] {
                for e in &exprs {
                    assert_eq!(eval(e, &row), e.eval(&row), "{e:?} on {row:?}");
                }
            }
        }
    }
}
