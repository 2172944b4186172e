// A small polling page on json-server's REST API: board 1's cards and conversation 1's messages,
// each fetched every ?poll_ms= ms (default 1000); ?user= names the author of new messages.

const query = new URLSearchParams(location.search);
const POLL_MS = (() => {
  const n = Number(query.get('poll_ms'));
  return Number.isFinite(n) && n >= 100 ? n : 1000;
})();
const USER = query.get('user') || 'anonymous';
const BOARD_ID = 1;
const CONVERSATION_ID = 1;
const COLUMNS = ['todo', 'doing', 'done'];

const $ = (id) => document.getElementById(id);
const state = { pollCount: 0, lastCards: [], lastMessages: [] };
window.__page = state;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  node.append(...children);
  return node;
}

function showError(message) {
  $('error').textContent = message || '';
  $('error').hidden = !message;
}

async function send(method, url, body) {
  const init = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`${method} ${url}: HTTP ${res.status}`);
  return res.json().catch(() => null);
}

/** Runs a user action and refetches what it changed; errors go to the footer. */
async function attempt(action, list) {
  try {
    await action();
    showError(null);
  } catch (e) {
    showError(e.message);
  }
  await refresh(list);
}

const lists = {
  cards: { url: `/boards/${BOARD_ID}/cards`, render: renderCards, key: 'lastCards' },
  messages: { url: `/conversations/${CONVERSATION_ID}/messages`, render: renderMessages, key: 'lastMessages' },
};

/** One fetch per list at a time; a refresh asked for meanwhile runs once afterwards. */
async function refresh(name, why = 'refresh') {
  const list = lists[name];
  if (list.inFlight) {
    list.again = true;
    return;
  }
  list.inFlight = true;
  if (why === 'poll') $('poll-count').textContent = String(++state.pollCount);
  try {
    const res = await fetch(list.url, { headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`GET ${list.url}: HTTP ${res.status}`);
    const data = await res.json();
    state[list.key] = data;
    list.render(data);
  } catch (e) {
    showError(e.message);
  } finally {
    list.inFlight = false;
    if (list.again) {
      list.again = false;
      refresh(name);
    }
  }
}

function cardNode(card) {
  const id = encodeURIComponent(card.id);
  const input = h('input', { 'data-testid': 'card-rename-input', placeholder: 'New title', 'aria-label': 'New title' });
  const move = h('select', {
    'data-testid': 'card-move',
    'aria-label': 'Column',
    onchange: () => attempt(() => send('PATCH', `/cards/${id}`, { column: move.value }), 'cards'),
  }, ...COLUMNS.map((c) => h('option', { value: c }, c)));
  const rename = () => {
    const title = input.value.trim();
    if (!title) return;
    input.value = '';
    attempt(() => send('PATCH', `/cards/${id}`, { title }), 'cards');
  };
  return h('li', { 'data-testid': 'card', 'data-card-id': card.id },
    h('span', { 'data-testid': 'card-title' }, ''), ' ',
    h('span', { class: 'muted', 'data-testid': 'card-column' }, ''), ' ',
    input,
    h('button', { type: 'button', 'data-testid': 'card-rename', onclick: rename }, 'Rename'),
    move,
    // json-server answers a DELETE with {}: the board in the query (which json-server ignores)
    // is what tells anyone watching the traffic which board's list the delete changes.
    h('button', { type: 'button', 'data-testid': 'card-delete', onclick: () => attempt(() => send('DELETE', `/cards/${id}?boardId=${encodeURIComponent(card.boardId)}`), 'cards') }, 'Delete'));
}

/** Updates the list in place (keyed by id), so an input being typed in survives a poll. */
function renderCards(cards) {
  const list = $('cards');
  const existing = new Map([...list.children].map((n) => [n.dataset.cardId, n]));
  const nodes = cards.map((card) => {
    const node = existing.get(String(card.id)) || cardNode(card);
    node.dataset.column = card.column;
    node.querySelector('[data-testid="card-title"]').textContent = card.title;
    node.querySelector('[data-testid="card-column"]').textContent = `(${card.column})`;
    const move = node.querySelector('[data-testid="card-move"]');
    if (document.activeElement !== move) move.value = card.column;
    return node;
  });
  if (nodes.length !== list.children.length || nodes.some((n, i) => list.children[i] !== n)) list.replaceChildren(...nodes);
}

function renderMessages(messages) {
  const list = $('messages');
  if (list.children.length === messages.length && list.lastElementChild?.dataset.messageId === String(messages.at(-1)?.id)) return;
  list.replaceChildren(...messages.map((m) => h('li', { 'data-testid': 'message', 'data-message-id': m.id },
    h('strong', {}, m.author), ': ', h('span', { 'data-testid': 'message-text' }, m.text))));
}

function wireForms() {
  $('card-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const title = $('card-title').value.trim();
    if (!title) return;
    $('card-title').value = '';
    attempt(() => send('POST', '/cards', { boardId: BOARD_ID, title, column: 'todo' }), 'cards');
  });
  $('message-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('message-text').value.trim();
    if (!text) return;
    $('message-text').value = '';
    attempt(() => send('POST', '/messages', { conversationId: CONVERSATION_ID, author: USER, text }), 'messages');
  });
}

async function start() {
  document.querySelector('[data-testid="user"]').textContent = USER;
  wireForms();
  await Promise.all(Object.keys(lists).map((name) => refresh(name, 'initial')));
  for (const name of Object.keys(lists)) setInterval(() => refresh(name, 'poll'), POLL_MS);
  document.body.dataset.ready = 'true';
}

start();
