//! Queries: FROM, joins, WHERE, grouping, projection, set operations, VALUES, ORDER BY / LIMIT,
//! CTEs, and the decorrelation of subqueries.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use sqlparser::ast::{self, Expr};
use viewcast_plan::{AggregateExpr, BinaryFunc, ColumnOrder, JoinKind, RelExpr, ScalarExpr, UnaryFunc, VariadicFunc};
use viewcast_repr::{ColumnType, Datum, Jsonb, Row, ScalarType};

use super::scalar::{is_aggregate_name, Ecx, Typed};
use super::Planner;
use crate::error::{code, SqlError};
use crate::parser::normalize_ident;

/// One column of a relation being planned, with what names reach it.
#[derive(Clone, Debug)]
pub(crate) struct Col {
    /// The table name or alias that qualifies it.
    pub table: Option<String>,
    /// Empty for helper columns no name can reach.
    pub name: String,
    pub ty: ColumnType,
    /// Hidden from `*` and unqualified names (the right side of `USING`), still reachable qualified.
    pub hidden: bool,
    /// 0 for the query's own columns, `d` for a column of the query `d` levels out.
    pub depth: usize,
}

impl Col {
    pub fn anon(ty: ColumnType) -> Col {
        Col { table: None, name: String::new(), ty, hidden: false, depth: 0 }
    }

    pub fn named(name: &str, ty: ColumnType) -> Col {
        Col { table: None, name: name.to_string(), ty, hidden: false, depth: 0 }
    }
}

/// A relation under construction: its expression and its columns. The first `n_outer` columns are
/// the outer relation's (see the module doc of `plan`); every operator keeps them first.
#[derive(Clone, Debug)]
pub(crate) struct Rel {
    pub expr: RelExpr,
    pub cols: Vec<Col>,
    pub n_outer: usize,
}

impl Rel {
    /// The relation with one empty row, the FROM of `SELECT 1`.
    pub fn unit() -> Rel {
        Rel { expr: RelExpr::Constant { rows: vec![(Row::default(), 1)], arity: 0 }, cols: Vec::new(), n_outer: 0 }
    }

    fn is_unit(&self) -> bool {
        matches!(&self.expr, RelExpr::Constant { rows, arity: 0 } if rows.len() == 1 && rows[0].1 == 1)
    }

    pub fn arity(&self) -> usize {
        self.cols.len()
    }

    /// Appends a computed column, returning its position.
    pub fn map(&mut self, expr: ScalarExpr, col: Col) -> usize {
        if let ScalarExpr::Column(i) = expr {
            return i;
        }
        let input = std::mem::replace(&mut self.expr, RelExpr::Constant { rows: Vec::new(), arity: 0 });
        self.expr = match input {
            RelExpr::Map { input, mut scalars } => {
                scalars.push(expr);
                RelExpr::Map { input, scalars }
            }
            other => RelExpr::Map { input: Box::new(other), scalars: vec![expr] },
        };
        self.cols.push(col);
        self.cols.len() - 1
    }

    /// Keeps the listed columns, in order.
    pub fn project(self, outputs: Vec<usize>) -> Rel {
        if outputs.iter().copied().eq(0..self.arity()) {
            return self;
        }
        let cols = outputs.iter().map(|&i| self.cols[i].clone()).collect();
        let expr = match self.expr {
            RelExpr::Project { input, outputs: inner } => {
                RelExpr::Project { input, outputs: outputs.iter().map(|&i| inner[i]).collect() }
            }
            other => RelExpr::Project { input: Box::new(other), outputs },
        };
        Rel { expr, cols, n_outer: self.n_outer }
    }

    pub fn filter(&mut self, predicates: Vec<ScalarExpr>) {
        if predicates.is_empty() {
            return;
        }
        let input = std::mem::replace(&mut self.expr, RelExpr::Constant { rows: Vec::new(), arity: 0 });
        self.expr = match input {
            RelExpr::Filter { input, predicates: mut existing } => {
                existing.extend(predicates);
                RelExpr::Filter { input, predicates: existing }
            }
            other => RelExpr::Filter { input: Box::new(other), predicates },
        };
    }
}

/// Tracks which outer columns (positions below `n_outer`) a query reads.
#[derive(Default)]
pub(crate) struct Qcx {
    pub n_outer: usize,
    pub used: RefCell<BTreeSet<usize>>,
}

/// The outer relation a correlated query is planned against.
pub(crate) struct Outer {
    pub expr: RelExpr,
    pub cols: Vec<Col>,
}

/// A query's plan before its ORDER BY / LIMIT is applied: `rel` has the outer prefix, `n_out`
/// output columns, then hidden columns only the ORDER BY reads.
pub(crate) struct Planned {
    pub rel: Rel,
    pub n_out: usize,
    pub order: Vec<ColumnOrder>,
    pub limit: Option<usize>,
    pub offset: usize,
}

impl Planned {
    /// The query as a relation: `TopK` when it has a LIMIT or OFFSET (an ORDER BY alone does not
    /// change a multiset), without the hidden sort columns.
    pub fn into_rel(self) -> Rel {
        let mut rel = self.rel;
        if self.limit.is_some() || self.offset > 0 {
            rel.expr = RelExpr::TopK {
                input: Box::new(rel.expr),
                group_key: (0..rel.n_outer).collect(),
                order_key: self.order,
                limit: self.limit,
                offset: self.offset,
            };
        }
        let keep = rel.n_outer + self.n_out;
        rel.project((0..keep).collect())
    }
}

/// Per aggregated query: how expressions over the pre-aggregation relation map to columns after it.
pub(crate) struct Grouping {
    pub pre_cols: Vec<Col>,
    pub n_outer: usize,
    /// GROUP BY expressions and their output columns.
    pub exprs: Vec<(Expr, usize)>,
    /// Pre-aggregation columns that are grouped by directly.
    pub col_map: HashMap<usize, usize>,
    pub aggs: Vec<(ast::Function, usize)>,
}

/// A literal of type `ty` that is never NULL, used to make NULL keys joinable.
fn placeholder(ty: ScalarType) -> Datum {
    match ty {
        ScalarType::Bool => Datum::Bool(false),
        ScalarType::Int16 | ScalarType::Int32 | ScalarType::Int64 => Datum::Int(0),
        ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric => Datum::float(0.0),
        ScalarType::Text => Datum::text(""),
        ScalarType::Jsonb => Datum::Jsonb(Jsonb::null()),
        ScalarType::Date => Datum::Date(0),
        ScalarType::Timestamp | ScalarType::TimestampTz => Datum::Timestamp(0),
        ScalarType::Interval => Datum::Interval { months: 0, days: 0, micros: 0 },
    }
}

