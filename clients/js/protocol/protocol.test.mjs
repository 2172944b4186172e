// Protocol tests: the `eventsource` npm package — an independent, spec-following WHATWG
// EventSource for Node — against the REAL sse-sidecar binary in front of the REAL legacy app
// (examples/legacy-app), configured with conf/demo.yaml on ephemeral loopback ports.
//
// One sidecar serves every test but the heartbeat one (which needs `heartbeat_seconds: 1`) and
// the revocation one (its own app, whose board 1 members change, and its own sidecar with
// `authorization.cache_ttl_seconds: 1`); the kill-switch test is the last one on the shared
// sidecar and switches SSE back on in any case.
//
// Topics are authorized by the backend (conf/demo.yaml `authorization:`): board 1 is private to
// alice and bob, so streams on `board:1` carry alice's cookie (`user=alice`, the legacy app's
// identity); board 2 and `conversation:*` are visible to anyone.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import {
  EventSource,
  ROOT,
  http,
  openStream,
  postJson,
  startLegacyApp,
  startSidecar,
  waitFor,
} from './harness.mjs';

const DEMO_TYPES = [
  'card.created', 'card.deleted', 'card.updated', 'message.posted', 'session.activity',
  'session.ended', 'session.started', 'ui.clicked',
];
const HELLO_KEYS = ['client', 'denied', 'denied_reasons', 'epoch', 'head', 'heartbeat_ms', 'polling_families', 'presence', 'topics', 'types'];
const EVENT_KEYS = ['data', 'family', 'id', 'invalidate', 'origin', 'topics', 'ts', 'type'];
/** The legacy app's identity is the `user` cookie; alice and bob are the members of board 1. */
const ALICE = { cookie: 'user=alice' };
const BOB = { cookie: 'user=bob' };

let app;
let sc;
const open = new Set();

/** Opens a recorded stream that is closed after the test whatever happens. */
function stream(opts, base = sc.url) {
  const s = openStream(base, opts);
  open.add(s);
  return s;
}

let seq = 0;
const uniq = (what) => `${what} ${process.pid}-${Date.now()}-${++seq}`;

async function createCard(board, title = uniq('card'), origin = {}) {
  const r = await postJson(sc.url, `/api/boards/${board}/cards`, { title }, origin);
  assert.equal(r.status, 201, `POST /api/boards/${board}/cards: ${r.status} ${r.text}`);
  return r.json;
}

/** Domain frames of `s` as the legacy record ids they carry (data.data.id). */
const recordIds = (s) => s.domain().map((f) => f.data.data.id);

function idSeq(id) {
  const m = /^([0-9a-z]{1,32})-(\d+)$/.exec(id);
  assert.ok(m, `event id ${JSON.stringify(id)} is <epoch>-<sequence>`);
  return { epoch: m[1], seq: Number(m[2]) };
}

before(async () => {
  app = await startLegacyApp();
  try {
    sc = await startSidecar({ upstream: app.address });
  } catch (e) {
    await app.stop();
    throw e;
  }
});

afterEach(() => {
  for (const s of open) s.close();
  open.clear();
});

after(async () => {
  for (const s of open) s.close();
  if (sc) await sc.stop();
  if (app) await app.stop();
});

