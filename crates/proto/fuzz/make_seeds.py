#!/usr/bin/env python3
"""Writes the hand-made seed corpora of the protocol fuzz targets (valid frames and short
valid sessions). Run from anywhere; rewrites corpus/*/seed-*."""
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
CONTROL, DATA, EOF, CREDIT, RESET = range(5)


def frame(kind, stream=0, payload=b""):
    body = bytes([kind]) + struct.pack("<I", stream) + payload
    return struct.pack("<I", len(body)) + body


def control(msg):
    return frame(CONTROL, 0, json.dumps(msg, separators=(",", ":")).encode())


host = {
    "hello": control({"type": "hello", "protocol": 2}),
    "ping": control({"type": "ping", "nonce": 7}),
    "spawn": control({"type": "spawn", "id": 1,
                      "spec": {"argv": ["echo", "hi"], "env": [["A", "b"]], "cwd": "/"},
                      "stdin": 5, "stdout": 1, "stderr": 3}),
    "connect": control({"type": "connect", "stream": 9, "port": 8080}),
    "shutdown": control({"type": "shutdown"}),
}
guest = {
    "hello": control({"type": "hello", "protocol": 2, "kernel_release": "6.1.0",
                      "boot_id": "b00t"}),
    "pong": control({"type": "pong", "nonce": 7}),
    "exited": control({"type": "exited", "id": 1, "status": {"code": 0}}),
    "path_sent": control({"type": "path_sent", "stream": 3, "error": None}),
}
plain = {
    "data": frame(DATA, 1, b"hello\n"),
    "data_bin": frame(DATA, 2, bytes(range(256))),
    "eof": frame(EOF, 1),
    "credit": frame(CREDIT, 1, struct.pack("<I", 65536)),
    "reset": frame(RESET, 3),
}


def write(target, name, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


for name, f in {**plain, **{"h-" + k: v for k, v in host.items()},
                **{"g-" + k: v for k, v in guest.items()}}.items():
    write("frame_decode", name, f)

# Sessions: what each side would receive from a well-behaved peer.
stdout = frame(DATA, 1, b"out\n") + frame(EOF, 1)
write("session_host", "boot", guest["hello"] + guest["pong"])
write("session_host", "process", guest["hello"] + stdout + frame(DATA, 3, b"err") +
      frame(EOF, 3) + guest["exited"])
write("session_host", "credit-reset", frame(CREDIT, 1, struct.pack("<I", 1024)) +
      frame(RESET, 1) + frame(DATA, 2, b"x" * 100) + frame(EOF, 2))
write("session_guest", "boot", host["hello"] + host["ping"])
write("session_guest", "spawn-stdin", host["hello"] + host["spawn"] +
      frame(DATA, 5, b"input\n") + frame(EOF, 5) + frame(CREDIT, 1, struct.pack("<I", 4096)))
write("session_guest", "connect", host["connect"] + frame(DATA, 9, b"GET / HTTP/1.0\r\n\r\n") +
      frame(RESET, 9) + host["shutdown"])
