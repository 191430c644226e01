//! Renders a [`RelExpr`] into a differential collection of rows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::trace::implementations::{KeyBuilder, KeySpine, ValBuilder, ValSpine};
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, ToStream};
use timely::dataflow::Scope;
use timely::progress::Antichain;
use viewcast_plan::{AggregateExpr, AggregateFunc, GlobalId, JoinKind, RelExpr, ScalarExpr, Validity};
use viewcast_repr::{Datum, Diff, Row, Timestamp};

use crate::arrange::{ArrangementKey, Imported};
use crate::forward::Forward;
use crate::scalar::Prepared;
use crate::worker::{ErrorSink, Items, ViewState};

/// A collection of rows with integer multiplicities.
pub(crate) type Coll<'s> = VecCollection<'s, Timestamp, Row, Diff>;
/// A view's arranged output.
pub(crate) type RowTrace = TraceAgent<KeySpine<Row, Timestamp, Diff>>;

/// The output shape of a `Reduce` computing only `COUNT(*)`s. Such a view keeps no arrangement: its
/// counts live in its [`crate::count`] operator, which serves dependents (see [`crate::forward`]).
#[derive(Clone, Debug)]
pub(crate) struct CountShape {
    /// How many `COUNT(*)` columns follow the key.
    pub(crate) aggs: usize,
    /// For a global aggregate: the row it has while no group exists.
    pub(crate) default: Option<Row>,
}

/// The input, group key and shape of `plan` if it is a `COUNT(*)`-only `Reduce`.
pub(crate) fn count_view(plan: &RelExpr) -> Option<(&RelExpr, &[usize], CountShape)> {
    match plan {
        RelExpr::Reduce { input, group_key, aggregates } if aggregates.iter().all(is_count_star) => {
            let default =
                group_key.is_empty().then(|| Row::new(aggregates.iter().map(|a| a.func.default_value()).collect()));
            Some((input, group_key, CountShape { aggs: aggregates.len(), default }))
        }
        _ => None,
    }
}

/// Whether the view's changes at each time after its `as_of` leave its operator consolidated, on
/// every worker together: a `COUNT(*)`-only reduction ([`crate::count`]: per key whose count
/// changed, the old row out and the new one in) or a top-k ([`crate::topk`]: each group's window
/// diffed and consolidated), both of which send each key or group to one worker. At `as_of` a
/// global count's default row may come and go in the same time, so that time is not.
pub(crate) fn consolidated_after_as_of(plan: &RelExpr) -> bool {
    count_view(plan).is_some() || matches!(plan, RelExpr::TopK { .. })
}

/// Whether `plan` keeps no state: dependents can render it inline instead of importing it.
///
/// A plan with a temporal filter is not linear: the filter emits retractions at future times, and
/// the snapshot/live split of [`crate::forward`] assumes every change is at the time of its input.
pub(crate) fn is_linear(plan: &RelExpr, items: &Items) -> bool {
    let mut linear = !plan.contains_mz_now();
    plan.visit(&mut |e| match e {
        RelExpr::Get { id, .. } => {
            if let Some(view) = items.views.get(id) {
                linear &= view.forward.is_some();
            }
        }
        RelExpr::Constant { .. }
        | RelExpr::Map { .. }
        | RelExpr::Filter { .. }
        | RelExpr::Project { .. }
        | RelExpr::Union { .. }
        | RelExpr::Negate { .. } => {}
        _ => linear = false,
    });
    linear
}

/// Which part of a collection to render: everything, only what the inputs' history gives at
/// `as_of`, or only what later ticks bring (see [`crate::forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    Full,
    Snapshot,
    Live,
}

/// How an input session of a dataflow is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// History at `as_of`, then every tick.
    Full,
    /// History at `as_of`, then closed.
    History,
    /// Every tick, no history.
    Live,
}

pub(crate) struct RenderCtx<'s, 'a> {
    scope: Scope<'s, Timestamp>,
    as_of: Timestamp,
    /// The view being rendered, named in error reports.
    id: GlobalId,
    errors: Rc<ErrorSink>,
    items: &'a Items,
    gets: HashMap<(GlobalId, Part), Coll<'s>>,
    /// Shared arrangements imported into this dataflow.
    imports: HashMap<ArrangementKey, Imported<'s>>,
    /// The input sessions this dataflow reads; the worker feeds them once the dataflow is built.
    pub(crate) sessions: Vec<(GlobalId, Feed, InputSession<Timestamp, Row, Diff>)>,
}

