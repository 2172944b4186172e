// app.js: the legacy app's demo page. It uses no framework and needs no build step.
//
// The legacy behaviour: each of the five lists (cards, messages, who's online, recent
// activity, click counts) has its own timer and POLLS its GET endpoint every 3 s.
//
// The upgrade: when sse-sidecar is in front of the app, `/api/sse/client.js` exists. The page
// imports it, subscribes to its topics, and while the client's state is 'live' it stops
// every polling timer and refetches a list only when an event says that list changed. In
// any other state ('connecting', 'recovering', 'polling', 'stopped') polling runs. When the
// sidecar keeps a family on polling while live (client.isLive(family) is false), that
// family's list keeps its timer. So does a list whose topic the sidecar denied (board 1 for
// a user who is not one of its members: client.info.denied) or revoked on the open stream
// (control {revoked}): no event will say it changed. Without the sidecar the import fails
// (one 404 in the network log) and the page just polls.
//
// Collaboration (with the sidecar): renaming and moving a card are optimistic. The page shows
// the change at once (an overlay on the last fetched list, kept across refetches), sends it
// through client.mutate, and drops the overlay when the sidecar's receipt (or the HTTP answer)
// settles it; a refusal (the app answers 422 for a bad title) rolls it back with the reason.
// When the rename input opens, the page captures the version of the card it shows
// (client.baseFor(['card:<id>', 'board:<b>'])) and sends it as x-sse-base: if another user
// changed the card meanwhile, the sidecar answers 409 (conflicts: reject) and the page rolls
// back and says "Another user changed this card while you were editing".
//
// Who's online (with the sidecar): while the client is live and the sidecar sends the presence
// of the board topic (`board:1`: who holds a stream on it, as the app's /api/me names them), the
// list is drawn from client.presence() and redrawn by client.onPresence(): no /api/sessions
// request at all, no timer, and the sign-in/out events no longer refetch it. Without that
// presence (not live, no sidecar, the topic denied or revoked) it is the fetched /api/sessions
// list as before. Its first load waits (briefly) for the client to leave 'connecting', so a
// page whose presence arrives does not fetch the sessions list for nothing.
//
// Query parameters (for demos and tests): ?poll_ms=N changes the polling period (>= 200).

const query = new URLSearchParams(location.search);
const POLL_MS = (() => {
  const n = Number(query.get('poll_ms'));
  return Number.isFinite(n) && n >= 200 ? n : 3000;
})();

const BOARD_ID = '1';
const CONVERSATION_ID = 'general';
const PAGE = `/boards/${BOARD_ID}`; // what the activity tracker reports as "the page"
/** The presence topic whose members "Who's online" shows (a presence topic in conf/demo.yaml). */
const PRESENCE_TOPIC = `board:${BOARD_ID}`;
/** How long the first load of "Who's online" waits for the client to leave 'connecting'. */
const ONLINE_WAIT_MS = 2000;
const TOPICS = [`board:${BOARD_ID}`, `conversation:${CONVERSATION_ID}`, 'presence', 'activity', 'ui'];
const COLUMNS = [
  ['todo', 'To do'],
  ['doing', 'Doing'],
  ['done', 'Done'],
];
const SESSION_KEY = 'legacy-app-session'; // sessionStorage: {id, user} of this tab's session

const $ = (id) => document.getElementById(id);

/** Builds an element. Text always goes through text nodes, never innerHTML. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'value') node.value = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

// ---------------------------------------------------------------------------------------
// Page state
// ---------------------------------------------------------------------------------------

const me = { user: null, sessionId: null };
/** The sse-sidecar browser client, when the sidecar is there. */
let client = null;
/** The client's state, or 'no-sidecar' when the import failed. */
let connection = 'connecting';
let pollCount = 0; // GET requests sent by the polling timers (shown in the footer)

// ---------------------------------------------------------------------------------------
// Talking to the backend
// ---------------------------------------------------------------------------------------

/** The list whose failed refresh put the current error in the footer, if any. */
let errorFromList = null;

/** Shows (or clears, with null) the single error line in the footer. */
function showError(message) {
  errorFromList = null;
  const node = $('error');
  node.textContent = message || '';
  node.hidden = !message;
}

/**
 * Sends a mutation. With the sidecar it goes through client.fetch, which adds the
 * X-Client-Id / X-Mutation-Id headers so the resulting event names its origin.
 */
