// The learn-mode acceptance steps shared by the demo and the json-server tests: the
// onboarding config (addresses and learn mode only), `sse-sidecar learn --live --into` and
// `check` on the real binary, applying the suggested file, a real EventSource (Chromium's)
// that records every event of the running config's types, and the metric sums compared
// before and after the live phase.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as H from '../browser/harness.mjs';

/** How long the pages are driven while the sidecar learns (LEARN_MS shortens local runs). */
export const LEARN_MS = Number(process.env.LEARN_MS || 120_000);
/** How long they are driven again with the suggested rules live. */
export const LIVE_MS = Number(process.env.LEARN_LIVE_MS || 30_000);

/** The onboarding file: listen, upstream, admin (replaced by the harness) and learn mode. */
export const LEARN_ONLY_YAML = [
  'listen: "127.0.0.1:8080"',
  'upstream:',
  '  address: "127.0.0.1:3000"',
  'admin:',
  '  listen: "127.0.0.1:9090"',
  'learn:',
  '  enabled: true',
  '',
].join('\n');

/**
 * `sse-sidecar learn --admin … --live --into <running config>`, written next to it, then
 * `sse-sidecar check` of that file. Resolves with {text, file, check: {status, output}}.
 */
export function suggest(sidecar) {
  const learn = spawnSync(H.BIN, ['learn', '--admin', sidecar.adminUrl, '--live', '--into', sidecar.configPath], { encoding: 'utf8' });
  if (learn.status !== 0) throw new Error(`sse-sidecar learn failed (${learn.status}): ${learn.stderr}`);
  const file = path.join(sidecar.dir, 'suggested.yaml');
  fs.writeFileSync(file, learn.stdout);
  const check = spawnSync(H.BIN, ['check', file], { encoding: 'utf8' });
  return { text: learn.stdout, file, check: { status: check.status, output: `${check.stdout}${check.stderr}` } };
}

/** Makes `text` the running config; resolves with the status once its version is running. */
export async function apply(sidecar, text) {
  const before = (await sidecar.status()).config.version;
  sidecar.rewriteConfig(() => text);
  return H.waitFor('the suggested config to be running', async () => {
    const s = await sidecar.status();
    return s.config.version !== before ? s : null;
  }, { timeout: 15_000 });
}

/** The sum of every series of `name` (`sse_sidecar_…`) in a scrape. */
export async function metricSum(sidecar, name) {
  const text = await (await fetch(`${sidecar.adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * A Chromium page on the sidecar's origin holding `new EventSource(...)` on `topics` (as
 * `user`, by cookie, when given), recording the data of every event of the running config's
 * types. Resolves once `hello` arrived: {hello, events(), close()}.
 */
export async function eventStream(browser, sidecar, topics, user = null) {
  const context = await H.newUserContext(browser, sidecar.url, user);
  const page = await context.newPage();
  await page.goto(`${sidecar.url}/api/sse/status`);
  const cfg = await (await fetch(`${sidecar.adminUrl}/admin/config.json`)).json();
  const types = Object.keys(cfg.config.event_types || {});
  const hello = await page.evaluate(({ topics, types }) => new Promise((resolve, reject) => {
    window.__events = [];
    const es = new EventSource(`/api/sse/events?topics=${topics}`);
    for (const t of types) es.addEventListener(t, (e) => window.__events.push(JSON.parse(e.data)));
    es.addEventListener('hello', (e) => resolve(JSON.parse(e.data)));
    es.onerror = () => reject(new Error(`the stream on ${topics} failed (readyState ${es.readyState})`));
  }), { topics, types });
  return {
    hello,
    events: () => page.evaluate(() => window.__events),
    close: () => context.close(),
  };
}

/**
 * Checks the live phase: every 2xx mutation with an X-Mutation-Id has an event on the
 * stream naming it as origin, on exactly the topics `topicsOf(mutation)` says the page
 * shows its change under; returns the problems found.
 */
export function eventProblems(mutations, events, topicsOf) {
  const byOrigin = new Map(events.filter((e) => e.origin && e.origin.mutation).map((e) => [e.origin.mutation, e]));
  const problems = [];
  for (const m of mutations.filter((m) => m.mutationId && m.status >= 200 && m.status < 300)) {
    const e = byOrigin.get(m.mutationId);
    const want = JSON.stringify([...topicsOf(m)].sort());
    if (!e) problems.push(`no event for ${m.method} ${m.path} (${m.mutationId})`);
    else if (JSON.stringify([...e.topics].sort()) !== want) {
      problems.push(`${m.method} ${m.path}: event ${e.type} on ${JSON.stringify(e.topics)}, not ${want}`);
    }
  }
  return problems;
}

/** The polled routes whose coverage (over the window) is not 100 %, or that saw no change. */
export function coverageProblems(status, routes) {
  const problems = [];
  for (const route of routes) {
    const c = (status.coverage || []).find((r) => r.route === route);
    if (!c) problems.push(`${route} is not a polled route of the running config`);
    else if (!(c.changes > 0)) problems.push(`${route}: no change seen in the live phase`);
    else if (c.coverage !== 1) problems.push(`${route}: coverage ${c.coverage} (${c.covered}/${c.changes}, last uncovered ${c.last_uncovered_url})`);
  }
  return problems;
}

/** The counters the live phase must not move: events rejected, 2xx mutations unmatched. */
export async function liveCounters(sidecar) {
  return {
    rejected: await metricSum(sidecar, 'sse_sidecar_events_rejected_total'),
    unmatched: await metricSum(sidecar, 'sse_sidecar_mutations_unmatched_total'),
  };
}

/**
 * The live phase's verdict: an event for every mutation on exactly its topics (waited for
 * with a deadline), the counters of `before` unmoved, and `polledRoutes` polled routes all
 * at 100 % coverage. `text` is the suggested file, shown on failure.
 */
export async function checkLive(sidecar, { stream, mutations, topicsOf, before, polledRoutes, text }) {
  const problems = await H.waitFor('an event for every mutation', async () => {
    const found = eventProblems(mutations, await stream.events(), topicsOf);
    return found.length === 0 ? found : null;
  }, { timeout: 10_000 }).catch(async () => eventProblems(mutations, await stream.events(), topicsOf));
  assert.deepEqual(problems, [], `live phase:\n${text}`);
  const after = await liveCounters(sidecar);
  assert.equal(after.rejected, before.rejected, 'no event was rejected by its schema');
  assert.equal(after.unmatched, before.unmatched, 'every 2xx mutation matched a rule');
  const status = await sidecar.status();
  const routes = (status.coverage || []).map((r) => r.route);
  assert.equal(routes.length, polledRoutes, `the ${polledRoutes} polled lists are polled routes: ${JSON.stringify(routes)}`);
  assert.deepEqual(coverageProblems(status, routes), [], JSON.stringify(status.coverage, null, 1));
}
