"""Faults for the tests: an exception raised from a real model's forward, and a
real out-of-memory on CUDA (a per-process memory cap)."""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Iterator, List

import torch


def _module(predictor: Any, step: str) -> Any:
    model = predictor.model
    if step == "set_image":
        return model.image_encoder
    if step == "predict":
        return getattr(model, "mask_decoder", None) or model.sam_mask_decoder
    raise ValueError(f"step must be set_image or predict, got {step!r}")


def inject_fault(predictor: Any, step: str = "set_image", error: str = "oom", count: int = 1) -> List[int]:
    """The next ``count`` forwards of the image encoder (``set_image``) or the mask
    decoder (``predict``) raise ``torch.OutOfMemoryError`` (``oom``) or a CUDA
    device error (``device``). Returns a list that counts the faults raised."""
    accelerator = getattr(torch, "AcceleratorError", RuntimeError)
    make = {"oom": lambda: torch.OutOfMemoryError(f"CUDA out of memory (injected in {step})"),
            "device": lambda: accelerator("CUDA error: an illegal memory access was encountered (injected)")}[error]
    raised = [0]

    def hook(_module: Any, _inputs: Any) -> None:
        if raised[0] < count:
            raised[0] += 1
            if raised[0] == count:
                handle.remove()
            raise make()

    handle = _module(predictor, step).register_forward_pre_hook(hook)
    return raised


def settle(device: torch.device) -> None:
    """Everything freed that can be: what a failed call held, the allocator's cache."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()


@contextlib.contextmanager
def memory_cap(device: torch.device, headroom_bytes: int = 0) -> Iterator[int]:
    """Inside the block, this process may reserve at most ``headroom_bytes`` more
    device memory than it holds now: larger allocations raise a real
    ``torch.OutOfMemoryError`` from PyTorch's caching allocator. Yields the cap in bytes."""
    if device.index is None:  # the memory-fraction call wants an index
        device = torch.device(device.type, torch.cuda.current_device())
    settle(device)
    total = torch.cuda.get_device_properties(device).total_memory
    cap = torch.cuda.memory_reserved(device) + headroom_bytes
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    try:
        yield cap
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


def take_cached(device: torch.device, nbytes: int, most: int = 4096) -> List[torch.Tensor]:
    """Inside a :func:`memory_cap` block: blocks of ``nbytes`` taken from the
    allocator's cache until none is left, so that the next allocation of that
    size needs a new segment (and fails under the cap).

    Whether an allocation needs a new segment depends on what the allocator
    kept of earlier calls (a 100 MB segment split for a 25 MB tensor leaves 75
    MB free in it that ``empty_cache`` cannot release): a test that needs a
    given allocation to fail takes that free space first. Free the list to
    give it back."""
    taken: List[torch.Tensor] = []
    for _ in range(most):
        try:
            taken.append(torch.empty(nbytes, dtype=torch.uint8, device=device))
        except torch.OutOfMemoryError as exc:
            exc.__traceback__ = None
            break
    return taken

