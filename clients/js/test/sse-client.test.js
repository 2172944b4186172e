import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSseClient, recordPollIntervalHint } from '../sse-client.js';
import { FakeClock, makeEventSource, makeFetch, makeStatus, recordStates, domainEvent, flush } from './helpers.js';

function setup(opts = {}) {
  const clock = new FakeClock();
  const es = makeEventSource();
  const status = makeStatus();
  const client = createSseClient({
    EventSource: es.EventSource,
    fetch: status.fetch,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    shareAcrossTabs: false,
    lifecycleTarget: null,
    topics: ['board:1'],
    clientId: 'tab-1',
    ...opts,
  });
  const states = recordStates(client);
  const events = [];
  client.onEvent((e) => events.push(e));
  return { clock, es, status, client, states, events };
}

const names = (states) => states.map((s) => s.state);

test('hello makes the client live', () => {
  const { es, client, states } = setup();
  assert.equal(client.state, 'connecting');
  assert.equal(client.role, 'solo');
  assert.equal(es.instances.length, 1);
  assert.equal(es.last.url, '/api/sse/events?topics=board%3A1&client=tab-1');
  assert.equal(client.isLive(), false);
  es.last.hello({ epoch: 'e7', head: '41', topics: ['board:1'], denied: [], heartbeat_ms: 5000 });
  assert.equal(client.state, 'live');
  assert.equal(client.isLive(), true);
  assert.deepEqual(names(states), ['live']);
  assert.equal(states[0].info.epoch, 'e7');
  assert.deepEqual(states[0].info.topics, ['board:1']);
  assert.equal(states[0].info.heartbeatMs, 5000);
  // a listener exists for every announced type and the fixed names
  for (const name of ['hello', 'heartbeat', 'control', 'reset', 'receipt', 'message', 'card.updated', 'card.created']) {
    assert.ok(es.last.listeners.has(name), name);
  }
});

test('topics are sorted, deduplicated and URL-encoded; url with a query string is extended', () => {
  const { es } = setup({ topics: ['b c', 'a', 'a', 'x/y'], url: '/sse?v=1' });
  assert.equal(es.last.url, '/sse?v=1&topics=a,b%20c,x%2Fy&client=tab-1');
});

test('withCredentials is passed to EventSource and the status request', async () => {
  const { es, status, clock } = setup({ withCredentials: true });
  assert.equal(es.last.withCredentials, true);
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(status.calls[0].init.credentials, 'include');
});

test('events are delivered and lastEventId tracks them', () => {
  const { es, client, events } = setup();
  es.last.hello({ head: '3' });
  assert.equal(client.lastEventId, '3', 'hello head is the resume point when none is known');
  assert.equal(es.last.emit('card.updated', domainEvent(4), '4'), true);
  assert.equal(events.length, 1);
  assert.equal(events[0].id, '4');
  assert.equal(events[0].data.title, 'x');
  assert.equal(client.lastEventId, '4');
  // unnamed frames arrive as `message`
  es.last.emit('message', domainEvent(5, { type: 'x.y' }), '5');
  assert.equal(client.lastEventId, '5');
  // a duplicate id is dropped
  es.last.emit('card.updated', domainEvent(5), '5');
  assert.equal(events.length, 2);
  // a type not announced in hello cannot be heard (native EventSource semantics)
  assert.equal(es.last.emit('never.announced', domainEvent(6), '6'), false);
  // the JSON id is used when the frame has none
  es.last.emit('card.created', domainEvent(7), undefined);
  assert.equal(client.lastEventId, '7');
  // heartbeat/hello/control/reset are not domain events
  es.last.emit('heartbeat', { head: '7' });
  assert.equal(events.length, 3);
});

test('types announced after a reload (control {types}) are heard without a reconnect', () => {
  const { es, client, events } = setup();
  es.last.hello({ head: '3', types: ['card.updated'] });
  const source = es.last;
  assert.equal(source.emit('card.moved', domainEvent(4, { type: 'card.moved' }), '4'), false);
  source.emit('control', { reason: 'types_changed', types: ['card.updated', 'card.moved'] });
  assert.equal(es.last, source, 'same connection');
  assert.equal(client.state, 'live');
  assert.equal(source.emit('card.moved', domainEvent(5, { type: 'card.moved' }), '5'), true);
  assert.equal(events.at(-1).id, '5');
});

