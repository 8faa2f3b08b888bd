"""Where alerts go besides ``maintenance.alerts``: a live console board and Alertmanager's v2 API.

Both read the alerts topic (never the scorer's hot path, so a slow receiver cannot delay scoring)
and fold it into an :class:`AlertBoard`: the open alerts, one per asset, plus a fleet flood alert.

Alertmanager (``POST /api/v2/alerts``): an alert is identified by its label set ``{alertname,
asset_id, kind, severity}``; ``severity`` is the priority, so a priority change resolves the old
label set and fires the new one. Alertmanager resolves an alert it has not heard of for its
``resolve_timeout``, so open alerts are re-sent every ``resend_s``. A cleared alert is sent with
``endsAt`` = now (resolved). Delivery errors are logged and retried at the next resend; they never
stop the reader.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from ingest import topics
from ingest.bus import Bus
from ingest.schemas import Alert, decode_many
from scoring.config import PRIORITIES

log = logging.getLogger(__name__)
_RANK = {p: i for i, p in enumerate(PRIORITIES)}


class AlertBoard:
    """The open alerts, folded from the alerts stream (latest state per asset; cleared ones removed)."""

    def __init__(self) -> None:
        self.open: dict[str, Alert] = {}

    def apply(self, alerts: Iterable[Alert]) -> list[tuple[Alert | None, Alert]]:
        """Fold alerts in; return ``(previous, new)`` for each alert that changed the board."""
        changes = []
        for a in alerts:
            before = self.open.get(a.asset_id)
            if a.state == "cleared":
                if before is None or before.alert_id != a.alert_id:
                    continue  # a redelivered clear, or the clear of an alert we never saw open
                del self.open[a.asset_id]
            else:
                if before == a:
                    continue  # redelivery
                self.open[a.asset_id] = a
            changes.append((before, a))
        return changes

    def rows(self) -> list[Alert]:
        """Open alerts, highest priority first, then highest risk."""
        return sorted(self.open.values(), key=lambda a: (-_RANK[a.priority], -a.risk, a.asset_id))


def render(board: AlertBoard, title: str = "motorwatch: open alerts"):
    """A rich table of the board."""
    from rich.table import Table

    colour = {"high": "bold red", "medium": "yellow", "low": "cyan"}
    table = Table(title=f"{title} ({len(board.open)})")
    for col in ("priority", "asset", "kind", "risk", "RUL", "since (ts)", "drivers", "model"):
        table.add_column(col)
    for a in board.rows():
        drivers = ", ".join(f"{d.feature}={d.value:.3g} (base {d.baseline:.3g})" for d in a.drivers)
        table.add_row(
            f"[{colour[a.priority]}]{a.priority}[/]",
            a.asset_id,
            a.kind,
            f"{a.risk:.2f}",
            f"{a.rul:.1f} {a.rul_unit}",
            f"{a.ts:g}",
            drivers,
            a.model_version,
        )
    return table


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerSink:
    """Posts alerts to Alertmanager's v2 API at ``url`` (e.g. ``http://127.0.0.1:9093``)."""

    def __init__(self, url: str, resend_s: float = 60.0, timeout_s: float = 5.0) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.resend_s = resend_s
        self.timeout_s = timeout_s
        self._next_resend = 0.0

    @staticmethod
    def payload(alert: Alert, resolved: bool, now: float) -> dict:
        drivers = "; ".join(f"{d.feature}={d.value:.4g} (baseline {d.baseline:.4g})" for d in alert.drivers)
        body = {
            "labels": {
                "alertname": "MotorwatchFailureRisk" if alert.kind != "no_data" else "MotorwatchNoData",
                "asset_id": alert.asset_id,
                "kind": alert.kind,
                "severity": alert.priority,
            },
            "annotations": {
                "summary": f"{alert.asset_id}: {alert.kind} alert, risk {alert.risk:.2f}, "
                f"RUL {alert.rul:.1f} {alert.rul_unit}",
                "drivers": drivers,
                "alert_id": alert.alert_id,
                "model_version": alert.model_version,
            },
        }
        if resolved:
            body["endsAt"] = _iso(now)
        return body

    def deliver(self, changes: list[tuple[Alert | None, Alert]], board: AlertBoard) -> None:
        """Send what changed; re-send every open alert when ``resend_s`` has passed."""
        now = time.time()
        out = []
        for before, a in changes:
            if before is not None and (before.priority, before.kind) != (a.priority, a.kind):
                out.append(self.payload(before, True, now))  # the old label set is over
            out.append(self.payload(a, a.state == "cleared", now))
        if time.monotonic() >= self._next_resend:
            self._next_resend = time.monotonic() + self.resend_s
            changed = {a.asset_id for _, a in changes}
            out.extend(self.payload(a, False, now) for a in board.rows() if a.asset_id not in changed)
        if out:
            self.post(out)

    def post(self, alerts: list[dict]) -> bool:
        req = urllib.request.Request(
            self.endpoint,
            data=json.dumps(alerts).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
            return True
        except OSError as exc:  # URLError, HTTPError, timeouts: retried at the next resend
            log.warning("alertmanager %s: %s", self.endpoint, exc)
            self._next_resend = 0.0
            return False


def follow_alerts(
    bus: Bus,
    stop: threading.Event,
    *,
    follow: bool = True,
    sink: AlertmanagerSink | None = None,
    on_change=None,
    board: AlertBoard | None = None,
    poll_s: float = 0.2,
    topic: str = topics.ALERTS,
    drain_timeout_s: float = 30.0,
) -> AlertBoard:
    """Fold ``topic`` (``maintenance.alerts``) into ``board`` (a new one by default), forwarding changes
    to ``sink``.

    The topic is the record of alert state, so it is always read from the beginning (a fresh
    consumer group, never reused): what is already on the board is redelivery and changes nothing.
    Calls ``on_change(board)`` after each batch that changed it. Without ``follow``, returns once the
    topic is drained: an empty poll once the consumer has joined and, on Kafka, has fetched from
    every partition it was assigned (an empty poll while the group is still forming proves nothing);
    at the latest after ``drain_timeout_s``. With ``follow``, runs until ``stop`` is set."""
    consumer = bus.consumer([topic], f"motorwatch-alerts-{uuid.uuid4().hex}")
    fetched = getattr(consumer, "highwater", None)  # Kafka: partitions it has fetched from
    board = AlertBoard() if board is None else board
    deadline = time.monotonic() + drain_timeout_s
    try:
        while not stop.is_set():
            records = consumer.poll_batch(1000, poll_s)
            pairs, rejects = decode_many([r.value for r in records], Alert)
            if rejects:
                log.warning("skipped %d undecodable alerts", len(rejects))
            changes = board.apply(m for _, m in pairs)
            if sink is not None:
                sink.deliver(changes, board)
            if changes and on_change is not None:
                on_change(board)
            if records:  # the group is never reused; committing keeps it from pinning the in-process log
                consumer.commit()
            if not follow and not records:
                assigned = consumer.assignment()
                if assigned and (fetched is None or assigned <= set(fetched())):
                    break
                if time.monotonic() > deadline:
                    log.warning("%s: not drained after %.0f s; showing what was read", topic, drain_timeout_s)
                    break
    finally:
        consumer.close()
    return board
