"""`motorwatch demo`: a simulated fleet, the feature worker and the scorer in one process, live.

If the registry is empty, a small model is trained first on a freshly simulated history. Then the
simulator publishes readings at an accelerated clock, the stages of :mod:`motorwatch.pipeline`
take turns on the bus, and a :class:`FleetView` folds scores and alerts into the console.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from features.spec import FeatureSpec
from ingest import topics
from ingest.bus import Bus
from ingest.profiles import Profile
from ingest.schemas import Alert, decode_many, score_columns
from models.registry import Registry
from models.training import TrainConfig, train
from motorwatch.pipeline import DEAD_LETTER_TOPICS, OUTPUT_TOPICS, Pipeline, values_by_topic
from scoring.config import PRIORITIES
from scoring.sinks import AlertBoard
from scoring.worker import ScorerConfig
from simulator.config import FleetConfig
from simulator.fleet import Fleet
from simulator.publish import MaintenanceListener, Pacing, Publisher
from simulator.writers import simulate_to_files

STEP_READINGS = 2048  # readings published per round at most
_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """The fleet and its clock. ``speed``: simulated seconds per wall-clock second."""

    motors: int = 50
    interval_s: float = 60.0
    speed: float = 3600.0
    mean_onset_days: float = 20.0
    seed: int = 7
    closed_loop: bool = True
    schedule_out: Path | None = Path("schedule.csv")
    train_motors: int = 30  # the simulated history a first model is trained on (empty registry)
    train_days: float = 30.0

    def fleet(self) -> FleetConfig:
        return FleetConfig(
            motors=self.motors, interval_s=self.interval_s, mean_onset_days=self.mean_onset_days
        )


# A first model in ~20 s from 10 motors x 6 days of fast-degrading history: for the benchmarks and
# tests that need any model of the motor profile, not a good one.
SMALL_MODEL = DemoConfig(train_motors=10, train_days=6.0, mean_onset_days=5.0, seed=3)


def ensure_model(registry: Path, profile: Profile, config: DemoConfig, log: Callable[[str], None]) -> str:
    """The registry's latest version; trains and registers a small model first if there is none.

    The training history is another fleet of the same kind (another seed), never the demo's own."""
    reg = Registry(registry)
    version = reg.latest_version()
    if version is not None:
        return version
    started = time.perf_counter()
    history = FleetConfig(
        motors=config.train_motors, interval_s=config.interval_s, mean_onset_days=config.mean_onset_days
    )
    with tempfile.TemporaryDirectory(prefix="motorwatch-demo-") as tmp:
        log(
            f"empty registry: simulating {config.train_motors} motors x {config.train_days:g} days to "
            "train (with sensor faults: the bad rows reported below are the simulator's, skipped on purpose)"
        )
        simulate_to_files(history, config.seed + 1000, Path(tmp), config.train_days * 86400.0)
        result = train(
            Path(tmp), profile, FeatureSpec.from_profile(profile), TrainConfig.quick(config.seed), log
        )
    version = reg.save(result.bundle, result.card)
    log(f"trained and registered {version} in {time.perf_counter() - started:.0f} s")
    return version


@dataclass
class FleetView:
    """The console's state, folded from ``maintenance.scores``, ``maintenance.alerts`` and the
    dead-letter topics (its own consumer group: it never slows the scorer's commits)."""

    bus: Bus
    risk: dict[str, tuple[float, float]] = field(default_factory=dict)  # asset -> (risk, rul)
    board: AlertBoard = field(default_factory=AlertBoard)
    feed: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    scores: int = 0
    raised: int = 0
    dead_letters: int = 0
    version: str = "-"

    topic_prefix: str = ""

    def __post_init__(self) -> None:
        p = self.topic_prefix
        self.consumer = self.bus.consumer([p + t for t in OUTPUT_TOPICS], p + "motorwatch-demo-view")

    def poll(self, timeout_s: float = 0.0) -> int:
        records = self.consumer.poll_batch(65_536, timeout_s)
        if not records:
            return 0
        by_topic = {t.removeprefix(self.topic_prefix): v for t, v in values_by_topic(records).items()}
        scores = score_columns(by_topic.get(topics.SCORES, []))
        pairs = zip(scores.risk.tolist(), scores.rul.tolist(), strict=True)
        self.risk.update(zip(scores.asset_id, pairs, strict=True))
        if scores.model_version:
            self.version = scores.model_version[-1]
        self.scores += len(scores.asset_id)
        alerts, _ = decode_many(by_topic.get(topics.ALERTS, []), Alert)
        for _before, a in self.board.apply(a for _, a in alerts):
            self.raised += a.state == "raised"
            self.feed.appendleft(_feed_line(a))
        self.dead_letters += sum(len(by_topic.get(t, [])) for t in DEAD_LETTER_TOPICS)  # counted, not read
        self.consumer.commit()
        return len(records)

    def render(self, now_ts: float, readings: int, elapsed_s: float, rows: int = 12) -> Group:
        """Header line, the riskiest motors, and the latest alert changes."""
        rate = readings / max(elapsed_s, 1e-9)
        counts = {p: 0 for p in PRIORITIES}
        for a in self.board.open.values():
            counts[a.priority] += 1
        header = Text.assemble(
            ("motorwatch demo ", "bold"),
            f"sim {_clock(now_ts)} | {readings:,} readings ({rate:,.0f}/s) | {self.scores:,} scores | "
            f"{self.dead_letters:,} dead letters | model {self.version} | open alerts ",
            *[(f"{p} {counts[p]} ", _STYLE[p]) for p in reversed(PRIORITIES)],
        )
        table = Table("motor", "risk", "RUL (h)", "alert", title="riskiest motors", title_justify="left")
        for asset, (risk, rul) in sorted(self.risk.items(), key=lambda kv: -kv[1][0])[:rows]:
            alert = self.board.open.get(asset)
            tag = Text(alert.priority, _STYLE[alert.priority]) if alert else Text("")
            table.add_row(asset, _bar(risk), f"{rul:,.0f}", tag)
        feed = Text("\n".join(self.feed) or "no alerts yet")
        return Group(header, table, Text("alert feed", style="bold"), feed)


