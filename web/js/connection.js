// The WebSocket connection shared by the pages: JSON frames tagged by `type`, requests answered by
// `ref`, reconnection with backoff, and a keep-alive.
//
// A frame that answers a request (an `ack`, `range` or `error` whose `ref` matches one sent by
// `request`) settles that request's promise and is not dispatched as an event. Every other frame is
// dispatched as a CustomEvent named after its type (`hello`, `danmaku`, `viewers`, `error`, …) with the
// frame as `detail`. A request still waiting when the socket closes is rejected (`disconnected`): the
// server may or may not have done it, and the page decides whether to ask again once reopened.
//
// Events besides the frames:
// - `state`: `detail` is `{state, attempt, retryInMs, code, reason}`; `state` is `connecting` (the
//   first attempt), `open`, `reconnecting` (waiting to retry, or retrying) or `closed` (by `close()`).
// - `open`: `detail` is `{reopened}`; the page asks again for what it needs (also the `onOpen` option).
// - `refused`: the server refused the upgrade, and why: `detail` is `{status, code, message}` (`code`
//   and `message` from the JSON error body, each null when it has none). A browser hides a refused
//   upgrade's answer, so after the first failed attempt of a run of failures (one where the socket
//   never opened) the same address is asked over plain HTTP, which gets the same checks (origin,
//   name, token). Statuses that retrying can fix (400, which is also what an HTTP request that passed
//   the checks gets, 429 and 5xx) are not refusals. The connection keeps retrying: the page decides
//   whether to `close()` it.
//
// Secrets never go in the address (addresses end up in logs and history): a `bearer` token (the
// live service's host token) is offered as the WebSocket subprotocol `danmaku.bearer.<token>`
// beside `danmaku`, which the server selects, and the refusal probe sends it as
// `Authorization: Bearer <token>`.

import { readError } from './api.js';

/** First wait before reconnecting, in milliseconds; it doubles after each failed attempt. */
const BACKOFF_START_MS = 500;
/** Longest wait before reconnecting, in milliseconds. */
const BACKOFF_MAX_MS = 15_000;
/** A connection open this long counts as healthy: the next drop retries after the shortest wait. */
const STABLE_MS = 5_000;
/** How long a request (or an opening socket, or a ping) may wait for its answer, in milliseconds. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Interval of the application-level `ping`, in milliseconds. */
const PING_INTERVAL_MS = 20_000;
/** Close code this side uses when it gives up on a silent or stuck socket (4000-4999: private use). */
const CLOSE_GIVING_UP = 4000;
/** The subprotocol offered beside a bearer token; the server selects it. */
const SUBPROTOCOL = 'danmaku';
/** A subprotocol carrying a bearer token after this prefix (a browser cannot set headers on a WebSocket). */
const BEARER_SUBPROTOCOL_PREFIX = 'danmaku.bearer.';

/** A failed request: `code` is the server's error code, or `timeout`, `disconnected`, `not_connected`, `closed`. */
export class RequestError extends Error {
  /**
   * @param {string} code stable code
   * @param {string} message a sentence for people
   */
  constructor(code, message) {
    super(message);
    this.name = 'RequestError';
    this.code = code;
  }
}

