// The video page: comments pinned to moments of a video, over WebSocket.
//
// The page keeps a time-sorted store of the comments it has loaded (deduplicated by id) and a set of
// time windows it has asked the server for. It asks for the next window (`range`) while the playhead
// is still PREFETCH_SECS short of the end of what is loaded, and again after a seek or a reconnect.
// Comments from other viewers (`danmaku` frames) join the same store.
//
// Putting comments on the stage is a sweep: every look at the playhead (each animation frame while
// playing, and every `timeupdate`) shows the comments with `lastT <= time < now` and moves `lastT` to
// now. A seek, a restart or any other jump starts a new pass at the new position without sweeping
// over what lies between, so skipped comments are never flushed onto the screen at once. A comment
// that arrives for a moment the playhead has already passed goes to the list only.
//
// Stage has no pause: while the video is paused the playhead does not move, so no new comments start,
// and those already flying finish their flight.
//
// The viewer's block list: the store keeps every comment loaded, hidden or not; the list shows
// and the sweep flies only those the block list lets through, and a change to the block list lays
// the list out again.

import { commentProblem, rememberAuthor, saveAuthor } from './comment-form.js';
import { bindStageSettings } from './stage.js';
import { commentParts } from './chat-list.js';
import { Connection, describeRefusal } from './connection.js';
import { FilteredStage, blockListForPage } from './block-panel.js';
import { DensityBar } from './density-bar.js';

const VIDEO_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** The demo clip the service may ship; the page copes with its absence. */
const DEMO_SRC = '/media/demo.webm';
/** The channel watched when nothing else names one. */
const DEFAULT_VIDEO = 'demo';
/** Length of one `range` request, in seconds of video. */
const WINDOW_SECS = 60;
/** Load the next window once the playhead is this close to the end of what is loaded, in seconds. */
const PREFETCH_SECS = 20;
/** Most comments one `range` answer holds (the server's MAX_RANGE_ITEMS); a full answer is cut short. */
const RANGE_CAP = 5000;
/** Latest moment a comment may be pinned to, in seconds (the contract's limit). */
const MAX_TIME_SECS = 86_400;
/** Wait after a failed `range` before asking again, in milliseconds. */
const LOAD_RETRY_MS = 3000;
/**
 * A playhead move larger than this (in seconds of video per second of playback rate) between two
 * looks is a jump, not playback: a new pass starts there.
 */
const JUMP_SECS = 2;
/** Shared with the HTTP page, so a name typed once is remembered on both. */

const $ = (id) => document.getElementById(id);
const ui = {
  player: $('player'), video: $('video'), file: $('file'), fullscreen: $('fullscreen'),
  sourceNote: $('source-note'), videoForm: $('video-form'), videoId: $('video-id'), idNote: $('id-note'),
  status: $('status'), viewers: $('viewers'), form: $('send-form'), author: $('author'), text: $('text'),
  color: $('color'), mode: $('mode'), send: $('send'), sendTime: $('send-time'), error: $('error'),
  list: $('list'), count: $('count'),
};
const video = ui.video;
/** The viewer's block list: asked before the stage and the list show a comment. */
const blocks = blockListForPage();
const stage = new FilteredStage($('stage'), blocks);
bindStageSettings(stage);
/** Comments per part of the video, under the picture; a click seeks there. */
const density = new DensityBar($('density'), video);

// ---- the channel ----

/** The video id (channel) watched now. */
let videoId = DEFAULT_VIDEO;
/** Where `videoId` came from: `default`, `query`, `file` (the picked file's name) or `user` (typed). */
let idSource = 'default';
/** The connection for `videoId`. */
let conn = null;
/** Bumped whenever what was loaded stops counting (new channel, new connection), so late answers are dropped. */
let generation = 0;

// ---- the store ----

/** Loaded comments, sorted by time then id. */
let items = [];
/** id -> comment, for deduplication. */
const byId = new Map();
/** id -> the list entry showing it. */
const rows = new Map();
/** Ids of comments this page sent. */
const ownIds = new Set();

