// The end-to-end demo in a real browser: the Wikipedia demo page (/demo/wikipedia), opened
// mid-stream, must end up showing exactly what SQL says the views hold once the load generator
// has stopped; its sliding-window chart must then follow the view as seconds leave the window
// with no new events.
//
// VIEWCAST_URL=http://127.0.0.1:PORT points it at a running viewcast whose load generator stops
// after a fixed number of events. Without it, the test starts tests/browser/fake-server.mjs.
// VIEWCAST_QUIET_TIMEOUT_MS bounds the wait for page and SQL to agree (default 90 s).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startFakeServer } from './fake-server.mjs';
import { OUT_DIR, launch, openPage, readPage, sql, canon, multisetDiff, poll } from './harness.mjs';

const QUIET_TIMEOUT_MS = Number(process.env.VIEWCAST_QUIET_TIMEOUT_MS || 90000);

let base;
let fake;
let browser;
let page;
let problems;

before(async () => {
  if (process.env.VIEWCAST_URL) {
    base = process.env.VIEWCAST_URL.replace(/\/+$/, '');
  } else {
    // About 20 s of events at 300/s, so the page joins mid-stream and the end is quiet.
    fake = await startFakeServer({ events: 6000, rate: 300 });
    base = fake.url;
    console.log(`# VIEWCAST_URL not set; using the fake server at ${base}`);
  }
  browser = await launch();
  ({ page, problems } = await openPage(browser, base, '/demo/wikipedia'));
});

after(async () => {
  if (page && !page.isClosed()) await page.screenshot({ path: join(OUT_DIR, 'demo-last.png') }).catch(() => {});
  await browser?.close();
  await fake?.close();
});

test('page connects and shows the counter', async () => {
  const state = await poll(async () => {
    const s = await readPage(page);
    return { ok: s.status === 'Live' && s.counter !== null, s };
  }, { timeoutMs: 20000 });
  assert.equal(state.s.status, 'Live', `status indicator: ${JSON.stringify(state.s.log.slice(0, 5))}`);
  assert.notEqual(state.s.counter, null, 'counter has a value');
  assert.equal(state.s.counterText.replace(/,/g, ''), String(state.s.counter), 'the counter shown is the state');
});

test('counter grows while events flow', async () => {
  const first = (await readPage(page)).counter;
  const later = await poll(async () => {
    const s = await readPage(page);
    return { ok: s.counter > first, counter: s.counter };
  }, { timeoutMs: 10000 });
  assert.ok(later.counter > first, `counter stayed at ${first} for 10 s (is the load generator still running?)`);
});

test('chart shows 10 bars', async () => {
  const state = await poll(async () => {
    const s = await readPage(page);
    return { ok: s.chartRows.length === 10 && s.sceneBars.length === 10 && s.svgBars === 10, s };
  }, { timeoutMs: 30000 });
  const { chartRows, sceneBars, svgBars } = state.s;
  assert.equal(chartRows.length, 10, `chart data rows: ${JSON.stringify(chartRows)}`);
  assert.equal(sceneBars.length, 10, `bar items in the scenegraph: ${JSON.stringify(sceneBars)}`);
  assert.equal(svgBars, 10, 'bar paths in the SVG');
});

test('page equals SQL once the stream is quiet', async () => {
  // Quiet: SQL gives the same answers at two polls a second apart, and the page agrees with them.
  let previousAnswer = null;
  const result = await poll(async () => {
    const [top10, counter] = await Promise.all([sql(base, 'SELECT * FROM top10'), sql(base, 'SELECT * FROM counter')]);
    const answer = JSON.stringify([canon(top10.rows), counter.rows]);
    const quiet = answer === previousAnswer;
    previousAnswer = answer;
    const s = await readPage(page);
    const userCol = top10.col_names.indexOf('user');
    const countCol = top10.col_names.indexOf('count');
    const expected = top10.rows.map((r) => [r[userCol], Number(r[countCol])]);
    const expectedCounter = counter.rows.length ? Number(counter.rows[0][counter.col_names.indexOf('count')]) : null;
    const views = {
      'viewcastState.top10': s.top10,
      'viewcastState.chartRows': s.chartRows,
      "vega view.data('top10')": s.vegaData,
      'scenegraph bars': s.sceneBars,
      'table rows': s.table,
    };
    const mismatched = Object.entries(views).filter(([, rows]) => canon(rows).join() !== canon(expected).join());
    const ok = quiet && mismatched.length === 0 && s.svgBars === expected.length && s.counter === expectedCounter;
    return { ok, quiet, s, expected, expectedCounter, mismatched };
  }, { timeoutMs: QUIET_TIMEOUT_MS, intervalMs: 1000 });

  await page.screenshot({ path: join(OUT_DIR, 'demo.png'), fullPage: true });
  if (process.env.VIEWCAST_SCREENSHOTS) {
    // The README's picture: VIEWCAST_SCREENSHOTS=1 refreshes docs/screenshots/.
    const docs = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));
    await mkdir(docs, { recursive: true });
    await page.screenshot({ path: join(docs, 'demo.png'), fullPage: true });
  }

  if (!result.ok) {
    const lines = [`page and SQL never agreed at a quiet moment within ${QUIET_TIMEOUT_MS} ms (SQL quiet at the end: ${result.quiet})`];
    lines.push(`SQL top10: ${JSON.stringify(result.expected)}`);
    for (const [name, rows] of result.mismatched) {
      const { missing, extra } = multisetDiff(result.expected, rows);
      lines.push(`${name}: missing ${missing.join(' ') || '-'}; extra ${extra.join(' ') || '-'}`);
    }
    lines.push(`SVG bar paths: ${result.s.svgBars}; counter page=${result.s.counter} sql=${result.expectedCounter}`);
    lines.push(`page log: ${JSON.stringify(result.s.log.slice(0, 8))}`);
    assert.fail(lines.join('\n'));
  }
  // Sorted descending, as the page promises.
  const counts = result.s.top10.map((r) => r[1]);
  assert.deepEqual(counts, [...counts].sort((a, b) => b - a), 'viewcastState.top10 is sorted by count, descending');
});

