"""Every stage in one process: a source (the simulator or a replayed log), the feature worker and the
scorer, each consuming what the previous one produced.

The stages are the very classes that run as separate processes on Kafka. Live (the demo), one thread
drives them round-robin (:meth:`Pipeline.pump`), so a run is deterministic and needs no locks. On
the in-process bus the producer of a stage must never get more than ``max_backlog`` ahead of its
consumers (the bus raises rather than deadlock on one thread): sources send at most a few thousand
readings, then :meth:`Pipeline.pump` drains the stages.

A back-test (:meth:`Pipeline.run_split`) puts the source and the feature worker on a second thread,
so that the two halves overlap where they leave Python (numba loops, onnxruntime, Arrow). The
feature worker's rounds reach the scoring thread in order (:class:`Rounds`), and each is scored to
the end before the next is published: the scorer sees the same batches whatever the threads'
timing, so the output stays deterministic.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from features.worker import FeatureWorker, WorkerConfig
from ingest import topics
from ingest.bus import Bus, BusError, Consumer, Record
from ingest.inproc import InProcessBus
from ingest.profiles import Profile
from models.registry import Registry
from scoring.worker import ModelUnavailable, Scorer, ScorerConfig

# What a reader of the pipeline's outputs (the demo's console) subscribes to.
OUTPUT_TOPICS = (topics.SCORES, topics.ALERTS, topics.READINGS_DLQ, topics.FEATURES_DLQ)
DEAD_LETTER_TOPICS = (topics.READINGS_DLQ, topics.FEATURES_DLQ)
T = TypeVar("T")


def values_by_topic(records: Sequence[Record]) -> dict[str, list[bytes]]:
    """The values of ``records`` per topic, in order: one pass, then one batch decode per topic."""
    out: dict[str, list[bytes]] = {}
    for r in records:
        out.setdefault(r.topic, []).append(r.value)
    return out


class Rounds:
    """The producer of a stage on another thread: what it sends up to each ``flush`` (a round) is
    queued as one item, and iterating gives the rounds in order until :meth:`end`. At most
    ``depth`` rounds wait; :meth:`stop` (the reading side gave up) makes the sender raise."""

    class Stopped(RuntimeError):
        """The reading side stopped: nobody takes the rounds any more."""

    _END = object()

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._round: list[tuple[str, list]] = []
        self._stopped = threading.Event()

    def send_batch(self, topic: str, messages: Iterable[tuple[bytes, Any]]) -> None:
        self._round.append((topic, list(messages)))

    def flush(self, timeout_s: float | None = None) -> None:
        """End the round: queue what was sent since the last flush (waits while ``depth`` wait)."""
        if self._round:
            self._put(self._round)
            self._round = []

    def close(self) -> None:
        """Nothing to release (the stage closing is not the end of the rounds: see :meth:`end`)."""

    def end(self) -> None:
        """No more rounds: iteration stops after those queued (nothing to do once stopped)."""
        with contextlib.suppress(self.Stopped):
            self._put(self._END)

    def stop(self) -> None:
        self._stopped.set()

    def __iter__(self) -> Iterator[list[tuple[str, list]]]:
        while (item := self._queue.get()) is not self._END:
            yield item

    def _put(self, item: Any) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise self.Stopped("the scoring side stopped")


class NoModelError(ModelUnavailable):
    """The registry holds no model to score with (refused before any stage starts)."""


def latest_model(registry: Registry) -> str:
    """The registry's latest version; :class:`NoModelError` when it holds none."""
    version = registry.latest_version()
    if version is None:
        raise NoModelError(f"no model in the registry {registry.root}: run `motorwatch train` first")
    return version


