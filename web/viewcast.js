// viewcast.js: live replicas of viewcast views in the browser, over one connection.
//
//   import { connect } from '/viewcast.js';
//   const client = connect('http://127.0.0.1:8080');
//   const top10 = client.subscribe('top10');
//   top10.onChange(({ ts, inserts, deletes }) => render(top10.rows()));
//
// One client multiplexes every subscription over a single WebSocket at /api/v1/ws. A subscription
// is a replica of its view: a multiset of rows (or a map key -> row for keyed subscriptions) that
// changes once per complete timestamp. When the connection drops, the client reconnects with
// exponential backoff and jitter, and resubscribes each replica with `since` = the last timestamp
// it holds, so the server can send only what was missed. If no WebSocket can be opened at all, the
// client falls back to Server-Sent Events at /api/v1/stream (named views only).
//
// No build step and no dependencies: this file is served as is. `bindVega` needs the `vega` global
// (or pass `{vega}`), which the viewcast server serves at /vendor/vega.min.js.

/**
 * @typedef {{name: string, type: string, nullable?: boolean}} Column
 * @typedef {Array<unknown>} Row  values in column order
 * @typedef {{
 *   ts: number,
 *   inserts: Row[],
 *   deletes: Row[],
 *   reset: boolean,
 * }} Change  one complete timestamp's changes; each row once per copy. `reset` marks a snapshot
 *   (the first one, or one after a resync: then `deletes` holds what the replica lost).
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 * @typedef {{
 *   state: ConnectionState,
 *   transport: 'websocket'|'sse'|null,
 *   attempt: number,
 *   retryAt: number|null,
 *   error: string|null,
 * }} ConnectionStatus
 * @typedef {'pending'|'live'|'resyncing'|'reconnecting'|'failed'|'closed'} SubscriptionState
 * @typedef {{
 *   token?: string,
 *   transport?: 'auto'|'websocket'|'sse',
 *   backoffMinMs?: number,
 *   backoffMaxMs?: number,
 * }} ConnectOptions
 * @typedef {{key?: string[], since?: number}} SubscribeOptions
 */

const NUMERIC_TYPES = new Set([
  'smallint', 'int', 'integer', 'bigint', 'int2', 'int4', 'int8', 'real', 'double', 'double precision',
  'float', 'float4', 'float8', 'numeric', 'decimal',
]);

/** True for SQL types whose values are numbers (bigint may arrive as a string beyond 2^53). */
export function isNumericType(type) {
  return NUMERIC_TYPES.has(String(type).toLowerCase());
}

/** A value of a numeric column as a JS number; anything else unchanged. */
export function toNumber(value) {
  return typeof value === 'string' && value.trim() !== '' && !Number.isNaN(Number(value)) ? Number(value) : value;
}

/** A violation of the stream protocol: the subscription starts over with a fresh snapshot. */
export class ProtocolError extends Error {}

/** A tiny event emitter: `on(name, fn)` returns a function that removes `fn`. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
  }
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    return () => this.handlers.get(name)?.delete(fn);
  }
  emit(name, value) {
    for (const fn of [...(this.handlers.get(name) ?? [])]) {
      try {
        fn(value);
      } catch (err) {
        // A listener's bug must not break the stream for the others.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

function checkTs(ts) {
  if (typeof ts !== 'number' || !Number.isFinite(ts)) throw new ProtocolError(`bad timestamp ${JSON.stringify(ts)}`);
  return ts;
}

// -------------------------------------------------------------------------------------------------
// Subscription: one live replica.

/**
 * A live replica of one view or ad-hoc query. Rows are held by identity key: the JSON of the key
 * columns for keyed subscriptions, else the JSON of the whole row (with a multiplicity).
 */
