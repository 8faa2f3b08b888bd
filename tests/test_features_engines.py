"""The feature spec, and its two engines: each against a brute-force reference, and against each other."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import compiled
from features.batch import compute_features
from features.spec import FeatureSpec, parse_spec
from features.stream import Emitted, FeatureEngine
from ingest.profiles import load_profile
from ingest.schemas import ReadingBatch

MOTOR = load_profile("motor")
SIGNALS = MOTOR.signal_names


def make_log(
    n_assets: int = 3,
    n: int = 600,
    seed: int = 0,
    late_span: float = 90.0,
    dt: float = 1.0,
    t0: float = 1.7e9,
) -> pd.DataFrame:
    """A motor log as delivered: jittered sampling, a long gap per asset, sensor dropouts,
    re-sent duplicates, and delayed rows (some within the 60 s grace period, some beyond it)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_assets):
        t = t0 + rng.uniform(0, 30) + np.cumsum(rng.exponential(dt, n))
        t[n // 2 :] += 700.0 * (i + 1)  # a gap longer than the 10 min window for every asset
        frame = pd.DataFrame(
            {
                "asset_id": f"m{i:05d}",
                "ts": t,
                "temperature_c": 60 + 0.05 * (t - t[0]) / 60 + rng.normal(0, 0.5, n),
                "vibration_mm_s": 2 + rng.gamma(2, 0.2, n),
                "current_a": 40 + rng.normal(0, 2, n),
                "runtime_h": 1000 + (t - t[0]) / 3600,
            }
        )
        for col in ("temperature_c", "vibration_mm_s", "current_a"):
            frame.loc[rng.random(n) < 0.03, col] = np.nan
        frames.append(frame)
    log = pd.concat(frames).sort_values("ts", kind="stable")
    log = pd.concat([log, log.sample(frac=0.03, random_state=seed)])  # re-sent readings
    arrival = log["ts"].to_numpy() + np.where(
        rng.random(len(log)) < 0.06, rng.uniform(0, late_span, len(log)), 0
    )
    return log.iloc[np.argsort(arrival, kind="stable")].reset_index(drop=True)


def stream(
    log: pd.DataFrame, spec: FeatureSpec, batch_size: int, maintenance: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, int, FeatureEngine]:
    """Feed ``log`` to a streaming engine in batches; returns (emitted frame, late count, engine)."""
    engine = FeatureEngine(spec)
    if maintenance is not None:
        engine.add_maintenance(maintenance["asset_id"].tolist(), maintenance["ts"].tolist())
    parts, late = [], 0
    for batch in batches(log, spec, batch_size):
        emitted, rejected = engine.update(batch)
        parts.append(emitted)
        late += len(rejected)
    parts.append(engine.flush())
    return frame_of(Emitted.concat(parts, len(spec.names)), spec), late, engine


def batches(log: pd.DataFrame, spec: FeatureSpec, size: int):
    values = log[list(spec.signals)].to_numpy()
    ids, ts = log["asset_id"].tolist(), log["ts"].to_numpy()
    for s in range(0, len(log), size):
        yield ReadingBatch(
            spec.signals,
            ids[s : s + size],
            ts[s : s + size],
            values[s : s + size],
            np.arange(len(ts[s : s + size])),
        )


def frame_of(emitted: Emitted, spec: FeatureSpec) -> pd.DataFrame:
    out = pd.DataFrame(emitted.values, columns=list(spec.names))
    out.insert(0, "ts", emitted.ts)
    out.insert(0, "asset_id", emitted.asset_id)
    return out


def assert_same(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-6) -> None:
    """Same emissions (asset, ts) and every feature equal to ``rtol`` (NaN where the other is NaN).
    The absolute 1e-9 floor only matters for features that are 0 up to rounding (a flat slope)."""
    a = a.sort_values(["asset_id", "ts"]).reset_index(drop=True)
    b = b.sort_values(["asset_id", "ts"]).reset_index(drop=True)
    assert a["asset_id"].tolist() == b["asset_id"].tolist()
    np.testing.assert_array_equal(a["ts"].to_numpy(), b["ts"].to_numpy())
    for name in a.columns[2:]:
        np.testing.assert_allclose(a[name].to_numpy(), b[name].to_numpy(), rtol=rtol, atol=1e-9, err_msg=name)


# -- spec -----------------------------------------------------------------------------------------


def test_motor_spec_is_modest_and_names_follow_the_profile() -> None:
    spec = FeatureSpec.from_profile(MOTOR)
    assert 30 <= len(spec.names) <= 60
    assert [w.name for w in spec.windows] == ["10m", "1h", "24h"]
    assert [w.length for w in spec.windows] == [600, 3600, 86400]
    assert "temperature_c__slope_10m" in spec.names and "time_since_maintenance" in spec.names
    assert "temperature_rise_per_amp_1h" in spec.names
    assert spec.fingerprint() == FeatureSpec.from_profile(load_profile("motor")).fingerprint()


def test_cmapss_spec_counts_cycles_and_drops_constant_sensors() -> None:
    spec = FeatureSpec.from_profile(load_profile("cmapss"))
    assert [w.length for w in spec.windows] == [5, 10, 30, 180, 360]
    used = set(spec.used_signals)
    for constant in (
        "setting_3",
        "sensor_1",
        "sensor_5",
        "sensor_6",
        "sensor_10",
        "sensor_16",
        "sensor_18",
        "sensor_19",
    ):
        assert constant not in used
    assert {"sensor_2", "sensor_11", "sensor_21"} <= used
    assert spec.baseline_n == 20


def test_fingerprint_changes_with_anything_that_changes_a_value() -> None:
    section = dict(MOTOR.section("features"))
    base = parse_spec(section, "motor", SIGNALS).fingerprint()
    assert parse_spec({**section, "baseline_n": 601}, "motor", SIGNALS).fingerprint() != base
    assert parse_spec({**section, "buckets": 30}, "motor", SIGNALS).fingerprint() != base


def test_spec_rejects_unknown_statistics_and_a_grace_longer_than_a_window() -> None:
    section = dict(MOTOR.section("features"))
    with pytest.raises(ValueError, match="unknown stat"):
        parse_spec({**section, "signals": {"current_a": {"stats": {"10m": ["median"]}}}}, "motor", SIGNALS)
    with pytest.raises(ValueError, match="grace"):
        parse_spec({**section, "grace": 700}, "motor", SIGNALS)


# -- a brute-force reference ------------------------------------------------------------------------

SMALL = parse_spec(
    {
        "windows": {"20s": 20, "1m": 60},
        "buckets": {"20s": 4, "1m": 6},
        "grace": 6,
        "baseline_n": 10,
        "ewma_halflife": 15,
        "time_since_maintenance": True,
        "signals": {
            "temperature_c": {
                "extras": ["last", "ewma"],
                "stats": {"20s": ["mean", "std", "min", "max", "slope", "zscore"], "1m": ["mean", "slope"]},
            },
            "current_a": {"stats": {"20s": ["mean"], "1m": ["max"]}},
        },
        "cross": {
            "rise": {"kind": "rise_per", "signal": "temperature_c", "per": "current_a", "window": "1m"}
        },
    },
    "motor",
    SIGNALS,
)


def reference(log: pd.DataFrame, spec: FeatureSpec, maintenance: dict[str, list[float]]) -> pd.DataFrame:
    """The features by their definition, one reading at a time (slow, obvious)."""
    clock: dict[str, float] = {}
    seen: set[tuple[str, float]] = set()
    accepted = []
    for row in log.itertuples(index=False):  # event-time rules, delivery order
        if row.ts < clock.get(row.asset_id, -math.inf) - spec.grace or (row.asset_id, row.ts) in seen:
            continue
        seen.add((row.asset_id, row.ts))
        clock[row.asset_id] = max(clock.get(row.asset_id, -math.inf), row.ts)
        accepted.append(row)
    ok = pd.DataFrame(accepted).sort_values(["asset_id", "ts"], kind="stable")
    windows = {w.name: w for w in spec.windows}
    rows = []
    for aid, g in ok.groupby("asset_id", sort=False):
        t = g["ts"].to_numpy()
        for i in range(len(g)):
            now = t[i]
            events = [m for m in maintenance.get(aid, []) if m <= now]
            past = g.iloc[: i + 1]  # since the last maintenance: the repaired asset starts afresh
            past = past[past["ts"] >= events[-1]] if events else past
            out = {"asset_id": aid, "ts": now}
            for f in spec.features:
                w = windows.get(f.window)

                def in_window(sig: str, w=w, past=past, now=now) -> tuple[np.ndarray, np.ndarray]:
                    k = np.floor(past["ts"].to_numpy() / w.width)
                    inside = (k >= np.floor(now / w.width) - w.buckets + 1) & past[sig].notna().to_numpy()
                    return past[sig].to_numpy()[inside], k[inside]

                def baseline(sig: str, past=past) -> tuple[float, float]:
                    v = past[sig].dropna().to_numpy()[: spec.baseline_n]
                    return (v.mean(), v.std()) if len(v) == spec.baseline_n else (math.nan, math.nan)

                if f.kind == "last":
                    v, _ = in_window(f.signal, windows[spec.windows[0].name])
                    out[f.name] = v[-1] if len(v) else math.nan
                elif f.kind == "ewma":
                    v = past[f.signal].to_numpy()
                    present = ~np.isnan(v)
                    wgt = 2.0 ** (-(now - past["ts"].to_numpy()[present]) / spec.ewma_halflife)
                    out[f.name] = (wgt * v[present]).sum() / wgt.sum() if present.any() else math.nan
                elif f.kind == "since_maintenance":
                    out[f.name] = now - (events[-1] if events else t[0])
                elif f.kind == "rise_per":
                    mu0, _ = baseline(f.signal)
                    per = in_window(f.other)[0].mean()
                    v = in_window(f.signal)[0]
                    out[f.name] = 0.0 if math.isnan(mu0) or not len(v) else (v.mean() - mu0) / per
                else:
                    v, k = in_window(f.signal)
                    if not len(v):  # e.g. just after maintenance, before the signal's first value
                        out[f.name] = math.nan
                    elif f.kind == "mean":
                        out[f.name] = v.mean()
                    elif f.kind == "std":
                        out[f.name] = v.std()
                    elif f.kind == "min":
                        out[f.name] = v.min()
                    elif f.kind == "max":
                        out[f.name] = v.max()
                    elif f.kind == "slope":
                        out[f.name] = np.polyfit(k - k[0], v, 1)[0] / w.width if len(set(k)) > 1 else 0.0
                    elif f.kind == "zscore":
                        mu0, sd0 = baseline(f.signal)
                        out[f.name] = 0.0 if math.isnan(mu0) else (v.mean() - mu0) / sd0
            rows.append(out)
    return pd.DataFrame(rows)


def test_batch_engine_matches_the_definition_of_every_feature() -> None:
    log = make_log(n_assets=2, n=160, seed=3, late_span=12.0)
    maintenance = {"m00001": [float(log[log.asset_id == "m00001"]["ts"].quantile(0.3))]}
    events = pd.DataFrame([(a, t) for a, ts in maintenance.items() for t in ts], columns=["asset_id", "ts"])
    got = compute_features(log, SMALL, maintenance=events)
    assert_same(got, reference(log, SMALL, maintenance), rtol=1e-9)


def test_batch_engine_matches_the_definition_on_days_of_a_one_minute_log() -> None:
    """A training log's layout: a reading a minute, around silent days, so bucket ids run far from
    an asset's first; one reading per 10 s bucket in one window, 15 per bucket in the other."""
    spec = parse_spec(
        {
            "windows": {"10m": 600, "2h": 7200},
            "buckets": {"10m": 60, "2h": 8},
            "grace": 60,
            "baseline_n": 30,
            "ewma_halflife": 600,
            "signals": {
                "temperature_c": {
                    "stats": {"10m": ["mean", "std", "min", "max", "slope"], "2h": ["std", "slope"]}
                },
                "current_a": {"stats": {"2h": ["mean", "min", "max", "zscore"]}},
            },
        },
        "motor",
        SIGNALS,
    )
    rng = np.random.default_rng(11)
    frames = []
    for i, days in enumerate((1.0, 0.5)):
        n = int(days * 1440)
        t = 1.7e9 + 60.0 * np.arange(n) + rng.uniform(0, 5, n)
        t[n // 2 :] += 86_400.0 * (i + 1)  # a silent day or two
        temperature = 60 + 25 * np.sin(t / 40_000) + rng.normal(0, 0.3, n)
        temperature[rng.random(n) < 0.02] = np.nan
        frames.append(
            pd.DataFrame(
                {"asset_id": f"m{i:05d}", "ts": t, "temperature_c": temperature, "vibration_mm_s": 2.0}
                | {"current_a": 40 + rng.normal(0, 2, n), "runtime_h": 1000.0}
            )
        )
    log = pd.concat(frames).sort_values("ts", kind="stable").reset_index(drop=True)
    got = compute_features(log, spec)
    assert len(got) == len(log)
    assert_same(got, reference(log, spec, {}), rtol=1e-9)


# -- streaming versus batch --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 37, 1000])
def test_streaming_equals_batch_on_a_log_with_gaps_duplicates_and_disorder(batch_size: int) -> None:
    spec = FeatureSpec.from_profile(MOTOR)
    log = make_log(n_assets=3, n=300 if batch_size == 1 else 900)
    maintenance = pd.DataFrame({"asset_id": ["m00002"], "ts": [float(log["ts"].median())]})
    expected = compute_features(log, spec, maintenance=maintenance)
    got, late, engine = stream(log, spec, batch_size, maintenance=maintenance)
    assert_same(got, expected)
    # Every reading is accounted for: emitted once, late, or a duplicate.
    assert len(got) + late + engine.duplicates == len(log)
    assert late > 0 and engine.duplicates > 0


def test_a_log_longer_than_one_slice_keeps_each_vector_with_its_asset(monkeypatch) -> None:
    """Logs beyond ``CHUNK_ROWS`` are computed in slices of whole assets, on several threads: the
    same output as in one slice, and exactly that of one thread."""
    import features.batch

    spec = FeatureSpec.from_profile(MOTOR)
    log = make_log(n_assets=4, n=300, seed=9)
    whole = compute_features(log, spec)
    monkeypatch.setattr(features.batch, "CHUNK_ROWS", 250)  # a slice per asset
    sliced = compute_features(log, spec, workers=2)
    assert sliced["asset_id"].nunique() == 4
    assert_same(sliced, whole, rtol=1e-12)
    pd.testing.assert_frame_equal(sliced, compute_features(log, spec, workers=1))


def test_emission_cadence_thins_the_output_the_same_way_in_both_engines() -> None:
    spec = parse_spec({**MOTOR.section("features"), "emit_every": 30}, "motor", SIGNALS)
    log = make_log(n_assets=2, n=600, seed=5)
    expected = compute_features(log, spec)
    got, _, _ = stream(log, spec, 200)
    assert_same(got, expected)
    every = compute_features(log, FeatureSpec.from_profile(MOTOR))
    assert len(got) < len(every) / 10
    per_asset_slots = got.groupby("asset_id")["ts"].apply(lambda t: np.floor(t / 30).is_unique)
    assert per_asset_slots.all()


def test_cmapss_profile_streams_like_batch() -> None:
    profile = load_profile("cmapss")
    spec = FeatureSpec.from_profile(profile)
    rng = np.random.default_rng(1)
    frames = []
    for unit in range(1, 4):
        cycles = np.arange(1, 81, dtype=float)
        values = {
            s.name: rng.uniform(s.min + 0.3 * (s.max - s.min), s.min + 0.31 * (s.max - s.min), 80)
            for s in profile.signals
        }
        frames.append(pd.DataFrame({"asset_id": str(unit), "ts": cycles, **values}))
    log = pd.concat(frames).sort_values("ts", kind="stable").reset_index(drop=True)
    got, late, _ = stream(log, spec, 50)
    expected = compute_features(log, spec)
    assert late == 0 and len(expected) == 240
    assert_same(got, expected)


# -- event time, state ---------------------------------------------------------------------------------


def readings(asset_ids: list[str], ts: list[float], temperature: list[float]) -> ReadingBatch:
    values = np.full((len(ts), len(SIGNALS)), 10.0)
    values[:, 0] = temperature
    return ReadingBatch(SIGNALS, asset_ids, np.array(ts, dtype=float), values, np.arange(len(ts)))


def test_late_readings_come_back_and_duplicates_are_dropped_once() -> None:
    engine = FeatureEngine(SMALL)  # grace 6
    emitted, late = engine.update(readings(["a", "a", "a"], [100.0, 103.0, 110.0], [1.0, 2.0, 3.0]))
    assert emitted.ts.tolist() == [100.0, 103.0]  # 110 waits for its grace period
    emitted, late = engine.update(
        readings(["a", "a", "a", "a"], [103.0, 105.0, 103.5, 90.0], [9.0, 4.0, 5.0, 6.0])
    )
    # 110 - grace 6 = 104: the re-sent 103, and 103.5 and 90, are late; 105 is in time.
    assert late.ts.tolist() == [103.0, 103.5, 90.0]
    assert engine.duplicates == 0
    emitted, late = engine.update(readings(["a", "a"], [110.0, 120.0], [7.0, 8.0]))
    assert engine.duplicates == 1 and len(late) == 0
    assert emitted.ts.tolist() == [105.0, 110.0]  # the re-sent 110 was waiting: a duplicate
    mean = SMALL.names.index("temperature_c__mean_20s")
    assert emitted.values[-1, mean] == pytest.approx(np.mean([1.0, 2.0, 4.0, 3.0]))


def test_a_gap_leaves_no_readings_from_before_it_in_the_windows() -> None:
    engine = FeatureEngine(SMALL)
    engine.update(readings(["a"] * 5, [0.0, 1.0, 2.0, 3.0, 4.0], [50.0] * 5))
    emitted, _ = engine.update(readings(["a", "a"], [500.0, 507.0], [20.0, 21.0]))
    row = emitted.values[emitted.ts.tolist().index(500.0)]
    names = SMALL.names
    assert row[names.index("temperature_c__mean_1m")] == 20.0
    assert row[names.index("temperature_c__max_20s")] == 20.0
    assert row[names.index("temperature_c__last")] == 20.0


def silences(asset, ts, accepted, watermark, clock, stale, stale_after=300.0):
    marked, at, after, watermark = compiled.silences(
        np.asarray(asset, dtype=np.int64),
        np.asarray(ts, dtype=np.float64),
        np.asarray(accepted, dtype=bool),
        watermark,
        clock,
        stale,
        stale_after,
    )
    return list(zip(marked.tolist(), at.tolist(), after.tolist(), strict=True)), watermark


def test_a_silent_asset_is_marked_once_at_the_watermark_that_shows_its_silence() -> None:
    clock, stale = np.full(2, -np.inf), np.ones(2, dtype=bool)  # two assets never seen
    markers, wm = silences([0, 1, 0, 0, 0, 0], [0, 0, 200, 350, 400, 700], [True] * 6, -np.inf, clock, stale)
    # At the first watermark beyond 1's reading + 300 s: the one row 3 brought.
    assert (markers, wm) == ([(1, 350.0, 3)], 700.0)
    assert stale.tolist() == [False, True] and clock.tolist() == [700.0, 0.0]
    # Asset 0 reads again (at 1100) before any watermark shows it silent: no marker. Asset 1's reading
    # the engine refused (late) ends nothing: it stays stale, and is not marked twice.
    markers, wm = silences([1, 0], [10, 1100], [False, True], wm, clock, stale)
    assert (markers, wm) == ([], 1100.0)
    assert stale.tolist() == [False, True]
    markers, _ = silences([1, 1], [1200, 1600], [True, True], wm, clock, stale)
    assert markers == [(0, 1600.0, 1)]  # 1 is back; 0 has been silent since 1100


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 4), st.floats(0, 2_000, allow_nan=False), st.booleans()), max_size=60
    ),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_silences_do_not_depend_on_how_the_readings_are_cut_into_batches(rows, cuts) -> None:
    asset, ts, accepted = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
    whole_clock, whole_stale = np.full(5, -np.inf), np.ones(5, dtype=bool)
    whole, _ = silences(asset, ts, accepted, -np.inf, whole_clock, whole_stale)
    clock, stale, wm, parts = np.full(5, -np.inf), np.ones(5, dtype=bool), -np.inf, []
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    for lo, hi in itertools.pairwise(bounds):
        found, wm = silences(asset[lo:hi], ts[lo:hi], accepted[lo:hi], wm, clock, stale)
        parts += [(a, at, row + lo) for a, at, row in found]
    assert sorted(parts) == sorted(whole)
    assert stale.tolist() == whole_stale.tolist() and clock.tolist() == whole_clock.tolist()


