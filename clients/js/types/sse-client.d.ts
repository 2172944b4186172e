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
     * Who caused it.
     */
    origin: {
        client?: string | null;
        mutation?: string | null;
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
     * Override the per-tab client id.
     */
    clientId?: string;
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
     * Random id of this tab, stable for the tab's life.
     */
    clientId: string;
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
     *   `fetch` adding `X-Client-Id` and a fresh `X-Mutation-Id`; records the
     *   `x-sse-poll-interval-ms` hint of the response (see {@link recordPollIntervalHint}).
     */
    fetch: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;
    /**
     * Change the topics this tab wants.
     */
    setTopics: (topics: string[]) => void;
    /**
     * Stop for good (state `stopped`), releasing lock and channel.
     */
    close: () => void;
};
