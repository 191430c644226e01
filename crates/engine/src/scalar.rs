//! Scalar evaluation with borrowing fast paths for JSON extraction, prepared once per plan.
//!
//! Semantics are exactly [`ScalarExpr::eval`]'s; this module only avoids building intermediate
//! `jsonb` values when a chain of `->` with literal keys is read (`data->'length'->'new'`), the
//! shape every JSON source's view has, and matches each expression's shape once, when the plan is
//! rendered ([`Prepared`]), not at every row. Anything else is delegated to the reference
//! evaluator.

use viewcast_plan::expr::cast;
use viewcast_plan::{BinaryFunc, EvalError, ScalarExpr, UnaryFunc};
use viewcast_repr::{Datum, Json, JsonView, Jsonb, ScalarType};

/// A scalar prepared once for evaluation over many rows.
///
/// A JSON path with literal keys (`val->'length'->'new'`, under a `->>` or a cast) is flattened
/// into its root column and keys, so evaluating it walks the document in place, without building
/// intermediate `jsonb` values or matching the expression tree again at every step; anything
/// else is delegated to the reference evaluator.
pub(crate) enum Prepared {
    Column(usize),
    Literal(Datum),
    /// `root -> keys[0] -> keys[1] ..`, then `leaf`. `expr` is the whole expression, evaluated
    /// by the reference when the root column is neither `jsonb` nor NULL.
    Path {
        root: usize,
        keys: Vec<Datum>,
        leaf: Leaf,
        expr: ScalarExpr,
    },
    /// `inner::to`; NULL stays NULL.
    Cast {
        to: ScalarType,
        inner: Box<Prepared>,
    },
    /// `left + right` or `left - right`, integers added in place.
    AddSub {
        func: BinaryFunc,
        left: Box<Prepared>,
        right: Box<Prepared>,
    },
    Other(ScalarExpr),
}

/// What a [`Prepared::Path`] yields from the value it reaches.
pub(crate) enum Leaf {
    /// The value as `jsonb` (`->`).
    Json,
    /// The value's member or element `key` as text (`->> key`).
    Text(Datum),
    /// The value cast to a type (`(..->..)::to`).
    Cast(ScalarType),
}

/// The root column and keys of `expr` if it is a JSON path with literal keys (a bare column, a
/// `::jsonb` of one, or `->` steps from one).
fn path_of(expr: &ScalarExpr) -> Option<(usize, Vec<Datum>)> {
    match expr {
        ScalarExpr::Column(i) => Some((*i, Vec::new())),
        ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, left, right } => {
            let ScalarExpr::Literal(key, _) = &**right else { return None };
            let (root, mut keys) = path_of(left)?;
            keys.push(key.clone());
            Some((root, keys))
        }
        // `jsonb::jsonb` is the identity.
        ScalarExpr::CallUnary { func: UnaryFunc::Cast(ScalarType::Jsonb), expr } => path_of(expr),
        _ => None,
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

impl Prepared {
    pub(crate) fn new(expr: &ScalarExpr) -> Prepared {
        let path = |leaf: Leaf, of: &ScalarExpr| {
            path_of(of).map(|(root, keys)| Prepared::Path { root, keys, leaf, expr: expr.clone() })
        };
        let prepared = match expr {
            ScalarExpr::Column(i) => Some(Prepared::Column(*i)),
            ScalarExpr::Literal(d, _) => Some(Prepared::Literal(d.clone())),
            ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, .. } => path(Leaf::Json, expr),
            ScalarExpr::CallBinary { func: BinaryFunc::JsonGetText, left, right } => match &**right {
                ScalarExpr::Literal(key, _) => path(Leaf::Text(key.clone()), left),
                _ => None,
            },
            ScalarExpr::CallBinary { func: func @ (BinaryFunc::Add | BinaryFunc::Sub), left, right } => {
                Some(Prepared::AddSub {
                    func: *func,
                    left: Box::new(Prepared::new(left)),
                    right: Box::new(Prepared::new(right)),
                })
            }
            // A cast of a `->` step reads the leaf in place.
            ScalarExpr::CallUnary { func: UnaryFunc::Cast(to), expr: inner } => match &**inner {
                ScalarExpr::CallBinary { func: BinaryFunc::JsonGet, .. } => path(Leaf::Cast(*to), inner),
                _ => Some(Prepared::Cast { to: *to, inner: Box::new(Prepared::new(inner)) }),
            },
            _ => None,
        };
        prepared.unwrap_or_else(|| Prepared::Other(expr.clone()))
    }

    /// Evaluates over `row`, with the same result as the expression's `eval(row)`.
    pub(crate) fn eval(&self, row: &[Datum]) -> Result<Datum, EvalError> {
        match self {
            Prepared::Column(i) => Ok(row[*i].clone()),
            Prepared::Literal(d) => Ok(d.clone()),
            Prepared::Path { root, keys, leaf, expr } => {
                let mut v = match &row[*root] {
                    Datum::Jsonb(j) => j.json(),
                    Datum::Null => return Ok(Datum::Null),
                    _ => return expr.eval(row),
                };
                for key in keys {
                    match lookup(v, key) {
                        Some(next) => v = next,
                        None => return Ok(Datum::Null),
                    }
                }
                match leaf {
                    Leaf::Json => Ok(Datum::Jsonb(Jsonb::from(v))),
                    Leaf::Text(key) => Ok(match lookup(v, key).and_then(Json::text) {
                        None => Datum::Null,
                        Some(text) => Datum::text(&text),
                    }),
                    Leaf::Cast(to) => match cast_json_leaf(v, *to) {
                        Some(d) => d,
                        None => cast(Datum::Jsonb(Jsonb::from(v)), *to),
                    },
                }
            }
            Prepared::Cast { to, inner } => {
                let d = inner.eval(row)?;
                if d.is_null() {
                    Ok(Datum::Null)
                } else {
                    cast(d, *to)
                }
            }
            Prepared::AddSub { func, left, right } => {
                let (l, r) = (left.eval(row)?, right.eval(row)?);
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
            Prepared::Other(expr) => expr.eval(row),
        }
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
                    assert_eq!(Prepared::new(e).eval(&row), e.eval(&row), "{e:?} on {row:?}");
                }
            }
        }
    }
}
