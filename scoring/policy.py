"""Alert policy in the spirit of ISA-18.2: few, actionable, deduplicated alerts.

Pure logic, no bus and no clock: scores go in (in stream order), alert transitions come out.

- Raise: ``risk >= on_risk`` or ``rul < on_rul`` for ``on_delay`` consecutive scores of an asset.
- Hysteresis: an active alert clears only when ``risk < off_risk`` and ``rul >= off_rul``, or when
  maintenance is recorded for the asset.
- One active alert per asset; ``updated`` only when its priority (or kind) changes. Escalation is
  immediate, de-escalation needs ``on_delay`` consecutive scores at the lower priority (no chatter).
- A ``stale`` features message (the asset went silent) raises a ``no_data`` alert, or turns the
  asset's active alert into one; the next fresh score turns it back into a risk alert or clears it.
- ``alert_id`` is a hash of the asset, the event time of the score that raised it and the model
  version: the same stream gives the same ids, so redelivery never makes a new alert.
- Flood: when the fleet raises more than ``flood_limit`` alerts within ``flood_window`` of event
  time, one ``kind="flood"`` summary alert is raised and further raises are suppressed (kept active,
  not published) until the window drains; then the flood clears and the still-active suppressed
  alerts are published.
- Maintenance travels on its own topic, so a score computed before a repair may arrive after it:
  scores not newer than the asset's latest maintenance are ignored.
- An alert's messages go forward in event time, and a cleared id is never used again: a score older
  than the asset's alert state (e.g. one still in flight when a stale marker stamped with the
  partition's watermark raised ``no_data``) is ignored; a clear is stamped no earlier than the
  alert's last message, and only scores newer than the clear can raise the asset's next alert.
- After a restart or a rebalance the scorer hands the open alerts read back from the alerts topic to
  :meth:`AlertPolicy.restore`: they go on under their ids (updated, cleared), never raised twice.

>>> from scoring.config import AlertConfig
>>> policy = AlertPolicy(AlertConfig(on_delay=2), rul_unit="h")
>>> [a.state for _, a in policy.observe(["m1"], [1.0], [0.9], [100.0], [False], "v1")]
[]
>>> [(a.state, a.priority) for _, a in policy.observe(["m1"], [2.0], [0.9], [100.0], [False], "v1")]
[('raised', 'high')]
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import inf

import msgspec
import numpy as np

from ingest.schemas import Alert
from scoring.config import PRIORITIES, AlertConfig

FLEET = "fleet"  # asset_id of flood summary alerts


def alert_id(asset_id: str, ts: float, model_version: str, kind: str = "risk") -> str:
    """Deterministic id of the alert raised for ``asset_id`` by the score at event time ``ts``."""
    key = f"{kind}|{asset_id}|{float(ts)!r}|{model_version}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


@dataclass(slots=True)
class ActiveAlert:
    """An asset's alert state: consecutive scores beyond the on-thresholds, and its open alert if any."""

    above: int = 0
    alert_id: str | None = None
    priority: int = 0  # index into PRIORITIES
    kind: str = "risk"
    lower: int = 0  # consecutive scores at a lower priority (de-escalation delay)
    suppressed: bool = False  # raised during a flood, not published yet
    ts: float = 0.0
    risk: float = 0.0
    rul: float = 0.0
    model_version: str = ""


Transition = tuple[int, Alert]  # (row of the input batch, or -1 when no row caused it; the alert)


