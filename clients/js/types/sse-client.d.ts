/**
 * Compares two event ids (`<epoch>-<seq>`): by epoch, then by the integer after the last `-`.
 * @param {string|null|undefined} a
 * @param {string|null|undefined} b
 * @returns {number|null} negative, 0 or positive; `null` when the epochs differ or an id is
 *   not of that shape (such ids do not compare).
 */
export function compareEventIds(a: string | null | undefined, b: string | null | undefined): number | null;
/**
 * Records the poll-interval hint a response carries, for every client of this page.
 *
 * The sidecar adds `x-sse-poll-interval-ms: N` to answers of shielded polled routes when the
 * same credentials hold a live stream (`polling.slow_down_interval_ms` > 0): a suggestion to
 * poll less often. `client.fetch` records it by itself; call this with the `Response` of any
 * other HTTP client (plain `fetch`, a wrapper…) that polls through the sidecar. Responses
 * without the header (or with a value that is not a positive number) change nothing: the last
 * hint stays until it is a minute old. Cross-origin answers only show the header to scripts
 * when the server lists it in `Access-Control-Expose-Headers`.
 *
 * ```js
 * import { recordPollIntervalHint } from '/api/sse/client.js';
 * const res = await fetch('/api/boards/42/cards');
 * recordPollIntervalHint(res);
 * ```
 *
 * @param {{headers?: {get(name: string): string|null}}|null|undefined} response A `Response`
 *   (anything with `headers.get`).
 * @returns {number|null} The hint in milliseconds, or `null` when the response has none.
 */
export function recordPollIntervalHint(response: {
    headers?: {
        get(name: string): string | null;
    };
} | null | undefined): number | null;
/**
 * Create a client: connects immediately (state `connecting`).
 * @param {SseClientOptions} [options]
 * @returns {SseClient}
 */
export function createSseClient(options?: SseClientOptions): SseClient;
/**
 * sse-sidecar browser client — dependency-free ES module (no build step).
 *
 * Served by the sidecar at `/api/sse/client.js`:
 *
 * ```html
 * <script type="module">
 *   import { createSseClient } from '/api/sse/client.js';
 *   const sse = createSseClient({ topics: ['board:42'] });
 *   sse.onEvent((event) => console.log(event.type, event.data));
 * </script>
 * ```
 *
 * What it owns:
 * - one supervised EventSource per browser+origin (leader tab), native auto-retry never used;
 * - the state machine connecting → live → recovering → polling → stopped, every change observable;
 * - reconnects with the last event id (`?lastEventId=`), full-jitter exponential backoff,
 *   `Retry-After` honoured, `/api/sse/status` asked after every failure (native EventSource
 *   cannot see the HTTP status of a refusal), periodic status probes while polling;
 * - frozen-stream detection (no frame for 2 × heartbeat_ms);
 * - `control` (polling / per-family polling / reconnect) and `reset` frames;
 * - a `fetch` wrapper that tags mutations with `X-Client-Id` / `X-Mutation-Id` so the tab can
 *   recognise its own echoes (`isOwnEcho`);
 * - poll pacing: `pollInterval(family, ms)` answers `false` while a family is live, else the
 *   app's interval, lengthened to the sidecar's `x-sse-poll-interval-ms` hint (recorded by the
 *   `fetch` wrapper or by {@link recordPollIntervalHint}) while the stream is live for other
 *   families;
 * - cross-tab sharing (Web Locks leader election + BroadcastChannel relay), with graceful
 *   fallback to one stream per tab when those APIs are missing;
 * - client ids: one browser-wide id `B` (localStorage `sse-sidecar:browser-id`) sent as
 *   `client=B` on the stream, tab ids `B.<random>` sent as `X-Client-Id`;
 * - receipts: `receipt` frames settle the tab's pending mutations (the leader tab relays them
 *   to the followers); a bounded pending-mutation table waits for them with a timeout;
 * - versions: per-topic versions (bounded) from applied events and `x-sse-version` headers,
 *   `baseFor(topics)` for `x-sse-base`;
 * - `mutate(request, {optimistic, rollback, base})`: optimistic update, settle on the receipt
 *   (or the HTTP answer), roll back on failure; a 409 conflict rejects with `SseConflictError`;
 * - presence: who is on each presence topic, from `hello.presence` and `presence` frames
 *   (relayed to follower tabs; a tab that joins later gets the leader's current state),
 *   unknown (`null`) while the stream is not live; `fetchPresence` for pages that poll.
 *
 * Wire contract: see ARCHITECTURE.md §2 and clients/js/README.md.
 *
 * @module sse-client
 */
