// b. Kill switch: `sse.enabled: false` written to the config file (hot reload) sends both live
// pages back to polling within 2 s and the backend sees polls again; `sse.enabled: true` brings
// both pages back to live without a reload (the client's status probe), and a mutation made in
// one page then reaches the other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

const MAX_TO_POLLING_MS = 2_000;
// The page creates its client without options, so the probe period is the client's default
// probeIntervalMs = 15 000 ms ± 25 % (clients/js/README.md): the first probe comes 11.25 to
// 18.75 s after entering `polling`. The switch is turned back on a few seconds after that, so
// the pages must be live again at most ~16 s after it; 25 s leaves room for a loaded machine.
const MAX_BACK_TO_LIVE_MS = 25_000;
const PAGE_POLL_MS = 3_000; // the page's default poll period

test('b. kill switch: live → polling within 2 s → live again without a reload', { timeout: 120_000 }, async (t) => {
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
      shots.push([page, `b-kill-switch-${user}`]);
      await H.gotoDemo(page, sidecar.url);
      const nav = H.trackNavigations(page); // from now on: any reload counts
      users[user] = { page, console: consoleWatch, nav };
    }
    const A = users.alice;
    const B = users.bob;
    const pages = [A.page, B.page];

    await Promise.all(pages.map((p) => H.waitForBadge(p, 'live')));
    const markers = await Promise.all(pages.map((p) => H.instrument(p)));
    await H.waitFor('two open streams', async () => (await sidecar.connections()) === 2, { timeout: 5_000 });

    // ---- switch off ------------------------------------------------------------------------
    await H.resetBackendStats(app.url);
    const pollCountsBefore = await Promise.all(pages.map(async (p) => (await H.clientInfo(p)).pollCount));
    const offAt = Date.now();
    sidecar.rewriteConfig((yaml) => H.setYamlKey(yaml, 'sse.enabled', false));
    await Promise.all(pages.map((p) => H.waitForBadge(p, 'polling', { timeout: MAX_TO_POLLING_MS + 3_000 })));
    for (const [name, w] of Object.entries(users)) {
      const log = await H.sseLog(w.page);
      const left = log.states.find((s) => s.at >= offAt && s.state !== 'live');
      const polling = log.states.find((s) => s.at >= offAt && s.state === 'polling');
      assert.ok(left && polling, `${name}: no state change recorded after the switch: ${JSON.stringify(log.states)}`);
      t.diagnostic(`${name}: left live ${left.at - offAt} ms, polling ${polling.at - offAt} ms after the config write (reason ${polling.reason})`);
      assert.ok(polling.at - offAt <= MAX_TO_POLLING_MS,
        `${name}: polling only ${polling.at - offAt} ms after the switch (limit ${MAX_TO_POLLING_MS} ms)`);
      assert.equal(await H.badgeText(w.page), 'polling');
    }

    // The sidecar's side: no stream left open, status says polling, a new stream is refused
    // with 204 (wire contract §2). It asks as alice, a member of board 1: the refusal is the
    // kill switch's, not the topic authorization's (403).
    await H.waitFor('no open stream on the admin status', async () => (await sidecar.connections()) === 0, { timeout: 3_000 });
    const adminStatus = await sidecar.status();
    assert.notEqual(adminStatus.sse.mode, 'sse', `admin status still says sse: ${JSON.stringify(adminStatus.sse)}`);
    const probe = await (await fetch(`${sidecar.url}/api/sse/status`)).json();
    assert.equal(probe.mode, 'polling', `/api/sse/status while switched off: ${JSON.stringify(probe)}`);
    const refused = await fetch(`${sidecar.url}/api/sse/events?topics=board%3A1`, {
      headers: { cookie: 'user=alice' },
      signal: AbortSignal.timeout(5_000),
    });
    await refused.arrayBuffer();
    assert.equal(refused.status, 204, 'a new stream while switched off is refused with 204');

    // Polls resume: the page timers fire again and the backend sees their GETs.
    await H.waitFor('timer polls from both pages', async () => {
      const counts = await Promise.all(pages.map(async (p) => (await H.clientInfo(p)).pollCount));
      return counts.every((n, i) => n > pollCountsBefore[i]);
    }, { timeout: 2 * PAGE_POLL_MS + 3_000 });
    // At the backend: each page's catch-up refetch of its five lists on leaving live (2 × 5),
    // plus at least one timer poll from each page.
    const statsOff = await H.waitFor('the polls at the backend', async () => {
      const stats = await H.backendStats(app.url);
      return H.polledGets(stats) >= 2 * 5 + 2 && stats;
    }, { timeout: PAGE_POLL_MS + 3_000 }).catch(async (e) => {
      throw new Error(`${e.message}; backend: ${JSON.stringify(H.polledBreakdown(await H.backendStats(app.url)))}`);
    });
    t.diagnostic(`while switched off: backend polls=${statsOff.polls} ${JSON.stringify(H.polledBreakdown(statsOff))}`);

    // ---- switch on again ---------------------------------------------------------------------
    // Precondition of the 25 s limit: the switch is back on before the pages' first status probe
    // can fire (≥ 11.25 s after entering polling); a probe that still saw "polling" would put the
    // next one retry_after = 30 s later.
    const onAt = Date.now();
    for (const [name, w] of Object.entries(users)) {
      const polling = (await H.sseLog(w.page)).states.find((s) => s.at >= offAt && s.state === 'polling');
      assert.ok(onAt - polling.at < 11_000,
        `${name}: the test turned the switch back on only ${onAt - polling.at} ms after polling started (machine too slow?)`);
    }
    sidecar.rewriteConfig((yaml) => H.setYamlKey(yaml, 'sse.enabled', true));
    await H.waitFor('the sidecar reloaded with sse on', async () =>
      (await (await fetch(`${sidecar.url}/api/sse/status`)).json()).mode === 'sse', { timeout: 5_000 });
    await Promise.all(pages.map((p) => H.waitForBadge(p, 'live', { timeout: MAX_BACK_TO_LIVE_MS })));
    const backAt = Date.now();
    t.diagnostic(`both pages live again ${backAt - onAt} ms after the switch was turned back on`);

    // No reload: same document (marker), no main-frame navigation.
    for (const [i, [name, w]] of Object.entries(Object.entries(users))) {
      assert.equal(w.nav.count, 0, `${name}'s page navigated: ${w.nav.urls.join(', ')}`);
      const log = await H.sseLog(w.page);
      assert.equal(log && log.marker, markers[i], `${name}'s page was reloaded (marker lost)`);
      const probed = log.states.find((s) => s.at >= onAt && s.state === 'connecting');
      assert.ok(probed, `${name}: no reconnect recorded after the switch came back: ${JSON.stringify(log.states)}`);
      t.diagnostic(`${name}: reconnecting (${probed.reason}) ${probed.at - onAt} ms after the switch came back`);
    }
    await H.waitFor('the polling timers stopped on both pages', async () =>
      (await Promise.all(pages.map((p) => H.clientInfo(p)))).every((i) => i.polling === false), { timeout: 3_000 });
    await H.waitFor('two open streams again', async () => (await sidecar.connections()) === 2, { timeout: 5_000 });

    // A mutation in alice's page reaches bob's page over the stream.
    const title = H.uniqueTitle('after kill switch');
    await H.watchForCard(B.page, title);
    const clickAt = Date.now();
    await A.page.locator('[data-testid="card-title-input"]').fill(title);
    await A.page.locator('[data-testid="card-add-button"]').click();
    await H.waitForCard(B.page, title, { timeout: 5_000 });
    const seenAt = await B.page.evaluate((t) => window.__cardSeenAt[t], title);
    t.diagnostic(`card after the switch came back: on bob's page ${seenAt - clickAt} ms after the click`);
    const bLog = await H.sseLog(B.page);
    assert.ok(bLog.events.some((e) => e.type === 'card.created' && e.title === title && e.at >= onAt),
      `bob's client got no card.created event after coming back: ${JSON.stringify(bLog.events)}`);

    for (const w of [A, B]) assert.equal(await H.badgeState(w.page), 'live');
    for (const w of [A, B]) assert.equal(await H.footerError(w.page), '', 'the page shows an error in its footer');
    assert.equal(A.console.errors.length + B.console.errors.length, 0,
      `console errors:\n${A.console.describe()}\n${B.console.describe()}`);
  } finally {
    for (const [page, name] of shots) await H.screenshot(page, name);
    await cleanup.run();
  }
});
