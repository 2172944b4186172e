/**
 * React Query (TanStack Query v4/v5) adapter for the sse-sidecar client — dependency-free
 * ES module, no imports: it only calls `queryClient.invalidateQueries(...)`.
 *
 * ```js
 * import { createSseClient } from '/api/sse/client.js';
 * import { connectReactQuery } from '/api/sse/react-query.js';
 * const sse = createSseClient({ topics: ['board:42'] });
 * const rq = connectReactQuery(sse, queryClient);
 * useQuery({ queryKey: ['cards', 42], queryFn, refetchInterval: rq.refetchInterval('cards', 3000) });
 * ```
 *
 * What it does:
 * - every domain event that is not this tab's own echo invalidates each key of
 *   `event.invalidate`, batched per animation frame and deduplicated within a batch;
 * - on `reset` and whenever the effective mode changes (live ↔ not live, or the set of
 *   polled families changes) it invalidates everything;
 * - `refetchInterval(family, ms, topic?)` gives React Query a function that answers `false`
 *   while the stream is live for that family and `ms` otherwise (lengthened to the sidecar's
 *   `x-sse-poll-interval-ms` hint while the stream is live for other families, see
 *   `client.pollInterval`); a query tied to a `topic` the server denied or revoked for this
 *   stream (`client.info.denied`) keeps `ms`, since no event will tell it about changes;
 * - on a revocation (`control {revoked}`, which keeps the state `live` and so is no mode
 *   change) it also invalidates everything, so queries of the revoked topics start polling;
 * - `mutation(spec)` gives `useMutation` options for an optimistic mutation settled by the
 *   sidecar's receipt (see below).
 *
 * Optimistic mutations (`rq.mutation`), with TanStack v5 `useMutation`:
 * - `onMutate` cancels the key's queries, snapshots the exact cache entry (the query's state
 *   object: data, dataUpdatedAt…) and applies `optimistic(old, vars)`;
 * - `mutationFn` sends the request through `client.mutate` (`X-Client-Id`, `X-Mutation-Id`,
 *   `x-sse-base`) and resolves once the receipt (or the HTTP answer) settled it;
 * - `onError` (non-2xx, `failed`/`dropped` receipt, 409 conflict) restores the snapshot
 *   exactly (or, when the data was refetched meanwhile, the refetched entry) and re-applies
 *   the other mutations still pending on the key;
 * - one refetch per confirmed mutation: the own echo of a mutation made by the helper is
 *   NOT skipped while it is pending (its invalidation is the refetch), and `onSettled`
 *   invalidates the key only when no echo came (shadow family, event on topics this tab does
 *   not hold, no receipt, timeout); an echo arriving after that is skipped as usual;
 * - rebase: when the key's data is refetched while mutations are pending (e.g. another
 *   user's event invalidated it), their optimistic updates are re-applied on top of the
 *   fresh data in the same notification batch, so the page never shows the un-updated data.
 *
 * Why invalidating everything on a mode change makes `refetchInterval` switch:
 * React Query evaluates the function form of `refetchInterval` only inside
 * `QueryObserver#updateTimers` (and `setOptions` on re-render). `updateTimers` runs from
 * `QueryObserver.onQueryUpdate()`, which `Query` calls for every observer on every dispatched
 * action. `invalidateQueries()` dispatches `invalidate` on each matching query (if not
 * already invalidated) and then refetches every active query, which dispatches `fetch` and
 * then `success`/`error` — so every mounted observer recomputes its interval right after
 * the mode change, reading the client's new state, and clears or starts its interval timer.
 * Without that nudge a query that is not re-rendered would keep polling after the stream
 * came back (or, worse, keep `false` after the stream died). The refetch is also what the
 * data needs: going live closes the window where events could have been missed, and going
 * to polling starts from fresh data.
 *
 * @module react-query
 */