test('1. hello comes first (after retry:), with the contract fields and the asked topics sorted and unique', { timeout: 15_000 }, async () => {
  const s = stream({ topics: ['presence', 'board:2', 'board:1', 'board:2'], headers: ALICE });
  const hello = await s.hello();

  assert.equal(s.frames[0].name, 'hello', 'the first event dispatched is hello');
  assert.deepEqual(Object.keys(hello).sort(), HELLO_KEYS);
  assert.deepEqual(hello.topics, ['board:1', 'board:2', 'presence']);
  assert.deepEqual(hello.denied, []);
  assert.deepEqual(hello.denied_reasons, {});
  assert.equal(hello.heartbeat_ms, 15_000);
  assert.deepEqual(hello.polling_families, []);
  // The demo's boards are presence topics: alice is listed on both (the stream's own member).
  assert.deepEqual(Object.keys(hello.presence).sort(), ['board:1', 'board:2']);
  for (const topic of ['board:1', 'board:2']) {
    assert.ok(hello.presence[topic].members.some((m) => m.id === 'alice'), `alice on ${topic}: ${JSON.stringify(hello.presence[topic])}`);
  }
  assert.ok(hello.types.includes('card.created'));
  assert.deepEqual([...hello.types].sort(), DEMO_TYPES);
  const head = idSeq(hello.head);
  assert.equal(head.epoch, hello.epoch);

  // On the wire: `retry: <ms>` in [retry_min_ms, retry_max_ms] (defaults 1000..5000) precedes it,
  // and hello carries the head as its id, so any EventSource that reconnects before the first
  // event resumes exactly after the head.
  const m = /^retry: (\d+)\n\nid: ([^\n]+)\nevent: hello\ndata: /.exec(s.raw());
  assert.ok(m, `the stream opens with retry: then hello; got ${JSON.stringify(s.raw().slice(0, 80))}`);
  assert.ok(Number(m[1]) >= 1000 && Number(m[1]) <= 5000, `retry ${m[1]} within [1000, 5000]`);
  assert.equal(m[2], hello.head, 'the id: line of hello is its head');
  assert.equal(s.frames[0].lastEventId, hello.head, 'EventSource took the head as its last event id');

  // The head agrees with /api/sse/status and with X-Sse-Head on a proxied GET.
  const status = await http(`${sc.url}/api/sse/status`);
  assert.equal(status.json.head, hello.head);
  assert.equal(status.json.epoch, hello.epoch);
  const get = await http(`${sc.url}/api/boards/1/cards`);
  assert.equal(get.status, 200);
  assert.equal(get.headers.get('x-sse-head'), hello.head);
});

test('2. a card created through the sidecar arrives as a named card.created event, only on its board', { timeout: 15_000 }, async () => {
  const b1 = stream({ topics: ['board:1'], headers: ALICE });
  const b2 = stream({ topics: ['board:2'] });
  await Promise.all([b1.hello(), b2.hello()]);

  const origin = { clientId: uniq('client').replace(/\W/g, '-'), mutationId: uniq('mut').replace(/\W/g, '-') };
  const card = await createCard(1, uniq('first'), origin);
  const f = await b1.next('card.created', (x) => x.data.data.id === card.id);
  const ev = f.data;
  assert.deepEqual(Object.keys(ev).sort(), EVENT_KEYS);
  assert.equal(f.lastEventId, ev.id, 'the id: line equals the JSON id');
  idSeq(ev.id);
  assert.equal(ev.type, 'card.created');
  assert.equal(ev.family, 'cards');
  assert.deepEqual(ev.topics, ['board:1']);
  assert.deepEqual(ev.origin, { client: origin.clientId, mutation: origin.mutationId });
  assert.deepEqual(ev.invalidate, [['cards', '1']]);
  assert.deepEqual(ev.data, card, 'data: response carries the backend answer');
  assert.equal(typeof ev.ts, 'number');
  assert.ok(Math.abs(Date.now() - ev.ts) < 60_000, `ts ${ev.ts} is a current Unix ms time`);

  // Liveness of the board:2 stream: a later board 2 card is the ONLY event it ever sees, so the
  // board 1 event (fanned out before it) was not delivered to it.
  const card2 = await createCard(2, uniq('second'));
  await b2.next('card.created', (x) => x.data.data.id === card2.id);
  assert.deepEqual(recordIds(b2), [card2.id]);
  assert.deepEqual(b2.domain()[0].data.topics, ['board:2']);
  assert.deepEqual(b2.domain()[0].data.origin, { client: null, mutation: null });

  // And symmetrically board:1 never sees board 2's card.
  const card3 = await createCard(1, uniq('third'));
  await b1.next('card.created', (x) => x.data.data.id === card3.id);
  assert.deepEqual(recordIds(b1), [card.id, card3.id]);
  assert.equal(b1.errors.length + b2.errors.length, 0);
});

