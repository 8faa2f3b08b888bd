"""Sensor and transport faults, injected into a block of true readings as the wire would see them.

At most one fault starts per reading: one uniform draw per reading picks it (rates from
:class:`simulator.config.FaultRates`); where that draw falls inside the fault's interval, rescaled to
[0, 1), gives two more uniforms (its high and low digits) that choose the signal, size, delay or
duration. So the randomness used never depends on how a run is cut into steps.

Value faults hit the measured signals (temperature, vibration, current), never the runtime counter:

- ``spike``: a value beyond the profile's plausible range (ingest dead-letters it as out_of_range);
- ``nan``: a NaN value (on the bus: JSON null, dead-lettered as non_finite);
- ``stuck``: the signal repeats its value for a drawn duration;
- ``clock_skew``: the motor's timestamps shift by up to +-``clock_skew_max_offset_s`` for a while.

Transport faults: ``dropout`` (never delivered), ``duplicate`` (delivered twice in a row),
``out_of_order`` (delivered a few intervals late, after newer readings) and ``late`` (delivered
much later). Every fault is recorded in the ground truth.
"""

from __future__ import annotations

import numpy as np

from simulator.config import FleetConfig
from simulator.groundtruth import EventLog

MEASURED = 3  # faults hit signal columns 0..2; column 3 (runtime_h) is the controller's counter
(DROPOUT, DUPLICATE, OUT_OF_ORDER, LATE, NAN, SPIKE, STUCK, CLOCK_SKEW) = range(8)


class Delivered:
    """Readings in delivery order: motor index, reported ``ts`` and values (rows x signals)."""

    __slots__ = ("motor", "ts", "values")

    def __init__(self, motor: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        self.motor = motor
        self.ts = ts
        self.values = values

    def __len__(self) -> int:
        return len(self.motor)

    @classmethod
    def empty(cls, signals: int) -> Delivered:
        return cls(np.empty(0, np.int32), np.empty(0), np.empty((0, signals)))

    @classmethod
    def concat(cls, parts: list[Delivered]) -> Delivered:
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, a) for p in parts]) for a in cls.__slots__))


