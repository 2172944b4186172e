// Harness of the protocol tests: the bundled legacy app and the real sse-sidecar binary on
// ephemeral loopback ports, and a recorder around the `eventsource` npm package (a
// spec-following WHATWG EventSource for Node).
//
// Every wait polls a condition and has a deadline; nothing sleeps a fixed time hoping for the
// best. Every process started here is stopped by its PID (SIGTERM, then SIGKILL after a
// deadline), and a process-exit hook kills by PID whatever a failed test left running.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventSource } from 'eventsource';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..', '..');
export const BIN = process.env.SSE_SIDECAR_BIN || path.join(ROOT, 'target', 'debug', 'sse-sidecar');
export const DEMO_YAML = path.join(ROOT, 'conf', 'demo.yaml');
export const LEGACY_APP = path.join(ROOT, 'examples', 'legacy-app', 'server.js');

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` until it returns a truthy value (returned). Throws after `timeout` ms, naming
 * `what` and the last value or error seen; exceptions from `fn` count as "not yet".
 */
export async function waitFor(what, fn, { timeout = 5_000, interval = 20 } = {}) {
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

/** fetch with a deadline; returns {status, headers, text, json}. */
export async function http(url, init = {}) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POSTs JSON through `base` (the sidecar) with optional origin headers. */
export function postJson(base, pathname, body, { clientId, mutationId, headers = {} } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (clientId) h['x-client-id'] = clientId;
  if (mutationId) h['x-mutation-id'] = mutationId;
  return http(base + pathname, { method: 'POST', headers: h, body: JSON.stringify(body) });
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

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

function track(child) {
  running.add(child);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  return child;
}

/** SIGTERM by PID, then SIGKILL when it has not exited after `timeout` ms. */
export async function stopProcess(child, { timeout = 5_000 } = {}) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return;
  }
  let timer;
  const done = await Promise.race([
    child.exited.then(() => true),
    new Promise((r) => {
      timer = setTimeout(() => r(false), timeout);
    }),
  ]);
  clearTimeout(timer);
  if (!done) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone meanwhile */
    }
    await child.exited;
  }
}

/** `node examples/legacy-app/server.js --port 0 --quiet`; address from its first stdout line. */
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
  let firstLine;
  try {
    firstLine = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`legacy app: no first line in ${timeout} ms; stderr: ${stderr}`)), timeout);
      child.stdout.on('data', (d) => {
        stdout += d;
        const nl = stdout.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          resolve(stdout.slice(0, nl).trim());
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`legacy app exited (${code}) before listening; stderr: ${stderr}`));
      });
    });
  } catch (e) {
    await stopProcess(child);
    throw e;
  }
  const m = /^listening on (http:\/\/([^:/]+):(\d+))$/.exec(firstLine);
  if (!m) {
    await stopProcess(child);
    throw new Error(`unexpected first line from the legacy app: ${JSON.stringify(firstLine)}`);
  }
  return { url: m[1], address: `${m[2]}:${m[3]}`, stderr: () => stderr, stop: () => stopProcess(child) };
}

// ---------------------------------------------------------------------------------------
// YAML: a line editor for the known layout of conf/demo.yaml (top-level keys at column 0,
// their children indented by two spaces). Values are written as JSON scalars.
// ---------------------------------------------------------------------------------------

export function setYamlKey(text, dotted, value) {
  const parts = dotted.split('.');
  if (parts.length > 2) throw new Error(`setYamlKey: unsupported key ${dotted}`);
  const scalar = JSON.stringify(value);
  const lines = text.split('\n');
  const keyRe = (indent, key) => new RegExp(`^${indent}${key.replace(/[.]/g, '\\.')}:(\\s|$)`);
  if (parts.length === 1) {
    const i = lines.findIndex((l) => keyRe('', parts[0]).test(l));
    if (i >= 0) lines[i] = `${parts[0]}: ${scalar}`;
    else lines.push(`${parts[0]}: ${scalar}`);
    return lines.join('\n');
  }
  const [parent, key] = parts;
  const p = lines.findIndex((l) => keyRe('', parent).test(l));
  if (p < 0) {
    lines.push(`${parent}:`, `  ${key}: ${scalar}`, '');
    return lines.join('\n');
  }
  if (!/^[^:]+:\s*(#.*)?$/.test(lines[p])) throw new Error(`setYamlKey: ${parent} is not a block mapping`);
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

/** Applies `{ 'sse.enabled': false, … }` to YAML text. */
export function editYaml(text, edits) {
  let out = text;
  for (const [k, v] of Object.entries(edits)) out = setYamlKey(out, k, v);
  return out;
}

// ---------------------------------------------------------------------------------------
// The sidecar
// ---------------------------------------------------------------------------------------

/**
 * Starts the sidecar with conf/demo.yaml (plus `edits`) in front of `upstream` ("host:port"):
 * `listen`, `upstream.address` and `admin.listen` on 127.0.0.1 and free ports,
 * `shutdown.grace_period_seconds: 1`. Resolves once the admin `/healthz` and the proxy's
 * `/api/sse/status` both answer 200 (the admin listener can be up before the proxy's).
 */
export async function startSidecar({ upstream, edits = {}, readyTimeout = 15_000 } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`sidecar binary missing: ${BIN} (cargo build, or set SSE_SIDECAR_BIN)`);
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-protocol-'));
  const configPath = path.join(dir, 'sidecar.yaml');
  const logPath = path.join(dir, 'sidecar.log');
  const yaml = editYaml(fs.readFileSync(DEMO_YAML, 'utf8'), {
    listen: `127.0.0.1:${port}`,
    'upstream.address': upstream,
    'admin.listen': `127.0.0.1:${adminPort}`,
    'shutdown.grace_period_seconds': 1,
    ...edits,
  });
  fs.writeFileSync(configPath, yaml);
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  delete env.DISABLE_SSE_SYSTEM;
  delete env.SSE_SIDECAR_CONFIG;
  const fd = fs.openSync(logPath, 'a');
  let child;
  try {
    child = track(spawn(BIN, ['--config', configPath, 'run'], { cwd: dir, env, stdio: ['ignore', 'ignore', fd] }));
  } finally {
    fs.closeSync(fd);
  }
  const log = () => {
    try {
      return fs.readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  try {
    await waitFor('the sidecar admin /healthz = 200 and /api/sse/status = 200', async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw Object.assign(new Error(`sidecar exited (${child.exitCode ?? child.signalCode}); log:\n${log()}`), { fatal: true });
      }
      const r = await fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (r.status !== 200) return false;
      const s = await fetch(`${url}/api/sse/status`, { signal: AbortSignal.timeout(1_000) });
      await s.arrayBuffer();
      return s.status === 200;
    }, { timeout: readyTimeout, interval: 25 });
  } catch (e) {
    await stopProcess(child);
    throw new Error(`${e.message}\nsidecar log:\n${log()}`);
  }
  return {
    url,
    adminUrl,
    configPath,
    dir,
    log,
    /** Rewrites the config file (temp file + rename, as an editor does); the sidecar watches it. */
    rewriteConfig(edits2) {
      const next = editYaml(fs.readFileSync(configPath, 'utf8'), edits2);
      const tmp = `${configPath}.tmp`;
      fs.writeFileSync(tmp, next);
      fs.renameSync(tmp, configPath);
    },
    async stop() {
      await stopProcess(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------
// The EventSource recorder
// ---------------------------------------------------------------------------------------

/** Every event type of conf/demo.yaml: listeners exist before `hello` arrives. */
const DEMO_TYPES = [
  'session.started', 'session.ended', 'session.activity', 'card.created', 'card.updated',
  'card.deleted', 'ui.clicked', 'message.posted',
];
const CONTROL_NAMES = ['hello', 'heartbeat', 'control', 'reset', 'message'];

/**
 * Opens an `eventsource` EventSource on `${base}/api/sse/events?topics=…` and records what it
 * sees. `lastEventId` goes in the query; `headers` are added to the request through the
 * package's `fetch` option (e.g. `Last-Event-ID`). A tap on the response body keeps the raw
 * text (`raw()`), and every request made (`requests`, with status) is counted, so automatic
 * reconnects are visible.
 *
 * `frames` holds {name, data (parsed JSON or raw string), lastEventId, at} for every named
 * event and `message`; `errors` holds {code, message, readyState, at}.
 */
export function openStream(base, { topics, lastEventId, headers = {}, query = '' } = {}) {
  let url = `${base}/api/sse/events?topics=${topics.map(encodeURIComponent).join(',')}`;
  if (lastEventId != null) url += `&lastEventId=${encodeURIComponent(lastEventId)}`;
  if (query) url += `&${query}`;
  const frames = [];
  const errors = [];
  const requests = [];
  const rawChunks = [];
  const waiters = new Set();
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const tapFetch = async (input, init) => {
    const req = { at: Date.now(), headers: { ...(init.headers || {}), ...headers }, status: null };
    requests.push(req);
    const res = await fetch(input, { ...init, headers: req.headers });
    req.status = res.status;
    notify();
    if (!res.body) return res;
    const decoder = new TextDecoder();
    const tap = new TransformStream({
      transform(chunk, controller) {
        rawChunks.push(decoder.decode(chunk, { stream: true }));
        controller.enqueue(chunk);
      },
    });
    return {
      status: res.status,
      headers: res.headers,
      redirected: res.redirected,
      url: res.url,
      body: res.body.pipeThrough(tap),
    };
  };

  const es = new EventSource(url, { fetch: tapFetch });
  const registered = new Set();
  const listen = (name) => {
    if (registered.has(name)) return;
    registered.add(name);
    es.addEventListener(name, (ev) => {
      let data = ev.data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        /* keep the string */
      }
      frames.push({ name, data, raw: ev.data, lastEventId: ev.lastEventId, at: Date.now() });
      if (name === 'hello' && data && Array.isArray(data.types)) data.types.forEach(listen);
      notify();
    });
  };
  [...CONTROL_NAMES, ...DEMO_TYPES].forEach(listen);
  es.addEventListener('error', (ev) => {
    errors.push({ code: ev.code, message: ev.message, readyState: es.readyState, at: Date.now() });
    notify();
  });
  es.addEventListener('open', notify);

  /** Resolves when `pred()` is truthy (re-checked on every frame/error), else rejects. */
  function until(what, pred, timeout = 5_000) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (e) {
          waiters.delete(check);
          clearTimeout(timer);
          reject(e);
          return;
        }
        if (v) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(v);
        }
      };
      timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}; frames: ${JSON.stringify(frames.map((f) => [f.name, f.lastEventId]))}; errors: ${JSON.stringify(errors)}; requests: ${JSON.stringify(requests.map((r) => r.status))}`));
      }, timeout);
      waiters.add(check);
      check();
    });
  }

  const domain = () => frames.filter((f) => !CONTROL_NAMES.includes(f.name));
  return {
    es,
    url,
    frames,
    errors,
    requests,
    raw: () => rawChunks.join(''),
    domain,
    until,
    /** The first `name` frame (optionally matching `pred`), waited for. */
    next: (name, pred = () => true, timeout) =>
      until(`a ${name} frame`, () => frames.find((f) => f.name === name && pred(f)), timeout),
    hello: (timeout) => until('hello', () => frames.find((f) => f.name === 'hello'), timeout).then((f) => f.data),
    close: () => es.close(),
  };
}

export { EventSource };
