"""The small fleet the tests run `motorwatch demo` with; its first model comes from the session
fixture ``demo_registry`` (tests/conftest.py), trained once per session (about a minute)."""

from __future__ import annotations

from ingest.profiles import load_profile
from motorwatch.demo import DemoConfig

MOTOR = load_profile("motor")
SMALL = DemoConfig(motors=12, speed=86_400.0, mean_onset_days=5.0, train_motors=10, train_days=6.0, seed=3)
