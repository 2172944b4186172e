import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSseClient } from '../sse-client.js';
import {
  FakeClock,
  FakeLockManager,
  makeBroadcastChannel,
  makeEventSource,
  makeStatus,
  domainEvent,
  flush,
} from './helpers.js';

/** One fake browser (origin): shared locks, channels, network; tabs opened in it. */
function browser() {
  const clock = new FakeClock();
  const es = makeEventSource();
  const status = makeStatus();
  const locks = new FakeLockManager();
  const bc = makeBroadcastChannel();
  const tabs = [];
  function tab(name, topics, extra = {}) {
    const window = new EventTarget();
    const client = createSseClient({
      EventSource: es.EventSource,
      fetch: status.fetch,
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      random: () => 0.5,
      locks,
      BroadcastChannel: bc.BroadcastChannel,
      lifecycleTarget: window,
      clientId: `client-${name}`,
      topics,
      ...extra,
    });
    const t = { name, client, window, events: [], states: [], resets: [], controls: [] };
    client.onEvent((e) => t.events.push(e.id));
    client.onStateChange((s, info) => t.states.push({ state: s, info }));
    client.onReset((r) => t.resets.push(r));
    client.onControl((c) => t.controls.push(c));
    tabs.push(t);
    return t;
  }
  const pagehide = (t) => t.window.dispatchEvent(new Event('pagehide'));
  const pageshow = (t) => {
    const ev = new Event('pageshow');
    ev.persisted = true;
    t.window.dispatchEvent(ev);
  };
  return { clock, es, status, locks, bc, tab, tabs, pagehide, pageshow };
}

test('one stream for all tabs: leader subscribes to the union, followers get relayed events', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  assert.equal(A.client.role, 'leader');
  assert.equal(b.es.instances.length, 1);
  assert.equal(b.es.last.params.get('topics'), 'board:1');
  b.es.last.hello({ head: '10', topics: ['board:1'] });
  assert.equal(A.client.state, 'live');
  assert.equal(A.client.lastEventId, '10');

  const B = b.tab('B', ['board:2']);
  await flush();
  assert.equal(B.client.role, 'follower');
  assert.equal(B.client.state, 'live', 'follower mirrors the leader');
  // the leader grew its subscription and resumed from its last id, without a mode change
  assert.equal(b.es.open.length, 1, 'still one stream');
  assert.equal(b.es.last.params.get('topics'), 'board:1,board:2');
  assert.equal(b.es.last.params.get('lastEventId'), '10');
  assert.deepEqual(A.states.map((s) => s.state), ['live']);
  b.es.last.hello({ head: '10', topics: ['board:1', 'board:2'] });

  b.es.last.emit('card.updated', domainEvent(11, { topics: ['board:2'] }), '11');
  b.es.last.emit('card.updated', domainEvent(12, { topics: ['board:1'] }), '12');
  b.es.last.emit('card.updated', domainEvent(13, { topics: ['board:1', 'board:2'] }), '13');
  await flush();
  assert.deepEqual(A.events, ['12', '13'], 'each tab gets only its topics');
  assert.deepEqual(B.events, ['11', '13']);
  assert.equal(A.client.lastEventId, '13');
  assert.equal(B.client.lastEventId, '13', 'followers track the last id too');

  // a third tab with already-covered topics does not cause a reconnect
  const C = b.tab('C', ['board:1']);
  await flush();
  assert.equal(C.client.role, 'follower');
  assert.equal(C.client.state, 'live');
  assert.equal(C.client.lastEventId, '13');
  assert.equal(b.es.instances.length, 2);
  for (const t of b.tabs) t.client.close();
});

