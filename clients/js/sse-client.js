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
  constructor(message, fields = {}) {
    super(message);
    this.name = 'SseMutationError';
    /** @type {number} HTTP status (0 when no answer came). */
    this.status = fields.status ?? 0;
    /** @type {SseReceipt|null} */
    this.receipt = fields.receipt ?? null;
    /** @type {string|null} `http`, `network`, or the receipt's reason/outcome. */
    this.reason = fields.reason ?? null;
    /** @type {Response|null} */
    this.response = fields.response ?? null;
    /** @type {string|null} */
    this.mutationId = fields.mutationId ?? null;
  }
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
  constructor(conflict, fields = {}) {
    super(`conflict: changed since ${conflict && conflict.base}`, { ...fields, status: 409, reason: 'conflict' });
    this.name = 'SseConflictError';
    /** @type {string|null} */
    this.base = conflict && conflict.base != null ? String(conflict.base) : null;
    /** @type {string|null} */
    this.current = conflict && conflict.current != null ? String(conflict.current) : null;
    /** @type {SseEvent[]} */
    this.events = conflict && Array.isArray(conflict.events) ? conflict.events : [];
  }
}

/**
 * Compares two event ids (`<epoch>-<seq>`): by epoch, then by the integer after the last `-`.
 * @param {string|null|undefined} a
 * @param {string|null|undefined} b
 * @returns {number|null} negative, 0 or positive; `null` when the epochs differ or an id is
 *   not of that shape (such ids do not compare).
 */
export function compareEventIds(a, b) {
  const pa = splitId(a);
  const pb = splitId(b);
  if (!pa || !pb || pa.epoch !== pb.epoch) return null;
  return pa.seq < pb.seq ? -1 : pa.seq > pb.seq ? 1 : 0;
}

function splitId(id) {
  if (typeof id !== 'string') return null;
  const i = id.lastIndexOf('-');
  if (i <= 0 || !/^\d+$/.test(id.slice(i + 1))) return null;
  return { epoch: id.slice(0, i), seq: BigInt(id.slice(i + 1)) };
}

const RESERVED = new Set(['hello', 'heartbeat', 'control', 'reset', 'receipt', 'presence', 'message', 'open', 'error']);
const PROTOCOL = 1;
const MAX_SEEN_IDS = 1000;
const MAX_MUTATIONS = 500;
const MUTATION_TTL_MS = 5 * 60 * 1000;
const POLL_HINT_HEADER = 'x-sse-poll-interval-ms';
const POLL_HINT_TTL_MS = 60 * 1000;
const MAX_PENDING = 200;
const MAX_VERSIONS = 1000;
const BROWSER_ID_KEY = 'sse-sidecar:browser-id';
const RECEIPT_HEADER = 'x-sse-receipt';
const VERSION_HEADER = 'x-sse-version';
const BASE_HEADER = 'x-sse-base';

/** Every open client of this module instance (this page): each keeps the latest hint. */
const pollHintSinks = new Set();

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
export function recordPollIntervalHint(response) {
  const headers = response && response.headers;
  if (!headers || typeof headers.get !== 'function') return null;
  let value;
  try {
    value = headers.get(POLL_HINT_HEADER);
  } catch {
    return null;
  }
  if (value == null || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return null;
  const ms = Number(value);
  if (!Number.isFinite(ms) || ms <= 0) return null;
  for (const sink of [...pollHintSinks]) sink(ms);
  return ms;
}

/** @returns {string} a random id (UUID when available). */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  if (c && typeof c.getRandomValues === 'function') {
    const bytes = c.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  return Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

let tabRandom = null;
/** The random part of this tab's id (this module instance): stable for the page's life. */
function getTabRandom() {
  if (!tabRandom) tabRandom = randomId();
  return tabRandom;
}

let instanceBrowserId = null;
/**
 * The browser-wide id: kept in `storage`, generated once; a random per-module id when
 * storage is unavailable (private mode, blocked cookies, no window).
 */
function getBrowserId(storage) {
  try {
    if (storage && typeof storage.getItem === 'function') {
      const known = storage.getItem(BROWSER_ID_KEY);
      if (typeof known === 'string' && /^[A-Za-z0-9_:-]{1,64}$/.test(known)) return known;
      const fresh = randomId();
      storage.setItem(BROWSER_ID_KEY, fresh);
      return fresh;
    }
  } catch {
    /* storage refused: fall through */
  }
  if (!instanceBrowserId) instanceBrowserId = randomId();
  return instanceBrowserId;
}

function defaultStorage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null;
  }
}

