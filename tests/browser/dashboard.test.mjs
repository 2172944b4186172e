// dashboard. The admin dashboard (GET /admin on the admin listener, src/admin/dashboard.html)
// against the real sidecar in front of the legacy app: it says "SSE live"; under load (a few
// event streams on board:1, as alice, a member of that private board, and a few card mutations
// per second) its connections and deliveries
// tiles move; its kill-switch button (reason + confirm) sends the open streams
// `control {mode: "polling"}` and closes them, and the badge says POLLING; the lift button brings
// SSE back. No console errors. Screenshot: artifacts/dashboard.png.
// Polled routes: after polls of board 2's cards (shielded) and of the sessions list, with one
// change explained by an event and one made behind the sidecar's back, the "Coverage &
// shielding" panel shows the same numbers as `coverage` in /admin/status.json, and the "Phase
// gates" panel (GET /admin/gates every 5 s) shows each family's stage → next, its verdict and
// its checks as /admin/gates reports them; exercising the kill switch turns its check ok there.
//
// The page reads `GET /admin/stream` (`event: snapshot`, one JSON object a second) and
// `GET /admin/gates`, and posts to `/admin/kill-switch`; see the comment at the top of
// src/admin/dashboard.html.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

const STREAMS = 3;
const POST_EVERY_MS = 250; // four card mutations a second
const TILE_TIMEOUT_MS = 15_000; // snapshots come every second; rates may average over a few
const KILL_TIMEOUT_MS = 5_000; // "every open stream gets control {mode: polling} and closes within a second"
// board:1 is private to alice and bob (topics are authorized by the app with the subscriber's
// cookie): the test streams subscribe as alice.
const MEMBER = { cookie: 'user=alice' };
// Board 2 is public (carol is a member); its card list is a shielded polled route of the
// cards family in conf/demo.yaml, the sessions list a polled route without shielding.
const CAROL = { cookie: 'user=carol' };
const CARDS_ROUTE = 'GET /api/boards/{board}/cards';
const SESSIONS_ROUTE = 'GET /api/sessions';
const GATE_CHECKS = ['coverage', 'latency_p99', 'resets', 'errors', 'breakers', 'kill_switch'];
const GATES_TIMEOUT_MS = 15_000; // the panel refetches /admin/gates every 5 s

// ---------------------------------------------------------------------------------------------
// Local helpers (the harness drives the demo page; these drive raw streams and the dashboard)
// ---------------------------------------------------------------------------------------------

/**
 * Opens `url` as an event stream with fetch (with extra request `headers`, e.g. a cookie) and
 * parses it (lines split on CR, LF or CRLF; `event`, multi-line `data`, `id`; blank line
 * dispatches). Resolves once the response headers are in. `events` holds {type, data, id, at};
 * `closed` turns true when the server ends it.
 */
async function openStream(url, label, headers = {}) {
  const ctrl = new AbortController();
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: ctrl.signal });
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => {});
    throw new Error(`${label}: GET ${url} answered ${res.status}`);
  }
  const s = { label, events: [], closed: false, closedAt: 0, aborted: false, error: null, raw: '' };
  const decoder = new TextDecoder();
  let buf = '';
  let type = '';
  let data = '';
  let id = '';
  let skipLF = false;
  const line = (l) => {
    if (l === '') {
      if (data !== '') s.events.push({ type: type || 'message', data: data.slice(0, -1), id, at: Date.now() });
      type = '';
      data = '';
      return;
    }
    if (l.startsWith(':')) return;
    const c = l.indexOf(':');
    const field = c < 0 ? l : l.slice(0, c);
    let value = c < 0 ? '' : l.slice(c + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data += `${value}\n`;
    else if (field === 'id' && !value.includes('\0')) id = value;
  };
  s.done = (async () => {
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        let text = decoder.decode(value, { stream: true });
        s.raw = (s.raw + text).slice(-4096);
        if (skipLF && text.startsWith('\n')) text = text.slice(1);
        skipLF = false;
        buf += text;
        const re = /\r\n|\r|\n/g;
        let start = 0;
        let m;
        while ((m = re.exec(buf)) !== null) {
          if (m[0] === '\r' && m.index === buf.length - 1) skipLF = true;
          line(buf.slice(start, m.index));
          start = re.lastIndex;
        }
        buf = buf.slice(start);
      }
      s.closed = true;
      s.closedAt = Date.now();
    } catch (e) {
      if (ctrl.signal.aborted) s.aborted = true;
      else {
        s.error = e;
        s.closed = true;
        s.closedAt = Date.now();
      }
    }
  })();
  s.of = (t) => s.events.filter((e) => e.type === t);
  s.close = async () => {
    if (!s.closed) ctrl.abort();
    await s.done;
  };
  return s;
}