def test_snapshot_restore_continues_exactly_like_an_uninterrupted_engine() -> None:
    spec = FeatureSpec.from_profile(MOTOR)
    log = make_log(n_assets=3, n=400, seed=7)
    whole, _, _ = stream(log, spec, 97)
    first = FeatureEngine(spec)
    parts = []
    chunks = list(batches(log, spec, 97))
    for batch in chunks[:6]:
        parts.append(first.update(batch)[0])
    # Per-asset snapshots (as per partition), restored into a fresh engine in another order.
    blobs = [first.snapshot([a]) for a in reversed(first.asset_ids)]
    second = FeatureEngine(spec)
    for blob in blobs:
        second.restore(blob)
    for batch in chunks[6:]:
        parts.append(second.update(batch)[0])
    parts.append(second.flush())
    assert_same(frame_of(Emitted.concat(parts, len(spec.names)), spec), whole, rtol=1e-12)
    second.drop(["m00001"])
    assert second.asset_ids == ["m00002", "m00000"] or sorted(second.asset_ids) == ["m00000", "m00002"]
    other = FeatureEngine(FeatureSpec.from_profile(load_profile("cmapss")))
    with pytest.raises(ValueError, match="another feature spec"):
        other.restore(blobs[0])


def test_state_per_motor_stays_bounded_by_the_buckets_not_the_readings() -> None:
    engine = FeatureEngine(FeatureSpec.from_profile(MOTOR))
    t = np.arange(0.0, 4 * 3600.0)  # four hours at 1 reading/s
    for s in range(0, len(t), 3600):
        engine.update(readings(["a"] * 3600, t[s : s + 3600].tolist(), [50.0] * 3600))
    assert engine.state_bytes() <= 200_000


