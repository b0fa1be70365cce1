"""A minimal TensorBoard event-file writer for scalars (no TensorFlow, no tensorboardX).

File format (TFRecord framing of ``Event`` protocol buffers):
each record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
(little-endian), ``masked(c) = ((c >> 15 | c << 17) + 0xa282ead8) mod 2³²``, CRC-32C (Castagnoli,
reflected polynomial 0x82F63B78). ``Event``: wall_time = 1 (double), step = 2 (int64), file_version = 3
(string), summary = 5; ``Summary.value`` = 1; ``Value``: tag = 1 (string), simple_value = 2 (float).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int) -> bytes:
    return _varint((num << 3) | wire)


def _bytes_field(num: int, data: bytes) -> bytes:
    return _field(num, 2) + _varint(len(data)) + data


def encode_event(*, wall_time: float, step: int = 0, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    """Serialise one ``Event`` protocol buffer."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        out += _bytes_field(5, summary)
    return out


def frame(record: bytes) -> bytes:
    """TFRecord framing of one record."""
    n = struct.pack("<Q", len(record))
    return n + struct.pack("<I", masked_crc32c(n)) + record + struct.pack("<I", masked_crc32c(record))


class EventWriter:
    """Append scalar summaries to ``logdir/events.out.tfevents.<time>.<host>``."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._f = open(self.path, "ab")
        self._f.write(frame(encode_event(wall_time=time.time(), file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._f.write(frame(encode_event(wall_time=time.time(), step=step, scalars=values)))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_records(path: str | Path) -> list[bytes]:
    """The records of a TFRecord file, with both CRCs checked (raises ``ValueError`` on corruption)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<Q", data, i)
        (c1,) = struct.unpack_from("<I", data, i + 8)
        if c1 != masked_crc32c(data[i: i + 8]):
            raise ValueError(f"{path}: corrupt length CRC at byte {i}")
        rec = data[i + 12: i + 12 + n]
        (c2,) = struct.unpack_from("<I", data, i + 12 + n)
        if c2 != masked_crc32c(rec):
            raise ValueError(f"{path}: corrupt data CRC at byte {i}")
        out.append(rec)
        i += 16 + n
    return out
