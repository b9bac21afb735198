"""OpenIGTLink over a plain socket, with pyigtl's message classes.

pyigtl's own client and server poll their sockets every 10 ms and keep only
the newest message per device, silently: fine for a viewer, not for a loop
that must count what it drops and answer within a frame. Here the transport
is ours (blocking reads, no polling) and pyigtl packs and unpacks messages.

The reader trusts nothing the peer says about sizes. Every size is checked
against :class:`Limits` before anything of that size is allocated, and the
memory a message takes grows with the bytes that actually arrived, not with
the size its header announces:

* A header that is not one (a header version other than 1 or 2, a type name
  that is not an OpenIGTLink type name), a body over ``max_body`` bytes, or a
  body that stops arriving for ``body_timeout_s`` leaves no way to find the
  next message: :class:`FramingLost` (a :class:`LinkBroken`), close and
  reconnect.
* A message of a type the caller did not ask for is read past in small
  chunks and returned as None: the stream stays in step, nothing is unpacked.
* A message of an accepted type whose body does not add up (extended header
  or metadata sizes beyond the body, an IMAGE whose dimensions, scalar type
  or component count are unknown or over ``max_pixels``, pixel bytes that are
  fewer or more than the dimensions say, an unpacking error):
  :class:`BadMessage`, the stream is still in step and the reader goes on.
"""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, FrozenSet, Mapping, Optional

import pyigtl
from pyigtl.messages import CRC64

HEADER_SIZE = pyigtl.MessageBase.IGTL_HEADER_SIZE
_HEADER = struct.Struct(">H12s20sIIQQ")
_EXTENDED = struct.Struct(">HHII")
# IMAGE content header: version, components, scalar type, endianness,
# coordinates, size (i, j, k), 12 floats of matrix, subvolume offset and size.
_IMAGE_HEADER = struct.Struct(">HBBBBHHH12fHHHHHH")
_TYPE_NAME = re.compile(rb"[A-Za-z0-9_]{1,12}")
_CHUNK = 1 << 20  # bodies are read a MiB at a time: memory follows the bytes received

# OpenIGTLink scalar types and their sizes in bytes (pyigtl's table).
SCALAR_BYTES = {2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 10: 4, 11: 8}

# Defaults, each overridable by an environment variable (read when Limits.from_env runs).
MAX_BODY = 64 * 1024 * 1024  # a 4K RGB frame is 25 MB; more is not a frame
MAX_PIXELS = 4096 * 4096  # i * j * k of one IMAGE
MAX_COMPONENTS = 4  # scalar, RGB, RGBA
BODY_TIMEOUT_S = 5.0  # from a header to the last byte of its body

ENV_MAX_BODY = "SAMGPU_IGT_MAX_BODY_BYTES"
"""Largest message body accepted, in bytes (default 64 MiB); a larger one breaks the link."""
ENV_MAX_PIXELS = "SAMGPU_IGT_MAX_PIXELS"
"""Largest IMAGE accepted, in voxels i*j*k (default 4096*4096); a larger one is skipped."""
ENV_BODY_TIMEOUT = "SAMGPU_IGT_BODY_TIMEOUT_S"
"""Seconds a body may take to arrive once its header is in (default 5); then the link is broken."""
ENV_VERIFY_CRC = "SAMGPU_IGT_VERIFY_CRC"
"""1: check each accepted message's CRC-64 (default 0: TCP already checksums; 13-15 ms/MB on a slow CPU)."""


class LinkBroken(ConnectionError):
    """The connection is gone or out of step: close it and reconnect."""


class FramingLost(LinkBroken):
    """The peer sent something that leaves no way to find the next message: a
    header that is not one, a body over the limit, a body that stalled."""


@dataclass
class BadMessage(Exception):
    """One message could not be read; the stream is still in step."""

    message_type: str
    device_name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.message_type} message from {self.device_name!r} skipped: {self.reason}"


@dataclass(frozen=True)
class Limits:
    """What the reader accepts. ``accept``: the message types it unpacks (others
    are read past and ignored); the rest are the bounds described above."""

    max_body: int = MAX_BODY
    max_pixels: int = MAX_PIXELS
    max_components: int = MAX_COMPONENTS
    body_timeout_s: float = BODY_TIMEOUT_S
    verify_crc: bool = False
    accept: FrozenSet[str] = field(default_factory=lambda: frozenset(("IMAGE", "STRING")))

    def __post_init__(self) -> None:
        for name in ("max_body", "max_pixels", "max_components"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s!r}")
        unknown = set(self.accept) - set(pyigtl.messages.message_type_to_class_constructor)
        if unknown:
            raise ValueError(f"pyigtl cannot unpack {', '.join(sorted(unknown))}")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **explicit: Any) -> Limits:
        """Explicit arguments (not None) first, then the environment, then the defaults."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for key, env, parse in ((("max_body", ENV_MAX_BODY, int), ("max_pixels", ENV_MAX_PIXELS, int),
                                  ("body_timeout_s", ENV_BODY_TIMEOUT, float),
                                  ("verify_crc", ENV_VERIFY_CRC, lambda v: v.strip().lower() in ("1", "true", "yes")))):
            raw = environ.get(env)
            if raw not in (None, ""):
                try:
                    values[key] = parse(raw)
                except ValueError:
                    raise ValueError(f"{env}={raw!r} is not a valid value") from None
        values.update({k: v for k, v in explicit.items() if v is not None})
        return cls(**values)


DEFAULT_LIMITS = Limits()


def _fill(sock: socket.socket, view: memoryview, deadline: Optional[float]) -> None:
    got, size = 0, len(view)
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise FramingLost(f"the body stalled: {got} of {size} bytes in the time allowed")
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise LinkBroken("the peer closed the connection")
        got += n


def recv_exact(sock: socket.socket, size: int, deadline: Optional[float] = None) -> bytes:
    """``size`` bytes. Read a MiB at a time, so that a peer announcing much and
    sending little costs at most a MiB more than it sent."""
    if size <= _CHUNK:
        buffer = bytearray(size)
        _fill(sock, memoryview(buffer), deadline)
        return bytes(buffer)
    parts = []
    left = size
    while left:
        part = bytearray(min(left, _CHUNK))
        _fill(sock, memoryview(part), deadline)
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _skip(sock: socket.socket, size: int, deadline: Optional[float]) -> None:
    scratch = memoryview(bytearray(min(size, 64 * 1024) or 1))
    while size:
        n = min(size, len(scratch))
        _fill(sock, scratch[:n], deadline)
        size -= n


def parse_header(header: bytes) -> dict:
    """The header's fields; FramingLost when the bytes are not an OpenIGTLink header."""
    version, type_raw, device_raw, seconds, fraction, body_size, crc = _HEADER.unpack(header)
    type_name = type_raw.rstrip(b"\0 ")
    if version not in (1, 2) or not _TYPE_NAME.fullmatch(type_name):
        raise FramingLost(f"not an OpenIGTLink header (version {version}, type {type_raw!r})")
    return {
        "header_version": version,
        "message_type": type_name.decode("ascii"),
        # Device names are free text; undecodable bytes must not cost the stream.
        "device_name": device_raw.decode("utf-8", "replace").rstrip(" \t\r\n\0"),
        "timestamp": seconds + pyigtl.messages._igtl_frac_to_nanosec(fraction) * 1e-9,
        "body_size": body_size,
        "crc": crc,
    }


