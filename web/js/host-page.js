// The host page: create (or return to) a live room, open a check-in, show its rotating code big, and
// follow the attendance live.
//
// Host rights are the room's host token. It is kept in sessionStorage under the room's name, so a
// reload keeps them (in this tab; another tab or device needs the token pasted), and it is never put
// in the page's address. The codes reach the page only over the host's WebSocket (`checkin_code`);
// attendance arrives there too (`attendee`) and is loaded again over HTTP at every (re)connect, so
// check-ins made while the socket was down are not lost. The room's past check-ins, with their
// counts, are listed from `GET /api/rooms/{room}/checkins` (loaded when hosting starts, and again
// at every reconnect, opening and close), and the whole room's attendance downloads as one CSV.
//
// Countdowns run on this machine's clock. The server's timestamps are moved onto it by an offset,
// first from the HTTP `Date` header (to a second), then from the rotation itself: a code that follows
// the previous one by exactly one interval was issued as it arrived.

import { ApiError, api, describe, json } from './api.js';
import { ChatList, clock } from './chat-list.js';
import { Connection } from './connection.js';
import { ModerationPanel } from './moderation-panel.js';
import { RecordingPanel } from './recording-panel.js';
import { blockListForPage } from './block-panel.js';

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** sessionStorage key prefix: `<prefix><room>` holds `{room, host_token, title, checkin?, interval?}`. */
const HOST_KEY_PREFIX = 'danmaku.host.';
/** Redraw period of the countdowns, in milliseconds. */
const TICK_MS = 100;
/** A code this long past its end with no successor is shown as stale, in milliseconds. */
const STALE_AFTER_MS = 2000;
/** The server's bounds for a check-in, in seconds. */
const INTERVAL_MIN = 2;
const INTERVAL_MAX = 60;
const DURATION_MIN = 10;
const DURATION_MAX = 3600;
/** Past its closing time by this much with no `checkin_closed`, a new check-in may be started, in ms. */
const CLOSE_GRACE_MS = 3000;
/** Chat entries kept on this page. */
const MAX_CHAT = 100;

const $ = (id) => document.getElementById(id);
const ui = {
  roomLabel: $('room-label'), setup: $('setup'), createForm: $('create-form'), title: $('title'),
  create: $('create'), resumeForm: $('resume-form'), room: $('room'), token: $('token'),
  resume: $('resume'), setupError: $('setup-error'), myRoomsBox: $('my-rooms-box'), myRooms: $('my-rooms'),
  hosting: $('hosting'), roomTitle: $('room-title'), status: $('status'), viewers: $('viewers'),
  share: $('share'), copy: $('copy'), copyNote: $('copy-note'), leave: $('leave'), tokenShow: $('token-show'),
  panel: $('checkin-panel'), code: $('code'), progress: $('code-progress'), countdown: $('countdown'),
  closes: $('closes'), checkinForm: $('checkin-form'), interval: $('interval'), duration: $('duration'),
  start: $('start'), error: $('error'), attendeeCount: $('attendee-count'), csv: $('csv'),
  attendees: $('attendees'), chat: $('chat'),
  pastCount: $('past-count'), roomCsv: $('room-csv'), pastNote: $('past-note'), past: $('past-checkins'),
};

// ---- helpers ----

