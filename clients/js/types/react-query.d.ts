/**
 * Wire an sse client to a TanStack QueryClient.
 * @param {SseClientLike} client From `createSseClient`.
 * @param {QueryClientLike} queryClient TanStack `QueryClient`.
 * @param {ReactQueryAdapterOptions} [options]
 * @returns {ReactQueryAdapter}
 */
export function connectReactQuery(client: SseClientLike, queryClient: QueryClientLike, options?: ReactQueryAdapterOptions): ReactQueryAdapter;
/**
 * Minimal shape of the sse client used by the adapter (see sse-client.js `SseClient`).
 */
export type SseClientLike = {
    state: string;
    pollingFamilies: string[];
    /**
     * Topics the server denied or revoked (`info.denied`).
     */
    info?: {
        denied?: string[];
    };
    isLive: (family?: string) => boolean;
    /**
     * Used when
     * present (hint-aware interval); else `isLive(family) ? false : ms`.
     */
    pollInterval?: (family: string, defaultMs: number) => number | false;
    isOwnEcho: (event: any) => boolean;
    onEvent: (fn: (event: any) => void) => () => void;
    onReset: (fn: (reset: any) => void) => () => void;
    onStateChange: (fn: (state: string, info: any) => void) => () => void;
    /**
     * Revocations are
     * followed through it when present.
     */
    onControl?: (fn: (control: any) => void) => () => void;
};
/**
 * Minimal shape of a TanStack `QueryClient` used by the adapter.
 */
export type QueryClientLike = {
    invalidateQueries: (filters?: {
        queryKey?: ReadonlyArray<unknown>;
    }) => unknown;
};
export type ReactQueryAdapterOptions = {
    /**
     * Ignore events caused by this tab (its own mutation
     * code already refreshed what it changed).
     */
    skipOwnEchoes?: boolean;
    /**
     * Invalidate everything when the effective
     * mode changes, and on a revocation (needed for `refetchInterval` to switch; see module
     * docs).
     */
    invalidateOnModeChange?: boolean;
    /**
     * Extra hook for
     * every delivered event (e.g. `setQueryData` from `event.data`), called before batching.
     */
    onEvent?: (event: any, queryClient: QueryClientLike) => void;
    /**
     * Schedules a batch flush and
     * returns a cancel function. Default: `requestAnimationFrame` when present and the
     * document is visible, else a 16 ms timer.
     */
    schedule?: (flush: () => void) => (() => void);
};
export type ReactQueryAdapter = {
    /**
     *   Value for React Query's `refetchInterval`: a function returning `ms` when `topic` (or one
     *   of several) is in `client.info.denied` (denied at connection or revoked since: no event
     *   will come for it); else `client.pollInterval(family, ms)`, i.e. `false` while the stream
     *   is live for `family`, `ms` otherwise (at least the server's poll-interval hint while the
     *   stream is live for other families).
     */
    refetchInterval: (family: string, ms: number, topic?: string | string[]) => (() => number | false);
    /**
     * Same as `client.isLive`.
     */
    isLive: (family?: string) => boolean;
    /**
     * Run the pending batch now.
     */
    flush: () => void;
    /**
     * Stop listening (pending batch dropped).
     */
    disconnect: () => void;
};