class FaultInjector:
    """Fault state that outlives a block: stuck sensors, skewed clocks, readings still in transit."""

    def __init__(self, config: FleetConfig, signal_names: tuple[str, ...], upper: np.ndarray) -> None:
        self.config = config
        self.rates = config.faults
        self.cum = np.cumsum(self.rates.rates())
        self.names = signal_names
        self.upper = upper
        self.sampling = config.sampling_offsets()  # each motor's time in its interval (zeros: aligned)
        m, k = config.motors, len(signal_names)
        self.k = k
        self.stuck_from = np.zeros((m, MEASURED), np.int64)
        self.stuck_until = np.zeros((m, MEASURED), np.int64)
        self.stuck_value = np.zeros((m, MEASURED))
        self.skew_from = np.zeros(m, np.int64)
        self.skew_until = np.zeros(m, np.int64)
        self.skew_offset = np.zeros(m)
        # Readings in transit (delayed): delivery tick, then the reading.
        self.transit_tick = np.empty(0, np.int64)
        self.transit = Delivered.empty(k)

    def apply(
        self, t0: int, ts: np.ndarray, present: np.ndarray, values: np.ndarray, u: np.ndarray, log: EventLog
    ) -> Delivered:
        """Fault the readings of ticks ``t0..t0+n`` (``present``: a reading exists; ``values`` is
        modified in place) and return what is delivered during those ticks, in delivery order."""
        n, m = present.shape
        total = self.cum[-1] if len(self.cum) else 0.0
        hit = np.flatnonzero(present.ravel() & (u.ravel() < total)) if total > 0 else np.empty(0, int)
        kind, uh = self._draws(u.ravel()[hit])
        tick, motor = np.divmod(hit, m)

        self._hold_stuck(t0, n, values)
        offset = self._start_episodes(
            t0, ts, tick, motor, kind, uh, values, self._skew_offsets(t0, n, m), log
        )
        for code in (SPIKE, NAN):
            sel = kind == code
            j = (uh[sel, 1] * MEASURED).astype(np.int64)
            flat = values.reshape(-1, self.k)
            if code == SPIKE:
                flat[hit[sel], j] = self.upper[j] * (1.2 + 2.0 * uh[sel, 2])
            else:
                flat[hit[sel], j] = np.nan

        keep = present.ravel().copy()
        keep[hit[kind == DROPOUT]] = False
        rows = np.flatnonzero(keep)
        sampled = (ts[:, None] + self.sampling).ravel()
        if offset is not None:
            sampled += offset.ravel()
        reported, hit_ts = sampled[rows], sampled[hit]
        delay = self._delays(kind, uh)
        self._log_point_faults(t0, tick, motor, kind, uh, delay, hit_ts, values, hit, log)

        on_time = Delivered((rows % m).astype(np.int32), reported, values.reshape(-1, self.k)[rows])
        key = rows.astype(np.int64)
        # Delayed readings leave the on-time stream and join those in transit.
        delayed = delay > 0
        if delayed.any():
            pos = np.searchsorted(rows, hit[delayed])
            self._send_later(t0 + tick[delayed] + delay[delayed], on_time, pos)
            stay = np.ones(len(rows), bool)
            stay[pos] = False
            on_time = Delivered(on_time.motor[stay], on_time.ts[stay], on_time.values[stay])
            key = key[stay]
        # Extras: duplicates (right after their original) and arrivals from transit.
        dup = np.searchsorted(key, hit[kind == DUPLICATE])
        due = self.transit_tick < t0 + n
        arrivals = Delivered(self.transit.motor[due], self.transit.ts[due], self.transit.values[due])
        arrival_key = (self.transit_tick[due] - t0) * m + arrivals.motor
        self._keep_in_transit(~due)
        if not len(dup) and not len(arrivals):
            return on_time
        extra = Delivered.concat(
            [Delivered(on_time.motor[dup], on_time.ts[dup], on_time.values[dup]), arrivals]
        )
        extra_key = np.concatenate([key[dup], arrival_key])
        extra_class = np.concatenate([np.zeros(len(dup), np.int8), np.ones(len(arrivals), np.int8)])
        order = np.lexsort((extra.ts, extra_class, extra_key))
        at = np.searchsorted(key, extra_key[order], side="right")
        return Delivered(
            np.insert(on_time.motor, at, extra.motor[order]),
            np.insert(on_time.ts, at, extra.ts[order]),
            np.insert(on_time.values, at, extra.values[order], axis=0),
        )

    def _draws(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fault kind of each hit reading, and three uniforms: the draw, its rescaled high and low digits."""
        kind = np.searchsorted(self.cum, u, side="right")
        lo = np.concatenate([[0.0], self.cum])[kind]
        v = np.clip((u - lo) / np.asarray(self.rates.rates())[kind], 0.0, 1.0 - 1e-12)
        return kind, np.stack([u, v, (v * 4096.0) % 1.0], axis=1)

    def drain(self) -> Delivered:
        """Everything still in transit, in delivery order (at the end of a run)."""
        order = np.lexsort((self.transit.ts, self.transit.motor, self.transit_tick))
        out = Delivered(self.transit.motor[order], self.transit.ts[order], self.transit.values[order])
        self._keep_in_transit(np.zeros(len(self.transit_tick), bool))
        return out

    # -- episodes -------------------------------------------------------------------------------

    def _start_episodes(
        self, t0, ts, tick, motor, kind, uh, values, offset, log: EventLog
    ) -> np.ndarray | None:
        """Start stuck sensors (holding ``values``) and clock skews (into ``offset``, the (n, M) ts
        shifts, allocated when first needed), in tick order; returns ``offset``."""
        f = self.rates
        n = len(ts)
        for i in np.flatnonzero((kind == STUCK) | (kind == CLOCK_SKEW)):
            k = int(tick[i])
            t, mo = t0 + k, int(motor[i])
            if kind[i] == STUCK:
                j = int(uh[i, 1] * MEASURED)
                if self.stuck_until[mo, j] > t:
                    continue
                dur = self.config.ticks(f.stuck_s[0] + uh[i, 2] * (f.stuck_s[1] - f.stuck_s[0]))
                value = float(values[k, mo, j])
                self.stuck_from[mo, j], self.stuck_until[mo, j], self.stuck_value[mo, j] = t, t + dur, value
                values[k : k + dur, mo, j] = value
                detail = f"signal={self.names[j]} value={value!r} duration_s={dur * self.config.interval_s:g}"
                log.add(t, mo, ts[k], "sensor_fault", "stuck", detail)
            else:
                if self.skew_until[mo] > t:
                    continue
                lo, hi = f.clock_skew_s
                dur = self.config.ticks(lo + uh[i, 1] * (hi - lo))
                shift = float(round((2.0 * uh[i, 2] - 1.0) * f.clock_skew_max_offset_s)) or 1.0
                self.skew_from[mo], self.skew_until[mo], self.skew_offset[mo] = t, t + dur, shift
                if offset is None:
                    offset = np.zeros((n, len(self.skew_from)))
                offset[k : k + dur, mo] = shift
                detail = f"offset_s={shift:+g} duration_s={dur * self.config.interval_s:g}"
                log.add(t, mo, ts[k], "sensor_fault", "clock_skew", detail)
        return offset

    def _hold_stuck(self, t0: int, n: int, values: np.ndarray) -> None:
        """Hold the sensors stuck in earlier blocks."""
        live = (self.stuck_until > t0) & (self.stuck_from < t0 + n)
        for mo, j in np.argwhere(live):
            a = max(0, self.stuck_from[mo, j] - t0)
            b = min(n, self.stuck_until[mo, j] - t0)
            values[a:b, mo, j] = self.stuck_value[mo, j]

    def _skew_offsets(self, t0: int, n: int, m: int) -> np.ndarray | None:
        """Timestamp shifts (n, M) of the clocks skewed in earlier blocks; None if there are none."""
        live = np.flatnonzero((self.skew_until > t0) & (self.skew_from < t0 + n))
        if not len(live):
            return None
        offset = np.zeros((n, m))
        for mo in live:
            a = max(0, self.skew_from[mo] - t0)
            b = min(n, self.skew_until[mo] - t0)
            offset[a:b, mo] = self.skew_offset[mo]
        return offset

    # -- point faults ---------------------------------------------------------------------------

    def _delays(self, kind: np.ndarray, uh: np.ndarray) -> np.ndarray:
        f = self.rates
        delay = np.zeros(len(kind), np.int64)
        ooo = kind == OUT_OF_ORDER
        lo, hi = f.out_of_order_ticks
        delay[ooo] = lo + (uh[ooo, 2] * (hi - lo + 1)).astype(np.int64)
        late = kind == LATE
        seconds = f.late_s[0] + uh[late, 2] * (f.late_s[1] - f.late_s[0])
        delay[late] = np.maximum(1, np.ceil(seconds / self.config.interval_s - 1e-9)).astype(np.int64)
        return delay

    def _log_point_faults(self, t0, tick, motor, kind, uh, delay, hit_ts, values, hit, log: EventLog) -> None:
        point = np.flatnonzero((kind != STUCK) & (kind != CLOCK_SKEW))
        flat = values.reshape(-1, self.k)
        names = self.rates.KINDS
        dt = self.config.interval_s
        for i in point:
            c = int(kind[i])
            if c in (NAN, SPIKE):
                j = int(uh[i, 1] * MEASURED)
                detail = f"signal={self.names[j]}"
                if c == SPIKE:
                    detail += f" value={float(flat[hit[i], j])!r}"
            elif c in (OUT_OF_ORDER, LATE):
                detail = f"delay_s={delay[i] * dt:g}"
            else:
                detail = ""
            log.add(t0 + int(tick[i]), int(motor[i]), hit_ts[i], "sensor_fault", names[c], detail)

    # -- transit --------------------------------------------------------------------------------

    def _send_later(self, deliver_tick: np.ndarray, on_time: Delivered, pos: np.ndarray) -> None:
        self.transit_tick = np.concatenate([self.transit_tick, deliver_tick])
        self.transit = Delivered.concat(
            [self.transit, Delivered(on_time.motor[pos], on_time.ts[pos], on_time.values[pos])]
        )

    def _keep_in_transit(self, keep: np.ndarray) -> None:
        self.transit_tick = self.transit_tick[keep]
        self.transit = Delivered(self.transit.motor[keep], self.transit.ts[keep], self.transit.values[keep])
