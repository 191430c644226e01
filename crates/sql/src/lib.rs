//! The SQL front end: text to [`Statement`]s the coordinator executes.
//!
//! Owns: parsing (sqlparser's PostgreSQL dialect plus Materialize's source/sink/subscribe
//! statements), name resolution against a [`Catalog`], type inference, and lowering queries to
//! [`viewcast_plan::RelExpr`] (including decorrelation of subqueries). Errors carry SQLSTATE codes
//! and character positions into the query text.
//! Never touches: execution, dataflow, I/O. The catalog is read through the [`Catalog`] trait only.
//!
//! ```text
//! let stmts = viewcast_sql::parse(sql)?;            // Vec<Parsed>
//! for s in &stmts { let planned = viewcast_sql::plan(s, &catalog)?; ... }
//! ```

mod catalog;
mod error;
mod parser;
mod plan;
mod statement;

pub use catalog::{Catalog, CatalogItem, ItemKind};
pub use error::{code, SqlError};
pub use parser::{parse, Parsed};
pub use plan::plan;
pub use statement::{
    format_desc, regex_group_names, sse_desc, Finishing, Format, LoadGenerator, LoadGeneratorKind, Show, SinkConnector,
    SourceConnector, Statement, Subscribe, SubscribeTarget, UniqueKey,
};

/// Parses and plans every statement of `sql` in order. A statement is planned against the catalog
/// as it is now, so a batch whose later statements read items created by earlier ones must be
/// planned one at a time as the coordinator applies them.
pub fn parse_and_plan(sql: &str, catalog: &dyn Catalog) -> Result<Vec<Statement>, SqlError> {
    parse(sql)?.iter().map(|p| plan(p, catalog)).collect()
}