impl<'s, 'a> RenderCtx<'s, 'a> {
    pub(crate) fn new(
        scope: Scope<'s, Timestamp>,
        as_of: Timestamp,
        id: GlobalId,
        errors: Rc<ErrorSink>,
        items: &'a Items,
    ) -> Self {
        RenderCtx {
            scope,
            as_of,
            id,
            errors,
            items,
            gets: HashMap::new(),
            imports: HashMap::new(),
            sessions: Vec::new(),
        }
    }

    fn session(&mut self, id: GlobalId, feed: Feed) -> Coll<'s> {
        // Fed by the worker once the dataflow is built: timely loses progress made on an input
        // handle while its dataflow is still under construction.
        let (session, coll) = self.scope.new_collection::<Row, Diff>();
        self.sessions.push((id, feed, session));
        coll
    }

    fn get(&mut self, id: GlobalId, part: Part) -> Coll<'s> {
        if let Some(c) = self.gets.get(&(id, part)) {
            return c.clone();
        }
        let coll = if self.items.inputs.contains_key(&id) {
            let feed = match part {
                Part::Full => Feed::Full,
                Part::Snapshot => Feed::History,
                Part::Live => Feed::Live,
            };
            self.session(id, feed)
        } else {
            let view: &ViewState = self.items.views.get(&id).expect("the handle checked that every Get exists");
            match (&view.trace, &view.forward) {
                (Some(trace), _) => {
                    assert_eq!(part, Part::Full, "linear plans read no arranged view");
                    let mut trace = trace.clone();
                    let (arranged, _button) = trace.import_frontier_core(
                        self.scope,
                        &format!("Import {id}"),
                        Antichain::from_elem(self.as_of),
                        Antichain::new(),
                    );
                    arranged.as_collection(|row: &Row, _: &()| row.clone())
                }
                (None, Some(forward)) => {
                    let plan = view.plan.clone();
                    match part {
                        Part::Snapshot => self.render_part(&plan, Part::Snapshot),
                        Part::Live => crate::forward::subscribe(self.scope, forward, self.as_of, None, false),
                        Part::Full => {
                            let snapshot = self.render_part(&plan, Part::Snapshot);
                            snapshot.concat(crate::forward::subscribe(self.scope, forward, self.as_of, None, false))
                        }
                    }
                }
                (None, None) => {
                    assert_eq!(part, Part::Full, "linear plans read no counted view");
                    let output = view.output.as_ref().expect("a view is arranged, forwarded or counted");
                    crate::forward::subscribe(self.scope, output, self.as_of, None, true)
                }
            }
        };
        self.gets.insert((id, part), coll.clone());
        coll
    }

    /// The shared arrangement `plan` reads for its input `child`, if it reads one, imported at `as_of`.
    fn shared_input(&mut self, plan: &RelExpr, child: usize) -> Option<Imported<'s>> {
        let input = plan.arranged_inputs().into_iter().find(|a| a.child == child)?;
        let key = (input.shared?, input.key);
        if let Some(imported) = self.imports.get(&key) {
            return Some(imported.clone());
        }
        let arrangement = self.items.arrangements.get(&key).expect("the worker builds shared arrangements first");
        // Not `import_frontier`: its batches cannot be joined or reduced. The trace's times are
        // at or after its compaction frontier but may precede `as_of`: every output of an operator
        // reading it goes through `at_or_after`.
        let mut trace = arrangement.trace.clone();
        let imported = trace.import_named(self.scope, &format!("Import u{} by {:?}", key.0, key.1));
        self.imports.insert(key, imported.clone());
        Some(imported)
    }

    pub(crate) fn render(&mut self, plan: &RelExpr) -> Coll<'s> {
        self.render_part(plan, Part::Full)
    }

    /// Renders `part` of `plan`; only linear plans are rendered in parts other than `Full`.
    pub(crate) fn render_part(&mut self, plan: &RelExpr, part: Part) -> Coll<'s> {
        match plan {
            RelExpr::Get { id, .. } => self.get(*id, part),
            RelExpr::Constant { rows, .. } => {
                if part == Part::Live {
                    self.constant(Vec::new())
                } else {
                    self.constant(rows.clone())
                }
            }
            RelExpr::Map { .. } | RelExpr::Filter { .. } | RelExpr::Project { .. } => self.render_mfp(plan, part),
            RelExpr::Union { inputs } => {
                let parts: Vec<Coll<'s>> = inputs.iter().map(|i| self.render_part(i, part)).collect();
                differential_dataflow::collection::concatenate(self.scope, parts)
            }
            RelExpr::Negate { input } => self.render_part(input, part).negate(),
            _ if part != Part::Full => unreachable!("only linear plans are rendered in parts"),
            RelExpr::Distinct { input } => match self.shared_input(plan, 0) {
                // The key is the whole row.
                Some(arranged) => {
                    let distinct = arranged
                        .reduce_abelian::<_, KeyBuilder<Row, Timestamp, Diff>, KeySpine<Row, Timestamp, Diff>, _, _>(
                            "Distinct",
                            |_key, _rows, out| out.push(((), 1)),
                            |vec, key, upds| {
                                vec.clear();
                                vec.extend(upds.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
                            },
                        )
                        .as_collection(|row: &Row, _: &()| row.clone());
                    at_or_after(distinct, self.as_of)
                }
                None => self.render(input).distinct_core::<Diff>(),
            },
            RelExpr::Threshold { input } => self.render(input).threshold(|_, r: &Diff| (*r).max(0)),
            RelExpr::Reduce { input, group_key, aggregates } => match self.shared_input(plan, 0) {
                Some(arranged) => self.render_reduce_shared(arranged, group_key, aggregates),
                None => {
                    let input = self.render(input);
                    self.render_reduce(input, group_key.clone(), aggregates.clone())
                }
            },
            RelExpr::TopK { input, group_key, order_key, limit, offset } => {
                let counted_key = self.counted_key(input);
                let input = self.render(input);
                crate::topk::render(input, group_key.clone(), order_key.clone(), *limit, *offset, counted_key)
            }
            RelExpr::Join { left, right, kind: JoinKind::Inner, equi, predicate }
                if plan.arranged_inputs().iter().any(|a| a.shared.is_some()) =>
            {
                let (l, r) = (self.join_side(plan, 0, left, equi), self.join_side(plan, 1, right, equi));
                let rows = join_rows(predicate.clone(), self.errors.clone(), self.id);
                at_or_after(l.join_core(r, rows), self.as_of)
            }
            RelExpr::Join { left, right, kind, equi, predicate } => {
                let la = left.arity();
                let ra = right.arity();
                let l = self.render(left);
                let r = self.render(right);
                self.render_join(l, r, la, ra, *kind, equi.clone(), predicate.clone())
            }
        }
    }

    /// The key length of a counted view `plan` reads directly (a `Get` of a `COUNT(*)`-only view
    /// whose operator serves it): its rows are on the workers their keys were routed to.
    fn counted_key(&self, plan: &RelExpr) -> Option<usize> {
        let RelExpr::Get { id, .. } = plan else { return None };
        let view = self.items.views.get(id)?;
        view.output.as_ref()?;
        count_view(&view.plan).map(|(_, key, _)| key.len())
    }

    /// Renders a view whose plan is a `COUNT(*)`-only `Reduce` (see [`count_view`]), delivering its
    /// changes to `output`, from which dependents read it.
    pub(crate) fn render_count_view(
        &mut self,
        input: &RelExpr,
        group_key: &[usize],
        shape: CountShape,
        output: Rc<RefCell<Forward>>,
    ) -> Coll<'s> {
        let (input, key) = self.render_columns(input, group_key);
        crate::count::render(input, key, shape, self.as_of, Some(output))
    }

    /// `input`, of whose columns only `cols` are read, and where `cols` are in its rows. When `input`
    /// reads a forwarded view, that view's forward sends only `cols`: no whole row is cloned.
    fn render_columns(&mut self, input: &RelExpr, cols: &[usize]) -> (Coll<'s>, Vec<usize>) {
        let forward = match input {
            RelExpr::Get { id, .. } => self.items.views.get(id).and_then(|v| v.forward.clone().map(|f| (*id, f))),
            _ => None,
        };
        let Some((id, forward)) = forward else {
            return (self.render(input), cols.to_vec());
        };
        let narrow: Rc<[usize]> = cols.into();
        let snapshot = {
            let narrow = narrow.clone();
            self.get(id, Part::Snapshot).map(move |row: Row| crate::forward::columns_of(&row, &narrow))
        };
        let live = crate::forward::subscribe(self.scope, &forward, self.as_of, Some(narrow), false);
        (snapshot.concat(live), (0..cols.len()).collect())
    }

    /// A global aggregate has exactly one row: `default` while the reduction has none.
    fn with_default(&self, output: Coll<'s>, default: Row) -> Coll<'s> {
        let default_stream = self.constant(vec![(default.clone(), 1)]);
        let retract = output.clone().map(move |_| default.clone()).negate();
        output.concat(default_stream).concat(retract)
    }

    /// Literal rows at `as_of`, introduced by worker 0 only.
    fn constant(&self, rows: Vec<(Row, Diff)>) -> Coll<'s> {
        let as_of = self.as_of;
        let rows: Vec<(Row, Timestamp, Diff)> =
            if self.scope.index() == 0 { rows.into_iter().map(|(r, d)| (r, as_of, d)).collect() } else { Vec::new() };
        rows.to_stream(self.scope).as_collection()
    }

    /// A chain of Map/Filter/Project, fused into one pass over each row.
    fn render_mfp(&mut self, plan: &RelExpr, part: Part) -> Coll<'s> {
        let mut ops = Vec::new();
        let mut node = plan;
        loop {
            match node {
                RelExpr::Map { input, scalars } => {
                    ops.push(MfpOp::Map(scalars.iter().map(Prepared::new).collect()));
                    node = input;
                }
                RelExpr::Filter { input, predicates } => {
                    let (temporal, plain): (Vec<ScalarExpr>, Vec<ScalarExpr>) =
                        predicates.iter().cloned().partition(|p| p.contains_mz_now());
                    let plain = plain.iter().map(Prepared::new).collect();
                    ops.push(MfpOp::Filter { plain, temporal });
                    node = input;
                }
                RelExpr::Project { input, outputs } => {
                    ops.push(MfpOp::Project(outputs.clone()));
                    node = input;
                }
                _ => break,
            }
        }
        ops.reverse();
        // The widest the row gets, so it is allocated once at that width.
        let mut width = node.arity();
        let mut widest = width;
        for op in &ops {
            match op {
                MfpOp::Map(scalars) => width += scalars.len(),
                MfpOp::Project(outputs) => width = outputs.len(),
                MfpOp::Filter { .. } => {}
            }
            widest = widest.max(width);
        }
        let input = self.render_part(node, part);
        let (errors, id) = (self.errors.clone(), self.id);
        if !ops.iter().any(|op| matches!(op, MfpOp::Filter { temporal, .. } if !temporal.is_empty())) {
            return input.flat_map(move |row: Row| apply_mfp(&ops, widest, row, &errors, id).map(|(row, _)| row));
        }
        // A temporal filter: each update `(row, t, d)` becomes `(row, max(t, lower), d)` and
        // `(row, upper, -d)` for the row's validity `[lower, upper)`. Times only move forward, so
        // the updates stay at or after their message's capability.
        use timely::dataflow::operators::core::Map;
        input
            .inner
            .flat_map::<Vec<(Row, Timestamp, Diff)>, _, _>(move |(row, time, diff): (Row, Timestamp, Diff)| {
                let valid = apply_mfp(&ops, widest, row, &errors, id);
                valid.into_iter().flat_map(move |(row, validity)| {
                    let validity = validity.unwrap_or(Validity { lower: 0, upper: None });
                    validity.updates(time).map(move |(t, sign)| (row.clone(), t, sign * diff))
                })
            })
            .as_collection()
    }

    /// One input of an inner join, arranged by its equi-join columns: the shared arrangement when
    /// it reads one, else a private one of the rendered input.
    fn join_side(&mut self, plan: &RelExpr, child: usize, input: &RelExpr, equi: &[(usize, usize)]) -> Imported<'s> {
        match self.shared_input(plan, child) {
            Some(arranged) => arranged,
            None => {
                let cols: Rc<[usize]> = equi.iter().map(|(l, r)| if child == 0 { *l } else { *r }).collect();
                key_by(self.render(input), cols).arrange_by_key()
            }
        }
    }

    /// A reduction reading a shared arrangement of its input by the group key: the group's whole
    /// rows, over which the aggregates' expressions are evaluated.
    fn render_reduce_shared(
        &mut self,
        arranged: Imported<'s>,
        group_key: &[usize],
        aggregates: &[AggregateExpr],
    ) -> Coll<'s> {
        let (errors, id) = (self.errors.clone(), self.id);
        let aggs = aggregates.to_vec();
        let inputs = prepare_inputs(aggregates);
        let mut values: Vec<(Row, Diff)> = Vec::new();
        let output = arranged
            .reduce_abelian::<_, ValBuilder<Row, Row, Timestamp, Diff>, ValSpine<Row, Row, Timestamp, Diff>, _, _>(
                "Reduce",
                move |_key, group: &[(&Row, Diff)], out: &mut Vec<(Row, Diff)>| {
                    values.clear();
                    for (row, n) in group {
                        match aggregate_inputs(&inputs, row) {
                            Ok(vals) => values.push((vals, *n)),
                            // Dropped, as the private path drops it (reported again when the group changes).
                            Err(e) => errors.report(id, &e),
                        }
                    }
                    let group: Vec<(&Row, Diff)> = values.iter().map(|(v, n)| (v, *n)).collect();
                    match aggregate_group(&aggs, &group) {
                        Ok(datums) => out.push((Row::new(datums), 1)),
                        Err(e) => errors.report(id, &e),
                    }
                },
                |vec, key, upds| {
                    vec.clear();
                    vec.extend(upds.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
                },
            )
            .as_collection(|key: &Row, vals: &Row| {
                let mut datums = key.0.clone();
                datums.extend(vals.0.iter().cloned());
                Row::new(datums)
            });
        let output = at_or_after(output, self.as_of);
        if !group_key.is_empty() {
            return output;
        }
        let default = Row::new(aggregates.iter().map(|a| a.func.default_value()).collect());
        self.with_default(output, default)
    }

    #[allow(clippy::too_many_arguments)]
    fn render_join(
        &mut self,
        l: Coll<'s>,
        r: Coll<'s>,
        la: usize,
        ra: usize,
        kind: JoinKind,
        equi: Vec<(usize, usize)>,
        predicate: Option<ScalarExpr>,
    ) -> Coll<'s> {
        let lcols: Rc<[usize]> = equi.iter().map(|(a, _)| *a).collect();
        let rcols: Rc<[usize]> = equi.iter().map(|(_, b)| *b).collect();
        let lk = key_by(l.clone(), lcols);
        let rk = key_by(r.clone(), rcols);
        let rows = join_rows(predicate.clone(), self.errors.clone(), self.id);
        let inner = lk.clone().arrange_by_key().join_core(rk.clone().arrange_by_key(), rows);
        let mut result = inner.clone();
        let left_outer = matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter);
        let right_outer = matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter);
        if left_outer {
            let matched = if predicate.is_none() {
                let keys = rk.clone().map(|(k, _)| k).distinct_core::<Diff>();
                lk.clone().semijoin(keys).map(|(_, row)| row)
            } else {
                let rows = inner.clone().map(move |row| Row::new(row.datums()[..la].to_vec())).distinct_core::<Diff>();
                l.clone().map(|row| (row, ())).semijoin(rows).map(|(row, ())| row)
            };
            let unmatched = l.concat(matched.negate());
            result = result.concat(unmatched.map(move |row| {
                let mut datums = row.0;
                datums.resize(la + ra, Datum::Null);
                Row::new(datums)
            }));
        }
        if right_outer {
            let matched = if predicate.is_none() {
                let keys = lk.map(|(k, _)| k).distinct_core::<Diff>();
                rk.semijoin(keys).map(|(_, row)| row)
            } else {
                let rows = inner.map(move |row| Row::new(row.datums()[la..].to_vec())).distinct_core::<Diff>();
                r.clone().map(|row| (row, ())).semijoin(rows).map(|(row, ())| row)
            };
            let unmatched = r.concat(matched.negate());
            result = result.concat(unmatched.map(move |row| {
                let mut datums = vec![Datum::Null; la];
                datums.extend(row.0);
                Row::new(datums)
            }));
        }
        result
    }

    fn render_reduce(&mut self, input: Coll<'s>, group_key: Vec<usize>, aggregates: Vec<AggregateExpr>) -> Coll<'s> {
        let (errors, id) = (self.errors.clone(), self.id);
        let global = group_key.is_empty();
        let accumulable = aggregates.iter().all(|a| a.func.is_accumulable() && !a.distinct);
        let output = if accumulable && aggregates.iter().all(is_count_star) {
            // Every aggregate is the group's row count: the multiplicity itself.
            let default = global.then(|| Row::new(aggregates.iter().map(|a| a.func.default_value()).collect()));
            let shape = CountShape { aggs: aggregates.len(), default };
            return crate::count::render(input, group_key, shape, self.as_of, None);
        } else if accumulable {
            let key_cols = group_key.clone();
            let aggs: Vec<(AggregateFunc, Prepared)> =
                aggregates.iter().map(|a| (a.func, Prepared::new(&a.expr))).collect();
            let slots =
                1 + aggregates.iter().map(|a| if a.func == AggregateFunc::Count { 1 } else { 2 }).sum::<usize>();
            let exploded = pre_aggregate(input, key_cols, "AccumulateAggregates", move |row, diff| {
                match accumulate(&aggs, row, diff, slots) {
                    Ok(acc) => Some(acc),
                    Err(e) => {
                        errors.report(id, &e);
                        None
                    }
                }
            });
            let aggs = aggregates.clone();
            exploded.count_total_core::<Diff>().map(move |(key, acc): (Row, Vec<Diff>)| {
                let mut datums = key.0;
                let mut slot = 1;
                for a in &aggs {
                    if a.func == AggregateFunc::Count {
                        datums.push(Datum::Int(acc[slot]));
                        slot += 1;
                    } else {
                        datums.push(if acc[slot] == 0 { Datum::Null } else { Datum::Int(acc[slot + 1]) });
                        slot += 2;
                    }
                }
                Row::new(datums)
            })
        } else {
            let key_cols = group_key.clone();
            let inputs = prepare_inputs(&aggregates);
            let errors2 = errors.clone();
            let keyed = input.flat_map(move |row: Row| match aggregate_inputs(&inputs, &row) {
                Ok(vals) => Some((Row::new(key_cols.iter().map(|&i| row.get(i).clone()).collect()), vals)),
                Err(e) => {
                    errors2.report(id, &e);
                    None
                }
            });
            let aggs = aggregates.clone();
            keyed
                .reduce(move |_key: &Row, group: &[(&Row, Diff)], out: &mut Vec<(Row, Diff)>| {
                    match aggregate_group(&aggs, group) {
                        Ok(datums) => out.push((Row::new(datums), 1)),
                        Err(e) => errors.report(id, &e),
                    }
                })
                .map(|(key, vals): (Row, Row)| {
                    let mut datums = key.0;
                    datums.extend(vals.0);
                    Row::new(datums)
                })
        };
        if !global {
            return output;
        }
        let default = Row::new(aggregates.iter().map(|a| a.func.default_value()).collect());
        self.with_default(output, default)
    }
}

