#!/usr/bin/env node
// examples/legacy-app/server.js: the bundled "legacy app".
//
// A small web app with no dependencies (Node 20, built-in modules only) that browsers POLL. It
// has the flavours of the five event systems in the seed plan: sessions
// (GlobalSessionProvider), tracking (SessionTracker), cards (React Query refetching), ui
// (button tracking) and conversations (conversation bridge). sse-sidecar proxies to it in
// the demo and in the integration tests, so what it does is exact and documented in
// README.md next to this file.
//
// Usage: node examples/legacy-app/server.js [--port N] [--host 127.0.0.1] [--quiet]
//   --port 0 picks a free port. The FIRST line on stdout is exactly
//   `listening on http://HOST:PORT` (tests read it). SIGTERM/SIGINT exit with code 0.
//
// Everything lives in memory and the seed is the same on every start. No request reads or
// writes the disk: the static files in public/ are loaded once at startup.

'use strict';

const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { URL } = require('node:url');

// ---------------------------------------------------------------------------------------
// Limits. Every collection is bounded so that a load test cannot exhaust the memory.
// ---------------------------------------------------------------------------------------
const LIMITS = Object.freeze({
  bodyBytes: 1024 * 1024, // largest request body accepted (413 above)
  boards: 1_000, // boards kept (409 beyond)
  sessions: 10_000, // open sessions kept (the oldest is dropped beyond this)
  activity: 50, // activity records kept and returned
  cardsPerBoard: 5_000, // creating a card on a full board answers 409
  messagesPerConversation: 500, // the oldest message is dropped beyond this
  distinctButtons: 1_000, // further button names count under "(other)"
  titleChars: 500,
  textChars: 10_000,
  pageChars: 500,
  buttonChars: 64,
  authorChars: 64,
  delayMs: 30_000, // largest x-legacy-delay-ms / ?delay_ms accepted
});

const COLUMNS = Object.freeze(['todo', 'doing', 'done']);
// User names: they go into a cookie and into topic names, so keep them plain.
const USER_RE = /^[A-Za-z0-9_.-]{1,64}$/;
// The seed is deterministic: seeded records carry timestamps from this fixed instant.
const SEED_TIME = Date.UTC(2025, 7, 20, 9, 0, 0);

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/** Builds the seeded, in-memory data. Called at startup and by POST /__reset. */
function seedData() {
  const data = {
    counters: { session: 0, card: 0, message: 0, click: 0 },
    users: ['alice', 'bob', 'carol'],
    /** @type {Map<string, {id:string,name:string,members:string[],public:boolean,version:number,cards:Map<string,any>}>} */
    boards: new Map(),
    /** every card by id: card id -> card (the same objects as in board.cards) */
    cards: new Map(),
    /** session id -> {id, user, started_at} */
    sessions: new Map(),
    /** the last LIMITS.activity records, oldest first */
    activity: [],
    /** button -> count */
    clicks: new Map(),
    clicksTotal: 0,
    /** conversation id -> {id, messages: [...]} */
    conversations: new Map(),
  };

  const board = (id, name, members, isPublic) =>
    data.boards.set(id, { id, name, members, public: isPublic, version: 1, cards: new Map() });
  board('1', 'Product roadmap', ['alice', 'bob'], false);
  board('2', 'Team lobby', ['alice', 'bob', 'carol'], true);

  const card = (boardId, title, column) => {
    const c = {
      id: `c${++data.counters.card}`,
      board_id: boardId,
      title,
      column,
      updated_at: SEED_TIME,
      version: 1,
    };
    data.boards.get(boardId).cards.set(c.id, c);
    data.cards.set(c.id, c);
  };
  card('1', 'Write the rollout plan', 'done');
  card('1', 'Put the sidecar in front of staging', 'doing');
  card('1', 'Turn off polling for cards', 'todo');
  card('2', 'Welcome to the team lobby', 'todo');
  card('2', 'Lunch on Friday?', 'doing');

  const conversation = (id, messages) => {
    const conv = { id, messages: [] };
    messages.forEach(([author, text], i) => {
      conv.messages.push({
        id: `m${++data.counters.message}`,
        conversation_id: id,
        author,
        text,
        at: SEED_TIME + (i + 1) * 60_000,
      });
    });
    data.conversations.set(id, conv);
  };
  conversation('general', [
    ['alice', 'Welcome to #general 👋'],
    ['bob', 'Board 1 is ready for review.\nPlease take a look before Friday.'],
  ]);
  conversation('support', [
    ['carol', 'How do I get access to board 1?'],
    ['alice', 'Ask bob, he manages the members.'],
  ]);
  return data;
}