/**
 * Connection state of a client.
 * - `connecting`: opening the stream (or waiting for the leader tab's stream);
 * - `live`: stream open, `hello` received — events flow (see also `pollingFamilies`);
 * - `recovering`: stream lost/refused, retrying with backoff — the app must poll meanwhile;
 * - `polling`: the server asked for polling (kill switch, 204, overload…) — the app polls,
 *   the client probes `/api/sse/status` and comes back by itself;
 * - `stopped`: `close()` was called.
 * @typedef {'connecting'|'live'|'recovering'|'polling'|'stopped'} SseState
 */
/**
 * Extra information passed with each state change.
 * @typedef {object} SseStateInfo
 * @property {string} [reason] Why the state was entered (e.g. `hello`, `stream-lost`,
 *   `handshake-failed`, `stalled`, `connect-timeout`, `status-polling`, a server `reason`).
 * @property {string[]} pollingFamilies Families that must be polled even while live.
 * @property {'solo'|'leader'|'follower'} role This tab's role in cross-tab sharing.
 * @property {string} [epoch] From `hello` (when live).
 * @property {string} [head] From `hello` (when live).
 * @property {string[]} [topics] Topics granted by the server (when live).
 * @property {string[]} [denied] Topics refused by the server (when live).
 * @property {string|null} [client] Stream client id echoed by the server's `hello` (when live).
 * @property {number} [heartbeatMs] Heartbeat period announced by the server (when live).
 * @property {number} [retryInMs] Delay before the next connection attempt, when known.
 */
/**
 * A domain event as carried in the `data:` of an event frame.
 * @typedef {object} SseEvent
 * @property {string} id Opaque event id.
 * @property {string} type Event type name, e.g. `card.updated`.
 * @property {string} family Rollout family, e.g. `cards`.
 * @property {string[]} topics Topics the event was published to.
 * @property {string|number} ts Timestamp set by the sidecar.
 * @property {{client?: string|null, mutation?: string|null, trace?: string}} origin Who caused it
 *   (`trace`: the W3C trace id of the mutation's `traceparent`, when it had one).
 * @property {*} data Event payload (validated by the sidecar against the type's schema).
 * @property {Array<Array<*>>} invalidate Query keys the event makes stale.
 */
/**
 * Payload of a `control` frame.
 * @typedef {object} SseControl
 * @property {'polling'|'reconnect'|string} mode
 * @property {string} [reason]
 * @property {string[]} [families] With mode `polling`: only these families are polled.
 * @property {number} [retry_ms] With mode `reconnect` (or `polling`): wait this long first.
 * @property {string[]} [revoked] Topics whose authorization was revoked.
 */
/**
 * Payload of a `reset` frame: the client missed events it cannot get back.
 * The app must refetch everything it shows, then continue (the stream goes on).
 * @typedef {object} SseReset
 * @property {string} [reason]
 * @property {string} [head]
 */