test('a given lastEventId is used on the first connection and not replaced by hello head', () => {
  const { es, client } = setup({ lastEventId: 'abc' });
  assert.equal(es.last.params.get('lastEventId'), 'abc');
  es.last.hello({ head: '99' });
  assert.equal(client.lastEventId, 'abc');
});

test('error → status says polling → probes → back to live with the last id', async () => {
  const { es, status, client, clock, states } = setup({ probeIntervalMs: 10000 });
  es.last.hello();
  es.last.emit('card.updated', domainEvent(8), '8');
  status.set({ mode: 'polling', epoch: 'e1', head: '8', retry_after: 0 });
  const first = es.last;
  first.fail(false); // a drop: native would auto-retry (CONNECTING)
  assert.equal(first.closed, true, 'native auto-retry must never run');
  assert.equal(client.state, 'recovering');
  await clock.tick(0);
  assert.equal(client.state, 'polling');
  assert.equal(es.instances.length, 1, 'no reconnect while polling');
  // probe: 10000 * (0.75 + 0.5 * 0.5) = 10000
  assert.equal(clock.nextIn(), 10000);
  await clock.tick(10000);
  assert.equal(status.statusCalls(), 2);
  assert.equal(client.state, 'polling', 'still polling');
  status.set({ mode: 'sse', epoch: 'e1', head: '8', retry_after: 0 });
  await clock.tick(10000);
  assert.equal(client.state, 'connecting');
  assert.equal(es.instances.length, 2);
  assert.equal(es.last.params.get('lastEventId'), '8');
  es.last.hello();
  assert.equal(client.state, 'live');
  assert.deepEqual(names(states), ['live', 'recovering', 'polling', 'connecting', 'live']);
});

test('204-style refusal: EventSource closes before open, status says polling', async () => {
  const { es, status, client, clock, states } = setup();
  status.set({ mode: 'polling', epoch: 'e1', head: '0', retry_after: 30 });
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(client.state, 'polling');
  assert.equal(states[0].info.reason, 'handshake-failed');
  // retry_after (30 s) wins over the probe interval (15 s)
  assert.equal(clock.nextIn(), 30000);
  assert.equal(es.open.length, 0);
});

test('backoff is full jitter within the cap and honours retry_after', async () => {
  let r = 0.999;
  const { es, status, clock, client } = setup({ random: () => r, backoff: { baseMs: 100, maxMs: 1000 } });
  const delays = [];
  for (let i = 0; i < 6; i++) {
    es.last.fail(true);
    await clock.tick(0);
    assert.equal(client.state, 'recovering');
    delays.push(clock.nextIn());
    await clock.tick(clock.nextIn());
    assert.equal(client.state, 'connecting');
  }
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
  // randomness is really used: with random()=0 the delay is 0…
  r = 0;
  const before = es.instances.length;
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(es.instances.length, before + 1, 'reconnected at once');
  // …but never sooner than the status retry_after…
  status.set({ mode: 'sse', retry_after: 7 });
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(clock.nextIn(), 7000);
  await clock.tick(7000);
  // …nor than a Retry-After header (503 overloaded)
  status.set({ error: 'overloaded' }, 503, { 'retry-after': '12' });
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(client.state, 'recovering');
  assert.equal(clock.nextIn(), 12000);
  assert.equal(client.info.retryInMs, 12000);
});

