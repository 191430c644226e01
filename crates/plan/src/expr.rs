//! Scalar expressions and aggregate functions, and what they mean.

use std::cmp::Ordering;

use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use viewcast_repr::{Datum, Diff, Json, JsonView, Jsonb, ScalarType};

/// An error evaluating a scalar expression on one row. SQLSTATE codes as Postgres uses them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("{0} out of range")]
    OutOfRange(String),
    #[error("invalid input syntax for type {ty}: \"{text}\"")]
    InvalidInput { ty: String, text: String },
    #[error("cannot cast jsonb {from} to type {to}")]
    JsonCast { from: String, to: String },
    #[error("null value in column violates not-null constraint")]
    NotNullViolation,
    #[error("{0}")]
    Other(String),
}

impl EvalError {
    /// The Postgres SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EvalError::DivisionByZero => "22012",
            EvalError::OutOfRange(_) => "22003",
            EvalError::InvalidInput { .. } => "22P02",
            EvalError::JsonCast { .. } => "22023",
            EvalError::NotNullViolation => "23502",
            EvalError::Other(_) => "XX000",
        }
    }
}

/// A scalar expression over the columns of one row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScalarExpr {
    Column(usize),
    Literal(Datum, ScalarType),
    CallUnary {
        func: UnaryFunc,
        expr: Box<ScalarExpr>,
    },
    CallBinary {
        func: BinaryFunc,
        left: Box<ScalarExpr>,
        right: Box<ScalarExpr>,
    },
    CallVariadic {
        func: VariadicFunc,
        exprs: Vec<ScalarExpr>,
    },
    /// `CASE WHEN cond THEN then ELSE els END`: `els` unless `cond` is true.
    If {
        cond: Box<ScalarExpr>,
        then: Box<ScalarExpr>,
        els: Box<ScalarExpr>,
    },
    /// `mz_now()`: the logical time (ms since the Unix epoch) at which the result is valid. A
    /// maintained plan holds it only in temporal filters (see [`crate::temporal`]); a one-shot plan
    /// has it replaced by the query's timestamp before evaluation ([`crate::RelExpr::bind_mz_now`]).
    /// Evaluating it unbound is an error.
    MzNow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryFunc {
    Not,
    IsNull,
    IsTrue,
    IsFalse,
    Neg,
    /// Cast to the given type; the source type is known from the value.
    Cast(ScalarType),
    Lower,
    Upper,
    /// Length in characters.
    CharLength,
    Abs,
    Ceil,
    Floor,
    /// Rounds half away from zero, as Postgres' `round(numeric)`.
    Round,
    Sqrt,
    /// Trims spaces from both ends.
    Trim,
    LTrim,
    RTrim,
    /// `jsonb_typeof`.
    JsonbTypeof,
    /// Passes a value through; NULL is an error (a `NOT NULL` column being written).
    AssertNotNull,
    /// Milliseconds since the Unix epoch of a timestamp, timestamptz or date, rounded down, as
    /// bigint: how a temporal filter compares `mz_now()` with a timestamp (Materialize's cast to
    /// `mz_timestamp`).
    EpochMillis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryFunc {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero when both sides are integers.
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    Lte,
    Gt,
    Gte,
    /// jsonb `->` (object field by text key, array element by integer index).
    JsonGet,
    /// jsonb `->>`: like `->`, the result as text.
    JsonGetText,
    /// `||` on text.
    Concat,
    /// `LIKE` with `\\` as escape; right is the pattern.
    Like,
    /// `ILIKE`: case-insensitive `LIKE`.
    ILike,
    /// `round(x, digits)`.
    RoundDigits,
    Power,
    /// `date_trunc(unit, ts)`: left is the unit text.
    DateTrunc,
    /// `extract(field FROM value)` / `date_part`: left is the field text; result `double precision`.
    Extract,
    /// `position(needle IN haystack)`: left is the needle; 1-based, 0 when absent.
    Position,
    /// `IS NOT DISTINCT FROM`: equality where NULL equals NULL; never NULL itself.
    IsNotDistinctFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VariadicFunc {
    /// Three-valued AND.
    And,
    /// Three-valued OR.
    Or,
    Coalesce,
    /// `substr(text, from [, count])`, 1-based as Postgres.
    Substr,
    Greatest,
    Least,
    /// `concat(...)`: text concatenation skipping NULLs.
    Concat,
    /// `replace(text, from, to)`.
    Replace,
    /// `jsonb_build_array(...)`.
    JsonbBuildArray,
}

impl ScalarExpr {
    pub fn column(i: usize) -> ScalarExpr {
        ScalarExpr::Column(i)
    }

    pub fn literal(d: Datum, ty: ScalarType) -> ScalarExpr {
        ScalarExpr::Literal(d, ty)
    }

    pub fn call_unary(self, func: UnaryFunc) -> ScalarExpr {
        ScalarExpr::CallUnary { func, expr: Box::new(self) }
    }

    pub fn call_binary(self, func: BinaryFunc, other: ScalarExpr) -> ScalarExpr {
        ScalarExpr::CallBinary { func, left: Box::new(self), right: Box::new(other) }
    }

    /// Evaluates over `row`.
    pub fn eval(&self, row: &[Datum]) -> Result<Datum, EvalError> {
        match self {
            ScalarExpr::Column(i) => Ok(row[*i].clone()),
            ScalarExpr::Literal(d, _) => Ok(d.clone()),
            ScalarExpr::CallUnary { func, expr } => eval_unary(*func, expr.eval(row)?),
            ScalarExpr::CallBinary { func, left, right } => eval_binary(*func, left.eval(row)?, right.eval(row)?),
            ScalarExpr::CallVariadic { func, exprs } => eval_variadic(*func, exprs, row),
            ScalarExpr::If { cond, then, els } => match cond.eval(row)? {
                Datum::Bool(true) => then.eval(row),
                _ => els.eval(row),
            },
            ScalarExpr::MzNow => Err(EvalError::Other("mz_now() has no value here".into())),
        }
    }

    /// Whether `eval` on this row yields `true` (as a WHERE clause wants).
    pub fn is_true(&self, row: &[Datum]) -> Result<bool, EvalError> {
        Ok(matches!(self.eval(row)?, Datum::Bool(true)))
    }

    /// Rewrites every column reference `i` to `f(i)`.
    pub fn permute(&mut self, f: &impl Fn(usize) -> usize) {
        self.visit_mut(&mut |e| {
            if let ScalarExpr::Column(i) = e {
                *i = f(*i);
            }
        });
    }

    pub fn visit_mut(&mut self, f: &mut impl FnMut(&mut ScalarExpr)) {
        f(self);
        match self {
            ScalarExpr::Column(_) | ScalarExpr::Literal(..) | ScalarExpr::MzNow => {}
            ScalarExpr::CallUnary { expr, .. } => expr.visit_mut(f),
            ScalarExpr::CallBinary { left, right, .. } => {
                left.visit_mut(f);
                right.visit_mut(f);
            }
            ScalarExpr::CallVariadic { exprs, .. } => exprs.iter_mut().for_each(|e| e.visit_mut(f)),
            ScalarExpr::If { cond, then, els } => {
                cond.visit_mut(f);
                then.visit_mut(f);
                els.visit_mut(f);
            }
        }
    }
}

fn as_f64(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(f) => Some(f.0),
        _ => None,
    }
}

/// SQL comparison of two non-NULL values of comparable types (integers and floats compare numerically).
pub fn sql_cmp(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Int(x), Datum::Int(y)) => x.cmp(y),
        (Datum::Int(_) | Datum::Float(_), Datum::Int(_) | Datum::Float(_)) => {
            OrderedFloat(as_f64(a).unwrap_or_default()).cmp(&OrderedFloat(as_f64(b).unwrap_or_default()))
        }
        _ => a.cmp(b),
    }
}

