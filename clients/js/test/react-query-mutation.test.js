// rq.mutation() against the real @tanstack/query-core v5 (QueryClient, QueryObserver,
// MutationObserver) and the real sse client over a fake EventSource and fetch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueryClient, QueryObserver, MutationObserver, notifyManager } from '@tanstack/query-core';
import { connectReactQuery } from '../react-query.js';
import { createSseClient, SseConflictError } from '../sse-client.js';
import { makeEventSource, makeFetch, domainEvent } from './helpers.js';

const KEY = ['card', 7];

/** Waits for `cond()` to hold, polling every few ms, failing after `ms`. */
async function until(cond, ms = 2000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * A page: sse client (solo) + QueryClient + adapter; the card's server data in `server`;
 * `answer(init)` decides the PATCH's answer. queryFn calls are counted.
 */
function page(answer) {
  const es = makeEventSource();
  const server = { card: { id: 7, title: 'old', color: 'blue' } };
  const patches = [];
  const net = makeFetch((url, init) => {
    if (url.includes('/api/sse/status')) return { status: 200, body: { mode: 'sse' } };
    if (init.method === 'PATCH') {
      const mutation = new Headers(init.headers).get('x-mutation-id');
      patches.push({ mutation, base: new Headers(init.headers).get('x-sse-base') });
      return answer(mutation, init);
    }
    return { status: 200, body: server.card };
  });
  const sse = createSseClient({
    EventSource: es.EventSource, fetch: net.fetch, shareAcrossTabs: false, lifecycleTarget: null,
    topics: ['board:1'], clientId: 'B1.t1',
  });
  es.last.hello({ epoch: 'ep1', head: 'ep1-0', client: 'B1', heartbeat_ms: 0 });
  const queryClient = new QueryClient({ defaultOptions: { queries: { gcTime: Infinity, retry: false }, mutations: { gcTime: Infinity } } });
  const rq = connectReactQuery(sse, queryClient, { schedule: (fn) => { const h = setTimeout(fn, 0); return () => clearTimeout(h); } });
  let fetches = 0;
  const queryFn = async () => {
    fetches++;
    return { ...server.card };
  };
  const observer = new QueryObserver(queryClient, { queryKey: KEY, queryFn, staleTime: Infinity });
  const seen = [];
  // As the React binding does: notifications batched, the current result read when rendering.
  const unsubscribe = observer.subscribe(notifyManager.batchCalls(() => {
    const { data } = observer.getCurrentResult();
    if (data) seen.push(data.title);
  }));
  const rename = rq.mutation({
    mutationFn: ({ title }) => ({ url: '/api/cards/7', method: 'PATCH', body: JSON.stringify({ title }) }),
    queryKey: () => KEY,
    optimistic: (old, { title }) => ({ ...old, title }),
    base: ({ base }) => base,
  });
  const mutation = new MutationObserver(queryClient, rename);
  return {
    es, sse, queryClient, rq, server, patches, mutation, seen,
    get fetches() {
      return fetches;
    },
    query: () => queryClient.getQueryCache().find({ queryKey: KEY, exact: true }),
    close() {
      unsubscribe();
      rq.disconnect();
      sse.close();
      queryClient.clear();
    },
  };
}

const pending = { status: 200, body: { ok: true }, headers: { 'x-sse-receipt': 'pending' } };
const receipt = (mutation, extra = {}) => ({ client: 'B1.t1', conflict: null, events: [], mutation, outcome: 'delivered', reason: null, status: 200, ...extra });
const echo = (id, mutation, data, client = 'B1.t1') => domainEvent(id, {
  origin: { client, mutation }, data, topics: ['board:1', 'card:7'], invalidate: [KEY],
});

test('a refused rename rolls back to the exact previous cache entry (same data object, same dataUpdatedAt)', async () => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const p = page(() => gate.then(() => ({ status: 422, body: { error: 'title too long' } })));
  await until(() => p.query() && p.query().state.status === 'success', 2000, 'initial fetch');
  const before = p.query().state;
  const run = p.mutation.mutate({ title: 'x'.repeat(81) });
  run.catch(() => {});
  await until(() => p.seen.includes('x'.repeat(81)), 2000, 'optimistic data');
  release();
  await assert.rejects(run, (err) => err.status === 422);
  const after = p.query().state;
  assert.equal(after.data, before.data, 'the very same data object');
  assert.equal(after.dataUpdatedAt, before.dataUpdatedAt);
  assert.deepEqual(after, before);
  assert.equal(p.fetches, 1, 'a rollback needs no refetch');
  p.close();
});

test('a 409 conflict rolls back exactly and surfaces as SseConflictError with the other user\'s event', async () => {
  const bob = domainEvent('ep1-5', { data: { id: 7, title: 'Bob was here', by: 'bob' } });
  const p = page(() => ({ status: 409, body: { conflict: { base: 'ep1-3', current: 'ep1-5', events: [bob] } } }));
  await until(() => p.query() && p.query().state.status === 'success');
  const before = p.query().state;
  await assert.rejects(p.mutation.mutate({ title: 'mine', base: 'ep1-3' }), (err) => {
    assert.ok(err instanceof SseConflictError);
    assert.equal(err.events[0].data.by, 'bob');
    return true;
  });
  assert.equal(p.patches[0].base, 'ep1-3', 'the base captured by the app is sent');
  assert.deepEqual(p.query().state, before);
  assert.equal(p.query().state.data, before.data);
  p.close();
});

