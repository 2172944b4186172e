// Presence in the client: `hello.presence` and `presence` frames (deltas and full snapshots)
// give `presence(topic)` and the `onPresence` listeners; unknown (`null`) while the stream is
// not live; relayed to follower tabs; `fetchPresence` for pages that poll.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSseClient } from '../sse-client.js';
import {
  FakeClock,
  FakeLockManager,
  domainEvent,
  flush,
  makeBroadcastChannel,
  makeEventSource,
  makeFetch,
  makeStatus,
} from './helpers.js';

const alice = { id: 'alice', fields: { name: 'Alice' }, connections: 2 };
const bob = { id: 'bob', fields: { name: 'Bob' }, connections: 1 };
const carol = { id: 'carol', fields: { name: 'Carol' }, connections: 1 };

/** A `hello.presence` entry. */
function entry(members, extra = {}) {
  return { count: members.length, anonymous: 0, partial: false, members, ...extra };
}

function soloClient(extra = {}) {
  const clock = new FakeClock();
  const es = makeEventSource();
  const status = makeStatus();
  const errors = [];
  const client = createSseClient({
    EventSource: es.EventSource,
    fetch: status.fetch,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    shareAcrossTabs: false,
    lifecycleTarget: null,
    topics: ['board:1', 'board:2'],
    clientId: 'b1.t1',
    onListenerError: (err) => errors.push(err),
    ...extra,
  });
  return { client, es, clock, status, errors };
}

/** Records every call of an `onPresence` listener. */
function record(client, topic) {
  const calls = [];
  const off = client.onPresence(topic, (presence, change) => calls.push({ presence, change }));
  return { calls, off, last: () => calls[calls.length - 1] };
}

const ids = (presence) => presence.members.map((m) => m.id);

test('hello.presence gives presence(topic): a sorted copy; other topics are unknown', () => {
  const { client, es } = soloClient();
  const seen = record(client, 'board:2');
  assert.equal(client.presence('board:2'), null, 'unknown before hello');
  es.last.hello({
    topics: ['board:1', 'board:2'],
    presence: { 'board:2': entry([bob, alice], { count: 3, anonymous: 1, partial: true }) },
  });
  const p = client.presence('board:2');
  assert.deepEqual(p, {
    topic: 'board:2',
    count: 3,
    anonymous: 1,
    partial: true,
    members: [alice, bob],
  });
  assert.equal(client.presence('board:1'), null, 'not a presence topic');
  p.members.pop();
  p.members[0].fields.name = 'changed';
  assert.deepEqual(ids(client.presence('board:2')), ['alice', 'bob'], 'presence() returns a copy');
  assert.equal(client.presence('board:2').members[0].fields.name, 'Alice');
  assert.equal(seen.calls.length, 1);
  assert.deepEqual(seen.last().change, { snapshot: true, joined: [], left: [], updated: [] });
  assert.equal(seen.last().presence.count, 3);
  client.close();
});

test('delta frames: joined adds or replaces, left removes, updated sets connections; counts from the frame', () => {
  const { client, es } = soloClient();
  es.last.hello({ presence: { 'board:2': entry([alice, bob]) } });
  const seen = record(client, 'board:2');
  es.last.emit('presence', {
    topic: 'board:2',
    joined: [carol, { id: 'bob', fields: { name: 'Robert' }, connections: 2 }],
    count: 3,
    anonymous: 2,
    partial: false,
  });
  let p = client.presence('board:2');
  assert.deepEqual(ids(p), ['alice', 'bob', 'carol']);
  assert.deepEqual(p.members[1], { id: 'bob', fields: { name: 'Robert' }, connections: 2 }, 'replaced');
  assert.equal(p.anonymous, 2);
  assert.equal(seen.last().change.snapshot, false);
  assert.deepEqual(seen.last().change.joined.map((m) => m.id), ['carol', 'bob']);

  es.last.emit('presence', { topic: 'board:2', left: ['bob'], updated: [{ id: 'alice', connections: 3 }], count: 2, anonymous: 0 });
  p = client.presence('board:2');
  assert.deepEqual(p.members, [{ ...alice, connections: 3 }, carol]);
  assert.equal(p.count, 2);
  assert.equal(p.anonymous, 0);
  assert.deepEqual(seen.last().change, {
    snapshot: false,
    joined: [],
    left: ['bob'],
    updated: [{ id: 'alice', connections: 3 }],
  });

  // Absent or empty lists are fine; the counts are still the truth.
  es.last.emit('presence', { topic: 'board:2', joined: [], count: 2, anonymous: 5, partial: false });
  assert.equal(client.presence('board:2').anonymous, 5);
  assert.equal(seen.calls.length, 3);
  client.close();
});

