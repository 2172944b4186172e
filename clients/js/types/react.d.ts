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
export function useSseState<C extends SseClientLike>(client: C): SseStateSnapshot<C["state"], C["info"]>;
/**
 * Calls `handler` for every domain event of `type` while mounted.
 * @template [D=unknown]
 * @param {SseClientLike} client
 * @param {string} type Event type name, e.g. `card.updated`.
 * @param {(event: SseTypedEvent<D>) => void} handler
 * @returns {void}
 */
export function useSseEvent<D = unknown>(client: SseClientLike, type: string, handler: (event: SseTypedEvent<D>) => void): void;
/**
 * The last `max` events of `type` received since mount (oldest first).
 * @template [D=unknown]
 * @param {SseClientLike} client
 * @param {string} type Event type name, e.g. `card.updated`.
 * @param {{max?: number}} [options] `max`: how many to keep (default 100, at least 1).
 * @returns {SseTypedEvent<D>[]}
 */
export function useSseEvents<D = unknown>(client: SseClientLike, type: string, options?: {
    max?: number;
}): SseTypedEvent<D>[];
/**
 * Who is on `topic`: `client.presence(topic)` (`null` while unknown); the component re-renders
 * on every presence change of the topic.
 * @template {SsePresenceClientLike} C
 * @param {C} client
 * @param {string} topic A presence topic the client holds, e.g. `board:42`.
 * @returns {ReturnType<C['presence']>}
 */
export function usePresence<C extends SsePresenceClientLike>(client: C, topic: string): ReturnType<C["presence"]>;
/**
 * The parts of the client (see sse-client.js `SseClient`) the hooks use.
 */
export type SseClientLike = {
    state: string;
    info: object;
    onStateChange: (fn: (state: any, info: any) => void) => () => void;
    onEvent: (fn: (event: any) => void) => () => void;
    onControl?: (fn: (control: any) => void) => () => void;
};
/**
 * The parts of the client {@link usePresence} uses (see sse-client.js `SseClient`).
 */
export type SsePresenceClientLike = {
    presence: (topic: string) => unknown;
    onPresence: (topic: string, fn: (presence: any, change: any) => void) => () => void;
};
/**
 * A domain event whose `data` has the type `D` (e.g. an interface of `sse-sidecar types`).
 */
export type SseTypedEvent<D = unknown> = {
    /**
     * Opaque event id.
     */
    id: string;
    /**
     * Event type name, e.g. `card.updated`.
     */
    type: string;
    /**
     * Rollout family, e.g. `cards`.
     */
    family: string;
    /**
     * Topics the event was published to.
     */
    topics: string[];
    /**
     * Milliseconds since the Unix epoch.
     */
    ts: number;
    /**
     * Who caused it.
     */
    origin: {
        client?: string | null;
        mutation?: string | null;
    };
    /**
     * The payload, valid against the type's schema.
     */
    data: D;
    /**
     * Query keys the event makes stale.
     */
    invalidate: unknown[];
};
/**
 * What {@link useSseState} returns; a new object on every change, the same one otherwise.
 */
export type SseStateSnapshot<S = string, I = Record<string, unknown>> = {
    /**
     * The client's state (`connecting`, `live`, `recovering`, `polling`, `stopped`).
     */
    state: S;
    /**
     * The client's `info` at that moment.
     */
    info: I;
};
