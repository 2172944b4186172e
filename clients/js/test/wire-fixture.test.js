// Replays the frames the server writes (clients/js/test/fixtures/frames.sse, written by the
// Rust test `wire::frame::tests::the_client_fixture_holds_one_of_every_frame_the_server_writes`
// from the server's one typed frame enum) through the client, one by one after the fixture's
// own `hello`: every frame the server can send has a listener and a defined effect, so the two
// sides of the wire contract cannot drift apart unnoticed. Frames of later server versions
// (receipts, presence) are checked when the fixture has them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createSseClient } from '../sse-client.js';
import { FakeClock, makeEventSource, makeStatus } from './helpers.js';

/** A spec-following parse of the fixture into frames ({event, data, id} or {retry}). */
function parseFrames(text) {
  const frames = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    const frame = { event: 'message', data: [], id: null, retry: null };
    for (const line of block.split('\n')) {
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') frame.event = value;
      else if (field === 'data') frame.data.push(value);
      else if (field === 'id') frame.id = value;
      else if (field === 'retry') frame.retry = Number(value);
    }
    frame.data = frame.data.join('\n');
    frames.push(frame);
  }
  return frames;
}

const FRAMES = parseFrames(readFileSync(new URL('./fixtures/frames.sse', import.meta.url), 'utf8'));
const HELLO = FRAMES.find((f) => f.event === 'hello');
const RECEIPT = FRAMES.find((f) => f.event === 'receipt');
/** The tab id the fixture's receipt names (any id when the fixture has none). */
const RECEIPT_CLIENT = RECEIPT ? JSON.parse(RECEIPT.data).client : 'tab-1';

function liveClient() {
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
    topics: ['board:1', 'board:3'],
    clientId: RECEIPT_CLIENT,
  });
  const seen = { events: [], resets: [], controls: [], receipts: [] };
  client.onReceipt((r) => seen.receipts.push(r));
  client.onEvent((e) => seen.events.push(e));
  client.onReset((r) => seen.resets.push(r));
  client.onControl((c) => seen.controls.push(c));
  es.last.open();
  assert.equal(es.last.emit('hello', HELLO.data, HELLO.id), true);
  assert.equal(client.state, 'live');
  const client0 = JSON.parse(HELLO.data).client;
  if (client0 !== undefined) assert.ok(client0 === null || typeof client0 === 'string', 'hello.client');
  return { es, client, seen };
}

/** What each frame must do to a live client, keyed by event name and its data's shape. */
const EFFECTS = {
  'card.updated': ({ seen }) => assert.equal(seen.events[0].id, 'ep1-42'),
  heartbeat: ({ client }) => assert.equal(client.state, 'live'),
  reset: ({ client, seen }) => {
    assert.equal(seen.resets[0].reason, 'events_lost');
    assert.equal(client.lastEventId, 'ep1-43', 'a reset moves the resume point to its head');
  },
  'control.types_changed': ({ es }) => {
    assert.equal(es.last.emit('card.moved', { id: 'ep1-44', type: 'card.moved', topics: ['board:1'] }, 'ep1-44'), true);
  },
  'control.rollout': ({ client }) => assert.deepEqual(client.pollingFamilies, ['sessions']),
  'control.revoked': ({ client, seen }) => {
    assert.deepEqual(seen.controls[0].revoked, ['board:1']);
    assert.equal(client.state, 'live', 'topics are left');
  },
  'control.draining': ({ client }) => assert.equal(client.state, 'recovering'),
  'control.admin: drill': ({ client }) => assert.equal(client.state, 'polling'),
  // Receipts (#17): a receipt frame has no id (it never moves the resume point) and reaches
  // the tab whose X-Client-Id it names.
  receipt: ({ client, seen }) => {
    assert.equal(client.lastEventId, HELLO.id, 'no id: the resume point stays');
    const r = seen.receipts[0];
    assert.ok(r, 'the receipt reached the tab it names');
    assert.equal(typeof r.mutation, 'string');
    assert.ok(['delivered', 'shadow', 'dropped', 'failed'].includes(r.outcome));
  },
  // Presence: no id (never moves the resume point); a delta applies to the topic's state (or
  // starts it), a full snapshot (`members`) replaces it; the frame's counts are the truth.
  'presence.delta': presenceEffect,
  'presence.snapshot': presenceEffect,
};
/** Frames added by a later server version: checked when the fixture has them. */
const OPTIONAL = new Set(['receipt', 'presence.delta', 'presence.snapshot']);

function presenceEffect({ client }, frame) {
  const data = JSON.parse(frame.data);
  assert.equal(client.lastEventId, HELLO.id, 'no id: the resume point stays');
  const p = client.presence(data.topic);
  assert.ok(p, `presence of ${data.topic} is known`);
  if (typeof data.count === 'number') assert.equal(p.count, data.count);
  if (typeof data.anonymous === 'number') assert.equal(p.anonymous, data.anonymous);
  if (typeof data.partial === 'boolean') assert.equal(p.partial, data.partial);
  for (const m of data.members || data.joined || []) assert.ok(p.members.some((x) => x.id === m.id), m.id);
  for (const id of data.left || []) assert.ok(!p.members.some((x) => x.id === id), id);
}

function effectKey(frame) {
  if (frame.event === 'presence') return Array.isArray(JSON.parse(frame.data).members) ? 'presence.snapshot' : 'presence.delta';
  if (frame.event !== 'control') return frame.event;
  const data = JSON.parse(frame.data);
  return data.revoked ? 'control.revoked' : `control.${data.reason}`;
}

test('the fixture holds the frames this test knows, and no others', () => {
  const keys = FRAMES.filter((f) => f.retry == null && f.event !== 'hello').map(effectKey);
  const expected = Object.keys(EFFECTS).filter((k) => !OPTIONAL.has(k) || keys.includes(k));
  assert.deepEqual([...keys].sort(), expected.sort());
  assert.ok(FRAMES.some((f) => f.retry > 0), 'a retry line');
  assert.equal(HELLO.id, JSON.parse(HELLO.data).head, 'hello carries its head as id');
});

test("the fixture's hello presence (when it has one) gives presence() for each of its topics", () => {
  const { client } = liveClient();
  const presence = JSON.parse(HELLO.data).presence;
  for (const [topic, entry] of Object.entries(presence || {})) {
    const p = client.presence(topic);
    assert.ok(p, topic);
    assert.equal(p.count, entry.count);
    assert.equal(p.anonymous, entry.anonymous);
    assert.equal(p.partial, entry.partial);
    assert.deepEqual(p.members.map((m) => m.id), entry.members.map((m) => m.id).sort());
  }
  client.close();
});

for (const frame of FRAMES.filter((f) => f.retry == null && f.event !== 'hello')) {
  const key = effectKey(frame);
  test(`the client handles the server's ${key} frame`, () => {
    const ctx = liveClient();
    assert.equal(ctx.es.last.emit(frame.event, frame.data, frame.id || undefined), true, 'a listener exists');
    EFFECTS[key](ctx, frame);
  });
}
