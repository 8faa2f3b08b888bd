"""The profile's ``[alerts]`` section, typed: alert thresholds and the maintenance crew's capacity.

Risk is a probability (0..1). RUL thresholds are in the profile's ``rul_unit``; windows and shift
lengths in its ``time_unit`` (event time). Unknown keys are an error, so a typo never silently
falls back to a default.

>>> from ingest.profiles import load_profile
>>> cfg = AlertConfig.from_profile(load_profile("motor"))
>>> cfg.off_risk < cfg.on_risk
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ingest.profiles import Profile

Priority = Literal["low", "medium", "high"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")

# Seconds per unit, to turn a RUL (rul_unit) into an event-time span (time_unit).
_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def rul_to_time(profile: Profile) -> float:
    """Event-time units per RUL unit (3600 for RUL in hours on epoch seconds; 1 for cycles/cycles)."""
    if profile.rul_unit == profile.time_unit:
        return 1.0
    try:
        return _SECONDS[profile.rul_unit] / _SECONDS[profile.time_unit]
    except KeyError:
        raise ValueError(
            f"profile {profile.name}: cannot convert rul_unit {profile.rul_unit!r} "
            f"to time_unit {profile.time_unit!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Alert policy and scheduler settings (see ``[alerts]`` in ``ingest/profiles/motor.toml``)."""

    on_risk: float = 0.7
    off_risk: float = 0.5
    on_rul: float = 48.0
    off_rul: float = 72.0
    on_delay: int = 3
    high_risk: float = 0.85
    high_rul: float = 24.0
    medium_risk: float = 0.75
    medium_rul: float = 36.0
    no_data_priority: Priority = "medium"
    flood_limit: int = 20
    flood_window: float = 600.0
    crew_capacity: int = 4
    shift_length: float = 28800.0
    on_risk_from_model: bool = False  # raise at the model card's validated operating point instead

    def __post_init__(self) -> None:
        if not 0.0 <= self.off_risk < self.on_risk <= 1.0:
            raise ValueError(
                f"[alerts] needs 0 <= off_risk < on_risk <= 1, got {self.off_risk}, {self.on_risk}"
            )
        if not self.on_rul < self.off_rul:
            raise ValueError(f"[alerts] needs on_rul < off_rul, got {self.on_rul}, {self.off_rul}")
        if not (
            self.on_risk <= self.medium_risk <= self.high_risk
            and self.high_rul <= self.medium_rul <= self.on_rul
        ):
            raise ValueError(
                "[alerts] priorities must nest: on_risk <= medium_risk <= high_risk, "
                "high_rul <= medium_rul <= on_rul"
            )
        if self.on_delay < 1 or self.flood_limit < 1 or self.crew_capacity < 1:
            raise ValueError("[alerts] on_delay, flood_limit and crew_capacity must be >= 1")
        if self.flood_window <= 0 or self.shift_length <= 0:
            raise ValueError("[alerts] flood_window and shift_length must be > 0")
        if self.no_data_priority not in PRIORITIES:
            raise ValueError(f"[alerts] no_data_priority must be one of {PRIORITIES}")

    def at_operating_point(self, threshold: float) -> AlertConfig:
        """These settings raising at ``threshold`` (a model's validated operating point): the clear
        threshold keeps the profile's hysteresis ratio, and priority thresholds below it move up to it."""
        on = float(threshold)
        off = on * self.off_risk / self.on_risk
        medium = max(self.medium_risk, on)
        return dataclasses.replace(
            self, on_risk=on, off_risk=off, medium_risk=medium, high_risk=max(self.high_risk, medium)
        )

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> AlertConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(section) - names
        if unknown:
            raise ValueError(f"[alerts]: unknown keys {sorted(unknown)} (known: {sorted(names)})")
        return cls(**dict(section))

    @classmethod
    def from_profile(cls, profile: Profile) -> AlertConfig:
        return cls.from_section(profile.section("alerts"))
