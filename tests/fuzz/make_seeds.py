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
    return 0


if __name__ == "__main__":
    sys.exit(main())
