"""Simulator configuration: frozen dataclasses, and the duration syntax of the CLI (``60s``, ``10d``).

>>> parse_duration("90s"), parse_duration("1.5h"), parse_duration("2d"), parse_duration("250ms")
(90.0, 5400.0, 172800.0, 0.25)
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

# Default start of simulated time: fixed, so runs are deterministic.
START_TS = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

# Failure modes, in the order of ``FleetConfig.mode_weights``. "sudden" has no precursor.
MODES = ("bearing", "insulation", "electrical", "sudden")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: a number and an optional unit (ms, s, m/min, h, d, w); default seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text.lower())
    if not match or match.group(2) not in (*_UNITS, ""):
        raise ValueError(f"not a duration: {text!r} (examples: 60s, 1m, 1.5h, 10d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Sensor and transport faults. Rates are probabilities per reading (at most one fault starts per
    reading); episodes (stuck, clock skew) then last for a drawn duration.

    ``spike``/``nan``/``stuck`` hit one of the three measured signals (never the runtime counter).
    ``out_of_order`` delays a reading by 1..``out_of_order_ticks`` intervals (usually within a feature
    worker's grace period); ``late`` delays it by ``late_s`` (usually beyond it).
    """

    dropout: float = 1e-3
    duplicate: float = 5e-4
    out_of_order: float = 5e-4
    late: float = 1e-4
    nan: float = 2e-4
    spike: float = 2e-4
    stuck: float = 5e-5
    clock_skew: float = 1e-5
    out_of_order_ticks: tuple[int, int] = (1, 5)
    late_s: tuple[float, float] = (900.0, 10800.0)
    stuck_s: tuple[float, float] = (600.0, 7200.0)
    clock_skew_s: tuple[float, float] = (1800.0, 14400.0)
    clock_skew_max_offset_s: float = 600.0

    KINDS = ("dropout", "duplicate", "out_of_order", "late", "nan", "spike", "stuck", "clock_skew")

    @classmethod
    def none(cls) -> FaultRates:
        """No sensor faults at all (a clean log)."""
        return cls(**{k: 0.0 for k in cls.KINDS})

    def rates(self) -> tuple[float, ...]:
        return tuple(getattr(self, k) for k in self.KINDS)

    def with_rates(self, **rates: float) -> FaultRates:
        """A copy with some rates replaced: ``FaultRates().with_rates(nan=0.01)``."""
        unknown = set(rates) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(self.KINDS)}")
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return FaultRates(**{**values, **{k: float(v) for k, v in rates.items()}})

    def __post_init__(self) -> None:
        if any(r < 0 for r in self.rates()) or sum(self.rates()) > 0.5:
            raise ValueError("fault rates must be >= 0 and sum to at most 0.5 per reading")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """A fleet: its size, sampling interval, start time, failure statistics and sensor faults.

    Lifetimes count running hours: after each repair a motor runs a Weibull-distributed time
    (mean ``mean_onset_days`` of running) until a failure mode's precursor starts, which then grows
    for a log-normal time (median ``degradation_days``) until the motor fails. A failed motor is
    down (no readings) for ``repair_hours`` before a corrective repair; a maintenance order takes it
    down for ``maintenance_hours`` and restores its health.

    ``stagger``: the motors sample in turn, evenly over each interval (motor ``i`` of ``n`` at
    ``i / n`` of it), as a gateway polling its devices does; otherwise all at the interval's start.
    Only the reported times move: the motors' physics and the ground truth run on the interval.
    """

    motors: int = 50
    interval_s: float = 1.0
    start_ts: float = START_TS
    mean_onset_days: float = 60.0
    onset_shape: float = 1.5
    degradation_days: float = 7.0
    mode_weights: tuple[float, ...] = (0.4, 0.25, 0.2, 0.15)
    repair_hours: tuple[float, float] = (12.0, 48.0)
    maintenance_hours: float = 2.0
    faults: FaultRates = field(default_factory=FaultRates)
    stagger: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.motors <= 99_999:
            raise ValueError("motors must be between 1 and 99999 (asset ids are m00001..m99999)")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if len(self.mode_weights) != len(MODES) or min(self.mode_weights) < 0 or sum(self.mode_weights) <= 0:
            raise ValueError(f"mode_weights: {len(MODES)} non-negative weights for {', '.join(MODES)}")

    def ticks(self, seconds: float) -> int:
        """Whole intervals in ``seconds`` (rounded up: a duration never shrinks to nothing)."""
        return max(1, math.ceil(seconds / self.interval_s - 1e-9))

    def sampling_offsets(self) -> np.ndarray:
        """Each motor's sampling time within an interval, in seconds after its start."""
        if not self.stagger:
            return np.zeros(self.motors)
        return np.arange(self.motors) * (self.interval_s / self.motors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