/** `m:ss` for a duration in milliseconds (rounded up, so 0:00 means it is over). */
function minutesSeconds(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, '0')}`;
}

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

/** Sets an element's text only when it changes (the countdowns redraw ten times a second). */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function showError(text) { ui.error.textContent = text; }
function setStatus(text) { ui.status.textContent = text; }
function setViewers(count) {
  ui.viewers.textContent = Number.isInteger(count) ? `· ${count} connected, this screen included` : '';
}

// ---- the server's clock ----

/** The server's clock minus this machine's, in milliseconds. */
let clockOffset = 0;
/** Where `clockOffset` came from: `none`, `date` (an HTTP Date header) or `code` (a rotation). */
let offsetSource = 'none';

function serverNow() { return Date.now() + clockOffset; }

function noteDateHeader(res) {
  if (offsetSource === 'code') return;
  const date = Date.parse(res.headers.get('Date') ?? '');
  // The header is truncated to the second: on average the true time is half a second later.
  if (Number.isFinite(date)) {
    clockOffset = date + 500 - Date.now();
    offsetSource = 'date';
  }
}

// ---- HTTP ----

/**
 * Calls the API as the host (`token`), setting the server's clock from every answer; a refused token
 * says so in the ApiError's message.
 */
async function hostApi(path, options = {}) {
  try {
    return await api(path, { ...options, onResponse: noteDateHeader });
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      err.message = `The host token was not accepted for this room: ${err.message}`;
    }
    throw err;
  }
}

// ---- the host's rooms in this tab ----

/** `{room, host_token, title, checkin?, interval?}` of the room hosted now, or null. */
let host = null;

function loadHost(room) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(HOST_KEY_PREFIX + room) ?? 'null');
    if (saved && saved.room === room && typeof saved.host_token === 'string' && saved.host_token) return saved;
  } catch { /* storage off or a bad entry: nothing saved */ }
  return null;
}

function saveHost() {
  if (!host) return;
  try { sessionStorage.setItem(HOST_KEY_PREFIX + host.room, JSON.stringify(host)); } catch { /* storage off */ }
}

function forgetHost(room) {
  try { sessionStorage.removeItem(HOST_KEY_PREFIX + room); } catch { /* storage off */ }
}

function savedRooms() {
  const rooms = [];
  try {
    for (let i = 0; i < sessionStorage.length; i++) {
      const key = sessionStorage.key(i);
      if (!key?.startsWith(HOST_KEY_PREFIX)) continue;
      const saved = loadHost(key.slice(HOST_KEY_PREFIX.length));
      if (saved && ROOM_RE.test(saved.room)) rooms.push(saved);
    }
  } catch { /* storage off */ }
  return rooms.sort((a, b) => a.room.localeCompare(b.room));
}

function hostUrl(room) { return `/host.html?room=${encodeURIComponent(room)}`; }

// ---- setup ----

function showSetup({ room = '', error = '' } = {}) {
  stopHosting();
  ui.hosting.hidden = true;
  ui.setup.hidden = false;
  ui.roomLabel.textContent = '';
  document.title = 'danmaku · Check-in host';
  ui.room.value = room;
  ui.setupError.textContent = error;
  const rooms = savedRooms();
  ui.myRooms.replaceChildren(...rooms.map((saved) => {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = hostUrl(saved.room);
    a.textContent = saved.title ? `${saved.title} (${saved.room})` : saved.room;
    li.append(a);
    return li;
  }));
  ui.myRoomsBox.hidden = rooms.length === 0;
  const url = new URL(location.href);
  if (room) url.searchParams.set('room', room); else url.searchParams.delete('room');
  history.replaceState(null, '', url);
}

let busy = false;

ui.createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (busy) return;
  const title = ui.title.value.trim();
  busy = true;
  ui.create.disabled = true;
  ui.setupError.textContent = '';
  try {
    const data = await json(await hostApi('/api/rooms', { method: 'POST', body: title ? { title } : {} }));
    if (typeof data?.room !== 'string' || !ROOM_RE.test(data.room) || typeof data.host_token !== 'string') {
      throw new ApiError('bad_answer', 'The server did not answer with a room and a host token.');
    }
    ui.title.value = '';
    begin({ room: data.room, host_token: data.host_token, title: typeof data.title === 'string' ? data.title : title });
  } catch (err) {
    ui.setupError.textContent = `Could not create a room: ${describe(err)}`;
  } finally {
    busy = false;
    ui.create.disabled = false;
  }
});

ui.resumeForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  const token = ui.token.value.trim();
  if (!ROOM_RE.test(room)) {
    ui.setupError.textContent = 'A room name is 1 to 64 letters, digits, _ or -.';
    ui.room.focus();
    return;
  }
  if (!token) {
    ui.setupError.textContent = 'Paste the room\'s host token.';
    ui.token.focus();
    return;
  }
  ui.token.value = '';
  const saved = loadHost(room);
  // Same token as saved: keep what this tab knew (the last check-in); a new token starts afresh.
  begin(saved?.host_token === token ? saved : { room, host_token: token, title: '' });
});

// ---- hosting ----

/** The socket now in use; frames from an older one are ignored. */
let conn = null;

function begin(saved) {
  stopHosting();
  host = saved;
  saveHost();
  const url = new URL(location.href);
  url.searchParams.set('room', host.room);
  history.replaceState(null, '', url);

  ui.setup.hidden = true;
  ui.hosting.hidden = false;
  ui.roomLabel.textContent = `· ${host.room}`;
  ui.roomTitle.textContent = host.title ? `${host.title} (room ${host.room})` : `Room ${host.room}`;
  document.title = `danmaku · Host · ${host.room}`;
  const share = new URL(`/?room=${encodeURIComponent(host.room)}`, location.origin).href;
  ui.share.href = share;
  ui.share.textContent = share;
  ui.copyNote.textContent = '';
  ui.tokenShow.textContent = host.host_token;
  showError('');
  chat.reset();
  current = null;
  code = null;
  attendees.clear();
  renderAttendees();
  ui.panel.hidden = true;
  render();

  ui.past.replaceChildren();
  ui.pastCount.textContent = '';
  ui.pastNote.textContent = '';
  $('recording-video').value = '';
  $('recording-note').textContent = '';
  recording.load();

  connect();
  if (Number.isInteger(host.checkin)) refreshCheckin(host.checkin);
  refreshPast();
}

/** Closes the socket and stops the countdowns (leaving the room or switching to another). */
function stopHosting() {
  const old = conn;
  conn = null;
  old?.close();
  stopTicker();
  host = null;
}

ui.leave.addEventListener('click', () => showSetup());

ui.copy.addEventListener('click', async () => {
  const url = ui.share.href;
  try {
    await navigator.clipboard.writeText(url);
    ui.copyNote.textContent = 'Copied.';
  } catch {
    // No clipboard API (a plain-http address other than localhost): select the link instead.
    const range = document.createRange();
    range.selectNodeContents(ui.share);
    const selection = getSelection();
    selection?.removeAllRanges();
    selection?.addRange(range);
    let copied = false;
    try { copied = document.execCommand('copy'); } catch { /* not supported */ }
    ui.copyNote.textContent = copied ? 'Copied.' : 'Selected: press Ctrl+C (⌘C on a Mac) to copy.';
  }
});

// ---- the connection ----

/** Socket attempts that failed since the last `welcome`, to tell a refused token from a blip. */
let failuresSinceWelcome = 0;

/** The socket's query: read at every (re)connect, as the resume point moves on. The host token is
 *  not in it (addresses end up in logs): connection.js offers it as a subprotocol. */
function socketQuery() {
  const q = new URLSearchParams({ name: 'host' });
  if (chat.lastId !== null) q.set('since', String(chat.lastId));
  return q;
}

/** The server refused the socket (see connection.js): a wrong token goes back to the setup. */
function onRefused({ status, message }) {
  if (status !== 401 && status !== 403) return;
  const room = host.room;
  forgetHost(room);
  showSetup({
    room,
    error: `The server refused the host token for room “${room}”${message ? `: ${message}` : ''}. Paste the right one.`,
  });
  ui.token.focus();
}

function onState(c, { state, attempt, retryInMs, reason }) {
  if (state !== 'open') setViewers(null);
  switch (state) {
    case 'connecting':
      setStatus(`Connecting to room “${host.room}” as host…`);
      break;
    case 'open':
      setStatus('Connected; waiting for the room…');
      break;
    case 'closed':
      break;
    default: {
      if (retryInMs === null) {
        setStatus(`Reconnecting… (attempt ${attempt})`);
        break;
      }
      failuresSinceWelcome += 1;
      const secs = Math.max(1, Math.round(retryInMs / 1000));
      const why = reason ? ` (${reason})` : '';
      let text = `Connection lost${why}; reconnecting in ${secs} s… (attempt ${attempt})`;
      if (failuresSinceWelcome >= 3) {
        text += ' If this goes on, the server may be refusing the host token: choose “Host another room” and paste it again.';
      }
      setStatus(text);
    }
  }
}

function onWelcome(c, f) {
  if (f.host === false) {
    // The server let us in as a plain viewer: the token is not this room's.
    const room = host.room;
    forgetHost(room);
    showSetup({ room, error: `That host token is not the one for room “${room}”. Paste the right one.` });
    ui.token.focus();
    return;
  }
  failuresSinceWelcome = 0;
  setViewers(f.viewers);
  if (f.recovered === false) chat.reset();
  chat.add(f.history);
  setStatus(`Connected as host of room “${host.room}”.`);
  moderation.refresh();
  // What happened while the socket was down: new attendees, or the check-in closing.
  if (current) refreshCheckin(current.id);
  refreshPast();
}

function connect() {
  const c = new Connection(`/ws/live/${encodeURIComponent(host.room)}`, {
    query: socketQuery,
    bearer: () => host?.host_token ?? null,
  });
  conn = c;
  failuresSinceWelcome = 0;
  const on = (type, handler) => c.addEventListener(type, (e) => { if (c === conn) handler(c, e.detail); });
  on('state', onState);
  on('refused', (_, refusal) => onRefused(refusal));
  on('welcome', onWelcome);
  on('viewers', (_, f) => setViewers(f.count));
  on('danmaku', (_, f) => chat.add(f.items));
  on('deleted', (_, f) => chat.remove(Array.isArray(f.ids) ? f.ids : []));
  on('error', (_, f) => showError(`${f.message ?? 'The server reported an error.'} (${f.code ?? 'error'})`));
  on('checkin_open', (_, f) => {
    if (!Number.isInteger(f.checkin)) return;
    setCurrent(f.checkin, f.closes_at);
    refreshCheckin(f.checkin);
    refreshPast();
  });
  on('checkin_code', onCode);
  on('attendee', (_, f) => {
    if (current && f.checkin === current.id && typeof f.name === 'string') {
      addAttendee(f.name, f.at);
      showPastCount(f.checkin, attendees.size);
    }
  });
  on('checkin_closed', (_, f) => {
    refreshPast(); // its final count
    if (!current || f.checkin !== current.id) return;
    markClosed(Number.isInteger(f.attended) ? f.attended : attendees.size);
    refreshCheckin(f.checkin); // the final list
  });
  c.start();
}

// ---- the check-in ----

/** The check-in shown: `{id, closesAt (server ms), closed, attended}`, or null. */
let current = null;
/** The code shown: `{checkin, code, validUntil (server ms), endsLocal (local ms), lengthMs, via}`, or null. */
let code = null;
/** The code interval of the current check-in, in ms, when known. */
let intervalMs = null;
/** The interval asked for by a start still waiting for its answer, in ms. */
let startingIntervalMs = null;

function setCurrent(id, closesAtText) {
  const closesAt = Date.parse(closesAtText ?? '');
  if (current?.id !== id) {
    const known = host.checkin === id && Number.isInteger(host.interval) ? host.interval * 1000 : null;
    intervalMs = startingIntervalMs ?? known;
    current = { id, closesAt, closed: false, attended: null };
    code = null;
    attendees.clear();
    renderAttendees();
    host.checkin = id;
    if (startingIntervalMs === null && known === null) delete host.interval;
    saveHost();
  } else if (Number.isFinite(closesAt)) {
    current.closesAt = closesAt;
  }
  ui.panel.hidden = false;
  if (!current.closed) startTicker();
  render();
}

function markClosed(attended) {
  if (!current) return;
  current.closed = true;
  current.attended = attended;
  code = null;
  stopTicker();
  render();
}

const loading = new Set();

/** Loads a check-in's state and attendance over HTTP (on start, reload and every reconnect). */
async function refreshCheckin(id) {
  if (loading.has(id) || !host) return;
  const forRoom = host.room;
  loading.add(id);
  try {
    const data = await json(await hostApi(`/api/checkins/${encodeURIComponent(id)}`, { token: host.host_token }));
    if (host?.room !== forRoom) return;
    if (current && current.id !== id) return; // a newer check-in took its place
    setCurrent(id, data.closes_at);
    if (Number.isInteger(data.interval_secs) && intervalMs === null) intervalMs = data.interval_secs * 1000;
    const list = Array.isArray(data.attendees) ? data.attendees : [];
    const sorted = list
      .filter((a) => typeof a?.name === 'string')
      .sort((a, b) => (Date.parse(a.at) || 0) - (Date.parse(b.at) || 0));
    for (const a of sorted) if (!attendees.has(a.name)) attendees.set(a.name, a.at);
    renderAttendees();
    syncPastCount();
    if (data.closed === true) markClosed(Math.max(attendees.size, current.attended ?? 0));
  } catch (err) {
    if (host?.room !== forRoom) return;
    if (err.status === 404 && (!current || current.id === id)) {
      // Gone (another database, or a stale id in this tab): stop showing it.
      if (host.checkin === id) { delete host.checkin; saveHost(); }
      if (current?.id === id) { current = null; code = null; stopTicker(); ui.panel.hidden = true; render(); }
      return;
    }
    showError(`Could not load the check-in: ${describe(err)}`);
  } finally {
    loading.delete(id);
  }
}

function onCode(c, f) {
  if (!Number.isInteger(f.checkin) || typeof f.code !== 'string') return;
  if (current?.id !== f.checkin) {
    setCurrent(f.checkin, null);
    refreshCheckin(f.checkin);
  }
  if (current.closed) return;
  const validUntil = Date.parse(f.valid_until);
  const now = Date.now();
  const prev = code?.checkin === f.checkin && code.via === c ? code : null;
  const step = prev && Number.isFinite(validUntil) ? validUntil - prev.validUntil : NaN;
  let endsLocal;
  let lengthMs;
  if (step >= INTERVAL_MIN * 1000 - 100 && step <= INTERVAL_MAX * 1000 + 100
      && Math.abs(now - prev.endsLocal) < 2000) {
    // A rotation, on time: this code was issued as it arrived and lasts one interval.
    intervalMs = step;
    lengthMs = step;
    endsLocal = now + step;
    clockOffset = validUntil - endsLocal;
    offsetSource = 'code';
  } else {
    lengthMs = intervalMs ?? INTERVAL_MAX * 1000;
    const left = Number.isFinite(validUntil) ? validUntil - serverNow() : lengthMs;
    endsLocal = now + clamp(left, 0, lengthMs);
    if (intervalMs === null) lengthMs = Math.max(1000, endsLocal - now);
  }
  code = { checkin: f.checkin, code: f.code, validUntil, endsLocal, lengthMs, via: c };
  showCode(f.code);
  render();
}

function showCode(text) {
  if (/^\d{6}$/.test(text)) {
    // Two groups of three: easier to read from the back of a room.
    const first = document.createElement('span');
    first.textContent = text.slice(0, 3);
    const second = document.createElement('span');
    second.textContent = text.slice(3);
    ui.code.replaceChildren(first, second);
  } else {
    ui.code.textContent = text;
  }
  ui.code.setAttribute('aria-label', [...text].join(' '));
}

let ticker = null;
function startTicker() {
  if (ticker === null) ticker = setInterval(render, TICK_MS);
}
function stopTicker() {
  clearInterval(ticker);
  ticker = null;
}

/** Draws the code panel and the start button from the state (ten times a second while open). */
function render() {
  const openNow = current !== null && !current.closed;
  const overdue = openNow && Number.isFinite(current.closesAt) && serverNow() > current.closesAt + CLOSE_GRACE_MS;
  ui.start.disabled = startBusy || (openNow && !overdue);
  ui.csv.disabled = csvBusy || current === null;
  if (!current) return;

  if (current.closed) {
    ui.code.replaceChildren();
    ui.code.textContent = 'closed';
    ui.code.removeAttribute('aria-label');
    ui.code.classList.add('stale');
    ui.progress.value = 0;
    setText(ui.countdown, '');
    setText(ui.closes, `Closed: ${current.attended ?? attendees.size} attended.`);
    return;
  }

  const now = Date.now();
  if (Number.isFinite(current.closesAt)) {
    const left = current.closesAt - serverNow();
    setText(ui.closes, left > 0
      ? `Check-in closes in ${minutesSeconds(left)} (at ${clock(current.closesAt - clockOffset)}).`
      : 'Check-in closing…');
  } else {
    setText(ui.closes, '');
  }

  if (code) {
    const left = code.endsLocal - now;
    setText(ui.countdown, left > 0 ? `Next code in ${(left / 1000).toFixed(1)} s.` : 'Next code any moment…');
    ui.code.classList.toggle('stale', left < -STALE_AFTER_MS);
    ui.progress.value = clamp(left / code.lengthMs, 0, 1);
  } else {
    ui.code.classList.add('stale');
    ui.code.removeAttribute('aria-label');
    setText(ui.code, '······');
    setText(ui.countdown, 'Waiting for the first code…');
    ui.progress.value = 0;
  }
}

let startBusy = false;

ui.checkinForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (startBusy || !host) return;
  const interval = Number(ui.interval.value);
  const duration = Number(ui.duration.value);
  if (!Number.isInteger(interval) || interval < INTERVAL_MIN || interval > INTERVAL_MAX) {
    showError(`The code changes every ${INTERVAL_MIN} to ${INTERVAL_MAX} seconds (a whole number).`);
    ui.interval.focus();
    return;
  }
  if (!Number.isInteger(duration) || duration < DURATION_MIN || duration > DURATION_MAX) {
    showError(`A check-in stays open ${DURATION_MIN} to ${DURATION_MAX} seconds (a whole number).`);
    ui.duration.focus();
    return;
  }
  const forRoom = host.room;
  startBusy = true;
  startingIntervalMs = interval * 1000;
  showError('');
  render();
  try {
    const data = await json(await hostApi(`/api/rooms/${encodeURIComponent(forRoom)}/checkins`, {
      method: 'POST',
      token: host.host_token,
      body: { interval_secs: interval, duration_secs: duration },
    }));
    if (host?.room !== forRoom) return;
    if (!Number.isInteger(data?.id)) throw new ApiError('bad_answer', 'The server did not answer with a check-in id.');
    setCurrent(data.id, data.closes_at);
    intervalMs = interval * 1000;
    host.interval = interval;
    saveHost();
  } catch (err) {
    if (host?.room === forRoom) showError(`Could not start a check-in: ${describe(err)}`);
  } finally {
    startBusy = false;
    startingIntervalMs = null;
    render();
  }
});

// ---- attendance ----

/** name -> time checked in (RFC 3339), in order of arrival. */
const attendees = new Map();

function attendeeRow(name, at) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'author';
  who.textContent = name;
  const time = document.createElement('time');
  time.dateTime = typeof at === 'string' ? at : '';
  time.textContent = clock(at);
  li.append(who, time);
  return li;
}

function renderCount() {
  ui.attendeeCount.textContent = current ? `(${attendees.size})` : '';
}

/** The whole list again, newest first (the list is `reversed`, so numbers count arrivals). */
function renderAttendees() {
  const rows = [...attendees].map(([name, at]) => attendeeRow(name, at)).reverse();
  ui.attendees.replaceChildren(...rows);
  renderCount();
}

function addAttendee(name, at) {
  if (attendees.has(name)) return; // checking in twice is harmless
  attendees.set(name, at);
  ui.attendees.prepend(attendeeRow(name, at));
  renderCount();
}

let csvBusy = false;

ui.csv.addEventListener('click', async () => {
  if (!current || !host || csvBusy) return;
  const id = current.id;
  csvBusy = true;
  ui.csv.disabled = true;
  try {
    const res = await hostApi(`/api/checkins/${encodeURIComponent(id)}.csv`, { token: host.host_token, accept: 'text/csv' });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `checkin-${host.room}-${id}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    showError(`Could not download the CSV: ${describe(err)}`);
  } finally {
    csvBusy = false;
    ui.csv.disabled = current === null;
  }
});