impl Planner<'_> {
    /// Plans a query with its own ORDER BY / LIMIT folded in as a relation; returns the outer
    /// columns it read.
    pub(crate) fn plan_query_rel(
        &self,
        q: &ast::Query,
        outer: Option<&Outer>,
    ) -> Result<(Rel, BTreeSet<usize>), SqlError> {
        let qcx = Qcx { n_outer: outer.map(|o| o.cols.len()).unwrap_or(0), used: RefCell::default() };
        let planned = self.plan_query(q, outer, &qcx)?;
        Ok((planned.into_rel(), qcx.used.into_inner()))
    }

    pub(crate) fn plan_query(&self, q: &ast::Query, outer: Option<&Outer>, qcx: &Qcx) -> Result<Planned, SqlError> {
        let unsupported = |what: &str| Err(SqlError::unsupported(what).at(self.pos_of(q)));
        if q.fetch.is_some() {
            return unsupported("FETCH");
        }
        if !q.locks.is_empty() {
            return unsupported("locking clauses");
        }
        if q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return unsupported("this query clause");
        }
        let ctes_before = self.ctes.borrow().len();
        let result = (|| {
            if let Some(with) = &q.with {
                if with.recursive {
                    return Err(SqlError::unsupported("WITH RECURSIVE").at(self.pos_of(with)));
                }
                for cte in &with.cte_tables {
                    let name = normalize_ident(&cte.alias.name);
                    let (mut rel, _) = self.plan_query_rel(&cte.query, None)?;
                    self.rename_columns(&mut rel, &cte.alias, &name)?;
                    self.ctes.borrow_mut().push((name, rel));
                }
            }
            let order_by = match &q.order_by {
                None => &[][..],
                Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), interpolate: None }) => &exprs[..],
                Some(o) => return Err(SqlError::unsupported("this ORDER BY form").at(self.pos_of(o))),
            };
            for o in order_by {
                if matches!(o.options.sort, Some(ast::OrderBySort::Using(_))) || o.with_fill.is_some() {
                    return Err(SqlError::unsupported("ORDER BY USING / WITH FILL").at(self.pos_of(&o.expr)));
                }
            }
            let mut planned = match &*q.body {
                ast::SetExpr::Select(select) => self.plan_select(select, outer, qcx, order_by)?,
                body => {
                    let rel = self.plan_set_expr(body, outer, qcx)?;
                    let n_out = rel.arity() - rel.n_outer;
                    let mut order = Vec::new();
                    for o in order_by {
                        let column = self.output_column(&o.expr, &rel.cols[rel.n_outer..], &[])?.ok_or_else(|| {
                            SqlError::new(
                                code::INVALID_COLUMN_REFERENCE,
                                "ORDER BY on a set operation must name an output column",
                            )
                            .at(self.pos_of(&o.expr))
                        })?;
                        order.push(column_order(rel.n_outer + column, &o.options));
                    }
                    Planned { rel, n_out, order, limit: None, offset: 0 }
                }
            };
            if let Some(limit) = &q.limit_clause {
                let (limit, offset) = match limit {
                    ast::LimitClause::LimitOffset { limit, offset, limit_by } => {
                        if !limit_by.is_empty() {
                            return unsupported("LIMIT BY");
                        }
                        (limit.as_ref(), offset.as_ref().map(|o| &o.value))
                    }
                    ast::LimitClause::OffsetCommaLimit { offset, limit } => (Some(limit), Some(offset)),
                };
                if let Some(l) = limit {
                    planned.limit = self.constant_count(l, "LIMIT")?;
                }
                if let Some(o) = offset {
                    planned.offset = self.constant_count(o, "OFFSET")?.unwrap_or(0);
                }
            }
            Ok(planned)
        })();
        self.ctes.borrow_mut().truncate(ctes_before);
        result
    }

    /// A LIMIT/OFFSET value: a constant non-negative integer; `NULL` / `ALL` mean none.
    fn constant_count(&self, e: &Expr, clause: &str) -> Result<Option<usize>, SqlError> {
        let mut rel = Rel::unit();
        let qcx = Qcx::default();
        let t = self.bind(&Ecx::new(&qcx, clause), &mut rel, e)?;
        let err = |m: String| SqlError::new(code::INVALID_PARAMETER_VALUE, m).at(self.pos_of(e));
        if !t.ty.scalar.is_integer() && !t.is_null_literal() {
            return Err(SqlError::new(
                code::DATATYPE_MISMATCH,
                format!("argument of {clause} must be type bigint, not type {}", t.ty.scalar.name()),
            )
            .at(self.pos_of(e)));
        }
        match t.expr.eval(&[]) {
            Ok(Datum::Null) => Ok(None),
            Ok(Datum::Int(n)) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Ok(_) => Err(err(format!("{clause} must not be negative"))),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Resolves an ORDER BY item that names an output column: an ordinal, an output name, or an
    /// expression identical to a select item. Positions are relative to `outputs`.
    pub(crate) fn output_column(
        &self,
        e: &Expr,
        outputs: &[Col],
        items: &[Option<&Expr>],
    ) -> Result<Option<usize>, SqlError> {
        if let Expr::Value(v) = e {
            if let ast::Value::Number(n, _) = &v.value {
                return match n.parse::<usize>() {
                    Ok(k) if k >= 1 && k <= outputs.len() => Ok(Some(k - 1)),
                    _ => Err(SqlError::new(
                        code::INVALID_COLUMN_REFERENCE,
                        format!("ORDER BY position {n} is not in select list"),
                    )
                    .at(self.pos_of(e))),
                };
            }
        }
        if let Expr::Identifier(ident) = e {
            let name = normalize_ident(ident);
            let mut found = outputs.iter().enumerate().filter(|(_, c)| c.name == name);
            if let Some((i, _)) = found.next() {
                if found.next().is_some() {
                    return Err(SqlError::new(code::AMBIGUOUS_COLUMN, format!("ORDER BY \"{name}\" is ambiguous"))
                        .at(self.pos_of(e)));
                }
                return Ok(Some(i));
            }
        }
        Ok(items.iter().position(|item| *item == Some(e)))
    }

    fn rename_columns(&self, rel: &mut Rel, alias: &ast::TableAlias, table: &str) -> Result<(), SqlError> {
        let visible: Vec<usize> = (rel.n_outer..rel.arity()).filter(|&i| !rel.cols[i].hidden).collect();
        if alias.columns.len() > visible.len() {
            return Err(SqlError::syntax(format!(
                "table \"{table}\" has {} columns available but {} columns specified",
                visible.len(),
                alias.columns.len()
            ))
            .at(self.pos(alias.name.span)));
        }
        for (i, c) in visible.iter().zip(&alias.columns) {
            rel.cols[*i].name = normalize_ident(&c.name);
        }
        for c in &mut rel.cols[rel.n_outer..] {
            c.table = Some(table.to_string());
        }
        Ok(())
    }

    fn plan_set_expr(&self, body: &ast::SetExpr, outer: Option<&Outer>, qcx: &Qcx) -> Result<Rel, SqlError> {
        match body {
            ast::SetExpr::Select(select) => Ok(self.plan_select(select, outer, qcx, &[])?.into_rel()),
            ast::SetExpr::Query(q) => Ok(self.plan_query(q, outer, qcx)?.into_rel()),
            ast::SetExpr::Values(values) => self.plan_values(values, outer),
            ast::SetExpr::SetOperation { left, op, set_quantifier, right } => {
                let l = self.plan_set_expr(left, outer, qcx)?;
                let r = self.plan_set_expr(right, outer, qcx)?;
                let op_name = op.to_string().to_uppercase();
                let pos = self.pos_of(body);
                if l.arity() != r.arity() {
                    return Err(
                        SqlError::syntax(format!("each {op_name} query must have the same number of columns")).at(pos)
                    );
                }
                let mut targets = Vec::new();
                for i in l.n_outer..l.arity() {
                    let (a, b) = (l.cols[i].ty.scalar, r.cols[i].ty.scalar);
                    let t = super::scalar::unify_scalar(a, b).ok_or_else(|| {
                        SqlError::new(
                            code::DATATYPE_MISMATCH,
                            format!("{op_name} types {} and {} cannot be matched", a.name(), b.name()),
                        )
                        .at(pos)
                    })?;
                    targets.push(t);
                }
                let l = coerce_columns(l, &targets);
                let r = coerce_columns(r, &targets);
                let distinct = match set_quantifier {
                    ast::SetQuantifier::All => false,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => true,
                    other => return Err(SqlError::unsupported(format!("{op_name} {other}")).at(pos)),
                };
                let mut cols = l.cols.clone();
                for (c, rc) in cols.iter_mut().zip(&r.cols) {
                    c.ty.nullable |= rc.ty.nullable;
                    c.table = None;
                }
                let n_outer = l.n_outer;
                let (le, re) = (l.expr, r.expr);
                let negate = |e: RelExpr| RelExpr::Negate { input: Box::new(e) };
                let distinct_of = |e: RelExpr| RelExpr::Distinct { input: Box::new(e) };
                let threshold = |e: RelExpr| RelExpr::Threshold { input: Box::new(e) };
                let union = |a: RelExpr, b: RelExpr| RelExpr::Union { inputs: vec![a, b] };
                let expr = match (op, distinct) {
                    (ast::SetOperator::Union, false) => union(le, re),
                    (ast::SetOperator::Union, true) => distinct_of(union(le, re)),
                    (ast::SetOperator::Except | ast::SetOperator::Minus, false) => threshold(union(le, negate(re))),
                    (ast::SetOperator::Except | ast::SetOperator::Minus, true) => {
                        threshold(union(distinct_of(le), negate(distinct_of(re))))
                    }
                    // min(l, r) = l - max(l - r, 0)
                    (ast::SetOperator::Intersect, all_or_distinct) => {
                        let (le, re) = if all_or_distinct { (distinct_of(le), distinct_of(re)) } else { (le, re) };
                        threshold(union(le.clone(), negate(threshold(union(le, negate(re))))))
                    }
                };
                Ok(Rel { expr, cols, n_outer })
            }
            other => Err(SqlError::unsupported(first_words(&other.to_string())).at(self.pos_of(other))),
        }
    }

    fn plan_values(&self, values: &ast::Values, outer: Option<&Outer>) -> Result<Rel, SqlError> {
        let qcx = Qcx::default();
        let mut rows: Vec<Vec<Typed>> = Vec::new();
        for row in &values.rows {
            let mut unit = Rel::unit();
            let mut out = Vec::new();
            for e in &row.content {
                out.push(self.bind(&Ecx::new(&qcx, "VALUES"), &mut unit, e)?);
            }
            if let Some(first) = rows.first() {
                if first.len() != out.len() {
                    return Err(
                        SqlError::syntax("VALUES lists must all be the same length").at(self.pos_of(&row.content[0]))
                    );
                }
            }
            rows.push(out);
        }
        let arity = rows.first().map(Vec::len).unwrap_or(0);
        let mut cols = Vec::new();
        for c in 0..arity {
            let column: Vec<&Typed> = rows.iter().map(|r| &r[c]).collect();
            let ty = self.unify("VALUES", &column, values.rows[0].content.get(c).and_then(|e| self.pos_of(e)))?;
            let nullable = column.iter().any(|t| t.ty.nullable);
            cols.push(Col::named(&format!("column{}", c + 1), ColumnType::new(ty, nullable)));
        }
        let mut consts = Vec::new();
        for (r, row) in rows.into_iter().enumerate() {
            let mut datums = Vec::new();
            for (c, t) in row.into_iter().enumerate() {
                let pos = self.pos_of(&values.rows[r].content[c]);
                let e = self.coerce(t, cols[c].ty.scalar, pos)?;
                let d = e.eval(&[]).map_err(|err| SqlError::new(err.sqlstate(), err.to_string()).at(pos))?;
                datums.push(d);
            }
            consts.push((Row::new(datums), 1));
        }
        let rel = Rel { expr: RelExpr::Constant { rows: consts, arity }, cols, n_outer: 0 };
        Ok(match outer {
            None => rel,
            Some(o) => cross_join(Rel { expr: o.expr.clone(), cols: o.cols.clone(), n_outer: o.cols.len() }, rel),
        })
    }

    fn plan_select(
        &self,
        s: &ast::Select,
        outer: Option<&Outer>,
        qcx: &Qcx,
        order_by: &[ast::OrderByExpr],
    ) -> Result<Planned, SqlError> {
        let pos = self.pos(s.select_token.0.span);
        let unsupported = |what: &str| Err(SqlError::unsupported(what).at(pos));
        if s.top.is_some() {
            return unsupported("TOP");
        }
        if s.into.is_some() {
            return unsupported("SELECT INTO");
        }
        if !s.lateral_views.is_empty() || s.prewhere.is_some() || !s.connect_by.is_empty() {
            return unsupported("this SELECT clause");
        }
        if !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty() {
            return unsupported("CLUSTER/DISTRIBUTE/SORT BY");
        }
        if !s.named_window.is_empty() {
            return unsupported("WINDOW");
        }
        if s.qualify.is_some() {
            return unsupported("QUALIFY");
        }
        if s.exclude.is_some() {
            return unsupported("EXCLUDE");
        }
        let distinct = match &s.distinct {
            None | Some(ast::Distinct::All) => false,
            Some(ast::Distinct::Distinct) => true,
            Some(ast::Distinct::On(_)) => return unsupported("DISTINCT ON"),
        };

        // FROM
        let mut rel = match outer {
            Some(o) => Rel { expr: o.expr.clone(), cols: o.cols.clone(), n_outer: o.cols.len() },
            None => Rel::unit(),
        };
        for twj in &s.from {
            let item = self.plan_table_with_joins(twj)?;
            rel = cross_join(rel, item);
        }

        // WHERE
        if let Some(selection) = &s.selection {
            self.mark_temporal(selection);
            let t = self.bind(&Ecx::new(qcx, "WHERE").subqueries(), &mut rel, selection)?;
            let pred = self.coerce_bool(t, "WHERE", self.pos_of(selection))?;
            rel.filter(split_conjuncts(pred));
            rel = push_equi_predicates(rel);
        }

        // GROUP BY / aggregates / HAVING
        let group_exprs: Vec<&Expr> = match &s.group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return unsupported("GROUP BY modifiers");
                }
                exprs.iter().collect()
            }
            ast::GroupByExpr::All(_) => return unsupported("GROUP BY ALL"),
        };
        let mut agg_calls: Vec<&ast::Function> = Vec::new();
        for item in &s.projection {
            if let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } = item {
                collect_aggregates(e, &mut agg_calls);
            }
        }
        if let Some(h) = &s.having {
            collect_aggregates(h, &mut agg_calls);
        }
        for o in order_by {
            collect_aggregates(&o.expr, &mut agg_calls);
        }
        let select_items: Vec<Option<&Expr>> = s
            .projection
            .iter()
            .map(|item| match item {
                ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
                _ => None,
            })
            .collect();
        let grouping = if !group_exprs.is_empty() || s.having.is_some() || !agg_calls.is_empty() {
            let (post, grouping) = self.plan_grouping(rel, qcx, &group_exprs, &agg_calls, s, outer)?;
            rel = post;
            Some(grouping)
        } else {
            None
        };
        let ecx = |clause: &'static str| {
            let e = Ecx::new(qcx, clause).subqueries();
            match &grouping {
                Some(g) => e.grouped(g),
                None => e,
            }
        };
        if let Some(h) = &s.having {
            self.mark_temporal(h);
            let t = self.bind(&ecx("HAVING"), &mut rel, h)?;
            let pred = self.coerce_bool(t, "HAVING", self.pos_of(h))?;
            rel.filter(split_conjuncts(pred));
        }

        // SELECT list
        let mut outs: Vec<(usize, String)> = Vec::new();
        for item in &s.projection {
            match item {
                ast::SelectItem::Wildcard(opts) | ast::SelectItem::QualifiedWildcard(_, opts) => {
                    if opts.opt_ilike.is_some()
                        || opts.opt_exclude.is_some()
                        || opts.opt_except.is_some()
                        || opts.opt_replace.is_some()
                        || opts.opt_rename.is_some()
                    {
                        return unsupported("wildcard options");
                    }
                    let table = match item {
                        ast::SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                            Some(self.object_name(n)?)
                        }
                        ast::SelectItem::QualifiedWildcard(kind, _) => {
                            return Err(SqlError::unsupported(format!("{kind}")).at(pos));
                        }
                        _ => None,
                    };
                    let cols: &[Col] = match &grouping {
                        Some(g) => &g.pre_cols,
                        None => &rel.cols,
                    };
                    let n_outer = rel.n_outer;
                    let mut any = false;
                    for (i, c) in cols.iter().enumerate().skip(n_outer) {
                        if c.name.is_empty() || c.hidden && table.is_none() {
                            continue;
                        }
                        if let Some(t) = &table {
                            if c.table.as_deref() != Some(t.as_str()) {
                                continue;
                            }
                        }
                        any = true;
                        let out = match &grouping {
                            None => i,
                            Some(g) => *g.col_map.get(&i).ok_or_else(|| {
                                SqlError::new(
                                    code::GROUPING_ERROR,
                                    format!(
                                        "column \"{}\" must appear in the GROUP BY clause or be used in an aggregate function",
                                        c.name
                                    ),
                                )
                                .at(pos)
                            })?,
                        };
                        outs.push((out, c.name.clone()));
                    }
                    if let (Some(t), false) = (&table, any) {
                        return Err(SqlError::new(
                            code::UNDEFINED_TABLE,
                            format!("missing FROM-clause entry for table \"{t}\""),
                        )
                        .at(pos));
                    }
                    if table.is_none() && s.from.is_empty() {
                        return Err(SqlError::syntax("SELECT * with no tables specified is not valid").at(pos));
                    }
                }
                ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                    let name = match item {
                        ast::SelectItem::ExprWithAlias { alias, .. } => normalize_ident(alias),
                        _ => column_name(e),
                    };
                    let t = self.bind(&ecx("SELECT"), &mut rel, e)?;
                    let ty = t.ty;
                    let ty = if t.is_null_literal() || t.is_string_literal() {
                        ColumnType::new(ScalarType::Text, ty.nullable)
                    } else {
                        ty
                    };
                    let i = rel.map(t.expr, Col::anon(ty));
                    outs.push((i, name));
                }
                ast::SelectItem::ExprWithAliases { .. } => return unsupported("multiple aliases"),
            }
        }
        let select_item_of_out: Vec<Option<&Expr>> = {
            // Map each output back to its select item expression (wildcards have none).
            let mut v = Vec::new();
            for (item, e) in s.projection.iter().zip(&select_items) {
                match item {
                    ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {}
                    _ => v.push(*e),
                }
            }
            v
        };
        let item_exprs: Vec<Option<&Expr>> = if select_item_of_out.len() == outs.len() {
            select_item_of_out
        } else {
            // With wildcards the positions differ; only match by name and ordinal then.
            vec![None; outs.len()]
        };

        let n_outer = rel.n_outer;
        let out_cols: Vec<Col> = outs
            .iter()
            .map(|(i, name)| {
                let c = &rel.cols[*i];
                Col { table: None, name: name.clone(), ty: c.ty, hidden: false, depth: 0 }
            })
            .collect();

        // ORDER BY: output columns first, else (without DISTINCT) any expression over the input.
        let mut order_cols: Vec<(usize, &ast::OrderByOptions)> = Vec::new();
        let mut hidden: Vec<usize> = Vec::new();
        for o in order_by {
            let target = match self.output_column(&o.expr, &out_cols, &item_exprs)? {
                Some(k) => Target::Output(k),
                None if distinct => {
                    return Err(SqlError::new(
                        code::INVALID_COLUMN_REFERENCE,
                        "for SELECT DISTINCT, ORDER BY expressions must appear in select list",
                    )
                    .at(self.pos_of(&o.expr)))
                }
                None => {
                    let t = self.bind(&ecx("ORDER BY"), &mut rel, &o.expr)?;
                    let ty = t.ty;
                    let i = rel.map(t.expr, Col::anon(ty));
                    hidden.push(i);
                    Target::Hidden(hidden.len() - 1)
                }
            };
            let column = match target {
                Target::Output(k) => n_outer + k,
                Target::Hidden(h) => n_outer + outs.len() + h,
            };
            order_cols.push((column, &o.options));
        }

        let mut project: Vec<usize> = (0..n_outer).collect();
        project.extend(outs.iter().map(|(i, _)| *i));
        project.extend(hidden.iter().copied());
        let mut rel = rel.project(project);
        for (c, oc) in rel.cols[n_outer..].iter_mut().zip(out_cols) {
            *c = oc;
        }
        for c in &mut rel.cols[n_outer + outs.len()..] {
            c.name.clear();
        }
        if distinct {
            rel.expr = RelExpr::Distinct { input: Box::new(rel.expr) };
        }
        let order = order_cols.into_iter().map(|(c, o)| column_order(c, o)).collect();
        Ok(Planned { rel, n_out: outs.len(), order, limit: None, offset: 0 })
    }

    fn plan_grouping(
        &self,
        mut rel: Rel,
        qcx: &Qcx,
        group_exprs: &[&Expr],
        agg_calls: &[&ast::Function],
        s: &ast::Select,
        outer: Option<&Outer>,
    ) -> Result<(Rel, Grouping), SqlError> {
        let n_outer = rel.n_outer;
        let mut key: Vec<usize> = (0..n_outer).collect();
        let mut exprs: Vec<(Expr, usize)> = Vec::new();
        let mut col_map: HashMap<usize, usize> = HashMap::new();
        let mut post_cols: Vec<Col> = rel.cols[..n_outer].to_vec();
        for i in 0..n_outer {
            col_map.insert(i, i);
        }
        for &g in group_exprs {
            // `GROUP BY 1` and `GROUP BY alias` name select items, as in Postgres.
            let g = self.group_by_target(g, s, &rel)?;
            let t = self.bind(&Ecx::new(qcx, "GROUP BY"), &mut rel, g)?;
            let ty = t.ty;
            let direct = if let ScalarExpr::Column(i) = t.expr { Some(i) } else { None };
            let i = rel.map(t.expr, Col::anon(ty));
            let out = match key.iter().position(|&k| k == i) {
                Some(p) => p,
                None => {
                    key.push(i);
                    let mut c = rel.cols[i].clone();
                    c.hidden = false;
                    post_cols.push(c);
                    key.len() - 1
                }
            };
            if let Some(d) = direct {
                col_map.insert(d, out);
            }
            exprs.push((g.clone(), out));
        }
        let mut aggs: Vec<(ast::Function, usize)> = Vec::new();
        let mut aggregates: Vec<AggregateExpr> = Vec::new();
        for &f in agg_calls {
            if aggs.iter().any(|(g, _)| g == f) {
                continue;
            }
            let (agg, ty) = self.plan_aggregate(f, &mut rel, qcx)?;
            aggregates.push(agg);
            post_cols.push(Col::anon(ty));
            aggs.push((f.clone(), key.len() + aggregates.len() - 1));
        }
        let pre_cols = rel.cols.clone();
        let defaults: Vec<ScalarExpr> = aggregates
            .iter()
            .zip(&post_cols[key.len()..])
            .map(|(a, c)| ScalarExpr::literal(a.func.default_value(), c.ty.scalar))
            .collect();
        let mut expr = RelExpr::Reduce { input: Box::new(rel.expr), group_key: key, aggregates };
        if let (true, Some(outer)) = (group_exprs.is_empty(), outer) {
            // A global aggregate has one row per outer row even when its input is empty for that
            // row (`SELECT count(*) ... WHERE u.a = t.a` is 0, not missing): add the default row
            // for every outer key without a group.
            let present = RelExpr::Project { input: Box::new(expr.clone()), outputs: (0..n_outer).collect() };
            let missing = RelExpr::Threshold {
                input: Box::new(RelExpr::Union {
                    inputs: vec![
                        RelExpr::Distinct { input: Box::new(outer.expr.clone()) },
                        RelExpr::Negate { input: Box::new(present) },
                    ],
                }),
            };
            let with_defaults = RelExpr::Map { input: Box::new(missing), scalars: defaults };
            expr = RelExpr::Union { inputs: vec![expr, with_defaults] };
        }
        Ok((Rel { expr, cols: post_cols, n_outer }, Grouping { pre_cols, n_outer, exprs, col_map, aggs }))
    }

    fn group_by_target<'e>(&self, g: &'e Expr, s: &'e ast::Select, rel: &Rel) -> Result<&'e Expr, SqlError> {
        let items: Vec<(Option<String>, Option<&Expr>)> = s
            .projection
            .iter()
            .map(|item| match item {
                ast::SelectItem::UnnamedExpr(e) => (None, Some(e)),
                ast::SelectItem::ExprWithAlias { expr, alias } => (Some(normalize_ident(alias)), Some(expr)),
                _ => (None, None),
            })
            .collect();
        match g {
            Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ast::Value::Number(n, _) = &v.value else { unreachable!() };
                match n.parse::<usize>().ok().and_then(|k| k.checked_sub(1)).and_then(|k| items.get(k)) {
                    Some((_, Some(e))) => Ok(e),
                    _ => Err(SqlError::new(
                        code::INVALID_COLUMN_REFERENCE,
                        format!("GROUP BY position {n} is not in select list"),
                    )
                    .at(self.pos_of(g))),
                }
            }
            Expr::Identifier(ident) => {
                let name = normalize_ident(ident);
                let is_input_column = rel.cols.iter().any(|c| c.name == name);
                if !is_input_column {
                    if let Some((_, Some(e))) = items.iter().find(|(alias, _)| alias.as_deref() == Some(&name)) {
                        return Ok(e);
                    }
                }
                Ok(g)
            }
            _ => Ok(g),
        }
    }

    fn plan_aggregate(
        &self,
        f: &ast::Function,
        rel: &mut Rel,
        qcx: &Qcx,
    ) -> Result<(AggregateExpr, ColumnType), SqlError> {
        use viewcast_plan::AggregateFunc as A;
        let pos = self.pos_of(f);
        let name = self.object_name(&f.name)?;
        if f.over.is_some() {
            return Err(SqlError::unsupported("window functions").at(pos));
        }
        if !f.within_group.is_empty() || !matches!(f.parameters, ast::FunctionArguments::None) {
            return Err(SqlError::unsupported(format!("{name} with these arguments")).at(pos));
        }
        let list = match &f.args {
            ast::FunctionArguments::List(l) => l,
            _ => return Err(SqlError::syntax(format!("{name} requires arguments")).at(pos)),
        };
        if !list.clauses.is_empty() {
            return Err(SqlError::unsupported(format!("{name} with ORDER BY or other clauses")).at(pos));
        }
        let distinct = matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
        let ecx = Ecx::new(qcx, "aggregate function calls").no_aggregates();
        let mut args = Vec::new();
        let mut star = false;
        for a in &list.args {
            match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => args.push(self.bind(&ecx, rel, e)?),
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) if name == "count" => star = true,
                _ => return Err(SqlError::unsupported(format!("this argument to {name}")).at(pos)),
            }
        }
        let filter = match &f.filter {
            Some(cond) => {
                let t = self.bind(&ecx, rel, cond)?;
                Some(self.coerce_bool(t, "FILTER", self.pos_of(&**cond))?)
            }
            None => None,
        };
        let no_such = |args: &[Typed]| {
            let types: Vec<&str> = args.iter().map(|t| t.ty.scalar.name()).collect();
            Err(SqlError::new(
                code::UNDEFINED_FUNCTION,
                format!("function {name}({}) does not exist", types.join(", ")),
            )
            .at(pos))
        };
        let true_lit = || ScalarExpr::literal(Datum::Bool(true), ScalarType::Bool);
        let (func, expr, ty) = match (name.as_str(), star, args.len()) {
            ("count", true, 0) => {
                if distinct {
                    return Err(SqlError::syntax("COUNT(DISTINCT *) is not valid").at(pos));
                }
                (A::Count, true_lit(), ColumnType::new(ScalarType::Int64, false))
            }
            ("count", false, 1) => {
                let t = args.pop().expect("one argument");
                (A::Count, t.expr, ColumnType::new(ScalarType::Int64, false))
            }
            ("sum", false, 1) => {
                let t = args.pop().expect("one argument");
                let (func, ty) = match t.ty.scalar {
                    s if s.is_integer() => (A::SumInt, ScalarType::Int64),
                    ScalarType::Float32 | ScalarType::Float64 => (A::SumFloat, ScalarType::Float64),
                    ScalarType::Numeric => (A::SumFloat, ScalarType::Numeric),
                    _ if t.is_null_literal() || t.is_string_literal() => (A::SumFloat, ScalarType::Float64),
                    _ => return no_such(&[t]),
                };
                let expr = if t.is_string_literal() { self.coerce(t, ScalarType::Float64, pos)? } else { t.expr };
                (func, expr, ColumnType::new(ty, true))
            }
            ("avg", false, 1) => {
                let t = args.pop().expect("one argument");
                let ty = match t.ty.scalar {
                    s if s.is_integer() || s == ScalarType::Numeric => ScalarType::Numeric,
                    ScalarType::Float32 | ScalarType::Float64 => ScalarType::Float64,
                    _ => return no_such(&[t]),
                };
                (A::Avg, t.expr, ColumnType::new(ty, true))
            }
            ("min" | "max", false, 1) => {
                let t = args.pop().expect("one argument");
                if t.ty.scalar == ScalarType::Jsonb {
                    return no_such(&[t]);
                }
                let ty = t.ty.scalar;
                (if name == "min" { A::Min } else { A::Max }, t.expr, ColumnType::new(ty, true))
            }
            ("bool_and" | "bool_or" | "every", false, 1) => {
                let t = args.pop().expect("one argument");
                let e = self.coerce_bool(t, &name, pos)?;
                (if name == "bool_or" { A::BoolOr } else { A::BoolAnd }, e, ColumnType::new(ScalarType::Bool, true))
            }
            ("string_agg", false, 2) => {
                let sep = args.pop().expect("two arguments");
                let value = args.pop().expect("two arguments");
                let value = self.coerce_text(value, &name, pos)?;
                let sep = self.coerce_text(sep, &name, pos)?;
                let pair = ScalarExpr::CallVariadic { func: VariadicFunc::JsonbBuildArray, exprs: vec![value, sep] };
                // A NULL value is skipped; the pair itself is never NULL, so NULL it out explicitly.
                let value_is_null = match &pair {
                    ScalarExpr::CallVariadic { exprs, .. } => exprs[0].clone().call_unary(UnaryFunc::IsNull),
                    _ => unreachable!(),
                };
                let expr = ScalarExpr::If {
                    cond: Box::new(value_is_null),
                    then: Box::new(ScalarExpr::literal(Datum::Null, ScalarType::Jsonb)),
                    els: Box::new(pair),
                };
                (A::StringAgg, expr, ColumnType::new(ScalarType::Text, true))
            }
            _ => return no_such(&args),
        };
        let expr = match filter {
            None => expr,
            Some(cond) => ScalarExpr::If {
                cond: Box::new(cond),
                then: Box::new(expr),
                els: Box::new(ScalarExpr::literal(Datum::Null, ty.scalar)),
            },
        };
        Ok((AggregateExpr { func, expr, distinct }, ty))
    }

    fn plan_table_with_joins(&self, twj: &ast::TableWithJoins) -> Result<Rel, SqlError> {
        let mut rel = self.plan_table_factor(&twj.relation)?;
        for join in &twj.joins {
            let right = self.plan_table_factor(&join.relation)?;
            let pos = self.pos_of(&join.relation);
            use ast::JoinOperator as J;
            let (kind, constraint) = match &join.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, c),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::LeftOuter, c),
                J::Right(c) | J::RightOuter(c) => (JoinKind::RightOuter, c),
                J::FullOuter(c) => (JoinKind::FullOuter, c),
                J::CrossJoin(c) => (JoinKind::Inner, c),
                _ => return Err(SqlError::unsupported("this kind of join").at(pos)),
            };
            rel = self.plan_join(rel, right, kind, constraint, pos)?;
        }
        Ok(rel)
    }

    fn plan_join(
        &self,
        left: Rel,
        right: Rel,
        kind: JoinKind,
        constraint: &ast::JoinConstraint,
        pos: Option<usize>,
    ) -> Result<Rel, SqlError> {
        let la = left.arity();
        let mut cols: Vec<Col> = left.cols.iter().chain(&right.cols).cloned().collect();
        if matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
            cols[la..].iter_mut().for_each(|c| c.ty.nullable = true);
        }
        if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
            cols[..la].iter_mut().for_each(|c| c.ty.nullable = true);
        }
        let mut predicates = Vec::new();
        let mut using: Vec<(usize, usize)> = Vec::new();
        match constraint {
            ast::JoinConstraint::None => {}
            ast::JoinConstraint::On(e) => {
                let qcx = Qcx::default();
                let mut combined =
                    Rel { expr: RelExpr::Constant { rows: vec![], arity: cols.len() }, cols: cols.clone(), n_outer: 0 };
                let t = self.bind(&Ecx::new(&qcx, "JOIN/ON"), &mut combined, e)?;
                predicates = split_conjuncts(self.coerce_bool(t, "JOIN/ON", self.pos_of(e))?);
            }
            ast::JoinConstraint::Using(names) => {
                for n in names {
                    let name = self.object_name(n)?;
                    using.push(self.using_pair(&left, &right, &name, self.pos_of(n))?);
                }
            }
            ast::JoinConstraint::Natural => {
                for c in &left.cols {
                    if !c.name.is_empty() && !c.hidden && right.cols.iter().any(|r| r.name == c.name && !r.hidden) {
                        using.push(self.using_pair(&left, &right, &c.name, pos)?);
                    }
                }
            }
            ast::JoinConstraint::UsingAlias(..) => return Err(SqlError::unsupported("USING ... AS").at(pos)),
        }
        for &(l, r) in &using {
            let (lt, rt) = (left.cols[l].ty.scalar, right.cols[r].ty.scalar);
            let eq = ScalarExpr::column(l).call_binary(BinaryFunc::Eq, ScalarExpr::column(la + r));
            if super::scalar::unify_scalar(lt, rt).is_none() {
                return Err(SqlError::new(
                    code::UNDEFINED_FUNCTION,
                    format!("operator does not exist: {} = {}", lt.name(), rt.name()),
                )
                .at(pos));
            }
            predicates.push(eq);
        }
        let (equi, rest) = extract_equi(predicates, la, &cols);
        let predicate = combine_and(rest);
        let expr = RelExpr::Join { left: Box::new(left.expr), right: Box::new(right.expr), kind, equi, predicate };
        let mut rel = Rel { expr, cols, n_outer: 0 };
        for (l, r) in using {
            match kind {
                JoinKind::Inner | JoinKind::LeftOuter => rel.cols[la + r].hidden = true,
                JoinKind::RightOuter => rel.cols[l].hidden = true,
                JoinKind::FullOuter => {
                    let ty = super::scalar::unify_scalar(rel.cols[l].ty.scalar, rel.cols[la + r].ty.scalar)
                        .unwrap_or(rel.cols[l].ty.scalar);
                    let nullable = rel.cols[l].ty.nullable && rel.cols[la + r].ty.nullable;
                    let merged = ScalarExpr::CallVariadic {
                        func: VariadicFunc::Coalesce,
                        exprs: vec![
                            cast_if(ScalarExpr::column(l), rel.cols[l].ty.scalar, ty),
                            cast_if(ScalarExpr::column(la + r), rel.cols[la + r].ty.scalar, ty),
                        ],
                    };
                    let name = rel.cols[l].name.clone();
                    rel.cols[l].hidden = true;
                    rel.cols[la + r].hidden = true;
                    rel.map(
                        merged,
                        Col { table: None, name, ty: ColumnType::new(ty, nullable), hidden: false, depth: 0 },
                    );
                }
            }
        }
        Ok(rel)
    }

    fn using_pair(&self, left: &Rel, right: &Rel, name: &str, pos: Option<usize>) -> Result<(usize, usize), SqlError> {
        let find = |rel: &Rel, side: &str| {
            let mut found = rel.cols.iter().enumerate().filter(|(_, c)| c.name == name && !c.hidden);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(i),
                (Some(_), Some(_)) => Err(SqlError::new(
                    code::AMBIGUOUS_COLUMN,
                    format!("common column name \"{name}\" appears more than once in {side} table"),
                )
                .at(pos)),
                _ => Err(SqlError::new(
                    code::UNDEFINED_COLUMN,
                    format!("column \"{name}\" specified in USING clause does not exist in {side} table"),
                )
                .at(pos)),
            }
        };
        Ok((find(left, "left")?, find(right, "right")?))
    }

    fn plan_table_factor(&self, tf: &ast::TableFactor) -> Result<Rel, SqlError> {
        let pos = self.pos_of(tf);
        match tf {
            ast::TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_directives,
                ..
            } => {
                if args.is_some() {
                    return Err(SqlError::unsupported("table functions").at(pos));
                }
                if !with_hints.is_empty()
                    || version.is_some()
                    || *with_ordinality
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || sample.is_some()
                    || !index_directives.is_empty()
                {
                    return Err(SqlError::unsupported("table modifiers").at(pos));
                }
                let table = self.object_name(name)?;
                let cte = if name.0.len() == 1 {
                    self.ctes.borrow().iter().rev().find(|(n, _)| *n == table).map(|(_, r)| r.clone())
                } else {
                    None
                };
                let mut rel = match cte {
                    Some(rel) => rel,
                    None => {
                        let item = self.catalog.resolve(&table).ok_or_else(|| {
                            SqlError::new(code::UNDEFINED_TABLE, format!("relation \"{table}\" does not exist"))
                                .at(self.pos_of(name))
                        })?;
                        if !item.kind.is_relation() {
                            return Err(SqlError::new(
                                code::WRONG_OBJECT_TYPE,
                                format!("\"{table}\" is {} {}, not a relation", item.kind.article(), item.kind.name()),
                            )
                            .at(pos));
                        }
                        let cols =
                            item.desc.names.iter().zip(&item.desc.types).map(|(n, t)| Col::named(n, *t)).collect();
                        Rel { expr: RelExpr::Get { id: item.id, arity: item.desc.arity() }, cols, n_outer: 0 }
                    }
                };
                match alias {
                    Some(a) => {
                        let alias_name = normalize_ident(&a.name);
                        self.rename_columns(&mut rel, a, &alias_name)?;
                    }
                    None => rel.cols.iter_mut().for_each(|c| c.table = Some(table.clone())),
                }
                Ok(rel)
            }
            ast::TableFactor::Derived { lateral, subquery, alias, sample } => {
                if *lateral {
                    return Err(SqlError::unsupported("LATERAL").at(pos));
                }
                if sample.is_some() {
                    return Err(SqlError::unsupported("TABLESAMPLE").at(pos));
                }
                let (mut rel, _) = self.plan_query_rel(subquery, None)?;
                match alias {
                    Some(a) => {
                        let alias_name = normalize_ident(&a.name);
                        self.rename_columns(&mut rel, a, &alias_name)?;
                    }
                    None => rel.cols.iter_mut().for_each(|c| c.table = None),
                }
                Ok(rel)
            }
            ast::TableFactor::NestedJoin { table_with_joins, alias } => {
                let mut rel = self.plan_table_with_joins(table_with_joins)?;
                if let Some(a) = alias {
                    let alias_name = normalize_ident(&a.name);
                    self.rename_columns(&mut rel, a, &alias_name)?;
                }
                Ok(rel)
            }
            other => Err(SqlError::unsupported(format!("FROM item {}", first_words(&other.to_string()))).at(pos)),
        }
    }

    /// Plans `query` against the current relation `rel` (decorrelating any reference to its
    /// columns) and returns the key columns of `rel` it was planned for plus the subquery relation,
    /// whose rows start with those keys. `extra_keys` are added to the keys even if unreferenced.
    pub(crate) fn plan_correlated(
        &self,
        rel: &Rel,
        qcx: &Qcx,
        query: &ast::Query,
        extra_keys: &[usize],
    ) -> Result<(Vec<usize>, Rel), SqlError> {
        let outer_cols = |keys: &[usize]| -> Vec<Col> {
            keys.iter()
                .map(|&k| {
                    let mut c = rel.cols[k].clone();
                    c.depth += 1;
                    c
                })
                .collect()
        };
        let all: Vec<usize> = (0..rel.arity()).collect();
        let probe = Outer { expr: rel.expr.clone(), cols: outer_cols(&all) };
        let (_, used) = self.plan_query_rel(query, Some(&probe))?;
        for &u in &used {
            if u < qcx.n_outer {
                qcx.used.borrow_mut().insert(u);
            }
        }
        let mut keys: Vec<usize> = used.into_iter().chain(extra_keys.iter().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            let (sub, _) = self.plan_query_rel(query, None)?;
            return Ok((keys, sub));
        }
        let outer = Outer {
            expr: RelExpr::Distinct {
                input: Box::new(RelExpr::Project { input: Box::new(rel.expr.clone()), outputs: keys.clone() }),
            },
            cols: outer_cols(&keys),
        };
        let (sub, _) = self.plan_query_rel(query, Some(&outer))?;
        Ok((keys, sub))
    }
}

