// What a person needs besides correct numbers, in a real browser against a real server: every
// control reachable and usable with the keyboard, with a visible focus ring; readable contrast
// (WCAG AA) for every piece of text on the dashboard and the demo page; and no flicker or layout
// jumps while a view changes 20 times a second.
//
// VIEWCAST_URL=http://127.0.0.1:PORT (a real viewcast running the demo) is required: the last
// test creates its own fast load generator with SQL, which the fake server cannot run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { OUT_DIR, launch, openPage, poll, sleep, sqlAll } from './harness.mjs';

const base = (process.env.VIEWCAST_URL || '').replace(/\/+$/, '');
let browser;

before(async () => {
  assert.ok(base, 'VIEWCAST_URL must point at a real viewcast (tests/browser/run.sh sets it)');
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** Waits until the dashboard is live and lists `view`. */
async function dashboardReady(page, view) {
  const r = await poll(async () => {
    const status = await page.$eval('#status-text', (el) => el.textContent);
    const listed = await page.$(`#views tr[data-view="${view}"] button`);
    return { ok: status === 'Live' && !!listed, status };
  }, { timeoutMs: 20000 });
  assert.ok(r.ok, `dashboard not live with ${view} listed (status ${r.status})`);
}

/** Describes the focused element and whether it shows a focus indicator. */
function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const cs = getComputedStyle(el);
    const ring = (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) || cs.boxShadow !== 'none';
    const r = el.getBoundingClientRect();
    return {
      tag: el.tagName.toLowerCase(),
      id: el.id,
      label: el.getAttribute('aria-label') || el.textContent.trim().slice(0, 40),
      ring,
      visible: r.width > 0 && r.height > 0,
    };
  });
}

test('keyboard: every control is reachable with Tab, shows a focus ring, and works with Enter', async () => {
  const { page, problems } = await openPage(browser, base, '/');
  await dashboardReady(page, 'top10');
  const seen = [];
  for (let i = 0; i < 120; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    if (!f) continue;
    seen.push(f);
    if (f.id === 'sql-run') break;
  }
  const names = seen.map((f) => f.id || f.label);
  for (const want of ['Skip to content', 'Open view top10', 'Open view counter', 'sql-input', 'sql-run']) {
    assert.ok(names.includes(want), `Tab never reached "${want}"; reached ${JSON.stringify(names)}`);
  }
  const unringed = seen.filter((f) => !f.ring || !f.visible);
  assert.deepEqual(unringed, [], 'every focused control is visible and has a focus indicator');

  // Enter on a view's button opens it live; its column headers sort with the keyboard.
  await page.focus('#views tr[data-view="top10"] button');
  await page.keyboard.press('Enter');
  const open = await poll(async () => {
    const d = await page.evaluate(() => ({ view: window.viewcastDashboard.detail?.view, state: window.viewcastDashboard.detail?.sub.state }));
    return { ok: d.view === 'top10' && d.state === 'live', d };
  }, { timeoutMs: 15000 });
  assert.ok(open.ok, `Enter did not open top10: ${JSON.stringify(open.d)}`);
  await page.focus('#detail-table thead th:nth-child(2) button');
  await page.keyboard.press('Enter');
  const sorted = await page.$eval('#detail-table thead th:nth-child(2)', (th) => th.getAttribute('aria-sort'));
  assert.ok(['ascending', 'descending'].includes(sorted), `Enter on a header sorts (aria-sort=${sorted})`);

  // Ctrl+Enter in the SQL box runs the statement; the result is announced in place.
  await page.focus('#sql-input');
  await page.keyboard.type('SELECT count(*) FROM top10');
  await page.keyboard.press('Control+Enter');
  const ran = await poll(async () => {
    const text = await page.$eval('#sql-result', (el) => el.textContent);
    return { ok: /SELECT 1/.test(text), text };
  }, { timeoutMs: 10000 });
  assert.ok(ran.ok, `Ctrl+Enter did not run the query: ${ran.text}`);
  assert.deepEqual(problems.pageErrors, []);
  await page.close();
});

/** Every visible piece of DOM text whose contrast with its background is below WCAG AA. */
function contrastFailures(page) {
  return page.evaluate(() => {
    const parse = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const over = (top, under) => ({
      r: top.r * top.a + under.r * (1 - top.a),
      g: top.g * top.a + under.g * (1 - top.a),
      b: top.b * top.a + under.b * (1 - top.a),
      a: 1,
    });
    // The opaque colour behind an element: its own and its ancestors' backgrounds, composed.
    const background = (el) => {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        const bg = parse(getComputedStyle(e).backgroundColor);
        if (bg && bg.a > 0) {
          layers.push(bg);
          if (bg.a >= 1) break;
        }
      }
      let color = { r: 255, g: 255, b: 255, a: 1 };
      for (const layer of layers.reverse()) color = over(layer, color);
      return color;
    };
    const lum = ({ r, g, b }) => {
      const ch = (v) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
    };
    const ratio = (a, b) => {
      const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const failures = [];
    let checked = 0;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el || el.closest('svg, script, style, [hidden], .visually-hidden')) continue;
      // WCAG 1.4.3 exempts inactive controls.
      if (el.closest(':disabled')) continue;
      const cs = getComputedStyle(el);
      const rect = el.getBoundingClientRect();
      if (cs.visibility !== 'visible' || Number(cs.opacity) === 0 || rect.width === 0 || rect.height === 0) continue;
      // Off the page on purpose (the skip link until focused); scrolled-away text still counts.
      if (rect.bottom + window.scrollY < 0 || rect.right + window.scrollX < 0) continue;
      checked++;
      const fg = over(parse(cs.color), background(el));
      const size = parseFloat(cs.fontSize);
      const bold = Number(cs.fontWeight) >= 700;
      const large = size >= 24 || (bold && size >= 18.66);
      const need = large ? 3 : 4.5;
      const got = ratio(fg, background(el));
      if (got < need) failures.push({ text: n.textContent.trim().slice(0, 30), tag: el.tagName, cls: el.className, ratio: Number(got.toFixed(2)), need });
    }
    return { checked, failures };
  });
}