test('backoff attempts reset once a connection stayed live', async () => {
  const { es, clock } = setup({ random: () => 0.999, backoff: { baseMs: 100, maxMs: 100000 }, stableMs: 5000 });
  for (let i = 0; i < 3; i++) {
    es.last.fail(true);
    await clock.tick(clock.nextIn() ?? 0);
    await clock.tick(clock.nextIn());
  }
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(clock.nextIn(), 799, 'fourth attempt');
  await clock.tick(799);
  es.last.hello({ heartbeat_ms: 0 });
  await clock.tick(1000); // live, but not for long: attempts keep growing
  es.last.fail(false);
  await clock.tick(0);
  assert.equal(clock.nextIn(), 1598);
  await clock.tick(1598);
  es.last.hello({ heartbeat_ms: 0 });
  await clock.tick(6000); // stable
  es.last.fail(false);
  await clock.tick(0);
  assert.equal(clock.nextIn(), 99, 'back to the first attempt');
});

test('status unreachable → keep retrying with backoff', async () => {
  const { es, status, clock, client } = setup({ random: () => 0.5 });
  status.set(new Error('offline'));
  es.last.fail(true);
  await clock.tick(0);
  assert.equal(client.state, 'recovering');
  assert.equal(clock.nextIn(), 250);
  await clock.tick(250);
  assert.equal(es.instances.length, 2);
});

test('control polling without families: whole stream polls, then probes', async () => {
  const { es, status, client, clock, states } = setup();
  es.last.hello();
  const controls = [];
  client.onControl((c) => controls.push(c));
  status.set({ mode: 'polling' });
  es.last.emit('control', { mode: 'polling', reason: 'kill-switch', retry_ms: 20000 });
  assert.equal(client.state, 'polling');
  assert.equal(states.at(-1).info.reason, 'kill-switch');
  assert.equal(es.last.closed, true);
  assert.equal(controls.length, 1);
  assert.equal(clock.nextIn(), 20000, 'first probe not before retry_ms');
  await clock.tick(20000);
  assert.equal(client.state, 'polling');
  status.set({ mode: 'sse' });
  await clock.tick(clock.nextIn());
  assert.equal(client.state, 'connecting');
  es.last.hello();
  assert.equal(client.state, 'live');
});

test('control polling with families: stays live, pollingFamilies updated and observable', () => {
  const { es, client, states } = setup();
  es.last.hello();
  es.last.emit('control', { mode: 'polling', reason: 'family-degraded', families: ['cards'] });
  assert.equal(client.state, 'live');
  assert.equal(es.last.closed, false);
  assert.deepEqual(client.pollingFamilies, ['cards']);
  assert.equal(client.isLive(), true);
  assert.equal(client.isLive('cards'), false);
  assert.equal(client.isLive('lists'), true);
  assert.deepEqual(names(states), ['live', 'live']);
  assert.deepEqual(states[1].info.pollingFamilies, ['cards']);
  assert.equal(states[1].info.reason, 'family-degraded');
  // the list is replaced by the next control; an empty list makes every family live again
  es.last.emit('control', { mode: 'polling', reason: 'x', families: ['lists'] });
  assert.deepEqual(client.pollingFamilies, ['lists']);
  es.last.emit('control', { mode: 'polling', reason: 'x', families: [] });
  assert.deepEqual(client.pollingFamilies, []);
  assert.equal(states.length, 4);
});

test('pollingFamilies: hello.polling_families and the next families list restore families', async () => {
  const { es, client, clock } = setup();
  es.last.hello();
  es.last.emit('control', { mode: 'polling', families: ['cards', 'lists'] });
  es.last.emit('control', { mode: 'polling', reason: 'rollout', families: ['cards'] });
  assert.deepEqual(client.pollingFamilies, ['cards']);
  es.last.emit('control', { mode: 'reconnect', retry_ms: 10 });
  await clock.tick(10);
  es.last.hello();
  assert.deepEqual(client.pollingFamilies, ['cards'], 'kept across reconnects (safe default)');
  es.last.emit('control', { mode: 'reconnect', retry_ms: 10 });
  await clock.tick(10);
  es.last.hello({ polling_families: [] });
  assert.deepEqual(client.pollingFamilies, []);
});