enum Target {
    Output(usize),
    Hidden(usize),
}

/// Left-outer-joins `sub` (rows: the values of `keys` in `rel`, then payload columns) onto `rel`,
/// matching keys NULL-safely, and appends the payload columns. Returns the first payload column.
pub(crate) fn attach(rel: &mut Rel, keys: &[usize], sub: Rel) -> usize {
    let k = keys.len();
    let la = rel.arity();
    let sa = sub.arity();
    let mut left_extra = Vec::new();
    let mut right_extra = Vec::new();
    let mut equi = Vec::new();
    for (j, &key) in keys.iter().enumerate() {
        let ty = rel.cols[key].ty;
        if ty.nullable {
            // NULL keys must match each other: join on (key IS NULL, COALESCE(key, placeholder)).
            let enc = |c: usize| {
                [
                    ScalarExpr::column(c).call_unary(UnaryFunc::IsNull),
                    ScalarExpr::CallVariadic {
                        func: VariadicFunc::Coalesce,
                        exprs: vec![ScalarExpr::column(c), ScalarExpr::literal(placeholder(ty.scalar), ty.scalar)],
                    },
                ]
            };
            for (x, y) in enc(key).into_iter().zip(enc(j)) {
                equi.push((la + left_extra.len(), sa + right_extra.len()));
                left_extra.push(x);
                right_extra.push(y);
            }
        } else {
            equi.push((key, j));
        }
    }
    let wrap = |expr: RelExpr, extra: Vec<ScalarExpr>| {
        if extra.is_empty() {
            expr
        } else {
            RelExpr::Map { input: Box::new(expr), scalars: extra }
        }
    };
    let (nl, nr) = (left_extra.len(), right_extra.len());
    let left = wrap(std::mem::replace(&mut rel.expr, RelExpr::Constant { rows: vec![], arity: 0 }), left_extra);
    let right = wrap(sub.expr, right_extra);
    let join = RelExpr::Join {
        left: Box::new(left),
        right: Box::new(right),
        kind: JoinKind::LeftOuter,
        equi,
        predicate: None,
    };
    let mut outputs: Vec<usize> = (0..la).collect();
    outputs.extend((k..sa).map(|j| la + nl + j));
    let _ = nr;
    rel.expr = RelExpr::Project { input: Box::new(join), outputs };
    let first = rel.cols.len();
    for c in &sub.cols[k..] {
        let mut c = Col::anon(c.ty);
        c.ty.nullable = true;
        rel.cols.push(c);
    }
    first
}

