//! Statement-level planning: DDL, DML, EXPLAIN, SHOW, SUBSCRIBE and one-shot SELECT.

use std::collections::BTreeSet;

use sqlparser::ast;
use viewcast_plan::{RelExpr, ScalarExpr, UnaryFunc};
use viewcast_repr::{ColumnType, RelationDesc};

use super::query::{Qcx, Rel};
use super::scalar::{scalar_type_of, Ecx};
use super::Planner;
use crate::catalog::ItemKind;
use crate::error::{code, SqlError};
use crate::parser::{normalize_ident, Ast, ConnectorAst, ShowAst, SubscribeTargetAst};
use crate::statement::{
    format_desc, sse_desc, Finishing, Format, Show, SinkConnector, SourceConnector, Statement, Subscribe,
    SubscribeTarget, UniqueKey,
};

fn desc_of(rel: &Rel) -> RelationDesc {
    RelationDesc::new(rel.cols[rel.n_outer..].iter().map(|c| (c.name.clone(), c.ty)))
}

impl Planner<'_> {
    pub(crate) fn plan_statement(&self, stmt: &Ast) -> Result<Statement, SqlError> {
        match stmt {
            Ast::Standard(s) => self.plan_standard(s),
            Ast::CreateSource(cs) => {
                let name = self.object_name(&cs.name)?;
                let (connector, desc) = match &cs.connector {
                    ConnectorAst::LoadGenerator(g) => {
                        (SourceConnector::LoadGenerator(g.clone()), format_desc(&Format::Json))
                    }
                    ConnectorAst::Sse { url, include_metadata } => (
                        SourceConnector::Sse { url: url.clone(), include_metadata: *include_metadata },
                        sse_desc(*include_metadata),
                    ),
                    ConnectorAst::Webhook { format } => {
                        (SourceConnector::Webhook { format: format.clone() }, format_desc(format))
                    }
                    ConnectorAst::File { path, tail, format } => (
                        SourceConnector::File { path: path.clone(), tail: *tail, format: format.clone() },
                        format_desc(format),
                    ),
                    ConnectorAst::Upstream { url, view } => {
                        (SourceConnector::Upstream { url: url.clone(), view: view.clone() }, RelationDesc::default())
                    }
                };
                if desc.arity() == 0 && !matches!(cs.connector, ConnectorAst::Upstream { .. }) {
                    return Err(SqlError::new(
                        code::INVALID_PARAMETER_VALUE,
                        "FORMAT REGEX needs at least one named capture group (?P<name>...)",
                    )
                    .at(self.pos_of(&cs.name)));
                }
                Ok(Statement::CreateSource { name, if_not_exists: cs.if_not_exists, connector, desc })
            }
            Ast::CreateSink(cs) => {
                let name = self.object_name(&cs.name)?;
                let from = self.resolve(&cs.from)?;
                if !from.kind.is_relation() {
                    let msg = format!("cannot create a sink from {} {}", from.kind.article(), from.kind.name());
                    return Err(SqlError::new(code::WRONG_OBJECT_TYPE, msg).at(self.pos_of(&cs.from)));
                }
                Ok(Statement::CreateSink {
                    name,
                    if_not_exists: cs.if_not_exists,
                    from: from.id,
                    connector: SinkConnector::Webhook {
                        url: cs.url.clone(),
                        token: cs.token.clone(),
                        timeout_ms: cs.timeout_ms,
                    },
                    snapshot: cs.snapshot,
                })
            }
            Ast::Drop { kind, names, if_exists, cascade } => Ok(Statement::Drop {
                kind: *kind,
                names: names.iter().map(|n| self.object_name(n)).collect::<Result<_, _>>()?,
                if_exists: *if_exists,
                cascade: *cascade,
            }),
            Ast::Show(show) => Ok(Statement::Show(match show {
                ShowAst::Items(kind) => Show::Items(*kind),
                ShowAst::Objects => Show::Objects,
                ShowAst::Indexes(on) => {
                    Show::Indexes { on: on.as_ref().map(|n| self.resolve(n)).transpose()?.map(|i| i.id) }
                }
                ShowAst::Columns(name) => {
                    let item = self.resolve(name)?;
                    Show::Columns { id: item.id, desc: item.desc }
                }
                ShowAst::Create(kind, name) => Show::Create { kind: *kind, name: self.object_name(name)? },
                ShowAst::Variable(v) => Show::Variable(v.clone()),
            })),
            Ast::Subscribe(sub) => {
                let (target, desc) = match &sub.target {
                    SubscribeTargetAst::Name(name) => {
                        let item = self.resolve(name)?;
                        if !item.kind.is_relation() {
                            let msg = format!("cannot subscribe to {} {}", item.kind.article(), item.kind.name());
                            return Err(SqlError::new(code::WRONG_OBJECT_TYPE, msg).at(self.pos_of(name)));
                        }
                        (SubscribeTarget::Item(item.id), item.desc)
                    }
                    SubscribeTargetAst::Query(q) => {
                        let (rel, _) = self.plan_query_rel(q, None)?;
                        super::temporal::check_maintained(&rel.expr)?;
                        let desc = desc_of(&rel);
                        (SubscribeTarget::Query(rel.expr), desc)
                    }
                };
                let upsert_key = match &sub.upsert_key {
                    None => None,
                    Some(cols) => Some(
                        cols.iter()
                            .map(|c| {
                                let name = normalize_ident(c);
                                desc.position(&name).ok_or_else(|| {
                                    SqlError::new(code::UNDEFINED_COLUMN, format!("column \"{name}\" does not exist"))
                                        .at(self.pos(c.span))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                };
                Ok(Statement::Subscribe(Subscribe {
                    target,
                    desc,
                    upsert_key,
                    snapshot: sub.snapshot,
                    progress: sub.progress,
                    as_of: sub.as_of,
                    up_to: sub.up_to,
                }))
            }
        }
    }

    fn resolve(&self, name: &ast::ObjectName) -> Result<crate::CatalogItem, SqlError> {
        let n = self.object_name(name)?;
        self.catalog.resolve(&n).ok_or_else(|| {
            SqlError::new(code::UNDEFINED_TABLE, format!("unknown catalog item '{n}'")).at(self.pos_of(name))
        })
    }

    fn plan_select_statement(&self, q: &ast::Query) -> Result<Statement, SqlError> {
        *self.one_shot.borrow_mut() = true;
        let qcx = Qcx::default();
        let planned = self.plan_query(q, None, &qcx)?;
        let n_out = planned.n_out;
        let desc = RelationDesc::new(planned.rel.cols[..n_out].iter().map(|c| (c.name.clone(), c.ty)));
        let finishing = Finishing {
            order_by: planned.order,
            limit: planned.limit,
            offset: planned.offset,
            project: (0..n_out).collect(),
        };
        Ok(Statement::Select { plan: planned.rel.expr, desc, finishing })
    }

    fn plan_standard(&self, s: &ast::Statement) -> Result<Statement, SqlError> {
        let pos = self.pos_of(s);
        match s {
            ast::Statement::Query(q) => self.plan_select_statement(q),
            ast::Statement::CreateView(cv) => {
                if cv.or_alter
                    || cv.secure
                    || cv.temporary
                    || cv.to.is_some()
                    || cv.params.is_some()
                    || !cv.cluster_by.is_empty()
                    || cv.comment.is_some()
                    || cv.with_no_schema_binding
                    || cv.copy_grants
                    || !matches!(cv.options, ast::CreateTableOptions::None)
                {
                    return Err(SqlError::unsupported("these CREATE VIEW options").at(pos));
                }
                let name = self.object_name(&cv.name)?;
                let (mut rel, _) = self.plan_query_rel(&cv.query, None)?;
                if !cv.columns.is_empty() {
                    if cv.columns.len() != rel.arity() {
                        return Err(SqlError::syntax(format!(
                            "view has {} columns but {} column names were given",
                            rel.arity(),
                            cv.columns.len()
                        ))
                        .at(pos));
                    }
                    for (c, def) in rel.cols.iter_mut().zip(&cv.columns) {
                        c.name = normalize_ident(&def.name);
                    }
                }
                super::temporal::check_maintained(&rel.expr)?;
                let desc = desc_of(&rel);
                let mut seen = BTreeSet::new();
                for n in &desc.names {
                    if !seen.insert(n) {
                        return Err(SqlError::new("42701", format!("column \"{n}\" specified more than once")).at(pos));
                    }
                }
                Ok(Statement::CreateView {
                    name,
                    materialized: cv.materialized,
                    if_not_exists: cv.if_not_exists,
                    or_replace: cv.or_replace,
                    plan: rel.expr,
                    desc,
                })
            }
            ast::Statement::CreateTable(ct) => {
                if ct.query.is_some()
                    || ct.like.is_some()
                    || ct.clone.is_some()
                    || ct.or_replace
                    || ct.temporary
                    || ct.external
                {
                    return Err(SqlError::unsupported("these CREATE TABLE options").at(pos));
                }
                let name = self.object_name(&ct.name)?;
                let mut cols = Vec::new();
                let mut seen = BTreeSet::new();
                // A key as written: constraint name, columns by name, primary, position.
                struct Written(Option<String>, Vec<String>, bool, Option<usize>);
                let mut keys: Vec<Written> = Vec::new();
                for c in &ct.columns {
                    let cname = normalize_ident(&c.name);
                    if !seen.insert(cname.clone()) {
                        return Err(SqlError::new("42701", format!("column \"{cname}\" specified more than once"))
                            .at(self.pos(c.name.span)));
                    }
                    let ty = scalar_type_of(&c.data_type).map_err(|e| e.at(self.pos(c.name.span)))?;
                    let mut nullable = true;
                    for o in &c.options {
                        let constraint = o.name.as_ref().map(normalize_ident);
                        let at = Some(self.pos(c.name.span)).flatten();
                        match &o.option {
                            ast::ColumnOption::Null => nullable = true,
                            ast::ColumnOption::NotNull => nullable = false,
                            ast::ColumnOption::PrimaryKey(k) => {
                                let constraint = constraint.or(k.name.as_ref().map(normalize_ident));
                                keys.push(Written(constraint, vec![cname.clone()], true, at));
                            }
                            ast::ColumnOption::Unique(k) => {
                                if k.nulls_distinct == ast::NullsDistinctOption::NotDistinct {
                                    return Err(SqlError::unsupported("UNIQUE NULLS NOT DISTINCT").at(at));
                                }
                                let constraint = constraint.or(k.name.as_ref().map(normalize_ident));
                                keys.push(Written(constraint, vec![cname.clone()], false, at));
                            }
                            other => return Err(SqlError::unsupported(format!("column option {other}")).at(at)),
                        }
                    }
                    cols.push((cname, ColumnType::new(ty, nullable)));
                }
                for tc in &ct.constraints {
                    let at = self.pos_of(tc);
                    let (constraint, columns, primary) = match tc {
                        ast::TableConstraint::PrimaryKey(k) if k.include.is_empty() && k.index_options.is_empty() => {
                            (k.name.as_ref(), &k.columns, true)
                        }
                        ast::TableConstraint::Unique(k)
                            if k.include.is_empty()
                                && k.index_options.is_empty()
                                && k.nulls_distinct != ast::NullsDistinctOption::NotDistinct =>
                        {
                            (k.name.as_ref(), &k.columns, false)
                        }
                        other => return Err(SqlError::unsupported(format!("table constraint {other}")).at(at)),
                    };
                    let mut names = Vec::new();
                    for c in columns {
                        let ast::Expr::Identifier(ident) = &c.column.expr else {
                            return Err(SqlError::unsupported("key expressions other than columns").at(at));
                        };
                        names.push(normalize_ident(ident));
                    }
                    keys.push(Written(constraint.map(normalize_ident), names, primary, at));
                }
                let mut unique_keys: Vec<UniqueKey> = Vec::new();
                for Written(constraint, names, primary, at) in keys {
                    if primary && unique_keys.iter().any(|k| k.primary) {
                        let msg = format!("multiple primary keys for table \"{name}\" are not allowed");
                        return Err(SqlError::new("42P16", msg).at(at));
                    }
                    let mut columns = Vec::new();
                    for n in &names {
                        let Some(i) = cols.iter().position(|(c, _)| c == n) else {
                            let msg = format!("column \"{n}\" named in key does not exist");
                            return Err(SqlError::new(code::UNDEFINED_COLUMN, msg).at(at));
                        };
                        if primary {
                            // As in Postgres, a primary key's columns are NOT NULL.
                            cols[i].1.nullable = false;
                        }
                        columns.push(i);
                    }
                    // Postgres' names: <table>_pkey, <table>_<columns>_key.
                    let constraint = constraint.unwrap_or_else(|| {
                        if primary {
                            format!("{name}_pkey")
                        } else {
                            format!("{name}_{}_key", names.join("_"))
                        }
                    });
                    if unique_keys.iter().any(|k| k.name == constraint) {
                        let msg = format!("relation \"{constraint}\" already exists");
                        return Err(SqlError::new("42P07", msg).at(at));
                    }
                    unique_keys.push(UniqueKey { name: constraint, columns, primary });
                }
                Ok(Statement::CreateTable {
                    name,
                    if_not_exists: ct.if_not_exists,
                    desc: RelationDesc::new(cols),
                    keys: unique_keys,
                })
            }
            ast::Statement::Insert(ins) => self.plan_insert(ins, pos),
            ast::Statement::Delete(del) => {
                if !del.tables.is_empty()
                    || del.using.is_some()
                    || del.returning.is_some()
                    || !del.order_by.is_empty()
                    || del.limit.is_some()
                    || del.output.is_some()
                {
                    return Err(SqlError::unsupported("these DELETE options").at(pos));
                }
                let from = match &del.from {
                    ast::FromTable::WithFromKeyword(f) | ast::FromTable::WithoutKeyword(f) => f,
                };
                let [twj] = &from[..] else {
                    return Err(SqlError::unsupported("DELETE from several tables").at(pos));
                };
                if !twj.joins.is_empty() {
                    return Err(SqlError::unsupported("DELETE with joins").at(pos));
                }
                let (id, rel) = self.table_rel(&twj.relation)?;
                let arity = rel.arity();
                let filtered = self.filter_rel(rel, del.selection.as_ref())?;
                let old = filtered.project((0..arity).collect()).expr;
                Ok(Statement::Delete { id, changes: RelExpr::Negate { input: Box::new(old) } })
            }
            ast::Statement::Update(up) => {
                if up.from.is_some()
                    || up.returning.is_some()
                    || up.output.is_some()
                    || !up.order_by.is_empty()
                    || up.limit.is_some()
                    || up.or.is_some()
                {
                    return Err(SqlError::unsupported("these UPDATE options").at(pos));
                }
                if !up.table.joins.is_empty() {
                    return Err(SqlError::unsupported("UPDATE with joins").at(pos));
                }
                let (id, rel) = self.table_rel(&up.table.relation)?;
                let arity = rel.arity();
                let mut filtered = self.filter_rel(rel, up.selection.as_ref())?;
                let mut new_cols: Vec<usize> = (0..arity).collect();
                let qcx = Qcx::default();
                for a in &up.assignments {
                    let target = match &a.target {
                        ast::AssignmentTarget::ColumnName(n) => n,
                        ast::AssignmentTarget::Tuple(_) => {
                            return Err(SqlError::unsupported("tuple assignment").at(pos))
                        }
                    };
                    let cname = self.object_name(target)?;
                    let Some(i) = filtered.cols[..arity].iter().position(|c| c.name == cname) else {
                        return Err(SqlError::new(
                            code::UNDEFINED_COLUMN,
                            format!("column \"{cname}\" does not exist"),
                        )
                        .at(self.pos_of(target)));
                    };
                    let t = self.bind(&Ecx::new(&qcx, "UPDATE").subqueries(), &mut filtered, &a.value)?;
                    let ty = filtered.cols[i].ty;
                    // NOT NULL is checked by the coordinator, which names the column.
                    let e = self.coerce(t, ty.scalar, self.pos_of(&a.value))?;
                    new_cols[i] = filtered.map(e, super::Col::anon(ty));
                }
                let old = filtered.clone().project((0..arity).collect()).expr;
                let new = filtered.project(new_cols).expr;
                Ok(Statement::Update {
                    id,
                    changes: RelExpr::Union { inputs: vec![RelExpr::Negate { input: Box::new(old) }, new] },
                })
            }
            ast::Statement::CreateIndex(ci) => {
                if ci.predicate.is_some() || !ci.include.is_empty() || !ci.with.is_empty() {
                    return Err(SqlError::unsupported("these CREATE INDEX options").at(pos));
                }
                let on = self.resolve(&ci.table_name)?;
                if !on.kind.is_relation() {
                    let msg = format!("cannot index {} {}", on.kind.article(), on.kind.name());
                    return Err(SqlError::new(code::WRONG_OBJECT_TYPE, msg).at(pos));
                }
                // Only plain column keys are accepted; they must name columns of the relation.
                let mut key = Vec::new();
                for c in &ci.columns {
                    let ast::Expr::Identifier(ident) = &c.column.expr else {
                        return Err(SqlError::unsupported("index keys other than columns").at(pos));
                    };
                    let name = normalize_ident(ident);
                    let Some(i) = on.desc.position(&name) else {
                        return Err(SqlError::new(code::UNDEFINED_COLUMN, format!("column \"{name}\" does not exist"))
                            .at(self.pos(ident.span)));
                    };
                    key.push(i);
                }
                let name = ci.name.as_ref().map(|n| self.object_name(n)).transpose()?;
                Ok(Statement::CreateIndex { name, on: on.id, key, if_not_exists: ci.if_not_exists })
            }
            ast::Statement::Explain { analyze, statement, describe_alias, .. } => {
                if *analyze {
                    return Err(SqlError::unsupported("EXPLAIN ANALYZE").at(pos));
                }
                if *describe_alias != ast::DescribeAlias::Explain {
                    return Err(SqlError::unsupported("DESCRIBE").at(pos));
                }
                let (plan, trailer, maintained) = match self.plan_standard(statement)? {
                    Statement::Select { plan, finishing, .. } => {
                        let mut trailer = String::new();
                        if !finishing.order_by.is_empty() || finishing.limit.is_some() || finishing.offset > 0 {
                            let order: Vec<String> = finishing.order_by.iter().map(|o| o.to_string()).collect();
                            trailer = format!(
                                "Finish order_by=[{}] limit={} offset={}\n",
                                order.join(", "),
                                finishing.limit.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
                                finishing.offset
                            );
                        }
                        (plan, trailer, false)
                    }
                    Statement::CreateView { plan, .. } => (plan, String::new(), true),
                    Statement::Insert { changes, .. }
                    | Statement::Delete { changes, .. }
                    | Statement::Update { changes, .. } => (changes, String::new(), false),
                    _ => return Err(SqlError::unsupported("EXPLAIN of this statement").at(pos)),
                };
                let text = format!("{}{trailer}", plan.explain());
                Ok(Statement::Explain { text, plan, trailer, maintained })
            }
            other => {
                let words: Vec<String> = other.to_string().split_whitespace().take(2).map(str::to_uppercase).collect();
                Err(SqlError::unsupported(words.join(" ")).at(self.parsed.start()))
            }
        }
    }

    /// A table as a relation, for DML.
    fn table_rel(&self, tf: &ast::TableFactor) -> Result<(viewcast_plan::GlobalId, Rel), SqlError> {
        let ast::TableFactor::Table { name, alias, .. } = tf else {
            return Err(SqlError::unsupported("this DML target").at(self.pos_of(tf)));
        };
        let item = self.resolve(name)?;
        if item.kind != ItemKind::Table {
            return Err(SqlError::new(
                code::WRONG_OBJECT_TYPE,
                format!("cannot modify {} \"{}\"", item.kind.name(), self.object_name(name)?),
            )
            .at(self.pos_of(name)));
        }
        let table = match alias {
            Some(a) => normalize_ident(&a.name),
            None => self.object_name(name)?,
        };
        let cols = item
            .desc
            .names
            .iter()
            .zip(&item.desc.types)
            .map(|(n, t)| {
                let mut c = super::Col::named(n, *t);
                c.table = Some(table.clone());
                c
            })
            .collect();
        Ok((item.id, Rel { expr: RelExpr::Get { id: item.id, arity: item.desc.arity() }, cols, n_outer: 0 }))
    }

    fn filter_rel(&self, mut rel: Rel, selection: Option<&ast::Expr>) -> Result<Rel, SqlError> {
        if let Some(sel) = selection {
            let qcx = Qcx::default();
            let t = self.bind(&Ecx::new(&qcx, "WHERE").subqueries(), &mut rel, sel)?;
            let pred = self.coerce_bool(t, "WHERE", self.pos_of(sel))?;
            rel.filter(super::query::split_conjuncts(pred));
        }
        Ok(rel)
    }

    fn plan_insert(&self, ins: &ast::Insert, pos: Option<usize>) -> Result<Statement, SqlError> {
        if ins.on.is_some()
            || ins.returning.is_some()
            || ins.or.is_some()
            || ins.ignore
            || ins.overwrite
            || !ins.assignments.is_empty()
            || ins.partitioned.is_some()
            || ins.output.is_some()
        {
            return Err(SqlError::unsupported("these INSERT options").at(pos));
        }
        let name = match &ins.table {
            ast::TableObject::TableName(n) => n,
            _ => return Err(SqlError::unsupported("INSERT into a table function").at(pos)),
        };
        let item = self.resolve(name)?;
        if item.kind != ItemKind::Table {
            return Err(SqlError::new(
                code::WRONG_OBJECT_TYPE,
                format!("cannot insert into {} \"{}\"", item.kind.name(), self.object_name(name)?),
            )
            .at(self.pos_of(name)));
        }
        let Some(source) = &ins.source else {
            return Err(SqlError::unsupported("INSERT without VALUES or SELECT").at(pos));
        };
        let desc = &item.desc;
        let targets: Vec<usize> = if ins.columns.is_empty() {
            (0..desc.arity()).collect()
        } else {
            let mut out = Vec::new();
            for c in &ins.columns {
                let cname = self.object_name(c)?;
                let i = desc.names.iter().position(|n| *n == cname).ok_or_else(|| {
                    SqlError::new(code::UNDEFINED_COLUMN, format!("column \"{cname}\" of relation does not exist"))
                        .at(self.pos_of(c))
                })?;
                if out.contains(&i) {
                    return Err(SqlError::new("42701", format!("column \"{cname}\" specified more than once"))
                        .at(self.pos_of(c)));
                }
                out.push(i);
            }
            out
        };
        let (mut rel, _) = self.plan_query_rel(source, None)?;
        let n = rel.arity();
        if n > targets.len() {
            return Err(SqlError::syntax("INSERT has more expressions than target columns").at(self.pos_of(&**source)));
        }
        if n < targets.len() {
            return Err(SqlError::syntax("INSERT has more target columns than expressions").at(self.pos_of(&**source)));
        }
        let mut outputs = Vec::new();
        for (i, ty) in desc.types.iter().enumerate() {
            let e = match targets.iter().position(|&t| t == i) {
                Some(src) => {
                    let from = rel.cols[src].ty;
                    let e = ScalarExpr::column(src);
                    if from.scalar == ty.scalar {
                        e
                    } else {
                        e.call_unary(UnaryFunc::Cast(ty.scalar))
                    }
                }
                None => ScalarExpr::literal(viewcast_repr::Datum::Null, ty.scalar),
            };
            // NOT NULL is checked by the coordinator, which names the column.
            outputs.push(rel.map(e, super::Col::anon(*ty)));
        }
        let rel = rel.project(outputs);
        Ok(Statement::Insert { id: item.id, changes: rel.expr })
    }
}