/**
 * Minimal shape of the sse client used by the adapter (see sse-client.js `SseClient`).
 * @typedef {object} SseClientLike
 * @property {string} state
 * @property {string[]} pollingFamilies
 * @property {{denied?: string[]}} [info] Topics the server denied or revoked (`info.denied`).
 * @property {(family?: string) => boolean} isLive
 * @property {(family: string, defaultMs: number) => number|false} [pollInterval] Used when
 *   present (hint-aware interval); else `isLive(family) ? false : ms`.
 * @property {(event: any) => boolean} isOwnEcho
 * @property {(fn: (event: any) => void) => () => void} onEvent
 * @property {(fn: (reset: any) => void) => () => void} onReset
 * @property {(fn: (state: string, info: any) => void) => () => void} onStateChange
 * @property {(fn: (control: any) => void) => () => void} [onControl] Revocations are
 *   followed through it when present.
 * @property {(request: any, options?: any) => Promise<any>} [mutate] Used by `mutation()`.
 * @property {(response: any, options?: any) => Promise<any>} [settle] Used by `mutation()`.
 * @property {(topics: string[]) => string|null} [baseFor] Used by `mutation()`.
 */

/**
 * Minimal shape of a TanStack `QueryClient` used by the adapter.
 * @typedef {object} QueryClientLike
 * @property {(filters?: {queryKey?: ReadonlyArray<unknown>}) => unknown} invalidateQueries
 */

/**
 * @typedef {object} ReactQueryAdapterOptions
 * @property {boolean} [skipOwnEchoes=true] Ignore events caused by this tab (its own mutation
 *   code already refreshed what it changed).
 * @property {boolean} [invalidateOnModeChange=true] Invalidate everything when the effective
 *   mode changes, and on a revocation (needed for `refetchInterval` to switch; see module
 *   docs).
 * @property {(event: any, queryClient: QueryClientLike) => void} [onEvent] Extra hook for
 *   every delivered event (e.g. `setQueryData` from `event.data`), called before batching.
 * @property {(flush: () => void) => (() => void)} [schedule] Schedules a batch flush and
 *   returns a cancel function. Default: `requestAnimationFrame` when present and the
 *   document is visible, else a 16 ms timer.
 */

/**
 * Minimal shape of a TanStack v5 `QueryClient` used by `mutation()`.
 * @typedef {object} MutationQueryClientLike
 * @property {(filters?: {queryKey?: ReadonlyArray<unknown>, exact?: boolean}) => unknown} invalidateQueries
 * @property {(filters: {queryKey: ReadonlyArray<unknown>}) => Promise<void>} cancelQueries
 * @property {(key: ReadonlyArray<unknown>, updater: (old: any) => any) => unknown} setQueryData
 * @property {(filters: {queryKey: ReadonlyArray<unknown>, exact?: boolean}) => void} removeQueries
 * @property {() => {find(filters: {queryKey: ReadonlyArray<unknown>, exact?: boolean}): any, subscribe(fn: (event: any) => void): () => void}} getQueryCache
 */

/**
 * What `mutation()` needs from the app.
 * @template TVars
 * @typedef {object} OptimisticMutationSpec
 * @property {(vars: TVars) => (import('./sse-client.js').SseMutationRequest|Promise<Response>|Response)} mutationFn
 *   The request to send (sent through `client.mutate`), or the `Response` (promise) of a
 *   request the app sent itself through `client.fetch` (then settled by `client.settle`).
 * @property {(vars: TVars) => ReadonlyArray<unknown>} queryKey The cache entry it changes.
 * @property {(old: any, vars: TVars) => any} optimistic The entry's data after the change.
 * @property {(vars: TVars) => string|null|undefined} [base] Version the user edited (sent as
 *   `x-sse-base`), e.g. captured with `client.baseFor(...)` when the edit started.
 * @property {(vars: TVars) => string[]} [topics] Without `base`: the base is
 *   `client.baseFor(topics(vars))` when the mutation starts.
 * @property {number} [timeoutMs] Receipt wait (default: the client's).
 */

/**
 * Context `onMutate` returns (TanStack passes it to `onError`/`onSettled`).
 * @typedef {object} OptimisticMutationContext
 * @property {string} mutationId
 * @property {ReadonlyArray<unknown>} queryKey
 */

/**
 * Options to spread into `useMutation` (or `new MutationObserver(queryClient, ...)`).
 * @template TVars
 * @typedef {object} OptimisticMutationOptions
 * @property {(vars: TVars) => Promise<import('./sse-client.js').SseMutationResult>} mutationFn
 * @property {(vars: TVars) => Promise<OptimisticMutationContext>} onMutate
 * @property {(error: unknown, vars: TVars, context: OptimisticMutationContext|undefined) => void} onError
 * @property {(data: unknown, error: unknown, vars: TVars, context: OptimisticMutationContext|undefined) => unknown} onSettled
 */

