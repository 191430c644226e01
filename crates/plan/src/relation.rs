//! Relational operators.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use viewcast_repr::{Datum, Diff, Row};

use crate::expr::{AggregateExpr, ScalarExpr};

/// Identifies a catalog item (source, table or view) for the engine and the hub.
pub type GlobalId = u64;

/// A relational expression. Every variant's output is a multiset of rows of a fixed arity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RelExpr {
    /// The contents of a catalog item.
    Get { id: GlobalId, arity: usize },
    /// Literal rows (`VALUES`), each with a multiplicity.
    Constant { rows: Vec<(Row, Diff)>, arity: usize },
    /// Appends one column per scalar, each evaluated over the input row extended by the columns
    /// appended before it.
    Map { input: Box<RelExpr>, scalars: Vec<ScalarExpr> },
    /// Keeps rows for which every predicate evaluates to `true` (not `false`, not `NULL`).
    Filter { input: Box<RelExpr>, predicates: Vec<ScalarExpr> },
    /// Output row = the listed input columns, in that order (repeats allowed).
    Project { input: Box<RelExpr>, outputs: Vec<usize> },
    /// Groups by the `group_key` columns; output = group key columns then one column per aggregate.
    /// With an empty `group_key` there is exactly one output row, even for an empty input
    /// (`COUNT(*)` of nothing is 0, `SUM` of nothing is NULL).
    Reduce { input: Box<RelExpr>, group_key: Vec<usize>, aggregates: Vec<AggregateExpr> },
    /// Per group of `group_key` columns, the rows ranked `offset .. offset + limit` by `order_key`,
    /// ties broken by the whole row ascending (deterministic). Output has the input's columns.
    TopK {
        input: Box<RelExpr>,
        group_key: Vec<usize>,
        order_key: Vec<ColumnOrder>,
        limit: Option<usize>,
        offset: usize,
    },
    /// Joins `left` and `right`; output = left columns then right columns.
    /// `equi` pairs (left column, right column) must be equal (NULL never equals); `predicate`,
    /// over the concatenated row, must be true. Outer kinds pad the unmatched side with NULLs.
    Join {
        left: Box<RelExpr>,
        right: Box<RelExpr>,
        kind: JoinKind,
        equi: Vec<(usize, usize)>,
        predicate: Option<ScalarExpr>,
    },
    /// Multiset sum of the inputs (same arity).
    Union { inputs: Vec<RelExpr> },
    /// Negates every multiplicity.
    Negate { input: Box<RelExpr> },
    /// One copy of each row with positive multiplicity.
    Distinct { input: Box<RelExpr> },
    /// Keeps rows with positive multiplicity, at that multiplicity (drops negative ones).
    Threshold { input: Box<RelExpr> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
}

/// An input that a dataflow rendering one operator keeps arranged (indexed by `key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrangedInput {
    /// Which input of the operator (0: the only one, or a join's left; 1: a join's right).
    pub child: usize,
    /// The key columns, as positions in that input's rows.
    pub key: Vec<usize>,
    /// `Some(id)` when the input is the catalog item `id` read whole (a `Get`) by an operator that
    /// can read a shared arrangement: the engine then reads the one arrangement of `id` by `key`
    /// that every such reader (and a `CREATE INDEX` with that key) shares. `None`: a private one.
    pub shared: Option<GlobalId>,
}

/// One key of an `ORDER BY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnOrder {
    pub column: usize,
    pub desc: bool,
    /// Postgres' default: NULLs last ascending, first descending.
    pub nulls_last: bool,
}

impl ColumnOrder {
    pub fn asc(column: usize) -> Self {
        ColumnOrder { column, desc: false, nulls_last: true }
    }
    pub fn desc(column: usize) -> Self {
        ColumnOrder { column, desc: true, nulls_last: false }
    }
}

/// Compares two rows by `order` as SQL's `ORDER BY` does, then by the whole row to break ties.
pub fn compare_rows(order: &[ColumnOrder], a: &Row, b: &Row) -> Ordering {
    compare_datums(order, a.datums(), b.datums())
}

/// [`compare_rows`] of rows held as slices of datums.
pub fn compare_datums(order: &[ColumnOrder], a: &[Datum], b: &[Datum]) -> Ordering {
    for o in order {
        let (x, y) = (&a[o.column], &b[o.column]);
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if o.nulls_last {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, true) => {
                if o.nulls_last {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, false) => {
                let c = crate::expr::sql_cmp(x, y);
                if o.desc {
                    c.reverse()
                } else {
                    c
                }
            }
        };
        if ord.is_ne() {
            return ord;
        }
    }
    a.cmp(b)
}

