"""The sources: the calls that reach a patched predict, read from the family registry.

Everything here comes from :data:`samgpu_shim.families.FAMILIES` (its
``entry_points`` and ``builders``), so a family added there is a source here
without a change to the audit.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, Optional, Tuple

from ..families import FAMILIES, Family
from ..families.signatures import PREDICT_KEYWORDS


def _split(entry: str) -> Tuple[str, str, str]:
    """("package.module", "Class", "method") of "package.module:Class.method"."""
    module, _, attribute = entry.partition(":")
    cls, _, method = attribute.rpartition(".")
    return module, cls, method


class EntryPoints:
    """The patched classes, their source methods and the builders returning them."""

    def __init__(self, families: Iterable[Family]) -> None:
        # (top-level package, class name) -> (module, methods)
        self.classes: Dict[Tuple[str, str], Tuple[str, FrozenSet[str]]] = {}
        # (top-level package, function name) -> "module.Class" it returns
        self.builders: Dict[Tuple[str, str], str] = {}
        for family in families:
            self.add(family)

    def add(self, family: Family) -> None:
        for entry in family.entry_points:
            module, cls, method = _split(entry)
            key = (module.split(".")[0], cls)
            known = self.classes.get(key, (module, frozenset()))
            self.classes[key] = (known[0], known[1] | {method})
        for function, returned in family.builders:
            module, _, name = function.partition(":")
            cls_module, _, cls = returned.partition(":")
            self.builders[(module.split(".")[0], name)] = f"{cls_module}.{cls}"

    @property
    def methods(self) -> FrozenSet[str]:
        """Every source method name."""
        return frozenset(m for _, methods in self.classes.values() for m in methods)

    def patched_class(self, qualified: Optional[str]) -> Optional[str]:
        """``module.Class`` when ``qualified`` (as imported: ``segment_anything.SamPredictor``)
        names a patched class: same top-level package, same class name (packages re-export)."""
        if not qualified or "." not in qualified:
            return None
        top, cls = qualified.split(".")[0], qualified.rsplit(".", 1)[1]
        found = self.classes.get((top, cls))
        return f"{found[0]}.{cls}" if found else None

    def builder(self, qualified: Optional[str]) -> Optional[str]:
        """The patched class a builder function returns (``sam3.build_sam3_image_model``)."""
        if not qualified or "." not in qualified:
            return None
        return self.builders.get((qualified.split(".")[0], qualified.rsplit(".", 1)[1]))

    def methods_of(self, patched: str) -> FrozenSet[str]:
        module, _, cls = patched.rpartition(".")
        found = self.classes.get((module.split(".")[0], cls))
        return found[1] if found else frozenset()


REGISTRY = EntryPoints(FAMILIES)
# The source method names (predict, predict_batch, predict_inst, ...).
PREDICT_METHODS = REGISTRY.methods
# Keywords only SAM's predictors take: a call passing one is SAM's whatever
# its receiver is called.
SAM_KEYWORDS = frozenset(set(PREDICT_KEYWORDS) - {"box", "boxes"})
# Whole words of a receiver's name that say "a SAM predictor".
RECEIVER_WORDS = frozenset({"sam", "sam1", "sam2", "sam3", "samhq", "hq", "predictor", "predictors", "mobilesam",
                            "efficientsam", "efficientvit"})
# Top-level packages of the families: their objects are not "modules not scanned".
SAM_PACKAGES = frozenset(f.hook_module.split(".")[0] for f in FAMILIES)