export class Connection extends EventTarget {
  /**
   * @param {string} path the socket's path on this page's host, e.g. `/ws/videos/demo`
   * @param {object} [options]
   * @param {object|URLSearchParams|(() => (object|URLSearchParams|null))} [options.query] query
   *   parameters; a function is called at every (re)connect, so it can carry a resume point
   * @param {(info: {reopened: boolean}) => void} [options.onOpen] called each time the socket opens
   * @param {number} [options.requestTimeoutMs] how long a request waits for its answer
   * @param {number} [options.pingIntervalMs] interval of the keep-alive `ping`
   * @param {string|(() => (string|null))} [options.bearer] a token proving a role (the host
   *   token), sent outside the address; a function is called at every (re)connect
   */
  constructor(path, options = {}) {
    super();
    this.path = path;
    this.query = options.query ?? null;
    this.onOpen = options.onOpen ?? null;
    this.requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.pingIntervalMs = options.pingIntervalMs ?? PING_INTERVAL_MS;
    this.bearer = options.bearer ?? null;

    /** @type {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
    this.state = 'idle';
    this.ws = null;
    this.attempt = 0; // failed attempts since the last healthy connection
    this.openedOnce = false;
    this.openedSinceFailure = false; // a socket opened since the last failure: a drop, not a refusal
    this.probed = false; // this run of failures was already asked about (see `refused`)
    this.nextRef = 1;
    /** ref -> {resolve, reject, timer, expect} */
    this.pending = new Map();
    this.timers = { retry: null, connect: null, ping: null, pong: null, stable: null };

    // Retry at once when the network or the tab comes back, instead of sitting out the backoff.
    this.wakeUp = () => {
      if (this.timers.retry !== null && !document.hidden) {
        clearTimeout(this.timers.retry);
        this.timers.retry = null;
        this.connect();
      }
    };
  }

  /** Opens the socket (once; later calls do nothing). Returns `this`. */
  start() {
    if (this.state !== 'idle') return this;
    window.addEventListener('online', this.wakeUp);
    document.addEventListener('visibilitychange', this.wakeUp);
    this.connect();
    return this;
  }