test('3. resume: a new EventSource from the last id gets exactly the events in between, in order, once', { timeout: 20_000 }, async () => {
  const first = stream({ topics: ['board:1'], headers: ALICE });
  await first.hello();
  const a = await createCard(1, uniq('A'));
  const fa = await first.next('card.created', (x) => x.data.data.id === a.id);
  first.close();
  const lastId = fa.lastEventId;

  const between = [];
  for (const t of ['B', 'C', 'D']) between.push(await createCard(1, uniq(t)));
  // Noise on another topic must not be replayed.
  await createCard(2, uniq('noise'));

  const checkOrder = (s, expected, label) => {
    const dom = s.domain();
    assert.deepEqual(dom.map((f) => f.data.data.id), expected, `${label}: exactly these, in order`);
    const seqs = dom.map((f) => idSeq(f.lastEventId).seq);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${label}: ids strictly increase`);
    assert.ok(seqs[0] > idSeq(lastId).seq, `${label}: nothing at or before the resume id`);
    for (const f of dom) assert.equal(f.lastEventId, f.data.id);
    assert.equal(s.frames.filter((f) => f.name === 'reset').length, 0, `${label}: no reset`);
    assert.equal(s.frames[0].name, 'hello');
  };

  // (a) ?lastEventId= in the query.
  const q = stream({ topics: ['board:1'], lastEventId: lastId, headers: ALICE });
  await q.until('3 replayed events', () => q.domain().length >= 3);
  const e = await createCard(1, uniq('E')); // live after replay: proves nothing else is queued
  await q.next('card.created', (x) => x.data.data.id === e.id);
  checkOrder(q, [...between.map((c) => c.id), e.id], 'query');

  // (b) the Last-Event-ID header (set through the package's fetch option).
  const h = stream({ topics: ['board:1'], headers: { ...ALICE, 'Last-Event-ID': lastId } });
  await h.until('4 replayed events', () => h.domain().length >= 4);
  const f = await createCard(1, uniq('F'));
  await h.next('card.created', (x) => x.data.data.id === f.id);
  checkOrder(h, [...between.map((c) => c.id), e.id, f.id], 'header');

  // (c) the header wins over the query parameter.
  const both = stream({ topics: ['board:1'], lastEventId: 'garbage', headers: { ...ALICE, 'Last-Event-ID': lastId } });
  await both.until('5 replayed events', () => both.domain().length >= 5);
  const g = await createCard(1, uniq('G'));
  await both.next('card.created', (x) => x.data.data.id === g.id);
  checkOrder(both, [...between.map((c) => c.id), e.id, f.id, g.id], 'header+query');
  assert.equal(first.requests.length + q.requests.length + h.requests.length + both.requests.length, 4,
    'no EventSource reconnected on its own');
});

test('4. reset: a garbage id yields reset {reason: malformed_id, head}, then the stream goes on live', { timeout: 15_000 }, async () => {
  const s = stream({ topics: ['board:1'], lastEventId: 'garbage', headers: ALICE });
  const hello = await s.hello();
  const r = await s.next('reset');
  assert.deepEqual(Object.keys(r.data).sort(), ['head', 'reason']);
  assert.equal(r.data.reason, 'malformed_id');
  assert.equal(r.data.head, hello.head);
  assert.deepEqual(s.frames.slice(0, 2).map((x) => x.name), ['hello', 'reset']);
  const card = await createCard(1, uniq('after reset'));
  await s.next('card.created', (x) => x.data.data.id === card.id);
  assert.deepEqual(recordIds(s), [card.id]);

  // The other id-level reasons, each followed by live events as well.
  const { seq: head } = idSeq(hello.head);
  const otherEpoch = hello.epoch === 'zzzz' ? 'yyyy' : 'zzzz';
  for (const [id, reason] of [[`${otherEpoch}-1`, 'unknown_epoch'], [`${hello.epoch}-${head + 1000}`, 'future_id']]) {
    const t = stream({ topics: ['board:1'], lastEventId: id, headers: ALICE });
    const th = await t.hello();
    const tr = await t.next('reset');
    assert.equal(tr.data.reason, reason, `lastEventId ${id}`);
    assert.equal(tr.data.head, th.head);
    const c = await createCard(1, uniq(reason));
    await t.next('card.created', (x) => x.data.data.id === c.id);
    assert.deepEqual(recordIds(t), [c.id]);
    t.close();
  }
});

test('7. unicode and newlines in a message survive the stream exactly', { timeout: 15_000 }, async () => {
  const s = stream({ topics: ['conversation:general'] });
  await s.hello();
  const text = 'a\nb\r\nc ✓ 日本語 🎉';
  const r = await postJson(sc.url, '/api/conversations/general/messages', { author: 'alice', text });
  assert.equal(r.status, 201, r.text);
  const f = await s.next('message.posted', (x) => x.data.data.id === r.json.id);
  assert.equal(f.data.data.text, text);
  assert.equal(f.data.data.author, 'alice');
  assert.deepEqual(f.data.topics, ['conversation:general']);
  assert.deepEqual(f.data.invalidate, [['messages', 'general']]);

  // Text that looks like SSE framing, line separators and control characters: one event,
  // intact, nothing injected.
  const tricky = 'x\n\nevent: control\ndata: {"mode":"polling"}\n\nid: 1\r\rretry: 1\u2028\u2029\t\u0001 end';
  const r2 = await postJson(sc.url, '/api/conversations/general/messages', { author: 'alice', text: tricky });
  assert.equal(r2.status, 201, r2.text);
  const f2 = await s.next('message.posted', (x) => x.data.data.id === r2.json.id);
  assert.equal(f2.data.data.text, tricky);
  assert.deepEqual(s.frames.map((x) => x.name), ['hello', 'message.posted', 'message.posted']);
  assert.equal(s.errors.length, 0);
});

test('8. /api/sse/client.js: text/javascript, ETag, 304 on If-None-Match, importable, exports createSseClient', { timeout: 15_000 }, async () => {
  const r = await http(`${sc.url}/api/sse/client.js`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^text\/javascript/);
  const etag = r.headers.get('etag');
  assert.match(etag || '', /^(W\/)?"[^"]+"$/, `an ETag: ${etag}`);
  assert.ok(r.text.length > 1000);
  assert.ok(!/^\s*import\s/m.test(r.text), 'the module has no imports');

  const again = await http(`${sc.url}/api/sse/client.js`, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  assert.equal(again.text, '');
  assert.equal(again.headers.get('etag'), etag);
  const other = await http(`${sc.url}/api/sse/client.js`, { headers: { 'if-none-match': '"nope"' } });
  assert.equal(other.status, 200);

  // The bytes served are the repository's module (the binary embeds it at build time).
  const disk = fs.readFileSync(path.join(ROOT, 'clients', 'js', 'sse-client.js'), 'utf8');
  assert.ok(r.text === disk, 'served /api/sse/client.js equals clients/js/sse-client.js (rebuild the binary if not)');

  const mod = await import(`data:text/javascript;base64,${Buffer.from(r.text).toString('base64')}`);
  assert.equal(typeof mod.createSseClient, 'function');

  const rq = await http(`${sc.url}/api/sse/react-query.js`);
  assert.equal(rq.status, 200);
  assert.match(rq.headers.get('content-type') || '', /^text\/javascript/);
  const rqMod = await import(`data:text/javascript;base64,${Buffer.from(rq.text).toString('base64')}`);
  assert.equal(typeof rqMod.connectReactQuery, 'function');
});

test('8b. the served module drives the eventsource package against the real sidecar: live (private board denied), events, own echo', { timeout: 15_000 }, async () => {
  const r = await http(`${sc.url}/api/sse/client.js`);
  const { createSseClient } = await import(`data:text/javascript;base64,${Buffer.from(r.text).toString('base64')}`);
  // Anonymous: board:1 is denied, board:2 (public) is granted; the stream is live all the same.
  const client = createSseClient({
    url: `${sc.url}/api/sse/events`,
    statusUrl: `${sc.url}/api/sse/status`,
    topics: ['board:1', 'board:2'],
    EventSource,
    shareAcrossTabs: false,
    lifecycleTarget: null,
  });
  try {
    const events = [];
    client.onEvent((e) => events.push(e));
    await waitFor('client live', () => client.state === 'live', { timeout: 5_000 });
    assert.deepEqual(client.info.topics, ['board:2']);
    assert.deepEqual(client.info.denied, ['board:1']);
    const res = await client.fetch(`${sc.url}/api/boards/2/cards`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: uniq('via client') }),
    });
    assert.equal(res.status, 201);
    const card = await res.json();
    const ev = await waitFor('the event via the client', () => events.find((e) => e.data.id === card.id));
    assert.equal(ev.origin.client, client.clientId);
    assert.ok(client.isOwnEcho(ev));
    assert.equal(client.lastEventId, ev.id);
  } finally {
    client.close();
  }
  assert.equal(client.state, 'stopped');
});

test('topic authorization: an anonymous subscriber is denied the private board:1', { timeout: 10_000 }, async () => {
  const s = stream({ topics: ['board:1', 'board:2'] });
  const hello = await s.hello();
  assert.deepEqual(hello.topics, ['board:2']);
  assert.deepEqual(hello.denied, ['board:1']);

  // And nothing of board 1 reaches it: a board 1 card first, then a board 2 card, which is
  // the only event the stream ever sees.
  await createCard(1, uniq('private'));
  const card = await createCard(2, uniq('public'));
  await s.next('card.created', (x) => x.data.data.id === card.id);
  assert.deepEqual(recordIds(s), [card.id]);
});

test('topic authorization: denied_reasons says why each topic was refused', { timeout: 10_000 }, async () => {
  // Anonymous: board:1 is forbidden by the backend (GET /api/boards/1 answers 403).
  const anon = stream({ topics: ['board:1', 'board:2'] });
  const ah = await anon.hello();
  assert.deepEqual(ah.denied_reasons, { 'board:1': 'forbidden' });

  // alice: board:1 granted; `user:bob` fails its condition ({response.user} == {user});
  // `nope:1` matches no rule (default deny).
  const alice = stream({ topics: ['board:1', 'nope:1', 'user:alice', 'user:bob'], headers: ALICE });
  const h = await alice.hello();
  assert.deepEqual(h.topics, ['board:1', 'user:alice']);
  assert.deepEqual(h.denied, ['nope:1', 'user:bob']);
  assert.deepEqual(h.denied_reasons, { 'nope:1': 'no_rule', 'user:bob': 'condition_failed' });
});

test('topic authorization: a stream with every topic denied gets 403 and EventSource gives up', { timeout: 10_000 }, async () => {
  const r = await http(`${sc.url}/api/sse/events?topics=board:1`);
  assert.equal(r.status, 403);
  assert.equal(r.text.trim(), 'no topic granted: board:1 (forbidden)');

  const s = stream({ topics: ['board:1'] });
  const err = await s.until('the 403 error', () => s.errors[0]);
  assert.equal(err.code, 403);
  assert.equal(s.es.readyState, EventSource.CLOSED, 'a non-200 answer is final for EventSource');
  assert.deepEqual(s.requests.map((q) => q.status), [403]);
  assert.deepEqual(s.frames, []);

  // The same topic with a member's cookie is granted: the 403 is about who asks.
  const ok = stream({ topics: ['board:1'], headers: ALICE });
  assert.deepEqual((await ok.hello()).topics, ['board:1']);
});

test('5. kill switch in the file: control {mode: polling}, close, 204 stops EventSource for good, status says polling; back on works', { timeout: 30_000 }, async () => {
  const s = stream({ topics: ['board:1'], headers: ALICE });
  await s.hello();
  const retryMs = Number(/^retry: (\d+)/.exec(s.raw())[1]);
  const before = await createCard(1, uniq('before off'));
  const fb = await s.next('card.created', (x) => x.data.data.id === before.id);

  let switchedAt;
  try {
    switchedAt = Date.now();
    sc.rewriteConfig({ 'sse.enabled': false });
    const ctl = await s.next('control', () => true, 5_000);
    const controlMs = ctl.at - switchedAt;
    assert.equal(ctl.data.mode, 'polling');
    assert.equal(typeof ctl.data.reason, 'string');
    assert.equal(ctl.data.families, undefined, 'whole-stream polling, not per family');

    // The connection closes after the control frame: the package reports the end of the
    // stream with an error event and schedules its own reconnect (readyState CONNECTING).
    const closed = await s.until('the stream to end', () => s.errors[0]);
    assert.equal(closed.readyState, EventSource.CONNECTING);
    assert.ok(closed.at >= ctl.at);
    assert.ok(closed.at - ctl.at < 1_000, `closed ${closed.at - ctl.at} ms after the control frame`);
    assert.deepEqual(s.frames.slice(-1).map((f) => f.name), ['control'], 'control is the last frame');

    const status = await http(`${sc.url}/api/sse/status`);
    assert.equal(status.status, 200);
    assert.equal(status.json.mode, 'polling');

    // A new EventSource: 204 → error event with code 204, readyState CLOSED, no reconnect.
    const fresh = stream({ topics: ['board:1'], headers: ALICE });
    const err = await fresh.until('the 204 error', () => fresh.errors[0]);
    assert.equal(err.code, 204);
    assert.equal(fresh.es.readyState, EventSource.CLOSED);
    assert.equal(err.readyState, EventSource.CLOSED);

    // The first EventSource reconnects by itself after its `retry:` and meets the 204 too.
    const second = await s.until('the reconnect to meet 204', () => s.errors.find((e) => e.code === 204), retryMs + 4_000);
    assert.deepEqual(s.requests.map((q) => q.status), [200, 204]);
    assert.equal(s.requests[1].headers['Last-Event-ID'], fb.lastEventId, 'the package resumes with Last-Event-ID');
    assert.ok(s.requests[1].at - closed.at >= retryMs - 50,
      `reconnected ${s.requests[1].at - closed.at} ms after the close; retry: was ${retryMs}`);
    assert.equal(s.es.readyState, EventSource.CLOSED);
    assert.ok(second);
    // By now (about retry_min_ms or more later) the fresh one has still made one request only.
    assert.ok(Date.now() - err.at >= 900, `observed the 204'd EventSource for ${Date.now() - err.at} ms`);
    assert.equal(fresh.requests.length, 1, 'a 204 is final: no reconnect');
    assert.equal(fresh.frames.length, 0);

    // Pass-through is untouched.
    assert.equal((await http(`${sc.url}/api/boards/1/cards`)).status, 200);
    assert.ok(controlMs < 3_000, `control arrived ${controlMs} ms after the file was rewritten`);
  } finally {
    sc.rewriteConfig({ 'sse.enabled': true });
    await waitFor('status mode sse again', async () => (await http(`${sc.url}/api/sse/status`)).json?.mode === 'sse', { timeout: 5_000 });
  }

  // Back on: a new EventSource connects and gets live events.
  const back = stream({ topics: ['board:1'], headers: ALICE });
  await back.hello();
  const card = await createCard(1, uniq('back on'));
  await back.next('card.created', (x) => x.data.data.id === card.id);
  assert.deepEqual(recordIds(back), [card.id]);

  // Resuming from an id issued before SSE was switched off cannot be trusted: reset sse_was_off.
  const resumed = stream({ topics: ['board:1'], lastEventId: fb.lastEventId, headers: ALICE });
  const rh = await resumed.hello();
  const reset = await resumed.next('reset');
  assert.equal(reset.data.reason, 'sse_was_off');
  assert.equal(reset.data.head, rh.head);
  assert.deepEqual(resumed.domain(), [], 'nothing is replayed across the off period');
});

