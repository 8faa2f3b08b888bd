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
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from features import aggregators as ag
from features.eventtime import emits, late_and_duplicates
from features.spec import FeatureSpec

CHUNK_ROWS = 250_000  # rows per slice of whole assets (bounds the memory of the window arrays)
EWMA_SPAN = 1000.0  # half-lives per rebasing chunk of the EWMA sums (2**1000 stays finite)


def compute_features(
    readings: pd.DataFrame,
    spec: FeatureSpec,
    maintenance: pd.DataFrame | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Feature vectors of a log: columns ``asset_id``, ``ts``, then ``spec.names``; one row per
    emission, sorted by asset (first appearance) then ts.

    ``readings``: ``asset_id``, ``ts`` and the profile's signal columns (NaN = missing), in delivery
    order. ``maintenance``: ``asset_id``, ``ts`` of maintenance events (known before the readings);
    each starts its asset's windows, last values, EWMA and baseline afresh from its time on.
    ``workers``: threads for a log of several slices (default: one per CPU); the output is the same.
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
    slices = [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]
    jobs = [(spec, a[lo:hi], t[lo:hi], x[lo:hi], maintained[lo:hi]) for lo, hi in slices]
    done = _run_all(jobs, workers)  # (rows of the slice, features), rows then moved to the whole log's
    parts = [(sel + lo, matrix) for (lo, _), (sel, matrix) in zip(slices, done, strict=True)]
    rows = [p[0] for p in parts]
    sel = np.concatenate(rows) if rows else np.array([], dtype=np.int64)
    matrix = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, len(spec.names)))
    out = pd.DataFrame(matrix, columns=list(spec.names))
    out.insert(0, "ts", t[sel])
    out.insert(0, "asset_id", pd.array(uniques[a[sel]], dtype=object) if len(sel) else [])
    return out


