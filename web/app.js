// viewcast demo page: mirrors two views (`counter`, `top10`) from the gateway's stream protocol.
//
// Each view has one WebSocket at /api/v1/stream/{view}. The server sends a snapshot (the whole view
// at ts), then one consolidated `update` per completed timestamp, `progress` when time passes with no
// change, `resync` before a fresh snapshot, and `error`. The page keeps a replica per view as a keyed
// multiset (JSON of the row -> {row, count}) and renders each message's changes at once.
//
// Plain script, no build step: the Vega libraries are loaded before it as UMD globals
// (`vega`, `vegaLite`, `vegaEmbed`), all served by viewcast itself.
'use strict';

(() => {
  const STREAM_PATH = '/api/v1/stream/';
  const VIEWS = ['counter', 'top10'];
  const TOP_N = 10;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const LOG_LIMIT = 40;
  const RATE_WINDOW_MS = 10000;
  const STALE_AFTER_MS = 5000;
  const CHART_DATASET = 'top10';

  /** A violation of the stream protocol; the stream is restarted to get a fresh snapshot. */
  class ProtocolError extends Error {}

  // ---------------------------------------------------------------------------------------------
  // Replica: the view's contents as a keyed multiset.

  class Replica {
    constructor() {
      this.columns = null; // [{name, type}] from the snapshot
      this.rows = new Map(); // JSON.stringify(row) -> {row, count}; count >= 1
      this.ts = null; // the last complete timestamp the replica reflects
    }

    /**
     * Applies one message's rows ({row, diff}) as a single step. Diffs are netted per key first and
     * validated before anything changes, so a bad message leaves the replica untouched.
     * Returns the net changes [{key, row, delta}] with delta != 0.
     */
    apply(entries) {
      if (!Array.isArray(entries)) throw new ProtocolError('rows is not an array');
      const net = new Map();
      for (const entry of entries) {
        const row = entry && entry.row;
        const diff = entry && entry.diff;
        if (!Array.isArray(row) || !Number.isInteger(diff)) {
          throw new ProtocolError(`malformed row entry ${JSON.stringify(entry)}`);
        }
        const key = JSON.stringify(row);
        const seen = net.get(key);
        if (seen) seen.delta += diff;
        else net.set(key, { key, row, delta: diff });
      }
      for (const change of net.values()) {
        const have = this.rows.has(change.key) ? this.rows.get(change.key).count : 0;
        if (have + change.delta < 0) {
          throw new ProtocolError(`retracts ${-change.delta} of ${change.key} but the replica holds ${have}`);
        }
      }
      const changes = [];
      for (const change of net.values()) {
        if (change.delta === 0) continue;
        const current = this.rows.get(change.key);
        const count = (current ? current.count : 0) + change.delta;
        if (count === 0) this.rows.delete(change.key);
        else if (current) current.count = count;
        else this.rows.set(change.key, { row: change.row, count });
        changes.push(change);
      }
      return changes;
    }

    /** Every row, repeated by its multiplicity. */
    expanded() {
      const out = [];
      for (const { row, count } of this.rows.values()) {
        for (let i = 0; i < count; i++) out.push(row);
      }
      return out;
    }

    column(name, fallback) {
      const i = this.columns ? this.columns.findIndex((c) => c.name === name) : -1;
      return i >= 0 ? i : fallback;
    }
  }

  const NUMERIC_TYPES = new Set(['smallint', 'int', 'integer', 'bigint', 'int2', 'int4', 'int8', 'real', 'double', 'double precision', 'float', 'float4', 'float8', 'numeric', 'decimal']);

  /** A column's value as the chart needs it: numbers for numeric columns, anything else as sent. */
  function cell(column, value) {
    return column && NUMERIC_TYPES.has(String(column.type).toLowerCase()) ? numeric(value) : value;
  }

  /** JSON numbers stay numbers; a bigint sent as a string (beyond 2^53) becomes a number for display. */
  function numeric(value) {
    return typeof value === 'string' && value.trim() !== '' && !Number.isNaN(Number(value)) ? Number(value) : value;
  }

  // ---------------------------------------------------------------------------------------------
  // Chart: keeps the Vega dataset equal to the top10 replica.
  //
  // Vega removes tuples by identity (the id it stamps on the object it ingested), so every inserted
  // tuple object is remembered under its row key and exactly that object is passed on removal.

  class ChartSink {
    constructor(dataset, onFlushed) {
      this.dataset = dataset;
      this.onFlushed = onFlushed;
      this.view = null;
      this.tuples = new Map(); // row key -> [tuple objects Vega holds or will hold], one per copy
      this.pendingInsert = new Set();
      this.pendingRemove = new Set();
      this.scheduled = false;
      this.flushing = false;
    }

    attach(view) {
      this.view = view;
      this.schedule();
    }

    /** Replaces the whole dataset (a snapshot): every held tuple goes, in the same render as the new ones. */
    replace(columns, changes) {
      for (const list of this.tuples.values()) for (const tuple of list) this.drop(tuple);
      this.tuples.clear();
      this.apply(columns, changes);
    }

    apply(columns, changes) {
      for (const { key, row, delta } of changes) {
        let list = this.tuples.get(key);
        if (delta > 0) {
          if (!list) this.tuples.set(key, (list = []));
          for (let i = 0; i < delta; i++) {
            const tuple = {};
            columns.forEach((c, j) => (tuple[c.name] = cell(c, row[j])));
            list.push(tuple);
            this.pendingInsert.add(tuple);
          }
        } else {
          for (let i = 0; i < -delta && list && list.length; i++) this.drop(list.pop());
          if (list && list.length === 0) this.tuples.delete(key);
        }
      }
      this.schedule();
    }

    drop(tuple) {
      // A tuple Vega has not seen yet is simply not inserted.
      if (!this.pendingInsert.delete(tuple)) this.pendingRemove.add(tuple);
    }

    schedule() {
      if (this.scheduled || !this.view) return;
      this.scheduled = true;
      // One render per frame at most; a hidden tab gets no frames, so a timer backs it up.
      const run = () => this.flush();
      const frame = requestAnimationFrame(run);
      const timer = setTimeout(run, 250);
      this.cancel = () => {
        cancelAnimationFrame(frame);
        clearTimeout(timer);
      };
    }

    async flush() {
      if (!this.scheduled) return;
      this.cancel();
      this.scheduled = false;
      if (this.flushing) return; // the running flush reschedules when it ends
      if (this.pendingInsert.size === 0 && this.pendingRemove.size === 0) return;
      const changeset = vega.changeset().insert([...this.pendingInsert]).remove([...this.pendingRemove]);
      this.pendingInsert.clear();
      this.pendingRemove.clear();
      this.flushing = true;
      try {
        this.view.change(this.dataset, changeset);
        await this.view.runAsync();
      } catch (err) {
        logEvent('chart', `render failed: ${err.message}`, 'error');
      } finally {
        this.flushing = false;
      }
      this.onFlushed();
      if (this.pendingInsert.size || this.pendingRemove.size) this.schedule();
    }

    /** The dataset as the Vega view holds it. */
    rows(columns) {
      if (!this.view || !columns) return [];
      return this.view.data(this.dataset).map((t) => columns.map((c) => t[c.name]));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Stream: one WebSocket per view, reconnecting with capped exponential backoff and jitter.

  class ViewStream {
    constructor(view, handlers) {
      this.view = view;
      this.handlers = handlers; // {snapshot(replica, changes), update(replica, changes), time(replica), status()}
      this.replica = new Replica();
      this.state = 'connecting'; // connecting | live | resyncing | waiting | closed
      this.awaitingSnapshot = true;
      this.attempt = 0;
      this.retryAt = null;
      this.messages = 0;
      this.socket = null;
      this.lastMessageAt = null;
    }

    url() {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return `${scheme}//${location.host}${STREAM_PATH}${encodeURIComponent(this.view)}`;
    }

    connect() {
      this.setState('connecting');
      this.awaitingSnapshot = true;
      let socket;
      try {
        socket = new WebSocket(this.url());
      } catch (err) {
        logEvent(this.view, `cannot open stream: ${err.message}`, 'error');
        this.scheduleReconnect();
        return;
      }
      this.socket = socket;
      socket.onmessage = (event) => {
        if (this.socket !== socket) return;
        try {
          this.onMessage(JSON.parse(event.data));
        } catch (err) {
          const what = err instanceof ProtocolError || err instanceof SyntaxError ? 'protocol error' : 'client error';
          logEvent(this.view, `${what}: ${err.message}; restarting the stream`, 'error');
          this.restart();
        }
      };
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        const reason = event.reason ? `: ${event.reason}` : '';
        logEvent(this.view, `connection closed (code ${event.code}${reason})`, event.code === 1000 ? 'info' : 'warn');
        this.scheduleReconnect();
      };
      socket.onerror = () => {
        // The close event that always follows carries the details and triggers the retry.
      };
    }

    restart() {
      const socket = this.socket;
      this.socket = null;
      if (socket) socket.close(4000, 'client restarting stream');
      this.scheduleReconnect();
    }

    scheduleReconnect() {
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
      this.attempt += 1;
      this.retryAt = Date.now() + delay;
      this.setState('waiting');
      logEvent(this.view, `reconnecting in ${formatDuration(delay)} (attempt ${this.attempt})`, 'info');
      setTimeout(() => {
        this.retryAt = null;
        this.connect();
      }, delay);
    }

    setState(state) {
      this.state = state;
      this.handlers.status();
    }

    onMessage(msg) {
      this.messages += 1;
      this.lastMessageAt = Date.now();
      if (!msg || typeof msg.type !== 'string') throw new ProtocolError('message without a type');
      if (msg.view !== undefined && msg.view !== this.view) {
        throw new ProtocolError(`message for view ${JSON.stringify(msg.view)} on the ${this.view} stream`);
      }
      switch (msg.type) {
        case 'snapshot': {
          if (!Array.isArray(msg.columns)) throw new ProtocolError('snapshot without columns');
          const fresh = new Replica();
          fresh.columns = msg.columns;
          const changes = fresh.apply(msg.rows);
          fresh.ts = checkTs(msg.ts);
          this.replica = fresh;
          this.awaitingSnapshot = false;
          this.attempt = 0;
          if (this.state !== 'live') logEvent(this.view, `snapshot: ${fresh.rows.size} rows at ${formatTs(fresh.ts)}`, 'info');
          this.setState('live');
          this.handlers.snapshot(fresh, changes);
          break;
        }
        case 'update': {
          const ts = this.checkNext(msg);
          const changes = this.replica.apply(msg.rows);
          this.replica.ts = ts;
          this.handlers.update(this.replica, changes);
          break;
        }
        case 'progress': {
          this.replica.ts = this.checkNext(msg, true);
          this.handlers.time(this.replica);
          break;
        }
        case 'resync':
          // The server will follow with a fresh snapshot; the display keeps the old data, dimmed,
          // until that snapshot replaces it.
          this.replica.rows.clear();
          this.awaitingSnapshot = true;
          logEvent(this.view, 'server asked for a resync; awaiting a fresh snapshot', 'warn');
          this.setState('resyncing');
          break;
        case 'error':
          logEvent(this.view, `server error: ${msg.message}`, 'error');
          break;
        default:
          logEvent(this.view, `ignored unknown message type ${JSON.stringify(msg.type)}`, 'warn');
      }
    }

    /** Timestamps move forward: strictly for updates, weakly for progress. */
    checkNext(msg, allowEqual = false) {
      if (this.awaitingSnapshot) throw new ProtocolError(`${msg.type} before snapshot`);
      const ts = checkTs(msg.ts);
      const prev = this.replica.ts;
      if (prev !== null && (ts < prev || (ts === prev && !allowEqual))) {
        throw new ProtocolError(`${msg.type} at ts ${ts} does not follow ts ${prev}`);
      }
      return ts;
    }
  }

  function checkTs(ts) {
    if (typeof ts !== 'number' || !Number.isFinite(ts)) throw new ProtocolError(`bad timestamp ${JSON.stringify(ts)}`);
    return ts;
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering.

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat('en-US');

  /** Exposed for tests: what the page currently shows. */
  const state = {
    counter: null,
    top10: [],
    chartRows: [],
  };
  window.viewcastState = state;

  const streams = {};
  const chart = new ChartSink(CHART_DATASET, () => {
    state.chartRows = chart.rows(streams.top10.replica.columns);
  });

  const counterHistory = []; // [ts, count] within RATE_WINDOW_MS of the newest

  function renderCounter(replica) {
    const rows = replica.expanded();
    const i = replica.column('count', 0);
    const value = rows.length ? numeric(rows[0][i]) : null;
    state.counter = value;
    $('counter').textContent = value === null ? '–' : numberFormat.format(value);
    noteCounterTime(replica);
  }

  function noteCounterTime(replica) {
    if (state.counter === null || replica.ts === null) return;
    counterHistory.push([replica.ts, state.counter]);
    while (counterHistory.length > 2 && counterHistory[0][0] < replica.ts - RATE_WINDOW_MS) counterHistory.shift();
    const [t0, c0] = counterHistory[0];
    const span = replica.ts - t0;
    $('counter-rate').textContent = span >= 1000 ? `${numberFormat.format(Math.round(((state.counter - c0) * 1000) / span))} edits/s` : '–';
    $('counter-asof').textContent = formatTs(replica.ts);
  }

  const tableRows = [];
  function buildTable() {
    const body = $('top10-body');
    for (let i = 0; i < TOP_N; i++) {
      const tr = document.createElement('tr');
      tr.innerHTML = '<td class="rank"></td><td class="user"></td><td class="num count"></td>';
      tr.children[0].textContent = String(i + 1);
      body.appendChild(tr);
      tableRows.push({ tr, user: tr.children[1], count: tr.children[2], key: null, value: null });
    }
  }

  function sortedTop(replica) {
    const u = replica.column('user', 0);
    const c = replica.column('count', 1);
    return replica
      .expanded()
      .map((row) => [row[u], numeric(row[c])])
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  function renderTop10(replica) {
    const rows = sortedTop(replica);
    state.top10 = rows;
    tableRows.forEach((slot, i) => {
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
  }

  function flash(el) {
    el.classList.remove('bump');
    void el.offsetWidth; // restart the CSS animation
    el.classList.add('bump');
  }

  const STATE_LABEL = { connecting: 'connecting', live: 'live', resyncing: 'resyncing', waiting: 'reconnecting', closed: 'closed' };

  function renderStatus() {
    const all = Object.values(streams);
    if (all.length < VIEWS.length) return;
    let cls;
    let text;
    if (all.every((s) => s.state === 'live')) {
      cls = 'live';
      text = 'Live';
    } else if (all.some((s) => s.state === 'waiting')) {
      cls = 'down';
      const next = Math.min(...all.filter((s) => s.retryAt).map((s) => s.retryAt));
      text = Number.isFinite(next) ? `Reconnecting in ${formatDuration(Math.max(0, next - Date.now()))}` : 'Reconnecting';
    } else {
      cls = 'connecting';
      text = all.some((s) => s.state === 'resyncing') ? 'Resyncing…' : 'Connecting…';
    }
    const el = $('status');
    el.className = `status status-${cls}`;
    $('status-text').textContent = text;
    document.body.classList.toggle('stale', cls !== 'live');

    const body = $('streams');
    for (const s of all) {
      let tr = body.querySelector(`tr[data-view="${s.view}"]`);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.view = s.view;
        tr.innerHTML = '<td class="v"></td><td><span class="pill"></span></td><td class="ts"></td><td class="fresh"></td><td class="num msgs"></td>';
        tr.querySelector('.v').textContent = s.view;
        body.appendChild(tr);
      }
      const pill = tr.querySelector('.pill');
      pill.textContent = STATE_LABEL[s.state];
      pill.className = `pill pill-${s.state}`;
      tr.querySelector('.ts').textContent = s.replica.ts === null ? '–' : formatTs(s.replica.ts);
      const fresh = freshness(s.replica.ts);
      const cell = tr.querySelector('.fresh');
      cell.textContent = fresh === null ? '–' : formatDuration(fresh);
      cell.classList.toggle('late', fresh !== null && fresh > STALE_AFTER_MS);
      tr.querySelector('.msgs').textContent = numberFormat.format(s.messages);
    }
    const counterFresh = freshness(streams.counter.replica.ts);
    const kpiFresh = $('counter-fresh');
    kpiFresh.textContent = counterFresh === null ? '–' : formatDuration(counterFresh);
    kpiFresh.classList.toggle('late', counterFresh !== null && counterFresh > STALE_AFTER_MS);
  }

  /** How old the newest complete timestamp is (timestamps are milliseconds since the Unix epoch). */
  function freshness(ts) {
    return ts === null ? null : Math.max(0, Date.now() - ts);
  }

  function formatTs(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return String(ts);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function formatDuration(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.floor((ms % 60000) / 1000)} s`;
    return `${(ms / 3600000).toFixed(1)} h`;
  }

  function logEvent(view, text, level = 'info') {
    const log = $('log');
    if (!log) return;
    const li = document.createElement('li');
    li.className = `log-${level}`;
    const time = document.createElement('time');
    time.textContent = formatTs(Date.now());
    const where = document.createElement('b');
    where.textContent = view;
    li.append(time, where, document.createTextNode(text));
    log.prepend(li);
    while (log.children.length > LOG_LIMIT) log.lastChild.remove();
    if (level === 'error') console.error(`[viewcast ${view}] ${text}`);
  }

  // ---------------------------------------------------------------------------------------------
  // Chart spec: horizontal bars, ranked by count (ties by name) so the order matches the table.

  const chartSpec = {
    data: { name: CHART_DATASET },
    width: 'container',
    height: 310,
    // Re-fit on every update: the first layout ran before any data (hence any labels) existed.
    autosize: { type: 'fit-x', contains: 'padding', resize: true },
    transform: [
      {
        window: [{ op: 'row_number', as: 'rank' }],
        sort: [
          { field: 'count', order: 'descending' },
          { field: 'user', order: 'ascending' },
        ],
      },
    ],
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
        encoding: {
          tooltip: [
            { field: 'user', type: 'nominal', title: 'editor' },
            { field: 'count', type: 'quantitative', title: 'edits', format: ',d' },
          ],
        },
      },
      {
        mark: { type: 'text', align: 'right', baseline: 'middle', dx: -6, color: '#ffffff', fontWeight: 600 },
        encoding: {
          text: { field: 'count', type: 'quantitative', format: ',d' },
          // Inside the bar end when it fits; short bars drop their label rather than overflow.
          opacity: { condition: { test: "scale('x', datum.count) > 48", value: 1 }, value: 0 },
        },
      },
    ],
    config: {
      font: 'Inter, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif',
      view: { stroke: null },
      axis: { labelColor: '#475569', titleColor: '#64748b', labelFontSize: 12, titleFontSize: 11, titleFontWeight: 500 },
      axisY: { labelFontSize: 13, labelColor: '#1e293b' },
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Wiring.

  function start() {
    buildTable();
    streams.counter = new ViewStream('counter', {
      snapshot: (replica) => renderCounter(replica),
      update: (replica) => renderCounter(replica),
      time: (replica) => noteCounterTime(replica),
      status: renderStatus,
    });
    streams.top10 = new ViewStream('top10', {
      snapshot: (replica, changes) => {
        chart.replace(replica.columns, changes);
        renderTop10(replica);
      },
      update: (replica, changes) => {
        chart.apply(replica.columns, changes);
        renderTop10(replica);
      },
      time: () => {},
      status: renderStatus,
    });
    renderStatus();
    setInterval(renderStatus, 250);

    for (const view of VIEWS) streams[view].connect();

    if (typeof vegaEmbed !== 'function' || typeof vega === 'undefined') {
      logEvent('chart', 'the Vega libraries did not load from /vendor/; the chart is unavailable', 'error');
      return;
    }
    vegaEmbed('#chart', chartSpec, { mode: 'vega-lite', renderer: 'svg', actions: false })
      .then(({ view }) => {
        window.viewcastChart = view; // for tests: the Vega view, its data and scenegraph
        chart.attach(view);
      })
      .catch((err) => logEvent('chart', `cannot create the chart: ${err.message}`, 'error'));
  }

  window.addEventListener('error', (e) => logEvent('page', e.message, 'error'));
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
