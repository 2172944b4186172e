// Test doubles for the browser APIs the client uses: EventSource, timers/clock, fetch,
// navigator.locks and BroadcastChannel. No dependencies.

/** Let pending promise chains and setImmediate-queued deliveries run. */
export async function flush(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A manual clock: `now`, `setTimeout`, `clearTimeout`, async `tick(ms)`. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.seq = 0;
    this.timers = new Map();
    this.now = () => this.t;
    this.setTimeout = (fn, ms = 0) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.t + Math.max(0, Number(ms) || 0), fn, ms: Number(ms) || 0, id });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Delays (ms from creation) of the pending timers, sorted by due time. */
  pending() {
    return [...this.timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  }

  /** Time until the next timer fires (or null). */
  nextIn() {
    const [first] = this.pending();
    return first ? first.at - this.t : null;
  }

  /** Advance the clock by `ms`, firing due timers in order and settling promises. */
  async tick(ms) {
    const end = this.t + ms;
    await flush();
    for (;;) {
      const [next] = this.pending();
      if (!next || next.at > end) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

/** A FakeEventSource class plus the list of its instances. */
export function makeEventSource() {
  const instances = [];
  class FakeEventSource {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 2;

    constructor(url, init) {
      this.url = url;
      this.withCredentials = !!(init && init.withCredentials);
      this.readyState = 0;
      this.closed = false;
      this.listeners = new Map();
      instances.push(this);
    }

    addEventListener(type, fn) {
      if (!this.listeners.has(type)) this.listeners.set(type, new Set());
      this.listeners.get(type).add(fn);
    }

    removeEventListener(type, fn) {
      const set = this.listeners.get(type);
      if (set) set.delete(fn);
    }

    close() {
      this.readyState = 2;
      this.closed = true;
    }

    // ---- test controls -------------------------------------------------------------------

    get params() {
      return new URL(this.url, 'http://test.invalid').searchParams;
    }

    dispatch(type, props = {}) {
      const set = this.listeners.get(type);
      // Like the native EventSource, a named event reaches only listeners of that name.
      if (!set) return false;
      for (const fn of [...set]) fn({ type, ...props });
      return true;
    }

    open() {
      this.readyState = 1;
      this.dispatch('open');
    }

    /** Deliver one frame. `data` objects are JSON-encoded. Returns whether anyone listened. */
    emit(type, data, id) {
      if (this.closed) throw new Error(`emit(${type}) on a closed EventSource`);
      const text = typeof data === 'string' ? data : JSON.stringify(data);
      return this.dispatch(type, { data: text, lastEventId: id == null ? '' : String(id) });
    }

    hello(extra = {}) {
      this.open();
      return this.emit('hello', {
        epoch: 'e1',
        head: '0',
        topics: [],
        denied: [],
        heartbeat_ms: 15000,
        types: ['card.updated', 'card.created'],
        ...extra,
      });
    }

    /** Native behaviour on failure: `error`, then CLOSED (refusal) or CONNECTING (drop). */
    fail(closed = true) {
      this.readyState = closed ? 2 : 0;
      this.dispatch('error');
    }
  }
  return {
    EventSource: FakeEventSource,
    instances,
    get last() {
      return instances[instances.length - 1];
    },
    get open() {
      return instances.filter((es) => !es.closed);
    },
  };
}

/** A fake fetch answering the status URL from a queue/handler and recording all calls. */
export function makeFetch(handler) {
  const calls = [];
  const fetch = async (input, init = {}) => {
    const url = typeof input === 'string' ? input : input.url;
    calls.push({ url, init });
    const answer = await handler(url, init);
    if (answer instanceof Error) throw answer;
    const { status = 200, body = null, headers = {} } = answer || {};
    const text = body == null || status === 204 ? null : JSON.stringify(body);
    return new Response(text, { status, headers: { 'content-type': 'application/json', ...headers } });
  };
  return { fetch, calls };
}

/** A status endpoint whose answer the test changes: `status.set({mode:'polling'})`. */
export function makeStatus(initial = { mode: 'sse', epoch: 'e1', head: '0', retry_after: 0 }) {
  let answer = { status: 200, body: initial };
  const { fetch, calls } = makeFetch((url) => {
    if (url.includes('/api/sse/status')) return answer;
    return { status: 200, body: { ok: true } };
  });
  return {
    fetch,
    calls,
    statusCalls: () => calls.filter((c) => c.url.includes('/api/sse/status')).length,
    set(body, status = 200, headers = {}) {
      answer = body instanceof Error ? body : { status, body, headers };
    },
  };
}

/** navigator.locks double: exclusive locks granted in request order, abortable while queued. */
export class FakeLockManager {
  constructor() {
    this.queues = new Map();
    this.held = new Map();
  }

  request(name, options, callback) {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    const signal = options && options.signal;
    return new Promise((resolve, reject) => {
      const req = { name, callback, resolve, reject, granted: false };
      if (signal) {
        if (signal.aborted) {
          reject(new DOMException('aborted', 'AbortError'));
          return;
        }
        signal.addEventListener('abort', () => {
          const queue = this.queues.get(name) || [];
          const index = queue.indexOf(req);
          if (index >= 0 && !req.granted) {
            queue.splice(index, 1);
            reject(new DOMException('aborted', 'AbortError'));
          }
        });
      }
      if (!this.queues.has(name)) this.queues.set(name, []);
      this.queues.get(name).push(req);
      this.pump(name);
    });
  }

  pump(name) {
    if (this.held.has(name)) return;
    const queue = this.queues.get(name) || [];
    const req = queue.shift();
    if (!req) return;
    req.granted = true;
    this.held.set(name, req);
    const done = (ok, value) => {
      if (this.held.get(name) !== req) return;
      this.held.delete(name);
      if (ok) req.resolve(value);
      else req.reject(value);
      this.pump(name);
    };
    req.release = () => done(true, undefined);
    Promise.resolve()
      .then(() => req.callback({ name, mode: 'exclusive' }))
      .then((v) => done(true, v), (e) => done(false, e));
  }

  /** Simulate the holder's tab crashing: the browser releases its lock. */
  crash(name) {
    const req = this.held.get(name);
    if (req) req.release();
  }

  waiting(name) {
    return (this.queues.get(name) || []).length;
  }
}

/** BroadcastChannel double: async delivery (structured clone) to the other channels. */
export function makeBroadcastChannel() {
  const hub = new Map();
  const log = [];
  class FakeBroadcastChannel {
    constructor(name) {
      this.name = name;
      this.closed = false;
      this.onmessage = null;
      this.listeners = new Set();
      if (!hub.has(name)) hub.set(name, new Set());
      hub.get(name).add(this);
    }

    postMessage(message) {
      if (this.closed) throw new DOMException('closed', 'InvalidStateError');
      const data = structuredClone(message);
      log.push(data);
      for (const other of hub.get(this.name)) {
        if (other === this) continue;
        setImmediate(() => other.deliver(structuredClone(data)));
      }
    }

    deliver(data) {
      if (this.closed) return;
      const ev = { data };
      for (const fn of [...this.listeners]) fn(ev);
      if (this.onmessage) this.onmessage(ev);
    }

    addEventListener(type, fn) {
      if (type === 'message') this.listeners.add(fn);
    }

    removeEventListener(type, fn) {
      if (type === 'message') this.listeners.delete(fn);
    }

    close() {
      this.closed = true;
      hub.get(this.name).delete(this);
    }
  }
  return { BroadcastChannel: FakeBroadcastChannel, log };
}

/** A recorder for state changes. */
export function recordStates(client) {
  const states = [];
  client.onStateChange((state, info) => states.push({ state, info }));
  return states;
}

/** A domain event as the sidecar sends it. */
export function domainEvent(id, overrides = {}) {
  return {
    id: String(id),
    type: 'card.updated',
    family: 'cards',
    topics: ['board:1'],
    ts: '2024-01-01T00:00:00Z',
    origin: { client: null, mutation: null },
    data: { id: 7, title: 'x' },
    invalidate: [['cards', 7], ['board', 1]],
    ...overrides,
  };
}