/** Posts a card to board 1 every `everyMs` until stopped; counts successes and failures. */
function startLoad(baseUrl, everyMs) {
  const load = { posted: 0, errors: [], inFlight: new Set() };
  let n = 0;
  const timer = setInterval(() => {
    const p = H.postCard(baseUrl, `dashboard load ${Date.now().toString(36)}-${++n}`)
      .then(() => {
        load.posted++;
      }, (e) => {
        load.errors.push(e.message);
      })
      .finally(() => load.inFlight.delete(p));
    load.inFlight.add(p);
  }, everyMs);
  load.stop = async () => {
    clearInterval(timer);
    await Promise.allSettled([...load.inFlight]);
  };
  return load;
}

/** A tile's raw number (`data-value`, NaN when empty) and the big number it shows (`.value`). */
function tile(page, testid) {
  return page.evaluate((id) => {
    const node = document.querySelector(`[data-testid="${id}"]`);
    if (!node) return { value: NaN, text: null };
    const raw = node.getAttribute('data-value');
    const big = node.querySelector('.value') || node;
    return { value: raw === null || raw === '' ? NaN : Number(raw), text: big.textContent.replace(/\s+/g, ' ').trim() };
  }, testid);
}

/** A GET of a polled route through `baseUrl` as carol (revalidating `etag` when given). */
async function poll(baseUrl, path, etag) {
  const res = await fetch(`${baseUrl}${path}`, {
    headers: { ...CAROL, ...(etag ? { 'if-none-match': etag } : {}) },
    signal: AbortSignal.timeout(5_000),
  });
  await res.arrayBuffer();
  if (res.status !== 200 && res.status !== 304) throw new Error(`GET ${baseUrl}${path}: ${res.status}`);
  return { status: res.status, etag: res.headers.get('etag') || etag || null };
}

