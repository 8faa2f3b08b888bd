"""The small fleet the tests run `motorwatch demo` with; its first model comes from the session
fixture ``demo_registry`` (tests/conftest.py), trained once per session (about a minute)."""

from __future__ import annotations

from dataclasses import replace

from ingest.profiles import load_profile
from motorwatch.demo import SMALL_MODEL

MOTOR = load_profile("motor")
SMALL = replace(SMALL_MODEL, motors=12, speed=86_400.0)
