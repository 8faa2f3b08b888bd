"""Message contracts: every rejection reason comes from the input that should produce it, nothing
raises, clean batches round-trip, and every input is accounted for exactly once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.profiles import load_profile
from ingest.schemas import (
    Alert,
    DeadLetter,
    Driver,
    Features,
    Reading,
    ReadingBatch,
    Reason,
    Rejection,
    Score,
    ScoreBlock,
    decode_many,
    decode_readings,
    encode,
    encode_readings,
    raw,
    score_columns,
)

MOTOR = load_profile("motor")
CMAPSS = load_profile("cmapss")
OK = {"v": 1, "asset_id": "m1", "ts": 1_700_000_000.0, "values": {"temperature_c": 61.5, "current_a": 31.0}}


def reading(drop: str | None = None, **fields: object) -> bytes:
    """A reading as JSON text, with fields replaced or one dropped. Python's json writes NaN and
    Infinity as bare words, as some producers do; the string "1e999" becomes the bare number."""
    message = {**OK, **fields}
    if drop:
        del message[drop]
    return json.dumps(message).replace('"1e999"', "1e999").encode()


CASES = {
    "garbage": (b"oops", Reason.NOT_JSON),
    "empty": (b"", Reason.NOT_JSON),
    "binary": (b"\xff\xfe\x00", Reason.NOT_JSON),
    "truncated": (reading()[:-3], Reason.NOT_JSON),
    "trailing": (reading() + b" x", Reason.NOT_JSON),
    "utf16": (reading().decode().encode("utf-16"), Reason.NOT_JSON),
    "version 2": (reading(v=2), Reason.WRONG_VERSION),
    "version 0": (reading(v=0), Reason.WRONG_VERSION),
    "version 2, other fields": (b'{"v":2,"asset":"m1","time":"now"}', Reason.WRONG_VERSION),
    "no version": (reading(drop="v"), Reason.MISSING_FIELD),
    "no asset": (reading(drop="asset_id"), Reason.MISSING_FIELD),
    "no ts": (reading(drop="ts"), Reason.MISSING_FIELD),
    "no values": (reading(drop="values"), Reason.MISSING_FIELD),
    "ts text": (reading(ts="yesterday"), Reason.INVALID_TYPE),
    "asset number": (reading(asset_id=17), Reason.INVALID_TYPE),
    "asset null": (reading(asset_id=None), Reason.INVALID_TYPE),
    "version text": (reading(v="1"), Reason.INVALID_TYPE),
    "values list": (reading(values=[1.0]), Reason.INVALID_TYPE),
    "value text": (reading(values={"current_a": "12"}), Reason.INVALID_TYPE),
    "value bool": (reading(values={"current_a": True}), Reason.INVALID_TYPE),
    "array": (b"[1, 2]", Reason.INVALID_TYPE),
    "null message": (b"null", Reason.INVALID_TYPE),
    "ts null": (reading(ts=None), Reason.NON_FINITE),
    "value null": (reading(values={"current_a": None}), Reason.NON_FINITE),
    "ts NaN": (reading(ts=float("nan")), Reason.NON_FINITE),
    "value NaN": (reading(values={"current_a": float("nan")}), Reason.NON_FINITE),
    "value -Infinity": (reading(values={"temperature_c": float("-inf")}), Reason.NON_FINITE),
    "ts 1e999": (reading(ts="1e999"), Reason.NON_FINITE),
    "value 1e999": (reading(values={"current_a": "1e999"}), Reason.NON_FINITE),
    "unknown signal": (reading(values={"current_a": 1.0, "rpm": 1450.0}), Reason.UNKNOWN_SIGNAL),
    "too hot": (reading(values={"temperature_c": 900.0}), Reason.OUT_OF_RANGE),
    "negative vibration": (reading(values={"vibration_mm_s": -0.5}), Reason.OUT_OF_RANGE),
}


@pytest.mark.parametrize("case", CASES)
def test_each_reason_comes_from_its_input(case: str) -> None:
    raw, reason = CASES[case]
    clean = [reading(asset_id="a"), reading(asset_id="b")]
    for raws, bad_at in (([raw], 0), ([clean[0], raw, clean[1]], 1)):
        batch, rejections = decode_readings(raws, MOTOR)
        assert [(r.index, r.reason) for r in rejections] == [(bad_at, reason)], rejections
        assert rejections[0].detail
        assert len(batch) == len(raws) - 1 and bad_at not in batch.index


def test_every_reason_but_late_has_a_case() -> None:
    assert {reason for _, reason in CASES.values()} == set(Reason) - {Reason.LATE}


def test_clean_batch_round_trips_in_columns() -> None:
    readings = [
        Reading(asset_id=f"m{i:05d}", ts=1.7e9 + i, values={"temperature_c": 40.0 + i, "current_a": 10.5})
        for i in range(50)
    ] + [Reading(asset_id="m00099", ts=5.0, values={})]  # a full dropout: no signal at all
    raws = [encode(r) for r in readings]
    batch, rejections = decode_readings(raws, MOTOR)
    assert rejections == []
    assert batch.readings() == readings
    assert batch.index.tolist() == list(range(51))
    assert np.isnan(batch.values[:, MOTOR.signal_index["vibration_mm_s"]]).all()
    again, _ = decode_readings([value for _, value in encode_readings(batch)], MOTOR)
    assert again.asset_id == batch.asset_id
    np.testing.assert_array_equal(again.ts, batch.ts)
    np.testing.assert_array_equal(again.values, batch.values)  # NaN where missing, in both


def test_every_message_type_round_trips() -> None:
    messages = [
        Features(asset_id="1", ts=3.0, features={"s2_mean_10": 642.5}, stale=True),
        Alert(
            alert_id="a1",
            asset_id="m1",
            ts=4.0,
            state="raised",
            priority="high",
            risk=0.9,
            rul=12.0,
            rul_unit="h",
            drivers=[Driver(feature="vib_rms", value=9.0, baseline=2.0, contribution=0.4)],
            model_version="v0001",
        ),
        DeadLetter(topic="sensor.readings", partition=1, offset=7, reason=Reason.NOT_JSON, raw=b"\x00\xff"),
    ]
    for message in messages:
        [(_, back)], rejections = decode_many([encode(message)], type(message))
        assert rejections == []
        assert all(getattr(back, f) == getattr(message, f) for f in message.__struct_fields__)


def test_wrong_literal_is_rejected_not_raised() -> None:
    raw = encode(
        Alert(
            alert_id="a",
            asset_id="m",
            ts=1,
            state="raised",
            priority="low",
            risk=0,
            rul=1,
            rul_unit="h",
            model_version="v1",
        )
    ).replace(b'"low"', b'"urgent"')
    assert decode_many([raw], Alert)[1][0].reason == Reason.INVALID_TYPE


def accounted(raws: list[bytes], batch: ReadingBatch, rejections: list[Rejection]) -> None:
    kept = batch.index.tolist()
    rejected = [r.index for r in rejections]
    assert len(set(rejected)) == len(rejected), "rejected at most once"
    assert sorted(kept + rejected) == list(range(len(raws))), "every input kept or rejected, once"
    assert np.isfinite(batch.ts).all()
    with np.errstate(invalid="ignore"):
        assert not (batch.values < MOTOR.lower).any() and not (batch.values > MOTOR.upper).any()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=20))
def test_arbitrary_bytes_never_raise_and_are_accounted_for(raws: list[bytes]) -> None:
    accounted(raws, *decode_readings(raws, MOTOR))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
reading_like = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 1, 2, "1", None]),
        "asset_id": st.one_of(st.text(max_size=6), json_values),
        "ts": st.one_of(st.floats(), json_values),
        "values": st.one_of(
            st.dictionaries(st.sampled_from([*MOTOR.signal_names, "rpm"]), st.floats() | json_values),
            json_values,
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(json_values, reading_like).map(lambda v: json.dumps(v).encode()), max_size=20))
def test_arbitrary_json_never_raises_and_is_accounted_for(raws: list[bytes]) -> None:
    accounted(raws, *decode_readings(raws, MOTOR))


def test_shipped_profiles_load_with_sane_signals() -> None:
    assert MOTOR.signal_names == ("temperature_c", "vibration_mm_s", "current_a", "runtime_h")
    assert (MOTOR.time_unit, MOTOR.rul_unit) == ("s", "h")
    assert CMAPSS.signal_names == tuple(
        [f"setting_{i}" for i in range(1, 4)] + [f"sensor_{i}" for i in range(1, 22)]
    )
    assert (CMAPSS.time_unit, CMAPSS.rul_unit) == ("cycle", "cycle")
    for profile in (MOTOR, CMAPSS):
        assert (profile.lower < profile.upper).all() and all(s.unit for s in profile.signals)


def test_motor_profile_accepts_healthy_and_failing_motors() -> None:
    healthy = {"temperature_c": 55.0, "vibration_mm_s": 2.8, "current_a": 42.0, "runtime_h": 12_000.0}
    failing = {"temperature_c": 140.0, "vibration_mm_s": 25.0, "current_a": 95.0, "runtime_h": 60_000.0}
    cold_start = {"temperature_c": -25.0, "vibration_mm_s": 0.0, "current_a": 0.0, "runtime_h": 0.0}
    raws = [encode(Reading(asset_id="m1", ts=1.0, values=v)) for v in (healthy, failing, cold_start)]
    assert decode_readings(raws, MOTOR)[1] == []


# Rows of NASA's C-MAPSS train_FD001.txt and train_FD002.txt (unit, cycle, 3 settings, 21 sensors):
# sea level, and the six operating regimes of FD002 (altitude in kft, Mach, throttle angle).
CMAPSS_ROWS = """
1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190
1 1 34.9983 0.8400 100.0 449.44 555.32 1358.61 1137.23 5.48 8.00 194.64 2222.65 8341.91 1.02 42.02 183.06 2387.72 8048.56 9.3461 0.02 334 2223 100.00 14.73 8.8071
1 2 41.9982 0.8408 100.0 445.00 549.90 1353.22 1125.78 3.91 5.71 138.51 2211.57 8303.96 1.02 42.20 130.42 2387.66 8072.30 9.3774 0.02 330 2212 100.00 10.62 6.3670
1 3 24.9988 0.6218 60.0 462.54 536.10 1262.07 1050.04 7.05 9.02 175.71 1915.11 8007.83 0.94 36.49 164.22 2028.02 7874.66 10.8941 0.02 307 1915 84.93 14.36 8.5748
1 4 10.0 0.25 100.0 489.05 604.13 1499.45 1309.95 10.52 15.49 394.88 2318.87 8770.20 1.26 45.40 371.69 2388.13 8114.10 8.6216 0.03 369 2319 100.00 28.58 17.1735
1 5 20.0 0.70 100.0 491.19 607.40 1481.69 1252.36 9.35 13.61 332.10 2323.66 8709.85 1.08 44.27 315.11 2388.12 8049.89 9.2293 0.02 364 2324 100.00 24.46 14.7262
"""  # noqa: E501


def test_cmapss_profile_accepts_every_operating_regime() -> None:
    raws = []
    for line in CMAPSS_ROWS.strip().splitlines():
        unit, cycle, *values = line.split()
        signals = dict(zip(CMAPSS.signal_names, map(float, values), strict=True))
        raws.append(encode(Reading(asset_id=unit, ts=float(cycle), values=signals)))
    batch, rejections = decode_readings(raws, CMAPSS)
    assert rejections == [] and len(batch) == 6


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    scores=st.lists(st.tuples(st.text(min_size=1, max_size=6), finite, finite, finite), max_size=20),
    cut=st.integers(0, 20),
    order=st.randoms(use_true_random=False),
)
def test_score_rows_read_as_their_json_would(scores, cut, order) -> None:
    """Scores handed to a reader in this process as rows: same JSON, same columns, in bus order."""
    blocks = [
        ScoreBlock(
            [a for a, *_ in part],
            np.array([t for _, t, _, _ in part]),
            np.array([r for *_, r, _ in part]),
            np.array([u for *_, u in part]),
            "h",
            version,
        )
        for part, version in ((scores[:cut], "v0001"), (scores[cut:], "v0002"))
    ]
    json = [m for b in blocks for m in b.messages()]
    expected = [
        encode(Score(asset_id=a, ts=t, risk=r, rul=u, rul_unit="h", model_version=v))
        for (a, t, r, u), v in zip(scores, ["v0001"] * cut + ["v0002"] * len(scores), strict=False)
    ]
    assert [v for _, v in json] == expected and [k for k, _ in json] == [a.encode() for a, *_ in scores]
    for b in blocks:
        assert [r.message() for _, r in b.rows()] == [m for _, m in b.messages()]
    rows = [v for b in blocks for _, v in b.rows()]
    order.shuffle(rows)  # rows of both blocks interleaved, as a poll across partitions returns them
    from_rows, from_json = score_columns(rows), score_columns([raw(v) for v in rows])
    assert from_rows.asset_id == from_json.asset_id and from_rows.model_version == from_json.model_version
    for column in ("ts", "risk", "rul"):
        np.testing.assert_array_equal(getattr(from_rows, column), getattr(from_json, column))