// ---- past check-ins and the room's attendance ----

/** Whether the list is being loaded, and whether it must be loaded again when that ends. */
let pastLoading = false;
let pastAgain = false;

/** One check-in of the list: when it opened, how many attended, and whether it is still open. */
function pastRow(c) {
  const li = document.createElement('li');
  li.dataset.checkin = String(c.id);
  const time = document.createElement('time');
  time.dateTime = c.opened_at;
  const opened = new Date(c.opened_at);
  time.textContent = Number.isNaN(opened.getTime())
    ? ''
    : `${opened.toLocaleDateString()} ${clock(opened)}`;
  const count = document.createElement('span');
  count.className = 'count';
  count.textContent = `${c.attended} attended`;
  li.append(time, count);
  if (!c.closed) {
    const open = document.createElement('span');
    open.className = 'muted';
    open.textContent = 'open now';
    li.append(open);
  }
  return li;
}

/** Keeps the open check-in's count in the list current as names arrive (no reload per name). */
function showPastCount(id, attended) {
  const count = pastCount(id);
  if (count) count.textContent = `${attended} attended`;
}

/** The count element of check-in `id` in the list, if it is listed. */
function pastCount(id) {
  return ui.past.querySelector(`li[data-checkin="${id}"] .count`);
}

/**
 * The open check-in's count in the list, after the list or the attendance was loaded: names that
 * arrived (as frames) while the list was on its way, or that the attendance brought, count too.
 */
