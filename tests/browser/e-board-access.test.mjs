// e. Board access: the sidecar authorizes every topic with the app (conf/demo.yaml
// `authorization:`), and board 1 is private to alice and bob. carol's page is live, but
// `board:1` is denied to her, so her page keeps polling the cards (and only the cards) and a
// new card reaches her by a poll. bob's page is live with nothing polled; when alice takes bob
// off board 1, the open stream revokes `board:1` (`control {revoked}`, decisions cached 1 s
// here), the page stays live, polls the cards again and a new card reaches bob by a poll.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as H from './harness.mjs';

const POLL_MS = 500; // ?poll_ms: the page's poll period, short so that polls show up quickly
const POLL_DEADLINE_MS = 5_000; // a few poll periods, plus a page refetch
const REVOKE_DEADLINE_MS = 8_000; // the re-check of a 1 s decision, with margin

const state = (page) => page.evaluate(() => {
  const { client, polledLists, connection } = window.legacyApp;
  return {
    connection,
    polledLists,
    topics: client && client.info.topics,
    denied: client && client.info.denied,
    note: document.getElementById('board-note').hidden ? '' : document.getElementById('board-note').textContent,
  };
});

test('e. board access: a denied or revoked board topic keeps its list polled while the page stays live', { timeout: 90_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  try {
    const yaml = H.setYamlKey(fs.readFileSync(H.DEMO_YAML_PATH, 'utf8'), 'authorization.cache_ttl_seconds', 1);
    const { sidecar, browser } = await H.startWorld(cleanup, { yaml });

    const users = {};
    for (const user of ['carol', 'bob']) {
      const context = await H.newUserContext(browser, sidecar.url, user);
      cleanup.add(() => context.close());
      const page = await context.newPage();
      const consoleWatch = H.watchConsole(page, user);
      shots.push([page, `e-board-access-${user}`]);
      await H.gotoDemo(page, `${sidecar.url}/?poll_ms=${POLL_MS}`);
      await H.waitForBadge(page, 'live');
      await H.instrument(page);
      users[user] = { page, console: consoleWatch };
    }
    const C = users.carol;
    const B = users.bob;

    // carol: live, board:1 denied, only the cards polled.
    const c0 = await H.waitFor("carol's page polling the cards only", async () => {
      const s = await state(C.page);
      return s.connection === 'live' && s.polledLists.join() === 'cards' && s;
    }, { timeout: POLL_DEADLINE_MS });
    assert.deepEqual(c0.denied, ['board:1']);
    assert.ok(!c0.topics.includes('board:1'), `carol's granted topics: ${c0.topics}`);
    assert.match(c0.note, /carol is not a member of board 1/);
    // bob: live, everything granted, nothing polled.
    const b0 = await state(B.page);
    assert.deepEqual(b0.denied, []);
    assert.deepEqual(b0.polledLists, []);

    // A card on board 1: bob gets it as an event, carol by a poll.
    const first = H.uniqueTitle('seen by carol');
    await H.postCard(sidecar.url, first, { headers: { cookie: 'user=alice' } });
    await H.waitForCard(B.page, first, { timeout: POLL_DEADLINE_MS });
    await H.waitForCard(C.page, first, { timeout: POLL_DEADLINE_MS });
    assert.ok((await H.sseLog(B.page)).events.some((e) => e.type === 'card.created' && e.title === first),
      'bob got the card as an event');
    assert.ok(!(await H.sseLog(C.page)).events.some((e) => e.type === 'card.created'),
      'carol got no card event (board:1 is denied to her)');

    // alice takes bob off board 1 (through the sidecar); bob's stream loses board:1.
    const put = await fetch(`${sidecar.url}/api/boards/1/members`, {
      method: 'PUT',
      headers: { cookie: 'user=alice', 'content-type': 'application/json' },
      body: JSON.stringify({ members: ['alice'] }),
      signal: AbortSignal.timeout(5_000),
    });
    assert.equal(put.status, 200, `PUT /api/boards/1/members: ${put.status} ${await put.text()}`);
    const revokedAt = Date.now();
    const b1 = await H.waitFor("bob's page polling the cards after the revocation", async () => {
      const s = await state(B.page);
      return s.polledLists.join() === 'cards' && s;
    }, { timeout: REVOKE_DEADLINE_MS });
    t.diagnostic(`bob's page polls the cards ${Date.now() - revokedAt} ms after the membership change`);
    assert.equal(b1.connection, 'live', 'the stream goes on with the other topics');
    assert.deepEqual(b1.denied, ['board:1']);
    assert.ok(!b1.topics.includes('board:1'), `bob's granted topics: ${b1.topics}`);
    const bLog = await H.sseLog(B.page);
    assert.ok(bLog.controls.some((c) => Array.isArray(c.revoked) && c.revoked.includes('board:1')),
      `bob's client got no control {revoked}: ${JSON.stringify(bLog.controls)}`);
    await H.waitFor("bob's board note", async () => /bob is not a member of board 1/.test((await state(B.page)).note),
      { timeout: POLL_DEADLINE_MS });

    // A new card reaches bob by a poll, not as an event.
    const second = H.uniqueTitle('seen by bob');
    await H.postCard(sidecar.url, second, { headers: { cookie: 'user=alice' } });
    await H.waitForCard(B.page, second, { timeout: POLL_DEADLINE_MS });
    assert.ok(!(await H.sseLog(B.page)).events.some((e) => e.type === 'card.created' && e.title === second),
      'bob got the card as an event after board:1 was revoked');
    assert.equal(await H.badgeState(B.page), 'live');
    assert.equal(await H.badgeState(C.page), 'live');

    for (const w of [C, B]) assert.equal(await H.footerError(w.page), '', 'the page shows an error in its footer');
    assert.equal(C.console.errors.length + B.console.errors.length, 0,
      `console errors:\n${C.console.describe()}\n${B.console.describe()}`);
  } finally {
    for (const [page, name] of shots) await H.screenshot(page, name);
    await cleanup.run();
  }
});
