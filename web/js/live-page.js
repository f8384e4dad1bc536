// The live page: a room's stream with flying comments, the chat box, the viewer count and check-in.
//
// One socket per room and name: a new name means a new socket. The chat keeps `lastId`, the highest
// id it has seen on the room's ordered stream (the `welcome` history and `danmaku` frames), and every
// (re)connect asks for `since=lastId`, so the server sends exactly what was missed. `lastId` does not
// move on an `ack`: our own comment may overtake others' comments still on their way to us, and
// resuming after it would skip them. Comments are deduplicated by id, since ours come twice (the `ack`
// and the broadcast) and a resume can overlap what is already shown.
//
// A check-in box appears when the server says one is open (`checkin_open`, repeated after every
// `welcome`), and hides when it closes. The code is typed from the host's screen; the server never
// sends it to viewers.

import { AUTHOR_KEY, chars } from './comment-form.js';
import { bindStageSettings } from './stage.js';
import { ChatList, clock } from './chat-list.js';
import { FilteredStage, blockListForPage } from './block-panel.js';
import { Connection, describeRefusal } from './connection.js';

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** The room watched when the address names none. */
const DEFAULT_ROOM = 'default';
/** The demo clip shipped with the service. */
const DEMO_SRC = '/media/demo.webm';
/** Shared with the other pages, so a name typed once is remembered everywhere. */
/** Prefix of the sessionStorage keys remembering a check-in done in this tab: `<prefix><room>.<id>`. */
const CHECKED_IN_PREFIX = 'danmaku.checkedIn.';
/** Chat entries kept on the page; older ones are removed from the top. */
const MAX_CHAT = 500;
/** Ids remembered for deduplication before the oldest are forgotten. */
const MAX_SEEN = 5000;
/** After a resume, only the last this many missed comments fly; all of them go to the chat. */
const FLY_ON_RESUME = 10;
/** How often the "reconnecting in N s" countdown is redrawn, in milliseconds. */
const RETRY_TICK_MS = 250;

const $ = (id) => document.getElementById(id);
const ui = {
  roomLabel: $('room-label'), nameForm: $('name-form'), name: $('name'), nameNote: $('name-note'),
  status: $('status'), viewers: $('viewers'),
  checkin: $('checkin'), checkinUntil: $('checkin-until'), checkinForm: $('checkin-form'),
  checkinCode: $('checkin-code'), checkinSubmit: $('checkin-submit'), checkinNote: $('checkin-note'),
  player: $('player'), video: $('video'), play: $('play'), sound: $('sound'), fullscreen: $('fullscreen'),
  file: $('file'), sourceNote: $('source-note'),
  chat: $('chat'), chatNote: $('chat-note'), chatMore: $('chat-more'),
  sendForm: $('send-form'), text: $('text'), color: $('color'), mode: $('mode'), send: $('send'),
  error: $('error'), room: $('room'), roomNote: $('room-note'),
};
const video = ui.video;
/** The viewer's block list: asked before the stage and the chat show a comment. */
const blocks = blockListForPage();
const stage = new FilteredStage($('stage'), blocks);
bindStageSettings(stage);
const params = new URLSearchParams(location.search);

// ---- the room ----

let room = params.get('room') ?? DEFAULT_ROOM;
if (!ROOM_RE.test(room)) {
  ui.roomNote.textContent =
    `“${room}” is not a valid room name (letters, digits, _ and -, up to 64); showing “${DEFAULT_ROOM}”.`;
  room = DEFAULT_ROOM;
}
ui.room.value = room;
ui.roomLabel.textContent = `· ${room}`;
document.title = `danmaku · Live · ${room}`;

// ---- small helpers ----

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

function storageGet(store, key) {
  try { return store.getItem(key); } catch { return null; }
}

function storageSet(store, key, value) {
  try { store.setItem(key, value); } catch { /* storage off: nothing to remember */ }
}