async function send(method, url, body) {
  const init = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await (client ? client.fetch(url, init) : fetch(url, init));
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${url}: ${(data && data.error) || `HTTP ${res.status}`}`);
  return data;
}

async function getJson(url) {
  const res = await fetch(url, { headers: { accept: 'application/json' } });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(`GET ${url}: ${(data && data.error) || `HTTP ${res.status}`}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

/** Runs a user action; shows its error instead of throwing (no console errors). */
async function attempt(action) {
  try {
    await action();
    showError(null);
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------------------------------
// The five polled lists
// ---------------------------------------------------------------------------------------

/**
 * name -> {family, topic, url, render, timer, inFlight, again, lastText, lastData}. A list is
 * fetched at most once at a time; a refresh asked for while one is in flight runs once
 * afterwards. `family` is the sidecar event family whose events change the list, `topic` the
 * subscribed topic they arrive on.
 */
const lists = {
  cards: { family: 'cards', topic: `board:${BOARD_ID}`, url: `/api/boards/${BOARD_ID}/cards`, render: renderCards },
  messages: { family: 'conversations', topic: `conversation:${CONVERSATION_ID}`, url: `/api/conversations/${CONVERSATION_ID}/messages`, render: renderMessages },
  online: { family: 'sessions', topic: 'presence', url: '/api/sessions', render: renderOnline },
  activity: { family: 'tracking', topic: 'activity', url: '/api/activity', render: renderActivity },
  clicks: { family: 'ui', topic: 'ui', url: '/api/ui/clicks/summary', render: renderClicks },
};
for (const list of Object.values(lists)) {
  Object.assign(list, { timer: null, inFlight: false, again: false, lastText: null, lastData: null });
}

/** Fetches one list and re-renders it when its JSON changed. `why` is 'poll' for timers. */
async function refresh(name, why = 'refresh') {
  const list = lists[name];
  // Drawn from the stream's presence: there is nothing to fetch.
  if (list === lists.online && onlinePresence()) {
    renderOnlinePresence(onlinePresence());
    return;
  }
  if (list.inFlight) {
    list.again = true;
    return;
  }
  list.inFlight = true;
  if (why === 'poll') $('poll-count').textContent = String(++pollCount);
  try {
    const started = list === lists.cards ? ++cardFetches : 0;
    const res = await fetch(list.url, { headers: { accept: 'application/json' } });
    const text = await res.text();
    if (!res.ok) throw new Error(`GET ${list.url}: HTTP ${res.status}`);
    noteVersions(list, res, text);
    const dropped = list === lists.cards && dropSettledOverlays(started);
    if (text !== list.lastText || dropped) {
      list.lastText = text;
      list.lastData = JSON.parse(text);
      list.render(list.lastData);
    }
    // A refresh failure (backend or sidecar briefly down) clears once that list loads again.
    if (errorFromList === name) showError(null);
  } catch (e) {
    showError(e.message);
    errorFromList = name;
  } finally {
    list.inFlight = false;
    if (list.again) {
      list.again = false;
      refresh(name);
    }
  }
}

/**
 * The sidecar's x-sse-version on a polled answer is the version of the state it shows: keep
 * it for the list's topic (and, for the cards list, each card's topic), so an edit started
 * now can say which version it edits.
 */
function noteVersions(list, res, text) {
  const version = res.headers.get('x-sse-version');
  if (!client || typeof client.noteVersion !== 'function' || !version) return;
  client.noteVersion(list.topic, version);
  if (list !== lists.cards) return;
  try {
    for (const card of JSON.parse(text).cards || []) client.noteVersion(`card:${card.id}`, version);
  } catch {
    /* not JSON: nothing to note */
  }
}

function refreshAll(why) {
  return Promise.all(Object.keys(lists).map((name) => refresh(name, why)));
}

/**
 * Is this list kept fresh by the event stream? Only while the client is 'live'; not when
 * the sidecar asks for the list's family to be polled even while live (client.isLive(family)
 * is false); and not when the sidecar denied or revoked the list's topic
 * (client.info.denied), since no event for it will come. "Who's online" is live whenever
 * the stream's presence draws it, whatever its family.
 */
function isListLive(list) {
  if (!client || connection !== 'live') return false;
  if (list === lists.online && onlinePresence()) return true; // the stream's presence draws it
  const denied = (client.info && client.info.denied) || [];
  if (denied.includes(list.topic)) return false;
  return typeof client.isLive === 'function' ? client.isLive(list.family) : true;
}

/**
 * Starts or stops the 3 s timer of each list (the legacy polling) to match the connection.
 * A list whose timer starts again is refetched at once: it may have missed changes.
 */
function updatePolling() {
  for (const [name, list] of Object.entries(lists)) {
    const poll = !isListLive(list);
    if (poll && !list.timer) {
      list.timer = setInterval(() => refresh(name, 'poll'), POLL_MS);
      if (document.body.dataset.ready === 'true') refresh(name, 'catch-up');
    }
    if (!poll && list.timer) {
      clearInterval(list.timer);
      list.timer = null;
    }
  }
  const polled = Object.keys(lists).filter((name) => lists[name].timer !== null);
  $('mode-note').textContent =
    polled.length === 0
      ? 'Live: updates arrive as Server-Sent Events, polling is paused.'
      : polled.length === Object.keys(lists).length
        ? `Polling every ${POLL_MS / 1000} s.`
        : `Live, but still polling ${polled.join(', ')} every ${POLL_MS / 1000} s.`;
}
const isPolling = () => Object.values(lists).some((l) => l.timer !== null);

// Several events in a row (a batch) cause one refetch per affected list.
const pending = new Set();
let flushTimer = null;
function scheduleRefresh(names) {
  for (const n of names) pending.add(n);
  if (flushTimer === null) {
    flushTimer = setTimeout(() => {
      flushTimer = null;
      const names = [...pending];
      pending.clear();
      for (const n of names) refresh(n, 'event');
    }, 25);
  }
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

let editingCardId = null; // the card whose title is being edited: kept across re-renders
/**
 * card id -> {patch: {title?, column?}, settledAt}: optimistic changes drawn over the fetched
 * list. Once settled (`settledAt`: the fetch counter then), an overlay stays until a fetch
 * started after that has loaded, so the page never flickers back to the old value.
 */
const overlays = new Map();
let cardFetches = 0;

/** Drops the settled overlays that a fetch numbered `started` has made obsolete. */
function dropSettledOverlays(started) {
  let dropped = false;
  for (const [id, o] of overlays) {
    if (o.settledAt != null && started > o.settledAt) {
      overlays.delete(id);
      dropped = true;
    }
  }
  return dropped;
}

function renderCards(data) {
  const container = $('cards');
  const cards = (data.cards || []).map((c) => (overlays.has(c.id) ? { ...c, ...overlays.get(c.id).patch } : c));
  if (editingCardId && !cards.some((c) => c.id === editingCardId)) editingCardId = null;
  const editingNode = editingCardId
    ? container.querySelector(`[data-card-id="${CSS.escape(editingCardId)}"]`)
    : null;
  container.replaceChildren(
    ...COLUMNS.map(([column, label]) => {
      const inColumn = cards.filter((c) => c.column === column);
      return h(
        'div',
        { class: 'column', 'data-column': column },
        h('h3', {}, `${label} · ${inColumn.length}`),
        h('ul', {}, inColumn.map((c) => (c.id === editingCardId && editingNode ? editingNode : cardNode(c)))),
      );
    }),
  );
}

function cardNode(card) {
  const move = h(
    'select',
    {
      'data-testid': 'card-move',
      'aria-label': `Move "${card.title}"`,
      onchange: () => attempt(() => changeCard(card, { column: move.value })),
    },
    COLUMNS.map(([value, label]) => h('option', { value, selected: value === card.column }, label)),
  );
  return h(
    'li',
    { class: 'card', 'data-testid': 'card', 'data-card-id': card.id, 'data-column': card.column },
    h('span', { class: 'title', 'data-testid': 'card-title' }, card.title),
    h(
      'div',
      { class: 'actions' },
      move,
      h('button', { type: 'button', class: 'secondary small', 'data-testid': 'card-rename', onclick: () => startRename(card) }, 'Rename'),
      h(
        'button',
        {
          type: 'button',
          class: 'danger small',
          'data-testid': 'card-delete',
          onclick: () => attempt(async () => {
            await send('DELETE', `/api/cards/${encodeURIComponent(card.id)}`);
            await refresh('cards');
          }),
        },
        'Delete',
      ),
    ),
  );
}

/**
 * Changes a card (PATCH {title} and/or {column}). With the sidecar: optimistic through
 * client.mutate (`base`: the version the edit started from, or null), rolled back on a
 * refusal or a conflict; without it: the legacy request, then a refetch.
 */
async function changeCard(card, patch, base = null) {
  const url = `/api/cards/${encodeURIComponent(card.id)}`;
  if (!client || typeof client.mutate !== 'function') {
    await send('PATCH', url, patch);
    await refresh('cards');
    return;
  }
  const redraw = () => lists.cards.lastData && renderCards(lists.cards.lastData);
  const request = {
    url,
    method: 'PATCH',
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: JSON.stringify(patch),
  };
  try {
    await client.mutate(request, {
      base,
      optimistic: () => {
        const before = overlays.get(card.id);
        overlays.set(card.id, { patch: { ...(before ? before.patch : {}), ...patch }, settledAt: null });
        redraw();
      },
      rollback: () => {
        overlays.delete(card.id);
        redraw();
      },
    });
  } catch (err) {
    throw new Error(await mutationMessage(err));
  }
  // Settled: the next list fetch shows the server's state and drops the overlay.
  const overlay = overlays.get(card.id);
  if (overlay) overlay.settledAt = cardFetches;
  await refresh('cards');
}

/** What the user reads when a card change was refused or conflicted. */
async function mutationMessage(err) {
  if (err && err.name === 'SseConflictError') {
    refresh('cards');
    return 'Another user changed this card while you were editing: your change was undone.';
  }
  let detail = null;
  if (err && err.response) {
    const data = await err.response.clone().json().catch(() => null);
    detail = data && data.error;
  }
  if (!detail && err && err.receipt) detail = `the sidecar could not publish it (${err.reason})`;
  return `Not saved: ${detail || (err && err.message) || 'unknown error'}`;
}

/** Swaps a card's title for an input; Enter or Save sends PATCH {title}, Escape cancels. */
function startRename(card) {
  const node = $('cards').querySelector(`[data-card-id="${CSS.escape(card.id)}"]`);
  if (!node) return;
  editingCardId = card.id;
  // The version of the card as the user sees it now: what the rename edits.
  const base = client && typeof client.baseFor === 'function'
    ? client.baseFor([`card:${card.id}`, `board:${BOARD_ID}`])
    : null;
  const finish = () => {
    editingCardId = null;
    if (lists.cards.lastData) renderCards(lists.cards.lastData);
  };
  const save = () => attempt(async () => {
    const title = input.value;
    finish();
    if (title.trim() && title !== card.title) await changeCard(card, { title }, base);
    else await refresh('cards');
  });
  const input = h('input', {
    class: 'rename',
    'data-testid': 'card-rename-input',
    value: card.title,
    maxlength: 500,
    'aria-label': 'New title',
    onkeydown: (e) => {
      if (e.key === 'Enter') save();
      if (e.key === 'Escape') finish();
    },
  });
  node.replaceChildren(
    input,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', class: 'small', 'data-testid': 'card-rename-save', onclick: save }, 'Save'),
      h('button', { type: 'button', class: 'secondary small', onclick: finish }, 'Cancel'),
    ),
  );
  input.focus();
  input.select();
}

function renderMessages(data) {
  const list = $('messages');
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(
    ...(data.messages || []).map((m) =>
      h(
        'li',
        { 'data-testid': 'message', 'data-message-id': m.id },
        h('div', { class: 'meta' }, `${m.author} · ${time(m.at)}`),
        h('div', { class: 'text', 'data-testid': 'message-text' }, m.text),
      ),
    ),
  );
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

/**
 * "Who's online" from a fetched /api/sessions answer: one line per user, however many tabs
 * (sessions) they have open. Ignored while the stream's presence draws the list (an answer
 * that was in flight when presence arrived).
 */
function renderOnline(data) {
  const presence = onlinePresence();
  if (presence) {
    renderOnlinePresence(presence);
    return;
  }
  const perUser = new Map();
  for (const s of data.sessions || []) perUser.set(s.user, (perUser.get(s.user) || 0) + 1);
  renderOnlineRows([...perUser].map(([user, n]) => ({ user, name: user, tabs: n })));
}

/**
 * "Who's online" from the stream's presence: one line per member, "· N tabs" for a member
 * with several streams open. The list no longer shows a fetched answer: forgetting the last
 * one makes the next fetch (after a fall back) redraw it even when it did not change.
 */
function renderOnlinePresence(presence) {
  lists.online.lastText = null;
  lists.online.lastData = null;
  const rows = presence.members.map((m) => ({
    user: m.id,
    name: typeof m.fields?.name === 'string' && m.fields.name ? m.fields.name : m.id,
    tabs: m.connections,
  }));
  renderOnlineRows(rows);
}

/** Draws the rows {user, name, tabs} of "Who's online" ("nobody" when there are none). */
function renderOnlineRows(rows) {
  const items = rows.map(({ user, name, tabs }) =>
    h(
      'li',
      { 'data-testid': 'online-user', 'data-user': user },
      h('span', { class: 'online-dot' }),
      name,
      user === me.user ? h('span', { class: 'muted' }, ' (you)') : null,
      tabs > 1 ? h('span', { class: 'muted' }, ` · ${tabs} tabs`) : null,
    ),
  );
  $('online').replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'nobody')]));
}