test('leader hand-over on close(): a follower takes the lock and resumes from the last id', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello({ head: '1' });
  const B = b.tab('B', ['board:2']);
  const C = b.tab('C', ['board:3']);
  await flush();
  b.es.last.hello({ head: '1' });
  b.es.last.emit('card.updated', domainEvent('e1-20', { topics: ['board:2'] }), 'e1-20');
  await flush();
  assert.equal(B.client.lastEventId, 'e1-20');

  A.client.close();
  assert.equal(A.client.state, 'stopped');
  await flush();
  assert.equal(b.es.open.length, 1, 'exactly one stream after the hand-over');
  const leader = [B, C].find((t) => t.client.role === 'leader');
  const follower = [B, C].find((t) => t.client.role === 'follower');
  assert.ok(leader && follower);
  assert.equal(b.es.last.params.get('lastEventId'), 'e1-20');
  assert.equal(b.es.last.params.get('topics'), 'board:2,board:3', 'union of the remaining tabs');
  assert.equal(leader.client.state, 'connecting');
  assert.equal(follower.client.state, 'connecting');
  b.es.last.hello({ head: 'e1-20' });
  await flush();
  assert.equal(leader.client.state, 'live');
  assert.equal(follower.client.state, 'live');
  b.es.last.emit('card.updated', domainEvent('e1-21', { topics: ['board:2', 'board:3'] }), 'e1-21');
  await flush();
  assert.deepEqual(B.events, ['e1-20', 'e1-21']);
  assert.deepEqual(C.events, ['e1-21']);
  B.client.close();
  C.client.close();
});

test('leader hand-over on pagehide; the page restored from bfcache rejoins as a follower', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello({ head: '5' });
  const B = b.tab('B', ['board:1']);
  await flush();
  b.es.last.emit('card.updated', domainEvent(6), '6');
  await flush();
  b.pagehide(A);
  await flush();
  assert.equal(b.es.instances[0].closed, true);
  assert.equal(B.client.role, 'leader');
  assert.equal(b.es.open.length, 1);
  assert.equal(b.es.last.params.get('lastEventId'), '6');
  b.es.last.hello({ head: '6' });
  b.es.last.emit('card.updated', domainEvent(7), '7');
  await flush();

  b.pageshow(A);
  await flush();
  assert.equal(A.client.role, 'follower');
  assert.equal(A.client.state, 'live');
  assert.equal(b.es.open.length, 1);
  b.es.last.emit('card.updated', domainEvent(8), '8');
  await flush();
  assert.deepEqual(A.events, ['6', '8']);
  assert.equal(A.client.lastEventId, '8');
  A.client.close();
  B.client.close();
});

test('a crashed leader (lock released by the browser) is replaced', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello({ head: '5' });
  b.es.last.emit('card.updated', domainEvent(9), '9');
  const B = b.tab('B', ['board:1']);
  await flush();
  assert.equal(B.client.lastEventId, '9');
  // simulate the tab dying: its stream and channel vanish, the browser frees the lock
  const dead = b.es.last;
  A.client.close = () => {};
  b.locks.crash('sse-sidecar');
  await flush();
  assert.equal(B.client.role, 'leader');
  const fresh = b.es.last;
  assert.notEqual(fresh, dead);
  assert.equal(fresh.params.get('lastEventId'), '9');
});

test('followers mirror state, pollingFamilies, controls and resets', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello();
  const B = b.tab('B', ['board:1']);
  await flush();
  b.es.last.emit('control', { mode: 'polling', reason: 'degraded', families: ['cards'] });
  await flush();
  assert.deepEqual(B.client.pollingFamilies, ['cards']);
  assert.equal(B.client.isLive('cards'), false);
  assert.equal(B.client.isLive('lists'), true);
  assert.deepEqual(B.states.at(-1).info.pollingFamilies, ['cards']);
  assert.equal(B.states.at(-1).info.role, 'follower');
  assert.deepEqual(B.controls.map((c) => c.reason), ['degraded']);

  b.es.last.emit('reset', { reason: 'too-far-behind', head: '77' });
  await flush();
  assert.deepEqual(B.resets, [{ reason: 'too-far-behind', head: '77' }]);
  assert.equal(B.client.lastEventId, '77');

  b.status.set({ mode: 'polling' });
  b.es.last.fail(false);
  await b.clock.tick(0);
  assert.equal(A.client.state, 'polling');
  assert.equal(B.client.state, 'polling');
  assert.deepEqual(B.states.map((s) => s.state), ['live', 'live', 'recovering', 'polling']);
  assert.equal(b.status.statusCalls(), 1, 'only the leader asks status');
  A.client.close();
  B.client.close();
});