/**
 * @typedef {object} ReactQueryAdapter
 * @property {(family: string, ms: number, topic?: string|string[]) => (() => number|false)} refetchInterval
 *   Value for React Query's `refetchInterval`: a function returning `ms` when `topic` (or one
 *   of several) is in `client.info.denied` (denied at connection or revoked since: no event
 *   will come for it); else `client.pollInterval(family, ms)`, i.e. `false` while the stream
 *   is live for `family`, `ms` otherwise (at least the server's poll-interval hint while the
 *   stream is live for other families).
 * @property {(family?: string) => boolean} isLive Same as `client.isLive`.
 * @property {<TVars>(spec: OptimisticMutationSpec<TVars>) => OptimisticMutationOptions<TVars>} mutation
 *   `useMutation` options for an optimistic mutation settled by the sidecar's receipt (see
 *   module docs). Needs `client.mutate`/`client.settle` and a TanStack v5 QueryClient.
 * @property {() => void} flush Run the pending batch now.
 * @property {() => void} disconnect Stop listening (pending batch dropped).
 */

function defaultSchedule(flush) {
  const doc = globalThis.document;
  const hidden = doc && doc.visibilityState === 'hidden';
  // Hidden tabs get no animation frames at all: fall back to a timer there.
  if (!hidden && typeof globalThis.requestAnimationFrame === 'function') {
    const handle = globalThis.requestAnimationFrame(() => flush());
    return () => globalThis.cancelAnimationFrame && globalThis.cancelAnimationFrame(handle);
  }
  const handle = globalThis.setTimeout(() => flush(), 16);
  return () => globalThis.clearTimeout(handle);
}

function keyHash(key) {
  try {
    return JSON.stringify(key);
  } catch {
    return null;
  }
}

/** True when `prefix` is a strict prefix of `key` (React Query matches keys by prefix). */
function isStrictPrefix(prefix, key) {
  if (prefix.length >= key.length) return false;
  return prefix.every((part, i) => keyHash(part) === keyHash(key[i]));
}

function swallow(result) {
  if (result && typeof result.then === 'function') result.then(undefined, () => {});
}

/**
 * Wire an sse client to a TanStack QueryClient.
 * @param {SseClientLike} client From `createSseClient`.
 * @param {QueryClientLike} queryClient TanStack `QueryClient`.
 * @param {ReactQueryAdapterOptions} [options]
 * @returns {ReactQueryAdapter}
 */