function renderActivity(data) {
  const items = (data.activity || [])
    .slice()
    .reverse() // newest first
    .map((a) => h('li', { 'data-testid': 'activity-item' }, `${a.user} is on ${a.page} `, h('span', { class: 'muted' }, time(a.at))));
  $('activity').replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, 'no activity yet')]));
}

function renderClicks(data) {
  const entries = Object.entries(data.counts || {});
  $('clicks').replaceChildren(
    ...(entries.length
      ? entries.map(([button, n]) => h('li', { 'data-testid': 'click-count', 'data-button': button }, `${button}: ${n}`))
      : [h('li', { class: 'muted' }, 'no clicks yet')]),
  );
}

// ---------------------------------------------------------------------------------------
// Status badge and the sidecar client
// ---------------------------------------------------------------------------------------

const BADGES = {
  live: ['live', 'badge-live'],
  polling: ['polling', 'badge-polling'],
  stopped: ['polling', 'badge-polling'],
  connecting: ['connecting…', 'badge-connecting'],
  recovering: ['reconnecting…', 'badge-connecting'],
  'no-sidecar': ['polling (no sidecar)', 'badge-polling'],
};

function renderBadge() {
  const [text, cls] = BADGES[connection] || [String(connection), 'badge-connecting'];
  const badge = $('status-badge');
  badge.textContent = text;
  badge.className = `badge ${cls}`;
  badge.dataset.state = connection;
}