fn cross_join(left: Rel, right: Rel) -> Rel {
    if left.is_unit() {
        return Rel { n_outer: 0, ..right };
    }
    let n_outer = left.n_outer;
    let cols = left.cols.into_iter().chain(right.cols).collect();
    let expr = RelExpr::Join {
        left: Box::new(left.expr),
        right: Box::new(right.expr),
        kind: JoinKind::Inner,
        equi: vec![],
        predicate: None,
    };
    Rel { expr, cols, n_outer }
}

fn column_order(column: usize, o: &ast::OrderByOptions) -> ColumnOrder {
    let desc = matches!(o.sort, Some(ast::OrderBySort::Desc));
    ColumnOrder { column, desc, nulls_last: o.nulls_first.map(|f| !f).unwrap_or(!desc) }
}

pub(crate) fn split_conjuncts(e: ScalarExpr) -> Vec<ScalarExpr> {
    match e {
        ScalarExpr::CallVariadic { func: VariadicFunc::And, exprs } => {
            exprs.into_iter().flat_map(split_conjuncts).collect()
        }
        other => vec![other],
    }
}

fn combine_and(mut preds: Vec<ScalarExpr>) -> Option<ScalarExpr> {
    match preds.len() {
        0 => None,
        1 => preds.pop(),
        _ => Some(ScalarExpr::CallVariadic { func: VariadicFunc::And, exprs: preds }),
    }
}