test('6. heartbeats: with heartbeat_seconds: 1, a heartbeat {head} arrives at least twice within 3.5 s', { timeout: 20_000 }, async () => {
  const hb = await startSidecar({ upstream: app.address, edits: { 'sse.heartbeat_seconds': 1 } });
  try {
    const s = stream({ topics: ['board:2'] }, hb.url);
    const openedAt = Date.now();
    const hello = await s.hello();
    assert.equal(hello.heartbeat_ms, 1000);
    const beats = () => s.frames.filter((f) => f.name === 'heartbeat');
    await s.until('two heartbeats', () => beats().length >= 2, 3_500 - (Date.now() - openedAt));
    for (const b of beats()) {
      assert.deepEqual(Object.keys(b.data), ['head']);
      assert.equal(idSeq(b.data.head).epoch, hello.epoch);
      assert.equal(b.lastEventId, '', 'heartbeats carry no id');
    }
    assert.ok(beats()[1].at - openedAt <= 3_500);

    // The head in a heartbeat follows the log, even for events on topics not subscribed.
    const r = await postJson(hb.url, '/api/boards/1/cards', { title: uniq('hb') });
    assert.equal(r.status, 201);
    const head = await waitFor('status head to move', async () => {
      const st = await http(`${hb.url}/api/sse/status`);
      return st.json.head !== hello.head && st.json.head;
    });
    await s.until(`a heartbeat with head ${head}`, () => beats().some((b) => b.data.head === head), 2_500);
    assert.deepEqual(s.domain(), []);
  } finally {
    for (const s of open) s.close();
    open.clear();
    await hb.stop();
  }
});