/**
 * Options of {@link createSseClient}. Every function option is injectable for tests.
 * @typedef {object} SseClientOptions
 * @property {string} [url='/api/sse/events'] Stream URL.
 * @property {string} [statusUrl='/api/sse/status'] Status URL.
 * @property {string[]} [topics=[]] Topics this tab wants.
 * @property {boolean} [withCredentials=false] Passed to EventSource (cross-origin cookies);
 *   status requests then use `credentials: 'include'`.
 * @property {{baseMs?: number, maxMs?: number}} [backoff] Full-jitter exponential backoff:
 *   delay = random(0, min(maxMs, baseMs · 2^attempt)); defaults 500 / 30000.
 * @property {number} [probeIntervalMs=15000] Status probe period while polling (±25 % jitter).
 * @property {number} [connectTimeoutMs=20000] Give up on a connection without `hello` after this.
 * @property {number} [stableMs=5000] A connection live this long resets the backoff attempts.
 * @property {boolean} [shareAcrossTabs=true] One stream per browser+origin (needs
 *   `navigator.locks` and `BroadcastChannel`; falls back to one stream per tab).
 * @property {string} [channelName='sse-sidecar'] Lock and BroadcastChannel name.
 * @property {string} [clientId] Override the per-tab client id (sent as `X-Client-Id`); the
 *   stream's client id is then the part before its first `.` (or the whole id).
 * @property {{getItem(key: string): string|null, setItem(key: string, value: string): void}|null} [storage=globalThis.localStorage]
 *   Where the browser-wide id is kept (`sse-sidecar:browser-id`); without it a random
 *   per-instance id is used.
 * @property {number} [receiptTimeoutMs=5000] How long `mutate`/`settle` wait for a receipt
 *   after a response said `x-sse-receipt: pending`, before settling on the HTTP answer alone.
 * @property {string|null} [lastEventId=null] Resume from this id on the first connection.
 * @property {typeof EventSource} [EventSource=globalThis.EventSource]
 * @property {typeof fetch} [fetch=globalThis.fetch]
 * @property {() => number} [now=Date.now]
 * @property {() => number} [random=Math.random]
 * @property {(fn: () => void, ms: number) => *} [setTimeout]
 * @property {(handle: *) => void} [clearTimeout]
 * @property {{request: Function}|null} [locks=globalThis.navigator?.locks]
 * @property {typeof BroadcastChannel|null} [BroadcastChannel=globalThis.BroadcastChannel]
 * @property {{addEventListener: Function, removeEventListener: Function}|null} [lifecycleTarget=globalThis]
 *   Where `pagehide`/`pageshow` are listened for (the window).
 * @property {(error: unknown) => void} [onListenerError] Called when a listener throws
 *   (default: `globalThis.reportError` or `console.error`).
 */
/**
 * The client returned by {@link createSseClient}.
 * @typedef {object} SseClient
 * @property {SseState} state Current state.
 * @property {SseStateInfo} info Information of the last state change.
 * @property {string[]} pollingFamilies Families to poll even while live (copy).
 * @property {string|null} lastEventId Last event id seen by this tab (or relayed to it).
 * @property {string} clientId Id of this tab, `B.<random>` (`B`: {@link SseClient.streamClientId}),
 *   stable for the tab's life; sent as `X-Client-Id`.
 * @property {string} streamClientId Browser-wide id sent as `client=` on the stream URL.
 * @property {string[]} topics Topics this tab asked for.
 * @property {'solo'|'leader'|'follower'} role Cross-tab role.
 * @property {(fn: (state: SseState, info: SseStateInfo) => void) => () => void} onStateChange
 * @property {(fn: (event: SseEvent) => void) => () => void} onEvent Domain events only.
 * @property {(fn: (reset: SseReset) => void) => () => void} onReset
 * @property {(fn: (control: SseControl) => void) => () => void} onControl
 * @property {(family?: string) => boolean} isLive True when live and `family` is not polled.
 * @property {(event: SseEvent) => boolean} isOwnEcho True for events caused by this tab.
 * @property {(family: string, defaultMs: number) => number|false} pollInterval
 *   How often to poll `family` now: `false` while `isLive(family)` (do not poll); else
 *   `Math.max(defaultMs, hint)` when the stream is live (for other families) and a
 *   `x-sse-poll-interval-ms` hint was recorded less than a minute ago; else `defaultMs`.
 * @property {(input: RequestInfo|URL, init?: RequestInit, options?: SseFetchOptions) => Promise<Response>} fetch
 *   `fetch` adding `X-Client-Id` and a fresh `X-Mutation-Id` (and `x-sse-base` when
 *   `options.base` is given); records the `x-sse-poll-interval-ms` hint of the response (see
 *   {@link recordPollIntervalHint}) and, with `options.topics`, its `x-sse-version` as the
 *   version of those topics.
 * @property {(fn: (receipt: SseReceipt) => void) => () => void} onReceipt Receipts of this
 *   tab's mutations (relayed by the leader tab to followers).
 * @property {(topic: string) => string|null} version Version (event id) of the state the page
 *   holds for `topic`, or `null` when unknown.
 * @property {(topics: string[]) => string|null} baseFor Highest known version over `topics`
 *   (the value for `x-sse-base`), or `null` when none is known.
 * @property {(topic: string, id: string) => void} noteVersion Record that the page holds
 *   `topic` at version `id` (kept only when newer than the known one).
 * @property {(request: SseMutationRequest, options?: SseMutateOptions) => Promise<SseMutationResult>} mutate
 *   Optimistic mutation: `optimistic()` now, the request through `fetch`, settled by the
 *   receipt (or the HTTP answer); `rollback()` and a rejection with {@link SseMutationError}
 *   (or {@link SseConflictError} on a 409 conflict) on failure.
 * @property {(response: Response, options?: {timeoutMs?: number}) => Promise<SseMutationResult>} settle
 *   Settle a response obtained through `client.fetch` like `mutate` does (without rollback):
 *   resolves on success, rejects with {@link SseMutationError}/{@link SseConflictError}.
 * @property {(topics: string[]) => void} setTopics Change the topics this tab wants.
 * @property {(topic: string) => SsePresence|null} presence Who is on `topic` now (a copy,
 *   members sorted by id), or `null` when unknown: not a presence topic of the stream, or the
 *   stream is not live (presence is not polled: see {@link SseClient.fetchPresence}).
 * @property {(topic: string, fn: (presence: SsePresence|null, change: SsePresenceChange) => void) => () => void} onPresence
 *   Called on every change of `topic`'s presence (a `presence` frame, a `hello`, the topic
 *   leaving the stream: an empty snapshot; the stream not live any more: `null`, once).
 * @property {(topic: string) => Promise<SsePresence>} fetchPresence GET the presence of
 *   `topic` from the sidecar (`presence` beside the stream URL, e.g. `/api/sse/presence`), for
 *   pages that poll; rejects with an `Error` whose `status` is the HTTP status (0: no answer).
 * @property {() => void} close Stop for good (state `stopped`), releasing lock and channel.
 */