function byTime(a, b) { return a.time - b.time || a.id - b.id; }

/** Index of the first loaded comment with `time >= t`. */
function firstAtOrAfter(t) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].time < t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function isComment(item) {
  return item !== null && typeof item === 'object' && Number.isInteger(item.id)
    && Number.isFinite(item.time) && typeof item.text === 'string'
    && (item.channel === undefined || item.channel === videoId);
}

/** Adds the comments not loaded yet to the store and, those the viewer does not hide, to the list. */
function merge(incoming) {
  const fresh = [];
  for (const item of incoming ?? []) {
    if (!isComment(item) || byId.has(item.id) || deleted.has(item.id)) continue;
    byId.set(item.id, item);
    fresh.push(item);
  }
  if (fresh.length === 0) return;
  if (fresh.length <= 16) {
    for (const item of fresh) {
      const at = insertionIndex(item);
      items.splice(at, 0, item);
      if (blocks.hides(item)) continue;
      // Before the next comment listed (a hidden one has no entry).
      let next = at + 1;
      while (next < items.length && blocks.hides(items[next])) next++;
      ui.list.insertBefore(row(item), next < items.length ? rows.get(items[next].id) : null);
    }
    renderCount();
  } else {
    // A window's worth at once: sort once and lay the list out again, reusing existing entries.
    items = items.concat(fresh).sort(byTime);
    layoutList();
  }
}

/** Ids a moderator deleted: never shown again, even from a `range` answer already on its way. */
const deleted = new Set();

/** A moderator deleted these comments: off the stage mid-flight, out of the list and the store. */
function forget(ids) {
  const gone = (Array.isArray(ids) ? ids : []).filter(Number.isInteger);
  for (const id of gone) {
    if (byId.has(id)) density.drop(byId.get(id).time);
    deleted.add(id);
    byId.delete(id);
    rows.get(id)?.remove();
    rows.delete(id);
  }
  items = items.filter((item) => !deleted.has(item.id));
  renderCount();
  stage.remove(gone);
}

/** Lays the list out again from the store: every comment the viewer does not hide, by time. */
function layoutList() {
  const all = document.createDocumentFragment();
  for (const item of items) if (!blocks.hides(item)) all.append(row(item));
  ui.list.replaceChildren(all);
  renderCount();
}

/** The number of comments listed, and of those hidden. */
function renderCount() {
  const listed = ui.list.childElementCount;
  const hidden = items.length - listed;
  ui.count.textContent = items.length === 0 ? '' : hidden ? `(${listed}, ${hidden} blocked)` : `(${listed})`;
}

blocks.addEventListener('change', layoutList);

function insertionIndex(item) {
  let i = firstAtOrAfter(item.time);
  while (i < items.length && byTime(items[i], item) < 0) i++;
  return i;
}

/** Forgets everything loaded (another channel). */
function resetStore() {
  items = [];
  byId.clear();
  rows.clear();
  ownIds.clear();
  ui.list.replaceChildren();
  ui.count.textContent = '';
}

// ---- the list ----

/** `mm:ss.s`; minutes go past 59 for long videos. Rounds down, so 59.96 s is 00:59.9. */
function formatTime(secs) {
  const tenths = Math.max(0, Math.floor(secs * 10));
  const minutes = Math.floor(tenths / 600);
  const rest = tenths % 600;
  const seconds = Math.floor(rest / 10);
  return `${String(minutes).padStart(2, '0')}:${String(seconds).padStart(2, '0')}.${rest % 10}`;
}

/** The list entry for a comment, made once. */
function row(item) {
  let li = rows.get(item.id);
  if (li) return li;
  li = document.createElement('li');
  li.dataset.id = String(item.id);
  if (ownIds.has(item.id)) li.classList.add('own');
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.id = String(item.id);
  const { time, swatch, author, text } = commentParts(item, {
    text: formatTime(item.time),
    dateTime: `PT${Math.max(0, item.time).toFixed(3)}S`,
  });
  const words = document.createElement('span');
  words.className = 'words';
  words.append(author, text);
  button.append(time, swatch, words);
  li.append(button);
  rows.set(item.id, li);
  return li;
}