/**
 * The client's state changed (or the families it polls while live): 'live' stops the
 * timers, any other state runs them.
 */
function onConnectionState(state) {
  const wasLive = connection === 'live';
  connection = state;
  renderBadge();
  updatePolling();
  // Catch up once: what changed between the last poll and the stream going live.
  if (state === 'live' && !wasLive) refreshAll('catch-up');
}

// Which lists an event touches: from its invalidate keys, its family and its topics.
const FAMILY_LISTS = {
  sessions: ['online'],
  tracking: ['activity'],
  cards: ['cards'],
  ui: ['clicks'],
  conversations: ['messages'],
};
const KEY_LISTS = {
  cards: 'cards', card: 'cards', boards: 'cards', board: 'cards',
  messages: 'messages', message: 'messages', conversations: 'messages', conversation: 'messages',
  sessions: 'online', session: 'online', presence: 'online', online: 'online',
  activity: 'activity', tracking: 'activity',
  ui: 'clicks', clicks: 'clicks', click: 'clicks',
};

function listsForEvent(event) {
  const names = new Set();
  for (const key of event.invalidate || []) {
    const head = Array.isArray(key) ? key[0] : key;
    const name = KEY_LISTS[String(head).toLowerCase()];
    if (name) names.add(name);
  }
  for (const name of FAMILY_LISTS[event.family] || []) names.add(name);
  for (const topic of event.topics || []) {
    const name = KEY_LISTS[String(topic).split(':')[0].toLowerCase()];
    if (name) names.add(name);
  }
  // An event we cannot place: refetch everything rather than miss a change.
  return names.size ? [...names] : Object.keys(lists);
}