/**
 * One identified member of a presence topic (anonymous connections are only counted).
 * @typedef {object} SsePresenceMember
 * @property {string} id The member's id (from the sidecar's identity of the connection).
 * @property {Record<string, unknown>} fields Public fields of the member (e.g. `name`).
 * @property {number} connections How many connections (tabs, browsers) the member has there.
 */
/**
 * Who is on a presence topic.
 * @typedef {object} SsePresence
 * @property {string} topic
 * @property {number} count Distinct identified members.
 * @property {number} anonymous Anonymous connections (counted, never listed).
 * @property {boolean} partial `true` when `count` is larger than the members listed (the
 *   sidecar lists at most `presence.max_listed`).
 * @property {SsePresenceMember[]} members Listed members, sorted by id.
 */
/**
 * What changed in a presence update. `snapshot: true`: the state was replaced (a `hello`, a
 * full snapshot frame, the topic leaving the stream, presence becoming unknown) and the lists
 * are empty; otherwise the delta of a `presence` frame.
 * @typedef {object} SsePresenceChange
 * @property {boolean} snapshot
 * @property {SsePresenceMember[]} joined Members that joined (or were replaced).
 * @property {string[]} left Ids of members that left.
 * @property {Array<{id: string, connections: number}>} updated Members whose connection count
 *   changed.
 */
/**
 * Payload of a `receipt` frame: the outcome of one of this browser's mutations.
 * @typedef {object} SseReceipt
 * @property {string} client Full `X-Client-Id` of the mutation (the tab).
 * @property {string} mutation Its `X-Mutation-Id`.
 * @property {'delivered'|'shadow'|'dropped'|'failed'|string} outcome
 * @property {string[]} events Ids of the events stored and delivered (`delivered`).
 * @property {string|null} reason Why it was `dropped` (e.g. `schema_invalid`), else `null`.
 * @property {number} status HTTP status of the backend's answer (or the sidecar's).
 * @property {SseConflict|null} conflict The conflict found, if any.
 */
/**
 * A conflict: the state the user edited (`base`) is older than the current one.
 * @typedef {object} SseConflict
 * @property {string} base Version the mutation said it edited (`x-sse-base`).
 * @property {string} [current] The topic's current version (`reject`).
 * @property {SseEvent[]} [events] The newer events, oldest first (`reject`).
 * @property {string[]} [superseded] Ids of the newer events (`detect`).
 */
/**
 * Options of `client.fetch`.
 * @typedef {object} SseFetchOptions
 * @property {string[]} [topics] Topics the answer shows: its `x-sse-version` becomes their
 *   version.
 * @property {string|null} [base] Sent as `x-sse-base` (the version the user edited).
 * @property {string} [mutationId] Use this `X-Mutation-Id` instead of a fresh one.
 */
/**
 * What `mutate` sends: a URL (GET unless `init` says otherwise), a `Request`, or an object
 * with `url` and the `RequestInit` fields (`method`, `headers`, `body`…).
 * @typedef {string|URL|Request|({url: string|URL} & RequestInit)} SseMutationRequest
 */