fn same_key_type(a: ScalarType, b: ScalarType) -> bool {
    a == b
        || a.is_integer() && b.is_integer()
        || matches!(
            (a, b),
            (ScalarType::Timestamp | ScalarType::TimestampTz, ScalarType::Timestamp | ScalarType::TimestampTz)
        )
}

/// Splits `col_l = col_r` conjuncts across the join boundary `la` into hashable equi pairs.
fn extract_equi(preds: Vec<ScalarExpr>, la: usize, cols: &[Col]) -> (Vec<(usize, usize)>, Vec<ScalarExpr>) {
    let mut equi = Vec::new();
    let mut rest = Vec::new();
    for p in preds {
        if let ScalarExpr::CallBinary { func: BinaryFunc::Eq, left, right } = &p {
            if let (ScalarExpr::Column(a), ScalarExpr::Column(b)) = (&**left, &**right) {
                let (a, b) = (*a.min(b), *a.max(b));
                if a < la && b >= la && same_key_type(cols[a].ty.scalar, cols[b].ty.scalar) {
                    equi.push((a, b - la));
                    continue;
                }
            }
        }
        rest.push(p);
    }
    (equi, rest)
}

/// Moves `a = b` predicates of a Filter directly over an inner cross join into the join's
/// equi keys, so `FROM a, b WHERE a.x = b.y` becomes a hash join.
fn push_equi_predicates(mut rel: Rel) -> Rel {
    let RelExpr::Filter { input, predicates } = rel.expr else {
        return rel;
    };
    let RelExpr::Join { left, right, kind: JoinKind::Inner, mut equi, predicate } = *input else {
        rel.expr = RelExpr::Filter { input, predicates };
        return rel;
    };
    let la = left.arity();
    let (more, rest) = extract_equi(predicates, la, &rel.cols[..la + right.arity()]);
    equi.extend(more);
    let join = RelExpr::Join { left, right, kind: JoinKind::Inner, equi, predicate };
    rel.expr = if rest.is_empty() { join } else { RelExpr::Filter { input: Box::new(join), predicates: rest } };
    rel
}