/// `c` with every update before `as_of` moved to `as_of`: what it accumulates to at `as_of` and
/// later is unchanged. (Times only move forward, so updates stay at or after their capability.)
fn at_or_after<'s>(c: Coll<'s>, as_of: Timestamp) -> Coll<'s> {
    use timely::dataflow::operators::core::Map;
    c.inner.map(move |(row, time, diff): (Row, Timestamp, Diff)| (row, time.max(as_of), diff)).as_collection()
}

/// The output of a join for a matching `(key, left row, right row)`: the rows concatenated, if
/// `predicate` holds of them. A key with a NULL matches nothing (a shared arrangement keeps them).
fn join_rows(
    predicate: Option<ScalarExpr>,
    errors: Rc<ErrorSink>,
    id: GlobalId,
) -> impl FnMut(&Row, &Row, &Row) -> Option<Row> + 'static {
    let predicate = predicate.as_ref().map(Prepared::new);
    move |key: &Row, lrow: &Row, rrow: &Row| {
        if key.datums().iter().any(Datum::is_null) {
            return None;
        }
        let mut datums = Vec::with_capacity(lrow.len() + rrow.len());
        datums.extend_from_slice(lrow.datums());
        datums.extend_from_slice(rrow.datums());
        match &predicate {
            Some(p) if !holds(p, &datums, &errors, id) => None,
            _ => Some(Row::new(datums)),
        }
    }
}

