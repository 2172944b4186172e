// Playwright drivers for the learn-mode acceptance test: each runs every user flow of a page,
// round after round, until `durationMs` has elapsed, and resolves with the number of actions
// performed per flow. Every action waits for its HTTP answer and for its effect on the page,
// with a deadline; between actions there is a short random think time (bounded).
//
// A driver only touches the cards it created itself, so two users driving the same board at
// once never race on a card (no 404s from a card the other user deleted).

import { waitFor } from '../browser/harness.mjs';

/** How long one action may take (HTTP answer plus effect on the page). */
export const ACTION_TIMEOUT_MS = 10_000;
const THINK_MIN_MS = 30;
const THINK_MAX_MS = 200;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const think = () => sleep(THINK_MIN_MS + Math.random() * (THINK_MAX_MS - THINK_MIN_MS));
const pathOf = (url) => new URL(url).pathname;
const tid = (id) => `[data-testid="${id}"]`;
const cardSel = (id) => `${tid('card')}[data-card-id=${JSON.stringify(String(id))}]`;
const nextColumn = (c) => ({ todo: 'doing', doing: 'done', done: 'todo' })[c] || 'todo';
let serial = 0;
/** The driver's newest card (each round creates one before renaming, moving, deleting it). */
const lastOwn = (mine) => {
  if (!mine.length) throw new Error('no card of this driver to act on');
  return mine.at(-1);
};
const label = (user, what) => `${user} ${what} ${Date.now().toString(36)}-${++serial}`;

/**
 * Runs `action` and waits for the page's `method` request to a path matching `pathRe` to be
 * answered; throws unless the answer is 2xx. Resolves with the Playwright Response.
 */
async function expectResponse(page, method, pathRe, action, timeout = ACTION_TIMEOUT_MS) {
  const answered = page.waitForResponse(
    (r) => r.request().method() === method && pathRe.test(pathOf(r.url())),
    { timeout },
  );
  answered.catch(() => {}); // the action's own error wins below
  let sent = false;
  const onRequest = (r) => {
    if (r.method() === method && pathRe.test(pathOf(r.url()))) sent = true;
  };
  page.on('request', onRequest);
  await action();
  const res = await answered.catch((e) => {
    throw new Error(`no answer to ${method} ${pathRe} within ${timeout} ms (the request was ${sent ? '' : 'not '}sent): ${e.message.split('\n')[0]}`);
  }).finally(() => page.off('request', onRequest));
  if (!res.ok()) throw new Error(`${method} ${pathOf(res.url())} answered ${res.status()}`);
  return res;
}

/** Waits until `fn(arg)` is truthy in the page; the error names `what`. */
async function effect(page, what, fn, arg, timeout = ACTION_TIMEOUT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`the page did not show ${what} within ${timeout} ms: ${e.message.split('\n')[0]}`);
  }
}

/**
 * Runs the flows (name → async () => actions done, default 1) in order, round after round,
 * until `durationMs` has elapsed (the action under way is finished). Resolves with counts.
 */
async function runRounds(flows, durationMs) {
  const counts = Object.fromEntries(Object.keys(flows).map((name) => [name, 0]));
  const end = Date.now() + durationMs;
  while (Date.now() < end) {
    for (const [name, flow] of Object.entries(flows)) {
      if (Date.now() >= end) break;
      counts[name] += (await flow()) ?? 1;
      await think();
    }
  }
  return counts;
}

// ---------------------------------------------------------------------------------------
// The json-server page (tests/learn/jsonserver/public)
// ---------------------------------------------------------------------------------------

