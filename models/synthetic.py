"""A synthetic run-to-failure log for tests and benchmarks: features drift with wear, plus noise.

Each asset runs ``life`` steps and fails at its last one; one random direction of the feature space
carries the wear, so both models have something to learn in seconds.

>>> from features.spec import FeatureSpec
>>> from ingest.profiles import load_profile
>>> p = load_profile("cmapss")
>>> ds = synthetic_log(p, FeatureSpec.from_profile(p), n_assets=3)
>>> sorted(set(ds.asset_id)), int(ds.labels.rul[-1])
(['1', '2', '3'], 0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.spec import FeatureSpec
from ingest.profiles import Profile
from models.dataset import LabelledLog
from models.labels import LabelConfig, make_labels


def synthetic_log(
    profile: Profile,
    spec: FeatureSpec,
    n_assets: int = 30,
    seed: int = 0,
    life: tuple[int, int] = (60, 90),
    step: float = 1.0,
) -> LabelledLog:
    """``n_assets`` assets (ids "1", "2", ...) living ``life`` steps of ``step`` time units each."""
    rng = np.random.default_rng(seed)
    f = len(spec.names)
    loading = rng.normal(size=f)
    aid, ts, vals, fails = [], [], [], []
    for a in range(n_assets):
        n = int(rng.integers(life[0], life[1]))
        t = np.arange(1, n + 1, dtype=float) * step
        wear = (np.arange(1, n + 1) / n) ** 2
        vals.append(wear[:, None] * loading * 3 + rng.normal(size=(n, f)))
        aid += [str(a + 1)] * n
        ts.append(t)
        fails.append((str(a + 1), float(t[-1]), "failure"))
    events = pd.DataFrame(fails, columns=["asset_id", "ts", "kind"])
    asset_id, t_all = np.array(aid, dtype=object), np.concatenate(ts)
    values = np.concatenate(vals).astype(np.float32)
    values[::17, min(3, f - 1)] = np.nan  # undefined features happen (e.g. a slope over one reading)
    labels = make_labels(asset_id, t_all, events, LabelConfig.from_profile(profile))
    return LabelledLog(asset_id, t_all, values, labels, events, spec.names)