test('control reconnect waits retry_ms and reconnects with the last id', async () => {
  const { es, client, clock, status, states } = setup();
  es.last.hello();
  es.last.emit('card.updated', domainEvent('e1-17'), 'e1-17');
  const first = es.last;
  first.emit('control', { mode: 'reconnect', reason: 'draining', retry_ms: 1234 });
  assert.equal(first.closed, true);
  assert.equal(client.state, 'recovering');
  assert.equal(states.at(-1).info.retryInMs, 1234);
  assert.equal(clock.nextIn(), 1234);
  await clock.tick(1233);
  assert.equal(es.instances.length, 1);
  await clock.tick(1);
  assert.equal(es.instances.length, 2);
  assert.equal(es.last.params.get('lastEventId'), 'e1-17');
  assert.equal(es.last.params.get('topics'), 'board:1');
  assert.equal(status.statusCalls(), 0, 'a planned reconnect does not ask status');
  es.last.hello();
  assert.equal(client.state, 'live');
});

test('reset listeners fire and the stream continues', () => {
  const { es, client, events } = setup();
  es.last.hello({ head: '5' });
  const resets = [];
  client.onReset((r) => resets.push(r));
  es.last.emit('reset', { reason: 'evicted', head: '90' });
  assert.deepEqual(resets, [{ reason: 'evicted', head: '90' }]);
  assert.equal(client.state, 'live');
  assert.equal(es.last.closed, false);
  assert.equal(client.lastEventId, '90', 'head of reset is the new resume point');
  es.last.emit('card.updated', domainEvent(91), '91');
  assert.equal(events.length, 1);
  assert.equal(client.lastEventId, '91');
});

test('frozen stream: no frame for 2 × heartbeat_ms → reconnect with the last id', async () => {
  const { es, client, clock } = setup({ random: () => 0 });
  es.last.hello({ heartbeat_ms: 1000 });
  es.last.emit('card.updated', domainEvent(3), '3');
  await clock.tick(1500);
  es.last.emit('heartbeat', { head: '3' });
  await clock.tick(1500);
  assert.equal(client.state, 'live', 'heartbeats keep it alive');
  await clock.tick(400);
  assert.equal(client.state, 'live');
  const frozen = es.last;
  await clock.tick(200); // 2000 ms since the last heartbeat
  assert.equal(frozen.closed, true);
  assert.notEqual(client.state, 'live');
  await clock.tick(0);
  assert.equal(es.instances.length, 2);
  assert.equal(es.last.params.get('lastEventId'), '3');
});

test('no hello within connectTimeoutMs → recovering', async () => {
  const { es, client, clock } = setup({ connectTimeoutMs: 5000 });
  es.last.open();
  await clock.tick(4999);
  assert.equal(client.state, 'connecting');
  await clock.tick(1);
  assert.equal(client.state, 'recovering');
  assert.equal(client.info.reason, 'connect-timeout');
  assert.equal(es.instances[0].closed, true);
});

test('fetch helper adds X-Client-Id and a fresh X-Mutation-Id; isOwnEcho', async () => {
  const { client, status } = setup();
  assert.equal(client.clientId, 'tab-1');
  await client.fetch('/api/cards/7', { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: '{}' });
  await client.fetch('/api/cards/8', { method: 'PATCH' });
  const [a, b] = status.calls;
  assert.equal(a.url, '/api/cards/7');
  assert.equal(a.init.method, 'PATCH');
  assert.equal(a.init.headers.get('x-client-id'), 'tab-1');
  assert.equal(a.init.headers.get('content-type'), 'application/json');
  const m1 = a.init.headers.get('x-mutation-id');
  const m2 = b.init.headers.get('x-mutation-id');
  assert.ok(m1 && m2 && m1 !== m2);
  assert.equal(client.isOwnEcho(domainEvent(1, { origin: { client: 'tab-1', mutation: null } })), true);
  assert.equal(client.isOwnEcho(domainEvent(1, { origin: { client: 'other', mutation: m2 } })), true);
  assert.equal(client.isOwnEcho(domainEvent(1, { origin: { client: 'other', mutation: 'nope' } })), false);
  assert.equal(client.isOwnEcho(domainEvent(1, { origin: undefined })), false);
  // a caller-chosen mutation id is kept and remembered
  await client.fetch('/x', { method: 'POST', headers: { 'X-Mutation-Id': 'mine' } });
  assert.equal(status.calls[2].init.headers.get('x-mutation-id'), 'mine');
  assert.equal(client.isOwnEcho(domainEvent(1, { origin: { mutation: 'mine' } })), true);
  // the default client id is random and stable
  const other = createSseClient({ EventSource: null, fetch: status.fetch, shareAcrossTabs: false, lifecycleTarget: null });
  const again = createSseClient({ EventSource: null, fetch: status.fetch, shareAcrossTabs: false, lifecycleTarget: null });
  assert.ok(other.clientId.length >= 16);
  assert.equal(other.clientId, again.clientId);
  other.close();
  again.close();
});