function boardJson(b) {
  return { id: b.id, name: b.name, members: b.members.slice(), public: b.public };
}

/** A board is visible to its members; a public board is visible to everyone, anonymous too. */
function canSee(board, user) {
  return board.public || (user !== null && board.members.includes(user));
}

// ---------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message, extra) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}
const badRequest = (msg) => new HttpError(400, msg);
const notFound = (msg) => new HttpError(404, msg);

/** A handler's answer: status, JSON body (or null for no body), extra headers. */
const reply = (status, body, headers) => ({ status, body, headers });

function sendJson(res, status, body, headers) {
  const noBody = status === 204 || status === 304 || body === null || body === undefined;
  const payload = noBody ? '' : JSON.stringify(body);
  // Always revalidate, never share: answers may be stored by the browser (so a sidecar may
  // shield the polled ones with its own validators; it never shields a no-store answer).
  const h = { 'cache-control': 'no-cache, private', ...headers };
  if (!noBody) {
    h['content-type'] = 'application/json';
    h['content-length'] = Buffer.byteLength(payload);
  }
  res.writeHead(status, h);
  res.end(payload);
}

/** The `user` cookie, or null (anonymous) when absent or not a plain name. */
function cookieUser(req) {
  const header = req.headers.cookie;
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== 'user') continue;
    let value = part.slice(eq + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      return null;
    }
    return USER_RE.test(value) ? value : null;
  }
  return null;
}

/**
 * Reads the whole request body (chunked or not) and parses it as a JSON object.
 * 413 above LIMITS.bodyBytes, 400 when it is empty, not JSON, or not an object.
 */
