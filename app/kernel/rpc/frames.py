"""Framing of streamed RPC answers: ``kind (1 byte) | length (4 bytes, big-endian) | payload``.

Kinds: ``I`` an item, ``E`` an error body (ends the stream), ``Z`` the normal end. A stream that
stops without ``E`` or ``Z`` was cut off, and the caller says so rather than returning a prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = ["END", "ERROR", "ITEM", "STREAM_MEDIA_TYPE", "FrameReader", "frame"]

ITEM, ERROR, END = b"I", b"E", b"Z"
STREAM_MEDIA_TYPE = "application/x-quarry-stream"
_HEADER = struct.Struct(">cI")


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame."""
    return _HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Turns a byte stream, fed in arbitrary pieces, into ``(kind, payload)`` frames."""

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Add bytes; yield every frame now complete. Raises ``ValueError`` on a bad header."""
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buffer)
            if kind not in (ITEM, ERROR, END) or size > self._max_frame:
                raise ValueError("malformed stream frame")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield kind, payload

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)
