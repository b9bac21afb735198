"""labelkit - a small PyQt5 tool for click-to-segment polygon annotation.

Run with ``python -m labelkit.window /path/to/images``.
"""

from .engine import Proposal, SegEngine, load_predictor

__all__ = ["Proposal", "SegEngine", "load_predictor"]
__version__ = "0.4.2"