function onSseEvent(event) {
  if (!event || event.type === 'heartbeat' || event.type === 'hello' || event.type === 'control') return;
  if (event.type === 'reset') {
    refreshAll('reset');
    return;
  }
  scheduleRefresh(listsForEvent(event));
}

// ---------------------------------------------------------------------------------------
// Who's online from the stream's presence
// ---------------------------------------------------------------------------------------

/**
 * The presence of the board topic while it draws "Who's online": the client is live and the
 * sidecar sent that topic's presence (`null` otherwise: not live, no sidecar, a client
 * without presence, the topic denied, revoked or not a presence topic).
 */
function onlinePresence() {
  if (!client || connection !== 'live' || typeof client.presence !== 'function') return null;
  return client.presence(PRESENCE_TOPIC);
}

/**
 * The board's presence changed, became known or unknown: redraw "Who's online" from it, or
 * give the list back to /api/sessions. Presence gone while the stream stays live (the topic
 * was revoked) refetches the list now; a stream that left live restarts the list's timer,
 * which refetches it (onConnectionState → updatePolling).
 */
function onOnlinePresence() {
  const presence = onlinePresence();
  if (presence) renderOnlinePresence(presence);
  updatePolling();
  if (!presence && client.state === 'live' && lists.online.lastText === null) refresh('online', 'catch-up');
}

