"""The scorer worker: ``sensor.features`` (+ ``maintenance.events``) -> scores, alerts, schedule.

One :meth:`Scorer.run_once` is one micro-batch, in this order:

1. between batches, poll the registry's ``latest`` (at most every ``reload_interval_s``) and swap
   in a new model version (hot reload: no record is in flight, so none is lost or scored twice);
2. poll up to ``batch_size`` records, waiting at most ``batch_timeout_s`` for the first (it never
   waits to fill a batch, so an idle scorer answers one message at once; under load the batches
   fill by themselves);
3. decode in one batched call; bad messages go to ``sensor.features.dlq`` with their reason;
4. drop redelivered rows (event time not newer than the asset's state), append the rest to the
   per-asset sequences, and run ONE batched ensemble inference over the whole batch;
5. run the alert policy in stream order (maintenance events clear alerts where they occur in the
   stream), re-plan the schedule when alerts changed;
6. produce scores, alerts, jobs and dead letters, flush, THEN commit the consumed offsets.

A crash before 6 redelivers the batch to the next run, which recomputes the same outputs (same
alert and job ids). State lives in memory and is rebuilt when partitions are assigned (at start,
after a restart or a rebalance): the open alerts of the assets of the new partitions are taken over
from ``maintenance.alerts`` (they go on under their ids; redelivered scores older than an alert's
last state change nothing), the state of partitions lost is dropped (their new owner takes their
alerts over), and the sequences refill within ``T`` scores of an asset (left-padded meanwhile, as
in training). Each asset's baseline for alert drivers is relearnt from its next vectors.
"""

from __future__ import annotations

import collections
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ingest import topics
from ingest.bus import Bus, Record, partition_for
from ingest.profiles import Profile
from ingest.schemas import (
    FeatureRow,
    Features,
    MaintenanceEvent,
    Rejection,
    ScoreBlock,
    batch_decoder,
    by_source,
    decode_many,
    encode,
    ids_of_groups,
    named_floats,
    raw,
)
from models.inference import Inference, LSTMState
from scoring import metrics
from scoring.baselines import AssetBaselines
from scoring.config import PRIORITIES, AlertConfig, rul_to_time
from scoring.policy import AlertPolicy, Transition
from scoring.scheduler import PlanItem, Scheduler, write_schedule
from scoring.sequences import Sequences, SequenceStore
from scoring.slots import grown, room_for

log = logging.getLogger(__name__)
_TOPIC, _VALUE, _BLOCK = attrgetter("topic"), attrgetter("value"), attrgetter("block")
_TOPIC_PARTITION = attrgetter("topic", "partition")


class ModelUnavailable(RuntimeError):
    """No model could be loaded from the registry (see :meth:`Scorer.prepare`)."""


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """How the scorer batches, publishes and reloads. Alert thresholds live in the profile."""

    group_id: str = "motorwatch-scorer"
    batch_size: int = 1024
    batch_timeout_s: float = 0.05
    score_interval: float = 0.0  # event time between published scores of an asset (0: every score)
    reload_interval_s: float = 1.0  # how often to look for a new model version
    top_k: int = 10  # riskiest assets exported as per-asset gauges
    drivers_k: int = 3
    schedule_out: Path | None = None  # CSV or JSON (by suffix), rewritten when the plan changes
    topic_prefix: str = ""  # prepended to every topic name (isolated pipelines on one cluster, tests)
    # Reading-to-score latency needs the wall-clock time each reading happened: its event time in a
    # live plant (None). A simulated clock maps event time to wall time; a replayed log has none (off).
    event_wall_time: Callable[[np.ndarray], np.ndarray] | None = None
    measure_latency: bool = True
    # Threads a batch's inference is split across: 1 for one scorer per core; more when the scorer has
    # cores to itself (the scores are exactly those of one thread).
    inference_threads: int = 1
    # Scores go to readers in this process (in-process bus) as ScoreRow values rather than JSON.
    columns_in_process: bool = False
    # Scores handed to this callable, one block per batch, instead of being published: a back-test
    # that writes them to a file. Alerts, jobs and dead letters are still published. It is called
    # before the batch's offsets are committed, so a batch redelivered after a crash is handed over
    # again (a back-test, which starts from the log again, never redelivers).
    score_sink: Callable[[ScoreBlock], object] | None = None
    # Flood protection (the profile's flood_limit) holds back raises while much of the fleet raises
    # at once: it spares the people paged. Off, every asset's alert is published as it changes,
    # whatever the rest of the fleet does: a back-test, which reports each asset's own alerts.
    flood_protection: bool = True


