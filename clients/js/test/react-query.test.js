import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectReactQuery } from '../react-query.js';
import { createSseClient } from '../sse-client.js';
import { FakeClock, makeEventSource, makeFetch, makeStatus, domainEvent } from './helpers.js';

/** A scriptable stand-in for the sse client. */
function fakeClient() {
  const subs = { event: new Set(), reset: new Set(), state: new Set(), control: new Set() };
  const on = (kind) => (fn) => {
    subs[kind].add(fn);
    return () => subs[kind].delete(fn);
  };
  const client = {
    state: 'live',
    pollingFamilies: [],
    info: { denied: [] },
    own: new Set(),
    isLive(family) {
      return this.state === 'live' && (family == null || !this.pollingFamilies.includes(family));
    },
    isOwnEcho(event) {
      return this.own.has(event.id);
    },
    onEvent: on('event'),
    onReset: on('reset'),
    onStateChange: on('state'),
    onControl: on('control'),
    control(c) {
      for (const fn of subs.control) fn(c);
    },
    event(e) {
      for (const fn of subs.event) fn(e);
    },
    reset(r = { reason: 'x' }) {
      for (const fn of subs.reset) fn(r);
    },
    setState(state, pollingFamilies = this.pollingFamilies) {
      this.state = state;
      this.pollingFamilies = pollingFamilies;
      for (const fn of subs.state) fn(state, { pollingFamilies });
    },
    subs,
  };
  return client;
}

function fakeQueryClient() {
  const calls = [];
  return {
    calls,
    invalidateQueries(filters) {
      calls.push(filters === undefined ? 'ALL' : filters.queryKey);
      return Promise.resolve();
    },
  };
}

/** A manual frame scheduler. */
function frames() {
  const queue = [];
  return {
    schedule(fn) {
      const entry = { fn, cancelled: false };
      queue.push(entry);
      return () => {
        entry.cancelled = true;
      };
    },
    get pending() {
      return queue.filter((e) => !e.cancelled).length;
    },
    run() {
      const batch = queue.splice(0);
      for (const e of batch) if (!e.cancelled) e.fn();
    },
  };
}

function setup(options = {}) {
  const client = fakeClient();
  const qc = fakeQueryClient();
  const f = frames();
  const rq = connectReactQuery(client, qc, { schedule: f.schedule, ...options });
  return { client, qc, f, rq };
}

test('event invalidations are batched per frame', () => {
  const { client, qc, f } = setup();
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  client.event(domainEvent(2, { invalidate: [['cards', 2], ['board', 1]] }));
  assert.deepEqual(qc.calls, [], 'nothing before the frame');
  assert.equal(f.pending, 1, 'one frame for the whole batch');
  f.run();
  assert.deepEqual(qc.calls, [['cards', 1], ['cards', 2], ['board', 1]]);
  client.event(domainEvent(3, { invalidate: [['cards', 1]] }));
  assert.equal(f.pending, 1, 'a new batch after the flush');
  f.run();
  assert.deepEqual(qc.calls.at(-1), ['cards', 1]);
});

test('keys are deduplicated within a batch, prefixes cover longer keys', () => {
  const { client, qc, f } = setup();
  client.event(domainEvent(1, { invalidate: [['cards', 7], ['board', 1]] }));
  client.event(domainEvent(2, { invalidate: [['cards', 7], ['board', 1]] }));
  client.event(domainEvent(3, { invalidate: [['cards', { status: 'open' }], ['cards', { status: 'open' }]] }));
  client.event(domainEvent(4, { invalidate: [['lists', 1], ['lists']] }));
  f.run();
  assert.deepEqual(qc.calls, [['cards', 7], ['board', 1], ['cards', { status: 'open' }], ['lists']]);
});

test("the tab's own echoes are skipped (unless disabled)", () => {
  const { client, qc, f } = setup();
  client.own.add('1');
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  assert.equal(f.pending, 0);
  f.run();
  assert.deepEqual(qc.calls, []);

  const other = setup({ skipOwnEchoes: false });
  other.client.own.add('1');
  other.client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  other.f.run();
  assert.deepEqual(other.qc.calls, [['cards', 1]]);
});

test('events without invalidate keys do nothing; onEvent hook sees every delivered event', () => {
  const seen = [];
  const { client, qc, f } = setup({ onEvent: (e, q) => seen.push([e.id, q === qc]) });
  client.event(domainEvent(1, { invalidate: [] }));
  client.event(domainEvent(2, { invalidate: undefined }));
  client.event(domainEvent(3, { invalidate: ['not-an-array'] }));
  assert.equal(f.pending, 0);
  f.run();
  assert.deepEqual(qc.calls, []);
  assert.deepEqual(seen, [['1', true], ['2', true], ['3', true]]);
});

