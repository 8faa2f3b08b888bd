"""Per-asset scorer state (LSTM sequences, healthy baselines) against brute-force references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scoring import sequences
from scoring.baselines import AssetBaselines
from scoring.sequences import SequenceStore


def reference_window(history: list[np.ndarray], seq_len: int) -> np.ndarray:
    w = history[-seq_len:]
    return np.array([w[0]] * (seq_len - len(w)) + w)


@pytest.mark.parametrize("step", [0.0, 3.0], ids=["every_vector", "step_3"])
@pytest.mark.parametrize("few_repeats", [0, 4, 1000], ids=["by_segments", "mixed", "by_rounds"])
def test_sequences_match_brute_force_with_repeats_growth_and_redelivery(monkeypatch, few_repeats, step):
    """Each row's sequence is its asset's last T - 1 kept vectors and itself; with a step, a vector is
    kept once the step has passed since the last one kept (rows here are 1 apart per asset). Its
    history key counts the vectors kept before it; a row with none pads itself with copies of itself,
    the prefix of the history its own vector opens: key 1."""
    monkeypatch.setattr(sequences, "_FEW_REPEATS", few_repeats)  # each way of appending repeats
    rng = np.random.default_rng(7)
    seq_len, n_features = 5, 3
    store = SequenceStore(seq_len, n_features, capacity=2, step=step)  # grows several times
    history: dict[str, list[np.ndarray]] = {}  # the kept vectors of each asset
    kept_at: dict[str, float] = {}
    newest: dict[str, np.ndarray] = {}
    clock: dict[str, int] = {}
    for batch in range(150):
        if batch % 2:  # an asset often repeats within a batch
            n = int(rng.integers(0, 40))
            ids = [f"a{rng.integers(0, 9)}" for _ in range(n)]
        else:  # every asset at most once (a live fleet's batches)
            n = int(rng.integers(0, 10))
            ids = [f"a{i}" for i in rng.permutation(9)[:n]]
        ts = []
        for a in ids:
            clock[a] = clock.get(a, 0) + 1
            ts.append(clock[a])
        x = rng.normal(size=(n, n_features)).astype(np.float32)
        slots, keep = store.admit(ids, np.array(ts, dtype=float))
        seqs = store.append(slots, x, np.array(ts, dtype=float))
        seq, prefix = seqs.take(), seqs.prefix
        assert keep.all() and seq.shape == (n, seq_len, n_features)
        some = rng.permutation(n)[: n // 2]  # a scorer gathers only the rows it runs whole
        np.testing.assert_array_equal(seqs.take(some), seq[some])
        for i, a in enumerate(ids):
            kept = history.setdefault(a, [])
            np.testing.assert_array_equal(seq[i], reference_window([*kept[-(seq_len - 1) :], x[i]], seq_len))
            assert prefix[i] == (len(kept) if kept else 1)
            if ts[i] - kept_at.get(a, -np.inf) >= step * (1 - sequences.STEP_TOLERANCE):
                kept.append(x[i])
                kept_at[a] = ts[i]
            newest[a] = x[i]
        # The same batch delivered again changes nothing and scores nothing.
        again, keep = store.push(ids, np.array(ts, dtype=float), x)
        assert not keep.any() and len(again) == 0
    for a, x_a in newest.items():
        np.testing.assert_array_equal(store.latest([a])[0], x_a)


def test_rows_not_newer_than_the_previous_row_of_their_asset_are_dropped():
    store = SequenceStore(2, 1)
    _, keep = store.push(["a", "a", "b", "a"], np.array([1.0, 1.0, 5.0, 0.5]), np.ones((4, 1), np.float32))
    assert keep.tolist() == [True, False, True, False]


def test_a_vector_older_than_its_assets_stale_marker_is_new_data_and_a_redelivered_marker_is_not():
    # The feature worker marks a silent asset stale at its partition's watermark (t=100); the reading
    # it held back for the grace period (t=50) becomes a vector after the marker, when data resumes.
    store = SequenceStore(seq_len=2, n_features=1)
    stale = np.array([False, True, False])
    _, keep = store.admit(["a", "a", "a"], np.array([10.0, 100.0, 50.0]), stale)
    assert keep.tolist() == [True, True, True]
    _, again = store.admit(["a", "a", "a"], np.array([10.0, 100.0, 50.0]), stale)  # redelivered
    assert again.tolist() == [False, False, False]
    _, later = store.admit(["a", "a"], np.array([60.0, 200.0]), np.array([False, True]))
    assert later.tolist() == [True, True]


def test_forgotten_assets_start_over_as_if_never_seen():
    store = SequenceStore(3, 1)
    x = np.arange(4, dtype=np.float32)[:, None]
    store.push(["a", "a", "b", "a"], np.array([1.0, 2.0, 1.0, 3.0]), x)
    store.admit(["a"], np.array([9.0]), np.array([True]))  # a stale marker
    store.forget(store.slots(["a"]))
    # Older rows and markers are new again (another owner moved on meanwhile); the sequence restarts.
    seq, keep = store.push(["a"], np.array([2.5]), np.array([[7.0]], np.float32))
    assert keep.tolist() == [True] and seq[0, :, 0].tolist() == [7.0, 7.0, 7.0]
    assert store.admit(["a"], np.array([5.0]), np.array([True]))[1].tolist() == [True]
    assert store.latest(["b"])[0].tolist() == [2.0]  # other assets untouched


def test_a_remembered_lstm_state_serves_only_its_own_history():
    """The scorer takes one LSTM step from a remembered state only for rows on exactly that history:
    not after a vector joins it, nor after the asset is forgotten, nor under another model."""
    store = SequenceStore(3, 1, capacity=1, step=10.0, state_size=2)
    x = np.ones((1, 1), np.float32)

    def row(asset: str, ts: float) -> tuple[np.ndarray, np.ndarray]:
        slots, _ = store.admit([asset], np.array([ts]))
        return slots, store.append(slots, x, np.array([ts])).prefix

    slots, opened = row("a", 0.0)  # pads itself: its copies of v0 are the prefix of the history [v0]
    assert not store.known(slots, opened).any()
    store.remember(slots, opened, np.full((1, 2), 7.0, np.float32), np.zeros((1, 2), np.float32))
    slots, prefix = row("a", 1.0)  # within the step: on the history [v0], whose state is known
    assert prefix.tolist() == opened.tolist() and store.known(slots, prefix).all()
    slots, later = row("a", 2.0)
    assert later.tolist() == prefix.tolist() and store.known(slots, later).all()
    assert store.state(slots)[0].tolist() == [[7.0, 7.0]]
    slots, moved = row("a", 11.0)  # v0 + 10 s: the row joins the history, after its own sequence
    assert moved.tolist() == prefix.tolist()
    slots, after = row("a", 12.0)
    assert after[0] > prefix[0] and not store.known(slots, after).any()
    store.remember(slots, after, np.ones((1, 2), np.float32), np.ones((1, 2), np.float32))
    row("b", 0.0)  # grows the store: remembered states survive
    assert store.known(*row("a", 13.0)).all()
    store.forget_states()
    assert not store.known(*row("a", 14.0)).any()
    store.remember(slots, after, np.ones((1, 2), np.float32), np.ones((1, 2), np.float32))
    store.forget(slots)
    slots, restarted = row("a", 15.0)  # starts over: a history never seen, no state
    assert restarted[0] > after[0] and not store.known(slots, restarted).any()


def test_baselines_are_the_mean_of_each_assets_first_n_vectors_across_batches_and_resets() -> None:
    """Drivers compare with these: repeats within a batch, NaNs, growth and maintenance resets."""
    rng = np.random.default_rng(3)
    n, n_features = 4, 3
    baselines = AssetBaselines(n_features, n, capacity=2)  # grows
    taken: dict[int, list[np.ndarray]] = {}
    for step in range(60):
        size = int(rng.integers(0, 12))
        slots = rng.integers(0, 7, size)
        x = rng.normal(size=(size, n_features))
        x[rng.random(x.shape) < 0.2] = np.nan
        baselines.add(slots, x)
        for s, row in zip(slots.tolist(), x, strict=True):
            if len(taken.setdefault(s, [])) < n:
                taken[s].append(row)
        if step % 10 == 9:
            gone = int(rng.integers(0, 7))
            baselines.reset(np.array([gone]))
            taken[gone] = []
        asked = np.arange(9)  # slots 7 and 8 were never seen
        expected = np.full((9, n_features), np.nan)
        for s, rows in taken.items():
            if rows:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: NaN expected
                    expected[s] = np.nanmean(np.array(rows), axis=0)
        np.testing.assert_allclose(baselines.mean(asked), expected, rtol=1e-12)
