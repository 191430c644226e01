//! Binding and lowering: statements to [`Statement`]s, queries to [`RelExpr`]s.
//!
//! Every query is planned against an optional *outer* relation: a correlated subquery is planned
//! with the distinct values of the outer columns it reads as a prefix of each of its rows, then
//! joined back to the outer query on those columns (decorrelation by "apply"). An uncorrelated
//! query has no prefix.

mod query;
mod scalar;
mod statement;
mod temporal;

use std::cell::RefCell;
use std::collections::HashSet;

use sqlparser::ast::{self, Spanned};
use sqlparser::tokenizer::Span;

use crate::catalog::Catalog;
use crate::error::SqlError;
use crate::parser::{normalize_ident, Parsed};
use crate::statement::Statement;

pub(crate) use query::{Col, Rel};

/// Plans one parsed statement against `catalog`.
pub fn plan(stmt: &Parsed, catalog: &dyn Catalog) -> Result<Statement, SqlError> {
    let planner = Planner {
        catalog,
        parsed: stmt,
        ctes: RefCell::new(Vec::new()),
        one_shot: RefCell::new(false),
        temporal_sites: RefCell::new(HashSet::new()),
    };
    planner.plan_statement(&stmt.ast)
}

pub(crate) struct Planner<'a> {
    catalog: &'a dyn Catalog,
    parsed: &'a Parsed,
    /// CTEs in scope, innermost last; each reference inlines the planned relation.
    ctes: RefCell<Vec<(String, Rel)>>,
    /// Whether the query runs once (so `now()` has a value) rather than being maintained.
    one_shot: RefCell<bool>,
    /// The comparisons with `mz_now()` that are temporal predicates (top-level conjuncts of WHERE
    /// or HAVING), by address in the statement's syntax tree, which outlives planning.
    temporal_sites: RefCell<HashSet<*const ast::Expr>>,
}

impl Planner<'_> {
    /// The 1-based character offset of `span`'s start, if known.
    fn pos(&self, span: Span) -> Option<usize> {
        self.parsed.offset(span.start)
    }

    fn pos_of(&self, node: &impl Spanned) -> Option<usize> {
        self.pos(node.span())
    }

    /// The normalized last part of an object name (`schema.t` resolves as `t`).
    fn object_name(&self, name: &ast::ObjectName) -> Result<String, SqlError> {
        match name.0.last() {
            Some(ast::ObjectNamePart::Identifier(ident)) => Ok(normalize_ident(ident)),
            _ => Err(SqlError::syntax(format!("invalid name {name}")).at(self.pos_of(name))),
        }
    }
}
