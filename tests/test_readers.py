"""Log readers: CSV, Parquet and C-MAPSS text into validated columnar chunks, bad rows named by line."""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import CMAPSS_FD001

from ingest.profiles import PROFILE_DIR, load_profile, parse_profile
from ingest.readers import BadRow, Chunk, read_chunks, read_log, scan_times

MOTOR = load_profile("motor")
CMAPSS = load_profile("cmapss")


def chunks(path: Path, profile=MOTOR, fmt=None, chunk_rows=65_536) -> list[Chunk]:
    return list(read_chunks(path, profile, fmt, chunk_rows))


def readings(parts: list[Chunk]) -> list[tuple[str, float, list[float]]]:
    return [
        (a, t, v)
        for c in parts
        for a, t, v in zip(c.batch.asset_id, c.batch.ts.tolist(), c.batch.values.tolist(), strict=True)
    ]


def bad_rows(parts: list[Chunk]) -> list[BadRow]:
    return [b for c in parts for b in c.bad]


def same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_csv_maps_columns_by_signal_name_leaves_gaps_and_ignores_extras(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("ts,asset_id,operator,current_a,temperature_c\n10,m1,ann,12.5,40\n11, m2 ,bob,,41.5\n")
    [(a1, t1, v1), (a2, t2, v2)] = readings(chunks(log))
    nan = math.nan
    assert (a1, t1) == ("m1", 10.0) and same(v1, [40.0, nan, 12.5, nan])
    assert (a2, t2) == ("m2", 11.0) and same(v2, [41.5, nan, nan, nan])  # an empty cell is a dropout


def test_a_plant_export_replays_through_the_profile_column_mapping(tmp_path: Path) -> None:
    raw = tomllib.loads((PROFILE_DIR / "motor.toml").read_text())
    raw["columns"] = {
        "asset_id": "Motor Tag",
        "ts": "Timestamp",
        "signals": {"Winding Temp (C)": "temperature_c", "Vib RMS": "vibration_mm_s", "Amps": "current_a"},
    }
    plant = parse_profile(raw)
    log = tmp_path / "plant_export.csv"
    log.write_text(
        "Timestamp,Motor Tag,Amps,Vib RMS,Winding Temp (C),Shift\n"
        "2024-03-01T00:00:00Z,P-101,50.5,2.25,61.0,A\n"
        "2024-03-01 00:00:10,P-102,48.0,1.5,59.5,A\n"  # naive date-times are UTC
    )
    rows = readings(chunks(log, plant))
    start = 1709251200.0  # 2024-03-01T00:00:00Z
    assert [(a, t) for a, t, _ in rows] == [("P-101", start), ("P-102", start + 10)]
    assert same(rows[0][2], [61.0, 2.25, 50.5, math.nan])
    assert not bad_rows(chunks(log, plant))


def test_a_profile_mapping_onto_an_unknown_signal_is_refused() -> None:
    raw = tomllib.loads((PROFILE_DIR / "motor.toml").read_text())
    raw["columns"]["signals"] = {"Amps": "amperage"}
    with pytest.raises(ValueError, match="amperage"):
        parse_profile(raw)


def test_a_log_without_the_asset_column_is_refused_before_reading(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("motor,ts,current_a\nm1,1,2\n")
    with pytest.raises(ValueError, match=r"no column \['asset_id'\]"):
        chunks(log)


def test_csv_bad_rows_are_reported_by_line_counted_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "bad.csv"
    log.write_text(
        "asset_id,ts,current_a,vibration_mm_s\n"  # 1
        "m1,1,10,1\n"  # 2 good
        "m1,2,10\n"  # 3 too few fields
        "\n"  # 4 blank: not a reading
        "m1,3,ten,1\n"  # 5 not a number
        ",4,10,1\n"  # 6 no asset id
        "m1,5,10,500\n"  # 7 vibration out of range
        "m1,,10,1\n"  # 8 no time
        "m1,6,10,1,extra\n"  # 9 too many fields
        "m2,7,11,2\n"  # 10 good
    )
    for chunk_rows in (2, 65_536):
        parts = chunks(log, chunk_rows=chunk_rows)
        assert [(a, t) for a, t, _ in readings(parts)] == [("m1", 1.0), ("m2", 7.0)]
        found = sorted((b.line, str(b.reason)) for b in bad_rows(parts))
        assert found == [
            (3, "unparseable"),
            (5, "unparseable"),
            (6, "missing_asset_id"),
            (7, "out_of_range"),
            (8, "non_finite"),
            (9, "unparseable"),
        ]
    messages = {b.line: str(b) for b in bad_rows(parts)}
    assert messages[5] == f"{log}:5: unparseable: current_a='ten' is not a number"
    assert messages[7].startswith(f"{log}:7: out_of_range: vibration_mm_s=500.0 outside")


def test_parquet_reads_typed_columns_and_whole_number_float_ids(tmp_path: Path) -> None:
    log = tmp_path / "log.parquet"
    pq.write_table(
        pa.table({"asset_id": [1.0, 2.0, None], "ts": [5, 6, 7], "runtime_h": [100.0, 101.0, 102.0]}), log
    )
    parts = chunks(log)
    assert [(a, t, v[3]) for a, t, v in readings(parts)] == [("1", 5.0, 100.0), ("2", 6.0, 101.0)]
    assert [(b.line, str(b.reason)) for b in bad_rows(parts)] == [(3, "missing_asset_id")]


def test_cmapss_text_reads_nasa_rows(tmp_path: Path) -> None:
    with CMAPSS_FD001.open() as fh:
        head = list(itertools.islice(fh, 40))
    log = tmp_path / "train_head.txt"
    log.write_text("".join(head))
    rows = readings(chunks(log, CMAPSS, chunk_rows=16))
    assert len(rows) == 40
    assert [a for a, _, _ in rows] == ["1"] * 40
    assert [t for _, t, _ in rows] == [float(i) for i in range(1, 41)]
    first = [float(x) for x in head[0].split()]
    assert rows[0][2] == first[2:]  # settings then sensors, in profile signal order
    assert CMAPSS.signal_names[:3] == ("setting_1", "setting_2", "setting_3")


def test_cmapss_bad_lines_are_reported_and_the_rest_read(tmp_path: Path) -> None:
    with CMAPSS_FD001.open() as fh:
        head = list(itertools.islice(fh, 3))
    broken = head[1].split()
    broken[5] = "x"
    log = tmp_path / "broken.txt"
    log.write_text(head[0] + " ".join(broken) + "\n" + "1 3 0.1\n" + head[2])
    parts = chunks(log, CMAPSS)
    assert [t for _, t, _ in readings(parts)] == [1.0, 3.0]
    assert [(b.line, str(b.reason)) for b in bad_rows(parts)] == [(2, "unparseable"), (3, "unparseable")]


def test_large_logs_stream_in_bounded_chunks(tmp_path: Path) -> None:
    n = 10_000
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "asset_id": [f"m{i % 37:05d}" for i in range(n)],
            "ts": np.arange(n, dtype=np.float64),
            "temperature_c": rng.uniform(20, 90, n),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=4096)
    pd.DataFrame(table.to_pydict()).to_csv(tmp_path / "log.csv", index=False)
    for name in ("log.parquet", "log.csv"):
        parts = chunks(tmp_path / name, chunk_rows=1000)
        assert len(parts) >= 10 and max(len(c.batch) for c in parts) <= 1000
        rows = readings(parts)
        assert [t for _, t, _ in rows] == table["ts"].to_pylist()
        assert np.allclose([v[0] for _, _, v in rows], table["temperature_c"].to_numpy())
        assert np.concatenate([c.batch.index for c in parts]).tolist() == list(range(n))


def test_scan_times_tells_time_ordered_logs_from_per_asset_blocks(tmp_path: Path) -> None:
    with CMAPSS_FD001.open() as fh:
        head = list(itertools.islice(fh, 400))  # engine 1 (192 cycles), then engine 2 from cycle 1
    log = tmp_path / "two_engines.txt"
    log.write_text("".join(head))
    assert scan_times(log, CMAPSS) == (400, False)
    log.write_text("".join(head[:192]))
    assert scan_times(log, CMAPSS, chunk_rows=50) == (192, True)


def test_read_log_gives_the_training_frame_and_accepts_a_simulator_log_dir(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    pq.write_table(
        pa.table({"asset_id": ["m00001", "m00002"], "ts": [0.0, 1.0], "current_a": [10.0, -1.0]}),
        tmp_path / "sim" / "readings.parquet",
    )
    df = read_log(tmp_path / "sim", MOTOR)
    assert list(df.columns) == ["asset_id", "ts", *MOTOR.signal_names]
    assert df["asset_id"].tolist() == ["m00001"] and df["current_a"].tolist() == [10.0]
    assert str(df["asset_id"].dtype) == "str" and all(df[c].dtype == np.float64 for c in df.columns[1:])
    assert df.attrs["bad_rows"] == {"out_of_range": 1}


def test_read_log_of_cmapss_has_one_row_per_engine_cycle(tmp_path: Path) -> None:
    with CMAPSS_FD001.open() as fh:
        head = list(itertools.islice(fh, 200))
    log = tmp_path / "train_head.txt"
    log.write_text("".join(head))
    df = read_log(log, CMAPSS, fmt="cmapss")
    assert df.groupby("asset_id")["ts"].max().to_dict() == {"1": 192.0, "2": 8.0}
    assert df.shape == (200, 2 + len(CMAPSS.signals))


def test_read_log_names_a_few_bad_rows_then_counts_the_rest(tmp_path: Path, caplog) -> None:
    log = tmp_path / "plant.csv"
    rows = [f"m1,{t},{-1.0 if t % 2 else 10.0}" for t in range(40)]
    log.write_text("asset_id,ts,current_a\n" + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="ingest.readers"):
        df = read_log(log, MOTOR)
    assert len(df) == 20 and df.attrs["bad_rows"] == {"out_of_range": 20}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and all(f"{log}:" in m for m in lines[:5])
    assert lines[-1] == f"{log}: skipped 20 bad rows (20 out_of_range)"
