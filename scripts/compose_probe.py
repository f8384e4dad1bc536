#!/usr/bin/env python3
"""The client side of scripts/compose-check.sh and scripts/compose-cluster-check.sh: talks to the
three services as a user would, over HTTP and WebSocket, with nothing but Python's standard library
(so it runs on a fresh machine).

    compose_probe.py wait                 until every service answers GET /healthz (60 s at most)
    compose_probe.py exercise TAG STATE   post and read back comments on all three services, run a
                                          check-in, and write what to look for later to STATE
    compose_probe.py persisted STATE      check that everything `exercise` stored is still there
    compose_probe.py hold SERVICE OUT     open a WebSocket to ws-video or ws-stream, wait for the
                                          server to close it, write the close code to OUT

Through the cluster's proxy (docker-compose.cluster.yml), where each port leads to two instances:

    compose_probe.py cluster-wait         until every service answers GET /healthz with
                                          {"status":"ok","bus":{"connected":true,...}} (120 s)
    compose_probe.py cluster TAG STATE    use every service through the proxy with two clients at
                                          once, which least_conn puts on different instances: a long
                                          poll woken by a post, a video comment from one viewer to
                                          another, a live room with a host and two viewers and a
                                          check-in; write what to look for later (and in the
                                          instances' logs) to STATE
    compose_probe.py cluster-persisted STATE
                                          check that everything `cluster` stored is still there

Every network wait has a deadline; any failed check exits non-zero with a message.
"""

import base64
import json
import os
import socket
import struct
import sys
import threading
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


def cluster_wait():
    """Each service's /healthz through the proxy, four times in a row on new connections (so both
    instances answer, whatever the balancing), must be ok with the bus connected."""
    deadline = time.monotonic() + 120
    for service, port in PORTS.items():
        good = 0
        last = None
        while good < 4:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as r:
                    last = json.loads(r.read())
            except (OSError, ValueError) as e:
                last = repr(e)
            if isinstance(last, dict) and last.get("status") == "ok" and \
                    (last.get("bus") or {}).get("connected") is True:
                good += 1
                continue
            good = 0
            if time.monotonic() > deadline:
                fail(f"{service} through the proxy on port {port}: GET /healthz answered {last}")
            time.sleep(0.5)
        ok(f"{service} through the proxy: GET /healthz answers {json.dumps(last)}")