export class Subscription {
  /** @param {Client} client @param {string | {query: string}} target @param {SubscribeOptions} options */
  constructor(client, target, options = {}) {
    this.client = client;
    /** @type {string|null} */
    this.view = typeof target === 'string' ? target : null;
    /** @type {string|null} */
    this.query = typeof target === 'string' ? null : String(target.query);
    /** @type {string[]|null} key column names requested (the server's snapshot confirms them) */
    this.key = options.key ? [...options.key] : null;
    /** @type {Column[]|null} */
    this.columns = null;
    /** @type {number|null} the last complete timestamp this replica reflects */
    this.ts = options.since ?? null;
    /** @type {SubscriptionState} */
    this.state = 'pending';
    /** @type {string|null} the last error the server or the client reported for this subscription */
    this.error = null;
    /** @type {Map<string, {row: Row, count: number}>} */
    this.entries = new Map();
    // Created with `since`: the caller holds the contents through `since` elsewhere, so this
    // replica starts empty and only accumulates later changes (counts may go negative).
    this.partial = options.since !== undefined && options.since !== null;
    this.keyIndex = null; // column positions of the key, once columns are known
    this.awaitingSnapshot = !this.partial;
    /** The `since` sent with the current server-side subscription, if it was a resume. */
    this.resumedFrom = null;
    this.stats = { snapshots: 0, updates: 0, progress: 0, resyncs: 0, resumes: 0 };
    this.events = new Emitter();
    this.id = null; // the id of the current server-side subscription; new on every restart
  }

  /** Calls `fn(change)` after each complete timestamp that changed the replica, and after each snapshot. */
  onChange(fn) {
    return this.events.on('change', fn);
  }
  /** Calls `fn(ts)` when time passes with no change (freshness). */
  onProgress(fn) {
    return this.events.on('progress', fn);
  }
  /** Calls `fn(message)` for server errors and protocol violations about this subscription. */
  onError(fn) {
    return this.events.on('error', fn);
  }
  /** Calls `fn(state)` when the subscription's state changes. */
  onState(fn) {
    return this.events.on('state', fn);
  }

  /** Every row, repeated by its multiplicity, in no particular order. */
  rows() {
    const out = [];
    for (const { row, count } of this.entries.values()) for (let i = 0; i < count; i++) out.push(row);
    return out;
  }
  /** The number of rows, counting multiplicity. */
  get size() {
    let n = 0;
    for (const { count } of this.entries.values()) n += count;
    return n;
  }
  /** The row with these key values (keyed subscriptions). */
  get(keyValues) {
    return this.entries.get(JSON.stringify(keyValues))?.row;
  }
  /** The position of a column by name, or -1. */
  column(name) {
    return this.columns ? this.columns.findIndex((c) => c.name === name) : -1;
  }
  /** Each row as an object keyed by column name, numeric columns as numbers. */
  objects() {
    return this.rows().map((row) => rowObject(this.columns ?? [], row));
  }

  /** Stops the subscription. */
  unsubscribe() {
    this.client.remove(this);
    this.setState('closed');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.events.emit('state', state);
  }

  identity(row) {
    return JSON.stringify(this.keyIndex ? this.keyIndex.map((i) => row[i]) : row);
  }

  setColumns(columns, keyNames) {
    if (!Array.isArray(columns)) throw new ProtocolError('snapshot without columns');
    this.columns = columns;
    const names = keyNames ?? this.key;
    if (names) {
      const idx = names.map((n) => columns.findIndex((c) => c.name === n));
      if (idx.some((i) => i < 0)) throw new ProtocolError(`key ${JSON.stringify(names)} is not among the columns`);
      this.key = [...names];
      this.keyIndex = idx;
    } else {
      this.keyIndex = null;
    }
  }

  /** The next timestamp: strictly later for updates, not earlier for progress. */
  nextTs(msg, allowEqual) {
    if (this.awaitingSnapshot) throw new ProtocolError(`${msg.type} before a snapshot`);
    const ts = checkTs(msg.ts);
    if (this.ts !== null && (ts < this.ts || (ts === this.ts && !allowEqual))) {
      throw new ProtocolError(`${msg.type} at ts ${ts} does not follow ts ${this.ts}`);
    }
    return ts;
  }

  /** Applies one server message. Throws ProtocolError, leaving the replica unchanged, on a violation. */
  handle(msg) {
    switch (msg.type) {
      case 'snapshot':
        return this.applySnapshot(msg);
      case 'update': {
        const ts = this.nextTs(msg, false);
        const net = msg.upserts || msg.deletes ? this.netKeyed(msg) : this.netDiffs(msg.rows);
        const change = this.commit(net, ts, false);
        this.stats.updates += 1;
        this.setState('live');
        this.events.emit('change', change);
        return;
      }
      case 'progress':
        this.ts = this.nextTs(msg, true);
        this.stats.progress += 1;
        this.setState('live');
        this.events.emit('progress', this.ts);
        return;
      case 'resync':
        // Keep showing the old rows until the fresh snapshot replaces them (as one change).
        this.awaitingSnapshot = true;
        this.stats.resyncs += 1;
        this.setState('resyncing');
        return;
      case 'error':
        this.error = String(msg.message ?? 'unknown error');
        this.events.emit('error', this.error);
        return;
      default:
      // Unknown message types are future extensions: ignore them.
    }
  }

