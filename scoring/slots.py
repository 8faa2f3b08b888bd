"""Per-asset arrays indexed by the sequence store's slots, grown as new assets arrive."""

from __future__ import annotations

import numpy as np


def room_for(needed: int, current: int) -> int:
    """Room for twice what is needed: a fleet's first vectors come over several batches, and each
    growth copies every slot so far (zero pages never touched cost no memory)."""
    return max(2 * needed, 2 * current)


def grown(array: np.ndarray, slots: int, start: float = 0) -> np.ndarray:
    """``array`` with ``slots`` rows: its own, then new ones set to ``start``. Zeros come from calloc:
    pages the OS zeroes when first touched, not filled here."""
    new = np.zeros((slots, *array.shape[1:]), dtype=array.dtype)
    new[: len(array)] = array
    if start != 0:
        new[len(array) :] = start
    return new