function uniqSorted(list) {
  if (!Array.isArray(list)) return [];
  return [...new Set(list.filter((t) => typeof t === 'string' && t !== ''))].sort();
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function parseObject(text) {
  if (typeof text !== 'string') return null;
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

function nonNegative(n) {
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : null;
}

/** `Retry-After` header → milliseconds (delta-seconds or HTTP date). */
function parseRetryAfterMs(value, nowMs) {
  if (value == null || value === '') return 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - nowMs) : 0;
}

function readHeader(response, name) {
  const headers = response && response.headers;
  if (!headers || typeof headers.get !== 'function') return null;
  try {
    return headers.get(name);
  } catch {
    return null;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** `SseMutationRequest` → the arguments of `fetch`. */
function toFetchArgs(req) {
  if (typeof req === 'string' || (typeof URL === 'function' && req instanceof URL)) return { input: req, init: undefined };
  if (typeof Request === 'function' && req instanceof Request) return { input: req, init: undefined };
  if (req && typeof req === 'object' && req.url != null) {
    const { url, ...init } = req;
    return { input: url, init };
  }
  throw new TypeError('mutate: request must be a URL, a Request or {url, method, headers, body}');
}

// ---- presence ------------------------------------------------------------------------------
// Who is on a presence topic, from `hello.presence` and `presence` frames (no `id:`: they are
// not replayed and never move the resume point). Pure helpers plus one small store.

function isPlainObject(value) {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}

function countOf(value) {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null;
}

function listOf(value) {
  return Array.isArray(value) ? value : [];
}

/** A member of a frame → `SsePresenceMember`, or `null` when it has no usable id. */
function toPresenceMember(raw) {
  if (!isPlainObject(raw) || typeof raw.id !== 'string' || raw.id === '') return null;
  return {
    id: raw.id,
    fields: isPlainObject(raw.fields) ? { ...raw.fields } : {},
    connections: countOf(raw.connections) ?? 1,
  };
}

function toPresenceUpdate(raw) {
  if (!isPlainObject(raw) || typeof raw.id !== 'string' || raw.id === '') return null;
  const connections = countOf(raw.connections);
  return connections == null ? null : { id: raw.id, connections };
}

/** A snapshot (`hello.presence` entry, full frame, `fetchPresence` answer) → topic state. */
function presenceState(raw) {
  const members = new Map();
  for (const m of listOf(raw && raw.members).map(toPresenceMember)) if (m) members.set(m.id, m);
  const state = { count: members.size, anonymous: 0, partial: false, members };
  takePresenceCounts(state, raw);
  return state;
}

/** The frame's `count`, `anonymous` and `partial` are the truth (when present). */
function takePresenceCounts(state, raw) {
  if (!isPlainObject(raw)) return;
  state.count = countOf(raw.count) ?? state.count;
  state.anonymous = countOf(raw.anonymous) ?? state.anonymous;
  if (typeof raw.partial === 'boolean') state.partial = raw.partial;
}

/** Applies a delta frame to `state` (joined → add/replace, left → remove, updated → set). */
function applyPresenceDelta(state, frame) {
  const joined = listOf(frame.joined).map(toPresenceMember).filter((m) => m !== null);
  const left = listOf(frame.left).filter((id) => typeof id === 'string' && id !== '');
  const updated = listOf(frame.updated).map(toPresenceUpdate).filter((u) => u !== null);
  for (const m of joined) state.members.set(m.id, m);
  for (const id of left) state.members.delete(id);
  for (const u of updated) {
    const m = state.members.get(u.id);
    if (m) m.connections = u.connections;
  }
  takePresenceCounts(state, frame);
  return { joined, left, updated };
}

function copyMember(m) {
  return { id: m.id, fields: { ...m.fields }, connections: m.connections };
}

/** Topic state → `SsePresence` (a copy; members sorted by id). */
function presenceView(topic, state) {
  const members = [...state.members.values()].map(copyMember);
  members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { topic, count: state.count, anonymous: state.anonymous, partial: state.partial, members };
}

/** @returns {SsePresenceChange} */
function presenceChange(delta) {
  if (!delta) return { snapshot: true, joined: [], left: [], updated: [] };
  return {
    snapshot: false,
    joined: delta.joined.map(copyMember),
    left: delta.left.slice(),
    updated: delta.updated.map((u) => ({ ...u })),
  };
}

/** Calls a listener; what it throws goes to `report` (which must not break the caller). */
function callListener(fn, args, report) {
  try {
    fn(...args);
  } catch (err) {
    try {
      report(err);
    } catch {
      /* ignore */
    }
  }
}

/**
 * The presence of the topics the stream holds and the per-topic listeners.
 * Knows nothing about tabs or the stream: the client feeds it.
 * @private
 * @param {(error: unknown) => void} report Called when a listener throws.
 */
function createPresenceStore(report) {
  const topics = new Map(); // topic → {count, anonymous, partial, members: Map<id, member>}
  const listeners = new Map(); // topic → Set<fn>

  /** Calls `topic`'s listeners, each with its own copy of `value()` and of the change. */
  function notify(topic, value, delta) {
    const set = listeners.get(topic);
    if (!set) return;
    for (const fn of [...set]) callListener(fn, [value(), presenceChange(delta)], report);
  }

  const current = (topic) => () => presenceView(topic, topics.get(topic));
  const empty = (topic) => () => presenceView(topic, presenceState(null));

  return {
    get: (topic) => (topics.has(topic) ? presenceView(topic, topics.get(topic)) : null),
    subscribe(topic, fn) {
      if (typeof fn !== 'function') throw new TypeError('listener must be a function');
      if (!listeners.has(topic)) listeners.set(topic, new Set());
      listeners.get(topic).add(fn);
      return () => {
        const set = listeners.get(topic);
        if (set && set.delete(fn) && !set.size) listeners.delete(topic);
      };
    },
    /** A `hello`'s `presence` (absent: no presence topics) replaces every topic. */
    replaceAll(presence) {
      const next = new Map();
      if (isPlainObject(presence)) {
        for (const [topic, raw] of Object.entries(presence)) if (isPlainObject(raw)) next.set(topic, presenceState(raw));
      }
      const vanished = [...topics.keys()].filter((topic) => !next.has(topic));
      topics.clear();
      for (const [topic, state] of next) topics.set(topic, state);
      for (const topic of vanished) notify(topic, empty(topic), null);
      for (const topic of next.keys()) notify(topic, current(topic), null);
    },
    /** A `presence` frame: a full snapshot (`members`) replaces the topic, a delta applies. */
    apply(frame) {
      const topic = isPlainObject(frame) ? frame.topic : null;
      if (typeof topic !== 'string' || topic === '') return;
      if (Array.isArray(frame.members)) {
        topics.set(topic, presenceState(frame));
        notify(topic, current(topic), null);
        return;
      }
      // A delta for a topic not in `hello` starts from nobody; its counts are the truth.
      if (!topics.has(topic)) topics.set(topic, presenceState(null));
      const delta = applyPresenceDelta(topics.get(topic), frame);
      notify(topic, current(topic), delta);
    },
    /** Topics the stream no longer holds (revoked): their listeners get an empty snapshot. */
    drop(list) {
      for (const topic of listOf(list)) {
        if (topics.delete(topic)) notify(topic, empty(topic), null);
      }
    },
    /** The stream is not live: presence is unknown; listeners of known topics get `null`. */
    unknown() {
      const known = [...topics.keys()];
      topics.clear();
      for (const topic of known) notify(topic, () => null, null);
    },
    /** Every topic in the shape of `hello.presence` (for a tab that joins later). */
    dump() {
      const out = {};
      for (const [topic, state] of topics) out[topic] = presenceView(topic, state);
      return out;
    },
  };
}

/** The presence endpoint beside the stream's: `/api/sse/events?x` → `/api/sse/presence`. */
function presenceUrl(streamUrl, topic) {
  const path = String(streamUrl).split(/[?#]/, 1)[0];
  const dir = path.slice(0, path.lastIndexOf('/') + 1);
  return `${dir}presence?topic=${encodeURIComponent(topic)}`;
}

/** GET the presence of `topic` (see `SseClient.fetchPresence`). */
async function fetchPresenceOf(cfg, topic) {
  const fail = (status, message, cause) =>
    Object.assign(new Error(message, cause ? { cause } : undefined), { status, topic });
  if (typeof topic !== 'string' || topic === '') throw new TypeError('fetchPresence: topic must be a non-empty string');
  if (!cfg.fetch) throw fail(0, 'presence request failed: fetch is not available');
  let res;
  try {
    res = await cfg.fetch(presenceUrl(cfg.url, topic), {
      credentials: cfg.withCredentials ? 'include' : 'same-origin',
      cache: 'no-store',
      headers: { accept: 'application/json' },
    });
  } catch (err) {
    throw fail(0, `presence request failed: ${err && err.message ? err.message : err}`, err);
  }
  const status = res && typeof res.status === 'number' ? res.status : 0;
  if (status < 200 || status > 299) throw fail(status, `presence of ${topic} refused: HTTP ${status}`);
  const body = await readJson(res);
  if (!isPlainObject(body)) throw fail(status, `presence of ${topic}: the answer is not a JSON object`);
  return presenceView(topic, presenceState(body));
}

/**
 * The stream supervisor: owns one EventSource at a time and the retry/probe timers.
 * It knows nothing about tabs; it reports through `hooks`.
 * @private
 */
function createStream(cfg, hooks) {
  let es = null;
  let stopped = true;
  let gen = 0; // invalidates pending async work (status requests) on every transition
  let retryTimer = null;
  let connectTimer = null;
  let watchdogTimer = null;
  let attempt = 0;
  let heartbeatMs = 0;
  let lastFrameAt = 0;
  let liveSince = 0;
  let connectedTopics = [];
  let registerOnSource = null;
  const types = new Set();

  const clear = (handle) => {
    if (handle != null) cfg.clearTimeout(handle);
    return null;
  };

  function closeSource() {
    connectTimer = clear(connectTimer);
    watchdogTimer = clear(watchdogTimer);
    registerOnSource = null;
    if (es) {
      const source = es;
      es = null;
      try {
        source.close();
      } catch {
        /* ignore */
      }
    }
  }

  function clearAll() {
    closeSource();
    retryTimer = clear(retryTimer);
  }

  function backoffDelay() {
    const cap = Math.min(cfg.maxMs, cfg.baseMs * 2 ** attempt);
    attempt = Math.min(attempt + 1, 30);
    return Math.floor(cfg.random() * cap);
  }

  function buildUrl(topics, lastId) {
    let url = cfg.url + (cfg.url.includes('?') ? '&' : '?');
    url += 'topics=' + topics.map(encodeURIComponent).join(',');
    if (lastId != null && lastId !== '') url += '&lastEventId=' + encodeURIComponent(lastId);
    if (cfg.streamClientId) url += '&client=' + encodeURIComponent(cfg.streamClientId);
    return url;
  }

  function frame() {
    lastFrameAt = cfg.now();
  }

  function armWatchdog(delay) {
    watchdogTimer = clear(watchdogTimer);
    if (!heartbeatMs) return;
    watchdogTimer = cfg.setTimeout(() => {
      watchdogTimer = null;
      const idle = cfg.now() - lastFrameAt;
      const limit = 2 * heartbeatMs;
      if (idle >= limit) fail('stalled');
      else armWatchdog(limit - idle);
    }, delay == null ? 2 * heartbeatMs : delay);
  }

  /** Open a new EventSource (closing the current one). `silent` keeps a live state. */
  function connect(reason, silent = false) {
    if (stopped) return;
    clearAll();
    gen++;
    connectedTopics = hooks.topics();
    if (!silent || !liveSince) {
      liveSince = 0;
      hooks.state('connecting', { reason });
    }
    const ES = cfg.EventSource;
    if (typeof ES !== 'function') {
      liveSince = 0;
      hooks.state('polling', { reason: 'unsupported' });
      return;
    }
    let source;
    try {
      source = new ES(
        buildUrl(connectedTopics, hooks.lastEventId()),
        cfg.withCredentials ? { withCredentials: true } : undefined,
      );
    } catch {
      fail('handshake-failed');
      return;
    }
    es = source;
    let helloSeen = false;
    const registered = new Set();
    const listen = (name, fn) => {
      if (registered.has(name)) return;
      registered.add(name);
      source.addEventListener(name, (ev) => {
        if (es === source && !stopped) fn(ev);
      });
    };
    registerOnSource = (name) => {
      if (!RESERVED.has(name)) listen(name, onDomain);
    };
    listen('error', () => fail(helloSeen ? 'stream-lost' : 'handshake-failed'));
    listen('hello', (ev) => {
      helloSeen = true;
      onHello(ev);
    });
    listen('heartbeat', frame);
    listen('control', onControl);
    listen('reset', onReset);
    listen('receipt', onReceipt);
    listen('presence', onPresence);
    listen('message', onDomain);
    for (const name of types) registerOnSource(name);
    if (cfg.connectTimeoutMs > 0) {
      connectTimer = cfg.setTimeout(() => {
        connectTimer = null;
        fail('connect-timeout');
      }, cfg.connectTimeoutMs);
    }
  }

  function onHello(ev) {
    const hello = parseObject(ev.data);
    if (!hello) {
      fail('bad-hello');
      return;
    }
    connectTimer = clear(connectTimer);
    frame();
    heartbeatMs = nonNegative(hello.heartbeat_ms) || 0;
    addTypes(hello.types);
    liveSince = cfg.now();
    hooks.hello(hello);
    hooks.state('live', {
      reason: 'hello',
      epoch: hello.epoch,
      head: hello.head,
      topics: Array.isArray(hello.topics) ? hello.topics : connectedTopics,
      denied: Array.isArray(hello.denied) ? hello.denied : [],
      client: typeof hello.client === 'string' ? hello.client : null,
      heartbeatMs,
    });
    armWatchdog();
  }

  /** Listens for event types the server announced (in `hello` or after a reload). */
  function addTypes(names) {
    if (!Array.isArray(names)) return;
    for (const name of names) {
      if (typeof name === 'string' && name) {
        types.add(name);
        if (registerOnSource) registerOnSource(name);
      }
    }
  }

  function onDomain(ev) {
    frame();
    const event = parseObject(ev.data);
    if (!event) return;
    const id = ev.lastEventId || (event.id != null ? String(event.id) : null);
    hooks.event(event, id);
  }

  function onReset(ev) {
    frame();
    hooks.reset(parseObject(ev.data) || {});
  }

  function onReceipt(ev) {
    frame();
    const receipt = parseObject(ev.data);
    if (receipt && typeof receipt.mutation === 'string') hooks.receipt(receipt);
  }

  function onPresence(ev) {
    frame();
    // No `id:` line: the frame never moves the resume point (its `lastEventId` is ignored).
    const presence = parseObject(ev.data);
    if (presence && typeof presence.topic === 'string') hooks.presence(presence);
  }

  function onControl(ev) {
    frame();
    const control = parseObject(ev.data);
    if (!control) return;
    hooks.control(control);
    addTypes(control.types);
    if (control.mode === 'polling') {
      if (Array.isArray(control.families)) {
        hooks.families(uniqSorted(control.families), control.reason);
      } else {
        enterPolling(control.reason || 'server', nonNegative(control.retry_ms) || 0);
      }
    } else if (control.mode === 'reconnect') {
      closeSource();
      liveSince = 0;
      attempt = 0;
      const explicit = nonNegative(control.retry_ms);
      const delay = explicit != null ? explicit : backoffDelay();
      gen++;
      hooks.state('recovering', { reason: control.reason || 'reconnect', retryInMs: delay });
      retryTimer = cfg.setTimeout(() => {
        retryTimer = null;
        connect('server-reconnect');
      }, delay);
    }
  }

  /** Ask the status endpoint; never rejects. */
  async function askStatus() {
    const f = cfg.fetch;
    if (typeof f !== 'function') return { mode: null, retryAfterMs: 0 };
    try {
      const res = await f(cfg.statusUrl, {
        credentials: cfg.withCredentials ? 'include' : 'same-origin',
        cache: 'no-store',
        headers: { accept: 'application/json' },
      });
      const header = res && res.headers && typeof res.headers.get === 'function'
        ? res.headers.get('retry-after')
        : null;
      let retryAfterMs = parseRetryAfterMs(header, Date.now());
      if (!res || !res.ok) return { mode: null, retryAfterMs };
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      const seconds = body ? nonNegative(body.retry_after) : null;
      if (seconds != null) retryAfterMs = Math.max(retryAfterMs, seconds * 1000);
      const mode = body && (body.mode === 'polling' || body.mode === 'sse') ? body.mode : null;
      return { mode, retryAfterMs, reason: body && body.reason };
    } catch {
      return { mode: null, retryAfterMs: 0 };
    }
  }

  function fail(reason) {
    if (stopped) return;
    if (liveSince && cfg.now() - liveSince >= cfg.stableMs) attempt = 0;
    clearAll();
    liveSince = 0;
    const myGen = ++gen;
    hooks.state('recovering', { reason });
    askStatus().then((status) => {
      if (myGen !== gen || stopped) return;
      if (status.mode === 'polling') {
        enterPolling(status.reason || 'status-polling', status.retryAfterMs);
        return;
      }
      const delay = Math.max(backoffDelay(), status.retryAfterMs);
      hooks.retryIn(delay);
      retryTimer = cfg.setTimeout(() => {
        retryTimer = null;
        connect('retry');
      }, delay);
    });
  }

  function enterPolling(reason, minDelayMs) {
    clearAll();
    liveSince = 0;
    attempt = 0;
    gen++;
    hooks.state('polling', { reason });
    scheduleProbe(minDelayMs);
  }

  function scheduleProbe(minDelayMs) {
    const jittered = Math.round(cfg.probeIntervalMs * (0.75 + 0.5 * cfg.random()));
    const delay = Math.max(minDelayMs || 0, jittered);
    retryTimer = cfg.setTimeout(() => {
      retryTimer = null;
      probe();
    }, delay);
  }

  function probe() {
    const myGen = ++gen;
    askStatus().then((status) => {
      if (myGen !== gen || stopped) return;
      if (status.mode === 'sse') connect('probe');
      else scheduleProbe(status.retryAfterMs);
    });
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      attempt = 0;
      connect('start');
    },
    stop() {
      stopped = true;
      gen++;
      clearAll();
      liveSince = 0;
    },
    /** Topics wanted changed: reconnect if the open/opening stream lacks some (or `always`). */
    refreshTopics(always) {
      if (stopped || !es) return;
      const wanted = hooks.topics();
      const grew = wanted.some((t) => !connectedTopics.includes(t));
      if (grew || (always && !sameList(wanted, connectedTopics))) connect('topics-changed', true);
    },
    get running() {
      return !stopped;
    },
  };
}

/**
 * Create a client: connects immediately (state `connecting`).
 * @param {SseClientOptions} [options]
 * @returns {SseClient}
 */
export function createSseClient(options = {}) {
  const o = options || {};
  const backoff = o.backoff || {};
  const rawSetTimeout = o.setTimeout || globalThis.setTimeout;
  const rawClearTimeout = o.clearTimeout || globalThis.clearTimeout;
  const rawFetch = o.fetch !== undefined ? o.fetch : globalThis.fetch;
  const rawNow = o.now || Date.now;
  const rawRandom = o.random || Math.random;
  const cfg = {
    url: o.url || '/api/sse/events',
    statusUrl: o.statusUrl || '/api/sse/status',
    withCredentials: !!o.withCredentials,
    baseMs: nonNegative(backoff.baseMs) ?? 500,
    maxMs: nonNegative(backoff.maxMs) ?? 30000,
    probeIntervalMs: nonNegative(o.probeIntervalMs) ?? 15000,
    connectTimeoutMs: nonNegative(o.connectTimeoutMs) ?? 20000,
    stableMs: nonNegative(o.stableMs) ?? 5000,
    EventSource: o.EventSource !== undefined ? o.EventSource : globalThis.EventSource,
    // Called as plain functions: browsers throw "Illegal invocation" for window methods
    // called with another `this`.
    fetch: typeof rawFetch === 'function' ? (input, init) => rawFetch(input, init) : null,
    now: () => rawNow(),
    random: () => rawRandom(),
    setTimeout: (fn, ms) => rawSetTimeout(fn, ms),
    clearTimeout: (handle) => rawClearTimeout(handle),
  };
  const channelName = o.channelName || 'sse-sidecar';
  const locks = o.locks !== undefined ? o.locks : globalThis.navigator && globalThis.navigator.locks;
  const BC = o.BroadcastChannel !== undefined ? o.BroadcastChannel : globalThis.BroadcastChannel;
  const lifecycle = o.lifecycleTarget !== undefined
    ? o.lifecycleTarget
    : typeof globalThis.addEventListener === 'function' ? globalThis : null;
  const reportListenerError = o.onListenerError
    || ((err) => (typeof globalThis.reportError === 'function' ? globalThis.reportError(err) : console.error(err)));

  const clientId = o.clientId
    ? String(o.clientId)
    : `${getBrowserId(o.storage !== undefined ? o.storage : defaultStorage())}.${getTabRandom()}`;
  const dot = clientId.indexOf('.');
  cfg.streamClientId = dot > 0 ? clientId.slice(0, dot) : clientId;
  const receiptTimeoutMs = nonNegative(o.receiptTimeoutMs) ?? 5000;
  const instanceId = randomId();
  const shared = o.shareAcrossTabs !== false
    && !!locks && typeof locks.request === 'function' && typeof BC === 'function';

  /** @type {SseState} */
  let state = 'connecting';
  /** @type {SseStateInfo} */
  let info = { reason: 'start', pollingFamilies: [], role: shared ? 'follower' : 'solo' };
  let pollingFamilies = [];
  let lastEventId = o.lastEventId != null ? String(o.lastEventId) : null;
  let ownTopics = uniqSorted(o.topics);
  /** @type {'solo'|'leader'|'follower'} */
  let role = shared ? 'follower' : 'solo';
  let closed = false;
  let suspended = false;
  let channel = null;
  let leaderId = null;
  let releaseLock = null;
  let lockAbort = null;
  const peers = new Map(); // other tabs: instanceId → topics
  const seenIds = new Set();
  const mutations = new Map(); // mutation id → time sent
  /** mutation id → {receipt, waiters}: receipts may come before the HTTP answer. */
  const pending = new Map();
  const versions = new Map(); // topic → event id of the state the page holds
  let pollHint = null; // {ms, at}: the latest x-sse-poll-interval-ms recorded, at cfg.now()
  const notePollHint = (ms) => {
    pollHint = { ms, at: cfg.now() };
  };
  pollHintSinks.add(notePollHint);
  const presence = createPresenceStore((err) => reportListenerError(err));

  const listeners = {
    state: new Set(),
    event: new Set(),
    reset: new Set(),
    control: new Set(),
    receipt: new Set(),
  };

  function emit(kind, ...args) {
    for (const fn of [...listeners[kind]]) {
      try {
        fn(...args);
      } catch (err) {
        try {
          reportListenerError(err);
        } catch {
          /* ignore */
        }
      }
    }
  }

  function subscribe(kind, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    listeners[kind].add(fn);
    return () => listeners[kind].delete(fn);
  }

  function post(message) {
    if (!channel || closed) return;
    try {
      channel.postMessage({ v: PROTOCOL, from: instanceId, ...message });
    } catch {
      /* channel closed or payload not cloneable: nothing useful to do */
    }
  }

  function relay(message) {
    if (role === 'leader') post(message);
  }

  function snapshot() {
    const { role: _role, ...rest } = info;
    return { t: 'state', state, info: rest, pollingFamilies, lastEventId };
  }

  /** Apply a state (local or mirrored); notify listeners when the mode changed. */
  function applyState(next, extra) {
    if (closed && next !== 'stopped') return;
    const changed = next !== state || !sameList(pollingFamilies, info.pollingFamilies || []);
    state = next;
    info = { ...(extra || {}), pollingFamilies: pollingFamilies.slice(), role };
    relay(snapshot());
    // Only a live stream knows who is there (a follower mirrors the leader's state).
    if (state !== 'live') presence.unknown();
    if (changed) emit('state', state, info);
  }

  function setLastEventId(id) {
    if (id != null && id !== '') lastEventId = String(id);
  }

  function wantsEvent(event) {
    // A solo stream is filtered by the server; a shared stream carries the union of all tabs'
    // topics, so each tab only delivers what it asked for.
    if (role === 'solo' || !ownTopics.length || !Array.isArray(event.topics)) return true;
    return event.topics.some((topic) => ownTopics.includes(topic));
  }

  function deliverEvent(event, id) {
    if (id != null) {
      if (seenIds.has(id)) return;
      seenIds.add(id);
      if (seenIds.size > MAX_SEEN_IDS) seenIds.delete(seenIds.values().next().value);
      setLastEventId(id);
    }
    if (!wantsEvent(event)) return;
    const version = id != null ? id : event.id != null ? String(event.id) : null;
    if (version != null && Array.isArray(event.topics)) {
      for (const topic of event.topics) if (typeof topic === 'string') noteVersion(topic, version);
    }
    emit('event', event);
  }

  // ---- versions ----------------------------------------------------------------------------

  function noteVersion(topic, id) {
    if (typeof topic !== 'string' || typeof id !== 'string' || id === '') return;
    const known = versions.get(topic);
    if (known != null) {
      const order = compareEventIds(id, known);
      // Same epoch: keep the newer. Another epoch (the log was reset): the new one wins.
      if (order != null && order <= 0) return;
      versions.delete(topic);
    }
    versions.set(topic, id);
    if (versions.size > MAX_VERSIONS) versions.delete(versions.keys().next().value);
  }

  function baseFor(topics) {
    let best = null;
    for (const topic of Array.isArray(topics) ? topics : []) {
      const v = versions.get(topic);
      if (v == null) continue;
      if (best == null || (compareEventIds(v, best) ?? 0) > 0) best = v;
    }
    return best;
  }

  // ---- receipts ----------------------------------------------------------------------------

  function trackPending(id) {
    if (pending.has(id)) return;
    pending.set(id, { receipt: null, waiters: [] });
    while (pending.size > MAX_PENDING) {
      const [oldest, entry] = pending.entries().next().value;
      pending.delete(oldest);
      for (const wake of entry.waiters) wake(null);
    }
  }

  function deliverReceipt(receipt) {
    if (!receipt || receipt.client !== clientId) return;
    const entry = pending.get(receipt.mutation);
    if (entry && !entry.receipt) {
      entry.receipt = receipt;
      for (const wake of entry.waiters.splice(0)) wake(receipt);
    }
    emit('receipt', receipt);
  }

  /** Resolves with the receipt of `id`, or `null` after `timeoutMs` (never rejects). */
  function waitReceipt(id, timeoutMs) {
    const entry = pending.get(id);
    if (!entry) return Promise.resolve(null);
    if (entry.receipt) return Promise.resolve(entry.receipt);
    return new Promise((resolve) => {
      let timer = null;
      const wake = (receipt) => {
        if (timer != null) cfg.clearTimeout(timer);
        timer = null;
        resolve(receipt);
      };
      entry.waiters.push(wake);
      timer = cfg.setTimeout(() => {
        timer = null;
        const i = entry.waiters.indexOf(wake);
        if (i >= 0) entry.waiters.splice(i, 1);
        resolve(null);
      }, timeoutMs);
    });
  }

  function setFamilies(list, reason) {
    pollingFamilies = list;
    applyState(state, { ...info, reason: reason || 'families' });
  }

  /**
   * Presence from the stream or relayed by the leader tab: `{hello}` (the `presence` of a
   * `hello`, or the leader's whole state for a tab that joins) or `{frame}` (a `presence` frame).
   */
  function takePresence(message) {
    if (message.frame) presence.apply(message.frame);
    else presence.replaceAll(message.hello);
  }

  /** Presence from this tab's stream: applied, then relayed to the followers. */
  function applyPresence(message) {
    takePresence(message);
    relay({ t: 'presence', ...message });
  }

  function unionTopics() {
    const all = new Set(ownTopics);
    if (role === 'leader') for (const topics of peers.values()) for (const t of topics) all.add(t);
    return [...all].sort();
  }

  const stream = createStream(cfg, {
    topics: unionTopics,
    lastEventId: () => lastEventId,
    state: (next, extra) => applyState(next, extra),
    retryIn: (ms) => {
      info = { ...info, retryInMs: ms };
      relay(snapshot());
    },
    hello: (hello) => {
      if (lastEventId == null && hello.head != null) setLastEventId(hello.head);
      if (Array.isArray(hello.polling_families)) pollingFamilies = uniqSorted(hello.polling_families);
      // Before the state goes `live`: followers get the presence before the state change.
      applyPresence({ hello: hello.presence ?? null });
    },
    presence: (frame) => applyPresence({ frame }),
    event: (event, id) => {
      deliverEvent(event, id);
      relay({ t: 'event', event, id });
    },
    receipt: (receipt) => {
      // One stream serves every tab of the browser: each tab keeps only its own receipts.
      deliverReceipt(receipt);
      relay({ t: 'receipt', receipt });
    },
    reset: (reset) => {
      // After a reset the app refetches everything, so the server's head is a safe resume
      // point: a reconnect before the next event would otherwise trigger another reset.
      if (reset.head != null) setLastEventId(reset.head);
      relay({ t: 'reset', reset, lastEventId });
      emit('reset', reset);
    },
    control: (control) => {
      if (Array.isArray(control.revoked) && control.revoked.length) {
        const revoked = control.revoked;
        info = {
          ...info,
          topics: (info.topics || []).filter((t) => !revoked.includes(t)),
          denied: uniqSorted([...(info.denied || []), ...revoked]),
        };
        // Followers mirror `info` from state snapshots: send it before the control itself.
        relay(snapshot());
        presence.drop(revoked);
      }
      relay({ t: 'control', control });
      emit('control', control);
    },
    families: (list, reason) => setFamilies(list, reason),
  });

  // ---- cross-tab -------------------------------------------------------------------------

  function becomeLeader() {
    // Holding the lock proves the previous leader is gone (closed, hidden or crashed):
    // drop its topics even if its `bye` has not arrived yet.
    if (leaderId && leaderId !== instanceId) peers.delete(leaderId);
    role = 'leader';
    leaderId = instanceId;
    post({ t: 'leader', topics: ownTopics });
    stream.start();
  }

  function campaign() {
    lockAbort = typeof AbortController === 'function' ? new AbortController() : null;
    const opts = lockAbort ? { signal: lockAbort.signal } : {};
    let request;
    try {
      request = locks.request(channelName, opts, () => {
        if (closed || suspended) return undefined;
        lockAbort = null;
        return new Promise((resolve) => {
          releaseLock = () => {
            releaseLock = null;
            resolve();
          };
          becomeLeader();
        });
      });
    } catch {
      request = null;
    }
    if (request && typeof request.catch === 'function') request.catch(() => {});
  }

  function resign() {
    if (lockAbort) {
      try {
        lockAbort.abort();
      } catch {
        /* ignore */
      }
      lockAbort = null;
    }
    if (role === 'leader') {
      stream.stop();
      role = 'follower';
    }
    if (releaseLock) releaseLock();
  }

  function onMessage(ev) {
    const m = ev && ev.data;
    if (!m || m.v !== PROTOCOL || m.from === instanceId || closed || suspended) return;
    if (m.to && m.to !== instanceId) return;
    switch (m.t) {
      case 'join':
      case 'topics':
      case 'peer':
      case 'leader': {
        peers.set(m.from, uniqSorted(m.topics));
        if (m.t === 'leader') leaderId = m.from;
        if (m.t === 'join' || m.t === 'leader') post({ t: 'peer', topics: ownTopics, to: m.from });
        if (role === 'leader') {
          if (m.t === 'join') {
            post({ ...snapshot(), to: m.from });
            post({ t: 'presence', hello: presence.dump(), to: m.from });
          }
          stream.refreshTopics(false);
        }
        break;
      }
      case 'bye':
        peers.delete(m.from);
        if (m.from === leaderId) {
          leaderId = null;
          if (role === 'follower') applyState('connecting', { reason: 'leader-left' });
        }
        break;
      case 'state':
        if (role === 'leader') break;
        leaderId = m.from;
        setLastEventId(m.lastEventId);
        pollingFamilies = uniqSorted(m.pollingFamilies);
        applyState(m.state, m.info);
        break;
      case 'event':
        if (role !== 'leader' && m.event) deliverEvent(m.event, m.id);
        break;
      case 'reset':
        if (role === 'leader') break;
        setLastEventId(m.lastEventId);
        emit('reset', m.reset || {});
        break;
      case 'control':
        if (role === 'leader' || !m.control) break;
        if (Array.isArray(m.control.revoked)) presence.drop(m.control.revoked);
        emit('control', m.control);
        break;
      case 'presence':
        if (role !== 'leader') takePresence(m);
        break;
      case 'receipt':
        if (role !== 'leader' && m.receipt) deliverReceipt(m.receipt);
        break;
      default:
        break;
    }
  }

  function join() {
    post({ t: 'join', topics: ownTopics });
    campaign();
  }

  // ---- page lifecycle: a page entering the bfcache (`pagehide`) or being frozen (`freeze`)
  // gives up its stream and the leadership, so another tab can take over at once; it comes
  // back on `pageshow` (persisted) / `resume`.

  function onSuspend() {
    if (closed || suspended) return;
    suspended = true;
    if (shared) {
      post({ t: 'bye' });
      resign();
    } else {
      stream.stop();
    }
  }

  function onResume() {
    if (closed || !suspended) return;
    suspended = false;
    peers.clear();
    leaderId = null;
    applyState('connecting', { reason: 'resumed' });
    if (shared) join();
    else stream.start();
  }

  function onPageShow(ev) {
    if (ev && ev.persisted) onResume();
  }

  const lifecycleHandlers = [
    ['pagehide', onSuspend],
    ['freeze', onSuspend],
    ['pageshow', onPageShow],
    ['resume', onResume],
  ];
  if (lifecycle) for (const [name, fn] of lifecycleHandlers) lifecycle.addEventListener(name, fn);

  // ---- start -----------------------------------------------------------------------------

  if (shared) {
    channel = new BC(channelName);
    if (typeof channel.addEventListener === 'function') channel.addEventListener('message', onMessage);
    else channel.onmessage = onMessage;
    join();
  } else {
    stream.start();
  }

  // ---- echo detection / fetch helper -------------------------------------------------------

  function rememberMutation(id) {
    const t = cfg.now();
    mutations.set(id, t);
    for (const [key, at] of mutations) {
      if (mutations.size <= MAX_MUTATIONS && t - at <= MUTATION_TTL_MS) break;
      mutations.delete(key);
    }
  }

  /** Response → its X-Mutation-Id, for `settle`. */
  const responseMutations = new WeakMap();

  function sseFetch(input, init, options) {
    if (!cfg.fetch) return Promise.reject(new TypeError('fetch is not available'));
    const opts = options || {};
    const request = typeof Request === 'function' && input instanceof Request ? input : null;
    const source = init && init.headers != null ? init.headers : request ? request.headers : undefined;
    const extra = { 'X-Client-Id': clientId };
    if (opts.base != null && opts.base !== '') extra[BASE_HEADER] = String(opts.base);
    let headers;
    let mutationId;
    if (typeof Headers === 'function') {
      headers = new Headers(source);
      for (const [name, value] of Object.entries(extra)) headers.set(name, value);
      if (opts.mutationId) headers.set('X-Mutation-Id', opts.mutationId);
      else if (!headers.has('X-Mutation-Id')) headers.set('X-Mutation-Id', randomId());
      mutationId = headers.get('X-Mutation-Id');
    } else {
      headers = { ...(source || {}), ...extra };
      if (opts.mutationId) headers['X-Mutation-Id'] = opts.mutationId;
      else if (!headers['X-Mutation-Id']) headers['X-Mutation-Id'] = randomId();
      mutationId = headers['X-Mutation-Id'];
    }
    // Remember before sending: the echo and the receipt can arrive before the response.
    rememberMutation(mutationId);
    trackPending(mutationId);
    return Promise.resolve(cfg.fetch(input, { ...(init || {}), headers })).then((response) => {
      recordPollIntervalHint(response);
      if (response && typeof response === 'object') responseMutations.set(response, mutationId);
      const version = readHeader(response, VERSION_HEADER);
      if (version && Array.isArray(opts.topics)) for (const topic of opts.topics) noteVersion(topic, version);
      if (readHeader(response, RECEIPT_HEADER) !== 'pending') pending.delete(mutationId);
      return response;
    }, (err) => {
      pending.delete(mutationId);
      throw err;
    });
  }

  /** Settle `response` (of mutation `mutationId`): see `SseClient.settle`. */
  async function settleResponse(response, mutationId, timeoutMs) {
    const status = response && typeof response.status === 'number' ? response.status : 0;
    const ids = { response, mutationId };
    if (status === 409) {
      const body = await readJson(response);
      pending.delete(mutationId);
      if (body && body.conflict && typeof body.conflict === 'object') throw new SseConflictError(body.conflict, ids);
      throw new SseMutationError(`request refused: HTTP 409`, { ...ids, status, reason: 'http' });
    }
    if (status < 200 || status > 299) {
      pending.delete(mutationId);
      throw new SseMutationError(`request refused: HTTP ${status}`, { ...ids, status, reason: 'http' });
    }
    let receipt = null;
    if (mutationId != null && readHeader(response, RECEIPT_HEADER) === 'pending') {
      receipt = await waitReceipt(mutationId, timeoutMs);
    }
    pending.delete(mutationId);
    if (receipt && (receipt.outcome === 'failed' || receipt.outcome === 'dropped')) {
      if (receipt.conflict && receipt.conflict.current != null) throw new SseConflictError(receipt.conflict, { ...ids, receipt });
      const reason = receipt.reason || receipt.outcome;
      throw new SseMutationError(`mutation ${receipt.outcome}: ${reason}`, { ...ids, status, receipt, reason });
    }
    const events = receipt && Array.isArray(receipt.events) ? receipt.events.map(String) : [];
    return { response, receipt, events, mutationId };
  }

  async function mutate(req, options) {
    const opts = options || {};
    const { input, init } = toFetchArgs(req);
    const base = opts.base !== undefined ? opts.base : Array.isArray(opts.topics) ? baseFor(opts.topics) : null;
    const mutationId = opts.mutationId || randomId();
    const timeoutMs = nonNegative(opts.timeoutMs) ?? receiptTimeoutMs;
    let rolledBack = false;
    const rollback = () => {
      if (rolledBack || typeof opts.rollback !== 'function') return;
      rolledBack = true;
      opts.rollback();
    };
    if (typeof opts.optimistic === 'function') opts.optimistic();
    let response;
    try {
      response = await sseFetch(input, init, { base, mutationId });
    } catch (err) {
      rollback();
      throw new SseMutationError(`request failed: ${err && err.message ? err.message : err}`, { reason: 'network', mutationId });
    }
    try {
      return await settleResponse(response, mutationId, timeoutMs);
    } catch (err) {
      rollback();
      throw err;
    }
  }

  /** @type {SseClient} */
  const client = {
    get state() {
      return state;
    },
    get info() {
      return info;
    },
    get pollingFamilies() {
      return pollingFamilies.slice();
    },
    get lastEventId() {
      return lastEventId;
    },
    get clientId() {
      return clientId;
    },
    get topics() {
      return ownTopics.slice();
    },
    get role() {
      return role;
    },
    onStateChange: (fn) => subscribe('state', fn),
    onEvent: (fn) => subscribe('event', fn),
    onReset: (fn) => subscribe('reset', fn),
    onControl: (fn) => subscribe('control', fn),
    isLive(family) {
      return state === 'live' && (family == null || !pollingFamilies.includes(family));
    },
    pollInterval(family, defaultMs) {
      if (client.isLive(family)) return false;
      // A hint is only sent to credentials that hold a live stream: it is stale otherwise.
      if (state === 'live' && pollHint && cfg.now() - pollHint.at < POLL_HINT_TTL_MS) {
        return Math.max(defaultMs, pollHint.ms);
      }
      return defaultMs;
    },
    isOwnEcho(event) {
      const origin = event && event.origin;
      if (!origin) return false;
      if (origin.client != null && origin.client === clientId) return true;
      return origin.mutation != null && mutations.has(origin.mutation);
    },
    get streamClientId() {
      return cfg.streamClientId;
    },
    onReceipt: (fn) => subscribe('receipt', fn),
    version: (topic) => versions.get(topic) ?? null,
    baseFor,
    noteVersion,
    fetch: sseFetch,
    mutate,
    settle(response, options) {
      const timeoutMs = nonNegative(options && options.timeoutMs) ?? receiptTimeoutMs;
      return settleResponse(response, responseMutations.get(response) ?? null, timeoutMs);
    },
    presence: (topic) => presence.get(topic),
    onPresence: (topic, fn) => presence.subscribe(topic, fn),
    fetchPresence: (topic) => fetchPresenceOf(cfg, topic),
    setTopics(topics) {
      const next = uniqSorted(topics);
      if (closed || sameList(next, ownTopics)) return;
      ownTopics = next;
      if (role === 'follower') post({ t: 'topics', topics: ownTopics });
      else if (!suspended) stream.refreshTopics(role === 'solo');
    },
    close() {
      if (closed) return;
      stream.stop();
      if (shared) {
        post({ t: 'bye' });
        resign();
        try {
          channel.close();
        } catch {
          /* ignore */
        }
      }
      if (lifecycle) for (const [name, fn] of lifecycleHandlers) lifecycle.removeEventListener(name, fn);
      pollHintSinks.delete(notePollHint);
      applyState('stopped', { reason: 'closed' });
      closed = true;
      channel = null;
    },
  };
  return client;
}
