"""The feature specification: data from the profile's ``[features]`` section, read by both engines.

A window of length ``W`` is cut into ``buckets`` fixed buckets of width ``W / buckets``, aligned on
event time (bucket ``k`` holds ``k*width <= ts < (k+1)*width``). At event time ``t`` the window holds
the bucket of ``t`` and the ``buckets - 1`` before it, so readings leave a window one whole bucket
at a time and no raw reading is ever kept for a window.

Feature names: ``<signal>__<stat>_<window>`` for windowed statistics, ``<signal>__last``,
``<signal>__ewma``, the cross features' own names, ``time_since_maintenance``.

>>> from ingest.profiles import load_profile
>>> spec = FeatureSpec.from_profile(load_profile("motor"))
>>> spec.names[:3]
('temperature_c__last', 'temperature_c__ewma', 'temperature_c__mean_10m')
>>> len(spec.fingerprint())
16
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ingest.profiles import Profile

WINDOW_STATS = ("mean", "std", "min", "max", "slope", "zscore")
SIGNAL_EXTRAS = ("last", "ewma")
CROSS_KINDS = ("rise_per",)
SINCE_MAINTENANCE = "time_since_maintenance"


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling window of ``length`` time units, aggregated into ``buckets`` fixed buckets."""

    name: str
    length: float
    buckets: int

    @property
    def width(self) -> float:
        return self.length / self.buckets


@dataclass(frozen=True, slots=True)
class Feature:
    """One entry of the feature vector.

    ``kind``: a window statistic (``mean`` ... ``zscore``), ``last``, ``ewma``, ``rise_per``
    (``(mean(signal) - baseline mean(signal)) / mean(other)`` over ``window``) or ``since_maintenance``.
    """

    name: str
    kind: str
    signal: str = ""
    window: str = ""
    other: str = ""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Which features, over which windows, with which event-time rules (all in the profile's time unit).

    - ``grace``: a reading older than its asset's newest reading minus ``grace`` is late (dead-lettered);
      features are emitted for a reading once its asset's clock has passed it by ``grace``.
    - ``stale_after``: an asset silent for longer than this (against its partition's watermark) is stale.
    - ``emit_every``: 0 = a feature vector per reading; ``K`` = at most one per ``K`` of event time.
    - ``baseline_n``: the healthy baseline (for z-scores) is the first ``baseline_n`` values of each
      signal of an asset, restarted by each maintenance event.
    """

    profile: str
    signals: tuple[str, ...]
    windows: tuple[Window, ...]
    features: tuple[Feature, ...]
    grace: float = 0.0
    stale_after: float = 300.0
    emit_every: float = 0.0
    baseline_n: int = 100
    ewma_halflife: float = 600.0

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature spec {self.profile}: duplicate feature names")
        for w in self.windows:
            if w.buckets < 2 or w.length <= 0:
                raise ValueError(
                    f"feature spec {self.profile}: window {w.name} needs length > 0, buckets >= 2"
                )
            # A reading accepted within the grace period must still fall inside every window it
            # belongs to: this is what lets the batch engine sort by event time.
            if self.grace > (w.buckets - 1) * w.width:
                raise ValueError(f"feature spec {self.profile}: grace {self.grace} exceeds window {w.name}")
        known = set(self.signals)
        windows = {w.name for w in self.windows}
        for f in self.features:
            if (f.signal and f.signal not in known) or (f.other and f.other not in known):
                raise ValueError(f"feature {f.name}: unknown signal")
            if f.window and f.window not in windows:
                raise ValueError(f"feature {f.name}: unknown window {f.window!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The feature vector, in order."""
        return tuple(f.name for f in self.features)

    @property
    def used_signals(self) -> tuple[str, ...]:
        """Signals some feature reads, in profile order."""
        used = {f.signal for f in self.features} | {f.other for f in self.features}
        return tuple(s for s in self.signals if s in used)

    @property
    def tracks_maintenance(self) -> bool:
        return any(f.kind == "since_maintenance" for f in self.features)

    def fingerprint(self) -> str:
        """A stable hash of everything that changes a feature value (the registry compares it)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_profile(cls, profile: Profile) -> FeatureSpec:
        """The spec of ``profile``'s ``[features]`` section (see ingest/profiles/motor.toml)."""
        return parse_spec(profile.section("features"), profile.name, profile.signal_names)


def parse_spec(section: Mapping[str, Any], profile: str, signals: tuple[str, ...]) -> FeatureSpec:
    """Build a spec from a ``[features]`` table; unknown statistics or windows are errors."""
    if not section:
        raise ValueError(f"profile {profile} has no [features] section")
    buckets = section.get("buckets", 60)  # one count for every window, or a table per window
    windows = tuple(
        Window(name, float(length), int(buckets[name] if isinstance(buckets, Mapping) else buckets))
        for name, length in section["windows"].items()
    )
    features: list[Feature] = []
    for signal, table in section.get("signals", {}).items():
        for extra in table.get("extras", []):
            if extra not in SIGNAL_EXTRAS:
                raise ValueError(
                    f"profile {profile}: {signal}: unknown extra {extra!r} (one of {SIGNAL_EXTRAS})"
                )
            features.append(Feature(f"{signal}__{extra}", extra, signal))
        for window, stats in table.get("stats", {}).items():
            for stat in stats:
                if stat not in WINDOW_STATS:
                    raise ValueError(
                        f"profile {profile}: {signal}: unknown stat {stat!r} (one of {WINDOW_STATS})"
                    )
                features.append(Feature(f"{signal}__{stat}_{window}", stat, signal, window))
    for name, table in section.get("cross", {}).items():
        if table.get("kind") not in CROSS_KINDS:
            raise ValueError(f"profile {profile}: cross feature {name}: kind must be one of {CROSS_KINDS}")
        features.append(Feature(name, table["kind"], table["signal"], table["window"], table["per"]))
    if section.get("time_since_maintenance", False):
        features.append(Feature(SINCE_MAINTENANCE, "since_maintenance"))
    return FeatureSpec(
        profile=profile,
        signals=tuple(signals),
        windows=windows,
        features=tuple(features),
        grace=float(section.get("grace", 0.0)),
        stale_after=float(section.get("stale_after", 300.0)),
        emit_every=float(section.get("emit_every", 0.0)),
        baseline_n=int(section.get("baseline_n", 100)),
        ewma_halflife=float(section.get("ewma_halflife", 600.0)),
    )
