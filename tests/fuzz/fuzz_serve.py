"""Coverage-guided fuzzing of the Serve request decoding (examples/serve/segment.py)
with Atheris, PIL's PNG and JPEG readers instrumented too.

First byte of the input: 0, the rest is a whole request body (JSON, base64,
prompts, then the image); 1, the rest is the image bytes alone (so that the
fuzzer need not get through base64 to reach the image decoders). What is
decoded: ``decode_request``, ``as_arrays``, ``image_size`` (header only), then
``decode_frame`` on the CPU (torchvision's decoders, the pixels). A crash is
any exception but ``BadRequest`` with 400 or 413, a frame whose shape is not
the header's or over the pixel limit; ``-rss_limit_mb`` turns a decompression
bomb into a crash.

    python tests/fuzz/fuzz_serve.py CORPUS_DIR -max_total_time=300
    python tests/fuzz/fuzz_serve.py --replay CORPUS_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "examples" / "serve"), str(HERE.parents[1])]

with atheris.instrument_imports(include=["segment", "PIL"]):
    import PIL.Image
    import PIL.JpegImagePlugin
    import PIL.PngImagePlugin  # noqa: F401
    import segment

import torch  # noqa: E402
import torchvision.io  # noqa: E402,F401  (imported here: its first import takes seconds, not an input's fault)

torch.set_num_threads(1)
LIMITS = segment.Limits(max_body_bytes=1 << 20, max_pixels=1 << 20, max_points=16)
CPU = torch.device("cpu")
TARGETS = ((HERE.parents[1] / "examples" / "serve" / "segment.py",
            ("decode_request", "image_size", "decode_frame", "_decode_png", "as_arrays")),)


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] % 2 == 0:
            encoded, prompts = segment.decode_request(data[1:], LIMITS)
            segment.as_arrays(prompts)
        else:
            encoded = data[1:]
        size = segment.image_size(encoded, LIMITS)
        frame = segment.decode_frame(encoded, CPU, size)
    except segment.BadRequest as exc:
        if exc.status not in (400, 413):
            raise AssertionError(f"status {exc.status}") from exc
        return
    if tuple(frame.shape) != (*size, 3) or frame.dtype != torch.uint8 or size[0] * size[1] > LIMITS.max_pixels:
        raise AssertionError(f"decoded {tuple(frame.shape)} {frame.dtype}, header {size}")


def _warm_up() -> None:
    """One PNG and one JPEG decoded before the clock starts (lazy initialisation
    of the decoders would otherwise count as the first inputs' time)."""
    import io

    from PIL import Image

    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, fmt)
        one_input(b"\1" + buffer.getvalue())


if __name__ == "__main__":
    _warm_up()
    if sys.argv[1:2] == ["--replay"]:
        from replay import replay

        replay(one_input, sys.argv[2], TARGETS)
    else:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