def content_of(fields: dict, body: bytes) -> memoryview:
    """The content part of a body (pyigtl's split), after checking that the
    extended header and metadata sizes fit in it."""
    view = memoryview(body)
    if fields["header_version"] < 2:
        return view
    if len(body) < _EXTENDED.size:
        raise ValueError(f"body of {len(body)} bytes is shorter than the extended header")
    extended, meta_header, meta_body, _ = _EXTENDED.unpack_from(body)
    if extended < _EXTENDED.size or extended + meta_header + meta_body > len(body):
        raise ValueError(f"extended header ({extended}) and metadata ({meta_header} + {meta_body}) "
                         f"sizes exceed the {len(body)}-byte body")
    return view[extended:len(body) - meta_header - meta_body]


def check_image(content: memoryview, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """(k, j, i, components, scalar type) of an IMAGE content; ValueError names what is wrong."""
    if len(content) < _IMAGE_HEADER.size:
        raise ValueError(f"content of {len(content)} bytes is shorter than the image header")
    values = _IMAGE_HEADER.unpack_from(content)
    components, scalar, endian = values[1], values[2], values[3]
    size = values[5:8]
    start, sub = values[20:23], values[23:26]
    if scalar not in SCALAR_BYTES:
        raise ValueError(f"unknown scalar type {scalar}")
    if endian not in (1, 2):
        raise ValueError(f"unknown endianness {endian}")
    if not 1 <= components <= limits.max_components:
        raise ValueError(f"{components} components per pixel (1 to {limits.max_components} accepted)")
    if min(size) < 1:
        raise ValueError(f"image size {size} has an empty axis")
    if start != (0, 0, 0) or tuple(sub) != tuple(size):
        raise ValueError("subvolumes are not accepted")
    pixels = size[0] * size[1] * size[2]
    if pixels > limits.max_pixels:
        raise ValueError(f"image of {size[0]}x{size[1]}x{size[2]} pixels is over the {limits.max_pixels} limit")
    expected = pixels * components * SCALAR_BYTES[scalar]
    got = len(content) - _IMAGE_HEADER.size
    if got != expected:
        raise ValueError(f"{got} bytes of pixels where the header announces {expected}")
    return size[2], size[1], size[0], components, scalar


def read_message(sock: socket.socket, limits: Limits = DEFAULT_LIMITS) -> Optional[Any]:
    """The next message (a pyigtl message), or None for a type not in ``limits.accept``."""
    header = recv_exact(sock, HEADER_SIZE)
    fields = parse_header(header)
    size, kind, device = fields["body_size"], fields["message_type"], fields["device_name"]
    if size > limits.max_body:
        raise FramingLost(f"a {kind!r} message announces {size} bytes, over the {limits.max_body} limit")
    deadline = time.monotonic() + limits.body_timeout_s
    if kind not in limits.accept:
        _skip(sock, size, deadline)
        return None
    body = recv_exact(sock, size, deadline) if size else b""
    if limits.verify_crc and CRC64(body) != fields["crc"]:
        raise BadMessage(kind, device, "CRC-64 does not match the body")
    try:
        content = content_of(fields, body)
        if kind == "IMAGE":
            check_image(content, limits)
        message = pyigtl.MessageBase.create_message(kind)
        message.unpack(fields, body)
    except Exception as exc:
        raise BadMessage(kind, device, f"{type(exc).__name__}: {exc}") from exc
    return message


def image_message(image: Any, device_name: str, timestamp: float, **metadata: Any) -> bytes:
    """An IMAGE message (header version 2 when there is metadata), packed."""
    message = pyigtl.ImageMessage(image, device_name=device_name, timestamp=timestamp)
    return _packed(message, metadata)


def string_message(text: str, device_name: str, timestamp: float, **metadata: Any) -> bytes:
    message = pyigtl.StringMessage(text, device_name=device_name, timestamp=timestamp)
    return _packed(message, metadata)


def _packed(message: Any, metadata: dict) -> bytes:
    if metadata:
        message.header_version = 2
        message.metadata = {key: str(value) for key, value in metadata.items()}
    return message.pack()
