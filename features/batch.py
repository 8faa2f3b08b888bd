"""The batch engine: the feature spec computed vectorised over a whole historical log (for training).

It gives what :class:`features.stream.FeatureEngine` emits for the same readings delivered in the
same row order, then flushed at the end of the log: late readings and duplicates are dropped by the
same rules (:mod:`features.eventtime`), and since features of a reading depend only on the accepted
readings of its asset at or before it in event time, the rest is computed on the log sorted by
(asset, ts).

>>> import pandas as pd
>>> from ingest.profiles import load_profile
>>> from features.spec import FeatureSpec
>>> spec = FeatureSpec.from_profile(load_profile("motor"))
>>> log = pd.DataFrame({"asset_id": ["m1", "m1"], "ts": [0.0, 1.0], "temperature_c": [60.0, 62.0],
...                     "vibration_mm_s": [2.0, 2.0], "current_a": [40.0, 40.0], "runtime_h": [1.0, 1.0]})
>>> compute_features(log, spec)["temperature_c__mean_10m"].tolist()
[60.0, 61.0]
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from features import aggregators as ag
from features.eventtime import emits, late_and_duplicates
from features.spec import FeatureSpec

CHUNK_ROWS = 250_000  # rows per slice of whole assets (bounds the memory of the window arrays)
EWMA_SPAN = 1000.0  # half-lives per rebasing chunk of the EWMA sums (2**1000 stays finite)


def compute_features(
    readings: pd.DataFrame, spec: FeatureSpec, maintenance: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Feature vectors of a log: columns ``asset_id``, ``ts``, then ``spec.names``; one row per
    emission, sorted by asset (first appearance) then ts.

    ``readings``: ``asset_id``, ``ts`` and the profile's signal columns (NaN = missing), in delivery
    order. ``maintenance``: ``asset_id``, ``ts`` of maintenance events (known before the readings).
    """
    codes, uniques = pd.factorize(readings["asset_id"].to_numpy(dtype=object))
    ts = readings["ts"].to_numpy(dtype=np.float64)
    values = readings[list(spec.used_signals)].to_numpy(dtype=np.float64)
    late, dup = late_and_duplicates(codes, ts, spec.grace)
    keep = np.flatnonzero(~(late | dup))
    order = keep[np.lexsort((ts[keep], codes[keep]))]
    a, t, x = codes[order], ts[order], values[order]
    maintained = _maintained_at(a, t, uniques, maintenance)
    # Slices of whole assets keep memory bounded on long logs.
    asset_starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.array([], dtype=np.int64)
    cuts = [0]
    for s in asset_starts:
        if s - cuts[-1] >= CHUNK_ROWS:
            cuts.append(int(s))
    cuts.append(len(a))
    parts = []
    for lo, hi in itertools.pairwise(cuts):
        if hi > lo:
            sel, matrix = _features_sorted(spec, a[lo:hi], t[lo:hi], x[lo:hi], maintained[lo:hi])
            parts.append((sel + lo, matrix))  # rows of the slice -> rows of the whole sorted log
    rows = [p[0] for p in parts]
    sel = np.concatenate(rows) if rows else np.array([], dtype=np.int64)
    matrix = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, len(spec.names)))
    out = pd.DataFrame(matrix, columns=list(spec.names))
    out.insert(0, "ts", t[sel])
    out.insert(0, "asset_id", pd.array(uniques[a[sel]], dtype=object) if len(sel) else [])
    return out


def _maintained_at(
    a: np.ndarray, t: np.ndarray, uniques: np.ndarray, maintenance: pd.DataFrame | None
) -> np.ndarray:
    """Per reading: the time of its asset's last maintenance at or before it (NaN if none)."""
    out = np.full(len(t), np.nan)
    if maintenance is None or maintenance.empty or not len(t):
        return out
    code = pd.Index(uniques).get_indexer(maintenance["asset_id"].to_numpy(dtype=object))
    events = pd.DataFrame({"a": code, "ts": maintenance["ts"].to_numpy(dtype=np.float64)})
    events = events[events["a"] >= 0].assign(m=lambda d: d["ts"]).sort_values("ts")
    rows = pd.DataFrame({"a": a, "ts": t, "i": np.arange(len(t))}).sort_values("ts", kind="stable")
    merged = pd.merge_asof(rows, events, on="ts", by="a", allow_exact_matches=True)
    out[merged["i"].to_numpy()] = merged["m"].to_numpy(dtype=np.float64)
    return out