/** Adds a card to board 2 as carol through `baseUrl` (the sidecar, or the app behind it). */
async function postBoard2Card(baseUrl, title) {
  const res = await fetch(`${baseUrl}/api/boards/2/cards`, {
    method: 'POST',
    headers: { ...CAROL, 'content-type': 'application/json' },
    body: JSON.stringify({ title, column: 'todo' }),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await res.text();
  if (res.status !== 201) throw new Error(`POST ${baseUrl}/api/boards/2/cards: ${res.status} ${body}`);
}

async function adminJson(adminUrl, path) {
  const res = await fetch(`${adminUrl}${path}`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${adminUrl}${path}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

/** One row of the coverage panel: its data-* numbers and the text of each cell (or null). */
function coverageRow(page, route) {
  return page.evaluate((r) => {
    const tr = [...document.querySelectorAll('[data-testid="coverage"] tbody tr')].find((n) => n.dataset.route === r);
    if (!tr) return null;
    const cell = (c) => tr.querySelector(`[data-col="${c}"]`)?.textContent.replace(/\s+/g, ' ').trim() ?? null;
    return {
      ...tr.dataset,
      cells: { family: cell('family'), route: cell('route'), coverage: cell('coverage'), uncovered: cell('uncovered'), polls: cell('polls'), answered: cell('answered') },
    };
  }, route);
}

/** The phase gates panel: {state, families: {name: {ready, stage, verdict, checks: {name: {ok, detail}}}}}. */
function gatesPanel(page) {
  return page.evaluate(() => {
    const text = (n) => (n ? n.textContent.replace(/\s+/g, ' ').trim() : null);
    const families = {};
    for (const li of document.querySelectorAll('[data-testid="gates"] > li')) {
      const checks = {};
      for (const c of li.querySelectorAll('[data-check]')) checks[c.dataset.check] = { ok: c.dataset.ok, detail: text(c.querySelector('.detail')) };
      families[li.dataset.family] = {
        ready: li.dataset.ready,
        stage: text(li.querySelector('[data-testid="gate-stage"]')),
        verdict: text(li.querySelector('[data-testid="gate-verdict"]')),
        checks,
      };
    }
    return { state: document.querySelector('[data-testid="gates-panel"]')?.dataset.state, families };
  });
}

/** Whether the panel shows what /admin/gates answers: stages, verdicts, check results. */
function panelMatches(panel, served) {
  const names = Object.keys(served.families || {}).sort();
  if (panel.state !== 'ok' || JSON.stringify(Object.keys(panel.families).sort()) !== JSON.stringify(names)) return false;
  return names.every((name) => {
    const want = served.families[name];
    const got = panel.families[name];
    return got.ready === String(want.ready)
      && got.verdict === (want.ready ? 'READY' : 'NOT READY')
      && got.stage === `${want.stage} → ${want.next}`
      && want.checks.every((c) => got.checks[c.name] && got.checks[c.name].ok === String(c.ok));
  });
}

function overall(page) {
  return page.evaluate(() => {
    const node = document.querySelector('[data-testid="overall"]');
    return { state: node?.dataset.state, text: node?.textContent.replace(/\s+/g, ' ').trim() };
  });
}

async function waitForOverall(page, state, { timeout = 10_000 } = {}) {
  try {
    await page.waitForFunction(
      (s) => document.querySelector('[data-testid="overall"]')?.dataset.state === s,
      state,
      { timeout, polling: 50 },
    );
  } catch (e) {
    const now = await overall(page).catch(() => ({}));
    const conn = await page.evaluate(() => window.sidecarDashboard?.connection).catch(() => null);
    throw new Error(`the dashboard badge did not reach ${state} in ${timeout} ms (it is ${JSON.stringify(now)}, stream ${JSON.stringify(conn)}): ${e.message.split('\n')[0]}`);
  }
  return overall(page);
}

// ---------------------------------------------------------------------------------------------

test('dashboard: live badge, tiles move under load, kill switch → streams polling, lift', { timeout: 120_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  let page = null;
  try {
    const { app, sidecar, browser } = await H.startWorld(cleanup);

    // The admin listener serves the page (self-contained HTML).
    const served = await fetch(`${sidecar.adminUrl}/admin`, { signal: AbortSignal.timeout(5_000) });
    const html = await served.text();
    assert.equal(served.status, 200,
      `GET ${sidecar.adminUrl}/admin answered ${served.status} (${html.slice(0, 200)}): the admin listener must serve src/admin/dashboard.html there`);
    assert.match(served.headers.get('content-type') || '', /^text\/html/, 'GET /admin content-type');
    assert.ok(!/<(script|link)[^>]+(src|href)=["']?(https?:)?\/\//i.test(html), 'the page loads nothing from another origin');

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    cleanup.add(() => context.close());
    page = await context.newPage();
    const consoleWatch = H.watchConsole(page, 'dashboard');
    const outside = H.recordRequests(page, (url) => new URL(url).origin !== sidecar.adminUrl && !url.startsWith('data:'));
    await page.goto(`${sidecar.adminUrl}/admin`, { waitUntil: 'domcontentloaded', timeout: 15_000 });

    // ---- SSE live ------------------------------------------------------------------------------
    const live = await waitForOverall(page, 'live');
    assert.match(live.text, /live/i, `badge text: ${live.text}`);
    assert.equal(await page.locator('[data-testid="token-form"]').isVisible(), false, 'no token form without a token');
    for (const id of ['connections', 'deliveries', 'p99', 'kill-switch', 'lift-kill-switch', 'reload', 'transitions']) {
      assert.equal(await page.locator(`[data-testid="${id}"]`).count(), 1, `one [data-testid="${id}"]`);
    }
    assert.equal(await page.locator('[data-testid="lift-kill-switch"]').isDisabled(), true, 'nothing to lift while SSE is live');
    const before = { connections: await tile(page, 'connections'), deliveries: await tile(page, 'deliveries') };
    t.diagnostic(`before the load: connections ${before.connections.value}, deliveries/s ${before.deliveries.value}`);
    assert.ok(Number.isFinite(before.connections.value), `connections tile has a number: ${JSON.stringify(before.connections)}`);

    // ---- coverage & shielding -------------------------------------------------------------------
    // A first poll (forwarded: the backend answers, the sidecar adds its ETag), a revalidation
    // the sidecar answers itself (304, nothing touched board:2), a card added through the
    // sidecar (its event explains the change the next poll sees), a card added on the app
    // directly (no event: an uncovered change once its grace period is over).
    const first = await poll(sidecar.url, '/api/boards/2/cards');
    assert.equal(first.status, 200, 'first poll of board 2');
    assert.ok(first.etag, 'a shielded route answers with the sidecar\'s ETag');
    assert.equal((await poll(sidecar.url, '/api/boards/2/cards', first.etag)).status, 304, 'nothing changed: the sidecar answers the revalidation');
    await postBoard2Card(sidecar.url, H.uniqueTitle('covered change'));
    await H.waitFor('the revalidation after the card.created event to reach the backend (200)',
      async () => (await poll(sidecar.url, '/api/boards/2/cards', first.etag)).status === 200, { timeout: 5_000 });
    await postBoard2Card(app.url, H.uniqueTitle('behind the sidecar'));
    assert.equal((await poll(sidecar.url, '/api/boards/2/cards')).status, 200, 'a poll without If-None-Match is forwarded');
    assert.equal((await poll(sidecar.url, '/api/sessions')).status, 200, 'a poll of the sessions list');
    const coverage = await H.waitFor('/admin/status.json coverage: a covered and an uncovered change of board 2\'s cards', async () => {
      const list = (await sidecar.status()).coverage;
      const cards = Array.isArray(list) && list.find((c) => c.route === CARDS_ROUTE);
      return cards && cards.covered >= 1 && cards.uncovered_total >= 1 && cards.changes >= 2 && list;
    }, { timeout: 10_000 });
    const cardsCov = coverage.find((c) => c.route === CARDS_ROUTE);
    const sessionsCov = coverage.find((c) => c.route === SESSIONS_ROUTE);
    t.diagnostic(`coverage: ${JSON.stringify(coverage)}`);
    assert.ok(sessionsCov, `the sessions poll is in the coverage: ${JSON.stringify(coverage)}`);
    assert.ok(cardsCov.shielded >= 1, `a poll answered by the sidecar: ${JSON.stringify(cardsCov)}`);

    const matches = (row, c) => row && Number(row.changes) === c.changes && Number(row.covered) === c.covered
      && Number(row.uncovered) === c.uncovered_total && Number(row.shielded) === c.shielded && Number(row.forwarded) === c.forwarded;
    const cardsRow = await H.waitFor('the coverage panel to show the numbers of /admin/status.json for the cards route', async () => {
      const row = await coverageRow(page, CARDS_ROUTE);
      return matches(row, cardsCov) && row;
    }, { timeout: TILE_TIMEOUT_MS });
    t.diagnostic(`coverage row: ${JSON.stringify(cardsRow.cells)}`);
    assert.equal(cardsRow.family, 'cards');
    assert.equal(cardsRow.cells.family, 'cards');
    assert.equal(cardsRow.cells.route, CARDS_ROUTE);
    const pct = /^([\d.]+)%/.exec(cardsRow.cells.coverage);
    assert.ok(pct, `the coverage cell starts with a percentage: ${cardsRow.cells.coverage}`);
    assert.ok(Math.abs(Number(pct[1]) - cardsCov.coverage * 100) < 0.06, `coverage ${cardsRow.cells.coverage} vs ${cardsCov.coverage}`);
    assert.ok(cardsRow.cells.coverage.includes(`${cardsCov.covered} of ${cardsCov.changes} changes`), `the changes count: ${cardsRow.cells.coverage}`);
    assert.ok(cardsRow.cells.uncovered.startsWith(String(cardsCov.uncovered_total)), `uncovered total: ${cardsRow.cells.uncovered}`);
    assert.ok(cardsRow.cells.uncovered.includes(cardsCov.last_uncovered_url), `the last uncovered URL (${cardsCov.last_uncovered_url}): ${cardsRow.cells.uncovered}`);
    assert.equal(cardsRow.cells.polls, `${cardsCov.shielded} / ${cardsCov.forwarded}`, 'shielded / forwarded polls');
    const answered = /^([\d.]+)%$/.exec(cardsRow.cells.answered);
    assert.ok(answered, `the share answered by the sidecar is a percentage: ${cardsRow.cells.answered}`);
    assert.ok(Math.abs(Number(answered[1]) - (100 * cardsCov.shielded) / (cardsCov.shielded + cardsCov.forwarded)) < 0.06,
      `answered by the sidecar: ${cardsRow.cells.answered}`);
    const sessionsRow = await H.waitFor('the coverage panel to show the sessions route', async () => {
      const row = await coverageRow(page, SESSIONS_ROUTE);
      return matches(row, sessionsCov) && row;
    }, { timeout: TILE_TIMEOUT_MS });
    assert.equal(sessionsRow.family, 'sessions');
    if (sessionsCov.coverage === null) assert.ok(sessionsRow.cells.coverage.startsWith('—'), `no change yet: coverage "—" (${sessionsRow.cells.coverage})`);
    if (!sessionsCov.uncovered_total) assert.equal(sessionsRow.cells.uncovered, '0', 'no uncovered change, no URL');
    if (!sessionsCov.shielded) assert.equal(sessionsRow.cells.answered, '0%', 'a route without shielding: nothing answered by the sidecar');

    // ---- phase gates -------------------------------------------------------------------------
    const gatesServed = await adminJson(sidecar.adminUrl, '/admin/gates');
    assert.ok(gatesServed.families?.cards, `/admin/gates reports the cards family: ${JSON.stringify(gatesServed).slice(0, 300)}`);
    const panel = await H.waitFor('the phase gates panel to show what /admin/gates answers (with the uncovered change)', async () => {
      const [served, shown] = await Promise.all([adminJson(sidecar.adminUrl, '/admin/gates'), gatesPanel(page)]);
      const servedDetail = served.families.cards.checks.find((c) => c.name === 'coverage')?.detail;
      return panelMatches(shown, served) && shown.families.cards.checks.coverage.detail === servedDetail
        && servedDetail.includes(cardsCov.last_uncovered_url) && { shown, served };
    }, { timeout: GATES_TIMEOUT_MS });
    t.diagnostic(`gates panel (cards): ${JSON.stringify(panel.shown.families.cards)}`);
    for (const [name, shown] of Object.entries(panel.shown.families)) {
      assert.deepEqual(Object.keys(shown.checks), panel.served.families[name].checks.map((c) => c.name), `${name}: one line per check, in order`);
      assert.match(shown.verdict, /^(READY|NOT READY)$/, `${name}: verdict`);
      for (const c of Object.values(shown.checks)) assert.ok(c.detail, `${name}: every check shows its detail`);
    }
    assert.deepEqual(Object.keys(panel.shown.families.cards.checks), GATE_CHECKS, 'the six checks of a family');
    assert.equal(panel.shown.families.cards.checks.coverage.ok, 'false', 'an uncovered change fails the coverage check');
    assert.equal(panel.shown.families.cards.checks.kill_switch.ok, 'false', 'the kill switch has not been exercised yet');
    assert.equal(panel.shown.families.cards.verdict, 'NOT READY');
    assert.equal(panel.shown.families.cards.stage, `${gatesServed.families.cards.stage} → ${gatesServed.families.cards.next}`);
    assert.equal(await page.evaluate(() => window.sidecarDashboard.gates.state), 'ok');

    // ---- load: streams on board:1, card mutations ----------------------------------------------
    const streams = [];
    cleanup.add(() => Promise.all(streams.map((s) => s.close())));
    for (let i = 0; i < STREAMS; i++) {
      streams.push(await openStream(`${sidecar.url}/api/sse/events?topics=board%3A1`, `stream ${i + 1}`, MEMBER));
    }
    await H.waitFor('hello on every test stream', () => streams.every((s) => s.of('hello').length > 0), { timeout: 5_000 });
    const load = startLoad(sidecar.url, POST_EVERY_MS);
    cleanup.add(() => load.stop());

    const conns = await H.waitFor(`the connections tile to reach ${before.connections.value + STREAMS}`, async () => {
      const v = await tile(page, 'connections');
      return v.value >= before.connections.value + STREAMS && v;
    }, { timeout: TILE_TIMEOUT_MS });
    assert.equal(conns.text.replace(/,/g, ''), String(conns.value), 'the connections tile shows its number');
    const deliveries = await H.waitFor('the deliveries tile to move above 0', async () => {
      const v = await tile(page, 'deliveries');
      return v.value > 0 && v.value !== before.deliveries.value && v;
    }, { timeout: TILE_TIMEOUT_MS });
    assert.match(deliveries.text, /^[\d.,]+\s*\/s$/, 'the deliveries tile shows a rate');
    assert.notEqual(deliveries.text.replace(/\s/g, ''), before.deliveries.text.replace(/\s/g, ''), 'the deliveries number on the page changed');
    t.diagnostic(`under load: connections ${conns.value} ("${conns.text}"), deliveries/s ${deliveries.value} ("${deliveries.text}")`);
    await H.waitFor('card.created on every test stream', () => streams.every((s) => s.of('card.created').length > 0), { timeout: 5_000 });
    assert.deepEqual(load.errors, [], 'card mutations through the sidecar failed');

    // ---- kill switch: reason + confirm ---------------------------------------------------------
    const reason = `dashboard test ${Date.now().toString(36)}`;
    await page.locator('[data-testid="kill-switch"]').click();
    const reasonInput = page.locator('[data-testid="kill-reason"]');
    await reasonInput.waitFor({ state: 'visible', timeout: 5_000 });
    await reasonInput.fill(reason);
    const killAt = Date.now();
    await page.locator('[data-testid="kill-confirm"]').click();

    await H.waitFor('control {mode: "polling"} on every test stream, then the stream closes', () =>
      streams.every((s) => s.closed && s.of('control').some((e) => JSON.parse(e.data).mode === 'polling')),
    { timeout: KILL_TIMEOUT_MS }).catch((e) => {
      throw new Error(`${e.message}; streams: ${JSON.stringify(streams.map((s) => ({ closed: s.closed, controls: s.of('control').map((c) => c.data), tail: s.raw.slice(-300) })))}`);
    });
    for (const s of streams) {
      const control = s.of('control').find((e) => JSON.parse(e.data).mode === 'polling');
      assert.ok(s.raw.includes('event: control'), `${s.label}: the raw stream has an "event: control" line`);
      assert.ok(control.data.includes('"mode":"polling"'), `${s.label}: control data ${control.data}`);
      assert.equal(s.error, null, `${s.label} ended with an error: ${s.error}`);
      t.diagnostic(`${s.label}: control ${control.at - killAt} ms, closed ${s.closedAt - killAt} ms after the click: ${control.data}`);
    }

    const polling = await waitForOverall(page, 'polling', { timeout: KILL_TIMEOUT_MS });
    assert.match(polling.text, /POLLING/, `badge text: ${polling.text}`);
    assert.ok(polling.text.includes(reason), `the badge shows the reason: ${polling.text}`);
    const result = page.locator('[data-testid="action-result"]');
    assert.match(await result.textContent(), /polling/i, 'the kill switch result is shown inline');
    const adminStatus = await sidecar.status();
    assert.equal(adminStatus.sse.mode, 'polling', `admin status: ${JSON.stringify(adminStatus.sse)}`);
    assert.ok(String(adminStatus.sse.disabled_reason).includes(reason), `disabled_reason: ${adminStatus.sse.disabled_reason}`);
    await H.waitFor('the connections tile back to 0', async () => (await tile(page, 'connections')).value === 0, { timeout: TILE_TIMEOUT_MS });
    const refused = await fetch(`${sidecar.url}/api/sse/events?topics=board%3A1`, { headers: MEMBER, signal: AbortSignal.timeout(5_000) });
    await refused.arrayBuffer();
    assert.equal(refused.status, 204, 'a new stream while switched off is refused with 204');

    // Transitions: when the snapshot reports a kill_switch transition, the list shows it.
    const snapTransitions = await page.evaluate(() => window.sidecarDashboard.snapshot?.transitions);
    if (Array.isArray(snapTransitions) && snapTransitions.some((x) => x && x.kind === 'kill_switch')) {
      await page.locator('[data-testid="transitions"] [data-kind="kill_switch"]').first().waitFor({ timeout: 3_000 });
      t.diagnostic(`transitions list: ${(await page.locator('[data-testid="transitions"]').textContent()).replace(/\s+/g, ' ').slice(0, 200)}`);
    } else {
      t.diagnostic(`the snapshot reports no kill_switch transition (transitions: ${JSON.stringify(snapTransitions)})`);
    }
    await H.screenshot(page, 'dashboard-kill-switch');
    await load.stop();

    // ---- lift ----------------------------------------------------------------------------------
    const lift = page.locator('[data-testid="lift-kill-switch"]');
    assert.equal(await lift.isEnabled(), true, 'the lift button is enabled while the admin switch is on');
    await lift.click();
    const again = await waitForOverall(page, 'live', { timeout: KILL_TIMEOUT_MS });
    assert.match(again.text, /live/i, `badge text after lifting: ${again.text}`);
    assert.match(await result.textContent(), /lifted/i, 'the lift result is shown inline');
    assert.equal((await sidecar.status()).sse.mode, 'sse', 'admin status after lifting');
    const reopened = await openStream(`${sidecar.url}/api/sse/events?topics=board%3A1`, 'stream after lift', MEMBER);
    streams.push(reopened);
    await H.waitFor('hello on a new stream after lifting', () => reopened.of('hello').length > 0, { timeout: 5_000 });
    await H.waitFor('the connections tile sees the new stream', async () => (await tile(page, 'connections')).value >= 1, { timeout: TILE_TIMEOUT_MS });

    // ---- phase gates after the kill switch was exercised --------------------------------------
    await H.waitFor('the phase gates panel to show the kill_switch check ok for every family', async () => {
      const shown = await gatesPanel(page);
      const names = Object.keys(shown.families);
      return names.length > 0 && names.every((n) => shown.families[n].checks.kill_switch?.ok === 'true') && shown;
    }, { timeout: GATES_TIMEOUT_MS });
    const servedAfter = await adminJson(sidecar.adminUrl, '/admin/gates');
    assert.ok(Object.values(servedAfter.families).every((f) => f.checks.find((c) => c.name === 'kill_switch')?.ok === true),
      `/admin/gates agrees: ${JSON.stringify(Object.fromEntries(Object.entries(servedAfter.families).map(([n, f]) => [n, f.why_not])))}`);

    // ---- the page itself -----------------------------------------------------------------------
    await H.screenshot(page, 'dashboard');
    assert.equal(await page.evaluate(() => window.sidecarDashboard.connection.state), 'live', 'the dashboard stream is still up');
    assert.deepEqual(outside.map((r) => r.url), [], 'the page requested nothing outside the admin listener');
    assert.equal(consoleWatch.errors.length, 0, `console errors:\n${consoleWatch.describe()}`);
  } catch (e) {
    if (page) await H.screenshot(page, 'dashboard-failure');
    throw e;
  } finally {
    await cleanup.run();
  }
});
