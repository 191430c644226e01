// viewcast.js itself, imported into a blank page served by the fake server (always the fake: it
// needs a server without WebSocket and one requiring a token): keyed subscriptions, ad-hoc query
// subscriptions and their errors, the Server-Sent Events fallback with resume, authentication,
// and the Vega adapter keeping a dataset equal to a multiset through duplicates and removals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeServer } from './fake-server.mjs';
import { launch, sql, canon, poll } from './harness.mjs';

let browser;
const fakes = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const f of fakes) await f.close();
});

/** A page at the server's origin with viewcast.js imported as `window.vc`. */
async function clientPage(fake, path = '/style.css') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${fake.url}${path}`);
  await page.evaluate(async () => {
    window.vc = await import('/viewcast.js');
  });
  return { page, errors };
}

async function quietEquals(page, fake, query, readReplica) {
  let previous = null;
  return poll(async () => {
    const answer = canon((await sql(fake.url, query)).rows).join();
    const quiet = answer === previous;
    previous = answer;
    const replica = canon(await page.evaluate(readReplica)).join();
    return { ok: quiet && replica === answer, replica, answer };
  }, { timeoutMs: 40000, intervalMs: 700 });
}

test('keyed and ad-hoc query subscriptions equal SQL; a bad query fails alone', async () => {
  const fake = await startFakeServer({ events: 2500, rate: 400, seed: 3 });
  fakes.push(fake);
  const { page, errors } = await clientPage(fake);
  await page.evaluate(() => {
    const c = (window.c = window.vc.connect(location.origin));
    window.keyed = c.subscribe('useredits', { key: ['user'] });
    window.query = c.subscribe({ query: 'SELECT user, count FROM useredits WHERE count > 30' });
    window.bad = c.subscribe({ query: 'SELEKT nonsense' });
    window.unknown = c.subscribe('no_such_view');
    window.keyedMsgs = 0;
    window.keyed.onChange((ch) => (window.keyedMsgs += ch.reset ? 0 : 1));
  });
  const failed = await poll(async () => {
    const s = await page.evaluate(() => [window.bad.state, window.bad.error, window.unknown.state, window.unknown.error]);
    return { ok: s[0] === 'failed' && s[2] === 'failed', s };
  }, { timeoutMs: 10000 });
  assert.ok(failed.ok, `bad subscriptions: ${JSON.stringify(failed.s)}`);
  assert.match(failed.s[3], /no_such_view/);

  const keyed = await quietEquals(page, fake, 'SELECT * FROM useredits', () => window.keyed.rows());
  assert.ok(keyed.ok, `keyed replica ${keyed.replica} vs SQL ${keyed.answer}`);
  assert.ok(await page.evaluate(() => window.keyedMsgs) > 5, 'the keyed subscription received updates');
  assert.deepEqual(await page.evaluate(() => window.keyed.key), ['user']);
  assert.equal(await page.evaluate(() => JSON.stringify(window.keyed.get(['Ann']))), JSON.stringify((await sql(fake.url, "SELECT * FROM useredits WHERE user = 'Ann'")).rows[0]));

  const q = await quietEquals(page, fake, 'SELECT user, count FROM useredits WHERE count > 30', () => window.query.rows());
  assert.ok(q.ok, `query replica ${q.replica} vs SQL ${q.answer}`);
  assert.equal(await page.evaluate(() => window.c.connections), 1, 'one connection for all four subscriptions');
  assert.deepEqual(errors, []);
  await page.close();
});

test('without a WebSocket the client falls back to Server-Sent Events and resumes with Last-Event-ID', async () => {
  const fake = await startFakeServer({ events: 4000, rate: 300, seed: 9, websocket: false });
  fakes.push(fake);
  const { page, errors } = await clientPage(fake);
  await page.evaluate(() => {
    const c = (window.c = window.vc.connect(location.origin, { backoffMinMs: 100 }));
    window.sub10 = c.subscribe('top10');
    window.ts = [];
    window.sub10.onChange((ch) => window.ts.push(ch.ts));
  });
  const live = await poll(async () => {
    const s = await page.evaluate(() => ({ status: window.c.status, state: window.sub10.state, n: window.ts.length }));
    return { ok: s.status.transport === 'sse' && s.state === 'live' && s.n > 3, s };
  }, { timeoutMs: 20000 });
  assert.ok(live.ok, `not live over SSE: ${JSON.stringify(live.s)}`);

  await fetch(`${fake.url}/fake/drop`, { method: 'POST' });
  const resumed = await poll(async () => {
    const stats = await fetch(`${fake.url}/fake/stats`).then((r) => r.json());
    const sse = stats.received.filter((m) => m.transport === 'sse');
    return { ok: sse.length >= 2 && sse[sse.length - 1].since !== null, sse };
  }, { timeoutMs: 15000 });
  assert.ok(resumed.ok, `the reconnect did not send Last-Event-ID: ${JSON.stringify(resumed.sse)}`);
  const r = await quietEquals(page, fake, 'SELECT * FROM top10', () => window.sub10.rows());
  assert.ok(r.ok, `replica ${r.replica} vs SQL ${r.answer}`);
  const ts = await page.evaluate(() => window.ts);
  for (let i = 1; i < ts.length; i++) assert.ok(ts[i] > ts[i - 1], `change timestamps not increasing at ${i}: ${ts[i - 1]}, ${ts[i]}`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a token is sent as the first message; a wrong one is refused', async () => {
  const fake = await startFakeServer({ events: 1000, rate: 300, token: 's3cret' });
  fakes.push(fake);
  const { page } = await clientPage(fake);
  const r = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const good = window.vc.connect(location.origin, { token: 's3cret' });
        const bad = window.vc.connect(location.origin, { token: 'wrong', transport: 'websocket', backoffMinMs: 60000 });
        const g = good.subscribe('counter');
        const b = bad.subscribe('counter');
        let badError = null;
        b.onError((m) => (badError = m));
        setTimeout(() => resolve({ good: g.state, goodRows: g.size, bad: b.state, badError, badStatus: bad.status.state }), 2500);
      }),
  );
  assert.equal(r.good, 'live');
  assert.equal(r.goodRows, 1);
  assert.notEqual(r.bad, 'live');
  assert.match(String(r.badError), /auth/i);
  const first = (await fetch(`${fake.url}/fake/stats`).then((res) => res.json())).received.filter((m) => m.transport === 'ws');
  assert.equal(first[0].type, 'auth', 'the first message is auth');
  await page.close();
});

test('the Vega adapter keeps a dataset equal to a multiset through duplicates and removals', async () => {
  const fake = fakes[0] ?? (await startFakeServer({ events: 100 }));
  if (!fakes.includes(fake)) fakes.push(fake);
  const { page, errors } = await clientPage(fake, '/');
  const r = await page.evaluate(async () => {
    const { VegaChanges } = window.vc;
    const view = new vega.View(vega.parse({ data: [{ name: 'rows' }] }), { renderer: 'none' });
    const adapter = new VegaChanges();
    const columns = [{ name: 'k', type: 'text' }, { name: 'n', type: 'bigint' }];
    const model = new Map(); // row JSON -> count
    let seed = 42;
    const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    const mismatches = [];
    for (let step = 0; step < 400; step++) {
      const inserts = [];
      const deletes = [];
      for (let i = 0; i < 1 + rand(4); i++) {
        const row = [`k${rand(6)}`, rand(3)];
        const key = JSON.stringify(row);
        if (rand(2) && (model.get(key) ?? 0) > 0) {
          deletes.push(row);
          model.set(key, model.get(key) - 1);
        } else {
          inserts.push(row);
          model.set(key, (model.get(key) ?? 0) + 1);
        }
      }
      adapter.add(columns, { ts: step, inserts, deletes, reset: false });
      if (rand(3) === 0 || step === 399) {
        view.change('rows', adapter.take());
        await view.runAsync();
        const got = view.data('rows').map((t) => JSON.stringify([t.k, t.n])).sort();
        const want = [...model].flatMap(([k, c]) => Array(c).fill(k)).sort();
        if (got.join() !== want.join()) mismatches.push({ step, got: got.length, want: want.length });
      }
    }
    return { mismatches, size: view.data('rows').length };
  });
  assert.deepEqual(r.mismatches, [], 'dataset differs from the multiset');
  assert.ok(r.size > 0);
  assert.deepEqual(errors, []);
  await page.close();
});