function setStatus(text) { ui.status.textContent = text; }
function setViewers(count) {
  ui.viewers.textContent = Number.isInteger(count) ? `· ${count} watching` : '';
}
function showError(text) { ui.error.textContent = text; }

/** A sentence for an error code from the server (or from connection.js), with the code after it. */
function describeError(code, message) {
  const friendly = {
    rate_limited: 'You are sending too fast. Wait a moment, then try again.',
    not_connected: 'Not connected right now, so nothing was sent. Try again once the page has reconnected.',
    disconnected: 'The connection dropped before the server confirmed; if the comment was posted, it shows up when the page reconnects.',
    timeout: 'The server did not answer in time; if the comment was posted, it shows up in the chat.',
  }[code];
  return `${friendly ?? message ?? 'The server reported an error.'} (${code ?? 'error'})`;
}

// ---- the chat and the stage ----

/** The chat; its `lastId`, the highest id seen on the room's ordered stream, is the resume point. */
const chat = new ChatList(ui.chat, {
  max: MAX_CHAT,
  maxSeen: MAX_SEEN,
  more: ui.chatMore,
  accept: (item) => item.channel === undefined || item.channel === room,
  hides: (item) => blocks.hides(item),
});
blocks.addEventListener('change', () => chat.refilter());

/**
 * Adds the comments not seen yet to the chat and (per `fly`: `all`, `tail` or `none`) to the stage.
 * Returns how many were new.
 */
function addItems(items, { fly }) {
  const fresh = chat.add(items);
  const flying = fly === 'all' ? fresh : fly === 'tail' ? fresh.slice(-FLY_ON_RESUME) : [];
  for (const item of flying) stage.add(item, chat.isOwn(item.id));
  return fresh.length;
}

/** Our own comment, from its `ack`: shown at once, marked as ours. */
function addOwn(item) {
  if (chat.addOwn(item)) stage.add(item, true);
}

/** Empties the chat and the stage (too much was missed to fill the gap). */
function resetChat() {
  chat.reset();
  stage.clear();
}

ui.chatMore.addEventListener('click', () => ui.text.focus());

// ---- the name ----

function validName(name) {
  if (chars(name) < 1 || chars(name) > 24) return 'Your name must be 1 to 24 characters.';
  if (CONTROL_RE.test(name)) return 'Your name cannot hold control characters.';
  return '';
}

/** The name asked for in the socket's query. */
let wantedName = (storageGet(localStorage, AUTHOR_KEY) ?? '').trim();
if (validName(wantedName)) {
  wantedName = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  storageSet(localStorage, AUTHOR_KEY, wantedName);
}
ui.name.value = wantedName;
/** The connection's name as the server has it (from `welcome`). */
let myName = null;

function applyName() {
  const name = ui.name.value.trim();
  const problem = validName(name);
  ui.nameNote.textContent = problem;
  if (problem) return;
  storageSet(localStorage, AUTHOR_KEY, name);
  if (name === wantedName) return;
  wantedName = name;
  renamed = true;
  connect();
}

ui.nameForm.addEventListener('submit', (event) => {
  event.preventDefault();
  applyName();
});
ui.name.addEventListener('change', applyName);

// ---- the connection ----

/** The socket now in use; frames from an older one are ignored. */
let conn = null;
/** A `welcome` has been seen on this page (by any socket): later ones are reconnections. */
let welcomed = false;
/** The socket was replaced for a new name: its `welcome` is not a reconnection. */
let renamed = false;
let retryTicker = null;

function stopRetryTicker() {
  clearInterval(retryTicker);
  retryTicker = null;
}

function describeRetry(retryAt, attempt, reason) {
  const secs = Math.max(0, Math.ceil((retryAt - performance.now()) / 1000));
  const why = reason ? ` (${reason})` : '';
  return `Connection lost${why}; reconnecting in ${secs} s… (attempt ${attempt})`;
}

/** The socket's query: read at every (re)connect, as the resume point moves on. */
function socketQuery() {
  const q = new URLSearchParams();
  if (wantedName) q.set('name', wantedName);
  if (chat.lastId !== null) q.set('since', String(chat.lastId));
  return q;
}