test('reset invalidates everything (and swallows pending keys)', () => {
  const { client, qc, f } = setup();
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  client.reset({ reason: 'evicted', head: '9' });
  client.event(domainEvent(2, { invalidate: [['cards', 2]] }));
  f.run();
  assert.deepEqual(qc.calls, ['ALL']);
});

test('a mode change invalidates everything; same-mode state changes do not', () => {
  const { client, qc, f } = setup();
  client.setState('recovering'); // live → not live
  f.run();
  assert.deepEqual(qc.calls, ['ALL']);
  client.setState('connecting'); // still not live: nothing to re-evaluate
  client.setState('recovering');
  client.setState('polling');
  f.run();
  assert.deepEqual(qc.calls, ['ALL']);
  client.setState('live'); // back: refetch what may have been missed
  f.run();
  assert.deepEqual(qc.calls, ['ALL', 'ALL']);
  client.setState('live', ['cards']); // a family degraded
  f.run();
  assert.deepEqual(qc.calls, ['ALL', 'ALL', 'ALL']);
  client.setState('live', ['cards']); // no change
  f.run();
  assert.equal(qc.calls.length, 3);
  client.setState('live', []); // family back
  client.setState('recovering'); // two changes in one frame: one invalidation
  f.run();
  assert.equal(qc.calls.length, 4);
});

test('invalidateOnModeChange: false leaves mode changes alone', () => {
  const { client, qc, f } = setup({ invalidateOnModeChange: false });
  client.setState('polling');
  f.run();
  assert.deepEqual(qc.calls, []);
});

test('refetchInterval answers false while live for the family, ms otherwise', () => {
  const { client, rq } = setup();
  const cards = rq.refetchInterval('cards', 3000);
  const lists = rq.refetchInterval('lists', 5000);
  assert.equal(typeof cards, 'function');
  assert.equal(cards(), false);
  client.setState('live', ['cards']);
  assert.equal(cards(), 3000);
  assert.equal(lists(), false);
  client.setState('polling', []);
  assert.equal(cards(), 3000);
  assert.equal(lists(), 5000);
  assert.equal(rq.isLive('cards'), false);
  client.setState('live', []);
  assert.equal(cards(), false);
  assert.equal(rq.isLive('cards'), true);
});

test('refetchInterval with a topic: a denied or revoked topic keeps polling while the family is live', () => {
  const { client, rq } = setup();
  client.info = { topics: ['board:2'], denied: ['board:1'] };
  const board1 = rq.refetchInterval('cards', 3000, 'board:1');
  const board2 = rq.refetchInterval('cards', 3000, 'board:2');
  const both = rq.refetchInterval('cards', 3000, ['board:2', 'board:1']);
  const noTopic = rq.refetchInterval('cards', 3000);
  assert.equal(board1(), 3000, 'denied at connection: no event will come, keep polling');
  assert.equal(board2(), false);
  assert.equal(both(), 3000, 'any denied topic of a list');
  assert.equal(noTopic(), false, 'without a topic: the family decides alone');
  client.info = { topics: [], denied: ['board:1', 'board:2'] }; // board:2 revoked on the open stream
  assert.equal(board2(), 3000);
  client.setState('polling', []);
  assert.equal(board2(), 3000);
  client.setState('live', []);
  client.info = { topics: ['board:1', 'board:2'], denied: [] }; // granted again after a reconnect
  assert.equal(board1(), false);
  client.info = undefined; // no info at all (another client implementation)
  assert.equal(board1(), false);
});

test('a revocation (control {revoked}) invalidates everything; other controls and invalidateOnModeChange: false do not', () => {
  const { client, qc, f } = setup();
  client.control({ mode: 'polling', families: [] });
  client.control({ revoked: [] });
  f.run();
  assert.deepEqual(qc.calls, []);
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  client.control({ revoked: ['board:1'], topics: ['board:2'] });
  f.run();
  assert.deepEqual(qc.calls, ['ALL'], 'one invalidation of everything, pending keys included');

  const quiet = setup({ invalidateOnModeChange: false });
  quiet.client.control({ revoked: ['board:1'] });
  quiet.f.run();
  assert.deepEqual(quiet.qc.calls, []);

  // a client without onControl (older client) is fine
  const bare = fakeClient();
  delete bare.onControl;
  const rq = connectReactQuery(bare, fakeQueryClient(), { schedule: frames().schedule });
  rq.disconnect();
});

