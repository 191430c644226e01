// The Wikipedia demo page (/demo/wikipedia): the edit counter, the top-10 editors, and, when the
// catalog has them, edits per wiki (a view named like `editsperwiki`: a label and a count) and
// edits in the last minute (a view named like `editslastminute`: a sliding window of (second,
// edits) rows kept by an mz_now() temporal filter, drawn as bars per second with their total).
// Every panel is a subscription on one viewcast.js connection. For tests, the window's Vega view is
// `window.viewcastWindowChart` and what it shows `window.viewcastWindow` ({ts, rows, total}).

import { connect, listViews } from './viewcast.js';
import {
  $, EventLog, watchConnection, mountWikipedia, logSubscription, embed, autoSpec, bindSeries, chartShape,
  windowSpec, formatTs, formatDuration, freshness, numberFormat, setText, STALE_AFTER_MS,
} from './panels.js';
import { bindVega } from './viewcast.js';

const log = new EventLog($('log'));
const client = connect(location.origin);
window.viewcastClient = client;
const subs = [];
const { counter, top10 } = mountWikipedia(client, log);
subs.push(counter, top10);
watchConnection(client, log, () => subs);

/** Views the demo draws when they exist: [card id, chart id, code id, name pattern, shape]. */
const OPTIONAL = [
  { card: 'wiki-card', chart: 'wiki-chart', code: 'wiki-view', pattern: /^edits_?per_?wiki$/i, kind: 'bars' },
  { card: 'minute-card', chart: 'minute-chart', code: 'minute-view', pattern: /^edits_?(in_?the_?)?last_?minute$/i, kind: 'window' },
];

/** A sliding-window view: a `second` column and a numeric one. */
function windowShape(columns) {
  const second = columns.find((c) => c.name === 'second');
  const value = columns.find((c) => c !== second && /int|numeric|float|double|real/i.test(c.type));
  return second && value && columns.length === 2 ? { kind: 'window', second: second.name, value: value.name } : null;
}

function mountWindow(want, v, shape) {
  const sub = logSubscription(client.subscribe(v.name), log);
  subs.push(sub);
  const state = { ts: null, rows: [], total: null };
  window.viewcastWindow = state;
  const totalOf = () => {
    const i = sub.column(shape.value);
    return sub.rows().reduce((sum, r) => sum + Number(r[i]), 0);
  };
  sub.onChange(() => {
    state.total = totalOf();
    setText($('minute-total'), `${numberFormat.format(state.total)} edits`);
  });
  embed($(want.chart), windowSpec(shape.second, shape.value, 140), log, `${v.name}: ${shape.value} per second, last minute`).then((view) => {
    if (!view) return;
    window.viewcastWindowChart = view;
    bindVega(view, 'rows', sub, {
      onRender: () => {
        state.rows = view.data('rows').map((t) => [Number(t[shape.second]), Number(t[shape.value])]);
        state.ts = sub.ts;
      },
    });
  });
}

listViews(location.origin)
  .then((views) => {
    for (const want of OPTIONAL) {
      const v = views.find((x) => want.pattern.test(x.name) && x.streamable);
      const shape = v && (want.kind === 'window' ? windowShape(v.columns) : chartShape(v.columns));
      if (!v || !shape || shape.kind !== want.kind) continue;
      $(want.card).hidden = false;
      setText($(want.code), v.name);
      if (shape.kind === 'window') {
        mountWindow(want, v, shape);
        continue;
      }
      const sub = logSubscription(client.subscribe(v.name), log);
      subs.push(sub);
      embed($(want.chart), autoSpec(shape, 160, 10), log, `${v.name} chart`).then((view) => {
        if (!view) return;
        if (shape.kind === 'bars') bindVega(view, 'rows', sub);
        else bindSeries(view, sub, shape.value);
      });
    }
  })
  .catch((err) => log.add('catalog', `cannot list views: ${err.message}`, 'error'));

const STATE_LABEL = { pending: 'connecting', live: 'live', resyncing: 'resyncing', reconnecting: 'reconnecting', failed: 'failed', closed: 'closed' };
function renderStreams() {
  const body = $('streams');
  for (const s of subs) {
    let tr = body.querySelector(`tr[data-view="${CSS.escape(s.view)}"]`);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.view = s.view;
      tr.innerHTML = '<td class="v"></td><td><span class="pill"></span></td><td class="ts"></td><td class="fresh"></td><td class="num msgs"></td>';
      tr.querySelector('.v').textContent = s.view;
      body.appendChild(tr);
    }
    const pill = tr.querySelector('.pill');
    setText(pill, STATE_LABEL[s.state]);
    pill.className = `pill pill-${s.state}`;
    setText(tr.querySelector('.ts'), formatTs(s.ts));
    const f = freshness(s.ts);
    const cell = tr.querySelector('.fresh');
    setText(cell, formatDuration(f));
    cell.classList.toggle('late', f !== null && f > STALE_AFTER_MS);
    setText(tr.querySelector('.msgs'), numberFormat.format(s.stats.updates));
  }
}
setInterval(renderStreams, 250);
renderStreams();
window.addEventListener('error', (e) => log.add('page', e.message, 'error'));