/**
 * Options of `client.mutate`.
 * @typedef {object} SseMutateOptions
 * @property {() => void} [optimistic] Applies the optimistic update (called at once).
 * @property {() => void} [rollback] Undoes it (called once, on failure).
 * @property {string|null} [base] Version the user edited, sent as `x-sse-base` (e.g.
 *   `client.baseFor(topics)` captured when the edit started). None: no conflict check.
 * @property {string[]} [topics] With no `base` given: `base` is `client.baseFor(topics)` now.
 * @property {number} [timeoutMs] Receipt wait (default: the client's `receiptTimeoutMs`).
 * @property {string} [mutationId] Use this `X-Mutation-Id` instead of a fresh one.
 */
/**
 * How a mutation settled.
 * @typedef {object} SseMutationResult
 * @property {Response} response The HTTP answer.
 * @property {SseReceipt|null} receipt The receipt, or `null` (none expected, or timed out).
 * @property {string[]} events Ids of the events the mutation caused (from the receipt).
 * @property {string} mutationId Its `X-Mutation-Id`.
 */
/**
 * A mutation failed: non-2xx answer, network error, or a `failed`/`dropped` receipt.
 */
export class SseMutationError extends Error {
    /**
     * @param {string} message
     * @param {{status?: number, receipt?: SseReceipt|null, reason?: string|null, response?: Response|null, mutationId?: string|null}} [fields]
     */
    constructor(message: string, fields?: {
        status?: number;
        receipt?: SseReceipt | null;
        reason?: string | null;
        response?: Response | null;
        mutationId?: string | null;
    });
    /** @type {number} HTTP status (0 when no answer came). */
    status: number;
    /** @type {SseReceipt|null} */
    receipt: SseReceipt | null;
    /** @type {string|null} `http`, `network`, or the receipt's reason/outcome. */
    reason: string | null;
    /** @type {Response|null} */
    response: Response | null;
    /** @type {string|null} */
    mutationId: string | null;
}
/**
 * The sidecar refused a mutation (409): the entity changed since the version the user edited.
 * `events` says what changed (e.g. who renamed the card: `events[i].data`).
 */
export class SseConflictError extends SseMutationError {
    /**
     * @param {SseConflict} conflict From the 409 body `{conflict: {...}}` (or the receipt).
     * @param {{receipt?: SseReceipt|null, response?: Response|null, mutationId?: string|null}} [fields]
     */
    constructor(conflict: SseConflict, fields?: {
        receipt?: SseReceipt | null;
        response?: Response | null;
        mutationId?: string | null;
    });
    /** @type {string|null} */
    base: string | null;
    /** @type {string|null} */
    current: string | null;
    /** @type {SseEvent[]} */
    events: SseEvent[];
}
/**
 * Connection state of a client.
 * - `connecting`: opening the stream (or waiting for the leader tab's stream);
 * - `live`: stream open, `hello` received — events flow (see also `pollingFamilies`);
 * - `recovering`: stream lost/refused, retrying with backoff — the app must poll meanwhile;
 * - `polling`: the server asked for polling (kill switch, 204, overload…) — the app polls,
 *   the client probes `/api/sse/status` and comes back by itself;
 * - `stopped`: `close()` was called.
 */
export type SseState = "connecting" | "live" | "recovering" | "polling" | "stopped";
/**
 * Extra information passed with each state change.
 */
export type SseStateInfo = {
    /**
     * Why the state was entered (e.g. `hello`, `stream-lost`,
     * `handshake-failed`, `stalled`, `connect-timeout`, `status-polling`, a server `reason`).
     */
    reason?: string;
    /**
     * Families that must be polled even while live.
     */
    pollingFamilies: string[];
    /**
     * This tab's role in cross-tab sharing.
     */
    role: "solo" | "leader" | "follower";
    /**
     * From `hello` (when live).
     */
    epoch?: string;
    /**
     * From `hello` (when live).
     */
    head?: string;
    /**
     * Topics granted by the server (when live).
     */
    topics?: string[];
    /**
     * Topics refused by the server (when live).
     */
    denied?: string[];
    /**
     * Stream client id echoed by the server's `hello` (when live).
     */
    client?: string | null;
    /**
     * Heartbeat period announced by the server (when live).
     */
    heartbeatMs?: number;
    /**
     * Delay before the next connection attempt, when known.
     */
    retryInMs?: number;
};
/**
 * A domain event as carried in the `data:` of an event frame.
 */