test('a full snapshot frame replaces the topic; partial follows the frame', () => {
  const { client, es } = soloClient();
  es.last.hello({ presence: { 'board:2': entry([alice, bob]) } });
  const seen = record(client, 'board:2');
  es.last.emit('presence', { topic: 'board:2', members: [carol], count: 40, anonymous: 3, partial: true });
  assert.deepEqual(client.presence('board:2'), {
    topic: 'board:2',
    count: 40,
    anonymous: 3,
    partial: true,
    members: [carol],
  });
  assert.deepEqual(seen.last().change, { snapshot: true, joined: [], left: [], updated: [] });
  es.last.emit('presence', { topic: 'board:2', left: ['carol'], joined: [alice], count: 1, partial: false });
  assert.deepEqual(client.presence('board:2'), {
    topic: 'board:2',
    count: 1,
    anonymous: 3,
    partial: false,
    members: [alice],
  });
  client.close();
});

test('presence frames never move lastEventId (even with the id a native EventSource repeats)', () => {
  const { client, es } = soloClient();
  es.last.hello({ head: 'e1-5', presence: { 'board:2': entry([alice]) } });
  es.last.emit('card.updated', domainEvent('e1-6', { topics: ['board:1'] }), 'e1-6');
  assert.equal(client.lastEventId, 'e1-6');
  assert.equal(es.last.emit('presence', { topic: 'board:2', joined: [bob], count: 2 }, 'e1-99'), true, 'a listener exists');
  es.last.emit('presence', { topic: 'board:2', members: [bob], count: 1 });
  assert.equal(client.lastEventId, 'e1-6');
  assert.deepEqual(ids(client.presence('board:2')), ['bob']);
  client.close();
});

test('a new hello replaces everything: topics that vanished get an empty snapshot and become unknown', () => {
  const { client, es } = soloClient();
  es.last.hello({ presence: { 'board:1': entry([alice]), 'board:2': entry([bob]) } });
  const one = record(client, 'board:1');
  const two = record(client, 'board:2');
  client.setTopics(['board:1']); // a silent reconnect: the state stays live
  assert.equal(es.open.length, 1);
  es.last.hello({ topics: ['board:1'], presence: { 'board:1': entry([alice, carol]) } });
  assert.equal(client.state, 'live');
  assert.deepEqual(ids(client.presence('board:1')), ['alice', 'carol']);
  assert.equal(client.presence('board:2'), null);
  assert.deepEqual(two.calls.map((c) => c.presence), [
    { topic: 'board:2', count: 0, anonymous: 0, partial: false, members: [] },
  ]);
  assert.equal(two.last().change.snapshot, true);
  assert.deepEqual(ids(one.last().presence), ['alice', 'carol']);
  // A hello without `presence`: no presence topics any more.
  client.setTopics(['board:1', 'board:3']);
  es.last.hello({ topics: ['board:1', 'board:3'] });
  assert.equal(client.presence('board:1'), null);
  assert.deepEqual(one.last().presence.members, []);
  client.close();
});

test('a lost stream makes presence unknown (null, once) until the next hello', async () => {
  const { client, es, clock } = soloClient();
  es.last.hello({ presence: { 'board:2': entry([alice]) } });
  const seen = record(client, 'board:2');
  es.last.fail(false);
  await flush();
  assert.equal(client.state, 'recovering');
  assert.equal(client.presence('board:2'), null);
  assert.deepEqual(seen.calls.map((c) => c.presence), [null]);
  assert.equal(seen.last().change.snapshot, true);
  await clock.tick(clock.nextIn());
  assert.equal(client.state, 'connecting');
  assert.equal(seen.calls.length, 1, 'called with null once');
  es.last.hello({ presence: { 'board:2': entry([alice, bob]) } });
  assert.deepEqual(ids(client.presence('board:2')), ['alice', 'bob']);
  assert.equal(seen.calls.length, 2);
  client.close();
});