class Scorer:
    """Scores feature vectors with the registry's latest model; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        profile: Profile,
        registry: Any,
        config: ScorerConfig = ScorerConfig(),
        *,
        spec: Any = None,
    ) -> None:
        self.profile = profile
        self.registry = registry
        self.config = config
        self._spec = spec
        alert_cfg = AlertConfig.from_profile(profile)
        if not config.flood_protection:
            alert_cfg = replace(alert_cfg, flood_limit=sys.maxsize)
        self._alerts = alert_cfg
        self.policy = AlertPolicy(alert_cfg, profile.rul_unit)
        self.scheduler = Scheduler(alert_cfg.crew_capacity, alert_cfg.shift_length, rul_to_time(profile))
        self.live = profile.time_unit == "s" and config.measure_latency
        self.producer = bus.producer()
        self._bus = bus
        self._prefix = config.topic_prefix
        self._features_topic = config.topic_prefix + topics.FEATURES
        self._maintenance_topic = config.topic_prefix + topics.MAINTENANCE
        self._owned: set[int] = set()  # partitions of the features topic
        self._assigned: set[int] | None = None  # a new assignment, taken over after the poll
        self._replan_due = False
        self.consumer = bus.consumer(
            [self._features_topic, self._maintenance_topic], config.group_id, on_assign=self._on_assign
        )
        self._end_offsets = getattr(bus, "end_offsets", None)
        self._position: dict[tuple[str, int], int] = {}
        self.predictor: Any = None
        self.store: SequenceStore | None = None
        self.baselines: AssetBaselines | None = None
        self.last_risk = np.zeros(0)
        self.last_rul = np.zeros(0)
        self.last_emit = np.zeros(0)
        self._next_check = 0.0
        self._failed_version: str | None = None
        self._load_error: str | None = None
        self._next_lag = 0.0
        self._suppressed_seen = 0
        self._warned_empty = False
        self.scored = 0

    def prepare(self) -> None:
        """Load the registry's latest model now rather than at the first poll, e.g. while another
        thread starts the stages upstream. Raises :class:`ModelUnavailable` when there is none to
        score with: a back-test has nothing to wait for (a live scorer waits for one instead)."""
        self._maybe_reload()
        if self.predictor is None:
            raise ModelUnavailable(self._load_error or f"no model in the registry {self.registry}")

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.config.reload_interval_s
        version = self.registry.latest_version()
        if version is None and self.predictor is None and not self._warned_empty:
            log.warning("the model registry has no model yet: waiting for one (nothing is consumed)")
            self._warned_empty = True
        if version is None or version == self._failed_version:
            return
        if self.predictor is not None and version == self.predictor.version:
            return
        if self._spec is None:
            from features.spec import FeatureSpec

            self._spec = FeatureSpec.from_profile(self.profile)
        try:
            predictor = self.registry.load(version, spec=self._spec, threads=self.config.inference_threads)
        except Exception as exc:  # a bad version must not stop scoring with the current one
            log.error(
                "cannot load model %s, keeping %s: %s", version, getattr(self.predictor, "version", None), exc
            )
            self._failed_version = version
            self._load_error = f"cannot load model {version}: {exc}"
            return
        old = self.predictor
        shape = (predictor.feature_names, predictor.seq_len, predictor.seq_step, predictor.state_size)
        if old is None or (old.feature_names, old.seq_len, old.seq_step, old.state_size) != shape:
            n_features = len(predictor.feature_names)
            self.store = SequenceStore(
                predictor.seq_len, n_features, step=predictor.seq_step, state_size=predictor.state_size
            )
            self.baselines = AssetBaselines(n_features, self._spec.baseline_n)
        else:  # the same histories, another LSTM: its states are not the old one's
            self.store.forget_states()
        self.predictor = predictor
        # Features decoded straight into the model's feature order (one C call for a clean batch).
        self._decode_features = batch_decoder(Features, features=named_floats(predictor.feature_names))
        metrics.MODEL.info({"version": predictor.version})
        card = _card(self.registry, version)  # read once: thresholds and training time
        self._use_operating_point(version, card)
        created = _created(card)
        if created is not None:
            metrics.MODEL_CREATED.set(created)
        if old is not None:
            metrics.RELOADS.inc()
            log.info("hot reload: model %s -> %s", old.version, predictor.version)

    def _use_operating_point(self, version: str, card: Any) -> None:
        """With ``on_risk_from_model``, raise alerts at the threshold chosen on the model's validation
        assets (its card's ``operating_point``); the profile's ``on_risk`` for a model without one."""
        if not self._alerts.on_risk_from_model:
            return
        threshold = _operating_point(card)
        config = self._alerts
        if threshold is not None:
            try:
                config = self._alerts.at_operating_point(threshold)
            except ValueError as exc:  # e.g. a threshold of 0: no hysteresis below it
                log.warning(
                    "model %s: operating point %s unusable, profile thresholds kept: %s",
                    version,
                    threshold,
                    exc,
                )
                threshold = None
        self.policy.config = config
        log.info(
            "alerts raise at risk >= %.3g (%s) and clear below %.3g",
            config.on_risk,
            "validated operating point of " + version if threshold is not None else "profile",
            config.off_risk,
        )

    def run_once(self, max_records: int | None = None, timeout_s: float | None = None) -> int:
        """Poll one micro-batch, score it, produce, flush, then commit. Returns records consumed."""
        timeout = self.config.batch_timeout_s if timeout_s is None else timeout_s
        self._maybe_reload()
        if self.predictor is None:  # nothing to score with yet: leave the records on the bus
            time.sleep(timeout)
            return 0
        records = self.consumer.poll_batch(max_records or self.config.batch_size, timeout)
        if self._assigned is not None:
            self._rebalance()
        if records or self._replan_due:
            self._process(records)
            self.producer.flush()
            self.consumer.commit()
        self._update_lag()
        return len(records)

    def run(self, stop: threading.Event) -> None:
        """Score until ``stop`` is set."""
        while not stop.is_set():
            self.run_once()

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()

    def _process(self, records: list[Record]) -> None:
        predictor, store = self.predictor, self.store
        assert store is not None
        out: dict[str, list[tuple[bytes, bytes]]] = {
            topics.SCORES: [],
            topics.ALERTS: [],
            topics.SCHEDULE: [],
        }
        maintenance = self._maintenance_topic
        if maintenance in map(_TOPIC, records):
            is_maint = np.array([r.topic == maintenance for r in records], dtype=bool)
            feat_pos, maint_pos = np.flatnonzero(~is_maint), np.flatnonzero(is_maint).tolist()
            feats = [records[i] for i in feat_pos.tolist()]
        else:  # the usual batch: feature vectors only
            feat_pos, maint_pos, feats = np.arange(len(records)), [], records
        for tp, run in itertools.groupby(records, _TOPIC_PARTITION):  # in runs by partition
            self._position[tp] = collections.deque(run, maxlen=1)[0].offset + 1
        metrics.MESSAGES_IN.labels(topic=topics.FEATURES).inc(len(feats))

        rows = self._decode(feats, feat_pos)
        slots, keep = store.admit(rows.asset_ids, rows.ts, rows.stale)
        self._grow(len(store))
        if not keep.all():
            rows, slots = rows.take(keep), slots[keep]
        risk, rul = self._score(rows, slots, out)

        # Alert policy in stream order, each maintenance event applied where it occurs in the batch.
        events: list[tuple[int, Any]] = []
        if maint_pos:
            metrics.MESSAGES_IN.labels(topic=topics.MAINTENANCE).inc(len(maint_pos))
            maint = [records[i] for i in maint_pos]
            decoded, rejects = decode_many([r.value for r in maint], MaintenanceEvent)
            self._dead_letter(maint, rejects)
            events = [(maint_pos[j], ev) for j, ev in decoded]
        transitions: list[Transition] = []
        version = predictor.version
        start = 0
        for cut, event in [*events, (len(records), None)]:
            end = int(np.searchsorted(rows.pos, cut))
            if end > start:
                found = self.policy.observe(
                    rows.asset_ids[start:end],
                    rows.ts[start:end],
                    risk[start:end],
                    rul[start:end],
                    rows.stale[start:end],
                    version,
                )
                transitions.extend((row + start if row >= 0 else -1, a) for row, a in found)
                start = end
            if event is not None:
                transitions.extend(self.policy.maintenance(event.asset_id, event.ts, version))
                if event.asset_id in store.slot:  # its next vectors are its new healthy baseline
                    self.baselines.reset(store.slot[event.asset_id])
        if transitions:
            self._publish_alerts(transitions, rows, out)
        if transitions or self._replan_due:
            self._export_alert_state()
            self._replan(out)
        for topic, msgs in out.items():
            if msgs:
                self.producer.send_batch(self._prefix + topic, msgs)
                metrics.MESSAGES_OUT.labels(topic=topic).inc(len(msgs))

    def _decode(self, feats: list[Record], pos: np.ndarray) -> _Rows:
        """Feature messages as columns (``pos``: their index in the polled batch): a feature worker in
        this process hands its :class:`FeatureBlock` rows over as they are (the model's own feature
        names); JSON is decoded."""
        values = list(map(_VALUE, feats))
        kinds = set(map(type, values))
        if FeatureRow in kinds:
            names = self.predictor.feature_names
            if kinds == {FeatureRow} and all(b.names == names for b in set(map(_BLOCK, values))):
                return _from_blocks(values, pos, len(names))
            # Rows of another feature spec (or a mix): as JSON, so they are dead-lettered as such.
            values = list(map(raw, values))
        return self._decode_json(feats, values, pos)

    def _decode_json(self, feats: list[Record], values: list[bytes], pos: np.ndarray) -> _Rows:
        """Valid feature messages (``values``: the JSON of ``feats``) as columns; the rest
        dead-lettered with their reason.

        A feature the message omits is undefined (the feature worker leaves out non-finite values):
        NaN, which the predictor fills with its training median. A feature the model does not know
        means another feature spec: dead-lettered as ``unknown_signal``."""
        decoded, rejects = self._decode_features(values)
        self._dead_letter(feats, rejects)
        msgs = [m for _, m in decoded]
        vectors = list(map(msgspec.structs.astuple, [m.features for m in msgs]))
        return _Rows(
            [m.asset_id for m in msgs],
            np.array([m.ts for m in msgs], dtype=np.float64),
            np.array([m.stale for m in msgs], dtype=bool),
            np.array(vectors, dtype=np.float32).reshape(len(vectors), len(self.predictor.feature_names)),
            pos[np.array([i for i, _ in decoded], dtype=np.intp)],
        )

    def _score(self, rows: _Rows, slots: np.ndarray, out: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
        """One batched inference over the fresh rows; scores published at the configured cadence.

        Returns risk and RUL for every row (a stale row reports its asset's last scored values)."""
        risk, rul = self.last_risk[slots], self.last_rul[slots]
        fresh = np.flatnonzero(~rows.stale)
        if len(fresh) == 0:
            return risk, rul
        predictor = self.predictor
        x, fslots = rows.x[fresh], slots[fresh]
        began = time.perf_counter()
        inference = predictor.begin(x)  # the forest runs while the histories are updated
        seqs = self.store.append(fslots, x, rows.ts[fresh])
        self.baselines.add(fslots, x)
        fresh_risk, fresh_rul = self._predict(inference, fslots, seqs)
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - began)
        metrics.BATCH_SIZE.observe(len(fresh))
        risk[fresh], rul[fresh] = fresh_risk, fresh_rul
        last = len(fslots) - 1 - np.unique(fslots[::-1], return_index=True)[1]  # each asset's last row
        self.last_risk[fslots[last]] = fresh_risk[last]
        self.last_rul[fslots[last]] = fresh_rul[last]
        self.scored += len(fresh)

        emit = fresh if self.config.score_interval <= 0 else fresh[self._due(fslots, rows.ts[fresh])]
        ids = rows.asset_ids
        block = ScoreBlock(
            [ids[i] for i in emit.tolist()],
            rows.ts[emit],
            risk[emit],
            rul[emit],
            self.profile.rul_unit,
            predictor.version,
        )
        if self.config.score_sink is not None:
            self.config.score_sink(block)
        else:
            out[topics.SCORES] = block.rows() if self.config.columns_in_process else block.messages()
        metrics.observe_many(metrics.FLEET_RISK, risk[emit])
        if self.live:
            happened = rows.ts[emit]
            if self.config.event_wall_time is not None:
                happened = self.config.event_wall_time(happened)
            metrics.observe_many(metrics.LATENCY, time.time() - happened)
        return risk, rul

    def _predict(self, run: Inference, slots: np.ndarray, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
        """Risk and RUL of the rows of ``run`` (stream order). A row whose history's LSTM state
        the store remembers takes one LSTM step from it; the first row on any other history runs its
        whole sequence, and its state serves the rows after it on that history, then the next batches.

        Live readings faster than the model's training cadence mostly take the step (1 Hz readings,
        a model trained on 5-minute logs: 299 of 300). The scores are the same bits either way."""
        store = self.store
        n, prefix = len(slots), seqs.prefix
        h = np.empty((n, self.predictor.state_size), dtype=np.float32)
        c = np.empty_like(h)
        known = store.known(slots, prefix)
        h[known], c[known] = store.state(slots[known])
        # Rows on a history without a state, by asset: a run of one history follows its first row.
        new = np.flatnonzero(~known)
        new = new[np.argsort(slots[new], kind="stable")]
        s, p = slots[new], prefix[new]
        first = p < 0  # no history to share
        first[:1] = True
        first[1:] |= (s[1:] != s[:-1]) | (p[1:] != p[:-1])
        leader = new[np.maximum.accumulate(np.where(first, np.arange(len(new)), 0))]
        lead = np.sort(new[first])  # stream order: an asset's newest history is the one remembered
        metrics.LSTM_ROWS.labels("sequence").inc(len(lead))
        metrics.LSTM_ROWS.labels("step").inc(n - len(lead))
        if len(lead):
            state = run.sequences(lead, seqs.take(lead))
            h[lead], c[lead] = state.h, state.c
            store.remember(slots[lead], prefix[lead], state.h, state.c)
        follow = new[~first]
        h[follow], c[follow] = h[leader[~first]], c[leader[~first]]
        step = np.sort(np.r_[np.flatnonzero(known), follow])
        if len(step):
            run.steps(step, LSTMState(h[step], c[step]))
        return run.result()

    def _due(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Rows whose asset has not published a score within ``score_interval`` of event time."""
        interval, last_emit = self.config.score_interval, self.last_emit
        due = np.zeros(len(slots), dtype=bool)
        for j, (s, t) in enumerate(zip(slots.tolist(), ts.tolist(), strict=True)):
            if t >= last_emit[s] + interval:
                last_emit[s] = t
                due[j] = True
        return due

    def _publish_alerts(self, transitions: list[Transition], rows: _Rows, out: dict[str, list]) -> None:
        """Attach drivers (from the row that caused the alert, else the asset's newest vector), against
        the asset's own baseline."""
        alerts = [a for _, a in transitions]
        store = self.store
        vecs, slots, need = [], [], []
        for j, (row, a) in enumerate(transitions):
            slot = None if a.kind == "flood" else store.slot.get(a.asset_id)
            if slot is None:  # a fleet flood summary: no one vector to explain
                continue
            if row >= 0 and not rows.stale[row]:
                vecs.append(rows.x[row])
            elif store.count[slot] > 0:
                vecs.append(store.newest[slot])
            else:  # an asset silent since before its first score
                continue
            slots.append(slot)
            need.append(j)
        if need:
            baseline = self.baselines.mean(np.array(slots))
            found = self.predictor.drivers(np.stack(vecs), k=self.config.drivers_k, baseline=baseline)
            for j, drivers in zip(need, found, strict=True):
                alerts[j].drivers = list(drivers)
        for a in alerts:
            if a.state == "raised":
                metrics.ALERTS_RAISED.labels(priority=a.priority, kind=a.kind).inc()
        out[topics.ALERTS] = [(a.asset_id.encode(), encode(a)) for a in alerts]

    def _export_alert_state(self) -> None:
        """Open alerts by priority and the flood gauges, after alerts changed."""
        active = self.policy.active()
        counts = dict.fromkeys(PRIORITIES, 0)
        for st in active.values():
            counts[PRIORITIES[st.priority]] += 1
        for p, c in counts.items():
            metrics.ACTIVE_ALERTS.labels(priority=p).set(c)
        metrics.FLOOD_ACTIVE.set(1 if self.policy.flood is not None else 0)
        metrics.ALERTS_SUPPRESSED.inc(self.policy.suppressed_total - self._suppressed_seen)
        self._suppressed_seen = self.policy.suppressed_total

    def _replan(self, out: dict[str, list]) -> None:
        """Plan the open alerts again; publish (and write) the jobs that are new or moved."""
        self._replan_due = False
        changed = self.scheduler.replan(self._plan_items(), now=self.policy.watermark)
        if not changed:
            return
        out[topics.SCHEDULE] = [(j.asset_id.encode(), encode(j)) for j in changed]
        plan = list(self.scheduler.jobs.values())
        metrics.JOBS.set(len(plan))
        metrics.JOBS_UNFIT.set(sum(not j.fits for j in plan))
        if self.config.schedule_out is not None:
            write_schedule(self.config.schedule_out, plan)

    def _plan_items(self) -> list[PlanItem]:
        return [
            PlanItem(a, st.alert_id, st.ts, st.risk, st.rul, PRIORITIES[st.priority], st.model_version)
            for a, st in self.policy.active().items()
        ]

    def _on_assign(self, assigned: set[tuple[str, int]]) -> None:
        # Called inside the consumer's poll: only note it (taking over reads another topic).
        self._assigned = {p for t, p in assigned if t == self._features_topic}

    def _rebalance(self) -> None:
        """Partitions moved (or this scorer started): forget the assets of partitions lost, so their
        alerts and jobs are left to their new owner; take over the open alerts of partitions gained
        from the alerts topic, so they go on under their ids. Sequences refill from the stream."""
        owned, self._assigned = self._assigned, None
        lost, gained = self._owned - owned, owned - self._owned
        self._owned = owned
        if not lost and not gained:
            return
        n = self._bus.partitions(self._features_topic)
        self.scheduler.own(owned, n)  # its share of the crew: the slots of its partitions
        store = self.store
        if lost and store is not None:
            tracked = set(store.slot) | set(self.policy.assets)  # restored alerts may have no slot yet
            gone = [a for a in tracked if partition_for(a.encode(), n) in lost]
            slots = store.slots([a for a in gone if a in store.slot])
            store.forget(slots)
            self.baselines.reset(slots)
            slots = slots[slots < len(self.last_risk)]
            self.last_risk[slots], self.last_rul[slots], self.last_emit[slots] = 0.0, 0.0, -np.inf
            self.policy.forget(gone)
            self.scheduler.forget(gone)
            log.info("partitions %s moved away: forgot %d assets", sorted(lost), len(gone))
        if gained:
            from scoring.sinks import follow_alerts

            board = follow_alerts(
                self._bus, threading.Event(), follow=False, topic=self._prefix + topics.ALERTS
            )
            mine = [a for a in board.open.values() if partition_for(a.asset_id.encode(), n) in gained]
            restored = self.policy.restore(mine)
            # Their jobs were published by the previous owner: this plan takes them over as they are,
            # so a clear withdraws them.
            self.scheduler.adopt(self._plan_items(), self.policy.watermark, {a.asset_id for a in mine})
            log.info("partitions %s assigned: took over %d open alerts", sorted(gained), restored)
        self._replan_due = True

    def _grow(self, n: int) -> None:
        """Per-asset score state sized to the sequence store's slots."""
        if n <= len(self.last_risk):
            return
        room = room_for(n, len(self.last_risk))
        self.last_risk, self.last_rul = grown(self.last_risk, room), grown(self.last_rul, room)
        self.last_emit = grown(self.last_emit, room, -np.inf)

    def _dead_letter(self, records: list[Record], rejects: list[Rejection]) -> None:
        if rejects:
            from ingest.deadletter import dead_letter

            dead_letter(self.producer, records, rejects, stage="scorer")

    def _update_lag(self) -> None:
        """Consumer lag per input topic and the top-K risk gauges, at most once a second.

        Lag: the end offset of each assigned partition (the Kafka consumer's ``highwater()`` from its
        fetches, else the bus's ``end_offsets``: the in-process bus) minus the offset consumed."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + 1.0
        if self.store is not None:
            n = len(self.store)
            metrics.set_top_risk(list(self.store.slot), self.last_risk[:n], self.config.top_k)
        highwater = getattr(self.consumer, "highwater", None)
        if highwater is not None:
            ends = highwater()
        elif self._end_offsets is not None:
            ends = {(t, p): self._end_offsets(t)[p] for t, p in self.consumer.assignment()}
        else:
            return
        lags = {tp: max(end - self._position[tp], 0) for tp, end in ends.items() if tp in self._position}
        totals: dict[str, int] = {}
        for (topic, _), value in lags.items():
            name = topic.removeprefix(self._prefix)
            totals[name] = totals.get(name, 0) + value
        for topic, value in totals.items():
            metrics.LAG.labels(topic=topic).set(value)


@dataclass(slots=True)
class _Rows:
    """Decoded feature messages as columns (stream order); ``pos``: index in the polled batch."""

    asset_ids: list[str]
    ts: np.ndarray
    stale: np.ndarray
    x: np.ndarray
    pos: np.ndarray

    def take(self, keep: np.ndarray) -> _Rows:
        ids = [a for a, k in zip(self.asset_ids, keep.tolist(), strict=True) if k]
        return _Rows(ids, self.ts[keep], self.stale[keep], self.x[keep], self.pos[keep])


def _from_blocks(refs: list[FeatureRow], pos: np.ndarray, width: int) -> _Rows:
    """:class:`FeatureRow` values as columns, exactly as their JSON would decode (non-finite
    features and stale markers' features undefined: NaN)."""
    n = len(refs)
    x = np.full((n, width), np.nan, dtype=np.float32)
    ts, stale = np.empty(n), np.zeros(n, dtype=bool)
    groups = by_source(refs, lambda ref: ref.block)
    for block, at, rows in groups:
        ts[at] = block.ts[rows]
        if block.stale:
            stale[at] = True
        else:
            values = block.values[rows]  # a copy (rows is a list)
            finite = np.isfinite(values)
            if not finite.all():
                values[~finite] = np.nan
            x[at] = values
    return _Rows(ids_of_groups(groups, lambda block: block.asset_id, n), ts, stale, x, pos)


def _card(registry: Any, version: str) -> Any:
    """``version``'s model card; None when the registry keeps no cards or cannot read this one."""
    try:
        return registry.card(version)
    except (AttributeError, OSError, ValueError):
        return None


def _operating_point(card: Any) -> float | None:
    """The alert threshold chosen on the validation assets, if the card has one."""
    try:
        return float(card.metrics["operating_point"]["threshold"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _created(card: Any) -> float | None:
    """Training time from the card (epoch seconds), if it has a readable one."""
    try:
        return datetime.strptime(card.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (AttributeError, TypeError, ValueError):
        return None