test('without EventSource the client polls', () => {
  const { client } = setup({ EventSource: null });
  assert.equal(client.state, 'polling');
  assert.equal(client.info.reason, 'unsupported');
});

test('close() stops everything', async () => {
  const { es, client, clock, states } = setup();
  es.last.hello();
  client.close();
  assert.equal(client.state, 'stopped');
  assert.equal(states.at(-1).state, 'stopped');
  assert.equal(es.last.closed, true);
  assert.equal(clock.timers.size, 0);
  await clock.tick(100000);
  assert.equal(es.instances.length, 1);
  client.close();
  assert.equal(states.length, 2);
});

test('close() during recovery cancels the pending status answer and retry', async () => {
  const { es, client, clock } = setup();
  es.last.fail(true);
  client.close();
  await clock.tick(100000);
  assert.equal(client.state, 'stopped');
  assert.equal(es.instances.length, 1);
});

test('a throwing listener does not break the client', () => {
  const errors = [];
  const { es, client, events } = setup({ onListenerError: (e) => errors.push(e) });
  client.onEvent(() => {
    throw new Error('boom');
  });
  es.last.hello();
  es.last.emit('card.updated', domainEvent(1), '1');
  es.last.emit('card.updated', domainEvent(2), '2');
  assert.equal(events.length, 2);
  assert.equal(errors.length, 2);
});

test('unsubscribe functions work', () => {
  const { es, client } = setup();
  const seen = [];
  const off = client.onEvent((e) => seen.push(e.id));
  es.last.hello();
  es.last.emit('card.updated', domainEvent(1), '1');
  off();
  es.last.emit('card.updated', domainEvent(2), '2');
  assert.deepEqual(seen, ['1']);
});

test('setTopics reconnects a solo stream silently with the last id', () => {
  const { es, client, states } = setup();
  es.last.hello();
  es.last.emit('card.updated', domainEvent(4), '4');
  client.setTopics(['board:1', 'board:2']);
  assert.equal(es.instances[0].closed, true);
  assert.equal(es.last.params.get('topics'), 'board:1,board:2');
  assert.equal(es.last.params.get('lastEventId'), '4');
  assert.equal(client.state, 'live', 'no mode change while swapping streams');
  es.last.hello();
  assert.deepEqual(names(states), ['live']);
  client.setTopics(['board:2']);
  assert.equal(es.last.params.get('topics'), 'board:2');
});

test('pagehide stops a solo stream; pageshow (bfcache) restarts it with the last id', () => {
  const target = new EventTarget();
  const { es, client } = setup({ lifecycleTarget: target });
  es.last.hello();
  es.last.emit('card.updated', domainEvent(6), '6');
  target.dispatchEvent(new Event('pagehide'));
  assert.equal(es.last.closed, true);
  const show = new Event('pageshow');
  show.persisted = true;
  target.dispatchEvent(show);
  assert.equal(es.instances.length, 2);
  assert.equal(client.state, 'connecting');
  assert.equal(es.last.params.get('lastEventId'), '6');
  client.close();
  assert.equal(es.last.closed, true);
});