class AlertPolicy:
    """Per-asset alert state machines plus fleet-wide flood protection. See the module docstring."""

    def __init__(self, config: AlertConfig, rul_unit: str) -> None:
        self.config = config
        self.rul_unit = rul_unit
        self.assets: dict[str, ActiveAlert] = {}
        # Per asset, the event time up to which its state is settled (its latest maintenance, or the
        # alert state restored after a restart): older scores arriving later are ignored.
        self.settled: dict[str, float] = {}
        self._raises: list[float] = []  # min-heap of the event times of recent raises (flood window)
        self.watermark = float("-inf")
        self.flood: Alert | None = None
        self.suppressed_total = 0
        self.floods_total = 0

    def observe(
        self,
        asset_ids: Sequence[str],
        ts: Sequence[float],
        risk: Sequence[float],
        rul: Sequence[float],
        stale: Sequence[bool],
        model_version: str,
    ) -> list[Transition]:
        """Feed scores in stream order; return the alert transitions they cause.

        For a stale row, ``risk``/``rul`` are the asset's last scored values (reported in the alert)."""
        cfg = self.config
        out: list[Transition] = []
        r_a, u_a = np.asarray(risk, dtype=np.float64), np.asarray(rul, dtype=np.float64)
        s_a = np.asarray(stale, dtype=bool)
        # The loop below reads Python floats and bools (tolist: one C call per column).
        ts_l, risk_l, rul_l = np.asarray(ts, dtype=np.float64).tolist(), r_a.tolist(), u_a.tolist()
        stale_l = s_a.tolist()
        assets, settled = self.assets, self.settled
        # Only rows of assets with something going on can change state: beyond an on-threshold,
        # stale, or already tracked. In a healthy fleet that is a small fraction of the rows.
        hot = np.flatnonzero((r_a >= cfg.on_risk) | (u_a < cfg.on_rul) | s_a)
        busy = {asset_ids[i] for i in hot.tolist()}
        busy.update(assets)
        rows = [i for i, aid in enumerate(asset_ids) if aid in busy] if busy else []
        for i in rows:
            aid = asset_ids[i]
            t, r, u = ts_l[i], risk_l[i], rul_l[i]
            if settled and t <= settled.get(aid, -inf):
                continue  # e.g. scored before the repair, delivered after it: says nothing about now
            st = assets.get(aid)
            if st is not None and t < st.ts:
                continue  # older than the asset's alert state (e.g. its no-data marker)
            if stale_l[i]:
                if st is None:
                    st = assets[aid] = ActiveAlert()
                self._no_data(i, aid, st, t, r, u, model_version, out)
                continue
            on = r >= cfg.on_risk or u < cfg.on_rul
            if st is None:
                if not on:
                    continue
                st = assets[aid] = ActiveAlert()
            st.ts, st.risk, st.rul, st.model_version = t, r, u, model_version
            if st.alert_id is None:
                if not on:
                    del assets[aid]
                    continue
                st.above += 1
                if st.above >= cfg.on_delay:
                    self._raise(i, aid, st, "risk", self._priority(r, u), out)
                continue
            if r < cfg.off_risk and u >= cfg.off_rul:
                self._clear(i, aid, st, out, "risk_low")
                continue
            p = self._priority(r, u)
            if st.kind == "no_data":  # data is back: it is a risk alert again
                st.kind, st.priority, st.lower = "risk", p, 0
                self._emit(i, aid, st, "updated", out)
            elif p > st.priority:
                st.priority, st.lower = p, 0
                self._emit(i, aid, st, "updated", out)
            elif p < st.priority:
                st.lower += 1
                if st.lower >= cfg.on_delay:
                    st.priority, st.lower = p, 0
                    self._emit(i, aid, st, "updated", out)
            else:
                st.lower = 0
        if ts_l:
            self.watermark = max(self.watermark, max(ts_l))
        self._check_flood_end(out)
        return out

    def maintenance(self, asset_id: str, ts: float, model_version: str) -> list[Transition]:
        """Maintenance was recorded for ``asset_id`` at ``ts``: clear its alert, restart its on-delay,
        and ignore its scores of event time up to ``ts`` that are still to come (cross-topic delay).
        Scores after ``ts`` that came before the event already moved the alert on: the clear is
        stamped at the newest of them."""
        self.settled[asset_id] = max(float(ts), self.settled.get(asset_id, -inf))
        st = self.assets.get(asset_id)
        if st is None:
            return []
        out: list[Transition] = []
        if st.alert_id is None:
            del self.assets[asset_id]
        else:
            st.ts, st.model_version = max(float(ts), st.ts), model_version
            self._clear(-1, asset_id, st, out, "maintenance")
        return out

    def restore(self, alerts: Iterable[Alert]) -> int:
        """Take over open alerts published before (read back from the alerts topic after a restart or
        a rebalance), so they go on under their ids: updated and cleared, never raised twice. Scores
        not newer than an alert's last state are then ignored (redelivered: already accounted for).
        Assets this policy already tracks are left alone. Returns how many were restored."""
        n = 0
        for a in alerts:
            if a.kind == "flood" or a.state == "cleared" or a.asset_id in self.assets:
                continue
            self.assets[a.asset_id] = ActiveAlert(
                alert_id=a.alert_id,
                priority=PRIORITIES.index(a.priority),
                kind=a.kind,
                ts=a.ts,
                risk=a.risk,
                rul=a.rul,
                model_version=a.model_version,
            )
            self.settled[a.asset_id] = max(a.ts, self.settled.get(a.asset_id, -inf))
            self.watermark = max(self.watermark, a.ts)
            n += 1
        return n

    def forget(self, asset_ids: Iterable[str]) -> None:
        """Drop the state of assets this scorer no longer owns (their partition moved to another)."""
        for aid in asset_ids:
            self.assets.pop(aid, None)
            self.settled.pop(aid, None)

    def active(self) -> dict[str, ActiveAlert]:
        """Assets with an open alert (published or suppressed by a flood)."""
        return {a: st for a, st in self.assets.items() if st.alert_id is not None}

    def _priority(self, risk: float, rul: float) -> int:
        cfg = self.config
        if risk >= cfg.high_risk or rul < cfg.high_rul:
            return 2
        if risk >= cfg.medium_risk or rul < cfg.medium_rul:
            return 1
        return 0

    def _no_data(
        self,
        i: int,
        aid: str,
        st: ActiveAlert,
        t: float,
        r: float,
        u: float,
        version: str,
        out: list[Transition],
    ) -> None:
        st.ts, st.risk, st.rul, st.model_version = t, r, u, version
        st.above, st.lower = 0, 0
        p = PRIORITIES.index(self.config.no_data_priority)
        if st.alert_id is None:
            self._raise(i, aid, st, "no_data", p, out)
        elif st.kind != "no_data":
            st.kind, st.priority = "no_data", max(st.priority, p)
            self._emit(i, aid, st, "updated", out)

    def _raise(
        self, i: int, aid: str, st: ActiveAlert, kind: str, priority: int, out: list[Transition]
    ) -> None:
        st.alert_id = alert_id(aid, st.ts, st.model_version, kind)
        st.kind, st.priority, st.above, st.lower = kind, priority, 0, 0
        heapq.heappush(self._raises, st.ts)
        self.watermark = max(self.watermark, st.ts)
        if self._recent_raises() > self.config.flood_limit:
            st.suppressed = True
            self.suppressed_total += 1
            if self.flood is None:
                self.floods_total += 1
                self.flood = self._flood_alert(st, "raised")
                out.append((i, self.flood))
            return
        st.suppressed = False
        self._emit(i, aid, st, "raised", out)

    def _clear(self, i: int, aid: str, st: ActiveAlert, out: list[Transition], reason: str) -> None:
        if not st.suppressed:
            self._emit(i, aid, st, "cleared", out, reason)
        del self.assets[aid]
        # The next alert is raised by a newer score: a new id (ids hash the raising score's time).
        self.settled[aid] = max(st.ts, self.settled.get(aid, -inf))

    def _emit(
        self, i: int, aid: str, st: ActiveAlert, state: str, out: list[Transition], reason: str = ""
    ) -> None:
        if st.suppressed:
            return
        assert st.alert_id is not None
        out.append(
            (
                i,
                Alert(
                    alert_id=st.alert_id,
                    asset_id=aid,
                    ts=st.ts,
                    state=state,
                    priority=PRIORITIES[st.priority],
                    kind=st.kind,
                    risk=st.risk,
                    rul=st.rul,
                    rul_unit=self.rul_unit,
                    model_version=st.model_version,
                    reason=reason,
                ),
            )
        )

    def _flood_alert(self, st: ActiveAlert, state: str) -> Alert:
        return Alert(
            alert_id=alert_id(FLEET, st.ts, st.model_version, "flood"),
            asset_id=FLEET,
            ts=st.ts,
            state=state,
            priority="high",
            kind="flood",
            risk=st.risk,
            rul=st.rul,
            rul_unit=self.rul_unit,
            model_version=st.model_version,
        )

    def _recent_raises(self) -> int:
        """Raises within the flood window before the watermark (older ones are dropped)."""
        cutoff = self.watermark - self.config.flood_window
        while self._raises and self._raises[0] <= cutoff:
            heapq.heappop(self._raises)
        return len(self._raises)

    def _check_flood_end(self, out: list[Transition]) -> None:
        if self.flood is None:
            return
        if self._recent_raises() > self.config.flood_limit:
            return
        flood = self.flood
        self.flood = None
        over = msgspec.structs.replace(flood, state="cleared", ts=self.watermark, reason="flood_over")
        out.append((-1, over))
        for aid, st in self.assets.items():  # publish what the flood held back, in raise order
            if st.suppressed and st.alert_id is not None:
                st.suppressed = False
                self._emit(-1, aid, st, "raised", out)
