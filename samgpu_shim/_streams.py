"""Handing GPU results to another stream or thread."""

from __future__ import annotations

import sys
from typing import Any, Optional


def ready_event(*tensors: Any) -> Optional[Any]:
    """A CUDA event that completes when ``tensors`` are ready, or None off CUDA.

    Results are produced on the current stream of the predictor's device. A
    consumer on another stream calls ``event.wait(its_stream)`` (the GPU waits,
    the host does not); a consumer in another thread may also call
    ``event.synchronize()``. Recording the event does not synchronise. If the
    consumer stream keeps using a tensor after the producer's stream moves on,
    also call ``tensor.record_stream(its_stream)`` so that the caching
    allocator does not reuse its memory early.
    """
    torch = sys.modules.get("torch")
    cuda = [t for t in tensors if torch is not None and isinstance(t, torch.Tensor) and t.is_cuda]
    if not cuda:
        return None
    device = cuda[0].device
    if any(t.device != device for t in cuda):
        raise ValueError("ready_event() needs tensors on a single CUDA device")
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event
