#!/usr/bin/env node
// Real-browser smoke test (optional, not part of `npm test`): serves the module like the
// sidecar does (/api/sse/client.js) from a tiny stand-in server, opens a page with two
// same-origin iframes (two "tabs" sharing one stream through Web Locks + BroadcastChannel)
// in headless Chromium, and checks: one shared stream with the union of topics, relayed and
// filtered events, leader hand-over resuming from the last id, native 204 → polling via
// /api/sse/status, probing back to live, and the fetch helper headers.
//
//   node tools/browser-smoke.mjs            (needs `chromium` on PATH, or CHROMIUM=/path)
//
// Exit code 0 = pass, 1 = fail, 2 = no browser found (skipped).
import http from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const browserBin = process.env.CHROMIUM
  || ['chromium', 'chromium-browser', 'google-chrome'].find((b) => spawnSync('which', [b]).status === 0);
if (!browserBin) {
  console.log('SKIP: no chromium found');
  process.exit(2);
}

const state = { sseOn: true, streams: new Set(), connections: [], result: null };

function sseWrite(res, event, data, id) {
  let frame = '';
  if (id != null) frame += `id: ${id}\n`;
  frame += `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  res.write(frame);
}

const FRAME_HTML = `<!doctype html><meta charset="utf-8"><script type="module">
  const { createSseClient } = await import('/api/sse/client.js');
  const params = new URLSearchParams(location.search);
  const client = createSseClient({ topics: params.get('topics').split(','), probeIntervalMs: 400,
    backoff: { baseMs: 100, maxMs: 500 } });
  window.events = [];
  window.states = [];
  client.onEvent((e) => window.events.push(e.id));
  client.onStateChange((s) => window.states.push(s));
  window.client = client;
</script>`;

const PAGE_HTML = `<!doctype html><meta charset="utf-8"><body><script type="module">
const log = [];
const check = (ok, what) => log.push({ ok: !!ok, what });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, what, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) { try { if (fn()) { check(true, what); return true; } } catch {} await sleep(25); }
  check(false, what + ' (timed out)');
  return false;
}
const conns = async () => (await fetch('/test/connections')).json();
function frame(name, topics) {
  const f = document.createElement('iframe');
  f.src = '/frame.html?name=' + name + '&topics=' + topics;
  document.body.append(f);
  return f;
}
try {
  const A = frame('A', 'board:1');
  await until(() => A.contentWindow.client && A.contentWindow.client.state === 'live', 'A live');
  check(A.contentWindow.client.role === 'leader', 'A is leader, role=' + A.contentWindow.client.role);
  const B = frame('B', 'board:2');
  await until(() => B.contentWindow.client && B.contentWindow.client.state === 'live', 'B live (mirrored)');
  check(B.contentWindow.client.role === 'follower', 'B is follower');
  await until(() => false, 'settle', 300).catch(() => {});
  log.pop();
  let c = await conns();
  check(c.open === 1, 'one open stream for two tabs, open=' + c.open);
  check(c.last.includes('topics=board%3A1,board%3A2') || c.last.includes('topics=board:1,board:2'), 'union of topics: ' + c.last);
  await fetch('/test/emit?id=5&topic=board:2');
  await fetch('/test/emit?id=6&topic=board:1');
  await until(() => B.contentWindow.events.join() === '5' && A.contentWindow.events.join() === '6', 'events relayed and filtered per tab');
  check(B.contentWindow.client.lastEventId === '6', 'follower tracks lastEventId');
  A.remove();
  await until(() => B.contentWindow.client.role === 'leader' && B.contentWindow.client.state === 'live', 'B took over');
  c = await conns();
  check(c.open === 1, 'still one stream after hand-over, open=' + c.open);
  check(c.last.includes('lastEventId=6'), 'hand-over resumed from last id: ' + c.last);
  check(c.last.includes('topics=board%3A2') && !c.last.includes('board%3A1'), 'new union: ' + c.last);
  // kill switch: streams dropped, the endpoint answers 204, status says polling
  await fetch('/test/sse?on=0');
  await until(() => B.contentWindow.client.state === 'polling', 'native 204 → status → polling');
  await sleep(600);
  check(B.contentWindow.client.state === 'polling', 'stays polling while switched off');
  await fetch('/test/sse?on=1');
  await until(() => B.contentWindow.client.state === 'live', 'probe → back to live');
  const res = await B.contentWindow.client.fetch('/test/echo', { method: 'POST', body: '{}' });
  const echo = await res.json();
  check(echo['x-client-id'] === B.contentWindow.client.clientId, 'X-Client-Id sent');
  check(!!echo['x-mutation-id'], 'X-Mutation-Id sent');
  check(B.contentWindow.client.isOwnEcho({ origin: { mutation: echo['x-mutation-id'] } }), 'isOwnEcho by mutation id');
  const { connectReactQuery } = await import('/api/sse/react-query.js');
  check(typeof connectReactQuery === 'function', 'react-query adapter loads as a module');
} catch (err) {
  check(false, 'exception: ' + (err && err.stack || err));
}
await fetch('/test/result', { method: 'POST', body: JSON.stringify(log) });
</script>`;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const send = (status, type, body, headers = {}) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
    res.end(body);
  };
  switch (url.pathname) {
    case '/api/sse/client.js':
      return send(200, 'text/javascript', readFileSync(join(root, 'sse-client.js')));
    case '/api/sse/react-query.js':
      return send(200, 'text/javascript', readFileSync(join(root, 'react-query.js')));
    case '/page.html':
      return send(200, 'text/html', PAGE_HTML);
    case '/frame.html':
      return send(200, 'text/html', FRAME_HTML);
    case '/api/sse/status':
      return send(200, 'application/json', JSON.stringify({
        mode: state.sseOn ? 'sse' : 'polling', epoch: 'e1', head: '6', retry_after: 0,
      }));
    case '/api/sse/events': {
      state.connections.push(req.url);
      if (!state.sseOn) return send(204, 'text/plain', '');
      res.writeHead(200, {
        'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no',
      });
      res.write('retry: 1000\n\n');
      const topics = (url.searchParams.get('topics') || '').split(',').filter(Boolean);
      sseWrite(res, 'hello', {
        epoch: 'e1', head: '4', topics, denied: [], heartbeat_ms: 2000, types: ['card.updated'],
      });
      const stream = { res, topics };
      state.streams.add(stream);
      const beat = setInterval(() => sseWrite(res, 'heartbeat', { head: '6' }), 2000);
      req.on('close', () => {
        clearInterval(beat);
        state.streams.delete(stream);
      });
      return undefined;
    }
    case '/test/connections':
      return send(200, 'application/json', JSON.stringify({
        open: state.streams.size, total: state.connections.length, last: state.connections.at(-1),
      }));
    case '/test/emit': {
      const id = url.searchParams.get('id');
      const topic = url.searchParams.get('topic');
      for (const s of state.streams) {
        if (!s.topics.includes(topic)) continue;
        sseWrite(s.res, 'card.updated', {
          id, type: 'card.updated', family: 'cards', topics: [topic], ts: Date.now(),
          origin: { client: null, mutation: null }, data: {}, invalidate: [['cards']],
        }, id);
      }
      return send(200, 'application/json', '{}');
    }
    case '/test/sse':
      state.sseOn = url.searchParams.get('on') === '1';
      if (!state.sseOn) for (const s of [...state.streams]) s.res.end();
      return send(200, 'application/json', '{}');
    case '/test/echo':
      return send(200, 'application/json', JSON.stringify({
        'x-client-id': req.headers['x-client-id'], 'x-mutation-id': req.headers['x-mutation-id'],
      }));
    case '/test/result': {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        state.result = JSON.parse(body);
        send(200, 'application/json', '{}');
      });
      return undefined;
    }
    default:
      return send(404, 'text/plain', 'not found');
  }
});

server.listen(0, '127.0.0.1', async () => {
  const { port } = server.address();
  const profile = mkdtempSync(join(tmpdir(), 'sse-smoke-'));
  const browser = spawn(browserBin, [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions',
    `--user-data-dir=${profile}`, `http://127.0.0.1:${port}/page.html`,
  ], { stdio: 'ignore', detached: true });
  const deadline = Date.now() + 60000;
  while (!state.result && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const exited = new Promise((r) => browser.once('exit', r).once('error', r));
  try {
    process.kill(-browser.pid, 'SIGTERM'); // the browser's own process group (we started it)
  } catch {
    browser.kill('SIGTERM');
  }
  for (const s of state.streams) s.res.end();
  server.close();
  server.closeAllConnections?.();
  await exited;
  await new Promise((r) => setTimeout(r, 500));
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  } catch {
    /* a leftover temp profile is harmless */
  }
  if (!state.result) {
    console.log('FAIL: no result from the browser within 60 s');
    process.exit(1);
  }
  let failed = 0;
  for (const { ok, what } of state.result) {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
    if (!ok) failed++;
  }
  console.log(`${state.result.length - failed}/${state.result.length} browser checks passed`);
  process.exit(failed ? 1 : 0);
});
