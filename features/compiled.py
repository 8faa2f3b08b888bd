"""Compiled loops of the feature engines (numba), mostly the batch engine's: one pass over a log
sorted by (group, ts).

Each kernel walks the readings in order and keeps a group's running state the way the streaming
engine keeps an asset's, so a reading costs O(1) amortised and nothing is recomputed per reading.
A group is an asset's epoch (readings since its last maintenance); ``start[i]`` marks the first
reading of each. Kernels release the GIL: the batch engine runs its slices on threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from features import aggregators as ag

_N, _S, _Q, _MN, _MX = ag.N, ag.S, ag.Q, ag.MN, ag.MX
_W_NJ, _W_NJJ, _W_SJ = ag.W_NJ, ag.W_NJJ, ag.W_SJ
NO_BUCKET = np.iinfo(np.int64).min  # a bucket id that no reading has


@njit(cache=True, nogil=True)
def window_aggregates(
    start: np.ndarray,
    t: np.ndarray,
    xs: np.ndarray,
    cols: np.ndarray,
    emit: np.ndarray,
    width: float,
    buckets: int,
    out: np.ndarray,
) -> None:
    """Fill ``out`` ``(emitting rows, signals, WINDOW)`` with the window aggregates at each emitting
    reading: its group's readings in the bucket of ``t`` and the ``buckets - 1`` before it, at or
    before the reading; signals not in ``cols`` get the empty window. ``xs``: ``(rows, signals)``
    values (NaN = missing); ``emit``: which rows get a window.

    The closed buckets' window costs O(1) per bucket whatever ``buckets`` (van Herk / Gil-Werman):
    a group's bucket ids are cut into blocks of ``buckets`` ids; the window of a bucket at position
    ``p`` of its block is the tail of the previous block after ``p`` (running aggregates of that
    block's buckets summed backwards once, when it ends) plus the head of its own block before ``p``
    (summed forwards as buckets close). No sum is subtracted from another, so nothing cancels
    however long the log, and min and max come the same way. Each reading then adds its own
    bucket's running part. Blocks keep only their buckets that hold readings."""
    k_sig = len(cols)
    for c in range(out.shape[1]):
        if not (cols == c).any():
            _empty_windows(out[:, c : c + 1])
    block = np.empty((buckets, k_sig, ag.BUCKET))  # the current block's closed buckets, in order
    block_at = np.empty(buckets, dtype=np.int64)  # and their positions in the block
    tail = np.empty((buckets + 1, k_sig, ag.WINDOW))  # the previous block's, from its i-th bucket on
    tail_at = np.empty(buckets + 1, dtype=np.int64)
    head = np.empty((1, k_sig, ag.WINDOW))  # the current block's closed buckets, at their positions
    cur = np.empty((1, k_sig, ag.BUCKET))  # the bucket of the newest reading
    closed = np.empty((1, k_sig, ag.WINDOW))  # the window's closed buckets, at window positions
    k0 = cur_k = b_cur = p_cur = np.int64(0)
    filled = tails = nxt = 0  # buckets in ``block``; in ``tail``; the first tail at or after p + 1
    m = 0
    for i in range(xs.shape[0]):
        k = np.int64(np.floor(t[i] / width))
        if start[i] or k != cur_k:
            b_new, p = (k - k0) // buckets, (k - k0) % buckets
            if start[i]:
                k0, b_new, p, filled, tails, nxt = k, 0, 0, 0, 0, 0
                _empty_windows(tail[:1])
                _empty_windows(head)
            else:
                _copy(block, filled, cur, 0)
                block_at[filled] = p_cur
                filled += 1
                if b_new == b_cur:
                    for c in range(k_sig):
                        _place(head, 0, c, cur, 0, c, float(p_cur))
                else:
                    tails = filled if b_new == b_cur + 1 else 0
                    _empty_windows(tail[tails : tails + 1])
                    for q in range(tails - 1, -1, -1):
                        _copy(tail, q, tail, q + 1)
                        tail_at[q] = block_at[q]
                        for c in range(k_sig):
                            _place(tail, q, c, block, q, c, float(block_at[q]))
                    filled, nxt = 0, 0
                    _empty_windows(head)
            cur_k = k
            for c in range(k_sig):
                _clear_bucket(cur, 0, c)
            b_cur, p_cur = b_new, p
            while nxt < tails and tail_at[nxt] <= p:
                nxt += 1
            # The previous block's buckets after p sit at window position q - p - 1; this block's
            # before p at q + buckets - 1 - p.
            _join(closed[0], tail[nxt], -float(p + 1), head[0], float(buckets - 1 - p))
        for c in range(k_sig):
            _add_value(cur, 0, c, xs[i, cols[c]])
        if emit[i]:
            for c in range(k_sig):
                _window_at(out, m, cols[c], closed, 0, c, cur, float(buckets - 1))
            m += 1


@njit(cache=True, nogil=True)
def _copy(dst: np.ndarray, i: int, src: np.ndarray, j: int) -> None:
    """``dst[i] = src[j]`` without array views."""
    for c in range(dst.shape[1]):
        for f in range(dst.shape[2]):
            dst[i, c, f] = src[j, c, f]


# The helpers below index one signal's bucket or window as ``a[r, c]`` with scalars: in these loops
# an array view costs more than the arithmetic.


@njit(cache=True, nogil=True)
def _clear_bucket(b: np.ndarray, r: int, c: int) -> None:
    b[r, c, _N], b[r, c, _S], b[r, c, _Q] = 0.0, 0.0, 0.0
    b[r, c, _MN], b[r, c, _MX] = np.inf, -np.inf


@njit(cache=True, nogil=True)
def _clear_window(w: np.ndarray, r: int, c: int) -> None:
    for f in range(ag.WINDOW):
        w[r, c, f] = 0.0
    w[r, c, _MN], w[r, c, _MX] = np.inf, -np.inf


@njit(cache=True, nogil=True)
def _empty_windows(w: np.ndarray) -> None:
    """Set every window of ``w`` ``(rows, signals, WINDOW)`` empty."""
    for r in range(w.shape[0]):
        for c in range(w.shape[1]):
            _clear_window(w, r, c)


@njit(cache=True, nogil=True)
def _add_value(b: np.ndarray, r: int, c: int, v: float) -> None:
    """Count reading value ``v`` (NaN: missing, ignored) into bucket ``b[r, c]``."""
    if not np.isnan(v):
        b[r, c, _N] += 1.0
        b[r, c, _S] += v
        b[r, c, _Q] += v * v
        b[r, c, _MN] = min(b[r, c, _MN], v)
        b[r, c, _MX] = max(b[r, c, _MX], v)


@njit(cache=True, nogil=True)
def _place(win: np.ndarray, r: int, c: int, buckets: np.ndarray, q: int, b: int, j: float) -> None:
    """Add bucket ``buckets[q, b]`` at window position ``j`` to window ``win[r, c]``."""
    n, s = buckets[q, b, _N], buckets[q, b, _S]
    win[r, c, _N] += n
    win[r, c, _S] += s
    win[r, c, _Q] += buckets[q, b, _Q]
    win[r, c, _MN] = min(win[r, c, _MN], buckets[q, b, _MN])
    win[r, c, _MX] = max(win[r, c, _MX], buckets[q, b, _MX])
    win[r, c, _W_NJ] += n * j
    win[r, c, _W_NJJ] += n * j * j
    win[r, c, _W_SJ] += s * j


@njit(cache=True, nogil=True)
def _window_at(
    out: np.ndarray, m: int, oc: int, closed: np.ndarray, r: int, c: int, cur: np.ndarray, j: float
) -> None:
    """``out[m, oc]`` = the closed buckets' window ``closed[r, c]`` plus the running bucket
    ``cur[r, c]`` at position ``j``: the window at a reading (one pass)."""
    n, s = cur[r, c, _N], cur[r, c, _S]
    out[m, oc, _N] = closed[r, c, _N] + n
    out[m, oc, _S] = closed[r, c, _S] + s
    out[m, oc, _Q] = closed[r, c, _Q] + cur[r, c, _Q]
    out[m, oc, _MN] = min(closed[r, c, _MN], cur[r, c, _MN])
    out[m, oc, _MX] = max(closed[r, c, _MX], cur[r, c, _MX])
    out[m, oc, _W_NJ] = closed[r, c, _W_NJ] + n * j
    out[m, oc, _W_NJJ] = closed[r, c, _W_NJJ] + n * j * j
    out[m, oc, _W_SJ] = closed[r, c, _W_SJ] + s * j


@njit(cache=True, nogil=True)
def _join(out: np.ndarray, a: np.ndarray, ca: float, b: np.ndarray, cb: float) -> None:
    """``out`` = window aggregates ``a`` with every bucket moved ``ca`` positions on (``j -> j + ca``:
    the position moments follow from the sums), merged with ``b`` moved ``cb`` on."""
    for c in range(out.shape[0]):
        an, bn, a_nj, b_nj = a[c, _N], b[c, _N], a[c, _W_NJ], b[c, _W_NJ]
        out[c, _N] = an + bn
        out[c, _S] = a[c, _S] + b[c, _S]
        out[c, _Q] = a[c, _Q] + b[c, _Q]
        out[c, _MN] = min(a[c, _MN], b[c, _MN])
        out[c, _MX] = max(a[c, _MX], b[c, _MX])
        out[c, _W_NJ] = (a_nj + ca * an) + (b_nj + cb * bn)
        out[c, _W_NJJ] = (a[c, _W_NJJ] + ca * (2.0 * a_nj + ca * an)) + (
            b[c, _W_NJJ] + cb * (2.0 * b_nj + cb * bn)
        )
        out[c, _W_SJ] = (a[c, _W_SJ] + ca * a[c, _S]) + (b[c, _W_SJ] + cb * b[c, _S])


# The running state of an asset's signal beside its windows (``RUNNING`` numbers), and what an
# emitting reading keeps of it (``reading_state``'s output).
_SHIFT, _LAST_X, _LAST_T, _NUM, _DEN, _EW_T, _BASE_N, _BASE_S, _BASE_Q = range(9)
RUNNING = 9
SHIFT, LAST_X, LAST_T, EWMA, BASE_MEAN, BASE_STD = range(6)


@njit(cache=True, nogil=True, error_model="numpy")
def reading_state(
    asset_start: np.ndarray,
    start: np.ndarray,
    t: np.ndarray,
    x: np.ndarray,
    emit: np.ndarray,
    halflife: float,
    n_base: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per reading, what the streaming engine keeps per asset beside its windows, in its arithmetic.

    Returns ``xs`` (every row: ``x`` shifted by its asset's first value of the signal so far) and
    ``(6, emitting rows, signals)``: the shift, the newest value and its time, the EWMA of ``xs``
    (decayed by event time, half-life ``halflife``) and the mean and std of the group's first
    ``n_base`` values (NaN until it has them). ``asset_start`` marks each asset's first reading,
    ``start`` each group's (an asset's epoch: last values, EWMA and baseline start afresh)."""
    xs = np.empty(x.shape)
    out = np.empty((6, int(emit.sum()), x.shape[1]))
    st = np.zeros((RUNNING, x.shape[1]))
    e = 0
    for i in range(len(t)):
        if asset_start[i]:
            st[_SHIFT] = np.nan
        if start[i]:
            st[_LAST_X], st[_LAST_T] = np.nan, np.nan
            st[_NUM : _BASE_Q + 1] = 0.0
        e = _fold_reading(st, i, t, x, xs, emit, out, e, halflife, n_base)
    return xs, out


@njit(cache=True, nogil=True, error_model="numpy")
def stream_reading_state(
    sl: np.ndarray,
    t: np.ndarray,
    x: np.ndarray,
    emit: np.ndarray,
    running: tuple[np.ndarray, ...],
    halflife: float,
    n_base: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reading_state` for the streaming engine: the readings ``(sl, t, x)`` of any assets,
    each asset's in event-time order, folded into its slot's running state ``running`` (the
    ``RUNNING`` arrays ``(slots, signals)`` in the order of the ``_SHIFT`` .. ``_BASE_Q`` indices,
    updated in place). Returns ``xs`` and the kept state at the ``emit`` rows, as there."""
    xs = np.empty(x.shape)
    out = np.empty((6, int(emit.sum()), x.shape[1]))
    st = np.empty((RUNNING, x.shape[1]))
    e = 0
    for i in range(len(t)):
        s = sl[i]
        for f in range(RUNNING):
            st[f] = running[f][s]
        e = _fold_reading(st, i, t, x, xs, emit, out, e, halflife, n_base)
        for f in range(RUNNING):
            running[f][s] = st[f]
    return xs, out


@njit(cache=True, nogil=True, error_model="numpy")
def _fold_reading(
    st: np.ndarray,
    i: int,
    t: np.ndarray,
    x: np.ndarray,
    xs: np.ndarray,
    emit: np.ndarray,
    out: np.ndarray,
    e: int,
    halflife: float,
    n_base: int,
) -> int:
    """Fold reading ``i`` into the running state ``st`` (its shifted values into ``xs``); if it
    emits, keep the state in row ``e`` of ``out``. Returns the next row of ``out``."""
    for c in range(x.shape[1]):
        xs[i, c] = _fold(st, c, x[i, c], t[i], halflife, n_base)
    if emit[i]:
        _kept(st, out, e, n_base)
        e += 1
    return e


@njit(cache=True, nogil=True, error_model="numpy")
def _fold(st: np.ndarray, c: int, v: float, t: float, halflife: float, n_base: int) -> float:
    """Fold value ``v`` of signal ``c`` at time ``t`` into the running state ``st``; returns it
    shifted by the signal's first value (NaN if missing: then nothing changes)."""
    if np.isnan(v):
        return np.nan
    if np.isnan(st[_SHIFT, c]):
        st[_SHIFT, c] = v
    d = v - st[_SHIFT, c]
    st[_LAST_X, c], st[_LAST_T, c] = v, t
    decay = np.exp2(-(t - st[_EW_T, c]) / halflife) if st[_DEN, c] > 0 else 0.0
    st[_NUM, c] = st[_NUM, c] * decay + d
    st[_DEN, c] = st[_DEN, c] * decay + 1.0
    st[_EW_T, c] = t
    if st[_BASE_N, c] < n_base:
        st[_BASE_N, c] += 1.0
        st[_BASE_S, c] += d
        st[_BASE_Q, c] += d * d
    return d


@njit(cache=True, nogil=True, error_model="numpy")
def _kept(st: np.ndarray, out: np.ndarray, e: int, n_base: int) -> None:
    """Row ``e`` of ``out`` (6, rows, signals): what an emitting reading keeps of the state ``st``."""
    for c in range(st.shape[1]):
        out[SHIFT, e, c] = st[_SHIFT, c]
        out[LAST_X, e, c], out[LAST_T, e, c] = st[_LAST_X, c], st[_LAST_T, c]
        out[EWMA, e, c] = st[_NUM, c] / st[_DEN, c]  # NaN before the first value
        n = st[_BASE_N, c]
        if n >= n_base:
            mean = st[_BASE_S, c] / n
            out[BASE_MEAN, e, c] = mean
            out[BASE_STD, e, c] = np.sqrt(max(st[_BASE_Q, c] / n - mean**2, 0.0))
        else:
            out[BASE_MEAN, e, c], out[BASE_STD, e, c] = np.nan, np.nan


@njit(cache=True, nogil=True)
def running_clock(slots: np.ndarray, ts: np.ndarray, clock: np.ndarray) -> np.ndarray:
    """Each reading's asset clock (the newest ``ts`` of its slot so far) just before it, in row
    order; ``clock`` holds each slot's clock before the first row and is advanced in place."""
    out = np.empty(len(ts))
    for i in range(len(ts)):
        s = slots[i]
        out[i] = clock[s]
        if ts[i] > clock[s]:
            clock[s] = ts[i]
    return out


@njit(cache=True, nogil=True)
def silences(
    asset: np.ndarray,
    ts: np.ndarray,
    accepted: np.ndarray,
    watermark: float,
    clock: np.ndarray,
    stale: np.ndarray,
    stale_after: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The stale markers of one partition's readings (row order), as if they came one at a time: an
    asset is marked when the partition's watermark (its newest ``ts`` so far, ``watermark`` before
    the first row) passes the asset's clock by more than ``stale_after`` before the asset's next
    accepted reading, stamped with that watermark; once per silence. So the markers do not depend on
    how the readings are cut into batches.

    ``asset``: each row's asset (an index into ``clock``/``stale``, which hold each asset's clock and
    stale flag before the rows and are advanced in place); ``accepted``: rows the engine took (not
    late, not duplicates). Returns the marked assets, the markers' times, the rows after which each
    marker went out (the row that moved the watermark past the silence), and the new watermark."""
    n = len(ts)
    w = np.empty(n + 1)  # w[j]: the watermark once j rows are in
    w[0] = watermark
    for j in range(n):
        w[j + 1] = max(w[j], ts[j])
    # Where each asset's current silence starts being checked: w[0] was checked with the last batch.
    start = np.ones(len(clock), dtype=np.int64)
    marked = np.empty(n + len(clock), dtype=np.int64)
    after = np.empty(n + len(clock), dtype=np.int64)
    at = np.empty(n + len(clock))
    m = 0
    for j in range(n + len(clock)):
        if j < n:  # a reading ends its asset's silence: was the asset marked before it came?
            if not accepted[j]:
                continue
            a, end = asset[j], j
        else:  # the silences still going on after the last row
            a, end = j - n, n
        hit = False
        if not stale[a]:
            k = max(np.searchsorted(w, clock[a] + stale_after, side="right"), start[a])
            if k <= end:
                marked[m], at[m], after[m] = a, w[k], k - 1
                m += 1
                hit = True
        if j < n:
            clock[a] = max(clock[a], ts[j])
            stale[a] = False
            start[a] = j + 1
        elif hit:
            stale[a] = True
    return marked[:m], at[:m], after[:m], w[n]


@njit(cache=True, nogil=True)
def stream_window_step(
    sl: np.ndarray,
    t: np.ndarray,
    xs: np.ndarray,
    emit: np.ndarray,
    width: float,
    buckets: int,
    cur_k: np.ndarray,
    ring_k: np.ndarray,
    ring: np.ndarray,
    cur: np.ndarray,
    closed: np.ndarray,
) -> np.ndarray:
    """The streaming engine's windows: the readings ``(sl, t, xs)`` of any assets, each asset's in
    event-time order.

    Per asset slot the state is the bucket id of its newest reading (``cur_k``) and that bucket's
    running aggregate (``cur``), a ring of ``buckets`` closed buckets (``ring`` with ids
    ``ring_k``) and the window of those before the current bucket (``closed``), summed again from
    the ring when a new bucket opens. Returns the window aggregates ``(emitting rows, signals,
    WINDOW)`` after each ``emit`` reading; the state is updated in place."""
    m, k_sig = xs.shape
    out = np.empty((int(emit.sum()), k_sig, ag.WINDOW))
    e = 0
    for r in range(m):
        s = sl[r]
        k = np.int64(np.floor(t[r] / width))
        if k != cur_k[s]:
            old = cur_k[s]
            if old != NO_BUCKET:
                pos = old % buckets
                ring_k[s, pos] = old
                for c in range(k_sig):
                    for f in range(ag.BUCKET):
                        ring[s, pos, c, f] = cur[s, c, f]
            lo = k - buckets + 1
            own = ring[s]  # (buckets, signals, BUCKET)
            for c in range(k_sig):
                _clear_window(closed, s, c)
            for q in range(buckets):
                bid = ring_k[s, q]
                if lo <= bid < k:
                    for c in range(k_sig):
                        _place(closed, s, c, own, q, c, float(bid - lo))
            for c in range(k_sig):
                _clear_bucket(cur, s, c)
            cur_k[s] = k
        for c in range(k_sig):
            _add_value(cur, s, c, xs[r, c])
        if emit[r]:
            for c in range(k_sig):
                _window_at(out, e, c, closed, s, c, cur, float(buckets - 1))
            e += 1
    return out