test('falling back to polling makes presence unknown: null, the listener called once', async () => {
  const { client, es, clock, status } = soloClient();
  es.last.hello({ presence: { 'board:1': entry([alice]), 'board:2': entry([bob]) } });
  const one = record(client, 'board:1');
  const two = record(client, 'board:2');
  es.last.emit('control', { mode: 'polling', reason: 'admin: off' });
  assert.equal(client.state, 'polling');
  assert.equal(client.presence('board:1'), null);
  assert.equal(client.presence('board:2'), null);
  assert.deepEqual(one.calls.map((c) => c.presence), [null]);
  assert.deepEqual(two.calls.map((c) => c.presence), [null]);
  status.set({ mode: 'polling', retry_after: 0 });
  await clock.tick(60_000); // probes while polling
  assert.equal(one.calls.length, 1, 'once');
  client.close();
  assert.equal(one.calls.length, 1, 'close: already unknown');
});

test('close() makes known presence unknown; a revoked topic gets an empty snapshot', () => {
  const { client, es } = soloClient();
  es.last.hello({ presence: { 'board:1': entry([alice]), 'board:2': entry([bob]) } });
  const one = record(client, 'board:1');
  const two = record(client, 'board:2');
  es.last.emit('control', { revoked: ['board:2'], reasons: { 'board:2': 'forbidden' }, topics: ['board:1'] });
  assert.equal(client.state, 'live');
  assert.equal(client.presence('board:2'), null);
  assert.deepEqual(two.calls.map((c) => c.presence.members), [[]]);
  client.close();
  assert.deepEqual(one.calls.map((c) => c.presence), [null]);
  assert.equal(two.calls.length, 1);
});

test('onPresence: unsubscribe stops the calls; a throwing listener is reported, others still run', () => {
  const { client, es, errors } = soloClient();
  const a = record(client, 'board:2');
  client.onPresence('board:2', () => {
    throw new Error('boom');
  });
  const other = record(client, 'board:1');
  es.last.hello({ presence: { 'board:2': entry([alice]) } });
  assert.equal(a.calls.length, 1);
  assert.equal(errors.length, 1);
  assert.equal(other.calls.length, 0, 'only the topic that changed');
  a.off();
  a.off(); // twice is harmless
  es.last.emit('presence', { topic: 'board:2', joined: [bob], count: 2 });
  assert.equal(a.calls.length, 1, 'unsubscribed');
  assert.equal(errors.length, 2);
  assert.throws(() => client.onPresence('board:2', null), TypeError);
  client.close();
});

test('malformed presence frames change nothing', () => {
  const { client, es } = soloClient();
  es.last.hello({ presence: { 'board:2': entry([alice]), 'board:9': 'nonsense' } });
  const seen = record(client, 'board:2');
  es.last.emit('presence', 'not json');
  es.last.emit('presence', { joined: [bob] });
  es.last.emit('presence', ['board:2']);
  assert.equal(seen.calls.length, 0);
  assert.equal(client.presence('board:9'), null);
  es.last.emit('presence', { topic: 'board:2', joined: [{ fields: {} }, { id: 'bob' }], updated: [{ id: 'alice' }], count: 2 });
  assert.deepEqual(client.presence('board:2').members, [alice, { id: 'bob', fields: {}, connections: 1 }]);
  assert.equal(client.state, 'live');
  client.close();
});

/** One fake browser: tabs sharing locks, channel and network. */
function browser() {
  const clock = new FakeClock();
  const es = makeEventSource();
  const status = makeStatus();
  const locks = new FakeLockManager();
  const bc = makeBroadcastChannel();
  function tab(name, topics) {
    return createSseClient({
      EventSource: es.EventSource,
      fetch: status.fetch,
      now: clock.now,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      random: () => 0.5,
      locks,
      BroadcastChannel: bc.BroadcastChannel,
      lifecycleTarget: null,
      clientId: `b1.${name}`,
      topics,
    });
  }
  return { clock, es, status, locks, bc, tab };
}