/// The aggregates' input expressions, prepared for evaluation.
fn prepare_inputs(aggs: &[AggregateExpr]) -> Vec<Prepared> {
    aggs.iter().map(|a| Prepared::new(&a.expr)).collect()
}

/// The values of the aggregates' `inputs` for one input row, as a row with aggregate `i`'s value
/// in column `i`.
fn aggregate_inputs(inputs: &[Prepared], row: &Row) -> Result<Row, viewcast_plan::EvalError> {
    inputs.iter().map(|e| e.eval(row.datums())).collect::<Result<Vec<_>, _>>().map(Row::new)
}

/// Whether predicate `p` is true of `datums` (not false or NULL); an evaluation error is reported
/// to `errors` and counts as not true.
fn holds(p: &Prepared, datums: &[Datum], errors: &ErrorSink, id: GlobalId) -> bool {
    match p.eval(datums) {
        Ok(d) => matches!(d, Datum::Bool(true)),
        Err(e) => {
            errors.report(id, &e);
            false
        }
    }
}

/// The aggregates of one group, whose rows hold aggregate `i`'s input value in column `i`.
fn aggregate_group(aggs: &[AggregateExpr], group: &[(&Row, Diff)]) -> Result<Vec<Datum>, viewcast_plan::EvalError> {
    let mut datums = Vec::with_capacity(aggs.len());
    for (i, a) in aggs.iter().enumerate() {
        datums.push(if a.distinct {
            let mut values: Vec<&Datum> = group.iter().filter(|(_, n)| *n > 0).map(|(v, _)| v.get(i)).collect();
            values.sort();
            values.dedup();
            a.func.eval(values.into_iter().map(|d| (d, 1)))?
        } else {
            a.func.eval(group.iter().filter(|(_, n)| *n > 0).map(|(v, n)| (v.get(i), *n)))?
        });
    }
    Ok(datums)
}