fn eval_unary(func: UnaryFunc, d: Datum) -> Result<Datum, EvalError> {
    match func {
        UnaryFunc::IsNull => Ok(Datum::Bool(d.is_null())),
        UnaryFunc::IsTrue => Ok(Datum::Bool(matches!(d, Datum::Bool(true)))),
        UnaryFunc::IsFalse => Ok(Datum::Bool(matches!(d, Datum::Bool(false)))),
        UnaryFunc::AssertNotNull if d.is_null() => Err(EvalError::NotNullViolation),
        UnaryFunc::AssertNotNull => Ok(d),
        _ if d.is_null() => Ok(Datum::Null),
        UnaryFunc::Not => match d {
            Datum::Bool(b) => Ok(Datum::Bool(!b)),
            other => Err(EvalError::Other(format!("NOT of non-boolean {other}"))),
        },
        UnaryFunc::Neg => match d {
            Datum::Int(i) => i.checked_neg().map(Datum::Int).ok_or_else(|| EvalError::OutOfRange("bigint".into())),
            Datum::Float(f) => Ok(Datum::float(-f.0)),
            other => Err(EvalError::Other(format!("cannot negate {other}"))),
        },
        UnaryFunc::Cast(to) => cast(d, to),
        UnaryFunc::Lower => Ok(Datum::text(&text_of(&d)?.to_lowercase())),
        UnaryFunc::Upper => Ok(Datum::text(&text_of(&d)?.to_uppercase())),
        UnaryFunc::CharLength => Ok(Datum::Int(text_of(&d)?.chars().count() as i64)),
        UnaryFunc::Trim => Ok(Datum::text(text_of(&d)?.trim_matches(' '))),
        UnaryFunc::LTrim => Ok(Datum::text(text_of(&d)?.trim_start_matches(' '))),
        UnaryFunc::RTrim => Ok(Datum::text(text_of(&d)?.trim_end_matches(' '))),
        UnaryFunc::Abs => match d {
            Datum::Int(i) => i.checked_abs().map(Datum::Int).ok_or_else(|| EvalError::OutOfRange("bigint".into())),
            Datum::Float(f) => Ok(Datum::float(f.0.abs())),
            other => Err(EvalError::Other(format!("abs of non-number {other}"))),
        },
        UnaryFunc::Ceil | UnaryFunc::Floor | UnaryFunc::Round | UnaryFunc::Sqrt => {
            let x = match d {
                // Integers are already whole; only sqrt changes them.
                Datum::Int(i) if func != UnaryFunc::Sqrt => return Ok(Datum::Int(i)),
                Datum::Int(i) => i as f64,
                Datum::Float(f) => f.0,
                other => return Err(EvalError::Other(format!("{func:?} of non-number {other}"))),
            };
            Ok(Datum::float(match func {
                UnaryFunc::Ceil => x.ceil(),
                UnaryFunc::Floor => x.floor(),
                UnaryFunc::Round => x.round(),
                _ if x < 0.0 => return Err(EvalError::Other("cannot take square root of a negative number".into())),
                _ => x.sqrt(),
            }))
        }
        UnaryFunc::EpochMillis => match d {
            Datum::Timestamp(us) => Ok(Datum::Int(us.div_euclid(1000))),
            Datum::Date(days) => Ok(Datum::Int(days as i64 * 86_400_000)),
            other => Err(EvalError::Other(format!("cannot cast {other} to mz_timestamp"))),
        },
        UnaryFunc::JsonbTypeof => match d {
            Datum::Jsonb(j) => Ok(Datum::text(j.json().type_name())),
            other => Err(EvalError::Other(format!("jsonb_typeof of non-jsonb {other}"))),
        },
    }
}

