"""The fleet: N motors simulated together, one numpy array per quantity, a block of ticks at a time.

Each motor has a nameplate (rated current, temperature rise at full load, ambient, baseline
vibration, thermal time constant) and a duty cycle (continuous with a weekly stop, two shifts, or a
weekday day shift). While running, its load follows a daily profile plus slow random variation;
current follows load (no-load magnetising current plus the load part), the winding temperature
follows ambient plus copper heating through a first-order thermal lag, vibration (RMS velocity) sits
in ISO 10816 class II good/satisfactory (< 2.8 mm/s) while healthy, and ``runtime_h`` advances only
while running. A stopped motor still reports (current 0, vibration at the floor, cooling down); a
failed motor, or one under maintenance, reports nothing.

Determinism: every random number comes from a stream keyed by (seed, what it is for, where it is):
noise by fixed-size block of ticks, lives by (motor, life number). Counts are integers (ticks), the
thermal lag runs tick by tick, so the output is the same however a run is cut into ``advance`` calls.

>>> from simulator.config import FleetConfig
>>> fleet = Fleet(FleetConfig(motors=3, interval_s=60.0), seed=7)
>>> batch = fleet.advance(10)
>>> len(batch), batch.asset_id[:3], batch.signals
(30, ['m00001', 'm00002', 'm00003'], ('temperature_c', 'vibration_mm_s', 'current_a', 'runtime_h'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter

from ingest.profiles import Profile, load_profile
from ingest.schemas import ReadingBatch
from simulator.config import MODES, FleetConfig
from simulator.failure_modes import SUDDEN, Effects, Lives, draw_lives
from simulator.faults import Delivered, FaultInjector
from simulator.groundtruth import Event, EventLog

SIGNALS = ("temperature_c", "vibration_mm_s", "current_a", "runtime_h")
DUTIES = ("continuous", "two_shift", "day_shift")
BLOCK_READINGS = 1 << 18  # readings per noise block (bounds memory; fixed per config, so deterministic)
WEEK_S, DAY_S = 604800.0, 86400.0
MONDAY_OFFSET_S = 3 * DAY_S  # the epoch was a Thursday: (ts + 3 days) % week counts from Monday 00:00
LOAD_TAU_S = 1800.0  # correlation time of the random load variation
LOAD_SD = 0.05
TEMP_NOISE_C = 0.2
IDLE_VIBRATION = 0.03  # mm/s picked up from neighbouring machines while stopped
AMBIENT_PEAK_S = 15 * 3600.0

# Streams of the seed (the second SeedSequence word).
_NAMEPLATE, _FIRST_LIVES, _LIVES, _NOISE = range(4)


@dataclass(frozen=True, slots=True)
class Nameplates:
    """Per-motor constants (arrays of length N)."""

    rated_current_a: np.ndarray
    no_load_fraction: np.ndarray
    temp_rise_c: np.ndarray  # winding temperature rise over ambient at rated current
    ambient_c: np.ndarray
    ambient_swing_c: np.ndarray
    base_vibration_mm_s: np.ndarray
    thermal_tau_s: np.ndarray
    duty: np.ndarray  # index into DUTIES
    on_s: np.ndarray  # running window in seconds of the day
    off_s: np.ndarray
    weekdays: np.ndarray  # bit d set: runs on day d (0 = Monday)
    stop_from_s: np.ndarray  # weekly stop (continuous duty), seconds of the week
    stop_len_s: np.ndarray
    mean_load: np.ndarray
    load_swing: np.ndarray
    load_peak_s: np.ndarray
    runtime0_h: np.ndarray

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator) -> Nameplates:
        duty = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int8)
        shift_on = np.where(
            duty == 1, 6 * 3600.0 + rng.uniform(-1800, 1800, n), 7 * 3600.0 + rng.uniform(-3600, 3600, n)
        )
        on = np.where(duty == 0, 0.0, np.round(shift_on))
        off = np.where(duty == 0, DAY_S, on + np.where(duty == 1, 16 * 3600.0, 9 * 3600.0))
        return cls(
            rated_current_a=np.round(np.exp(rng.uniform(np.log(8.0), np.log(250.0), n)), 1),
            no_load_fraction=rng.uniform(0.25, 0.4, n),
            temp_rise_c=rng.uniform(35.0, 55.0, n),
            ambient_c=rng.uniform(15.0, 30.0, n),
            ambient_swing_c=rng.uniform(2.0, 6.0, n),
            base_vibration_mm_s=rng.uniform(0.5, 1.4, n),
            thermal_tau_s=rng.uniform(15.0, 45.0, n) * 60.0,
            duty=duty,
            on_s=on,
            off_s=off,
            weekdays=np.select([duty == 0, duty == 1], [0x7F, 0x3F], 0x1F).astype(np.int64),
            stop_from_s=np.where(duty == 0, np.round(rng.uniform(0, WEEK_S, n)), 0.0),
            stop_len_s=np.where(duty == 0, np.round(rng.uniform(1, 3, n)) * 3600.0, 0.0),
            mean_load=rng.uniform(0.55, 0.85, n),
            load_swing=rng.uniform(0.0, 0.15, n),
            load_peak_s=rng.uniform(0, DAY_S, n),
            runtime0_h=np.round(rng.uniform(500.0, 40000.0, n), 1),
        )

    def records(self, asset_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        """One JSON-ready dict per motor."""
        cols = {name: getattr(self, name).tolist() for name in self.__dataclass_fields__}
        cols["duty"] = [DUTIES[d] for d in cols["duty"]]
        return [{"asset_id": a, **{k: v[i] for k, v in cols.items()}} for i, a in enumerate(asset_ids)]


class Fleet:
    """N motors from a :class:`FleetConfig` and a seed. ``advance(n)`` simulates n ticks (one
    reading interval each) and returns the readings delivered meanwhile; ``events()`` returns the
    ground truth of what happened; ``apply_maintenance`` queues a maintenance order (closed loop)."""

    def __init__(self, config: FleetConfig, seed: int, profile: Profile | None = None) -> None:
        self.config = config
        self.seed = int(seed)
        self.profile = profile or load_profile("motor")
        if self.profile.signal_names != SIGNALS:
            raise ValueError(
                f"the simulator makes {SIGNALS}; profile {self.profile.name} has {self.profile.signal_names}"
            )
        m = config.motors
        self.asset_ids = tuple(f"m{i + 1:05d}" for i in range(m))
        self._ids = np.array(self.asset_ids, dtype=object)
        self._index = {a: i for i, a in enumerate(self.asset_ids)}
        self.nameplates = Nameplates.draw(m, self._rng(_NAMEPLATE))
        self.tick = 0  # the next tick to simulate
        self.block_ticks = max(1, BLOCK_READINGS // m)
        self._noise_block: tuple[int, np.ndarray, np.ndarray] | None = None
        self._log = EventLog(self.asset_ids)
        self._faults = FaultInjector(config, SIGNALS, self.profile.upper)
        self._orders: dict[int, int] = {}  # motor -> tick of a pending maintenance order
        self._maintenance_ticks = round(config.maintenance_hours * 3600.0 / config.interval_s)

        self.lives = draw_lives(config, self._rng(_FIRST_LIVES), m, initial=True)
        self.life_number = np.zeros(m, np.int64)
        self.up = np.ones(m, bool)
        self.down_until = np.zeros(m, np.int64)
        self.down_since = np.zeros(m, np.int64)
        self.down_preventive = np.zeros(m, bool)
        self.running_ticks = np.zeros(m, np.int64)
        np_ = self.nameplates
        self._thermal_a = np.exp(-config.interval_s / np_.thermal_tau_s)
        self._load_phi = math.exp(-config.interval_s / LOAD_TAU_S)
        self._load_ar = np.zeros(m)
        self.temperature = np_.ambient_c + np_.temp_rise_c * np_.mean_load**2  # warm start
        self._log_onsets_before_start()

    # -- public API -----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Event time of the next tick."""
        return self.ts_of(self.tick)

    def ts_of(self, tick: int) -> float:
        return self.config.start_ts + tick * self.config.interval_s

    def step(self) -> ReadingBatch:
        """Simulate one tick."""
        return self.advance(1)

    def advance(self, n_ticks: int) -> ReadingBatch:
        """Simulate ``n_ticks`` ticks; the readings delivered meanwhile, in delivery order."""
        return self.to_batch(self.advance_columns(n_ticks))

    def advance_columns(self, n_ticks: int) -> Delivered:
        """As :meth:`advance`, in columns (motor index, ts, values): the writers' fast path."""
        parts = []
        end = self.tick + n_ticks
        while self.tick < end:
            to_block_end = self.block_ticks - self.tick % self.block_ticks
            parts.append(self._generate(min(end - self.tick, to_block_end)))
        return Delivered.concat(parts) if parts else Delivered.empty(len(SIGNALS))

    def drain(self) -> ReadingBatch:
        """Readings still in transit (delayed by faults): deliver them now, at the end of a run."""
        return self.to_batch(self._faults.drain())

    def drain_columns(self) -> Delivered:
        return self._faults.drain()

    def events(self) -> list[Event]:
        """Ground-truth events since the last call, in order."""
        return self._log.take()

    def apply_maintenance(self, asset_id: str, ts: float) -> float:
        """Order maintenance of ``asset_id`` at event time ``ts`` (no earlier than the next tick).

        The motor stops for ``maintenance_hours`` and comes back with its health restored (a failed
        motor is repaired then, if that is sooner than its corrective repair). A later order for the
        same motor replaces a pending one. Returns the event time the order takes effect."""
        motor = self._index.get(asset_id)
        if motor is None:
            raise KeyError(f"no motor {asset_id!r} in this fleet")
        tick = max(self.tick, math.ceil((ts - self.config.start_ts) / self.config.interval_s - 1e-9))
        self._orders[motor] = tick
        return self.ts_of(tick)

    def cancel_maintenance(self, asset_id: str) -> None:
        """Withdraw the pending maintenance order of ``asset_id``, if any."""
        motor = self._index.get(asset_id)
        if motor is not None:
            self._orders.pop(motor, None)

    def to_batch(self, d: Delivered) -> ReadingBatch:
        return ReadingBatch(SIGNALS, self._ids[d.motor].tolist(), d.ts, d.values, np.arange(len(d)))

    def describe(self) -> dict[str, Any]:
        """Config, seed and nameplates: what ``fleet.json`` holds."""
        return {
            "config": self.config.to_dict(),
            "seed": self.seed,
            "profile": self.profile.name,
            "signals": list(SIGNALS),
            "failure_modes": list(MODES),
            "motors": self.nameplates.records(self.asset_ids),
        }

    # -- simulation -----------------------------------------------------------------------------

    def _rng(self, stream: int, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, *key])

    def _noise(self, t0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Normals (n, M, 4) and uniforms (n, M) for ticks t0..t0+n (within one block)."""
        block, off = divmod(t0, self.block_ticks)
        if self._noise_block is None or self._noise_block[0] != block:
            rng = self._rng(_NOISE, block)
            m = self.config.motors
            shape = (self.block_ticks, m)
            # float32 normals: half the cost of float64, plenty for noise. One float64 uniform per
            # reading picks its fault; its low digits size the fault (see simulator.faults).
            z = rng.standard_normal((*shape, 4), dtype=np.float32)
            self._noise_block = (block, z, rng.random(shape))
        _, z, u = self._noise_block
        return z[off : off + n], u[off : off + n]

    def _generate(self, n: int) -> Delivered:
        t0, cfg, np_ = self.tick, self.config, self.nameplates
        m = cfg.motors
        ts = cfg.start_ts + (t0 + np.arange(n)) * cfg.interval_s
        z, u = self._noise(t0, n)
        sow = ((ts + MONDAY_OFFSET_S) % WEEK_S)[:, None]
        tod = sow % DAY_S
        dow = (sow // DAY_S).astype(np.int64)
        scheduled = (
            (tod >= np_.on_s)
            & (tod < np_.off_s)
            & ((np_.weekdays >> dow) & 1).astype(bool)
            & ((sow - np_.stop_from_s) % WEEK_S >= np_.stop_len_s)
        )
        effects = Effects.healthy((n, m))
        up, running = self._lifecycle(scheduled, effects)

        # Load: a daily profile plus an AR(1) random variation (correlation time LOAD_TAU_S).
        phi = self._load_phi
        ar, _ = lfilter(
            [LOAD_SD * math.sqrt(1 - phi * phi)],
            [1.0, -phi],
            z[..., 0],
            axis=0,
            zi=(phi * self._load_ar)[None],
        )
        self._load_ar = ar[-1].copy()
        w = 2 * math.pi / DAY_S
        daily = np.cos(w * tod) * np.cos(w * np_.load_peak_s) + np.sin(w * tod) * np.sin(w * np_.load_peak_s)
        load = np.clip(np_.mean_load + np_.load_swing * daily + ar, 0.2, 1.1)

        i0 = np_.no_load_fraction
        per_unit = np.sqrt(i0 * i0 + (1 - i0 * i0) * load * load) * effects.cur_factor
        current = np.where(running, np_.rated_current_a * per_unit * (1 + effects.cur_sd * z[..., 1]), 0.0)
        heat = np.where(
            running, np_.temp_rise_c * effects.rise_factor * per_unit * per_unit + effects.temp_add, 0.0
        )
        ambient = np_.ambient_c + np_.ambient_swing_c * np.cos(w * (tod - AMBIENT_PEAK_S))
        temperature = self._thermal_lag(ambient + heat) + TEMP_NOISE_C * z[..., 2]
        vibration = np.where(
            running,
            np_.base_vibration_mm_s
            * (0.85 + 0.15 * load)
            * effects.vib_factor
            * np.exp(effects.vib_sd * z[..., 3]),
            IDLE_VIBRATION * np.exp(0.3 * z[..., 3]),
        )
        counted = np.cumsum(running, axis=0, dtype=np.int64)
        runtime_h = np_.runtime0_h + (self.running_ticks + counted) * (cfg.interval_s / 3600.0)
        self.running_ticks += counted[-1]

        values = np.empty((n, m, len(SIGNALS)))
        values[..., 0], values[..., 1], values[..., 2], values[..., 3] = (
            temperature,
            vibration,
            current,
            runtime_h,
        )
        out = self._faults.apply(t0, ts, up, values, u, self._log)
        self.tick = t0 + n
        return out

    def _thermal_lag(self, target: np.ndarray) -> np.ndarray:
        """First-order lag per motor, T[k] = a T[k-1] + (1 - a) target[k]; tick by tick (chunking-exact)."""
        a = self._thermal_a
        out = (1.0 - a) * target
        prev, carried = self.temperature, np.empty_like(self.temperature)
        for row in out:
            np.multiply(prev, a, out=carried)
            row += carried
            prev = row
        self.temperature = prev.copy()
        return out

    def _lifecycle(self, scheduled: np.ndarray, effects: Effects) -> tuple[np.ndarray, np.ndarray]:
        """Walk ticks t0..t0+n from event to event (failures, repairs, orders); between events every
        motor's state is fixed, so each stretch is computed at once. Per-tick ages are only computed
        for the few motors whose precursor or failure is within reach. Returns (up, running)."""
        n, m = scheduled.shape
        t0 = self.tick
        lives = self.lives
        up_out = np.empty((n, m), bool)
        run_out = np.empty((n, m), bool)
        i = 0
        while i < n:
            self._maintain(t0 + i)
            rest = n - i
            near = np.flatnonzero(self.up & (lives.age + rest >= lives.onset))
            age = lives.age[near] + np.cumsum(scheduled[i:, near], axis=0, dtype=np.int64)
            fails_at = (age < lives.fail[near]).sum(axis=0)
            if len(near) and fails_at.min() == 0:
                self._fail(near[fails_at == 0], t0 + i)
                continue
            e = min(int(fails_at.min()) if len(near) else rest, rest, *self._due_within(t0 + i, rest))
            run = scheduled[i : i + e] & self.up
            up_out[i : i + e] = self.up
            run_out[i : i + e] = run
            onset, fail, end_age = lives.onset[near], lives.fail[near], age[e - 1]
            crossed = (lives.age[near] < onset) & (end_age >= onset) & (lives.mode[near] != SUDDEN)
            for c in np.flatnonzero(crossed):
                self._log_onset(int(near[c]), t0 + i + int((age[:, c] < onset[c]).sum()))
            sick = np.flatnonzero(end_age > onset)
            if len(sick):
                severity = np.clip((age[:e, sick] - onset[sick]) / (fail[sick] - onset[sick]), 0.0, 1.0)
                effects.set(slice(i, i + e), near[sick], severity, lives.amp[near[sick]])
            lives.age += run.sum(axis=0)
            i += e
            if i < n:
                self._fail(near[fails_at == e], t0 + i)
        return up_out, run_out

    def _due_within(self, tick: int, rest: int) -> list[int]:
        """Ticks from ``tick`` to the next repair or order (within ``rest``), if any."""
        due = [int(d) - tick for d in self.down_until[~self.up] if 0 < d - tick < rest]
        due += [t - tick for t in self._orders.values() if 0 < t - tick < rest]
        return [min(due)] if due else []

    def _fail(self, motors: np.ndarray, tick: int) -> None:
        lives = self.lives
        for mo in motors:
            self.up[mo] = False
            self.down_since[mo] = tick
            self.down_until[mo] = tick + lives.repair[mo]
            self.down_preventive[mo] = False
            running_h = lives.age[mo] * self.config.interval_s / 3600.0
            self._log.add(
                tick, mo, self.ts_of(tick), "failure", MODES[lives.mode[mo]], f"running_h={running_h:.1f}"
            )

    def _maintain(self, tick: int) -> None:
        """Start the orders due at ``tick``, then bring back the motors whose repair ends now."""
        for mo in [mo for mo, t in self._orders.items() if t <= tick]:
            del self._orders[mo]
            until = tick + self._maintenance_ticks
            if self.up[mo]:
                self.up[mo] = False
                self.down_since[mo], self.down_until[mo], self.down_preventive[mo] = tick, until, True
            else:
                self.down_until[mo] = min(self.down_until[mo], until)
        for mo in np.flatnonzero(~self.up & (self.down_until <= tick)):
            self._new_life(mo, tick)

    def _new_life(self, mo: int, tick: int) -> None:
        self.life_number[mo] += 1
        fresh = draw_lives(self.config, self._rng(_LIVES, mo, int(self.life_number[mo])), 1, initial=False)
        for name in Lives.__slots__:
            getattr(self.lives, name)[mo] = getattr(fresh, name)[0]
        self.up[mo] = True
        downtime_s = (tick - self.down_since[mo]) * self.config.interval_s
        kind = "preventive" if self.down_preventive[mo] else "corrective"
        self._log.add(tick, mo, self.ts_of(tick), "maintenance", kind, f"downtime_s={downtime_s:g}")

    def _log_onset(self, mo: int, tick: int) -> None:
        self._log.add(
            tick, mo, self.ts_of(tick), "onset", MODES[self.lives.mode[mo]], self._growth_detail(mo)
        )

    def _log_onsets_before_start(self) -> None:
        lives = self.lives
        for mo in np.flatnonzero((lives.age >= lives.onset) & (lives.mode != SUDDEN)):
            ts = self.ts_of(0) - (lives.age[mo] - lives.onset[mo]) * self.config.interval_s
            detail = f"before_start {self._growth_detail(mo)}"
            self._log.add(0, mo, ts, "onset", MODES[lives.mode[mo]], detail)

    def _growth_detail(self, mo: int) -> str:
        grow_h = (self.lives.fail[mo] - self.lives.onset[mo]) * self.config.interval_s / 3600.0
        return f"degradation_running_h={grow_h:.1f}"
