// The Wikipedia demo page (/demo/wikipedia): the edit counter, the top-10 editors, and, when the
// catalog has them, edits per wiki (a view named like `editsperwiki`: a label and a count) and
// edits in the last minute (a view named like `editslastminute`: one number, drawn over time).
// Every panel is a subscription on one viewcast.js connection.
import { connect, listViews } from './viewcast.js';
import {
  $, EventLog, watchConnection, mountWikipedia, logSubscription, embed, autoSpec, bindSeries, chartShape,
  formatTs, formatDuration, freshness, numberFormat, setText, STALE_AFTER_MS,
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
  { card: 'minute-card', chart: 'minute-chart', code: 'minute-view', pattern: /^edits_?(in_?the_?)?last_?minute$/i, kind: 'line' },
];

listViews(location.origin)
  .then((views) => {
    for (const want of OPTIONAL) {
      const v = views.find((x) => want.pattern.test(x.name) && x.streamable);
      const shape = v && chartShape(v.columns);
      if (!v || !shape || shape.kind !== want.kind) continue;
      $(want.card).hidden = false;
      setText($(want.code), v.name);
      const sub = logSubscription(client.subscribe(v.name), log);
      subs.push(sub);
      embed($(want.chart), autoSpec(shape, 160), log, `${v.name} chart`).then((view) => {
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