fn text_of(d: &Datum) -> Result<&str, EvalError> {
    match d {
        Datum::Text(t) => Ok(t),
        other => Err(EvalError::Other(format!("expected text, got {other}"))),
    }
}

fn int_range(to: ScalarType, i: i64) -> Result<Datum, EvalError> {
    let ok = match to {
        ScalarType::Int16 => i16::try_from(i).is_ok(),
        ScalarType::Int32 => i32::try_from(i).is_ok(),
        _ => true,
    };
    if ok {
        Ok(Datum::Int(i))
    } else {
        Err(EvalError::OutOfRange(to.name().into()))
    }
}

/// Casts a non-NULL value to `to`, as Postgres does.
pub fn cast(d: Datum, to: ScalarType) -> Result<Datum, EvalError> {
    let invalid = |text: String| EvalError::InvalidInput { ty: to.name().into(), text };
    match (d, to) {
        (Datum::Null, _) => Ok(Datum::Null),
        (Datum::Jsonb(j), ScalarType::Jsonb) => Ok(Datum::Jsonb(j)),
        (Datum::Jsonb(j), to) => cast_json(&j, to),
        (d, ScalarType::Text) => Ok(match d {
            Datum::Text(t) => Datum::Text(t),
            other => Datum::text(&other.to_string()),
        }),
        (Datum::Text(t), ScalarType::Jsonb) => Jsonb::parse(&t)
            .map(Datum::Jsonb)
            .map_err(|_| EvalError::InvalidInput { ty: "json".into(), text: t.to_string() }),
        (Datum::Text(t), ScalarType::Bool) => match t.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => Ok(Datum::Bool(true)),
            "f" | "false" | "no" | "n" | "off" | "0" => Ok(Datum::Bool(false)),
            _ => Err(invalid(t.to_string())),
        },
        (Datum::Text(t), to) if to.is_integer() => {
            t.trim().parse::<i64>().map_err(|_| invalid(t.to_string())).and_then(|i| int_range(to, i))
        }
        (Datum::Text(t), ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric) => {
            let s = t.trim().to_ascii_lowercase();
            let f = match s.as_str() {
                "nan" => f64::NAN,
                "infinity" | "inf" | "+infinity" => f64::INFINITY,
                "-infinity" | "-inf" => f64::NEG_INFINITY,
                _ => s.parse::<f64>().map_err(|_| invalid(t.to_string()))?,
            };
            Ok(Datum::float(f))
        }
        (Datum::Text(t), ScalarType::Date | ScalarType::Timestamp | ScalarType::TimestampTz | ScalarType::Interval) => {
            crate::datetime::parse(&t, to).ok_or_else(|| invalid(t.to_string()))
        }
        (Datum::Timestamp(us), ScalarType::Date) => Ok(Datum::Date(us.div_euclid(86_400_000_000) as i32)),
        (Datum::Date(d), ScalarType::Timestamp | ScalarType::TimestampTz) => {
            Ok(Datum::Timestamp(d as i64 * 86_400_000_000))
        }
        (Datum::Timestamp(us), ScalarType::Timestamp | ScalarType::TimestampTz) => Ok(Datum::Timestamp(us)),
        (Datum::Date(d), ScalarType::Date) => Ok(Datum::Date(d)),
        (i @ Datum::Interval { .. }, ScalarType::Interval) => Ok(i),
        (Datum::Int(i), to) if to.is_integer() => int_range(to, i),
        (Datum::Int(i), ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric) => Ok(Datum::float(i as f64)),
        (Datum::Int(i), ScalarType::Bool) => Ok(Datum::Bool(i != 0)),
        (Datum::Float(f), to) if to.is_integer() => {
            // Postgres rounds half to even (rint).
            let r = f.0.round_ties_even();
            if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
                int_range(to, r as i64)
            } else {
                Err(EvalError::OutOfRange(to.name().into()))
            }
        }
        (Datum::Float(f), ScalarType::Float32) => Ok(Datum::float(f.0 as f32 as f64)),
        (Datum::Float(f), ScalarType::Float64 | ScalarType::Numeric) => Ok(Datum::Float(f)),
        (Datum::Bool(b), ScalarType::Bool) => Ok(Datum::Bool(b)),
        (Datum::Bool(b), to) if to.is_integer() => Ok(Datum::Int(b as i64)),
        (d, to) => Err(EvalError::Other(format!("cannot cast {d} to {}", to.name()))),
    }
}