test('refetchInterval asks client.pollInterval when the client has one (the poll-interval hint)', () => {
  const { client, rq } = setup();
  const asked = [];
  client.pollInterval = (family, ms) => {
    asked.push([family, ms]);
    return client.isLive(family) ? false : Math.max(ms, 10000);
  };
  client.info = { denied: ['board:1'] };
  const cards = rq.refetchInterval('cards', 3000, 'board:2');
  assert.equal(cards(), false);
  client.setState('live', ['cards']);
  assert.equal(cards(), 10000, 'the hint lengthens the interval');
  assert.equal(rq.refetchInterval('cards', 3000, 'board:1')(), 3000, 'a denied topic polls at its own interval, hint or not');
  assert.deepEqual(asked, [['cards', 3000], ['cards', 3000]]);
});

test('disconnect() stops listening and drops the pending batch', () => {
  const { client, qc, f, rq } = setup();
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  rq.disconnect();
  f.run();
  client.event(domainEvent(2, { invalidate: [['cards', 2]] }));
  client.reset();
  client.setState('polling');
  f.run();
  assert.deepEqual(qc.calls, []);
  client.control({ revoked: ['board:1'] });
  f.run();
  assert.deepEqual(qc.calls, []);
  assert.equal(client.subs.event.size + client.subs.reset.size + client.subs.state.size + client.subs.control.size, 0);
});

test('flush() runs the pending batch at once', () => {
  const { client, qc, f, rq } = setup();
  client.event(domainEvent(1, { invalidate: [['cards', 1]] }));
  rq.flush();
  assert.deepEqual(qc.calls, [['cards', 1]]);
  f.run();
  assert.equal(qc.calls.length, 1);
});

test('default scheduler: requestAnimationFrame when present, else a 16 ms timer', async () => {
  const client = fakeClient();
  const qc = fakeQueryClient();
  // no requestAnimationFrame in node: timer
  const rq = connectReactQuery(client, qc);
  client.event(domainEvent(1, { invalidate: [['a']] }));
  assert.deepEqual(qc.calls, []);
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(qc.calls, [['a']]);
  rq.disconnect();

  const rafQueue = [];
  globalThis.requestAnimationFrame = (fn) => rafQueue.push(fn);
  globalThis.cancelAnimationFrame = () => {};
  try {
    const client2 = fakeClient();
    const qc2 = fakeQueryClient();
    const rq2 = connectReactQuery(client2, qc2);
    client2.event(domainEvent(1, { invalidate: [['b']] }));
    client2.event(domainEvent(2, { invalidate: [['c']] }));
    assert.equal(rafQueue.length, 1);
    rafQueue.shift()(0);
    assert.deepEqual(qc2.calls, [['b'], ['c']]);
    rq2.disconnect();
  } finally {
    delete globalThis.requestAnimationFrame;
    delete globalThis.cancelAnimationFrame;
  }
});

/**
 * A miniature of TanStack Query's observer timer logic (QueryObserver#updateTimers): the
 * function form of refetchInterval is evaluated only when the observer is notified of a
 * query update, which invalidateQueries() causes. Here invalidateQueries() notifies every
 * observer, as the real one does through the invalidate/fetch/success dispatches.
 */
function miniQueryClient() {
  const observers = [];
  return {
    observers,
    observe(queryKey, refetchInterval) {
      const observer = { queryKey, refetchInterval, current: undefined };
      observer.update = () => {
        observer.current = typeof refetchInterval === 'function' ? refetchInterval() : refetchInterval;
      };
      observer.update();
      observers.push(observer);
      return observer;
    },
    invalidateQueries(filters) {
      for (const o of observers) {
        const key = filters && filters.queryKey;
        if (!key || key.every((part, i) => JSON.stringify(part) === JSON.stringify(o.queryKey[i]))) o.update();
      }
      return Promise.resolve();
    },
  };
}

test('with the real client: mode changes flip refetchInterval through invalidateQueries()', async () => {
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
  });
  const qc = miniQueryClient();
  const f = frames();
  const rq = connectReactQuery(client, qc, { schedule: f.schedule });
  const cardsQuery = qc.observe(['cards', 1], rq.refetchInterval('cards', 3000));
  const listsQuery = qc.observe(['lists'], rq.refetchInterval('lists', 3000));
  assert.equal(cardsQuery.current, 3000, 'polls until the stream is live');

  es.last.hello();
  f.run();
  assert.equal(cardsQuery.current, false, 'live: polling stops');
  assert.equal(listsQuery.current, false);

  es.last.emit('control', { mode: 'polling', reason: 'degraded', families: ['cards'] });
  f.run();
  assert.equal(cardsQuery.current, 3000, 'family degraded: cards polls again');
  assert.equal(listsQuery.current, false);

  es.last.emit('control', { mode: 'polling', reason: 'restored', families: [] });
  f.run();
  assert.equal(cardsQuery.current, false);

  es.last.fail(false);
  f.run();
  assert.equal(cardsQuery.current, 3000, 'stream lost: everyone polls');
  assert.equal(listsQuery.current, 3000);
  await clock.tick(clock.nextIn() ?? 0);
  await clock.tick(clock.nextIn());
  es.last.hello();
  f.run();
  assert.equal(listsQuery.current, false);

  // own echoes do not invalidate, other tabs' events do
  const mutation = await client.fetch('/api/cards/1', { method: 'PATCH' });
  assert.equal(mutation.status, 200);
  const mutationId = status.calls.at(-1).init.headers.get('x-mutation-id');
  let updates = 0;
  const original = cardsQuery.update;
  cardsQuery.update = () => {
    updates++;
    original();
  };
  es.last.emit('card.updated', domainEvent(50, { origin: { client: 'x', mutation: mutationId }, invalidate: [['cards', 1]] }), '50');
  f.run();
  assert.equal(updates, 0);
  es.last.emit('card.updated', domainEvent(51, { origin: { client: 'x', mutation: 'other' }, invalidate: [['cards', 1]] }), '51');
  f.run();
  assert.equal(updates, 1);
  rq.disconnect();
  client.close();
});

