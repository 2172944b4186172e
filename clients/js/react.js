/**
 * React hooks over the sse-sidecar client (React 18+, no JSX, no other dependency):
 *
 * ```js
 * import { createSseClient } from '@sse-sidecar/client';
 * import { useSseState, useSseEvent, useSseEvents, usePresence } from '@sse-sidecar/client/react';
 * const sse = createSseClient({ topics: ['board:42'] });
 * function Board() {
 *   const { state, info } = useSseState(sse);               // re-renders on every change
 *   useSseEvent(sse, 'card.updated', (event) => refreshCard(event.data.id));
 *   const posted = useSseEvents(sse, 'message.posted');     // the latest 100, oldest first
 *   const here = usePresence(sse, 'board:42');              // who is on the board, or null
 * }
 * ```
 *
 * With the declarations of `sse-sidecar types` the handlers are typed by the event type's
 * schema: `useSseEvent<CardUpdated>(sse, 'card.updated', (e) => e.data.title)`.
 *
 * - `useSseState(client)` reads `client.state` and `client.info` through
 *   `useSyncExternalStore`, subscribed to `onStateChange` and (for revocations, which keep
 *   the state `live` but change `info.denied`) `onControl`;
 * - `useSseEvent(client, type, handler)` calls `handler` for every domain event of `type`
 *   while the component is mounted (the latest `handler` is used; no resubscription when
 *   only it changes);
 * - `useSseEvents(client, type, { max })` keeps the last `max` (default 100) events of
 *   `type` received since mount, oldest first;
 * - `usePresence(client, topic)` returns `client.presence(topic)` (who is on `topic`, or
 *   `null` while unknown) through `useSyncExternalStore`, subscribed to `onPresence`: a new
 *   object on every presence change of the topic, the same one otherwise.
 *
 * @module react
 */

import { useEffect, useRef, useState, useSyncExternalStore } from 'react';

/**
 * The parts of the client (see sse-client.js `SseClient`) the hooks use.
 * @typedef {object} SseClientLike
 * @property {string} state
 * @property {object} info
 * @property {(fn: (state: any, info: any) => void) => () => void} onStateChange
 * @property {(fn: (event: any) => void) => () => void} onEvent
 * @property {(fn: (control: any) => void) => () => void} [onControl]
 */

/**
 * The parts of the client {@link usePresence} uses (see sse-client.js `SseClient`).
 * @typedef {object} SsePresenceClientLike
 * @property {(topic: string) => unknown} presence
 * @property {(topic: string, fn: (presence: any, change: any) => void) => () => void} onPresence
 */

/**
 * A domain event whose `data` has the type `D` (e.g. an interface of `sse-sidecar types`).
 * @template [D=unknown]
 * @typedef {object} SseTypedEvent
 * @property {string} id Opaque event id.
 * @property {string} type Event type name, e.g. `card.updated`.
 * @property {string} family Rollout family, e.g. `cards`.
 * @property {string[]} topics Topics the event was published to.
 * @property {number} ts Milliseconds since the Unix epoch.
 * @property {{client?: string|null, mutation?: string|null}} origin Who caused it.
 * @property {D} data The payload, valid against the type's schema.
 * @property {unknown[]} invalidate Query keys the event makes stale.
 */

/**
 * What {@link useSseState} returns; a new object on every change, the same one otherwise.
 * @template [S=string]
 * @template [I=Record<string, unknown>]
 * @typedef {object} SseStateSnapshot
 * @property {S} state The client's state (`connecting`, `live`, `recovering`, `polling`, `stopped`).
 * @property {I} info The client's `info` at that moment.
 */

/**
 * The client's state and info; the component re-renders when either changes.
 * @template {SseClientLike} C
 * @param {C} client
 * @returns {SseStateSnapshot<C['state'], C['info']>}
 */
