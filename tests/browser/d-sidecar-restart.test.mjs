// d. Sidecar restart mid-session: a live page survives a SIGTERM + start on the same ports by
// itself (no reload); a change made directly at the backend while the sidecar was down (so
// never seen by it) is shown afterwards, because the memory store starts a new epoch and the
// client gets `reset` and refetches everything; and the reconnect attempts made during the
// outage respect the drain advice and the client's backoff.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

// From conf/sidecar.yaml (conf/demo.yaml sets neither): sse.retry_min_ms and
// shutdown.drain_window_seconds. On SIGTERM each stream gets `control {mode: "reconnect",
// retry_ms}` with retry_ms drawn from [retry_min_ms, retry_min_ms + drain_window].
const RETRY_MIN_MS = 1_000;
const DRAIN_WINDOW_MS = 5_000;
// From clients/js/README.md: backoff {baseMs: 500, maxMs: 30000}, full jitter.
const BACKOFF = { baseMs: 500, maxMs: 30_000 };
// How many failed stream attempts the browser must have made before the sidecar is started
// again: the outage is then seen by the client, not only by the test.
const FAILED_ATTEMPTS_WHILE_DOWN = 4;

/**
 * The most stream attempts a full-jitter capped exponential backoff allows in a window of
 * `windowMs` (first attempt included), except with probability below `epsilon`.
 *
 * After each failure the client waits d_k ~ uniform[0, cap_k), cap_k = min(maxMs, baseMs·2^k),
 * k = 0, 1, 2, … from the last reset of its attempt counter (the drain's `control reconnect`
 * resets it; nothing resets it during an outage). Full jitter has no deterministic minimum
 * gap — any single delay may be ~0 ms — so "gap ≥ minimum" cannot be asserted. What can be
 * bounded is how many gaps fit in the window: m attempts in W ms need d_0 + … + d_{m-2} ≤ W,
 * and for n independent uniforms
 *   P(d_0 + … + d_{n-1} ≤ W) ≤ min( Π_k min(1, W / cap_k),  W^n / (n! · Π_k cap_k) )
 * (each d_k ≤ W; and the volume of the simplex {x ≥ 0, Σx ≤ W} over the volume of the box).
 * Starting at k = 0 is the most permissive choice (caps only grow with k), and the time each
 * failing attempt itself takes only makes the gaps longer. So: the smallest n with that bound
 * below `epsilon`; more than n attempts (n gaps) in the window would mean the client did not
 * back off. For a 1–8 s outage this allows 8–11 attempts, while a client retrying without a
 * backoff on connection refused would make hundreds.
 */
function maxAttemptsWithin(windowMs, { baseMs, maxMs }, epsilon = 1e-6) {
  const W = Math.max(windowMs, 1);
  let product = 1; // Π min(1, W/cap_k)
  let simplex = 1; // W^n / (n! Π cap_k)
  for (let n = 1; n < 1_000; n++) {
    const cap = Math.min(maxMs, baseMs * 2 ** (n - 1));
    product *= Math.min(1, W / cap);
    simplex *= W / (n * cap);
    if (Math.min(product, simplex) < epsilon) return n; // n gaps → n + 1 attempts unlikely
  }
  return 1_000;
}

