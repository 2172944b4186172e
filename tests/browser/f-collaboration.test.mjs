// f. Collaboration semantics (issue #17): alice and bob (two browser contexts) on board 1 of
// the demo page, through the sidecar with `conflicts: reject` on the cards family's PATCH/PUT
// rules. An optimistic rename shows on alice's page at once and on bob's through the stream; a
// rename the app refuses (422: a title over 80 characters) rolls back on alice's page and never
// shows on bob's; a rename bob started before alice renamed the same card is refused by the
// sidecar (409, the backend never sees it), rolled back on bob's page, with the conflict shown.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from './harness.mjs';

/**
 * The event path, not the polling one (the page polls every few seconds): a sanity bound, as
 * in test a. The 100 ms goal is measured by the benchmarks (docs/performance.md), not here,
 * where a loaded machine's timings would make the test fail for the wrong reason.
 */
const MAX_PROPAGATION_MS = 1_000;
/** "At once": the optimistic title is drawn before the request is answered. */
const MAX_OPTIMISTIC_MS = 250;

/**
 * Records (in the page) every title each card shows, with `Date.now()`:
 * `window.__titles[cardId] = [{at, title}]`. The first entry is the title shown now.
 */
function recordTitles(page) {
  return page.evaluate(() => {
    const log = (window.__titles = window.__titles || {});
    const list = document.querySelector('[data-testid="cards"]');
    const scan = () => {
      for (const node of list.querySelectorAll('[data-testid="card"]')) {
        const title = node.querySelector('[data-testid="card-title"]')?.textContent;
        if (title == null) continue;
        const seen = (log[node.dataset.cardId] = log[node.dataset.cardId] || []);
        if (!seen.length || seen[seen.length - 1].title !== title) seen.push({ at: Date.now(), title });
      }
    };
    scan();
    new MutationObserver(scan).observe(list, { childList: true, subtree: true, characterData: true });
  });
}

const titlesOf = (page, cardId) => page.evaluate((id) => (window.__titles[id] || []).slice(), cardId);
const shownTitle = (page, cardId) => page.evaluate(
  (id) => document.querySelector(`[data-testid="card"][data-card-id="${id}"] [data-testid="card-title"]`)?.textContent ?? null,
  cardId,
);

/** Opens the rename input of `cardId` on `page`. */
async function openRename(page, cardId) {
  await page.locator(`[data-testid="card"][data-card-id="${cardId}"] [data-testid="card-rename"]`).click();
  await page.locator('[data-testid="card-rename-input"]').waitFor({ timeout: 5_000 });
}

/** Types `title` in the open rename input and clicks Save; resolves with the click time. */
async function saveRename(page, title) {
  await page.locator('[data-testid="card-rename-input"]').fill(title);
  await page.evaluate(() => {
    document.querySelector('[data-testid="card-rename-save"]').addEventListener(
      'click', () => { window.__saveAt = Date.now(); }, { capture: true, once: true },
    );
  });
  await page.locator('[data-testid="card-rename-save"]').click();
  return page.evaluate(() => window.__saveAt);
}

async function patchCount(appUrl) {
  const stats = await H.backendStats(appUrl);
  return stats.by_route['PATCH /api/cards/{id}'] || 0;
}