export function useSseState(client) {
  /** @type {{current: {version: number, snapshot: SseStateSnapshot<C['state'], C['info']>} | null}} */
  const cache = useRef(null);
  const version = useRef(0);
  const subscribe = useStableSubscribe(client, version);
  const getSnapshot = () => {
    const c = cache.current;
    const { state, info } = client;
    if (c && c.version === version.current && c.snapshot.state === state && c.snapshot.info === info) {
      return c.snapshot;
    }
    const snapshot = { state, info };
    cache.current = { version: version.current, snapshot };
    return snapshot;
  };
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * A `subscribe` for `useSyncExternalStore` that changes only with the client; every
 * notification bumps `version` so an in-place change of `info` gives a new snapshot.
 * @param {SseClientLike} client
 * @param {{current: number}} version
 * @returns {(onChange: () => void) => () => void}
 */
function useStableSubscribe(client, version) {
  /** @type {{current: {client: SseClientLike, subscribe: (onChange: () => void) => () => void} | null}} */
  const ref = useRef(null);
  if (!ref.current || ref.current.client !== client) {
    /** @param {() => void} onChange */
    const subscribe = (onChange) => {
      const bump = () => {
        version.current += 1;
        onChange();
      };
      const offState = client.onStateChange(bump);
      const offControl = client.onControl ? client.onControl(bump) : () => {};
      return () => {
        offState();
        offControl();
      };
    };
    ref.current = { client, subscribe };
  }
  return ref.current.subscribe;
}

/**
 * Calls `handler` for every domain event of `type` while mounted.
 * @template [D=unknown]
 * @param {SseClientLike} client
 * @param {string} type Event type name, e.g. `card.updated`.
 * @param {(event: SseTypedEvent<D>) => void} handler
 * @returns {void}
 */
export function useSseEvent(client, type, handler) {
  const latest = useRef(handler);
  latest.current = handler;
  useEffect(
    () =>
      client.onEvent((event) => {
        if (event && event.type === type) latest.current(event);
      }),
    [client, type],
  );
}

/**
 * The last `max` events of `type` received since mount (oldest first).
 * @template [D=unknown]
 * @param {SseClientLike} client
 * @param {string} type Event type name, e.g. `card.updated`.
 * @param {{max?: number}} [options] `max`: how many to keep (default 100, at least 1).
 * @returns {SseTypedEvent<D>[]}
 */
export function useSseEvents(client, type, options = {}) {
  const max = Math.max(1, Math.floor(Number(options.max) || 100));
  const [events, setEvents] = useState(/** @type {SseTypedEvent<D>[]} */ ([]));
  useSseEvent(client, type, (/** @type {SseTypedEvent<D>} */ event) => {
    setEvents((list) => [...list.slice(Math.max(0, list.length - max + 1)), event]);
  });
  return events;
}

/**
 * Who is on `topic`: `client.presence(topic)` (`null` while unknown); the component re-renders
 * on every presence change of the topic.
 * @template {SsePresenceClientLike} C
 * @param {C} client
 * @param {string} topic A presence topic the client holds, e.g. `board:42`.
 * @returns {ReturnType<C['presence']>}
 */
export function usePresence(client, topic) {
  /** @type {{current: {client: C, topic: string, version: number, value: ReturnType<C['presence']>} | null}} */
  const cache = useRef(null);
  const version = useRef(0);
  const subscribe = useTopicSubscribe(client, topic, version);
  const getSnapshot = () => {
    const c = cache.current;
    if (c && c.client === client && c.topic === topic && c.version === version.current) return c.value;
    const value = /** @type {ReturnType<C['presence']>} */ (client.presence(topic));
    cache.current = { client, topic, version: version.current, value };
    return value;
  };
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * A `subscribe` to `topic`'s presence that changes only with the client or the topic; every
 * notification bumps `version` (`presence()` returns a new copy each time it is read).
 * @param {SsePresenceClientLike} client
 * @param {string} topic
 * @param {{current: number}} version
 * @returns {(onChange: () => void) => () => void}
 */
function useTopicSubscribe(client, topic, version) {
  /** @type {{current: {client: SsePresenceClientLike, topic: string, subscribe: (onChange: () => void) => () => void} | null}} */
  const ref = useRef(null);
  if (!ref.current || ref.current.client !== client || ref.current.topic !== topic) {
    /** @param {() => void} onChange */
    const subscribe = (onChange) =>
      client.onPresence(topic, () => {
        version.current += 1;
        onChange();
      });
    ref.current = { client, topic, subscribe };
  }
  return ref.current.subscribe;
}
