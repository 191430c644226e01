// The dashboard (/): every relation in the catalog with its row count and freshness; open one to
// watch a live table and an automatic chart; a SQL box for SELECT and CREATE VIEW. When the
// catalog has the demo's `counter` and `top10`, a featured "Wikipedia edits" panel leads the page.
// All live data arrives through one viewcast.js connection.
import { connect, listViews, sql, bindVega } from './viewcast.js';
import {
  $, EventLog, watchConnection, mountWikipedia, logSubscription, embed, autoSpec, bindSeries, chartShape,
  LiveTable, staticTable, formatDuration, freshness, numberFormat, setText, STALE_AFTER_MS,
} from './panels.js';

const CATALOG_POLL_MS = 1000;

const log = new EventLog($('log'));
const client = connect(location.origin);
const live = []; // subscriptions whose readiness the status indicator waits for
/** For tests and the curious: what the dashboard holds. */
const dashboard = { client, views: [], detail: null };
window.viewcastClient = client;
window.viewcastDashboard = dashboard;
watchConnection(client, log, () => live);

let featured = null;
const rowsByName = new Map(); // view -> <tr> in the list

async function refreshCatalog() {
  let views;
  try {
    views = await listViews(location.origin);
  } catch (err) {
    showError($('views-error'), `Cannot list views: ${err.message}`);
    return;
  }
  showError($('views-error'), null);
  dashboard.views = views;
  if (!featured && views.some((v) => v.name === 'counter') && views.some((v) => v.name === 'top10')) {
    $('featured').hidden = false;
    $('demo-link').hidden = false;
    featured = mountWikipedia(client, log);
    live.push(featured.counter, featured.top10);
  }
  renderList(views);
}

function renderList(views) {
  const body = $('views');
  const seen = new Set();
  views.forEach((v, i) => {
    seen.add(v.name);
    let tr = rowsByName.get(v.name);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.view = v.name;
      tr.innerHTML = '<td class="vname"></td><td class="kind"></td><td class="num rows"></td><td class="num fresh"></td>';
      if (v.streamable) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'link';
        b.textContent = v.name;
        b.setAttribute('aria-label', `Open view ${v.name}`);
        b.addEventListener('click', () => openView(v.name));
        tr.cells[0].append(b);
      } else {
        const span = document.createElement('span');
        span.textContent = v.name;
        span.title = `${v.kind}: not streamable`;
        tr.cells[0].append(span);
      }
      rowsByName.set(v.name, tr);
    }
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
    tr.dataset.rows = v.rows ?? '';
    tr.dataset.ts = v.ts ?? '';
    setText(tr.cells[1], v.kind);
  });
  for (const [name, tr] of rowsByName) {
    if (!seen.has(name)) {
      tr.remove();
      rowsByName.delete(name);
    }
  }
  renderCounts();
}

/** Row counts and freshness: live from a subscription when there is one, else from the catalog poll. */
function renderCounts() {
  const subs = new Map();
  if (featured) subs.set('counter', featured.counter).set('top10', featured.top10);
  if (dashboard.detail?.sub?.columns) subs.set(dashboard.detail.view, dashboard.detail.sub);
  for (const [name, tr] of rowsByName) {
    const sub = subs.get(name);
    const rows = sub && sub.state === 'live' ? sub.size : tr.dataset.rows === '' ? null : Number(tr.dataset.rows);
    const ts = sub && sub.state === 'live' ? sub.ts : tr.dataset.ts === '' ? null : Number(tr.dataset.ts);
    setText(tr.cells[2], rows === null ? '–' : numberFormat.format(rows));
    const f = freshness(ts);
    setText(tr.cells[3], formatDuration(f));
    tr.cells[3].classList.toggle('late', f !== null && f > STALE_AFTER_MS);
    tr.classList.toggle('selected', dashboard.detail?.view === name);
    if (dashboard.detail?.view === name) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
  }
  const d = dashboard.detail;
  if (d?.sub) {
    const state = d.sub.state === 'live' ? `live · ts ${d.sub.ts ?? '–'}` : d.sub.state;
    setText($('detail-meta'), `${d.sub.columns ? d.sub.columns.length : '–'} columns · ${numberFormat.format(d.sub.size)} rows · ${state}`);
  }
}

function showError(el, message) {
  el.hidden = !message;
  setText(el, message ?? '');
}

