"""Write seed corpora for the fuzz targets from the project's test data.

usage: make_seeds.py SOURCE_DIR VECTORS_DIR OUT_DIR
"""
import glob
import hashlib
import json
import os
import sys


def put(d, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


# control: byte 0 flags (bit 0 shutting down, bit 1 reload available, bit 2
# pad the first line to the 64 KiB cap, bits 3-6 log2 of the write chunk,
# bit 7 small socket buffers),
# byte 1 where a padded line ends (16: at the cap, 17: one byte over), then
# request lines as hyphactl sends them (docs/control.md's commands)
CONTROL_REQUESTS = [
    {"cmd": "status", "table": True}, {"cmd": "status"}, {"cmd": "status", "name": "risk"},
    {"cmd": "status", "name": "risk[1]", "table": True}, {"cmd": "health"},
    {"cmd": "restart", "name": "risk"}, {"cmd": "stop", "name": "risk[0]"}, {"cmd": "start", "name": "feed"},
    {"cmd": "reload"}, {"cmd": "metrics"},
    {"cmd": "tail", "name": "risk", "lines": 10, "follow": False},
    {"cmd": "tail", "name": "risk[1]", "lines": 3, "follow": True},
    {"cmd": "tap", "types": ["TextMessage"]}, {"cmd": "tap", "types": ["CounterUpdate", 1001, "1003"], "count": 5},
]
CONTROL_ODD = [
    b'{"cmd":"status","name":"a[99999999999]"}', b'{"cmd":"stop","name":"a["}', b'{"cmd":"tail","name":"[0]"}',
    b'{"cmd":"tail","name":"risk","lines":99999999999999999999}', b'{"cmd":"tap","types":[65536,-1,1e3,null]}',
    b'{"cmd":"tap","types":[1001],"count":0}', b'{"cmd":"st\u0000atus"}', b'{"cmd":"status","cmd":"health"}',
    b'{"cmd":"\xff\xfe"}', b"[" * 2100,  # deeper than jansson's 2048
    b'{"cmd":"x' + "\u00e9".encode() * 700 + b'"}',  # its refusal cut inside a character (fixed)
    b'{"cmd":"health"}\r\n\r\n\n{"cmd":"metrics"}', b"\x00\x01\x02 not json",
]


def control_seeds(d):
    lines = [compact(r) for r in CONTROL_REQUESTS]
    for line in lines:
        put(d, b"\x32\x00" + line + b"\n")  # running, reload, 64-byte chunks
        put(d, b"\x31\x00" + line)  # shutting down, no reload, no last newline
    put(d, b"\x7a\x00" + b"\n".join(lines) + b"\n")  # every command on one connection
    put(d, b"\xfa\x00" + b"\n".join(lines) + b"\n")  # the same, its replies waiting for room
    put(d, b"\x02\x00" + b"\n".join(lines[:3]))  # one byte at a time
    for line in CONTROL_ODD:
        put(d, b"\x4a\x00" + line + b"\n")
    for knob in (15, 16, 17):  # the 64 KiB line cap: under, at, over
        put(d, b"\x76" + bytes([knob]) + lines[0] + b"\n" + lines[4] + b"\n")


# wproto: byte 0 flags (bit 0 the instance is starting, bit 1 pad the first
# frame to the 64 KiB cap), byte 1 where it ends; then control frames, one
# per line, as the Python runtime (python-runtime/hypha/worker.py) writes them
def wproto_seeds(d, digest):
    hello = compact({"op": "hello", "schema": digest, "subscribe": [1001, 1002], "pid": 4242})
    frames = [hello, compact({"op": "ready"}), compact({"op": "heartbeat"}), compact({"op": "stats", "failed": 3}),
              compact({"op": "subscribe", "types": ["CounterUpdate", 1003, "1001"]}),
              compact({"op": "unsubscribe", "types": [1002]})]
    odd = [compact({"op": "hello", "schema": "", "subscribe": []}), compact({"op": "hello", "schema": "0" * 64}),
           compact({"op": "subscribe", "types": "TextMessage"}), compact({"op": "subscribe", "types": [0, 65536, -1]}),
           compact({"op": "dance"}), compact({"no": "op"}), b"[1,2]", b"{not json", b"",
           compact({"op": "stats"}), compact({"op": "stats", "failed": -1}),
           compact({"op": "subscribe", "types": [1001] * 4096}), compact({"op": "subscribe", "types": [1] * 4097}),
           compact({"op": "subscribe", "types": [1001] * 4000, "pad": [0] * 200}),
           b"[" + b",".join([b"0"] * 4159) + b"]", b"[" + b",".join([b"0"] * 4160) + b"]"]
    put(d, b"\x01\x00" + b"\n".join(frames))
    for f in frames + odd:
        put(d, b"\x00\x00" + f)
    for knob in (15, 16, 17):  # the 64 KiB frame cap: under, at, over
        put(d, b"\x03" + bytes([knob]) + frames[3] + b"\n" + frames[1])


def main():
    src, vectors, out = sys.argv[1:4]
    frames = []
    for c in json.load(open(os.path.join(vectors, "wire-vectors.json"))):
        for m in c["messages"]:
            frames.append(bytes.fromhex(m["frame_hex"]))
    # the first byte of a TLV seed picks the chunk size the target feeds with
    for i, f in enumerate(frames):
        put(os.path.join(out, "tlv"), bytes([i]) + f)
    put(os.path.join(out, "tlv"), b"\x03" + b"".join(frames))
    put(os.path.join(out, "tlv"), b"\x01" + b"\x00\x00\x00\x00\x00\x00" + frames[0][:9])
    # decode: byte 0 picks the message (in the target's order: examples, defi,
    # game, each sorted by type id), the rest is the payload
    order = {}
    for name in ("examples", "defi", "game"):
        for c in json.load(open(os.path.join(vectors, "wire-vectors.json"))):
            if c["contracts"] == f"mycelium-{name}.contracts.yaml":
                for m in sorted(c["messages"], key=lambda m: m["type_id"]):
                    order[len(order)] = bytes.fromhex(m["payload_hex"])
    for i, payload in order.items():
        put(os.path.join(out, "decode"), bytes([i]) + payload)
        put(os.path.join(out, "decode"), bytes([i]) + b"\xff" * len(payload))
    # listen_hs: byte 0 picks the schema (0-2) and, with 0x80, a handshake
    # first; the rest is what the client sends: frames from byte 0, or after it
    for i, f in enumerate(frames):
        for schema in range(3):
            put(os.path.join(out, "listen_hs"), bytes([schema]) + f[:40])
            put(os.path.join(out, "listen_hs"), bytes([0x80 | schema]) + f[:20])
    put(os.path.join(out, "listen_hs"), b"\x00\x20\x00" + bytes(32))  # type 32, another digest
    put(os.path.join(out, "listen_hs"), b"\x01GET / HTTP/1.1\r\n\r\n")
    for path in glob.glob(os.path.join(vectors, "*.contracts.yaml")):
        put(os.path.join(out, "contracts"), open(path, "rb").read())
    topo = [os.path.join(src, "config", "demo.yaml")]
    topo += glob.glob(os.path.join(src, "tests", "data", "*.yaml"))
    for path in topo:
        data = open(path, "rb").read().replace(b"schema: contracts.yaml", b"schema: contracts.yaml")
        put(os.path.join(out, "topology"), data)
    control_seeds(os.path.join(out, "control"))
    vectors_json = json.load(open(os.path.join(vectors, "wire-vectors.json")))
    digest = next(c["schema_digest"] for c in vectors_json if c["contracts"] == "mycelium-examples.contracts.yaml")
    wproto_seeds(os.path.join(out, "wproto"), digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