  applySnapshot(msg) {
    const ts = checkTs(msg.ts);
    const previous = { columns: this.columns, key: this.key, keyIndex: this.keyIndex };
    let fresh;
    try {
      this.setColumns(msg.columns, msg.key);
      if (!Array.isArray(msg.rows)) throw new ProtocolError('snapshot rows is not an array');
      fresh = new Map();
      for (const entry of msg.rows) {
        const row = entry?.row;
        const diff = entry?.diff;
        if (!Array.isArray(row) || !Number.isInteger(diff) || diff < 1) throw new ProtocolError(`malformed snapshot row ${JSON.stringify(entry)}`);
        const k = this.identity(row);
        const seen = fresh.get(k);
        if (seen && this.keyIndex) throw new ProtocolError(`key ${k} twice in a keyed snapshot`);
        if (seen) seen.count += diff;
        else fresh.set(k, { row, count: this.keyIndex ? 1 : diff });
      }
    } catch (err) {
      Object.assign(this, previous);
      throw err;
    }
    // The new contents as a delta against the old: after a resync, what changed, in one step.
    const inserts = [];
    const deletes = [];
    const repeat = (out, row, n) => {
      for (let i = 0; i < n; i++) out.push(row);
    };
    for (const [k, old] of this.entries) {
      const now = fresh.get(k);
      if (!now || JSON.stringify(now.row) !== JSON.stringify(old.row)) repeat(deletes, old.row, Math.max(0, old.count));
      else if (now.count < old.count) repeat(deletes, old.row, old.count - now.count);
    }
    for (const [k, now] of fresh) {
      const old = this.entries.get(k);
      if (!old || JSON.stringify(now.row) !== JSON.stringify(old.row)) repeat(inserts, now.row, now.count);
      else if (now.count > old.count) repeat(inserts, now.row, now.count - old.count);
    }
    this.entries = fresh;
    this.ts = ts;
    this.awaitingSnapshot = false;
    this.partial = false;
    this.error = null;
    this.stats.snapshots += 1;
    this.setState('live');
    this.events.emit('change', { ts, inserts, deletes, reset: true });
  }

  /** Diff entries ({row, diff}) netted per identity; validated against the replica. */
  netDiffs(entries, fresh = false) {
    if (!Array.isArray(entries)) throw new ProtocolError('rows is not an array');
    const net = new Map();
    for (const entry of entries) {
      const row = entry?.row;
      const diff = entry?.diff;
      if (!Array.isArray(row) || !Number.isInteger(diff)) throw new ProtocolError(`malformed row ${JSON.stringify(entry)}`);
      const k = this.keyIndex ? this.identity(row) : JSON.stringify(row);
      const seen = net.get(k);
      if (this.keyIndex) {
        // A keyed replica holds one row per key: a retraction removes the key unless the same
        // message also inserts a row for it.
        if (diff > 0) net.set(k, { key: k, row, delta: 1, replace: true });
        else if (!seen) net.set(k, { key: k, row, delta: -1, replace: true });
        continue;
      }
      if (seen) seen.delta += diff;
      else net.set(k, { key: k, row, delta: diff });
    }
    if (!fresh && !this.partial) {
      for (const c of net.values()) {
        if (c.replace) continue;
        const have = this.entries.get(c.key)?.count ?? 0;
        if (have + c.delta < 0) throw new ProtocolError(`retracts ${-c.delta} of ${c.key} but the replica holds ${have}`);
      }
    }
    return net;
  }