function syncPastCount() {
  if (!current || current.closed) return;
  const listed = Number.parseInt(pastCount(current.id)?.textContent ?? '', 10);
  if (!(listed >= attendees.size)) showPastCount(current.id, attendees.size);
}

/** Loads the room's check-ins with their counts, newest first on screen. */
async function refreshPast() {
  if (!host) return;
  if (pastLoading) { pastAgain = true; return; }
  const forRoom = host.room;
  pastLoading = true;
  try {
    const data = await json(await hostApi(`/api/rooms/${encodeURIComponent(forRoom)}/checkins`, { token: host.host_token }));
    if (host?.room !== forRoom) return;
    const list = (Array.isArray(data.checkins) ? data.checkins : [])
      .filter((c) => Number.isInteger(c?.id) && Number.isInteger(c.attended) && typeof c.opened_at === 'string');
    ui.past.replaceChildren(...list.map(pastRow).reverse());
    syncPastCount();
    ui.pastCount.textContent = list.length ? `(${list.length})` : '';
    ui.pastNote.textContent = data.truncated === true ? `Only the newest ${list.length} are listed.` : '';
  } catch (err) {
    if (host?.room === forRoom) ui.pastNote.textContent = `Could not load the past check-ins: ${describe(err)}`;
  } finally {
    pastLoading = false;
    if (pastAgain) { pastAgain = false; refreshPast(); }
  }
}

