// A peer of ws-stream for `danmaku versus`: Node's http server and the `ws` package. Each room
// keeps the set of its connections; a comment is serialized once, to one Buffer, and that
// Buffer is sent to every open connection of the room (the sender too), as the `ws` README's
// broadcast example does.
//
//   PORT=0 node node-server.js   # prints "listening on http://127.0.0.1:PORT" on stderr
//
// The protocol (and what this does not do, such as storing comments) is in rooms.js.

import http from "node:http";
import { WebSocket, WebSocketServer } from "ws";

import { Rooms, handle, host, port, welcome, MAX_MESSAGE_BYTES } from "./rooms.js";

const rooms = new Rooms();
/** The open connections of each room, by room id. */
const members = new Map();

const server = http.createServer((req, res) => {
  res.writeHead(404, { "content-type": "text/plain" }).end("not found");
});
const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });

server.on("upgrade", (req, socket, head) => {
  const joined = rooms.join(req.url);
  if (!joined) {
    socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => connected(ws, joined));
});

function connected(ws, { room, name }) {
  let clients = members.get(room.id);
  if (!clients) {
    clients = new Set();
    members.set(room.id, clients);
  }
  clients.add(ws);
  room.viewers += 1;
  ws.send(welcome(room, name));
  ws.on("message", (data, isBinary) => {
    const { reply, publish } = handle(room, name, isBinary ? "" : data.toString());
    ws.send(reply);
    if (publish) {
      const frame = Buffer.from(publish);
      for (const client of clients) {
        if (client.readyState === WebSocket.OPEN) client.send(frame, { binary: false });
      }
    }
  });
  ws.on("close", () => {
    clients.delete(ws);
    room.viewers -= 1;
  });
  ws.on("error", () => {});
}

server.listen(port(), host(), () => {
  const { address, port } = server.address();
  console.error(`listening on http://${address}:${port}`);
});
