// The HTTP-mode page: send with POST, receive by short or long polling the cursor API.
//
// The cursor (`next` from the last answer) is the only state the server needs: passing it back means
// no comment is missed or repeated. Our own comments show at once from the 201 answer; `shown` keeps
// the poll from showing them a second time.
//
// The viewer's block list is asked before a comment flies or is listed. The list keeps the last
// MAX_LIST comments received, hidden or not, so that a change to the block list can lay it out
// again: newly blocked lines go, unblocked ones come back.

import { commentProblem, rememberAuthor, saveAuthor } from './comment-form.js';
import { bindStageSettings } from './stage.js';
import { api, json } from './api.js';
import { commentParts } from './chat-list.js';
import { FilteredStage, blockListForPage } from './block-panel.js';

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Comments asked for on the first request, to start with recent history. */
const HISTORY_LIMIT = 50;
/** Comments per later request; a full page is followed by another request at once. */
const PAGE_LIMIT = 100;
/** Long-poll wait, in seconds (the server allows up to 30). */
const LONG_WAIT_SECS = 25;
/** Extra time a long poll may take before the page gives up on it, in milliseconds. */
const LONG_SLACK_MS = 10_000;
/** Backoff after a failed request, in milliseconds. */
const BACKOFF_START_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** Entries kept in the list; older ones are removed from the page. */
const MAX_LIST = 200;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('send-form'), author: $('author'), text: $('text'), color: $('color'), mode: $('mode'),
  send: $('send'), error: $('error'), transport: $('transport'), interval: $('interval'),
  intervalBox: $('interval-box'), status: $('status'), room: $('room'), list: $('list'),
  requests: $('stat-requests'), bytes: $('stat-bytes'), comments: $('stat-comments'),
};

const params = new URLSearchParams(location.search);
let room = params.get('room') ?? 'default';
if (!ROOM_RE.test(room)) {
  $('room-note').textContent =
    `“${room}” is not a valid room name (letters, digits, _ and -, up to 64); showing “default”.`;
  room = 'default';
}
ui.room.value = room;
document.title = `danmaku · HTTP · ${room}`;
const base = `/api/rooms/${encodeURIComponent(room)}/danmaku`;

/** The viewer's block list: asked before the stage and the list show a comment. */
const blocks = blockListForPage();
const stage = new FilteredStage($('stage'), blocks);
bindStageSettings(stage);
const stats = { requests: 0, bytes: 0, comments: 0 };
/** Ids already on the page; ids at or below the cursor are pruned as the cursor moves on. */
const shown = new Set();
let cursor = null;
/**
 * The moderation log line after which deletes are asked for (`deleted_after`); comments deleted
 * since are taken off the stage and out of the list, and never shown again.
 */
let deletedNext = 0;
const deleted = new Set();

// ---- counters and requests ----

function renderStats() {
  ui.requests.textContent = String(stats.requests);
  ui.bytes.textContent = String(stats.bytes);
  ui.comments.textContent = String(stats.comments);
}

/** Adds an answer's body to the bytes received, read from a copy as it arrives. */
function countBytes(res) {
  res.clone().arrayBuffer().then((body) => {
    stats.bytes += body.byteLength;
    renderStats();
  }, () => { /* aborted: the request's own error says so */ });
}

/** Calls the API and reads its JSON, counting the request and the bytes received. Throws an ApiError. */
async function request(path, options = {}) {
  stats.requests += 1;
  renderStats();
  return json(await api(path, { ...options, onResponse: countBytes }));
}

// ---- showing comments ----

function formatTime(sentAt) {
  const date = new Date(sentAt);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour12: false });
}

/** The last MAX_LIST comments received, hidden or not, newest (highest id) first. */
let recent = [];
/** Ids of the comments this page sent. */
const ownIds = new Set();

function listRow(item) {
  const li = document.createElement('li');
  li.dataset.id = String(item.id);
  if (ownIds.has(item.id)) li.classList.add('own');
  const parts = commentParts(item, { text: formatTime(item.sent_at), dateTime: item.sent_at ?? '' });
  li.append(parts.time, parts.swatch, parts.author, parts.text);
  return li;
}

/** Adds a comment to the list and, unless it is history, to the stage, unless the viewer hides it. */
function show(item, { own = false, fly = true } = {}) {
  if (typeof item?.id !== 'number' || shown.has(item.id) || deleted.has(item.id)) return;
  shown.add(item.id);
  if (own) ownIds.add(item.id);
  // Newest first, ordered by id: a poll can bring an older comment after our own newer one.
  const at = recent.findIndex((other) => other.id < item.id);
  recent.splice(at < 0 ? recent.length : at, 0, item);
  for (const old of recent.splice(MAX_LIST)) ownIds.delete(old.id);
  if (blocks.hides(item)) return;

  stats.comments += 1;
  renderStats();
  if (fly) stage.add(item, own);
  const li = listRow(item);
  const after = [...ui.list.children].find((el) => Number(el.dataset.id) < item.id);
  ui.list.insertBefore(li, after ?? null);
  while (ui.list.children.length > MAX_LIST) ui.list.lastElementChild.remove();
}