/** The server refused the socket (name, origin): see connection.js. */
function onRefused(refusal) {
  const text = describeRefusal(refusal);
  if (refusal.status === 422) {
    // The name: retrying cannot help until it changes.
    conn.close();
    ui.nameNote.textContent = `${text}. Choose another name.`;
    setStatus('Not connected: choose another name.');
    ui.name.focus();
  } else {
    showError(text);
  }
}

function onState({ state, attempt, retryInMs, reason }) {
  stopRetryTicker();
  if (state !== 'open') setViewers(null);
  switch (state) {
    case 'connecting':
      setStatus(`Connecting to room “${room}”…`);
      break;
    case 'open':
      setStatus('Connected; loading the room…');
      break;
    case 'closed':
      break; // replaced by the socket for a new name; its own states follow
    default: {
      if (retryInMs === null) {
        setStatus(`Reconnecting… (attempt ${attempt})`);
        break;
      }
      const retryAt = performance.now() + retryInMs;
      setStatus(describeRetry(retryAt, attempt, reason));
      retryTicker = setInterval(() => setStatus(describeRetry(retryAt, attempt, reason)), RETRY_TICK_MS);
    }
  }
}

function onWelcome(f) {
  setViewers(f.viewers);
  if (typeof f.name === 'string' && f.name) {
    myName = f.name;
    // The server may have adjusted the name; show the one others see.
    if (myName !== wantedName && document.activeElement !== ui.name) ui.name.value = myName;
  }
  // The server repeats `checkin_open` right after `welcome` while one is open.
  hideCheckin();

  const who = myName ? ` as ${myName}` : '';
  let message;
  if (f.recovered === false) {
    resetChat();
    addItems(f.history, { fly: 'none' });
    ui.chatNote.textContent = 'Missed too much while disconnected; showing the latest comments.';
    chat.scrollDown();
    message = `Reconnected${who}; missed too much, showing the latest.`;
  } else {
    const fresh = addItems(f.history, { fly: welcomed && f.recovered === true ? 'tail' : 'none' });
    const missed = `${fresh} missed comment${fresh === 1 ? '' : 's'}`;
    if (!welcomed) {
      chat.scrollDown();
      message = `Connected to room “${room}”${who}.`;
    } else if (renamed) {
      message = `Now chatting${who}${fresh ? `; resumed ${missed}` : ''}.`;
    } else {
      message = f.recovered === true ? `Reconnected, resumed ${missed}.` : `Reconnected${who}.`;
    }
  }
  welcomed = true;
  renamed = false;
  setStatus(message);
}

function connect() {
  conn?.close();
  const c = new Connection(`/ws/live/${encodeURIComponent(room)}`, {
    query: socketQuery,
  });
  conn = c;
  const on = (type, handler) => c.addEventListener(type, (e) => { if (c === conn) handler(e.detail); });
  on('state', onState);
  on('refused', onRefused);
  on('welcome', onWelcome);
  on('danmaku', (f) => addItems(f.items, { fly: 'all' }));
  // A moderator deleted comments: off the stage mid-flight, and out of the chat box.
  on('deleted', (f) => {
    const ids = Array.isArray(f.ids) ? f.ids : [];
    chat.remove(ids);
    stage.remove(ids);
  });
  on('viewers', (f) => setViewers(f.count));
  on('error', (f) => showError(describeError(f.code, f.message)));
  on('checkin_open', onCheckinOpen);
  on('checkin_closed', onCheckinClosed);
  on('checked_in', onCheckedIn);
  c.start();
}

// ---- sending ----

ui.text.addEventListener('input', () => showError(''));

