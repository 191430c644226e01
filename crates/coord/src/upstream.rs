//! Gateway mode: a view of an upstream server (`CREATE SOURCE v FROM UPSTREAM 'url' SUBSCRIBE w`)
//! as a catalog item.
//!
//! One upstream view is three things under one name:
//! - a hub view with its **own clock** (`Hub::register_own_clock`), sealed with the upstream's
//!   timestamps as each of them completes, so streams, pgwire `SUBSCRIBE`, sinks and `SELECT`
//!   see exactly the upstream's timestamps;
//! - a hidden engine input, fed the same changes at the next local tick, so local views can read
//!   it (a filter, a join with a local source): their timestamps are the local clock's. Plans name
//!   the item's id; [`engine_plan`] points them at the input before they reach the engine (which
//!   never knows the item's id).
//!
//! The task following the upstream (crate `viewcast-upstream`) is owned by the catalog item and
//! aborted when the item is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use viewcast_hub::Hub;
use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{consolidate_updates, Diff, Row, Timestamp, Update};
use viewcast_sql::ItemKind;
use viewcast_upstream::{UpstreamConfig, UpstreamSink};

use crate::catalog::Catalog;
use crate::execute::{already_exists, create_hidden_input, new_item, StatementError};
use crate::Shared;

/// Changes of upstream views waiting for the next local tick, per engine input. The tick loop
/// takes all of it at once. Overflow policy: while the engine lags (admission control skips
/// ticks), an input's changes are consolidated whenever they double, so they stay within about
/// twice the distinct rows they touch.
#[derive(Default)]
pub(crate) struct UpstreamMailbox {
    inputs: Mutex<HashMap<GlobalId, Pending>>,
}

#[derive(Default)]
struct Pending {
    updates: Vec<(Row, Diff)>,
    consolidated_len: usize,
}

impl UpstreamMailbox {
    fn push(&self, input: GlobalId, updates: impl IntoIterator<Item = (Row, Diff)>) {
        let mut inputs = self.inputs.lock().expect("mailbox lock");
        let pending = inputs.entry(input).or_default();
        pending.updates.extend(updates);
        if pending.updates.len() > 2 * pending.consolidated_len.max(1024) {
            consolidate_updates(&mut pending.updates);
            pending.consolidated_len = pending.updates.len();
        }
    }

    /// Everything waiting, for the next tick.
    pub(crate) fn take(&self) -> Vec<(GlobalId, Vec<(Row, Diff)>)> {
        let mut inputs = self.inputs.lock().expect("mailbox lock");
        inputs.drain().map(|(id, p)| (id, p.updates)).filter(|(_, u)| !u.is_empty()).collect()
    }

    fn forget(&self, input: GlobalId) {
        self.inputs.lock().expect("mailbox lock").remove(&input);
    }
}

/// The running follower of one upstream view; stops it when dropped (with its catalog item).
pub(crate) struct UpstreamRuntime {
    task: tokio::task::JoinHandle<()>,
    mailbox: Arc<UpstreamMailbox>,
    input: GlobalId,
}

impl Drop for UpstreamRuntime {
    fn drop(&mut self) {
        self.task.abort();
        self.mailbox.forget(self.input);
    }
}

/// Where one upstream view's complete timestamps go: the hub view, then the engine input.
struct Feed {
    hub: Arc<Hub>,
    view: GlobalId,
    input: GlobalId,
    mailbox: Arc<UpstreamMailbox>,
}

impl UpstreamSink for Feed {
    fn frontier(&self) -> Option<Timestamp> {
        self.hub.is_ready(self.view).then(|| self.hub.view_frontier(self.view)).flatten()
    }

    fn contents(&self) -> Vec<(Row, Diff)> {
        self.hub.with_log(self.view, |log| log.rows().map(|(r, d)| (r.clone(), d)).collect()).unwrap_or_default()
    }

    fn seal(&self, upto: Timestamp, updates: Vec<Update>) -> Result<(), String> {
        let local: Vec<(Row, Diff)> = updates.iter().map(|(r, _, d)| (r.clone(), *d)).collect();
        self.hub.apply_view(self.view, upto, updates).map_err(|e| e.to_string())?;
        self.mailbox.push(self.input, local);
        Ok(())
    }
}

/// `plan` with every read of an upstream view turned into a read of its engine input.
pub(crate) fn engine_plan(cat: &Catalog, mut plan: RelExpr) -> RelExpr {
    plan.visit_mut(&mut |e| {
        if let RelExpr::Get { id, .. } = e {
            if let Some(input) = cat.items.get(id).filter(|i| i.upstream.is_some()).and_then(|i| i.input) {
                *id = input;
            }
        }
    });
    plan
}

/// How long `CREATE SOURCE ... FROM UPSTREAM` waits for the upstream's first complete timestamp
/// before returning anyway (the view then becomes readable when it arrives).
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// Describes the upstream view, creates the catalog item, the hub view, the engine input and the
/// identity view over it, starts following the upstream, and returns once its first snapshot is
/// sealed (or after [`FIRST_SNAPSHOT_WAIT`]).
pub(crate) async fn create_upstream(
    shared: &Shared,
    name: &str,
    url: &str,
    view: &str,
) -> Result<GlobalId, StatementError> {
    // The statement as written would show the upstream's password in `SHOW CREATE SOURCE`.
    let sql = &format!(
        "CREATE SOURCE {name} FROM UPSTREAM '{}' SUBSCRIBE {view}",
        viewcast_upstream::redact_password(url).replace('\'', "''")
    );
    let config = UpstreamConfig::new(url, view);
    let desc = viewcast_upstream::describe(&config)
        .await
        .map_err(|e| StatementError::new(format!("upstream view {view}: {e}"), "08001", None))?;
    if desc.arity() == 0 {
        return Err(StatementError::new(format!("upstream view {view} has no columns"), "0A000", None));
    }
    let id = {
        let _clock = shared.clock.lock().expect("clock lock");
        let mut cat = shared.catalog.lock().expect("catalog lock");
        if cat.resolve(name).is_some() {
            return Err(already_exists(name));
        }
        let input = create_hidden_input(shared, &mut cat, &format!("__upstream_input_{name}"), &desc, sql)?;
        let id = cat.allocate_id();
        shared.hub.register_own_clock(id, name, desc.clone(), 0);
        let feed = Feed { hub: shared.hub.clone(), view: id, input, mailbox: shared.upstream_mailbox.clone() };
        let task = tokio::spawn(viewcast_upstream::run(config, desc.clone(), Arc::new(feed)));
        let mut item = new_item(name, ItemKind::Source, desc, sql);
        item.input = Some(input);
        item.depends_on = vec![input];
        item.upstream = Some(UpstreamRuntime { task, mailbox: shared.upstream_mailbox.clone(), input });
        cat.insert(id, item);
        id
    };
    if tokio::time::timeout(FIRST_SNAPSHOT_WAIT, shared.hub.wait_for_view(id, 1)).await.is_err() {
        tracing::warn!(view = %name, "upstream: no complete timestamp yet; the view is not readable until one arrives");
    }
    Ok(id)
}
