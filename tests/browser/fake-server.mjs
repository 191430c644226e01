// A stand-in for the viewcast gateway, for testing the browser side before the real server speaks
// the multiplexed protocol (docs/client.md lists exactly what it relies on).
//
// Serves web/ at the gateway's asset paths and implements, for a few fixed views over a built-in
// load generator of Wikipedia-like edits:
//   WebSocket  GET /api/v1/ws            subscribe/unsubscribe/auth; keyed output; resume with `since`
//   SSE        GET /api/v1/stream?views=a,b and /api/v1/stream/{view}; resume with Last-Event-ID
//   REST       GET /api/v1/views, POST /api/sql (a tiny SQL subset, below)
// Views: counter, useredits, top10, editsperwiki, editslastminute (+ the source wikirecent), all
// recomputed from scratch each 50 ms tick and diffed (the fake has no incremental engine). Each
// view keeps 60 s of update history for resumes; older `since` values get resync + snapshot.
//
// SQL subset: `SELECT * | col, ... FROM rel [WHERE col op literal] [ORDER BY col [ASC|DESC]]
// [LIMIT n]` and `CREATE [MATERIALIZED] VIEW name AS <that select>`, statements split on `;`.
//
// Test hooks (fake only): POST /fake/drop closes every connection abruptly; POST /fake/resync
// sends every subscription resync + snapshot; POST /fake/error?message=M sends every subscription
// an error; POST /fake/bad-update sends top10 subscribers an impossible retraction; GET
// /fake/stats returns counters, the client messages received, and each view's update timestamps.
//
// Run alone: node fake-server.mjs [--port 8080] [--events 4000] [--rate 250] [--token T] [--no-websocket]
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { WebSocketServer } from 'ws';

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB = join(HERE, '../../web');

/** URL path -> file under web/; mirrors crates/gateway/build.rs's SERVED table. */
export const ASSETS = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/demo/wikipedia': 'demo.html',
  '/viewcast.js': 'viewcast.js',
  '/dashboard.js': 'dashboard.js',
  '/demo.js': 'demo.js',
  '/panels.js': 'panels.js',
  '/style.css': 'style.css',
  '/vendor/vega.min.js': 'node_modules/vega/build/vega.min.js',
  '/vendor/vega-lite.min.js': 'node_modules/vega-lite/build/vega-lite.min.js',
  '/vendor/vega-embed.min.js': 'node_modules/vega-embed/build/vega-embed.min.js',
};
const CONTENT_TYPES = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

// Fictional editors; a few names exercise escaping, non-Latin scripts, digits-only text and ellipsis.
const EDITORS = [
  'Ann', 'Bürokrat', 'CiteFixer', 'Dana K.', '8675309', 'Ω-bot', 'EditWarden', 'Fenwick', 'Gülşen', 'HistoryBuff',
  "O'Brien", '李华', 'Jaroslav', 'KeyboardCat', 'Lumen', 'MapMaker', 'Nadia', 'Orthographer',
  'A.very.long.editor.name.that.needs.an.ellipsis', 'Quill', 'Rosalind', 'Sven "the typo hunter"',
  'TalkPageTom', 'Uma', 'Vandal-Sweeper', 'Wren', 'Xenia', 'Yusuf', 'Zed',
];
const WIKIS = ['enwiki', 'dewiki', 'wikidatawiki', 'commonswiki', 'frwiki', 'jawiki', 'eswiki', 'ruwiki'];
const HISTORY_MS = 60000;
const PROGRESS_EVERY_MS = 500;

