"""Every stage in one process: a source (the simulator or a replayed log), the feature worker and the
scorer take turns on one bus, each consuming what the previous one produced.

The stages are the very classes that run as separate processes on Kafka; here one thread drives
them round-robin, so a run is deterministic and needs no locks. On the in-process bus the
producer of a stage must never get more than ``max_backlog`` ahead of its consumers (the bus raises
rather than deadlock on one thread): sources send at most a few thousand readings, then
:meth:`Pipeline.pump` drains the stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from features.worker import FeatureWorker, WorkerConfig
from ingest import topics
from ingest.bus import Bus, BusError, Consumer, Record
from ingest.inproc import InProcessBus
from ingest.profiles import Profile
from models.registry import Registry
from scoring.worker import Scorer, ScorerConfig

# What a reader of the pipeline's outputs (the demo's console, offline scoring) subscribes to.
OUTPUT_TOPICS = (topics.SCORES, topics.ALERTS, topics.READINGS_DLQ, topics.FEATURES_DLQ)
DEAD_LETTER_TOPICS = (topics.READINGS_DLQ, topics.FEATURES_DLQ)


def values_by_topic(records: Sequence[Record]) -> dict[str, list[bytes]]:
    """The values of ``records`` per topic, in order: one pass, then one batch decode per topic."""
    out: dict[str, list[bytes]] = {}
    for r in records:
        out.setdefault(r.topic, []).append(r.value)
    return out


class NoModelError(RuntimeError):
    """The registry holds no model to score with."""


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
        registry: Path,
        scorer_config: ScorerConfig | None = None,
        partitions: int = 6,
        topic_prefix: str = "",
        json_features: bool = False,
        batch: int | None = None,
    ) -> Pipeline:
        """Create the topics and both stages; refuses (:class:`NoModelError`) an empty registry.

        ``topic_prefix`` isolates a run on a shared cluster: it names its topics and consumer groups.
        On the in-process bus the feature vectors go to the scorer, and the scores to their readers,
        as columns (``FeatureBlock`` and ``ScoreBlock`` rows), not JSON, unless ``json_features`` (as
        on Kafka: the same scores, slower). ``batch``: the records each stage takes per round
        (default: each stage's own)."""
        reg = Registry(registry)
        if reg.latest_version() is None:
            raise NoModelError(f"no model in the registry {registry}: run `motorwatch train` first")
        p = topic_prefix
        bus.create_topics([p + t for t in topics.ALL], partitions)
        columns = isinstance(bus, InProcessBus) and not json_features
        worker = WorkerConfig.prefixed(p, group_id=p + WorkerConfig().group_id, columns_in_process=columns)
        scoring = scorer_config or ScorerConfig()
        scoring = replace(scoring, group_id=p + scoring.group_id, topic_prefix=p, columns_in_process=columns)
        if batch is not None:
            worker, scoring = replace(worker, max_records=batch), replace(scoring, batch_size=batch)
        return cls(bus, FeatureWorker(bus, profile, worker), Scorer(bus, profile, reg, scoring))

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

    def finish(self, on_round: Callable[[], Any] | None = None) -> int:
        """The end of the input: release what the feature worker holds for its grace period, score it."""
        self.pump(on_round)
        self.features.finish()
        return self.pump(on_round)

    def close(self) -> None:
        self.features.close()
        self.scorer.close()