def cluster(tag, state_file):
    """See the module docs. The pairs of clients are open at the same time, so least_conn gives the
    second to the instance the first is not on; the shell script then checks in the instances' logs
    that each instance of the pair served one of them."""
    for service, page in [("http-danmaku", "http.html"), ("ws-video", "video.html"),
                          ("ws-stream", "live.html")]:
        body = http("GET", service, "/")
        if "<html" not in body.lower():
            fail(f"{service}: GET / through the proxy is not a page")
        ok(f"{service}: GET / through the proxy serves its page ({page})")

    # http-danmaku: a long poll holds one instance; the post goes to the other and must wake it.
    room = f"cluster-{tag}"
    first = http("POST", "http-danmaku", f"/api/rooms/{room}/danmaku",
                 {"author": "cluster-check", "text": f"{tag} http first"}, expect=201)
    woken = {}

    def long_poll():
        started = time.monotonic()
        woken["page"] = http("GET", "http-danmaku",
                             f"/api/rooms/{room}/danmaku?after={first['id']}&wait=20")
        woken["secs"] = time.monotonic() - started

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(1.0)  # the long poll must be waiting on its instance before the post
    text = f"{tag} http"
    item = http("POST", "http-danmaku", f"/api/rooms/{room}/danmaku",
                {"author": "cluster-check", "text": text}, expect=201)
    poller.join(25)
    if poller.is_alive() or "page" not in woken or texts(woken["page"]["items"]) != [text]:
        fail(f"http-danmaku: the long poll did not get the post: {woken}")
    ok(f"http-danmaku: a long poll through the proxy was answered {woken['secs']:.1f} s after it "
       f"began, by the post of comment {item['id']}")
    for _ in range(4):
        page = http("GET", "http-danmaku", f"/api/rooms/{room}/danmaku?after={first['id']}")
        if texts(page["items"]) != [text]:
            fail(f"http-danmaku: a poll through the proxy lacks the comment: {page}")
    ok("http-danmaku: four polls through the proxy (both instances) read it back")

    # ws-video: two viewers of one video; one sends, the other (on the other instance) gets it.
    video = f"cluster-{tag}"
    a = WebSocket("ws-video", f"/ws/videos/{video}")
    a.expect("hello")
    b = WebSocket("ws-video", f"/ws/videos/{video}")
    b.expect("hello")
    vtext = f"{tag} video"
    a.send({"type": "send", "text": vtext, "time": 2.5, "author": "cluster-check", "ref": "v1"})
    ack = a.expect("ack")
    got = b.expect("danmaku")
    if ack["item"]["id"] not in [i["id"] for i in got["items"]]:
        fail(f"ws-video: the second viewer did not get the comment: {got}")
    ok(f"ws-video: video {video}: a comment sent by one viewer reached the other (id {ack['item']['id']})")

    # ws-stream: two viewers (one per instance), a host, a comment, a check-in across them.
    live = http("POST", "ws-stream", "/api/rooms", {"title": "cluster check"}, expect=201)
    alice = WebSocket("ws-stream", f"/ws/live/{live['room']}?name=alice")
    alice.expect("welcome")
    bob = WebSocket("ws-stream", f"/ws/live/{live['room']}?name=bob")
    bob.expect("welcome")
    host = WebSocket("ws-stream", f"/ws/live/{live['room']}?name=host", bearer=live["host_token"])
    if not host.expect("welcome")["host"]:
        fail("ws-stream: the host token did not make a host")
    ltext = f"{tag} live"
    alice.send({"type": "send", "text": ltext, "ref": "l1"})
    lack = alice.expect("ack")
    for name, ws in [("bob", bob), ("host", host)]:
        seen = ws.expect("danmaku")
        if ltext not in texts(seen["items"]):
            fail(f"ws-stream: alice's comment did not reach {name}: {seen}")
    ok(f"ws-stream: room {live['room']}: alice's comment (id {lack['item']['id']}) reached bob "
       "and the host")
    bearer = {"Authorization": f"Bearer {live['host_token']}"}
    opened = http("POST", "ws-stream", f"/api/rooms/{live['room']}/checkins",
                  {"interval_secs": 5, "duration_secs": 60}, headers=bearer, expect=201)
    code = host.expect("checkin_code")
    for ws in (alice, bob):
        ws.expect("checkin_open")
        ws.send({"type": "checkin", "checkin": opened["id"], "code": code["code"]})
        ws.expect("checked_in")
    names = sorted(host.expect("attendee")["name"] for _ in range(2))
    if names != ["alice", "bob"]:
        fail(f"ws-stream: the host saw the attendees {names}")
    result = http("GET", "ws-stream", f"/api/checkins/{opened['id']}", headers=bearer)
    if sorted(x["name"] for x in result["attendees"]) != ["alice", "bob"]:
        fail(f"ws-stream: the check-in lacks its attendees: {result}")
    ok(f"ws-stream: check-in {opened['id']}: alice and bob checked in with the host's code, "
       "the host saw both")

    with open(state_file, "w") as f:
        json.dump({"http_room": room, "http": text, "video": video, "video_text": vtext,
                   "room": live["room"], "token": live["host_token"], "live": ltext,
                   "checkin": opened["id"]}, f)


def cluster_persisted(state_file):
    with open(state_file) as f:
        state = json.load(f)
    page = http("GET", "http-danmaku", f"/api/rooms/{state['http_room']}/danmaku")
    if state["http"] not in texts(page["items"]):
        fail(f"http-danmaku: the comment is gone after down and up: {page}")
    window = http("GET", "ws-video", f"/api/videos/{state['video']}/danmaku")
    if state["video_text"] not in texts(window["items"]):
        fail(f"ws-video: the comment is gone after down and up: {window}")
    history = http("GET", "ws-stream", f"/api/rooms/{state['room']}/history")
    if state["live"] not in texts(history["items"]):
        fail(f"ws-stream: the comment is gone after down and up: {history}")
    result = http("GET", "ws-stream", f"/api/checkins/{state['checkin']}",
                  headers={"Authorization": f"Bearer {state['token']}"})
    if sorted(a["name"] for a in result["attendees"]) != ["alice", "bob"]:
        fail(f"ws-stream: the attendance is gone after down and up: {result}")
    ok("after down and up: the three comments, the room, its host token and the attendance are "
       "in PostgreSQL")


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
                "hold": (hold, 2), "cluster-wait": (cluster_wait, 0), "cluster": (cluster, 2),
                "cluster-persisted": (cluster_persisted, 1)}
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][1]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    command, _ = commands[args[0]]
    command(*args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
