"""OpenIGTLink over a plain socket, with pyigtl's message classes.

pyigtl's own client and server poll their sockets every 10 ms and keep only
the newest message per device, silently: fine for a viewer, not for a loop
that must count what it drops and answer within a frame. Here the transport
is ours (blocking reads, no polling) and pyigtl packs and unpacks messages.

A message whose body cannot be unpacked leaves the stream in step (its size
was in the header): :class:`BadMessage` says so and the reader goes on. A
header that makes no sense (an absurd body size, bytes that are not a header)
leaves no way to find the next message: :class:`LinkBroken`, reconnect.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Optional

import pyigtl

HEADER_SIZE = pyigtl.MessageBase.IGTL_HEADER_SIZE
MAX_BODY = 64 * 1024 * 1024  # a 4K RGB frame is 25 MB; more is not a frame


class LinkBroken(ConnectionError):
    """The connection is gone or out of step: close it and reconnect."""


@dataclass
class BadMessage(Exception):
    """One message could not be read; the stream is still in step."""

    message_type: str
    device_name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.message_type} message from {self.device_name!r} skipped: {self.reason}"


def recv_exact(sock: socket.socket, size: int) -> bytes:
    view = memoryview(bytearray(size))
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise LinkBroken("the peer closed the connection")
        got += n
    return view.obj  # type: ignore[return-value]


def read_message(sock: socket.socket, max_body: int = MAX_BODY) -> Optional[Any]:
    """The next message (a pyigtl message), or None for a type pyigtl does not know."""
    header = recv_exact(sock, HEADER_SIZE)
    try:
        fields = pyigtl.MessageBase.parse_header(bytes(header))
    except Exception as exc:
        raise LinkBroken(f"unreadable OpenIGTLink header: {exc}") from exc
    size = fields["body_size"]
    if size > max_body:
        raise LinkBroken(f"a {fields['message_type']!r} message announces {size} bytes, over the {max_body} limit")
    body = bytes(recv_exact(sock, size)) if size else b""
    message = pyigtl.MessageBase.create_message(fields["message_type"])
    if message is None:
        return None
    try:
        message.unpack(fields, body)
    except Exception as exc:
        raise BadMessage(fields["message_type"], fields["device_name"], f"{type(exc).__name__}: {exc}") from exc
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