test('a malformed hello is treated as a failure', async () => {
  const { es, client, clock } = setup();
  es.last.open();
  es.last.emit('hello', 'not json');
  assert.equal(client.state, 'recovering');
  assert.equal(client.info.reason, 'bad-hello');
  await clock.tick(0);
});

test('flush() helper sanity: fake clock orders timers', async () => {
  const clock = new FakeClock(0);
  const order = [];
  clock.setTimeout(() => order.push('b'), 20);
  clock.setTimeout(() => order.push('a'), 10);
  const id = clock.setTimeout(() => order.push('x'), 15);
  clock.clearTimeout(id);
  await clock.tick(25);
  await flush();
  assert.deepEqual(order, ['a', 'b']);
  assert.equal(clock.now(), 25);
});

test('control with revoked topics reaches onControl listeners', () => {
  const { es, client } = setup({ topics: ['board:1', 'board:2'] });
  es.last.hello({ topics: ['board:1', 'board:2'], denied: [] });
  const controls = [];
  client.onControl((c) => controls.push(c));
  es.last.emit('control', { mode: 'reconnect', reason: 'revoked', revoked: ['board:2'], retry_ms: 100 });
  assert.deepEqual(controls[0].revoked, ['board:2']);
  assert.equal(client.state, 'recovering');
});

test('a revocation (control {revoked, topics}) moves the topics from info.topics to info.denied and stays live', () => {
  const { es, client } = setup({ topics: ['board:1', 'board:2'] });
  es.last.hello({ topics: ['board:1', 'board:2'], denied: [] });
  const controls = [];
  client.onControl((c) => controls.push({ state: client.state, topics: client.info.topics, denied: client.info.denied }));
  es.last.emit('control', { revoked: ['board:1'], reasons: { 'board:1': 'forbidden' }, topics: ['board:2'] });
  assert.deepEqual(controls, [{ state: 'live', topics: ['board:2'], denied: ['board:1'] }], 'info is updated before listeners run');
  assert.equal(client.state, 'live');
  assert.equal(es.last.closed, false);
  client.close();
});

test('the module needs no browser globals to load and degrades without them', async () => {
  const mod = await import('../sse-client.js');
  assert.deepEqual(Object.keys(mod).sort(), ['SseConflictError', 'SseMutationError', 'compareEventIds', 'createSseClient', 'recordPollIntervalHint']);
  const client = mod.createSseClient({ EventSource: undefined, lifecycleTarget: undefined });
  // node 20 has no EventSource and no navigator.locks: solo + polling
  if (typeof globalThis.EventSource !== 'function') assert.equal(client.state, 'polling');
  assert.equal(client.role, 'solo');
  client.close();
});

/** A fetch whose polled list answers carry `x-sse-poll-interval-ms: hint.ms` (when set). */
function hintingFetch(hint) {
  return makeFetch((url) => {
    if (url.includes('/api/sse/status')) return { status: 200, body: { mode: 'sse', epoch: 'e1', head: '0', retry_after: 0 } };
    const headers = hint.ms == null ? {} : { 'x-sse-poll-interval-ms': String(hint.ms) };
    return { status: 200, body: [], headers };
  });
}