let sending = false;
ui.sendForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (sending) return;
  const text = ui.text.value.trim();
  if (!text) return showError('Write a comment first.');
  if (chars(text) > 100) return showError('A comment is at most 100 characters.');
  const sentOn = conn;
  sending = true;
  ui.send.disabled = true;
  try {
    const { item } = await sentOn.request({ type: 'send', text, color: ui.color.value, mode: ui.mode.value });
    ui.text.value = '';
    showError(blocks.hides(item) ? 'Sent; your block list hides it from you.' : '');
    if (sentOn === conn && chat.accepts(item)) addOwn(item);
  } catch (err) {
    showError(describeError(err.code, err.message));
  } finally {
    sending = false;
    ui.send.disabled = false;
    ui.text.focus();
  }
});

// ---- check-in ----

/** The open check-in: `{id, closesAt}`, or null. */
let checkin = null;
let checkingIn = false;

function checkedInKey(id) { return `${CHECKED_IN_PREFIX}${room}.${id}`; }

function setCheckinNote(text, kind = '') {
  ui.checkinNote.textContent = text;
  ui.checkinNote.classList.toggle('error', kind === 'error');
  ui.checkinNote.classList.toggle('done', kind === 'done');
}

function showCheckedIn(name) {
  ui.checkinForm.hidden = true;
  setCheckinNote(`You're checked in as ${name}.`, 'done');
}

function hideCheckin() {
  checkin = null;
  ui.checkin.hidden = true;
}

function onCheckinOpen(f) {
  if (!Number.isInteger(f.checkin)) return;
  const isNew = checkin?.id !== f.checkin;
  checkin = { id: f.checkin, closesAt: f.closes_at };
  const until = clock(f.closes_at);
  ui.checkinUntil.textContent = until ? `Check-in open until ${until}` : 'Check-in open';
  const done = storageGet(sessionStorage, checkedInKey(f.checkin));
  if (done) {
    showCheckedIn(done);
  } else if (isNew || ui.checkin.hidden) {
    ui.checkinForm.hidden = false;
    ui.checkinCode.disabled = false;
    ui.checkinSubmit.disabled = checkingIn;
    setCheckinNote('Type the 6-digit code shown on the host\'s screen.');
  }
  ui.checkin.hidden = false;
}

function onCheckinClosed(f) {
  if (checkin && f.checkin === checkin.id) hideCheckin();
}

function onCheckedIn(f) {
  if (!Number.isInteger(f.checkin)) return;
  const name = typeof f.name === 'string' && f.name ? f.name : (myName ?? wantedName);
  storageSet(sessionStorage, checkedInKey(f.checkin), name);
  if (checkin?.id === f.checkin) showCheckedIn(name);
}

/**
 * Sends a `checkin` frame. Settles with the `checked_in` answer, whether the server echoes the `ref`
 * in it (then `request` gets it) or not (then it comes as an event); an `error` with the ref rejects.
 */
function requestCheckin(c, id, code) {
  let stopListening = () => {};
  const heard = new Promise((resolve) => {
    const listener = (e) => { if (e.detail?.checkin === id) resolve(e.detail); };
    c.addEventListener('checked_in', listener);
    stopListening = () => c.removeEventListener('checked_in', listener);
  });
  const answered = c.request({ type: 'checkin', checkin: id, code });
  answered.catch(() => {}); // when `heard` wins, a later timeout here is expected
  return Promise.race([answered, heard]).finally(stopListening);
}

function describeCheckinError(err) {
  const friendly = {
    wrong_code: 'That code is not right. Codes change every few seconds: type the one on the host\'s screen now.',
    too_many_attempts: 'Too many wrong codes came from your network: it can no longer check in here. Ask the host.',
    // Too many guesses from this address, or too many wrong codes in the whole check-in; the
    // server's message says how long to wait. The code is kept, to try again.
    rate_limited: `Wait a moment, then try again: ${err.message}.`,
    checkin_closed: 'This check-in has closed.',
    not_found: 'This check-in no longer exists.',
    not_connected: 'Not connected right now. Try again once the page has reconnected.',
    disconnected: 'The connection dropped before the server answered. Try again once the page has reconnected.',
  }[err.code];
  return `${friendly ?? err.message} (${err.code ?? 'error'})`;
}

