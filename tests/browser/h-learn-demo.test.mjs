// Learn mode in front of the demo app: the sidecar starts with only listen/upstream/admin and
// `learn.enabled`; alice and bob drive every flow of the demo page (cards: create, rename,
// move, delete; messages; sign in/out; activity; button clicks) for LEARN_MS (2 min). The
// file `sse-sidecar learn --live --into` writes passes `check`; applied, the pages go live,
// the same flows run again, every mutation derives an event on exactly the topic the page
// subscribes to for the list it changes (read by a real EventSource), none is rejected or
// unmatched, and every polled route's coverage reads 100 %.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as H from './harness.mjs';
import { driveDemoPage, mutationLog } from '../learn/flows.mjs';
import * as L from '../learn/acceptance.mjs';

const PAGE_TOPICS = ['board:1', 'conversation:general', 'presence', 'activity', 'ui'];

/** The topic of the list a demo mutation changes, as the page subscribes to it. */
function topicsOf(m) {
  if (/^\/api\/(boards\/1\/cards|cards\/[^/]+)$/.test(m.path)) return ['board:1'];
  if (m.path === '/api/conversations/general/messages') return ['conversation:general'];
  if (/^\/api\/sessions\/[^/]+\/activity$/.test(m.path)) return ['activity'];
  if (/^\/api\/sessions(\/[^/]+)?$/.test(m.path)) return ['presence'];
  if (m.path === '/api/ui/clicks') return ['ui'];
  return [`(no list for ${m.method} ${m.path})`];
}
const POLL_MS = 250;

async function openPage(browser, sidecar, user) {
  const context = await H.newUserContext(browser, sidecar.url, user);
  const page = await context.newPage();
  const log = mutationLog(page);
  await H.gotoDemo(page, `${sidecar.url}/?poll_ms=${POLL_MS}`);
  return { user, page, log };
}

/** Both pages driven at once for `ms`; throws if a driver failed. */
async function drive(pages, ms) {
  const counts = await Promise.all(pages.map((p) => driveDemoPage(p.page, { durationMs: ms, user: p.user })));
  return Object.fromEntries(pages.map((p, i) => [p.user, counts[i]]));
}

test('learn mode: the rules suggested from two users on the demo derive every mutation live, coverage 100 %', { timeout: 15 * 60_000 }, async () => {
  const cleanup = H.cleanupStack();
  try {
    const { sidecar, browser } = await H.startWorld(cleanup, { yaml: L.LEARN_ONLY_YAML });
    const pages = [await openPage(browser, sidecar, 'alice'), await openPage(browser, sidecar, 'bob')];
    const rssBefore = await L.metricSum(sidecar, 'process_resident_memory_bytes');
    const learned = await drive(pages, L.LEARN_MS);
    const rssAfter = await L.metricSum(sidecar, 'process_resident_memory_bytes');
    const mib = (b) => (b / 1048576).toFixed(1);
    console.log(`learn phase: ${JSON.stringify(learned)}; RSS ${mib(rssBefore)} → ${mib(rssAfter)} MiB`);
    const s = L.suggest(sidecar);
    fs.mkdirSync(H.ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(H.ARTIFACTS, 'learn-demo-suggested.yaml'), s.text);
    assert.equal(s.check.status, 0, `the suggested file fails check:\n${s.check.output}\n${s.text}`);
    await L.apply(sidecar, s.text);

    const stream = await L.eventStream(browser, sidecar, PAGE_TOPICS.join(','), 'alice');
    cleanup.add(() => stream.close());
    assert.deepEqual(stream.hello.denied, [], `the suggested authorization grants the page's topics:\n${s.text}`);
    for (const p of pages) {
      await H.gotoDemo(p.page, `${sidecar.url}/?poll_ms=${POLL_MS}`);
      await H.waitFor(`${p.user}'s page live`, () => p.page.evaluate(() => window.legacyApp.connection === 'live'), { timeout: 15_000 });
    }
    const from = pages.map((p) => p.log.entries.length);
    const before = await L.liveCounters(sidecar);
    const live = await drive(pages, L.LIVE_MS);
    console.log(`live phase: ${JSON.stringify(live)}`);
    const mutations = pages.flatMap((p, i) => p.log.entries.slice(from[i]));
    assert.ok(mutations.some((m) => m.mutationId), 'the live pages send their mutations through the sse client');
    await L.checkLive(sidecar, { stream, mutations, topicsOf, before, polledRoutes: 5, text: s.text });
  } finally {
    await cleanup.run();
  }
});
