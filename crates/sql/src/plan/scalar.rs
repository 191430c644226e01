//! Scalar expressions: name resolution, type inference and coercion, functions and operators,
//! and subquery expressions (`EXISTS`, `IN (SELECT ..)`, scalar subqueries).

use sqlparser::ast::{self, BinaryOperator, DataType, Expr, UnaryOperator};
use viewcast_plan::expr::cast;
use viewcast_plan::{AggregateExpr, AggregateFunc, BinaryFunc, RelExpr, ScalarExpr, UnaryFunc, VariadicFunc};
use viewcast_repr::{ColumnType, Datum, ScalarType};

use super::query::{attach, Col, Grouping, Qcx, Rel};
use super::Planner;
use crate::error::{code, SqlError};
use crate::parser::normalize_ident;

/// What an expression may contain where it is being bound.
#[derive(Clone, Copy)]
pub(crate) struct Ecx<'a> {
    pub qcx: &'a Qcx,
    /// Clause name for error messages ("WHERE", "SELECT", ...).
    pub clause: &'a str,
    /// Set when binding over the output of a GROUP BY / aggregation.
    pub grouping: Option<&'a Grouping>,
    pub allow_subqueries: bool,
    /// False inside an aggregate's arguments.
    pub in_aggregate: bool,
}

impl<'a> Ecx<'a> {
    pub fn new(qcx: &'a Qcx, clause: &'a str) -> Self {
        Ecx { qcx, clause, grouping: None, allow_subqueries: false, in_aggregate: false }
    }
    pub fn subqueries(self) -> Self {
        Ecx { allow_subqueries: true, ..self }
    }
    pub fn grouped(self, g: &'a Grouping) -> Self {
        Ecx { grouping: Some(g), ..self }
    }
    pub fn no_aggregates(self) -> Self {
        Ecx { in_aggregate: true, ..self }
    }
}

/// How a literal without a type of its own may still be coerced (Postgres' `unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lit {
    Typed,
    String,
    Null,
}

/// A bound scalar with its type.
#[derive(Clone, Debug)]
pub(crate) struct Typed {
    pub expr: ScalarExpr,
    pub ty: ColumnType,
    pub lit: Lit,
}

impl Typed {
    pub(crate) fn new(expr: ScalarExpr, scalar: ScalarType, nullable: bool) -> Typed {
        Typed { expr, ty: ColumnType::new(scalar, nullable), lit: Lit::Typed }
    }
    pub fn is_null_literal(&self) -> bool {
        self.lit == Lit::Null
    }
    pub fn is_string_literal(&self) -> bool {
        self.lit == Lit::String
    }
    fn is_unknown(&self) -> bool {
        self.lit != Lit::Typed
    }
}

pub(crate) fn is_aggregate_name(name: &str) -> bool {
    matches!(name, "count" | "sum" | "min" | "max" | "avg" | "bool_and" | "bool_or" | "every" | "string_agg")
}

fn numeric_rank(t: ScalarType) -> Option<u8> {
    Some(match t {
        ScalarType::Int16 => 0,
        ScalarType::Int32 => 1,
        ScalarType::Int64 => 2,
        ScalarType::Numeric => 3,
        ScalarType::Float32 => 4,
        ScalarType::Float64 => 5,
        _ => return None,
    })
}

/// The common type of two typed values, as Postgres resolves UNION/CASE/COALESCE.
pub(crate) fn unify_scalar(a: ScalarType, b: ScalarType) -> Option<ScalarType> {
    if a == b {
        return Some(a);
    }
    if let (Some(x), Some(y)) = (numeric_rank(a), numeric_rank(b)) {
        return Some(if x >= y { a } else { b });
    }
    use ScalarType::*;
    match (a, b) {
        (Timestamp | TimestampTz | Date, Timestamp | TimestampTz | Date) => {
            Some(if a == TimestampTz || b == TimestampTz { TimestampTz } else { Timestamp })
        }
        _ => None,
    }
}

/// The Postgres internal type name, which names the column of `SELECT '1'::int` (`int4`).
pub(crate) fn type_column_name(dt: &DataType) -> String {
    match scalar_type_of(dt) {
        Ok(t) => match t {
            ScalarType::Bool => "bool",
            ScalarType::Int16 => "int2",
            ScalarType::Int32 => "int4",
            ScalarType::Int64 => "int8",
            ScalarType::Float32 => "float4",
            ScalarType::Float64 => "float8",
            ScalarType::Numeric => "numeric",
            ScalarType::Text => "text",
            ScalarType::Jsonb => "jsonb",
            ScalarType::Date => "date",
            ScalarType::Timestamp => "timestamp",
            ScalarType::TimestampTz => "timestamptz",
            ScalarType::Interval => "interval",
        }
        .to_string(),
        Err(_) => "?column?".to_string(),
    }
}

/// Maps a SQL type name to a [`ScalarType`].
pub(crate) fn scalar_type_of(dt: &DataType) -> Result<ScalarType, SqlError> {
    let text = dt.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or("").trim();
    Ok(match base {
        "bool" | "boolean" => ScalarType::Bool,
        "smallint" | "int2" => ScalarType::Int16,
        "int" | "integer" | "int4" => ScalarType::Int32,
        "bigint" | "int8" => ScalarType::Int64,
        "real" | "float4" => ScalarType::Float32,
        "float" | "float8" | "double" | "double precision" => ScalarType::Float64,
        "numeric" | "decimal" | "dec" => ScalarType::Numeric,
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "bpchar" => ScalarType::Text,
        "jsonb" | "json" => ScalarType::Jsonb,
        "date" => ScalarType::Date,
        "timestamp" | "timestamp without time zone" => ScalarType::Timestamp,
        "timestamptz" | "timestamp with time zone" => ScalarType::TimestampTz,
        "interval" => ScalarType::Interval,
        _ => return Err(SqlError::new(code::UNDEFINED_OBJECT, format!("type \"{text}\" does not exist"))),
    })
}

fn lit(d: Datum, t: ScalarType) -> ScalarExpr {
    ScalarExpr::literal(d, t)
}

fn and(exprs: Vec<ScalarExpr>) -> ScalarExpr {
    ScalarExpr::CallVariadic { func: VariadicFunc::And, exprs }
}

fn if_then(cond: ScalarExpr, then: ScalarExpr, els: ScalarExpr) -> ScalarExpr {
    ScalarExpr::If { cond: Box::new(cond), then: Box::new(then), els: Box::new(els) }
}