/** A comment whose id is waiting for `seeked`, to show on the stage at the moment it was picked. */
let showAfterSeek = null;

ui.list.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-id]');
  if (!button) return;
  const item = byId.get(Number(button.dataset.id));
  if (!item) return;
  if (video.readyState === HTMLMediaElement.HAVE_NOTHING) {
    // No video to seek in: at least show the comment.
    stage.add(item, ownIds.has(item.id));
    return;
  }
  showAfterSeek = item.id;
  video.currentTime = item.time;
});

// ---- loading windows ----

/** Sorted, disjoint `[from, to)` windows answered on the current connection. */
let covered = [];
/** Windows asked for and not answered yet. */
let inflight = [];
/** No `range` requests before this `performance.now()` (after a failure). */
let loadPausedUntil = 0;

function cover(from, to) {
  const all = [...covered, [from, to]].sort((a, b) => a[0] - b[0]);
  const merged = [];
  for (const [a, b] of all) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  covered = merged;
}

/** Where the loaded (or loading) stretch that holds `t` ends, or `t` itself when nothing holds it. */
function loadedUntil(t) {
  let end = t;
  for (let moved = true; moved;) {
    moved = false;
    for (const [a, b] of [...covered, ...inflight]) {
      if (a <= end && end < b) { end = b; moved = true; }
    }
  }
  return end;
}

/** Asks for the next window when the playhead nears the end of what is loaded. */
function ensureLoaded() {
  if (!conn?.isOpen || performance.now() < loadPausedUntil) return;
  const t = Math.min(playhead(), MAX_TIME_SECS);
  const videoEnd = Number.isFinite(video.duration) ? video.duration : MAX_TIME_SECS;
  let from = loadedUntil(t);
  if (from === t) from = Math.floor(t); // a fresh start: round to a whole second
  if (from >= t + PREFETCH_SECS || from > videoEnd || from > MAX_TIME_SECS) return;
  load(from, Math.min(from + WINDOW_SECS, MAX_TIME_SECS + 1));
}

async function load(from, to) {
  const mine = generation;
  const span = [from, to];
  inflight.push(span);
  try {
    const answer = await conn.request({ type: 'range', from, to });
    if (mine !== generation) return;
    const got = Array.isArray(answer.items) ? answer.items : [];
    // A full answer may have been cut short: only up to its last comment's time is complete.
    const lastTime = got.length >= RANGE_CAP ? got[got.length - 1]?.time : undefined;
    cover(from, Number.isFinite(lastTime) && lastTime > from ? lastTime : to);
    merge(got);
  } catch (err) {
    if (mine !== generation || err.code === 'disconnected') return; // the reopen asks again
    loadPausedUntil = performance.now() + LOAD_RETRY_MS;
    showError(`Could not load comments: ${err.message} (${err.code})`);
  } finally {
    inflight = inflight.filter((w) => w !== span);
  }
  if (mine === generation) ensureLoaded();
}

// ---- following the playhead ----

/** The playhead position up to which comments have been put on the stage in this pass. */
let lastT = 0;
/** Comments put on the stage in this pass (an own comment shows on its ack, before the sweep). */
const shown = new Set();

function playhead() {
  const t = video.currentTime;
  return Number.isFinite(t) && t > 0 ? t : 0;
}

/** Starts a new pass at the playhead: nothing between the old and new position is shown. */
function restartPass() {
  stage.clear();
  shown.clear();
  lastT = playhead();
}

function showOnStage(item) {
  if (shown.has(item.id)) return;
  shown.add(item.id);
  stage.add(item, ownIds.has(item.id));
}

let shownSendTime = '';