/**
 * The first load of "Who's online". With the sidecar, presence may draw it once the stream
 * is live: wait until the client leaves 'connecting' (at most ONLINE_WAIT_MS), then refresh,
 * which fetches /api/sessions only when presence does not draw the list.
 */
async function loadOnline() {
  if (client && connection === 'connecting') {
    await new Promise((resolve) => {
      let off = () => {};
      const done = () => {
        clearTimeout(timer);
        off();
        resolve();
      };
      const timer = setTimeout(done, ONLINE_WAIT_MS);
      off = client.onStateChange((state) => {
        if (state !== 'connecting') done();
      });
    });
  }
  await refresh('online', 'initial');
}

/** Loads the sidecar's client module if the sidecar is there; otherwise keeps polling. */
async function connectSidecar() {
  let mod;
  try {
    mod = await import('/api/sse/client.js');
  } catch {
    connection = 'no-sidecar';
    renderBadge();
    console.info('legacy app: no sse-sidecar in front (no /api/sse/client.js), polling every', POLL_MS, 'ms');
    return;
  }
  try {
    client = mod.createSseClient({ topics: TOPICS });
    client.onStateChange(onConnectionState);
    client.onEvent(onSseEvent);
    client.onReset(() => refreshAll('reset'));
    if (typeof client.onPresence === 'function') client.onPresence(PRESENCE_TOPIC, onOnlinePresence);
    // A topic revoked on the open stream (e.g. this user was taken off board 1): the client
    // moved it to info.denied and stays live, so poll its list again.
    client.onControl((control) => {
      if (!control || !Array.isArray(control.revoked) || !control.revoked.length) return;
      updatePolling();
      if (control.revoked.includes(lists.cards.topic)) checkBoardAccess();
    });
    if (typeof client.state === 'string') onConnectionState(client.state);
  } catch (e) {
    client = null;
    connection = 'no-sidecar';
    renderBadge();
    console.warn('legacy app: the sse client could not start, polling instead:', e);
  }
}

// ---------------------------------------------------------------------------------------
// Sessions, activity tracking, and the forms
// ---------------------------------------------------------------------------------------

function cookieUser() {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === 'user' && rest.length) return decodeURIComponent(rest.join('='));
  }
  return null;
}

function savedSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch {
    return null;
  }
}
function saveSession(session) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ id: session.id, user: session.user }));
  } catch {
    /* storage unavailable: a new session per page load, that is all */
  }
}

/**
 * Makes sure this tab has a session. Reuses the tab's session while the server still
 * knows it; without a `user` cookie the page signs in as alice.
 */
async function ensureSession() {
  const user = cookieUser() || 'alice';
  const saved = savedSession();
  if (saved && saved.user === user && cookieUser() === user) {
    const { sessions } = await getJson('/api/sessions');
    if (sessions.some((s) => s.id === saved.id)) return saved;
  }
  const session = await send('POST', '/api/sessions', { user });
  saveSession(session);
  return session;
}

/**
 * Another user picked: start their session (sets the cookie), end ours, and reload so
 * every request, the event stream included, carries the new identity.
 */