def test_maintenance_starts_windows_last_value_and_ewma_afresh_in_both_engines() -> None:
    """A repaired motor is another machine: nothing from before the repair stays in its features,
    or the risk of a fixed motor stays high for a day and its alert re-opens after the repair."""
    spec = FeatureSpec.from_profile(MOTOR)
    t = np.arange(0.0, 7200.0, 60.0)
    hot = np.where(t < 3600.0, 120.0, 60.0)  # overheating until repaired at 3600 s
    log = pd.DataFrame({"asset_id": "a", "ts": t} | {s: 10.0 for s in SIGNALS} | {"temperature_c": hot})
    log.loc[log.ts == 3600.0, "temperature_c"] = np.nan  # the first reading after the repair misses it
    events = pd.DataFrame({"asset_id": ["a"], "ts": [3600.0]})
    batch = compute_features(log, spec, maintenance=events)
    streamed, _, _ = stream(log, spec, 7, maintenance=events)
    assert_same(streamed, batch)
    at = batch.set_index("ts")
    assert np.isnan(at.loc[3600.0, "temperature_c__mean_24h"])  # no temperature since the repair yet
    assert np.isnan(at.loc[3600.0, "temperature_c__last"]) and np.isnan(at.loc[3600.0, "temperature_c__ewma"])
    for name in ("temperature_c__mean_24h", "temperature_c__max_24h", "temperature_c__ewma"):
        assert at.loc[3660.0, name] == pytest.approx(60.0) and at.loc[7140.0, name] == pytest.approx(60.0)
    assert at.loc[3540.0, "temperature_c__mean_24h"] == pytest.approx(120.0)


