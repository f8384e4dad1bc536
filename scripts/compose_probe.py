#!/usr/bin/env python3
"""The client side of scripts/compose-check.sh: talks to the three services as a user would, over
HTTP and WebSocket, with nothing but Python's standard library (so it runs on a fresh machine).

    compose_probe.py wait                 until every service answers GET /healthz (60 s at most)
    compose_probe.py exercise TAG STATE   post and read back comments on all three services, run a
                                          check-in, and write what to look for later to STATE
    compose_probe.py persisted STATE      check that everything `exercise` stored is still there
    compose_probe.py hold SERVICE OUT     open a WebSocket to ws-video or ws-stream, wait for the
                                          server to close it, write the close code to OUT

Every network wait has a deadline; any failed check exits non-zero with a message.
"""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

HOST = os.environ.get("DANMAKU_HOST", "127.0.0.1")
PORTS = {"http-danmaku": 8081, "ws-video": 8082, "ws-stream": 8083}
TIMEOUT = 10.0


def fail(message):
    print(f"compose_probe: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message):
    print(f"  ok  {message}")


def http(method, service, path, body=None, headers=None, expect=200):
    """One request; the decoded JSON answer (or text), failing unless the status is `expect`."""
    url = f"http://{HOST}:{PORTS[service]}{path}"
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    if status != expect:
        fail(f"{method} {url}: status {status}, expected {expect}: {raw[:300]!r}")
    if kind.startswith("application/json"):
        return json.loads(raw)
    return raw.decode(errors="replace")


class WebSocket:
    """A minimal RFC 6455 client: text frames, pings answered, close frames reported."""

    def __init__(self, service, path, bearer=None):
        self.sock = socket.create_connection((HOST, PORTS[service]), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        # A host token goes in a header, never in the URL (the service refuses it there).
        auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORTS[service]}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"{auth}Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail(f"{service} {path}: closed during the WebSocket handshake")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        status = head.split(b" ", 2)[1]
        if status != b"101":
            fail(f"{service} {path}: upgrade answered {head.decode(errors='replace')!r}")

    def _send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        else:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, frame):
        self._send(0x1, json.dumps(frame).encode())

    def _read(self, n, deadline):
        while len(self.buffer) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                fail("no WebSocket frame before the deadline")
            if not chunk:
                raise ConnectionError("the connection ended")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self, timeout=TIMEOUT):
        """The next JSON frame, or ("close", code) when the server closes."""
        deadline = time.monotonic() + timeout
        while True:
            b0, b1 = self._read(2, deadline)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8, deadline))[0]
            payload = self._read(n, deadline)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x1:
                return json.loads(payload)
            elif opcode == 0x8:
                return ("close", struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)

    def expect(self, kind, timeout=TIMEOUT):
        """The next frame of type `kind`, skipping others (viewer counts, say)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, tuple):
                fail(f"closed with {frame[1]} while waiting for {kind!r}")
            if frame.get("type") == kind:
                return frame


def texts(items):
    return [item["text"] for item in items]


def wait():
    deadline = time.monotonic() + 60
    for service, port in PORTS.items():
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as r:
                    if json.loads(r.read()) == {"status": "ok"}:
                        ok(f"{service}: GET /healthz answers {{\"status\": \"ok\"}}")
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                fail(f"{service} did not answer GET /healthz on port {port} within 60 s")
            time.sleep(0.25)


def exercise(tag, state_file):
    for service, page in [("http-danmaku", "http.html"), ("ws-video", "video.html"),
                          ("ws-stream", "live.html")]:
        body = http("GET", service, "/")
        if "<html" not in body.lower():
            fail(f"{service}: GET / is not a page")
        ok(f"{service}: GET / serves its page ({page})")

    # http-danmaku: post, then read back with the cursor.
    text = f"{tag} http"
    item = http("POST", "http-danmaku", "/api/rooms/compose-check/danmaku",
                {"author": "compose-check", "text": text}, expect=201)
    page = http("GET", "http-danmaku", f"/api/rooms/compose-check/danmaku?after={item['id'] - 1}")
    if texts(page["items"]) != [text] or page["next"] != item["id"]:
        fail(f"http-danmaku: the cursor poll did not return the comment: {page}")
    ok(f"http-danmaku: POST stored comment {item['id']}, the cursor poll returns it")

    # ws-video: the WebSocket send, ack, fan-out and range; the HTTP twin, DPlayer and Bilibili.
    video = WebSocket("ws-video", "/ws/videos/compose-check")
    hello = video.expect("hello")
    vtext = f"{tag} video"
    video.send({"type": "send", "text": vtext, "time": 1.5, "author": "compose-check", "ref": "c1"})
    ack = video.expect("ack")
    if ack["ref"] != "c1" or ack["item"]["text"] != vtext:
        fail(f"ws-video: unexpected ack {ack}")
    pushed = video.expect("danmaku")
    if ack["item"]["id"] not in [i["id"] for i in pushed["items"]]:
        fail(f"ws-video: the danmaku frame lacks the comment: {pushed}")
    video.send({"type": "range", "from": 0, "to": 10, "ref": 2})
    window = video.expect("range")
    if vtext not in texts(window["items"]) or window["ref"] != 2:
        fail(f"ws-video: range lacks the comment: {window}")
    video.send({"type": "ping"})
    video.expect("pong")
    ok(f"ws-video: WebSocket hello ({hello['viewers']} viewer), send -> ack + danmaku, range, ping")
    listed = http("GET", "ws-video", "/api/videos/compose-check/danmaku?from=0&to=10")
    if vtext not in texts(listed["items"]):
        fail(f"ws-video: GET /api/videos/.../danmaku lacks the comment: {listed}")
    dplayer = http("GET", "ws-video", "/dplayer/v3/?id=compose-check")
    if dplayer["code"] != 0 or vtext not in [row[4] for row in dplayer["data"]]:
        fail(f"ws-video: the DPlayer list lacks the comment: {dplayer}")
    xml = http("GET", "ws-video", "/api/videos/compose-check/danmaku.xml")
    if vtext not in xml:
        fail("ws-video: the Bilibili export lacks the comment")
    ok("ws-video: the comment is in the HTTP window, the DPlayer list and the Bilibili export")

    # ws-stream: a created room, a host and a viewer, a comment, a check-in.
    room = http("POST", "ws-stream", "/api/rooms", {"title": "compose check"}, expect=201)
    host = WebSocket("ws-stream", f"/ws/live/{room['room']}?name=host", bearer=room["host_token"])
    if not host.expect("welcome")["host"]:
        fail("ws-stream: the host token did not make a host")
    viewer = WebSocket("ws-stream", f"/ws/live/{room['room']}?name=viewer")
    welcome = viewer.expect("welcome")
    ltext = f"{tag} live"
    viewer.send({"type": "send", "text": ltext, "ref": "l1"})
    lack = viewer.expect("ack")
    seen = host.expect("danmaku")
    if lack["item"]["author"] != "viewer" or ltext not in texts(seen["items"]):
        fail(f"ws-stream: the comment did not reach the host: {lack} {seen}")
    ok(f"ws-stream: room {room['room']} created; viewer {welcome['name']}'s comment reached the host")
    bearer = {"Authorization": f"Bearer {room['host_token']}"}
    opened = http("POST", "ws-stream", f"/api/rooms/{room['room']}/checkins",
                  {"interval_secs": 5, "duration_secs": 60}, headers=bearer, expect=201)
    code = host.expect("checkin_code")
    viewer.expect("checkin_open")
    viewer.send({"type": "checkin", "checkin": opened["id"], "code": code["code"]})
    viewer.expect("checked_in")
    host.expect("attendee")
    result = http("GET", "ws-stream", f"/api/checkins/{opened['id']}", headers=bearer)
    if [a["name"] for a in result["attendees"]] != ["viewer"]:
        fail(f"ws-stream: the check-in lacks its attendee: {result}")
    ok(f"ws-stream: check-in {opened['id']}: code pushed to the host only, viewer checked in")

    with open(state_file, "w") as f:
        json.dump({"http": text, "video": vtext, "live": ltext, "room": room["room"],
                   "token": room["host_token"], "checkin": opened["id"]}, f)


def persisted(state_file):
    with open(state_file) as f:
        state = json.load(f)
    page = http("GET", "http-danmaku", "/api/rooms/compose-check/danmaku")
    if state["http"] not in texts(page["items"]):
        fail(f"http-danmaku: the comment is gone after the restart: {page}")
    window = http("GET", "ws-video", "/api/videos/compose-check/danmaku")
    if state["video"] not in texts(window["items"]):
        fail(f"ws-video: the comment is gone after the restart: {window}")
    history = http("GET", "ws-stream", f"/api/rooms/{state['room']}/history")
    if state["live"] not in texts(history["items"]):
        fail(f"ws-stream: the comment is gone after the restart: {history}")
    result = http("GET", "ws-stream", f"/api/checkins/{state['checkin']}",
                  headers={"Authorization": f"Bearer {state['token']}"})
    if [a["name"] for a in result["attendees"]] != ["viewer"]:
        fail(f"ws-stream: the attendance is gone after the restart: {result}")
    ok("after down and up: all three comments, the room, its host token and the attendance are there")


def hold(service, out):
    path = "/ws/videos/compose-check" if service == "ws-video" else "/ws/live/compose-check"
    ws = WebSocket(service, path)
    ws.expect("hello" if service == "ws-video" else "welcome")
    with open(out + ".ready", "w"):
        pass
    deadline = time.monotonic() + 60
    code = None
    try:
        while time.monotonic() < deadline:
            frame = ws.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, tuple):
                code = frame[1]
                break
    except ConnectionError:
        code = "no close frame"
    with open(out, "w") as f:
        f.write(f"{code}\n")


def main(args):
    commands = {"wait": (wait, 0), "exercise": (exercise, 2), "persisted": (persisted, 1),
                "hold": (hold, 2)}
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][1]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    command, _ = commands[args[0]]
    command(*args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