async function switchUser(user) {
  await attempt(async () => {
    const session = await send('POST', '/api/sessions', { user });
    if (me.sessionId) await send('DELETE', `/api/sessions/${encodeURIComponent(me.sessionId)}`).catch(() => {});
    saveSession(session);
    location.reload();
  });
}

/** The SessionTracker flavour: report "I am on this page" (on load and when shown again). */
let lastTracked = 0;
async function trackActivity() {
  if (!me.sessionId || Date.now() - lastTracked < 10_000) return;
  lastTracked = Date.now();
  await attempt(async () => {
    await send('PUT', `/api/sessions/${encodeURIComponent(me.sessionId)}/activity`, { page: PAGE });
    await refresh('activity');
  });
}

async function renderUserPicker() {
  let users = ['alice', 'bob', 'carol'];
  try {
    users = (await getJson('/api/users')).users;
  } catch {
    /* keep the default three */
  }
  if (me.user && !users.includes(me.user)) users = [...users, me.user];
  const picker = $('user-picker');
  picker.replaceChildren(...users.map((u) => h('option', { value: u, selected: u === me.user }, u)));
  picker.addEventListener('change', () => switchUser(picker.value));
}

/**
 * Board 1 is for its members; say so when the current user is not one. (GET /api/boards
 * lists the visible boards; asking GET /api/boards/1 would log a 403 in the console.)
 */
async function checkBoardAccess() {
  const note = $('board-note');
  try {
    const { boards } = await getJson('/api/boards');
    const board = boards.find((b) => b.id === BOARD_ID);
    if (board) {
      $('board-title').textContent = `Board ${board.id}: ${board.name}`;
      note.hidden = true;
    } else {
      note.textContent = `${me.user || 'You'} is not a member of board ${BOARD_ID}: its live updates are not sent to you.`;
      note.hidden = false;
    }
  } catch (e) {
    note.textContent = e.message;
    note.hidden = false;
  }
}

function wireForms() {
  $('card-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('card-title');
    const title = input.value;
    if (!title.trim()) return;
    attempt(async () => {
      await send('POST', `/api/boards/${BOARD_ID}/cards`, { title, column: $('card-column').value });
      input.value = '';
      await refresh('cards');
    });
  });

  const form = $('message-form');
  const text = $('message-text');
  const button = form.querySelector('button');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!text.value.trim() || button.disabled) return;
    button.disabled = true;
    attempt(async () => {
      await send('POST', `/api/conversations/${CONVERSATION_ID}/messages`, {
        author: me.user || undefined,
        text: text.value,
      });
      text.value = '';
      await refresh('messages');
    }).finally(() => {
      button.disabled = false;
    });
  });
  // Enter sends, Shift+Enter is a new line.
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  for (const button of document.querySelectorAll('button.track')) {
    button.addEventListener('click', () =>
      attempt(async () => {
        await send('POST', '/api/ui/clicks', { button: button.dataset.button, page: PAGE });
        await refresh('clicks');
      }),
    );
  }

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') trackActivity();
  });
}

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

async function start() {
  renderBadge();
  wireForms();
  try {
    const session = await ensureSession();
    me.user = session.user;
    me.sessionId = session.id;
  } catch (e) {
    showError(`could not start a session: ${e.message}`);
    me.user = cookieUser();
  }
  // "Who's online" is loaded once the sidecar's presence is known to draw it or not (below).
  const first = Object.keys(lists).filter((name) => name !== 'online');
  await Promise.all([renderUserPicker(), checkBoardAccess(), ...first.map((name) => refresh(name, 'initial'))]);
  updatePolling(); // the legacy behaviour: poll, until the sidecar says 'live'
  await connectSidecar();
  await loadOnline();
  await trackActivity();
  document.body.dataset.ready = 'true';
}

// For tests and the curious: a read-only view of what the page is doing.
window.legacyApp = {
  get connection() { return connection; },
  get polling() { return isPolling(); },
  get pollCount() { return pollCount; },
  get polledLists() { return Object.keys(lists).filter((name) => lists[name].timer !== null); },
  get user() { return me.user; },
  get sessionId() { return me.sessionId; },
  get client() { return client; },
  pollMs: POLL_MS,
  refreshAll: () => refreshAll('manual'),
};

start();
