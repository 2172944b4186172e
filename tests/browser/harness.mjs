// Shared harness of the real-browser tests: the bundled legacy app and the real sse-sidecar
// binary on ephemeral loopback ports, headless Chromium (Debian's, via playwright-core).
//
// Every wait has a deadline and polls a condition; nothing sleeps a fixed time hoping for the
// best. Every process started here is stopped by its PID (SIGTERM, then SIGKILL after a
// deadline); a process-exit hook kills whatever a crashed test left behind.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const BIN = process.env.SSE_SIDECAR_BIN || path.join(ROOT, 'target', 'debug', 'sse-sidecar');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(here, 'artifacts');
export const DEMO_YAML_PATH = path.join(ROOT, 'conf', 'demo.yaml');
export const LEGACY_APP = path.join(ROOT, 'examples', 'legacy-app', 'server.js');

// ---------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `promise`'s value, or with `fallback` after `ms` (the timer is cleared). */
export function within(promise, ms, fallback = undefined) {
  let timer;
  const timeout = new Promise((r) => {
    timer = setTimeout(() => r(fallback), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls `fn` (sync or async) until it returns a truthy value, which is returned. Throws after
 * `timeout` ms with `what` and the last value or error seen. Exceptions from `fn` count as
 * "not yet".
 */
export async function waitFor(what, fn, { timeout = 10_000, interval = 25 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await delay(interval);
  }
}

/**
 * Waits until `fn()` has returned the same (JSON-equal) value for `stableMs` in a row and
 * returns that value: "wait until stable", bounded by `timeout`.
 */
export async function waitStable(what, fn, { stableMs = 500, timeout = 10_000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let since = 0;
  for (;;) {
    let v;
    try {
      v = JSON.stringify(await fn());
    } catch (e) {
      v = `error: ${e.message}`;
    }
    const now = Date.now();
    if (v !== last) {
      last = v;
      since = now;
    } else if (now - since >= stableMs && !v.startsWith('error:')) {
      return JSON.parse(v);
    }
    if (now >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} to be stable (last: ${last})`);
    await delay(interval);
  }
}

/** A port the OS just handed out on 127.0.0.1 (bound, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function httpJson(url, init) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/** Every child still running: killed by PID if the test process exits without stopping it. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** Tracks a spawned child: killed by PID if the test process exits first; `child.exited`. */
export function track(child) {
  running.add(child);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  return child;
}

/**
 * Stops `child` by its PID: `signal` (SIGTERM), then SIGKILL when it has not exited after
 * `timeout` ms. Resolves with {code, signal, ms, killed}.
 */
export async function stopProcess(child, { signal = 'SIGTERM', timeout = 10_000 } = {}) {
  const started = Date.now();
  if (child.exitCode !== null || child.signalCode !== null) {
    return { code: child.exitCode, signal: child.signalCode, ms: 0, killed: false };
  }
  try {
    process.kill(child.pid, signal);
  } catch {
    /* already gone */
  }
  let result = await within(child.exited, timeout, null);
  let killed = false;
  if (!result) {
    killed = true;
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone meanwhile */
    }
    result = await child.exited;
  }
  return { ...result, ms: Date.now() - started, killed };
}

// ---------------------------------------------------------------------------------------
// The legacy app
// ---------------------------------------------------------------------------------------

/**
 * `node examples/legacy-app/server.js --port 0 --quiet`; the address comes from its first
 * stdout line, `listening on http://HOST:PORT`.
 */
export async function startLegacyApp({ timeout = 10_000 } = {}) {
  const child = track(spawn(process.execPath, [LEGACY_APP, '--port', '0', '--quiet'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  child.stdout.setEncoding('utf8');
  let stdout = '';
  const firstLine = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`legacy app printed no first line in ${timeout} ms; stderr: ${stderr}`)), timeout);
    const onData = (d) => {
      stdout += d;
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(stdout.slice(0, nl).trim());
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`legacy app exited (${code}) before listening; stderr: ${stderr}`));
    });
  }).catch(async (e) => {
    await stopProcess(child);
    throw e;
  });
  child.stdout.resume(); // nothing else goes to stdout; keep the pipe drained anyway
  const m = /^listening on (http:\/\/([^:/]+):(\d+))$/.exec(firstLine);
  if (!m) {
    await stopProcess(child);
    throw new Error(`unexpected first line from the legacy app: ${JSON.stringify(firstLine)}`);
  }
  return {
    url: m[1],
    address: `${m[2]}:${m[3]}`,
    pid: child.pid,
    process: child,
    stderr: () => stderr,
    stop: () => stopProcess(child),
  };
}

/** `GET /__stats` of the legacy app: {requests, by_route, polls, by_status}. */
export async function backendStats(appUrl) {
  const { status, body } = await httpJson(`${appUrl}/__stats`);
  if (status !== 200) throw new Error(`GET /__stats: ${status}`);
  return body;
}

/** `POST /__stats/reset`: every counter back to zero. */
export async function resetBackendStats(appUrl) {
  const { status } = await httpJson(`${appUrl}/__stats/reset`, { method: 'POST' });
  if (status !== 200) throw new Error(`POST /__stats/reset: ${status}`);
}

/** The GET endpoints the demo page polls (as `/__stats` by_route keys). */
export const POLLED_ROUTES = [
  'GET /api/boards/{board}/cards',
  'GET /api/conversations/{conv}/messages',
  'GET /api/sessions',
  'GET /api/activity',
  'GET /api/ui/clicks/summary',
];

/** Sum of the GET requests to the polled list endpoints in a `/__stats` answer. */
export function polledGets(stats) {
  return POLLED_ROUTES.reduce((n, route) => n + (stats.by_route?.[route] || 0), 0);
}

/** Which polled routes have been hit (for assertion messages). */
export function polledBreakdown(stats) {
  return Object.fromEntries(POLLED_ROUTES.map((r) => [r, stats.by_route?.[r] || 0]));
}

// ---------------------------------------------------------------------------------------
// YAML: a tiny line-based editor for the known layout of conf/demo.yaml
// ---------------------------------------------------------------------------------------

/**
 * Sets a top-level key (`listen`) or a key one level down (`sse.enabled`) in YAML text laid
 * out like conf/demo.yaml (top-level keys at column 0, their children indented by exactly two
 * spaces). `value` is written as JSON (strings quoted, numbers and booleans bare). A missing
 * key is added (under its parent, or as a new parent block at the end).
 */
export function setYamlKey(text, dotted, value) {
  const parts = dotted.split('.');
  if (parts.length < 1 || parts.length > 2) throw new Error(`setYamlKey: unsupported key ${dotted}`);
  const scalar = JSON.stringify(value);
  const lines = text.split('\n');
  const keyRe = (indent, key) => new RegExp(`^${indent}${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(\\s|$)`);
  if (parts.length === 1) {
    const i = lines.findIndex((l) => keyRe('', parts[0]).test(l));
    if (i >= 0) lines[i] = `${parts[0]}: ${scalar}`;
    else lines.push(`${parts[0]}: ${scalar}`);
    return lines.join('\n');
  }
  const [parent, key] = parts;
  const p = lines.findIndex((l) => keyRe('', parent).test(l));
  if (p < 0) {
    const tail = lines.length && lines[lines.length - 1] === '' ? lines.length - 1 : lines.length;
    lines.splice(tail, 0, `${parent}:`, `  ${key}: ${scalar}`);
    return lines.join('\n');
  }
  if (!/^[^:]+:\s*(#.*)?$/.test(lines[p])) throw new Error(`setYamlKey: ${parent} is not a block mapping`);
  // The parent's block: the following lines that are indented, blank or comments.
  let end = p + 1;
  while (end < lines.length && (/^\s/.test(lines[end]) || lines[end] === '' || lines[end].startsWith('#'))) end++;
  for (let i = p + 1; i < end; i++) {
    if (keyRe('  ', key).test(lines[i])) {
      lines[i] = `  ${key}: ${scalar}`;
      return lines.join('\n');
    }
  }
  lines.splice(p + 1, 0, `  ${key}: ${scalar}`);
  return lines.join('\n');
}

/** conf/demo.yaml's text with the three addresses replaced and a 1 s shutdown grace period. */
export function withAddresses(yaml, { port, upstream, adminPort }) {
  let text = setYamlKey(yaml, 'listen', `127.0.0.1:${port}`);
  text = setYamlKey(text, 'upstream.address', upstream);
  text = setYamlKey(text, 'admin.listen', `127.0.0.1:${adminPort}`);
  text = setYamlKey(text, 'shutdown.grace_period_seconds', 1);
  return text;
}

// ---------------------------------------------------------------------------------------
// The sidecar
// ---------------------------------------------------------------------------------------

/**
 * Starts the sidecar binary with `yaml` (default: conf/demo.yaml) in front of `upstream`
 * ("host:port"), on two free ports, config and log in a temp dir. Resolves once the admin
 * `/healthz` and the proxy's `/api/sse/status` both answer 200.
 */
export async function startSidecar({ yaml, upstream, env = {}, readyTimeout = 15_000 } = {}) {
  if (!upstream) throw new Error('startSidecar: upstream ("host:port") is required');
  if (!fs.existsSync(BIN)) {
    throw new Error(`the sidecar binary is missing: ${BIN} (build it with cargo build, or set SSE_SIDECAR_BIN)`);
  }
  const source = yaml ?? fs.readFileSync(DEMO_YAML_PATH, 'utf8');
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-browser-'));
  const configPath = path.join(dir, 'sidecar.yaml');
  const logPath = path.join(dir, 'sidecar.log');
  fs.writeFileSync(configPath, withAddresses(source, { port, upstream, adminPort }));

  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  let child = null;
  const childEnv = { ...process.env, RUST_LOG: 'info', ...env };
  if (!('DISABLE_SSE_SYSTEM' in env)) delete childEnv.DISABLE_SSE_SYSTEM;

  const log = () => {
    try {
      return fs.readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };

  async function launch() {
    const fd = fs.openSync(logPath, 'a');
    try {
      child = track(spawn(BIN, ['--config', configPath], {
        cwd: dir,
        env: childEnv,
        stdio: ['ignore', 'ignore', fd],
      }));
    } finally {
      fs.closeSync(fd);
    }
    const proc = child;
    const deadline = Date.now() + readyTimeout;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`sidecar exited early (${proc.exitCode ?? proc.signalCode}); log:\n${log()}`);
      }
      const ok = await Promise.all([
        fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.status === 200, () => false),
        fetch(`${url}/api/sse/status`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.status === 200, () => false),
      ]);
      if (ok[0] && ok[1]) return;
      if (Date.now() >= deadline) {
        await stopProcess(proc);
        throw new Error(`sidecar not ready in ${readyTimeout} ms; log:\n${log()}`);
      }
      await delay(25);
    }
  }

  await launch();

  const sidecar = {
    url,
    adminUrl,
    configPath,
    logPath,
    dir,
    port,
    adminPort,
    get pid() {
      return child && child.pid;
    },
    get running() {
      return !!child && child.exitCode === null && child.signalCode === null;
    },
    log,
    /** SIGTERM by PID, wait for the exit (SIGKILL after 10 s). */
    async stop() {
      if (!child) return null;
      return stopProcess(child);
    },
    /**
     * SIGTERM, wait for the exit, run `whileDown` (if given) while nothing listens, then
     * start again with the same ports and config file. Returns timings.
     */
    async restart({ whileDown } = {}) {
      const termAt = Date.now();
      const stopped = await stopProcess(child);
      const exitedAt = Date.now();
      if (whileDown) await whileDown();
      const startAt = Date.now();
      await launch();
      const readyAt = Date.now();
      return { termAt, exitedAt, startAt, readyAt, stopped };
    },
    /**
     * Rewrites the config file the way an operator's editor would (write a temp file, then
     * rename it over the old one); `mutator(text) → text`. The sidecar reloads on its own.
     */
    rewriteConfig(mutator) {
      const before = fs.readFileSync(configPath, 'utf8');
      const after = mutator(before);
      const tmp = `${configPath}.tmp`;
      fs.writeFileSync(tmp, after);
      fs.renameSync(tmp, configPath);
      return after;
    },
    /** `GET /admin/status.json` of the admin listener. */
    async status() {
      const { status, body } = await httpJson(`${adminUrl}/admin/status.json`);
      if (status !== 200) throw new Error(`GET /admin/status.json: ${status}`);
      return body;
    },
    /** `sse.connections` of the admin status: open event streams. */
    async connections() {
      const s = await sidecar.status();
      return s.sse.connections;
    },
    /** Removes the temp dir (config and log); call after stop(). */
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return sidecar;
}

// ---------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Headless Debian Chromium (no browser download: playwright-core only drives it). Launched as
 * a browser server so its PID is known. Resolves with {browser, pid, close}: `close()` closes
 * it gracefully, then makes sure that PID is gone (SIGKILL by PID after a deadline).
 */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM=/path)`);
  const server = await chromium.launchServer({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const proc = server.process();
  const pid = proc.pid;
  const exited = proc.exitCode !== null || proc.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => proc.once('exit', resolve));
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const browser = await chromium.connect(server.wsEndpoint());
  const close = async () => {
    await browser.close().catch(() => {});
    await within(server.close().catch(() => {}), 10_000);
    const gone = await within(exited.then(() => true), 5_000, false);
    if (!gone) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
      await exited;
    }
  };
  return { browser, pid, close };
}

/**
 * Collects a page's console errors and uncaught exceptions. `errors` holds
 * `{type, text, location, at}`; `ignore` is a list of RegExps for expected lines.
 */
export function watchConsole(page, label, { ignore = [] } = {}) {
  const watcher = {
    label,
    errors: [],
    ignored: [],
    all: [],
    /** Pretty list for assertion messages. */
    describe() {
      return watcher.errors.map((e) => `[${label}] ${e.type}: ${e.text}${e.location ? ` (${e.location})` : ''}`).join('\n');
    },
  };
  page.on('console', (msg) => {
    const loc = msg.location();
    const entry = { type: msg.type(), text: msg.text(), location: loc && loc.url ? `${loc.url}:${loc.lineNumber}` : '', at: Date.now() };
    watcher.all.push(entry);
    if (msg.type() !== 'error') return;
    if (ignore.some((re) => re.test(entry.text))) watcher.ignored.push(entry);
    else watcher.errors.push(entry);
  });
  page.on('pageerror', (err) => {
    watcher.errors.push({ type: 'pageerror', text: String(err && err.stack ? err.stack : err), location: '', at: Date.now() });
  });
  return watcher;
}

/**
 * Records the requests a page makes (and their outcome) — `filter(url)` chooses which.
 * Entries: {url, method, at, done, failed, failure, status}.
 */
export function recordRequests(page, filter) {
  const entries = [];
  const byReq = new Map();
  page.on('request', (req) => {
    if (!filter(req.url(), req)) return;
    const e = { url: req.url(), method: req.method(), at: Date.now(), done: false, failed: false, failure: null, status: null };
    entries.push(e);
    byReq.set(req, e);
  });
  page.on('response', (res) => {
    const e = byReq.get(res.request());
    if (e) e.status = res.status();
  });
  page.on('requestfinished', (req) => {
    const e = byReq.get(req);
    if (e) e.done = true;
  });
  page.on('requestfailed', (req) => {
    const e = byReq.get(req);
    if (e) {
      e.done = true;
      e.failed = true;
      e.failure = req.failure() && req.failure().errorText;
    }
  });
  return entries;
}

/** Saves a full-page screenshot as tests/browser/artifacts/<name>.png (best effort). */
export async function screenshot(page, name) {
  try {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
    return file;
  } catch (e) {
    console.error(`screenshot ${name} failed: ${e.message}`);
    return null;
  }
}

/**
 * A new browser context signed in as `user` (the demo page reads the `user` cookie; the
 * cookie is set before the first navigation so the event stream carries it too).
 */
export async function newUserContext(browser, baseUrl, user) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  if (user) await context.addCookies([{ name: 'user', value: user, url: baseUrl }]);
  return context;
}

/** Opens the demo page at `url` in `context`; resolves once `<body data-ready="true">`. */
export async function openDemo(context, url, { timeout = 15_000 } = {}) {
  const page = await context.newPage();
  await gotoDemo(page, url, { timeout });
  return page;
}

/** Navigates `page` to the demo at `url`; resolves once `<body data-ready="true">`. */
export async function gotoDemo(page, url, { timeout = 15_000 } = {}) {
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout, polling: 50 });
  return page;
}

/**
 * Counts the main-frame navigations of `page` from now on (a reload would be one).
 * Returns a live object `{count, urls}`.
 */
export function trackNavigations(page) {
  const nav = { count: 0, urls: [] };
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) {
      nav.count++;
      nav.urls.push(frame.url());
    }
  });
  return nav;
}

/**
 * Subscribes (through the client's public API: `window.legacyApp.client`) to the page's
 * state changes, events, resets and controls, logged with `Date.now()` in `window.__sse`,
 * and plants a random marker that only survives if the page is never reloaded. Call once the
 * page is ready. Resolves with the marker.
 */
export async function instrument(page) {
  return page.evaluate(() => {
    if (!window.__sse) {
      const log = { marker: Math.random().toString(36).slice(2), states: [], events: [], resets: [], controls: [] };
      window.__sse = log;
      const c = window.legacyApp.client;
      if (!c) throw new Error('the page has no sse client (window.legacyApp.client is null)');
      c.onStateChange((state, info) => log.states.push({ at: Date.now(), state, reason: info.reason, role: info.role, epoch: info.epoch }));
      c.onEvent((e) => log.events.push({ at: Date.now(), id: e.id, type: e.type, title: e.data && e.data.title }));
      c.onReset((r) => log.resets.push({ at: Date.now(), ...r }));
      c.onControl((ctl) => log.controls.push({ at: Date.now(), ...ctl }));
    }
    return window.__sse.marker;
  });
}

/** The log `instrument` keeps: {marker, states, events, resets, controls}. */
export function sseLog(page) {
  return page.evaluate(() => window.__sse);
}

/** What the page's client says: {state, role, epoch, lastEventId, polling, pollCount, user}. */
export function clientInfo(page) {
  return page.evaluate(() => {
    const app = window.legacyApp;
    const c = app.client;
    return {
      state: c && c.state,
      role: c && c.role,
      epoch: c && c.info && c.info.epoch,
      lastEventId: c && c.lastEventId,
      polling: app.polling,
      pollCount: app.pollCount,
      user: app.user,
      connection: app.connection,
    };
  });
}

/**
 * Asserts `check()` (which throws on failure) holds throughout `ms` milliseconds, checked
 * every `interval` ms and once more at the end: an observation window, e.g. "no polls for
 * 4 s". Resolves with the window's real length.
 */
export async function holdsFor(ms, check, { interval = 250 } = {}) {
  const start = Date.now();
  const end = start + ms;
  for (;;) {
    await check();
    const now = Date.now();
    if (now >= end) return now - start;
    await delay(Math.min(interval, end - now));
  }
}

/** POSTs a card to board 1 through `baseUrl` (the sidecar or the app itself): the card. */
export async function postCard(baseUrl, title, { column = 'todo', headers = {} } = {}) {
  const { status, body } = await httpJson(`${baseUrl}/api/boards/1/cards`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ title, column }),
  });
  if (status !== 201) throw new Error(`POST ${baseUrl}/api/boards/1/cards: ${status} ${JSON.stringify(body)}`);
  return body;
}

/** The badge's raw state (`data-state`: the client's state, or `no-sidecar`). */
export function badgeState(page) {
  return page.evaluate(() => document.querySelector('[data-testid="status-badge"]').dataset.state);
}

/** The error line the page shows in its footer (`data-testid="error"`), '' when none. */
export function footerError(page) {
  return page.evaluate(() => {
    const node = document.querySelector('[data-testid="error"]');
    return node && !node.hidden ? node.textContent : '';
  });
}

/** The badge's visible text. */
export function badgeText(page) {
  return page.locator('[data-testid="status-badge"]').textContent();
}

/** Waits until the badge's `data-state` is one of `states` (a string or a list). */
export async function waitForBadge(page, states, { timeout = 15_000 } = {}) {
  const wanted = Array.isArray(states) ? states : [states];
  try {
    await page.waitForFunction(
      (w) => w.includes(document.querySelector('[data-testid="status-badge"]')?.dataset.state),
      wanted,
      { timeout, polling: 25 },
    );
  } catch (e) {
    const now = await badgeState(page).catch(() => '?');
    throw new Error(`badge did not reach ${wanted.join('|')} in ${timeout} ms (it is ${now}): ${e.message.split('\n')[0]}`);
  }
}

/** Waits until the page's card list shows a card titled `title`; resolves with its id. */
export async function waitForCard(page, title, { timeout = 5_000 } = {}) {
  const handle = await page.waitForFunction(
    (t) => {
      for (const node of document.querySelectorAll('[data-testid="card"]')) {
        if (node.querySelector('[data-testid="card-title"]')?.textContent === t) return node.dataset.cardId;
      }
      return false;
    },
    title,
    { timeout, polling: 'raf' },
  );
  return handle.jsonValue();
}

/** Titles of the cards a page shows. */
export function cardTitles(page) {
  return page.$$eval('[data-testid="card-title"]', (nodes) => nodes.map((n) => n.textContent));
}

/**
 * Installs (in the page) a MutationObserver that records `Date.now()` the first time a card
 * titled `title` is rendered: `window.__cardSeenAt[title]`. Browser clocks and Node's are the
 * same OS clock, so the time can be compared with a click time taken in another page.
 */
export function watchForCard(page, title) {
  return page.evaluate((t) => {
    window.__cardSeenAt = window.__cardSeenAt || {};
    const list = document.querySelector('[data-testid="cards"]');
    const check = () => {
      if (window.__cardSeenAt[t]) return true;
      for (const node of list.querySelectorAll('[data-testid="card-title"]')) {
        if (node.textContent === t) {
          window.__cardSeenAt[t] = Date.now();
          return true;
        }
      }
      return false;
    };
    if (check()) return;
    const obs = new MutationObserver(() => {
      if (check()) obs.disconnect();
    });
    obs.observe(list, { childList: true, subtree: true, characterData: true });
  }, title);
}

/** A unique, readable card title for this run. */
export function uniqueTitle(prefix) {
  return `${prefix} ${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * A cleanup stack: `add(fn)` in setup order, `run()` in reverse order; every step runs even
 * when one fails (errors are collected and rethrown together).
 */
export function cleanupStack() {
  const steps = [];
  return {
    add(fn) {
      steps.push(fn);
    },
    async run() {
      const errors = [];
      while (steps.length) {
        const fn = steps.pop();
        try {
          await fn();
        } catch (e) {
          errors.push(e);
        }
      }
      if (errors.length) throw new AggregateError(errors, `cleanup failed: ${errors.map((e) => e.message).join('; ')}`);
    },
  };
}

/**
 * Sets up the usual world — legacy app, sidecar in front of it, browser — and registers their
 * stops on `cleanup`. Returns {app, sidecar, browser}.
 */
export async function startWorld(cleanup, sidecarOpts = {}) {
  const app = await startLegacyApp();
  cleanup.add(() => app.stop());
  const sidecar = await startSidecar({ upstream: app.address, ...sidecarOpts });
  cleanup.add(async () => {
    await sidecar.stop();
    if (!process.env.KEEP_SIDECAR_LOGS) sidecar.cleanup();
  });
  const chromiumProc = await launchBrowser();
  cleanup.add(() => chromiumProc.close());
  return { app, sidecar, browser: chromiumProc.browser, browserPid: chromiumProc.pid };
}
