//! The relational plan every query is lowered to, and the meaning of its scalar expressions.
//!
//! Owns: [`RelExpr`] (what to compute), [`ScalarExpr`] and [`AggregateFunc`] with their evaluation,
//! the SQL sort order used by top-k, EXPLAIN text, and the reference interpreter that evaluates a
//! plan from scratch (one-shot `SELECT`s and the correctness oracle of incremental views).
//! Never touches: SQL text, dataflow, I/O.

pub mod datetime;
mod explain;
pub mod expr;
pub mod interpret;
pub mod relation;
pub mod temporal;

pub use expr::{AggregateExpr, AggregateFunc, BinaryFunc, EvalError, ScalarExpr, UnaryFunc, VariadicFunc};
pub use relation::{ArrangedInput, ColumnOrder, GlobalId, JoinKind, RelExpr};
pub use temporal::{TemporalError, Validity};
