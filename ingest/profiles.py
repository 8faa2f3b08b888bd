"""Profiles: data files that name an asset type's signals, units and plausible ranges.

A profile is one TOML file. `ingest` types the parts it owns (signals, column mapping); the other
packages read their own sections (``features``, ``labels``, ``alerts``) from :attr:`Profile.sections`.

>>> p = load_profile("motor")
>>> p.signal_names
('temperature_c', 'vibration_mm_s', 'current_a', 'runtime_h')
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = "motor"


@dataclass(frozen=True, slots=True)
class Signal:
    """One measured quantity and the range a healthy or failing asset can physically report."""

    name: str
    unit: str
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Profile:
    """An asset type: its signals (in a fixed order), time unit, and per-package sections."""

    name: str
    description: str
    time_unit: str
    rul_unit: str
    signals: tuple[Signal, ...]
    columns: Mapping[str, str]
    sections: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    # A plant export's column name -> signal name (``[columns.signals]``), for the log readers.
    signal_columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    @property
    def signal_index(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.signals)}

    @property
    def lower(self) -> np.ndarray:
        """Per-signal minimum plausible value, in signal order (for vectorised range checks)."""
        return np.array([s.min for s in self.signals], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([s.max for s in self.signals], dtype=np.float64)

    def section(self, name: str) -> Mapping[str, Any]:
        """A package's own section of the profile (empty when absent)."""
        return self.sections.get(name, MappingProxyType({}))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """Load a shipped profile by name (``motor``, ``cmapss``) or any profile TOML by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(
            f"unknown profile {str(name_or_path)!r}: no file {path} "
            f"(shipped profiles: {', '.join(available_profiles())})"
        )
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    return parse_profile(raw, source=str(path))


def parse_profile(raw: Mapping[str, Any], source: str = "") -> Profile:
    """Build a :class:`Profile` from the parsed TOML tables, checking what ingest relies on."""
    try:
        signals = tuple(
            Signal(name=name, unit=str(spec.get("unit", "")), min=float(spec["min"]), max=float(spec["max"]))
            for name, spec in raw["signals"].items()
        )
        name = str(raw["name"])
    except KeyError as exc:
        raise ValueError(f"profile {source or '?'}: missing key {exc}") from None
    if not signals:
        raise ValueError(f"profile {name}: no signals")
    for s in signals:
        if not s.min < s.max:
            raise ValueError(f"profile {name}: signal {s.name} has min >= max")
    known = {"name", "description", "time_unit", "rul_unit", "signals", "columns"}
    columns = dict(raw.get("columns", {"asset_id": "asset_id", "ts": "ts"}))
    signal_columns = dict(columns.pop("signals", {}))
    unknown = sorted(set(signal_columns.values()) - {s.name for s in signals})
    if unknown:
        raise ValueError(f"profile {name}: [columns.signals] maps onto unknown signals {unknown}")
    return Profile(
        name=name,
        description=str(raw.get("description", "")),
        time_unit=str(raw.get("time_unit", "s")),
        rul_unit=str(raw.get("rul_unit", "h")),
        signals=signals,
        columns=MappingProxyType(columns),
        sections=MappingProxyType({k: v for k, v in raw.items() if k not in known}),
        source=source,
        signal_columns=MappingProxyType(signal_columns),
    )