export type SseEvent = {
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
     * Timestamp set by the sidecar.
     */
    ts: string | number;
    /**
     * Who caused it
     * (`trace`: the W3C trace id of the mutation's `traceparent`, when it had one).
     */
    origin: {
        client?: string | null;
        mutation?: string | null;
        trace?: string;
    };
    /**
     * Event payload (validated by the sidecar against the type's schema).
     */
    data: any;
    /**
     * Query keys the event makes stale.
     */
    invalidate: Array<Array<any>>;
};
/**
 * Payload of a `control` frame.
 */
export type SseControl = {
    mode: "polling" | "reconnect" | string;
    reason?: string;
    /**
     * With mode `polling`: only these families are polled.
     */
    families?: string[];
    /**
     * With mode `reconnect` (or `polling`): wait this long first.
     */
    retry_ms?: number;
    /**
     * Topics whose authorization was revoked.
     */
    revoked?: string[];
};
/**
 * Payload of a `reset` frame: the client missed events it cannot get back.
 * The app must refetch everything it shows, then continue (the stream goes on).
 */
export type SseReset = {
    reason?: string;
    head?: string;
};
/**
 * Options of {@link createSseClient}. Every function option is injectable for tests.
 */
export type SseClientOptions = {
    /**
     * Stream URL.
     */
    url?: string;
    /**
     * Status URL.
     */
    statusUrl?: string;
    /**
     * Topics this tab wants.
     */
    topics?: string[];
    /**
     * Passed to EventSource (cross-origin cookies);
     * status requests then use `credentials: 'include'`.
     */
    withCredentials?: boolean;
    /**
     * Full-jitter exponential backoff:
     * delay = random(0, min(maxMs, baseMs · 2^attempt)); defaults 500 / 30000.
     */
    backoff?: {
        baseMs?: number;
        maxMs?: number;
    };
    /**
     * Status probe period while polling (±25 % jitter).
     */
    probeIntervalMs?: number;
    /**
     * Give up on a connection without `hello` after this.
     */
    connectTimeoutMs?: number;
    /**
     * A connection live this long resets the backoff attempts.
     */
    stableMs?: number;
    /**
     * One stream per browser+origin (needs
     * `navigator.locks` and `BroadcastChannel`; falls back to one stream per tab).
     */
    shareAcrossTabs?: boolean;
    /**
     * Lock and BroadcastChannel name.
     */
    channelName?: string;
    /**
     * Override the per-tab client id (sent as `X-Client-Id`); the
     * stream's client id is then the part before its first `.` (or the whole id).
     */
    clientId?: string;
    /**
     * Where the browser-wide id is kept (`sse-sidecar:browser-id`); without it a random
     * per-instance id is used.
     */
    storage?: {
        getItem(key: string): string | null;
        setItem(key: string, value: string): void;
    } | null;
    /**
     * How long `mutate`/`settle` wait for a receipt
     * after a response said `x-sse-receipt: pending`, before settling on the HTTP answer alone.
     */
    receiptTimeoutMs?: number;
    /**
     * Resume from this id on the first connection.
     */
    lastEventId?: string | null;
    EventSource?: typeof EventSource;
    fetch?: typeof fetch;
    now?: () => number;
    random?: () => number;
    setTimeout?: (fn: () => void, ms: number) => any;
    clearTimeout?: (handle: any) => void;
    locks?: {
        request: Function;
    } | null;
    BroadcastChannel?: typeof BroadcastChannel | null;
    /**
     * Where `pagehide`/`pageshow` are listened for (the window).
     */
    lifecycleTarget?: {
        addEventListener: Function;
        removeEventListener: Function;
    } | null;
    /**
     * Called when a listener throws
     * (default: `globalThis.reportError` or `console.error`).
     */
    onListenerError?: (error: unknown) => void;
};
/**
 * The client returned by {@link createSseClient}.
 */