test('contrast: all text on the dashboard and the demo page meets WCAG AA', async () => {
  const { page } = await openPage(browser, base, '/');
  await dashboardReady(page, 'top10');
  // Show as much of the page as possible: an open view and an SQL error.
  await page.click('#views tr[data-view="top10"] button');
  await page.fill('#sql-input', 'SELECT * FROM no_such_view');
  await page.click('#sql-run');
  await page.waitForSelector('#sql-result .error-box', { timeout: 10000 });
  const dash = await contrastFailures(page);
  assert.ok(dash.checked > 40, `checked only ${dash.checked} text nodes on the dashboard`);
  assert.deepEqual(dash.failures, [], `dashboard text below WCAG AA (${dash.checked} checked)`);
  await page.goto(`${base}/demo/wikipedia`);
  await page.waitForFunction(() => window.viewcastState && window.viewcastState.counter !== null, null, { timeout: 20000 });
  const demo = await contrastFailures(page);
  assert.ok(demo.checked > 10, `checked only ${demo.checked} text nodes on the demo page`);
  assert.deepEqual(demo.failures, [], `demo page text below WCAG AA (${demo.checked} checked)`);
  await page.close();
});

test('no flicker or layout jumps while a view changes 20 times a second', async () => {
  // A view over its own fast source: with 50 ms ticks it changes at every tick.
  const suffix = Date.now().toString(36);
  const view = `a11y_wikis_${suffix}`;
  const results = await sqlAll(
    base,
    `CREATE SOURCE a11y_src_${suffix} FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 2000, SEED 11, MAX EVENTS 40000);
     CREATE MATERIALIZED VIEW ${view} AS
       SELECT val->>'wiki' AS wiki, count(*) FROM (SELECT data::jsonb AS val FROM a11y_src_${suffix}) GROUP BY 1`,
  );
  assert.ok(results.every((r) => !r.error), `setup failed: ${JSON.stringify(results)}`);
  const { page, problems, frames } = await openPage(browser, base, '/');
  await dashboardReady(page, view);
  await page.click(`#views tr[data-view="${view}"] button`);
  await page.waitForFunction((v) => window.viewcastDashboard.detail?.view === v && window.viewcastDashboard.detail?.sub.state === 'live', view, { timeout: 15000 });
  await sleep(1000); // first render and chart layout settle

  // Sample for 4 s, every animation frame: the position and size of each panel, whether the
  // chart's drawing surface is still the same element, and whether the table ever shows no rows.
  const received = () => frames.filter((f) => f.dir === 'received' && f.msg?.type === 'update').length;
  const updatesBefore = received();
  const samples = await page.evaluate(async () => {
    const boxes = ['#detail-table', '#detail-chart', '#featured', '.catalog', '.sql'];
    const surface = () => document.querySelector('#detail-chart canvas, #detail-chart svg');
    const first = surface();
    if (first) first.__marker = true;
    let shift = 0;
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (!e.hadRecentInput) shift += e.value;
    });
    observer.observe({ type: 'layout-shift' });
    const out = { rects: [], emptyTable: 0, surfaceReplaced: 0, frames: 0 };
    const end = performance.now() + 4000;
    await new Promise((resolve) => {
      const step = () => {
        out.frames++;
        out.rects.push(boxes.map((sel) => {
          const r = document.querySelector(sel)?.getBoundingClientRect();
          return r ? [Math.round(r.x), Math.round(r.y), Math.round(r.width), Math.round(r.height)] : null;
        }));
        if (document.querySelectorAll('#detail-table tbody tr:not(.empty)').length === 0) out.emptyTable++;
        if (first && surface() !== first) out.surfaceReplaced++;
        if (performance.now() < end) requestAnimationFrame(step);
        else resolve();
      };
      requestAnimationFrame(step);
    });
    observer.disconnect();
    out.shift = shift;
    out.boxes = boxes;
    return out;
  });
  const updates = received() - updatesBefore;
  await page.screenshot({ path: join(OUT_DIR, 'a11y-fast-view.png') });
  // 20 changing timestamps a second for the new view (plus the other views' updates); allow for
  // a loaded machine, but the page must really have been busy.
  assert.ok(updates >= 40, `only ${updates} updates arrived in 4 s: the test did not exercise fast changes`);
  assert.ok(samples.frames >= 20, `only ${samples.frames} animation frames sampled`);
  const moved = samples.boxes.filter((_, i) => {
    const seen = new Set(samples.rects.map((r) => JSON.stringify(r[i])));
    return seen.size > 1;
  });
  assert.deepEqual(moved, [], `panels moved or resized while the view changed: ${JSON.stringify(moved)}`);
  assert.equal(samples.emptyTable, 0, 'the live table never blanks between updates');
  assert.equal(samples.surfaceReplaced, 0, 'the chart is patched in place, never re-created');
  assert.ok(samples.shift < 0.01, `cumulative layout shift ${samples.shift} while updating`);
  assert.deepEqual(problems.pageErrors, []);
  await page.close();
});
