"""The GPU-resident image half: tensor frames, device resize, sync-free encoder.

* ``set_image`` also takes a ``torch.Tensor`` frame (H x W x 3, uint8, on any
  device), in every family. It is preprocessed on the predictor's device the
  way that family does it on the host: SAM 1 and its copies resize with
  antialiased bilinear interpolation rounded back to uint8 (PIL's uint8
  resize) and hand it to upstream's ``set_torch_image``; EfficientViT-SAM
  also normalises and pads; SAM 2 and SAM 3 run their own (scripted)
  ``Resize`` and ``Normalize`` modules on the device tensor. A numpy frame
  keeps upstream's exact path.
* ``get_rel_pos`` of the image encoder indexes its relative-position table
  with an index tensor built on the CPU; on a CUDA table that index is copied
  to the device with a blocking copy, twice per attention block (64 host
  syncs for vit_h). The index is the same for every call with the same
  sizes, so it is built once, exactly as upstream builds it, and cached on the
  device: the gather is then sync-free and bit-identical.
* An opt-in reduced precision for the encoder (``SAMGPU_ENCODER_PRECISION``)
  and an opt-in fast encoder (``SAMGPU_ENCODER=fast``: bfloat16, fused
  attention, the encoder replayed as a CUDA graph; ``fast-compile``:
  ``torch.compile``, or with ``SAMGPU_COMPILE_DIR`` an ahead-of-time package
  built once, :mod:`samgpu_shim.gpu.aot`), every family.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import weakref
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import _config

_logger = logging.getLogger("samgpu_shim")
_index_lock = threading.Lock()
_index_cache: Dict[Tuple[int, int, torch.device], torch.Tensor] = {}


def _relative_index(q_size: int, k_size: int) -> torch.Tensor:
    # Upstream's arithmetic, on the CPU, unchanged: same indices by construction.
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return relative_coords.long()


def relative_index_on(device: torch.device, q_size: int, k_size: int) -> torch.Tensor:
    """The relative-position index for these sizes, cached on ``device``."""
    key = (q_size, k_size, device)
    index = _index_cache.get(key)
    if index is None:
        host = _relative_index(q_size, k_size)
        # A pinned, non-blocking upload: even the first call does not wait.
        on_device = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
        if type(on_device) is not torch.Tensor:  # made under a tracer (torch.export): not kept
            return on_device
        with _index_lock:
            index = _index_cache.setdefault(key, on_device)
    return index


def get_rel_pos_sync_free(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Upstream ``get_rel_pos`` with its index already on ``rel_pos``'s device."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos_resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos_resized = rel_pos_resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        rel_pos_resized = rel_pos
    return rel_pos_resized[relative_index_on(rel_pos.device, q_size, k_size)]


def gpu_path_on() -> bool:
    """The image half follows the predict default: off when rolled back to numpy."""
    return not _config.default_as_numpy()[0]


def host_frame(image: Any) -> Any:
    """A tensor frame as the contiguous array upstream's ``set_image`` expects
    (rolled back); anything else as it is."""
    if isinstance(image, torch.Tensor):
        return np.ascontiguousarray(image.detach().cpu().numpy())
    return image


class ImageError(ValueError, AssertionError):
    """A frame given to ``set_image`` has the wrong shape, dtype or format."""


def device_frame(image: torch.Tensor, device: torch.device, image_format: str = "RGB",
                 model_format: str = "RGB") -> torch.Tensor:
    """A checked ``(H, W, 3)`` uint8 frame on ``device``, in the model's channel order.

    A CPU frame bound for CUDA goes up from pinned memory without a host wait.
    """
    if image_format not in ("RGB", "BGR"):
        raise ImageError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
    if image.device.type == "meta":
        raise ImageError("image is on the meta device (it holds no data)")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ImageError(f"image must have shape (H, W, 3), got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise ImageError(f"image must be uint8 with values in [0, 255], got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image must not be empty, got {tuple(image.shape)}")
    if image.device != device:
        if image.device.type == "cpu" and device.type == "cuda":
            image = image.pin_memory()
        image = image.to(device, non_blocking=True)
    if image_format != model_format:
        image = image.flip(-1)
    return image


def resize_uint8(image: torch.Tensor, target: Tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, h, w)`` uint8: antialiased bilinear, rounded
    and clamped the way PIL's uint8 resize hands its result back."""
    chw = image.permute(2, 0, 1)[None].to(torch.float32)
    if tuple(target) == tuple(chw.shape[-2:]):
        return image.permute(2, 0, 1)[None].contiguous()  # same size: PIL returns the pixels as they are
    resized = F.interpolate(chw, size=tuple(target), mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8).contiguous()