/** One look at the playhead: show what it passed since the last look, and load ahead. */
function tick() {
  const t = playhead();
  const label = formatTime(t);
  if (label !== shownSendTime) {
    shownSendTime = label;
    ui.sendTime.textContent = label;
  }
  if (video.seeking) return;
  const rate = Math.max(1, Math.abs(video.playbackRate) || 1);
  if (t < lastT || t - lastT > JUMP_SECS * rate) {
    restartPass();
  } else {
    for (let i = firstAtOrAfter(lastT); i < items.length && items[i].time < t; i++) {
      showOnStage(items[i]);
    }
    lastT = t;
  }
  ensureLoaded();
}

let frame = 0;
function onFrame() {
  frame = 0;
  tick();
  if (!video.paused && !video.ended) frame = requestAnimationFrame(onFrame);
}
function follow() {
  if (!frame) frame = requestAnimationFrame(onFrame);
}

video.addEventListener('play', follow);
video.addEventListener('playing', () => {
  stage.resume();
  follow();
});
video.addEventListener('timeupdate', tick);
// The comments on screen stop with the video and move on with it.
video.addEventListener('pause', () => {
  stage.pause();
  tick();
});
video.addEventListener('seeking', restartPass);
video.addEventListener('seeked', () => {
  restartPass();
  if (showAfterSeek !== null) {
    const item = byId.get(showAfterSeek);
    showAfterSeek = null;
    if (item) showOnStage(item);
  }
  tick();
});
// A new source starts at 0; its duration bounds what is worth loading.
video.addEventListener('emptied', () => { restartPass(); tick(); });
video.addEventListener('loadedmetadata', tick);

// ---- the video source ----

/** `demo` or `file`. */
let source = 'demo';
let fileName = '';
let objectUrl = null;

video.addEventListener('error', () => {
  if (!video.getAttribute('src')) return; // the reset below
  ui.sourceNote.textContent = source === 'demo'
    ? `There is no demo video here (${DEMO_SRC}): pick a local video file to watch it with comments.`
    : `This browser cannot play “${fileName}”. Pick another video file.`;
  // Back to an empty player, rather than one that looks as if it were still loading.
  video.removeAttribute('src');
  video.load();
});
video.addEventListener('loadeddata', () => {
  ui.sourceNote.textContent = source === 'demo'
    ? 'Playing the demo video. Pick a local video file to watch your own.'
    : `Playing “${fileName}” from this device (it is not uploaded).`;
});

/** The picked file's name as a video id: letters, digits, _ and - only, at most 64. */
function idFromFileName(name) {
  const id = name
    .replace(/\.[^.]*$/, '')
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^A-Za-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
  return VIDEO_RE.test(id) ? id : DEFAULT_VIDEO;
}

ui.file.addEventListener('change', () => {
  const file = ui.file.files?.[0];
  if (!file) return;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  source = 'file';
  fileName = file.name;
  ui.sourceNote.textContent = `Opening “${fileName}”…`;
  video.src = objectUrl;
  // A link's or a typed id is kept; otherwise the video is named after the file.
  if (idSource === 'default' || idSource === 'file') {
    idSource = 'file';
    watch(idFromFileName(file.name));
  }
});

// Fullscreen on the player box, so the comments come along (the video's own button would leave them).
if (document.fullscreenEnabled && ui.player.requestFullscreen) {
  ui.fullscreen.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else ui.player.requestFullscreen().catch(() => {});
  });
  document.addEventListener('fullscreenchange', () => {
    ui.fullscreen.textContent = document.fullscreenElement ? 'Exit full screen' : 'Full screen';
  });
} else {
  ui.fullscreen.hidden = true;
}

// ---- the connection ----

function setStatus(text) { ui.status.textContent = text; }
function setViewers(count) {
  ui.viewers.textContent = Number.isInteger(count) ? `· ${count} watching` : '';
}

function describeState({ state, attempt, retryInMs, reason }) {
  switch (state) {
    case 'connecting': return `Connecting to “${videoId}”…`;
    case 'open': return `Connected to “${videoId}”.`;
    case 'closed': return 'Disconnected.';
    default: {
      if (retryInMs === null) return `Reconnecting to “${videoId}”…`;
      const why = reason ? ` (${reason})` : '';
      const secs = retryInMs < 10_000 ? (retryInMs / 1000).toFixed(1) : String(Math.round(retryInMs / 1000));
      return `Connection lost${why}; retrying in ${secs} s (attempt ${attempt}).`;
    }
  }
}

