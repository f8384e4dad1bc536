// A peer of ws-stream for `danmaku versus`: Bun.serve with its built-in WebSocket pub/sub.
// Each connection subscribes to its room's topic; a comment is serialized once and handed to
// `server.publish`, which writes it to every subscriber (the sender too) in native code.
//
//   PORT=0 bun bun-server.js     # prints "listening on http://127.0.0.1:PORT" on stderr
//
// The protocol (and what this does not do, such as storing comments) is in rooms.js.

import { Rooms, handle, host, port, welcome, MAX_MESSAGE_BYTES } from "./rooms.js";

const rooms = new Rooms();

const server = Bun.serve({
  hostname: host(),
  port: port(),
  fetch(req, server) {
    const url = new URL(req.url);
    const joined = rooms.join(url.pathname + url.search);
    if (!joined) return new Response("not found", { status: 404 });
    if (server.upgrade(req, { data: joined })) return undefined;
    return new Response("a WebSocket upgrade is expected", { status: 400 });
  },
  websocket: {
    maxPayloadLength: MAX_MESSAGE_BYTES,
    open(ws) {
      const { room, name } = ws.data;
      room.viewers += 1;
      ws.subscribe(room.id);
      ws.send(welcome(room, name));
    },
    message(ws, message) {
      const { room, name } = ws.data;
      const text = typeof message === "string" ? message : message.toString();
      const { reply, publish } = handle(room, name, text);
      ws.send(reply);
      if (publish) server.publish(room.id, publish);
    },
    close(ws) {
      ws.data.room.viewers -= 1;
    },
  },
});

console.error(`listening on http://${server.hostname}:${server.port}`);
