// Client ids, receipts, versions and `mutate` (issue #17) against fakes of EventSource, fetch,
// Web Locks and BroadcastChannel: the wire is the contract in clients/js/README.md
// §Collaboration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSseClient, compareEventIds, SseConflictError, SseMutationError } from '../sse-client.js';
import { FakeClock, FakeLockManager, makeBroadcastChannel, makeEventSource, makeFetch, domainEvent, flush } from './helpers.js';

/** A fetch: status answers `sse`; other URLs answer what `routes(url, init)` returns. */
function backend(routes) {
  return makeFetch((url, init) => {
    if (url.includes('/api/sse/status')) return { status: 200, body: { mode: 'sse', epoch: 'ep1', head: 'ep1-0', retry_after: 0 } };
    return routes(url, init) || { status: 200, body: { ok: true } };
  });
}

function memoryStorage() {
  const map = new Map();
  return { getItem: (k) => (map.has(k) ? map.get(k) : null), setItem: (k, v) => map.set(k, String(v)), map };
}

function solo(routes, opts = {}) {
  const clock = new FakeClock();
  const es = makeEventSource();
  const net = backend(routes || (() => null));
  const client = createSseClient({
    EventSource: es.EventSource,
    fetch: net.fetch,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    shareAcrossTabs: false,
    lifecycleTarget: null,
    topics: ['board:1'],
    clientId: 'B1.t1',
    ...opts,
  });
  es.last.hello({ epoch: 'ep1', head: 'ep1-0', client: 'B1' });
  return { clock, es, net, client };
}

const pendingAnswer = (status = 200, body = { ok: true }) => ({ status, body, headers: { 'x-sse-receipt': 'pending' } });
const receipt = (client, mutation, extra = {}) => ({
  client, conflict: null, events: [], mutation, outcome: 'delivered', reason: null, status: 200, ...extra,
});
const headerOf = (call, name) => new Headers(call.init.headers).get(name);

test('one browser-wide id in storage: every tab streams as client=B and mutates as B.<tab>', () => {
  const storage = memoryStorage();
  const es = makeEventSource();
  const common = { EventSource: es.EventSource, fetch: null, shareAcrossTabs: false, lifecycleTarget: null, storage, topics: ['t'] };
  const a = createSseClient(common);
  const b = createSseClient(common);
  const browserId = storage.map.get('sse-sidecar:browser-id');
  assert.match(browserId, /^[A-Za-z0-9_:-]{1,64}$/);
  assert.equal(a.streamClientId, browserId);
  assert.equal(b.streamClientId, browserId);
  assert.ok(a.clientId.startsWith(`${browserId}.`));
  assert.match(a.clientId, /^[A-Za-z0-9_.:-]{1,128}$/, 'the contract\'s client id characters');
  assert.equal(es.instances[0].params.get('client'), browserId);
  // An override keeps working: the stream's id is the part before the first dot.
  const c = createSseClient({ ...common, clientId: 'alice.tab.7' });
  assert.equal(c.clientId, 'alice.tab.7');
  assert.equal(es.last.params.get('client'), 'alice');
  // Storage that refuses falls back to a random per-instance id.
  const refusing = { getItem() { throw new Error('denied'); }, setItem() { throw new Error('denied'); } };
  const d = createSseClient({ ...common, storage: refusing });
  assert.ok(d.clientId.startsWith(`${d.streamClientId}.`));
  assert.notEqual(d.streamClientId, browserId);
  for (const x of [a, b, c, d]) x.close();
});

test('hello\'s client is reported in the live info', () => {
  const { client } = solo();
  assert.equal(client.info.client, 'B1');
});

