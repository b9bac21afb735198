"""What the analysis knows of a value besides its taint: its kind.

A kind is ``None`` (nothing known) or one of the strings below, or one of
three structured kinds that keep the parts of a container apart, so that a
tuple of (points, logits) taints the logits and not the points:

* :class:`Positions`: a tuple of known length, (taint, kind) per position;
* :class:`Keys`: a dict with constant keys, (key, taint, kind) per key;
* :class:`Elements`: a list, set or deque whose elements all have one kind.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from .names import CLEAN, Taint

Kind = object

NUMPY = "numpy"  # a host array (numpy, or what numpy-only code builds)
TORCH = "torch"  # a tensor
MASK = "mask"  # a boolean tensor (predict's masks)
SCALAR = "scalar"  # a 0-d tensor read as a number (argmax, sum)
NPSCALAR = "npscalar"  # a numpy scalar (np.float64(x))
PREDICTOR = "predictor"  # a SAM predictor by its name or its keywords only
SELF = "self"
OTHER = "other"  # an object of a class the scan knows nothing of
MIXED = "mixed"  # class attributes: two writers disagree
EMPTY = "empty"  # the element kind of an empty container
TENSORS = (TORCH, MASK, SCALAR)


def patched(qualified: str) -> str:
    """An instance of a patched class (``segment_anything.SamPredictor``)."""
    return f"patched:{qualified}"


def external(qualified: str) -> str:
    """An instance of a class from a module the scan does not read."""
    return f"external:{qualified}"


def prefixed(kind: Kind, prefix: str) -> str:
    """``X`` for the kind ``prefix:X``, else ''."""
    if isinstance(kind, str) and kind.startswith(prefix + ":"):
        return kind[len(prefix) + 1:]
    return ""


def class_kind(kind: Kind) -> str:
    """``X`` for the kind ``class:X`` (an instance of the scanned class X), else ''."""
    return prefixed(kind, "class")


def is_tensor(kind: Kind) -> bool:
    return kind in TENSORS


class _Typed(tuple):
    """A tuple that equals only tuples of its own class (kinds are compared)."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self)))


class Positions(_Typed):
    """A fixed-length tuple: ((taint, kind), ...) per position."""

    @classmethod
    def of(cls, parts: Iterable[Tuple[Taint, Kind]]) -> Positions:
        return cls(tuple(parts))


ANY_KEY = "<any>"  # the entry of a dict written under keys not known here


class Keys(_Typed):
    """A dict with constant keys: ((key, taint, kind), ...), sorted by key."""

    @classmethod
    def of(cls, entries: Iterable[Tuple[str, Taint, Kind]]) -> Keys:
        merged: dict = {}
        for key, taint, kind in entries:
            merged[key] = (taint, kind)
        return cls(tuple(sorted((k, t, kd) for k, (t, kd) in merged.items())))

    def get(self, key: str) -> Optional[Tuple[Taint, Kind]]:
        found = None
        for k, t, kd in self:
            if k == key:
                return t, kd
            if k == ANY_KEY:
                found = (t, kd)
        return found

    def set(self, key: str, taint: Taint, kind: Kind) -> Keys:
        return Keys.of([*(e for e in self if e[0] != key), (key, taint, kind)])

    def any(self) -> Tuple[Taint, Kind]:
        """A value under a key not known here: any of them."""
        taint: Taint = CLEAN
        kind: Kind = EMPTY
        for _, t, kd in self:
            taint |= t
            kind = join(kind, kd)
        return taint, None if kind == EMPTY else kind


class Elements(_Typed):
    """A list, set or deque: (element kind,)."""

    @property
    def kind(self) -> Kind:
        return None if self[0] == EMPTY else self[0]


def join(a: Kind, b: Kind) -> Kind:
    """What a value is when it may be either: the two branches of an ``if``,
    two writers of an attribute, two returns. ``None`` when nothing is shared."""
    if a == b:
        return a
    if a == EMPTY:
        return b
    if b == EMPTY:
        return a
    if a is None or b is None:
        return None
    if isinstance(a, Positions) and isinstance(b, Positions) and len(a) == len(b):
        return Positions.of((ta | tb, join(ka, kb)) for (ta, ka), (tb, kb) in zip(a, b))
    if isinstance(a, Keys) and isinstance(b, Keys):
        out = a
        for key, t, kd in b:
            have = out.get(key)
            out = out.set(key, t, kd) if have is None else out.set(key, have[0] | t, join(have[1], kd))
        return out
    if isinstance(a, Elements) and isinstance(b, Elements):
        return Elements((join(a[0], b[0]),))
    if {a, b} == {MASK, TORCH}:
        return TORCH
    # a name says "predictor", the other path knows which: the known one
    if a == PREDICTOR and prefixed(b, "patched"):
        return b
    if b == PREDICTOR and prefixed(a, "patched"):
        return a
    return None


def element(kind: Kind) -> Kind:
    """The kind of one element of a container of this kind."""
    if isinstance(kind, Elements):
        return kind.kind
    if isinstance(kind, Positions):
        out: Kind = EMPTY
        for _, k in kind:
            out = join(out, k)
        return None if out == EMPTY else out
    if kind in (TORCH, MASK):
        return kind  # the rows of a tensor
    if kind == NUMPY:
        return NUMPY
    return None