impl RelExpr {
    /// Number of output columns.
    pub fn arity(&self) -> usize {
        match self {
            RelExpr::Get { arity, .. } | RelExpr::Constant { arity, .. } => *arity,
            RelExpr::Map { input, scalars } => input.arity() + scalars.len(),
            RelExpr::Filter { input, .. }
            | RelExpr::TopK { input, .. }
            | RelExpr::Negate { input }
            | RelExpr::Distinct { input }
            | RelExpr::Threshold { input } => input.arity(),
            RelExpr::Project { outputs, .. } => outputs.len(),
            RelExpr::Reduce { group_key, aggregates, .. } => group_key.len() + aggregates.len(),
            RelExpr::Join { left, right, .. } => left.arity() + right.arity(),
            RelExpr::Union { inputs } => inputs.first().map(RelExpr::arity).unwrap_or(0),
        }
    }

    /// Every catalog item this expression reads, in first-use order, without repeats.
    pub fn depends_on(&self) -> Vec<GlobalId> {
        let mut out = Vec::new();
        self.visit(&mut |e| {
            if let RelExpr::Get { id, .. } = e {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        });
        out
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a RelExpr)) {
        f(self);
        for child in self.children() {
            child.visit(f);
        }
    }

    /// Calls `f` on this node and every node below it, parents first, allowing changes.
    pub fn visit_mut(&mut self, f: &mut impl FnMut(&mut RelExpr)) {
        f(self);
        for child in self.children_mut() {
            child.visit_mut(f);
        }
    }

    /// The inputs this operator (not its inputs) arranges when rendered as a dataflow, in child
    /// order. Inner joins, `DISTINCT` and reductions with a non-accumulable aggregate (`MIN`, `MAX`,
    /// `AVG`, `DISTINCT` aggregates ...) read shareable arrangements; outer joins arrange
    /// privately (they also read the rows whose key is NULL). `COUNT`/`SUM`-only reductions and
    /// top-k keep their own state and arrange no input.
    pub fn arranged_inputs(&self) -> Vec<ArrangedInput> {
        let shareable = |child: usize, input: &RelExpr, key: Vec<usize>, can_share: bool| {
            let shared = match input {
                RelExpr::Get { id, .. } if can_share => Some(*id),
                _ => None,
            };
            ArrangedInput { child, key, shared }
        };
        match self {
            RelExpr::Join { left, right, kind, equi, .. } => {
                let inner = *kind == JoinKind::Inner;
                vec![
                    shareable(0, left, equi.iter().map(|(l, _)| *l).collect(), inner),
                    shareable(1, right, equi.iter().map(|(_, r)| *r).collect(), inner),
                ]
            }
            RelExpr::Reduce { input, group_key, aggregates }
                if !aggregates.iter().all(|a| a.func.is_accumulable() && !a.distinct) =>
            {
                vec![shareable(0, input, group_key.clone(), true)]
            }
            RelExpr::Distinct { input } => vec![shareable(0, input, (0..input.arity()).collect(), true)],
            _ => Vec::new(),
        }
    }

    /// Every shared arrangement a dataflow rendering this plan reads, as `(item, arity, key)`,
    /// without repeats, in first-use order.
    pub fn shared_arrangements(&self) -> Vec<(GlobalId, usize, Vec<usize>)> {
        let mut out: Vec<(GlobalId, usize, Vec<usize>)> = Vec::new();
        self.visit(&mut |e| {
            for a in e.arranged_inputs() {
                if let Some(id) = a.shared {
                    let arity = e.children()[a.child].arity();
                    if !out.iter().any(|(i, _, k)| *i == id && *k == a.key) {
                        out.push((id, arity, a.key));
                    }
                }
            }
        });
        out
    }

    /// The direct inputs, in order.
    pub fn children(&self) -> Vec<&RelExpr> {
        match self {
            RelExpr::Get { .. } | RelExpr::Constant { .. } => Vec::new(),
            RelExpr::Map { input, .. }
            | RelExpr::Filter { input, .. }
            | RelExpr::Project { input, .. }
            | RelExpr::Reduce { input, .. }
            | RelExpr::TopK { input, .. }
            | RelExpr::Negate { input }
            | RelExpr::Distinct { input }
            | RelExpr::Threshold { input } => vec![input],
            RelExpr::Join { left, right, .. } => vec![left, right],
            RelExpr::Union { inputs } => inputs.iter().collect(),
        }
    }

    /// The direct inputs, in order, to change.
    pub fn children_mut(&mut self) -> Vec<&mut RelExpr> {
        match self {
            RelExpr::Get { .. } | RelExpr::Constant { .. } => Vec::new(),
            RelExpr::Map { input, .. }
            | RelExpr::Filter { input, .. }
            | RelExpr::Project { input, .. }
            | RelExpr::Reduce { input, .. }
            | RelExpr::TopK { input, .. }
            | RelExpr::Negate { input }
            | RelExpr::Distinct { input }
            | RelExpr::Threshold { input } => vec![input],
            RelExpr::Join { left, right, .. } => vec![left, right],
            RelExpr::Union { inputs } => inputs.iter_mut().collect(),
        }
    }

    /// A row of `arity` NULLs.
    pub fn null_row(arity: usize) -> Row {
        Row::new(vec![Datum::Null; arity])
    }
}
