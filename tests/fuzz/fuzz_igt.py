"""Coverage-guided fuzzing of the OpenIGTLink reader (examples/igt/link.py)
with Atheris: the input is a byte stream sent by a peer.

Each input goes through a real socket pair: ``read_message`` is called until
the stream ends or breaks, as the loop calls it; every IMAGE it returns goes
through the loop's ``frame_from``. A crash is any exception other than the
reader's own (``BadMessage``: skipped, ``LinkBroken``: reconnect) or
``frame_from``'s ``ValueError``, and any message bigger than the bytes that
carried it or than the limits. ``-rss_limit_mb`` turns an allocation the size
of an announced (not sent) body into a crash too.

    python tests/fuzz/fuzz_igt.py CORPUS_DIR -max_total_time=300    # libFuzzer flags
    python tests/fuzz/fuzz_igt.py --replay CORPUS_DIR                # line coverage of the reader
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "examples" / "igt"), str(HERE.parents[1])]

with atheris.instrument_imports(include=["link", "pyigtl"]):
    import link

from orchestrator import frame_from  # noqa: E402  (not instrumented: it imports torch)

# Small limits, so that the fuzzer reaches them with small inputs; every type pyigtl can unpack.
LIMITS = link.Limits(max_body=1 << 16, max_pixels=1 << 12, body_timeout_s=5.0,
                     accept=frozenset({"IMAGE", "STRING", "TRANSFORM", "POINT", "POSITION"}))
TARGETS = ((HERE.parents[1] / "examples" / "igt" / "link.py",
            ("_fill", "recv_exact", "_skip", "parse_header", "content_of", "check_image", "read_message")),
           (HERE.parents[1] / "examples" / "igt" / "orchestrator.py", ("frame_from",)))


def one_input(data: bytes) -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        for _ in range(256):
            try:
                message = link.read_message(b, LIMITS)
            except link.BadMessage:
                continue
            except link.LinkBroken:
                return
            if message is None or message.message_type != "IMAGE":
                continue
            image = message.image
            if image.nbytes > len(data) or image.size > LIMITS.max_pixels * LIMITS.max_components:
                raise AssertionError(f"a {image.nbytes}-byte image from {len(data)} bytes of input")
            try:
                frame, _ = frame_from(message)
            except ValueError:
                continue
            if frame.ndim not in (2, 3) or frame.dtype.name != "uint8":
                raise AssertionError(f"frame_from returned {frame.shape} {frame.dtype}")
    finally:
        a.close()
        b.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replay"]:
        from replay import replay

        replay(one_input, sys.argv[2], TARGETS)
    else:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
