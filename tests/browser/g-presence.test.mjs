// g. Presence: the demo page's "Who's online" is drawn from the stream's presence of
// `board:1` (conf/demo.yaml `presence:`, the leave grace shortened by the environment). alice
// and bob (separate browser contexts) live on the demo page: bob shows up on alice's list within
// 1 s of his page going live; a second bob tab (its own context, so its own stream) shows
// "bob · 2 tabs"; when bob closes his page, alice's list drops him after the leave grace, not
// before; while the pages are live, none of them asks the app for /api/sessions. Switching SSE
// off puts the list back on the polled /api/sessions. No console errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

const GRACE_MS = 1_500; // SSE_SIDECAR__PRESENCE__LEAVE_GRACE_MS
const MAX_JOIN_MS = 1_000; // bob's page live → bob on alice's list
const MAX_LEAVE_LATE_MS = 1_000; // bob's page closed → dropped, at most this long after the grace
const SESSIONS_ROUTE = 'GET /api/sessions';
const PRESENCE_TOPIC = 'board:1';

/**
 * Records (in the page) every state of its "Who's online" list, with `Date.now()`:
 * `window.__online = [{at, rows: [{user, text}]}]`, the first entry being what it shows now.
 */
function recordOnline(page) {
  return page.evaluate(() => {
    const log = (window.__online = []);
    const list = document.querySelector('[data-testid="online"]');
    const rows = () => [...list.querySelectorAll('[data-testid="online-user"]')]
      .map((n) => ({ user: n.dataset.user, text: n.textContent }));
    const push = () => {
      const now = rows();
      const last = log[log.length - 1];
      if (!last || JSON.stringify(last.rows) !== JSON.stringify(now)) log.push({ at: Date.now(), rows: now });
    };
    push();
    new MutationObserver(push).observe(list, { childList: true, subtree: true, characterData: true });
  });
}

/** The first entry of the page's `__online` log at or after `since` whose rows satisfy `pred`. */
async function onlineWhen(page, since, pred) {
  const log = await page.evaluate(() => window.__online);
  return log.find((e) => e.at >= since && pred(e.rows)) || null;
}

/** The rows the list shows now. */
async function onlineNow(page) {
  const log = await page.evaluate(() => window.__online);
  return log[log.length - 1].rows;
}

const row = (rows, user) => rows.find((r) => r.user === user) || null;

/**
 * Makes every page of `context` record, in `window.__liveAt`, the first time its badge says
 * `live` (the client's state on the stream's `hello`).
 */
function recordLiveAt(context) {
  return context.addInitScript(() => {
    document.addEventListener('DOMContentLoaded', () => {
      const badge = document.querySelector('[data-testid="status-badge"]');
      const check = () => {
        if (!window.__liveAt && badge.dataset.state === 'live') window.__liveAt = Date.now();
      };
      check();
      new MutationObserver(check).observe(badge, { attributes: true, attributeFilter: ['data-state'] });
    });
  });
}