test('a follower tab sees the leader presence: hello, frames, and the current state when it joins later', async () => {
  const b = browser();
  const A = b.tab('A', ['board:2']);
  await flush();
  assert.equal(A.role, 'leader');
  b.es.last.hello({ topics: ['board:2'], presence: { 'board:2': entry([alice]) } });
  b.es.last.emit('presence', { topic: 'board:2', joined: [bob], count: 2 });

  // B joins after those frames, with no new topic: the leader does not reconnect.
  const B = b.tab('B', ['board:2']);
  const seenB = record(B, 'board:2');
  await flush();
  assert.equal(B.role, 'follower');
  assert.equal(b.es.instances.length, 1, 'no reconnect');
  assert.equal(B.state, 'live');
  assert.deepEqual(B.presence('board:2'), A.presence('board:2'));
  assert.deepEqual(ids(B.presence('board:2')), ['alice', 'bob']);
  assert.equal(seenB.last().change.snapshot, true);

  b.es.last.emit('presence', { topic: 'board:2', left: ['alice'], updated: [{ id: 'bob', connections: 4 }], count: 1 });
  await flush();
  assert.deepEqual(B.presence('board:2'), A.presence('board:2'));
  assert.deepEqual(B.presence('board:2').members, [{ ...bob, connections: 4 }]);
  assert.deepEqual(seenB.last().change.left, ['alice']);

  // C grows the union: the leader reconnects silently and its new hello reaches every tab.
  const C = b.tab('C', ['board:3']);
  await flush();
  assert.equal(b.es.open.length, 1);
  b.es.last.hello({
    topics: ['board:2', 'board:3'],
    presence: { 'board:2': entry([bob]), 'board:3': entry([carol]) },
  });
  await flush();
  for (const t of [A, B, C]) {
    assert.deepEqual(ids(t.presence('board:3')), ['carol'], t.clientId);
    assert.deepEqual(ids(t.presence('board:2')), ['bob'], t.clientId);
  }

  // The stream is lost: every tab's presence becomes unknown.
  b.es.last.fail(false);
  await flush();
  assert.equal(B.state, 'recovering');
  assert.equal(B.presence('board:2'), null);
  assert.equal(C.presence('board:3'), null);
  assert.equal(seenB.last().presence, null);
  for (const t of [A, B, C]) t.close();
});

test('a follower that becomes leader starts from unknown and learns presence from its own hello', async () => {
  const b = browser();
  const A = b.tab('A', ['board:2']);
  await flush();
  b.es.last.hello({ topics: ['board:2'], presence: { 'board:2': entry([alice, bob]) } });
  const B = b.tab('B', ['board:2']);
  await flush();
  assert.deepEqual(ids(B.presence('board:2')), ['alice', 'bob']);
  A.close();
  await flush();
  assert.equal(B.role, 'leader');
  assert.equal(B.presence('board:2'), null, 'its own stream is not live yet');
  b.es.last.hello({ topics: ['board:2'], presence: { 'board:2': entry([bob]) } });
  assert.deepEqual(ids(B.presence('board:2')), ['bob']);
  B.close();
});

test('fetchPresence GETs the presence beside the stream URL, with credentials, and parses the snapshot', async () => {
  const answer = { topic: 'board:2', count: 3, anonymous: 1, partial: true, members: [bob, alice] };
  const { fetch, calls } = makeFetch((url) => (url.includes('/presence') ? { status: 200, body: answer } : { status: 200, body: { mode: 'sse' } }));
  const { client } = soloClient({ fetch, EventSource: null });
  const p = await client.fetchPresence('board:2');
  assert.deepEqual(p, { topic: 'board:2', count: 3, anonymous: 1, partial: true, members: [alice, bob] });
  const call = calls.find((c) => c.url.includes('/presence'));
  assert.equal(call.url, '/api/sse/presence?topic=board%3A2');
  assert.equal(call.init.credentials, 'same-origin');
  assert.equal(client.presence('board:2'), null, 'a fetched snapshot is not stream state');
  client.close();

  const other = soloClient({ fetch, EventSource: null, url: 'https://app.test/sse/v1/events?x=1', withCredentials: true });
  await other.client.fetchPresence('doc:a b');
  const last = calls[calls.length - 1];
  assert.equal(last.url, 'https://app.test/sse/v1/presence?topic=doc%3Aa%20b');
  assert.equal(last.init.credentials, 'include');
  other.client.close();
});

test('fetchPresence rejects with the status: 403 not authorized, 404 not a presence topic, 0 no answer', async () => {
  const answers = { 'board%3A1': { status: 403, body: { error: 'forbidden' } }, 'board%3A9': { status: 404, body: null } };
  const { fetch } = makeFetch((url) => {
    if (url.includes('down')) return new TypeError('network down');
    return answers[url.split('topic=')[1]] || { status: 200, body: { mode: 'sse' } };
  });
  const { client } = soloClient({ fetch, EventSource: null });
  await assert.rejects(client.fetchPresence('board:1'), (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.status, 403);
    assert.match(err.message, /403/);
    return true;
  });
  await assert.rejects(client.fetchPresence('board:9'), (err) => err.status === 404);
  await assert.rejects(client.fetchPresence('down'), (err) => err.status === 0 && /network down/.test(err.message));
  await assert.rejects(client.fetchPresence(''), TypeError);
  client.close();
});
