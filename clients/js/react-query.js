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
 *   change) it also invalidates everything, so queries of the revoked topics start polling.
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
 * @typedef {object} ReactQueryAdapter
 * @property {(family: string, ms: number, topic?: string|string[]) => (() => number|false)} refetchInterval
 *   Value for React Query's `refetchInterval`: a function returning `ms` when `topic` (or one
 *   of several) is in `client.info.denied` (denied at connection or revoked since: no event
 *   will come for it); else `client.pollInterval(family, ms)`, i.e. `false` while the stream
 *   is live for `family`, `ms` otherwise (at least the server's poll-interval hint while the
 *   stream is live for other families).
 * @property {(family?: string) => boolean} isLive Same as `client.isLive`.
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

  const unsubscribes = [
    client.onEvent((event) => {
      if (!event || (skipOwnEchoes && client.isOwnEcho(event))) return;
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
    flush() {
      if (cancelScheduled) cancelScheduled();
      flush();
    },
    disconnect() {
      connected = false;
      for (const off of unsubscribes) off();
      if (cancelScheduled) cancelScheduled();
      cancelScheduled = null;
      pendingKeys.clear();
      pendingAll = false;
    },
  };
}