fn cast_json(j: &Jsonb, to: ScalarType) -> Result<Datum, EvalError> {
    let json = j.json();
    let err = || EvalError::JsonCast { from: json.type_name().into(), to: to.name().into() };
    match (json.view(), to) {
        (JsonView::Null, ScalarType::Text) => Ok(Datum::text("null")),
        // Postgres: casting a JSON null to a scalar type yields SQL NULL.
        (JsonView::Null, _) => Ok(Datum::Null),
        (JsonView::Bool(b), ScalarType::Bool) => Ok(Datum::Bool(b)),
        (JsonView::Number(n), to) if to.is_integer() => match n.as_i64() {
            Some(i) => int_range(to, i),
            None => cast(Datum::float(n.as_f64()), to),
        },
        (JsonView::Number(n), ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric) => {
            cast(Datum::float(n.as_f64()), to)
        }
        (_, ScalarType::Text) => Ok(Datum::text(&json.to_string())),
        _ => Err(err()),
    }
}

/// `j -> key`: an object's member by text key, an array's element by integer index.
fn json_get<'a>(j: &'a Jsonb, key: &Datum) -> Option<Json<'a>> {
    match key {
        Datum::Text(k) => j.json().get(k),
        Datum::Int(i) => j.json().index(*i),
        _ => None,
    }
}

