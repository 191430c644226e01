// The dashboard (/) in a real browser: the catalog list, a live table equal to SQL, a view created
// in the SQL box, the featured Wikipedia panel, and a dropped connection that resumes (subscribe
// with `since`, no snapshot, no duplicate or missing timestamp) without reloading the page.
//
// VIEWCAST_URL=http://127.0.0.1:PORT runs it against a real viewcast running the demo (its load
// generator must stop after a fixed number of events, and the test must start while events flow).
// Without it, the test starts tests/browser/fake-server.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startFakeServer } from './fake-server.mjs';
import { OUT_DIR, launch, openPage, readPage, sql, canon, poll, sleep, target } from './harness.mjs';

const QUIET_TIMEOUT_MS = Number(process.env.VIEWCAST_QUIET_TIMEOUT_MS || 90000);
const DOCS_SCREENSHOTS = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));
const DEMO_VIEWS = ['counter', 'top10'];

let base;
let fake;
let browser;
let page;
let problems;
let frames;

before(async () => {
  // About 35 s of events at 300/s: long enough to create a view and reconnect while they flow.
  ({ base, fake } = await target({ events: 10500, rate: 300, seed: 5 }, startFakeServer));
  browser = await launch();
  ({ page, problems, frames } = await openPage(browser, base, '/'));
});

after(async () => {
  if (page && !page.isClosed()) await page.screenshot({ path: join(OUT_DIR, 'dashboard-last.png') }).catch(() => {});
  await browser?.close();
  await fake?.close();
});

/** The text of every cell of the open view's live table, across all its pages. */
async function detailCells() {
  return page.evaluate(async () => {
    const d = window.viewcastDashboard.detail;
    const numeric = [...document.querySelectorAll('#detail-table thead th')].map((th) => th.classList.contains('num'));
    const out = [];
    const first = document.querySelector('#detail-table .pager button');
    while (!first.disabled) first.click(); // back to page 1
    for (;;) {
      // Rendering is batched per frame; force it so the DOM is current.
      d.table.render();
      for (const tr of document.querySelectorAll('#detail-table tbody tr:not(.empty)')) {
        out.push([...tr.cells].map((td, i) => (numeric[i] ? td.textContent.replace(/,/g, '') : td.textContent)));
      }
      const next = document.querySelectorAll('#detail-table .pager button')[1];
      if (next.disabled) break;
      next.click();
    }
    return { cells: out, ts: d.sub.ts };
  });
}

/** SQL rows as the table shows them: NULL for null, numbers without separators. */
const asCells = (rows) => rows.map((r) => r.map((v) => (v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v))));

async function openView(name) {
  await page.click(`#views tr[data-view="${name}"] button`);
  const r = await poll(async () => {
    const s = await page.evaluate(() => ({ view: window.viewcastDashboard.detail?.view, state: window.viewcastDashboard.detail?.sub.state }));
    return { ok: s.view === name && s.state === 'live', s };
  }, { timeoutMs: 15000 });
  assert.ok(r.ok, `the ${name} view did not open live: ${JSON.stringify(r.s)}`);
}

test('the dashboard lists the demo views and goes live', async () => {
  const r = await poll(async () => {
    const s = await readPage(page);
    const listed = await page.$$eval('#views tr', (trs) => trs.map((tr) => [tr.dataset.view, tr.cells[2].textContent]));
    return { ok: s.status === 'Live' && DEMO_VIEWS.every((v) => listed.some(([n]) => n === v)), s, listed };
  }, { timeoutMs: 20000 });
  assert.ok(r.ok, `status ${r.s.status}; listed ${JSON.stringify(r.listed)}`);
  const counterRow = r.listed.find(([n]) => n === 'counter');
  assert.equal(counterRow[1], '1', 'counter has one row');
  // Keyboard: every view's open button is reachable and labelled.
  const labels = await page.$$eval('#views button', (bs) => bs.map((b) => b.getAttribute('aria-label')));
  assert.ok(labels.includes('Open view top10'), `open buttons: ${JSON.stringify(labels)}`);
});