test('a revocation reaches the followers: their info lists the topic as denied when onControl runs', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1', 'board:2']);
  await flush();
  b.es.last.hello({ topics: ['board:1', 'board:2'], denied: [] });
  const B = b.tab('B', ['board:1', 'board:2']);
  await flush();
  assert.deepEqual(B.client.info.topics, ['board:1', 'board:2']);
  const seen = [];
  B.client.onControl(() => seen.push({ topics: B.client.info.topics, denied: B.client.info.denied }));
  b.es.last.emit('control', { revoked: ['board:1'], reasons: { 'board:1': 'forbidden' }, topics: ['board:2'] });
  await flush();
  assert.deepEqual(seen, [{ topics: ['board:2'], denied: ['board:1'] }]);
  assert.deepEqual(A.client.info.denied, ['board:1']);
  assert.equal(B.client.state, 'live');
  A.client.close();
  B.client.close();
});

test("a follower's own echo is recognised in that tab only", async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello();
  const B = b.tab('B', ['board:1']);
  await flush();
  await B.client.fetch('/api/cards/7', { method: 'PATCH', body: '{}' });
  const call = b.status.calls.at(-1);
  assert.equal(call.init.headers.get('x-client-id'), 'client-B');
  const mutation = call.init.headers.get('x-mutation-id');
  const received = { A: [], B: [] };
  A.client.onEvent((e) => received.A.push(A.client.isOwnEcho(e)));
  B.client.onEvent((e) => received.B.push(B.client.isOwnEcho(e)));
  b.es.last.emit('card.updated', domainEvent(30, { origin: { client: 'client-B', mutation } }), '30');
  b.es.last.emit('card.updated', domainEvent(31, { origin: { client: null, mutation } }), '31');
  await flush();
  assert.deepEqual(received, { A: [false, false], B: [true, true] });
  A.client.close();
  B.client.close();
});

test('a follower changing its topics makes the leader widen the stream', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello({ head: '3' });
  const B = b.tab('B', ['board:1']);
  await flush();
  assert.equal(b.es.instances.length, 1);
  B.client.setTopics(['board:9']);
  await flush();
  assert.equal(b.es.instances.length, 2);
  assert.equal(b.es.last.params.get('topics'), 'board:1,board:9');
  A.client.close();
  B.client.close();
});

test('without locks/BroadcastChannel (or shareAcrossTabs: false) each tab has its own stream', async () => {
  for (const extra of [{ locks: null }, { BroadcastChannel: null }, { shareAcrossTabs: false }]) {
    const b = browser();
    const A = b.tab('A', ['board:1'], extra);
    const B = b.tab('B', ['board:2'], extra);
    await flush();
    assert.equal(A.client.role, 'solo');
    assert.equal(B.client.role, 'solo');
    assert.equal(b.es.open.length, 2);
    A.client.close();
    B.client.close();
  }
});

test('close() of a follower releases its pending lock request and announces bye', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello();
  const B = b.tab('B', ['board:2']);
  await flush();
  assert.equal(b.locks.waiting('sse-sidecar'), 1);
  B.client.close();
  await flush();
  assert.equal(b.locks.waiting('sse-sidecar'), 0);
  assert.equal(B.client.state, 'stopped');
  assert.equal(A.client.state, 'live', 'the leader is not affected');
  // the leader forgot B's topics: the next reconnect only asks for its own
  b.es.last.emit('control', { mode: 'reconnect', retry_ms: 5 });
  await b.clock.tick(5);
  assert.equal(b.es.last.params.get('topics'), 'board:1');
  A.client.close();
});

test('a frozen leader hands over; on resume it rejoins as a follower', async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello({ head: '1' });
  const B = b.tab('B', ['board:1']);
  await flush();
  b.es.last.emit('card.updated', domainEvent(2), '2');
  await flush();
  A.window.dispatchEvent(new Event('freeze'));
  await flush();
  assert.equal(B.client.role, 'leader');
  assert.equal(b.es.open.length, 1);
  assert.equal(b.es.last.params.get('lastEventId'), '2');
  b.es.last.hello({ head: '2' });
  await flush();
  A.window.dispatchEvent(new Event('resume'));
  await flush();
  assert.equal(A.client.role, 'follower');
  assert.equal(A.client.state, 'live');
  assert.equal(b.es.open.length, 1);
  A.client.close();
  B.client.close();
});

test("the leader's close() does not put followers in 'stopped'", async () => {
  const b = browser();
  const A = b.tab('A', ['board:1']);
  await flush();
  b.es.last.hello();
  const B = b.tab('B', ['board:1']);
  await flush();
  A.client.close();
  await flush();
  assert.notEqual(B.client.state, 'stopped');
  assert.ok(!B.states.some((s) => s.state === 'stopped'));
  B.client.close();
});
