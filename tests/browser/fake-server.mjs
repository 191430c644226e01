// A stand-in for the viewcast gateway, for testing the page before the real server is wired up.
//
// Serves web/ at the gateway's asset paths, streams the `counter` and `top10` views over
// WebSocket at /api/v1/stream/{view} following the stream protocol, and answers
// `SELECT * FROM <view>` at POST /api/sql. A built-in load generator produces a fixed number of
// edit events, then stops, so the final state is quiet.
//
// Test hooks (fake server only): POST /fake/resync sends every stream a resync and a fresh
// snapshot; POST /fake/drop closes every stream abruptly; POST /fake/error?message=M sends an
// error message; POST /fake/bad-update sends top10 an impossible retraction; GET /fake/stats.
//
// Run alone: node fake-server.mjs [--port 8080] [--events 4000] [--rate 250]
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { WebSocketServer } from 'ws';

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB = join(HERE, '../../web');

/** URL path -> file under web/; mirrors crates/gateway/src/assets.rs. */
const ASSETS = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
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

const COLUMNS = {
  counter: [{ name: 'count', type: 'bigint' }],
  top10: [
    { name: 'user', type: 'text' },
    { name: 'count', type: 'bigint' },
  ],
};

/** The demo's two views, recomputed from scratch after every tick (the fake has no incremental engine). */
class Views {
  constructor() {
    this.perUser = new Map();
    this.total = 0;
  }
  ingest(user) {
    this.perUser.set(user, (this.perUser.get(user) || 0) + 1);
    this.total += 1;
  }
  rows(view) {
    if (view === 'counter') return this.total === 0 ? [] : [[this.total]];
    return [...this.perUser.entries()]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .slice(0, 10);
  }
}

/** Consolidated changes from `before` to `after` (sets of distinct rows). */
function diff(before, after) {
  const key = (r) => JSON.stringify(r);
  const was = new Map(before.map((r) => [key(r), r]));
  const now = new Map(after.map((r) => [key(r), r]));
  const out = [];
  for (const [k, r] of was) if (!now.has(k)) out.push({ row: r, diff: -1 });
  for (const [k, r] of now) if (!was.has(k)) out.push({ row: r, diff: 1 });
  return out;
}

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

export async function startFakeServer({ port = 0, host = '127.0.0.1', events = 4000, rate = 250, tickMs = 50, seed = 7 } = {}) {
  const views = new Views();
  const current = { counter: [], top10: [] };
  const subscribers = { counter: new Set(), top10: new Set() };
  const lastSent = { counter: 0, top10: 0 };
  let ts = 0;
  let emitted = 0;
  const random = mulberry32(seed);
  // Zipf-like weights: a stable head and a churning tail around rank 10.
  const weights = EDITORS.map((_, i) => 1 / Math.pow(i + 1, 0.9));
  const weightSum = weights.reduce((a, b) => a + b, 0);
  const pick = () => {
    let r = random() * weightSum;
    for (let i = 0; i < EDITORS.length; i++) if ((r -= weights[i]) <= 0) return EDITORS[i];
    return EDITORS[EDITORS.length - 1];
  };

  const send = (socket, msg) => {
    if (socket.readyState === socket.OPEN) socket.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  };
  const snapshot = (view) => ({
    type: 'snapshot',
    view,
    ts,
    columns: COLUMNS[view],
    rows: current[view].map((row) => ({ row, diff: 1 })),
  });

  function tick() {
    const now = Math.max(Date.now(), ts + 1);
    const perTick = Math.max(0, Math.round((rate * tickMs) / 1000 * (0.4 + 1.2 * random())));
    const batch = Math.min(perTick, events - emitted);
    for (let i = 0; i < batch; i++) views.ingest(pick());
    emitted += batch;
    ts = now; // every change below is at `ts`; the timestamp is complete once published
    for (const view of Object.keys(current)) {
      const next = views.rows(view);
      const rows = diff(current[view], next);
      current[view] = next;
      let frame = null;
      if (rows.length) frame = JSON.stringify({ type: 'update', view, ts, rows });
      else if (ts - lastSent[view] >= 500) frame = JSON.stringify({ type: 'progress', view, ts });
      if (frame) {
        lastSent[view] = ts;
        for (const s of subscribers[view]) send(s, frame);
      }
    }
  }
  const timer = setInterval(tick, tickMs);

  const json = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

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
        let body = '';
        for await (const chunk of req) body += chunk;
        const { query } = JSON.parse(body || '{}');
        const m = /^\s*select\s+\*\s+from\s+(\w+)\s*;?\s*$/i.exec(query || '');
        if (!m || !current[m[1]]) return json(res, 400, { error: `fake server only answers SELECT * FROM counter|top10, got ${JSON.stringify(query)}` });
        const rows = current[m[1]];
        return json(res, 200, {
          results: [{ tag: `SELECT ${rows.length}`, col_names: COLUMNS[m[1]].map((c) => c.name), rows }],
        });
      }
      if (req.method === 'POST' && url.pathname === '/fake/resync') {
        for (const view of Object.keys(subscribers)) {
          for (const s of subscribers[view]) {
            send(s, { type: 'resync', view });
            send(s, snapshot(view));
          }
        }
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/error') {
        const message = url.searchParams.get('message') || 'fake error';
        for (const set of Object.values(subscribers)) for (const s of set) send(s, { type: 'error', message });
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/bad-update') {
        // A protocol violation at a fresh timestamp: retracts a row the view never held.
        ts += 1;
        for (const s of subscribers.top10) send(s, { type: 'update', view: 'top10', ts, rows: [{ row: ['nobody', 1], diff: -1 }] });
        return json(res, 200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/fake/drop') {
        let dropped = 0;
        for (const set of Object.values(subscribers)) for (const s of set) (s.terminate(), dropped++);
        return json(res, 200, { dropped });
      }
      if (req.method === 'GET' && url.pathname === '/fake/stats') {
        return json(res, 200, { emitted, events, ts, subscribers: Object.fromEntries(Object.entries(subscribers).map(([v, s]) => [v, s.size])) });
      }
      if (url.pathname.startsWith('/api/v1/stream/')) {
        res.writeHead(426, { 'content-type': 'text/plain' });
        return res.end('WebSocket upgrade required\n');
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    } catch (err) {
      json(res, 500, { error: String(err && err.message) });
    }
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const m = /^\/api\/v1\/stream\/([^/?]+)$/.exec(new URL(req.url, 'http://fake').pathname);
    if (!m) return socket.destroy();
    const view = decodeURIComponent(m[1]);
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (!subscribers[view]) {
        send(ws, { type: 'error', message: `unknown view ${JSON.stringify(view)}` });
        return ws.close(1008, 'unknown view');
      }
      subscribers[view].add(ws);
      ws.on('close', () => subscribers[view].delete(ws));
      send(ws, snapshot(view));
    });
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  const url = `http://${host}:${server.address().port}`;
  return {
    url,
    stats: () => ({ emitted, events, ts }),
    async close() {
      clearInterval(timer);
      for (const set of Object.values(subscribers)) for (const s of set) s.terminate();
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const fake = await startFakeServer({ port: arg('port', 8080), events: arg('events', 4000), rate: arg('rate', 250) });
  console.log(`fake viewcast listening on ${fake.url}`);
  const stop = async () => {
    await fake.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