test('a view created in the SQL box shows up and changes', async () => {
  const name = `busy_${Date.now().toString(36)}`;
  await page.fill('#sql-input', `CREATE VIEW ${name} AS SELECT * FROM useredits WHERE count > 20`);
  await page.press('#sql-input', 'Control+Enter');
  const shown = await poll(async () => {
    const s = await page.evaluate(() => ({
      result: document.getElementById('sql-result').textContent,
      detail: window.viewcastDashboard.detail?.view,
      state: window.viewcastDashboard.detail?.sub.state,
    }));
    const listed = await page.$(`#views tr[data-view="${name}"]`);
    return { ok: !!listed && s.detail === name && s.state === 'live', s };
  }, { timeoutMs: 15000 });
  assert.ok(shown.ok, `new view not listed and open: ${JSON.stringify(shown.s)}`);
  assert.match(shown.s.result, /CREATE VIEW/);
  const first = await detailCells();
  const changed = await poll(async () => {
    const now = await detailCells();
    return { ok: now.ts > first.ts && canon(now.cells).join() !== canon(first.cells).join(), now };
  }, { timeoutMs: 15000 });
  assert.ok(changed.ok, `the new view's table did not change: ${JSON.stringify(first.cells)}`);

  // An error is shown in place, with the statement and a caret.
  await page.fill('#sql-input', 'SELECT * FROM no_such_view');
  await page.click('#sql-run');
  const err = await poll(async () => {
    const text = await page.$eval('#sql-result', (el) => el.textContent);
    return { ok: /no_such_view/.test(text) && (await page.$('#sql-result .error-box')) !== null, text };
  }, { timeoutMs: 5000 });
  assert.ok(err.ok, `SQL error not shown: ${err.text}`);
});

test('a dropped connection resumes every subscription from its last timestamp, without a reload', async () => {
  await openView('top10');
  await page.evaluate(() => (window.__notReloaded = true));
  await sleep(1500);
  const sockets = () => frames.filter((f) => f.dir === 'open').length;
  const before = sockets();
  if (fake) {
    const { dropped } = await fetch(`${fake.url}/fake/drop`, { method: 'POST' }).then((r) => r.json());
    assert.equal(dropped, 1, 'the page uses one connection');
  } else {
    await page.evaluate(() => window.viewcastClient.reconnect());
  }
  const r = await poll(async () => {
    const s = await readPage(page);
    return { ok: sockets() > before && s.status === 'Live', s };
  }, { timeoutMs: 20000 });
  assert.ok(r.ok, `did not come back: ${r.s.status}`);
  await sleep(2000); // updates flow after the resume
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was not reloaded');

  const socket = sockets() - 1;
  const resubscribed = frames.filter((f) => f.socket === socket && f.dir === 'sent' && f.msg?.type === 'subscribe');
  const views = resubscribed.map((f) => f.msg.view).sort();
  assert.ok(DEMO_VIEWS.every((v) => views.includes(v)), `resubscribed ${JSON.stringify(views)}`);
  for (const f of resubscribed) assert.equal(typeof f.msg.since, 'number', `resubscribe without since: ${JSON.stringify(f.msg)}`);

  // Follow each top10 subscription (the featured panel's and the open view's) across both sockets.
  const ids = (s) => new Map(frames.filter((f) => f.socket === s && f.dir === 'sent' && f.msg?.type === 'subscribe' && f.msg.view === 'top10').map((f) => [f.msg.id, f.msg]));
  const oldIds = ids(before - 1);
  const newIds = ids(socket);
  assert.ok(newIds.size >= 2, `two top10 subscriptions resumed: ${JSON.stringify([...newIds.values()])}`);
  for (const [id, msg] of newIds) {
    const received = frames.filter((f) => f.socket === socket && f.dir === 'received' && f.msg?.id === id);
    assert.ok(!received.some((f) => f.msg.type === 'snapshot' || f.msg.type === 'resync'), `resumed ${id} got a snapshot`);
    const updates = received.filter((f) => f.msg.type === 'update').map((f) => f.msg.ts);
    assert.ok(updates.length > 0, `no updates after resuming ${id}`);
    assert.ok(updates[0] > msg.since, `first update ${updates[0]} not after since ${msg.since}`);
    // The timestamps before the drop on the matching old subscription end exactly at `since`.
    const old = [...oldIds.keys()].map((oid) => frames.filter((f) => f.socket === before - 1 && f.dir === 'received' && f.msg?.id === oid && f.msg.ts !== undefined).map((f) => f.msg.ts));
    // Against a real server frames keep arriving on the old socket while the client closes it; the
    // client ignores those, so `since` is a ts it received there, not necessarily the very last one.
    assert.ok(old.some((ts) => ts.includes(msg.since)), `since ${msg.since} was never received before the drop`);
    const applied = old.find((ts) => ts.includes(msg.since));
    const all = [...applied.slice(0, applied.lastIndexOf(msg.since) + 1).filter((t, i, a) => i === 0 || t !== a[i - 1]), ...received.map((f) => f.msg.ts)];
    for (let i = 1; i < all.length; i++) assert.ok(all[i] >= all[i - 1], `ts went backwards: ${all[i - 1]} then ${all[i]}`);
    const updateTs = received.filter((f) => f.msg.type === 'update').map((f) => f.msg.ts);
    assert.equal(new Set(updateTs).size, updateTs.length, 'no timestamp twice');
    if (fake) {
      // The fake records every timestamp at which top10 changed: none may be missing.
      const stats = await fetch(`${fake.url}/fake/stats`).then((res) => res.json());
      const expected = stats.updateTs.top10.filter((t) => t > msg.since && t <= updateTs[updateTs.length - 1]);
      assert.deepEqual(updateTs, expected, 'every top10 timestamp after since, in order');
    }
  }
  assert.deepEqual(problems.pageErrors, [], 'uncaught page errors');
});