fn cast_if(e: ScalarExpr, from: ScalarType, to: ScalarType) -> ScalarExpr {
    if from == to {
        e
    } else {
        e.call_unary(UnaryFunc::Cast(to))
    }
}

/// Casts the non-prefix columns of `rel` to `targets` where their types differ.
fn coerce_columns(rel: Rel, targets: &[ScalarType]) -> Rel {
    let n = rel.n_outer;
    if rel.cols[n..].iter().zip(targets).all(|(c, t)| c.ty.scalar == *t) {
        return rel;
    }
    let arity = rel.arity();
    let mut rel = rel;
    let mut outputs: Vec<usize> = (0..n).collect();
    let mut scalars = Vec::new();
    let mut cols = rel.cols[..n].to_vec();
    for (i, t) in (n..arity).zip(targets) {
        let c = rel.cols[i].clone();
        if c.ty.scalar == *t {
            outputs.push(i);
        } else {
            outputs.push(arity + scalars.len());
            scalars.push(ScalarExpr::column(i).call_unary(UnaryFunc::Cast(*t)));
        }
        cols.push(Col { ty: ColumnType::new(*t, c.ty.nullable), ..c });
    }
    rel.expr = RelExpr::Project { input: Box::new(RelExpr::Map { input: Box::new(rel.expr), scalars }), outputs };
    rel.cols = cols;
    rel
}