  /** ENVELOPE UPSERT updates: full rows to insert or replace, key values to delete. */
  netKeyed(msg) {
    if (!this.keyIndex) throw new ProtocolError('upserts on a subscription without a key');
    const net = new Map();
    for (const row of msg.upserts ?? []) {
      if (!Array.isArray(row)) throw new ProtocolError(`malformed upsert ${JSON.stringify(row)}`);
      const k = this.identity(row);
      if (net.has(k)) throw new ProtocolError(`key ${k} twice in one message`);
      net.set(k, { key: k, row, delta: 1, replace: true });
    }
    for (const keyValues of msg.deletes ?? []) {
      if (!Array.isArray(keyValues)) throw new ProtocolError(`malformed delete ${JSON.stringify(keyValues)}`);
      const k = JSON.stringify(keyValues);
      if (net.has(k)) throw new ProtocolError(`key ${k} twice in one message`);
      net.set(k, { key: k, row: null, delta: -1, replace: true });
    }
    return net;
  }

  /** Applies netted changes; returns the Change with every row once per copy. */
  commit(net, ts, reset) {
    const inserts = [];
    const deletes = [];
    for (const c of net.values()) {
      const current = this.entries.get(c.key);
      if (c.replace) {
        // Keyed: whatever the key held goes, the new row (if any) comes.
        if (c.delta > 0 && current && JSON.stringify(current.row) === JSON.stringify(c.row)) continue;
        if (current) deletes.push(current.row);
        if (c.delta > 0) {
          this.entries.set(c.key, { row: c.row, count: 1 });
          inserts.push(c.row);
        } else this.entries.delete(c.key);
        continue;
      }
      if (c.delta === 0) continue;
      const had = current?.count ?? 0;
      const count = had + c.delta;
      if (c.delta > 0) for (let i = 0; i < c.delta; i++) inserts.push(c.row);
      else for (let i = 0; i < -c.delta; i++) deletes.push(current?.row ?? c.row);
      if (count === 0) this.entries.delete(c.key);
      else if (current) current.count = count;
      else this.entries.set(c.key, { row: c.row, count });
    }
    this.ts = ts;
    return { ts, inserts, deletes, reset };
  }

  /** What the subscribe message asks for (a resumed subscription carries `since`). */
  request(id) {
    const msg = { type: 'subscribe', id };
    if (this.view !== null) msg.view = this.view;
    else msg.query = this.query;
    if (this.key) msg.key = this.key;
    if (!this.awaitingSnapshot && this.ts !== null) msg.since = this.ts;
    return msg;
  }
}

/** A row as an object keyed by column name, numeric columns as numbers (what Vega wants). */
export function rowObject(columns, row) {
  const o = {};
  columns.forEach((c, i) => (o[c.name] = isNumericType(c.type) ? toNumber(row[i]) : row[i]));
  return o;
}

// -------------------------------------------------------------------------------------------------
// Client: one connection, many subscriptions.

/**
 * A connection to one viewcast server. Create it with `connect()`.
 */
export class Client {
  /** @param {string} url @param {ConnectOptions} options */
  constructor(url, options = {}) {
    const base = new URL(url ?? '/', globalThis.location?.href);
    this.base = base.origin + base.pathname.replace(/\/+$/, '');
    this.token = options.token ?? null;
    this.transportChoice = options.transport ?? 'auto';
    this.backoffMinMs = options.backoffMinMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 15000;
    /** @type {Set<Subscription>} */
    this.subscriptions = new Set();
    /** @type {Map<string, Subscription>} server-side id -> subscription, on the current connection */
    this.byId = new Map();
    this.nextId = 1;
    this.events = new Emitter();
    /** @type {ConnectionStatus} */
    this.status = { state: 'connecting', transport: null, attempt: 0, retryAt: null, error: null };
    this.transport = null; // {kind, send(msg), close()}
    this.wsFailuresInARow = 0;
    this.closed = false;
    this.retryTimer = null;
    this.connections = 0; // how many connections have opened, for tests and status
    this.open();
  }

  /**
   * Subscribes to a view by name, or to an ad-hoc query (`{query: 'SELECT ...'}`, WebSocket only).
   * @param {string | {query: string}} target
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(target, options = {}) {
    const sub = new Subscription(this, target, options);
    this.subscriptions.add(sub);
    if (this.transport?.kind === 'sse') this.restartSse();
    else if (this.status.state === 'open') this.sendSubscribe(sub);
    return sub;
  }

  /** Calls `fn(status)` whenever the connection's state changes. */
  onStatus(fn) {
    return this.events.on('status', fn);
  }