test('g. presence: "Who\'s online" from the stream, join within 1 s, leave after the grace, no sessions polls', { timeout: 120_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  const watchers = [];
  try {
    const { app, sidecar, browser } = await H.startWorld(cleanup, {
      env: { SSE_SIDECAR__PRESENCE__LEAVE_GRACE_MS: String(GRACE_MS) },
    });

    /** A page for `user` in a context of its own: {context, page, api}. */
    async function openUser(user, label) {
      const context = await H.newUserContext(browser, sidecar.url, user);
      cleanup.add(() => context.close());
      await recordLiveAt(context);
      const page = await context.newPage();
      watchers.push(H.watchConsole(page, label));
      const api = H.recordRequests(page, (url) => new URL(url).pathname.startsWith('/api/'));
      shots.push([page, `g-presence-${label}`]);
      await H.gotoDemo(page, sidecar.url);
      await H.waitForBadge(page, 'live');
      return { context, page, api };
    }
    const sessionGets = (w, since = 0) =>
      w.api.filter((e) => e.method === 'GET' && new URL(e.url).pathname === '/api/sessions' && e.at >= since);

    // ---- alice alone: her list is the board's presence -----------------------------------------
    const A = await openUser('alice', 'alice');
    await H.instrument(A.page);
    await recordOnline(A.page);
    await H.waitFor("alice (you) on alice's list", async () => {
      const rows = await onlineNow(A.page);
      return rows.length === 1 && rows[0].user === 'alice' && rows[0].text === 'alice (you)';
    }, { timeout: 5_000 });
    const presence = await A.page.evaluate((topic) => window.legacyApp.client.presence(topic), PRESENCE_TOPIC);
    assert.deepEqual(presence && presence.members.map((m) => m.id), ['alice'], `alice's presence: ${JSON.stringify(presence)}`);
    assert.deepEqual(await A.page.evaluate(() => window.legacyApp.polledLists), [], "alice's page polls a list while live");

    // Let alice's start-up traffic settle, then open the window: from here on the app must see
    // no GET /api/sessions while the pages are live.
    const inFlight = () => A.api.filter((e) => !e.done && new URL(e.url).pathname !== '/api/sse/events').length;
    await H.waitStable("alice's start-up API traffic", () => [inFlight(), A.api.length], { stableMs: 500, timeout: 10_000 });
    await H.resetBackendStats(app.url);
    const windowAt = Date.now();

    // ---- bob joins: on alice's list within 1 s of his page going live ----------------------------
    const B1 = await openUser('bob', 'bob');
    const bobLiveAt = await B1.page.evaluate(() => window.__liveAt);
    assert.ok(bobLiveAt, "bob's page recorded no live time");
    const joined = await H.waitFor("bob on alice's list", () => onlineWhen(A.page, windowAt, (rows) => row(rows, 'bob')),
      { timeout: 5_000 });
    const joinMs = joined.at - bobLiveAt;
    t.diagnostic(`join: bob on alice's list ${joinMs} ms after bob's page went live`);
    assert.ok(joinMs <= MAX_JOIN_MS, `bob reached alice's list ${joinMs} ms after his page went live (limit ${MAX_JOIN_MS} ms)`);
    assert.equal(row(joined.rows, 'bob').text, 'bob');
    await H.waitFor("alice and bob (you) on bob's list", async () => {
      const texts = await B1.page.$$eval('[data-testid="online-user"]', (ns) => ns.map((n) => n.textContent));
      return texts.join('|') === 'alice|bob (you)';
    }, { timeout: 5_000 });

    // ---- a second bob tab (its own stream): "bob · 2 tabs" on alice's list -----------------------
    const B2 = await openUser('bob', 'bob-2');
    const bob2LiveAt = await B2.page.evaluate(() => window.__liveAt);
    const twoTabs = await H.waitFor("'bob · 2 tabs' on alice's list",
      () => onlineWhen(A.page, bob2LiveAt, (rows) => row(rows, 'bob')?.text === 'bob · 2 tabs'), { timeout: 5_000 });
    t.diagnostic(`second tab: "bob · 2 tabs" on alice's list ${twoTabs.at - bob2LiveAt} ms after it went live`);
    assert.equal((await onlineNow(A.page)).length, 2, 'one line per user');

    // Closing it brings bob back to one line without a tab count (he stays online).
    const closed2At = Date.now();
    await B2.context.close();
    const oneTab = await H.waitFor("bob without a tab count on alice's list",
      () => onlineWhen(A.page, closed2At, (rows) => row(rows, 'bob')?.text === 'bob'), { timeout: GRACE_MS + 5_000 });
    t.diagnostic(`second tab closed: "bob" (one tab) on alice's list ${oneTab.at - closed2At} ms later`);

    // ---- bob leaves: dropped after the grace, not before -----------------------------------------
    await H.waitStable("alice's list after the second tab closed", () => onlineNow(A.page), { stableMs: 300, timeout: 5_000 });
    const closeAt = Date.now();
    await B1.page.close();
    const left = await H.waitFor("bob gone from alice's list",
      () => onlineWhen(A.page, closeAt, (rows) => !row(rows, 'bob')), { timeout: GRACE_MS + 5_000 });
    const leaveMs = left.at - closeAt;
    t.diagnostic(`leave: bob dropped from alice's list ${leaveMs} ms after his page closed (grace ${GRACE_MS} ms)`);
    assert.ok(leaveMs >= GRACE_MS, `bob was dropped ${leaveMs} ms after closing, before the ${GRACE_MS} ms grace`);
    assert.ok(leaveMs <= GRACE_MS + MAX_LEAVE_LATE_MS,
      `bob was dropped ${leaveMs} ms after closing (limit ${GRACE_MS + MAX_LEAVE_LATE_MS} ms)`);
    assert.deepEqual((await onlineNow(A.page)).map((r) => r.text), ['alice (you)']);

    // ---- the window: no GET /api/sessions at all, alice live throughout ---------------------------
    const stats = await H.backendStats(app.url);
    t.diagnostic(`window ${Date.now() - windowAt} ms: backend ${SESSIONS_ROUTE} = ${stats.by_route[SESSIONS_ROUTE] || 0}, `
      + `POST /api/sessions = ${stats.by_route['POST /api/sessions'] || 0}, polled GETs ${JSON.stringify(H.polledBreakdown(stats))}`);
    assert.equal(stats.by_route[SESSIONS_ROUTE] || 0, 0, `the app saw ${SESSIONS_ROUTE} while the pages were live: ${JSON.stringify(stats.by_route)}`);
    assert.equal(stats.by_route['POST /api/sessions'], 2, 'each bob page signed in (POST /api/sessions)');
    for (const [name, w, since] of [['alice', A, windowAt], ['bob', B1, 0], ['bob-2', B2, 0]]) {
      assert.deepEqual(sessionGets(w, since).map((e) => e.url), [], `${name}'s page sent GET /api/sessions`);
    }
    const aLog = await H.sseLog(A.page);
    assert.deepEqual(aLog.states.filter((s) => s.state !== 'live'), [], "alice's page left live during the window");

    // ---- SSE off: the list is the polled /api/sessions again --------------------------------------
    // The app still has bob's two sessions (closing a page does not sign out): the polled list shows
    // them, which is what the presence-drawn list did not.
    const offAt = Date.now();
    sidecar.rewriteConfig((yaml) => H.setYamlKey(yaml, 'sse.enabled', false));
    await H.waitForBadge(A.page, 'polling', { timeout: 5_000 });
    await H.waitFor("alice's page polling 'online'", async () =>
      (await A.page.evaluate(() => window.legacyApp.polledLists)).includes('online'), { timeout: 3_000 });
    const polled = await H.waitFor("the polled list on alice's page",
      () => onlineWhen(A.page, offAt, (rows) => row(rows, 'bob')?.text === 'bob · 2 tabs'), { timeout: 5_000 });
    t.diagnostic(`SSE off: alice's list from /api/sessions ${polled.at - offAt} ms after the config write`);
    assert.ok(sessionGets(A, offAt).length >= 1, 'alice polled /api/sessions once SSE was off');
    assert.ok(((await H.backendStats(app.url)).by_route[SESSIONS_ROUTE] || 0) >= 1, `the app saw ${SESSIONS_ROUTE} once SSE was off`);

    assert.equal(await H.footerError(A.page), '', "alice's page shows an error in its footer");
    const errors = watchers.flatMap((w) => w.errors);
    assert.equal(errors.length, 0, `console errors:\n${watchers.map((w) => w.describe()).filter(Boolean).join('\n')}`);
  } finally {
    for (const [page, name] of shots) if (!page.isClosed()) await H.screenshot(page, name);
    await cleanup.run();
  }
});