test('mutate: optimistic at once, settles on the delivered receipt with its event ids', async () => {
  const { es, net, client } = solo(() => pendingAnswer());
  const steps = [];
  let settled = null;
  client.mutate({ url: '/api/cards/7', method: 'PATCH', body: '{}' }, {
    optimistic: () => steps.push('optimistic'),
    rollback: () => steps.push('rollback'),
    mutationId: 'm-1',
  }).then((r) => { settled = r; });
  assert.deepEqual(steps, ['optimistic'], 'before any network answer');
  await flush();
  const call = net.calls.find((c) => c.url === '/api/cards/7');
  assert.equal(headerOf(call, 'x-client-id'), 'B1.t1');
  assert.equal(headerOf(call, 'x-mutation-id'), 'm-1');
  assert.equal(headerOf(call, 'x-sse-base'), null, 'no base given: no check');
  assert.equal(settled, null, 'waits for the receipt');
  es.last.emit('receipt', receipt('B1.t1', 'm-1', { events: ['ep1-12'] }));
  await flush();
  assert.deepEqual(settled.events, ['ep1-12']);
  assert.equal(settled.receipt.outcome, 'delivered');
  assert.equal(settled.response.status, 200);
  assert.deepEqual(steps, ['optimistic']);
});

test('a receipt that arrives before the HTTP answer still settles the mutation', async () => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const { es, client } = solo(() => gate.then(() => pendingAnswer()));
  const p = client.mutate({ url: '/api/cards/7', method: 'PATCH' }, { mutationId: 'm-early' });
  await flush();
  es.last.emit('receipt', receipt('B1.t1', 'm-early', { outcome: 'shadow' }));
  release();
  const r = await p;
  assert.equal(r.receipt.outcome, 'shadow');
  assert.deepEqual(r.events, []);
});

test('without x-sse-receipt: pending the mutation settles on the HTTP answer alone', async () => {
  const { client } = solo(() => ({ status: 201, body: { id: 9 } }));
  const r = await client.mutate('/api/cards', { mutationId: 'm-2' });
  assert.equal(r.receipt, null);
  assert.equal(r.response.status, 201);
});

test('a receipt that never comes: settle on the HTTP answer after the timeout (default 5 s, option)', async () => {
  const { clock, client } = solo(() => pendingAnswer());
  let settled = null;
  client.mutate({ url: '/api/cards/7', method: 'PATCH' }).then((r) => { settled = r; });
  await clock.tick(4999);
  assert.equal(settled, null);
  await clock.tick(1);
  assert.equal(settled.receipt, null);
  assert.equal(settled.response.status, 200);

  const short = solo(() => pendingAnswer(), { receiptTimeoutMs: 50 });
  let done = null;
  short.client.mutate({ url: '/x', method: 'POST' }).then((r) => { done = r; });
  await short.clock.tick(50);
  assert.ok(done, 'the option shortens the wait');
  let perCall = null;
  short.client.mutate({ url: '/x', method: 'POST' }, { timeoutMs: 10 }).then((r) => { perCall = r; });
  await short.clock.tick(10);
  assert.ok(perCall, 'timeoutMs per call');
});

test('a failed or dropped receipt rolls back and rejects with SseMutationError', async () => {
  for (const [outcome, reason, expected] of [['dropped', 'schema_invalid', 'schema_invalid'], ['failed', null, 'failed']]) {
    const { es, client } = solo(() => pendingAnswer());
    const steps = [];
    const p = client.mutate({ url: '/api/cards/7', method: 'PATCH' }, {
      optimistic: () => steps.push('optimistic'), rollback: () => steps.push('rollback'), mutationId: 'm-3',
    });
    await flush();
    es.last.emit('receipt', receipt('B1.t1', 'm-3', { outcome, reason, status: 200 }));
    await assert.rejects(p, (err) => {
      assert.ok(err instanceof SseMutationError);
      assert.ok(!(err instanceof SseConflictError));
      assert.equal(err.reason, expected);
      assert.equal(err.receipt.outcome, outcome);
      return true;
    });
    assert.deepEqual(steps, ['optimistic', 'rollback']);
  }
});

