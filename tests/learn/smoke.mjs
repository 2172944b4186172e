// Smoke run of the learn-mode fixtures WITHOUT a sidecar: the legacy app and json-server, alice
// and bob each driving the demo page and the json-server page (own browser context per user
// and app) for DURATION_MS at once, the pages polling the backends directly. Exits 0 only if
// every flow of every page ran at least twice and every mutation was answered 2xx.
//
//   (cd tests/browser && npm install) && (cd tests/learn/jsonserver && npm install)
//   node tests/learn/smoke.mjs

import * as H from '../browser/harness.mjs';
import { driveDemoPage, driveJsonServerPage, mutationLog } from './flows.mjs';
import { startJsonServer } from './jsonserver/start.mjs';

const DURATION_MS = Number(process.env.LEARN_SMOKE_MS || 20_000);
const POLL_MS = 1000;
const USERS = ['alice', 'bob'];
const MIN_RUNS = 2;

/** One user's page on one app: its own context, console watch and mutation log. */
async function openPage(browser, cleanup, { app, user, url, demo }) {
  const context = await H.newUserContext(browser, url, demo ? user : null);
  cleanup.add(() => context.close());
  const page = await context.newPage();
  const consoleWatch = H.watchConsole(page, `${app}/${user}`, { ignore: [/Failed to load resource.*404/] });
  const log = mutationLog(page);
  const target = demo ? `${url}/?poll_ms=${POLL_MS}` : `${url}/?poll_ms=${POLL_MS}&user=${user}`;
  if (demo) await H.gotoDemo(page, target);
  else {
    await page.goto(target, { waitUntil: 'domcontentloaded' });
    await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 15_000, polling: 50 });
  }
  return { app, user, page, console: consoleWatch, log, drive: demo ? driveDemoPage : driveJsonServerPage };
}

/** Prints one page's results; returns the list of problems found. */
function report(p) {
  const problems = [];
  console.log(`\n${p.app} / ${p.user}: actions ${JSON.stringify(p.counts)}`);
  for (const [flow, n] of Object.entries(p.counts)) {
    if (n < MIN_RUNS) problems.push(`${p.app}/${p.user}: flow ${flow} ran ${n} time(s), fewer than ${MIN_RUNS}`);
  }
  for (const [route, s] of Object.entries(p.log.summary())) console.log(`  ${route.padEnd(42)} ${s.count} ${JSON.stringify(s.statuses)}`);
  for (const e of p.log.bad()) problems.push(`${p.app}/${p.user}: ${e.method} ${e.path} → ${e.failed ? e.failure : e.status}`);
  if (p.console.errors.length) problems.push(`${p.app}/${p.user}: console errors:\n${p.console.describe()}`);
  return problems;
}

async function main() {
  const cleanup = H.cleanupStack();
  try {
    const legacy = await H.startLegacyApp();
    cleanup.add(() => legacy.stop());
    const json = await startJsonServer({});
    cleanup.add(() => json.stop());
    const chromium = await H.launchBrowser();
    cleanup.add(() => chromium.close());
    console.log(`legacy app ${legacy.url}, json-server ${json.url}; driving ${USERS.join(' and ')} for ${DURATION_MS} ms`);

    const pages = [];
    for (const user of USERS) {
      pages.push(await openPage(chromium.browser, cleanup, { app: 'demo', user, url: legacy.url, demo: true }));
      pages.push(await openPage(chromium.browser, cleanup, { app: 'json-server', user, url: json.url, demo: false }));
    }
    const started = Date.now();
    const results = await Promise.allSettled(pages.map((p) => p.drive(p.page, { durationMs: DURATION_MS, user: p.user })));
    console.log(`driven for ${Date.now() - started} ms`);

    const problems = [];
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') pages[i].counts = r.value;
      else {
        pages[i].counts = {};
        problems.push(`${pages[i].app}/${pages[i].user}: the driver failed: ${r.reason?.stack || r.reason}`);
      }
    });
    for (const p of pages) problems.push(...report(p));
    const total = pages.reduce((n, p) => n + p.log.entries.length, 0);
    console.log(`\n${total} mutations, ${problems.length} problem(s)`);
    for (const line of problems) console.log(`PROBLEM ${line}`);
    return problems.length === 0;
  } finally {
    await cleanup.run();
  }
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