def test_streaming_equals_batch_with_many_maintenance_events_and_a_restart_between() -> None:
    """Several events per asset: before its first reading, two between the same two readings, one
    still pending when the engine's state is snapshotted and restored."""
    spec = FeatureSpec.from_profile(MOTOR)
    log = make_log(n_assets=3, n=700, seed=13)
    ts = {a: g["ts"].sort_values().to_numpy() for a, g in log.groupby("asset_id")}
    events = pd.DataFrame(
        [("m00000", ts["m00000"][0] - 5.0), ("m00000", ts["m00000"][300]), ("m00000", ts["m00000"][600])]
        + [("m00001", ts["m00001"][200] + 0.1), ("m00001", ts["m00001"][200] + 0.2)]
        + [("m00002", ts["m00002"][q]) for q in (100, 350, 360, 650)],
        columns=["asset_id", "ts"],
    )
    expected = compute_features(log, spec, maintenance=events)
    got, _, _ = stream(log, spec, 50, maintenance=events)
    assert_same(got, expected)
    first = FeatureEngine(spec)
    first.add_maintenance(events["asset_id"].tolist(), events["ts"].tolist())
    chunks = list(batches(log, spec, 50))
    parts = [first.update(b)[0] for b in chunks[:20]]
    second = FeatureEngine(spec)
    for blob in [first.snapshot([a]) for a in first.asset_ids]:
        second.restore(blob)
    parts += [second.update(b)[0] for b in chunks[20:]] + [second.flush()]
    assert_same(frame_of(Emitted.concat(parts, len(spec.names)), spec), expected)