function readJsonObject(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk) => {
      if (failed) return;
      size += chunk.length;
      if (size > LIMITS.bodyBytes) {
        failed = true;
        chunks.length = 0;
        reject(new HttpError(413, `request body larger than ${LIMITS.bodyBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return reject(badRequest('request body must be a JSON object'));
      let value;
      try {
        value = JSON.parse(text);
      } catch (e) {
        return reject(badRequest(`invalid JSON: ${e.message}`));
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        return reject(badRequest('request body must be a JSON object'));
      }
      resolve(value);
    });
    // The client went away mid-body: nobody reads the answer, and it is not a server error.
    req.on('error', () => {
      if (!failed) reject(badRequest('request body aborted'));
      failed = true;
    });
  });
}

// Field validation: each returns the value or throws a 400.
function requireString(obj, field, maxChars, { allowBlank = false } = {}) {
  const v = obj[field];
  if (typeof v !== 'string') throw badRequest(`${field} is required and must be a string`);
  if (!allowBlank && v.trim() === '') throw badRequest(`${field} must not be empty`);
  if (v.length > maxChars) throw badRequest(`${field} is longer than ${maxChars} characters`);
  return v;
}
/**
 * A card title a rename may set: 1–80 characters, no `<` or `>`. Anything else is refused
 * with 422 (the request was well-formed; the value breaks a business rule), which the demo
 * uses to show a rolled-back optimistic rename. Creating a card keeps the older, looser rule
 * (up to `LIMITS.titleChars`), as legacy apps do.
 */
const CARD_TITLE_MAX = 80;
function requireCardTitle(obj) {
  const title = requireString(obj, 'title', LIMITS.titleChars);
  if (title.length > CARD_TITLE_MAX) {
    throw new HttpError(422, `title is longer than ${CARD_TITLE_MAX} characters (${title.length}): shorten it`);
  }
  if (/[<>]/.test(title)) throw new HttpError(422, 'title must not contain < or >');
  return title;
}
function optionalString(obj, field, maxChars) {
  if (obj[field] === undefined || obj[field] === null) return null;
  return requireString(obj, field, maxChars);
}
function requireColumn(obj) {
  const v = obj.column;
  if (!COLUMNS.includes(v)) throw badRequest(`column must be one of ${COLUMNS.join(', ')}`);
  return v;
}
/** Optional optimistic concurrency: when the body carries `version`, it must match. */
function checkVersion(obj, card) {
  if (obj.version === undefined) return;
  if (!Number.isInteger(obj.version)) throw badRequest('version must be an integer');
  if (obj.version !== card.version) {
    throw new HttpError(409, 'version conflict', { current: { ...card } });
  }
}

function parseDelay(value) {
  if (value === undefined || value === null || value === '') return 0;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > LIMITS.delayMs) {
    throw badRequest(`delay must be an integer between 0 and ${LIMITS.delayMs} ms`);
  }
  return n;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

/** Compiles `/api/boards/{board}/cards` into a matcher; the route key is `METHOD pattern`. */
function route(method, pattern, handler) {
  const names = [];
  const source = pattern
    .split('/')
    .map((seg) => {
      const m = /^\{(\w+)\}$/.exec(seg);
      if (m) {
        names.push(m[1]);
        return '([^/]+)';
      }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { method, pattern, key: `${method} ${pattern}`, re: new RegExp(`^${source}$`), names, handler };
}

/** The route table. Each handler gets ctx = {app, req, params, query, user, json()}. */
function buildRoutes() {
  const now = () => Date.now();

  return [
    // --- users (for the demo's picker) -------------------------------------------------
    route('GET', '/api/me', ({ user }) => {
      if (user === null) throw new HttpError(401, 'not signed in');
      return reply(200, { user });
    }),
    route('GET', '/api/users', ({ app }) => reply(200, { users: app.data.users.slice() })),

    // --- family "sessions" (GlobalSessionProvider) -------------------------------------
    route('POST', '/api/sessions', async ({ app, json }) => {
      const body = await json();
      const user = body.user;
      if (typeof user !== 'string' || !USER_RE.test(user)) {
        throw badRequest('user is required: 1-64 characters among A-Z a-z 0-9 _ . -');
      }
      const d = app.data;
      const session = { id: `s${++d.counters.session}`, user, started_at: now() };
      d.sessions.set(session.id, session);
      if (d.sessions.size > LIMITS.sessions) d.sessions.delete(d.sessions.keys().next().value);
      return reply(201, session, { 'set-cookie': `user=${user}; Path=/; SameSite=Lax` });
    }),
    route('DELETE', '/api/sessions/{id}', ({ app, params }) => {
      const session = app.data.sessions.get(params.id);
      if (!session) throw notFound('unknown session');
      app.data.sessions.delete(params.id);
      return reply(200, { id: session.id, user: session.user, ended_at: now() });
    }),
    route('GET', '/api/sessions', ({ app }) =>
      reply(200, { sessions: [...app.data.sessions.values()] }),
    ),

    // --- family "tracking" (SessionTracker) --------------------------------------------
    route('PUT', '/api/sessions/{id}/activity', async ({ app, params, json }) => {
      const session = app.data.sessions.get(params.id);
      if (!session) throw notFound('unknown session');
      const body = await json();
      const page = requireString(body, 'page', LIMITS.pageChars);
      const record = { session_id: session.id, user: session.user, page, at: now() };
      const list = app.data.activity;
      list.push(record);
      if (list.length > LIMITS.activity) list.splice(0, list.length - LIMITS.activity);
      return reply(200, record);
    }),
    route('GET', '/api/activity', ({ app }) => reply(200, { activity: app.data.activity.slice() })),

    // --- family "cards" (React Query refetching) ---------------------------------------
    route('GET', '/api/boards', ({ app, user }) =>
      reply(200, {
        boards: [...app.data.boards.values()].filter((b) => canSee(b, user)).map(boardJson),
      }),
    ),
    route('GET', '/api/boards/{board}', ({ app, params, user }) => {
      const board = app.data.boards.get(params.board);
      if (!board) throw notFound('unknown board');
      if (!canSee(board, user)) throw new HttpError(403, 'forbidden');
      return reply(200, boardJson(board));
    }),
    route('POST', '/api/boards', async ({ app, user, json }) => {
      const body = await json();
      const name = requireString(body, 'name', LIMITS.titleChars);
      const isPublic = body.public === undefined ? true : body.public === true;
      if (app.data.boards.size >= LIMITS.boards) {
        throw new HttpError(409, `too many boards (${LIMITS.boards})`);
      }
      const id = String(app.data.boards.size + 1);
      const members = user === null ? [] : [user];
      app.data.boards.set(id, { id, name, members, public: isPublic, version: 1, cards: new Map() });
      return reply(201, boardJson(app.data.boards.get(id)));
    }),
    route('PUT', '/api/boards/{board}/members', async ({ app, params, user, json }) => {
      const board = app.data.boards.get(params.board);
      if (!board) throw notFound('unknown board');
      if (!canSee(board, user)) throw new HttpError(403, 'forbidden');
      const body = await json();
      if (!Array.isArray(body.members) || body.members.length > 100 || !body.members.every((m) => typeof m === 'string' && USER_RE.test(m))) {
        throw new HttpError(400, 'members must be a list of up to 100 user names');
      }
      board.members = [...new Set(body.members)];
      return reply(200, boardJson(board));
    }),
    route('GET', '/api/boards/{board}/cards', ({ app, params }) => {
      const board = app.data.boards.get(params.board);
      if (!board) throw notFound('unknown board');
      return reply(200, { board_id: board.id, cards: [...board.cards.values()], version: board.version });
    }),
    route('POST', '/api/boards/{board}/cards', async ({ app, params, json }) => {
      const board = app.data.boards.get(params.board);
      if (!board) throw notFound('unknown board');
      const body = await json();
      const title = requireString(body, 'title', LIMITS.titleChars);
      const column = body.column === undefined ? 'todo' : requireColumn(body);
      if (board.cards.size >= LIMITS.cardsPerBoard) {
        throw new HttpError(409, `board is full (${LIMITS.cardsPerBoard} cards)`);
      }
      const d = app.data;
      const card = { id: `c${++d.counters.card}`, board_id: board.id, title, column, updated_at: now(), version: 1 };
      board.cards.set(card.id, card);
      d.cards.set(card.id, card);
      board.version += 1;
      return reply(201, card);
    }),
    route('GET', '/api/cards/{id}', ({ app, params }) => {
      const card = app.data.cards.get(params.id);
      if (!card) throw notFound('unknown card');
      return reply(200, card);
    }),
    route('PATCH', '/api/cards/{id}', async ({ app, params, json }) => {
      const card = app.data.cards.get(params.id);
      if (!card) throw notFound('unknown card');
      const body = await json();
      const has = (f) => body[f] !== undefined;
      if (!has('title') && !has('column')) throw badRequest('nothing to update: send title and/or column');
      const title = has('title') ? requireCardTitle(body) : card.title;
      const column = has('column') ? requireColumn(body) : card.column;
      checkVersion(body, card);
      return reply(200, updateCard(app, card, title, column, now()));
    }),
    route('PUT', '/api/cards/{id}', async ({ app, params, json }) => {
      const card = app.data.cards.get(params.id);
      if (!card) throw notFound('unknown card');
      const body = await json();
      const title = requireCardTitle(body);
      const column = body.column === undefined ? 'todo' : requireColumn(body);
      checkVersion(body, card);
      return reply(200, updateCard(app, card, title, column, now()));
    }),
    route('DELETE', '/api/cards/{id}', ({ app, params }) => {
      const card = app.data.cards.get(params.id);
      if (!card) throw notFound('unknown card');
      const board = app.data.boards.get(card.board_id);
      board.cards.delete(card.id);
      app.data.cards.delete(card.id);
      board.version += 1;
      return reply(200, { id: card.id, board_id: card.board_id, deleted: true });
    }),

    // --- family "ui" (button tracking) -------------------------------------------------
    route('POST', '/api/ui/clicks', async ({ app, user, json }) => {
      const body = await json();
      const button = requireString(body, 'button', LIMITS.buttonChars);
      const page = optionalString(body, 'page', LIMITS.pageChars);
      const d = app.data;
      const key = d.clicks.has(button) || d.clicks.size < LIMITS.distinctButtons ? button : '(other)';
      d.clicks.set(key, (d.clicks.get(key) || 0) + 1);
      d.clicksTotal += 1;
      return reply(202, { id: `k${++d.counters.click}`, button, page, user, at: now() });
    }),
    route('GET', '/api/ui/clicks/summary', ({ app }) =>
      reply(200, { counts: Object.fromEntries(app.data.clicks), total: app.data.clicksTotal }),
    ),

    // --- family "conversations" (conversation bridge) -----------------------------------
    route('GET', '/api/conversations', ({ app }) =>
      reply(200, {
        conversations: [...app.data.conversations.values()].map((c) => ({
          id: c.id,
          message_count: c.messages.length,
        })),
      }),
    ),
    route('GET', '/api/conversations/{conv}/messages', ({ app, params }) => {
      const conv = app.data.conversations.get(params.conv);
      if (!conv) throw notFound('unknown conversation');
      return reply(200, { conversation_id: conv.id, messages: conv.messages.slice() });
    }),
    route('POST', '/api/conversations/{conv}/messages', async ({ app, params, user, json }) => {
      const conv = app.data.conversations.get(params.conv);
      if (!conv) throw notFound('unknown conversation');
      const body = await json();
      const text = requireString(body, 'text', LIMITS.textChars);
      const author = optionalString(body, 'author', LIMITS.authorChars) ?? user ?? 'anonymous';
      const message = { id: `m${++app.data.counters.message}`, conversation_id: conv.id, author, text, at: now() };
      conv.messages.push(message);
      if (conv.messages.length > LIMITS.messagesPerConversation) conv.messages.shift();
      return reply(201, message);
    }),

    // --- test / diagnostic endpoints (not counted in /__stats, except /__fail) ----------
    route('GET', '/__stats', ({ app }) => reply(200, app.stats.snapshot())),
    route('POST', '/__stats/reset', ({ app }) => {
      app.stats.reset();
      return reply(200, { reset: true });
    }),
    route('POST', '/__reset', ({ app }) => {
      app.data = seedData();
      app.stats.reset();
      return reply(200, { reset: true });
    }),
    route('*', '/__fail/{status}', async ({ params, query }) => {
      const status = Number(params.status);
      if (!/^\d{3}$/.test(params.status) || status < 200 || status > 599) {
        throw badRequest('status must be a number between 200 and 599');
      }
      await sleep(parseDelay(query.get('delay_ms')));
      return reply(status, { error: 'injected failure', status });
    }),
  ];
}

function updateCard(app, card, title, column, at) {
  card.title = title;
  card.column = column;
  card.updated_at = at;
  card.version += 1;
  app.data.boards.get(card.board_id).version += 1;
  return card;
}

// ---------------------------------------------------------------------------------------
// Statistics (for tests: how many requests, and polls, reached the backend)
// ---------------------------------------------------------------------------------------

class Stats {
  constructor() {
    this.reset();
  }
  reset() {
    this.requests = 0;
    this.polls = 0;
    this.byRoute = new Map();
    this.byStatus = new Map();
  }
  count(routeKey, method, pathname) {
    this.requests += 1;
    this.byRoute.set(routeKey, (this.byRoute.get(routeKey) || 0) + 1);
    if (method === 'GET' && pathname.startsWith('/api/')) this.polls += 1;
  }
  status(code) {
    const key = String(code);
    this.byStatus.set(key, (this.byStatus.get(key) || 0) + 1);
  }
  snapshot() {
    return {
      requests: this.requests,
      by_route: Object.fromEntries(this.byRoute),
      polls: this.polls,
      by_status: Object.fromEntries(this.byStatus),
    };
  }
}

/** Requests to these paths are diagnostics of the diagnostics: never counted. */
const UNCOUNTED = new Set(['/__stats', '/__stats/reset', '/__reset']);

// ---------------------------------------------------------------------------------------
// Static files (public/), loaded once at startup
// ---------------------------------------------------------------------------------------

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** url path -> {body: Buffer, type} for every file under dir; `/` serves index.html. */
function loadStatic(dir) {
  const files = new Map();
  const walk = (abs, urlPrefix) => {
    let entries;
    try {
      entries = fs.readdirSync(abs, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const childAbs = path.join(abs, e.name);
      const childUrl = `${urlPrefix}/${e.name}`;
      if (e.isDirectory()) walk(childAbs, childUrl);
      else if (e.isFile()) {
        const type = CONTENT_TYPES[path.extname(e.name).toLowerCase()] || 'application/octet-stream';
        files.set(childUrl, { body: fs.readFileSync(childAbs), type });
      }
    }
  };
  walk(dir, '');
  if (files.has('/index.html')) files.set('/', files.get('/index.html'));
  return files;
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/**
 * Creates the app and its http.Server (not listening yet).
 * @param {{quiet?: boolean, publicDir?: string}} [options]
 */
function createServer(options = {}) {
  const quiet = !!options.quiet;
  const app = {
    data: seedData(),
    stats: new Stats(),
    routes: buildRoutes(),
    files: loadStatic(options.publicDir || path.join(__dirname, 'public')),
  };

  const server = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    if (!quiet) {
      res.on('close', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const status = res.headersSent ? res.statusCode : '-';
        const aborted = res.writableFinished ? '' : ' (aborted)';
        process.stderr.write(`${req.method} ${req.url} ${status}${aborted} ${ms.toFixed(1)}ms\n`);
      });
    }
    handle(app, req, res).catch((err) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) process.stderr.write(`error: ${req.method} ${req.url}: ${err && err.stack}\n`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const headers = status === 413 ? { connection: 'close' } : undefined;
      sendJson(res, status, { error: status === 500 ? 'internal error' : err.message, ...(err.extra || {}) }, headers);
    });
  });

  // An idle upstream connection must outlive the proxy's pool timeout, or the proxy may
  // reuse a socket the backend is closing at that very moment.
  server.keepAliveTimeout = 75_000;
  server.headersTimeout = 80_000;
  return { server, app };
}

/** Classifies, counts, and answers one request. Throws HttpError for error answers. */
async function handle(app, req, res) {
  let url;
  try {
    url = new URL(req.url, 'http://localhost');
  } catch {
    throw badRequest('bad request target');
  }
  const pathname = url.pathname;
  const method = req.method === 'HEAD' ? 'GET' : req.method;

  // Route: the first pattern matching the path and the method wins.
  let matched = null;
  let pathMatched = false;
  let m = null;
  for (const r of app.routes) {
    m = r.re.exec(pathname);
    if (!m) continue;
    pathMatched = true;
    if (r.method === '*' || r.method === method) {
      matched = r;
      break;
    }
  }
  const staticFile = !matched && method === 'GET' ? app.files.get(pathname) : undefined;
  // Stats key: the method as sent and the route pattern, never the concrete path.
  const routeKey = matched
    ? `${req.method} ${matched.pattern}`
    : staticFile
      ? `${req.method} (static)`
      : `${req.method} (unmatched)`;

  if (!UNCOUNTED.has(pathname)) {
    app.stats.count(routeKey, req.method, pathname);
    res.on('finish', () => app.stats.status(res.statusCode));
  }

  // Test hooks, on any request: slow it down, or answer an injected status instead.
  const delay = parseDelay(req.headers['x-legacy-delay-ms']);
  if (delay > 0) await sleep(delay);
  const failHeader = req.headers['x-legacy-fail-status'];
  if (failHeader !== undefined) {
    const status = Number(failHeader);
    if (!/^\d{3}$/.test(failHeader) || status < 200 || status > 599) {
      throw badRequest('x-legacy-fail-status must be a number between 200 and 599');
    }
    sendJson(res, status, { error: 'injected failure', status });
    return;
  }

  if (staticFile) {
    res.writeHead(200, {
      'content-type': staticFile.type,
      'content-length': staticFile.body.length,
      'cache-control': 'no-cache',
    });
    res.end(staticFile.body);
    return;
  }
  if (!matched) {
    if (pathMatched) {
      const allow = app.routes.filter((r) => r.re.test(pathname)).map((r) => r.method);
      if (allow.includes('GET')) allow.push('HEAD');
      sendJson(res, 405, { error: 'method not allowed' }, { allow: allow.join(', ') });
      return;
    }
    throw notFound('not found');
  }

  const params = {};
  for (let i = 0; i < matched.names.length; i++) {
    try {
      params[matched.names[i]] = decodeURIComponent(m[i + 1]);
    } catch {
      throw badRequest('bad percent-encoding in path');
    }
  }
  const ctx = {
    app,
    req,
    params,
    query: url.searchParams,
    user: cookieUser(req),
    json: () => readJsonObject(req),
  };
  const { status, body, headers } = await matched.handler(ctx);
  sendJson(res, status, body, headers);
}

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

const USAGE = 'usage: node server.js [--port N] [--host 127.0.0.1] [--quiet]\n';

function parseArgs(argv) {
  const opts = { port: 3000, host: process.env.HOST || '127.0.0.1', quiet: false };
  const parsePort = (v, what) => {
    if (!/^\d+$/.test(v) || Number(v) > 65535) throw new Error(`${what}: not a port number: ${v}`);
    return Number(v);
  };
  if (process.env.PORT) opts.port = parsePort(process.env.PORT, 'PORT');
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => {
      const v = inline !== undefined ? inline : argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--port':
        opts.port = parsePort(value(), '--port');
        break;
      case '--host':
        opts.host = value();
        break;
      case '--quiet':
        opts.quiet = true;
        break;
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n${USAGE}`);
    process.exit(2);
  }
  const { server } = createServer({ quiet: opts.quiet });

  server.on('error', (e) => {
    process.stderr.write(`cannot listen on ${opts.host}:${opts.port}: ${e.message}\n`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    process.stdout.write(`listening on http://${host}:${port}\n`);
  });

  // Clean exit: stop accepting, close idle keep-alive sockets, give in-flight requests a
  // moment, then close the rest and exit 0.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 1000).unref();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) main();

module.exports = { createServer, seedData, LIMITS };