  /** Drops the current connection now and reconnects (resuming every subscription). */
  reconnect() {
    if (this.closed) return;
    this.dropTransport();
    clearTimeout(this.retryTimer);
    this.open();
  }

  /** Closes the connection and every subscription for good. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.dropTransport();
    for (const sub of this.subscriptions) sub.setState('closed');
    this.subscriptions.clear();
    this.setStatus({ state: 'closed', retryAt: null });
  }

  remove(sub) {
    if (!this.subscriptions.delete(sub)) return;
    if (sub.id !== null) {
      this.byId.delete(sub.id);
      if (this.transport?.kind === 'websocket' && this.status.state === 'open') this.transport.send({ type: 'unsubscribe', id: sub.id });
      sub.id = null;
    }
    if (this.transport?.kind === 'sse') this.restartSse();
  }

  setStatus(patch) {
    this.status = { ...this.status, ...patch };
    this.events.emit('status', this.status);
  }

  url(path, scheme) {
    const u = new URL(this.base + path);
    if (scheme) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  open() {
    if (this.closed) return;
    const useSse =
      this.transportChoice === 'sse' || (this.transportChoice === 'auto' && this.wsFailuresInARow > 0 && this.wsFailuresInARow % 2 === 1);
    this.setStatus({ state: this.status.state === 'reconnecting' ? 'reconnecting' : 'connecting', retryAt: null });
    if (useSse) this.openSse();
    else this.openWebSocket();
  }

  dropTransport() {
    const t = this.transport;
    this.transport = null;
    this.byId.clear();
    for (const sub of this.subscriptions) sub.id = null;
    t?.close();
  }

  /** Called when a connection ends (or never opened): wait, then open again. */
  lost(reason) {
    if (this.closed) return;
    this.transport = null;
    this.byId.clear();
    for (const sub of this.subscriptions) {
      sub.id = null;
      if (sub.state !== 'failed') sub.setState('reconnecting');
    }
    const attempt = this.status.attempt + 1;
    const ceiling = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** (attempt - 1));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.setStatus({ state: 'reconnecting', attempt, retryAt: Date.now() + delay, error: reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** The connection works: it delivered a message. Later drops start the backoff from the bottom. */
  healthy() {
    if (this.status.attempt !== 0) this.setStatus({ attempt: 0 });
  }

  // --- WebSocket ---------------------------------------------------------------------------------

  openWebSocket() {
    let socket;
    try {
      socket = new WebSocket(this.url('/api/v1/ws', 'ws'));
    } catch (err) {
      this.wsFailuresInARow += 1;
      this.lost(`cannot open a WebSocket: ${err.message}`);
      return;
    }
    let opened = false;
    const transport = {
      kind: 'websocket',
      socket,
      send: (msg) => socket.readyState === 1 && socket.send(JSON.stringify(msg)),
      close: () => socket.close(4000, 'client reconnecting'),
    };
    this.transport = transport;
    socket.onopen = () => {
      if (this.transport !== transport) return;
      opened = true;
      this.wsFailuresInARow = 0;
      this.connections += 1;
      if (this.token) transport.send({ type: 'auth', token: this.token });
      this.setStatus({ state: 'open', transport: 'websocket', retryAt: null, error: null });
      for (const sub of this.subscriptions) this.sendSubscribe(sub);
    };
    socket.onmessage = (event) => {
      if (this.transport !== transport) return;
      this.healthy();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        this.setStatus({ error: 'the server sent a message that is not JSON' });
        return;
      }
      this.dispatch(msg);
    };
    socket.onclose = (event) => {
      if (this.transport !== transport) return;
      if (!opened) this.wsFailuresInARow += 1;
      const why = opened ? `connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ''})` : 'cannot open a WebSocket';
      this.lost(why);
    };
    socket.onerror = () => {
      // The close event that follows carries the details.
    };
  }

  sendSubscribe(sub) {
    if (this.transport?.kind !== 'websocket') return;
    const id = `s${this.nextId++}`;
    sub.id = id;
    this.byId.set(id, sub);
    const msg = sub.request(id);
    if (msg.since === undefined) sub.awaitingSnapshot = true;
    else sub.stats.resumes += 1;
    sub.resumedFrom = msg.since ?? null;
    this.transport.send(msg);
  }

  /** Routes a server message to its subscription(s). */
  dispatch(msg) {
    if (!msg || typeof msg.type !== 'string') return;
    let targets;
    if (msg.id !== undefined && this.transport?.kind === 'websocket') {
      const sub = this.byId.get(String(msg.id));
      targets = sub ? [sub] : []; // a late message for an unsubscribed id
    } else if (msg.view !== undefined) {
      targets = [...this.subscriptions].filter((s) => s.view === msg.view && s.query === null);
    } else {
      // A connection-wide error (e.g. authentication).
      if (msg.type === 'error') {
        this.setStatus({ error: String(msg.message) });
        for (const sub of this.subscriptions) sub.handle(msg);
      }
      return;
    }
    for (const sub of targets) {
      try {
        sub.handle(msg);
        if (msg.type === 'error' && this.transport?.kind === 'websocket' && (sub.awaitingSnapshot || sub.state !== 'live')) {
          // An error before any data on this server-side subscription (unknown view, bad SQL, a
          // view dropped while disconnected): it will not start.
          this.byId.delete(sub.id);
          sub.id = null;
          sub.setState('failed');
        }
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        this.restartSubscription(sub, `protocol error: ${err.message}; starting over`);
      }
    }
  }

  /** Starts one subscription over from a fresh snapshot (after a protocol violation). */
  restartSubscription(sub, why) {
    sub.error = why;
    sub.events.emit('error', why);
    sub.awaitingSnapshot = true;
    sub.partial = false;
    sub.setState('resyncing');
    if (this.transport?.kind === 'websocket') {
      if (sub.id !== null) {
        this.transport.send({ type: 'unsubscribe', id: sub.id });
        this.byId.delete(sub.id);
      }
      this.sendSubscribe(sub);
    } else if (this.transport?.kind === 'sse') {
      this.restartSse();
    }
  }

  // --- Server-Sent Events ------------------------------------------------------------------------

  restartSse() {
    this.dropTransport();
    clearTimeout(this.retryTimer);
    this.open();
  }

  openSse() {
    const views = [...new Set([...this.subscriptions].filter((s) => s.view !== null).map((s) => s.view))];
    for (const sub of this.subscriptions) {
      if (sub.query !== null && sub.state !== 'failed') {
        sub.error = 'ad-hoc queries need the WebSocket, which is unavailable';
        sub.events.emit('error', sub.error);
        sub.setState('failed');
      }
    }
    if (typeof EventSource !== 'function') {
      this.lost('neither WebSocket nor EventSource is available');
      return;
    }
    const u = new URL(this.url('/api/v1/stream'));
    u.searchParams.set('views', views.join(','));
    // EventSource sends cookies (viewcast_token) but cannot send headers; it resumes with
    // Last-Event-ID by itself when it reconnects.
    const source = new EventSource(u.toString(), { withCredentials: false });
    let opened = false;
    const transport = { kind: 'sse', source, send: () => {}, close: () => source.close() };
    this.transport = transport;
    const onData = (event) => {
      if (this.transport !== transport || typeof event.data !== 'string') return;
      this.healthy();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    source.onmessage = onData;
    for (const type of ['snapshot', 'update', 'progress', 'resync', 'error']) source.addEventListener(type, onData);
    source.onopen = () => {
      if (this.transport !== transport) return;
      if (!opened) this.connections += 1;
      opened = true;
      this.setStatus({ state: 'open', transport: 'sse', retryAt: null, error: null });
      for (const sub of this.subscriptions) if (sub.view !== null && sub.state !== 'failed') sub.setState(sub.awaitingSnapshot ? 'pending' : 'live');
    };
    source.onerror = () => {
      if (this.transport !== transport) return;
      if (source.readyState === 2 /* CLOSED */) {
        if (!opened) this.wsFailuresInARow += 1;
        source.close();
        this.lost(opened ? 'event stream closed' : 'cannot open an event stream');
      } else {
        // The browser is reconnecting by itself and will send Last-Event-ID.
        this.setStatus({ state: 'reconnecting', retryAt: null });
      }
    };
  }
}

/**
 * Connects to a viewcast server (default: the page's own).
 * @param {string} [url]
 * @param {ConnectOptions} [options]
 * @returns {Client}
 */
export function connect(url, options = {}) {
  return new Client(url ?? globalThis.location?.origin, options);
}

// -------------------------------------------------------------------------------------------------
// Vega: keep a dataset equal to a replica.

/**
 * Turns replica changes into Vega changesets. Vega removes a tuple by the identity of the object
 * it ingested, so every inserted object is remembered under its row and exactly that object is
 * removed later.
 */
export class VegaChanges {
  /** @param {{vega?: any, toTuple?: (columns: Column[], row: Row) => object}} [options] */
  constructor(options = {}) {
    this.vega = options.vega ?? globalThis.vega;
    this.toTuple = options.toTuple ?? rowObject;
    /** @type {Map<string, object[]>} row JSON -> tuple objects, one per copy */
    this.tuples = new Map();
    this.pendingInsert = new Set();
    this.pendingRemove = new Set();
  }

  /** Records one change; returns nothing (see `take()`). */
  add(columns, change) {
    for (const row of change.deletes) {
      const k = JSON.stringify(row);
      const list = this.tuples.get(k);
      const tuple = list?.pop();
      if (list && list.length === 0) this.tuples.delete(k);
      // A tuple Vega has not seen yet is simply never inserted.
      if (tuple && !this.pendingInsert.delete(tuple)) this.pendingRemove.add(tuple);
    }
    for (const row of change.inserts) {
      const k = JSON.stringify(row);
      const tuple = this.toTuple(columns, row);
      if (!this.tuples.has(k)) this.tuples.set(k, []);
      this.tuples.get(k).push(tuple);
      this.pendingInsert.add(tuple);
    }
  }

  get pending() {
    return this.pendingInsert.size + this.pendingRemove.size > 0;
  }

  /** Everything recorded since the last call, as one `vega.changeset()`. */
  take() {
    const cs = this.vega.changeset().insert([...this.pendingInsert]).remove([...this.pendingRemove]);
    this.pendingInsert.clear();
    this.pendingRemove.clear();
    return cs;
  }

  /** One change as a changeset of its own. */
  changeset(columns, change) {
    this.add(columns, change);
    return this.take();
  }
}

/**
 * Keeps dataset `name` of a Vega view equal to a subscription, rendering at most once per frame.
 * @returns {{close(): void, flushed: Promise<void>}} `close` stops following the subscription.
 */
export function bindVega(view, name, sub, options = {}) {
  const changes = new VegaChanges(options);
  let scheduled = false;
  let running = false;
  const flush = async () => {
    scheduled = false;
    if (running || !changes.pending) return;
    running = true;
    try {
      view.change(name, changes.take());
      await view.runAsync();
    } catch (err) {
      sub.events.emit('error', `chart: ${err.message}`);
    } finally {
      running = false;
    }
    options.onRender?.();
    if (changes.pending) schedule();
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    // One render per frame; a hidden tab gets no frames, so a timer backs it up.
    let done = false;
    const run = () => {
      if (done) return;
      done = true;
      flush();
    };
    if (typeof requestAnimationFrame === 'function') requestAnimationFrame(run);
    setTimeout(run, 250);
  };
  if (sub.columns) {
    changes.add(sub.columns, { ts: sub.ts, inserts: sub.rows(), deletes: [], reset: true });
    schedule();
  }
  const off = sub.onChange((change) => {
    changes.add(sub.columns, change);
    schedule();
  });
  return { close: off, changes };
}

// -------------------------------------------------------------------------------------------------
// The rest of the HTTP API.

/** GET /api/v1/views. */
export async function listViews(base = globalThis.location?.origin, { token } = {}) {
  const res = await fetch(new URL('/api/v1/views', base), { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!res.ok) throw new Error(`GET /api/v1/views: ${res.status} ${await res.text()}`);
  return (await res.json()).views;
}

/** POST /api/sql: one result per statement run ({tag, col_names, rows} | {ok, tag} | {error}). */
export async function sql(query, base = globalThis.location?.origin, { token } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(new URL('/api/sql', base), { method: 'POST', headers, body: JSON.stringify({ query }) });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`POST /api/sql: ${res.status} ${text.slice(0, 200)}`);
  }
  if (!res.ok && !body.results) throw new Error(body?.error?.message ?? body?.error ?? `POST /api/sql: ${res.status}`);
  return body.results;
}
