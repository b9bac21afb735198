"""Packing on the loop's clock: the same bytes as pyigtl, less host time.

pyigtl's ``pack`` computes the body's CRC-64 (ECMA-182, what OpenIGTLink
uses) with crcmod, one byte at a time, while holding the interpreter lock:
about 13 ms for a 480x640 frame on a slow CPU (3-4 ms on a fast one). The
loop pays it for every label map it answers and the frame source for every
frame it sends, and a thread that holds the lock that long delays the other
threads of its process, which is where part of a tail comes from.

* :func:`label_message` packs a label map as pyigtl would, byte for byte,
  with a CRC that skips the rows that hold only zeros: for a CRC with zero
  initial value and no final xor, appending ``n`` zero bytes multiplies the
  register by ``x^(8n)`` modulo the polynomial, a few dozen 64-bit
  operations instead of ``n`` table steps. A label map is mostly background,
  so only the rows with a structure are read byte by byte.
* :func:`restamp` puts a new send time into a message packed earlier (the
  timestamp is in the header, outside the CRC): the source packs its frames
  ahead of time and stamps each when it goes out.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Tuple

import numpy as np
import pyigtl
from link import image_message
from pyigtl.messages import CRC64, _igtl_nanosec_to_frac

POLY = 0x142F0E1EBA9EA3693  # CRC-64/ECMA-182, with its x^64 term
TIMESTAMP_OFFSET = 2 + 12 + 20  # version, type, device name
IMAGE_HEADER_SIZE = 72  # OpenIGTLink IMAGE content header, version 1


def _mulmod(a: int, b: int) -> int:
    """a * b modulo POLY over GF(2), both of degree < 64."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> 64:
            a ^= POLY
    return result


def _byte_tables(factor: int) -> List[List[int]]:
    """Multiplication by ``factor`` modulo POLY as eight 256-entry tables, one
    per byte of the register (the map is linear over GF(2))."""
    tables = []
    for byte in range(8):
        basis = [_mulmod(1 << (8 * byte + bit), factor) for bit in range(8)]
        table = [0] * 256
        for value in range(1, 256):
            low = value & -value
            table[value] = table[value ^ low] ^ basis[low.bit_length() - 1]
        tables.append(table)
    return tables


# For each i, the shift by 2^i zero bytes (x^(8 * 2^i) mod POLY) as tables,
# made when first needed.
_ZERO_SHIFTS: Dict[int, List[List[int]]] = {}


def _zero_shift(bit: int) -> List[List[int]]:
    found = _ZERO_SHIFTS.get(bit)
    if found is None:
        factor = 1 << 8
        for _ in range(bit):
            factor = _mulmod(factor, factor)
        found = _ZERO_SHIFTS[bit] = _byte_tables(factor)
    return found


def crc_zeros(crc: int, count: int) -> int:
    """The register after ``count`` more zero bytes."""
    bit = 0
    while count:
        if count & 1:
            t = _zero_shift(bit)
            crc = (t[0][crc & 255] ^ t[1][(crc >> 8) & 255] ^ t[2][(crc >> 16) & 255] ^ t[3][(crc >> 24) & 255]
                   ^ t[4][(crc >> 32) & 255] ^ t[5][(crc >> 40) & 255] ^ t[6][(crc >> 48) & 255] ^ t[7][crc >> 56])
        count >>= 1
        bit += 1
    return crc


def crc64_sparse(parts: List[Any]) -> int:
    """CRC-64 of the concatenation of ``parts``: bytes-like, or an int ``n``
    standing for ``n`` zero bytes."""
    crc = 0
    for part in parts:
        if isinstance(part, int):
            crc = crc_zeros(crc, part)
        elif len(part):
            crc = CRC64(part, crc)
    return crc


_image_headers: Dict[Tuple[int, int], bytes] = {}


def _image_header(height: int, width: int) -> bytes:
    """pyigtl's 72-byte IMAGE content header for a (1, H, W) uint8 frame, made once per size."""
    found = _image_headers.get((height, width))
    if found is None:
        message = pyigtl.ImageMessage(np.zeros((1, height, width), np.uint8), device_name="x")
        found = _image_headers[(height, width)] = message._pack_content()[:IMAGE_HEADER_SIZE]
    return found


def label_message(label: np.ndarray, device_name: str, timestamp: float, **metadata: Any) -> bytes:
    """``link.image_message(label[None], ...)`` for a 2D uint8 label map: the same
    bytes (as a ``bytearray``, which sockets take as they are)."""
    if label.ndim != 2 or label.dtype != np.uint8 or not metadata:
        return image_message(label[None], device_name, timestamp, **metadata)
    height, width = label.shape
    # Metadata and extended header as pyigtl packs them (header version 2).
    meta_header = struct.pack(">H", len(metadata))
    meta_body = b""
    for key, value in metadata.items():
        encoded_key = key.encode("utf8")
        encoded_value, encoding = pyigtl.MessageBase.encode_text(str(value))
        meta_header += struct.pack(">HHI", len(encoded_key), encoding, len(encoded_value))
        meta_body += encoded_key + encoded_value
    head = struct.pack(">HHII", 12, len(meta_header), len(meta_body), 0) + _image_header(height, width)
    tail = meta_header + meta_body
    body_size = len(head) + height * width + len(tail)
    header_size = pyigtl.MessageBase.IGTL_HEADER_SIZE
    out = bytearray(header_size + body_size)  # zeros: the background is already there
    pixels_at = header_size + len(head)
    out[header_size:pixels_at] = head
    out[pixels_at + height * width :] = tail
    label = np.ascontiguousarray(label)
    words = label.view(np.uint64) if width % 8 == 0 else label  # eight pixels at a time
    rows = np.flatnonzero(words.any(axis=1))
    if rows.size:
        first, last = int(rows[0]), int(rows[-1]) + 1
        band = label[first:last].reshape(-1)
        np.frombuffer(out, np.uint8)[pixels_at + first * width : pixels_at + last * width] = band
        parts = [head, first * width, band, (height - last) * width, tail]
    else:
        parts = [head, height * width, tail]
    seconds = int(timestamp)
    fraction = _igtl_nanosec_to_frac(int((timestamp - seconds) * 10**9))
    struct.pack_into(">H12s20sIIQQ", out, 0, 2, b"IMAGE", device_name.encode("utf8"), seconds, fraction, body_size,
                     crc64_sparse(parts))
    return out


def restamp(raw: bytes, timestamp: float) -> bytes:
    """A packed message with its header timestamp replaced (pyigtl's encoding)."""
    seconds = int(timestamp)
    fraction = _igtl_nanosec_to_frac(int((timestamp - seconds) * 10**9))
    out = bytearray(raw)
    struct.pack_into(">II", out, TIMESTAMP_OFFSET, seconds, fraction)
    return bytes(out)