test('d. sidecar restart mid-session', { timeout: 120_000 }, async (parent) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  let page = null;
  try {
    await parent.test('back to live by itself, reset shows what changed, backoff respected', async (t) => {
      const { app, sidecar, browser } = await H.startWorld(cleanup);
      const context = await H.newUserContext(browser, sidecar.url, 'alice');
      cleanup.add(() => context.close());
      page = await context.newPage();
      // While the sidecar is down the browser logs each refused request (the page's polls, the
      // status probe, the stream) as "Failed to load resource: net::ERR_CONNECTION_REFUSED":
      // expected here. Anything else is not.
      const consoleWatch = H.watchConsole(page, 'alice', { ignore: [/net::ERR_CONNECTION_REFUSED/] });
      const streams = H.recordRequests(page, (url) => new URL(url).pathname === '/api/sse/events');
      const statusAsks = H.recordRequests(page, (url) => new URL(url).pathname === '/api/sse/status');
      shots.push([page, 'd-sidecar-restart']);
      await H.gotoDemo(page, sidecar.url);
      const nav = H.trackNavigations(page);
      await H.waitForBadge(page, 'live');
      const marker = await H.instrument(page);
      const before = await H.clientInfo(page);
      assert.ok(before.epoch, 'the live client knows its epoch');

      // ---- restart ------------------------------------------------------------------------------
      const title = H.uniqueTitle('made while the sidecar was down');
      let directCard = null;
      const failedSince = (at) => streams.filter((e) => e.at >= at && e.failed);
      const restartStartedAt = Date.now();
      const r = await sidecar.restart({
        whileDown: async () => {
          // Straight to the legacy app: the sidecar cannot see this one.
          directCard = await H.postCard(app.url, title);
          await H.waitFor(`${FAILED_ATTEMPTS_WHILE_DOWN} failed stream attempts while the sidecar is down`,
            () => failedSince(restartStartedAt).length >= FAILED_ATTEMPTS_WHILE_DOWN,
            { timeout: RETRY_MIN_MS + DRAIN_WINDOW_MS + 10_000 });
        },
      });
      t.diagnostic(`SIGTERM → exit ${r.exitedAt - r.termAt} ms (code ${r.stopped.code}${r.stopped.killed ? ', SIGKILLed' : ''}), `
        + `down until ${r.startAt - r.termAt} ms, ready again ${r.readyAt - r.termAt} ms after the SIGTERM`);
      assert.equal(r.stopped.killed, false, 'the sidecar did not exit on SIGTERM within 10 s');
      assert.equal(r.stopped.code, 0, 'the sidecar exits with 0 after SIGTERM');

      // ---- back to live by itself, new epoch, reset, the change is shown --------------------------
      await H.waitForBadge(page, 'live', { timeout: BACKOFF.maxMs + 5_000 });
      const liveAgainAt = Date.now();
      t.diagnostic(`live again ${liveAgainAt - r.readyAt} ms after the sidecar was ready`);
      assert.equal(nav.count, 0, `the page navigated: ${nav.urls.join(', ')}`);
      const log = await H.sseLog(page);
      assert.equal(log && log.marker, marker, 'the page was reloaded (marker lost)');
      const after = await H.clientInfo(page);
      assert.notEqual(after.epoch, before.epoch, 'a restarted memory store has a new epoch');
      // The reset is written right after the hello that turned the badge live: the page may
      // not have handled it yet when the badge is read, so it is waited for (bounded).
      const afterRestart = async () => (await H.sseLog(page)).resets.filter((x) => x.at >= r.readyAt);
      const resets = await H.waitFor('a reset after the restart', async () => {
        const found = await afterRestart();
        return found.length >= 1 ? found : null;
      }, { timeout: 5_000 }).catch(() => []);
      assert.ok(resets.length >= 1, `no reset after the restart; states: ${JSON.stringify((await H.sseLog(page)).states)}`);
      t.diagnostic(`reset after the restart: ${JSON.stringify(resets.map(({ at, ...x }) => x))}`);
      await H.waitForCard(page, title, { timeout: 5_000 });
      t.diagnostic(`card ${directCard.id}, made directly at the backend while the sidecar was down, is shown`);

      // ---- the reconnect attempts ------------------------------------------------------------------
      const attempts = streams.filter((e) => e.at >= r.termAt);
      const outage = attempts.filter((e) => e.at < r.readyAt);
      const timeline = attempts.map((e) => `+${e.at - r.termAt}ms ${e.failed ? e.failure : e.status}`).join(', ');
      t.diagnostic(`stream attempts after the SIGTERM: ${timeline}`);
      assert.ok(outage.length >= FAILED_ATTEMPTS_WHILE_DOWN, 'the outage attempts were recorded');

      // 1. The drain advice: no attempt before retry_min_ms after the SIGTERM (the `control
      //    reconnect` sent at SIGTERM carries retry_ms ≥ retry_min_ms, and the client honours it).
      const firstGap = attempts[0].at - r.termAt;
      assert.ok(firstGap >= RETRY_MIN_MS,
        `first reconnect attempt ${firstGap} ms after the SIGTERM, before the drain's minimum retry of ${RETRY_MIN_MS} ms`);
      const drainControl = log.controls.find((c) => c.at >= r.termAt && c.mode === 'reconnect');
      assert.ok(drainControl, `no control reconnect at SIGTERM; controls: ${JSON.stringify(log.controls)}`);
      assert.ok(drainControl.retry_ms >= RETRY_MIN_MS && drainControl.retry_ms <= RETRY_MIN_MS + DRAIN_WINDOW_MS,
        `drain retry_ms ${drainControl.retry_ms} outside [${RETRY_MIN_MS}, ${RETRY_MIN_MS + DRAIN_WINDOW_MS}]`);

      // 2. The backoff: at most maxAttemptsWithin(window) attempts from the first failed one to
      //    the moment the sidecar listened again.
      const windowMs = r.readyAt - outage[0].at;
      const allowed = maxAttemptsWithin(windowMs, BACKOFF) + 1;
      t.diagnostic(`${outage.length} attempts in the ${windowMs} ms outage window (backoff allows at most ${allowed})`);
      assert.ok(outage.length <= allowed,
        `${outage.length} stream attempts in ${windowMs} ms while the sidecar was down: more than the ${allowed} a `
        + `full-jitter backoff (base ${BACKOFF.baseMs} ms, max ${BACKOFF.maxMs} ms) allows: ${timeline}`);
      // 3. After every failed attempt the client asks /api/sse/status before trying again (native
      //    EventSource cannot see a refusal's status; its own auto-retry must never run): between
      //    two consecutive stream attempts there is a status request.
      for (let i = 0; i + 1 < attempts.length; i++) {
        const [a, b] = [attempts[i], attempts[i + 1]];
        if (!a.failed) continue;
        assert.ok(statusAsks.some((s) => s.at >= a.at && s.at <= b.at),
          `no /api/sse/status request between the stream attempts at +${a.at - r.termAt} and +${b.at - r.termAt} ms: ${timeline}`);
      }
      const afterReady = attempts.filter((e) => e.at >= r.readyAt);
      assert.ok(afterReady.some((e) => !e.failed && e.status === 200), `no successful stream after the restart: ${timeline}`);

      // ---- still works: a mutation through the sidecar reaches the page as an event --------------
      const later = H.uniqueTitle('after the restart');
      await H.postCard(sidecar.url, later);
      await H.waitForCard(page, later, { timeout: 3_000 });
      const log2 = await H.sseLog(page);
      assert.ok(log2.events.some((e) => e.type === 'card.created' && e.title === later),
        `no card.created event after the restart: ${JSON.stringify(log2.events)}`);
      assert.equal(await H.badgeState(page), 'live');
      assert.equal(consoleWatch.errors.length, 0, `console errors:\n${consoleWatch.describe()}`);
      t.diagnostic(`ignored ${consoleWatch.ignored.length} expected ERR_CONNECTION_REFUSED console lines`);
    });

    // The page reports a failed poll in its footer (data-testid="error"). During the outage its
    // polls failed ("Failed to fetch"); once it is live again with fresh data, that line should
    // not keep telling the user something is wrong.
    await parent.test('once live again, the page no longer shows the outage error in its footer', async (t) => {
      assert.ok(page, 'the page of the first subtest');
      assert.equal(await H.badgeState(page), 'live');
      const stale = await H.waitFor('the footer error to clear', async () => (await H.footerError(page)) === '', { timeout: 5_000 })
        .then(() => null, async () => H.footerError(page));
      assert.equal(stale, null,
        `the page is live and shows fresh data, yet its footer still says ${JSON.stringify(stale)} (set by a poll that `
        + 'failed while the sidecar was down; a successful refresh never clears it)');
    });
  } finally {
    for (const [p, name] of shots) await H.screenshot(p, name);
    await cleanup.run();
  }
});