def _segment_starts(*keys: np.ndarray) -> np.ndarray:
    change = np.zeros(len(keys[0]), dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return change


def _seg_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running sums restarting at each group (groups contiguous), summed in row order."""
    shape = values.shape
    frame = pd.DataFrame(values.reshape(len(values), -1))
    return frame.groupby(group, sort=False).cumsum().to_numpy().reshape(shape)


def _features_sorted(
    spec: FeatureSpec, a: np.ndarray, t: np.ndarray, x: np.ndarray, maintained: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Features of readings sorted by (asset, ts), all accepted. Returns (emitting rows, matrix)."""
    first = _segment_starts(a)
    asset_id = np.cumsum(first) - 1
    frame = pd.DataFrame(x)
    shift = frame.groupby(asset_id).transform("first").to_numpy()
    xs = x - shift
    prev_t = np.r_[np.nan, t[:-1]]
    sel = np.flatnonzero(emits(first, t, prev_t, spec.emit_every))

    windows = {w.name: _window(a, t, xs, w.width, w.buckets)[sel] for w in spec.windows}
    base_mean, base_std = _baseline(a, xs, maintained, spec.baseline_n)
    since = np.where(np.isnan(maintained), t[first][asset_id], maintained)
    inputs = ag.Inputs(
        windows=windows,
        shift=shift[sel],
        last=_last(asset_id, t, x, spec.windows[0].width, spec.windows[0].buckets)[sel],
        ewma=_ewma(a, t, xs, spec.ewma_halflife)[sel],
        base_mean=base_mean[sel],
        base_std=base_std[sel],
        ts=t[sel],
        maintained_at=since[sel],
    )
    return sel, ag.compute(spec, inputs)


def _window(a: np.ndarray, t: np.ndarray, xs: np.ndarray, width: float, buckets: int) -> np.ndarray:
    """Window aggregates ``(rows, signals, WINDOW)`` at each reading: the window's closed buckets
    (computed once per bucket) plus the running part of the reading's own bucket."""
    k = np.floor(t / width).astype(np.int64)
    start = _segment_starts(a, k)
    bstart = np.flatnonzero(start)
    bid = np.cumsum(start) - 1
    moments = ag.bucket_moments(xs)
    totals = np.empty((len(bstart), *moments.shape[1:]))
    totals[..., : ag.MN] = np.add.reduceat(moments[..., : ag.MN], bstart, axis=0)
    totals[..., ag.MN] = np.minimum.reduceat(moments[..., ag.MN], bstart, axis=0)
    totals[..., ag.MX] = np.maximum.reduceat(moments[..., ag.MX], bstart, axis=0)
    ba, bk = a[bstart], k[bstart]
    lo = bk - buckets + 1
    closed = ag.empty_window((len(bstart), xs.shape[1]))
    active = np.arange(len(bstart))
    for d in range(1, buckets):
        q = active - d
        ok = q >= 0
        ok[ok] &= (ba[q[ok]] == ba[active[ok]]) & (bk[q[ok]] >= lo[active[ok]])
        active, q = active[ok], q[ok]
        if not len(active):
            break
        part = closed[active]
        ag.add_bucket(part, totals[q], (bk[q] - lo[active]).astype(np.float64))
        closed[active] = part
    running = np.empty_like(moments)
    running[..., : ag.MN] = _seg_cumsum(moments[..., : ag.MN], bid)
    frame_min = pd.DataFrame(moments[..., ag.MN]).groupby(bid, sort=False)
    frame_max = pd.DataFrame(moments[..., ag.MX]).groupby(bid, sort=False)
    running[..., ag.MN] = frame_min.cummin().to_numpy()
    running[..., ag.MX] = frame_max.cummax().to_numpy()
    out = closed[bid]
    ag.add_bucket(out, running, float(buckets - 1))
    return out


def _baseline(
    a: np.ndarray, xs: np.ndarray, maintained: np.ndarray, n_base: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per reading and signal: mean and std of the first ``n_base`` values of its asset since its
    last maintenance (NaN until there are that many)."""
    epoch = np.nan_to_num(maintained, nan=-np.inf)
    group = np.cumsum(_segment_starts(a, epoch)) - 1
    present = ~np.isnan(xs)
    count = _seg_cumsum(present.astype(np.float64), group)
    use = present & (count <= n_base)
    x0 = np.where(use, xs, 0.0)
    starts = np.flatnonzero(_segment_starts(group))
    s = np.add.reduceat(x0, starts, axis=0)[group]
    q = np.add.reduceat(x0 * x0, starts, axis=0)[group]
    done = count >= n_base
    mean = np.where(done, s / n_base, np.nan)
    std = np.where(done, np.sqrt(np.maximum(q / n_base - (s / n_base) ** 2, 0.0)), np.nan)
    return mean, std


def _last(asset_id: np.ndarray, t: np.ndarray, x: np.ndarray, width: float, buckets: int) -> np.ndarray:
    """The newest value of each signal at each reading, if it lies in the first window (else NaN)."""
    seen_at = np.where(np.isnan(x), np.nan, t[:, None])
    frame = (
        pd.DataFrame(np.concatenate([x, seen_at], axis=1)).groupby(asset_id, sort=False).ffill().to_numpy()
    )
    value, at = frame[:, : x.shape[1]], frame[:, x.shape[1] :]
    lo = np.floor(t / width) - buckets + 1
    return np.where(np.floor(at / width) >= lo[:, None], value, np.nan)


def _ewma(a: np.ndarray, t: np.ndarray, xs: np.ndarray, halflife: float) -> np.ndarray:
    """Time-decayed mean ``sum(x_j 2**(-(t - t_j)/h)) / sum(2**(-(t - t_j)/h))`` over present values.

    The weights are rebased every ``EWMA_SPAN`` half-lives so they stay finite; older terms carry
    over scaled (anything ``2 * EWMA_SPAN`` half-lives old is below double precision anyway)."""
    n, k_sig = xs.shape
    out = np.full((n, k_sig), np.nan)
    asset_id = np.cumsum(_segment_starts(a)) - 1
    for c in range(k_sig):
        rows = np.flatnonzero(~np.isnan(xs[:, c]))
        if not len(rows):
            continue
        aa, tt, xx = a[rows], t[rows], xs[rows, c]
        first = _segment_starts(aa)
        t0 = tt[first][np.cumsum(first) - 1]
        u = (tt - t0) / halflife
        chunk = np.floor(u / EWMA_SPAN)
        gstart = _segment_starts(aa, chunk)
        group = np.cumsum(gstart) - 1
        w = np.exp2(u - EWMA_SPAN * chunk)
        sums = _seg_cumsum(np.stack([xx * w, w], axis=1), group)
        ends = np.r_[np.flatnonzero(gstart)[1:] - 1, len(rows) - 1]
        gchunk, gasset = chunk[gstart], aa[gstart]
        carry = np.zeros((len(ends), 2))
        for g in np.flatnonzero(gasset[1:] == gasset[:-1]) + 1:  # one per rebasing: few on real logs
            carry[g] = (sums[ends[g - 1]] + carry[g - 1]) * np.exp2(-EWMA_SPAN * (gchunk[g] - gchunk[g - 1]))
        total = sums + carry[group]
        out[rows, c] = total[:, 0] / total[:, 1]
    return pd.DataFrame(out).groupby(asset_id, sort=False).ffill().to_numpy()