function closeView() {
  const d = dashboard.detail;
  if (!d) return;
  d.table?.close();
  d.unbind?.();
  d.sub.unsubscribe();
  live.splice(live.indexOf(d.sub), 1);
  dashboard.detail = null;
  $('detail-body').hidden = true;
  $('detail-empty').hidden = false;
  $('detail-close').hidden = true;
  showError($('detail-error'), null);
  setText($('detail-title'), 'Pick a view');
  setText($('detail-meta'), '');
  $('detail-chart').innerHTML = '';
}

function openView(name) {
  if (dashboard.detail?.view === name) return;
  closeView();
  const sub = logSubscription(client.subscribe(name), log);
  live.push(sub);
  const d = { view: name, sub, table: null, unbind: null };
  dashboard.detail = d;
  setText($('detail-title'), name);
  $('detail-close').hidden = false;
  $('detail-empty').hidden = true;
  $('detail-body').hidden = false;
  d.table = new LiveTable($('detail-table'), sub, { label: `Rows of ${name}`, pageSize: 12 });
  sub.onError((message) => showError($('detail-error'), message));
  let charted = false;
  sub.onChange(() => {
    showError($('detail-error'), null);
    if (charted || dashboard.detail !== d) return;
    charted = true;
    const shape = chartShape(sub.columns);
    $('detail-chart-none').hidden = !!shape;
    $('detail-chart').hidden = !shape;
    if (!shape) return;
    embed($('detail-chart'), autoSpec(shape, 220, 14), log, `Chart of ${name}`).then((view) => {
      if (!view || dashboard.detail !== d) return view?.finalize();
      d.chart = view;
      const binding = shape.kind === 'bars' ? bindVega(view, 'rows', sub) : { close: bindSeries(view, sub, shape.value) };
      d.unbind = () => {
        binding.close();
        view.finalize();
      };
    });
  });
  renderCounts();
}

$('detail-close').addEventListener('click', () => {
  const name = dashboard.detail?.view;
  closeView();
  rowsByName.get(name)?.querySelector('button')?.focus();
});

// SQL box -----------------------------------------------------------------------------------------

const form = $('sql-form');
const input = $('sql-input');
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    form.requestSubmit();
  }
});
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const query = input.value;
  if (!query.trim()) return;
  const out = $('sql-result');
  $('sql-run').disabled = true;
  out.setAttribute('aria-busy', 'true');
  try {
    const results = await sql(query, location.origin);
    out.replaceChildren(...results.map((r) => renderResult(r, query)));
    if (results.some((r) => r.ok && /^CREATE/i.test(r.ok))) {
      await refreshCatalog();
      const created = /create\s+(?:or\s+replace\s+)?(?:materialized\s+)?view\s+(?:if\s+not\s+exists\s+)?"?([\w.]+)"?/i.exec(query);
      if (created && rowsByName.has(created[1])) openView(created[1]);
    }
  } catch (err) {
    const p = document.createElement('p');
    p.className = 'error-box';
    p.setAttribute('role', 'alert');
    p.textContent = err.message;
    out.replaceChildren(p);
  } finally {
    $('sql-run').disabled = false;
    out.removeAttribute('aria-busy');
  }
});

function renderResult(r, query) {
  const box = document.createElement('div');
  box.className = 'sql-one';
  if (r.error) {
    box.classList.add('error-box');
    box.setAttribute('role', 'alert');
    const where = r.error.position ? ` at character ${r.error.position}` : '';
    box.textContent = `${r.error.code ? `${r.error.code}: ` : ''}${r.error.message}${where}`;
    if (r.error.position) {
      // The statement with a caret under the offending character.
      const pre = document.createElement('pre');
      const before = query.slice(0, r.error.position - 1);
      const lineStart = before.lastIndexOf('\n') + 1;
      const lineEnd = query.indexOf('\n', lineStart);
      const line = query.slice(lineStart, lineEnd < 0 ? undefined : lineEnd);
      pre.textContent = `${line}\n${' '.repeat(r.error.position - 1 - lineStart)}^`;
      box.append(pre);
    }
    return box;
  }
  const tag = document.createElement('p');
  tag.className = 'tag';
  tag.textContent = r.tag ?? r.ok ?? 'OK';
  box.append(tag);
  if (Array.isArray(r.rows)) {
    box.append(staticTable(r.col_names ?? [], r.rows));
    if (r.rows.length > 200) {
      const more = document.createElement('p');
      more.className = 'hint';
      more.textContent = `showing 200 of ${numberFormat.format(r.rows.length)} rows`;
      box.append(more);
    }
  }
  return box;
}

// -------------------------------------------------------------------------------------------------

refreshCatalog();
setInterval(refreshCatalog, CATALOG_POLL_MS);
setInterval(renderCounts, 250);
window.addEventListener('error', (e) => log.add('page', e.message, 'error'));