test('topic authorization: a membership change revokes board:1 on an open stream (control {revoked}), board:2 goes on', { timeout: 20_000 }, async () => {
  // Its own app (board 1 membership changes) and sidecar (decisions cached 1 s, so open streams
  // are re-checked about every second).
  const app2 = await startLegacyApp();
  let sc2;
  try {
    sc2 = await startSidecar({ upstream: app2.address, edits: { 'authorization.cache_ttl_seconds': 1 } });
    const both = stream({ topics: ['board:1', 'board:2'], headers: BOB }, sc2.url);
    const only = stream({ topics: ['board:1'], headers: BOB }, sc2.url);
    assert.deepEqual((await both.hello()).topics, ['board:1', 'board:2']);
    assert.deepEqual((await only.hello()).topics, ['board:1']);

    // alice takes bob off board 1, through the sidecar.
    const put = await http(`${sc2.url}/api/boards/1/members`, {
      method: 'PUT',
      headers: { ...ALICE, 'content-type': 'application/json' },
      body: JSON.stringify({ members: ['alice'] }),
    });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.json.members, ['alice']);

    const ctl = await both.next('control', (f) => Array.isArray(f.data.revoked), 8_000);
    assert.deepEqual(ctl.data, { revoked: ['board:1'], reasons: { 'board:1': 'forbidden' }, topics: ['board:2'] });
    assert.equal(ctl.lastEventId, '', 'control frames carry no id');

    // The stream goes on with board:2 only: a board 1 card, then a board 2 card, which is the
    // only event it sees.
    const c1 = await postJson(sc2.url, '/api/boards/1/cards', { title: uniq('after revoke') });
    assert.equal(c1.status, 201, c1.text);
    const c2 = await postJson(sc2.url, '/api/boards/2/cards', { title: uniq('still public') });
    assert.equal(c2.status, 201, c2.text);
    await both.next('card.created', (x) => x.data.data.id === c2.json.id);
    assert.deepEqual(recordIds(both), [c2.json.id]);
    assert.deepEqual(both.errors, [], 'the stream with a topic left stays open');
    assert.equal(both.requests.length, 1);

    // The stream with nothing left gets the control frame, then ends; its reconnect (with
    // bob's cookie, after `retry:`) is refused with 403 and EventSource stops.
    const octl = await only.next('control', (f) => Array.isArray(f.data.revoked), 8_000);
    assert.deepEqual(octl.data, { revoked: ['board:1'], reasons: { 'board:1': 'forbidden' }, topics: [] });
    const ended = await only.until('the emptied stream to end', () => only.errors[0]);
    assert.ok(ended.at >= octl.at);
    assert.deepEqual(only.frames.map((f) => f.name), ['hello', 'control'], 'control is the last frame');
    await only.until('the reconnect to meet 403', () => only.errors.find((e) => e.code === 403), 8_000);
    assert.deepEqual(only.requests.map((q) => q.status), [200, 403]);
    assert.equal(only.es.readyState, EventSource.CLOSED);
  } finally {
    for (const s of open) s.close();
    open.clear();
    if (sc2) await sc2.stop();
    await app2.stop();
  }
});