@dataclass
class Pipeline:
    """The feature worker and the scorer on ``bus``, pumped by whoever feeds ``sensor.readings``."""

    bus: Bus
    features: FeatureWorker
    scorer: Scorer

    @classmethod
    def build(
        cls,
        bus: Bus,
        profile: Profile,
        registry: Path | Registry,
        scorer_config: ScorerConfig | None = None,
        partitions: int = 6,
        topic_prefix: str = "",
        json_features: bool = False,
        batch: int | None = None,
        split: bool = False,
    ) -> Pipeline:
        """Create the topics and both stages; refuses (:class:`NoModelError`) an empty registry.

        ``topic_prefix`` isolates a run on a shared cluster: it names its topics and consumer groups.
        On the in-process bus the feature vectors go to the scorer, and the scores to their readers,
        as columns (``FeatureBlock`` and ``ScoreBlock`` rows), not JSON, unless ``json_features`` (as
        on Kafka: the same scores, slower). ``batch``: the records each stage takes per round
        (default: each stage's own). ``split``: for :meth:`run_split` (not :meth:`pump`)."""
        reg = registry if isinstance(registry, Registry) else Registry(registry)
        latest_model(reg)
        p = topic_prefix
        bus.create_topics([p + t for t in topics.ALL], partitions)
        columns = isinstance(bus, InProcessBus) and not json_features
        worker = WorkerConfig.prefixed(p, group_id=p + WorkerConfig().group_id, columns_in_process=columns)
        scoring = scorer_config or ScorerConfig()
        scoring = replace(scoring, group_id=p + scoring.group_id, topic_prefix=p, columns_in_process=columns)
        if batch is not None:
            worker, scoring = replace(worker, max_records=batch), replace(scoring, batch_size=batch)
        features = FeatureWorker(bus, profile, worker, Rounds() if split else None)
        return cls(bus, features, Scorer(bus, profile, reg, scoring))

    def join(
        self, others: Sequence[tuple[Consumer, Callable[..., int]]] = (), timeout_s: float = 60.0
    ) -> None:
        """Run each stage (and each of ``others``: a consumer and its stage's ``run_once``) until its
        consumer owns partitions. Joining a Kafka group takes a few round trips, which the
        zero-timeout polls of :meth:`pump` may never complete; the in-process bus assigns at once."""
        stages = [
            (self.features.consumer, self.features.run_once),
            (self.scorer.consumer, self.scorer.run_once),
            *others,
        ]
        deadline = time.monotonic() + timeout_s
        for consumer, run_once in stages:
            while not consumer.assignment():
                if time.monotonic() > deadline:
                    raise BusError(f"a stage did not join its consumer group within {timeout_s:g} s")
                run_once(timeout_s=0.1)

    def pump(self, on_round: Callable[[], Any] | None = None) -> int:
        """Run the feature worker, then the scorer (then ``on_round``, e.g. a reader of the outputs),
        until a round consumes nothing. Returns the records the two stages consumed."""
        total = 0
        while True:
            n = self.features.run_once(timeout_s=0.0)
            n += self.scorer.run_once(timeout_s=0.0)
            if on_round is not None:
                n += on_round() or 0
            total += n
            if not n:
                return total

    def run_split(
        self, feed: Callable[[Callable[[], None]], T], on_round: Callable[[], Any] | None = None
    ) -> T:
        """Run ``feed(pump)`` and the feature worker on a second thread: ``feed`` sends readings to
        ``sensor.readings`` and calls ``pump`` after each send. At its end the worker releases what it
        holds for its grace period. This thread publishes each round of the worker's outputs and
        runs the scorer (then ``on_round``) until that round is scored. Returns what ``feed`` returns;
        an exception on either side stops both and is raised here, as is a model that cannot be
        loaded (:class:`scoring.worker.ModelUnavailable`). Needs a pipeline built ``split``."""
        rounds = self.features.producer
        if not isinstance(rounds, Rounds):
            raise TypeError("run_split needs a pipeline built with split=True")
        fed: list[T] = []
        failed: list[BaseException] = []

        def features_side() -> None:
            try:
                fed.append(feed(self._pump_features))
                self._pump_features()
                self.features.finish()
            except BaseException as exc:  # handed to the calling thread, which raises it
                failed.append(exc)
            finally:
                rounds.end()

        thread = threading.Thread(target=features_side, name="motorwatch-features", daemon=True)
        thread.start()
        producer = self.bus.producer()
        try:
            self.scorer.prepare()  # the model loads while the feature side starts
            for messages in rounds:
                for topic, batch in messages:
                    producer.send_batch(topic, batch)
                while self.scorer.run_once(timeout_s=0.0) + ((on_round() or 0) if on_round else 0):
                    pass
        finally:
            rounds.stop()
            thread.join()
        if failed:
            raise failed[0]
        return fed[0]

    def _pump_features(self) -> None:
        while self.features.run_once(timeout_s=0.0):
            pass

    def close(self) -> None:
        self.features.close()
        self.scorer.close()