test('with the real client: a denied topic polls from hello on, a revoked one starts polling through invalidateQueries()', async () => {
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
    topics: ['board:1', 'board:2', 'board:3'],
    clientId: 'tab-1',
  });
  const qc = miniQueryClient();
  const f = frames();
  const rq = connectReactQuery(client, qc, { schedule: f.schedule });
  const board1 = qc.observe(['cards', 1], rq.refetchInterval('cards', 3000, 'board:1'));
  const board2 = qc.observe(['cards', 2], rq.refetchInterval('cards', 3000, 'board:2'));
  const board3 = qc.observe(['cards', 3], rq.refetchInterval('cards', 3000, 'board:3'));
  assert.deepEqual([board1.current, board2.current, board3.current], [3000, 3000, 3000], 'polls until live');

  es.last.hello({ topics: ['board:2', 'board:3'], denied: ['board:1'] });
  f.run();
  assert.deepEqual([board1.current, board2.current, board3.current], [3000, false, false], 'board:1 denied: it keeps polling');

  // The app's membership changed: the server revokes board:2 on the open stream. The state
  // stays live (no onStateChange), the adapter follows the control.
  es.last.emit('control', { revoked: ['board:2'], reasons: { 'board:2': 'forbidden' }, topics: ['board:3'] });
  assert.equal(client.state, 'live');
  assert.deepEqual(client.info.denied, ['board:1', 'board:2']);
  assert.equal(board2.current, false, 'nothing re-evaluated before the batch runs');
  f.run();
  assert.deepEqual([board1.current, board2.current, board3.current], [3000, 3000, false], 'board:2 revoked: it polls again');

  // The whole stream goes down and comes back with every topic granted.
  es.last.fail(false);
  f.run();
  assert.deepEqual([board1.current, board2.current, board3.current], [3000, 3000, 3000]);
  await clock.tick(clock.nextIn() ?? 0);
  await clock.tick(clock.nextIn());
  es.last.hello({ topics: ['board:1', 'board:2', 'board:3'], denied: [] });
  f.run();
  assert.deepEqual([board1.current, board2.current, board3.current], [false, false, false]);
  rq.disconnect();
  client.close();
});

test('with the real client: the poll-interval hint of client.fetch reaches refetchInterval of a polled family', async () => {
  const clock = new FakeClock();
  const es = makeEventSource();
  const { fetch } = makeFetch((url) => (url.includes('/api/sse/status')
    ? { status: 200, body: { mode: 'sse' } }
    : { status: 200, body: [], headers: { 'x-sse-poll-interval-ms': '15000' } }));
  const client = createSseClient({
    EventSource: es.EventSource,
    fetch,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    shareAcrossTabs: false,
    lifecycleTarget: null,
    topics: ['board:1'],
    clientId: 'tab-1',
  });
  const qc = miniQueryClient();
  const f = frames();
  const rq = connectReactQuery(client, qc, { schedule: f.schedule });
  const cards = qc.observe(['cards', 1], rq.refetchInterval('cards', 3000, 'board:1'));
  es.last.hello({ topics: ['board:1'], denied: [], heartbeat_ms: 0 });
  es.last.emit('control', { mode: 'polling', reason: 'degraded', families: ['cards'] });
  f.run();
  assert.equal(cards.current, 3000, 'no hint yet');
  await client.fetch('/api/boards/1/cards'); // the query's own poll, through client.fetch
  qc.invalidateQueries({ queryKey: ['cards', 1] }); // what the poll's success dispatch does
  assert.equal(cards.current, 15000);
  await clock.tick(60_000);
  qc.invalidateQueries({ queryKey: ['cards', 1] });
  assert.equal(cards.current, 3000, 'the hint expires after a minute');
  rq.disconnect();
  client.close();
});
