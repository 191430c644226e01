// Pieces shared by the dashboard (/) and the Wikipedia demo (/demo/wikipedia): formatting, the
// connection status, the event log, the Wikipedia panels (edit counter, top-10 table and bars),
// a live table for any view, and automatic charts.
//
// Every live element has a fixed size and is updated in place, so 20 updates a second neither
// flicker nor move the layout.
import { bindVega, isNumericType, toNumber, rowObject } from './viewcast.js';

export const numberFormat = new Intl.NumberFormat('en-US');
export const $ = (id) => document.getElementById(id);
export const STALE_AFTER_MS = 5000;

export function formatTs(ts) {
  const d = new Date(ts);
  if (ts === null || ts === undefined || Number.isNaN(d.getTime())) return '–';
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.floor((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

/** How old a complete timestamp is (timestamps are milliseconds since the Unix epoch). */
export function freshness(ts) {
  return ts === null || ts === undefined ? null : Math.max(0, Date.now() - ts);
}

export function formatValue(column, value) {
  if (value === null || value === undefined) return 'NULL';
  if (column && isNumericType(column.type)) {
    const n = toNumber(value);
    return typeof n === 'number' && Number.isInteger(n) ? numberFormat.format(n) : String(n);
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

/** The event log: connection events and errors, newest first, in a fixed-height list. */
export class EventLog {
  constructor(el, limit = 40) {
    this.el = el;
    this.limit = limit;
  }
  add(where, text, level = 'info') {
    if (level === 'error') console.warn(`[viewcast ${where}] ${text}`);
    if (!this.el) return;
    const li = document.createElement('li');
    li.className = `log-${level}`;
    const time = document.createElement('time');
    time.textContent = formatTs(Date.now());
    const b = document.createElement('b');
    b.textContent = where;
    li.append(time, b, document.createTextNode(text));
    this.el.prepend(li);
    while (this.el.children.length > this.limit) this.el.lastChild.remove();
  }
}

/**
 * Shows the client's connection in the status indicator (`#status`, `#status-text`) and logs its
 * transitions. "Live" once the connection is open and every given subscription has its data.
 */
export function watchConnection(client, log, subscriptions = () => []) {
  let lastLogged = null;
  const render = () => {
    const st = client.status;
    let cls;
    let text;
    const subs = subscriptions();
    if (st.state === 'open' && subs.every((s) => s.state === 'live' || s.state === 'failed')) {
      cls = 'live';
      text = st.transport === 'sse' ? 'Live (event stream)' : 'Live';
    } else if (st.state === 'reconnecting') {
      cls = 'down';
      text = st.retryAt ? `Reconnecting in ${formatDuration(Math.max(0, st.retryAt - Date.now()))}` : 'Reconnecting…';
    } else if (st.state === 'closed') {
      cls = 'down';
      text = 'Closed';
    } else {
      cls = 'connecting';
      text = subs.some((s) => s.state === 'resyncing') ? 'Resyncing…' : 'Connecting…';
    }
    const el = $('status');
    el.className = `status status-${cls}`;
    if ($('status-text').textContent !== text) $('status-text').textContent = text;
    document.body.classList.toggle('stale', cls !== 'live');
  };
  client.onStatus((st) => {
    const line = `${st.state}${st.transport ? ` (${st.transport})` : ''}`;
    if (line !== lastLogged) {
      lastLogged = line;
      if (st.state === 'reconnecting') log.add('connection', `${st.error ?? 'connection lost'}; reconnecting in ${formatDuration(st.retryAt - Date.now())} (attempt ${st.attempt})`, 'warn');
      else if (st.state === 'open') log.add('connection', `open over ${st.transport === 'sse' ? 'Server-Sent Events' : 'WebSocket'}`, 'info');
    }
    render();
  });
  setInterval(render, 250);
  render();
  return render;
}

/** Logs a subscription's errors and resyncs; returns the subscription. */
export function logSubscription(sub, log) {
  const name = sub.view ?? 'query';
  sub.onError((message) => log.add(name, /^protocol error/.test(message) ? message : `server error: ${message}`, 'error'));
  sub.onState((state) => {
    if (state === 'resyncing') log.add(name, 'resync: awaiting a fresh snapshot', 'warn');
  });
  return sub;
}

// -------------------------------------------------------------------------------------------------
// The Wikipedia panels: the `counter` and `top10` views.

const TOP_N = 10;
const RATE_WINDOW_MS = 10000;

/** The top-10 bar chart: ranked by count (ties by name) so its order matches the table. */
export function top10Spec(height = 310) {
  return {
    data: { name: 'top10' },
    width: 'container',
    height,
    autosize: { type: 'fit-x', contains: 'padding', resize: true },
    transform: [{ window: [{ op: 'row_number', as: 'rank' }], sort: [{ field: 'count', order: 'descending' }, { field: 'user', order: 'ascending' }] }],
    encoding: {
      y: {
        field: 'user',
        type: 'nominal',
        sort: { field: 'rank', op: 'min', order: 'ascending' },
        // A fixed label column, so the plot does not shift when a longer name enters the top 10.
        axis: { title: null, labelLimit: 140, minExtent: 150, maxExtent: 150, ticks: false, domain: false, labelPadding: 8 },
        scale: { paddingInner: 0.25, paddingOuter: 0.1 },
      },
      x: {
        field: 'count',
        type: 'quantitative',
        axis: { title: 'edits', tickMinStep: 1, format: ',d', gridColor: '#eef1f5', domain: false, tickCount: 6 },
        scale: { nice: true },
      },
    },
    layer: [
      {
        mark: { type: 'bar', color: '#2563eb', cornerRadiusEnd: 3 },
        encoding: { tooltip: [{ field: 'user', type: 'nominal', title: 'editor' }, { field: 'count', type: 'quantitative', title: 'edits', format: ',d' }] },
      },
      {
        mark: { type: 'text', align: 'right', baseline: 'middle', dx: -6, color: '#ffffff', fontWeight: 600 },
        encoding: {
          text: { field: 'count', type: 'quantitative', format: ',d' },
          opacity: { condition: { test: "scale('x', datum.count) > 48", value: 1 }, value: 0 },
        },
      },
    ],
    config: CHART_CONFIG,
  };
}

export const CHART_CONFIG = {
  font: 'Inter, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif',
  view: { stroke: null },
  axis: { labelColor: '#475569', titleColor: '#475569', labelFontSize: 12, titleFontSize: 11, titleFontWeight: 500 },
  axisY: { labelFontSize: 13, labelColor: '#1e293b' },
};

/** Embeds a Vega-Lite spec into `el`; resolves to the Vega view (null if Vega is unavailable). */
export async function embed(el, spec, log, label) {
  if (typeof globalThis.vegaEmbed !== 'function' || typeof globalThis.vega === 'undefined') {
    log.add('chart', 'the Vega libraries did not load from /vendor/; charts are unavailable', 'error');
    return null;
  }
  try {
    const { view } = await globalThis.vegaEmbed(el, spec, { mode: 'vega-lite', renderer: 'svg', actions: false });
    const svg = el.querySelector('svg');
    if (svg && label) {
      svg.setAttribute('role', 'img');
      svg.setAttribute('aria-label', label);
    }
    return view;
  } catch (err) {
    log.add('chart', `cannot create the chart: ${err.message}`, 'error');
    return null;
  }
}

/**
 * Mounts the counter KPI and the top-10 table and chart on elements with the demo page's ids:
 * #counter, #counter-rate, #counter-asof, #counter-fresh, #top10-body, #chart. Exposes what it shows
 * as `window.viewcastState` and the chart's Vega view as `window.viewcastChart`, for tests.
 */
export function mountWikipedia(client, log) {
  const state = { counter: null, top10: [], chartRows: [] };
  window.viewcastState = state;
  const counter = logSubscription(client.subscribe('counter'), log);
  const top10 = logSubscription(client.subscribe('top10'), log);

  // Counter, its rate over the last ten seconds, and freshness.
  const history = [];
  const noteTime = () => {
    if (state.counter === null || counter.ts === null) return;
    history.push([counter.ts, state.counter]);
    while (history.length > 2 && history[0][0] < counter.ts - RATE_WINDOW_MS) history.shift();
    const [t0, c0] = history[0];
    const span = counter.ts - t0;
    setText($('counter-rate'), span >= 1000 ? `${numberFormat.format(Math.round(((state.counter - c0) * 1000) / span))} edits/s` : '–');
    setText($('counter-asof'), formatTs(counter.ts));
  };
  counter.onChange(() => {
    const rows = counter.rows();
    const i = Math.max(0, counter.column('count'));
    state.counter = rows.length ? toNumber(rows[0][i]) : null;
    setText($('counter'), state.counter === null ? '–' : numberFormat.format(state.counter));
    noteTime();
  });
  counter.onProgress(noteTime);
  setInterval(() => {
    const f = freshness(counter.ts);
    const el = $('counter-fresh');
    setText(el, formatDuration(f));
    el.classList.toggle('late', f !== null && f > STALE_AFTER_MS);
  }, 250);

  // Top-10 table: ten fixed rows updated in place.
  const body = $('top10-body');
  const slots = [];
  for (let i = 0; i < TOP_N; i++) {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td class="rank"></td><td class="user"></td><td class="num count"></td>';
    tr.children[0].textContent = String(i + 1);
    tr.classList.add('empty');
    body.appendChild(tr);
    slots.push({ tr, user: tr.children[1], count: tr.children[2], key: null, value: null });
  }
  top10.onChange(() => {
    const u = Math.max(0, top10.column('user'));
    const c = top10.column('count') >= 0 ? top10.column('count') : 1;
    const rows = top10
      .rows()
      .map((r) => [r[u], toNumber(r[c])])
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    state.top10 = rows;
    slots.forEach((slot, i) => {
      const row = rows[i];
      const user = row ? String(row[0]) : '';
      const count = row ? row[1] : null;
      if (slot.key !== user) {
        slot.user.textContent = user;
        slot.user.title = user;
        slot.tr.classList.toggle('empty', !row);
      }
      if (slot.value !== count || slot.key !== user) {
        slot.count.textContent = count === null ? '' : numberFormat.format(count);
        if (row && slot.key === user && slot.value !== null && count > slot.value) flash(slot.count);
      }
      slot.key = user;
      slot.value = count;
    });
  });

  embed($('chart'), top10Spec($('chart').clientHeight - 40 || 310), log, 'Bar chart: edits per editor, top 10').then((view) => {
    if (!view) return;
    window.viewcastChart = view;
    bindVega(view, 'top10', top10, {
      onRender: () => {
        state.chartRows = view.data('top10').map((t) => [t.user, t.count]);
      },
    });
  });
  return { counter, top10, state };
}

export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

export function flash(el, cls = 'bump') {
  el.classList.remove(cls);
  void el.offsetWidth; // restart the CSS animation
  el.classList.add(cls);
}

// -------------------------------------------------------------------------------------------------
// Automatic charts for any view.

/** The first column whose type is not numeric, and the first numeric column. */
export function chartShape(columns) {
  const numeric = columns.filter((c) => isNumericType(c.type));
  const label = columns.find((c) => !isNumericType(c.type) && !/json/i.test(c.type));
  if (label && numeric.length) return { kind: 'bars', label: label.name, value: numeric[0].name };
  if (columns.length === 1 && numeric.length === 1) return { kind: 'line', value: numeric[0].name };
  return null;
}

/**
 * A Vega-Lite spec for the shape: the top `limit` bars, or a line of the single value over time.
 * `height` is fixed (nothing jumps as bars come and go); callers keep at least 15 px per bar so
 * labels never overlap.
 */
export function autoSpec(shape, height = 260, limit = 15) {
  if (shape.kind === 'bars') {
    return {
      data: { name: 'rows' },
      width: 'container',
      height,
      autosize: { type: 'fit-x', contains: 'padding', resize: true },
      transform: [
        { window: [{ op: 'row_number', as: 'rank' }], sort: [{ field: shape.value, order: 'descending' }, { field: shape.label, order: 'ascending' }] },
        { filter: `datum.rank <= ${limit}` },
      ],
      mark: { type: 'bar', color: '#2563eb', cornerRadiusEnd: 3 },
      encoding: {
        y: {
          field: shape.label,
          type: 'nominal',
          sort: { field: 'rank', op: 'min', order: 'ascending' },
          axis: { title: null, labelLimit: 140, minExtent: 150, maxExtent: 150, ticks: false, domain: false },
          scale: { paddingInner: 0.2 },
        },
        x: { field: shape.value, type: 'quantitative', axis: { title: shape.value, gridColor: '#eef1f5', domain: false, tickCount: 5 } },
        tooltip: [{ field: shape.label, type: 'nominal' }, { field: shape.value, type: 'quantitative' }],
      },
      config: CHART_CONFIG,
    };
  }
  return {
    data: { name: 'series' },
    width: 'container',
    height,
    autosize: { type: 'fit-x', contains: 'padding', resize: true },
    mark: { type: 'line', color: '#2563eb', interpolate: 'step-after', point: false },
    encoding: {
      x: { field: 't', type: 'temporal', axis: { title: null, format: '%H:%M:%S', gridColor: '#eef1f5', tickCount: 5 } },
      y: { field: 'value', type: 'quantitative', axis: { title: shape.value, gridColor: '#eef1f5', tickCount: 5 }, scale: { zero: false } },
    },
    config: CHART_CONFIG,
  };
}

/**
 * A sliding window: bars of a count per second, from a view of (`second` in Unix seconds, `value`)
 * rows such as `editslastminute`. Bars enter on the right as events arrive and leave on the left
 * when the view's temporal filter retracts them.
 */
export function windowSpec(second, value, height = 210) {
  return {
    data: { name: 'rows' },
    width: 'container',
    height,
    autosize: { type: 'fit-x', contains: 'padding', resize: true },
    transform: [{ calculate: `toNumber(datum[${JSON.stringify(second)}]) * 1000`, as: 't' }],
    mark: { type: 'bar', color: '#2563eb' },
    encoding: {
      x: {
        field: 't',
        type: 'temporal',
        timeUnit: 'yearmonthdatehoursminutesseconds',
        bandPosition: 0,
        axis: { title: null, format: '%H:%M:%S', gridColor: '#eef1f5', tickCount: 6 },
      },
      y: { field: value, type: 'quantitative', axis: { title: `${value} per second`, gridColor: '#eef1f5', tickCount: 4 } },
      tooltip: [{ field: 't', type: 'temporal', title: 'second', format: '%H:%M:%S' }, { field: value, type: 'quantitative' }],
    },
    config: CHART_CONFIG,
  };
}

const SERIES_LIMIT = 600;

/** Keeps a line chart's `series` dataset following a single-value subscription over time. */
export function bindSeries(view, sub, column) {
  const points = [];
  const add = (ts) => {
    const rows = sub.rows();
    const i = Math.max(0, sub.column(column));
    if (!rows.length || ts === null) return;
    const point = { t: ts, value: toNumber(rows[0][i]) };
    points.push(point);
    const old = points.length > SERIES_LIMIT ? points.splice(0, points.length - SERIES_LIMIT) : [];
    view.change('series', globalThis.vega.changeset().insert(point).remove(old));
    view.runAsync();
  };
  let last = 0;
  const offChange = sub.onChange((c) => add(c.ts));
  // Time passing without change extends the line, at most twice a second.
  const offProgress = sub.onProgress((ts) => {
    if (ts - last >= 500) {
      last = ts;
      add(ts);
    }
  });
  if (sub.columns) add(sub.ts);
  return () => (offChange(), offProgress());
}

// -------------------------------------------------------------------------------------------------
// A live table of any subscription: sortable, paged, changed rows briefly highlighted.

export class LiveTable {
  constructor(root, sub, { pageSize = 15, label = 'rows' } = {}) {
    this.root = root;
    this.sub = sub;
    this.pageSize = pageSize;
    this.page = 0;
    this.sort = null; // {index, dir: 1|-1}
    this.recent = new Map(); // row JSON -> time it changed
    this.scheduled = false;
    root.innerHTML = '';
    this.table = document.createElement('table');
    this.table.className = 'live-table';
    this.table.setAttribute('aria-label', label);
    this.thead = this.table.createTHead();
    this.tbody = this.table.createTBody();
    this.pager = document.createElement('div');
    this.pager.className = 'pager';
    this.prev = button('‹ Previous', 'Previous page', () => this.go(-1));
    this.next = button('Next ›', 'Next page', () => this.go(1));
    this.info = document.createElement('span');
    this.info.className = 'pager-info';
    this.info.setAttribute('aria-live', 'polite');
    this.pager.append(this.prev, this.info, this.next);
    root.append(this.table, this.pager);
    this.slots = [];
    for (let i = 0; i < pageSize; i++) this.slots.push(this.tbody.insertRow());
    this.off = sub.onChange((change) => {
      const now = Date.now();
      if (!change.reset) for (const row of change.inserts) this.recent.set(JSON.stringify(row), now);
      this.schedule();
    });
    this.schedule();
  }

  close() {
    this.off();
  }

  go(delta) {
    this.page += delta;
    this.render();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      if (!this.scheduled) return;
      this.scheduled = false;
      this.render();
    };
    requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  header() {
    const columns = this.sub.columns ?? [];
    const names = columns.map((c) => `${c.name}:${c.type}`).join();
    if (this.thead.dataset.columns === names) return;
    this.thead.dataset.columns = names;
    this.thead.innerHTML = '';
    const tr = this.thead.insertRow();
    columns.forEach((c, i) => {
      const th = document.createElement('th');
      th.scope = 'col';
      if (isNumericType(c.type)) th.className = 'num';
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'sort';
      b.textContent = c.name;
      b.title = `${c.name} (${c.type}): sort`;
      b.addEventListener('click', () => {
        this.sort = this.sort?.index === i ? { index: i, dir: -this.sort.dir } : { index: i, dir: isNumericType(c.type) ? -1 : 1 };
        this.render();
      });
      th.append(b);
      tr.append(th);
    });
    for (const slot of this.slots) {
      while (slot.cells.length > columns.length) slot.deleteCell(-1);
      while (slot.cells.length < columns.length) slot.insertCell();
      columns.forEach((c, i) => (slot.cells[i].className = isNumericType(c.type) ? 'num' : ''));
    }
  }

  /** The rows in display order. */
  sorted() {
    const columns = this.sub.columns ?? [];
    const rows = this.sub.rows();
    const cmp = (a, b, i) => {
      const num = isNumericType(columns[i]?.type);
      const x = num ? toNumber(a[i]) : a[i];
      const y = num ? toNumber(b[i]) : b[i];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return x < y ? -1 : 1;
    };
    if (this.sort) {
      const { index, dir } = this.sort;
      rows.sort((a, b) => dir * cmp(a, b, index) || JSON.stringify(a).localeCompare(JSON.stringify(b)));
    } else {
      rows.sort((a, b) => {
        for (let i = 0; i < columns.length; i++) {
          const c = cmp(a, b, i);
          if (c) return c;
        }
        return 0;
      });
    }
    return rows;
  }

  render() {
    const columns = this.sub.columns ?? [];
    this.header();
    const rows = this.sorted();
    const pages = Math.max(1, Math.ceil(rows.length / this.pageSize));
    this.page = Math.min(Math.max(0, this.page), pages - 1);
    const start = this.page * this.pageSize;
    const now = Date.now();
    for (const [k, t] of this.recent) if (now - t > 1200) this.recent.delete(k);
    this.slots.forEach((tr, i) => {
      const row = rows[start + i];
      const key = row ? JSON.stringify(row) : '';
      if (tr.dataset.key !== key) {
        tr.dataset.key = key;
        columns.forEach((c, j) => setText(tr.cells[j], row ? formatValue(c, row[j]) : ''));
        tr.classList.toggle('empty', !row);
        if (row && this.recent.has(key)) flash(tr, 'changed');
      }
    });
    for (const [i, th] of [...this.thead.querySelectorAll('th')].entries()) {
      th.setAttribute('aria-sort', this.sort?.index === i ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    setText(this.info, rows.length ? `${numberFormat.format(start + 1)}–${numberFormat.format(Math.min(rows.length, start + this.pageSize))} of ${numberFormat.format(rows.length)}` : 'no rows');
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
  }
}

export function button(text, label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (label) b.setAttribute('aria-label', label);
  b.addEventListener('click', onClick);
  return b;
}

/** A static result table (SQL answers). */
export function staticTable(colNames, rows, limit = 200) {
  const table = document.createElement('table');
  table.className = 'result-table';
  const tr = table.createTHead().insertRow();
  for (const name of colNames) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = name;
    tr.append(th);
  }
  const body = table.createTBody();
  for (const row of rows.slice(0, limit)) {
    const r = body.insertRow();
    for (const v of row) r.insertCell().textContent = v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
  return table;
}

export { rowObject };
