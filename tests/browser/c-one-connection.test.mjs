// c. One connection per browser: three tabs of the demo in one browser context share a single
// event stream (the leader tab's; Web Locks + BroadcastChannel). A mutation reaches all three
// tabs. Closing the leader tab hands the stream over to another tab: still one stream, and the
// mutations made during and right after the hand-over reach both remaining tabs as events.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

const TABS = 3;

test('c. one connection per browser: three tabs, one stream, leader hand-over without a missed event', { timeout: 90_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  try {
    const { app, sidecar, browser } = await H.startWorld(cleanup);
    const context = await H.newUserContext(browser, sidecar.url, 'alice');
    cleanup.add(() => context.close());
    const streamRequests = [];
    context.on('request', (req) => {
      if (new URL(req.url()).pathname === '/api/sse/events') streamRequests.push({ at: Date.now(), url: req.url() });
    });

    const tabs = [];
    for (let i = 0; i < TABS; i++) {
      const page = await context.newPage();
      const tab = { name: `tab${i + 1}`, page, console: H.watchConsole(page, `tab${i + 1}`), closed: false };
      shots.push([tab, `c-one-connection-${tab.name}`]);
      await H.gotoDemo(page, sidecar.url);
      tabs.push(tab);
    }
    await Promise.all(tabs.map((tab) => H.waitForBadge(tab.page, 'live')));
    await Promise.all(tabs.map((tab) => H.instrument(tab.page)));

    // Exactly one stream open at the sidecar (stable for 1 s), one stream request ever made
    // by the browser, one leader and two followers.
    const conns = await H.waitStable('sse.connections', () => sidecar.connections(), { stableMs: 1_000, timeout: 10_000 });
    assert.equal(conns, 1, `three tabs of one browser should share one stream, the sidecar has ${conns}`);
    assert.equal(streamRequests.length, 1,
      `the browser opened ${streamRequests.length} streams: ${streamRequests.map((r) => r.url).join(', ')}`);
    const roles = await Promise.all(tabs.map(async (tab) => (await H.clientInfo(tab.page)).role));
    assert.deepEqual([...roles].sort(), ['follower', 'follower', 'leader'], `roles: ${roles}`);
    t.diagnostic(`roles: ${roles.join(', ')}; sse.connections = ${conns}`);

    // A mutation from outside the browser (plain fetch through the sidecar) reaches all tabs.
    const first = H.uniqueTitle('from the test');
    const firstCard = await H.postCard(sidecar.url, first);
    await Promise.all(tabs.map((tab) => H.waitForCard(tab.page, first, { timeout: 5_000 })));
    for (const tab of tabs) {
      const log = await H.sseLog(tab.page);
      assert.ok(log.events.some((e) => e.type === 'card.created' && e.title === first),
        `${tab.name} got no card.created event for ${firstCard.id}`);
    }

    // Close the leader tab and, at the same moment, make a mutation (the hand-over window);
    // then another one right after.
    const leader = tabs[roles.indexOf('leader')];
    const rest = tabs.filter((tab) => tab !== leader);
    const during = H.uniqueTitle('during hand-over');
    const after = H.uniqueTitle('after hand-over');
    const closeAt = Date.now();
    const [, duringCard] = await Promise.all([
      leader.page.close().then(() => { leader.closed = true; }),
      H.postCard(sidecar.url, during),
    ]);
    const afterCard = await H.postCard(sidecar.url, after);
    t.diagnostic(`closed ${leader.name} (the leader); posted ${duringCard.id} during and ${afterCard.id} after the hand-over (${Date.now() - closeAt} ms)`);

    // A new leader among the remaining tabs, and one stream again at the sidecar.
    await H.waitFor('a new leader', async () => {
      const r = await Promise.all(rest.map(async (tab) => (await H.clientInfo(tab.page)).role));
      return r.filter((x) => x === 'leader').length === 1 && r.filter((x) => x === 'follower').length === 1;
    }, { timeout: 5_000 });
    const newLeaderAt = Date.now();
    await Promise.all(rest.map((tab) => H.waitForBadge(tab.page, 'live', { timeout: 5_000 })));
    const connsAfter = await H.waitStable('sse.connections after the hand-over', () => sidecar.connections(),
      { stableMs: 1_000, timeout: 10_000 });
    assert.equal(connsAfter, 1, `after the hand-over the sidecar has ${connsAfter} streams`);
    t.diagnostic(`new leader ${newLeaderAt - closeAt} ms after the close; sse.connections = ${connsAfter}; ${streamRequests.length} stream requests in total`);
    assert.equal(streamRequests.length, 2, `expected one new stream for the new leader, got: ${streamRequests.map((r) => r.url).join(', ')}`);
    assert.match(streamRequests[1].url, /[?&]lastEventId=/, 'the new leader resumes from the last id it saw');

    // Both mutations shown in both remaining tabs, and delivered to each as stream events (no
    // event missed in the hand-over: the page would otherwise only catch up by refetching).
    for (const tab of rest) {
      await H.waitForCard(tab.page, during, { timeout: 5_000 });
      await H.waitForCard(tab.page, after, { timeout: 5_000 });
    }
    for (const tab of rest) {
      await H.waitFor(`${tab.name}: card.created events for both mutations`, async () => {
        const log = await H.sseLog(tab.page);
        const titles = log.events.filter((e) => e.type === 'card.created').map((e) => e.title);
        return titles.includes(during) && titles.includes(after);
      }, { timeout: 5_000 }).catch(async (e) => {
        const log = await H.sseLog(tab.page);
        throw new Error(`${tab.name} missed an event in the hand-over: ${e.message}; events: ${JSON.stringify(log.events)}; states: ${JSON.stringify(log.states)}`);
      });
      const log = await H.sseLog(tab.page);
      const ids = log.events.map((e) => e.id);
      assert.equal(new Set(ids).size, ids.length, `${tab.name} got an event twice: ${ids}`);
    }

    for (const tab of rest) assert.equal(await H.footerError(tab.page), '', `${tab.name} shows an error in its footer`);
    for (const tab of tabs) {
      assert.equal(tab.console.errors.length, 0, `console errors:\n${tab.console.describe()}`);
    }
    await H.waitFor('every card POST at the backend', async () =>
      (await H.backendStats(app.url)).by_route['POST /api/boards/{board}/cards'] >= 3, { timeout: 2_000 });
  } finally {
    for (const [tab, name] of shots) if (!tab.closed) await H.screenshot(tab.page, name);
    await cleanup.run();
  }
});