export type SseClient = {
    /**
     * Current state.
     */
    state: SseState;
    /**
     * Information of the last state change.
     */
    info: SseStateInfo;
    /**
     * Families to poll even while live (copy).
     */
    pollingFamilies: string[];
    /**
     * Last event id seen by this tab (or relayed to it).
     */
    lastEventId: string | null;
    /**
     * Id of this tab, `B.<random>` (`B`: {@link SseClient.streamClientId}),
     * stable for the tab's life; sent as `X-Client-Id`.
     */
    clientId: string;
    /**
     * Browser-wide id sent as `client=` on the stream URL.
     */
    streamClientId: string;
    /**
     * Topics this tab asked for.
     */
    topics: string[];
    /**
     * Cross-tab role.
     */
    role: "solo" | "leader" | "follower";
    onStateChange: (fn: (state: SseState, info: SseStateInfo) => void) => () => void;
    /**
     * Domain events only.
     */
    onEvent: (fn: (event: SseEvent) => void) => () => void;
    onReset: (fn: (reset: SseReset) => void) => () => void;
    onControl: (fn: (control: SseControl) => void) => () => void;
    /**
     * True when live and `family` is not polled.
     */
    isLive: (family?: string) => boolean;
    /**
     * True for events caused by this tab.
     */
    isOwnEcho: (event: SseEvent) => boolean;
    /**
     *   How often to poll `family` now: `false` while `isLive(family)` (do not poll); else
     *   `Math.max(defaultMs, hint)` when the stream is live (for other families) and a
     *   `x-sse-poll-interval-ms` hint was recorded less than a minute ago; else `defaultMs`.
     */
    pollInterval: (family: string, defaultMs: number) => number | false;
    /**
     *   `fetch` adding `X-Client-Id` and a fresh `X-Mutation-Id` (and `x-sse-base` when
     *   `options.base` is given); records the `x-sse-poll-interval-ms` hint of the response (see
     *   {@link recordPollIntervalHint}) and, with `options.topics`, its `x-sse-version` as the
     *   version of those topics.
     */
    fetch: (input: RequestInfo | URL, init?: RequestInit, options?: SseFetchOptions) => Promise<Response>;
    /**
     * Receipts of this
     * tab's mutations (relayed by the leader tab to followers).
     */
    onReceipt: (fn: (receipt: SseReceipt) => void) => () => void;
    /**
     * Version (event id) of the state the page
     * holds for `topic`, or `null` when unknown.
     */
    version: (topic: string) => string | null;
    /**
     * Highest known version over `topics`
     * (the value for `x-sse-base`), or `null` when none is known.
     */
    baseFor: (topics: string[]) => string | null;
    /**
     * Record that the page holds
     * `topic` at version `id` (kept only when newer than the known one).
     */
    noteVersion: (topic: string, id: string) => void;
    /**
     *   Optimistic mutation: `optimistic()` now, the request through `fetch`, settled by the
     *   receipt (or the HTTP answer); `rollback()` and a rejection with {@link SseMutationError}
     *   (or {@link SseConflictError} on a 409 conflict) on failure.
     */
    mutate: (request: SseMutationRequest, options?: SseMutateOptions) => Promise<SseMutationResult>;
    /**
     *   Settle a response obtained through `client.fetch` like `mutate` does (without rollback):
     *   resolves on success, rejects with {@link SseMutationError}/{@link SseConflictError}.
     */
    settle: (response: Response, options?: {
        timeoutMs?: number;
    }) => Promise<SseMutationResult>;
    /**
     * Change the topics this tab wants.
     */
    setTopics: (topics: string[]) => void;
    /**
     * Who is on `topic` now (a copy,
     * members sorted by id), or `null` when unknown: not a presence topic of the stream, or the
     * stream is not live (presence is not polled: see {@link SseClient.fetchPresence}).
     */
    presence: (topic: string) => SsePresence | null;
    /**
     *   Called on every change of `topic`'s presence (a `presence` frame, a `hello`, the topic
     *   leaving the stream: an empty snapshot; the stream not live any more: `null`, once).
     */
    onPresence: (topic: string, fn: (presence: SsePresence | null, change: SsePresenceChange) => void) => () => void;
    /**
     * GET the presence of
     * `topic` from the sidecar (`presence` beside the stream URL, e.g. `/api/sse/presence`), for
     * pages that poll; rejects with an `Error` whose `status` is the HTTP status (0: no answer).
     */
    fetchPresence: (topic: string) => Promise<SsePresence>;
    /**
     * Stop for good (state `stopped`), releasing lock and channel.
     */
    close: () => void;
};
/**
 * One identified member of a presence topic (anonymous connections are only counted).
 */