def set_image_tensor(predictor: Any, image: torch.Tensor, image_format: str = "RGB") -> None:
    """SAM 1 and its copies: resize on the device, then upstream's ``set_torch_image``."""
    image = device_frame(image, predictor.device, image_format, predictor.model.image_format)
    height, width = int(image.shape[0]), int(image.shape[1])
    target = predictor.transform.get_preprocess_shape(height, width, predictor.transform.target_length)
    predictor.set_torch_image(resize_uint8(image, target), (height, width))


def placeholder(height: int, width: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array that holds one byte: what upstream's
    ``set_image`` may read of it is its shape, while the pixels it would have
    transformed come from a stand-in transform (:func:`stand_in`)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(height, width, 3), strides=(0, 0, 0))


@contextlib.contextmanager
def stand_in(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name`` is ``value`` for the block (modules through ``_modules``)."""
    modules = getattr(owner, "_modules", None)
    if modules is not None and name in modules:
        old = modules[name]
        modules[name] = value
        try:
            yield
        finally:
            modules[name] = old
        return
    had = name in vars(owner)
    old = vars(owner).get(name)
    object.__setattr__(owner, name, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(owner, name, old)
        else:
            object.__delattr__(owner, name)


class PreparedTransforms:
    """Stands in for SAM 2's / SAM 3's ``_transforms`` during one ``set_image``:
    returns the frames already prepared on the device, and leaves everything
    else to the real transforms."""

    def __init__(self, real: Any, prepared: torch.Tensor) -> None:
        self._real = real
        self._prepared = prepared  # (3, R, R) or (B, 3, R, R)

    def __call__(self, _image: Any) -> torch.Tensor:
        return self._prepared

    def forward_batch(self, _images: Any) -> torch.Tensor:
        return self._prepared

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_constants: Dict[Tuple[Tuple[float, ...], torch.device], torch.Tensor] = {}


def _channel_constant(values: Any, device: torch.device) -> torch.Tensor:
    """A ``(3, 1, 1)`` float32 tensor of ``values`` on ``device``, made once.

    torchvision's ``Normalize`` builds its mean and std tensors from Python
    lists on every call (an upload) and checks ``(std == 0).any()`` (a read
    back): two host waits per frame on CUDA. Same numbers, same float32
    arithmetic, made once."""
    key = (tuple(float(v) for v in values), device)
    found = _constants.get(key)
    if found is None:
        host = torch.tensor(key[0], dtype=torch.float32).reshape(-1, 1, 1)
        found = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
        _constants[key] = found
    return found


def normalize(chw: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """torchvision's ``Normalize`` on a float CHW tensor, without its host waits."""
    return chw.sub(_channel_constant(mean, chw.device)).div_(_channel_constant(std, chw.device))


def sam2_prepare(predictor: Any, image: torch.Tensor) -> torch.Tensor:
    """SAM 2 / SAM 3 preprocessing of one frame on the device: ``ToTensor``
    (``/255``, CHW), the ``Resize((R, R))`` of their transforms (antialiased
    bilinear in float) and their ``Normalize``."""
    transforms = predictor._transforms
    frame = device_frame(image, predictor.device)
    chw = frame.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    size = (transforms.resolution, transforms.resolution)
    if tuple(chw.shape[-2:]) != size:
        chw = F.interpolate(chw[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return normalize(chw, transforms.mean, transforms.std)


def efficientvit_prepare(predictor: Any, image: torch.Tensor, image_format: str) -> torch.Tensor:
    """EfficientViT-SAM's transform on the device: resize the longest side to
    the encoder's size (uint8, as PIL), ``ToTensor``, ``Normalize``, pad the
    bottom and right corner to a square."""
    model = predictor.model
    frame = device_frame(image, predictor.device, image_format, model.image_format)
    size = model.image_size[1]
    height, width = int(frame.shape[0]), int(frame.shape[1])
    scale = size * 1.0 / max(height, width)
    target = (int(height * scale + 0.5), int(width * scale + 0.5))
    if max(height, width) == size:
        target = (height, width)
    chw = resize_uint8(frame, target)[0].to(torch.float32).div(255)
    norm = next(t for t in model.transform.transforms if type(t).__name__ == "Normalize")
    chw = normalize(chw, norm.mean, norm.std)
    return F.pad(chw, (0, size - chw.shape[-1], 0, size - chw.shape[-2]), value=0.0)


# -- encoder precision and the fast encoder ----------------------------------

# True inside an encoder call on the fast path: the wrapped attention blocks
# take their fused version there, and only there.
FAST_ATTENTION: contextvars.ContextVar[bool] = contextvars.ContextVar("samgpu_shim_fast_attention", default=False)


def encoder_mode(device: torch.device) -> str:
    """What the encoder runs as for this call: fp32, tf32, bf16, fast, fast-compile."""
    if device.type != "cuda" or not gpu_path_on():
        return "fp32"
    encoder = _config.encoder()
    if encoder != "default":
        return encoder
    return _config.encoder_precision()


@contextlib.contextmanager
def encoder_precision(device: torch.device) -> Iterator[str]:
    """Apply ``SAMGPU_ENCODER`` / ``SAMGPU_ENCODER_PRECISION`` around the image encoder (CUDA only)."""
    mode = encoder_mode(device)
    if mode == "fp32":
        yield mode
        return
    if mode in ("bf16", "fast", "fast-compile"):
        token = FAST_ATTENTION.set(mode != "bf16")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield mode
        finally:
            FAST_ATTENTION.reset(token)
        return
    # TF32 has no context manager of its own; the flags are process-wide, so
    # they are set for the encoder call and put back (documented caveat).
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield mode
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


_one_hot_cache: Dict[Tuple[int, int, torch.dtype, torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}


def _key_one_hots(
    height: int, width: int, dtype: torch.dtype, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each key position p of an (H, W) grid: one-hot of its row (H,) and of its column (W,)."""
    key = (height, width, dtype, device)
    found = _one_hot_cache.get(key)
    if found is None:
        rows = torch.eye(height, dtype=dtype, device=device)[:, None, :].expand(height, width, height)
        cols = torch.eye(width, dtype=dtype, device=device)[None, :, :].expand(height, width, width)
        found = (rows.reshape(height * width, height), cols.reshape(height * width, width))
        if type(found[0]) is torch.Tensor:  # not a tracer's stand-in (torch.export): those must not be kept
            _one_hot_cache[key] = found
    return found


def vit_attention_fused(attention: Any, x: torch.Tensor) -> torch.Tensor:
    """SAM 1's ViT ``Attention.forward`` as one ``scaled_dot_product_attention``
    call with no bias tensor.

    Upstream adds the decomposed relative-position terms to the attention
    logits: ``logit[q, (kh, kw)] = scale * q.k + rel_h[q, kh] + rel_w[q, kw]``.
    Both terms are dot products with one-hot vectors of the key's row and
    column, so they fold into the attention itself: queries become
    ``[scale * q, rel_h[q], rel_w[q]]``, keys ``[k, onehot(kh), onehot(kw)]``
    and the logits are exactly upstream's (values padded with zeros to the
    same width, the extra output columns dropped). No (HW x HW) bias is
    materialised, and the call is one a flash kernel takes (head width up to
    256: vit_h's global blocks are 80 + 64 + 64 = 208). The relative-position
    terms are the same gathers and einsums as upstream; in float32 the result
    equals upstream's to 1e-5 (test on the CPU).
    """
    batch, height, width, _ = x.shape
    heads = attention.num_heads
    qkv = attention.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, HW, C)
    channels = q.shape[-1]
    if not attention.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=attention.scale)
    else:
        rel_h, rel_w = _decomposed_terms(attention, q, height, width)
        tokens = height * width
        rows, cols = _key_one_hots(height, width, q.dtype, q.device)
        extra = height + width
        pad = (-(channels + extra)) % 8  # flash kernels want widths in multiples of 8
        q_parts = [q * attention.scale, rel_h.reshape(batch, heads, tokens, height),
                   rel_w.reshape(batch, heads, tokens, width)]
        k_parts = [k, rows.expand(batch, heads, tokens, height), cols.expand(batch, heads, tokens, width)]
        if pad:
            zeros = q.new_zeros(batch, heads, tokens, pad)
            q_parts.append(zeros)
            k_parts.append(zeros)
        q_ext, k_ext = torch.cat(q_parts, dim=-1), torch.cat(k_parts, dim=-1)
        v_ext = F.pad(v, (0, extra + pad))
        out = F.scaled_dot_product_attention(q_ext, k_ext, v_ext, scale=1.0)[..., :channels]
    out = out.reshape(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return attention.proj(out)


def _decomposed_terms(attention: Any, q: torch.Tensor, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Upstream's ``rel_h`` (B*heads, H, W, H) and ``rel_w`` (B*heads, H, W, W) for queries ``q``."""
    rel_h_table = get_rel_pos_sync_free(height, height, attention.rel_pos_h)
    rel_w_table = get_rel_pos_sync_free(width, width, attention.rel_pos_w)
    r_q = q.reshape(-1, height, width, q.shape[-1])
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h_table.to(r_q.dtype))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w_table.to(r_q.dtype))
    return rel_h, rel_w


def vit_attention_flex(attention: Any, x: torch.Tensor) -> torch.Tensor:
    """The same attention through FlexAttention, the bias added by a
    ``score_mod`` that reads ``rel_h`` and ``rel_w`` per (query, key).

    Kept beside :func:`vit_attention_fused` for comparison: FlexAttention is a
    fused kernel only under ``torch.compile`` (eager, it runs a reference
    implementation that materialises the scores), so it cannot serve the
    fast path without a compile; the benchmark times both.
    """
    from torch.nn.attention.flex_attention import flex_attention

    batch, height, width, _ = x.shape
    heads = attention.num_heads
    qkv = attention.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    score_mod = None
    if attention.use_rel_pos:
        rel_h, rel_w = _decomposed_terms(attention, q, height, width)
        rel_h = rel_h.reshape(batch, heads, height * width, height)
        rel_w = rel_w.reshape(batch, heads, height * width, width)

        def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            return score + rel_h[b, h, q_idx, kv_idx // width] + rel_w[b, h, q_idx, kv_idx % width]

    out = flex_attention(q, k, v, score_mod=score_mod, scale=attention.scale)
    out = out.reshape(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return attention.proj(out)


# -- the encoder as a CUDA graph (the fast path) ------------------------------
# The eager encoder is bound by the host: hundreds of kernel launches, each
# through Python and autocast, for a few ms of device work (vit_b), and a
# frame loop's other thread waits on the interpreter lock meanwhile. The fast
# path captures the encoder call once per input shape and replays it.

ENCODER_GRAPHS = True
"""Diagnostic switch: False runs the fast path's encoder eagerly (the benchmark compares both)."""

_FAILED = object()
_encoder_graphs: weakref.WeakKeyDictionary[Any, Dict[tuple, Any]] = weakref.WeakKeyDictionary()
_graph_warned: set = set()


class _CapturedEncoder:
    __slots__ = ("graph", "static_in", "static_out")

    def __init__(self, module: Any, example: torch.Tensor) -> None:
        self.static_in = example.clone()
        device = example.device
        from .graphs import warmup_stream

        side = warmup_stream(device)  # one per device: cuBLAS keeps a workspace per stream
        side.wait_stream(torch.cuda.current_stream(device))
        # autocast's cache of cast weights must stay off: cached casts made
        # outside the capture would be freed while the graph still reads them.
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            with torch.cuda.stream(side):
                for _ in range(2):  # lazy initialisation stays out of the graph
                    module(self.static_in)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
                self.static_out = module(self.static_in)

    def __call__(self, x: torch.Tensor) -> Any:
        self.static_in.copy_(x)
        self.graph.replay()
        # Clones belong to the caller (SAM 2 edits its backbone outputs in place).
        return torch.utils._pytree.tree_map(
            lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.static_out
        )


class GraphedEncoder:
    """Stands in for an encoder module on the fast path: each input shape is
    captured once and replayed; where capture fails, the module runs eagerly
    (the reason logged once)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        module = self.module
        if args or kwargs or not isinstance(x, torch.Tensor) or x.device.type != "cuda" or not ENCODER_GRAPHS:
            return module(x, *args, **kwargs)
        graphs = _encoder_graphs.setdefault(module, {})
        key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled("cuda"))
        entry = graphs.get(key)
        if entry is None:
            from .graphs import _capture_lock

            try:
                with _capture_lock:  # captures share the device's one warm-up stream
                    entry = _CapturedEncoder(module, x)
            except Exception as exc:  # capture is not possible here: eager, as before
                entry = _FAILED
                reason = f"{type(module).__name__}: {type(exc).__name__}: {exc}"
                if reason not in _graph_warned:
                    _graph_warned.add(reason)
                    _logger.warning("samgpu_shim: the fast encoder runs without a CUDA graph: %s", reason)
            graphs[key] = entry
        if entry is _FAILED:
            return module(x)
        return entry(x)


_graphed: weakref.WeakKeyDictionary[Any, GraphedEncoder] = weakref.WeakKeyDictionary()


def graphed(module: Any) -> GraphedEncoder:
    found = _graphed.get(module)
    if found is None:
        found = _graphed[module] = GraphedEncoder(module)
    return found


def clear_encoder_graphs() -> None:
    """Drop the captured encoders (e.g. after replacing a model's parameters by new tensors)."""
    _encoder_graphs.clear()


@contextlib.contextmanager
def encoder_call(device: torch.device, model: Any, path: Tuple[str, ...]) -> Iterator[str]:
    """Everything the encoder settings ask for, around one encoder call: the
    precision (or the fast path's bfloat16 and fused attention) and, for
    ``fast-compile``, the compiled encoder standing in at ``model.<path>``."""
    mode = encoder_mode(device)
    with contextlib.ExitStack() as stack:
        if mode in ("fast", "fast-compile"):
            owner = model
            for name in path[:-1]:
                owner = getattr(owner, name)
            module = getattr(owner, path[-1])
            if mode == "fast":
                stand = graphed(module)
            elif _config.get("compile_dir"):
                from .aot import packaged

                stand = packaged(module, model, _config.get("compile_dir"))
            else:
                stand = compiled(module)
            stack.enter_context(stand_in(owner, path[-1], stand))
        stack.enter_context(encoder_precision(device))
        yield mode


_compiled: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def compiled(module: Any) -> Any:
    """``torch.compile(module)``, once per module (``fast-compile``)."""
    found = _compiled.get(module)
    if found is None:
        found = _compiled[module] = torch.compile(module)
    return found