/** Cards: create, rename, move, delete one of the driver's own cards on the json-server page. */
function jsonServerCardFlows(page, user, mine) {
  const card = (id) => page.locator(cardSel(id));
  const titleIs = ([sel, t]) => document.querySelector(sel)?.querySelector('[data-testid="card-title"]')?.textContent === t;
  const flows = {
    async cardCreate() {
      const title = label(user, 'card');
      await page.fill(tid('card-title-input'), title);
      const res = await expectResponse(page, 'POST', /^\/cards$/, () => page.click(tid('card-add-button')));
      const { id } = await res.json();
      await effect(page, `new card ${id}`, titleIs, [cardSel(id), title]);
      mine.push({ id, column: 'todo' });
    },
    async cardRename() {
      const c = lastOwn(mine);
      const title = label(user, 'renamed');
      // Typed and sent in one turn of the page's event loop: a poll re-rendering the list in
      // between (json-server reuses the ids of deleted cards) cannot lose the typed title.
      const typeAndSend = () => card(c.id).evaluate((node, t) => {
        node.querySelector('[data-testid="card-rename-input"]').value = t;
        node.querySelector('[data-testid="card-rename"]').click();
      }, title);
      await expectResponse(page, 'PATCH', new RegExp(`^/cards/${c.id}$`), typeAndSend);
      await effect(page, `card ${c.id} renamed`, titleIs, [cardSel(c.id), title]);
    },
    async cardMove() {
      const c = lastOwn(mine);
      const column = nextColumn(c.column);
      await expectResponse(page, 'PATCH', new RegExp(`^/cards/${c.id}$`), () => card(c.id).locator(tid('card-move')).selectOption(column));
      await effect(page, `card ${c.id} in ${column}`, ([sel, col]) => document.querySelector(sel)?.dataset.column === col, [cardSel(c.id), column]);
      c.column = column;
    },
    async cardDelete() {
      const c = lastOwn(mine);
      await expectResponse(page, 'DELETE', new RegExp(`^/cards/${c.id}$`), () => card(c.id).locator(tid('card-delete')).click());
      await effect(page, `card ${c.id} gone`, (sel) => !document.querySelector(sel), cardSel(c.id));
      mine.splice(mine.indexOf(c), 1);
    },
  };
  return flows;
}

/** Messages: post one to conversation 1 and wait until it is listed. */
function jsonServerMessageFlow(page, user) {
  return async function message() {
    const text = label(user, 'says hi');
    await page.fill(tid('message-input'), text);
    const res = await expectResponse(page, 'POST', /^\/messages$/, () => page.click(tid('message-send-button')));
    const { id } = await res.json();
    await effect(page, `message ${id}`, (mid) => !!document.querySelector(`[data-testid="message"][data-message-id="${mid}"]`), String(id));
  };
}

/**
 * Drives the json-server page (already open, `body[data-ready]`) as `user` for `durationMs`:
 * create, rename, move and delete cards, post messages. Resolves with per-flow counts.
 */
export async function driveJsonServerPage(page, { durationMs, user }) {
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: ACTION_TIMEOUT_MS });
  const mine = [];
  return runRounds({ ...jsonServerCardFlows(page, user, mine), message: jsonServerMessageFlow(page, user) }, durationMs);
}

// ---------------------------------------------------------------------------------------
// The demo page (examples/legacy-app/public)
// ---------------------------------------------------------------------------------------

/** Cards on board 1 of the demo page: create, rename, move, delete (own cards only). */
function demoCardFlows(page, user, mine) {
  const card = (id) => page.locator(cardSel(id));
  const titleIs = ([sel, t]) => document.querySelector(sel)?.querySelector('[data-testid="card-title"]')?.textContent === t;
  const cardPath = (id) => new RegExp(`^/api/cards/${encodeURIComponent(id)}$`);
  const flows = {
    async cardCreate() {
      const title = label(user, 'card');
      await page.fill(tid('card-title-input'), title);
      await page.selectOption(tid('card-column-select'), 'todo');
      const res = await expectResponse(page, 'POST', /^\/api\/boards\/1\/cards$/, () => page.click(tid('card-add-button')));
      const { id } = await res.json();
      await effect(page, `new card ${id}`, titleIs, [cardSel(id), title]);
      mine.push({ id, column: 'todo' });
    },
    async cardRename() {
      const c = lastOwn(mine);
      const title = label(user, 'renamed');
      // Opened, typed and saved in one turn of the page's event loop: a poll re-rendering the
      // board in between cannot take the editor away.
      const renameNow = () => card(c.id).evaluate((node, t) => {
        node.querySelector('[data-testid="card-rename"]').click();
        // The editor replaces the card's content (the page finds the card by its id).
        const editor = document.querySelector(`[data-card-id="${CSS.escape(node.dataset.cardId)}"] [data-testid="card-rename-input"]`);
        editor.value = t;
        editor.closest('[data-card-id]').querySelector('[data-testid="card-rename-save"]').click();
      }, title);
      await expectResponse(page, 'PATCH', cardPath(c.id), renameNow);
      await effect(page, `card ${c.id} renamed`, titleIs, [cardSel(c.id), title]);
    },
    async cardMove() {
      const c = lastOwn(mine);
      const column = nextColumn(c.column);
      await expectResponse(page, 'PATCH', cardPath(c.id), () => card(c.id).locator(tid('card-move')).selectOption(column));
      await effect(page, `card ${c.id} in ${column}`, ([sel, col]) => document.querySelector(sel)?.dataset.column === col, [cardSel(c.id), column]);
      c.column = column;
    },
    async cardDelete() {
      const c = lastOwn(mine);
      await expectResponse(page, 'DELETE', cardPath(c.id), () => card(c.id).locator(tid('card-delete')).click());
      await effect(page, `card ${c.id} gone`, (sel) => !document.querySelector(sel), cardSel(c.id));
      mine.splice(mine.indexOf(c), 1);
    },
  };
  return flows;
}

