// The React hooks (react.js) with the real client on a fake EventSource, rendered by real
// React through react-test-renderer: the state follows the client, events arrive by type.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createElement, act, useState } from 'react';
import TestRenderer from 'react-test-renderer';
import { createSseClient } from '../sse-client.js';
import { usePresence, useSseEvent, useSseEvents, useSseState } from '../react.js';
import { FakeClock, domainEvent, flush, makeEventSource, makeStatus } from './helpers.js';

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

function realClient() {
  const clock = new FakeClock();
  const es = makeEventSource();
  const client = createSseClient({
    EventSource: es.EventSource,
    fetch: makeStatus().fetch,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    shareAcrossTabs: false,
    lifecycleTarget: null,
    topics: ['board:1'],
    clientId: 'tab-1',
  });
  return { client, es, clock };
}

/** Renders `hook` in a component; `seen` holds the value of every render. */
async function renderHook(hook) {
  const seen = [];
  function Probe() {
    seen.push(hook());
    return null;
  }
  let root;
  await act(async () => {
    root = TestRenderer.create(createElement(Probe));
  });
  return { seen, root, latest: () => seen[seen.length - 1] };
}

test('useSseState follows the client: connecting, live with info, a revocation, stopped', async () => {
  const { client, es } = realClient();
  const r = await renderHook(() => useSseState(client));
  assert.equal(r.latest().state, 'connecting');
  await act(async () => {
    es.last.hello({ topics: ['board:1'] });
    await flush();
  });
  assert.equal(r.latest().state, 'live');
  assert.deepEqual(r.latest().info.topics, ['board:1']);
  const rendersWhileLive = r.seen.length;
  await act(async () => flush());
  assert.equal(r.seen.length, rendersWhileLive, 'no re-render without a change');
  await act(async () => {
    es.last.emit('control', { revoked: ['board:1'], reasons: { 'board:1': 'forbidden' } });
    await flush();
  });
  assert.equal(r.latest().state, 'live', 'a revocation keeps the state');
  assert.deepEqual(r.latest().info.denied, ['board:1'], 'but info.denied shows it');
  await act(async () => {
    client.close();
    await flush();
  });
  assert.equal(r.latest().state, 'stopped');
  await act(async () => r.root.unmount());
});

test('useSseEvent and useSseEvents deliver the events of one type only, bounded', async () => {
  const { client, es } = realClient();
  const handled = [];
  const r = await renderHook(() => {
    useSseEvent(client, 'card.updated', (event) => handled.push(event.data.title));
    return useSseEvents(client, 'card.created', { max: 2 });
  });
  await act(async () => {
    es.last.hello({ topics: ['board:1'] });
    es.last.emit('card.updated', domainEvent('e1-1', { data: { id: 7, title: 'renamed' } }), 'e1-1');
    for (const n of [2, 3, 4]) {
      es.last.emit('card.created', domainEvent(`e1-${n}`, { type: 'card.created' }), `e1-${n}`);
    }
    await flush();
  });
  assert.deepEqual(handled, ['renamed']);
  assert.deepEqual(r.latest().map((e) => e.id), ['e1-3', 'e1-4'], 'the last two card.created');
  await act(async () => r.root.unmount());
  es.last.emit('card.updated', domainEvent('e1-5'), 'e1-5');
  await flush();
  assert.deepEqual(handled, ['renamed'], 'unsubscribed on unmount');
  client.close();
});

test('usePresence follows one topic: hello, deltas, a topic change, unknown when the stream is lost', async () => {
  const { client, es, clock } = realClient();
  const subscribed = new Map(); // token → topic, for the hook's live subscriptions
  const onPresence = client.onPresence;
  client.onPresence = (t, fn) => {
    const off = onPresence(t, fn);
    const token = {};
    subscribed.set(token, t);
    return () => {
      subscribed.delete(token);
      off();
    };
  };
  const alice = { id: 'alice', fields: { name: 'Alice' }, connections: 1 };
  const bob = { id: 'bob', fields: {}, connections: 1 };
  let setTopic = null;
  const r = await renderHook(() => {
    const [topic, set] = useState('board:1');
    setTopic = set;
    return usePresence(client, topic);
  });
  assert.equal(r.latest(), null, 'unknown before hello');
  await act(async () => {
    es.last.hello({
      topics: ['board:1'],
      presence: {
        'board:1': { count: 1, anonymous: 0, partial: false, members: [alice] },
        'board:2': { count: 1, anonymous: 0, partial: false, members: [bob] },
      },
    });
    await flush();
  });
  assert.deepEqual(r.latest(), { topic: 'board:1', count: 1, anonymous: 0, partial: false, members: [alice] });
  const before = r.seen.length;
  await act(async () => {
    es.last.emit('presence', { topic: 'board:2', left: ['bob'], count: 0 });
    await flush();
  });
  assert.equal(r.seen.length, before, 'another topic does not re-render');
  assert.equal(r.latest(), r.seen[before - 1], 'the same object until a change');
  await act(async () => {
    es.last.emit('presence', { topic: 'board:1', joined: [bob], count: 2, anonymous: 1 });
    await flush();
  });
  assert.deepEqual(r.latest().members.map((m) => m.id), ['alice', 'bob']);
  assert.equal(r.latest().anonymous, 1);
  await act(async () => setTopic('board:2'));
  assert.deepEqual(r.latest().members, [], 'the new topic');
  assert.deepEqual([...subscribed.values()], ['board:2'], 'one subscription, to the new topic');
  await act(async () => {
    es.last.fail(false);
    await flush();
  });
  assert.equal(r.latest(), null, 'unknown while not live');
  await act(async () => clock.tick(clock.nextIn()));
  await act(async () => {
    es.last.hello({ topics: ['board:1'], presence: { 'board:2': { count: 1, members: [alice] } } });
    await flush();
  });
  assert.deepEqual(r.latest().members, [alice], 'known again after the next hello');
  await act(async () => r.root.unmount());
  assert.equal(subscribed.size, 0, 'unsubscribed on unmount');
  client.close();
});