fn is_count_star(a: &AggregateExpr) -> bool {
    a.func == AggregateFunc::Count && !a.distinct && matches!(&a.expr, ScalarExpr::Literal(d, _) if !d.is_null())
}

/// A fast, deterministic hasher for operator-local hash maps and exchange, the same on every worker.
/// (rustc-hash 2 mixes its state when finishing: a plain FxHash leaves the low bits, which pick
/// a hash table's bucket, depending on only the low bytes of each word, which clusters text keys.)
pub(crate) use rustc_hash::{FxHashMap, FxHasher};

/// Accumulations per group key.
type KeySums<R> = FxHashMap<Vec<Datum>, R>;

/// The `key_cols` of each row with `value(row, diff)`, summed per key and time within each batch
/// of input (one tick's rows usually arrive together), so a reduce's arrangement receives one update
/// per key touched instead of one per row. Rows for which `value` gives `None` are dropped.
fn pre_aggregate<'s, R, F>(
    input: Coll<'s>,
    key_cols: Vec<usize>,
    name: &str,
    mut value: F,
) -> VecCollection<'s, Timestamp, Row, R>
where
    R: Semigroup + 'static,
    F: FnMut(&Row, Diff) -> Option<R> + 'static,
{
    // A contiguous key is looked up as a slice of the row, without building it.
    let contiguous = key_cols.windows(2).all(|w| w[1] == w[0] + 1);
    let range = key_cols.first().map_or(0..0, |&s| s..s + key_cols.len());
    input
        .inner
        .unary::<CapacityContainerBuilder<Vec<(Row, Timestamp, R)>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut pending: Vec<(Capability<Timestamp>, Timestamp, KeySums<R>)> = Vec::new();
            let mut spare: Vec<KeySums<R>> = Vec::new();
            let mut scratch: Vec<Datum> = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    for (row, time, diff) in data.drain(..) {
                        let Some(r) = value(&row, diff) else { continue };
                        let idx = match pending.iter().position(|p| p.1 == time) {
                            Some(i) => i,
                            None => {
                                pending.push((cap.delayed(&time, 0), time, spare.pop().unwrap_or_default()));
                                pending.len() - 1
                            }
                        };
                        let map = &mut pending[idx].2;
                        if contiguous {
                            let key = &row.datums()[range.clone()];
                            match map.get_mut(key) {
                                Some(acc) => acc.plus_equals(&r),
                                None => {
                                    map.insert(key.to_vec(), r);
                                }
                            }
                        } else {
                            scratch.clear();
                            scratch.extend(key_cols.iter().map(|&i| row.get(i).clone()));
                            match map.get_mut(scratch.as_slice()) {
                                Some(acc) => acc.plus_equals(&r),
                                None => {
                                    map.insert(std::mem::take(&mut scratch), r);
                                }
                            }
                        }
                    }
                });
                for (cap, time, mut map) in pending.drain(..) {
                    let mut session = output.session(&cap);
                    for (key, r) in map.drain() {
                        if !r.is_zero() {
                            session.give((Row::new(key), time, r));
                        }
                    }
                    spare.push(map);
                }
            }
        })
        .as_collection()
}