const col = (name, type, nullable = false) => ({ name, type, nullable });
const byCountThenName = (a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** A seeded PRNG so runs are repeatable. */
function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Consolidated changes from `before` to `after` (lists of rows, each a multiset). */
function diffRows(before, after) {
  const counts = new Map();
  for (const r of before) {
    const k = JSON.stringify(r);
    counts.set(k, { row: r, diff: (counts.get(k)?.diff ?? 0) - 1 });
  }
  for (const r of after) {
    const k = JSON.stringify(r);
    const c = counts.get(k);
    counts.set(k, { row: r, diff: (c?.diff ?? 0) + 1 });
  }
  return [...counts.values()].filter((c) => c.diff !== 0);
}

/** Distinct rows with multiplicities, as a snapshot carries them. */
function consolidate(rows) {
  const m = new Map();
  for (const r of rows) {
    const k = JSON.stringify(r);
    m.set(k, { row: r, diff: (m.get(k)?.diff ?? 0) + 1 });
  }
  return [...m.values()];
}

class SqlError extends Error {
  constructor(message, code = '42601', position = undefined) {
    super(message);
    this.code = code;
    this.position = position;
  }
}

const SELECT_RE =
  /^\s*select\s+(\*|[\w\s,"]+?)\s+from\s+("?\w+"?)(?:\s+where\s+("?\w+"?)\s*(>=|<=|<>|!=|=|>|<)\s*('(?:[^']|'')*'|-?\d+(?:\.\d+)?))?(?:\s+order\s+by\s+("?\w+"?)(?:\s+(asc|desc))?)?(?:\s+limit\s+(\d+))?\s*$/i;
const unquote = (s) => s.replace(/^"|"$/g, '');

/** The fake's whole catalog and engine. */
class Catalog {
  constructor() {
    this.events = []; // [eventTs, user, wiki]
    this.perUser = new Map();
    this.perWiki = new Map();
    this.now = 0;
    this.relations = new Map();
    const builtin = (name, kind, columns, compute) => this.relations.set(name, { name, kind, columns, compute, streamable: kind !== 'source' });
    builtin('wikirecent', 'source', [col('data', 'jsonb')], () => []);
    builtin('counter', 'view', [col('count', 'bigint')], () => (this.events.length ? [[this.events.length]] : []));
    builtin('useredits', 'view', [col('user', 'text', true), col('count', 'bigint')], () => [...this.perUser.entries()]);
    builtin('top10', 'view', [col('user', 'text', true), col('count', 'bigint')], () =>
      [...this.perUser.entries()].sort(byCountThenName).slice(0, 10));
    builtin('editsperwiki', 'view', [col('wiki', 'text', true), col('count', 'bigint')], () => [...this.perWiki.entries()]);
    builtin('editslastminute', 'view', [col('count', 'bigint')], () => {
      let n = 0;
      for (let i = this.events.length - 1; i >= 0 && this.events[i][0] > this.now - 60000; i--) n++;
      return [[n]];
    });
  }

  ingest(eventTs, user, wiki) {
    this.events.push([eventTs, user, wiki]);
    this.perUser.set(user, (this.perUser.get(user) || 0) + 1);
    this.perWiki.set(wiki, (this.perWiki.get(wiki) || 0) + 1);
  }

  /** Compiles one SELECT into {columns, compute}. */
  compile(text, offset = 0) {
    const m = SELECT_RE.exec(text);
    if (!m) throw new SqlError(`the fake server cannot run this statement: ${text.trim().slice(0, 80)}`, '42601', offset + 1);
    const [, list, fromRaw, whereCol, op, literal, orderCol, dir, limit] = m;
    const from = unquote(fromRaw);
    const base = this.relations.get(from);
    if (!base) throw new SqlError(`unknown catalog item '${from}'`, '42P01', offset + text.indexOf(fromRaw) + 1);
    const index = (name) => {
      const i = base.columns.findIndex((c) => c.name === unquote(name.trim()));
      if (i < 0) throw new SqlError(`column "${unquote(name.trim())}" does not exist`, '42703', offset + text.indexOf(name.trim()) + 1);
      return i;
    };
    const picks = list.trim() === '*' ? base.columns.map((_, i) => i) : list.split(',').map(index);
    const w = whereCol ? index(whereCol) : null;
    const lit = literal === undefined ? null : literal.startsWith("'") ? literal.slice(1, -1).replace(/''/g, "'") : Number(literal);
    const test = { '=': (a, b) => a === b, '<>': (a, b) => a !== b, '!=': (a, b) => a !== b, '>': (a, b) => a > b, '<': (a, b) => a < b, '>=': (a, b) => a >= b, '<=': (a, b) => a <= b }[op];
    const o = orderCol ? index(orderCol) : null;
    const desc = /desc/i.test(dir || '');
    return {
      columns: picks.map((i) => base.columns[i]),
      compute: () => {
        let rows = base.compute();
        if (w !== null) rows = rows.filter((r) => test(r[w], lit));
        if (o !== null) rows = [...rows].sort((a, b) => (a[o] < b[o] ? -1 : a[o] > b[o] ? 1 : 0) * (desc ? -1 : 1));
        if (limit !== undefined) rows = rows.slice(0, Number(limit));
        return rows.map((r) => picks.map((i) => r[i]));
      },
    };
  }

  /** Runs statements in order; the first error stops the rest. */
  execute(query) {
    const results = [];
    let offset = 0;
    for (const stmt of query.split(';')) {
      const here = offset;
      offset += stmt.length + 1;
      if (!stmt.trim()) continue;
      try {
        const create = /^\s*create\s+(?:materialized\s+)?view\s+("?\w+"?)\s+as\s+([\s\S]*)$/i.exec(stmt);
        if (create) {
          const name = unquote(create[1]);
          if (this.relations.has(name)) throw new SqlError(`catalog item '${name}' already exists`, '42710', here + stmt.indexOf(create[1]) + 1);
          const plan = this.compile(create[2], here + stmt.indexOf(create[2]));
          this.relations.set(name, { name, kind: 'view', columns: plan.columns, compute: plan.compute, streamable: true });
          results.push({ ok: 'CREATE VIEW', tag: 'CREATE VIEW' });
          continue;
        }
        const plan = this.compile(stmt, here);
        const rows = plan.compute();
        results.push({
          tag: `SELECT ${rows.length}`,
          col_names: plan.columns.map((c) => c.name),
          desc: { columns: plan.columns },
          rows,
        });
      } catch (err) {
        if (!(err instanceof SqlError)) throw err;
        const error = { message: err.message, code: err.code };
        if (err.position !== undefined) error.position = err.position;
        results.push({ error });
        break;
      }
    }
    return results;
  }
}

/** Parses a Cookie header into a map. */
function cookies(header) {
  const out = {};
  for (const part of (header || '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

export async function startFakeServer({
  port = 0,
  host = '127.0.0.1',
  events = 4000,
  rate = 250,
  tickMs = 50,
  seed = 7,
  token = null,
  websocket = true,
} = {}) {
  const catalog = new Catalog();
  const random = mulberry32(seed);
  // Zipf-like weights: a stable head and a churning tail around rank 10.
  const weights = EDITORS.map((_, i) => 1 / Math.pow(i + 1, 0.9));
  const weightSum = weights.reduce((a, b) => a + b, 0);
  const pick = () => {
    let r = random() * weightSum;
    for (let i = 0; i < EDITORS.length; i++) if ((r -= weights[i]) <= 0) return EDITORS[i];
    return EDITORS[EDITORS.length - 1];
  };

  /** Per relation: current rows, retained history, and the ts of its last frame. */
  const state = new Map();
  const stateOf = (name) => {
    if (!state.has(name)) {
      state.set(name, { rows: catalog.relations.get(name).compute(), history: [], historyStart: ts, lastSent: 0, updateTs: [] });
    }
    return state.get(name);
  };
  let ts = Date.now();
  let emitted = 0;
  for (const rel of catalog.relations.values()) if (rel.streamable) stateOf(rel.name);
  const received = []; // client messages, for tests
  /** Every live connection: {kind: 'ws'|'sse', subs: Map<id, sub>, send(msg, eventId?), kill()} */
  const connections = new Set();

  const snapshotMsg = (sub, rows) => {
    const msg = { type: 'snapshot', id: sub.id, view: sub.view, ts, columns: sub.columns, rows: consolidate(rows) };
    if (sub.key) msg.key = sub.key;
    return msg;
  };
  /** One timestamp's diff entries in the subscription's output format. */
  const updateMsg = (sub, at, rows) => {
    if (!sub.key) return { type: 'update', id: sub.id, view: sub.view, ts: at, rows };
    const keyIdx = sub.key.map((n) => sub.columns.findIndex((c) => c.name === n));
    const byKey = new Map();
    for (const { row, diff } of rows) {
      const k = JSON.stringify(keyIdx.map((i) => row[i]));
      const e = byKey.get(k) ?? { keyValues: keyIdx.map((i) => row[i]), upsert: null };
      if (diff > 0) e.upsert = row;
      byKey.set(k, e);
    }
    const upserts = [];
    const deletes = [];
    for (const e of byKey.values()) (e.upsert ? upserts.push(e.upsert) : deletes.push(e.keyValues));
    return { type: 'update', id: sub.id, view: sub.view, ts: at, upserts, deletes };
  };

  /** Starts a subscription on a connection: snapshot, or replay after `since`, or resync + snapshot. */
  function startSub(conn, sub, since) {
    if (sub.transient) {
      sub.rows = sub.compute();
      if (since !== undefined && since !== null) conn.send({ type: 'resync', id: sub.id, view: sub.view });
      return conn.send(snapshotMsg(sub, sub.rows), ts);
    }
    const st = stateOf(sub.view);
    if (since !== undefined && since !== null && since >= st.historyStart && since <= ts) {
      const later = st.history.filter((h) => h.ts > since);
      for (const h of later) conn.send(updateMsg(sub, h.ts, h.rows), h.ts);
      if (!later.length && since < ts) conn.send({ type: 'progress', id: sub.id, view: sub.view, ts }, ts);
      return;
    }
    if (since !== undefined && since !== null) conn.send({ type: 'resync', id: sub.id, view: sub.view });
    conn.send(snapshotMsg(sub, st.rows), ts);
  }

  function makeSub(conn, msg) {
    const id = msg.id === undefined ? undefined : String(msg.id);
    const base = { id, key: Array.isArray(msg.key) ? msg.key.map(String) : null };
    if (typeof msg.view === 'string') {
      const rel = catalog.relations.get(msg.view);
      if (!rel) throw new Error(`unknown view "${msg.view}"`);
      if (!rel.streamable) throw new Error(`"${msg.view}" is a ${rel.kind} and cannot be streamed`);
      return { ...base, view: msg.view, columns: rel.columns, transient: false };
    }
    if (typeof msg.query === 'string') {
      if (conn.kind !== 'ws') throw new Error('queries need the WebSocket');
      let plan;
      try {
        plan = catalog.compile(msg.query);
      } catch (err) {
        throw new Error(err.message);
      }
      return { ...base, view: undefined, columns: plan.columns, compute: plan.compute, transient: true, rows: [] };
    }
    throw new Error('subscribe needs "view" or "query"');
  }

  function subscribe(conn, msg, since) {
    let sub;
    try {
      sub = makeSub(conn, msg);
      if (sub.key) for (const k of sub.key) if (!sub.columns.some((c) => c.name === k)) throw new Error(`key column "${k}" does not exist`);
    } catch (err) {
      return conn.send({ type: 'error', id: msg.id, view: msg.view, message: err.message });
    }
    conn.subs.set(sub.id ?? sub.view, sub);
    startSub(conn, sub, since);
  }

  function tick() {
    const now = Math.max(Date.now(), ts + 1);
    const perTick = Math.max(0, Math.round(((rate * tickMs) / 1000) * (0.4 + 1.2 * random())));
    const batch = Math.min(perTick, events - emitted);
    for (let i = 0; i < batch; i++) catalog.ingest(now, pick(), WIKIS[Math.floor(random() * random() * WIKIS.length)]);
    emitted += batch;
    ts = now; // every change below is at `ts`; the timestamp is complete once published
    catalog.now = ts;
    const frames = new Map(); // view -> {rows} | 'progress' | null
    for (const rel of catalog.relations.values()) {
      if (!rel.streamable) continue;
      const st = stateOf(rel.name);
      const next = rel.compute();
      const rows = diffRows(st.rows, next);
      st.rows = next;
      if (rows.length) {
        st.history.push({ ts, rows });
        st.updateTs.push(ts);
        st.lastSent = ts;
        frames.set(rel.name, rows);
      } else if (ts - st.lastSent >= PROGRESS_EVERY_MS) {
        st.lastSent = ts;
        frames.set(rel.name, 'progress');
      }
      while (st.history.length && st.history[0].ts < ts - HISTORY_MS) st.historyStart = st.history.shift().ts;
    }
    for (const conn of connections) {
      if (!conn.ready) continue;
      for (const sub of conn.subs.values()) {
        if (sub.transient) {
          const next = sub.compute();
          const rows = diffRows(sub.rows, next);
          sub.rows = next;
          if (rows.length) conn.send(updateMsg(sub, ts, rows), ts);
          continue;
        }
        const f = frames.get(sub.view);
        if (f === 'progress') conn.send({ type: 'progress', id: sub.id, view: sub.view, ts }, ts);
        else if (f) conn.send(updateMsg(sub, ts, f), ts);
      }
    }
  }
  const timer = setInterval(tick, tickMs);

  const json = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const tokenOk = (req) => {
    if (!token) return true;
    const auth = req.headers.authorization || '';
    return auth === `Bearer ${token}` || cookies(req.headers.cookie).viewcast_token === token;
  };

  function serveSse(req, res, views) {
    if (!tokenOk(req)) return json(res, 401, { error: { message: 'missing or wrong token' } });
    for (const v of views) {
      const rel = catalog.relations.get(v);
      if (!rel || !rel.streamable) return json(res, 404, { error: { message: `unknown view "${v}"` } });
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write('retry: 1000\n\n');
    const conn = {
      kind: 'sse',
      ready: true,
      subs: new Map(),
      send(msg, eventId) {
        const data = { ...msg };
        delete data.id;
        res.write(`${eventId !== undefined ? `id: ${eventId}\n` : ''}data: ${JSON.stringify(data)}\n\n`);
      },
      kill: () => res.destroy(),
    };
    connections.add(conn);
    req.on('close', () => connections.delete(conn));
    const last = req.headers['last-event-id'];
    const since = last !== undefined && last !== '' ? Number(last) : undefined;
    received.push({ transport: 'sse', views, since: since ?? null });
    for (const view of views) subscribe(conn, { view }, since);
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake');
    try {
      if (req.method === 'GET' && ASSETS[url.pathname]) {
        const file = ASSETS[url.pathname];
        const body = await readFile(join(WEB, file));
        res.writeHead(200, { 'content-type': CONTENT_TYPES[file.split('.').pop()], 'cache-control': 'no-cache' });
        return res.end(body);
      }
      if (req.method === 'POST' && url.pathname === '/api/sql') {
        if (!tokenOk(req)) return json(res, 401, { error: { message: 'missing or wrong token' } });
        let body = '';
        for await (const chunk of req) body += chunk;
        let query;
        try {
          ({ query } = JSON.parse(body || '{}'));
        } catch {
          return json(res, 400, { error: { message: 'expected {"query": "..."}' } });
        }
        if (typeof query !== 'string') return json(res, 400, { error: { message: 'expected {"query": "..."}' } });
        return json(res, 200, { results: catalog.execute(query) });
      }
      if (req.method === 'GET' && url.pathname === '/api/v1/views') {
        const views = [...catalog.relations.values()].map((rel) => {
          const st = rel.streamable ? stateOf(rel.name) : null;
          return { name: rel.name, kind: rel.kind, columns: rel.columns, streamable: rel.streamable, rows: st ? st.rows.length : null, ts: st ? ts : null };
        });
        return json(res, 200, { views });
      }
      if (req.method === 'GET' && url.pathname === '/api/v1/stream') {
        return serveSse(req, res, (url.searchParams.get('views') || '').split(',').filter(Boolean));
      }
      const one = /^\/api\/v1\/stream\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'GET' && one && /text\/event-stream/.test(req.headers.accept || '')) {
        return serveSse(req, res, [decodeURIComponent(one[1])]);
      }
      if (req.method === 'POST' && url.pathname === '/fake/resync') {
        for (const conn of connections) {
          for (const sub of conn.subs.values()) {
            conn.send({ type: 'resync', id: sub.id, view: sub.view });
            if (sub.transient) sub.rows = sub.compute();
            conn.send(snapshotMsg(sub, sub.transient ? sub.rows : stateOf(sub.view).rows), ts);
          }
        }
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/error') {
        const message = url.searchParams.get('message') || 'fake error';
        for (const conn of connections) for (const sub of conn.subs.values()) conn.send({ type: 'error', id: sub.id, view: sub.view, message });
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/bad-update') {
        // A protocol violation at a fresh timestamp: retracts a row the view never held.
        ts += 1;
        for (const conn of connections) {
          for (const sub of conn.subs.values()) {
            if (sub.view === 'top10' && !sub.key) conn.send({ type: 'update', id: sub.id, view: 'top10', ts, rows: [{ row: ['nobody', 1], diff: -1 }] }, ts);
          }
        }
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/drop') {
        let dropped = 0;
        for (const conn of [...connections]) {
          conn.kill();
          connections.delete(conn);
          dropped++;
        }
        return json(res, 200, { dropped });
      }
      if (req.method === 'GET' && url.pathname === '/fake/stats') {
        const updateTs = Object.fromEntries([...state.entries()].map(([v, st]) => [v, st.updateTs]));
        return json(res, 200, { emitted, events, ts, connections: connections.size, received, updateTs });
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `no such page: ${url.pathname}` } }));
    } catch (err) {
      json(res, 500, { error: { message: String(err && err.message) } });
    }
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url, 'http://fake').pathname;
    if (!websocket || path !== '/api/v1/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = {
        kind: 'ws',
        ready: tokenOk(req),
        subs: new Map(),
        send(msg) {
          if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
        },
        kill: () => ws.terminate(),
      };
      connections.add(conn);
      ws.on('close', () => connections.delete(conn));
      ws.on('message', (data) => {
        let msg;
        try {
          msg = JSON.parse(String(data));
        } catch {
          return conn.send({ type: 'error', message: 'messages must be JSON' });
        }
        received.push({ transport: 'ws', ...msg, at: ts });
        if (!conn.ready) {
          if (msg.type === 'auth' && msg.token === token) {
            conn.ready = true;
            return;
          }
          conn.send({ type: 'error', message: 'authentication required: send {"type":"auth","token":...} first' });
          return ws.close(1008, 'unauthorized');
        }
        if (msg.type === 'auth') return; // already authenticated
        if (msg.type === 'subscribe') {
          if (msg.id === undefined || conn.subs.has(String(msg.id))) {
            return conn.send({ type: 'error', id: msg.id, message: msg.id === undefined ? 'subscribe needs an "id"' : `id "${msg.id}" is in use` });
          }
          return subscribe(conn, msg, msg.since);
        }
        if (msg.type === 'unsubscribe') return conn.subs.delete(String(msg.id));
        conn.send({ type: 'error', id: msg.id, message: `unknown message type ${JSON.stringify(msg.type)}` });
      });
    });
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  const url = `http://${host}:${server.address().port}`;
  return {
    url,
    stats: () => ({ emitted, events, ts, received }),
    async close() {
      clearInterval(timer);
      for (const conn of connections) conn.kill();
      wss.close();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const fake = await startFakeServer({
    port: Number(arg('port', 8080)),
    events: Number(arg('events', 4000)),
    rate: Number(arg('rate', 250)),
    token: arg('token', null),
    websocket: !process.argv.includes('--no-websocket'),
  });
  console.log(`fake viewcast listening on ${fake.url}`);
  const stop = async () => {
    await fake.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