def _run_all(jobs: list[tuple], workers: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_features_sorted` of each slice; slices are whole assets, so threads can share them
    (numpy and pandas release the GIL in their loops over the slice's arrays)."""
    n = min(len(jobs), workers if workers is not None else os.cpu_count() or 1)
    if n <= 1:
        return [_features_sorted(*job) for job in jobs]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(_features_sorted, *zip(*jobs, strict=True)))


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
    # A maintenance event starts the asset's windows, last values, EWMA and baseline afresh: they
    # are computed per epoch (an asset between two maintenance events) as if it were another asset.
    epoch = np.cumsum(_segment_starts(a, np.nan_to_num(maintained, nan=-np.inf))) - 1

    moments = ag.bucket_moments(xs)
    windows = {}
    for w in spec.windows:  # only the signals the window's features read (the rest stay empty)
        read = {s for f in spec.features if f.window == w.name for s in (f.signal, f.other)}
        cols = [c for c, s in enumerate(spec.used_signals) if s in read]
        windows[w.name] = ag.empty_window((len(sel), len(spec.used_signals)))
        windows[w.name][:, cols] = _window(epoch, t, moments[:, cols], w.width, w.buckets)[sel]
    base_mean, base_std = _baseline(epoch, xs, spec.baseline_n)
    since = np.where(np.isnan(maintained), t[first][asset_id], maintained)
    inputs = ag.Inputs(
        windows=windows,
        shift=shift[sel],
        last=_last(epoch, t, x, spec.windows[0].width, spec.windows[0].buckets)[sel],
        ewma=_ewma(epoch, t, xs, spec.ewma_halflife)[sel],
        base_mean=base_mean[sel],
        base_std=base_std[sel],
        ts=t[sel],
        maintained_at=since[sel],
    )
    return sel, ag.compute(spec, inputs)


def _window(a: np.ndarray, t: np.ndarray, moments: np.ndarray, width: float, buckets: int) -> np.ndarray:
    """Window aggregates ``(rows, signals, WINDOW)`` at each reading (``moments``: its bucket
    contributions): the window's closed buckets (computed once per bucket) plus the running part of
    the reading's own bucket."""
    k = np.floor(t / width).astype(np.int64)
    start = _segment_starts(a, k)
    if start.all():  # one reading per bucket (a 1-minute log, 1-minute buckets): no bucket to sum
        out = _closed(a, k, moments, buckets)
        ag.add_bucket(out, moments, float(buckets - 1))
        return out
    bstart = np.flatnonzero(start)
    bid = np.cumsum(start) - 1
    totals = np.empty((len(bstart), *moments.shape[1:]))
    totals[..., : ag.MN] = np.add.reduceat(moments[..., : ag.MN], bstart, axis=0)
    totals[..., ag.MN] = np.minimum.reduceat(moments[..., ag.MN], bstart, axis=0)
    totals[..., ag.MX] = np.maximum.reduceat(moments[..., ag.MX], bstart, axis=0)
    out = _closed(a[bstart], k[bstart], totals, buckets)[bid]
    laid, dest = _running(moments, bid)
    ag.add_bucket(out, laid[dest], float(buckets - 1))
    return out


def _closed(ba: np.ndarray, bk: np.ndarray, totals: np.ndarray, buckets: int) -> np.ndarray:
    """Per bucket (sorted by asset, then id ``bk``): the aggregates of its asset's buckets among the
    ``buckets - 1`` ids before it, in O(1) per bucket whatever the window's length.

    Each asset's bucket ids are cut into blocks of ``buckets`` ids (van Herk / Gil-Werman): for a
    bucket at position ``p`` of block ``B`` that is the tail of block ``B - 1`` after position ``p``
    plus the head of block ``B`` before ``p``, read off running aggregates of each block backwards
    and forwards. No running sum is subtracted from another, so nothing cancels however long the
    log, and min/max come the same way."""
    asset_start = _segment_starts(ba)
    asset = np.cumsum(asset_start) - 1
    r = bk - bk[asset_start][asset]  # bucket ids from the asset's first: small numbers
    block, p = np.divmod(r, buckets)
    group = np.cumsum(_segment_starts(asset, block)) - 1
    win = ag.placed(totals, p)  # at their position within the block
    # The head: the block's buckets before this one, at window position p' + buckets - 1 - p.
    laid, dest = _running(win, group)
    has_head = np.r_[False, group[1:] == group[:-1]]
    out = laid[np.where(has_head, np.r_[0, dest[:-1]], len(laid) - 1)]
    ag.move(out, buckets - 1 - p)
    # The tail: the previous block's buckets from the window's first id on, at position p' - p - 1.
    key = asset * (int(r.max()) + buckets + 1) + r
    first = np.searchsorted(key, key - buckets + 1)
    laid, dest = _running(win, group, backward=True)
    tail = laid[np.where(group[first] != group, dest[first], len(laid) - 1)]
    ag.move(tail, -1 - p)
    ag.merge_into(out, tail)
    return out


def _running(agg: np.ndarray, group: np.ndarray, backward: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Running bucket or window aggregates ``(rows, signals, fields)`` within each group (ids
    ``0, 1, ...`` in contiguous runs), from its first row on, or from its last row back: sums add,
    min and max combine, in row order. Returns ``(laid, dest)``: row ``i``'s is ``laid[dest[i]]``;
    ``laid[-1]`` is the empty aggregate.

    The rows are laid out by rank within their group, then groups longest first, so the rows of
    one rank follow those of the rank before them, group for group, in one slice: one vectorised
    step per rank (as many steps as the longest group has rows)."""
    starts = np.flatnonzero(_segment_starts(group))
    lengths = np.diff(np.r_[starts, len(group)])
    rank = np.arange(len(group)) - np.repeat(starts, lengths)
    if backward:
        rank = np.repeat(lengths - 1, lengths) - rank
    slot = np.empty(len(lengths), dtype=np.int64)  # a group's place within each rank's slice
    slot[np.argsort(-lengths, kind="stable")] = np.arange(len(lengths))
    count = np.bincount(rank)  # groups reaching each rank: the first count[r] slots
    offset = np.r_[0, np.cumsum(count)]
    dest = offset[rank] + slot[group]
    laid = np.empty((len(agg) + 1, *agg.shape[1:]))
    laid[dest] = agg
    laid[-1] = 0.0
    laid[-1, ..., ag.MN], laid[-1, ..., ag.MX] = np.inf, -np.inf
    for r in range(1, len(count)):
        ag.merge_into(laid[offset[r] : offset[r] + count[r]], laid[offset[r - 1] : offset[r - 1] + count[r]])
    return laid, dest


def _baseline(group: np.ndarray, xs: np.ndarray, n_base: int) -> tuple[np.ndarray, np.ndarray]:
    """Per reading and signal: mean and std of the first ``n_base`` values of its epoch (``group``:
    contiguous ids of an asset since its last maintenance), NaN until there are that many."""
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
