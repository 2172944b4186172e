// a. Live collaboration: alice and bob (two browser contexts = two browsers) on the demo page
// through the sidecar. Both go live; while live, the backend sees no polls at all; a card alice
// adds shows up on bob's page within 1 s; no console errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

/** Longer than the page's 3 s poll period: a running poll timer would fire in it. */
const QUIET_WINDOW_MS = 4_500;
const MAX_PROPAGATION_MS = 1_000;

test('a. live collaboration: two users live, no polls, a card reaches the other user within 1 s', { timeout: 90_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  try {
    const { app, sidecar, browser } = await H.startWorld(cleanup);

    const users = {};
    for (const user of ['alice', 'bob']) {
      const context = await H.newUserContext(browser, sidecar.url, user);
      cleanup.add(() => context.close());
      const page = await context.newPage();
      const consoleWatch = H.watchConsole(page, user);
      const api = H.recordRequests(page, (url) => new URL(url).pathname.startsWith('/api/'));
      shots.push([page, `a-live-collaboration-${user}`]);
      await H.gotoDemo(page, sidecar.url);
      users[user] = { page, console: consoleWatch, api };
    }
    const A = users.alice;
    const B = users.bob;

    // Both live, each signed in as its own user.
    await Promise.all([H.waitForBadge(A.page, 'live'), H.waitForBadge(B.page, 'live')]);
    assert.equal(await H.badgeText(A.page), 'live');
    assert.equal(await H.badgeText(B.page), 'live');
    assert.equal((await H.clientInfo(A.page)).user, 'alice');
    assert.equal((await H.clientInfo(B.page)).user, 'bob');
    await H.instrument(A.page);
    await H.instrument(B.page);

    // Let the start-up traffic settle (initial loads, the catch-up refetch on going live, the
    // refetches caused by the other page's session/activity events): no API request of either
    // page in flight, and none started, for 750 ms.
    const isStream = (e) => new URL(e.url).pathname === '/api/sse/events';
    const inFlight = (w) => w.api.filter((e) => !e.done && !isStream(e)).length;
    const settled = await H.waitStable(
      'the start-up API traffic of both pages',
      () => [inFlight(A), inFlight(B), A.api.length, B.api.length],
      { stableMs: 750, timeout: 15_000 },
    );
    assert.deepEqual(settled.slice(0, 2), [0, 0], 'API requests still in flight after start-up');

    // The quiet window: both pages live the whole time, the backend sees no GET to any of the
    // five polled list endpoints (and no GET /api/* at all), the pages send no API request.
    await H.resetBackendStats(app.url);
    const apiBefore = { A: A.api.length, B: B.api.length };
    const windowMs = await H.holdsFor(QUIET_WINDOW_MS, async () => {
      const stats = await H.backendStats(app.url);
      assert.equal(H.polledGets(stats), 0,
        `the backend saw polls while both pages were live: ${JSON.stringify(H.polledBreakdown(stats))}`);
      assert.equal(stats.polls, 0, `the backend saw GET /api/* requests while both pages were live: ${JSON.stringify(stats.by_route)}`);
      assert.equal(await H.badgeState(A.page), 'live', "alice's page left live during the quiet window");
      assert.equal(await H.badgeState(B.page), 'live', "bob's page left live during the quiet window");
    });
    const newApi = [...A.api.slice(apiBefore.A), ...B.api.slice(apiBefore.B)];
    assert.deepEqual(newApi.map((e) => `${e.method} ${e.url}`), [],
      'the pages sent API requests (polls or stream reconnects) while live');
    for (const w of [A, B]) {
      const info = await H.clientInfo(w.page);
      assert.equal(info.polling, false, `${info.user}'s page still has a polling timer running while live`);
    }
    t.diagnostic(`quiet window: ${windowMs} ms live on both pages, 0 polls at the backend`);

    // Alice adds a card through the page's form; bob must see it within 1 s of the click.
    const title = H.uniqueTitle('alice card');
    await H.watchForCard(B.page, title);
    await A.page.evaluate(() => {
      document.querySelector('[data-testid="card-add-button"]').addEventListener(
        'click', () => { window.__clickAt = Date.now(); }, { capture: true, once: true },
      );
    });
    await A.page.locator('[data-testid="card-title-input"]').fill(title);
    await A.page.locator('[data-testid="card-column-select"]').selectOption('doing');
    await A.page.locator('[data-testid="card-add-button"]').click();
    const cardId = await H.waitForCard(B.page, title, { timeout: 5_000 });
    await H.waitForCard(A.page, title, { timeout: 5_000 });
    const clickAt = await A.page.evaluate(() => window.__clickAt);
    const seenAt = await B.page.evaluate((t) => window.__cardSeenAt[t], title);
    assert.ok(clickAt && seenAt, 'click and appearance times recorded');
    const propagation = seenAt - clickAt;
    t.diagnostic(`card ${cardId} added by alice appeared on bob's page ${propagation} ms after the click`);
    assert.ok(propagation <= MAX_PROPAGATION_MS,
      `the card took ${propagation} ms to reach bob's page (limit ${MAX_PROPAGATION_MS} ms)`);
    const column = await B.page.locator(`[data-testid="card"][data-card-id="${cardId}"]`).getAttribute('data-column');
    assert.equal(column, 'doing', "the card is in the column alice chose on bob's page");

    // It came over the stream (a card.created event on bob's page), not from a poll.
    const bLog = await H.sseLog(B.page);
    assert.ok(bLog.events.some((e) => e.type === 'card.created' && e.title === title),
      `bob's client got no card.created event for the card: ${JSON.stringify(bLog.events)}`);
    const stats = await H.backendStats(app.url);
    assert.equal(stats.by_route['POST /api/boards/{board}/cards'], 1, 'exactly one card POST reached the backend');

    // Both pages still live, and clean consoles.
    assert.equal(await H.badgeState(A.page), 'live');
    assert.equal(await H.badgeState(B.page), 'live');
    for (const w of [A, B]) assert.equal(await H.footerError(w.page), '', 'the page shows an error in its footer');
    assert.equal(A.console.errors.length + B.console.errors.length, 0,
      `console errors:\n${A.console.describe()}\n${B.console.describe()}`);
  } finally {
    for (const [page, name] of shots) await H.screenshot(page, name);
    await cleanup.run();
  }
});
