// Learn mode in front of a REST backend the project did not write: json-server (npm) with a
// db of boards, cards, conversations and messages, and a small page that polls board 1's
// cards and conversation 1's messages. alice and bob drive it (cards: create, rename, move,
// delete; messages) for LEARN_MS (2 min) with only listen/upstream/admin and learn mode in
// the config; the suggested file passes `check`; applied, the same flows derive an event for
// every mutation on exactly the board's or the conversation's topic (a real EventSource),
// none rejected or unmatched, and both polled routes' coverage reads 100 %. The page knows
// nothing of the sidecar: the test tags each mutation with an X-Mutation-Id on the way out
// (Playwright routing) to find its event.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as H from './harness.mjs';
import { driveJsonServerPage } from '../learn/flows.mjs';
import { startJsonServer } from '../learn/jsonserver/start.mjs';
import * as L from '../learn/acceptance.mjs';

const TOPICS = ['board:1', 'conversation:1'];
/** Cards change board 1's list, messages conversation 1's. */
const topicsOf = (m) => (m.path.startsWith('/cards') ? ['board:1'] : ['conversation:1']);
const POLL_MS = 250;

/** Tags every mutation the page sends with an X-Mutation-Id; records {mutationId, method, path, status}. */
async function tagMutations(page, user) {
  const ids = new Map();
  const log = [];
  await page.route('**/*', (route) => {
    const req = route.request();
    if (['GET', 'HEAD', 'OPTIONS'].includes(req.method())) return route.continue();
    const id = `${user}-${ids.size + 1}`;
    ids.set(req, id);
    return route.continue({ headers: { ...req.headers(), 'x-client-id': `learn-${user}`, 'x-mutation-id': id } });
  });
  page.on('response', (res) => {
    const id = ids.get(res.request());
    if (id) log.push({ mutationId: id, method: res.request().method(), path: new URL(res.url()).pathname, status: res.status() });
  });
  return log;
}

async function openPage(browser, sidecar, user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${sidecar.url}/?poll_ms=${POLL_MS}&user=${user}`, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 15_000, polling: 50 });
  return { user, page };
}

async function drive(pages, ms) {
  const counts = await Promise.all(pages.map((p) => driveJsonServerPage(p.page, { durationMs: ms, user: p.user })));
  return Object.fromEntries(pages.map((p, i) => [p.user, counts[i]]));
}

test('learn mode on json-server: the suggested rules derive every mutation live, coverage 100 %', { timeout: 15 * 60_000 }, async () => {
  const cleanup = H.cleanupStack();
  try {
    const json = await startJsonServer({});
    cleanup.add(() => json.stop());
    const sidecar = await H.startSidecar({ yaml: L.LEARN_ONLY_YAML, upstream: `127.0.0.1:${json.port}` });
    cleanup.add(async () => {
      await sidecar.stop();
      if (!process.env.KEEP_SIDECAR_LOGS) sidecar.cleanup();
    });
    const chromium = await H.launchBrowser();
    cleanup.add(() => chromium.close());
    const pages = [await openPage(chromium.browser, sidecar, 'alice'), await openPage(chromium.browser, sidecar, 'bob')];
    console.log(`learn phase: ${JSON.stringify(await drive(pages, L.LEARN_MS))}`);
    const s = L.suggest(sidecar);
    fs.mkdirSync(H.ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(H.ARTIFACTS, 'learn-jsonserver-suggested.yaml'), s.text);
    assert.equal(s.check.status, 0, `the suggested file fails check:\n${s.check.output}\n${s.text}`);
    await L.apply(sidecar, s.text);

    const stream = await L.eventStream(chromium.browser, sidecar, TOPICS.join(','));
    cleanup.add(() => stream.close());
    assert.deepEqual(stream.hello.denied, [], `the suggested authorization grants the topics:\n${s.text}`);
    for (const p of pages) p.log = await tagMutations(p.page, p.user);
    const before = await L.liveCounters(sidecar);
    console.log(`live phase: ${JSON.stringify(await drive(pages, L.LIVE_MS))}`);
    const mutations = pages.flatMap((p) => p.log);
    assert.ok(mutations.length > 0, 'mutations were sent in the live phase');
    await L.checkLive(sidecar, { stream, mutations, topicsOf, before, polledRoutes: 2, text: s.text });
  } finally {
    await cleanup.run();
  }
});