/** A moderator deleted these comments: off the stage mid-flight, out of the list and the memory. */
function forget(ids) {
  const gone = ids.filter(Number.isInteger);
  for (const id of gone) {
    deleted.add(id);
    ui.list.querySelector(`li[data-id="${id}"]`)?.remove();
  }
  recent = recent.filter((item) => !deleted.has(item.id));
  stage.remove(gone);
}

// The block list changed: lay the list out again from what was received.
blocks.addEventListener('change', () => {
  ui.list.replaceChildren(...recent.filter((item) => !blocks.hides(item)).map(listRow));
});

// ---- polling ----

let run = 0; // bumped to stop the running loop
let inflight = null; // AbortController of the request in flight
let wake = null; // ends the current pause early

function setStatus(message) { ui.status.textContent = message; }

function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() { clearTimeout(timer); wake = null; resolve(); }
    wake = done;
  });
}

function intervalMs() {
  const secs = Number(ui.interval.value);
  return (Number.isFinite(secs) && secs >= 1 ? Math.min(secs, 3600) : 10) * 1000;
}

async function poll(waitSecs) {
  const query = new URLSearchParams({ limit: String(cursor === null ? HISTORY_LIMIT : PAGE_LIMIT) });
  if (cursor !== null) query.set('after', String(cursor));
  if (waitSecs > 0) query.set('wait', String(waitSecs));
  query.set('deleted_after', String(deletedNext));
  const ctrl = new AbortController();
  inflight = ctrl;
  const timer = setTimeout(() => ctrl.abort(), waitSecs * 1000 + LONG_SLACK_MS);
  try {
    const page = await request(`${base}?${query}`, { signal: ctrl.signal });
    const first = cursor === null;
    for (const item of page.items ?? []) show(item, { fly: !first });
    if (typeof page.next === 'number') cursor = page.next;
    for (const id of shown) if (cursor !== null && id <= cursor) shown.delete(id);
    if (Array.isArray(page.deleted)) forget(page.deleted);
    if (Number.isInteger(page.deleted_next)) deletedNext = page.deleted_next;
    // A full page (of comments, or of deletes) is followed by another request at once.
    return (!first && (page.items?.length ?? 0) >= PAGE_LIMIT) || (page.deleted?.length ?? 0) >= 500;
  } finally {
    clearTimeout(timer);
    if (inflight === ctrl) inflight = null;
  }
}

async function loop(me) {
  let backoff = 0;
  while (me === run) {
    const long = ui.transport.value === 'long';
    let delay = 0;
    try {
      // The first request has no cursor yet; it answers at once with recent history.
      const waitSecs = long && cursor !== null ? LONG_WAIT_SECS : 0;
      if (waitSecs) setStatus(`Long polling: waiting up to ${waitSecs} s for new comments.`);
      const full = await poll(waitSecs);
      if (me !== run) return;
      backoff = 0;
      if (full) {
        setStatus('Catching up…');
      } else if (!long) {
        delay = intervalMs();
        setStatus(`Short polling: next request in ${delay / 1000} s.`);
      }
    } catch (err) {
      if (me !== run) return;
      backoff = backoff ? Math.min(backoff * 2, BACKOFF_MAX_MS) : BACKOFF_START_MS;
      delay = Math.max(backoff, err.retryAfterMs ?? 0, long ? 0 : intervalMs());
      const why = err.name === 'AbortError' ? 'The request timed out.' : err.message;
      setStatus(`${why} Retrying in ${Math.round(delay / 1000)} s.`);
    }
    if (delay > 0) await pause(delay);
  }
}

/** Starts polling afresh (keeping the cursor), e.g. after the transport or interval changed. */
function restart() {
  run += 1;
  inflight?.abort();
  wake?.();
  ui.intervalBox.hidden = ui.transport.value === 'long';
  loop(run);
}

ui.transport.addEventListener('change', restart);
ui.interval.addEventListener('change', restart);

// ---- sending ----

function showError(message) { ui.error.textContent = message; }

rememberAuthor(ui.author);
ui.text.addEventListener('input', () => showError(''));

let sending = false;
ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (sending) return;
  const author = ui.author.value.trim();
  const text = ui.text.value.trim();
  const problem = commentProblem(author, text);
  if (problem) return showError(problem);
  saveAuthor(author);

  sending = true;
  ui.send.disabled = true;
  try {
    const item = await request(base, {
      method: 'POST',
      body: { author, text, color: ui.color.value, mode: ui.mode.value },
    });
    show(item, { own: true });
    ui.text.value = '';
    showError(blocks.hides(item) ? 'Sent; your block list hides it from you.' : '');
  } catch (err) {
    let message = err.message;
    if (err.retryAfterMs) message += ` Try again in ${Math.ceil(err.retryAfterMs / 1000)} s.`;
    showError(message);
  } finally {
    sending = false;
    ui.send.disabled = false;
    ui.text.focus();
  }
});

renderStats();
restart();