test('a non-2xx answer or a network error rolls back once and rejects', async () => {
  const { client } = solo(() => ({ status: 422, body: { error: 'title too long' } }));
  const steps = [];
  await assert.rejects(
    client.mutate({ url: '/api/cards/7', method: 'PATCH' }, { optimistic: () => steps.push('o'), rollback: () => steps.push('r') }),
    (err) => err instanceof SseMutationError && err.status === 422 && err.reason === 'http',
  );
  assert.deepEqual(steps, ['o', 'r']);
  const down = solo(() => new Error('connection refused'));
  const rolled = [];
  await assert.rejects(
    down.client.mutate('/api/x', { rollback: () => rolled.push(1) }),
    (err) => err instanceof SseMutationError && err.reason === 'network' && err.status === 0,
  );
  assert.deepEqual(rolled, [1]);
});

test('409 with a conflict body: SseConflictError with base, current and events; rollback; x-sse-base sent', async () => {
  const bob = domainEvent('ep1-5', { data: { id: 7, title: 'Bob\'s title', by: 'bob' }, topics: ['card:7'] });
  const { net, client } = solo(() => ({ status: 409, body: { conflict: { base: 'ep1-3', current: 'ep1-5', events: [bob] } } }));
  const steps = [];
  await assert.rejects(
    client.mutate({ url: '/api/cards/7', method: 'PATCH' }, { base: 'ep1-3', rollback: () => steps.push('rollback') }),
    (err) => {
      assert.ok(err instanceof SseConflictError);
      assert.ok(err instanceof SseMutationError, 'one catch for every failure');
      assert.equal(err.status, 409);
      assert.equal(err.base, 'ep1-3');
      assert.equal(err.current, 'ep1-5');
      assert.equal(err.events[0].data.by, 'bob');
      return true;
    },
  );
  assert.deepEqual(steps, ['rollback']);
  assert.equal(headerOf(net.calls.find((c) => c.url === '/api/cards/7'), 'x-sse-base'), 'ep1-3');
  // A backend's own 409 (no conflict body) is a plain failure.
  const plain = solo(() => ({ status: 409, body: { error: 'exists' } }));
  await assert.rejects(plain.client.mutate('/x'), (err) => !(err instanceof SseConflictError) && err.status === 409);
});

test('ids compare by epoch, then the integer after the last dash', () => {
  assert.ok(compareEventIds('ep1-12', 'ep1-9') > 0);
  assert.ok(compareEventIds('ep-1-9', 'ep-1-10') < 0, 'epoch may contain dashes');
  assert.equal(compareEventIds('ep1-3', 'ep1-3'), 0);
  assert.equal(compareEventIds('ep1-3', 'ep2-4'), null, 'different epochs do not compare');
  assert.equal(compareEventIds('nonsense', 'ep1-4'), null);
  assert.ok(compareEventIds('e-99999999999999999999', 'e-99999999999999999998') > 0, 'beyond 2^53');
});

test('versions: from applied events (each of their topics) and x-sse-version of fetches given topics; baseFor is the max', async () => {
  const { es, client } = solo((url) => (url.includes('/api/boards/1') ? { status: 200, body: [], headers: { 'x-sse-version': 'ep1-7' } } : null));
  assert.equal(client.version('board:1'), null);
  assert.equal(client.baseFor(['board:1']), null);
  await client.fetch('/api/boards/1/cards', undefined, { topics: ['board:1', 'card:7'] });
  assert.equal(client.version('board:1'), 'ep1-7');
  assert.equal(client.version('card:7'), 'ep1-7');
  await client.fetch('/api/boards/1/cards');
  es.last.emit('card.updated', domainEvent('ep1-9', { topics: ['board:1', 'card:9'] }), 'ep1-9');
  es.last.emit('card.updated', domainEvent('ep1-12', { topics: ['board:1', 'card:7'] }), 'ep1-12');
  assert.equal(client.version('board:1'), 'ep1-12');
  assert.equal(client.version('card:9'), 'ep1-9');
  assert.equal(client.baseFor(['card:9', 'card:7']), 'ep1-12', 'numeric, not text order');
  assert.equal(client.baseFor(['card:9']), 'ep1-9');
  // An older answer does not move a version back.
  await client.fetch('/api/boards/1/cards', undefined, { topics: ['card:7'] });
  assert.equal(client.version('card:7'), 'ep1-12');
  // mutate({topics}) sends the current base when no base is given.
  const calls = [];
  client.noteVersion('card:1', 'ep1-2');
  const m = solo((url, init) => { calls.push(new Headers(init.headers).get('x-sse-base')); return null; });
  m.client.noteVersion('card:1', 'ep1-2');
  await m.client.mutate('/x', { topics: ['card:1'] });
  assert.deepEqual(calls, ['ep1-2']);
});