/// The accumulator of one input row with multiplicity `diff`: `[rows, (non-null count[, sum]) per aggregate]`.
fn accumulate(
    aggs: &[(AggregateFunc, Prepared)],
    row: &Row,
    diff: Diff,
    slots: usize,
) -> Result<Vec<Diff>, viewcast_plan::EvalError> {
    let mut acc = Vec::with_capacity(slots);
    acc.push(diff);
    for (func, expr) in aggs {
        let d = expr.eval(row.datums())?;
        let present = if d.is_null() { 0 } else { diff };
        acc.push(present);
        if *func == AggregateFunc::SumInt {
            match d {
                Datum::Null => acc.push(0),
                Datum::Int(i) => {
                    acc.push(i.checked_mul(diff).ok_or_else(|| viewcast_plan::EvalError::OutOfRange("bigint".into()))?)
                }
                other => return Err(viewcast_plan::EvalError::Other(format!("sum of non-integer {other}"))),
            }
        }
    }
    Ok(acc)
}

/// Rows keyed by the `cols` columns; rows with a NULL key column never match and are left out.
fn key_by<'s>(c: Coll<'s>, cols: Rc<[usize]>) -> VecCollection<'s, Timestamp, (Row, Row), Diff> {
    c.flat_map(move |row: Row| {
        let mut key = Vec::with_capacity(cols.len());
        for &i in cols.iter() {
            let d = row.get(i);
            if d.is_null() {
                return None;
            }
            key.push(d.clone());
        }
        Some((Row::new(key), row))
    })
}