test('pollInterval: false while the family is live; the hint of client.fetch lengthens it while live for other families, for a minute', async () => {
  const hint = { ms: 12000 };
  const f = hintingFetch(hint);
  const { es, client, clock } = setup({ fetch: f.fetch });
  assert.equal(client.pollInterval('cards', 3000), 3000, 'connecting: poll at the app\'s interval');
  const res = await client.fetch('/api/boards/1/cards');
  assert.equal(res.headers.get('x-sse-poll-interval-ms'), '12000', 'the response is handed back unchanged');
  assert.equal(client.pollInterval('cards', 3000), 3000, 'a hint does not apply while the stream is not live');

  es.last.hello({ heartbeat_ms: 0 }); // no heartbeat watchdog: the clock can run for minutes
  assert.equal(client.pollInterval('cards', 3000), false, 'live for cards: no polling');
  assert.equal(client.pollInterval(undefined, 3000), false, 'same semantics as isLive()');

  es.last.emit('control', { mode: 'polling', reason: 'degraded', families: ['cards'] });
  assert.equal(client.state, 'live');
  assert.equal(client.pollInterval('cards', 3000), 12000, 'live for other families: the hint wins over a shorter interval');
  assert.equal(client.pollInterval('cards', 20000), 20000, 'a longer interval of the app stays');
  assert.equal(client.pollInterval('lists', 3000), false, 'other families are still live');

  await clock.tick(59_999);
  assert.equal(client.state, 'live');
  assert.equal(client.pollInterval('cards', 3000), 12000, 'a hint seen less than a minute ago holds');
  hint.ms = null;
  await client.fetch('/api/boards/1/cards');
  await clock.tick(1);
  assert.equal(client.pollInterval('cards', 3000), 3000, 'a minute later (answers without the header do not renew it): the app\'s interval');

  hint.ms = 8000;
  await client.fetch('/api/boards/1/cards');
  assert.equal(client.pollInterval('cards', 3000), 8000, 'a new hint, the latest one counts');
  hint.ms = 5000;
  await client.fetch('/api/boards/1/cards');
  assert.equal(client.pollInterval('cards', 3000), 5000);

  es.last.fail(false); // stream lost: the hint is stale, the app polls at its own pace
  assert.equal(client.state, 'recovering');
  assert.equal(client.pollInterval('cards', 3000), 3000);
  assert.equal(client.pollInterval('lists', 3000), 3000);
  client.close();
  assert.equal(client.pollInterval('cards', 3000), 3000);
});

test('recordPollIntervalHint reads any Response, ignores missing or invalid values, and reaches every open client of the page', async () => {
  const hint = (value) => new Response(null, { headers: value == null ? {} : { 'x-sse-poll-interval-ms': value } });
  assert.equal(recordPollIntervalHint(null), null);
  assert.equal(recordPollIntervalHint({}), null);
  assert.equal(recordPollIntervalHint(hint(null)), null);
  for (const bad of ['', '0', '-5', 'soon', '1e4', '12 000']) assert.equal(recordPollIntervalHint(hint(bad)), null, JSON.stringify(bad));

  const a = setup();
  const b = setup({ clientId: 'tab-2' });
  for (const { es } of [a, b]) {
    es.last.hello({ heartbeat_ms: 0 });
    es.last.emit('control', { mode: 'polling', families: ['cards'] });
  }
  assert.equal(a.client.pollInterval('cards', 1000), 1000, 'no hint yet');
  assert.equal(recordPollIntervalHint(hint(' 9000 ')), 9000);
  assert.equal(a.client.pollInterval('cards', 1000), 9000);
  assert.equal(b.client.pollInterval('cards', 1000), 9000, 'every client of the page (same credentials) gets it');
  // anything with headers.get works, e.g. another HTTP library's response object
  assert.equal(recordPollIntervalHint({ headers: new Map([['x-sse-poll-interval-ms', '15000']]) }), 15000);
  assert.equal(a.client.pollInterval('cards', 1000), 15000);
  assert.equal(recordPollIntervalHint(hint('x')), null);
  assert.equal(a.client.pollInterval('cards', 1000), 15000, 'an invalid value keeps the last hint');

  b.client.close();
  const c = setup({ clientId: 'tab-3' });
  c.es.last.hello({ heartbeat_ms: 0 });
  c.es.last.emit('control', { mode: 'polling', families: ['cards'] });
  assert.equal(c.client.pollInterval('cards', 1000), 1000, 'a client created later has no hint of before');
  a.client.close();
  c.client.close();
});

test('client.fetch still rejects as fetch does, and a rejected request records nothing', async () => {
  const failing = makeFetch(() => new TypeError('network down'));
  const { client, es } = setup({ fetch: failing.fetch });
  es.last.hello({ heartbeat_ms: 0 });
  es.last.emit('control', { mode: 'polling', families: ['cards'] });
  await assert.rejects(client.fetch('/api/boards/1/cards'), /network down/);
  assert.equal(client.pollInterval('cards', 2000), 2000);
  client.close();
});
