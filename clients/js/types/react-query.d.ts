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
    /**
     * Used by `mutation()`.
     */
    mutate?: (request: any, options?: any) => Promise<any>;
    /**
     * Used by `mutation()`.
     */
    settle?: (response: any, options?: any) => Promise<any>;
    /**
     * Used by `mutation()`.
     */
    baseFor?: (topics: string[]) => string | null;
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
/**
 * Minimal shape of a TanStack v5 `QueryClient` used by `mutation()`.
 */
export type MutationQueryClientLike = {
    invalidateQueries: (filters?: {
        queryKey?: ReadonlyArray<unknown>;
        exact?: boolean;
    }) => unknown;
    cancelQueries: (filters: {
        queryKey: ReadonlyArray<unknown>;
    }) => Promise<void>;
    setQueryData: (key: ReadonlyArray<unknown>, updater: (old: any) => any) => unknown;
    removeQueries: (filters: {
        queryKey: ReadonlyArray<unknown>;
        exact?: boolean;
    }) => void;
    getQueryCache: () => {
        find(filters: {
            queryKey: ReadonlyArray<unknown>;
            exact?: boolean;
        }): any;
        subscribe(fn: (event: any) => void): () => void;
    };
};
/**
 * What `mutation()` needs from the app.
 */
export type OptimisticMutationSpec<TVars> = {
    /**
     *   The request to send (sent through `client.mutate`), or the `Response` (promise) of a
     *   request the app sent itself through `client.fetch` (then settled by `client.settle`).
     */
    mutationFn: (vars: TVars) => (import("./sse-client.js").SseMutationRequest | Promise<Response> | Response);
    /**
     * The cache entry it changes.
     */
    queryKey: (vars: TVars) => ReadonlyArray<unknown>;
    /**
     * The entry's data after the change.
     */
    optimistic: (old: any, vars: TVars) => any;
    /**
     * Version the user edited (sent as
     * `x-sse-base`), e.g. captured with `client.baseFor(...)` when the edit started.
     */
    base?: (vars: TVars) => string | null | undefined;
    /**
     * Without `base`: the base is
     * `client.baseFor(topics(vars))` when the mutation starts.
     */
    topics?: (vars: TVars) => string[];
    /**
     * Receipt wait (default: the client's).
     */
    timeoutMs?: number;
};
/**
 * Context `onMutate` returns (TanStack passes it to `onError`/`onSettled`).
 */
export type OptimisticMutationContext = {
    mutationId: string;
    queryKey: ReadonlyArray<unknown>;
};
/**
 * Options to spread into `useMutation` (or `new MutationObserver(queryClient, ...)`).
 */
export type OptimisticMutationOptions<TVars> = {
    mutationFn: (vars: TVars) => Promise<import("./sse-client.js").SseMutationResult>;
    onMutate: (vars: TVars) => Promise<OptimisticMutationContext>;
    onError: (error: unknown, vars: TVars, context: OptimisticMutationContext | undefined) => void;
    onSettled: (data: unknown, error: unknown, vars: TVars, context: OptimisticMutationContext | undefined) => unknown;
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
     *   `useMutation` options for an optimistic mutation settled by the sidecar's receipt (see
     *   module docs). Needs `client.mutate`/`client.settle` and a TanStack v5 QueryClient.
     */
    mutation: <TVars>(spec: OptimisticMutationSpec<TVars>) => OptimisticMutationOptions<TVars>;
    /**
     * Run the pending batch now.
     */
    flush: () => void;
    /**
     * Stop listening (pending batch dropped).
     */
    disconnect: () => void;
};