/** #general: type a message, send it, wait until it is listed. */
function demoMessageFlow(page, user) {
  return async function message() {
    const text = label(user, 'says hi');
    await page.fill(tid('message-input'), text);
    const res = await expectResponse(page, 'POST', /^\/api\/conversations\/general\/messages$/, () => page.click(tid('message-send-button')));
    const { id } = await res.json();
    await effect(page, `message ${id}`, (mid) => !!document.querySelector(`[data-testid="message"][data-message-id="${mid}"]`), id);
  };
}

/** Tracked buttons: click "save" and "share" in turn; wait until that button's count went up. */
function demoClickFlow(page) {
  let turn = 0;
  const countOf = ([button, above]) => {
    const text = document.querySelector(`[data-testid="click-count"][data-button="${button}"]`)?.textContent || '';
    const n = Number(text.split(': ')[1] || 0);
    return above === undefined ? n : n > above;
  };
  return async function click() {
    const button = turn++ % 2 === 0 ? 'save' : 'share';
    const before = await page.evaluate(countOf, [button]);
    await expectResponse(page, 'POST', /^\/api\/ui\/clicks$/, () => page.click(tid(`track-${button}`)));
    await effect(page, `the ${button} count above ${before}`, countOf, [button, before]);
  };
}

/** The page reports activity on load and when the tab is shown again, at most every 10 s. */
const ACTIVITY_THROTTLE_MS = 10_000 + 500;
const ACTIVITY_PATH = /^\/api\/sessions\/[^/]+\/activity$/;

/** Waits for the page to be ready as `user` after a reload (old page gone, new one loaded). */
function readyAs(page, user) {
  return waitFor(`the demo page ready as ${user}`, () => page.evaluate(
    (u) => document.body.dataset.ready === 'true' && window.legacyApp?.user === u,
    user,
  ).catch(() => false), { timeout: ACTION_TIMEOUT_MS });
}

/**
 * The user hides the tab and comes back to it (no headless Chromium hides a page, so the
 * visibility is emulated in the page: `document.visibilityState` flips, `visibilitychange`
 * fires twice).
 */
function hideAndShow(page) {
  return page.evaluate(() => {
    if (!window.__visibility) {
      window.__visibility = { state: 'visible' };
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => window.__visibility.state });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__visibility.state === 'hidden' });
    }
    for (const state of ['hidden', 'visible']) {
      window.__visibility.state = state;
      document.dispatchEvent(new Event('visibilitychange'));
    }
  });
}

/**
 * Activity (PUT /api/sessions/{id}/activity): the tab shown again when the page's 10 s
 * throttle allows it, otherwise the board reopened (a reload). Waits for the new item.
 */
function demoActivityFlow(page, user, tracked) {
  return async function activity() {
    const shown = Date.now() - tracked.lastAt >= ACTIVITY_THROTTLE_MS;
    const res = await expectResponse(page, 'PUT', ACTIVITY_PATH, async () => {
      if (shown) await hideAndShow(page);
      else await page.reload({ waitUntil: 'domcontentloaded' });
    });
    if (!shown) await readyAs(page, user);
    const { at } = await res.json();
    await effect(page, `${user}'s activity item`, ([u, ms]) => {
      const t = new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
      return [...document.querySelectorAll('[data-testid="activity-item"]')].some((n) => n.textContent === `${u} is on /boards/1 ${t}`);
    }, [user, at]);
  };
}