  /** Closes for good: no reconnect; waiting requests are rejected with `closed`. */
  close() {
    if (this.state === 'closed') return;
    window.removeEventListener('online', this.wakeUp);
    document.removeEventListener('visibilitychange', this.wakeUp);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      ws.close(1000, 'page closed the connection');
    }
    this.failPending('closed', 'The connection was closed.');
    this.setState('closed', {});
  }

  /** True when frames can be sent now. */
  get isOpen() {
    return this.state === 'open' && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Sends a frame without waiting for an answer. False when the socket is not open. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends `frame` with a fresh `ref`; resolves with the answering frame (`ack`, `range`, …), rejects
   * with a RequestError on a matching `error` frame, a timeout, or a closed socket.
   */
  request(frame) {
    if (!this.isOpen) {
      return Promise.reject(new RequestError('not_connected', 'Not connected to the server right now.'));
    }
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RequestError('timeout', 'The server did not answer in time.'));
      }, this.requestTimeoutMs);
      this.pending.set(ref, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  // ---- inside ----

  /** The path and query to connect to (the query is read anew). */
  target() {
    const raw = typeof this.query === 'function' ? this.query() : this.query;
    const query = raw ? new URLSearchParams(raw).toString() : '';
    return `${this.path}${query ? `?${query}` : ''}`;
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}${this.target()}`;
  }

  /** The bearer token now, or null. */
  token() {
    const token = typeof this.bearer === 'function' ? this.bearer() : this.bearer;
    return typeof token === 'string' && token ? token : null;
  }

  /** The subprotocols to offer: none without a token (a plain viewer). */
  protocols() {
    const token = this.token();
    return token ? [SUBPROTOCOL, `${BEARER_SUBPROTOCOL_PREFIX}${token}`] : [];
  }

  connect() {
    this.timers.retry = null;
    this.setState(this.openedOnce || this.attempt > 0 ? 'reconnecting' : 'connecting', {});
    let ws;
    try {
      ws = new WebSocket(this.url(), this.protocols());
    } catch (err) {
      // A malformed URL: retrying cannot help, but keep the page's state honest.
      this.scheduleRetry(0, String(err?.message ?? err));
      return;
    }
    this.ws = ws;
    this.timers.connect = setTimeout(() => this.giveUp('the connection took too long to open'), this.requestTimeoutMs);
    ws.onopen = () => this.opened();
    ws.onmessage = (event) => this.received(event.data);
    ws.onclose = (event) => this.closed(event.code, event.reason);
    // `error` is always followed by `close`, which does the work.
    ws.onerror = () => {};
  }

  opened() {
    clearTimeout(this.timers.connect);
    this.timers.connect = null;
    const reopened = this.openedOnce;
    this.openedOnce = true;
    this.openedSinceFailure = true;
    this.probed = false;
    this.timers.stable = setTimeout(() => { this.attempt = 0; }, STABLE_MS);
    this.timers.ping = setInterval(() => this.ping(), this.pingIntervalMs);
    this.setState('open', {});
    this.dispatchEvent(new CustomEvent('open', { detail: { reopened } }));
    this.onOpen?.({ reopened });
  }

  ping() {
    if (!this.send({ type: 'ping' }) || this.timers.pong !== null) return;
    // Any frame clears this (see `received`): silence for the whole timeout means a dead link
    // that the browser may take minutes to notice on its own.
    this.timers.pong = setTimeout(() => this.giveUp('the server stopped answering'), this.requestTimeoutMs);
  }

  received(data) {
    clearTimeout(this.timers.pong);
    this.timers.pong = null;
    if (typeof data !== 'string') return; // the protocol is JSON text only
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn('connection: a frame that is not JSON', data.slice(0, 200));
      return;
    }
    if (frame === null || typeof frame !== 'object' || typeof frame.type !== 'string') return;

    const waiting = frame.ref != null ? this.pending.get(frame.ref) : undefined;
    if (waiting) {
      this.pending.delete(frame.ref);
      clearTimeout(waiting.timer);
      if (frame.type === 'error') {
        waiting.reject(new RequestError(String(frame.code ?? 'error'), String(frame.message ?? 'The request failed.')));
      } else {
        waiting.resolve(frame);
      }
      return;
    }
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
  }

  closed(code, reason) {
    this.ws = null;
    this.clearTimers();
    this.failPending('disconnected', 'The connection closed before the server answered.');
    this.scheduleRetry(code, reason);
  }

  /** Abandons a socket that is stuck opening or has gone silent, then retries. */
  giveUp(reason) {
    const ws = this.ws;
    if (!ws) return;
    detach(ws);
    try { ws.close(CLOSE_GIVING_UP, reason); } catch { /* already closing */ }
    this.closed(CLOSE_GIVING_UP, reason);
  }

  scheduleRetry(code, reason) {
    if (this.state === 'closed') return;
    const ceiling = Math.min(BACKOFF_START_MS * 2 ** this.attempt, BACKOFF_MAX_MS);
    // Jitter: anywhere in the upper half, so many pages dropped at once do not return at once.
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.timers.retry = setTimeout(() => this.connect(), delay);
    this.setState('reconnecting', { retryInMs: delay, code, reason });
    if (!this.openedSinceFailure && !this.probed) {
      this.probed = true;
      this.probeRefusal();
    }
    this.openedSinceFailure = false;
  }

  /** Asks over plain HTTP why the upgrade fails; dispatches `refused` when the server refuses it. */
  async probeRefusal() {
    let res;
    try {
      const token = this.token();
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      res = await fetch(this.target(), { cache: 'no-store', headers });
    } catch {
      return; // unreachable: the `state` events say so already
    }
    if (res.status === 400 || res.status === 429 || res.status < 400 || res.status >= 500) return;
    const { code, message } = await readError(res);
    if (this.state === 'closed') return;
    this.dispatchEvent(new CustomEvent('refused', { detail: { status: res.status, code, message } }));
  }

  failPending(code, message) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new RequestError(code, message));
    }
    this.pending.clear();
  }

  clearTimers() {
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.connect);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.stable);
    this.timers = { retry: null, connect: null, ping: null, pong: null, stable: null };
  }

  setState(state, { retryInMs = null, code = null, reason = '' }) {
    this.state = state;
    const detail = { state, attempt: this.attempt, retryInMs, code, reason };
    this.dispatchEvent(new CustomEvent('state', { detail }));
  }
}

/**
 * A sentence for a `refused` event's detail, with the code after it, e.g.
 * `The server refused to connect: pages from … may not open WebSockets here (origin_not_allowed)`.
 */
export function describeRefusal({ status, code, message }) {
  return `The server refused to connect: ${message ?? `status ${status}`} (${code ?? status})`;
}

/** Stops a socket's handlers from reaching the connection (it is being abandoned). */
function detach(ws) {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}
