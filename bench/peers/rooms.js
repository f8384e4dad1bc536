// The part of ws-stream's live-room protocol that `danmaku bench` uses, shared by the two
// peers so that they differ only in how they fan out (bun-server.js, node-server.js).
//
// A connection opens `/ws/live/{room}?name=...` and is greeted with a `welcome` (the room, its
// viewers, the last 50 comments, the name, host false). A `send` frame gets an `ack` carrying
// the comment as the room numbered it, and the same comment goes to every connection of the
// room in a `danmaku` frame. `ping` gets `pong`; any other frame gets an `error` frame and the
// connection stays.
//
// What ws-stream does and these do not: store comments (ws-stream commits each one to SQLite,
// with fsync, before anyone sees it; here the id is a counter in memory and a restart forgets
// everything), rate limits, origin and per-client connection checks, check-ins, `since` resume,
// viewer-count frames, heartbeats, per-viewer queue bounds.

/// Comments a welcome carries, as ws-stream.
export const HISTORY = 50;
/// Longest comment, in characters (Unicode scalar values), as shared-model's limits.
export const MAX_TEXT_CHARS = 100;
/// Longest name, in characters.
export const MAX_NAME_CHARS = 24;
/// Largest frame a client may send, bytes (shared-model's MAX_MESSAGE_BYTES).
export const MAX_MESSAGE_BYTES = 4 * 1024;

const ROOM_PATH = /^\/ws\/live\/([A-Za-z0-9_-]{1,64})$/;
const COLOR = /^#[0-9a-fA-F]{6}$/;
const MODES = new Set(["scroll", "top", "bottom"]);

/** One room: its id counter, its last comments and how many are connected. */
export class Room {
  constructor(id) {
    this.id = id;
    this.nextId = 1;
    this.history = [];
    this.viewers = 0;
  }
}

/** The rooms by id; a room is made on first join and kept (as ws-stream keeps its rows). */
export class Rooms {
  constructor() {
    this.byId = new Map();
    this.guests = 0;
  }

  /**
   * The room and the connection's name for an upgrade to `url` (a path and query), or null
   * when the path is not a live room's.
   */
  join(url) {
    const parsed = new URL(url, "http://localhost");
    const match = ROOM_PATH.exec(parsed.pathname);
    if (!match) return null;
    const asked = parsed.searchParams.get("name");
    const name =
      asked && [...asked].length <= MAX_NAME_CHARS ? asked : `guest-${++this.guests}`;
    let room = this.byId.get(match[1]);
    if (!room) {
      room = new Room(match[1]);
      this.byId.set(room.id, room);
    }
    return { room, name };
  }
}

/** The welcome frame of a connection that just joined `room` as `name`. */
export function welcome(room, name) {
  return JSON.stringify({
    type: "welcome",
    room: room.id,
    viewers: room.viewers,
    history: room.history,
    name,
    host: false,
  });
}

function error(code, message, ref = null) {
  return JSON.stringify({ type: "error", code, message, ref });
}

/**
 * What a text frame from `name` in `room` means: `reply` for the sender alone, and `publish`,
 * when set, the frame for every connection of the room (serialized once here, whatever the
 * number of viewers).
 */
export function handle(room, name, text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch (e) {
    return { reply: error("invalid_json", `a frame is a JSON object: ${e.message}`) };
  }
  if (frame === null || typeof frame !== "object") {
    return { reply: error("invalid_json", "a frame is a JSON object") };
  }
  const ref = frame.ref ?? null;
  switch (frame.type) {
    case "ping":
      return { reply: JSON.stringify({ type: "pong" }) };
    case "send":
      break;
    default:
      return { reply: error("unknown_type", "a live room takes send and ping frames", ref) };
  }
  const { text: body, color, mode } = frame;
  if (typeof body !== "string" || body.trim() === "") {
    return { reply: error("text_empty", "text must not be empty", ref) };
  }
  if ([...body].length > MAX_TEXT_CHARS) {
    return { reply: error("text_too_long", `text is at most ${MAX_TEXT_CHARS} characters`, ref) };
  }
  if (color != null && !(typeof color === "string" && COLOR.test(color))) {
    return { reply: error("invalid_color", "color must be #rrggbb", ref) };
  }
  if (mode != null && !MODES.has(mode)) {
    return { reply: error("invalid_mode", "mode must be scroll, top or bottom", ref) };
  }
  const item = {
    id: room.nextId++,
    channel: room.id,
    author: name,
    text: body,
    color: color ? color.toLowerCase() : "#ffffff",
    mode: mode ?? "scroll",
    sent_at: new Date().toISOString(),
  };
  room.history.push(item);
  if (room.history.length > HISTORY) room.history.shift();
  return {
    reply: JSON.stringify({ type: "ack", ref, item }),
    publish: JSON.stringify({ type: "danmaku", items: [item] }),
  };
}

/** The port to listen on: `PORT` (0, the default, for any free one). */
export function port() {
  const raw = process.env.PORT ?? "0";
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    throw new Error(`PORT must be a port number, not ${JSON.stringify(raw)}`);
  }
  return value;
}

/** The address to listen on: `HOST` (default 127.0.0.1). */
export function host() {
  return process.env.HOST ?? "127.0.0.1";
}