test('the open view and the featured panel equal SQL once the stream is quiet', async () => {
  await openView('top10');
  let previous = null;
  const r = await poll(async () => {
    const [top10, counter] = await Promise.all([sql(base, 'SELECT * FROM top10'), sql(base, 'SELECT * FROM counter')]);
    const answer = JSON.stringify([canon(asCells(top10.rows)), counter.rows]);
    const quiet = answer === previous;
    previous = answer;
    const cells = await detailCells();
    const s = await readPage(page);
    const u = top10.col_names.indexOf('user');
    const c = top10.col_names.indexOf('count');
    const expected = canon(top10.rows.map((row) => [row[u], Number(row[c])])).join();
    const tableOk = canon(cells.cells).join() === canon(asCells(top10.rows)).join();
    const featuredOk = [s.top10, s.chartRows, s.vegaData, s.sceneBars, s.table].every((rows) => canon(rows).join() === expected);
    const counterOk = s.counter === Number(counter.rows[0][0]);
    return { ok: quiet && tableOk && featuredOk && counterOk && s.svgBars === 10, quiet, tableOk, featuredOk, counterOk, s, cells, top10 };
  }, { timeoutMs: QUIET_TIMEOUT_MS, intervalMs: 1000 });
  assert.ok(r.ok, `quiet=${r.quiet} table=${r.tableOk} featured=${r.featuredOk} counter=${r.counterOk} bars=${r.s.svgBars}\n` +
    `page table ${JSON.stringify(r.cells.cells)}\nSQL ${JSON.stringify(r.top10.rows)}\nfeatured ${JSON.stringify(r.s.top10)}`);
  assert.equal(r.s.sceneBars.length, 10, 'the featured chart has 10 bars');

  // Sorting by a header button puts the largest count first.
  await page.click('#detail-table thead th:nth-child(2) button');
  const firstCount = await page.$eval('#detail-table tbody tr td:nth-child(2)', (td) => Number(td.textContent.replace(/,/g, '')));
  assert.equal(firstCount, Math.max(...r.top10.rows.map((row) => Number(row[r.top10.col_names.indexOf('count')]))));

  await page.screenshot({ path: join(OUT_DIR, 'dashboard.png'), fullPage: true });
  if (process.env.VIEWCAST_SCREENSHOTS) {
    await mkdir(DOCS_SCREENSHOTS, { recursive: true });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(DOCS_SCREENSHOTS, 'dashboard.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: 1180 } });
  }
});

test('no page errors and no requests outside the server', () => {
  assert.deepEqual(problems.pageErrors, [], 'uncaught page errors');
  assert.deepEqual(problems.consoleErrors, [], 'console errors');
  assert.deepEqual(problems.foreignRequests, [], 'requests to other origins (the page must work offline)');
  assert.equal(frames.filter((f) => f.dir === 'open').length, 2, 'one WebSocket, plus the one after the drop');
});
