"""Score rows of a labelled log through a :class:`~models.inference.Predictor`, in bounded chunks."""

from __future__ import annotations

import numpy as np

from models.inference import Predictor
from models.sequences import asset_starts, window_index

CHUNK_ROWS = 16_384


def score_rows(
    predictor: Predictor, values: np.ndarray, asset_id: np.ndarray, rows: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"forest"|"lstm"|"ensemble": (risk, rul)}`` for ``rows`` of a frame sorted by asset then time.

    Each row's sequence is its asset's last ``T`` vectors (left-padded, see :mod:`models.sequences`).
    ``ensemble`` is present once the predictor's bundle has a fitted blend."""
    starts = asset_starts(asset_id)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    blend = predictor.bundle.blend
    for lo in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[lo : lo + CHUNK_ROWS]
        seq = values[window_index(chunk, starts, predictor.seq_len)]
        comp = predictor.components(values[chunk], seq)
        if blend is not None:
            ens = predictor.combine(comp)
            comp["ensemble"] = (ens.risk, ens.rul)
        for name, pair in comp.items():
            parts.setdefault(name, []).append(pair)
    return {
        name: (
            np.concatenate([a for a, _ in pairs]).astype(np.float64),
            np.concatenate([b for _, b in pairs]).astype(np.float64),
        )
        for name, pairs in parts.items()
    }
