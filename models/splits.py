"""Train/validation/test splits by asset, never by row: no asset's future leaks into training.

>>> s = split_assets([f"m{i}" for i in range(20)], seed=7)
>>> len(s.train), len(s.validation), len(s.test)
(14, 3, 3)
>>> set(s.train).isdisjoint(s.test)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AssetSplit:
    """Disjoint sets of asset ids, each sorted."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    seed: int

    def of(self, part: str) -> tuple[str, ...]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[part]

    def to_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "train": list(self.train),
            "validation": list(self.validation),
            "test": list(self.test),
        }


def split_assets(
    asset_ids: Iterable[str], seed: int = 0, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
) -> AssetSplit:
    """Shuffle the distinct asset ids with ``seed`` and cut them by ``fractions`` (train, val, test).

    Validation and test each get at least one asset when there are three or more.
    """
    ids = sorted(set(asset_ids))
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n >= 3:
        n_val, n_test = max(n_val, 1 if fractions[1] else 0), max(n_test, 1 if fractions[2] else 0)
    n_train = n - n_val - n_test
    shuffled = [ids[i] for i in order]
    return AssetSplit(
        train=tuple(sorted(shuffled[:n_train])),
        validation=tuple(sorted(shuffled[n_train : n_train + n_val])),
        test=tuple(sorted(shuffled[n_train + n_val :])),
        seed=seed,
    )