test('a confirmed rename refetches once: the echo\'s invalidation (echo before the receipt)', async () => {
  const p = page(() => pending);
  await until(() => p.fetches === 1 && p.query().state.status === 'success');
  const run = p.mutation.mutate({ title: 'new' });
  await until(() => p.patches.length === 1, 2000, 'the PATCH');
  p.server.card = { ...p.server.card, title: 'new' };
  const { mutation } = p.patches[0];
  p.es.last.emit('card.updated', echo('ep1-1', mutation, { id: 7, title: 'new' }), 'ep1-1');
  p.es.last.emit('receipt', receipt(mutation, { events: ['ep1-1'] }));
  const result = await run;
  assert.deepEqual(result.events, ['ep1-1']);
  await until(() => p.fetches >= 2, 2000, 'the echo refetch');
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(p.fetches, 2, 'one refetch, not two');
  assert.equal(p.query().state.data.title, 'new');
  assert.equal(p.sse.version('card:7'), 'ep1-1', 'the echo is the new version');
  p.close();
});

test('a confirmed rename refetches once: the receipt first, the echo after', async () => {
  const p = page(() => pending);
  await until(() => p.fetches === 1 && p.query().state.status === 'success');
  const run = p.mutation.mutate({ title: 'new' });
  await until(() => p.patches.length === 1);
  p.server.card = { ...p.server.card, title: 'new' };
  const { mutation } = p.patches[0];
  p.es.last.emit('receipt', receipt(mutation, { events: ['ep1-1'] }));
  await run;
  p.es.last.emit('card.updated', echo('ep1-1', mutation, { id: 7, title: 'new' }), 'ep1-1');
  await until(() => p.fetches >= 2);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(p.fetches, 2, 'onSettled refetched; the late echo is skipped');
  p.close();
});

test('a shadow receipt (no echo will come) refetches once, from onSettled', async () => {
  const p = page(() => pending);
  await until(() => p.fetches === 1 && p.query().state.status === 'success');
  const run = p.mutation.mutate({ title: 'new' });
  await until(() => p.patches.length === 1);
  p.es.last.emit('receipt', receipt(p.patches[0].mutation, { outcome: 'shadow' }));
  await run;
  await until(() => p.fetches >= 2);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(p.fetches, 2);
  p.close();
});

test('a dropped receipt rolls back exactly', async () => {
  const p = page(() => pending);
  await until(() => p.query() && p.query().state.status === 'success');
  const before = p.query().state;
  const run = p.mutation.mutate({ title: 'new' });
  await until(() => p.patches.length === 1);
  p.es.last.emit('receipt', receipt(p.patches[0].mutation, { outcome: 'dropped', reason: 'schema_invalid' }));
  await assert.rejects(run, (err) => err.reason === 'schema_invalid');
  assert.deepEqual(p.query().state, before);
  p.close();
});

test('another user\'s event while the rename is pending rebases it: fresh data, optimistic title on top, no flicker', async () => {
  const p = page(() => pending);
  await until(() => p.fetches === 1 && p.query().state.status === 'success');
  const run = p.mutation.mutate({ title: 'mine' });
  await until(() => p.patches.length === 1 && p.seen.includes('mine'));
  const from = p.seen.length;
  // Bob recolours the card: his event invalidates the key; the refetch carries his change.
  p.server.card = { ...p.server.card, color: 'red' };
  p.es.last.emit('card.updated', echo('ep1-2', 'bob-m', { id: 7, color: 'red' }, 'B2.t9'), 'ep1-2');
  await until(() => p.fetches === 2, 2000, 'the foreign refetch');
  await until(() => p.query().state.data.color === 'red');
  assert.deepEqual(p.query().state.data, { id: 7, title: 'mine', color: 'red' }, 'rebased');
  assert.ok(!p.seen.slice(from).includes('old'), `never shows the old title again: ${p.seen.slice(from)}`);
  // Then the rename is confirmed (its echo invalidates; the server has both changes).
  p.server.card = { ...p.server.card, title: 'mine' };
  const { mutation } = p.patches[0];
  p.es.last.emit('card.updated', echo('ep1-3', mutation, { id: 7, title: 'mine' }), 'ep1-3');
  p.es.last.emit('receipt', receipt(mutation, { events: ['ep1-3'] }));
  await run;
  await until(() => p.fetches === 3);
  assert.deepEqual(p.query().state.data, { id: 7, title: 'mine', color: 'red' });
  assert.ok(!p.seen.slice(from).includes('old'));
  p.close();
});

test('a rollback after a rebase restores the refetched entry, not the stale snapshot', async () => {
  const p = page(() => pending);
  await until(() => p.fetches === 1 && p.query().state.status === 'success');
  const run = p.mutation.mutate({ title: 'mine' });
  await until(() => p.patches.length === 1);
  p.server.card = { ...p.server.card, color: 'red' };
  p.es.last.emit('card.updated', echo('ep1-2', 'bob-m', { id: 7, color: 'red' }, 'B2.t9'), 'ep1-2');
  await until(() => p.query().state.data.color === 'red');
  p.es.last.emit('receipt', receipt(p.patches[0].mutation, { outcome: 'failed', status: 500 }));
  await assert.rejects(run);
  assert.deepEqual(p.query().state.data, { id: 7, title: 'old', color: 'red' });
  p.close();
});