def _feed_line(a: Alert) -> str:
    drivers = ", ".join(d.feature for d in a.drivers[:2])
    why = f" ({drivers})" if drivers else ""
    if a.state == "cleared":
        why = " (maintenance)" if a.reason == "maintenance" else ""
    return f"{_clock(a.ts)} {a.state:<8} {a.priority:<6} {a.asset_id:<8} risk {a.risk:.2f}{why}"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _bar(risk: float, width: int = 10) -> Text:
    full = round(risk * width)
    style = "red" if risk >= 0.8 else "yellow" if risk >= 0.5 else "green"
    return Text(f"{'█' * full}{'░' * (width - full)} {risk:.2f}", style)


class SimulatedClock:
    """When each event time is due on the wall clock, at ``speed`` simulated seconds per second
    from now (the publisher's pace): the scorer measures reading-to-score latency with it."""

    def __init__(self, start_ts: float, speed: float) -> None:
        self.start_ts, self.speed = start_ts, speed
        self.epoch = time.time()

    def wall_time(self, ts: np.ndarray) -> np.ndarray:
        return self.epoch + (ts - self.start_ts) / self.speed


@dataclass
class Demo:
    """The simulator, the pipeline and the view, driven round-robin by :meth:`step`."""

    publisher: Publisher
    listener: MaintenanceListener | None
    pipeline: Pipeline
    view: FleetView
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Small rounds keep every stage's batches small: when the machine cannot keep the pace, the
        # simulated clock falls behind instead of the console freezing on one huge batch.
        self._max_ticks = max(1, STEP_READINGS // self.publisher.fleet.config.motors)

    @classmethod
    def build(
        cls,
        bus: Bus,
        profile: Profile,
        registry: Path,
        config: DemoConfig,
        partitions: int = 6,
        topic_prefix: str = "",
    ) -> Demo:
        """``topic_prefix`` names this run's topics and consumer groups (one cluster, several runs)."""
        p = topic_prefix
        fleet = Fleet(config.fleet(), config.seed)
        clock = SimulatedClock(fleet.config.start_ts, config.speed)
        scorer = ScorerConfig(schedule_out=config.schedule_out, event_wall_time=clock.wall_time)
        pipeline = Pipeline.build(bus, profile, registry, scorer, partitions, p)
        view = FleetView(bus, topic_prefix=p)
        listener = None
        if config.closed_loop:
            listener = MaintenanceListener(fleet, bus, p + "motorwatch-simulator", p + topics.SCHEDULE)
        publisher = Publisher(
            fleet,
            bus.producer(),
            Pacing(config.speed),
            readings_topic=p + topics.READINGS,
            maintenance_topic=p + topics.MAINTENANCE,
        )
        others = [(view.consumer, view.poll)]
        if listener is not None:
            others.append((listener.consumer, listener.run_once))
        pipeline.join(others)
        return cls(publisher, listener, pipeline, view)

    def step(self) -> int:
        """Publish the readings now due, let every stage consume, update the view."""
        if self.listener is not None:
            self.listener.run_once()
        sent = self.publisher.run_once(self._max_ticks)
        self.publisher.producer.flush()
        self.pipeline.pump(self.view.poll)
        return sent

    def run(self, stop: threading.Event, on_tick: Callable[[Demo], None] = lambda _: None) -> None:
        while not stop.is_set():
            if not self.step():
                stop.wait(min(0.05, self.publisher.seconds_until_due()))
            on_tick(self)

    def render(self) -> Group:
        return self.view.render(
            self.publisher.fleet.now, self.publisher.summary.readings, time.monotonic() - self.started
        )

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.publisher.producer.close()
        self.pipeline.close()