fn arith(func: BinaryFunc, a: Datum, b: Datum) -> Result<Datum, EvalError> {
    match (&a, &b) {
        (Datum::Int(x), Datum::Int(y)) => {
            let (x, y) = (*x, *y);
            let r = match func {
                BinaryFunc::Add => x.checked_add(y),
                BinaryFunc::Sub => x.checked_sub(y),
                BinaryFunc::Mul => x.checked_mul(y),
                BinaryFunc::Div => {
                    if y == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x.checked_div(y)
                }
                BinaryFunc::Mod => {
                    if y == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x.checked_rem(y)
                }
                _ => unreachable!("arith called with non-arithmetic function"),
            };
            r.map(Datum::Int).ok_or_else(|| EvalError::OutOfRange("bigint".into()))
        }
        _ => {
            let (Some(x), Some(y)) = (as_f64(&a), as_f64(&b)) else {
                return Err(EvalError::Other(format!("operator does not exist: {a} {func:?} {b}")));
            };
            let r = match func {
                BinaryFunc::Add => x + y,
                BinaryFunc::Sub => x - y,
                BinaryFunc::Mul => x * y,
                BinaryFunc::Div => {
                    if y == 0.0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x / y
                }
                BinaryFunc::Mod => {
                    if y == 0.0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x % y
                }
                _ => unreachable!("arith called with non-arithmetic function"),
            };
            Ok(Datum::float(r))
        }
    }
}

fn eval_binary(func: BinaryFunc, a: Datum, b: Datum) -> Result<Datum, EvalError> {
    if func == BinaryFunc::IsNotDistinctFrom {
        return Ok(Datum::Bool(match (a.is_null(), b.is_null()) {
            (true, true) => true,
            (false, false) => sql_cmp(&a, &b).is_eq(),
            _ => false,
        }));
    }
    if a.is_null() || b.is_null() {
        return Ok(Datum::Null);
    }
    if matches!(func, BinaryFunc::Add | BinaryFunc::Sub) {
        if let Some(r) = crate::datetime::arith(func == BinaryFunc::Add, &a, &b) {
            return r;
        }
    }
    let cmp = |f: fn(Ordering) -> bool| Ok(Datum::Bool(f(sql_cmp(&a, &b))));
    match func {
        BinaryFunc::Add | BinaryFunc::Sub | BinaryFunc::Mul | BinaryFunc::Div | BinaryFunc::Mod => arith(func, a, b),
        BinaryFunc::Eq => cmp(|o| o.is_eq()),
        BinaryFunc::NotEq => cmp(|o| o.is_ne()),
        BinaryFunc::Lt => cmp(|o| o.is_lt()),
        BinaryFunc::Lte => cmp(|o| o.is_le()),
        BinaryFunc::Gt => cmp(|o| o.is_gt()),
        BinaryFunc::Gte => cmp(|o| o.is_ge()),
        BinaryFunc::JsonGet | BinaryFunc::JsonGetText => {
            let Datum::Jsonb(j) = &a else {
                return Err(EvalError::Other(format!(
                    "operator {} requires jsonb",
                    if func == BinaryFunc::JsonGet { "->" } else { "->>" }
                )));
            };
            Ok(match json_get(j, &b) {
                None => Datum::Null,
                Some(v) if func == BinaryFunc::JsonGet => Datum::Jsonb(Jsonb::from(v)),
                Some(v) => v.text().map_or(Datum::Null, |t| Datum::text(&t)),
            })
        }
        BinaryFunc::Concat => Ok(Datum::text(&format!("{a}{b}"))),
        BinaryFunc::Like | BinaryFunc::ILike => {
            let (t, p) = (text_of(&a)?, text_of(&b)?);
            let matched = if func == BinaryFunc::ILike {
                like_match(&t.to_lowercase(), &p.to_lowercase())
            } else {
                like_match(t, p)
            };
            Ok(Datum::Bool(matched))
        }
        BinaryFunc::RoundDigits => {
            let Datum::Int(digits) = b else {
                return Err(EvalError::Other(format!("round digits must be an integer, got {b}")));
            };
            let x = as_f64(&a).ok_or_else(|| EvalError::Other(format!("round of non-number {a}")))?;
            let scale = 10f64.powi(digits.clamp(-300, 300) as i32);
            Ok(Datum::float((x * scale).round() / scale))
        }
        BinaryFunc::Power => {
            let (Some(x), Some(y)) = (as_f64(&a), as_f64(&b)) else {
                return Err(EvalError::Other(format!("power of non-numbers {a}, {b}")));
            };
            if x == 0.0 && y < 0.0 {
                return Err(EvalError::Other("zero raised to a negative power is undefined".into()));
            }
            Ok(Datum::float(x.powf(y)))
        }
        BinaryFunc::DateTrunc => crate::datetime::date_trunc(text_of(&a)?, &b),
        BinaryFunc::Extract => crate::datetime::extract(text_of(&a)?, &b),
        BinaryFunc::Position => {
            let (needle, hay) = (text_of(&a)?, text_of(&b)?);
            Ok(Datum::Int(hay.find(needle).map(|i| hay[..i].chars().count() as i64 + 1).unwrap_or(0)))
        }
        BinaryFunc::IsNotDistinctFrom => unreachable!("handled before the NULL check"),
    }
}