export type SsePresenceMember = {
    /**
     * The member's id (from the sidecar's identity of the connection).
     */
    id: string;
    /**
     * Public fields of the member (e.g. `name`).
     */
    fields: Record<string, unknown>;
    /**
     * How many connections (tabs, browsers) the member has there.
     */
    connections: number;
};
/**
 * Who is on a presence topic.
 */
export type SsePresence = {
    topic: string;
    /**
     * Distinct identified members.
     */
    count: number;
    /**
     * Anonymous connections (counted, never listed).
     */
    anonymous: number;
    /**
     * `true` when `count` is larger than the members listed (the
     * sidecar lists at most `presence.max_listed`).
     */
    partial: boolean;
    /**
     * Listed members, sorted by id.
     */
    members: SsePresenceMember[];
};
/**
 * What changed in a presence update. `snapshot: true`: the state was replaced (a `hello`, a
 * full snapshot frame, the topic leaving the stream, presence becoming unknown) and the lists
 * are empty; otherwise the delta of a `presence` frame.
 */
export type SsePresenceChange = {
    snapshot: boolean;
    /**
     * Members that joined (or were replaced).
     */
    joined: SsePresenceMember[];
    /**
     * Ids of members that left.
     */
    left: string[];
    /**
     * Members whose connection count
     * changed.
     */
    updated: Array<{
        id: string;
        connections: number;
    }>;
};
/**
 * Payload of a `receipt` frame: the outcome of one of this browser's mutations.
 */
export type SseReceipt = {
    /**
     * Full `X-Client-Id` of the mutation (the tab).
     */
    client: string;
    /**
     * Its `X-Mutation-Id`.
     */
    mutation: string;
    outcome: "delivered" | "shadow" | "dropped" | "failed" | string;
    /**
     * Ids of the events stored and delivered (`delivered`).
     */
    events: string[];
    /**
     * Why it was `dropped` (e.g. `schema_invalid`), else `null`.
     */
    reason: string | null;
    /**
     * HTTP status of the backend's answer (or the sidecar's).
     */
    status: number;
    /**
     * The conflict found, if any.
     */
    conflict: SseConflict | null;
};
/**
 * A conflict: the state the user edited (`base`) is older than the current one.
 */
export type SseConflict = {
    /**
     * Version the mutation said it edited (`x-sse-base`).
     */
    base: string;
    /**
     * The topic's current version (`reject`).
     */
    current?: string;
    /**
     * The newer events, oldest first (`reject`).
     */
    events?: SseEvent[];
    /**
     * Ids of the newer events (`detect`).
     */
    superseded?: string[];
};
/**
 * Options of `client.fetch`.
 */
export type SseFetchOptions = {
    /**
     * Topics the answer shows: its `x-sse-version` becomes their
     * version.
     */
    topics?: string[];
    /**
     * Sent as `x-sse-base` (the version the user edited).
     */
    base?: string | null;
    /**
     * Use this `X-Mutation-Id` instead of a fresh one.
     */
    mutationId?: string;
};
/**
 * What `mutate` sends: a URL (GET unless `init` says otherwise), a `Request`, or an object
 * with `url` and the `RequestInit` fields (`method`, `headers`, `body`…).
 */
export type SseMutationRequest = string | URL | Request | ({
    url: string | URL;
} & RequestInit);
/**
 * Options of `client.mutate`.
 */
export type SseMutateOptions = {
    /**
     * Applies the optimistic update (called at once).
     */
    optimistic?: () => void;
    /**
     * Undoes it (called once, on failure).
     */
    rollback?: () => void;
    /**
     * Version the user edited, sent as `x-sse-base` (e.g.
     * `client.baseFor(topics)` captured when the edit started). None: no conflict check.
     */
    base?: string | null;
    /**
     * With no `base` given: `base` is `client.baseFor(topics)` now.
     */
    topics?: string[];
    /**
     * Receipt wait (default: the client's `receiptTimeoutMs`).
     */
    timeoutMs?: number;
    /**
     * Use this `X-Mutation-Id` instead of a fresh one.
     */
    mutationId?: string;
};
/**
 * How a mutation settled.
 */
export type SseMutationResult = {
    /**
     * The HTTP answer.
     */
    response: Response;
    /**
     * The receipt, or `null` (none expected, or timed out).
     */
    receipt: SseReceipt | null;
    /**
     * Ids of the events the mutation caused (from the receipt).
     */
    events: string[];
    /**
     * Its `X-Mutation-Id`.
     */
    mutationId: string;
};