/** Picks `target` in the user picker: POST a session for it, DELETE ours, reload as it. */
async function switchUser(page, target) {
  const ended = page.waitForResponse((r) => r.request().method() === 'DELETE' && /^\/api\/sessions\/[^/]+$/.test(pathOf(r.url())), { timeout: ACTION_TIMEOUT_MS });
  ended.catch(() => {});
  await expectResponse(page, 'POST', /^\/api\/sessions$/, () => page.selectOption(tid('user-picker'), target));
  const del = await ended;
  if (!del.ok()) throw new Error(`DELETE ${pathOf(del.url())} answered ${del.status()}`);
  await readyAs(page, target);
}

/**
 * Sessions: sign in as `guest` (which signs `user` out), then back as `user`. Counts two
 * actions (each switch is a sign-in and a sign-out).
 */
function demoSessionFlow(page, user, guest) {
  return async function session() {
    await switchUser(page, guest);
    await switchUser(page, user);
    return 2;
  };
}

/**
 * Drives the demo page (already open and ready, signed in as `user`) for `durationMs`: cards
 * (create, rename, move, delete), messages, tracked-button clicks, activity, and sign in /
 * sign out through the user picker (as `guest`, default carol, and back). Resolves with counts.
 */
export async function driveDemoPage(page, { durationMs, user, guest = user === 'carol' ? 'alice' : 'carol' }) {
  await readyAs(page, user);
  const mine = [];
  // The last activity report of this page (its load counts): the throttle starts from it.
  const tracked = { lastAt: Date.now() };
  page.on('response', (r) => {
    if (r.request().method() === 'PUT' && ACTIVITY_PATH.test(pathOf(r.url()))) tracked.lastAt = Date.now();
  });
  return runRounds({
    ...demoCardFlows(page, user, mine),
    message: demoMessageFlow(page, user),
    click: demoClickFlow(page),
    activity: demoActivityFlow(page, user, tracked),
    session: demoSessionFlow(page, user, guest),
  }, durationMs);
}

// ---------------------------------------------------------------------------------------
// The mutation log
// ---------------------------------------------------------------------------------------

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/** `/api/cards/c12` → `/api/cards/{id}`: numeric and letter+digits segments become `{id}`. */
export function routeOf(p) {
  return p.split('/').map((s) => (/^(\d+|[a-z]\d+)$/i.test(s) ? '{id}' : s)).join('/');
}

/**
 * Records every mutation `page` sends from now on (any method but GET/HEAD/OPTIONS), across
 * reloads: entries {method, path, route, at, status, failed, failure, mutationId}, where
 * `mutationId` is the X-Mutation-Id header the sidecar's client adds (null without it).
 * `summary()` groups them by `METHOD route` with counts per status; `bad()` lists non-2xx.
 */
export function mutationLog(page) {
  const entries = [];
  const byReq = new Map();
  page.on('request', (req) => {
    if (SAFE.has(req.method())) return;
    const path = pathOf(req.url());
    const e = { method: req.method(), path, route: routeOf(path), at: Date.now(), status: null, failed: false, failure: null, mutationId: req.headers()['x-mutation-id'] ?? null };
    entries.push(e);
    byReq.set(req, e);
  });
  page.on('response', (res) => {
    const e = byReq.get(res.request());
    if (e) e.status = res.status();
  });
  page.on('requestfailed', (req) => {
    const e = byReq.get(req);
    if (e) Object.assign(e, { failed: true, failure: req.failure()?.errorText ?? 'failed' });
  });
  return {
    entries,
    summary() {
      const out = {};
      for (const e of entries) {
        const s = (out[`${e.method} ${e.route}`] ??= { count: 0, statuses: {} });
        s.count++;
        const k = e.failed ? 'failed' : String(e.status ?? 'pending');
        s.statuses[k] = (s.statuses[k] || 0) + 1;
      }
      return out;
    },
    bad: () => entries.filter((e) => e.failed || e.status === null || e.status < 200 || e.status > 299),
  };
}