test('the version map is bounded', () => {
  const { client } = solo();
  for (let i = 0; i < 1500; i++) client.noteVersion(`t:${i}`, `ep1-${i}`);
  assert.equal(client.version('t:0'), null, 'the oldest topics are forgotten');
  assert.equal(client.version('t:1499'), 'ep1-1499');
});

test('receipts across tabs: the leader\'s stream carries them, only the tab that mutated settles', async () => {
  const clock = new FakeClock();
  const es = makeEventSource();
  const net = backend(() => pendingAnswer());
  const locks = new FakeLockManager();
  const bc = makeBroadcastChannel();
  const tab = (id, topics) => createSseClient({
    EventSource: es.EventSource, fetch: net.fetch, now: clock.now, setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout, random: () => 0.5, locks, BroadcastChannel: bc.BroadcastChannel,
    lifecycleTarget: null, clientId: id, topics,
  });
  const A = tab('B7.a', ['board:1']);
  await flush();
  const B = tab('B7.b', ['board:2']);
  await flush();
  assert.equal(A.role, 'leader');
  assert.equal(B.role, 'follower');
  assert.equal(es.open.length, 1, 'one stream for both tabs');
  assert.equal(es.last.params.get('client'), 'B7');
  es.last.hello({ epoch: 'ep1', head: 'ep1-0', client: 'B7' });
  await flush();
  const seenByA = [];
  const seenByB = [];
  A.onReceipt((r) => seenByA.push(r.mutation));
  B.onReceipt((r) => seenByB.push(r.mutation));
  let settled = null;
  B.mutate({ url: '/api/cards/7', method: 'PATCH' }, { mutationId: 'mb' }).then((r) => { settled = r; });
  await flush();
  // The event goes to board:9, which no tab holds: the receipt still comes.
  es.last.emit('receipt', receipt('B7.b', 'mb', { events: ['ep1-4'] }));
  await flush();
  assert.deepEqual(settled.events, ['ep1-4']);
  assert.deepEqual(seenByB, ['mb']);
  assert.deepEqual(seenByA, [], 'another tab\'s receipt is not this tab\'s');
  // A receipt for a tab that is not here (another browser id) settles nobody.
  es.last.emit('receipt', receipt('B8.x', 'mb'));
  await flush();
  assert.deepEqual(seenByA, []);
  assert.deepEqual(seenByB, ['mb']);
  A.close();
  B.close();
});

test('the pending-mutation table is bounded: the oldest waiter settles without a receipt', async () => {
  const { clock, client } = solo(() => pendingAnswer());
  const results = [];
  for (let i = 0; i < 201; i++) client.mutate('/x', { mutationId: `m${i}` }).then((r) => results.push(r.mutationId));
  await flush();
  await clock.tick(0);
  assert.deepEqual(results, ['m0']);
});

test('settle: a response fetched through client.fetch settles like mutate does', async () => {
  const { es, client } = solo(() => pendingAnswer());
  const response = await client.fetch('/api/cards/7', { method: 'PATCH', headers: { 'X-Mutation-Id': 'm-s' } });
  const p = client.settle(response);
  es.last.emit('receipt', receipt('B1.t1', 'm-s', { events: ['ep1-1'] }));
  assert.deepEqual((await p).events, ['ep1-1']);
});
