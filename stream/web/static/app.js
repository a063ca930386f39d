// defacto dashboard: vanilla JavaScript drawing SVG from the server's JSON; nothing vendored,
// nothing loaded from elsewhere. Live updates come from server-sent events at /events.
(function () {
  'use strict';

  const SVGNS = 'http://www.w3.org/2000/svg';
  // ColorBrewer "YlGnBu" 7-class sequential palette (colour values only).
  const PALETTE = ['#ffffcc', '#c7e9b4', '#7fcdbb', '#41b6c4', '#1d91c0', '#225ea8', '#0c2c84'];
  // average hexagon area per H3 resolution, km²
  const H3_AREA_KM2 = [4357449, 609788, 86802, 12393, 1770, 252.9, 36.13, 5.161, 0.737, 0.105,
    0.015, 0.0021, 0.0003];
  const RETRY_MS = 5000;
  const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  const S = {
    state: null, geometry: null, cells: null, history: null,
    res: null, userRes: false, region: null, userRegion: false,
    shownKey: null, loading: false, again: false, retryTimer: null, flows: null, foreign: null, flowsKey: null,
    offsetMs: 0, fetchedAt: 0, view: null, fullView: null, viewMode: 'auto', proj: null, cellById: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---------- formatting ----------
  const MINUS = '\u2212';
  function fmtInt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return null;
    const s = nf.format(Math.round(v));
    return s.replace('-', MINUS);
  }
  function fmtSigned(v) {
    if (v === null || v === undefined) return null;
    const s = nf.format(Math.abs(Math.round(v)));
    return (v > 0 ? '+' : v < 0 ? MINUS : '') + s;
  }
  // A snapshot written by an older or newer worker may lack fields: missing figures are unknown
  // (null), a missing alert threshold is the default 10 %.
  const REGION_FIELDS = ['present', 'lo', 'hi', 'resident', 'resident_lo', 'resident_hi', 'registered',
    'gap', 'gap_ratio', 'gap_ratio_lo', 'gap_ratio_hi', 'devices', 'resident_devices'];
  function normalizeSnapshot(snap) {
    if (typeof snap.gap_threshold !== 'number' || !(snap.gap_threshold > 0)) snap.gap_threshold = 0.10;
    // warm-up: absent (an older worker) means warm
    const w = snap.warming_up && typeof snap.warming_up === 'object' ? snap.warming_up : {};
    snap.warming_up = { present: w.present === true, resident: w.resident === true,
      present_ready_at: w.present_ready_at || null, resident_ready_at: w.resident_ready_at || null };
    for (const rid of Object.keys(snap.regions || {})) {
      const r = snap.regions[rid];
      for (const f of REGION_FIELDS) if (r[f] === undefined) r[f] = null;
      if (typeof r.name !== 'string') r.name = rid;
    }
    return snap;
  }

  function fmtPct(r, digits) {
    if (r === null || r === undefined) return null;
    const d = digits === undefined ? 1 : digits;
    const x = r * 100;
    const s = Math.abs(x).toFixed(d);
    return (x > 0 && s !== (0).toFixed(d) ? '+' : x < 0 && s !== (0).toFixed(d) ? MINUS : '') + s + ' %';
  }
  function fmtTime(iso, seconds) {
    if (!iso) return '—';
    return iso.slice(0, seconds ? 19 : 16).replace('T', ' ') + ' UTC';
  }
  function fmtShortTime(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return `${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
  }
  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return `${s} s`;
    const m = Math.round(s / 60);
    if (m < 90) return `${m} min`;
    const h = s / 3600;
    if (h < 48) return `${h.toFixed(1)} h`;
    return `${(h / 24).toFixed(1)} days`;
  }
  function parseMs(iso) { const t = Date.parse(iso); return Number.isFinite(t) ? t : null; }
  function serverNow() { return Date.now() + S.offsetMs; }

  // ---------- DOM helpers ----------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function figure(v, cls) {
    // a population figure: number, or "suppressed" when null
    const s = fmtInt(v);
    if (s === null) return el('span', 'suppressed-text', 'suppressed');
    return el('span', cls || null, s);
  }

  // ---------- fetching ----------
  async function getJSON(url) {
    try {
      const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      return { ok: r.ok, status: r.status, body };
    } catch (e) {
      return { ok: false, status: 0, body: { error: 'the dashboard server does not answer (' + e.message + ')' } };
    }
  }

  function setBanner(kind, text) {
    const b = $('banner');
    if (!kind) { b.hidden = true; b.className = 'banner'; b.textContent = ''; return; }
    b.hidden = false;
    b.className = 'banner ' + kind;
    b.textContent = text;
  }
  function setConn(kind, text) {
    const c = $('conn');
    c.className = 'pill pill-' + kind;
    c.textContent = text;
  }
  function scheduleRetry() {
    if (S.retryTimer) return;
    S.retryTimer = setTimeout(() => { S.retryTimer = null; refresh(); }, RETRY_MS);
  }

  async function refresh() {
    if (S.loading) { S.again = true; return; }
    S.loading = true;
    try {
      do { S.again = false; await refreshOnce(); } while (S.again);
    } catch (e) {
      setBanner('error', 'Display error: ' + e.message);
      console.error(e);
    } finally {
      S.loading = false;
    }
  }

  async function refreshOnce() {
    const st = await getJSON('/api/state');
    if (!st.ok) {
      const msg = (st.body && st.body.error) || ('HTTP ' + st.status);
      if (st.status === 404 && st.body && st.body.waiting) {
        setBanner('waiting', msg.charAt(0).toUpperCase() + msg.slice(1) + '. The page updates by itself.');
        $('main').classList.add('is-empty');
        placeholder('waiting for the first snapshot…');
      } else if (st.status === 503) {
        setBanner('error', 'Redis unavailable' + (S.state ? ': the figures below may be out of date. ' : '. ') + msg + ' — retrying…');
        placeholder('no data: Redis is unavailable');
      } else {
        setBanner('error', 'Cannot load the dashboard data: ' + msg + ' — retrying…');
        placeholder('no data');
      }
      scheduleRetry();
      return;
    }
    const state = st.body;
    const snap = normalizeSnapshot(state.snapshot);
    S.offsetMs = state.now_ms - Date.now();
    const key = snap.at + '|' + snap.published_at;
    const resList = snap.cell_resolutions && snap.cell_resolutions.length ? snap.cell_resolutions : [snap.res];

    if (!S.geometry) {
      const g = await getJSON('/api/geometry');
      if (g.ok) S.geometry = g.body;
    }
    if (S.res === null || resList.indexOf(S.res) < 0) {
      S.res = resList.indexOf(7) >= 0 ? 7 : resList[0];
      S.userRes = false;
    }
    if (!S.region || !snap.regions[S.region]) {
      S.region = defaultRegion(snap);
      S.userRegion = false;
    }
    let cells = S.cells;
    if (key !== S.shownKey || !cells || cells.res !== S.res) {
      const c = await getJSON('/api/cells?res=' + S.res);
      if (!c.ok) { handleSubError(c); return; }
      cells = c.body;
    }
    let history = S.history;
    if (key !== S.shownKey || !history || history.region !== S.region) {
      const h = await getJSON('/api/history?region=' + encodeURIComponent(S.region));
      history = h.ok ? h.body : { region: S.region, name: S.region, points: [] };
    }
    let flows = S.flows;
    if (key !== S.flowsKey || !flows) {
      const f = await getJSON('/api/flows');
      flows = f.ok ? f.body : null;
    }
    let foreign = S.foreign;
    if (key !== S.flowsKey || !foreign) {
      const g = await getJSON('/api/foreign');
      foreign = g.ok ? g.body : null;
    }
    S.state = state; S.cells = cells; S.history = history; S.shownKey = key;
    S.flows = flows; S.foreign = foreign; S.flowsKey = key;
    S.fetchedAt = Date.now();
    setBanner(null);
    $('main').classList.remove('is-empty');
    renderAll();
  }

  function placeholder(text) {
    // an empty page says why it is empty (figures already shown stay, marked out of date)
    if (S.state) return;
    const tbody = $('region-table').tBodies[0];
    clear(tbody);
    const tr = el('tr', 'placeholder'); const td = el('td', 'empty', text); td.colSpan = 7;
    tr.appendChild(td); tbody.appendChild(tr);
  }

  function handleSubError(r) {
    const msg = (r.body && r.body.error) || ('HTTP ' + r.status);
    setBanner(r.status === 503 ? 'error' : 'waiting', (r.status === 503 ? 'Redis unavailable: ' : '') + msg);
    scheduleRetry();
  }

  function defaultRegion(snap) {
    let best = null; let bestGap = -1;
    for (const rid in snap.regions) {
      const g = snap.regions[rid].gap;
      if (g !== null && g !== undefined && Math.abs(g) > bestGap) { best = rid; bestGap = Math.abs(g); }
    }
    if (best === null) {
      for (const rid in snap.regions) { if (rid !== 'unassigned') { best = rid; break; } }
    }
    return best || Object.keys(snap.regions)[0];
  }

  // ---------- rendering ----------
  function renderAll() {
    renderHeader();
    renderTable();
    renderMap();
    renderHealth();  // before the chart: the bottom row's height depends on it
    renderChart();
    renderMigration();
    renderForeign();
  }

  // ---------- arrivals from abroad ----------
  // figures of foreign SIMs: people where the document has them (per-country factors),
  // else devices; null is suppressed (fewer than k devices) and shown as such
  function fgnValue(doc, fig) {
    return doc.unit === 'people' && fig.people !== null ? fig.people : fig.devices;
  }
  function renderForeign() {
    const tbody = $('fgn-countries').tBodies[0];
    const rbody = $('fgn-regions').tBodies[0];
    clear(tbody); clear(rbody); clear($('fgn-classes'));
    const periods = (S.foreign && S.foreign.periods) || {};
    const doc = periods[$('fgn-period').value];
    if (!doc) {
      const tr = el('tr');
      const td = el('td', 'muted', 'no foreign-SIM figures for this period yet');
      td.colSpan = 4; tr.appendChild(td); tbody.appendChild(tr);
      $('fgn-note').textContent = '';
      $('fgn-sub').textContent = 'Stays of foreign SIMs: none published for this period yet.';
      return;
    }
    const unit = doc.unit === 'people' ? 'people (where a country factor is configured; else SIMs)' : 'foreign SIMs (devices)';
    const state = doc.final ? 'final' : doc.closed ? 'closed, departures revisable until ' + doc.revisable_until
      : 'so far, to ' + doc.observed_until;
    const fw = doc.warming_up || {};
    $('fgn-sub').textContent = doc.period + ' (' + doc.first_night + ' .. ' + doc.last_night + ', ' + state +
      (doc.complete ? '' : doc.observed_from ? ', observed from ' + doc.observed_from + ' only' : ', no whole night of it observed') +
      (fw.arrivals ? '; warming up: arrivals' + (fw.arrivals_ready_from ? ' before ' + fw.arrivals_ready_from : '') +
        ' include SIMs that were in the country already' : '') + '): ' + unit +
      '; figures resting on fewer than ' + doc.settings.k + ' SIMs are suppressed; "other" sums the smaller countries.';
    for (const c of doc.countries) {
      const t = doc.totals[c];
      const tr = el('tr');
      tr.dataset.country = c;
      tr.appendChild(el('th', null, c === '*' ? 'all countries' : c));
      tr.firstChild.scope = 'row';
      for (const m of ['arrivals', 'departures', 'stock']) {
        const td = el('td', 'num'); td.appendChild(figure(fgnValue(doc, t[m]))); tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    // stay classes of the stock, all countries
    const chart = $('fgn-classes');
    const byClass = doc.totals['*'].by_class.stock;
    const W = 300; const H = 110; const pad = 14;
    chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const labels = { same_day: 'same day', short: '1–29 nights', medium: '30–89', long: '90+' };
    const vals = doc.classes.map((c) => fgnValue(doc, byClass[c]));
    const top = Math.max(1, ...vals.filter((v) => v !== null));
    const step = (W - 2 * pad) / doc.classes.length;
    doc.classes.forEach((c, i) => {
      const v = vals[i];
      const g = svg('g', { 'data-class': c, class: v === null ? 'suppressed' : 'shown' }, chart);
      svg('title', null, g).textContent = labels[c] + ': ' + (v === null ? 'suppressed' : fmtInt(v));
      const x = pad + i * step + step * 0.15;
      const h = v === null ? (H - 3 * pad) : (H - 3 * pad) * v / top;
      svg('rect', { x, width: step * 0.7, y: H - 2 * pad - h, height: Math.max(h, 1), class: v === null ? 'suppressed' : 'bar' }, g);
      svg('text', { x: x + step * 0.35, y: H - pad + 2, 'text-anchor': 'middle' }, g).textContent = labels[c];
      svg('text', { x: x + step * 0.35, y: H - 2 * pad - h - 3, 'text-anchor': 'middle' }, g).textContent = v === null ? '—' : fmtInt(v);
    });
    // long-stayers per region, beside the resident population of the snapshot
    const snap = S.state && S.state.snapshot;
    const rows = Object.entries(doc.regions).filter(([rid, r]) =>
      !(rid === 'unassigned' && r.stock.devices === null));
    for (const [rid, r] of rows) {
      const tr = el('tr');
      tr.dataset.region = rid;
      tr.appendChild(el('td', null, r.name));
      const resident = snap && snap.regions[rid] ? snap.regions[rid].resident : null;
      for (const v of [resident, fgnValue(doc, r.long_stay), fgnValue(doc, r.usual_resident)]) {
        const td = el('td', 'num'); td.appendChild(figure(v)); tr.appendChild(td);
      }
      rbody.appendChild(tr);
    }
    $('fgn-note').textContent = 'Usual residents with a foreign SIM (183 or more of the last 365 nights in stays) are part of ' +
      'the de facto population the registry misses; they are not in "resident", which counts domestic SIMs only.';
  }

  // ---------- migration ----------
  function renderMigration() {
    const tbody = $('mig-table').tBodies[0];
    clear(tbody);
    clear($('mig-od'));
    const periods = (S.flows && S.flows.periods) || {};
    const doc = periods[$('mig-period').value];
    if (!doc) {
      const tr = el('tr');
      const td = el('td', 'muted', 'no migration figures for this period yet (a usual residence needs 10 nights)');
      td.colSpan = 5;
      tr.appendChild(td);
      tbody.appendChild(tr);
      $('mig-rural').textContent = '—';
      renderMigMap(null);
      renderRuralHistory();
      $('mig-sub').textContent = 'Relocations of usual residence (majority of the last 28 nights).';
      return;
    }
    const state = (doc.dating === 'effective' ? 'by move date, ' : '') +
      (doc.final ? 'final' : 'so far, to ' + doc.observed_until);
    const mw = doc.warming_up || {};
    $('mig-sub').textContent = doc.period + ' (' + doc.first_night + ' .. ' + doc.last_night + ', ' + state +
      (doc.complete ? '' : doc.observed_from ? ', observed from ' + doc.observed_from + ' only' : ', no whole night of it observed') +
      (mw.relocations ? '; warming up: fewer nights observed than two ' +
        doc.settings.window_nights + '-night windows, so relocations are undercounted' +
        (mw.relocations_ready_from ? ' (periods from ' + mw.relocations_ready_from + ' on are warm)' : '')
        : mw.confirmed ? '; warming up: confirmed moves and returns are undercounted until periods from ' +
          mw.confirmed_ready_from : '') +
      '): people, 90 % intervals; figures resting on fewer than ' + doc.settings.k + ' devices are suppressed.';
    const rows = Object.entries(doc.regions).filter(([rid, r]) =>
      !(rid === 'unassigned' && r.inflow === null && r.outflow === null));
    rows.sort((a, b) => Math.abs(b[1].net || 0) - Math.abs(a[1].net || 0));
    for (const [rid, r] of rows) {
      const tr = el('tr');
      tr.dataset.region = rid;
      tr.appendChild(el('td', null, r.name));
      const cells = [figure(r.inflow), figure(r.outflow)];
      const net = el('span');
      net.appendChild(figure(r.net));
      if (r.net_lo !== null) net.appendChild(el('span', 'interval', ' ' + fmtInt(r.net_lo) + '–' + fmtInt(r.net_hi)));
      cells.push(net);
      const per = r.net_per_1000;
      cells.push(el('span', null, per === null ? '—' : (per > 0 ? '+' : per < 0 ? MINUS : '') + Math.abs(per).toFixed(2)));
      for (const c of cells) { const td = el('td', 'num'); td.appendChild(c); tr.appendChild(td); }
      tbody.appendChild(tr);
    }
    renderMigMap(doc);
    renderRuralHistory();
    const names = regionNames();
    for (const c of doc.od.slice(0, 8)) {
      $('mig-od').appendChild(el('li', null, (names[c.from] || c.from) + ' → ' + (names[c.to] || c.to) + ': ' +
        fmtInt(c.people) + ' (' + fmtInt(c.lo) + '–' + fmtInt(c.hi) + ')'));
    }
    if (!doc.od.length) $('mig-od').appendChild(el('li', 'muted', 'no flow rests on enough devices'));
    const ru = doc.rural;
    $('mig-rural').textContent = ru.balance === null ? 'suppressed (fewer than ' + doc.settings.k + ' devices each way)'
      : fmtSigned(ru.balance) + ' people (' + fmtInt(ru.balance_lo) + ' to ' + fmtInt(ru.balance_hi) + '); rural → urban ' +
        fmtInt(ru.rural_to_urban) + ', urban → rural ' + fmtInt(ru.urban_to_rural);
  }

  // the rural balance of past final periods of the selected kind and dating: one bar per
  // period with its 90 % interval, a gap where it was suppressed
  function renderRuralHistory() {
    const chart = $('mig-history');
    clear(chart);
    const sel = $('mig-period').value;
    const kind = sel.split(':')[0];
    const dating = sel.endsWith(':effective') ? 'effective' : 'detected';
    const all = ((S.flows && S.flows.history) || []).filter((h) => h.kind === kind && h.dating === dating);
    const rows = all.slice(-26);
    const note = $('mig-history-note');
    chart.style.display = rows.length ? '' : 'none';
    if (!rows.length) {
      note.textContent = 'No ' + kind + ' has ' + (dating === 'effective' ? 'settled' : 'closed') + ' yet: the rural balance of past periods appears here.';
      return;
    }
    const W = 300; const H = 120; const pad = 14;
    chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const vals = [];
    for (const h of rows) if (h.rural.balance !== null) vals.push(h.rural.balance_lo, h.rural.balance_hi, 0);
    const lo = vals.length ? Math.min(...vals) : -1; const hi = vals.length ? Math.max(...vals) : 1;
    const span = (hi - lo) || 1;
    const Y = (v) => pad + (H - 2 * pad) * (hi - v) / span;
    const step = (W - 2 * pad) / rows.length;
    svg('line', { x1: pad, x2: W - pad, y1: Y(0), y2: Y(0), class: 'axis' }, chart);
    rows.forEach((h, i) => {
      const x = pad + i * step;
      const b = h.rural.balance;
      const g = svg('g', { 'data-period': h.period, class: b === null ? 'suppressed' : 'shown' }, chart);
      const t = svg('title', null, g);
      if (b === null) { t.textContent = h.period + ': suppressed'; return; }
      t.textContent = h.period + ': ' + fmtSigned(b) + ' (' + fmtInt(h.rural.balance_lo) + ' to ' + fmtInt(h.rural.balance_hi) + ')';
      svg('rect', { x: x + step * 0.15, width: step * 0.7, y: Math.min(Y(b), Y(0)), height: Math.abs(Y(b) - Y(0)),
        class: 'bar ' + (b < 0 ? 'loss' : 'gain') }, g);
      const cx = x + step / 2;
      svg('line', { x1: cx, x2: cx, y1: Y(h.rural.balance_hi), y2: Y(h.rural.balance_lo), class: 'whisker' }, g);
    });
    svg('text', { x: pad, y: H - 2 }, chart).textContent = rows[0].period;
    svg('text', { x: W - pad, y: H - 2, 'text-anchor': 'end' }, chart).textContent = rows[rows.length - 1].period;
    const shown = rows.filter((h) => h.rural.balance !== null).length;
    note.textContent = 'Rural balance of the last ' + rows.length + ' ' + (dating === 'effective' ? 'settled' : 'closed') + ' ' +
      kind + 's (' + shown + ' shown, the rest suppressed), people with 90 % intervals; negative: rural regions lose people.';
  }

  // net migration per 1,000 residents of each leaf region: blue gains, orange losses,
  // hatched where suppressed (the same figures as the table beside it)
  const GAIN = ['#c6dbef', '#6baed6', '#2171b5'];
  const LOSS = ['#fdd0a2', '#fd8d3c', '#d94801'];
  function renderMigMap(doc) {
    const map = $('mig-map');
    const lg = $('mig-legend');
    clear(map);
    clear(lg);
    if (!S.geometry || !S.proj) return;
    const pr = S.proj;
    const v = S.view || pr.full;
    map.setAttribute('viewBox', `${v.x} ${v.y} ${v.w} ${v.h}`);
    map.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    const defs = svg('defs', null, map);
    const pat = svg('pattern', { id: 'mig-hatch', patternUnits: 'userSpaceOnUse', width: 1, height: 1, patternTransform: 'rotate(45)' }, defs);
    svg('rect', { x: 0, y: 0, width: 1, height: 1, fill: '#eef0f3' }, pat);
    svg('rect', { x: 0, y: 0, width: 0.35, height: 1, fill: '#b8c0cc' }, pat);
    const parents = new Set(S.geometry.features.map((f) => f.properties && f.properties.parent).filter(Boolean));
    // larger regions first, so that a city's districts are drawn over the region around it
    const extent = (f) => {
      const xs = []; const ys = [];
      for (const ring of f.geometry.coordinates) for (const p of ring) { xs.push(p[0]); ys.push(p[1]); }
      return (Math.max(...xs) - Math.min(...xs)) * (Math.max(...ys) - Math.min(...ys));
    };
    const leaves = S.geometry.features.filter((f) => !parents.has(f.id))
      .map((f) => [extent(f), f]).sort((a, b) => b[0] - a[0]).map((x) => x[1]);
    const regions = (doc && doc.regions) || {};
    const per = leaves.map((f) => (regions[f.id] ? regions[f.id].net_per_1000 : null)).filter((v) => v !== null && v !== undefined);
    const top = per.length ? Math.max(...per.map(Math.abs)) : 0;
    const names = regionNames();
    for (const f of leaves) {
      const r = regions[f.id];
      const v = r ? r.net_per_1000 : null;
      let d = '';
      for (const ring of f.geometry.coordinates) d += ringPath(ring, pr.P) + 'Z';
      let fill = 'url(#mig-hatch)';
      let cls = 'region suppressed';
      if (v !== null && v !== undefined) {
        const level = top > 0 ? Math.min(2, Math.floor(3 * Math.abs(v) / top - 1e-9)) : 0;
        fill = v === 0 ? '#f7f7f7' : (v > 0 ? GAIN : LOSS)[Math.max(0, level)];
        cls = 'region';
      }
      const p = svg('path', { d, class: cls, fill, 'fill-rule': 'evenodd', 'data-region': f.id, 'vector-effect': 'non-scaling-stroke' }, map);
      if (v !== null && v !== undefined) p.dataset.net = String(v);
      const t = svg('title', null, p);
      t.textContent = (names[f.id] || f.id) + ': ' + (v === null || v === undefined ? 'suppressed'
        : (v > 0 ? '+' : v < 0 ? MINUS : '') + Math.abs(v).toFixed(2) + ' per 1,000');
    }
    if (!doc) return;
    const item = (fill, text) => {
      const it = el('span', 'item');
      const sw = el('span', 'swatch');
      sw.style.background = fill;
      it.appendChild(sw);
      it.appendChild(el('span', null, text));
      lg.appendChild(it);
    };
    if (top > 0) {
      item(GAIN[2], 'gain, up to +' + top.toFixed(2));
      item(LOSS[2], 'loss, down to ' + MINUS + top.toFixed(2));
    }
    const it = el('span', 'item');
    it.appendChild(el('span', 'swatch suppressed'));
    it.appendChild(el('span', null, 'suppressed (< ' + doc.settings.k + ' devices)'));
    lg.appendChild(it);
  }

  function renderHeader() {
    const snap = S.state.snapshot;
    $('snapshot-at').textContent = fmtTime(snap.at);
    $('snapshot-at').dataset.at = snap.at;
    $('published-at').textContent = fmtTime(snap.published_at, true);
    $('source').textContent = 'prefix ' + S.state.prefix + ' · k = ' + snap.k;
    const hz = snap.horizon_s;
    const hzText = hz % 3600 === 0 ? (hz / 3600) + ' h' : hz % 60 === 0 ? (hz / 60) + ' min' : fmtAge(hz);
    $('map-sub').textContent = 'People present in each hexagon at the snapshot time (last ping within ' + hzText + ').';
    $('foot-k').textContent = String(snap.k);
    $('strip-unit').textContent = 'vs ±' + (snap.gap_threshold * 100).toFixed(0) + ' %';
    tick();
  }

  function tick() {
    if (!S.state) return;
    const snap = S.state.snapshot;
    const pub = parseMs(snap.published_at);
    const age = pub === null ? null : (serverNow() - pub) / 1000;
    $('published-age').textContent = age === null ? '' : '(' + fmtAge(age) + ' ago)';
    $('h-age').textContent = age === null ? '—' : fmtAge(age) + ' ago';
    const at = parseMs(snap.at);
    $('h-delay').textContent = 'window ending ' + fmtTime(snap.at) +
      (at !== null && pub !== null ? ' · published ' + fmtAge((pub - at) / 1000) + ' after its end' : '');
    const since = (Date.now() - S.fetchedAt) / 1000;
    const rows = $('partitions').tBodies[0].rows;
    const parts = S.state.health.partitions;
    for (let i = 0; i < rows.length && i < parts.length; i++) {
      const p = parts[i];
      if (p.seen_age_s !== null && rows[i].cells.length > 2) {
        rows[i].cells[2].textContent = fmtAge(p.seen_age_s + since) + ' ago';
      }
    }
  }

  // hours of event time left until a warming figure is warm, as of the snapshot ("about N h")
  function hoursLeft(snap, readyIso) {
    const at = parseMs(snap.at); const ready = parseMs(readyIso);
    if (at === null || ready === null) return null;
    return Math.max(1, Math.ceil((ready - at) / 3600000));
  }
  function warmupText(snap, figure) {
    const h = hoursLeft(snap, snap.warming_up[figure + '_ready_at']);
    return 'warming up' + (h === null ? '' : ', about ' + h + ' h left');
  }
  function renderWarmup() {
    const snap = S.state.snapshot; const w = snap.warming_up; const note = $('warmup-note');
    if (!w.present && !w.resident) { note.hidden = true; note.textContent = ''; return; }
    const parts = [];
    if (w.present) parts.push('present figures ' + warmupText(snap, 'present'));
    parts.push('resident figures and registry gaps ' + warmupText(snap, 'resident'));
    note.textContent = 'The pipeline started recently and has not yet seen every device: ' +
      parts.join('; ') + '. Until then figures are provisional (too low) and no gap is shown or alerted.';
    note.hidden = false;
  }

  function flagOf(r, thr, alert) {
    if (alert) return alert.direction;
    if (r.gap_ratio_lo !== null && r.gap_ratio_lo !== undefined && r.gap_ratio_lo > thr) return 'over';
    if (r.gap_ratio_hi !== null && r.gap_ratio_hi !== undefined && r.gap_ratio_hi < -thr) return 'under';
    return null;
  }

  function regionNames() {
    const names = {};
    const snap = S.state.snapshot;
    for (const rid in snap.regions) names[rid] = snap.regions[rid].name;
    return names;
  }
  function parentOf(rid) {
    if (!S.geometry) return null;
    for (const f of S.geometry.features) if (f.id === rid) return f.properties && f.properties.parent;
    return null;
  }

  function renderTable() {
    const snap = S.state.snapshot;
    const thr = snap.gap_threshold;
    const alerts = {};
    for (const a of S.state.alerts.active) alerts[a.region] = a;
    const warming = snap.warming_up;
    renderWarmup();
    const names = regionNames();
    const ids = Object.keys(snap.regions);
    ids.sort((a, b) => {
      const ga = snap.regions[a].gap; const gb = snap.regions[b].gap;
      const na = ga === null || ga === undefined; const nb = gb === null || gb === undefined;
      if (na !== nb) return na ? 1 : -1;
      if (!na && Math.abs(gb) !== Math.abs(ga)) return Math.abs(gb) - Math.abs(ga);
      return names[a].localeCompare(names[b]);
    });
    // common scale of the threshold strips: symmetric, at least twice the threshold
    let span = 2 * thr;
    for (const rid of ids) {
      const r = snap.regions[rid];
      for (const v of [r.gap_ratio_lo, r.gap_ratio_hi, r.gap_ratio]) {
        if (v !== null && v !== undefined) span = Math.max(span, Math.abs(v));
      }
    }
    span = Math.min(span * 1.08, 5);
    const tbody = $('region-table').tBodies[0];
    clear(tbody);
    for (const rid of ids) {
      const r = snap.regions[rid];
      const alert = alerts[rid] || null;
      const flag = warming.resident ? null : flagOf(r, thr, alert);
      const tr = el('tr');
      tr.dataset.region = rid;
      if (flag) tr.classList.add('flag-' + flag);
      if (rid === S.region) tr.classList.add('selected');
      tr.title = 'show the history of ' + r.name;

      const name = el('td', 'c-name');
      name.appendChild(el('span', 'rname', r.name));
      const parent = parentOf(rid);
      if (parent && names[parent]) name.appendChild(el('span', 'rparent', 'in ' + names[parent]));
      else if (rid === 'unassigned') name.appendChild(el('span', 'rparent', 'outside every region'));
      tr.appendChild(name);

      const present = el('td', warming.present ? 'num warming' : 'num');
      if (warming.present) present.title = 'provisional: ' + warmupText(snap, 'present');
      present.appendChild(figure(r.present));
      if (r.present !== null && r.lo !== null && r.lo !== undefined) {
        present.appendChild(el('span', 'interval', fmtInt(r.lo) + '–' + fmtInt(r.hi)));
      }
      tr.appendChild(present);

      const resident = el('td', warming.resident ? 'num warming' : 'num');
      if (warming.resident) resident.title = 'provisional: ' + warmupText(snap, 'resident');
      resident.appendChild(figure(r.resident));
      if (r.resident !== null && r.resident_lo !== null) {
        resident.appendChild(el('span', 'interval', fmtInt(r.resident_lo) + '–' + fmtInt(r.resident_hi)));
      }
      tr.appendChild(resident);

      const reg = el('td', 'num');
      if (r.registered === null || r.registered === undefined) {
        const s = el('span', 'na-text', 'no registry'); reg.appendChild(s);
      } else reg.appendChild(el('span', null, fmtInt(r.registered)));
      tr.appendChild(reg);

      const gap = el('td', 'num');
      if (warming.resident) gap.appendChild(el('span', 'warming-text', 'warming up'));
      else if (r.gap !== null && r.gap !== undefined) {
        gap.appendChild(el('span', r.gap > 0 ? 'pos' : r.gap < 0 ? 'neg' : null, fmtSigned(r.gap)));
      } else if (r.resident === null) gap.appendChild(el('span', 'suppressed-text', 'suppressed'));
      else gap.appendChild(el('span', 'na-text', '—'));
      tr.appendChild(gap);

      const ratio = el('td', 'num');
      if (warming.resident) ratio.appendChild(el('span', 'warming-text', '—'));
      else if (r.gap_ratio !== null && r.gap_ratio !== undefined) {
        ratio.appendChild(el('span', r.gap_ratio > 0 ? 'pos' : r.gap_ratio < 0 ? 'neg' : null, fmtPct(r.gap_ratio)));
        if (r.gap_ratio_lo !== null && r.gap_ratio_hi !== null) {
          ratio.appendChild(el('span', 'interval', fmtPct(r.gap_ratio_lo).replace(' %', '') + ' to ' + fmtPct(r.gap_ratio_hi)));
        }
      } else if (r.resident === null) ratio.appendChild(el('span', 'suppressed-text', 'suppressed'));
      else ratio.appendChild(el('span', 'na-text', '—'));
      tr.appendChild(ratio);

      const status = el('td', 'c-strip');
      status.appendChild(gapStrip(r, thr, span, flag));
      const line = el('span', 'status-line');
      if (warming.resident) {
        const b = el('span', 'badge warming', warmupText(snap, 'resident'));
        b.title = 'the resident figures rest on too short an observation: no gap is shown or alerted until they are warm';
        line.appendChild(b);
      } else if (flag) {
        const b = el('span', 'badge ' + flag, (flag === 'over' ? '▲ over' : '▼ under'));
        b.title = flag === 'over'
          ? 'residents exceed the registry by more than the threshold, across the whole interval'
          : 'residents fall short of the registry by more than the threshold, across the whole interval';
        line.appendChild(b);
        if (alert) line.appendChild(el('span', 'status-sub', 'since ' + fmtShortTime(alert.since_ms)));
      } else if (r.gap_ratio !== null && r.gap_ratio !== undefined) {
        line.appendChild(el('span', 'badge ok', 'within'));
      } else {
        line.appendChild(el('span', 'badge none', 'n/a'));
      }
      status.appendChild(line);
      tr.appendChild(status);

      tr.addEventListener('click', () => selectRegion(rid, true));
      tbody.appendChild(tr);
    }
  }

  function gapStrip(r, thr, span, flag) {
    const W = 96; const H = 18;
    const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'strip' });
    const x = (v) => 4 + (W - 8) * (Math.max(-span, Math.min(span, v)) + span) / (2 * span);
    svg('rect', { x: 4, y: 5, width: W - 8, height: 8, fill: '#f1f3f6', rx: 2 }, s);
    svg('rect', { x: x(-thr), y: 3, width: x(thr) - x(-thr), height: 12, fill: '#dfe3ea' }, s);
    svg('line', { x1: x(0), x2: x(0), y1: 1, y2: 17, stroke: '#8a94a3', 'stroke-width': 1 }, s);
    if (r.gap_ratio_lo !== null && r.gap_ratio_lo !== undefined && r.gap_ratio_hi !== null) {
      const col = flag === 'over' ? '#b4441c' : flag === 'under' ? '#5b3fb0' : '#1f5fbf';
      const x0 = x(r.gap_ratio_lo); const x1 = x(r.gap_ratio_hi);
      svg('rect', { x: x0, y: 7, width: Math.max(2, x1 - x0), height: 4, fill: col, rx: 1 }, s);
      if (r.gap_ratio !== null) svg('circle', { cx: x(r.gap_ratio), cy: 9, r: 3.2, fill: col, stroke: '#fff', 'stroke-width': 1 }, s);
    }
    const t = svg('title', null, s);
    t.textContent = 'grey band: ±' + (thr * 100).toFixed(0) + ' % threshold; bar: gap ratio 90 % interval; scale ±' +
      (span * 100).toFixed(0) + ' %';
    return s;
  }

  function selectRegion(rid, zoom) {
    if (!S.state || !S.state.snapshot.regions[rid]) return;
    S.region = rid; S.userRegion = true;
    for (const tr of $('region-table').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.region === rid);
    markSelectedOutline();
    if (zoom) zoomToRegion(rid);
    refresh();
  }

  // ---------- map ----------
  function projection() {
    let lonMin = Infinity; let lonMax = -Infinity; let latMin = Infinity; let latMax = -Infinity;
    const add = (lon, lat) => {
      if (lon < lonMin) lonMin = lon; if (lon > lonMax) lonMax = lon;
      if (lat < latMin) latMin = lat; if (lat > latMax) latMax = lat;
    };
    if (S.geometry) {
      for (const f of S.geometry.features) for (const ring of f.geometry.coordinates) for (const p of ring) add(p[0], p[1]);
    }
    if (S.cells) for (const c of S.cells.cells) for (const p of c.boundary) add(p[0], p[1]);
    if (!Number.isFinite(lonMin)) { lonMin = 0; lonMax = 1; latMin = 0; latMax = 1; }
    const lat0 = (latMin + latMax) / 2; const lon0 = (lonMin + lonMax) / 2;
    const k = Math.cos(lat0 * Math.PI / 180) * 100;
    const P = (lon, lat) => [(lon - lon0) * k, (lat0 - lat) * 100];
    const a = P(lonMin, latMax); const b = P(lonMax, latMin);
    const padX = (b[0] - a[0]) * 0.03 + 0.01; const padY = (b[1] - a[1]) * 0.03 + 0.01;
    return { P, full: { x: a[0] - padX, y: a[1] - padY, w: b[0] - a[0] + 2 * padX, h: b[1] - a[1] + 2 * padY } };
  }

  function ringPath(ring, P) {
    let d = '';
    for (let i = 0; i < ring.length; i++) {
      const q = P(ring[i][0], ring[i][1]);
      d += (i ? 'L' : 'M') + q[0].toFixed(3) + ' ' + q[1].toFixed(3);
    }
    return d;
  }

  function breaksOf(values) {
    // up to 7 classes from quantiles, rounded to 2 significant digits
    const v = values.slice().sort((a, b) => a - b);
    if (!v.length) return [];
    const nice = (x) => {
      if (x <= 10) return Math.max(1, Math.round(x));
      const p = Math.pow(10, Math.floor(Math.log10(x)) - 1);
      return Math.round(x / p) * p;
    };
    const out = [];
    for (let i = 1; i < PALETTE.length; i++) {
      const q = v[Math.min(v.length - 1, Math.floor(v.length * i / PALETTE.length))];
      const b = nice(q);
      if (b > v[0] && (!out.length || b > out[out.length - 1])) out.push(b);
    }
    return out;
  }
  function classOf(value, breaks) {
    let i = 0;
    while (i < breaks.length && value >= breaks[i]) i++;
    return i;
  }
  function colours(n) {
    // spread n classes over the palette, keeping its darkest end
    if (n >= PALETTE.length) return PALETTE.slice();
    const out = [];
    for (let i = 0; i < n; i++) out.push(PALETTE[Math.round((PALETTE.length - 1) * (n === 1 ? 1 : i / (n - 1)))]);
    return out;
  }

  function renderMap() {
    const map = $('map');
    const cells = S.cells;
    const snap = S.state.snapshot;
    const pr = projection();
    S.proj = pr;
    S.fullView = pr.full;
    clear(map);
    const defs = svg('defs', null, map);
    const pat = svg('pattern', { id: 'hatch', patternUnits: 'userSpaceOnUse', width: 1, height: 1, patternTransform: 'rotate(45)' }, defs);
    svg('rect', { x: 0, y: 0, width: 1, height: 1, fill: '#eef0f3' }, pat);
    svg('rect', { x: 0, y: 0, width: 0.35, height: 1, fill: '#b8c0cc', class: 'hatch-line' }, pat);

    const values = cells.cells.filter((c) => c.value !== null).map((c) => c.value);
    const breaks = breaksOf(values);
    const cols = colours(breaks.length + 1);
    const gCells = svg('g', { class: 'cells' }, map);
    for (const c of cells.cells) {
      const d = ringPath(c.boundary, pr.P) + 'Z';
      if (c.value === null) {
        svg('path', { d, class: 'cell suppressed', fill: 'url(#hatch)', stroke: '#c3cad5', 'stroke-width': 0.4,
          'vector-effect': 'non-scaling-stroke', 'data-id': c.id }, gCells);
      } else {
        const col = cols[classOf(c.value, breaks)];
        svg('path', { d, class: 'cell', fill: col, stroke: col, 'stroke-width': 0.5,
          'vector-effect': 'non-scaling-stroke', 'data-id': c.id, 'data-value': c.value }, gCells);
      }
    }
    const gOut = svg('g', { class: 'outlines' }, map);
    if (S.geometry) {
      // children first, top-level regions on top
      const feats = S.geometry.features.slice().sort((a, b) => (a.properties.parent ? 0 : 1) - (b.properties.parent ? 0 : 1));
      for (const f of feats) {
        let d = '';
        for (const ring of f.geometry.coordinates) d += ringPath(ring, pr.P);
        svg('path', { d, class: 'outline' + (f.properties.parent ? '' : ' top'), 'data-region': f.id,
          'vector-effect': 'non-scaling-stroke' }, gOut);
      }
    }
    svg('g', { class: 'selected-outline' }, map);
    markSelectedOutline();
    S.cellById = new Map(cells.cells.map((c) => [c.id, c]));
    if (S.viewMode === 'user' && S.view) setView(S.view);
    else if (S.viewMode === 'all' || !zoomToRegion(S.region, S.viewMode)) setView(Object.assign({}, S.fullView));
    renderLegend(breaks, cols, values.length, cells, snap);
  }

  function markSelectedOutline() {
    const map = $('map');
    const g = map.querySelector('g.selected-outline');
    if (!g) return;
    clear(g);
    const src = map.querySelector('path.outline[data-region="' + CSS.escape(S.region || '') + '"]');
    if (src) {
      svg('path', { d: src.getAttribute('d'), class: 'outline selected', 'vector-effect': 'non-scaling-stroke' }, g);
    }
  }

  function renderLegend(breaks, cols, nValues, cells, snap) {
    const lg = $('legend');
    clear(lg);
    lg.appendChild(el('span', 'legend-title', 'People per cell'));
    const n = cols.length;
    for (let i = 0; i < n; i++) {
      if (!nValues) break;
      const item = el('span', 'item');
      const sw = el('span', 'swatch');
      sw.style.background = cols[i];
      item.appendChild(sw);
      let label;
      if (n === 1) label = 'all ≤ ' + fmtInt(cells.max);
      else if (i === 0) label = '< ' + fmtInt(breaks[0]);
      else if (i === n - 1) label = '≥ ' + fmtInt(breaks[n - 2]);
      else label = fmtInt(breaks[i - 1]) + '–' + fmtInt(breaks[i] - 1);
      item.appendChild(el('span', null, label));
      lg.appendChild(item);
    }
    const item = el('span', 'item');
    item.appendChild(el('span', 'swatch suppressed'));
    item.appendChild(el('span', 'legend-suppressed', 'suppressed (< ' + snap.k + ' devices)'));
    lg.appendChild(item);
    const blank = el('span', 'item');
    blank.appendChild(el('span', 'swatch blank'));
    blank.appendChild(el('span', null, 'blank: no device'));
    lg.appendChild(blank);
    const area = H3_AREA_KM2[cells.res];
    $('map-note').textContent = nf.format(cells.count) + ' cells at resolution ' + cells.res +
      (area ? ' (≈ ' + (area >= 10 ? nf.format(area) : area.toFixed(area < 0.1 ? 3 : 2)) + ' km² each)' : '') +
      ' · ' + nf.format(cells.suppressed) + ' suppressed · ' + nf.format(cells.total) +
      ' people in the cells shown' + (cells.max !== null ? ' · largest ' + nf.format(cells.max) : '');
    const sel = $('res');
    const list = snap.cell_resolutions && snap.cell_resolutions.length ? snap.cell_resolutions : [snap.res];
    const want = list.map(String).join(',');
    if (sel.dataset.list !== want) {
      clear(sel);
      for (const r of list) {
        const a = H3_AREA_KM2[r];
        const o = el('option', null, r + (a ? ' (≈ ' + (a >= 10 ? nf.format(a) : a.toFixed(a < 0.1 ? 3 : 2)) + ' km²)' : ''));
        o.value = String(r);
        sel.appendChild(o);
      }
      sel.dataset.list = want;
    }
    sel.value = String(cells.res);
  }

  function setView(v) {
    const map = $('map');
    S.view = v;
    map.setAttribute('viewBox', `${v.x} ${v.y} ${v.w} ${v.h}`);
    // the migration map follows the population map's view
    $('mig-map').setAttribute('viewBox', `${v.x} ${v.y} ${v.w} ${v.h}`);
    // keep the hatching ~6 px wide on screen whatever the zoom
    const px = Math.max(v.w / Math.max(1, map.clientWidth), v.h / Math.max(1, map.clientHeight));
    const pat = map.querySelector('#hatch');
    if (pat) {
      const s = 6 * px;
      pat.setAttribute('width', s); pat.setAttribute('height', s);
      const r = pat.querySelectorAll('rect');
      r[0].setAttribute('width', s); r[0].setAttribute('height', s);
      r[1].setAttribute('width', s * 0.3); r[1].setAttribute('height', s);
    }
  }

  function regionView(rid) {
    if (!S.proj || !S.geometry) return null;
    const f = S.geometry.features.find((x) => x.id === rid);
    if (!f) return null;
    let x0 = Infinity; let x1 = -Infinity; let y0 = Infinity; let y1 = -Infinity;
    for (const ring of f.geometry.coordinates) {
      for (const p of ring) {
        const q = S.proj.P(p[0], p[1]);
        x0 = Math.min(x0, q[0]); x1 = Math.max(x1, q[0]); y0 = Math.min(y0, q[1]); y1 = Math.max(y1, q[1]);
      }
    }
    if (!Number.isFinite(x0)) return null;
    const padX = (x1 - x0) * 0.08 + 0.02; const padY = (y1 - y0) * 0.08 + 0.02;
    return { x: x0 - padX, y: y0 - padY, w: x1 - x0 + 2 * padX, h: y1 - y0 + 2 * padY };
  }

  function zoomToRegion(rid, mode) {
    // show the selected region (initially, and after a click on its row); false if it has no outline
    const v = regionView(rid);
    if (!v) return false;
    S.viewMode = mode || 'region';
    setView(v);
    return true;
  }

  function regionAt(lon, lat) {
    // the deepest region whose outline contains the point (even-odd over all its rings)
    if (!S.geometry) return null;
    const depth = (f) => { let d = 0; let p = f.properties.parent; const seen = new Set();
      while (p && !seen.has(p)) { seen.add(p); d++; const q = S.geometry.features.find((x) => x.id === p); p = q && q.properties.parent; }
      return d; };
    let best = null; let bestDepth = -1;
    for (const f of S.geometry.features) {
      let inside = false;
      for (const ring of f.geometry.coordinates) {
        for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
          const [xi, yi] = ring[i]; const [xj, yj] = ring[j];
          if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) inside = !inside;
        }
      }
      if (inside) { const d = depth(f); if (d > bestDepth) { best = f; bestDepth = d; } }
    }
    return best;
  }

  function mapPoint(evt) {
    const map = $('map');
    const r = map.getBoundingClientRect();
    const v = S.view;
    // account for preserveAspectRatio="xMidYMid meet"
    const s = Math.max(v.w / r.width, v.h / r.height);
    const ox = (r.width * s - v.w) / 2; const oy = (r.height * s - v.h) / 2;
    return { x: v.x - ox + (evt.clientX - r.left) * s, y: v.y - oy + (evt.clientY - r.top) * s, s };
  }

  function setupMapInteraction() {
    const map = $('map');
    map.addEventListener('wheel', (evt) => {
      if (!S.view) return;
      evt.preventDefault();
      const p = mapPoint(evt);
      const f = Math.exp(evt.deltaY * 0.0015);
      const v = S.view;
      const w = Math.min(S.fullView.w * 4, Math.max(S.fullView.w / 400, v.w * f));
      const k = w / v.w;
      S.viewMode = 'user';
      setView({ x: p.x - (p.x - v.x) * k, y: p.y - (p.y - v.y) * k, w: v.w * k, h: v.h * k });
    }, { passive: false });
    let drag = null;
    map.addEventListener('pointerdown', (evt) => {
      if (!S.view || evt.button !== 0) return;
      drag = { x: evt.clientX, y: evt.clientY, v: Object.assign({}, S.view), s: mapPoint(evt).s, moved: false };
      map.setPointerCapture(evt.pointerId);
    });
    map.addEventListener('pointermove', (evt) => {
      if (drag) {
        const dx = evt.clientX - drag.x; const dy = evt.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (drag.moved) {
          map.classList.add('dragging');
          S.viewMode = 'user';
          setView({ x: drag.v.x - dx * drag.s, y: drag.v.y - dy * drag.s, w: drag.v.w, h: drag.v.h });
          hideTip();
          return;
        }
      }
      showCellTip(evt);
    });
    const end = () => { drag = null; map.classList.remove('dragging'); };
    map.addEventListener('pointerup', end);
    map.addEventListener('pointercancel', end);
    map.addEventListener('pointerleave', hideTip);
    $('map-reset').addEventListener('click', () => { S.viewMode = 'all'; if (S.fullView) setView(Object.assign({}, S.fullView)); });
    $('mig-period').addEventListener('change', () => { if (S.state) renderMigration(); });
    $('fgn-period').addEventListener('change', () => { if (S.state) renderForeign(); });
    $('res').addEventListener('change', () => {
      S.res = parseInt($('res').value, 10); S.userRes = true;
      refresh();
    });
    window.addEventListener('resize', () => { if (S.view) setView(S.view); if (S.state) renderChart(); });
  }

  function hideTip() { $('tooltip').hidden = true; }
  function showCellTip(evt) {
    const t = evt.target;
    const tip = $('tooltip');
    if (!t || !t.classList || !t.classList.contains('cell')) { tip.hidden = true; return; }
    clear(tip);
    const k = S.state.snapshot.k;
    if (t.classList.contains('suppressed')) {
      tip.appendChild(el('div', 'tt-value', 'suppressed'));
      tip.appendChild(el('div', null, 'fewer than ' + k + ' devices: not shown'));
    } else {
      tip.appendChild(el('div', 'tt-value', fmtInt(Number(t.getAttribute('data-value'))) + ' people present'));
    }
    const cell = S.cellById && S.cellById.get(t.getAttribute('data-id'));
    if (cell) {
      let lon = 0; let lat = 0;
      for (const p of cell.boundary) { lon += p[0]; lat += p[1]; }
      const f = regionAt(lon / cell.boundary.length, lat / cell.boundary.length);
      tip.appendChild(el('div', null, f ? f.properties.name : 'outside every region'));
    }
    tip.appendChild(el('div', 'tt-sub', 'H3 cell ' + t.getAttribute('data-id') + ' · res ' + S.cells.res));
    tip.hidden = false;
    placeTip(tip, $('map-wrap'), evt);
  }
  function placeTip(tip, wrap, evt) {
    const r = wrap.getBoundingClientRect();
    let x = evt.clientX - r.left + 14; let y = evt.clientY - r.top + 14;
    const w = tip.offsetWidth; const h = tip.offsetHeight;
    if (x + w > r.width - 4) x = evt.clientX - r.left - w - 14;
    if (y + h > r.height - 4) y = evt.clientY - r.top - h - 14;
    tip.style.left = Math.max(2, x) + 'px';
    tip.style.top = Math.max(2, y) + 'px';
  }

  // ---------- chart ----------
  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
  }

  function renderChart() {
    const chart = $('chart');
    clear(chart);
    const legend = $('chart-legend');
    clear(legend);
    const snap = S.state.snapshot;
    const h = S.history;
    const name = (snap.regions[S.region] && snap.regions[S.region].name) || (h && h.name) || S.region;
    $('chart-title').textContent = 'History — ' + name;
    const W = chart.clientWidth || 800; const H = chart.clientHeight || 300;
    chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const pts = (h && h.points) || [];
    const m = { l: 64, r: 16, t: 12, b: 30 };
    if (pts.length === 0) {
      const t = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty-msg' }, chart);
      t.textContent = 'no history for this region yet';
      return;
    }
    const thr = snap.gap_threshold;
    const series = ['present', 'resident', 'resident_lo', 'resident_hi', 'registered'];
    let ymin = Infinity; let ymax = -Infinity;
    for (const p of pts) {
      for (const s of series) {
        const v = p[s];
        if (v !== null && v !== undefined) { ymin = Math.min(ymin, v); ymax = Math.max(ymax, v); }
      }
      if (p.registered) { ymin = Math.min(ymin, p.registered * (1 - thr)); ymax = Math.max(ymax, p.registered * (1 + thr)); }
    }
    if (!Number.isFinite(ymin)) {
      const t = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty-msg' }, chart);
      t.textContent = 'all figures of this region are suppressed (fewer than ' + snap.k + ' devices)';
      return;
    }
    ymin = Math.max(0, ymin - (ymax - ymin) * 0.08);
    ymax = ymax + (ymax - ymin) * 0.08 + 1;
    const t0 = pts[0].at_ms; const t1 = Math.max(pts[pts.length - 1].at_ms, t0 + 3600000);
    const X = (t) => m.l + (W - m.l - m.r) * (t - t0) / (t1 - t0);
    const Y = (v) => m.t + (H - m.t - m.b) * (1 - (v - ymin) / (ymax - ymin));

    // grid and axes
    const grid = svg('g', { class: 'grid' }, chart);
    const axis = svg('g', { class: 'axis' }, chart);
    const ystep = niceStep(ymax - ymin, 5);
    for (let v = Math.ceil(ymin / ystep) * ystep; v <= ymax; v += ystep) {
      svg('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }, grid);
      const t = svg('text', { x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end' }, axis);
      t.textContent = fmtInt(v);
    }
    const hours = (t1 - t0) / 3600000;
    const steps = [1, 2, 3, 6, 12, 24, 48, 72, 168];
    let hs = steps[steps.length - 1];
    for (const s of steps) { if (hours / s <= Math.max(4, (W - m.l - m.r) / 90)) { hs = s; break; } }
    const stepMs = hs * 3600000;
    for (let t = Math.ceil(t0 / stepMs) * stepMs; t <= t1; t += stepMs) {
      svg('line', { x1: X(t), x2: X(t), y1: m.t, y2: H - m.b }, grid);
      const tx = svg('text', { x: X(t), y: H - m.b + 16, 'text-anchor': 'middle' }, axis);
      tx.textContent = fmtShortTime(t);
    }
    svg('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: '#aab3c0' }, axis);
    const yt = svg('text', { x: 12, y: m.t + (H - m.t - m.b) / 2, class: 'axis-title', 'text-anchor': 'middle',
      transform: `rotate(-90 12 ${m.t + (H - m.t - m.b) / 2})` }, chart);
    yt.textContent = 'people';

    // helpers for gaps where figures are suppressed
    const segments = (get) => {
      const out = []; let cur = [];
      for (const p of pts) {
        const v = get(p);
        if (v === null || v === undefined) { if (cur.length) out.push(cur); cur = []; } else cur.push([X(p.at_ms), Y(v)]);
      }
      if (cur.length) out.push(cur);
      return out;
    };
    const line = (get, attrs) => {
      for (const seg of segments(get)) {
        if (seg.length === 1) { svg('circle', { cx: seg[0][0], cy: seg[0][1], r: 2.5, fill: attrs.stroke }, chart); continue; }
        svg('path', Object.assign({ d: 'M' + seg.map((q) => q[0].toFixed(1) + ' ' + q[1].toFixed(1)).join('L'), fill: 'none' }, attrs), chart);
      }
    };
    const band = (lo, hi, attrs) => {
      let cur = [];
      const flush = () => {
        if (cur.length > 1) {
          const top = cur.map((p) => X(p.at_ms).toFixed(1) + ' ' + Y(hi(p)).toFixed(1));
          const bot = cur.slice().reverse().map((p) => X(p.at_ms).toFixed(1) + ' ' + Y(lo(p)).toFixed(1));
          svg('path', Object.assign({ d: 'M' + top.join('L') + 'L' + bot.join('L') + 'Z' }, attrs), chart);
        }
        cur = [];
      };
      for (const p of pts) {
        if (lo(p) === null || lo(p) === undefined || hi(p) === null || hi(p) === undefined) flush(); else cur.push(p);
      }
      flush();
    };
    const C = { present: '#0f8a7e', resident: '#1f5fbf', registered: '#374151', band: '#1f5fbf', thr: '#9ca3af' };
    band((p) => (p.registered ? p.registered * (1 - thr) : null), (p) => (p.registered ? p.registered * (1 + thr) : null),
      { fill: '#9ca3af', 'fill-opacity': 0.13 });
    band((p) => p.resident_lo, (p) => p.resident_hi, { fill: C.band, 'fill-opacity': 0.18 });
    line((p) => p.registered, { stroke: C.registered, 'stroke-width': 1.8, 'stroke-dasharray': '6 4' });
    line((p) => p.present, { stroke: C.present, 'stroke-width': 1.6 });
    line((p) => p.resident, { stroke: C.resident, 'stroke-width': 2.4 });

    // hover cursor
    const cursor = svg('line', { y1: m.t, y2: H - m.b, stroke: '#6b7280', 'stroke-dasharray': '3 3', visibility: 'hidden' }, chart);
    const hit = svg('rect', { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: 'transparent' }, chart);
    const tip = $('chart-tip');
    hit.addEventListener('pointermove', (evt) => {
      const r = chart.getBoundingClientRect();
      const x = (evt.clientX - r.left) * (W / r.width);
      let best = pts[0];
      for (const p of pts) if (Math.abs(X(p.at_ms) - x) < Math.abs(X(best.at_ms) - x)) best = p;
      cursor.setAttribute('x1', X(best.at_ms)); cursor.setAttribute('x2', X(best.at_ms));
      cursor.setAttribute('visibility', 'visible');
      clear(tip);
      tip.appendChild(el('div', 'tt-sub', fmtTime(best.at)));
      const rows = [
        ['Present', fmtInt(best.present)],
        ['Resident', best.resident === null ? null : fmtInt(best.resident) + (best.resident_lo !== null ? ' (' + fmtInt(best.resident_lo) + '–' + fmtInt(best.resident_hi) + ')' : '')],
        ['Registered', best.registered === null || best.registered === undefined ? 'no registry' : fmtInt(best.registered)],
        ['Gap ratio', best.gap_ratio === null || best.gap_ratio === undefined ? '—' : fmtPct(best.gap_ratio)],
      ];
      for (const [k, v] of rows) tip.appendChild(el('div', null, k + ': ' + (v === null ? 'suppressed' : v)));
      tip.hidden = false;
      placeTip(tip, $('chart-wrap'), evt);
    });
    hit.addEventListener('pointerleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });

    const item = (cls, colour, label) => {
      const it = el('span', 'item');
      const sw = el('span', 'swatch ' + cls);
      if (cls.indexOf('line') >= 0) sw.style.borderTopColor = colour; else { sw.style.background = colour; sw.style.opacity = cls.indexOf('thr') >= 0 ? '0.3' : '0.35'; }
      it.appendChild(sw); it.appendChild(el('span', null, label));
      legend.appendChild(it);
    };
    item('line', C.resident, 'resident');
    item('band', C.band, 'resident 90 % interval');
    item('line', C.present, 'present');
    item('line dashed', C.registered, 'registered');
    item('band thr', C.thr, 'registered ± ' + (thr * 100).toFixed(0) + ' % (alert threshold)');
    legend.appendChild(el('span', 'hint', pts.length + ' snapshots · ' + fmtShortTime(t0) + ' to ' + fmtShortTime(pts[pts.length - 1].at_ms) + ' UTC'));
  }

  // ---------- health and alerts ----------
  function renderHealth() {
    const st = S.state;
    const hl = st.health;
    const lag = $('h-lag');
    lag.textContent = hl.total_lag === null ? '—' : fmtInt(hl.total_lag);
    lag.className = 'stat-value' + (hl.total_lag === null ? '' : hl.total_lag > 100000 ? ' bad' : hl.total_lag > 10000 ? ' warn' : ' good');
    $('h-lag-sub').textContent = hl.total_lag === null ? 'no worker has reported yet'
      : 'messages behind, ' + hl.partitions.length + ' partition' + (hl.partitions.length === 1 ? '' : 's');
    const pt = $('partitions').tBodies[0];
    clear(pt);
    if (!hl.partitions.length) {
      const tr = el('tr'); const td = el('td', 'empty', 'no partition has reported'); td.colSpan = 3; tr.appendChild(td); pt.appendChild(tr);
    }
    for (const p of hl.partitions) {
      const tr = el('tr');
      tr.appendChild(el('td', null, String(p.partition)));
      tr.appendChild(el('td', 'num', p.lag === null ? '—' : fmtInt(p.lag)));
      tr.appendChild(el('td', 'num', p.seen_age_s === null ? '—' : fmtAge(p.seen_age_s) + ' ago'));
      pt.appendChild(tr);
    }
    const c = st.counts;
    const total = (c.accepted || 0) + (c.duplicate || 0) + (c.rejected || 0);
    const rj = $('h-rejected');
    rj.textContent = fmtInt(c.rejected || 0);
    const share = total ? (c.rejected || 0) / total : 0;
    rj.className = 'stat-value' + (share > 0.05 ? ' bad' : share > 0.005 ? ' warn' : ' good');
    const pct = share * 100;
    const pctText = pct === 0 ? '0 %' : pct < 0.01 ? '< 0.01 %' : pct.toFixed(pct < 1 ? 2 : 1) + ' %';
    $('h-rejected-sub').textContent = total ? pctText + ' of ' + fmtInt(total) +
      ' pings · ' + fmtInt(c.accepted || 0) + ' accepted, ' + fmtInt(c.duplicate || 0) + ' duplicate' : 'no pings counted yet';
    const rt = $('reasons').tBodies[0];
    clear(rt);
    const reasons = Object.keys(c.rejected_by_reason);
    if (!reasons.length) {
      const tr = el('tr'); const td = el('td', 'empty', 'none'); td.colSpan = 2; tr.appendChild(td); rt.appendChild(tr);
    }
    for (const r of reasons) {
      const tr = el('tr');
      tr.appendChild(el('td', null, r.replace(/_/g, ' ')));
      tr.appendChild(el('td', 'num', fmtInt(c.rejected_by_reason[r])));
      rt.appendChild(tr);
    }

    const active = st.alerts.active;
    $('alerts-count').textContent = String(active.length);
    const ul = $('alerts-active');
    clear(ul);
    if (!active.length) ul.appendChild(el('li', 'empty-li', 'no region is beyond the threshold'));
    for (const a of active) {
      const li = el('li');
      li.dataset.region = a.region;
      li.appendChild(el('span', 'badge ' + a.direction, a.direction === 'over' ? '▲ over' : '▼ under'));
      li.appendChild(el('span', 'a-name', a.name));
      li.appendChild(el('span', 'a-mag ' + (a.magnitude > 0 ? 'pos' : 'neg'), 'at least ' + fmtPct(a.magnitude)));
      li.appendChild(el('span', 'a-sub', 'since ' + fmtTime(a.since) + ' · peak ' + fmtPct(a.peak) +
        ' · threshold ±' + (a.threshold * 100).toFixed(0) + ' %'));
      li.title = 'show the history of ' + a.name;
      li.addEventListener('click', () => selectRegion(a.region, true));
      ul.appendChild(li);
    }
    const log = $('alerts-log');
    clear(log);
    if (!st.alerts.log.length) log.appendChild(el('li', 'empty-li', 'no alert has opened or closed yet'));
    for (const e of st.alerts.log.slice(0, 20)) {
      const a = e.alert || {};
      const li = el('li');
      li.appendChild(el('span', 'e-time', e.at_ms ? fmtShortTime(e.at_ms) : '—'));
      li.appendChild(el('span', 'e-kind ' + e.event, e.event));
      li.appendChild(el('span', null, (a.name || a.region || '?') + ' · ' + (a.direction || '') +
        (a.magnitude !== undefined && a.magnitude !== null ? ' ' + fmtPct(e.event === 'closed' ? a.peak : a.magnitude) : '') +
        (e.event === 'closed' ? ' (peak)' : '')));
      log.appendChild(li);
    }
    tick();
  }

  // ---------- live updates ----------
  function connect() {
    if (!window.EventSource) { setConn('wait', 'polling'); setInterval(refresh, 15000); return; }
    const es = new EventSource('/events');
    es.addEventListener('open', () => { setConn('live', 'live'); refresh(); });
    es.addEventListener('error', () => { setConn('wait', 'reconnecting…'); });
    es.addEventListener('snapshot', (e) => {
      let d = null;
      try { d = JSON.parse(e.data); } catch (err) { d = null; }
      const snap = S.state && S.state.snapshot;
      if (!d || !snap || d.at !== snap.at || d.published_at !== snap.published_at) refresh();
    });
    es.addEventListener('status', (e) => {
      let d = null;
      try { d = JSON.parse(e.data); } catch (err) { d = null; }
      if (d && d.redis === 'down') {
        setConn('down', 'Redis down');
        setBanner('error', 'Redis unavailable' + (S.state ? ': the figures below may be out of date. ' : '. ') + (d.error || '') + ' — retrying…');
        placeholder('no data: Redis is unavailable');
      } else {
        setConn('live', 'live');
        refresh();
      }
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    setupMapInteraction();
    refresh();
    connect();
    setInterval(tick, 1000);
  });
})();
