"""Replay: event-time order across files and assets, determinism, bad rows, pacing, the bus, the CLI."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_bus_contract
from click.testing import CliRunner
from datasets import CMAPSS_FD001
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bus import Bus, partition_for
from ingest.profiles import load_profile
from ingest.readers import read_log
from ingest.replay import Shard, replay
from ingest.schemas import (
    Features,
    ReadingBatch,
    decode_readings,
    encode,
    encode_features,
    encode_readings,
    encode_readings_columnar,
)
from motorwatch.cli import main

bus = test_bus_contract.bus  # fixture: the in-process bus, then a real Kafka broker
MOTOR = load_profile("motor")
CMAPSS = load_profile("cmapss")


class Collect:
    """A producer (ingest.bus.Producer) that keeps what it is sent, and when, by an optional clock."""

    def __init__(self, clock=None) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.at: list[float] = []
        self.clock = clock
        self.flushes = 0

    def send_batch(self, topic: str, messages) -> None:
        messages = list(messages)
        self.sent.extend(messages)
        self.at.extend([self.clock() if self.clock else 0.0] * len(messages))

    def flush(self, timeout_s: float | None = None) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass


def run(paths, profile=MOTOR, **kw) -> tuple[Collect, object]:
    producer = Collect()
    result = replay(paths, profile, producer, progress=False, on_bad_row=lambda row: None, **kw)
    return producer, result


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    """Three logs with interleaved and tied times: time-sorted CSV, time-sorted Parquet, and a CSV in
    per-asset blocks (not time-sorted: replay must sort it externally)."""
    a = tmp_path / "a.csv"
    a.write_text(
        "asset_id,ts,current_a\n"
        + "".join(f"a{i % 3},{t},{t + 0.5}\n" for i, t in enumerate(range(0, 60, 2)))
    )
    b = tmp_path / "b.parquet"
    ts = np.repeat(np.arange(1, 60, 3, dtype=np.float64), 2)  # two readings per time: ties within the file
    pq.write_table(
        pa.table({"asset_id": [f"b{i % 2}" for i in range(len(ts))], "ts": ts, "current_a": ts * 2}),
        b,
        row_group_size=7,
    )
    c = tmp_path / "c.csv"
    rows = [f"c{unit},{t},{unit}\n" for unit in range(4) for t in range(0, 40, 4)]
    c.write_text("asset_id,ts,current_a\n" + "".join(rows))
    return [a, b, c]


def reference_order(paths: list[Path], profile=MOTOR) -> pd.DataFrame:
    """Every row of every log, sorted by (ts, file, row): the order replay promises."""
    frames = [
        read_log(p, profile).assign(file=n, row=np.arange(len(read_log(p, profile))))
        for n, p in enumerate(paths)
    ]
    return pd.concat(frames).sort_values(["ts", "file", "row"], kind="stable")


def decoded(sent: list[tuple[bytes, bytes]], profile=MOTOR) -> ReadingBatch:
    batch, rejects = decode_readings([v for _, v in sent], profile)
    assert rejects == []
    return batch


def test_merge_publishes_in_event_time_order_across_files_then_file_then_row(logs: list[Path]) -> None:
    producer, result = run(logs)
    expected = reference_order(logs)
    got = decoded(producer.sent)
    assert result.published == len(expected) == 30 + 40 + 40
    assert got.asset_id == expected["asset_id"].tolist()
    assert got.ts.tolist() == expected["ts"].tolist()
    assert np.array_equal(got.values[:, 2], expected["current_a"].to_numpy())
    assert [k.decode() for k, _ in producer.sent] == got.asset_id  # keyed by asset id
    assert (result.first_ts, result.last_ts) == (0.0, 58.0)


def test_same_logs_give_byte_identical_messages_whatever_the_chunk_and_batch_size(logs: list[Path]) -> None:
    reference, _ = run(logs)
    for chunk_rows, send_rows in [(1, 1), (3, 5), (7, 4096), (64, 2)]:
        producer, _ = run(logs, chunk_rows=chunk_rows, send_rows=send_rows)
        assert producer.sent == reference.sent


def test_shards_split_the_log_by_partition_each_in_the_whole_logs_order(logs: list[Path]) -> None:
    """A shard publishes its assets' readings (those of whole partitions), in the order the whole
    log publishes them: the shards together are the log."""
    whole, _ = run(logs)
    placed = {key: partition_for(key, 4) for key, _ in whole.sent}
    mine: set[int] = set()
    for index in range(3):
        shard = Shard(index, 3, 4)
        producer, result = run(logs, chunk_rows=5, send_rows=3, shard=shard)
        partitions = {placed[key] for key, _ in producer.sent}
        assert partitions and all(p % 3 == index for p in partitions)
        assert producer.sent == [m for m in whole.sent if placed[m[0]] in partitions]
        assert result.published == len(producer.sent)
        mine |= partitions
    assert mine == set(placed.values())


def test_cmapss_engines_listed_in_turn_replay_cycle_by_cycle(tmp_path: Path) -> None:
    with CMAPSS_FD001.open() as fh:
        head = list(itertools.islice(fh, 500))  # engine 1 (192 cycles), engine 2 (287), engine 3 ...
    log = tmp_path / "train_head.txt"
    log.write_text("".join(head))
    producer, result = run([log], CMAPSS, chunk_rows=100)  # five sorted runs spilled, then merged
    got = decoded(producer.sent, CMAPSS)
    assert result.published == 500 and result.skipped == {}
    assert got.ts.tolist() == sorted(got.ts.tolist())
    assert got.asset_id[:3] == ["1", "2", "3"] and got.ts[:3].tolist() == [1.0, 1.0, 1.0]
    per_engine = pd.DataFrame({"asset_id": got.asset_id, "ts": got.ts}).groupby("asset_id")["ts"]
    assert per_engine.max().to_dict() == {"1": 192.0, "2": 287.0, "3": 21.0}
    assert all(per_engine.apply(lambda s: s.is_monotonic_increasing))


def test_bad_rows_are_reported_with_file_and_line_counted_and_replay_goes_on(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("asset_id,ts,current_a\nm1,1,1\nm1,3,1\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("asset_id,ts,current_a\nm2,2,1\nm2,x,1\nm2,4,-5\n,5,1\nm2,6\nm2,7,1\n")
    heard = []
    producer = Collect()
    result = replay([good, bad], MOTOR, producer, progress=False, on_bad_row=heard.append)
    assert [str(h).split(": ")[0] for h in heard] == [f"{bad}:3", f"{bad}:4", f"{bad}:5", f"{bad}:6"]
    assert result.skipped == {"unparseable": 2, "out_of_range": 1, "missing_asset_id": 1}
    assert result.published == 4
    assert decoded(producer.sent).ts.tolist() == [1.0, 2.0, 3.0, 7.0]


def test_paced_replay_publishes_each_reading_at_its_event_time_over_the_factor(logs: list[Path]) -> None:
    class FakeClock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            assert seconds > 0
            self.now += seconds

    clock = FakeClock()
    producer = Collect(clock)
    replay(logs, MOTOR, producer, speed=10, clock=clock, sleep=clock.sleep, progress=False)
    ts = decoded(producer.sent).ts
    assert np.allclose(np.array(producer.at) - 1000.0, ts / 10)  # 58 s of event time in 5.8 s
    assert producer.flushes > 1  # what is due is flushed before each wait


def test_speed_must_be_max_or_a_positive_factor(logs: list[Path]) -> None:
    for speed in (0, -2, "fast", math.inf):
        with pytest.raises(ValueError, match="speed"):
            run(logs, speed=speed)


def test_replay_onto_a_bus_gives_the_same_bytes_in_each_partition(logs: list[Path], bus: Bus) -> None:
    reference, _ = run(logs)
    topic = f"test.replay.{uuid.uuid4().hex[:10]}"
    bus.create_topics([topic], 3)
    consumer = bus.consumer([topic], f"check.{uuid.uuid4().hex[:10]}")
    producer = bus.producer()
    result = replay(logs, MOTOR, producer, topic=topic, progress=False, send_rows=16)
    producer.close()
    records: list = []
    deadline = time.monotonic() + 60
    while len(records) < result.published and time.monotonic() < deadline:
        records += consumer.poll_batch(max_records=1000, timeout_s=0.2)
    consumer.close()
    assert len(records) == result.published == 110
    by_partition = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[r.partition].append((r.key, r.value))
    expected = defaultdict(list)
    for key, value in reference.sent:
        expected[partition_for(key, 3)].append((key, value))
    assert by_partition == expected and len(expected) > 1


def test_after_send_runs_after_each_batch_sent(logs: list[Path]) -> None:
    producer = Collect()
    seen = []
    replay(
        logs, MOTOR, producer, progress=False, send_rows=8, after_send=lambda: seen.append(len(producer.sent))
    )
    assert (
        seen == sorted(seen)
        and seen[-1] == 110
        and all(b - a <= 8 for a, b in itertools.pairwise([0, *seen]))
    )


finite = st.floats(allow_nan=False, allow_infinity=False)


def messages(missing: st.SearchStrategy[float]) -> st.SearchStrategy:
    """Up to 20 ``(asset_id, ts, [3 values])``, each value finite or drawn from ``missing``."""
    values = st.lists(st.one_of(finite, missing), min_size=3, max_size=3)
    return st.lists(st.tuples(st.text(min_size=1, max_size=6), finite, values), max_size=20)


@settings(max_examples=150, deadline=None)
@given(rows=messages(st.just(math.nan)))
def test_columnar_encoder_is_byte_identical_to_msgspec(rows) -> None:
    batch = ReadingBatch(
        ("a", 'b"c', "d"),
        [r[0] for r in rows],
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), 3),
        np.arange(len(rows)),
    )
    fast = encode_readings_columnar(batch)
    assert fast == encode_readings(batch)
    for (_, value), (aid, ts, vals) in zip(fast, rows, strict=True):
        message = msgspec.json.decode(value)
        assert message["asset_id"] == aid and message["ts"] == ts
        assert list(message["values"].values()) == [v for v in vals if not math.isnan(v)]


@settings(max_examples=150, deadline=None)
@given(rows=messages(st.sampled_from([math.nan, math.inf, -math.inf])))
def test_feature_encoder_is_byte_identical_to_msgspec_and_leaves_out_non_finite_features(rows) -> None:
    names = ("a", 'b"c', "d")
    values = np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), 3)
    fast = encode_features([r[0] for r in rows], np.array([r[1] for r in rows]), names, values)
    assert fast == [
        (
            a.encode(),
            encode(
                Features(
                    asset_id=a,
                    ts=t,
                    features={k: v for k, v in zip(names, vs, strict=True) if math.isfinite(v)},
                )
            ),
        )
        for a, t, vs in rows
    ]


def test_cli_replays_logs_and_reports_bad_rows(tmp_path: Path) -> None:
    log = tmp_path / "plant.csv"
    log.write_text("asset_id,ts,temperature_c\nm1,1,40\nm1,2,999\nm1,3,41\n")
    result = CliRunner().invoke(main, ["replay", str(log), "--speed", "max"])
    assert result.exit_code == 0, result.output
    assert f"skipped {log}:3: out_of_range" in result.stderr
    assert "published 2 readings to sensor.readings" in result.stdout
    assert "out_of_range 1" in result.stdout


def test_cli_refuses_bad_options_clearly(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("unit,ts,temperature_c\n1,1,40\n")
    runner = CliRunner()
    missing = runner.invoke(main, ["replay", str(log)])
    assert missing.exit_code == 1 and "no column ['asset_id']" in missing.output
    slow = runner.invoke(main, ["replay", str(log), "--speed", "0"])
    assert slow.exit_code == 2 and "--speed" in slow.output
    out = ["--out", str(tmp_path / "scores.csv")]
    no_model = runner.invoke(main, ["replay", str(log), *out, "--registry", str(tmp_path / "empty")])
    assert no_model.exit_code == 1 and "no model in the registry" in no_model.output
    on_kafka = runner.invoke(main, ["replay", str(log), *out, "--bootstrap", "127.0.0.1:1"])
    assert on_kafka.exit_code == 2 and "in-process bus" in on_kafka.output
    no_back_test = runner.invoke(main, ["replay", str(log), "--workers", "2"])
    assert no_back_test.exit_code == 2 and "--workers is for a back-test" in no_back_test.output
    none = runner.invoke(main, ["replay", str(log), *out, "--workers", "0"])
    assert none.exit_code == 2 and "--workers" in none.output
    assert not (tmp_path / "scores.csv").exists()