export function connectReactQuery(client, queryClient, options = {}) {
  const o = options || {};
  const skipOwnEchoes = o.skipOwnEchoes !== false;
  const invalidateOnModeChange = o.invalidateOnModeChange !== false;
  const schedule = o.schedule || defaultSchedule;

  /** @type {Map<string, unknown[]>} */
  let pendingKeys = new Map();
  let pendingAll = false;
  let cancelScheduled = null;
  let connected = true;

  function modeSignature() {
    const families = Array.isArray(client.pollingFamilies) ? [...client.pollingFamilies].sort() : [];
    return `${client.state === 'live'}|${families.join(',')}`;
  }
  let lastSignature = modeSignature();

  function flush() {
    cancelScheduled = null;
    if (!connected) return;
    const all = pendingAll;
    const keys = [...pendingKeys.values()];
    pendingAll = false;
    pendingKeys = new Map();
    if (all) {
      swallow(queryClient.invalidateQueries());
      return;
    }
    for (const key of keys) {
      // ['cards'] already invalidates ['cards', 7]: skip keys covered by another in the batch.
      if (keys.some((other) => other !== key && isStrictPrefix(other, key))) continue;
      swallow(queryClient.invalidateQueries({ queryKey: key }));
    }
  }

  function request() {
    if (!cancelScheduled) cancelScheduled = schedule(flush) || (() => {});
  }

  function invalidateAll() {
    pendingAll = true;
    pendingKeys.clear();
    request();
  }

  /** Whether the server denied or revoked (one of) `topic` for this stream. */
  function isDenied(topic) {
    const denied = client.info && Array.isArray(client.info.denied) ? client.info.denied : [];
    if (!denied.length) return false;
    return (Array.isArray(topic) ? topic : [topic]).some((t) => denied.includes(t));
  }

  // `rq.mutation` needs a full QueryClient (cancelQueries, setQueryData…); invalidation alone
  // needs only `invalidateQueries`, so the adapter's own parameter stays the minimal shape.
  const optimistic = createOptimisticLayer(
    client,
    /** @type {MutationQueryClientLike} */ (/** @type {unknown} */ (queryClient)),
  );

  const unsubscribes = [
    client.onEvent((event) => {
      if (!event) return;
      // The echo of a helper mutation still pending is its one refetch (see module docs).
      if (skipOwnEchoes && client.isOwnEcho(event) && !optimistic.claimEcho(event)) return;
      if (o.onEvent) o.onEvent(event, queryClient);
      if (!Array.isArray(event.invalidate) || pendingAll) return;
      let added = false;
      for (const key of event.invalidate) {
        if (!Array.isArray(key)) continue;
        const hash = keyHash(key);
        if (hash == null || pendingKeys.has(hash)) continue;
        pendingKeys.set(hash, key);
        added = true;
      }
      if (added) request();
    }),
    client.onReset(() => invalidateAll()),
    client.onStateChange(() => {
      const signature = modeSignature();
      if (signature === lastSignature) return;
      lastSignature = signature;
      if (invalidateOnModeChange) invalidateAll();
    }),
  ];
  if (typeof client.onControl === 'function') {
    // A revocation moves topics to info.denied but keeps the state live (no onStateChange):
    // nudge every observer to re-read its refetchInterval, and refetch the revoked data.
    unsubscribes.push(client.onControl((control) => {
      if (invalidateOnModeChange && control && Array.isArray(control.revoked) && control.revoked.length) invalidateAll();
    }));
  }

  return {
    refetchInterval(family, ms, topic) {
      // A function, so React Query re-reads it on each observer update (see module docs).
      return () => {
        if (topic != null && isDenied(topic)) return ms;
        if (typeof client.pollInterval === 'function') return client.pollInterval(family, ms);
        return client.isLive(family) ? false : ms;
      };
    },
    isLive: (family) => client.isLive(family),
    mutation: (spec) => optimistic.mutation(spec),
    flush() {
      if (cancelScheduled) cancelScheduled();
      flush();
    },
    disconnect() {
      connected = false;
      optimistic.stop();
      for (const off of unsubscribes) off();
      if (cancelScheduled) cancelScheduled();
      cancelScheduled = null;
      pendingKeys.clear();
      pendingAll = false;
    },
  };
}

const MAX_TRACKED_MUTATIONS = 500;

function helperRandomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

function isResponseLike(value) {
  return !!value && typeof value === 'object' && typeof value.status === 'number' && !!value.headers;
}

/**
 * Optimistic layers per query key: the pending mutations, the server's entry under them, and
 * the rebase on refetch.
 * @private
 * @param {SseClientLike} client
 * @param {MutationQueryClientLike} queryClient
 */
