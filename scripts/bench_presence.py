#!/usr/bin/env python3
"""Measures what presence changes cost the server with many streams open (a benchmark, not a
test): starts a release server on a temporary data dir, opens STREAMS WebSocket streams for
members of one room, makes TOGGLES presence changes, and prints the server's CPU time for the
toggles with no stream open and with all of them open.

    cargo build --release -p homeserver --bin homeserver
    scripts/bench_presence.py [STREAMS=100] [TOGGLES=300]      # BIN=path measures another build

Only the standard library: the streams are raw sockets that complete the WebSocket handshake
and then are left to fill their receive buffers, which is all the server needs to fan out.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("BIN", os.path.join(root, "target", "release", "homeserver"))
streams = int(sys.argv[1]) if len(sys.argv) > 1 else 100
toggles = int(sys.argv[2]) if len(sys.argv) > 2 else 300

data = tempfile.mkdtemp()
env = dict(os.environ, RUST_LOG="warn",
           # Limits this benchmark must not hit (older builds ignore these).
           HOMESERVER_LIMITS__MAX_STREAMS_PER_PARTICIPANT="100000",
           HOMESERVER_LIMITS__PRESENCE_PER_PARTICIPANT__BURST="1000000",
           HOMESERVER_LIMITS__PRESENCE_PER_PARTICIPANT__PER_MINUTE="1000000",
           HOMESERVER_LIMITS__LOGIN_PER_ADDRESS__BURST="1000000",
           HOMESERVER_LIMITS__ROOM_CREATION_PER_PARTICIPANT__BURST="1000000")
server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                          stdout=subprocess.PIPE, env=env, text=True)
base = None
for line in server.stdout:
    if "listening on " in line:
        base = line.split("listening on ")[1].strip()
        break
host, port = base.removeprefix("http://").split(":")


def call(method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body or {}).encode(),
                                 headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req) as r:
        return json.load(r)["data"]


def cpu_ms():
    with open(f"/proc/{server.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def open_stream(token):
    s = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/stream?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return s


def toggle_run(token):
    t0, c0 = time.time(), cpu_ms()
    for i in range(toggles):
        call("PUT", "/v1/presence", token, {"status": "busy" if i % 2 == 0 else "online"})
    return cpu_ms() - c0, time.time() - t0


try:
    toggler = call("POST", "/v1/auth/register", body={"username": "toggler", "password": "bench-password"})
    room = call("POST", "/v1/rooms", toggler["access_token"], {"room_type": "public", "name": "bench"})["id"]
    watcher = call("POST", "/v1/auth/register", body={"username": "watcher", "password": "bench-password"})
    call("POST", f"/v1/rooms/{room}/join", watcher["access_token"])
    quiet_cpu, quiet_wall = toggle_run(toggler["access_token"])
    socks = [open_stream(watcher["access_token"]) for _ in range(streams)]
    time.sleep(0.5)
    busy_cpu, busy_wall = toggle_run(toggler["access_token"])
    print(f"{toggles} presence changes, no stream open:   server CPU {quiet_cpu} ms, {quiet_wall * 1000:.0f} ms wall")
    print(f"{toggles} presence changes, {streams} streams open: server CPU {busy_cpu} ms, {busy_wall * 1000:.0f} ms wall"
          f" ({busy_cpu / max(quiet_cpu, 1):.1f}x)")
    # What reached the streams (WebSocket frames, presence and hello), to check that both builds
    # did the same work.
    received = 0
    for s in socks:
        s.setblocking(False)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except BlockingIOError:
            pass
        s.close()
    print(f"bytes received by the streams: {received}")
finally:
    server.terminate()
    server.wait()
