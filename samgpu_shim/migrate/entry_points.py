"""The sources: which calls reach a patched predict, read from the family registry."""

from __future__ import annotations

from ..families.signatures import PATCHED_METHODS, PREDICT_KEYWORDS

# The patched methods whose results are tensors in GPU mode.
PREDICT_METHODS = frozenset(PATCHED_METHODS)
# Keywords only SAM's predictors take: a call passing one is SAM's whatever
# its receiver is called.
SAM_KEYWORDS = frozenset(set(PREDICT_KEYWORDS) - {"box", "boxes"})
# Whole words of a receiver's name that say "a SAM predictor".
RECEIVER_WORDS = frozenset({"sam", "sam1", "sam2", "sam3", "samhq", "hq", "predictor", "predictors", "mobilesam",
                            "efficientsam", "efficientvit"})