test('f. collaboration: optimistic rename, a refused rename rolls back, a conflicting rename is caught', { timeout: 120_000 }, async (t) => {
  const cleanup = H.cleanupStack();
  const shots = [];
  try {
    const { app, sidecar, browser } = await H.startWorld(cleanup);
    const users = {};
    for (const user of ['alice', 'bob']) {
      const context = await H.newUserContext(browser, sidecar.url, user);
      cleanup.add(() => context.close());
      const page = await context.newPage();
      const consoleWatch = H.watchConsole(page, user, { ignore: [/409|422|Conflict|Unprocessable/i] });
      shots.push([page, `f-collaboration-${user}`]);
      await H.gotoDemo(page, sidecar.url);
      users[user] = { page, console: consoleWatch };
    }
    const A = users.alice;
    const B = users.bob;
    // bob's PATCHes as sent and answered (what a failure reports).
    const bPatches = [];
    B.page.on('request', (r) => {
      if (r.method() === 'PATCH') bPatches.push({ at: Date.now(), base: r.headers()['x-sse-base'] || null });
    });
    B.page.on('response', (r) => {
      if (r.request().method() === 'PATCH') bPatches.push({ at: Date.now(), status: r.status() });
    });
    await Promise.all([H.waitForBadge(A.page, 'live'), H.waitForBadge(B.page, 'live')]);
    await H.instrument(A.page);
    await H.instrument(B.page);

    // A card both pages show (posted through the sidecar: its event reaches both).
    const original = H.uniqueTitle('shared card');
    const card = await H.postCard(sidecar.url, original);
    await H.waitForCard(A.page, original, { timeout: 5_000 });
    await H.waitForCard(B.page, original, { timeout: 5_000 });
    await recordTitles(A.page);
    await recordTitles(B.page);
    await H.resetBackendStats(app.url);

    // 1. Optimistic rename: on alice's page at once, on bob's through the stream (timing reported).
    const renamed = H.uniqueTitle('renamed');
    await H.watchForCard(A.page, renamed);
    await H.watchForCard(B.page, renamed);
    await openRename(A.page, card.id);
    const clickAt = await saveRename(A.page, renamed);
    await H.waitForCard(B.page, renamed, { timeout: 5_000 });
    const aSeen = await A.page.evaluate((x) => window.__cardSeenAt[x], renamed);
    const bSeen = await B.page.evaluate((x) => window.__cardSeenAt[x], renamed);
    t.diagnostic(`rename: on alice's page ${aSeen - clickAt} ms, on bob's page ${bSeen - clickAt} ms after the click`);
    assert.ok(aSeen - clickAt <= MAX_OPTIMISTIC_MS, `alice's page showed her rename ${aSeen - clickAt} ms after the click`);
    assert.ok(bSeen - clickAt <= MAX_PROPAGATION_MS, `bob's page showed the rename ${bSeen - clickAt} ms after the click (limit ${MAX_PROPAGATION_MS} ms)`);
    await H.waitFor('the rename settled on alice\'s page', async () => (await H.footerError(A.page)) === '' && (await patchCount(app.url)) === 1);

    // 2. A title the app refuses (422): shown at once on alice's page, rolled back, never on bob's.
    const bad = 'x'.repeat(81);
    await openRename(A.page, card.id);
    await saveRename(A.page, bad);
    await H.waitFor('the refusal shown on alice\'s page', async () => /80 characters/.test(await H.footerError(A.page)), { timeout: 5_000 });
    await H.waitFor('the rollback on alice\'s page', async () => (await shownTitle(A.page, card.id)) === renamed, { timeout: 5_000 });
    const aTitles = (await titlesOf(A.page, card.id)).map((e) => e.title);
    assert.ok(aTitles.includes(bad), `alice's page never showed the optimistic title: ${JSON.stringify(aTitles)}`);
    assert.equal(aTitles[aTitles.length - 1], renamed, 'rolled back to the title before');
    await H.holdsFor(1_000, async () => {
      const bTitles = (await titlesOf(B.page, card.id)).map((e) => e.title);
      assert.ok(!bTitles.includes(bad), `bob's page showed the refused title: ${JSON.stringify(bTitles)}`);
    });
    assert.equal(await patchCount(app.url), 2, 'the refused PATCH reached the backend (which refused it)');

    // 3. Conflict: bob opens the rename, then alice renames the same card, then bob saves.
    await openRename(B.page, card.id);
    const alices = H.uniqueTitle('alice wins');
    await openRename(A.page, card.id);
    await saveRename(A.page, alices);
    await H.waitFor('alice\'s rename reached bob\'s client', async () =>
      (await H.sseLog(B.page)).events.some((e) => e.type === 'card.updated' && e.title === alices), { timeout: 5_000 });
    await H.waitFor('alice\'s rename settled', async () => (await patchCount(app.url)) === 3);
    const bobs = H.uniqueTitle('bob loses');
    await saveRename(B.page, bobs);
    await H.waitFor('the conflict shown on bob\'s page', async () =>
      /changed this card while you were editing/.test(await H.footerError(B.page)), { timeout: 12_000 })
      .catch(async (e) => {
        const seen = {
          footer: await H.footerError(B.page),
          titles: await titlesOf(B.page, card.id),
          patches: await patchCount(app.url),
          requests: bPatches,
        };
        throw new Error(`${e.message}; bob's page: ${JSON.stringify(seen)}`);
      });
    const sent = bPatches.filter((p) => 'base' in p).pop();
    const answered = bPatches.filter((p) => 'status' in p).pop();
    t.diagnostic(`bob's conflicting PATCH: base ${sent && sent.base}, answered ${answered && answered.status} after ${answered && sent ? answered.at - sent.at : '?'} ms`);
    await H.waitFor('bob\'s page shows alice\'s title', async () => (await shownTitle(B.page, card.id)) === alices, { timeout: 5_000 });
    const bTitles = (await titlesOf(B.page, card.id)).map((e) => e.title);
    assert.ok(bTitles.includes(bobs), `bob's page never showed his optimistic title: ${JSON.stringify(bTitles)}`);
    assert.equal(bTitles[bTitles.length - 1], alices, 'bob\'s rename rolled back');
    assert.equal(await patchCount(app.url), 3, 'the conflicting PATCH never reached the backend');
    await H.holdsFor(500, async () => {
      const titles = (await titlesOf(A.page, card.id)).map((e) => e.title);
      assert.ok(!titles.includes(bobs), `alice's page showed bob's refused title: ${JSON.stringify(titles)}`);
    });

    assert.equal(await H.badgeState(A.page), 'live');
    assert.equal(await H.badgeState(B.page), 'live');
    assert.equal(A.console.errors.length + B.console.errors.length, 0,
      `console errors:\n${A.console.describe()}\n${B.console.describe()}`);
  } finally {
    for (const [page, name] of shots) await H.screenshot(page, name);
    await cleanup.run();
  }
});