fn eval_variadic(func: VariadicFunc, exprs: &[ScalarExpr], row: &[Datum]) -> Result<Datum, EvalError> {
    match func {
        VariadicFunc::And | VariadicFunc::Or => {
            let decisive = func == VariadicFunc::Or;
            let mut saw_null = false;
            for e in exprs {
                match e.eval(row)? {
                    Datum::Bool(b) if b == decisive => return Ok(Datum::Bool(decisive)),
                    Datum::Null => saw_null = true,
                    _ => {}
                }
            }
            Ok(if saw_null { Datum::Null } else { Datum::Bool(!decisive) })
        }
        VariadicFunc::Coalesce => {
            for e in exprs {
                let d = e.eval(row)?;
                if !d.is_null() {
                    return Ok(d);
                }
            }
            Ok(Datum::Null)
        }
        VariadicFunc::Greatest | VariadicFunc::Least => {
            let mut best: Option<Datum> = None;
            for e in exprs {
                let d = e.eval(row)?;
                if d.is_null() {
                    continue;
                }
                let better = match &best {
                    None => true,
                    Some(b) if func == VariadicFunc::Greatest => sql_cmp(&d, b).is_gt(),
                    Some(b) => sql_cmp(&d, b).is_lt(),
                };
                if better {
                    best = Some(d);
                }
            }
            Ok(best.unwrap_or(Datum::Null))
        }
        VariadicFunc::Concat => {
            let mut out = String::new();
            for e in exprs {
                match e.eval(row)? {
                    Datum::Null => {}
                    d => out.push_str(&d.to_string()),
                }
            }
            Ok(Datum::text(&out))
        }
        VariadicFunc::JsonbBuildArray => {
            let mut out = Vec::with_capacity(exprs.len());
            for e in exprs {
                out.push(e.eval(row)?.to_json());
            }
            Ok(Datum::Jsonb(Jsonb::from_value(&serde_json::Value::Array(out))))
        }
        VariadicFunc::Substr | VariadicFunc::Replace => {
            let mut args = Vec::with_capacity(exprs.len());
            for e in exprs {
                let d = e.eval(row)?;
                if d.is_null() {
                    return Ok(Datum::Null);
                }
                args.push(d);
            }
            if func == VariadicFunc::Replace {
                let [s, from, to] = &args[..] else {
                    return Err(EvalError::Other("replace takes three arguments".into()));
                };
                let (s, from, to) = (text_of(s)?, text_of(from)?, text_of(to)?);
                return Ok(Datum::text(&if from.is_empty() { s.to_string() } else { s.replace(from, to) }));
            }
            substr(&args)
        }
    }
}