/** What the sliding-window panel shows: its Vega data, scenegraph bars, SVG bars and total. */
function readWindow(page) {
  return page.evaluate(() => {
    const s = window.viewcastWindow ?? { rows: [], total: null, ts: null };
    const view = window.viewcastWindowChart;
    let sceneBars = 0;
    const walk = (mark) => {
      if (!mark || !mark.items) return;
      if (mark.marktype === 'rect' && mark.role === 'mark') {
        sceneBars += mark.items.length;
        return;
      }
      for (const item of mark.items) for (const child of item.items || []) walk(child);
    };
    if (view) walk(view.scenegraph().root);
    return {
      rows: s.rows,
      total: s.total,
      ts: s.ts,
      totalText: document.getElementById('minute-total').textContent,
      sceneBars,
      svgBars: document.querySelectorAll('#minute-chart svg g.mark-rect.role-mark path').length,
      hidden: document.getElementById('minute-card').hidden,
    };
  });
}

test('sliding-window chart equals SQL, and its bars leave with no new events', async (t) => {
  const { views } = await (await fetch(`${base}/api/v1/views`)).json();
  if (!views.some((v) => v.name === 'editslastminute')) {
    if (process.env.VIEWCAST_URL) assert.fail('the demo has no editslastminute view');
    t.skip('the fake server has no temporal view');
    return;
  }
  const QUERY = 'SELECT second, edits FROM editslastminute';
  const agree = async () => {
    const answer = await sql(base, QUERY);
    const expected = answer.rows.map((r) => [Number(r[0]), Number(r[1])]);
    const w = await readWindow(page);
    const total = expected.reduce((a, r) => a + r[1], 0);
    const ok =
      canon(w.rows).join() === canon(expected).join() &&
      w.sceneBars === expected.length &&
      w.svgBars === expected.length &&
      w.total === total &&
      w.totalText.replace(/,/g, '') === `${total} edits`;
    return { ok, expected, w };
  };
  const describe = (r) => {
    const { missing, extra } = multisetDiff(r.expected, r.w.rows);
    return `SQL ${r.expected.length} seconds; page ${JSON.stringify({ ...r.w, rows: undefined })}; missing ${missing.join(' ') || '-'}; extra ${extra.join(' ') || '-'}`;
  };

  // The page agrees with SQL once the load generator has stopped (the window is then still full).
  const first = await poll(async () => {
    const r = await agree();
    return { ...r, ok: r.ok && r.expected.length > 0 };
  }, { timeoutMs: QUIET_TIMEOUT_MS, intervalMs: 500 });
  assert.ok(first.ok, `the window chart never equaled SQL: ${describe(first)}`);
  assert.equal(first.w.hidden, false, 'the panel is shown');
  const counter = await sql(base, 'SELECT * FROM counter');

  // No new events arrive; as time passes the oldest seconds leave the view and the chart follows.
  const later = await poll(async () => {
    const r = await agree();
    return { ...r, ok: r.ok && r.expected.length < first.expected.length };
  }, { timeoutMs: QUIET_TIMEOUT_MS, intervalMs: 200 });
  await page.screenshot({ path: join(OUT_DIR, 'demo-window.png'), fullPage: true });
  assert.ok(later.ok, `no second left the window, or the chart did not follow: ${describe(later)}`);
  const gone = first.expected.filter(([s]) => !later.expected.some(([s2]) => s2 === s)).map(([s]) => s);
  const oldest = Math.min(...first.expected.map(([s]) => s));
  assert.ok(gone.includes(oldest), `the oldest second ${oldest} left first (gone: ${gone})`);
  assert.deepEqual((await sql(base, 'SELECT * FROM counter')).rows, counter.rows, 'no events arrived meanwhile');
});

test('no page errors and no requests outside the server', () => {
  assert.deepEqual(problems.pageErrors, [], 'uncaught page errors');
  assert.deepEqual(problems.consoleErrors, [], 'console errors');
  assert.deepEqual(problems.foreignRequests, [], 'requests to other origins (the page must work offline)');
});