let roomCsvBusy = false;

ui.roomCsv.addEventListener('click', async () => {
  if (!host || roomCsvBusy) return;
  const room = host.room;
  roomCsvBusy = true;
  ui.roomCsv.disabled = true;
  ui.pastNote.textContent = '';
  try {
    const res = await hostApi(`/api/rooms/${encodeURIComponent(room)}/attendance.csv`, { token: host.host_token, accept: 'text/csv' });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `attendance-${room}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    ui.pastNote.textContent = `Could not download the attendance: ${describe(err)}`;
  } finally {
    roomCsvBusy = false;
    ui.roomCsv.disabled = false;
  }
});

// ---- the chat view ----

// Each line has the host's Delete and Mute buttons (see moderation-panel.js).
const moderation = new ModerationPanel({
  words: $('banned-words'), wordsForm: $('words-form'), mutes: $('mutes'), log: $('moderation-log'),
  note: $('moderation-note'), host: () => (host ? { room: host.room, token: host.host_token } : null),
});
/** The viewer's block list applies to the host's chat view too. */
const blocks = blockListForPage();
const recording = new RecordingPanel({
  form: $('recording-form'), video: $('recording-video'), start: $('recording-start'),
  mark: $('mark-start'), marked: $('start-marked'), note: $('recording-note'),
  host: () => host,
});
const chat = new ChatList(ui.chat, {
  max: MAX_CHAT, maxSeen: MAX_CHAT * 20, actions: (item) => moderation.actions(item),
  hides: (item) => blocks.hides(item),
});
blocks.addEventListener('change', () => chat.refilter());

// ---- start ----

const requested = new URLSearchParams(location.search).get('room');
if (requested !== null && ROOM_RE.test(requested)) {
  const saved = loadHost(requested);
  if (saved) {
    begin(saved);
  } else {
    showSetup({ room: requested });
    ui.setupError.textContent = `To host room “${requested}”, paste its host token, or create a new room.`;
    ui.token.focus();
  }
} else {
  showSetup();
  if (requested !== null) {
    ui.setupError.textContent = `“${requested}” is not a valid room name (letters, digits, _ and -, up to 64).`;
  }
}