function createOptimisticLayer(client, queryClient) {
  /** mutation id → {id, vars, key, hash, apply, base, status: 'pending'|'done', echoed} */
  const tracked = new Map();
  /** key hash → {key, serverState, pending: entry[]} */
  const layers = new Map();
  /** vars → entries created by onMutate and not yet picked by mutationFn (FIFO). */
  const byVars = new Map();
  let unsubscribeCache = null;

  function findQuery(key) {
    return queryClient.getQueryCache().find({ queryKey: key, exact: true });
  }

  function track(entry) {
    tracked.set(entry.id, entry);
    for (const [id, e] of tracked) {
      if (tracked.size <= MAX_TRACKED_MUTATIONS) break;
      if (e.status === 'done') tracked.delete(id);
      else break;
    }
  }

  /** Re-apply the pending layers on top of the entry now in the cache. */
  function reapply(layer) {
    for (const e of layer.pending) queryClient.setQueryData(layer.key, (old) => e.apply(old));
  }

  function onCacheEvent(event) {
    if (!event || event.type !== 'updated' || !event.action) return;
    const { action, query } = event;
    if (action.type !== 'success' || action.manual) return;
    const layer = layers.get(keyHash(query.queryKey));
    if (!layer || !layer.pending.length) return;
    // Fresh server data while mutations are pending: it is the new base; rebase on it.
    layer.serverState = query.state;
    reapply(layer);
  }

  function ensureCacheSubscription() {
    if (!unsubscribeCache) unsubscribeCache = queryClient.getQueryCache().subscribe(onCacheEvent);
  }

  function removeFromLayer(entry) {
    const layer = layers.get(entry.hash);
    if (!layer) return null;
    layer.pending = layer.pending.filter((e) => e !== entry);
    if (!layer.pending.length) layers.delete(entry.hash);
    return layer;
  }

  function baseOf(spec, vars) {
    if (spec.base) return spec.base(vars);
    if (spec.topics && typeof client.baseFor === 'function') return client.baseFor(spec.topics(vars));
    return undefined;
  }

  async function onMutate(spec, vars) {
    const key = spec.queryKey(vars);
    const hash = keyHash(key);
    const entry = {
      id: helperRandomId(), vars, key, hash, status: 'pending', echoed: false,
      apply: (old) => spec.optimistic(old, vars),
      base: baseOf(spec, vars),
    };
    track(entry);
    if (!byVars.has(vars)) byVars.set(vars, []);
    byVars.get(vars).push(entry);
    ensureCacheSubscription();
    await queryClient.cancelQueries({ queryKey: key });
    let layer = layers.get(hash);
    if (!layer) {
      const query = findQuery(key);
      layer = { key, serverState: query ? query.state : null, pending: [] };
      layers.set(hash, layer);
    }
    layer.pending.push(entry);
    queryClient.setQueryData(key, (old) => entry.apply(old));
    return { mutationId: entry.id, queryKey: key };
  }

  async function mutationFn(spec, vars) {
    const queue = byVars.get(vars) || [];
    const entry = queue.shift();
    if (!queue.length) byVars.delete(vars);
    const sent = await spec.mutationFn(vars);
    if (isResponseLike(sent)) return client.settle(sent, { timeoutMs: spec.timeoutMs });
    return client.mutate(sent, {
      mutationId: entry ? entry.id : undefined,
      base: entry ? entry.base : undefined,
      timeoutMs: spec.timeoutMs,
    });
  }

  function onError(context) {
    const entry = context && tracked.get(context.mutationId);
    if (!entry || entry.status === 'done') return;
    entry.status = 'done';
    const layer = removeFromLayer(entry);
    if (!layer) return;
    const query = findQuery(entry.key);
    if (layer.serverState && query) query.setState(layer.serverState);
    else if (!layer.serverState) queryClient.removeQueries({ queryKey: entry.key, exact: true });
    if (layer.pending.length) reapply(layer);
  }

  function onSettled(error, context) {
    const entry = context && tracked.get(context.mutationId);
    if (!entry || entry.status !== 'pending' || error) return undefined;
    entry.status = 'done';
    removeFromLayer(entry);
    // The echo already invalidated the key: no second refetch.
    if (entry.echoed) return undefined;
    return queryClient.invalidateQueries({ queryKey: entry.key });
  }

  return {
    /** True when `event` is the echo of a pending helper mutation (and marks it echoed). */
    claimEcho(event) {
      const id = event && event.origin ? event.origin.mutation : null;
      const entry = id != null ? tracked.get(id) : null;
      if (!entry || entry.status !== 'pending') return false;
      // Only an echo whose invalidation refetches the key counts as its refetch.
      const keys = Array.isArray(event.invalidate) ? event.invalidate : [];
      const covers = keys.some((k) => Array.isArray(k) && (keyHash(k) === entry.hash || isStrictPrefix(k, entry.key)));
      if (!covers) return false;
      entry.echoed = true;
      return true;
    },
    mutation(spec) {
      const ok = spec && ['mutationFn', 'queryKey', 'optimistic'].every((k) => typeof spec[k] === 'function');
      if (!ok) throw new TypeError('mutation: mutationFn, queryKey and optimistic must be functions');
      return {
        mutationFn: (vars) => mutationFn(spec, vars),
        onMutate: (vars) => onMutate(spec, vars),
        onError: (_error, _vars, context) => onError(context),
        onSettled: (_data, error, _vars, context) => onSettled(error, context),
      };
    },
    stop() {
      if (unsubscribeCache) unsubscribeCache();
      unsubscribeCache = null;
    },
  };
}
