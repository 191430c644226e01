// The demo page's handling of the stream protocol's hard cases, against the fake server (always;
// its /fake/* hooks exist nowhere else): dropped connections, server-initiated resyncs, and the
// chart staying equal to the replica through thousands of removals (Vega removes by tuple identity).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startFakeServer } from './fake-server.mjs';
import { OUT_DIR, launch, openPage, readPage, sql, canon, poll, sleep } from './harness.mjs';

let fake;
let browser;
let page;
let problems;

before(async () => {
  fake = await startFakeServer({ events: 5000, rate: 400, seed: 11 });
  browser = await launch();
  ({ page, problems } = await openPage(browser, fake.url, '/demo/wikipedia'));
});

after(async () => {
  if (page && !page.isClosed()) await page.screenshot({ path: join(OUT_DIR, 'protocol-last.png') }).catch(() => {});
  await browser?.close();
  await fake?.close();
});

const post = (path) => fetch(`${fake.url}${path}`, { method: 'POST' }).then((r) => r.json());

async function waitLive(timeoutMs = 20000) {
  const r = await poll(async () => {
    const s = await readPage(page);
    return { ok: s.status === 'Live' && s.chartRows.length > 0, s };
  }, { timeoutMs });
  assert.equal(r.s.status, 'Live', `page did not come back: ${JSON.stringify(r.s.log.slice(0, 6))}`);
}

/** Chart, Vega data, scenegraph and table each equal the replica (no tuple left behind or doubled). */
function assertConsistent(s, what) {
  const replica = canon(s.top10).join();
  for (const [name, rows] of Object.entries({ chartRows: s.chartRows, vegaData: s.vegaData, sceneBars: s.sceneBars, table: s.table })) {
    assert.equal(canon(rows).join(), replica, `${what}: ${name} differs from viewcastState.top10`);
  }
  assert.equal(s.svgBars, s.top10.length, `${what}: SVG bar count`);
}

test('a dropped connection shows in the page, reconnects and replaces the replica', async () => {
  await waitLive();
  const { dropped } = await post('/fake/drop');
  assert.equal(dropped, 1, 'one connection carries every subscription');
  const down = await poll(async () => {
    const s = await readPage(page);
    return { ok: s.log.some((l) => /connection closed/.test(l.text)), s };
  }, { timeoutMs: 5000, intervalMs: 50 });
  assert.ok(down.ok, 'the page logs the closed connection');
  await waitLive();
  await sleep(1000); // updates keep flowing after the fresh snapshot
  const r = await poll(async () => {
    const s = await readPage(page);
    try {
      assertConsistent(s, 'after reconnect');
      return { ok: true, s };
    } catch (err) {
      return { ok: false, s, err };
    }
  }, { timeoutMs: 5000 });
  if (!r.ok) throw r.err;
});

test('a resync mid-stream is followed without duplicates', async () => {
  for (let i = 0; i < 3; i++) {
    await post('/fake/resync');
    await sleep(300);
  }
  const s = await readPage(page);
  assert.ok(s.log.some((l) => /resync/.test(l.text)), 'the page logs the resync');
  await waitLive();
});

test('after the stream goes quiet, every view of the data equals SQL', async () => {
  let previous = null;
  const r = await poll(async () => {
    const top10 = await sql(fake.url, 'SELECT * FROM top10');
    const answer = canon(top10.rows).join();
    const quiet = answer === previous;
    previous = answer;
    const s = await readPage(page);
    return { ok: quiet && canon(s.top10).join() === answer, s, answer };
  }, { timeoutMs: 40000, intervalMs: 1000 });
  assert.ok(r.ok, `page ${JSON.stringify(r.s.top10)} vs SQL ${r.answer}`);
  assertConsistent(r.s, 'quiet');
  assert.equal(fake.stats().emitted, 5000, 'the load generator ran to its end');
});

test('server errors and protocol violations appear in the page, not only the console', async () => {
  await post('/fake/error?message=' + encodeURIComponent('disk on fire (test)'));
  await post('/fake/bad-update');
  const r = await poll(async () => {
    const s = await readPage(page);
    const shown = s.log.filter((l) => /log-error/.test(l.level)).map((l) => l.text);
    const ok = shown.some((t) => /server error: disk on fire \(test\)/.test(t)) && shown.some((t) => /protocol error: .*nobody/.test(t));
    return { ok, shown };
  }, { timeoutMs: 5000, intervalMs: 100 });
  assert.ok(r.ok, `errors shown: ${JSON.stringify(r.shown)}`);
  // The violated stream restarts and comes back whole.
  await waitLive();
  const s = await readPage(page);
  assertConsistent(s, 'after a protocol violation');
  assert.deepEqual(problems.pageErrors, [], 'uncaught page errors');
  assert.deepEqual(problems.foreignRequests, [], 'requests to other origins');
});