/// The output column name Postgres gives an unaliased select item.
pub(crate) fn column_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalize_ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize_ident).unwrap_or_else(|| "?column?".into()),
        Expr::Nested(inner) => column_name(inner),
        Expr::Cast { expr, data_type, .. } => match &**expr {
            Expr::Value(_) => super::scalar::type_column_name(data_type),
            inner => column_name(inner),
        },
        Expr::Function(f) => match f.name.0.last() {
            Some(ast::ObjectNamePart::Identifier(i)) => normalize_ident(i),
            _ => "?column?".into(),
        },
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::Subquery(q) => match &*q.body {
            ast::SetExpr::Select(s) => match s.projection.first() {
                Some(ast::SelectItem::ExprWithAlias { alias, .. }) => normalize_ident(alias),
                Some(ast::SelectItem::UnnamedExpr(e)) => column_name(e),
                _ => "?column?".into(),
            },
            _ => "?column?".into(),
        },
        _ => "?column?".into(),
    }
}

/// Collects aggregate calls in `e`, not looking inside subqueries (their aggregates are theirs).
pub(crate) fn collect_aggregates<'e>(e: &'e Expr, out: &mut Vec<&'e ast::Function>) {
    let mut go = |x: &'e Expr| collect_aggregates(x, out);
    match e {
        Expr::Function(f) => {
            let name = match f.name.0.last() {
                Some(ast::ObjectNamePart::Identifier(i)) => normalize_ident(i),
                _ => String::new(),
            };
            if is_aggregate_name(&name) && f.over.is_none() {
                out.push(f);
                return;
            }
            if let ast::FunctionArguments::List(l) = &f.args {
                for a in &l.args {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                    | ast::FunctionArg::Named { arg: ast::FunctionArgExpr::Expr(x), .. } = a
                    {
                        collect_aggregates(x, out);
                    }
                }
            }
        }
        Expr::BinaryOp { left, right, .. } => {
            go(left);
            collect_aggregates(right, out);
        }
        Expr::UnaryOp { expr, .. }
        | Expr::Nested(expr)
        | Expr::Cast { expr, .. }
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr)
        | Expr::IsTrue(expr)
        | Expr::IsNotTrue(expr)
        | Expr::IsFalse(expr)
        | Expr::IsNotFalse(expr)
        | Expr::IsUnknown(expr)
        | Expr::IsNotUnknown(expr)
        | Expr::Extract { expr, .. }
        | Expr::Ceil { expr, .. }
        | Expr::Floor { expr, .. }
        | Expr::Collate { expr, .. } => go(expr),
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            go(a);
            collect_aggregates(b, out);
        }
        Expr::Between { expr, low, high, .. } => {
            go(expr);
            collect_aggregates(low, out);
            collect_aggregates(high, out);
        }
        Expr::In { expr, target, .. } => {
            go(expr);
            if let ast::InTarget::List(list) = target {
                list.iter().for_each(|x| collect_aggregates(x, out));
            }
        }
        Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
            go(expr);
            collect_aggregates(pattern, out);
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            if let Some(o) = operand {
                go(o);
            }
            for c in conditions {
                collect_aggregates(&c.condition, out);
                collect_aggregates(&c.result, out);
            }
            if let Some(x) = else_result {
                collect_aggregates(x, out);
            }
        }
        Expr::Substring { expr, substring_from, substring_for, .. } => {
            go(expr);
            for x in [substring_from, substring_for].into_iter().flatten() {
                collect_aggregates(x, out);
            }
        }
        Expr::Trim { expr, .. } => go(expr),
        Expr::Position { expr, r#in } => {
            go(expr);
            collect_aggregates(r#in, out);
        }
        _ => {}
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