impl Planner<'_> {
    /// Binds `e` over `rel`. Subqueries may append columns to `rel`.
    pub(crate) fn bind(&self, ecx: &Ecx, rel: &mut Rel, e: &Expr) -> Result<Typed, SqlError> {
        self.bind_inner(ecx, rel, e).map_err(|err| err.at(self.pos_of(e)))
    }

    /// Casts `t` to `to`: literals of unknown type are converted now (a bad one is an error with
    /// its position), other values by a runtime cast.
    pub(crate) fn coerce(&self, t: Typed, to: ScalarType, pos: Option<usize>) -> Result<ScalarExpr, SqlError> {
        if t.ty.scalar == to && t.lit != Lit::Null {
            return Ok(t.expr);
        }
        match t.lit {
            Lit::Null => Ok(lit(Datum::Null, to)),
            Lit::String => {
                let d = t.expr.eval(&[]).unwrap_or(Datum::Null);
                match cast(d, to) {
                    Ok(d) => Ok(lit(d, to)),
                    Err(e) => Err(SqlError::new(e.sqlstate(), e.to_string()).at(pos)),
                }
            }
            Lit::Typed => Ok(t.expr.call_unary(UnaryFunc::Cast(to))),
        }
    }

    pub(crate) fn coerce_bool(&self, t: Typed, clause: &str, pos: Option<usize>) -> Result<ScalarExpr, SqlError> {
        if t.ty.scalar == ScalarType::Bool || t.is_unknown() {
            return self.coerce(t, ScalarType::Bool, pos);
        }
        Err(SqlError::new(
            code::DATATYPE_MISMATCH,
            format!("argument of {clause} must be type boolean, not type {}", t.ty.scalar.name()),
        )
        .at(pos))
    }

    pub(crate) fn coerce_text(&self, t: Typed, func: &str, pos: Option<usize>) -> Result<ScalarExpr, SqlError> {
        if t.ty.scalar == ScalarType::Text || t.is_unknown() {
            return self.coerce(t, ScalarType::Text, pos);
        }
        Err(SqlError::new(code::UNDEFINED_FUNCTION, format!("function {func}({}) does not exist", t.ty.scalar.name()))
            .at(pos))
    }

    /// The common type of `items` (unknown literals adapt to the others; all-unknown is text).
    pub(crate) fn unify(&self, what: &str, items: &[&Typed], pos: Option<usize>) -> Result<ScalarType, SqlError> {
        let mut acc: Option<ScalarType> = None;
        for t in items.iter().filter(|t| !t.is_unknown()) {
            acc = Some(match acc {
                None => t.ty.scalar,
                Some(a) => unify_scalar(a, t.ty.scalar).ok_or_else(|| {
                    SqlError::new(
                        code::DATATYPE_MISMATCH,
                        format!("{what} types {} and {} cannot be matched", a.name(), t.ty.scalar.name()),
                    )
                    .at(pos)
                })?,
            });
        }
        Ok(acc.unwrap_or(ScalarType::Text))
    }

    fn coerce_all(
        &self,
        what: &str,
        items: Vec<Typed>,
        pos: Option<usize>,
    ) -> Result<(Vec<ScalarExpr>, ColumnType), SqlError> {
        let refs: Vec<&Typed> = items.iter().collect();
        let ty = self.unify(what, &refs, pos)?;
        let nullable = items.iter().any(|t| t.ty.nullable);
        let exprs = items.into_iter().map(|t| self.coerce(t, ty, pos)).collect::<Result<_, _>>()?;
        Ok((exprs, ColumnType::new(ty, nullable)))
    }

    fn resolve_column(&self, ecx: &Ecx, rel: &Rel, table: Option<&str>, name: &str) -> Result<Typed, SqlError> {
        let cols: &[Col] = match ecx.grouping {
            Some(g) => &g.pre_cols,
            None => &rel.cols,
        };
        let matches = |c: &Col| {
            c.name == name
                && match table {
                    Some(t) => c.table.as_deref() == Some(t),
                    None => !c.hidden,
                }
        };
        let mut found: Option<usize> = None;
        let max_depth = cols.iter().map(|c| c.depth).max().unwrap_or(0);
        for depth in 0..=max_depth {
            let mut hits = cols.iter().enumerate().filter(|(_, c)| c.depth == depth && matches(c));
            if let Some((i, _)) = hits.next() {
                if hits.next().is_some() {
                    let shown = table.map(|t| format!("{t}.{name}")).unwrap_or_else(|| name.to_string());
                    return Err(SqlError::new(
                        code::AMBIGUOUS_COLUMN,
                        format!("column reference \"{shown}\" is ambiguous"),
                    ));
                }
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else {
            if let Some(t) = table {
                if !cols.iter().any(|c| c.table.as_deref() == Some(t)) {
                    return Err(SqlError::new(
                        code::UNDEFINED_TABLE,
                        format!("missing FROM-clause entry for table \"{t}\""),
                    ));
                }
                return Err(SqlError::new(code::UNDEFINED_COLUMN, format!("column {t}.{name} does not exist")));
            }
            return Err(SqlError::new(code::UNDEFINED_COLUMN, format!("column \"{name}\" does not exist")));
        };
        if i < ecx.qcx.n_outer {
            ecx.qcx.used.borrow_mut().insert(i);
        }
        let ty = cols[i].ty;
        let i = match ecx.grouping {
            None => i,
            Some(g) if i < g.n_outer => i,
            Some(g) => *g.col_map.get(&i).ok_or_else(|| {
                SqlError::new(
                    code::GROUPING_ERROR,
                    format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"),
                )
            })?,
        };
        Ok(Typed::new(ScalarExpr::column(i), ty.scalar, ty.nullable))
    }

    fn bind_inner(&self, ecx: &Ecx, rel: &mut Rel, e: &Expr) -> Result<Typed, SqlError> {
        if let Some(g) = ecx.grouping {
            if let Some((_, col)) = g.exprs.iter().find(|(x, _)| x == e) {
                let ty = rel.cols[*col].ty;
                return Ok(Typed::new(ScalarExpr::column(*col), ty.scalar, ty.nullable));
            }
        }
        let pos = self.pos_of(e);
        let unsupported = |what: &str| Err(SqlError::unsupported(what).at(pos));
        match e {
            Expr::Identifier(ident) => self.resolve_column(ecx, rel, None, &normalize_ident(ident)),
            Expr::CompoundIdentifier(parts) => {
                let n = parts.len();
                if n < 2 {
                    return unsupported("this identifier");
                }
                let table = normalize_ident(&parts[n - 2]);
                self.resolve_column(ecx, rel, Some(&table), &normalize_ident(&parts[n - 1]))
            }
            Expr::Nested(inner) => self.bind(ecx, rel, inner),
            Expr::Value(v) => self.bind_value(&v.value, pos),
            Expr::TypedString(ts) => {
                let to = scalar_type_of(&ts.data_type)?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    _ => return unsupported("this typed literal"),
                };
                let t = Typed {
                    expr: lit(Datum::text(&text), ScalarType::Text),
                    ty: ColumnType::new(ScalarType::Text, false),
                    lit: Lit::String,
                };
                let expr = self.coerce(t, to, pos)?;
                Ok(Typed::new(expr, to, false))
            }
            Expr::Interval(iv) => {
                if iv.leading_precision.is_some()
                    || iv.last_field.is_some()
                    || iv.fractional_seconds_precision.is_some()
                {
                    return unsupported("this INTERVAL form");
                }
                let text = match &*iv.value {
                    Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        ast::Value::Number(n, _) => n.clone(),
                        _ => return unsupported("this INTERVAL literal"),
                    },
                    _ => return unsupported("INTERVAL of a non-literal"),
                };
                let text = match &iv.leading_field {
                    Some(f) => format!("{text} {}", f.to_string().to_lowercase()),
                    None => text,
                };
                let d = viewcast_plan::datetime::parse(&text, ScalarType::Interval).ok_or_else(|| {
                    SqlError::new(
                        code::INVALID_TEXT_REPRESENTATION,
                        format!("invalid input syntax for type interval: \"{text}\""),
                    )
                })?;
                Ok(Typed::new(lit(d, ScalarType::Interval), ScalarType::Interval, false))
            }
            Expr::Cast { kind, expr, data_type, format } => {
                if format.is_some() || !matches!(kind, ast::CastKind::Cast | ast::CastKind::DoubleColon) {
                    return unsupported(&format!("{kind:?}"));
                }
                let to = scalar_type_of(data_type).map_err(|err| err.at(pos))?;
                let t = self.bind(ecx, rel, expr)?;
                let nullable = t.ty.nullable || t.ty.scalar == ScalarType::Jsonb;
                let expr = self.coerce(t, to, pos)?;
                Ok(Typed::new(expr, to, nullable))
            }
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => {
                    let t = self.bind(ecx, rel, expr)?;
                    let nullable = t.ty.nullable;
                    let b = self.coerce_bool(t, "NOT", pos)?;
                    Ok(Typed::new(b.call_unary(UnaryFunc::Not), ScalarType::Bool, nullable))
                }
                UnaryOperator::Minus => {
                    if let Expr::Value(v) = &**expr {
                        if let ast::Value::Number(n, _) = &v.value {
                            return self.bind_number(&format!("-{n}"), pos);
                        }
                    }
                    let t = self.bind(ecx, rel, expr)?;
                    let ty = if t.is_unknown() { ScalarType::Float64 } else { t.ty.scalar };
                    if !ty.is_numeric() && ty != ScalarType::Interval {
                        return Err(SqlError::new(
                            code::UNDEFINED_FUNCTION,
                            format!("operator does not exist: - {}", ty.name()),
                        ));
                    }
                    let nullable = t.ty.nullable;
                    let x = self.coerce(t, ty, pos)?;
                    Ok(Typed::new(x.call_unary(UnaryFunc::Neg), ty, nullable))
                }
                UnaryOperator::Plus => {
                    let t = self.bind(ecx, rel, expr)?;
                    if !t.ty.scalar.is_numeric() && !t.is_unknown() {
                        return Err(SqlError::new(
                            code::UNDEFINED_FUNCTION,
                            format!("operator does not exist: + {}", t.ty.scalar.name()),
                        ));
                    }
                    Ok(t)
                }
                other => unsupported(&format!("operator {other}")),
            },
            Expr::BinaryOp { left, op, right } => {
                if let Some(t) = self.bind_temporal_comparison(ecx, rel, e, left, op, right) {
                    return t;
                }
                self.bind_binary(ecx, rel, left, op, right, pos)
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                let t = self.bind(ecx, rel, x)?;
                let is_null = t.expr.call_unary(UnaryFunc::IsNull);
                let expr = if matches!(e, Expr::IsNull(_)) { is_null } else { is_null.call_unary(UnaryFunc::Not) };
                Ok(Typed::new(expr, ScalarType::Bool, false))
            }
            Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x) => {
                let t = self.bind(ecx, rel, x)?;
                let b = self.coerce_bool(t, "IS", pos)?;
                let expr = match e {
                    Expr::IsTrue(_) => b.call_unary(UnaryFunc::IsTrue),
                    Expr::IsNotTrue(_) => b.call_unary(UnaryFunc::IsTrue).call_unary(UnaryFunc::Not),
                    Expr::IsFalse(_) => b.call_unary(UnaryFunc::IsFalse),
                    Expr::IsNotFalse(_) => b.call_unary(UnaryFunc::IsFalse).call_unary(UnaryFunc::Not),
                    Expr::IsUnknown(_) => b.call_unary(UnaryFunc::IsNull),
                    _ => b.call_unary(UnaryFunc::IsNull).call_unary(UnaryFunc::Not),
                };
                Ok(Typed::new(expr, ScalarType::Bool, false))
            }
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                let l = self.bind(ecx, rel, a)?;
                let r = self.bind(ecx, rel, b)?;
                let (l, r) = self.comparable(l, r, "IS DISTINCT FROM", pos)?;
                let same = l.call_binary(BinaryFunc::IsNotDistinctFrom, r);
                let expr = if matches!(e, Expr::IsDistinctFrom(..)) { same.call_unary(UnaryFunc::Not) } else { same };
                Ok(Typed::new(expr, ScalarType::Bool, false))
            }
            Expr::Between { expr, negated, low, high } => {
                if let Some(t) = self.bind_temporal_between(ecx, rel, e) {
                    return t;
                }
                let x = self.bind(ecx, rel, expr)?;
                let lo = self.bind(ecx, rel, low)?;
                let hi = self.bind(ecx, rel, high)?;
                let nullable = x.ty.nullable || lo.ty.nullable || hi.ty.nullable;
                let (x1, lo) = self.comparable(x.clone(), lo, ">=", pos)?;
                let (x2, hi) = self.comparable(x, hi, "<=", pos)?;
                let between = and(vec![x1.call_binary(BinaryFunc::Gte, lo), x2.call_binary(BinaryFunc::Lte, hi)]);
                let expr = if *negated { between.call_unary(UnaryFunc::Not) } else { between };
                Ok(Typed::new(expr, ScalarType::Bool, nullable))
            }
            Expr::In { expr, target, negated, .. } => {
                let result = match target {
                    ast::InTarget::List(list) => {
                        let x = self.bind(ecx, rel, expr)?;
                        if list.is_empty() {
                            // `x IN ()` (SQLite's extension, accepted by the parser): no element
                            // can equal `x`, so it is false even when `x` is NULL.
                            let f = lit(Datum::Bool(false), ScalarType::Bool);
                            let f = Typed::new(f, ScalarType::Bool, false);
                            return Ok(if *negated {
                                Typed::new(f.expr.call_unary(UnaryFunc::Not), ScalarType::Bool, false)
                            } else {
                                f
                            });
                        }
                        let mut ors = Vec::new();
                        let mut nullable = x.ty.nullable;
                        for item in list {
                            let y = self.bind(ecx, rel, item)?;
                            nullable |= y.ty.nullable;
                            let (l, r) = self.comparable(x.clone(), y, "=", self.pos_of(item))?;
                            ors.push(l.call_binary(BinaryFunc::Eq, r));
                        }
                        Typed::new(
                            ScalarExpr::CallVariadic { func: VariadicFunc::Or, exprs: ors },
                            ScalarType::Bool,
                            nullable,
                        )
                    }
                    ast::InTarget::Subquery(q) => self.bind_in_subquery(ecx, rel, expr, q, pos)?,
                    _ => return unsupported("this IN form"),
                };
                Ok(if *negated {
                    Typed::new(result.expr.call_unary(UnaryFunc::Not), ScalarType::Bool, result.ty.nullable)
                } else {
                    result
                })
            }
            Expr::Like { negated, any, expr, pattern, escape_char }
            | Expr::ILike { negated, any, expr, pattern, escape_char } => {
                if *any || escape_char.is_some() {
                    return unsupported("LIKE ANY / ESCAPE");
                }
                let func = if matches!(e, Expr::Like { .. }) { BinaryFunc::Like } else { BinaryFunc::ILike };
                let x = self.bind(ecx, rel, expr)?;
                let p = self.bind(ecx, rel, pattern)?;
                let nullable = x.ty.nullable || p.ty.nullable;
                let name = if func == BinaryFunc::Like { "like" } else { "ilike" };
                let x = self.coerce_text(x, name, pos)?;
                let p = self.coerce_text(p, name, pos)?;
                let m = x.call_binary(func, p);
                Ok(Typed::new(if *negated { m.call_unary(UnaryFunc::Not) } else { m }, ScalarType::Bool, nullable))
            }
            Expr::Case { operand, conditions, else_result, .. } => {
                let operand = match operand {
                    Some(o) => Some(self.bind(ecx, rel, o)?),
                    None => None,
                };
                let mut conds = Vec::new();
                let mut results = Vec::new();
                for w in conditions {
                    let c = self.bind(ecx, rel, &w.condition)?;
                    let c = match &operand {
                        Some(o) => {
                            let (l, r) = self.comparable(o.clone(), c, "=", self.pos_of(&w.condition))?;
                            l.call_binary(BinaryFunc::Eq, r)
                        }
                        None => self.coerce_bool(c, "CASE", self.pos_of(&w.condition))?,
                    };
                    conds.push(c);
                    results.push(self.bind(ecx, rel, &w.result)?);
                }
                let has_else = else_result.is_some();
                match else_result {
                    Some(x) => results.push(self.bind(ecx, rel, x)?),
                    None => results.push(Typed {
                        expr: lit(Datum::Null, ScalarType::Text),
                        ty: ColumnType::new(ScalarType::Text, true),
                        lit: Lit::Null,
                    }),
                }
                let (mut exprs, mut ty) = self.coerce_all("CASE", results, pos)?;
                if !has_else {
                    ty.nullable = true;
                }
                let mut out = exprs.pop().expect("else branch");
                for (c, r) in conds.into_iter().zip(exprs).rev() {
                    out = if_then(c, r, out);
                }
                Ok(Typed { expr: out, ty, lit: Lit::Typed })
            }
            Expr::Function(f) => self.bind_function(ecx, rel, f, pos),
            Expr::Extract { field, expr, .. } => {
                let x = self.bind(ecx, rel, expr)?;
                self.datetime_call(BinaryFunc::Extract, &field.to_string().to_lowercase(), x, pos)
            }
            Expr::Ceil { expr, field } | Expr::Floor { expr, field } => {
                if !matches!(field, ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)) {
                    return unsupported("CEIL/FLOOR TO");
                }
                let x = self.bind(ecx, rel, expr)?;
                let func = if matches!(e, Expr::Ceil { .. }) { UnaryFunc::Ceil } else { UnaryFunc::Floor };
                self.numeric_unary(func, x, pos)
            }
            Expr::Substring { expr, substring_from, substring_for, .. } => {
                let mut args = vec![self.bind(ecx, rel, expr)?];
                match substring_from {
                    Some(f) => args.push(self.bind(ecx, rel, f)?),
                    None => args.push(Typed::new(lit(Datum::Int(1), ScalarType::Int32), ScalarType::Int32, false)),
                }
                if let Some(f) = substring_for {
                    args.push(self.bind(ecx, rel, f)?);
                }
                self.call_substr(args, pos)
            }
            Expr::Trim { trim_where, trim_what, expr, trim_characters } => {
                if trim_what.is_some() || trim_characters.is_some() {
                    return unsupported("TRIM of specific characters");
                }
                let func = match trim_where {
                    None | Some(ast::TrimWhereField::Both) => UnaryFunc::Trim,
                    Some(ast::TrimWhereField::Leading) => UnaryFunc::LTrim,
                    Some(ast::TrimWhereField::Trailing) => UnaryFunc::RTrim,
                };
                let x = self.bind(ecx, rel, expr)?;
                let nullable = x.ty.nullable;
                let x = self.coerce_text(x, "btrim", pos)?;
                Ok(Typed::new(x.call_unary(func), ScalarType::Text, nullable))
            }
            Expr::Position { expr, r#in } => {
                let needle = self.bind(ecx, rel, expr)?;
                let hay = self.bind(ecx, rel, r#in)?;
                let nullable = needle.ty.nullable || hay.ty.nullable;
                let needle = self.coerce_text(needle, "position", pos)?;
                let hay = self.coerce_text(hay, "position", pos)?;
                Ok(Typed::new(needle.call_binary(BinaryFunc::Position, hay), ScalarType::Int32, nullable))
            }
            Expr::Subquery(q) => {
                self.check_subqueries(ecx, pos)?;
                let (keys, sub) = self.plan_correlated(rel, ecx.qcx, q, &[])?;
                if sub.arity() - keys.len() != 1 {
                    return Err(SqlError::syntax("subquery must return only one column"));
                }
                let ty = sub.cols[keys.len()].ty;
                let col = attach(rel, &keys, sub);
                Ok(Typed::new(ScalarExpr::column(col), ty.scalar, true))
            }
            Expr::Exists { subquery, negated } => {
                self.check_subqueries(ecx, pos)?;
                let (keys, sub) = self.plan_correlated(rel, ecx.qcx, subquery, &[])?;
                let k = keys.len();
                let mut key_cols: Vec<Col> = sub.cols[..k].to_vec();
                key_cols.push(Col::anon(ColumnType::new(ScalarType::Bool, false)));
                let marker = Rel {
                    expr: RelExpr::Map {
                        input: Box::new(RelExpr::Distinct {
                            input: Box::new(RelExpr::Project { input: Box::new(sub.expr), outputs: (0..k).collect() }),
                        }),
                        scalars: vec![lit(Datum::Bool(true), ScalarType::Bool)],
                    },
                    cols: key_cols,
                    n_outer: 0,
                };
                let col = attach(rel, &keys, marker);
                let exists = ScalarExpr::CallVariadic {
                    func: VariadicFunc::Coalesce,
                    exprs: vec![ScalarExpr::column(col), lit(Datum::Bool(false), ScalarType::Bool)],
                };
                let expr = if *negated { exists.call_unary(UnaryFunc::Not) } else { exists };
                Ok(Typed::new(expr, ScalarType::Bool, false))
            }
            Expr::AnyOp { .. } | Expr::AllOp { .. } => unsupported("ANY/ALL/SOME"),
            Expr::Collate { .. } => unsupported("COLLATE"),
            Expr::AtTimeZone { .. } => unsupported("AT TIME ZONE"),
            Expr::Array(_) => unsupported("arrays"),
            Expr::Tuple(_) => unsupported("row constructors"),
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => Err(SqlError::syntax("* is not allowed here")),
            other => unsupported(&format!("expression {}", first_word(other))),
        }
    }

    fn check_subqueries(&self, ecx: &Ecx, pos: Option<usize>) -> Result<(), SqlError> {
        if ecx.allow_subqueries && !ecx.in_aggregate {
            Ok(())
        } else {
            Err(SqlError::unsupported(format!("subqueries in {}", ecx.clause)).at(pos))
        }
    }

    /// `x IN (SELECT y ...)` with SQL's three-valued result: true if some `y = x`; else NULL if
    /// `x` or some `y` is NULL and the subquery is not empty; else false.
    fn bind_in_subquery(
        &self,
        ecx: &Ecx,
        rel: &mut Rel,
        expr: &Expr,
        q: &ast::Query,
        pos: Option<usize>,
    ) -> Result<Typed, SqlError> {
        self.check_subqueries(ecx, pos)?;
        let x = self.bind(ecx, rel, expr)?;
        let xty = x.ty;
        // An unknown-typed literal (`NULL`, `'1'`) takes the subquery column's type, as in Postgres.
        let x_unknown = x.is_unknown();
        let xcol = rel.map(x.expr, Col::anon(xty));
        let (keys, sub) = self.plan_correlated(rel, ecx.qcx, q, &[xcol])?;
        let k = keys.len();
        if sub.arity() - k != 1 {
            return Err(SqlError::syntax("subquery has too many columns"));
        }
        let yty = sub.cols[k].ty.scalar;
        if !x_unknown && unify_scalar(xty.scalar, yty).is_none() {
            return Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!("operator does not exist: {} = {}", xty.scalar.name(), yty.name()),
            ));
        }
        let xpos = keys.iter().position(|&c| c == xcol).expect("x is a key");
        let x_value = if x_unknown {
            ScalarExpr::column(xpos).call_unary(UnaryFunc::Cast(yty))
        } else {
            ScalarExpr::column(xpos)
        };
        let eq = x_value.call_binary(BinaryFunc::Eq, ScalarExpr::column(k));
        let aggs = vec![
            AggregateExpr { func: AggregateFunc::BoolOr, expr: eq.clone(), distinct: false },
            AggregateExpr {
                func: AggregateFunc::Count,
                expr: lit(Datum::Bool(true), ScalarType::Bool),
                distinct: false,
            },
            AggregateExpr { func: AggregateFunc::Count, expr: eq, distinct: false },
        ];
        let mut cols: Vec<Col> = sub.cols[..k].to_vec();
        cols.push(Col::anon(ColumnType::new(ScalarType::Bool, true)));
        cols.push(Col::anon(ColumnType::new(ScalarType::Int64, false)));
        cols.push(Col::anon(ColumnType::new(ScalarType::Int64, false)));
        let reduced = Rel {
            expr: RelExpr::Reduce { input: Box::new(sub.expr), group_key: (0..k).collect(), aggregates: aggs },
            cols,
            n_outer: 0,
        };
        let c = attach(rel, &keys, reduced);
        let (any, total, non_null) = (ScalarExpr::column(c), ScalarExpr::column(c + 1), ScalarExpr::column(c + 2));
        let t = || lit(Datum::Bool(true), ScalarType::Bool);
        let f = || lit(Datum::Bool(false), ScalarType::Bool);
        let expr = if_then(
            any.call_unary(UnaryFunc::IsTrue),
            t(),
            if_then(
                total.clone().call_unary(UnaryFunc::IsNull),
                f(),
                if_then(non_null.call_binary(BinaryFunc::Lt, total), lit(Datum::Null, ScalarType::Bool), f()),
            ),
        );
        Ok(Typed::new(expr, ScalarType::Bool, true))
    }

    fn bind_value(&self, v: &ast::Value, pos: Option<usize>) -> Result<Typed, SqlError> {
        match v {
            ast::Value::Number(n, _) => self.bind_number(n, pos),
            ast::Value::SingleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s)
            | ast::Value::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => Ok(Typed {
                expr: lit(Datum::text(s), ScalarType::Text),
                ty: ColumnType::new(ScalarType::Text, false),
                lit: Lit::String,
            }),
            ast::Value::Boolean(b) => Ok(Typed::new(lit(Datum::Bool(*b), ScalarType::Bool), ScalarType::Bool, false)),
            ast::Value::Null => Ok(Typed {
                expr: lit(Datum::Null, ScalarType::Text),
                ty: ColumnType::new(ScalarType::Text, true),
                lit: Lit::Null,
            }),
            ast::Value::Placeholder(p) => Err(SqlError::unsupported(format!("parameter {p}")).at(pos)),
            other => Err(SqlError::unsupported(format!("literal {other}")).at(pos)),
        }
    }

    fn bind_number(&self, n: &str, pos: Option<usize>) -> Result<Typed, SqlError> {
        if !n.contains(['.', 'e', 'E']) {
            if let Ok(i) = n.parse::<i64>() {
                let ty = if i32::try_from(i).is_ok() { ScalarType::Int32 } else { ScalarType::Int64 };
                return Ok(Typed::new(lit(Datum::Int(i), ty), ty, false));
            }
        }
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                Ok(Typed::new(lit(Datum::float(f), ScalarType::Numeric), ScalarType::Numeric, false))
            }
            _ => Err(SqlError::new(code::INVALID_TEXT_REPRESENTATION, format!("invalid number \"{n}\"")).at(pos)),
        }
    }

    /// Coerces the two sides of a comparison to comparable types.
    fn comparable(
        &self,
        l: Typed,
        r: Typed,
        op: &str,
        pos: Option<usize>,
    ) -> Result<(ScalarExpr, ScalarExpr), SqlError> {
        let (lt, rt) = (l.ty.scalar, r.ty.scalar);
        let target = match (l.is_unknown(), r.is_unknown()) {
            (true, true) => ScalarType::Text,
            (true, false) => rt,
            (false, true) => lt,
            (false, false) => unify_scalar(lt, rt).ok_or_else(|| {
                SqlError::new(
                    code::UNDEFINED_FUNCTION,
                    format!("operator does not exist: {} {op} {}", lt.name(), rt.name()),
                )
                .at(pos)
            })?,
        };
        if target == ScalarType::Jsonb && op != "=" && op != "<>" && op != "IS DISTINCT FROM" {
            return Err(SqlError::unsupported("ordering comparisons of jsonb").at(pos));
        }
        // Integers and floats compare numerically without a cast.
        let keep = |t: &Typed| t.ty.scalar.is_numeric() && target.is_numeric() && !t.is_unknown();
        let l = if keep(&l) { l.expr } else { self.coerce(l, target, pos)? };
        let r = if keep(&r) { r.expr } else { self.coerce(r, target, pos)? };
        Ok((l, r))
    }

    fn bind_binary(
        &self,
        ecx: &Ecx,
        rel: &mut Rel,
        left: &Expr,
        op: &BinaryOperator,
        right: &Expr,
        pos: Option<usize>,
    ) -> Result<Typed, SqlError> {
        let l = self.bind(ecx, rel, left)?;
        let r = self.bind(ecx, rel, right)?;
        let nullable = l.ty.nullable || r.ty.nullable;
        let cmp = |func: BinaryFunc, sym: &str| -> Result<Typed, SqlError> {
            let (a, b) = self.comparable(l.clone(), r.clone(), sym, pos)?;
            Ok(Typed::new(a.call_binary(func, b), ScalarType::Bool, nullable))
        };
        match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let name = if *op == BinaryOperator::And { "AND" } else { "OR" };
                let func = if *op == BinaryOperator::And { VariadicFunc::And } else { VariadicFunc::Or };
                let mut exprs = Vec::new();
                for (t, p) in [(l, self.pos_of(left)), (r, self.pos_of(right))] {
                    match self.coerce_bool(t, name, p)? {
                        ScalarExpr::CallVariadic { func: f, exprs: inner } if f == func => exprs.extend(inner),
                        other => exprs.push(other),
                    }
                }
                Ok(Typed::new(ScalarExpr::CallVariadic { func, exprs }, ScalarType::Bool, nullable))
            }
            BinaryOperator::Eq => cmp(BinaryFunc::Eq, "="),
            BinaryOperator::NotEq => cmp(BinaryFunc::NotEq, "<>"),
            BinaryOperator::Lt => cmp(BinaryFunc::Lt, "<"),
            BinaryOperator::LtEq => cmp(BinaryFunc::Lte, "<="),
            BinaryOperator::Gt => cmp(BinaryFunc::Gt, ">"),
            BinaryOperator::GtEq => cmp(BinaryFunc::Gte, ">="),
            BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
            | BinaryOperator::Modulo => self.arithmetic(op, l, r, nullable, pos),
            BinaryOperator::StringConcat => {
                if l.ty.scalar == ScalarType::Jsonb && r.ty.scalar == ScalarType::Jsonb {
                    return Err(SqlError::unsupported("jsonb || jsonb").at(pos));
                }
                if l.ty.scalar != ScalarType::Text
                    && r.ty.scalar != ScalarType::Text
                    && !l.is_unknown()
                    && !r.is_unknown()
                {
                    return Err(SqlError::new(
                        code::UNDEFINED_FUNCTION,
                        format!("operator does not exist: {} || {}", l.ty.scalar.name(), r.ty.scalar.name()),
                    )
                    .at(pos));
                }
                let a = self.coerce(l, ScalarType::Text, pos)?;
                let b = self.coerce(r, ScalarType::Text, pos)?;
                Ok(Typed::new(a.call_binary(BinaryFunc::Concat, b), ScalarType::Text, nullable))
            }
            BinaryOperator::Arrow | BinaryOperator::LongArrow => {
                let func = if *op == BinaryOperator::Arrow { BinaryFunc::JsonGet } else { BinaryFunc::JsonGetText };
                if l.ty.scalar != ScalarType::Jsonb && !l.is_unknown() {
                    return Err(SqlError::new(
                        code::UNDEFINED_FUNCTION,
                        format!("operator does not exist: {} {op} {}", l.ty.scalar.name(), r.ty.scalar.name()),
                    )
                    .at(pos));
                }
                let a = self.coerce(l, ScalarType::Jsonb, pos)?;
                let b = if r.ty.scalar.is_integer() && !r.is_unknown() {
                    r.expr
                } else if r.ty.scalar == ScalarType::Text || r.is_unknown() {
                    self.coerce(r, ScalarType::Text, pos)?
                } else {
                    return Err(SqlError::new(
                        code::UNDEFINED_FUNCTION,
                        format!("operator does not exist: jsonb {op} {}", r.ty.scalar.name()),
                    )
                    .at(pos));
                };
                let ty = if func == BinaryFunc::JsonGet { ScalarType::Jsonb } else { ScalarType::Text };
                Ok(Typed::new(a.call_binary(func, b), ty, true))
            }
            other => Err(SqlError::unsupported(format!("operator {other}")).at(pos)),
        }
    }

    fn arithmetic(
        &self,
        op: &BinaryOperator,
        l: Typed,
        r: Typed,
        nullable: bool,
        pos: Option<usize>,
    ) -> Result<Typed, SqlError> {
        use ScalarType::*;
        let func = match op {
            BinaryOperator::Plus => BinaryFunc::Add,
            BinaryOperator::Minus => BinaryFunc::Sub,
            BinaryOperator::Multiply => BinaryFunc::Mul,
            BinaryOperator::Divide => BinaryFunc::Div,
            _ => BinaryFunc::Mod,
        };
        let is_time = |t: ScalarType| matches!(t, Date | Timestamp | TimestampTz | Interval);
        // An unknown literal takes the type the other side implies.
        let implied = |other: &Typed| match (other.ty.scalar, func) {
            (Date | Timestamp | TimestampTz, BinaryFunc::Add | BinaryFunc::Sub) => Interval,
            (t, _) => t,
        };
        let (l, r) = match (l.is_unknown(), r.is_unknown()) {
            (true, true) => {
                let (lt, rt) = (Float64, Float64);
                (Typed::new(self.coerce(l, lt, pos)?, lt, nullable), Typed::new(self.coerce(r, rt, pos)?, rt, nullable))
            }
            (true, false) => {
                let t = implied(&r);
                (Typed::new(self.coerce(l, t, pos)?, t, nullable), r)
            }
            (false, true) => {
                let t = implied(&l);
                (l.clone(), Typed::new(self.coerce(r, t, pos)?, t, nullable))
            }
            (false, false) => (l, r),
        };
        let (lt, rt) = (l.ty.scalar, r.ty.scalar);
        let result = if let (Some(a), Some(b)) = (numeric_rank(lt), numeric_rank(rt)) {
            let t = if a >= b { lt } else { rt };
            Some(if t == Float32 { Float64 } else { t })
        } else if is_time(lt) || is_time(rt) {
            match (lt, func, rt) {
                (Timestamp | TimestampTz, BinaryFunc::Add | BinaryFunc::Sub, Interval) => Some(lt),
                (Interval, BinaryFunc::Add, Timestamp | TimestampTz) => Some(rt),
                (Date, BinaryFunc::Add | BinaryFunc::Sub, Interval) => Some(Timestamp),
                (Date, BinaryFunc::Add | BinaryFunc::Sub, Int16 | Int32 | Int64) => Some(Date),
                (Date, BinaryFunc::Sub, Date) => Some(Int32),
                (Timestamp | TimestampTz, BinaryFunc::Sub, Timestamp | TimestampTz) => Some(Interval),
                (Interval, BinaryFunc::Add | BinaryFunc::Sub, Interval) => Some(Interval),
                _ => None,
            }
        } else {
            None
        };
        let Some(ty) = result else {
            return Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!("operator does not exist: {} {op} {}", lt.name(), rt.name()),
            )
            .at(pos));
        };
        Ok(Typed::new(l.expr.call_binary(func, r.expr), ty, nullable))
    }

    fn numeric_unary(&self, func: UnaryFunc, x: Typed, pos: Option<usize>) -> Result<Typed, SqlError> {
        let ty = if x.is_unknown() { ScalarType::Float64 } else { x.ty.scalar };
        if !ty.is_numeric() {
            return Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!("function {}({}) does not exist", format!("{func:?}").to_lowercase(), ty.name()),
            )
            .at(pos));
        }
        let nullable = x.ty.nullable;
        let e = self.coerce(x, ty, pos)?;
        let out_ty = if func == UnaryFunc::Sqrt { ScalarType::Float64 } else { ty };
        Ok(Typed::new(e.call_unary(func), out_ty, nullable))
    }

    fn datetime_call(&self, func: BinaryFunc, unit: &str, x: Typed, pos: Option<usize>) -> Result<Typed, SqlError> {
        let ty = if x.is_unknown() { ScalarType::Timestamp } else { x.ty.scalar };
        if !matches!(ty, ScalarType::Date | ScalarType::Timestamp | ScalarType::TimestampTz) {
            return Err(SqlError::unsupported(format!(
                "{} of {}",
                if func == BinaryFunc::Extract { "extract" } else { "date_trunc" },
                ty.name()
            ))
            .at(pos));
        }
        let probe = Datum::Timestamp(0);
        let check = match func {
            BinaryFunc::Extract => viewcast_plan::datetime::extract(unit, &probe),
            _ => viewcast_plan::datetime::date_trunc(unit, &probe),
        };
        if let Err(e) = check {
            return Err(SqlError::new(code::INVALID_PARAMETER_VALUE, e.to_string()).at(pos));
        }
        let nullable = x.ty.nullable;
        let e = self.coerce(x, ty, pos)?;
        let out = match func {
            BinaryFunc::Extract => ScalarType::Float64,
            _ if ty == ScalarType::TimestampTz => ScalarType::TimestampTz,
            _ => ScalarType::Timestamp,
        };
        Ok(Typed::new(lit(Datum::text(unit), ScalarType::Text).call_binary(func, e), out, nullable))
    }

    fn call_substr(&self, mut args: Vec<Typed>, pos: Option<usize>) -> Result<Typed, SqlError> {
        let nullable = args.iter().any(|t| t.ty.nullable);
        let s = args.remove(0);
        let mut exprs = vec![self.coerce_text(s, "substr", pos)?];
        for a in args {
            if !a.ty.scalar.is_integer() && !a.is_unknown() {
                return Err(SqlError::new(
                    code::UNDEFINED_FUNCTION,
                    format!("function substr(text, {}) does not exist", a.ty.scalar.name()),
                )
                .at(pos));
            }
            exprs.push(self.coerce(a, ScalarType::Int64, pos)?);
        }
        Ok(Typed::new(ScalarExpr::CallVariadic { func: VariadicFunc::Substr, exprs }, ScalarType::Text, nullable))
    }

    fn bind_function(
        &self,
        ecx: &Ecx,
        rel: &mut Rel,
        f: &ast::Function,
        pos: Option<usize>,
    ) -> Result<Typed, SqlError> {
        let name = self.object_name(&f.name)?;
        if f.over.is_some() {
            return Err(SqlError::unsupported("window functions").at(pos));
        }
        if is_aggregate_name(&name) {
            if ecx.in_aggregate {
                return Err(SqlError::new(code::GROUPING_ERROR, "aggregate function calls cannot be nested").at(pos));
            }
            return match ecx.grouping.and_then(|g| g.aggs.iter().find(|(x, _)| x == f)) {
                Some((_, col)) => {
                    let ty = rel.cols[*col].ty;
                    Ok(Typed::new(ScalarExpr::column(*col), ty.scalar, ty.nullable))
                }
                None => Err(SqlError::new(
                    code::GROUPING_ERROR,
                    format!("aggregate functions are not allowed in {}", ecx.clause),
                )
                .at(pos)),
            };
        }
        let args: Vec<&Expr> = match &f.args {
            ast::FunctionArguments::None => {
                // `user`, `current_user` and friends parse as argument-less functions; a column of
                // that name wins, as in Materialize.
                if f.name.0.len() == 1 {
                    if let Ok(t) = self.resolve_column(ecx, rel, None, &name) {
                        return Ok(t);
                    }
                }
                return match name.as_str() {
                    "user" | "current_user" | "session_user" | "current_role" => {
                        Ok(Typed::new(lit(Datum::text("viewcast"), ScalarType::Text), ScalarType::Text, false))
                    }
                    "current_timestamp" | "localtimestamp" => self.now(pos),
                    _ => {
                        Err(SqlError::new(code::UNDEFINED_COLUMN, format!("column \"{name}\" does not exist")).at(pos))
                    }
                };
            }
            ast::FunctionArguments::Subquery(_) => {
                return Err(SqlError::unsupported("subquery function arguments").at(pos))
            }
            ast::FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some()
                    || !list.clauses.is_empty()
                    || f.filter.is_some()
                    || !f.within_group.is_empty()
                {
                    return Err(SqlError::unsupported(format!("DISTINCT/ORDER BY/FILTER in {name}")).at(pos));
                }
                let mut out = Vec::new();
                for a in &list.args {
                    match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => out.push(e),
                        _ => return Err(SqlError::unsupported(format!("this argument to {name}")).at(pos)),
                    }
                }
                out
            }
        };
        let mut bound = Vec::new();
        for a in &args {
            bound.push(self.bind(ecx, rel, a)?);
        }
        let no_such = |bound: &[Typed]| {
            let types: Vec<&str> =
                bound.iter().map(|t| if t.is_unknown() { "unknown" } else { t.ty.scalar.name() }).collect();
            Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!("function {name}({}) does not exist", types.join(", ")),
            )
            .at(pos))
        };
        let nullable = bound.iter().any(|t| t.ty.nullable);
        let n = bound.len();
        let text_unary = |func: UnaryFunc, out: ScalarType, bound: Vec<Typed>| -> Result<Typed, SqlError> {
            let t = bound.into_iter().next().expect("one argument");
            let e = self.coerce_text(t, &name, pos)?;
            Ok(Typed::new(e.call_unary(func), out, nullable))
        };
        match (name.as_str(), n) {
            ("lower", 1) => text_unary(UnaryFunc::Lower, ScalarType::Text, bound),
            ("upper", 1) => text_unary(UnaryFunc::Upper, ScalarType::Text, bound),
            ("length" | "char_length" | "character_length", 1) => {
                text_unary(UnaryFunc::CharLength, ScalarType::Int32, bound)
            }
            ("btrim" | "trim", 1) => text_unary(UnaryFunc::Trim, ScalarType::Text, bound),
            ("ltrim", 1) => text_unary(UnaryFunc::LTrim, ScalarType::Text, bound),
            ("rtrim", 1) => text_unary(UnaryFunc::RTrim, ScalarType::Text, bound),
            ("abs", 1) => self.numeric_unary(UnaryFunc::Abs, bound.into_iter().next().expect("one"), pos),
            ("ceil" | "ceiling", 1) => self.numeric_unary(UnaryFunc::Ceil, bound.into_iter().next().expect("one"), pos),
            ("floor", 1) => self.numeric_unary(UnaryFunc::Floor, bound.into_iter().next().expect("one"), pos),
            ("round", 1) => self.numeric_unary(UnaryFunc::Round, bound.into_iter().next().expect("one"), pos),
            ("sqrt", 1) => self.numeric_unary(UnaryFunc::Sqrt, bound.into_iter().next().expect("one"), pos),
            ("round", 2) | ("power" | "pow", 2) => {
                let mut it = bound.into_iter();
                let (x, y) = (it.next().expect("two"), it.next().expect("two"));
                if !(x.ty.scalar.is_numeric() || x.is_unknown()) || !(y.ty.scalar.is_numeric() || y.is_unknown()) {
                    return no_such(&[x, y]);
                }
                if name == "round" {
                    if !y.ty.scalar.is_integer() && !y.is_unknown() {
                        return no_such(&[x, y]);
                    }
                    let x = self.coerce(x, ScalarType::Float64, pos)?;
                    let y = self.coerce(y, ScalarType::Int64, pos)?;
                    Ok(Typed::new(x.call_binary(BinaryFunc::RoundDigits, y), ScalarType::Numeric, nullable))
                } else {
                    let x = self.coerce(x, ScalarType::Float64, pos)?;
                    let y = self.coerce(y, ScalarType::Float64, pos)?;
                    Ok(Typed::new(x.call_binary(BinaryFunc::Power, y), ScalarType::Float64, nullable))
                }
            }
            ("substr" | "substring", 2 | 3) => self.call_substr(bound, pos),
            ("replace", 3) => {
                let exprs = bound.into_iter().map(|t| self.coerce_text(t, "replace", pos)).collect::<Result<_, _>>()?;
                Ok(Typed::new(
                    ScalarExpr::CallVariadic { func: VariadicFunc::Replace, exprs },
                    ScalarType::Text,
                    nullable,
                ))
            }
            ("concat", _) => {
                let exprs =
                    bound.into_iter().map(|t| self.coerce(t, ScalarType::Text, pos)).collect::<Result<_, _>>()?;
                Ok(Typed::new(ScalarExpr::CallVariadic { func: VariadicFunc::Concat, exprs }, ScalarType::Text, false))
            }
            ("coalesce" | "greatest" | "least", 1..) => {
                let all_nullable = bound.iter().all(|t| t.ty.nullable);
                let (exprs, mut ty) = self.coerce_all(&name.to_uppercase(), bound, pos)?;
                let func = match name.as_str() {
                    "coalesce" => {
                        ty.nullable = all_nullable;
                        VariadicFunc::Coalesce
                    }
                    "greatest" => VariadicFunc::Greatest,
                    _ => VariadicFunc::Least,
                };
                Ok(Typed { expr: ScalarExpr::CallVariadic { func, exprs }, ty, lit: Lit::Typed })
            }
            ("nullif", 2) => {
                let mut it = bound.into_iter();
                let (a, b) = (it.next().expect("two"), it.next().expect("two"));
                let ty = if a.is_unknown() && !b.is_unknown() { b.ty.scalar } else { a.ty.scalar };
                let a_expr = self.coerce(a.clone(), ty, pos)?;
                let (x, y) = self.comparable(a, b, "=", pos)?;
                let expr = if_then(x.call_binary(BinaryFunc::Eq, y), lit(Datum::Null, ty), a_expr);
                Ok(Typed::new(expr, ty, true))
            }
            ("date_trunc" | "date_part", 2) => {
                let mut it = bound.into_iter();
                let (unit, x) = (it.next().expect("two"), it.next().expect("two"));
                let unit_text = match (&unit.expr, unit.lit) {
                    (ScalarExpr::Literal(Datum::Text(t), _), Lit::String) => t.to_string(),
                    _ => return Err(SqlError::unsupported(format!("{name} with a non-constant unit")).at(pos)),
                };
                let func = if name == "date_trunc" { BinaryFunc::DateTrunc } else { BinaryFunc::Extract };
                self.datetime_call(func, &unit_text.to_lowercase(), x, pos)
            }
            ("jsonb_typeof", 1) => {
                let t = bound.into_iter().next().expect("one");
                if t.ty.scalar != ScalarType::Jsonb && !t.is_unknown() {
                    return no_such(&[t]);
                }
                let e = self.coerce(t, ScalarType::Jsonb, pos)?;
                Ok(Typed::new(e.call_unary(UnaryFunc::JsonbTypeof), ScalarType::Text, nullable))
            }
            ("jsonb_build_array", _) => {
                let exprs = bound
                    .into_iter()
                    .map(|t| if t.is_unknown() { self.coerce(t, ScalarType::Text, pos) } else { Ok(t.expr) })
                    .collect::<Result<_, _>>()?;
                Ok(Typed::new(
                    ScalarExpr::CallVariadic { func: VariadicFunc::JsonbBuildArray, exprs },
                    ScalarType::Jsonb,
                    false,
                ))
            }
            ("now" | "current_timestamp", 0) => self.now(pos),
            ("mz_now", 0) => self.bind_mz_now_call(ecx, pos),
            _ => no_such(&bound),
        }
    }

    fn now(&self, pos: Option<usize>) -> Result<Typed, SqlError> {
        let now = if *self.one_shot.borrow() { self.catalog.now() } else { None };
        match now {
            Some(ms) => Ok(Typed::new(
                lit(Datum::Timestamp(i64::try_from(ms).unwrap_or(i64::MAX / 1000) * 1000), ScalarType::TimestampTz),
                ScalarType::TimestampTz,
                false,
            )),
            None => {
                Err(SqlError::unsupported("now() outside a one-shot SELECT (use mz_now() temporal filters)").at(pos))
            }
        }
    }
}

fn first_word(e: &Expr) -> String {
    let s = e.to_string();
    s.split_whitespace().next().unwrap_or("").chars().take(40).collect()
}