/** Switches to another video id: a fresh store and a new socket. */
function watch(id) {
  conn?.close();
  videoId = id;
  ui.videoId.value = id;
  ui.idNote.textContent = '';
  document.title = `danmaku · Video · ${id}`;
  generation += 1;
  covered = [];
  inflight = [];
  loadPausedUntil = 0;
  resetStore();
  restartPass();
  setViewers(null);
  density.show(id);

  const c = new Connection(`/ws/videos/${encodeURIComponent(id)}`, {
    onOpen({ reopened }) {
      if (c !== conn) return;
      // Comments may have come and gone while the socket was down: ask again for what is needed.
      generation += 1;
      covered = [];
      inflight = [];
      loadPausedUntil = 0;
      ensureLoaded();
      // Comments may have come while the socket was down: count again (the first open needs
      // not: `show` just asked).
      if (reopened) density.load();
    },
  });
  conn = c;
  c.addEventListener('state', (e) => {
    if (c !== conn) return;
    setStatus(describeState(e.detail));
    if (e.detail.state !== 'open') setViewers(null);
  });
  c.addEventListener('refused', (e) => { if (c === conn) showError(describeRefusal(e.detail)); });
  c.addEventListener('hello', (e) => { if (c === conn) setViewers(e.detail.viewers); });
  c.addEventListener('viewers', (e) => { if (c === conn) setViewers(e.detail.count); });
  c.addEventListener('danmaku', (e) => {
    if (c !== conn) return;
    merge(e.detail.items);
    for (const item of e.detail.items ?? []) if (isComment(item)) density.bump(item);
  });
  c.addEventListener('deleted', (e) => { if (c === conn) forget(e.detail.ids); });
  c.addEventListener('error', (e) => {
    if (c === conn) showError(`${e.detail.message ?? 'The server reported an error.'} (${e.detail.code})`);
  });
  c.start();
}

function applyVideoId() {
  const id = ui.videoId.value.trim();
  if (!VIDEO_RE.test(id)) {
    ui.idNote.textContent = 'A video id is 1 to 64 letters, digits, _ or -.';
    return;
  }
  ui.idNote.textContent = '';
  if (id === videoId) return;
  idSource = 'user';
  const url = new URL(location.href);
  url.searchParams.set('video', id);
  history.replaceState(null, '', url);
  watch(id);
}

ui.videoForm.addEventListener('submit', (event) => {
  event.preventDefault();
  applyVideoId();
});
ui.videoId.addEventListener('change', applyVideoId);

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

  // Pinned to the moment on screen when Send was pressed.
  const time = Math.min(playhead(), MAX_TIME_SECS);
  const sentTo = conn;
  sending = true;
  ui.send.disabled = true;
  try {
    const { item } = await sentTo.request({
      type: 'send', text, time, author, color: ui.color.value, mode: ui.mode.value,
    });
    ui.text.value = '';
    showError(blocks.hides(item) ? 'Sent; your block list hides it from you.' : '');
    if (sentTo !== conn || !isComment(item)) return; // the page moved to another video meanwhile
    ownIds.add(item.id);
    merge([item]);
    density.bump(item);
    rows.get(item.id)?.classList.add('own');
    showOnStage(item);
  } catch (err) {
    showError(`${err.message} (${err.code ?? 'error'})`);
  } finally {
    sending = false;
    ui.send.disabled = false;
    ui.text.focus();
  }
});

// ---- start ----

const requested = new URLSearchParams(location.search).get('video');
if (requested !== null && VIDEO_RE.test(requested)) {
  idSource = 'query';
  watch(requested);
} else {
  watch(DEFAULT_VIDEO);
  if (requested !== null) {
    ui.idNote.textContent = `“${requested}” is not a valid video id (letters, digits, _ and -, up to 64); showing “${DEFAULT_VIDEO}”.`;
  }
}
video.src = DEMO_SRC;
tick();
