// dashboard. The admin dashboard (GET /admin on the admin listener, src/admin/dashboard.html)
// against the real sidecar in front of the legacy app: it says "SSE live"; under load (a few
// event streams on board:1, as alice, a member of that private board, and a few card mutations
// per second) its connections and deliveries
// tiles move; its kill-switch button (reason + confirm) sends the open streams
// `control {mode: "polling"}` and closes them, and the badge says POLLING; the lift button brings
// SSE back. No console errors. Screenshot: artifacts/dashboard.png.
//
// The page reads `GET /admin/stream` (`event: snapshot`, one JSON object a second) and posts to
// `/admin/kill-switch`; see the comment at the top of src/admin/dashboard.html.

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
    const { sidecar, browser } = await H.startWorld(cleanup);

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
