"""Mycelium TLV frames: ``u16 type LE | u32 length LE | payload``.

Pure functions and a small incremental decoder; no I/O.
"""
import struct
from typing import List, Tuple

HEADER = struct.Struct("<HI")
HEADER_SIZE = HEADER.size  # 6
MAX_PAYLOAD = 16777216  # 16 MiB: MAX_PAYLOAD_SIZE in mycelium-protocol's codec.rs (hyphad's HY_TLV_MAX_PAYLOAD)
CONTROL_TYPE = 0  # reserved: hyphad <-> worker control frames (JSON)


class ProtocolError(Exception):
    """The byte stream is not a valid sequence of frames."""


def encode(type_id: int, payload: bytes) -> bytes:
    """One whole frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
    return HEADER.pack(type_id, len(payload)) + payload


class Decoder:
    """Accepts bytes in any chunking and returns whole frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames = []
        off = 0
        n = len(buf)
        unpack = HEADER.unpack_from
        while n - off >= HEADER_SIZE:
            type_id, length = unpack(buf, off)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame length {length} is over the {MAX_PAYLOAD}-byte limit")
            end = off + HEADER_SIZE + length
            if end > n:
                break
            frames.append((type_id, bytes(buf[off + HEADER_SIZE:end])))
            off = end
        if off:
            del buf[:off]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame received only in part."""
        return len(self._buf)