ui.checkinCode.addEventListener('input', () => {
  if (ui.checkinNote.classList.contains('error')) setCheckinNote('');
});

ui.checkinForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!checkin || checkingIn) return;
  const code = ui.checkinCode.value.replace(/\s+/g, '');
  if (!/^\d{6}$/.test(code)) {
    setCheckinNote('The code is the 6 digits shown on the host\'s screen.', 'error');
    ui.checkinCode.focus();
    return;
  }
  const id = checkin.id;
  checkingIn = true;
  ui.checkinSubmit.disabled = true;
  setCheckinNote('Checking in…');
  try {
    const answer = await requestCheckin(conn, id, code);
    onCheckedIn({ ...answer, checkin: id });
    ui.checkinCode.value = '';
  } catch (err) {
    if (checkin?.id !== id) return;
    setCheckinNote(describeCheckinError(err), 'error');
    if (err.code === 'checkin_closed' || err.code === 'not_found' || err.code === 'too_many_attempts') {
      ui.checkinCode.disabled = true;
    } else {
      ui.checkinCode.select();
      ui.checkinCode.focus();
    }
  } finally {
    checkingIn = false;
    ui.checkinSubmit.disabled = ui.checkinCode.disabled;
  }
});

// ---- the video ----

/** `demo`, `url` (from `?src=`) or `file`. */
let source = 'demo';
let sourceLabel = DEMO_SRC;
let objectUrl = null;

function setSource(kind, url, label) {
  source = kind;
  sourceLabel = label;
  video.src = url;
  video.muted = !ui.sound.classList.contains('on');
  video.play().catch(() => { /* shown by the buttons; a muted video is normally allowed to play */ });
}

video.addEventListener('error', () => {
  if (!video.getAttribute('src')) return; // the reset below
  ui.sourceNote.textContent = source === 'file'
    ? `This browser cannot play “${sourceLabel}”. Pick another video file.`
    : `No video could be played from ${sourceLabel}. Pick a local video file to watch it with the comments.`;
  video.removeAttribute('src');
  video.load();
});
video.addEventListener('loadeddata', () => {
  ui.sourceNote.textContent = source === 'file'
    ? `Playing “${sourceLabel}” from this device (it is not uploaded).`
    : source === 'url' ? `Playing ${sourceLabel}.` : 'Playing the demo stream.';
});

function syncPlay() { ui.play.textContent = video.paused ? 'Play' : 'Pause'; }
video.addEventListener('play', syncPlay);
video.addEventListener('pause', syncPlay);

ui.play.addEventListener('click', () => {
  if (video.paused) video.play().catch(() => {});
  else video.pause();
});

ui.sound.addEventListener('click', () => {
  const on = !ui.sound.classList.contains('on');
  ui.sound.classList.toggle('on', on);
  ui.sound.setAttribute('aria-pressed', String(on));
  ui.sound.textContent = on ? 'Mute' : 'Sound on';
  video.muted = !on;
  if (on && video.paused) video.play().catch(() => {});
});

ui.file.addEventListener('change', () => {
  const file = ui.file.files?.[0];
  if (!file) return;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  ui.sourceNote.textContent = `Opening “${file.name}”…`;
  setSource('file', objectUrl, file.name);
});

// Fullscreen on the player box, so the comments come along.
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

/** The `?src=` video, when it is on this origin (the page's CSP allows no other). */
function requestedSource() {
  const raw = params.get('src');
  if (raw === null || raw === '') return null;
  let url;
  try { url = new URL(raw, location.href); } catch { url = null; }
  if (url && url.origin === location.origin) return url;
  ui.sourceNote.textContent = 'Only videos from this site can play here; showing the demo stream. '
    + 'Pick a local video file to watch another.';
  return null;
}

// ---- start ----

const src = requestedSource();
if (src) setSource('url', src.href, src.pathname);
else setSource('demo', DEMO_SRC, DEMO_SRC);
syncPlay();
connect();
