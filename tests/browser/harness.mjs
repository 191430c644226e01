// Shared pieces of the browser tests: launching Debian's Chromium, reading what the page shows,
// and asking the server's SQL endpoint for the truth.
import { chromium } from 'playwright-core';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const OUT_DIR = join(dirname(fileURLToPath(import.meta.url)), 'out');

/** Never a downloaded browser: the system Chromium, headless, with its network chatter off. */
export const LAUNCH_OPTIONS = {
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
};

export async function launch() {
  await mkdir(OUT_DIR, { recursive: true });
  return chromium.launch(LAUNCH_OPTIONS);
}

/**
 * Opens the page and records what a person would miss: page errors, console errors, and any
 * request leaving the viewcast origin (the page must work offline).
 */
export async function openPage(browser, base, path = '/') {
  const page = await browser.newPage({ viewport: { width: 1280, height: 820 } });
  const problems = { pageErrors: [], consoleErrors: [], foreignRequests: [] };
  const origin = new URL(base).origin;
  page.on('pageerror', (err) => problems.pageErrors.push(String(err)));
  page.on('console', (msg) => msg.type() === 'error' && problems.consoleErrors.push(msg.text()));
  page.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(origin) && !url.startsWith(origin.replace(/^http/, 'ws')) && !url.startsWith('data:')) {
      problems.foreignRequests.push(url);
    }
  });
  // Every frame the page's WebSockets send and receive, for protocol checks.
  const frames = [];
  page.on('websocket', (ws) => {
    const socket = frames.filter((f) => f.dir === 'open').length;
    frames.push({ dir: 'open', socket, url: ws.url() });
    const record = (dir) => (f) => {
      try {
        frames.push({ dir, socket, msg: JSON.parse(f.payload), at: Date.now() });
      } catch {
        frames.push({ dir, socket, raw: String(f.payload) });
      }
    };
    ws.on('framesent', record('sent'));
    ws.on('framereceived', record('received'));
    ws.on('close', () => frames.push({ dir: 'close', socket }));
  });
  await page.goto(`${base}${path}`);
  return { page, problems, frames };
}

/** Everything the page (demo, or the dashboard's featured panel) shows for counter and top10. */
export function readPage(page) {
  return page.evaluate(() => {
    const s = window.viewcastState ?? { counter: null, top10: [], chartRows: [] };
    const view = window.viewcastChart;
    // Bars as rendered: the items of every rect mark in Vega's scenegraph.
    const bars = [];
    const walk = (mark) => {
      if (!mark || !mark.items) return;
      if (mark.marktype === 'rect' && mark.role === 'mark') {
        for (const item of mark.items) bars.push([item.datum.user, item.datum.count]);
        return;
      }
      for (const item of mark.items) for (const child of item.items || []) walk(child);
    };
    if (view) walk(view.scenegraph().root);
    const table = [...document.querySelectorAll('#top10-body tr')]
      .map((tr) => [tr.children[1].textContent, tr.children[2].textContent.replace(/,/g, '')])
      .filter(([user]) => user !== '')
      .map(([user, count]) => [user, Number(count)]);
    return {
      counter: s.counter,
      counterText: document.getElementById('counter').textContent,
      top10: s.top10,
      chartRows: s.chartRows,
      vegaData: view ? view.data('top10').map((t) => [t.user, t.count]) : [],
      sceneBars: bars,
      svgBars: document.querySelectorAll('#chart svg g.mark-rect.role-mark path').length,
      table,
      status: document.getElementById('status-text').textContent,
      log: [...document.querySelectorAll('#log li')].map((li) => ({ level: li.className, text: li.textContent })),
    };
  });
}

/** Runs SQL; returns every result ({col_names, rows} | {ok} | {error}). */
export async function sqlAll(base, query) {
  const res = await fetch(`${base}/api/sql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST /api/sql ${JSON.stringify(query)} -> ${res.status}: ${text}`);
  return JSON.parse(text).results;
}

/** The base URL under test: VIEWCAST_URL, or a fake server started with `fakeOptions`. */
export async function target(fakeOptions, startFakeServer) {
  if (process.env.VIEWCAST_URL) return { base: process.env.VIEWCAST_URL.replace(/\/+$/, ''), fake: null };
  const fake = await startFakeServer(fakeOptions);
  console.log(`# VIEWCAST_URL not set; using the fake server at ${fake.url}`);
  return { base: fake.url, fake };
}

/** Runs one SQL query; returns {col_names, rows} of its single result. */
export async function sql(base, query) {
  const res = await fetch(`${base}/api/sql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST /api/sql ${JSON.stringify(query)} -> ${res.status}: ${text}`);
  const body = JSON.parse(text);
  if (!body.results || body.results.length !== 1) throw new Error(`unexpected /api/sql answer: ${text}`);
  return body.results[0];
}

/** A multiset of rows in a canonical order, for equality checks and readable diffs. */
export function canon(rows) {
  return rows.map((r) => JSON.stringify(r)).sort();
}

/** Rows in one multiset and not the other, both ways. */
export function multisetDiff(expected, actual) {
  const left = canon(expected);
  const right = canon(actual);
  const missing = [];
  const extra = [...right];
  for (const r of left) {
    const i = extra.indexOf(r);
    if (i >= 0) extra.splice(i, 1);
    else missing.push(r);
  }
  return { missing, extra };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function poll(probe, { timeoutMs, intervalMs = 250 }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value.ok || Date.now() >= deadline) return value;
    await sleep(intervalMs);
  }
}