enum MfpOp {
    Map(Vec<Prepared>),
    /// `temporal` holds the predicates with `mz_now()` (each a temporal predicate: the handle
    /// checked the plan); they bound the row's validity instead of dropping it.
    Filter {
        plain: Vec<Prepared>,
        temporal: Vec<ScalarExpr>,
    },
    Project(Vec<usize>),
}

/// The row after `ops` (held at `widest` columns throughout), with its validity interval if a temporal filter bounded it; `None` when a
/// predicate drops it, its interval is empty, or evaluation fails (reported to `errors`).
fn apply_mfp(
    ops: &[MfpOp],
    widest: usize,
    row: Row,
    errors: &ErrorSink,
    id: GlobalId,
) -> Option<(Row, Option<Validity>)> {
    let mut datums = row.0;
    datums.reserve_exact(widest.saturating_sub(datums.len()));
    let mut validity: Option<Validity> = None;
    for op in ops {
        match op {
            MfpOp::Map(scalars) => {
                for s in scalars {
                    match s.eval(&datums) {
                        Ok(d) => datums.push(d),
                        Err(e) => {
                            errors.report(id, &e);
                            return None;
                        }
                    }
                }
            }
            MfpOp::Filter { plain, temporal } => {
                if !plain.iter().all(|p| holds(p, &datums, errors, id)) {
                    return None;
                }
                if !temporal.is_empty() {
                    match viewcast_plan::temporal::validity(temporal, &datums) {
                        Ok(Some(v)) => validity = Some(intersect(validity, v)),
                        Ok(None) => return None,
                        Err(e) => {
                            errors.report(id, &e);
                            return None;
                        }
                    }
                }
            }
            MfpOp::Project(outputs) => project_in_place(&mut datums, outputs),
        }
    }
    if validity.is_some_and(|v| v.upper.is_some_and(|u| u <= v.lower)) {
        return None;
    }
    Some((Row::new(datums), validity))
}

/// The intersection of two validity intervals (possibly empty: `upper <= lower`).
fn intersect(a: Option<Validity>, b: Validity) -> Validity {
    match a {
        None => b,
        Some(a) => Validity {
            lower: a.lower.max(b.lower),
            upper: match (a.upper, b.upper) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
        },
    }
}

/// Keeps `outputs` of `datums`, in that order. Increasing columns (the common `SELECT a, b, c`) are
/// moved down in place, without a new allocation or clones.
fn project_in_place(datums: &mut Vec<Datum>, outputs: &[usize]) {
    if outputs.windows(2).all(|w| w[0] < w[1]) {
        // Strictly increasing, so `i >= j` and every slot below `j` is already final.
        for (j, &i) in outputs.iter().enumerate() {
            datums.swap(j, i);
        }
        datums.truncate(outputs.len());
    } else {
        *datums = outputs.iter().map(|&i| datums[i].clone()).collect();
    }
}