/// Postgres' `substr(s, from [, count])`: positions before 1 still count toward `count`.
fn substr(args: &[Datum]) -> Result<Datum, EvalError> {
    let (s, from, count) = match args {
        [s, Datum::Int(f)] => (text_of(s)?, *f, None),
        [s, Datum::Int(f), Datum::Int(c)] => (text_of(s)?, *f, Some(*c)),
        _ => return Err(EvalError::Other("substr takes (text, integer [, integer])".into())),
    };
    let end = match count {
        Some(c) if c < 0 => return Err(EvalError::Other("negative substring length not allowed".into())),
        Some(c) => from.saturating_add(c),
        None => i64::MAX,
    };
    let start = from.max(1);
    if end <= start {
        return Ok(Datum::text(""));
    }
    let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(end - start).unwrap_or(usize::MAX);
    Ok(Datum::text(&s.chars().skip(skip).take(take).collect::<String>()))
}

/// SQL `LIKE`: `%` matches any run, `_` one character, `\\` escapes the next character.
pub fn like_match(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Char(chars.next().unwrap_or('\\')),
            c => Tok::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last `%`: linear in the common case, never exponential.
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// An aggregate over one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AggregateExpr {
    pub func: AggregateFunc,
    /// The aggregated expression, over the input row (`COUNT(*)` uses a non-NULL literal).
    pub expr: ScalarExpr,
    pub distinct: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggregateFunc {
    /// Counts non-NULL values (`COUNT(*)` counts a literal `true`). Result `bigint`, 0 when empty.
    Count,
    /// Integer sum (`bigint`), NULL when there are no non-NULL values.
    SumInt,
    /// Float sum, NULL when there are no non-NULL values.
    SumFloat,
    Min,
    Max,
    /// Average as `double precision`.
    Avg,
    BoolAnd,
    BoolOr,
    /// `string_agg(value, sep)`: `expr` yields `jsonb_build_array(value, sep)`; NULL values are skipped.
    /// Values are joined in ascending text order (Postgres leaves the order unspecified without
    /// `ORDER BY`; a fixed order keeps incremental and one-shot results equal), each but the first
    /// preceded by its own separator.
    StringAgg,
}

impl AggregateFunc {
    /// Whether the aggregate can be maintained by accumulating diffs (no need to re-read the group).
    pub fn is_accumulable(self) -> bool {
        matches!(self, AggregateFunc::Count | AggregateFunc::SumInt)
    }

    /// The aggregate of a group given as (value, multiplicity) pairs with positive multiplicities
    /// (already made distinct by the caller when `DISTINCT` is asked for).
    pub fn eval<'a>(self, values: impl IntoIterator<Item = (&'a Datum, Diff)>) -> Result<Datum, EvalError> {
        let non_null = values.into_iter().filter(|(d, _)| !d.is_null());
        match self {
            AggregateFunc::Count => Ok(Datum::Int(non_null.map(|(_, n)| n).sum())),
            AggregateFunc::SumInt => {
                let mut acc: Option<i64> = None;
                for (d, n) in non_null {
                    let Datum::Int(i) = d else {
                        return Err(EvalError::Other(format!("sum of non-integer {d}")));
                    };
                    let v = i.checked_mul(n).ok_or_else(|| EvalError::OutOfRange("bigint".into()))?;
                    acc = Some(acc.unwrap_or(0).checked_add(v).ok_or_else(|| EvalError::OutOfRange("bigint".into()))?);
                }
                Ok(acc.map(Datum::Int).unwrap_or(Datum::Null))
            }
            AggregateFunc::SumFloat | AggregateFunc::Avg => {
                let (mut sum, mut count) = (0.0f64, 0i64);
                for (d, n) in non_null {
                    sum += as_f64(d).unwrap_or(f64::NAN) * n as f64;
                    count += n;
                }
                Ok(match (self, count) {
                    (_, 0) => Datum::Null,
                    (AggregateFunc::Avg, c) => Datum::float(sum / c as f64),
                    _ => Datum::float(sum),
                })
            }
            AggregateFunc::Min => {
                Ok(non_null.map(|(d, _)| d).min_by(|a, b| sql_cmp(a, b)).cloned().unwrap_or(Datum::Null))
            }
            AggregateFunc::Max => {
                Ok(non_null.map(|(d, _)| d).max_by(|a, b| sql_cmp(a, b)).cloned().unwrap_or(Datum::Null))
            }
            AggregateFunc::BoolAnd | AggregateFunc::BoolOr => {
                let mut acc: Option<bool> = None;
                for (d, _) in non_null {
                    let b = matches!(d, Datum::Bool(true));
                    acc = Some(match (self, acc) {
                        (_, None) => b,
                        (AggregateFunc::BoolAnd, Some(a)) => a && b,
                        (_, Some(a)) => a || b,
                    });
                }
                Ok(acc.map(Datum::Bool).unwrap_or(Datum::Null))
            }
            AggregateFunc::StringAgg => {
                let mut parts: Vec<(String, String, Diff)> = Vec::new();
                for (d, n) in non_null {
                    let Datum::Jsonb(j) = d else {
                        return Err(EvalError::Other(format!("string_agg expects a (value, separator) pair, got {d}")));
                    };
                    let text = |i: i64| j.json().index(i).and_then(Json::text).map(|t| t.into_owned());
                    if let Some(value) = text(0) {
                        parts.push((value, text(1).unwrap_or_default(), n));
                    }
                }
                if parts.is_empty() {
                    return Ok(Datum::Null);
                }
                parts.sort();
                let mut out = String::new();
                let mut first = true;
                for (value, sep, n) in parts {
                    for _ in 0..n.max(0) {
                        if !first {
                            out.push_str(&sep);
                        }
                        first = false;
                        out.push_str(&value);
                    }
                }
                Ok(Datum::text(&out))
            }
        }
    }

    /// The result for an empty input (what a global aggregate shows before any row arrives).
    pub fn default_value(self) -> Datum {
        match self {
            AggregateFunc::Count => Datum::Int(0),
            _ => Datum::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(text: &str) -> Datum {
        Datum::Jsonb(Jsonb::parse(text).unwrap())
    }

    #[test]
    fn json_extraction_and_casts_follow_postgres() {
        let doc = j(r#"{"user":"Ann","bot":true,"length":{"old":10,"new":25},"ts":1.5}"#);
        let row = [doc];
        let get = |k: &str| {
            ScalarExpr::Column(0)
                .call_binary(BinaryFunc::JsonGet, ScalarExpr::literal(Datum::text(k), ScalarType::Text))
        };
        let user = ScalarExpr::Column(0)
            .call_binary(BinaryFunc::JsonGetText, ScalarExpr::literal(Datum::text("user"), ScalarType::Text));
        assert_eq!(user.eval(&row).unwrap(), Datum::text("Ann"));
        assert_eq!(get("bot").call_unary(UnaryFunc::Cast(ScalarType::Bool)).eval(&row).unwrap(), Datum::Bool(true));
        let new =
            get("length").call_binary(BinaryFunc::JsonGet, ScalarExpr::literal(Datum::text("new"), ScalarType::Text));
        let as_int =
            new.call_unary(UnaryFunc::Cast(ScalarType::Float64)).call_unary(UnaryFunc::Cast(ScalarType::Int32));
        assert_eq!(as_int.eval(&row).unwrap(), Datum::Int(25));
        assert_eq!(get("missing").call_unary(UnaryFunc::Cast(ScalarType::Float64)).eval(&row).unwrap(), Datum::Null);
        assert!(get("user").call_unary(UnaryFunc::Cast(ScalarType::Bool)).eval(&row).is_err());
        assert_eq!(cast(Datum::float(2.5), ScalarType::Int32).unwrap(), Datum::Int(2));
        assert_eq!(cast(Datum::float(3.5), ScalarType::Int32).unwrap(), Datum::Int(4));
    }

    #[test]
    fn three_valued_logic() {
        let t = ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool);
        let f = ScalarExpr::literal(Datum::Bool(false), ScalarType::Bool);
        let n = ScalarExpr::literal(Datum::Null, ScalarType::Bool);
        let and = |a: &ScalarExpr, b: &ScalarExpr| {
            ScalarExpr::CallVariadic { func: VariadicFunc::And, exprs: vec![a.clone(), b.clone()] }.eval(&[]).unwrap()
        };
        let or = |a: &ScalarExpr, b: &ScalarExpr| {
            ScalarExpr::CallVariadic { func: VariadicFunc::Or, exprs: vec![a.clone(), b.clone()] }.eval(&[]).unwrap()
        };
        assert_eq!(and(&n, &f), Datum::Bool(false));
        assert_eq!(and(&n, &t), Datum::Null);
        assert_eq!(or(&n, &t), Datum::Bool(true));
        assert_eq!(or(&n, &f), Datum::Null);
    }
}
